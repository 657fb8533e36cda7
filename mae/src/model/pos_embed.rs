//! The fixed 2-D sin-cos position embedding of the official code (`util/pos_embed.py`), computed in
//! f64 as NumPy does and stored as f32.
//!
//! For a `g x g` grid and width `D`: the first `D/2` channels encode the column (w) index, the last
//! `D/2` the row (h) index, each as `[sin(p * omega) | cos(p * omega)]` with
//! `omega_k = 1 / 10000^(k / (D/4))`, `k < D/4`. With a cls token, row 0 is zeros.

/// `[(cls + g*g), dim]` row-major.
pub fn sincos_2d(dim: usize, grid: usize, cls_token: bool) -> Vec<f32> {
    assert!(dim.is_multiple_of(4), "the 2-D sin-cos embedding needs a width divisible by 4");
    let quarter = dim / 4;
    let omega: Vec<f64> = (0..quarter).map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64)).collect();
    let mut out = Vec::with_capacity((grid * grid + cls_token as usize) * dim);
    if cls_token {
        out.resize(dim, 0.0);
    }
    for row in 0..grid {
        for col in 0..grid {
            for pos in [col, row] {
                let p = pos as f64;
                out.extend(omega.iter().map(|w| (p * w).sin() as f32));
                out.extend(omega.iter().map(|w| (p * w).cos() as f32));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_official_layout() {
        let (dim, g) = (8, 3);
        let e = sincos_2d(dim, g, true);
        assert_eq!(e.len(), (g * g + 1) * dim);
        assert!(e[..dim].iter().all(|&v| v == 0.0), "cls row is zeros");
        // Patch at row 1, column 2 (index 1 + 1*3 + 2 = 6): omega = [1, 1/100].
        let r = &e[6 * dim..7 * dim];
        let want = [
            2f64.sin(),
            (0.02f64).sin(),
            2f64.cos(),
            (0.02f64).cos(), // column 2
            1f64.sin(),
            (0.01f64).sin(),
            1f64.cos(),
            (0.01f64).cos(), // row 1
        ];
        for (a, b) in r.iter().zip(want) {
            assert!((*a as f64 - b).abs() < 1e-7);
        }
    }
}
