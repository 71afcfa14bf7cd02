//! Helpers shared by the command-line front ends, and the agent's argument parser.
//!
//! The agent parses its four-word command line by hand rather than with clap: on the
//! gateway every hundred kilobytes counts (docs/benchmarks.md, binary size), and the
//! grammar is small enough to test exhaustively here.

use std::ffi::OsString;
use std::path::PathBuf;

/// Usage text for `outpost-agent --help`.
pub const USAGE: &str = "\
Outpost edge agent for ML models on IoT gateways

Usage: outpost-agent <COMMAND>

Commands:
  run --config FILE                  Run the agent: link, updates, local API, sensor pipeline
  status --config FILE [--json]      Link state, models and store backlog: asked of the
                                     running agent's local API, else read from the data
                                     directory (\"agent not running\")
  verify-bundle FILE --trust DIR     Verify a bundle file offline: signature, manifest,
        [--self-test]                chunks, files (--self-test: also load the model with
                                     tract and run the bundle's self-test samples)
  help                               Print this message

Options:
  -h, --help     Print help
  -V, --version  Print version
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `run --config FILE`.
    Run {
        /// Configuration file.
        config: PathBuf,
    },
    /// `status --config FILE [--json]`.
    Status {
        /// Configuration file.
        config: PathBuf,
        /// Print JSON ([`crate::status::AgentStatus`]) instead of text.
        json: bool,
    },
    /// `verify-bundle FILE --trust DIR [--self-test]`.
    VerifyBundle {
        /// Bundle file.
        file: PathBuf,
        /// Trust directory.
        trust: PathBuf,
        /// Also run the self-test.
        self_test: bool,
    },
    /// `--help`, `-h`, `help`.
    Help,
    /// `--version`, `-V`.
    Version,
}

/// A command line that cannot be understood; the binary prints it with the usage line
/// and exits 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

/// Parses the arguments after the program name.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    let mut args = args.into_iter();
    let err = |m: String| Err(UsageError(m));
    let Some(cmd) = args.next() else {
        return err("a command is required (run, verify-bundle)".into());
    };
    let rest: Vec<OsString> = args.collect();
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    match cmd.to_str() {
        Some("-h" | "--help" | "help") => Ok(Command::Help),
        Some("-V" | "--version") => Ok(Command::Version),
        Some("run") => {
            let mut config = None;
            let mut it = rest.into_iter();
            while let Some(a) = it.next() {
                match flag(&a, &mut it, "--config")? {
                    Some(v) if config.is_none() => config = Some(PathBuf::from(v)),
                    Some(_) => return err("--config given twice".into()),
                    None => return err(format!("run: unexpected argument {a:?}")),
                }
            }
            match config {
                Some(config) => Ok(Command::Run { config }),
                None => err("run: --config FILE is required".into()),
            }
        }
        Some("status") => {
            let (mut config, mut json) = (None, false);
            let mut it = rest.into_iter();
            while let Some(a) = it.next() {
                if a == "--json" {
                    json = true;
                    continue;
                }
                match flag(&a, &mut it, "--config")? {
                    Some(v) if config.is_none() => config = Some(PathBuf::from(v)),
                    Some(_) => return err("--config given twice".into()),
                    None => return err(format!("status: unexpected argument {a:?}")),
                }
            }
            match config {
                Some(config) => Ok(Command::Status { config, json }),
                None => err("status: --config FILE is required".into()),
            }
        }
        Some("verify-bundle") => {
            let (mut file, mut trust, mut self_test) = (None, None, false);
            let mut it = rest.into_iter();
            while let Some(a) = it.next() {
                if a == "--self-test" {
                    self_test = true;
                } else if let Some(v) = flag(&a, &mut it, "--trust")? {
                    if trust.replace(PathBuf::from(v)).is_some() {
                        return err("--trust given twice".into());
                    }
                } else if a.to_str().is_some_and(|s| s.starts_with('-')) {
                    return err(format!("verify-bundle: unknown option {a:?}"));
                } else if file.replace(PathBuf::from(&a)).is_some() {
                    return err(format!("verify-bundle: unexpected argument {a:?}"));
                }
            }
            match (file, trust) {
                (Some(file), Some(trust)) => Ok(Command::VerifyBundle {
                    file,
                    trust,
                    self_test,
                }),
                (None, _) => err("verify-bundle: a bundle FILE is required".into()),
                (_, None) => err("verify-bundle: --trust DIR is required".into()),
            }
        }
        _ => err(format!("unknown command {cmd:?} (run, verify-bundle)")),
    }
}

/// `--name VALUE` or `--name=VALUE` → Some(VALUE); another argument → None.
fn flag(
    a: &OsString,
    it: &mut impl Iterator<Item = OsString>,
    name: &str,
) -> Result<Option<OsString>, UsageError> {
    if a == name {
        return match it.next() {
            Some(v) => Ok(Some(v)),
            None => Err(UsageError(format!("{name} needs a value"))),
        };
    }
    match a
        .to_str()
        .and_then(|s| s.strip_prefix(name)?.strip_prefix('='))
    {
        Some(v) => Ok(Some(v.into())),
        None => Ok(None),
    }
}

/// Makes writing to a closed stdout (`outpost-agent status | head -1`) end the process
/// quietly with status 0, as other Unix tools do. Rust ignores SIGPIPE, so `println!`
/// panics on EPIPE instead; the hook recognises that panic and exits, and leaves every
/// other panic to the default hook. (The bridge has the same hook; it can call this one.)
pub fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Formats an error and its causes on one line, skipping a cause whose text the line
/// already contains (thiserror variants often display their source inline).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !line.contains(&s) {
            line.push_str(": ");
            line.push_str(&s);
        }
        cur = c.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::{Command, parse_args};
    use std::path::PathBuf;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(|a| a.into())).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_every_form_and_refuses_the_rest() {
        let run = Ok(Command::Run {
            config: PathBuf::from("a.toml"),
        });
        assert_eq!(p(&["run", "--config", "a.toml"]), run);
        assert_eq!(p(&["run", "--config=a.toml"]), run);
        let vb = |self_test| {
            Ok(Command::VerifyBundle {
                file: "b.bundle".into(),
                trust: "keys".into(),
                self_test,
            })
        };
        assert_eq!(
            p(&["verify-bundle", "b.bundle", "--trust", "keys"]),
            vb(false)
        );
        assert_eq!(
            p(&["verify-bundle", "--self-test", "--trust=keys", "b.bundle"]),
            vb(true)
        );
        assert_eq!(p(&["--version"]), Ok(Command::Version));
        assert_eq!(p(&["-V"]), Ok(Command::Version));
        assert_eq!(p(&["help"]), Ok(Command::Help));
        assert_eq!(p(&["run", "--help"]), Ok(Command::Help));

        assert_eq!(
            p(&[]).unwrap_err(),
            "a command is required (run, verify-bundle)"
        );
        assert_eq!(p(&["run"]).unwrap_err(), "run: --config FILE is required");
        assert_eq!(
            p(&["run", "--config"]).unwrap_err(),
            "--config needs a value"
        );
        assert_eq!(
            p(&["run", "--config", "a", "--config", "b"]).unwrap_err(),
            "--config given twice"
        );
        assert_eq!(
            p(&["run", "--config", "a", "extra"]).unwrap_err(),
            "run: unexpected argument \"extra\""
        );
        assert_eq!(
            p(&["verify-bundle", "--trust", "k"]).unwrap_err(),
            "verify-bundle: a bundle FILE is required"
        );
        assert_eq!(
            p(&["verify-bundle", "b"]).unwrap_err(),
            "verify-bundle: --trust DIR is required"
        );
        assert_eq!(
            p(&["verify-bundle", "b", "--trust", "k", "--selftest"]).unwrap_err(),
            "verify-bundle: unknown option \"--selftest\""
        );
        assert_eq!(
            p(&["verify-bundle", "a", "b", "--trust", "k"]).unwrap_err(),
            "verify-bundle: unexpected argument \"b\""
        );
        assert_eq!(
            p(&["serve"]).unwrap_err(),
            "unknown command \"serve\" (run, verify-bundle)"
        );
    }

    #[test]
    fn parses_status() {
        let st = |json| {
            Ok(Command::Status {
                config: PathBuf::from("a.toml"),
                json,
            })
        };
        assert_eq!(p(&["status", "--config", "a.toml"]), st(false));
        assert_eq!(p(&["status", "--json", "--config=a.toml"]), st(true));
        assert_eq!(
            p(&["status"]).unwrap_err(),
            "status: --config FILE is required"
        );
        assert_eq!(
            p(&["status", "--config", "a", "--jsn"]).unwrap_err(),
            "status: unexpected argument \"--jsn\""
        );
    }

    #[derive(Debug, thiserror::Error)]
    enum Inner {
        #[error("disk on fire")]
        Fire,
    }
    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error("saving failed: {0}")]
        Save(#[from] Inner),
        #[error("loading failed")]
        Load(#[source] Inner),
    }

    #[test]
    fn chain_skips_repeats_but_keeps_new_causes() {
        assert_eq!(
            super::error_chain(&Outer::Save(Inner::Fire)),
            "saving failed: disk on fire"
        );
        assert_eq!(
            super::error_chain(&Outer::Load(Inner::Fire)),
            "loading failed: disk on fire"
        );
    }
}
