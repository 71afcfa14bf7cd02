//! Sealed device messages as the bridge opens them (`device_auth::open`) before trusting
//! anything a device publishes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use outpost_fuzz::fixture;
use outpost_protocol::device_auth;

fuzz_target!(|data: &[u8]| {
    let key_id = device_auth::key_id(data);
    let trust = fixture::trusted();
    match device_auth::open(data, fixture::DEVICE, fixture::SEAL_KIND, trust, 64 * 1024) {
        Ok(o) => {
            assert_eq!(Ok(&o.key_id), key_id.as_ref());
            assert!(data.ends_with(o.body));
            // A seal binds the device id: the same bytes never open for another device.
            assert!(
                device_auth::open(data, "gw-0002", fixture::SEAL_KIND, trust, 64 * 1024).is_err()
            );
        }
        Err(e) => {
            let _ = e.reason();
        }
    }
});
