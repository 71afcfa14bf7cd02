//! Errors, split by whose fault they are: a [`RequestError`] is the caller's (HTTP 4xx,
//! counted as *rejected*, never held against the model); everything else is the model's
//! or the loader's.

use outpost_protocol::contract::{ContractError, InputError, OutputError};
use outpost_protocol::tensor::{DataType, TensorError};

/// Largest batch one call may run (bounds memory per request).
pub const MAX_BATCH: usize = 1024;

/// A request the model cannot be asked (the caller's fault).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    /// An input the model needs was not sent.
    #[error("input {0:?} is missing (the model takes {1})")]
    MissingInput(String, String),
    /// An input the model does not have.
    #[error("{0:?} is not an input of this model (it takes {1})")]
    UnknownInput(String, String),
    /// The same input twice.
    #[error("input {0:?} was sent more than once")]
    DuplicateInput(String),
    /// Wrong element type.
    #[error("input {name:?} is {got}, the model takes {expected}")]
    DataType {
        /// Input.
        name: String,
        /// Contract datatype.
        expected: DataType,
        /// Sent datatype.
        got: DataType,
    },
    /// Shape not accepted by the contract.
    #[error("input {name:?} has shape {got:?}, the model takes {expected}")]
    Shape {
        /// Input.
        name: String,
        /// Contract shape, displayed (`[-1, 16]`).
        expected: String,
        /// Sent shape.
        got: Vec<usize>,
    },
    /// Inputs disagree on the batch size.
    #[error("inputs disagree on the batch size (first dimension): {0}")]
    BatchMismatch(String),
    /// Empty or oversize batch.
    #[error("batch of {0} samples is outside 1..={MAX_BATCH}")]
    BatchSize(usize),
    /// An output that does not exist was requested.
    #[error("{0:?} is not an output of this model (it has {1})")]
    UnknownOutput(String, String),
    /// A value the model refuses (NaN, infinity).
    #[error("input {input:?}: value {index} is not finite")]
    NotFinite {
        /// Input.
        input: String,
        /// Flat index.
        index: usize,
    },
    /// Finite inputs beyond the validated domain drove the model's output non-finite.
    #[error(
        "input {input:?} has a value of magnitude {value:e}, beyond the model's validated domain of ±{max_abs:e}, and the model's output is not finite for it"
    )]
    OutOfDomain {
        /// Input.
        input: String,
        /// The largest magnitude sent.
        value: f64,
        /// The domain bound.
        max_abs: f64,
    },
    /// A per-sample check of the feature path failed.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Tensor data could not be decoded.
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// The contract itself is inconsistent.
    #[error("invalid model contract: {0}")]
    Contract(#[from] ContractError),
    /// tract could not load or optimise the graph.
    #[error("model does not load: {0}")]
    Load(String),
    /// The graph does not match the contract.
    #[error("model does not match its contract: {0}")]
    Mismatch(String),
    /// The caller's request was refused.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The output could not be interpreted (the model's fault).
    #[error(transparent)]
    Output(#[from] OutputError),
    /// tract failed while running (the model's fault).
    #[error("inference failed: {0}")]
    Run(String),
    /// A self-test sample gave the wrong answer.
    #[error("self-test sample {index} failed: {reason}")]
    SelfTest {
        /// Sample index.
        index: usize,
        /// What differed.
        reason: String,
    },
}

impl InferenceError {
    /// Whether the caller is to blame (bad request): such errors never count against the
    /// model's health.
    pub fn is_client_error(&self) -> bool {
        matches!(self, Self::Request(_))
    }

    /// Whether the model itself failed on a valid request.
    pub fn is_model_failure(&self) -> bool {
        matches!(self, Self::Run(_) | Self::Output(_))
    }
}

impl From<InputError> for InferenceError {
    fn from(e: InputError) -> Self {
        Self::Request(RequestError::Input(e))
    }
}
