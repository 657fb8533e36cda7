//! Per-sample masking of the patch sequence (`mask: 0 keep, 1 remove`, in the original order).
//!
//! Every strategy ends in the same three arrays the official `random_masking` returns, so the model
//! does not care which one made them:
//! - `ids_shuffle`: kept patches first, then removed ones; `ids_keep = ids_shuffle[:, :len_keep]`;
//! - `ids_restore = argsort(ids_shuffle)`: unshuffles `[kept tokens | mask tokens]` back to raster
//!   order (the decoder's gather);
//! - `mask[n, l] = 1` where patch `l` of sample `n` was removed.
//!
//! `len_keep = floor(L * (1 - ratio))` for every strategy and every sample, so a batch stays
//! rectangular:
//! - **random** (the paper's default): `noise ~ U[0, 1)` per patch, `ids_shuffle = argsort(noise)`
//!   (the smallest noise is kept), exactly as the official code;
//! - **block** (BEiT-style, the paper's "block-wise" ablation): rectangles of random area and aspect
//!   ratio are removed until `L - len_keep` patches are gone (patches of the last rectangle are
//!   put back at random to hit the count exactly);
//! - **grid** (the paper's "grid-wise" ablation): keep one patch of every `s x s` cell, `s` the
//!   stride that fits the ratio (2 for 75%), at a random offset; lattice points are dropped or other
//!   patches added at random to reach exactly `len_keep`.

use std::str::FromStr;

use engine::Rng;

use crate::error::{Error, Result};

/// How the patches to remove are chosen (see the module's comment).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskStrategy {
    /// Uniformly at random per sample, the paper's default.
    Random,
    /// Random rectangles of patches (BEiT-style block-wise).
    Block,
    /// One patch kept per cell of a regular grid (grid-wise).
    Grid,
}

impl MaskStrategy {
    /// The strategy's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            MaskStrategy::Random => "random",
            MaskStrategy::Block => "block",
            MaskStrategy::Grid => "grid",
        }
    }
}

impl FromStr for MaskStrategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "random" => Ok(MaskStrategy::Random),
            "block" => Ok(MaskStrategy::Block),
            "grid" => Ok(MaskStrategy::Grid),
            _ => Err(Error::Config(format!("unknown masking strategy '{s}': use random, block or grid"))),
        }
    }
}

/// Fails unless `0 <= ratio < 1`.
pub fn check_ratio(ratio: f32) -> Result<()> {
    if !(0.0..1.0).contains(&ratio) {
        return Err(Error::Config(format!(
            "mask ratio {ratio} is outside [0, 1): 0 masks nothing (a plain autoencoder), 0.75 is the paper's choice"
        )));
    }
    Ok(())
}

/// `len_keep = floor(L * (1 - ratio))`, computed as the official `int(L * (1 - mask_ratio))`.
pub fn len_keep(num_patches: usize, ratio: f32) -> usize {
    (num_patches as f64 * (1.0 - ratio as f64)).floor() as usize
}

/// The masks of one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct Masking {
    /// `N`, samples in the batch.
    pub batch: usize,
    /// `L`, patches per sample.
    pub num_patches: usize,
    /// Visible patches per sample, `floor(L * (1 - ratio))`.
    pub len_keep: usize,
    /// `[N, L]`
    pub ids_shuffle: Vec<u32>,
    /// `[N, L]`
    pub ids_restore: Vec<u32>,
    /// `[N, L]`, 1 = removed.
    pub mask: Vec<f32>,
}

impl Masking {
    /// `ids_shuffle[:, :len_keep]`, `[N, len_keep]`.
    pub fn ids_keep(&self) -> Vec<u32> {
        let (l, k) = (self.num_patches, self.len_keep);
        (0..self.batch).flat_map(|n| self.ids_shuffle[n * l..n * l + k].iter().copied()).collect()
    }

    /// No masking at all: every patch kept in raster order (evaluation, feature extraction).
    pub fn none(batch: usize, num_patches: usize) -> Masking {
        let ids: Vec<u32> = (0..batch).flat_map(|_| 0..num_patches as u32).collect();
        Masking {
            batch,
            num_patches,
            len_keep: num_patches,
            ids_shuffle: ids.clone(),
            ids_restore: ids,
            mask: vec![0.0; batch * num_patches],
        }
    }
}

/// Masks for a batch of `batch` samples on a `grid x grid` patch grid.
pub fn make_masking(strategy: MaskStrategy, batch: usize, grid: usize, ratio: f32, rng: &mut Rng) -> Result<Masking> {
    check_ratio(ratio)?;
    let l = grid * grid;
    let keep = len_keep(l, ratio);
    let mut ids_shuffle = Vec::with_capacity(batch * l);
    for _ in 0..batch {
        let order = match strategy {
            MaskStrategy::Random => random_order(l, rng),
            MaskStrategy::Block => order_from_kept(&block_kept(grid, keep, rng), rng),
            MaskStrategy::Grid => order_from_kept(&grid_kept(grid, keep, rng), rng),
        };
        ids_shuffle.extend(order.into_iter().map(|i| i as u32));
    }
    let mut ids_restore = vec![0u32; batch * l];
    let mut mask = vec![0.0f32; batch * l];
    for n in 0..batch {
        for (rank, &id) in ids_shuffle[n * l..(n + 1) * l].iter().enumerate() {
            ids_restore[n * l + id as usize] = rank as u32;
            mask[n * l + id as usize] = if rank < keep { 0.0 } else { 1.0 };
        }
    }
    Ok(Masking { batch, num_patches: l, len_keep: keep, ids_shuffle, ids_restore, mask })
}

/// `argsort(noise)` with `noise ~ U[0, 1)`, ties broken by index (a stable sort).
fn random_order(l: usize, rng: &mut Rng) -> Vec<usize> {
    let noise: Vec<f32> = (0..l).map(|_| rng.uniform()).collect();
    let mut ids: Vec<usize> = (0..l).collect();
    ids.sort_by(|&a, &b| noise[a].total_cmp(&noise[b]));
    ids
}

/// Kept patches first (in random order), then removed ones (in random order).
fn order_from_kept(kept: &[bool], rng: &mut Rng) -> Vec<usize> {
    let order = random_order(kept.len(), rng);
    let mut ids: Vec<usize> = order.iter().copied().filter(|&i| kept[i]).collect();
    ids.extend(order.iter().copied().filter(|&i| !kept[i]));
    ids
}

/// Remove rectangles until exactly `g*g - keep` patches are gone.
fn block_kept(g: usize, keep: usize, rng: &mut Rng) -> Vec<bool> {
    let l = g * g;
    let target = l - keep;
    let mut removed = vec![false; l];
    let mut count = 0;
    let min_area = (l / 16).max(1);
    let mut attempts = 0;
    while count < target {
        attempts += 1;
        let remaining = target - count;
        let area = if attempts > 1000 { 1 } else { min_area + rng.below(remaining.max(min_area) - min_area + 1) };
        let aspect = (rng.uniform_range((0.3f32).ln(), (1.0 / 0.3f32).ln())).exp();
        let h = ((area as f32 * aspect).sqrt().round() as usize).clamp(1, g);
        let w = ((area as f32 / aspect).sqrt().round() as usize).clamp(1, g);
        let (top, left) = (rng.below(g - h + 1), rng.below(g - w + 1));
        let cells: Vec<usize> =
            (top..top + h).flat_map(|r| (left..left + w).map(move |c| r * g + c)).filter(|&i| !removed[i]).collect();
        if cells.is_empty() {
            continue;
        }
        // Take the whole rectangle if it fits the budget, else a random part of it.
        let mut cells = cells;
        if cells.len() > remaining {
            rng.shuffle(&mut cells);
            cells.truncate(remaining);
        }
        for i in cells {
            removed[i] = true;
            count += 1;
        }
    }
    removed.iter().map(|r| !r).collect()
}

/// One patch per `s x s` cell at a random offset, then adjusted at random to exactly `keep`.
fn grid_kept(g: usize, keep: usize, rng: &mut Rng) -> Vec<bool> {
    let l = g * g;
    let mut kept = vec![false; l];
    if keep == 0 {
        return kept;
    }
    // The stride whose lattice keeps the asked fraction: 1 / s^2 = keep / L.
    let s = ((l as f64 / keep as f64).sqrt().round() as usize).max(1);
    let (oy, ox) = (rng.below(s), rng.below(s));
    let mut lattice: Vec<usize> = (0..g)
        .filter(|r| r % s == oy)
        .flat_map(|r| (0..g).filter(move |c| c % s == ox).map(move |c| r * g + c))
        .collect();
    rng.shuffle(&mut lattice);
    lattice.truncate(keep);
    for &i in &lattice {
        kept[i] = true;
    }
    let mut others: Vec<usize> = (0..l).filter(|&i| !kept[i]).collect();
    rng.shuffle(&mut others);
    for &i in others.iter().take(keep - lattice.len()) {
        kept[i] = true;
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(m: &Masking) {
        let (l, k) = (m.num_patches, m.len_keep);
        for n in 0..m.batch {
            let shuffle = &m.ids_shuffle[n * l..(n + 1) * l];
            let restore = &m.ids_restore[n * l..(n + 1) * l];
            // ids_restore inverts ids_shuffle.
            for i in 0..l {
                assert_eq!(shuffle[restore[i] as usize] as usize, i);
            }
            // Kept + removed = L, and the mask marks exactly the removed ones.
            let removed: f32 = m.mask[n * l..(n + 1) * l].iter().sum();
            assert_eq!(removed as usize, l - k);
            for &id in &shuffle[..k] {
                assert_eq!(m.mask[n * l + id as usize], 0.0);
            }
        }
    }

    #[test]
    fn every_strategy_keeps_exactly_len_keep_and_restores_the_order() {
        let mut rng = Rng::new(1);
        for strategy in [MaskStrategy::Random, MaskStrategy::Block, MaskStrategy::Grid] {
            for (g, ratio) in [(7, 0.75), (14, 0.75), (8, 0.5), (7, 0.0), (7, 0.9), (14, 0.25)] {
                let m = make_masking(strategy, 5, g, ratio, &mut rng).unwrap();
                assert_eq!(m.len_keep, len_keep(g * g, ratio));
                check(&m);
            }
        }
    }

    #[test]
    fn len_keep_is_floor_as_in_the_official_code() {
        assert_eq!(len_keep(49, 0.75), 12);
        assert_eq!(len_keep(196, 0.75), 49);
        assert_eq!(len_keep(64, 0.9), 6);
        assert_eq!(len_keep(49, 0.0), 49);
    }

    #[test]
    fn grid_masking_at_75_percent_keeps_one_patch_per_2x2_cell() {
        let m = make_masking(MaskStrategy::Grid, 1, 8, 0.75, &mut Rng::new(3)).unwrap();
        let kept: Vec<usize> = m.ids_keep().iter().map(|&i| i as usize).collect();
        let (oy, ox) = (kept[0] / 8 % 2, kept[0] % 8 % 2);
        assert!(kept.iter().all(|&i| (i / 8) % 2 == oy && (i % 8) % 2 == ox));
    }

    #[test]
    fn block_masking_removes_contiguous_regions() {
        // Removed patches should mostly have removed neighbours (random masking would not).
        let g = 14;
        let m = make_masking(MaskStrategy::Block, 1, g, 0.5, &mut Rng::new(4)).unwrap();
        let removed = |r: usize, c: usize| m.mask[r * g + c] == 1.0;
        let (mut with_neighbour, mut total) = (0, 0);
        for r in 0..g {
            for c in 0..g {
                if removed(r, c) {
                    total += 1;
                    let n = [(r.wrapping_sub(1), c), (r + 1, c), (r, c.wrapping_sub(1)), (r, c + 1)]
                        .iter()
                        .any(|&(a, b)| a < g && b < g && removed(a, b));
                    with_neighbour += n as usize;
                }
            }
        }
        assert!(with_neighbour as f32 > 0.9 * total as f32, "{with_neighbour}/{total}");
    }

    #[test]
    fn ratios_outside_zero_to_one_are_refused() {
        assert!(check_ratio(1.0).is_err());
        assert!(check_ratio(-0.1).is_err());
        assert!(make_masking(MaskStrategy::Random, 1, 7, 1.2, &mut Rng::new(0)).is_err());
    }
}
