//! The geometry of a feature set: its test features projected on their first two principal
//! components (the picture of `mae geometry`), and how far apart its classes lie, in numbers.
//!
//! - PCA: the covariance `[D, D]` of the centred features, accumulated in f64, and its top
//!   eigenvectors by subspace iteration with a Rayleigh-Ritz step (a few more directions than
//!   asked for, so that convergence goes as `(lambda_{p+1} / lambda_k)^t` rather than stalling
//!   on two nearly tied eigenvalues), the small projected problem solved by cyclic Jacobi
//!   rotations. Components are unit vectors whose largest entry is positive (the sign of an
//!   eigenvector is arbitrary; this fixes it).
//! - The Fisher ratio `trace(S_between) / trace(S_within)`: the spread of the class means about
//!   the overall mean (each weighted by its class size) over the spread of the features about
//!   their class means. It is unchanged by rotations and by scaling all features alike, near
//!   `(C - 1) / (N - C)` for labels that have nothing to do with the features, and grows without
//!   bound as the classes pull apart. [`geometry`] gives it in the full feature space and in the
//!   2-D projection (what the picture shows).
//! - k-NN accuracy: the probe's own (`classifiers::knn_accuracy`, k = 20, cosine part by part),
//!   the training split as the memory and the test split as the queries, so it is the k-NN
//!   column of `mae probe` on the same features.

use engine::{Device, Rng};
use image::RgbImage;

use crate::error::{Error, Result};
use crate::eval::classifiers::{Features, KNN_K, KNN_TEMPERATURE, knn_accuracy};
use crate::eval::probe::ProbeData;
use crate::io::scatter::{ScatterPanel, scatter_panels};

/// Principal components of a feature set.
#[derive(Clone, Debug)]
pub struct Pca {
    /// The features' mean, `[D]`.
    pub mean: Vec<f64>,
    /// The top principal directions, unit vectors, `[k][D]`, by decreasing variance.
    pub components: Vec<Vec<f64>>,
    /// The variance along each component (the covariance's eigenvalues), `[k]`.
    pub variances: Vec<f64>,
    /// The total variance, the covariance's trace: what the components' variances are a share of.
    pub total_variance: f64,
    /// Whether the subspace iteration met its tolerance (see [`Pca::fit`]); when not, the
    /// components are the best found, along nearly tied eigenvalues.
    pub converged: bool,
}

/// Relative residual `|C v - lambda v| / lambda_1` below which a component has converged.
const EIGEN_TOLERANCE: f64 = 1e-9;
/// Iterations of the subspace iteration before it settles for what it has.
const MAX_ITERATIONS: usize = 500;
/// Directions iterated beyond the `k` asked for (the Rayleigh-Ritz step's extra room).
const EXTRA_DIRECTIONS: usize = 6;

impl Pca {
    /// The top `k` principal components of `x: [N, dim]` (population covariance, divided by
    /// `N`). Fails for no rows, `dim == 0`, a short `x` or `k > dim`.
    pub fn fit(x: &[f32], dim: usize, k: usize) -> Result<Pca> {
        if dim == 0 || x.is_empty() || !x.len().is_multiple_of(dim) {
            return Err(Error::Data(format!("PCA needs rows of {dim} > 0 values; got {} values", x.len())));
        }
        if k == 0 || k > dim {
            return Err(Error::Data(format!("PCA of {dim}-wide features cannot give {k} components")));
        }
        let (mean, cov) = covariance(x, dim);
        let total_variance = (0..dim).map(|i| cov[i * dim + i]).sum();
        let (variances, components, converged) = top_eigenpairs(&cov, dim, k);
        Ok(Pca { mean, components, variances, total_variance, converged })
    }

    /// The share of the total variance along each component, in `0..=1` (0 for constant features).
    pub fn explained_variance_ratio(&self) -> Vec<f64> {
        let t = self.total_variance;
        self.variances.iter().map(|&v| if t > 0.0 { (v / t).clamp(0.0, 1.0) } else { 0.0 }).collect()
    }

    /// The coordinates of `x: [N, D]` along the components: `[N, k]`, row-major.
    pub fn project(&self, x: &[f32]) -> Vec<f64> {
        let d = self.mean.len();
        let mut out = Vec::with_capacity(x.len() / d * self.components.len());
        for row in x.chunks_exact(d) {
            for c in &self.components {
                out.push(row.iter().zip(&self.mean).zip(c).map(|((&v, m), w)| (v as f64 - m) * w).sum());
            }
        }
        out
    }
}

/// Rows of the centred features gathered at once into a feature-major block, so that each
/// covariance entry is a short contiguous dot product and the `[D, D]` accumulator is swept once
/// per block rather than once per row.
const ROWS_PER_BLOCK: usize = 64;

/// The mean `[D]` and population covariance `[D, D]` of `x: [N, D]`, in f64.
/// Work: `N D^2 / 2` multiply-adds (3e9 for 10,000 images of 784 pixels, about a second).
fn covariance(x: &[f32], dim: usize) -> (Vec<f64>, Vec<f64>) {
    let n = x.len() / dim;
    let mut mean = vec![0.0f64; dim];
    for row in x.chunks_exact(dim) {
        mean.iter_mut().zip(row).for_each(|(m, &v)| *m += v as f64);
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let mut cov = vec![0.0f64; dim * dim];
    // block: [D, ROWS_PER_BLOCK], feature-major; rows past the end of `x` stay zero.
    let mut block = vec![0.0f64; dim * ROWS_PER_BLOCK];
    for rows in x.chunks(dim * ROWS_PER_BLOCK) {
        block.fill(0.0);
        for (r, row) in rows.chunks_exact(dim).enumerate() {
            for (j, (&v, m)) in row.iter().zip(&mean).enumerate() {
                block[j * ROWS_PER_BLOCK + r] = v as f64 - m;
            }
        }
        for i in 0..dim {
            let a = &block[i * ROWS_PER_BLOCK..(i + 1) * ROWS_PER_BLOCK];
            for j in i..dim {
                cov[i * dim + j] += dot(a, &block[j * ROWS_PER_BLOCK..(j + 1) * ROWS_PER_BLOCK]);
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            let c = cov[i * dim + j] / n as f64;
            cov[i * dim + j] = c;
            cov[j * dim + i] = c;
        }
    }
    (mean, cov)
}

/// `a . b` with four running sums (which the compiler keeps in vector registers).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The `k` largest eigenvalues of the symmetric `cov: [d, d]` and their unit eigenvectors (largest
/// entry positive), by decreasing eigenvalue, and whether the iteration converged.
///
/// Subspace iteration: `Q: [d, p]` orthonormal (`p = k + EXTRA_DIRECTIONS`, at most `d`), then
/// repeatedly `Z = C Q`, the Ritz pairs of `H = Q^T Z` (Jacobi on `[p, p]`) and `Q = orth(Z W)`,
/// until the top `k` Ritz pairs' residuals `|C v - theta v|` fall below `EIGEN_TOLERANCE *
/// theta_1`. When `p = d` the Ritz pairs of the first step are the exact eigenpairs.
fn top_eigenpairs(cov: &[f64], d: usize, k: usize) -> (Vec<f64>, Vec<Vec<f64>>, bool) {
    let p = (k + EXTRA_DIRECTIONS).min(d);
    // q: p columns of length d, each a Vec (column-major).
    let mut q: Vec<Vec<f64>> = if p == d {
        (0..d).map(|i| (0..d).map(|j| (i == j) as u8 as f64).collect()).collect()
    } else {
        let mut rng = Rng::new(0x9ca);
        let mut q: Vec<Vec<f64>> = (0..p).map(|_| (0..d).map(|_| rng.normal() as f64).collect()).collect();
        orthonormalize(&mut q);
        q
    };
    let mut best = (Vec::new(), Vec::new());
    for _ in 0..MAX_ITERATIONS {
        let z: Vec<Vec<f64>> = q.iter().map(|col| mat_vec(cov, d, col)).collect();
        // h = Q^T C Q: [p, p], symmetric.
        let mut h = vec![0.0f64; p * p];
        for a in 0..p {
            for b in a..p {
                let v = dot(&q[a], &z[b]);
                h[a * p + b] = v;
                h[b * p + a] = v;
            }
        }
        let (theta, w) = jacobi_eigen(&h, p);
        // Ritz vectors V = Q W and their images C V = Z W, by decreasing Ritz value.
        let combine = |cols: &[Vec<f64>], e: usize| -> Vec<f64> {
            let mut out = vec![0.0f64; d];
            for (col, s) in cols.iter().zip((0..p).map(|a| w[a * p + e])) {
                out.iter_mut().zip(col).for_each(|(o, c)| *o += s * c);
            }
            out
        };
        let v: Vec<Vec<f64>> = (0..p).map(|e| combine(&q, e)).collect();
        let cv: Vec<Vec<f64>> = (0..p).map(|e| combine(&z, e)).collect();
        let scale = theta[0].abs().max(f64::MIN_POSITIVE);
        let converged = (0..k).all(|e| {
            let r: f64 = cv[e].iter().zip(&v[e]).map(|(a, b)| (a - theta[e] * b).powi(2)).sum();
            r.sqrt() <= EIGEN_TOLERANCE * scale
        });
        best = (theta[..k].to_vec(), v[..k].to_vec());
        if converged || p == d {
            return (best.0, best.1.into_iter().map(sign_fixed).collect(), true);
        }
        q = cv;
        orthonormalize(&mut q);
    }
    (best.0, best.1.into_iter().map(sign_fixed).collect(), false)
}

/// `m x` for `m: [d, d]` row-major.
fn mat_vec(m: &[f64], d: usize, x: &[f64]) -> Vec<f64> {
    m.chunks_exact(d).map(|row| dot(row, x)).collect()
}

/// Modified Gram-Schmidt, twice over ("twice is enough", Parlett): orthonormal columns spanning
/// what `cols` spanned. A column that is (numerically) in the span of the ones before it is
/// replaced by a unit vector orthogonal to them.
fn orthonormalize(cols: &mut [Vec<f64>]) {
    let d = cols.first().map_or(0, Vec::len);
    for i in 0..cols.len() {
        let norm_before = norm(&cols[i]);
        for _pass in 0..2 {
            for j in 0..i {
                let (done, rest) = cols.split_at_mut(i);
                let r = dot(&done[j], &rest[0]);
                rest[0].iter_mut().zip(&done[j]).for_each(|(c, q)| *c -= r * q);
            }
        }
        let n = norm(&cols[i]);
        if n > 1e-12 * norm_before && n > 0.0 {
            cols[i].iter_mut().for_each(|c| *c /= n);
            continue;
        }
        // Dependent: the basis vector with the largest part outside the span of the ones before.
        let outside = |e: usize| -> Vec<f64> {
            let mut c: Vec<f64> = (0..d).map(|r| (r == e) as u8 as f64).collect();
            for _pass in 0..2 {
                for q in &cols[..i] {
                    let r = dot(q, &c);
                    c.iter_mut().zip(q).for_each(|(x, q)| *x -= r * q);
                }
            }
            c
        };
        let best = (0..d).map(outside).max_by(|a, b| norm(a).total_cmp(&norm(b))).expect("d > 0");
        let n = norm(&best);
        cols[i] = best.into_iter().map(|c| c / n).collect();
    }
}

fn norm(v: &[f64]) -> f64 {
    dot(v, v).sqrt()
}

/// `v` or `-v`, whichever has its largest-magnitude entry positive.
fn sign_fixed(v: Vec<f64>) -> Vec<f64> {
    let largest = v.iter().copied().fold(0.0f64, |m, x| if x.abs() > m.abs() { x } else { m });
    if largest < 0.0 { v.into_iter().map(|x| -x).collect() } else { v }
}

/// Eigen-decomposition of the symmetric `a: [n, n]` by cyclic Jacobi rotations: the eigenvalues by
/// decreasing value and the eigenvectors as the columns of `w: [n, n]` (row-major, column `e`
/// belongs to value `e`). Sweeps until the off-diagonal mass is negligible against the diagonal.
fn jacobi_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v: Vec<f64> = (0..n * n).map(|i| (i / n == i % n) as u8 as f64).collect();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        let diag: f64 = (0..n).map(|i| a[i * n + i].powi(2)).sum();
        if off <= 1e-30 * diag || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan, sym.schur2).
                let tau = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = tau.signum() / (tau.abs() + (1.0 + tau * tau).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = t * c;
                // a = J^T a J, on rows and columns p and q.
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| a[y * n + y].total_cmp(&a[x * n + x]));
    let values = order.iter().map(|&e| a[e * n + e]).collect();
    let mut w = vec![0.0f64; n * n];
    for (col, &e) in order.iter().enumerate() {
        for r in 0..n {
            w[r * n + col] = v[r * n + e];
        }
    }
    (values, w)
}

/// `trace(S_between) / trace(S_within)` of `x: [N, dim]` (f32 or f64 rows) labelled `y`: the
/// class-size-weighted spread of the class means about the overall mean over the spread of the
/// rows about their class means (see the module comment). Infinite when every row sits on its
/// class mean and the means differ. Fails with fewer than two classes present.
pub fn fisher_ratio<T: Copy + Into<f64>>(x: &[T], dim: usize, y: &[u32]) -> Result<f64> {
    if dim == 0 || x.len() != y.len() * dim {
        return Err(Error::Data(format!("{} values for {} labels of width {dim}", x.len(), y.len())));
    }
    let classes = y.iter().max().map_or(0, |&m| m as usize + 1);
    let mut sums = vec![0.0f64; classes * dim];
    let mut counts = vec![0usize; classes];
    for (row, &c) in x.chunks_exact(dim).zip(y) {
        counts[c as usize] += 1;
        sums[c as usize * dim..(c as usize + 1) * dim]
            .iter_mut()
            .zip(row)
            .for_each(|(s, &v)| *s += Into::<f64>::into(v));
    }
    if counts.iter().filter(|&&n| n > 0).count() < 2 {
        return Err(Error::Data("the Fisher ratio needs rows of at least two classes".into()));
    }
    let n = y.len() as f64;
    let mean: Vec<f64> = (0..dim).map(|j| (0..classes).map(|c| sums[c * dim + j]).sum::<f64>() / n).collect();
    let class_mean = |c: usize, j: usize| sums[c * dim + j] / counts[c] as f64;
    let between: f64 = (0..classes)
        .filter(|&c| counts[c] > 0)
        .map(|c| counts[c] as f64 * (0..dim).map(|j| (class_mean(c, j) - mean[j]).powi(2)).sum::<f64>())
        .sum();
    let within: f64 = x
        .chunks_exact(dim)
        .zip(y)
        .map(|(row, &c)| {
            row.iter()
                .enumerate()
                .map(|(j, &v)| (Into::<f64>::into(v) - class_mean(c as usize, j)).powi(2))
                .sum::<f64>()
        })
        .sum();
    Ok(if within > 0.0 {
        between / within
    } else if between > 0.0 {
        f64::INFINITY
    } else {
        0.0
    })
}

/// One feature set's geometry: its test features on their first two principal components and
/// how well its classes separate.
#[derive(Clone, Debug)]
pub struct Geometry {
    /// What the features are, e.g. `masked (75%)` or `raw pixels`.
    pub name: String,
    /// The test features' coordinates on PC1 and PC2, `[N, 2]` row-major.
    pub points: Vec<f64>,
    /// The test labels, `[N]`.
    pub labels: Vec<u32>,
    /// The share of the test features' variance along PC1 and PC2.
    pub explained: [f64; 2],
    /// Whether the PCA converged (see [`Pca::converged`]).
    pub pca_converged: bool,
    /// The Fisher ratio of the test features in their full space.
    pub fisher: f64,
    /// The Fisher ratio of the test features' 2-D projection (what the picture shows).
    pub fisher_2d: f64,
    /// k-NN accuracy on the test split against the training split (the probe's k-NN).
    pub knn: f32,
    /// The width of the features.
    pub dim: usize,
}

/// The geometry of `test` (PCA fitted on the test features, the ones drawn), with k-NN against
/// `train` as the memory. Both are used as given: standardise them first to see them as the
/// linear probe does.
pub fn geometry(name: &str, train: &Features, test: &Features, classes: usize, dev: &Device) -> Result<Geometry> {
    if test.len() < 2 {
        return Err(Error::Data(format!("{name}: the geometry needs at least two test features")));
    }
    let pca = Pca::fit(&test.x, test.dim, 2)?;
    let points = pca.project(&test.x);
    let explained = pca.explained_variance_ratio();
    Ok(Geometry {
        name: name.to_string(),
        fisher: fisher_ratio(&test.x, test.dim, &test.y)?,
        fisher_2d: fisher_ratio(&points, 2, &test.y)?,
        knn: knn_accuracy(train, test, classes, KNN_K, KNN_TEMPERATURE, dev)?,
        points,
        labels: test.y.clone(),
        explained: [explained[0], explained[1]],
        pca_converged: pca.converged,
        dim: test.dim,
    })
}

/// The data's class names, or empty names (the legend then shows indices) when it has none.
pub fn class_names(data: &ProbeData) -> Vec<String> {
    let known = if data.train.classes.is_empty() { &data.test.classes } else { &data.train.classes };
    (0..data.classes).map(|c| known.get(c).cloned().unwrap_or_default()).collect()
}

impl Geometry {
    /// Its panel: its name, its separation numbers and its variance shares around the points.
    pub fn panel(&self) -> ScatterPanel {
        let [pc1, pc2] = self.explained.map(|e| 100.0 * e);
        ScatterPanel {
            title: vec![
                self.name.clone(),
                format!(
                    "k-NN {:.1}%   Fisher ratio {:.3} (on PC1-2: {:.3})",
                    100.0 * self.knn,
                    self.fisher,
                    self.fisher_2d
                ),
                format!("{} dimensions; PC1 and PC2 hold {:.0}% of the variance", self.dim, pc1 + pc2),
            ],
            x_label: format!("PC1 ({pc1:.1}% of the variance)"),
            y_label: format!("PC2 ({pc2:.1}%)"),
            points: self.points.clone(),
            classes: self.labels.clone(),
        }
    }
}

/// The picture of `mae geometry` (and of the study's views): a panel per geometry, side by side,
/// `caption` under them, a legend of `class_names`.
pub fn geometry_picture(rows: &[Geometry], caption: &str, class_names: &[String], panel_size: u32) -> RgbImage {
    let panels: Vec<ScatterPanel> = rows.iter().map(Geometry::panel).collect();
    scatter_panels(&panels, caption, class_names, panel_size)
}

/// A markdown table of geometries: a row per feature set.
pub fn geometry_table(rows: &[Geometry]) -> String {
    let mut s = String::from(
        "| features | width | k-NN (k=20) | Fisher ratio | Fisher ratio on PC1-2 | PC1 | PC2 |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    for g in rows {
        s.push_str(&format!(
            "| {} | {} | {:.2}% | {:.3} | {:.3} | {:.1}% | {:.1}% |\n",
            g.name,
            g.dim,
            100.0 * g.knn,
            g.fisher,
            g.fisher_2d,
            100.0 * g.explained[0],
            100.0 * g.explained[1]
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` rows of `dim` values: `x = sum_i s_i g_i u_i + noise`, with `u_i` orthonormal
    /// directions (rotated away from the axes) and `g_i` standard normal.
    fn gaussian_along(directions: &[(Vec<f64>, f64)], dim: usize, n: usize, noise: f64, seed: u64) -> Vec<f32> {
        let mut rng = Rng::new(seed);
        let mut x = Vec::with_capacity(n * dim);
        for _ in 0..n {
            let mut row: Vec<f64> = (0..dim).map(|_| noise * rng.normal() as f64).collect();
            for (u, s) in directions {
                let g = rng.normal() as f64 * s;
                row.iter_mut().zip(u).for_each(|(r, u)| *r += g * u);
            }
            x.extend(row.iter().map(|&v| v as f32 + 3.0));
        }
        x
    }

    /// Two orthonormal directions spread over all of `dim` coordinates.
    fn two_directions(dim: usize) -> (Vec<f64>, Vec<f64>) {
        let mut cols = vec![
            (0..dim).map(|j| ((j as f64 + 1.0) * 0.37).sin()).collect::<Vec<f64>>(),
            (0..dim).map(|j| ((j as f64 + 1.0) * 1.91).cos()).collect(),
        ];
        orthonormalize(&mut cols);
        (cols[0].clone(), cols[1].clone())
    }

    fn assert_same_direction(a: &[f64], b: &[f64], tol: f64) {
        let c = dot(a, b).abs();
        assert!(c >= 1.0 - tol, "|cos| {c}");
    }

    #[test]
    fn pca_recovers_the_directions_of_largest_variance_whatever_their_sign() {
        // Wide enough for the subspace iteration (d > k + 6), and small enough for Jacobi alone.
        for dim in [5, 40] {
            let (u1, u2) = two_directions(dim);
            let x = gaussian_along(&[(u1.clone(), 4.0), (u2.clone(), 2.0)], dim, 4000, 0.1, 1);
            let pca = Pca::fit(&x, dim, 2).unwrap();
            assert!(pca.converged);
            assert_same_direction(&pca.components[0], &u1, 1e-3);
            assert_same_direction(&pca.components[1], &u2, 1e-3);
            for c in &pca.components {
                assert!((norm(c) - 1.0).abs() < 1e-9);
                let largest = c.iter().copied().fold(0.0f64, |m, v| if v.abs() > m.abs() { v } else { m });
                assert!(largest > 0.0, "the largest entry is positive");
            }
            assert!((pca.mean[0] - 3.0).abs() < 0.5, "the mean is taken out: {}", pca.mean[0]);
        }
    }

    #[test]
    fn explained_variance_is_each_components_share_of_the_trace() {
        // Variances 16 and 4 along two directions, 0.01 in each of the 30 dimensions.
        let dim = 30;
        let (u1, u2) = two_directions(dim);
        let x = gaussian_along(&[(u1, 4.0), (u2, 2.0)], dim, 20000, 0.1, 2);
        let pca = Pca::fit(&x, dim, 2).unwrap();
        let total = 16.0 + 4.0 + 0.01 * dim as f64;
        let r = pca.explained_variance_ratio();
        assert!((r[0] - 16.01 / total).abs() < 0.02, "{r:?}");
        assert!((r[1] - 4.01 / total).abs() < 0.02, "{r:?}");
        // And exactly: the shares are the eigenvalues over the covariance's trace.
        let (_, cov) = covariance(&x, dim);
        let trace: f64 = (0..dim).map(|i| cov[i * dim + i]).sum();
        assert!((pca.total_variance - trace).abs() < 1e-9 * trace);
        // The projections' variance along each component is its eigenvalue.
        let p = pca.project(&x);
        for c in 0..2 {
            let n = p.len() / 2;
            let var = (0..n).map(|i| p[i * 2 + c].powi(2)).sum::<f64>() / n as f64;
            assert!((var - pca.variances[c]).abs() < 1e-6 * pca.variances[c], "{var} {}", pca.variances[c]);
        }
    }

    #[test]
    fn covariance_matches_the_textbook_formula_on_an_uneven_row_count() {
        // 137 rows: two full blocks of 64 and a short one.
        let (dim, n) = (7, 137);
        let mut rng = Rng::new(3);
        let x: Vec<f32> = (0..n * dim).map(|_| rng.normal() * 5.0 + 1.0).collect();
        let (mean, cov) = covariance(&x, dim);
        for i in 0..dim {
            for j in 0..dim {
                let want =
                    (0..n).map(|r| (x[r * dim + i] as f64 - mean[i]) * (x[r * dim + j] as f64 - mean[j])).sum::<f64>()
                        / n as f64;
                assert!((cov[i * dim + j] - want).abs() <= 1e-12 * want.abs().max(1.0), "({i},{j})");
            }
        }
    }

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let n = 9;
        let mut rng = Rng::new(4);
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            for j in i..n {
                let v = rng.normal() as f64 * 10.0;
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        let (values, w) = jacobi_eigen(&a, n);
        assert!(values.windows(2).all(|p| p[0] >= p[1]), "decreasing");
        for e in 0..n {
            let v: Vec<f64> = (0..n).map(|r| w[r * n + e]).collect();
            let av = mat_vec(&a, n, &v);
            let residual: f64 = av.iter().zip(&v).map(|(x, y)| (x - values[e] * y).powi(2)).sum::<f64>().sqrt();
            assert!(residual < 1e-9 * values[0].abs(), "pair {e}: residual {residual}");
        }
    }

    #[test]
    fn tied_top_eigenvalues_still_give_an_orthonormal_pair_in_their_plane() {
        let dim = 20;
        let (u1, u2) = two_directions(dim);
        let x = gaussian_along(&[(u1.clone(), 3.0), (u2.clone(), 3.0)], dim, 3000, 0.05, 5);
        let pca = Pca::fit(&x, dim, 2).unwrap();
        assert!(dot(&pca.components[0], &pca.components[1]).abs() < 1e-9);
        for c in &pca.components {
            let in_plane = dot(c, &u1).powi(2) + dot(c, &u2).powi(2);
            assert!(in_plane > 0.999, "{in_plane}");
        }
    }

    #[test]
    fn constant_features_have_no_explained_variance_and_project_to_zero() {
        let x = vec![2.5f32; 10 * 12];
        let pca = Pca::fit(&x, 12, 2).unwrap();
        assert_eq!(pca.explained_variance_ratio(), vec![0.0, 0.0]);
        assert!(pca.project(&x).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn pca_refuses_shapes_it_cannot_decompose() {
        assert!(Pca::fit(&[1.0; 7], 3, 2).is_err());
        assert!(Pca::fit(&[1.0; 6], 3, 4).is_err());
        assert!(Pca::fit(&[], 3, 2).is_err());
    }

    /// `per_class` unit-Gaussian rows per class in `dim` dimensions, class `c` centred `spread`
    /// along axis `c`.
    fn clusters(classes: usize, per_class: usize, dim: usize, spread: f32, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = Rng::new(seed);
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for c in 0..classes {
            for _ in 0..per_class {
                x.extend((0..dim).map(|j| rng.normal() + if j == c { spread } else { 0.0 }));
                y.push(c as u32);
            }
        }
        (x, y)
    }

    #[test]
    fn the_fisher_ratio_is_near_zero_for_labels_unrelated_to_the_features() {
        let (x, mut y) = clusters(4, 500, 16, 8.0, 6);
        Rng::new(7).shuffle(&mut y);
        let f = fisher_ratio(&x, 16, &y).unwrap();
        // Expected about (C - 1) / (N - C) = 3 / 1996.
        assert!(f < 0.01, "{f}");
    }

    #[test]
    fn the_fisher_ratio_is_large_for_separated_clusters_and_grows_with_their_distance() {
        let (x, y) = clusters(4, 200, 16, 8.0, 8);
        let far = fisher_ratio(&x, 16, &y).unwrap();
        // Between: 800 rows, each class mean 8 * sqrt(3/4) from the centre, 48 per row; within:
        // 16 per row. So about 3.
        assert!((far - 3.0).abs() < 0.3, "{far}");
        let (x, y) = clusters(4, 200, 16, 2.0, 8);
        let near = fisher_ratio(&x, 16, &y).unwrap();
        assert!(near < far / 8.0, "{near} vs {far}");
    }

    #[test]
    fn the_fisher_ratio_ignores_rotations_and_a_common_scale() {
        let (x, y) = clusters(3, 100, 2, 3.0, 9);
        let (c, s) = (0.6f32, 0.8f32);
        let turned: Vec<f32> =
            x.chunks_exact(2).flat_map(|r| [7.0 * (c * r[0] - s * r[1]), 7.0 * (s * r[0] + c * r[1])]).collect();
        let (a, b) = (fisher_ratio(&x, 2, &y).unwrap(), fisher_ratio(&turned, 2, &y).unwrap());
        assert!((a - b).abs() < 1e-5 * a, "{a} {b}");
    }

    #[test]
    fn the_fisher_ratio_needs_two_classes_and_matching_lengths() {
        assert!(fisher_ratio(&[1.0f32, 2.0, 3.0], 1, &[0, 0, 0]).is_err());
        assert!(fisher_ratio(&[1.0f32, 2.0], 1, &[0, 1, 1]).is_err());
        assert_eq!(fisher_ratio(&[1.0f32, 1.0, 2.0], 1, &[0, 0, 1]).unwrap(), f64::INFINITY);
    }
}
