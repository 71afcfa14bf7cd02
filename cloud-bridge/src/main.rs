//! `outpost-bridge`: parses the command line and hands it to the library
//! (`outpost_bridge::cli`), which prints the whole error chain on failure.

use std::process::ExitCode;

use clap::Parser;
use outpost_bridge::cli::{self, args::Cli};

fn main() -> ExitCode {
    cli::quiet_on_closed_stdout();
    match cli::run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", outpost_agent::cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
