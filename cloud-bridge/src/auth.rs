//! API tokens and roles. A token is shown once at creation; only its SHA-256 is stored.
//!
//! Roles are ordered: `viewer` reads; `operator` also changes deployments and deletes
//! models; `admin` also provisions devices and manages tokens.

use outpost_protocol::Digest;
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

/// A role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read-only.
    Viewer,
    /// Operations.
    Operator,
    /// Everything.
    Admin,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Self::Viewer),
            "operator" => Ok(Self::Operator),
            "admin" => Ok(Self::Admin),
            _ => Err(format!("{s:?} is not one of viewer, operator, admin")),
        }
    }
}

impl Role {
    /// Lower-case name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Admin => "admin",
        }
    }
}

fn ensure_table(c: &Connection) -> rusqlite::Result<()> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS api_tokens (name TEXT PRIMARY KEY, role TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, created_at INTEGER NOT NULL);",
    )
}

/// Why a token could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The name is not 1..=64 of `[A-Za-z0-9._-]`.
    #[error(transparent)]
    Input(#[from] crate::input::InputError),
    /// Database failure.
    #[error("token database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// Creates (or replaces) a token; returns the secret.
pub fn add_token(c: &Connection, name: &str, role: Role) -> Result<String, AuthError> {
    crate::input::device_id("token name", name)?;
    ensure_table(c)?;
    let token = format!("opt_{}", crate::devices::random_secret());
    c.execute(
        "INSERT OR REPLACE INTO api_tokens (name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            name,
            role.as_str(),
            Digest::of(token.as_bytes()).to_hex(),
            crate::db::now() as i64
        ],
    )?;
    Ok(token)
}

/// The (name, role) a token belongs to.
pub fn lookup(c: &Connection, token: &str) -> rusqlite::Result<Option<(String, Role)>> {
    ensure_table(c)?;
    let r: Option<(String, String)> = c
        .query_row(
            "SELECT name, role FROM api_tokens WHERE hash = ?1",
            [Digest::of(token.as_bytes()).to_hex()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(r.and_then(|(n, role)| role.parse().ok().map(|r| (n, r))))
}
