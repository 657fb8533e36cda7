// Exact GELU for the kernels that need it (elementwise.wgsl, matmul.wgsl's fused epilogue):
// gelu(v) = 0.5 v (1 + erf(v / sqrt 2)) and its derivative, with erf by Abramowitz & Stegun 7.1.26
// (absolute error < 1.5e-7; WGSL has no erf of its own). Not a kernel: engine/src/gpu/shaders.rs
// appends it to the sources that call it, so both compute the same values.

// erf by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7); WGSL has no erf of its own.
fn erf_approx(v: f32) -> f32 {
    let a = abs(v);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
    let r = 1.0 - poly * exp(-a * a);
    return select(r, -r, v < 0.0);
}

fn gelu(v: f32) -> f32 {
    return 0.5 * v * (1.0 + erf_approx(v * 0.70710678118654752));
}

// d gelu / dv = Phi(v) + v phi(v)
fn gelu_grad(v: f32) -> f32 {
    let cdf = 0.5 * (1.0 + erf_approx(v * 0.70710678118654752));
    let pdf = exp(-0.5 * v * v) * 0.39894228040143268;
    return cdf + v * pdf;
}
