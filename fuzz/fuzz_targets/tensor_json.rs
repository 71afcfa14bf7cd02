//! OIP tensors in JSON: `TensorData::from_json` (the `data` of a request input) and whole
//! tensors (self-test files, captures). Input: see `fixture::split_tensor`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_fuzz::fixture;
use outpost_protocol::tensor::{Tensor, TensorData};

fuzz_target!(|data: &[u8]| {
    let Some((dt, count, json)) = fixture::split_tensor(data) else {
        return;
    };
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(json)
        && let Ok(d) = TensorData::from_json(dt, &v, count)
    {
        assert_eq!(d.len(), count);
        assert_eq!(d.datatype(), dt);
        let _ = d.to_json();
    }
    if let Ok(t) = serde_json::from_slice::<Tensor>(json) {
        let back = serde_json::to_vec(&t).expect("a tensor serialises");
        // JSON has no NaN or infinity (they are written as null), so only finite tensors
        // must read back.
        if t.data.first_non_finite().is_none() {
            assert!(serde_json::from_slice::<Tensor>(&back).is_ok());
        }
    }
});
