//! Tensors as the Open Inference Protocol (OIP, KServe "V2") names and lays them out.
//!
//! One representation serves every place a tensor crosses a boundary: the local
//! inference API, self-test samples inside bundles, and captured inputs/outputs in uplink
//! records. The JSON form is the OIP tensor object
//! (`{"name", "datatype", "shape", "data"}`, data flat in row-major order — nested arrays
//! are accepted on input); the binary form is the OIP binary tensor data extension
//! (little-endian, row-major, no padding; BOOL one byte; BYTES each element a u32 LE
//! length then the bytes). Source: the Open Inference Protocol REST specification and its
//! binary tensor data extension (kserve.github.io, "Binary Tensor Data Extension").
//!
//! Every decoder checks the element count against [`MAX_ELEMENTS`] (and the caller's
//! byte cap) before it allocates.

use std::fmt;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

mod binary;
mod json;
#[cfg(test)]
mod tests;

/// Most elements one tensor may hold (64 Mi: a 4096 × 4096 × 4 image).
pub const MAX_ELEMENTS: usize = 1 << 26;
/// Most dimensions a tensor may have.
pub const MAX_RANK: usize = 8;
/// Longest BYTES element accepted.
pub const MAX_BYTES_ELEMENT: usize = 1 << 20;

/// Element type, with the OIP datatype names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DataType {
    /// `BOOL`: one byte, 0 or 1.
    Bool,
    /// `UINT8`.
    Uint8,
    /// `UINT16`.
    Uint16,
    /// `UINT32`.
    Uint32,
    /// `UINT64`.
    Uint64,
    /// `INT8`.
    Int8,
    /// `INT16`.
    Int16,
    /// `INT32`.
    Int32,
    /// `INT64`.
    Int64,
    /// `FP16` (IEEE 754 half precision).
    Fp16,
    /// `FP32`.
    Fp32,
    /// `FP64`.
    Fp64,
    /// `BYTES`: variable-length byte strings (UTF-8 text in JSON).
    Bytes,
}

impl DataType {
    /// Every datatype, in OIP order.
    pub const ALL: [DataType; 13] = [
        Self::Bool,
        Self::Uint8,
        Self::Uint16,
        Self::Uint32,
        Self::Uint64,
        Self::Int8,
        Self::Int16,
        Self::Int32,
        Self::Int64,
        Self::Fp16,
        Self::Fp32,
        Self::Fp64,
        Self::Bytes,
    ];

    /// The OIP name (`FP32`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::Uint8 => "UINT8",
            Self::Uint16 => "UINT16",
            Self::Uint32 => "UINT32",
            Self::Uint64 => "UINT64",
            Self::Int8 => "INT8",
            Self::Int16 => "INT16",
            Self::Int32 => "INT32",
            Self::Int64 => "INT64",
            Self::Fp16 => "FP16",
            Self::Fp32 => "FP32",
            Self::Fp64 => "FP64",
            Self::Bytes => "BYTES",
        }
    }

    /// Parses an OIP name.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bytes per element in the binary form (`None` for BYTES).
    pub fn size(self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::Uint8 | Self::Int8 => 1,
            Self::Uint16 | Self::Int16 | Self::Fp16 => 2,
            Self::Uint32 | Self::Int32 | Self::Fp32 => 4,
            Self::Uint64 | Self::Int64 | Self::Fp64 => 8,
            Self::Bytes => return None,
        })
    }

    /// Floating point types (the only ones that can hold NaN or infinity).
    pub fn is_float(self) -> bool {
        matches!(self, Self::Fp16 | Self::Fp32 | Self::Fp64)
    }

    /// Types whose values read as numbers (everything but BYTES).
    pub fn is_numeric(self) -> bool {
        self != Self::Bytes
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One dimension of a declared shape: fixed, or variable (`-1`, optionally named by a
/// symbol such as `"batch"` or `"height"`). Serialised as a number (`16`, `-1`) or a
/// string (the symbol).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    /// Exactly this size.
    Fixed(u64),
    /// Any size; `Some(symbol)` ties dimensions that must agree.
    Var(Option<String>),
}

impl Dim {
    /// A variable dimension without a symbol.
    pub fn any() -> Self {
        Self::Var(None)
    }

    /// The fixed size, if any.
    pub fn fixed(&self) -> Option<u64> {
        match self {
            Self::Fixed(n) => Some(*n),
            Self::Var(_) => None,
        }
    }

    /// The OIP form: the size, or -1.
    pub fn oip(&self) -> i64 {
        match self {
            Self::Fixed(n) => i64::try_from(*n).unwrap_or(i64::MAX),
            Self::Var(_) => -1,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Var(Some(s)) => f.write_str(s),
            Self::Var(None) => f.write_str("-1"),
        }
    }
}

impl Serialize for Dim {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Fixed(n) => s.serialize_u64(*n),
            Self::Var(Some(sym)) => s.serialize_str(sym),
            Self::Var(None) => s.serialize_i64(-1),
        }
    }
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(v), _) => Ok(Self::Fixed(v)),
                (None, Some(-1)) => Ok(Self::Var(None)),
                _ => Err(D::Error::custom(format!(
                    "dimension {n} must be >= 0 or -1 (variable)"
                ))),
            },
            Value::String(s) if valid_symbol(&s) => Ok(Self::Var(Some(s))),
            Value::String(s) => Err(D::Error::custom(format!(
                "dimension symbol {s:?} must be 1..=32 of [A-Za-z0-9_]"
            ))),
            other => Err(D::Error::custom(format!(
                "dimension must be a number or a symbol, got {other}"
            ))),
        }
    }
}

fn valid_symbol(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A declared tensor: name, datatype, shape (the batch dimension included, as in OIP
/// model metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// Tensor name in the graph.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Dimensions.
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// Whether a concrete `shape` fits this declaration (rank and fixed dimensions; each
    /// named symbol must take one value throughout).
    pub fn accepts(&self, shape: &[usize]) -> bool {
        if shape.len() != self.shape.len() {
            return false;
        }
        let mut bound: Vec<(&str, usize)> = Vec::new();
        for (d, &n) in self.shape.iter().zip(shape) {
            match d {
                Dim::Fixed(f) if *f != n as u64 => return false,
                Dim::Var(Some(s)) => match bound.iter().find(|(b, _)| b == s) {
                    Some((_, v)) if *v != n => return false,
                    Some(_) => {}
                    None => bound.push((s, n)),
                },
                _ => {}
            }
        }
        true
    }

    /// The dimensions of one sample: those after the first when the first is a batch
    /// dimension (variable, or a fixed 1 ahead of others), else the whole shape (a model
    /// that takes exactly one `[16]` or `[3, 1024]` tensor).
    pub fn sample_dims(&self) -> &[Dim] {
        match self.shape.first() {
            Some(Dim::Var(_)) => &self.shape[1..],
            Some(Dim::Fixed(1)) if self.shape.len() > 1 => &self.shape[1..],
            _ => &self.shape,
        }
    }

    /// Values in one sample (see [`TensorSpec::sample_dims`]), when all are fixed.
    pub fn sample_len(&self) -> Option<usize> {
        self.sample_dims().iter().try_fold(1usize, |a, d| {
            a.checked_mul(usize::try_from(d.fixed()?).ok()?)
        })
    }

    /// Whether the first dimension is variable (the tensor takes a batch).
    pub fn batched(&self) -> bool {
        matches!(self.shape.first(), Some(Dim::Var(_)))
    }

    /// The shape in OIP metadata form (-1 for variable dimensions).
    pub fn oip_shape(&self) -> Vec<i64> {
        self.shape.iter().map(Dim::oip).collect()
    }
}

/// Element values of one tensor, flat in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// BOOL.
    Bool(Vec<bool>),
    /// UINT8.
    Uint8(Vec<u8>),
    /// UINT16.
    Uint16(Vec<u16>),
    /// UINT32.
    Uint32(Vec<u32>),
    /// UINT64.
    Uint64(Vec<u64>),
    /// INT8.
    Int8(Vec<i8>),
    /// INT16.
    Int16(Vec<i16>),
    /// INT32.
    Int32(Vec<i32>),
    /// INT64.
    Int64(Vec<i64>),
    /// FP16, as IEEE 754 half-precision bit patterns.
    Fp16(Vec<u16>),
    /// FP32.
    Fp32(Vec<f32>),
    /// FP64.
    Fp64(Vec<f64>),
    /// BYTES.
    Bytes(Vec<Vec<u8>>),
}

/// Why tensor values could not be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// Shape product over the cap, or rank over [`MAX_RANK`].
    #[error(
        "shape {shape:?} is too large (at most {MAX_RANK} dimensions and {MAX_ELEMENTS} elements)"
    )]
    TooLarge {
        /// The shape.
        shape: Vec<usize>,
    },
    /// Number of values differs from the shape.
    #[error("shape {shape:?} needs {expected} values, got {got}")]
    Count {
        /// The shape.
        shape: Vec<usize>,
        /// Product of the shape.
        expected: usize,
        /// Values received.
        got: usize,
    },
    /// A value does not fit the datatype.
    #[error("value {index} ({value}) is not a valid {datatype}")]
    Value {
        /// Flat index.
        index: usize,
        /// The offending JSON value, abbreviated.
        value: String,
        /// Declared datatype.
        datatype: DataType,
    },
    /// Binary data of the wrong length.
    #[error("binary {datatype} data for {count} elements must be {expected} bytes, got {got}")]
    BinarySize {
        /// Datatype.
        datatype: DataType,
        /// Elements.
        count: usize,
        /// Expected bytes (if fixed-size).
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// Malformed BYTES binary data.
    #[error("binary BYTES data: {0}")]
    BadBytes(String),
    /// Unknown datatype name.
    #[error(
        "unknown datatype {0:?} (expected one of BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES)"
    )]
    DataType(String),
}

/// Number of elements of `shape`, checked against the caps.
pub fn element_count(shape: &[usize]) -> Result<usize, TensorError> {
    if shape.len() > MAX_RANK {
        return Err(TensorError::TooLarge {
            shape: shape.to_vec(),
        });
    }
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|n| *n <= MAX_ELEMENTS)
        .ok_or_else(|| TensorError::TooLarge {
            shape: shape.to_vec(),
        })
}

macro_rules! each_variant {
    ($self:expr, $v:ident => $e:expr) => {
        match $self {
            TensorData::Bool($v) => $e,
            TensorData::Uint8($v) => $e,
            TensorData::Uint16($v) => $e,
            TensorData::Uint32($v) => $e,
            TensorData::Uint64($v) => $e,
            TensorData::Int8($v) => $e,
            TensorData::Int16($v) => $e,
            TensorData::Int32($v) => $e,
            TensorData::Int64($v) => $e,
            TensorData::Fp16($v) => $e,
            TensorData::Fp32($v) => $e,
            TensorData::Fp64($v) => $e,
            TensorData::Bytes($v) => $e,
        }
    };
}

impl TensorData {
    /// The datatype.
    pub fn datatype(&self) -> DataType {
        match self {
            Self::Bool(_) => DataType::Bool,
            Self::Uint8(_) => DataType::Uint8,
            Self::Uint16(_) => DataType::Uint16,
            Self::Uint32(_) => DataType::Uint32,
            Self::Uint64(_) => DataType::Uint64,
            Self::Int8(_) => DataType::Int8,
            Self::Int16(_) => DataType::Int16,
            Self::Int32(_) => DataType::Int32,
            Self::Int64(_) => DataType::Int64,
            Self::Fp16(_) => DataType::Fp16,
            Self::Fp32(_) => DataType::Fp32,
            Self::Fp64(_) => DataType::Fp64,
            Self::Bytes(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each_variant!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as `f64` (BOOL as 0/1; BYTES and out-of-range: `None`).
    pub fn get_f64(&self, i: usize) -> Option<f64> {
        Some(match self {
            Self::Bool(v) => f64::from(u8::from(*v.get(i)?)),
            Self::Uint8(v) => f64::from(*v.get(i)?),
            Self::Uint16(v) => f64::from(*v.get(i)?),
            Self::Uint32(v) => f64::from(*v.get(i)?),
            Self::Uint64(v) => *v.get(i)? as f64,
            Self::Int8(v) => f64::from(*v.get(i)?),
            Self::Int16(v) => f64::from(*v.get(i)?),
            Self::Int32(v) => f64::from(*v.get(i)?),
            Self::Int64(v) => *v.get(i)? as f64,
            Self::Fp16(v) => f64::from(half::f16::from_bits(*v.get(i)?).to_f32()),
            Self::Fp32(v) => f64::from(*v.get(i)?),
            Self::Fp64(v) => *v.get(i)?,
            Self::Bytes(_) => return None,
        })
    }

    /// All elements as `f64` (empty for BYTES).
    pub fn to_f64(&self) -> Vec<f64> {
        (0..self.len()).filter_map(|i| self.get_f64(i)).collect()
    }

    /// Index of the first NaN or infinite element (floats only).
    pub fn first_non_finite(&self) -> Option<usize> {
        match self {
            Self::Fp16(v) => v.iter().position(|b| !half::f16::from_bits(*b).is_finite()),
            Self::Fp32(v) => v.iter().position(|x| !x.is_finite()),
            Self::Fp64(v) => v.iter().position(|x| !x.is_finite()),
            _ => None,
        }
    }

    /// Largest absolute value (numeric types; 0 for an empty or BYTES tensor).
    pub fn max_abs(&self) -> f64 {
        (0..self.len())
            .filter_map(|i| self.get_f64(i))
            .map(f64::abs)
            .fold(0.0, f64::max)
    }

    /// Elements `range` as a new tensor of the same type.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Self {
        match self {
            Self::Bool(v) => Self::Bool(v[range].to_vec()),
            Self::Uint8(v) => Self::Uint8(v[range].to_vec()),
            Self::Uint16(v) => Self::Uint16(v[range].to_vec()),
            Self::Uint32(v) => Self::Uint32(v[range].to_vec()),
            Self::Uint64(v) => Self::Uint64(v[range].to_vec()),
            Self::Int8(v) => Self::Int8(v[range].to_vec()),
            Self::Int16(v) => Self::Int16(v[range].to_vec()),
            Self::Int32(v) => Self::Int32(v[range].to_vec()),
            Self::Int64(v) => Self::Int64(v[range].to_vec()),
            Self::Fp16(v) => Self::Fp16(v[range].to_vec()),
            Self::Fp32(v) => Self::Fp32(v[range].to_vec()),
            Self::Fp64(v) => Self::Fp64(v[range].to_vec()),
            Self::Bytes(v) => Self::Bytes(v[range].to_vec()),
        }
    }

    /// Appends `other` (same datatype; returns false and does nothing otherwise).
    pub fn extend(&mut self, other: &Self) -> bool {
        match (self, other) {
            (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(b),
            (Self::Uint8(a), Self::Uint8(b)) => a.extend_from_slice(b),
            (Self::Uint16(a), Self::Uint16(b)) => a.extend_from_slice(b),
            (Self::Uint32(a), Self::Uint32(b)) => a.extend_from_slice(b),
            (Self::Uint64(a), Self::Uint64(b)) => a.extend_from_slice(b),
            (Self::Int8(a), Self::Int8(b)) => a.extend_from_slice(b),
            (Self::Int16(a), Self::Int16(b)) => a.extend_from_slice(b),
            (Self::Int32(a), Self::Int32(b)) => a.extend_from_slice(b),
            (Self::Int64(a), Self::Int64(b)) => a.extend_from_slice(b),
            (Self::Fp16(a), Self::Fp16(b)) => a.extend_from_slice(b),
            (Self::Fp32(a), Self::Fp32(b)) => a.extend_from_slice(b),
            (Self::Fp64(a), Self::Fp64(b)) => a.extend_from_slice(b),
            (Self::Bytes(a), Self::Bytes(b)) => a.extend_from_slice(b),
            _ => return false,
        }
        true
    }
}

/// A named tensor with its shape: the unit of inference input and output.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Tensor name.
    pub name: String,
    /// Concrete shape.
    pub shape: Vec<usize>,
    /// Values (`shape` product of them).
    pub data: TensorData,
}

impl Tensor {
    /// A tensor; checks the value count against the shape.
    pub fn new(
        name: impl Into<String>,
        shape: Vec<usize>,
        data: TensorData,
    ) -> Result<Self, TensorError> {
        let expected = element_count(&shape)?;
        if data.len() != expected {
            return Err(TensorError::Count {
                shape,
                expected,
                got: data.len(),
            });
        }
        Ok(Self {
            name: name.into(),
            shape,
            data,
        })
    }

    /// The datatype.
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Rows along the first dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per row.
    pub fn row_len(&self) -> usize {
        self.shape.get(1..).map_or(1, |s| s.iter().product())
    }

    /// Rows `range` (along the first dimension) as a new tensor.
    pub fn rows_slice(&self, range: std::ops::Range<usize>) -> Self {
        let w = self.row_len();
        let mut shape = self.shape.clone();
        if let Some(f) = shape.first_mut() {
            *f = range.len();
        }
        Self {
            name: self.name.clone(),
            shape,
            data: self.data.slice(range.start * w..range.end * w),
        }
    }
}
