//! Open Inference Protocol v2 request bodies: the JSON part and the binary tensor data
//! extension, parsed into named tensors (sans-IO).
//!
//! Source: the Open Inference Protocol specification (KServe "V2" / Triton HTTP/REST) and
//! its binary tensor data extension. Request: `{"id"?, "parameters"?, "inputs": [{"name",
//! "shape", "datatype", "parameters"?, "data"?}], "outputs"?: [{"name", "parameters"?}]}`.
//! With the header `Inference-Header-Content-Length: N`, the first N bytes of the body
//! are that JSON and the rest is binary tensor data, consumed in input order by every
//! input whose `parameters.binary_data_size` says how many bytes it has.
//!
//! The parser lives here, not in the agent's handler, so it can be fuzzed without an HTTP
//! stack and so every face that takes inference requests parses them the same way.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::tensor::{DataType, Tensor, TensorData, element_count};

/// The binary tensor data extension's header (lower case, as HTTP/1 headers compare).
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// A request the protocol refuses; the message is for the client (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OipRequestError(pub String);

fn bad(m: impl Into<String>) -> OipRequestError {
    OipRequestError(m.into())
}

/// A request input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestInput {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    #[serde(default)]
    data: Option<Value>,
}

/// A requested output.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestOutput {
    name: String,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
}

/// The inference request (JSON part).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestJson {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: BTreeMap<String, Value>,
    inputs: Vec<RequestInput>,
    #[serde(default)]
    outputs: Option<Vec<RequestOutput>>,
}

/// A parsed request: tensors, the outputs wanted and which go back binary.
#[derive(Debug, Clone, PartialEq)]
pub struct InferRequest {
    /// The client's request id, echoed in the response.
    pub id: Option<String>,
    /// The inputs as named tensors (shape and element count checked).
    pub inputs: Vec<Tensor>,
    /// The outputs asked for by name (`None`: all of them).
    pub outputs: Option<Vec<String>>,
    /// `parameters.binary_data_output`: every output goes back binary.
    pub binary_all: bool,
    /// Outputs whose `parameters.binary_data` asks for binary.
    pub binary: Vec<String>,
}

fn flag(p: &BTreeMap<String, Value>, key: &str) -> Result<bool, OipRequestError> {
    match p.get(key) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(bad(format!("parameter {key:?} must be a boolean, got {v}"))),
    }
}

fn known(p: &BTreeMap<String, Value>, allowed: &[&str], what: &str) -> Result<(), OipRequestError> {
    match p.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(format!(
            "{what} parameter {k:?} is not supported (supported: {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

/// How many leading body bytes are JSON: the whole body without the header, else the
/// header's value, which must be a decimal byte count within the body. `header_length` is
/// the raw header value; like `http::HeaderValue::to_str`, only visible ASCII and tabs are
/// accepted.
fn json_len(header_length: Option<&[u8]>, body_len: usize) -> Result<usize, OipRequestError> {
    let Some(v) = header_length else {
        return Ok(body_len);
    };
    v.iter()
        .all(|&b| b == b'\t' || (32..127).contains(&b))
        .then(|| std::str::from_utf8(v).ok())
        .flatten()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n <= body_len)
        .ok_or_else(|| {
            bad(format!(
                "Inference-Header-Content-Length must be a byte count within the body ({body_len} bytes)"
            ))
        })
}

/// Parses an inference request body; `header_length` is the raw value of the
/// `Inference-Header-Content-Length` header, if the request has one. Every size comes from
/// the body itself and is checked before use; element counts are capped by
/// [`element_count`].
pub fn parse_infer_request(
    header_length: Option<&[u8]>,
    body: &[u8],
) -> Result<InferRequest, OipRequestError> {
    let (json, mut binary) = body.split_at(json_len(header_length, body.len())?);
    let req: RequestJson =
        serde_json::from_slice(json).map_err(|e| bad(format!("invalid inference request: {e}")))?;
    known(&req.parameters, &["binary_data_output"], "request")?;
    let binary_all = flag(&req.parameters, "binary_data_output")?;
    let mut inputs = Vec::with_capacity(req.inputs.len());
    for i in req.inputs {
        known(&i.parameters, &["binary_data_size"], "input")?;
        let dt = DataType::parse(&i.datatype).ok_or_else(|| {
            bad(format!(
                "input {:?}: unknown datatype {:?} (BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64, BYTES)",
                i.name, i.datatype
            ))
        })?;
        let shape: Vec<usize> = i
            .shape
            .iter()
            .map(|d| usize::try_from(*d))
            .collect::<Result<_, _>>()
            .map_err(|_| {
                bad(format!(
                    "input {:?}: shape {:?} has a negative dimension",
                    i.name, i.shape
                ))
            })?;
        let n = element_count(&shape).map_err(|e| bad(format!("input {:?}: {e}", i.name)))?;
        let data = match (i.parameters.get("binary_data_size"), i.data) {
            (Some(size), None) => {
                let size = size
                    .as_u64()
                    .and_then(|s| usize::try_from(s).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "input {:?}: binary_data_size must be a byte count",
                            i.name
                        ))
                    })?;
                let (mine, rest) = binary.split_at_checked(size).ok_or_else(|| {
                    bad(format!(
                        "input {:?}: binary_data_size {size} but only {} binary bytes remain",
                        i.name,
                        binary.len()
                    ))
                })?;
                binary = rest;
                TensorData::from_le_bytes(dt, mine, n)
            }
            (None, Some(data)) => TensorData::from_json(dt, &data, n),
            (Some(_), Some(_)) => {
                return Err(bad(format!(
                    "input {:?} has both data and binary_data_size",
                    i.name
                )));
            }
            (None, None) => return Err(bad(format!("input {:?} has no data", i.name))),
        }
        .map_err(|e| bad(format!("input {:?}: {e}", i.name)))?;
        inputs.push(
            Tensor::new(i.name.clone(), shape, data)
                .map_err(|e| bad(format!("input {:?}: {e}", i.name)))?,
        );
    }
    if !binary.is_empty() {
        return Err(bad(format!(
            "{} binary bytes are not claimed by any input's binary_data_size",
            binary.len()
        )));
    }
    let mut wanted = None;
    let mut bin = Vec::new();
    if let Some(outs) = req.outputs {
        let mut names = Vec::new();
        for o in outs {
            known(&o.parameters, &["binary_data"], "output")?;
            if flag(&o.parameters, "binary_data")? {
                bin.push(o.name.clone());
            }
            names.push(o.name);
        }
        wanted = Some(names);
    }
    Ok(InferRequest {
        id: req.id,
        inputs,
        outputs: wanted,
        binary_all,
        binary: bin,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_binary_inputs() {
        let json = br#"{"id":"r1","inputs":[
            {"name":"a","shape":[1,2],"datatype":"FP32","data":[1.0,2.0]},
            {"name":"b","shape":[2],"datatype":"INT32","parameters":{"binary_data_size":8}}],
            "outputs":[{"name":"y","parameters":{"binary_data":true}},{"name":"z"}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&7i32.to_le_bytes());
        body.extend_from_slice(&(-1i32).to_le_bytes());
        let n = json.len().to_string();
        let r = parse_infer_request(Some(n.as_bytes()), &body).unwrap();
        assert_eq!(r.id.as_deref(), Some("r1"));
        assert_eq!(r.inputs[0].data, TensorData::Fp32(vec![1.0, 2.0]));
        assert_eq!(r.inputs[1].data, TensorData::Int32(vec![7, -1]));
        assert_eq!(r.outputs, Some(vec!["y".to_owned(), "z".to_owned()]));
        assert_eq!((r.binary_all, r.binary), (false, vec!["y".to_owned()]));
    }

    #[test]
    fn refusals_name_the_problem() {
        let refuse = |h: Option<&[u8]>, b: &[u8]| parse_infer_request(h, b).unwrap_err().0;
        let one = br#"{"inputs":[{"name":"a","shape":[1],"datatype":"FP32","data":[1]}]}"#;
        assert!(refuse(Some(b"999"), one).contains("within the body"));
        // Header values follow HTTP's visible-ASCII rule: a non-ASCII space is refused.
        assert!(refuse(Some("\u{a0}5".as_bytes()), one).contains("within the body"));
        assert!(refuse(None, b"{").contains("invalid inference request"));
        assert!(refuse(None, br#"{"inputs":[],"parameters":{"x":1}}"#).contains("not supported"));
        assert!(
            refuse(
                None,
                br#"{"inputs":[{"name":"a","shape":[-1],"datatype":"FP32","data":[]}]}"#
            )
            .contains("negative")
        );
        assert!(
            refuse(
                None,
                br#"{"inputs":[{"name":"a","shape":[4294967296,4294967296],"datatype":"FP32","data":[]}]}"#
            )
            .contains("input \"a\"")
        );
        let mut extra = one.to_vec();
        extra.push(0);
        let n = one.len().to_string();
        assert!(refuse(Some(n.as_bytes()), &extra).contains("not claimed"));
    }
}
