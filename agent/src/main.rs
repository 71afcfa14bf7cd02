//! `outpost-agent`: thin binary over the agent library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "outpost-agent",
    version,
    about = "Outpost edge agent for ML models on IoT gateways"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify a bundle file offline: signature, manifest, chunks, files.
    VerifyBundle {
        /// Bundle file.
        file: PathBuf,
        /// Directory of trusted public keys (*.pub).
        #[arg(long)]
        trust: PathBuf,
        /// Also load the model with tract and run the bundle's self-test samples.
        #[arg(long)]
        self_test: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::VerifyBundle {
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
