//! File formats: checkpoints (safetensors, readable by Python's `safetensors` and loading
//! official MAE weights converted to it), NumPy `.npy` arrays for features and labels, and PNG
//! pictures (plots, reconstruction grids, scatter plots) drawn with a built-in bitmap font.
//!
//! Every writer is atomic ([`write_atomically`]): a crash leaves the old file or the new one.
//! Every reader returns errors, never panics, on malformed files, and checks sizes declared in a
//! file against the file's real length before allocating them.

pub mod atomic;
pub mod font;
pub mod npy;
pub mod plot;
pub mod png;
pub mod safetensors;
pub mod scatter;

pub use atomic::write_atomically;
pub use font::draw_text;
pub use npy::{read_npy_f32, write_npy_f32, write_npy_i64, write_npy_u32};
pub use plot::{Series, image_grid, line_plot};
pub use png::{save_png, to_rgb};
pub use safetensors::{
    NamedTensor, check_state_dict, parse_safetensors_bytes, read_metadata, read_safetensors, write_safetensors,
};
