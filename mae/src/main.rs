//! `mae`: train masked autoencoders, look at their reconstructions, extract and probe features.
//!
//! `mae train` with no arguments trains a small MAE on the built-in images for a minute and a half
//! (on a GPU when there is one, else on the CPU) and says where it wrote its pictures.
//!
//! This file parses the command line and hands each subcommand to its file in `cli/`.

mod cli;

use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use mae::Error;

#[derive(Parser)]
#[command(name = "mae", version, about = "Masked autoencoders (He et al. 2021) on a hand-rolled tensor engine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Pre-train a masked autoencoder.
    Train(cli::train::TrainArgs),
    /// Draw original | masked | reconstruction | reconstruction + visible patches.
    Reconstruct(cli::reconstruct::ReconstructArgs),
    /// What the encoder looks at: the cls token's attention per head over the image, and one image
    /// reconstructed at several mask ratios; checkpoints side by side.
    Attention(cli::attention::AttentionArgs),
    /// Write frozen-encoder features of a data set to a .npy file (labels beside them).
    Embed(cli::embed::EmbedArgs),
    /// Linear probe and k-NN on frozen features, beside raw pixels and a random encoder.
    Probe(cli::probe::ProbeArgs),
    /// Fine-tune the encoder with a linear head end to end; test accuracy.
    Finetune(cli::finetune::FinetuneArgs),
    /// Test features on their first two principal components, coloured by class, encoders and raw
    /// pixels side by side, with how well the classes separate.
    Geometry(cli::geometry::GeometryArgs),
    /// Pre-train over mask ratios, strategies and targets, probe each: the study.
    Study(cli::study::StudyArgs),
    /// Time the kernels (CPU reference, fast CPU, GPU) and training steps; print markdown tables.
    Bench(cli::bench::BenchArgs),
    /// List GPU adapters, the one chosen, its limits, and the model presets.
    Info(cli::common::DeviceArgs),
}

fn main() -> ExitCode {
    // Mesa's Vulkan device-select layer (an implicit layer, on by default) picks the GPU that
    // drives the display: on a headless machine it finds no Wayland socket and prints "error:
    // XDG_RUNTIME_DIR is invalid or not set" several times per command, which reads as ours.
    // A compute program has no display to match and ranks adapters itself (`engine::gpu`), so
    // it goes off unless the user set it either way.
    if std::env::var_os("NODEVICE_SELECT").is_none() {
        // SAFETY: the first statement of main, before this process starts any other thread.
        unsafe { std::env::set_var("NODEVICE_SELECT", "1") };
    }
    // Training on the CPU allocates and frees every activation each step: keep the freed memory
    // for the next step instead of faulting it in again (30-40% of a CPU step otherwise), and
    // hand freed buffers to the next output of their size without zeroing them (`recycle.rs`).
    engine::cpu::allocator::keep_freed_memory();
    engine::cpu::recycle::set_enabled(true);
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let result = match cli.command {
        Command::Train(a) => cli::train::run(a, matches.subcommand_matches("train").expect("the train subcommand")),
        Command::Reconstruct(a) => cli::reconstruct::run(a),
        Command::Attention(a) => cli::attention::run(a),
        Command::Embed(a) => cli::embed::run(a),
        Command::Probe(a) => cli::probe::run(a),
        Command::Finetune(a) => cli::finetune::run(a),
        Command::Geometry(a) => cli::geometry::run(a),
        Command::Study(a) => cli::study::run(a),
        Command::Bench(a) => cli::bench::run(a),
        Command::Info(a) => cli::info::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Interrupted) => {
            eprintln!("{}", Error::Interrupted);
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
