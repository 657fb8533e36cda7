//! One error type for the whole engine. Every failure a user can cause (a shape that does not fit,
//! a tensor over the GPU's binding limit, a lost device) becomes a value with a message that says
//! what to change, never a panic deep inside a kernel.

use std::fmt;

/// Every failure the engine reports: the variant says what kind, the message what happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// Shapes that do not fit the op; the message names the op and both shapes.
    Shape(String),
    /// Tensors on different devices were combined.
    Device(String),
    /// The GPU could not do what was asked: no adapter, a limit exceeded, out of memory, device lost.
    Gpu(String),
    /// Anything else: bad arguments, a parse failure, a non-finite value where one is not allowed.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Shape(m) => write!(f, "shape error: {m}"),
            Error::Device(m) => write!(f, "device error: {m}"),
            Error::Gpu(m) => write!(f, "GPU error: {m}"),
            Error::Invalid(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {}

/// `std::result::Result` with the engine's `Error`.
pub type Result<T> = std::result::Result<T, Error>;
