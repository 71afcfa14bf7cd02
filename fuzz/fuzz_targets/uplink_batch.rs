//! Uplink batches from devices, as the bridge's ingest decodes them, and their record
//! bodies as ingest reads them (JSON, with an optional `model` reference).
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::Limits;
use outpost_protocol::manifest::ModelRef;
use outpost_protocol::uplink::UplinkBatch;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let Ok(b) = UplinkBatch::decode(data, &limits) else {
        return;
    };
    assert!(!b.records.is_empty());
    assert!(b.records.windows(2).all(|w| w[0].seq < w[1].seq));
    for r in &b.records {
        // Record bodies have no typed decoder: ingest reads them as JSON values.
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body)
            && let Some(m) = v.get("model")
        {
            let _ = serde_json::from_value::<ModelRef>(m.clone());
        }
    }
    // What decodes re-encodes to a frame that decodes to the same batch.
    let again = b.encode(1).expect("re-encode");
    assert_eq!(UplinkBatch::decode(&again, &limits).as_ref(), Ok(&b));
});
