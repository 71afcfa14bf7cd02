//! The OIP JSON tensor form: decoding flat or nested arrays into [`TensorData`], encoding
//! it back, and the `Serialize`/`Deserialize` impls of [`Tensor`] (the OIP tensor object).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::{DataType, MAX_BYTES_ELEMENT, Tensor, TensorData, TensorError, element_count};

impl TensorData {
    /// Decodes JSON values (flat or nested arrays; nesting is flattened in row-major
    /// order) as `datatype`, expecting exactly `count` elements. FP16 accepts JSON numbers;
    /// BYTES accepts strings.
    pub fn from_json(datatype: DataType, data: &Value, count: usize) -> Result<Self, TensorError> {
        let mut flat = Vec::with_capacity(count.min(1 << 20));
        flatten(data, &mut flat, count)?;
        if flat.len() != count {
            return Err(TensorError::Count {
                shape: vec![],
                expected: count,
                got: flat.len(),
            });
        }
        let bad = |index: usize, v: &Value| TensorError::Value {
            index,
            value: abbreviate(v),
            datatype,
        };
        macro_rules! ints {
            ($variant:ident, $t:ty) => {
                Self::$variant(
                    flat.iter()
                        .enumerate()
                        .map(|(i, v)| {
                            let n = v.as_i64().map(i128::from).or(v.as_u64().map(i128::from));
                            n.and_then(|n| <$t>::try_from(n).ok())
                                .ok_or_else(|| bad(i, v))
                        })
                        .collect::<Result<_, _>>()?,
                )
            };
        }
        let float = |i: usize, v: &Value| v.as_f64().ok_or_else(|| bad(i, v));
        Ok(match datatype {
            DataType::Bool => Self::Bool(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::Bool(b) => Ok(*b),
                        // Some clients send 0/1 for BOOL.
                        Value::Number(n) if n.as_u64() == Some(0) => Ok(false),
                        Value::Number(n) if n.as_u64() == Some(1) => Ok(true),
                        _ => Err(bad(i, v)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Uint8 => ints!(Uint8, u8),
            DataType::Uint16 => ints!(Uint16, u16),
            DataType::Uint32 => ints!(Uint32, u32),
            DataType::Uint64 => ints!(Uint64, u64),
            DataType::Int8 => ints!(Int8, i8),
            DataType::Int16 => ints!(Int16, i16),
            DataType::Int32 => ints!(Int32, i32),
            DataType::Int64 => ints!(Int64, i64),
            DataType::Fp16 => Self::Fp16(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| float(i, v).map(|f| half::f16::from_f64(f).to_bits()))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Fp32 => Self::Fp32(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| float(i, v).map(|f| f as f32))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Fp64 => Self::Fp64(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| float(i, v))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::Bytes => Self::Bytes(
                flat.iter()
                    .enumerate()
                    .map(|(i, v)| match v {
                        Value::String(s) if s.len() <= MAX_BYTES_ELEMENT => {
                            Ok(s.as_bytes().to_vec())
                        }
                        _ => Err(bad(i, v)),
                    })
                    .collect::<Result<_, _>>()?,
            ),
        })
    }

    /// The JSON form: a flat array. Non-finite floats become `null` (JSON has no NaN);
    /// BYTES become strings (invalid UTF-8 replaced).
    pub fn to_json(&self) -> Value {
        fn num(x: f64) -> Value {
            serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
        }
        let arr: Vec<Value> = match self {
            Self::Bool(v) => v.iter().map(|b| Value::Bool(*b)).collect(),
            Self::Uint8(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Self::Uint16(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Self::Uint32(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Self::Uint64(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Self::Int8(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Self::Int16(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Self::Int32(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Self::Int64(v) => v.iter().map(|x| Value::from(*x)).collect(),
            Self::Fp16(v) => v
                .iter()
                .map(|b| num(f64::from(half::f16::from_bits(*b).to_f32())))
                .collect(),
            // Through the shortest decimal of the f32, so 0.1f32 prints as 0.1.
            Self::Fp32(v) => v
                .iter()
                .map(|x| {
                    if x.is_finite() {
                        num(x.to_string().parse().unwrap_or(f64::from(*x)))
                    } else {
                        Value::Null
                    }
                })
                .collect(),
            Self::Fp64(v) => v.iter().map(|x| num(*x)).collect(),
            Self::Bytes(v) => v
                .iter()
                .map(|b| Value::String(String::from_utf8_lossy(b).into_owned()))
                .collect(),
        };
        Value::Array(arr)
    }
}

fn flatten<'a>(v: &'a Value, out: &mut Vec<&'a Value>, cap: usize) -> Result<(), TensorError> {
    match v {
        Value::Array(a) => {
            for x in a {
                flatten(x, out, cap)?;
                if out.len() > cap {
                    return Err(TensorError::Count {
                        shape: vec![],
                        expected: cap,
                        got: out.len(),
                    });
                }
            }
            Ok(())
        }
        x => {
            out.push(x);
            Ok(())
        }
    }
}

fn abbreviate(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!("{}…", &s[..s.floor_char_boundary(40)])
    } else {
        s
    }
}

/// The OIP JSON tensor object.
#[derive(Serialize, Deserialize)]
struct TensorJson {
    name: String,
    datatype: String,
    shape: Vec<usize>,
    data: Value,
}

impl Serialize for Tensor {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        TensorJson {
            name: self.name.clone(),
            datatype: self.datatype().as_str().into(),
            shape: self.shape.clone(),
            data: self.data.to_json(),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Tensor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let j = TensorJson::deserialize(d)?;
        let dt = DataType::parse(&j.datatype)
            .ok_or_else(|| D::Error::custom(TensorError::DataType(j.datatype.clone())))?;
        let n = element_count(&j.shape).map_err(D::Error::custom)?;
        let data = TensorData::from_json(dt, &j.data, n).map_err(|e| match e {
            TensorError::Count { expected, got, .. } => D::Error::custom(TensorError::Count {
                shape: j.shape.clone(),
                expected,
                got,
            }),
            e => D::Error::custom(e),
        })?;
        Ok(Self {
            name: j.name,
            shape: j.shape,
            data,
        })
    }
}
