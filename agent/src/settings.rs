//! What every config section shares: the error its validator returns.
//!
//! Each module owns its section of the agent's config file (`[broker]` in
//! [`crate::link::config`], `[update]` and `[models]` in [`crate::update::config`], …): the
//! typed struct with its `Default`, the file form with `deny_unknown_fields`, and a
//! `validate`. [`crate::config`] only parses the file, applies the environment and composes
//! the sections. This error lives in a module of its own so that sections do not import
//! the composer that imports them.

/// A section value that is out of range or inconsistent; [`crate::config::ConfigError`]
/// shows it as `config: {field}: {message}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSetting {
    /// The key as written in the file, with its section (`broker.url`).
    pub field: &'static str,
    /// What is wrong and, where it helps, the accepted range.
    pub message: String,
}

impl InvalidSetting {
    /// An error for `field`.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}
