//! `outpost-sim`: thin binary over the simulator library.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "outpost-sim", version, about = "Outpost fleet simulator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The whole loop on one machine: bridge + 20 gateways, rollouts, an outage, a bad release.
    Demo {
        /// Gateways.
        #[arg(long, default_value_t = 20)]
        devices: usize,
        /// Seed (every run is reproducible from it).
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Keep the bridge running after the summary.
        #[arg(long)]
        keep_running: bool,
        /// Print the report as JSON at the end.
        #[arg(long)]
        json: bool,
        /// Keep all data here (bridge database, bundles, gateways' stores) for inspection.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
    },
    /// Benchmark: N gateways converge on a ~5 MB bundle (time, bytes per device, bridge CPU).
    BenchScale {
        /// Gateways.
        #[arg(long, default_value_t = 1000)]
        devices: usize,
        /// Bundle size, MB.
        #[arg(long, default_value_t = 5.0)]
        bundle_mb: f64,
        /// External broker mqtt://host:port (large fleets); default: the embedded one.
        #[arg(long)]
        broker: Option<String>,
    },
    /// Run a scenario file (TOML); exit 1 if an expectation fails.
    Run {
        /// Scenario file.
        file: std::path::PathBuf,
        /// Override its seed.
        #[arg(long)]
        seed: Option<u64>,
    },
}

fn main() -> ExitCode {
    outpost_agent::cli::quiet_on_closed_stdout();
    // rumqttd logs every client disconnect at ERROR; keep it quiet unless asked for.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "error,rumqttd=off".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match Cli::parse().cmd {
        Cmd::Demo {
            devices,
            seed,
            keep_running,
            json,
            data_dir,
        } => {
            let o = outpost_sim::demo::DemoOptions {
                devices,
                seed,
                keep_running,
                offline: 5.min(devices.saturating_sub(1)),
                offline_for: Duration::from_secs(12),
                verbose: true,
                human_on_stderr: json,
                data_dir,
            };
            match rt.block_on(outpost_sim::demo::run(o)) {
                Ok(r) => {
                    if json {
                        println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    }
                    if r.ok() {
                        eprintln!(
                            "demo ok: lost 0 records; v1 {}; v2 {}; v3 on {}/{} gateways; {} models per gateway ({} {} on {}/{})",
                            r.v1_state,
                            r.v2_state,
                            r.on_v3,
                            devices,
                            r.min_models_per_gateway,
                            outpost_sim::demo::RIDGE,
                            r.ridge_state,
                            r.ridge_unchanged,
                            devices
                        );
                        ExitCode::SUCCESS
                    } else {
                        eprintln!(
                            "demo FAILED: lost {}; v1 {}; v2 {}; v3 on {}/{}; models per gateway {}; {} {} on {}/{}, answered {:?}",
                            r.lost,
                            r.v1_state,
                            r.v2_state,
                            r.on_v3,
                            devices,
                            r.min_models_per_gateway,
                            outpost_sim::demo::RIDGE,
                            r.ridge_state,
                            r.ridge_unchanged,
                            devices,
                            r.ridge_served
                        );
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::BenchScale {
            devices,
            bundle_mb,
            broker,
        } => {
            let broker = match broker.as_deref().map(parse_mqtt_url) {
                None => None,
                Some(Some(hp)) => Some(hp),
                Some(None) => {
                    eprintln!("error: --broker: expected mqtt://HOST:PORT");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(outpost_sim::bench::run(outpost_sim::bench::ScaleOptions {
                devices,
                bundle_mb,
                broker,
            })) {
                Ok(r) => {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                    if r.converged == r.devices {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Run { file, seed } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            let mut s = match outpost_sim::scenario::Scenario::parse(&text) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    return ExitCode::from(2);
                }
            };
            if let Some(seed) = seed {
                s.seed = seed;
            }
            match rt.block_on(outpost_sim::scenario::run(&s, true)) {
                Ok(o) if o.failed.is_empty() => ExitCode::SUCCESS,
                Ok(o) => {
                    eprintln!("expectations failed:\n  {}", o.failed.join("\n  "));
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// `mqtt://host:port` → (host, port).
fn parse_mqtt_url(u: &str) -> Option<(String, u16)> {
    let (h, p) = u.strip_prefix("mqtt://")?.rsplit_once(':')?;
    Some((h.to_owned(), p.parse().ok()?)).filter(|(h, _)| !h.is_empty())
}
