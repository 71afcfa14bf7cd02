//! Model spec files (TOML) as registration reads them and applies them to a contract
//! derived from the graph.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use outpost_fuzz::fixture;
use outpost_inference::spec;
use outpost_protocol::contract::ModelContract;

fn contracts() -> &'static [ModelContract] {
    static C: OnceLock<Vec<ModelContract>> = OnceLock::new();
    C.get_or_init(fixture::contracts)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok((overlay, _rest)) = spec::from_toml(text) else {
        return;
    };
    for c in contracts() {
        if let Ok(applied) = overlay.apply(c.clone()) {
            assert!(
                applied.validate().is_ok(),
                "apply returns only valid contracts"
            );
        }
    }
});
