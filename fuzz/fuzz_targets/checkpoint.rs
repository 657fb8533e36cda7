//! Fuzzes the safetensors checkpoint reader: any bytes must give tensors or an error, never a
//! panic, an overflow or an allocation of a size the file merely declares.
//! Run with `cargo fuzz run checkpoint` from the repository root.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((tensors, _metadata)) = mae::io::parse_safetensors_bytes(data) {
        for t in tensors {
            assert_eq!(t.data.len(), t.shape.iter().product::<usize>(), "tensor {}", t.name);
        }
    }
});
