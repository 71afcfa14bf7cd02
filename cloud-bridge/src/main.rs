//! `outpost-bridge`: thin binary over the bridge library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Parser, Subcommand};
use outpost_bridge::packaging::{self, PackInput};

#[derive(Parser)]
#[command(
    name = "outpost-bridge",
    version,
    about = "Outpost cloud bridge: registry, packaging, rollout, ingest"
)]
struct Cli {
    /// Data directory (registry, bundles, keys, databases).
    #[arg(long, global = true, default_value = "./outpost-data")]
    data_dir: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        cmd: KeysCmd,
    },
    /// Bundles.
    Bundle {
        #[command(subcommand)]
        cmd: BundleCmd,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Generate an Ed25519 key pair: DIR/signing.key (0600) and DIR/{key_id}.pub.
    Init {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum BundleCmd {
    /// Validate a model with tract, run its self-test, and write a signed bundle.
    Pack(Box<PackArgs>),
}

#[derive(clap::Args)]
struct PackArgs {
    /// ONNX model file.
    #[arg(long)]
    model: PathBuf,
    /// Scoring spec (TOML).
    #[arg(long)]
    spec: PathBuf,
    /// Private signing key file.
    #[arg(long)]
    key: PathBuf,
    /// Output bundle file.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Model name (default: the spec's [model] name).
    #[arg(long)]
    name: Option<String>,
    /// Model version (default: the spec's, else 1).
    #[arg(long)]
    version: Option<u32>,
    /// Payload chunk size in bytes (default 65536, at most 131072).
    #[arg(long)]
    chunk_size: Option<u32>,
    /// Who is packing (default: $USER).
    #[arg(long)]
    created_by: Option<String>,
    /// Why.
    #[arg(long, default_value = "")]
    reason: String,
    /// Source commit of the training code.
    #[arg(long)]
    source_commit: Option<String>,
    /// Training dataset id.
    #[arg(long)]
    dataset_id: Option<String>,
    /// Training dataset SHA-256.
    #[arg(long)]
    dataset_sha256: Option<String>,
    /// Tag k=v (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Keys {
            cmd: KeysCmd::Init { out },
        } => {
            let f = outpost_bridge::keys::init(&out)?;
            println!(
                "key {} written: private {} (0600), public {}",
                f.key_id,
                f.private.display(),
                f.public.display()
            );
        }
        Cmd::Bundle {
            cmd: BundleCmd::Pack(args),
        } => {
            let PackArgs {
                model,
                spec,
                key,
                out,
                name,
                version,
                chunk_size,
                created_by,
                reason,
                source_commit,
                dataset_id,
                dataset_sha256,
                tags,
                json,
            } = *args;
            let input = PackInput {
                name,
                version,
                chunk_size,
                created_by: created_by
                    .or_else(|| std::env::var("USER").ok())
                    .unwrap_or_else(|| "unknown".into()),
                created_at: now(),
                reason,
                source_commit,
                dataset_id,
                dataset_sha256,
                tags,
                baseline: None,
            };
            let p = packaging::pack_files(&model, &spec, &key, &out, input)
                .with_context(|| format!("packing {}", model.display()))?;
            let m = &p.bundle.manifest;
            if json {
                let v = serde_json::json!({
                    "bundle": out, "digest": p.bundle.digest.to_hex(), "model": m.model.name,
                    "version": m.model.version, "size": p.bundle.bytes.len(),
                    "chunks": m.payload.chunks.len(), "self_test_samples": p.self_test.samples,
                    "self_test_max_abs_diff": p.self_test.max_abs_diff,
                });
                println!("{v}");
            } else {
                println!(
                    "packed {} v{} -> {} ({} bytes, {} chunks, digest {}); self-test {}/{} passed",
                    m.model.name,
                    m.model.version,
                    out.display(),
                    p.bundle.bytes.len(),
                    m.payload.chunks.len(),
                    p.bundle.digest,
                    p.self_test.samples,
                    p.self_test.samples
                );
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", outpost_agent::cli::error_chain(e.as_ref()));
            ExitCode::FAILURE
        }
    }
}
