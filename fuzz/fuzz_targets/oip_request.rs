//! Open Inference Protocol request bodies as the agent's local API parses them (JSON and
//! the binary tensor data extension). Input: see `fixture::split_oip`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_fuzz::fixture;
use outpost_protocol::oip::parse_infer_request;

fuzz_target!(|data: &[u8]| {
    let Some((header, body)) = fixture::split_oip(data) else {
        return;
    };
    if let Ok(r) = parse_infer_request(header.as_deref(), body) {
        for t in &r.inputs {
            assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
        }
    }
});
