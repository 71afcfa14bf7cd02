//! Conversions between the protocol's OIP tensors and tract's tensors.

use outpost_protocol::tensor::{DataType, Tensor as OipTensor, TensorData};
use tract_onnx::prelude::*;

/// The tract element type of an OIP datatype.
pub fn datum_type(dt: DataType) -> DatumType {
    match dt {
        DataType::Bool => DatumType::Bool,
        DataType::Uint8 => DatumType::U8,
        DataType::Uint16 => DatumType::U16,
        DataType::Uint32 => DatumType::U32,
        DataType::Uint64 => DatumType::U64,
        DataType::Int8 => DatumType::I8,
        DataType::Int16 => DatumType::I16,
        DataType::Int32 => DatumType::I32,
        DataType::Int64 => DatumType::I64,
        DataType::Fp16 => DatumType::F16,
        DataType::Fp32 => DatumType::F32,
        DataType::Fp64 => DatumType::F64,
        DataType::Bytes => DatumType::String,
    }
}

/// The OIP datatype of a tract element type (`None` for types OIP cannot carry).
pub fn data_type(dt: DatumType) -> Option<DataType> {
    Some(match dt.unquantized() {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        DatumType::String => DataType::Bytes,
        // Symbolic-dimension integers (e.g. a Cast of a shape) are plain int64 values.
        DatumType::TDim => DataType::Int64,
        _ => return None,
    })
}

fn array<T: Datum>(shape: &[usize], v: Vec<T>) -> TractResult<Tensor> {
    Ok(tract_ndarray::ArrayD::from_shape_vec(shape.to_vec(), v)?.into())
}

/// An OIP tensor as a tract tensor (same shape, same values).
pub fn to_tract(t: &OipTensor) -> TractResult<Tensor> {
    let s = &t.shape;
    match &t.data {
        TensorData::Bool(v) => array(s, v.clone()),
        TensorData::Uint8(v) => array(s, v.clone()),
        TensorData::Uint16(v) => array(s, v.clone()),
        TensorData::Uint32(v) => array(s, v.clone()),
        TensorData::Uint64(v) => array(s, v.clone()),
        TensorData::Int8(v) => array(s, v.clone()),
        TensorData::Int16(v) => array(s, v.clone()),
        TensorData::Int32(v) => array(s, v.clone()),
        TensorData::Int64(v) => array(s, v.clone()),
        TensorData::Fp16(v) => array(s, v.iter().map(|b| f16::from_bits(*b)).collect()),
        TensorData::Fp32(v) => array(s, v.clone()),
        TensorData::Fp64(v) => array(s, v.clone()),
        TensorData::Bytes(v) => array(
            s,
            v.iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect::<Vec<String>>(),
        ),
    }
}

fn slice<T: Datum + Clone>(t: &Tensor) -> TractResult<Vec<T>> {
    Ok(t.to_plain_array_view::<T>()?.iter().cloned().collect())
}

/// A tract tensor as an OIP tensor named `name`.
pub fn from_tract(name: &str, t: &Tensor) -> TractResult<OipTensor> {
    let dt = data_type(t.datum_type()).ok_or_else(|| {
        tract_onnx::tract_hir::internal::format_err!(
            "output {name} has type {:?}, which OIP cannot carry",
            t.datum_type()
        )
    })?;
    let t = if t.datum_type().is_quantized() {
        std::borrow::Cow::Owned(t.cast_to_dt(t.datum_type().unquantized())?.into_owned())
    } else if t.datum_type() == DatumType::TDim {
        std::borrow::Cow::Owned(t.cast_to_dt(DatumType::I64)?.into_owned())
    } else {
        std::borrow::Cow::Borrowed(t)
    };
    let data = match dt {
        DataType::Bool => TensorData::Bool(slice(&t)?),
        DataType::Uint8 => TensorData::Uint8(slice(&t)?),
        DataType::Uint16 => TensorData::Uint16(slice(&t)?),
        DataType::Uint32 => TensorData::Uint32(slice(&t)?),
        DataType::Uint64 => TensorData::Uint64(slice(&t)?),
        DataType::Int8 => TensorData::Int8(slice(&t)?),
        DataType::Int16 => TensorData::Int16(slice(&t)?),
        DataType::Int32 => TensorData::Int32(slice(&t)?),
        DataType::Int64 => TensorData::Int64(slice(&t)?),
        DataType::Fp16 => {
            TensorData::Fp16(slice::<f16>(&t)?.into_iter().map(f16::to_bits).collect())
        }
        DataType::Fp32 => TensorData::Fp32(slice(&t)?),
        DataType::Fp64 => TensorData::Fp64(slice(&t)?),
        DataType::Bytes => TensorData::Bytes(
            slice::<String>(&t)?
                .into_iter()
                .map(String::into_bytes)
                .collect(),
        ),
    };
    Ok(OipTensor::new(name, t.shape().to_vec(), data)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_round_trips_through_tract() {
        for dt in DataType::ALL {
            let data = match dt {
                DataType::Bytes => TensorData::Bytes(vec![b"a".to_vec(), b"bc".to_vec()]),
                DataType::Bool => TensorData::Bool(vec![true, false]),
                dt => TensorData::from_json(dt, &serde_json::json!([1, 2]), 2).unwrap(),
            };
            let t = OipTensor::new("x", vec![2, 1], data).unwrap();
            let back = from_tract("x", &to_tract(&t).unwrap()).unwrap();
            assert_eq!(back, t, "{dt}");
            assert_eq!(data_type(datum_type(dt)), Some(dt));
        }
    }
}
