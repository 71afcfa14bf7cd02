//! Unit tests of the tensor types and both codecs (JSON and binary).

use super::*;
use serde_json::json;

#[test]
fn json_round_trip_every_datatype() {
    let cases = [
        (DataType::Bool, json!([true, false, true, true])),
        (DataType::Uint8, json!([0, 1, 255, 7])),
        (DataType::Uint16, json!([0, 1, 65535, 7])),
        (DataType::Uint32, json!([0, 1, 4294967295u64, 7])),
        (DataType::Uint64, json!([0, 1, u64::MAX, 7])),
        (DataType::Int8, json!([-128, 1, 127, 7])),
        (DataType::Int16, json!([-32768, 1, 32767, 7])),
        (DataType::Int32, json!([i32::MIN, 1, i32::MAX, 7])),
        (DataType::Int64, json!([i64::MIN, 1, i64::MAX, 7])),
        (DataType::Fp16, json!([0.5, -2.0, 1024.0, 0.25])),
        (DataType::Fp32, json!([0.1, -2.5, 1e30, 3.0])),
        (DataType::Fp64, json!([0.1, -2.5, 1e300, 3.0])),
        (DataType::Bytes, json!(["a", "", "héllo", "x"])),
    ];
    for (dt, data) in cases {
        let t: Tensor = serde_json::from_value(
            json!({"name": "x", "datatype": dt.as_str(), "shape": [2, 2], "data": data}),
        )
        .unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(t.datatype(), dt);
        let back = serde_json::to_value(&t).unwrap();
        assert_eq!(back["data"], data, "{dt}");
        let bin = t.data.to_le_bytes();
        assert_eq!(
            TensorData::from_le_bytes(dt, &bin, 4).unwrap(),
            t.data,
            "{dt}"
        );
    }
}

#[test]
fn nested_data_flattens_and_counts_are_checked() {
    let t: Tensor = serde_json::from_value(
        json!({"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [[1, 2], [3, 4]]}),
    )
    .unwrap();
    assert_eq!(t.data, TensorData::Int64(vec![1, 2, 3, 4]));
    let e = serde_json::from_value::<Tensor>(
        json!({"name": "x", "datatype": "INT64", "shape": [2, 2], "data": [1, 2, 3]}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("needs 4 values, got 3"), "{e}");
    let e = serde_json::from_value::<Tensor>(
        json!({"name": "x", "datatype": "UINT8", "shape": [1], "data": [300]}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a valid UINT8"), "{e}");
    let e = serde_json::from_value::<Tensor>(
        json!({"name": "x", "datatype": "FP32", "shape": [1 << 20, 1 << 20], "data": []}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("too large"), "{e}");
    let e = serde_json::from_value::<Tensor>(
        json!({"name": "x", "datatype": "FLOAT", "shape": [1], "data": [1]}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("unknown datatype"), "{e}");
}

#[test]
fn binary_sizes_are_checked() {
    assert!(matches!(
        TensorData::from_le_bytes(DataType::Fp32, &[0; 7], 2),
        Err(TensorError::BinarySize { expected: 8, .. })
    ));
    assert!(TensorData::from_le_bytes(DataType::Bool, &[2], 1).is_err());
    assert!(TensorData::from_le_bytes(DataType::Bytes, &[9, 0, 0, 0, 1], 1).is_err());
    assert!(TensorData::from_le_bytes(DataType::Bytes, &[0, 0, 0, 0, 1], 1).is_err());
}

#[test]
fn dims_and_specs() {
    let s: TensorSpec = serde_json::from_value(
        json!({"name": "img", "datatype": "FP32", "shape": [-1, 3, "h", "h"]}),
    )
    .unwrap();
    assert!(s.batched());
    assert!(s.accepts(&[5, 3, 32, 32]));
    assert!(!s.accepts(&[5, 3, 32, 16]), "one symbol, one value");
    assert!(!s.accepts(&[5, 1, 32, 32]));
    assert_eq!(s.sample_len(), None);
    assert_eq!(s.oip_shape(), vec![-1, 3, -1, -1]);
    assert_eq!(
        serde_json::to_value(&s).unwrap()["shape"],
        json!([-1, 3, "h", "h"])
    );
    assert!(
        serde_json::from_value::<TensorSpec>(
            json!({"name": "x", "datatype": "FP32", "shape": [-2]})
        )
        .is_err()
    );
}
