//! Framing of an MQTT byte stream into whole packets, with a size cap checked from the
//! fixed header before the body is buffered (so a peer announcing a huge packet is cut
//! off at once instead of being read into memory). Sans-IO: bytes in, frames out.

use bytes::BytesMut;
use rumqttc::mqttbytes::{self, Error as CodecError};

/// Why a stream cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The packet is larger than the cap.
    #[error("packet of {size} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Announced size (the whole packet, or its remaining length when that alone
        /// is already over the cap).
        size: usize,
        /// Cap.
        max: usize,
    },
    /// The fixed header is not valid MQTT.
    #[error("malformed packet: {0}")]
    Malformed(String),
}

/// The length of the whole packet at the front of `bytes`, once all of it is there
/// (`Ok(None)`: more bytes are needed). `max` caps the whole packet.
pub fn frame_len(bytes: &[u8], max: usize) -> Result<Option<usize>, FrameError> {
    match mqttbytes::check(bytes.iter(), max) {
        Ok(header) => {
            let size = header.frame_length();
            if size > max {
                return Err(FrameError::TooLarge { size, max });
            }
            Ok(Some(size))
        }
        Err(CodecError::InsufficientBytes(_)) => Ok(None),
        Err(CodecError::PayloadSizeLimitExceeded(size)) => Err(FrameError::TooLarge { size, max }),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// Splits the next complete packet (fixed header included) off the front of `buf`;
/// `Ok(None)` when more bytes are needed. `max` caps the whole packet.
pub fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, FrameError> {
    // `check` only succeeds once `size` bytes are buffered; `min` keeps that a fact
    // here rather than an assumption.
    Ok(frame_len(buf, max)?.map(|size| buf.split_to(size.min(buf.len()))))
}

/// The protocol name and level of a CONNECT frame, read without trusting any length:
/// `None` if the frame is too short or not a CONNECT. Used before the full decode so a
/// client of another MQTT version gets the CONNACK refusal the spec asks for.
pub fn connect_protocol(frame: &[u8]) -> Option<(&[u8], u8)> {
    if frame.first()? >> 4 != 1 {
        return None;
    }
    // Remaining length: 1..=4 bytes, high bit = continuation.
    let mut i = 1;
    while frame.get(i)? & 0x80 != 0 {
        i += 1;
        if i > 4 {
            return None;
        }
    }
    let name_at = i + 1;
    let name_len = u16::from_be_bytes([*frame.get(name_at)?, *frame.get(name_at + 1)?]) as usize;
    let name = frame.get(name_at + 2..name_at + 2 + name_len)?;
    let level = *frame.get(name_at + 2 + name_len)?;
    Some((name, level))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rumqttc::mqttbytes::QoS;
    use rumqttc::mqttbytes::v4::{Connect, Packet, Publish};

    fn encode(p: &Packet) -> BytesMut {
        let mut b = BytesMut::new();
        p.write(&mut b, usize::MAX).unwrap();
        b
    }

    #[test]
    fn frames_split_and_cap() {
        let p = Packet::Publish(Publish::new("a/b", QoS::AtMostOnce, vec![7u8; 100]));
        let one = encode(&p);
        let mut buf = one.clone();
        buf.extend_from_slice(&one);
        buf.extend_from_slice(&one[..5]);
        assert_eq!(next_frame(&mut buf, 1024).unwrap().unwrap(), one);
        assert_eq!(next_frame(&mut buf, 1024).unwrap().unwrap(), one);
        assert_eq!(next_frame(&mut buf, 1024).unwrap(), None);
        assert_eq!(buf.len(), 5);
        let mut big = one.clone();
        assert!(matches!(
            next_frame(&mut big, 50),
            Err(FrameError::TooLarge { max: 50, .. })
        ));
        // Only the header has arrived, announcing 1 MiB: refused before buffering it.
        let mut head = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x40][..]);
        assert!(matches!(
            next_frame(&mut head, 131072),
            Err(FrameError::TooLarge { .. })
        ));
        let mut bad = BytesMut::from(&[0x30u8, 0xff, 0xff, 0xff, 0xff, 0x01][..]);
        assert!(next_frame(&mut bad, 131072).is_err());
    }

    #[test]
    fn reads_the_protocol_level() {
        let c = encode(&Packet::Connect(Connect::new("gw-1")));
        assert_eq!(connect_protocol(&c), Some((&b"MQTT"[..], 4)));
        let mut v5 = c.clone();
        v5[8] = 5;
        assert_eq!(connect_protocol(&v5), Some((&b"MQTT"[..], 5)));
        // MQTT 3.1: "MQIsdp", level 3.
        let v31 = [
            0x10u8, 0x0c, 0, 6, b'M', b'Q', b'I', b's', b'd', b'p', 3, 2, 0, 60,
        ];
        assert_eq!(connect_protocol(&v31), Some((&b"MQIsdp"[..], 3)));
        assert_eq!(connect_protocol(&[0x10, 0x02, 0, 9]), None);
        assert_eq!(connect_protocol(&[0x30, 0x00]), None);
        assert_eq!(connect_protocol(&[]), None);
    }

    proptest! {
        /// Arbitrary bytes never panic the framer or the peek, and a frame is never
        /// larger than the cap.
        #[test]
        fn arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..300), max in 2usize..200) {
            let _ = connect_protocol(&data);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(f)) = next_frame(&mut buf, max) {
                prop_assert!(f.len() <= max);
                if f.is_empty() { break; }
            }
        }
    }
}
