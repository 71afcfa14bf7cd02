//! Signed deployment directives, as the agent verifies them, re-verifies them after a
//! restart and reports them when refused. Input: see `fixture::split_directive` (odd mode
//! signs the bytes as a directive body with the test key, to reach the body checks).
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_fuzz::fixture;
use outpost_protocol::Limits;
use outpost_protocol::directive::{self, DirectiveContext};

fuzz_target!(|data: &[u8]| {
    let Some((sign, bytes)) = fixture::split_directive(data) else {
        return;
    };
    let message;
    let bytes = if sign {
        let Ok(body) = std::str::from_utf8(bytes) else {
            return;
        };
        message = fixture::sign_directive_body(fixture::key(), body);
        &message[..]
    } else {
        bytes
    };
    let trust = fixture::trusted();
    let limits = Limits::default();
    let ctx = DirectiveContext {
        device_id: fixture::DEVICE,
        last_sequence: Some(fixture::LAST_SEQUENCE),
        now: fixture::NOW,
        max_skew: 300,
    };
    match directive::verify(bytes, trust, ctx, &limits) {
        Ok(d) => {
            let d = d.directive();
            assert_eq!(d.device_id, fixture::DEVICE);
            assert!(d.sequence > fixture::LAST_SEQUENCE && fixture::NOW < d.expires_at);
        }
        Err(e) => {
            let r = directive::rejection(bytes, &e, fixture::NOW, &limits);
            assert_eq!(r.kind, e.kind());
        }
    }
    let _ = directive::reverify_accepted(bytes, trust, fixture::DEVICE, &limits);
});
