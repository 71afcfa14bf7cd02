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
    /// A token of that name exists (issue with `replace` to replace it).
    #[error("a token named {0:?} exists (--replace issues a new one and revokes it)")]
    Exists(String),
    /// No token of that name.
    #[error("no token named {0:?}")]
    NotFound(String),
    /// Database failure.
    #[error("token database: {0}")]
    Db(#[from] rusqlite::Error),
}

/// A token as listed (never its secret or hash).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Created, unix seconds.
    pub created_at: u64,
}

/// `token add`: creates token `name` with `role` (refused if the name exists, unless
/// `replace`: then the old secret stops working at once), audited as `actor`. Returns the
/// secret, shown once.
///
/// # Errors
/// A bad name, an existing name without `replace`, or a database/audit failure.
pub fn issue_token(
    c: &Connection,
    audit: &crate::audit::Audit,
    name: &str,
    role: Role,
    replace: bool,
    actor: &str,
) -> Result<String, AuthError> {
    crate::input::device_id("token name", name)?;
    ensure_table(c)?;
    let exists = c
        .query_row("SELECT 1 FROM api_tokens WHERE name = ?1", [name], |_| {
            Ok(())
        })
        .optional()?
        .is_some();
    if exists && !replace {
        return Err(AuthError::Exists(name.into()));
    }
    let token = add_token(c, name, role)?;
    audit.append(
        c,
        actor,
        if exists { "token.replace" } else { "token.add" },
        name,
        "",
        &serde_json::to_value(TokenInfo {
            name: name.into(),
            role,
            created_at: crate::db::now(),
        })
        .unwrap_or_default(),
    )?;
    Ok(token)
}

/// `token list`: every token's name, role and creation time, by name.
pub fn list_tokens(c: &Connection) -> Result<Vec<TokenInfo>, AuthError> {
    ensure_table(c)?;
    let mut q = c.prepare("SELECT name, role, created_at FROM api_tokens ORDER BY name")?;
    let rows = q.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (name, role, at) = row?;
        if let Ok(role) = role.parse() {
            out.push(TokenInfo {
                name,
                role,
                created_at: at as u64,
            });
        }
    }
    Ok(out)
}

/// `token revoke`: the token stops working at once; audited as `actor`.
///
/// # Errors
/// No such token, or a database/audit failure.
pub fn revoke_token(
    c: &Connection,
    audit: &crate::audit::Audit,
    name: &str,
    actor: &str,
) -> Result<(), AuthError> {
    ensure_table(c)?;
    if c.execute("DELETE FROM api_tokens WHERE name = ?1", [name])? == 0 {
        return Err(AuthError::NotFound(name.into()));
    }
    audit.append(c, actor, "token.revoke", name, "", &serde_json::Value::Null)?;
    Ok(())
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
