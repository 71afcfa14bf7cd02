//! OIP tensors in the binary tensor data extension (`TensorData::from_le_bytes`).
//! Input: see `fixture::split_tensor`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_fuzz::fixture;
use outpost_protocol::tensor::TensorData;

fuzz_target!(|data: &[u8]| {
    let Some((dt, count, bytes)) = fixture::split_tensor(data) else {
        return;
    };
    if let Ok(d) = TensorData::from_le_bytes(dt, bytes, count) {
        assert_eq!(d.len(), count);
        // The binary form is exact, NaN payloads included.
        assert_eq!(d.to_le_bytes(), bytes);
    }
});
