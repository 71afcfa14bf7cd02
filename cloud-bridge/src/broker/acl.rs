//! Who may do what on the broker: pure functions over an [`Identity`] and a topic, so
//! the rules are unit- and property-tested apart from any socket.
//!
//! A device `D` may publish only to its own agent → bridge topics
//! (`outpost/v1/dev/D/{state,presence,bundle/req,up/STREAM}`), may subscribe only to
//! exactly its own bridge → agent topics (`outpost/v1/dev/D/{directive,bundle/resp,ack}`,
//! no wildcards), and its Last-Will must be its own presence topic. The bridge may do
//! anything, including `$share/...` shared subscriptions. The same rules are written
//! for mosquitto as `pattern` lines in [`crate::broker::external`].

use outpost_protocol::topics::{self, DeviceTopic};

/// An authenticated MQTT client.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// The bridge itself (or an operator tool holding the bridge's credential): no limits,
    /// any client id.
    Bridge,
    /// A provisioned device; its client id must be its id.
    Device(String),
}

impl Identity {
    /// The device id, if this is a device.
    pub fn device(&self) -> Option<&str> {
        match self {
            Identity::Device(d) => Some(d),
            Identity::Bridge => None,
        }
    }

    /// A short label for logs and for the broker-side username.
    pub fn label(&self) -> &str {
        match self {
            Identity::Bridge => crate::broker::BRIDGE_ID,
            Identity::Device(d) => d,
        }
    }
}

/// What a client tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// PUBLISH to a topic.
    Publish,
    /// SUBSCRIBE to a filter.
    Subscribe,
    /// Register a Last-Will on a topic.
    Will,
}

impl Action {
    /// Lower-case name for logs and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Publish => "publish",
            Action::Subscribe => "subscribe",
            Action::Will => "will",
        }
    }
}

/// Whether `who` may do `action` on `topic` (a topic name, or a filter for subscribe).
pub fn allowed(who: &Identity, action: Action, topic: &str) -> bool {
    let device = match who {
        Identity::Bridge => return true,
        Identity::Device(d) => d.as_str(),
    };
    // `topics::parse` accepts only the exact layout with a valid device id (never a
    // wildcard or separator) and known tails, so a filter with `+`, `#` or `$share/`, or
    // anything under another root, cannot match.
    let Some((owner, kind)) = topics::parse(topic) else {
        return false;
    };
    if owner != device {
        return false;
    }
    match action {
        Action::Publish => matches!(
            kind,
            DeviceTopic::State
                | DeviceTopic::Presence
                | DeviceTopic::ChunkRequest
                | DeviceTopic::Uplink(_)
        ),
        Action::Subscribe => matches!(
            kind,
            DeviceTopic::Directive | DeviceTopic::ChunkResponse | DeviceTopic::Ack
        ),
        Action::Will => kind == DeviceTopic::Presence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dev(d: &str) -> Identity {
        Identity::Device(d.into())
    }

    #[test]
    fn a_device_is_confined_to_its_subtree() {
        let a = dev("gw-a");
        for t in [
            topics::state("gw-a"),
            topics::presence("gw-a"),
            topics::chunk_request("gw-a"),
            topics::uplink("gw-a", "telemetry"),
        ] {
            assert!(allowed(&a, Action::Publish, &t), "{t}");
            assert!(!allowed(&a, Action::Subscribe, &t), "{t}");
        }
        for t in [
            topics::directive("gw-a"),
            topics::chunk_response("gw-a"),
            topics::ack("gw-a"),
        ] {
            assert!(allowed(&a, Action::Subscribe, &t), "{t}");
            assert!(!allowed(&a, Action::Publish, &t), "{t}");
        }
        assert!(allowed(&a, Action::Will, &topics::presence("gw-a")));
        assert!(!allowed(&a, Action::Will, &topics::state("gw-a")));
        for bad in [
            topics::state("gw-b"),
            topics::presence("gw-b"),
            topics::uplink("gw-b", "telemetry"),
            topics::directive("gw-b"),
            topics::chunk_request("gw-b"),
            "#".into(),
            "+".into(),
            "$SYS/#".into(),
            "outpost/v1/dev/+/state".into(),
            "outpost/v1/dev/gw-a/#".into(),
            "outpost/v1/dev/gw-a/+".into(),
            "outpost/v1/dev/gw-a/up/+".into(),
            "$share/g/outpost/v1/dev/gw-a/ack".into(),
            "outpost/v1/dev/gw-a/state/extra".into(),
            "outpost/v1/events/device_online".into(),
            "outpost/v1/dev/gw-a".into(),
            String::new(),
        ] {
            for act in [Action::Publish, Action::Subscribe, Action::Will] {
                assert!(!allowed(&a, act, &bad), "{act:?} {bad}");
            }
        }
    }

    #[test]
    fn the_bridge_may_do_anything() {
        for t in ["#", "$share/bridges/outpost/v1/dev/+/up/+", "$SYS/#", "x"] {
            for act in [Action::Publish, Action::Subscribe, Action::Will] {
                assert!(allowed(&Identity::Bridge, act, t));
            }
        }
    }

    fn device_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._-]{1,16}"
    }

    fn any_action() -> impl Strategy<Value = Action> {
        prop_oneof![
            Just(Action::Publish),
            Just(Action::Subscribe),
            Just(Action::Will)
        ]
    }

    proptest! {
        /// Nothing under another device's subtree is ever allowed.
        #[test]
        fn never_another_devices_topics(a in device_id(), b in device_id(),
                                        tail in "[a-z/+#_]{0,20}", act in any_action()) {
            prop_assume!(a != b);
            let t = format!("outpost/v1/dev/{b}/{tail}");
            prop_assert!(!allowed(&dev(&a), act, &t));
        }

        /// Whatever a device is allowed is inside its own subtree and has no wildcard.
        #[test]
        fn allowed_implies_own_subtree(a in device_id(), t in "[ -~]{0,48}", act in any_action()) {
            if allowed(&dev(&a), act, &t) {
                let own = format!("outpost/v1/dev/{a}/");
                prop_assert!(t.starts_with(&own));
                prop_assert!(!t.contains('+') && !t.contains('#'));
            }
        }

        /// Wildcards never pass for a device, wherever they are.
        #[test]
        fn no_wildcard_filters(a in device_id(), pre in "[a-z/]{0,12}", w in "[+#]",
                               post in "[a-z/]{0,12}") {
            let t = format!("outpost/v1/dev/{a}/{pre}{w}{post}");
            prop_assert!(!allowed(&dev(&a), Action::Subscribe, &t));
        }

        /// Every stream a device may use is publishable, and only on its own id.
        #[test]
        fn own_uplinks(a in device_id(), s in "[a-z0-9_]{1,32}") {
            prop_assert!(allowed(&dev(&a), Action::Publish, &topics::uplink(&a, &s)));
            prop_assert!(!allowed(&dev(&a), Action::Subscribe, &topics::uplink(&a, &s)));
        }
    }
}
