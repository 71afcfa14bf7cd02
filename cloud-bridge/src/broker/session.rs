//! What the gate decides about one client connection, without IO: the first packet
//! (must be a 3.1.1 CONNECT), admission (identity, client id, Last-Will, credential
//! rewrite) and every later client → broker packet (ACL). The IO loop in
//! [`crate::broker::gate`] only moves bytes and carries these decisions out.
//!
//! Packets are decoded with rumqttc's MQTT 3.1.1 codec and re-encoded before they are
//! forwarded, so the broker receives exactly what was checked (never a byte sequence
//! that two parsers might read differently).

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, Connect, ConnectReturnCode, Login, Packet};

use super::acl::{self, Action, Identity};
use super::frame;

/// A decoded CONNECT, waiting for authentication.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    connect: Connect,
}

impl ConnectRequest {
    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.connect.client_id
    }

    /// The username, if one was sent (an empty one counts as none).
    pub fn username(&self) -> Option<&str> {
        self.connect
            .login
            .as_ref()
            .map(|l| l.username.as_str())
            .filter(|u| !u.is_empty())
    }

    /// The password, if one was sent.
    pub fn password(&self) -> Option<&[u8]> {
        self.connect
            .login
            .as_ref()
            .map(|l| l.password.as_bytes())
            .filter(|p| !p.is_empty())
    }

    /// The Last-Will topic, if any.
    pub fn will_topic(&self) -> Option<&str> {
        self.connect.last_will.as_ref().map(|w| w.topic.as_str())
    }
}

/// Why a connection was refused or closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The first packet was not a CONNECT (or not decodable).
    #[error("first packet is not a valid CONNECT: {0}")]
    NotConnect(String),
    /// Another MQTT version.
    #[error("unsupported protocol {name} level {level}")]
    Protocol {
        /// Protocol name sent.
        name: String,
        /// Level sent.
        level: u8,
    },
    /// No valid credential.
    #[error("bad credentials for client id {client_id:?}")]
    Credentials {
        /// Client id sent.
        client_id: String,
    },
    /// A device used a client id other than its own.
    #[error("device {device} tried client id {client_id:?}")]
    ClientId {
        /// The authenticated device.
        device: String,
        /// Client id sent.
        client_id: String,
    },
    /// The ACL refused something (see [`Violation`]).
    #[error(transparent)]
    Denied(#[from] Violation),
    /// A packet a client must never send, or one that does not decode.
    #[error("protocol violation: {0}")]
    Malformed(String),
}

impl Refusal {
    /// The CONNACK code a refusal at CONNECT time answers with (`None`: just close).
    pub fn connack(&self) -> Option<ConnectReturnCode> {
        Some(match self {
            Refusal::Protocol { .. } => ConnectReturnCode::RefusedProtocolVersion,
            Refusal::Credentials { .. } => ConnectReturnCode::BadUserNamePassword,
            Refusal::ClientId { .. } => ConnectReturnCode::BadClientId,
            Refusal::Denied(_) => ConnectReturnCode::NotAuthorized,
            Refusal::NotConnect(_) | Refusal::Malformed(_) => return None,
        })
    }
}

/// An ACL refusal: who tried what on which topic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device {device} may not {} {topic:?}", .action.as_str())]
pub struct Violation {
    /// The device.
    pub device: String,
    /// What it tried.
    pub action: Action,
    /// Topic or filter.
    pub topic: String,
}

/// Decodes the first packet of a connection.
pub fn first_packet(frame: BytesMut, max: usize) -> Result<ConnectRequest, Refusal> {
    if let Some((name, level)) = frame::connect_protocol(&frame)
        && (level != 4 || name != b"MQTT")
    {
        return Err(Refusal::Protocol {
            name: String::from_utf8_lossy(name).into_owned(),
            level,
        });
    }
    let mut frame = frame;
    match Packet::read(&mut frame, max) {
        Ok(Packet::Connect(connect)) => Ok(ConnectRequest { connect }),
        Ok(other) => Err(Refusal::NotConnect(format!("{:?}", packet_kind(&other)))),
        Err(e) => Err(Refusal::NotConnect(e.to_string())),
    }
}

/// How the gate admits clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Anyone, any client id, no ACL (`--no-broker-auth`).
    Open,
    /// Credentials or a client certificate required; the ACL applies.
    Enforce,
}

/// An admitted connection.
#[derive(Debug)]
pub struct Session {
    /// Who it is (`None` on an open broker: nothing is checked).
    pub identity: Option<Identity>,
    /// The client id.
    pub client_id: String,
}

/// Decides admission once the authenticator has answered (`identity`). On success
/// returns the session and the CONNECT to send upstream, its credentials replaced by
/// the gate's internal secret (the broker behind accepts nothing else).
pub fn admit(
    req: ConnectRequest,
    mode: Mode,
    identity: Option<Identity>,
    internal_secret: &str,
) -> Result<(Session, BytesMut), Refusal> {
    let identity = match mode {
        Mode::Open => None,
        Mode::Enforce => {
            let who = identity.ok_or_else(|| Refusal::Credentials {
                client_id: req.client_id().to_owned(),
            })?;
            if let Identity::Device(d) = &who
                && d != req.client_id()
            {
                return Err(Refusal::ClientId {
                    device: d.clone(),
                    client_id: req.client_id().to_owned(),
                });
            }
            if let (Some(d), Some(t)) = (who.device(), req.will_topic())
                && !acl::allowed(&who, Action::Will, t)
            {
                return Err(Violation {
                    device: d.to_owned(),
                    action: Action::Will,
                    topic: t.to_owned(),
                }
                .into());
            }
            Some(who)
        }
    };
    let mut connect = req.connect;
    let user = identity.as_ref().map_or("open", Identity::label).to_owned();
    connect.login = Some(Login::new(user, internal_secret));
    let mut out = BytesMut::new();
    Packet::Connect(connect.clone())
        .write(&mut out, usize::MAX)
        .map_err(|e| Refusal::Malformed(e.to_string()))?;
    Ok((
        Session {
            identity,
            client_id: connect.client_id,
        },
        out,
    ))
}

/// A CONNACK refusing with `code`, encoded.
pub fn connack(code: ConnectReturnCode) -> BytesMut {
    let mut out = BytesMut::new();
    // Four bytes; cannot exceed any cap.
    let _ = Packet::ConnAck(ConnAck::new(code, false)).write(&mut out, usize::MAX);
    out
}

impl Session {
    /// Checks one client → broker packet; returns the bytes to forward.
    pub fn inspect(&self, frame: BytesMut, max: usize) -> Result<BytesMut, Refusal> {
        let mut frame = frame;
        let packet =
            Packet::read(&mut frame, max).map_err(|e| Refusal::Malformed(e.to_string()))?;
        match &packet {
            Packet::Publish(p) => self.check(Action::Publish, &p.topic)?,
            Packet::Subscribe(s) => {
                for f in &s.filters {
                    self.check(Action::Subscribe, &f.path)?;
                }
            }
            Packet::Unsubscribe(_)
            | Packet::PubAck(_)
            | Packet::PubRec(_)
            | Packet::PubRel(_)
            | Packet::PubComp(_)
            | Packet::PingReq
            | Packet::Disconnect => {}
            other => {
                return Err(Refusal::Malformed(format!(
                    "client sent {}",
                    packet_kind(other)
                )));
            }
        }
        let mut out = BytesMut::with_capacity(packet.size());
        packet
            .write(&mut out, max)
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        Ok(out)
    }

    fn check(&self, action: Action, topic: &str) -> Result<(), Violation> {
        match &self.identity {
            Some(who) if !acl::allowed(who, action, topic) => Err(Violation {
                device: who.label().to_owned(),
                action,
                topic: topic.to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

fn packet_kind(p: &Packet) -> &'static str {
    match p {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::topics;
    use proptest::prelude::*;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{LastWill, Publish, Subscribe};

    const MAX: usize = 131072;

    fn enc(p: Packet) -> BytesMut {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).unwrap();
        b
    }

    fn connect(id: &str, user: &str, will: Option<&str>) -> BytesMut {
        let mut c = Connect::new(id);
        c.set_login(user, "pw");
        c.last_will = will.map(|t| LastWill::new(t, "x", QoS::AtLeastOnce, true));
        enc(Packet::Connect(c))
    }

    fn dev(d: &str) -> Option<Identity> {
        Some(Identity::Device(d.into()))
    }

    #[test]
    fn admission_rules() {
        let req = first_packet(connect("a", "a", Some(&topics::presence("a"))), MAX).unwrap();
        assert_eq!(
            (req.username(), req.password()),
            (Some("a"), Some(&b"pw"[..]))
        );
        let (s, up) = admit(req.clone(), Mode::Enforce, dev("a"), "s3cret").unwrap();
        assert_eq!(s.identity, dev("a"));
        // Upstream CONNECT: same client id and will, the gate's credential.
        let Packet::Connect(c) = Packet::read(&mut up.clone(), MAX).unwrap() else {
            panic!()
        };
        assert_eq!(c.client_id, "a");
        assert_eq!(c.login, Some(Login::new("a", "s3cret")));
        assert!(c.last_will.is_some());

        let e = admit(req.clone(), Mode::Enforce, None, "s").unwrap_err();
        assert_eq!(e.connack(), Some(ConnectReturnCode::BadUserNamePassword));
        let e = admit(
            first_packet(connect("b", "a", None), MAX).unwrap(),
            Mode::Enforce,
            dev("a"),
            "s",
        )
        .unwrap_err();
        assert_eq!(e.connack(), Some(ConnectReturnCode::BadClientId));
        let e = admit(
            first_packet(connect("a", "a", Some(&topics::presence("b"))), MAX).unwrap(),
            Mode::Enforce,
            dev("a"),
            "s",
        )
        .unwrap_err();
        assert_eq!(e.connack(), Some(ConnectReturnCode::NotAuthorized));
        // The bridge may use any client id and will; an open broker checks nothing.
        assert!(
            admit(
                first_packet(connect("obs-1", "x", Some("any/thing")), MAX).unwrap(),
                Mode::Enforce,
                Some(Identity::Bridge),
                "s"
            )
            .is_ok()
        );
        let (s, _) = admit(
            first_packet(connect("b", "a", Some("#")), MAX).unwrap(),
            Mode::Open,
            None,
            "s",
        )
        .unwrap();
        assert_eq!(s.identity, None);
    }

    #[test]
    fn first_packet_refusals() {
        let mut v5 = connect("a", "a", None);
        v5[8] = 5;
        let e = first_packet(v5, MAX).unwrap_err();
        assert_eq!(e.connack(), Some(ConnectReturnCode::RefusedProtocolVersion));
        let v31 = BytesMut::from(
            &[
                0x10u8, 0x0c, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
            ][..],
        );
        assert_eq!(
            first_packet(v31, MAX).unwrap_err().connack(),
            Some(ConnectReturnCode::RefusedProtocolVersion)
        );
        let e = first_packet(enc(Packet::PingReq), MAX).unwrap_err();
        assert!(matches!(e, Refusal::NotConnect(_)) && e.connack().is_none());
    }

    #[test]
    fn packets_are_checked_and_reencoded() {
        let s = Session {
            identity: dev("a"),
            client_id: "a".into(),
        };
        let mut p = Publish::new(topics::state("a"), QoS::AtLeastOnce, vec![1u8]);
        p.pkid = 7;
        p.retain = true;
        let ok = enc(Packet::Publish(p));
        assert_eq!(s.inspect(ok.clone(), MAX).unwrap(), ok);
        let bad = enc(Packet::Publish(Publish::new(
            topics::state("b"),
            QoS::AtMostOnce,
            vec![1u8],
        )));
        assert!(matches!(s.inspect(bad, MAX), Err(Refusal::Denied(_))));
        let mut sub = Subscribe::new(topics::directive("a"), QoS::AtLeastOnce);
        sub.add("#".into(), QoS::AtMostOnce);
        let e = s.inspect(enc(Packet::Subscribe(sub)), MAX).unwrap_err();
        assert_eq!(
            e,
            Refusal::Denied(Violation {
                device: "a".into(),
                action: Action::Subscribe,
                topic: "#".into()
            })
        );
        assert!(matches!(
            s.inspect(connect("a", "a", None), MAX),
            Err(Refusal::Malformed(_))
        ));
        assert!(matches!(
            s.inspect(connack(ConnectReturnCode::Success), MAX),
            Err(Refusal::Malformed(_))
        ));
    }

    proptest! {
        /// Arbitrary first packets and later packets never panic.
        #[test]
        fn arbitrary_packets(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = BytesMut::from(&data[..]);
            if let Ok(Some(f)) = frame::next_frame(&mut buf, MAX) {
                if let Ok(req) = first_packet(f.clone(), MAX) {
                    let _ = admit(req, Mode::Enforce, dev("a"), "s");
                }
                let s = Session { identity: dev("a"), client_id: "a".into() };
                let _ = s.inspect(f, MAX);
            }
        }
    }
}
