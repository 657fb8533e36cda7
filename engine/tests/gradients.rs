//! Every backward rule of the CPU backend against central finite differences, on small uneven shapes.

use engine::gradcheck::GradCheck;
use engine::ops;
use engine::{Device, Indices, Rng, Tensor};

const CPU: Device = Device::Cpu;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    Tensor::normal(shape, 0.0, 1.0, &mut Rng::new(seed), &CPU).unwrap()
}

fn check(inputs: &[Tensor], f: impl Fn(&[Tensor]) -> engine::Result<Tensor>) {
    GradCheck::default().run(inputs, f).unwrap();
}

#[test]
fn matmul_gradients_match_finite_differences_for_every_transpose() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = if ta { rand(&[5, 3], 1) } else { rand(&[3, 5], 1) };
        let b = if tb { rand(&[4, 5], 2) } else { rand(&[5, 4], 2) };
        let bias = rand(&[4], 3);
        check(&[a, b, bias], |x| ops::matmul_ex(&x[0], &x[1], Some(&x[2]), ta, tb));
    }
}

#[test]
fn batched_matmul_gradients_match_with_shared_and_batched_operands() {
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let a = if ta { rand(&[2, 5, 3], 4) } else { rand(&[2, 3, 5], 4) };
        let b = if tb { rand(&[2, 4, 5], 5) } else { rand(&[2, 5, 4], 5) };
        check(&[a.clone(), b], |x| ops::matmul_ex(&x[0], &x[1], None, ta, tb));
        // b shared over a's batch (a weight).
        let w = if tb { rand(&[4, 5], 6) } else { rand(&[5, 4], 6) };
        check(&[a, w], |x| ops::matmul_ex(&x[0], &x[1], None, ta, tb));
        // a shared over b's batch.
        let a2 = if ta { rand(&[5, 3], 7) } else { rand(&[3, 5], 7) };
        let b2 = if tb { rand(&[3, 4, 5], 8) } else { rand(&[3, 5, 4], 8) };
        check(&[a2, b2], |x| ops::matmul_ex(&x[0], &x[1], None, ta, tb));
    }
}

#[test]
fn linear_gradients_match_finite_differences() {
    check(&[rand(&[2, 3, 5], 9), rand(&[7, 5], 10), rand(&[7], 11)], |x| ops::linear(&x[0], &x[1], Some(&x[2])));
}

#[test]
fn fused_linear_gelu_gradients_match_finite_differences_and_the_unfused_pair() {
    let inputs = [rand(&[2, 3, 5], 9), rand(&[7, 5], 10), rand(&[7], 11)];
    check(&inputs, |x| ops::linear_gelu(&x[0], &x[1], Some(&x[2])));
    check(&inputs[..2], |x| ops::linear_gelu(&x[0], &x[1], None));
    // The same values and gradients as linear then gelu, bit for bit (the same kernels' arithmetic).
    let run = |fused: bool| {
        let x: Vec<Tensor> = inputs.iter().map(|t| t.detach().with_grad()).collect();
        let y = if fused {
            ops::linear_gelu(&x[0], &x[1], Some(&x[2])).unwrap()
        } else {
            ops::gelu(&ops::linear(&x[0], &x[1], Some(&x[2])).unwrap()).unwrap()
        };
        engine::backward(&ops::sum(&ops::square(&y).unwrap()).unwrap()).unwrap();
        let mut out = vec![y.to_vec().unwrap()];
        out.extend(x.iter().map(|t| t.grad().unwrap().to_vec().unwrap()));
        out
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn mlp_gradients_match_finite_differences_and_the_two_layers_apart() {
    // Weights of a trained layer's scale (1 / sqrt(fan-in)), so that f32 finite differences stay
    // clear of GELU's curvature.
    let scaled =
        |shape: &[usize], seed: u64, std: f32| Tensor::normal(shape, 0.0, std, &mut Rng::new(seed), &CPU).unwrap();
    let inputs =
        [rand(&[2, 3, 5], 12), scaled(&[7, 5], 13, 0.45), rand(&[7], 14), scaled(&[4, 7], 15, 0.38), rand(&[4], 16)];
    check(&inputs, |x| ops::mlp(&x[0], &x[1], Some(&x[2]), &x[3], Some(&x[4])));
    check(&[inputs[0].clone(), inputs[1].clone(), inputs[3].clone()], |x| ops::mlp(&x[0], &x[1], None, &x[2], None));
    // The same values and gradients as fc1 + GELU then fc2, bit for bit (the same products, and
    // GELU's derivative times the same product values).
    let run = |fused: bool| {
        let x: Vec<Tensor> = inputs.iter().map(|t| t.detach().with_grad()).collect();
        let y = if fused {
            ops::mlp(&x[0], &x[1], Some(&x[2]), &x[3], Some(&x[4])).unwrap()
        } else {
            ops::linear(&ops::linear_gelu(&x[0], &x[1], Some(&x[2])).unwrap(), &x[3], Some(&x[4])).unwrap()
        };
        engine::backward(&ops::sum(&ops::square(&y).unwrap()).unwrap()).unwrap();
        let mut out = vec![y.to_vec().unwrap()];
        out.extend(x.iter().map(|t| t.grad().unwrap().to_vec().unwrap()));
        out
    };
    assert_eq!(run(true), run(false));
}

#[test]
fn broadcast_binary_gradients_match_finite_differences() {
    use engine::backend::BinaryOp::*;
    for op in [Add, Sub, Mul, Div] {
        let x = rand(&[2, 3, 4], 12);
        // Keep divisors away from zero.
        let y = Tensor::uniform(&[3, 4], 0.5, 2.0, &mut Rng::new(13), &CPU).unwrap();
        check(&[x.clone(), y], |t| ops::binary(op, &t[0], &t[1]));
        let row = Tensor::uniform(&[4], 0.5, 2.0, &mut Rng::new(14), &CPU).unwrap();
        check(&[x.clone(), row], |t| ops::binary(op, &t[0], &t[1]));
        let same = Tensor::uniform(&[2, 3, 4], 0.5, 2.0, &mut Rng::new(15), &CPU).unwrap();
        check(&[x.clone(), same], |t| ops::binary(op, &t[0], &t[1]));
        let one = Tensor::uniform(&[], 0.5, 2.0, &mut Rng::new(16), &CPU).unwrap();
        check(&[x, one], |t| ops::binary(op, &t[0], &t[1]));
    }
}

#[test]
fn unary_gradients_match_finite_differences() {
    let x = rand(&[3, 7], 17);
    check(std::slice::from_ref(&x), |t| ops::scale(&t[0], -1.7));
    check(std::slice::from_ref(&x), |t| ops::add_scalar(&t[0], 0.3));
    check(std::slice::from_ref(&x), |t| ops::gelu(&t[0]));
    check(std::slice::from_ref(&x), |t| ops::square(&t[0]));
    let pos = Tensor::uniform(&[3, 7], 0.5, 3.0, &mut Rng::new(18), &CPU).unwrap();
    check(&[pos], |t| ops::sqrt(&t[0]));
}

#[test]
fn gelu_is_exact_at_known_points() {
    let x = Tensor::from_vec(vec![-3.0, -1.0, 0.0, 0.5, 2.0], &[5], &CPU).unwrap();
    let y = ops::gelu(&x).unwrap().to_vec().unwrap();
    // x * Phi(x), Phi from tables.
    let want = [-0.004_049_7, -0.158_655_3, 0.0, 0.345_731_4, 1.954_499_7];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 2e-6, "{a} vs {b}");
    }
}

#[test]
fn softmax_gradients_match_finite_differences() {
    check(&[rand(&[4, 9], 19)], |t| ops::softmax(&t[0]));
}

#[test]
fn layer_norm_gradients_match_finite_differences() {
    let (x, g, b) = (rand(&[5, 7], 20), rand(&[7], 21), rand(&[7], 22));
    check(&[x, g, b], |t| ops::layer_norm(&t[0], &t[1], &t[2], 1e-6));
}

#[test]
fn add_layer_norm_gradients_reach_both_inputs_through_both_outputs() {
    let (x, r, g, b) = (rand(&[5, 7], 40), rand(&[5, 7], 41), rand(&[7], 42), rand(&[7], 43));
    // Both outputs feed the loss, as in a block: the residual stream s and the normalised y.
    check(&[x, r, g, b], |t| {
        let (s, y) = ops::add_layer_norm(&t[0], &t[1], &t[2], &t[3], 1e-6)?;
        s.scale(0.7)?.add(&y)
    });
}

#[test]
fn attention_gradients_match_finite_differences() {
    for (seq, dim) in [(1, 4), (5, 3), (7, 8)] {
        let shape = [2, 2, seq, dim];
        let (q, k, v) = (rand(&shape, 23), rand(&shape, 24), rand(&shape, 25));
        check(&[q, k, v], |t| ops::attention(&t[0], &t[1], &t[2]));
    }
}

#[test]
fn gather_gradients_scatter_back_including_repeated_indices() {
    let x = rand(&[2, 5, 3], 26);
    let idx = Indices::new(vec![4, 0, 2, 2, 1, 1, 3, 0], &[2, 4]).unwrap();
    check(&[x], |t| ops::gather_rows(&t[0], &idx));
}

#[test]
fn a_gathers_fill_row_gets_the_sum_of_the_rows_that_picked_it() {
    let (x, fill) = (rand(&[2, 5, 3], 26), rand(&[3], 27));
    // Row 5 is the fill's: picked three times, once in the first sample; x's rows repeat too.
    let idx = Indices::new(vec![5, 0, 2, 2, 1, 5, 3, 5], &[2, 4]).unwrap();
    check(&[x.clone(), fill.clone()], |t| ops::gather_rows_with_fill(&t[0], &t[1], &idx));
    // MAE's shape of it: distinct rows (a permutation with the fill in front), fill as [1, 1, D].
    let fill = fill.reshape(&[1, 1, 3]).unwrap();
    let idx = Indices::new(vec![5, 3, 1, 4, 0, 2, 5, 2, 0, 1, 4, 3], &[2, 6]).unwrap();
    check(&[x, fill], |t| ops::gather_rows_with_fill(&t[0], &t[1], &idx));
}

#[test]
fn concat_and_slice_gradients_match_finite_differences() {
    let (a, b) = (rand(&[2, 1, 3], 27), rand(&[2, 4, 3], 28));
    check(&[a, b], |t| ops::concat_tokens(&[&t[0], &t[1]]));
    check(&[rand(&[2, 5, 3], 29)], |t| ops::slice_tokens(&t[0], 1, 3));
}

#[test]
fn reduction_gradients_match_finite_differences() {
    let x = rand(&[3, 4, 5], 30);
    check(std::slice::from_ref(&x), |t| ops::sum(&t[0]));
    check(std::slice::from_ref(&x), |t| ops::mean(&t[0]));
    for axis in 0..3 {
        check(std::slice::from_ref(&x), |t| ops::sum_axis(&t[0], axis));
        check(std::slice::from_ref(&x), |t| ops::mean_axis(&t[0], axis));
    }
    for axis in 0..4 {
        check(std::slice::from_ref(&x), |t| ops::broadcast_axis(&t[0], axis, 3));
    }
}

#[test]
fn permute_and_reshape_gradients_match_finite_differences() {
    let x = rand(&[2, 3, 4, 5], 31);
    check(std::slice::from_ref(&x), |t| ops::permute(&t[0], &[0, 2, 1, 3]));
    check(std::slice::from_ref(&x), |t| ops::permute(&t[0], &[3, 1, 0, 2]));
    check(&[x], |t| t[0].reshape(&[6, 20]));
}

#[test]
fn mae_loss_gradients_match_finite_differences_with_and_without_norm_pix() {
    let (pred, target) = (rand(&[2, 5, 6], 32), rand(&[2, 5, 6], 33));
    let mask = Tensor::from_vec(vec![1., 0., 1., 1., 0., 0., 1., 0., 1., 1.], &[2, 5], &CPU).unwrap();
    for norm_pix in [false, true] {
        check(std::slice::from_ref(&pred), |t| ops::mae_loss(&t[0], &target, &mask, norm_pix));
    }
}

#[test]
fn cross_entropy_gradients_match_finite_differences() {
    let labels = Indices::new(vec![2, 0, 4], &[3]).unwrap();
    check(&[rand(&[3, 5], 34)], |t| ops::cross_entropy(&t[0], &labels));
}

#[test]
fn a_two_block_transformer_has_correct_gradients_end_to_end() {
    // Pre-norm block: x + proj(attn(ln1(x))); x + fc2(gelu(fc1(ln2(x)))), 2 heads.
    let (n, t, d, h) = (2, 3, 4, 2);
    let mut rng = Rng::new(35);
    let mut params = vec![Tensor::normal(&[n, t, d], 0.0, 1.0, &mut rng, &CPU).unwrap()];
    for _ in 0..2 {
        params.push(Tensor::normal(&[3 * d, d], 0.0, 0.4, &mut rng, &CPU).unwrap()); // qkv
        params.push(Tensor::normal(&[d, d], 0.0, 0.4, &mut rng, &CPU).unwrap()); // proj
        params.push(Tensor::normal(&[2 * d, d], 0.0, 0.4, &mut rng, &CPU).unwrap()); // fc1
        params.push(Tensor::normal(&[d, 2 * d], 0.0, 0.4, &mut rng, &CPU).unwrap()); // fc2
        params.push(Tensor::normal(&[d], 1.0, 0.1, &mut rng, &CPU).unwrap()); // ln gamma
    }
    let zeros = |k| Tensor::zeros(&[k], &CPU).unwrap();
    check(&params, |p| {
        let mut x = p[0].clone();
        for blk in 0..2 {
            let w = &p[1 + blk * 5..6 + blk * 5];
            let y = ops::layer_norm(&x, &w[4], &zeros(d), 1e-6)?;
            let qkv = ops::linear(&y, &w[0], None)?.reshape(&[n, t, 3, h, d / h])?.permute(&[2, 0, 3, 1, 4])?;
            let qkv = qkv.reshape(&[3, n * h * t * (d / h)])?;
            let part = |i: usize| {
                ops::slice_tokens(&qkv.reshape(&[1, 3, n * h * t * (d / h)])?, i, 1)?.reshape(&[n, h, t, d / h])
            };
            let a = ops::attention(&part(0)?, &part(1)?, &part(2)?)?.permute(&[0, 2, 1, 3])?.reshape(&[n, t, d])?;
            x = x.add(&ops::linear(&a, &w[1], None)?)?;
            let y = ops::layer_norm(&x, &w[4], &zeros(d), 1e-6)?;
            x = x.add(&ops::linear(&ops::gelu(&ops::linear(&y, &w[2], None)?)?, &w[3], None)?)?;
        }
        Ok(x)
    });
}

#[test]
fn packed_qkv_attention_gradients_match_finite_differences() {
    for (n, t, heads, hd) in [(2, 5, 2, 3), (1, 1, 1, 4), (2, 7, 3, 2)] {
        check(&[rand(&[n, t, 3 * heads * hd], 36)], |x| ops::attention_qkv(&x[0], heads));
    }
}

#[test]
fn packed_qkv_attention_equals_reshape_permute_slice_attention() {
    let (n, t, h, hd) = (2, 6, 3, 4);
    let d = h * hd;
    let qkv = rand(&[n, t, 3 * d], 37).with_grad();
    let w = rand(&[n, t, d], 38);
    // The tape is cleared by each backward, so each graph is built right before its own.
    let fused = ops::attention_qkv(&qkv, h).unwrap();
    let a = fused.to_vec().unwrap();
    engine::backward(&fused.mul(&w).unwrap().sum().unwrap()).unwrap();
    let g1 = qkv.grad().unwrap().to_vec().unwrap();
    qkv.zero_grad();
    let split = qkv
        .reshape(&[n, t, 3, h, hd])
        .unwrap()
        .permute(&[2, 0, 3, 1, 4])
        .unwrap()
        .reshape(&[1, 3, n * h * t * hd])
        .unwrap();
    let part = |i| ops::slice_tokens(&split, i, 1).unwrap().reshape(&[n, h, t, hd]).unwrap();
    let composed = ops::attention(&part(0), &part(1), &part(2))
        .unwrap()
        .permute(&[0, 2, 1, 3])
        .unwrap()
        .reshape(&[n, t, d])
        .unwrap();
    let b = composed.to_vec().unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
    }
    engine::backward(&composed.mul(&w).unwrap().sum().unwrap()).unwrap();
    let g2 = qkv.grad().unwrap().to_vec().unwrap();
    for (x, y) in g1.iter().zip(&g2) {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "gradient {x} vs {y}");
    }
}
