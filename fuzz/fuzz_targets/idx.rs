//! Fuzzes the IDX parser with arbitrary bytes, gzipped or not: it must return an error or a
//! consistent array, never panic, hang, or allocate what a header merely claims.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = mae::data::idx::parse_idx_bytes(data) {
        assert_eq!(a.data.len(), a.dims.iter().product::<usize>());
    }
});
