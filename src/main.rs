//! `tidemark`: move a live MySQL/MariaDB database into ScyllaDB and prove, while it happens, that
//! both mean the same.
//!
//! The binary owns the CLI, the configuration file, the transports and the wiring of the stages
//! (see ARCHITECTURE.md). It is the only crate that uses `anyhow`.
//!
//! Exit status: 0 on success, 1 on error (the message names the table, key or setting and the
//! fix), 2 when `reconcile` finds actionable drift.

mod config;
mod control;
mod cutover;
mod dlq;
mod embedded;
mod explain;
mod kafka_mode;
mod ledger;
mod metrics;
mod parts;
mod preflight;
mod progress;
mod reconcile;
mod resync;
mod status;
mod target;
mod window;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "tidemark",
    version,
    about = "Live MySQL/MariaDB → ScyllaDB migration with proof"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct ConfigArg {
    /// The configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Capture, backfill and apply into the target in one process (the embedded main job).
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Exit 0 once everything up to the end of the binlog observed at start is applied.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Tail the binlog; in embedded mode, apply into the target in the same process.
    Capture {
        #[command(flatten)]
        config: ConfigArg,
        /// Exit 0 once everything up to the end of the binlog observed at start is applied.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Show the target's checkpoints and per-table row counts.
    Status {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Copy table history into the target (all tables in scope, or those named); exits 0 when
    /// every table is done. With --keys, re-read just those keys (repair).
    Backfill {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this table (`database.table`); repeat for several.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Re-read the keys in this file (JSON lines: {"table": "db.t", "key": {"id": 42}});
        /// rows that no longer exist become tombstones.
        #[arg(long)]
        keys: Option<PathBuf>,
        /// Only part i of N of the one table named (i from 0; an Indexed Job's completion
        /// index): part 0 splits the table's keys into N ranges of about equal rows and stores
        /// the split; every part reads its range and resumes from its own checkpoint.
        #[arg(long, requires = "tables", conflicts_with = "keys")]
        part: Option<tidemark_ingest::split::Part>,
    },
    /// Re-backfill tables from scratch, version-aware, and remove what the source no longer
    /// has: the recovery for a purged binlog, a TRUNCATE, a statement-logged write.
    Resync {
        #[command(flatten)]
        config: ConfigArg,
        /// This table (`database.table`); repeat for several.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Every table in scope.
        #[arg(long, conflicts_with = "tables")]
        all: bool,
    },
    /// Apply the Kafka changes topics to the target as a member of the consumer group (run N of
    /// them to scale out).
    Apply {
        #[command(flatten)]
        config: ConfigArg,
        /// Exit 0 once the consumer lag is zero on every assigned partition.
        #[arg(long)]
        until_caught_up: bool,
    },
    /// Kafka topics.
    Topics {
        #[command(subcommand)]
        command: TopicsCommand,
    },
    /// Compare source and target and classify every difference. Exit 0: no actionable drift;
    /// 2: actionable drift; 1: error.
    Reconcile {
        #[command(flatten)]
        config: ConfigArg,
        /// Only this table (`database.table`); repeat for several.
        #[arg(long = "table")]
        tables: Vec<String>,
        /// Compare this fraction of the keys (chosen by a hash of the key: the same keys each run).
        #[arg(long, default_value_t = 1.0)]
        sample: f64,
        /// Write every drift record to this file as JSON lines.
        #[arg(long)]
        output: Option<PathBuf>,
        /// Seconds a key may stay unsettled (overrides reconcile.settle_timeout_seconds).
        #[arg(long)]
        settle_timeout: Option<f64>,
        /// Re-read drifted keys from the source and send them through the pipeline.
        #[arg(long)]
        repair: bool,
        /// With --repair: print the plan, send nothing.
        #[arg(long, requires = "repair")]
        dry_run: bool,
        /// Only part i of N of the one table named, in the split its backfill in parts stored
        /// (see `tidemark backfill --part`): N reconciles together compare every key once.
        #[arg(long, requires = "tables")]
        part: Option<tidemark_ingest::split::Part>,
        /// Then check the cutover gate and store its verdict (printed after the report; the exit
        /// status stays the reconcile's).
        #[arg(long)]
        cutover_check: bool,
    },
    /// The control topic: its worker, and sending to it.
    Control {
        #[command(subcommand)]
        command: ControlCommand,
    },
    /// Prepare the target.
    Target {
        #[command(subcommand)]
        command: TargetCommand,
    },
    /// Inspect the mapping.
    Transform {
        #[command(subcommand)]
        command: TransformCommand,
    },
    /// Inspect the invariants (`[[invariant]]`) reconcile evaluates.
    Invariants {
        #[command(subcommand)]
        command: InvariantsCommand,
    },
    /// Decide, on evidence, whether the target may become authoritative, and record it.
    Cutover {
        #[command(subcommand)]
        command: CutoverCommand,
    },
    /// List the dead letters, and accept those that are not to be repaired.
    DeadLetters {
        #[command(subcommand)]
        command: DeadLettersCommand,
    },
}

#[derive(Subcommand)]
enum CutoverCommand {
    /// Check every criterion of the gate: exit 0 READY, 3 NOT READY (each failed criterion with
    /// its measured value and what to do). After a transfer, also the drift found since.
    Check {
        #[command(flatten)]
        config: ConfigArg,
        /// Print the verdict as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Only when READY: write the authority-transfer record to FILE and store it beside the
    /// checkpoints (exit 3, nothing written, when not READY).
    Record {
        #[command(flatten)]
        config: ConfigArg,
        /// Who takes the decision.
        #[arg(long)]
        by: String,
        /// Where to write the record (JSON).
        #[arg(long)]
        output: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum DeadLettersCommand {
    /// Every dead letter (the newest rejection of each key): outstanding, accepted or repaired.
    List {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Accept the dead letters of one key, or of a whole table (now and later), as not to be
    /// repaired; stored beside the checkpoints and shown in the authority-transfer record.
    Accept {
        #[command(flatten)]
        config: ConfigArg,
        /// The source table, `database.table`.
        #[arg(long)]
        table: String,
        /// The key, as the dead letter names it (e.g. '{"id":7}'); without it, the whole table.
        #[arg(long)]
        key: Option<String>,
        /// Who accepts.
        #[arg(long)]
        by: String,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum InvariantsCommand {
    /// Print each invariant as reconcile will evaluate it (both queries in canonical form, the
    /// source and target tables), checked against the tables: a misconfigured one is an error
    /// naming the invariant and the column.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum TopicsCommand {
    /// Create the changes, checkpoints (compacted), drift, dlq, control and authority (compacted)
    /// topics. Idempotent.
    Init {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum ControlCommand {
    /// Act on the control topic until stopped: start and pause/resume backfills, re-read keys,
    /// reconcile tables (Kafka transport; one worker per deployment).
    Serve {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Send one control message (JSON), e.g. '{"action":"reconcile","tables":["shop.orders"]}'.
    Send {
        #[command(flatten)]
        config: ConfigArg,
        /// The message: {"action": "start_backfill" | "pause_backfill" | "resume_backfill" |
        /// "reread_keys" | "reconcile", ...}.
        message: String,
    },
}

#[derive(Subcommand)]
enum TargetCommand {
    /// Create the target tables of every table in scope (for ScyllaDB also the keyspace and the
    /// checkpoint table), from the mapping. Idempotent.
    Init {
        #[command(flatten)]
        config: ConfigArg,
    },
}

#[derive(Subcommand)]
enum TransformCommand {
    /// Print a table's mapping, its transform_version, the target schema, and a sample row
    /// read from the source transformed.
    Explain {
        #[command(flatten)]
        config: ConfigArg,
        /// The source table, `database.table`.
        #[arg(long)]
        table: String,
    },
}

fn main() -> ExitCode {
    // mimalloc, set up for rows freed on another thread than the one that allocated them (see
    // the tidemark-allocator crate).
    tidemark_allocator::configure();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal; plain text for a file, a pipe or a pod's log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Run {
            config,
            until_caught_up,
        } => run_job(&config.config, embedded::Job::Run { until_caught_up }).await,
        Command::Capture {
            config,
            until_caught_up,
        } => run_job(&config.config, embedded::Job::Capture { until_caught_up }).await,
        Command::Backfill {
            config,
            tables,
            keys,
            part,
        } => {
            let tables = config::parse_tables(&tables, "--table")?;
            if part.is_some() && tables.len() != 1 {
                anyhow::bail!("--part splits one table: name exactly one with --table");
            }
            run_job(
                &config.config,
                embedded::Job::Backfill { tables, keys, part },
            )
            .await
        }
        Command::Resync {
            config,
            tables,
            all,
        } => {
            let tables = config::parse_tables(&tables, "--table")?;
            let config = config::Config::load(&config.config)?;
            start_metrics(&config)?;
            let control = tidemark_ingest::BackfillControl::default();
            pause_on_sigusr1(control.clone());
            print!(
                "{}",
                resync::resync(&config, tables, all, shutdown_token(), control).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { config } => {
            let config = config::Config::load(&config.config)?;
            print!("{}", status::status(&config).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Apply {
            config,
            until_caught_up,
        } => {
            let config = config::Config::load(&config.config)?;
            let kafka = config.transport.kafka().cloned().context(
                "transport.kind: `tidemark apply` consumes the Kafka changes topics; set [transport] kind = \"kafka\" (in-process mode applies inside `tidemark run`)",
            )?;
            start_metrics(&config)?;
            print!(
                "{}",
                kafka_mode::apply(&config, &kafka, until_caught_up, shutdown_token()).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Topics {
            command: TopicsCommand::Init { config },
        } => {
            let config = config::Config::load(&config.config)?;
            let kafka = config.transport.kafka().cloned().context(
                "transport.kind: `tidemark topics init` needs [transport] kind = \"kafka\"",
            )?;
            print!("{}", kafka_mode::init_topics(&config, &kafka).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Reconcile {
            config,
            tables,
            sample,
            output,
            settle_timeout,
            repair,
            dry_run,
            cutover_check,
            part,
        } => {
            let config = config::Config::load(&config.config)?;
            start_metrics(&config)?;
            let args = reconcile::ReconcileArgs {
                tables: config::parse_tables(&tables, "--table")?,
                sample,
                output,
                settle_timeout,
                repair,
                dry_run,
                part,
            };
            let (report, actionable) =
                reconcile::reconcile(&config, args, shutdown_token()).await?;
            print!("{report}");
            if cutover_check {
                print!("cutover gate:\n{}", cutover::check(&config).await?.render());
            }
            Ok(if actionable {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Control { command } => {
            let (path, message) = match &command {
                ControlCommand::Serve { config } => (&config.config, None),
                ControlCommand::Send { config, message } => (&config.config, Some(message)),
            };
            let config = config::Config::load(path)?;
            let kafka = config.transport.kafka().cloned().context(
                "transport.kind: the control topic is part of the Kafka transport; set [transport] kind = \"kafka\" (in-process mode: SIGUSR1 pauses/resumes `tidemark run`)",
            )?;
            match message {
                Some(message) => print!("{}", control::send(&kafka, message).await?),
                None => {
                    start_metrics(&config)?;
                    let cancel = shutdown_token();
                    watch_window(&config, &cancel);
                    let report = control::serve(&config, &kafka, cancel).await?;
                    println!(
                        "control worker stopped: {} actions done, {} re-reads done, {} failed, {} pause/resume signals",
                        report.done, report.rereads, report.failed, report.signals
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Target {
            command: TargetCommand::Init { config },
        } => {
            let config = config::Config::load(&config.config)?;
            print!("{}", target::target_init(&config).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Transform {
            command: TransformCommand::Explain { config, table },
        } => {
            let config = config::Config::load(&config.config)?;
            let table = table
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--table: {e}"))?;
            print!("{}", explain::explain(&config, &table).await?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Cutover {
            command: CutoverCommand::Check { config, json },
        } => {
            let config = config::Config::load(&config.config)?;
            let gate = cutover::check(&config).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&gate)?);
            } else {
                print!("{}", gate.render());
            }
            Ok(if gate.ready {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::Cutover {
            command: CutoverCommand::Record { config, by, output },
        } => {
            let config = config::Config::load(&config.config)?;
            let (text, written) = cutover::record(&config, &by, &output).await?;
            print!("{text}");
            Ok(if written {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        Command::DeadLetters {
            command: DeadLettersCommand::List { config },
        } => {
            let config = config::Config::load(&config.config)?;
            let letters = cutover::dead_letters(&config).await?;
            print!("{}", cutover::render_dead_letters(&letters));
            Ok(ExitCode::SUCCESS)
        }
        Command::DeadLetters {
            command:
                DeadLettersCommand::Accept {
                    config,
                    table,
                    key,
                    by,
                    reason,
                },
        } => {
            let config = config::Config::load(&config.config)?;
            let table = table
                .parse()
                .map_err(|e: String| anyhow::anyhow!("--table: {e}"))?;
            print!(
                "{}",
                cutover::accept(&config, &table, key, &by, &reason).await?
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Invariants {
            command: InvariantsCommand::Explain { config },
        } => {
            let config = config::Config::load(&config.config)?;
            print!("{}", explain::explain_invariants(&config).await?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Serve health and metrics when `[metrics]` is configured.
fn start_metrics(config: &config::Config) -> Result<()> {
    if let Some(m) = &config.metrics {
        metrics::serve(m)?;
        info!(listen = %m.listen, "serving /healthz, /readyz and /metrics");
    }
    Ok(())
}

/// In the one process of a deployment that lives long and serves `/metrics` (`tidemark run`,
/// or the control worker in Kafka mode): the uncertainty window and the cutover gate's verdict
/// as gauges, from what the pipeline stored.
fn watch_window(config: &config::Config, cancel: &tokio_util::sync::CancellationToken) {
    if config.metrics.is_some() {
        tokio::spawn(window::watch(config.clone(), cancel.clone()));
    }
}

async fn run_job(config: &std::path::Path, job: embedded::Job) -> Result<ExitCode> {
    let config = config::Config::load(config)?;
    start_metrics(&config)?;
    let cancel = shutdown_token();
    let control = tidemark_ingest::BackfillControl::default();
    pause_on_sigusr1(control.clone());
    if let Some(kafka) = config.transport.kafka() {
        let report = match job {
            embedded::Job::Capture { until_caught_up } => {
                kafka_mode::capture(&config, kafka, until_caught_up, cancel).await?
            }
            embedded::Job::Backfill { tables, keys, part } => {
                let reading = match (keys, part) {
                    (Some(path), _) => {
                        let mut source = tidemark_ingest::Source::connect(&config.source.url).await?;
                        kafka_mode::Reading::Keys(embedded::read_keys_file(&path, &mut source).await?)
                    }
                    (None, Some(part)) => kafka_mode::Reading::Part(tables[0], part),
                    (None, None) => kafka_mode::Reading::Tables(tables),
                };
                kafka_mode::backfill(&config, kafka, reading, cancel, control, true).await?
            }
            embedded::Job::Repair { keys } => {
                kafka_mode::backfill(
                    &config,
                    kafka,
                    kafka_mode::Reading::Keys(keys),
                    cancel,
                    control,
                    true,
                )
                .await?
            }
            embedded::Job::Run { .. } => anyhow::bail!(
                "transport.kind = \"kafka\": run the stages as separate jobs (`tidemark capture`, `tidemark backfill`, `tidemark apply`); `tidemark run` is the in-process pipeline"
            ),
        };
        print!("{report}");
        return Ok(ExitCode::SUCCESS);
    }
    watch_window(&config, &cancel);
    let report = embedded::run(&config, job, cancel, control).await?;
    info!(
        applied = report.stats.applied(),
        ignored_older = report.stats.ignored(),
        "finished"
    );
    print!("{}", report.render());
    Ok(ExitCode::SUCCESS)
}

/// SIGUSR1 pauses a running backfill; the next SIGUSR1 resumes it.
fn pause_on_sigusr1(control: tidemark_ingest::BackfillControl) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut usr1) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())
        else {
            return;
        };
        while usr1.recv().await.is_some() {
            let paused = control.toggle();
            info!(
                paused,
                "SIGUSR1: backfill {}",
                if paused { "paused" } else { "resumed" }
            );
        }
    });
}

/// A token cancelled on SIGINT or SIGTERM.
fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("install SIGTERM handler");
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        info!("shutdown requested: draining and writing the final checkpoint");
        t.cancel();
    });
    token
}
