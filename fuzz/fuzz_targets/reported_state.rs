//! Device control messages as the bridge decodes them: reported state, presence; and the
//! bridge's messages as the agent and webhook consumers decode them: batch acks, events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_protocol::Limits;
use outpost_protocol::wire::{BatchAck, Event, Presence, ReportedState};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    if let Ok(s) = ReportedState::decode(data, &limits) {
        // No floats in the state: the JSON round trip is exact.
        assert_eq!(ReportedState::decode(&s.encode(), &limits), Ok(s));
    }
    if let Ok(p) = Presence::decode(data, &limits) {
        assert_eq!(Presence::decode(&p.encode(), &limits), Ok(p));
    }
    if let Ok(a) = BatchAck::decode(data, &limits) {
        assert_eq!(BatchAck::decode(&a.encode(), &limits), Ok(a));
    }
    if let Ok(e) = Event::decode(data, &limits) {
        assert!(Event::decode(&e.encode(), &limits).is_ok());
    }
});
