//! The OIP binary tensor data form of [`TensorData`]: little-endian, row-major, no
//! padding; BOOL one byte; BYTES each element a u32 LE length then the bytes.

use super::{DataType, MAX_BYTES_ELEMENT, MAX_ELEMENTS, TensorData, TensorError};

impl TensorData {
    /// The binary form (OIP binary tensor data extension).
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Self::Bool(v) => out.extend(v.iter().map(|b| u8::from(*b))),
            Self::Uint8(v) => out.extend_from_slice(v),
            Self::Uint16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::Uint32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::Uint64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::Int8(v) => out.extend(v.iter().map(|x| x.to_le_bytes()[0])),
            Self::Int16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::Int32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::Int64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::Fp16(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::Fp32(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::Fp64(v) => v.iter().for_each(|x| out.extend(x.to_le_bytes())),
            Self::Bytes(v) => {
                for b in v {
                    out.extend((b.len() as u32).to_le_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
        out
    }

    /// Decodes the binary form of `count` elements of `datatype`.
    pub fn from_le_bytes(datatype: DataType, b: &[u8], count: usize) -> Result<Self, TensorError> {
        if count > MAX_ELEMENTS {
            return Err(TensorError::TooLarge { shape: vec![count] });
        }
        if let Some(size) = datatype.size() {
            let expected = count.saturating_mul(size);
            if b.len() != expected {
                return Err(TensorError::BinarySize {
                    datatype,
                    count,
                    expected,
                    got: b.len(),
                });
            }
        }
        macro_rules! le {
            ($variant:ident, $t:ty, $n:expr) => {
                Self::$variant(
                    b.chunks_exact($n)
                        .map(|c| <$t>::from_le_bytes(c.try_into().expect("exact chunk")))
                        .collect(),
                )
            };
        }
        Ok(match datatype {
            DataType::Bool => Self::Bool(
                b.iter()
                    .enumerate()
                    .map(|(i, x)| match x {
                        0 => Ok(false),
                        1 => Ok(true),
                        _ => Err(TensorError::Value {
                            index: i,
                            value: x.to_string(),
                            datatype,
                        }),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Uint8 => Self::Uint8(b.to_vec()),
            DataType::Uint16 => le!(Uint16, u16, 2),
            DataType::Uint32 => le!(Uint32, u32, 4),
            DataType::Uint64 => le!(Uint64, u64, 8),
            DataType::Int8 => Self::Int8(b.iter().map(|x| i8::from_le_bytes([*x])).collect()),
            DataType::Int16 => le!(Int16, i16, 2),
            DataType::Int32 => le!(Int32, i32, 4),
            DataType::Int64 => le!(Int64, i64, 8),
            DataType::Fp16 => le!(Fp16, u16, 2),
            DataType::Fp32 => le!(Fp32, f32, 4),
            DataType::Fp64 => le!(Fp64, f64, 8),
            DataType::Bytes => {
                let mut out = Vec::with_capacity(count.min(1 << 16));
                let mut rest = b;
                for i in 0..count {
                    let (len, tail) = rest.split_at_checked(4).ok_or_else(|| {
                        TensorError::BadBytes(format!("element {i}: missing length"))
                    })?;
                    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
                    if len > MAX_BYTES_ELEMENT {
                        return Err(TensorError::BadBytes(format!(
                            "element {i} declares {len} bytes (at most {MAX_BYTES_ELEMENT})"
                        )));
                    }
                    let (v, tail) = tail
                        .split_at_checked(len)
                        .ok_or_else(|| TensorError::BadBytes(format!("element {i}: truncated")))?;
                    out.push(v.to_vec());
                    rest = tail;
                }
                if !rest.is_empty() {
                    return Err(TensorError::BadBytes(format!(
                        "{} bytes after the last element",
                        rest.len()
                    )));
                }
                Self::Bytes(out)
            }
        })
    }
}
