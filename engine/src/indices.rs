//! Integer index tensors (`u32`): per-sample token indices for the masked patch gather, and class
//! labels for the cross-entropy. They are inputs, never differentiated, and are checked once here so
//! that no kernel ever reads out of bounds.

use std::cell::RefCell;
use std::rc::Rc;
#[cfg(feature = "gpu")]
use std::sync::Arc;

use crate::error::{Error, Result};
#[cfg(feature = "gpu")]
use crate::gpu::{GpuBuffer, GpuContext};

/// `(batch, picks, rows)` of an `Indices::inverse_rows` table.
type InverseShape = (usize, usize, usize);

/// An entry of `Indices::inverse_rows`: no pick of that sample holds this row.
pub const NOT_PICKED: u32 = u32::MAX;

/// A shared, immutable tensor of `u32` indices, cheap to clone. Its largest value is found once,
/// when it is made, so that bounds checks cost nothing later.
#[derive(Clone, Debug)]
pub struct Indices(Rc<IndicesInner>);

struct IndicesInner {
    shape: Vec<usize>,
    values: Vec<u32>,
    max: Option<u32>,
    /// `inverse_rows`' answer, kept for the shape it was asked for.
    inverse: RefCell<Option<(InverseShape, Option<Indices>)>>,
    /// The values uploaded to a GPU, kept so that a step's indices cross the bus once.
    #[cfg(feature = "gpu")]
    gpu: RefCell<Option<Rc<GpuBuffer>>>,
}

impl std::fmt::Debug for IndicesInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Indices(shape={:?})", self.shape)
    }
}

impl Indices {
    /// Indices of `shape` from row-major `values`; fails unless they fill the shape exactly.
    pub fn new(values: Vec<u32>, shape: &[usize]) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != values.len() {
            return Err(Error::Shape(format!("indices: {} values do not fill shape {:?}", values.len(), shape)));
        }
        let max = values.iter().copied().max();
        Ok(Indices(Rc::new(IndicesInner {
            shape: shape.to_vec(),
            values,
            max,
            inverse: RefCell::new(None),
            #[cfg(feature = "gpu")]
            gpu: RefCell::new(None),
        })))
    }

    /// As `new`, from `usize` values; fails on any that does not fit in `u32`.
    pub fn from_usize(values: &[usize], shape: &[usize]) -> Result<Self> {
        let v = values
            .iter()
            .map(|&i| u32::try_from(i).map_err(|_| Error::Invalid(format!("index {i} does not fit in u32"))))
            .collect::<Result<Vec<u32>>>()?;
        Self::new(v, shape)
    }

    /// The length of each axis.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// The values, row-major.
    pub fn values(&self) -> &[u32] {
        &self.0.values
    }

    /// Number of indices.
    pub fn len(&self) -> usize {
        self.0.values.len()
    }

    /// True when there are no indices.
    pub fn is_empty(&self) -> bool {
        self.0.values.is_empty()
    }

    /// Fails unless every index is below `bound`.
    pub fn check_below(&self, bound: usize, what: &str) -> Result<()> {
        match self.0.max {
            Some(m) if m as usize >= bound => {
                Err(Error::Invalid(format!("{what}: index {m} out of range for an axis of length {bound}")))
            }
            _ => Ok(()),
        }
    }

    /// Where each row went, when no row is picked twice within a sample: for indices
    /// `[batch, picks]` (the first `batch x picks` values) into rows `0..rows`, the `[batch, rows]`
    /// table whose entry `(n, t)` is the pick `i` with `self[n, i] == t`, or `NOT_PICKED`. Picks at
    /// or past `rows` (a gather's fill row) hold no row and are left out. `None` when some sample
    /// picks a row twice (or there are fewer than `batch x picks` values). Made once per shape and
    /// kept: a scatter by distinct indices is then a gather by this table (one read per value, where
    /// a scatter-add without atomics compares every pick).
    pub fn inverse_rows(&self, batch: usize, picks: usize, rows: usize) -> Option<Indices> {
        let key = (batch, picks, rows);
        if let Some((k, inv)) = self.0.inverse.borrow().as_ref()
            && *k == key
        {
            return inv.clone();
        }
        let inv = self.make_inverse_rows(batch, picks, rows);
        *self.0.inverse.borrow_mut() = Some((key, inv.clone()));
        inv
    }

    fn make_inverse_rows(&self, batch: usize, picks: usize, rows: usize) -> Option<Indices> {
        let values = self.0.values.get(..batch * picks)?;
        let mut table = vec![NOT_PICKED; batch * rows];
        for n in 0..batch {
            for (i, &t) in values[n * picks..(n + 1) * picks].iter().enumerate() {
                if t as usize >= rows {
                    continue;
                }
                let slot = &mut table[n * rows + t as usize];
                if *slot != NOT_PICKED {
                    return None;
                }
                *slot = i as u32;
            }
        }
        Indices::new(table, &[batch, rows]).ok()
    }

    /// The values on the GPU of `ctx`, uploaded by `upload` on first use.
    #[cfg(feature = "gpu")]
    pub(crate) fn gpu_buffer(
        &self,
        upload: impl FnOnce() -> Result<Rc<GpuBuffer>>,
        ctx: &Arc<GpuContext>,
    ) -> Result<Rc<GpuBuffer>> {
        let mut slot = self.0.gpu.borrow_mut();
        match slot.as_ref() {
            Some(b) if Arc::ptr_eq(b.context(), ctx) => Ok(b.clone()),
            _ => {
                let b = upload()?;
                *slot = Some(b.clone());
                Ok(b)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_rows_says_which_pick_holds_each_row_and_refuses_repeats() {
        // Two samples picking 3 of 5 rows each.
        let idx = Indices::new(vec![4, 0, 2, 1, 3, 0], &[2, 3]).unwrap();
        let inv = idx.inverse_rows(2, 3, 5).expect("distinct within each sample");
        let x = NOT_PICKED;
        assert_eq!(inv.values(), &[1, x, 2, x, 0, 2, 0, x, 1, x]);
        assert_eq!(inv.shape(), &[2, 5]);
        // A permutation's inverse is a permutation.
        let perm = Indices::new(vec![2, 0, 1], &[1, 3]).unwrap();
        assert_eq!(perm.inverse_rows(1, 3, 3).unwrap().values(), &[1, 2, 0]);
        // A row picked twice within a sample (but not across samples), or an index past rows: none.
        assert!(Indices::new(vec![1, 1, 0, 2], &[2, 2]).unwrap().inverse_rows(2, 2, 3).is_none());
        assert!(Indices::new(vec![0, 1, 1, 0], &[2, 2]).unwrap().inverse_rows(2, 2, 2).is_some());
        // Picks past the rows (a fill's) hold none: index 4 of 4 rows is left out, twice or not.
        assert_eq!(idx.inverse_rows(2, 3, 4).unwrap().values(), &[1, x, 2, x, 2, 0, x, 1]);
        let fills = Indices::new(vec![2, 2, 0, 2, 1, 2], &[2, 3]).unwrap();
        assert_eq!(fills.inverse_rows(2, 3, 2).unwrap().values(), &[2, x, x, 1]);
        assert!(idx.inverse_rows(3, 3, 5).is_none(), "fewer values than 3 x 3");
        // Kept per shape: asking again gives the same table, another shape its own.
        assert!(Rc::ptr_eq(&idx.inverse_rows(2, 3, 5).unwrap().0, &idx.inverse_rows(2, 3, 5).unwrap().0));
        assert_eq!(idx.inverse_rows(1, 3, 5).unwrap().values(), &[1, x, 2, x, 0]);
    }
}
