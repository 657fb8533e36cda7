//! The tape itself: what it records, what backward accumulates, and what no-grad mode skips.

use engine::tape::{clear_tape, tape_len};
use engine::{Device, Tensor, backward, no_grad, ops};

const CPU: Device = Device::Cpu;

fn t(v: &[f32], shape: &[usize]) -> Tensor {
    Tensor::from_slice(v, shape, &CPU).unwrap()
}

#[test]
fn backward_accumulates_into_a_tensor_used_twice() {
    let x = t(&[1.0, 2.0, 3.0], &[3]).with_grad();
    // L = sum(x * x + x) -> dL/dx = 2x + 1
    let loss = x.mul(&x).unwrap().add(&x).unwrap().sum().unwrap();
    backward(&loss).unwrap();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![3.0, 5.0, 7.0]);
    assert_eq!(tape_len(), 0, "backward clears the tape");
}

#[test]
fn gradients_accumulate_across_backward_calls_until_zeroed() {
    let x = t(&[1.0, -1.0], &[2]).with_grad();
    for _ in 0..3 {
        backward(&x.scale(2.0).unwrap().sum().unwrap()).unwrap();
    }
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![6.0, 6.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn no_grad_mode_records_nothing() {
    clear_tape();
    let x = t(&[1.0, 2.0], &[2]).with_grad();
    let y = no_grad(|| ops::gelu(&x).unwrap());
    assert_eq!(tape_len(), 0);
    assert!(!y.requires_grad());
    assert!(backward(&y.sum().unwrap()).is_err(), "nothing to differentiate");
}

#[test]
fn ops_on_constants_are_not_recorded() {
    clear_tape();
    let a = t(&[1.0, 2.0], &[2]);
    let _ = a.add(&a).unwrap().sum().unwrap();
    assert_eq!(tape_len(), 0);
}

#[test]
fn only_tensors_that_require_grad_receive_one() {
    let w = t(&[1.0, 2.0, 3.0, 4.0], &[2, 2]).with_grad();
    let x = t(&[1.0, 1.0], &[1, 2]);
    backward(&x.matmul(&w).unwrap().sum().unwrap()).unwrap();
    assert!(x.grad().is_none());
    assert_eq!(w.grad().unwrap().to_vec().unwrap(), vec![1.0, 1.0, 1.0, 1.0]);
}

#[test]
fn shape_errors_say_what_went_wrong() {
    let a = t(&[1.0; 6], &[2, 3]);
    let err = a.matmul(&a).unwrap_err().to_string();
    assert!(err.contains("inner sizes differ"), "{err}");
    let err = a.add(&t(&[1.0, 2.0], &[2])).unwrap_err().to_string();
    assert!(err.contains("cannot broadcast"), "{err}");
    assert!(a.reshape(&[4, 2]).is_err());
    assert!(a.permute(&[0, 0]).is_err());
}

#[test]
fn xavier_uniform_respects_its_bound() {
    let mut rng = engine::Rng::new(1);
    let w = Tensor::xavier_uniform(&[64, 3, 4, 4], &mut rng, &CPU).unwrap();
    let bound = (6.0f32 / (48.0 + 64.0)).sqrt();
    let v = w.to_vec().unwrap();
    assert!(v.iter().all(|x| x.abs() <= bound));
    assert!(v.iter().any(|x| x.abs() > 0.9 * bound));
}
