//! The MQTT topic layout. Everything lives under `outpost/v1/`; each device owns the
//! subtree `outpost/v1/dev/{device_id}/`: it publishes only the agent → bridge topics
//! below and subscribes only to its bridge → agent topics (the bridge's broker gate and
//! the generated mosquitto ACL enforce exactly that; see `docs/brokers.md`).
//!
//! | topic                                   | direction      | retained | payload |
//! |-----------------------------------------|----------------|----------|---------|
//! | `outpost/v1/dev/{id}/directive`         | bridge → agent | yes      | signed directive (JSON) |
//! | `outpost/v1/dev/{id}/state`             | agent → bridge | yes      | [`crate::wire::ReportedState`] |
//! | `outpost/v1/dev/{id}/presence`          | agent → bridge | yes      | [`crate::wire::Presence`]; Last-Will `online:false` |
//! | `outpost/v1/dev/{id}/bundle/req`        | agent → bridge | no       | [`crate::wire::ChunkRequest`] |
//! | `outpost/v1/dev/{id}/bundle/resp`       | bridge → agent | no       | [`crate::wire::ChunkFrame`] (binary) |
//! | `outpost/v1/dev/{id}/up/{stream}`       | agent → bridge | no       | [`crate::uplink::UplinkBatch`] (binary) |
//! | `outpost/v1/dev/{id}/ack`               | bridge → agent | no       | [`crate::wire::BatchAck`] |
//! | `outpost/v1/events/{kind}`              | bridge → all   | no       | [`crate::wire::Event`] |

/// Topic root.
pub const ROOT: &str = "outpost/v1";

/// Whether `id` is a usable device id: 1..=64 of `[A-Za-z0-9._-]` (so never an MQTT
/// wildcard or level separator).
pub fn valid_device_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `s` is a usable stream name: 1..=32 of `[a-z0-9_]`.
pub fn valid_stream(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// A device's directive topic.
pub fn directive(device: &str) -> String {
    format!("{ROOT}/dev/{device}/directive")
}
/// A device's reported-state topic.
pub fn state(device: &str) -> String {
    format!("{ROOT}/dev/{device}/state")
}
/// A device's presence topic (Last-Will target).
pub fn presence(device: &str) -> String {
    format!("{ROOT}/dev/{device}/presence")
}
/// A device's chunk-request topic.
pub fn chunk_request(device: &str) -> String {
    format!("{ROOT}/dev/{device}/bundle/req")
}
/// A device's chunk-response topic.
pub fn chunk_response(device: &str) -> String {
    format!("{ROOT}/dev/{device}/bundle/resp")
}
/// A device's uplink topic for `stream`.
pub fn uplink(device: &str, stream: &str) -> String {
    format!("{ROOT}/dev/{device}/up/{stream}")
}
/// A device's ack topic.
pub fn ack(device: &str) -> String {
    format!("{ROOT}/dev/{device}/ack")
}
/// An event topic.
pub fn event(kind: &str) -> String {
    format!("{ROOT}/events/{kind}")
}

/// Filters the bridge subscribes to.
pub const BRIDGE_SUBSCRIPTIONS: [&str; 4] = [
    "outpost/v1/dev/+/state",
    "outpost/v1/dev/+/presence",
    "outpost/v1/dev/+/bundle/req",
    "outpost/v1/dev/+/up/+",
];

/// A parsed device topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceTopic {
    /// Directive.
    Directive,
    /// Reported state.
    State,
    /// Presence.
    Presence,
    /// Chunk request.
    ChunkRequest,
    /// Chunk response.
    ChunkResponse,
    /// Uplink for a stream.
    Uplink(String),
    /// Batch ack.
    Ack,
}

impl DeviceTopic {
    /// The topic under `outpost/v1/dev/{id}/` (`state`, `bundle/req`, `up/telemetry`, …):
    /// the message kind a device seal covers.
    pub fn tail(&self) -> String {
        match self {
            Self::Directive => "directive".into(),
            Self::State => "state".into(),
            Self::Presence => "presence".into(),
            Self::ChunkRequest => "bundle/req".into(),
            Self::ChunkResponse => "bundle/resp".into(),
            Self::Uplink(s) => format!("up/{s}"),
            Self::Ack => "ack".into(),
        }
    }

    /// Whether the device publishes it (and seals it).
    pub fn from_device(&self) -> bool {
        matches!(
            self,
            Self::State | Self::Presence | Self::ChunkRequest | Self::Uplink(_)
        )
    }
}

/// Splits a topic into (device id, kind); `None` for anything else.
pub fn parse(topic: &str) -> Option<(&str, DeviceTopic)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix("/dev/")?;
    let (dev, tail) = rest.split_once('/')?;
    if !valid_device_id(dev) {
        return None;
    }
    let kind = match tail {
        "directive" => DeviceTopic::Directive,
        "state" => DeviceTopic::State,
        "presence" => DeviceTopic::Presence,
        "bundle/req" => DeviceTopic::ChunkRequest,
        "bundle/resp" => DeviceTopic::ChunkResponse,
        "ack" => DeviceTopic::Ack,
        t => {
            let s = t.strip_prefix("up/")?;
            if !valid_stream(s) {
                return None;
            }
            DeviceTopic::Uplink(s.to_owned())
        }
    };
    Some((dev, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects() {
        assert_eq!(
            parse(&directive("gw-1")),
            Some(("gw-1", DeviceTopic::Directive))
        );
        assert_eq!(
            parse(&uplink("gw-1", "telemetry")),
            Some(("gw-1", DeviceTopic::Uplink("telemetry".into())))
        );
        assert_eq!(
            parse(&chunk_request("a")),
            Some(("a", DeviceTopic::ChunkRequest))
        );
        assert_eq!(parse("outpost/v1/dev/+/state"), None);
        assert_eq!(parse("outpost/v1/dev/a/up/BAD"), None);
        assert_eq!(parse("outpost/v2/dev/a/state"), None);
        assert!(!valid_device_id("a/b") && !valid_device_id("#") && !valid_device_id(""));
    }
}
