//! `mae info`: the GPU adapters, the one chosen and its limits, the CPU's products, the model
//! presets and their recipes.

use engine::Device;
use engine::cpu::matmul::Precision;
use mae::Result;
use mae::config::ModelConfig;
use mae::recipe::{FinetuneRecipe, Recipe, RecipeName};

use super::common::DeviceArgs;

/// Runs `mae info`.
pub fn run(a: DeviceArgs) -> Result<()> {
    println!("GPU adapters:");
    #[cfg(feature = "gpu")]
    {
        let adapters = engine::gpu::list_adapters();
        if adapters.is_empty() {
            println!("  none");
        }
        for ad in &adapters {
            println!("  {ad}{}", if ad.is_software() { "  [software: used only with --device gpu]" } else { "" });
        }
    }
    #[cfg(not(feature = "gpu"))]
    println!("  {}", engine::device::NO_GPU_BACKEND);
    match Device::select(a.device) {
        Ok((dev, note)) => {
            println!("{note}");
            #[cfg(not(feature = "gpu"))]
            let _ = dev;
            #[cfg(feature = "gpu")]
            if let Device::Gpu(g) = &dev {
                let ctx = g.context();
                let l = &ctx.limits;
                println!("limits:");
                println!("  max_storage_buffer_binding_size  {} MiB", l.max_storage_buffer_binding_size >> 20);
                println!("  max_buffer_size                  {} MiB", l.max_buffer_size >> 20);
                println!("  max_compute_workgroup_storage    {} KiB", l.max_compute_workgroup_storage_size >> 10);
                println!("  max_compute_invocations_per_wg   {}", l.max_compute_invocations_per_workgroup);
                println!("  max_workgroups_per_dimension     {}", l.max_compute_workgroups_per_dimension);
                println!("  max_storage_buffers_per_stage    {}", l.max_storage_buffers_per_shader_stage);
                println!("features: {:?}", ctx.features);
                println!("GPU products at f16: {}", dev.describe_products(Precision::F16));
                let unchecked: Vec<&str> =
                    engine::gpu::shaders::SHADERS.iter().map(|s| s.0).filter(|n| ctx.runs_unchecked(n)).collect();
                println!(
                    "shaders without runtime bounds checks: {} (MAE_GPU_BOUNDS_CHECKS=1 checks all)",
                    if unchecked.is_empty() { "none".to_string() } else { unchecked.join(", ") }
                );
                let unbounded: Vec<&str> =
                    engine::gpu::shaders::SHADERS.iter().map(|s| s.0).filter(|n| ctx.runs_unbounded_loops(n)).collect();
                println!(
                    "shaders without wgpu's loop counter: {} (MAE_GPU_LOOP_BOUNDING=1 counts every loop)",
                    if unbounded.is_empty() { "none".to_string() } else { unbounded.join(", ") }
                );
            }
        }
        Err(e) => println!("no device: {e}"),
    }
    println!(
        "CPU training products (`mae train --matmul-precision`): bf16, the default, runs as {}; f32 as {}; f16 as {}",
        Precision::Bf16.describe(),
        Precision::F32.describe(),
        Precision::F16.describe()
    );
    println!("model presets:");
    for c in ModelConfig::presets() {
        println!(
            "  {:<26} {}x{}x{} patch {:>2}, encoder {}x{} ({} heads), decoder {}x{} ({} heads), {:.2} M parameters",
            c.name,
            c.img_size,
            c.img_size,
            c.in_chans,
            c.patch_size,
            c.embed_dim,
            c.depth,
            c.num_heads,
            c.decoder_embed_dim,
            c.decoder_depth,
            c.decoder_num_heads,
            c.num_params() as f64 / 1e6
        );
    }
    println!("training recipes (`mae train --recipe`; flags override single settings):");
    for c in ModelConfig::presets() {
        println!("  {:<26} {}", c.name, Recipe::for_model(RecipeName::Tuned, &c));
    }
    println!("  {:<26} {}", "any preset, --recipe paper", Recipe::paper());
    println!("fine-tuning recipes (`mae finetune --recipe`; flags override single settings):");
    for c in ModelConfig::presets() {
        println!("  {:<26} {}", c.name, FinetuneRecipe::for_model(RecipeName::Tuned, &c));
    }
    println!("  {:<26} {}", "any preset, --recipe paper", FinetuneRecipe::paper());
    Ok(())
}
