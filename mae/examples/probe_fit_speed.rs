//! How long the linear probe's fits take: `linear_probe` with the default options (five fits: one
//! per weight decay on 90% of the training features, then the chosen one on all of them) on
//! synthetic features of Fashion-MNIST's size and the MAE's width, its held-out fits one at a time
//! (`parallel::with_threads(1)`) and side by side (one per core), alternately, and the results of
//! both (they must be equal).
//!
//! ```text
//! cargo run --release -p mae --example probe_fit_speed -- [EPOCHS] [ROUNDS]
//! ```
//! `EPOCHS` per fit (default 10; `mae probe` runs 100), `ROUNDS` of the pair (default 2).

use std::time::Instant;

use engine::Device;
use engine::cpu::parallel::with_threads;
use mae::classifiers::{Features, ProbeOptions, linear_probe};

fn main() -> mae::Result<()> {
    // As the `mae` command runs: freed memory kept for the next batch, recycled buffers.
    engine::cpu::allocator::keep_freed_memory();
    engine::cpu::recycle::set_enabled(true);
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (epochs, rounds) = (args.first().copied().unwrap_or(10), args.get(1).copied().unwrap_or(2));
    let (n, dim, classes) = (60_000, 256, 10);
    // Deterministic pseudo-random features (xorshift), labels in turn.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 2001) as f32 / 1000.0 - 1.0
    };
    let x: Vec<f32> = (0..n * dim).map(|_| next()).collect();
    let y: Vec<u32> = (0..n).map(|i| (i % classes) as u32).collect();
    let test = Features::new(x[..10_000 * dim].to_vec(), y[..10_000].to_vec(), dim)?;
    let train = Features::new(x, y, dim)?;
    let o = ProbeOptions { epochs, ..Default::default() };
    println!("{n} x {dim} features, {classes} classes, {epochs} epochs a fit, decays {:?}", o.weight_decays);
    for _ in 0..rounds {
        for (name, threads) in [("one fit at a time", Some(1)), ("side by side", None)] {
            let t = Instant::now();
            let probe = || linear_probe(&train, &test, classes, &o, &Device::Cpu);
            let p = match threads {
                Some(n) => with_threads(n, probe)?,
                None => probe()?,
            };
            println!("{name:>18}: {:.2} s ({:?})", t.elapsed().as_secs_f64(), p);
        }
    }
    Ok(())
}
