//! Why the link is down, for logs and `outpost-agent status`: connection failures sorted
//! by what fixes them, and a log throttle so a broker that stays away is not one line per
//! retry.
//!
//! | kind | examples | level | fixes itself? |
//! |---|---|---|---|
//! | `unreachable` | connection refused, DNS, timeout, reset | WARN | yes, when the broker is back |
//! | `auth` | CONNACK 4 bad user name or password, 5 not authorized, 2 client id refused | ERROR | no: credentials or ACL |
//! | `tls` | unknown issuer, expired, certificate required | ERROR | no: certificates |
//! | `refused` | CONNACK 1 protocol version, 3 server unavailable | WARN | maybe |
//! | `protocol` | anything else the client reports | WARN | maybe |

use rumqttc::{ConnectReturnCode, ConnectionError};
use serde::{Deserialize, Serialize};

/// What kind of failure, by what an operator does about it (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The broker could not be reached.
    Unreachable,
    /// The broker refused the credentials or the client id.
    Auth,
    /// The TLS handshake failed.
    Tls,
    /// The broker refused the connection for another reason.
    Refused,
    /// Another client-side error.
    Protocol,
}

impl FailureKind {
    /// Whether retrying can succeed without an operator (logged as WARN, else ERROR).
    pub fn transient(self) -> bool {
        !matches!(self, FailureKind::Auth | FailureKind::Tls)
    }
}

/// A failed connection attempt, classified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind.
    pub kind: FailureKind,
    /// One line for an operator (`bad user name or password (CONNACK 4)`).
    pub reason: String,
}

/// Classifies a connection error. `tls` says whether the error is a TLS refusal, which
/// may be buried in an I/O error (see `is_tls_failure` in the link).
pub fn classify(e: &ConnectionError, tls: bool) -> Failure {
    use std::io::ErrorKind as K;
    let f = |kind, reason: String| Failure { kind, reason };
    if tls {
        return f(FailureKind::Tls, e.to_string());
    }
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let (kind, what) = match code {
                ConnectReturnCode::BadUserNamePassword => {
                    (FailureKind::Auth, "bad user name or password (CONNACK 4)")
                }
                ConnectReturnCode::NotAuthorized => {
                    (FailureKind::Auth, "not authorized (CONNACK 5)")
                }
                ConnectReturnCode::BadClientId => (
                    FailureKind::Auth,
                    "client id (the device id) refused (CONNACK 2)",
                ),
                ConnectReturnCode::ServiceUnavailable => {
                    (FailureKind::Refused, "server unavailable (CONNACK 3)")
                }
                ConnectReturnCode::RefusedProtocolVersion => {
                    (FailureKind::Refused, "MQTT 3.1.1 not accepted (CONNACK 1)")
                }
                ConnectReturnCode::Success => {
                    (FailureKind::Protocol, "CONNACK 0 taken as a refusal")
                }
            };
            f(kind, format!("broker refused the connection: {what}"))
        }
        ConnectionError::NetworkTimeout => f(FailureKind::Unreachable, "connect timed out".into()),
        ConnectionError::Io(io) => {
            let msg = io.to_string();
            let reason = match io.kind() {
                K::ConnectionRefused => {
                    "connection refused (is the broker running on that port?)".into()
                }
                K::TimedOut => "connect timed out".into(),
                K::ConnectionReset | K::ConnectionAborted | K::UnexpectedEof => {
                    format!("connection closed by the broker ({msg})")
                }
                // std reports a failed name lookup as an uncategorised error with this text.
                _ if msg.contains("lookup") || msg.contains("resolve") => {
                    format!("DNS: {msg}")
                }
                _ => format!("I/O: {msg}"),
            };
            f(FailureKind::Unreachable, reason)
        }
        other => f(FailureKind::Protocol, other.to_string()),
    }
}

/// Decides which failed attempts are logged: the first of a reason (at its kind's level),
/// then repeats of the same reason only at the 2nd, 4th, 8th, … attempt (as WARN
/// "still failing"), so a broker away for a day costs a few dozen lines, not thousands,
/// and the log still shows it is being retried. A new reason is logged at once.
#[derive(Debug, Default)]
pub struct FailureLog {
    last: Option<Failure>,
    repeats: u32,
}

/// What to log for one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A new reason: at its kind's level (ERROR or WARN).
    First,
    /// The same reason again, the given number of attempts in a row: WARN.
    StillFailing(u32),
    /// The same reason again: DEBUG only.
    Quiet,
}

impl FailureLog {
    /// Records a failed attempt.
    pub fn on_failure(&mut self, f: &Failure) -> Verdict {
        if self.last.as_ref() == Some(f) {
            self.repeats = self.repeats.saturating_add(1);
            if self.repeats.is_power_of_two() {
                Verdict::StillFailing(self.repeats)
            } else {
                Verdict::Quiet
            }
        } else {
            self.last = Some(f.clone());
            self.repeats = 1;
            Verdict::First
        }
    }

    /// After a successful connection: the failed attempts before it, and a fresh start.
    pub fn on_connected(&mut self) -> u32 {
        self.last = None;
        std::mem::take(&mut self.repeats)
    }
}

/// The link as `outpost-agent status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkState {
    /// `mqtt[s]://host:port`.
    pub broker: String,
    /// Whether the link is up now.
    pub connected: bool,
    /// Connection attempts that failed since the last success.
    pub failed_attempts: u32,
    /// The last failure (kept after reconnecting, for the record).
    pub last_error: Option<Failure>,
    /// When the last failure happened, unix seconds.
    pub last_error_at: Option<u64>,
    /// The delay before the next attempt while disconnected, ms.
    pub retry_in_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind, m: &str) -> ConnectionError {
        ConnectionError::Io(std::io::Error::new(kind, m))
    }

    #[test]
    fn failures_are_sorted_by_what_fixes_them() {
        use std::io::ErrorKind as K;
        let c = |e: &ConnectionError| classify(e, false);
        let auth = c(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword,
        ));
        assert_eq!(auth.kind, FailureKind::Auth);
        assert!(
            auth.reason.contains("bad user name or password"),
            "{}",
            auth.reason
        );
        assert!(!auth.kind.transient());
        let na = c(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::NotAuthorized,
        ));
        assert_eq!(na.kind, FailureKind::Auth);
        assert!(na.reason.contains("not authorized"));
        let busy = c(&ConnectionError::ConnectionRefused(
            ConnectReturnCode::ServiceUnavailable,
        ));
        assert!(busy.kind.transient());
        let refused = c(&io(K::ConnectionRefused, "refused"));
        assert_eq!(refused.kind, FailureKind::Unreachable);
        assert!(refused.reason.contains("connection refused"));
        let dns = c(&io(K::Other, "failed to lookup address information"));
        assert!(dns.reason.starts_with("DNS: "), "{}", dns.reason);
        assert_eq!(
            c(&ConnectionError::NetworkTimeout).kind,
            FailureKind::Unreachable
        );
        let tls = classify(&ConnectionError::NetworkTimeout, true);
        assert_eq!(tls.kind, FailureKind::Tls);
        assert!(!tls.kind.transient());
    }

    #[test]
    fn repeats_are_logged_ever_more_rarely_and_a_new_reason_at_once() {
        let a = Failure {
            kind: FailureKind::Unreachable,
            reason: "connection refused".into(),
        };
        let b = Failure {
            kind: FailureKind::Auth,
            reason: "bad user name or password (CONNACK 4)".into(),
        };
        let mut log = FailureLog::default();
        let v: Vec<Verdict> = (0..16).map(|_| log.on_failure(&a)).collect();
        assert_eq!(v[0], Verdict::First);
        let loud: Vec<usize> = (1..16)
            .filter(|i| v[*i] != Verdict::Quiet)
            .map(|i| i + 1)
            .collect();
        assert_eq!(loud, [2, 4, 8, 16], "attempts logged again");
        assert_eq!(v[15], Verdict::StillFailing(16));
        assert_eq!(log.on_failure(&b), Verdict::First);
        assert_eq!(log.on_failure(&a), Verdict::First);
        assert_eq!(log.on_connected(), 1);
        assert_eq!(
            log.on_failure(&a),
            Verdict::First,
            "a fresh start after connecting"
        );
    }
}
