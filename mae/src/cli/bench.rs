//! `mae bench`: time the kernels (CPU reference, fast CPU, GPU) and training steps; print markdown
//! tables.

use std::path::PathBuf;

use clap::Args;
use engine::Device;
use engine::cpu::matmul::Precision;
use mae::Result;
use mae::config::ModelConfig;
use mae::source::DataSource;

use super::common::{DeviceArgs, default_model, device, one_of, print_and_save};

#[derive(Args)]
pub struct BenchArgs {
    /// Only the kernel table.
    #[arg(long)]
    kernels_only: bool,
    /// Only the training table.
    #[arg(long)]
    training_only: bool,
    /// Leave out the (slow) CPU reference column.
    #[arg(long)]
    no_reference: bool,
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Training steps timed per configuration.
    #[arg(long, default_value_t = 10)]
    steps: u64,
    /// Data for the training table (Fashion-MNIST when installed, else the built-in images).
    #[arg(long)]
    data: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// Also write the tables here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A Python interpreter with PyTorch: time PyTorch on the same model, batch and ratios, right
    /// after each of our runs, and print its images/s and memory beside ours.
    #[arg(long, value_name = "PYTHON")]
    compare_torch: Option<PathBuf>,
    /// The CPU training table's product precisions, one table each (bf16 only where the CPU has
    /// AVX512_BF16; elsewhere it would repeat the f32 table, and is left out).
    #[arg(long, value_delimiter = ',', default_value = "bf16,f32", value_parser = one_of::<Precision>(&["bf16", "f32"]))]
    matmul_precision: Vec<Precision>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// Runs `mae bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    let dev = device(&a.device)?;
    let gpu = dev.is_gpu().then_some(&dev);
    let mut report = String::new();
    report.push_str(&format!("Device: {}\n\n", dev.name()));
    if !a.training_only {
        eprintln!("timing kernels...");
        report.push_str(&mae::bench::kernel_table(gpu, !a.no_reference, a.batch)?);
        report.push('\n');
    }
    if !a.kernels_only {
        let data: DataSource = match &a.data {
            Some(d) => d.parse()?,
            None if std::path::Path::new(mae::data::idx::FASHION_MNIST_DIR).is_dir() => "fashion-mnist".parse()?,
            None => "builtin".parse()?,
        };
        let model = ModelConfig::by_name(a.model.as_deref().unwrap_or(default_model(&data)))?;
        eprintln!("timing training steps...");
        let mut devices = vec![Device::Cpu];
        if dev.is_gpu() {
            devices.push(dev.clone());
        }
        let torch = a.compare_torch.as_deref();
        for d in &devices {
            // On the GPU the precision changes nothing (its products are f32): one table.
            let mut precisions: Vec<Precision> = Vec::new();
            for &p in if d.is_cpu() { &a.matmul_precision[..] } else { &[Precision::F32] } {
                if !precisions.iter().any(|q| q.kernel() == p.kernel()) {
                    precisions.push(p);
                }
            }
            for precision in precisions {
                report.push_str(&mae::bench::training_table(&model, &data, a.batch, a.steps, d, precision, torch)?);
                report.push('\n');
            }
        }
    }
    print_and_save(&report, a.out.as_deref())
}
