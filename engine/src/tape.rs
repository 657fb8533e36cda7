//! Reverse-mode autograd on a tape (a Wengert list).
//!
//! Every op whose inputs require gradients appends one `Entry` to this thread's tape: the id of the
//! tensor it produced, its inputs, and a backward rule (a closure holding whatever the op saved).
//! `backward(loss)` walks the tape from the newest entry to the oldest, hands each rule the gradient
//! of its output, and accumulates what the rule returns into the inputs: into a map for
//! intermediate tensors, into `Tensor::grad` for leaves (parameters). The tape is then cleared, which
//! frees everything the forward pass saved. In no-grad mode nothing is recorded at all.
//!
//! One refinement: a rule may ask for the gradient accumulated so far for its first input and add
//! its own to it in the same kernel (`AccumulatingFn`; the LayerNorm does, since its input is also
//! the residual stream), instead of the walk adding the two with a separate kernel.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Given the gradient of an op's output, the gradients of its inputs (`None` where an input needs
/// none), in the order the inputs were recorded.
pub(crate) type BackwardFn = Box<dyn FnOnce(&Tensor) -> Result<Vec<Option<Tensor>>>>;

/// A rule that also takes the gradient accumulated so far for its first input (from the uses of
/// that input recorded later, already walked) and returns its own gradient for it *plus* that one:
/// a kernel that can add while it writes saves the separate add. It must return `Some` for the
/// first input whenever it is handed a gradient.
pub(crate) type AccumulatingFn = Box<dyn FnOnce(&Tensor, Option<Tensor>) -> Result<Vec<Option<Tensor>>>>;

enum Rule {
    Plain(BackwardFn),
    AccumulatesFirstInput(AccumulatingFn),
}

struct Entry {
    output: u64,
    inputs: Vec<Tensor>,
    backward: Rule,
}

thread_local! {
    static TAPE: RefCell<Vec<Entry>> = const { RefCell::new(Vec::new()) };
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record onto the tape (false inside `no_grad`).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// While alive, ops record nothing (evaluation, feature extraction, optimizer updates).
pub struct NoGradGuard {
    previous: bool,
}

impl NoGradGuard {
    /// Switches recording off on this thread until the guard is dropped, which restores the previous
    /// setting.
    pub fn new() -> Self {
        let previous = GRAD_ENABLED.with(|g| g.replace(false));
        NoGradGuard { previous }
    }
}

impl Default for NoGradGuard {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoGradGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.previous));
    }
}

/// Run `f` with recording switched off.
pub fn no_grad<R>(f: impl FnOnce() -> R) -> R {
    let _guard = NoGradGuard::new();
    f()
}

pub(crate) fn record(output: u64, inputs: Vec<Tensor>, backward: BackwardFn) {
    TAPE.with(|t| t.borrow_mut().push(Entry { output, inputs, backward: Rule::Plain(backward) }));
}

pub(crate) fn record_accumulating(output: u64, inputs: Vec<Tensor>, backward: AccumulatingFn) {
    TAPE.with(|t| t.borrow_mut().push(Entry { output, inputs, backward: Rule::AccumulatesFirstInput(backward) }));
}

/// Number of ops recorded since the last `backward` or `clear_tape`.
pub fn tape_len() -> usize {
    TAPE.with(|t| t.borrow().len())
}

/// Forget everything recorded (e.g. after a forward pass whose backward is not wanted).
pub fn clear_tape() {
    let entries = TAPE.with(|t| std::mem::take(&mut *t.borrow_mut()));
    drop(entries);
}

/// Accumulate `d(loss)/d(leaf)` into `leaf.grad()` for every leaf that requires gradients.
/// `loss` must hold a single value.
pub fn backward(loss: &Tensor) -> Result<()> {
    if loss.numel() != 1 {
        return Err(Error::Shape(format!(
            "backward: the loss must hold one value, it has shape {:?}; use backward_with for others",
            loss.shape()
        )));
    }
    let seed = Tensor::full(loss.shape(), 1.0, &loss.device())?;
    backward_with(loss, &seed)
}

/// Reverse pass seeded with `grad` (the gradient of some scalar with respect to `output`).
pub fn backward_with(output: &Tensor, grad: &Tensor) -> Result<()> {
    // Take the entries first: the tape is cleared whatever happens below.
    let entries = TAPE.with(|t| std::mem::take(&mut *t.borrow_mut()));
    if !output.requires_grad() {
        return Err(Error::Invalid("backward: the loss does not depend on any tensor that requires gradients".into()));
    }
    if grad.shape() != output.shape() {
        return Err(Error::Shape(format!(
            "backward: gradient shape {:?} differs from output shape {:?}",
            grad.shape(),
            output.shape()
        )));
    }
    let _no_grad = NoGradGuard::new();
    if output.is_leaf() {
        return output.accumulate_grad(grad);
    }
    let mut grads: HashMap<u64, Tensor> = HashMap::new();
    grads.insert(output.id(), grad.clone());
    for entry in entries.into_iter().rev() {
        let Some(g) = grads.remove(&entry.output) else {
            continue;
        };
        let input_grads = match entry.backward {
            Rule::Plain(rule) => rule(&g)?,
            Rule::AccumulatesFirstInput(rule) => {
                let first = &entry.inputs[0];
                let pending = if first.requires_grad() && !first.is_leaf() { grads.remove(&first.id()) } else { None };
                let handed = pending.is_some();
                let input_grads = rule(&g, pending)?;
                if handed && input_grads.first().is_none_or(Option::is_none) {
                    return Err(Error::Invalid("backward: a rule dropped the gradient it was handed".into()));
                }
                input_grads
            }
        };
        debug_assert_eq!(input_grads.len(), entry.inputs.len());
        for (input, ig) in entry.inputs.iter().zip(input_grads) {
            let Some(ig) = ig else { continue };
            if !input.requires_grad() {
                continue;
            }
            if ig.shape() != input.shape() {
                return Err(Error::Shape(format!(
                    "backward: a rule returned a gradient of shape {:?} for an input of shape {:?}",
                    ig.shape(),
                    input.shape()
                )));
            }
            if input.is_leaf() {
                input.accumulate_grad(&ig)?;
            } else {
                match grads.remove(&input.id()) {
                    Some(prev) => {
                        grads.insert(input.id(), prev.add(&ig)?);
                    }
                    None => {
                        grads.insert(input.id(), ig);
                    }
                }
            }
        }
    }
    Ok(())
}
