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
    /// The training table's product precisions, one table each, where the device computes them
    /// differently (else the table would repeat another, and is left out): on the CPU bf16 where
    /// it has AVX512_BF16, and f16 (emulated at f32 speed); on a GPU f16 where it has f16 tensor
    /// cores (f32 and bf16 are its f32 kernels).
    #[arg(long, value_delimiter = ',', default_value = "bf16,f32", value_parser = one_of::<Precision>(&["bf16", "f32", "f16"]))]
    matmul_precision: Vec<Precision>,
    #[command(flatten)]
    device: DeviceArgs,
}

/// The precision `device` computes products at when asked for `p`: lower precisions are
/// permissions (see `Device::describe_products`).
fn computed_as(device: &Device, p: Precision) -> Precision {
    let said = device.describe_products(p);
    if said.starts_with("bf16") {
        Precision::Bf16
    } else if said.starts_with("f16") {
        Precision::F16
    } else {
        Precision::F32
    }
}

/// Runs `mae bench`.
pub fn run(a: BenchArgs) -> Result<()> {
    let dev = device(&a.device)?;
    let gpu = dev.is_gpu().then_some(&dev);
    let mut report = String::new();
    report.push_str(&format!("Device: {}\n\n", dev.name()));
    if dev.is_gpu() {
        report.push_str(&format!("Products at f16: {}\n\n", dev.describe_products(Precision::F16)));
    }
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
            let mut precisions: Vec<Precision> = Vec::new();
            for &p in &a.matmul_precision {
                if !precisions.iter().any(|&q| computed_as(d, q) == computed_as(d, p)) {
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
