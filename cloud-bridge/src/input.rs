//! Caps on every string that enters the bridge from outside — HTTP bodies, queries and
//! paths, CLI arguments — checked where it enters, by these functions for both faces
//! (the library operations the CLI and the handlers share call them). A refusal names the
//! field and the cap; the API answers it with 400 (422 for a name of the wrong form, like
//! any other refused value).
//!
//! | what | rule |
//! |---|---|
//! | model names, targets | 1..=128 of `[A-Za-z0-9._-]` (not `.`/`..`) |
//! | device ids, token names | 1..=64 of `[A-Za-z0-9._-]` |
//! | other ids (deployments), kinds, states | at most 128 bytes |
//! | tags | at most 64; keys 1..=128 bytes, values at most 256 |
//! | reasons, descriptions | at most 1024 bytes |
//! | URLs | at most 2048 bytes |

use std::collections::BTreeMap;

/// Longest model name (the protocol's).
pub const MAX_NAME: usize = outpost_protocol::manifest::MAX_NAME_LEN;
/// Longest device id or token name.
pub const MAX_DEVICE_ID: usize = 64;
/// Longest other identifier (deployment ids, event kinds, states, lineage fields).
pub const MAX_ID: usize = 128;
/// Longest tag key.
pub const MAX_TAG_KEY: usize = 128;
/// Longest tag value (also lineage values).
pub const MAX_TAG_VALUE: usize = 256;
/// Most tags (or tag filters) on one thing.
pub const MAX_TAGS: usize = 64;
/// Longest reason or description.
pub const MAX_TEXT: usize = 1024;
/// Longest URL.
pub const MAX_URL: usize = 2048;

/// Input over a cap or not of its form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Longer than its cap.
    #[error("{field} is {len} bytes; at most {max} are allowed")]
    TooLong {
        /// Which field.
        field: String,
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// More entries than the cap.
    #[error("{field} has {count} entries; at most {max} are allowed")]
    TooMany {
        /// Which field.
        field: &'static str,
        /// How many there were.
        count: usize,
        /// The cap.
        max: usize,
    },
    /// Not a name.
    #[error("{field} {value:?} is not valid: use 1..={max} of [A-Za-z0-9._-]")]
    BadName {
        /// Which field.
        field: &'static str,
        /// The value (shortened).
        value: String,
        /// The longest allowed.
        max: usize,
    },
    /// Not `k=v` with a key.
    #[error("{field} {value:?} must be k=v")]
    NotKeyValue {
        /// Which field.
        field: &'static str,
        /// The value (shortened).
        value: String,
    },
    /// Not one of the accepted values.
    #[error("{field} {value:?} is not one of {allowed}")]
    NotOneOf {
        /// Which field.
        field: &'static str,
        /// The value (shortened).
        value: String,
        /// The accepted values.
        allowed: &'static str,
    },
}

/// At most 64 characters of `s`, for messages (a refused value may be megabytes).
/// (Public for filters that quote a refused value.)
pub fn preview(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// `s` is at most `max` bytes.
pub fn bounded(field: &str, s: &str, max: usize) -> Result<(), InputError> {
    if s.len() > max {
        return Err(InputError::TooLong {
            field: field.to_owned(),
            len: s.len(),
            max,
        });
    }
    Ok(())
}

/// A reason or description: at most [`MAX_TEXT`] bytes.
pub fn text(field: &str, s: &str) -> Result<(), InputError> {
    bounded(field, s, MAX_TEXT)
}

/// A URL: at most [`MAX_URL`] bytes.
pub fn url(field: &str, s: &str) -> Result<(), InputError> {
    bounded(field, s, MAX_URL)
}

/// An identifier other than a name: at most [`MAX_ID`] bytes.
pub fn id(field: &str, s: &str) -> Result<(), InputError> {
    bounded(field, s, MAX_ID)
}

/// A model name (or a target): the protocol's rule, 1..=128 of `[A-Za-z0-9._-]`. Too
/// long is [`InputError::TooLong`], else not of the form is [`InputError::BadName`].
pub fn name(field: &'static str, s: &str) -> Result<(), InputError> {
    bounded(field, s, MAX_NAME)?;
    if outpost_protocol::manifest::valid_name(s) {
        return Ok(());
    }
    Err(InputError::BadName {
        field,
        value: preview(s),
        max: MAX_NAME,
    })
}

/// A device id or token name: 1..=64 of `[A-Za-z0-9._-]`. Too long is
/// [`InputError::TooLong`], else not of the form is [`InputError::BadName`].
pub fn device_id(field: &'static str, s: &str) -> Result<(), InputError> {
    bounded(field, s, MAX_DEVICE_ID)?;
    if outpost_protocol::topics::valid_device_id(s) {
        return Ok(());
    }
    Err(InputError::BadName {
        field,
        value: preview(s),
        max: MAX_DEVICE_ID,
    })
}

/// One tag: a key of 1..=128 bytes, a value of at most 256.
pub fn tag(field: &'static str, key: &str, value: &str) -> Result<(), InputError> {
    if key.trim().is_empty() {
        return Err(InputError::NotKeyValue {
            field,
            value: preview(&format!("{key}={value}")),
        });
    }
    bounded(&format!("{field} key {:?}", preview(key)), key, MAX_TAG_KEY)?;
    bounded(&format!("{field} {key:?}"), value, MAX_TAG_VALUE)
}

/// Tags as a map (API bodies): at most [`MAX_TAGS`], each per [`tag`].
pub fn tag_map(field: &'static str, tags: &BTreeMap<String, String>) -> Result<(), InputError> {
    count(field, tags.len(), MAX_TAGS)?;
    tags.iter().try_for_each(|(k, v)| tag(field, k, v))
}

/// Tags as pairs (selectors, filters): at most [`MAX_TAGS`], each per [`tag`].
pub fn tag_list(field: &'static str, tags: &[(String, String)]) -> Result<(), InputError> {
    count(field, tags.len(), MAX_TAGS)?;
    tags.iter().try_for_each(|(k, v)| tag(field, k, v))
}

/// `k=v` items (CLI flags, query parameters, tags given as text) → trimmed pairs: at most
/// [`MAX_TAGS`], each per [`tag`].
pub fn tag_pairs(
    field: &'static str,
    items: &[String],
) -> Result<Vec<(String, String)>, InputError> {
    count(field, items.len(), MAX_TAGS)?;
    items.iter().map(|s| tag_pair(field, s)).collect()
}

/// One `k=v` item → a trimmed pair, per [`tag`].
pub fn tag_pair(field: &'static str, s: &str) -> Result<(String, String), InputError> {
    let (k, v) = s.split_once('=').ok_or_else(|| InputError::NotKeyValue {
        field,
        value: preview(s),
    })?;
    let (k, v) = (k.trim(), v.trim());
    tag(field, k, v)?;
    Ok((k.to_owned(), v.to_owned()))
}

/// At most `max` entries.
pub fn count(field: &'static str, n: usize, max: usize) -> Result<(), InputError> {
    if n > max {
        return Err(InputError::TooMany {
            field,
            count: n,
            max,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_name_the_field_and_the_limit() {
        let e = text("reason", &"x".repeat(MAX_TEXT + 1)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "reason is 1025 bytes; at most 1024 are allowed"
        );
        assert!(text("reason", &"x".repeat(MAX_TEXT)).is_ok());
        assert!(url("webhook", &"u".repeat(MAX_URL + 1)).is_err());
        let e = tag_pair("tag", &format!("site={}", "v".repeat(257))).unwrap_err();
        assert!(
            e.to_string()
                .contains("tag \"site\" is 257 bytes; at most 256"),
            "{e}"
        );
        let e = tag_pair("tag", &format!("{}=v", "k".repeat(129))).unwrap_err();
        assert!(e.to_string().contains("at most 128"), "{e}");
        let many: Vec<String> = (0..65).map(|i| format!("k{i}=v")).collect();
        let e = tag_pairs("tags", &many).unwrap_err();
        assert_eq!(e.to_string(), "tags has 65 entries; at most 64 are allowed");
        assert_eq!(
            tag_pairs("tags", &many[..64]).unwrap()[63],
            ("k63".into(), "v".into())
        );
    }

    #[test]
    fn names_follow_the_protocol_rules_and_refusals_are_short() {
        assert!(name("model", &"m".repeat(128)).is_ok());
        assert!(matches!(
            name("model", &"m".repeat(129)),
            Err(InputError::TooLong { max: 128, .. })
        ));
        assert!(matches!(
            name("model", ".."),
            Err(InputError::BadName { .. })
        ));
        assert!(device_id("device", &"d".repeat(64)).is_ok());
        let e = device_id("device", &format!("{}/", "d".repeat(63))).unwrap_err();
        assert!(matches!(e, InputError::BadName { max: 64, .. }), "{e}");
        assert!(e.to_string().len() < 200, "{e}");
        assert!(matches!(
            tag_pair("tag", " =v"),
            Err(InputError::NotKeyValue { .. })
        ));
        assert_eq!(
            tag_pair("tag", " a = b ").unwrap(),
            ("a".into(), "b".into())
        );
    }
}
