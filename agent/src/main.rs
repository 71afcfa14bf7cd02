//! `outpost-agent`: thin binary over the agent library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use outpost_agent::cli::{Command, USAGE, error_chain, parse_args};
use outpost_agent::config::AgentConfig;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

fn main() -> ExitCode {
    outpost_agent::cli::quiet_on_closed_stdout();
    let cmd = match parse_args(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n\nUsage: outpost-agent <COMMAND>   (--help for more)");
            return ExitCode::from(2);
        }
    };
    match cmd {
        Command::Help => {
            print!("{USAGE}");
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("outpost-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Run { config } => run(config),
        Command::Status { config, json } => status(config, json),
        Command::VerifyBundle {
            file,
            trust,
            self_test,
        } => match outpost_agent::verify_cmd::verify_bundle_file(&file, &trust, self_test) {
            Ok(s) => {
                println!("{}", s.line);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                ExitCode::from(e.exit_code() as u8)
            }
        },
    }
}

/// `status`: exit 0 whether or not the agent runs (the output says which); 2 for a bad
/// config.
fn status(config: PathBuf, json: bool) -> ExitCode {
    let cfg = match AgentConfig::load(Some(&config), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    let s = outpost_agent::status::status(&cfg, Duration::from_secs(2));
    if json {
        match serde_json::to_string_pretty(&s) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", outpost_agent::status::render(&s));
    }
    ExitCode::SUCCESS
}

fn run(config: PathBuf) -> ExitCode {
    // Configuration problems are one line and exit 2, before anything starts.
    let cfg = match AgentConfig::load(Some(&config), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            return ExitCode::from(2);
        }
    };
    // `Targets` rather than `EnvFilter`: the same `info,outpost_agent=debug` syntax without
    // pulling a regex engine into the gateway binary.
    let filter: tracing_subscriber::filter::Targets = match cfg.log.parse() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: log: invalid filter {:?}: {e}", cfg.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // No colour codes in journald or log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .finish()
        .with(filter)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let agent = match outpost_agent::runtime::start(cfg, Vec::new()).await {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                return ExitCode::from(2);
            }
        };
        wait_for_signal().await;
        tracing::info!("shutting down");
        agent.shutdown(Duration::from_secs(5)).await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
