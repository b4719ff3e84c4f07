//! The embedded pipeline: capture and backfill → in-process channel → transform → SQLite, in
//! one process.
//!
//! Capture runs as a tokio task and sends [`CaptureMessage`]s through a bounded channel (the
//! backpressure of last resort). Apply runs on two threads: one transforms, the other drains
//! whatever is transformed (up to `apply.batch_records` records) and writes records and the newest
//! transaction-boundary checkpoint in one SQLite transaction. So the stored capture position
//! never runs ahead of the rows it covers, and a `kill -9` at any instant resumes from a
//! position whose changes are all in the target; anything re-read after it is ignored by the
//! version guard or re-applied identically.
//!
//! Shutdown: on SIGINT/SIGTERM (or when `--until-caught-up` reached the end of log observed at
//! start), capture stops at the next event, drops its sender, apply drains what is queued, writes
//! the final checkpoint and returns its counts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tidemark_apply::{count_applied, count_rejected, write_batch, write_checkpoints, TargetTables};
use tidemark_ingest::{
    Backfill, BackfillCheckpoint, BackfillControl, Capture, CaptureCheckpoint, CaptureMessage,
    Scope, Source, StopAt,
};
use tidemark_schemas::{BinlogPosition, Checkpoint, Row, TableId, TargetRecord};
use tidemark_sink::{Sink, WriteStats};
use tokio::task::block_in_place;

use crate::dlq::DeadLetterOutput;
use tidemark_transform::{Rejection, ShapePlans, Transformer};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, Target};

pub use tidemark_ingest::capture::{ALL_TABLES, CAPTURE_STAGE};

use crate::target::{open_sink, read_backfill_checkpoints};

/// Which stages one invocation runs.
#[derive(Debug, Clone)]
pub enum Job {
    /// Capture and (when `[backfill] enabled`) backfill, into the target.
    Run { until_caught_up: bool },
    /// Capture only.
    Capture { until_caught_up: bool },
    /// Backfill only (all tables in scope, or these), or re-read the keys in a file.
    Backfill {
        tables: Vec<TableId>,
        keys: Option<PathBuf>,
        /// Only this part of the one table named (see `crate::parts`).
        part: Option<tidemark_ingest::split::Part>,
    },
    /// Re-read these keys from the source through the normal path (repair).
    Repair { keys: BTreeMap<TableId, Vec<Row>> },
}

/// What a run did.
#[derive(Debug, Default)]
pub struct RunReport {
    pub start: Option<BinlogPosition>,
    pub end: Option<BinlogPosition>,
    pub backfilled: BTreeMap<TableId, u64>,
    pub repaired: Option<(u64, u64)>,
    /// Resync sweeps: per table, (rows re-sent, keys tombstoned).
    pub swept: BTreeMap<TableId, (u64, u64)>,
    pub stats: WriteStats,
    /// Changes rejected by the target schema, per source table (in the dead-letter output).
    pub rejected: BTreeMap<String, u64>,
    /// Where the dead-letter output is, for the report.
    pub dead_letters: String,
}

impl RunReport {
    /// A short human-readable summary.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if self.start.is_some() {
            out.push_str(&format!(
                "captured from {} to {}\n",
                self.start.as_ref().map_or("-".into(), |p| p.to_string()),
                self.end.as_ref().map_or("-".into(), |p| p.to_string())
            ));
        }
        for (t, rows) in &self.backfilled {
            out.push_str(&format!("backfilled {t}: {rows} rows\n"));
        }
        for (t, (found, gone)) in &self.swept {
            out.push_str(&format!(
                "resync sweep {t}: {found} rows re-sent, {gone} gone from the source (tombstoned)\n"
            ));
        }
        if let Some((found, gone)) = self.repaired {
            out.push_str(&format!(
                "re-read keys: {found} rows re-sent, {gone} gone from the source (tombstoned)\n"
            ));
        }
        out.push_str(&format!(
            "{:<32} {:>12} {:>12}\n",
            "table", "applied", "ignored"
        ));
        for (t, (a, i)) in &self.stats.per_table {
            out.push_str(&format!("{t:<32} {a:>12} {i:>12}\n"));
        }
        out.push_str(&format!(
            "{:<32} {:>12} {:>12}\n",
            "total",
            self.stats.applied(),
            self.stats.ignored()
        ));
        for (t, n) in &self.rejected {
            out.push_str(&format!(
                "rejected {t}: {n} changes (schema_rejection; see {})\n",
                self.dead_letters
            ));
        }
        out
    }
}

/// Read a keys file: one JSON object per line, `{"table": "db.t", "key": {"id": 42}}`, typed
/// against each table's key columns.
pub async fn read_keys_file(
    path: &Path,
    source: &mut Source,
) -> Result<BTreeMap<TableId, Vec<Row>>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the keys file {}", path.display()))?;
    let mut schemas = BTreeMap::new();
    let mut out: BTreeMap<TableId, Vec<Row>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let (table, key) = tidemark_ingest::backfill::parse_key_line(line)
            .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        if let std::collections::btree_map::Entry::Vacant(e) = schemas.entry(table) {
            let schema = source.load_schema(&table).await?;
            e.insert(schema);
        }
        let typed = tidemark_ingest::backfill::key_from_json(&schemas[&table], &key)
            .map_err(|e| anyhow::anyhow!("{}: table {table}: {e}", at()))?;
        out.entry(table).or_default().push(typed);
    }
    Ok(out)
}

/// Run a job into the embedded target until it is done, caught up, or cancelled.
pub async fn run(
    config: &Config,
    job: Job,
    cancel: CancellationToken,
    control: BackfillControl,
) -> Result<RunReport> {
    let (mut sink, mut dlq) = block_in_place(|| open_sink(config))?;
    let scope = Scope::from_config(&config.source)?;
    let mut source = Source::connect(&config.source.url).await?;
    source.check_binlog_settings().await?;
    // A job of named tables only (a backfill of some tables, a repair) needs only those
    // described; anything that captures needs every table in scope.
    let only: Option<Vec<TableId>> = match &job {
        Job::Backfill {
            tables, keys: None, ..
        } if !tables.is_empty() => Some(tables.clone()),
        Job::Backfill { keys: Some(_), .. } => Some(Vec::new()),
        Job::Repair { keys } => Some(keys.keys().copied().collect()),
        _ => None,
    };
    let (all_tables, _) = crate::preflight::checked_scope_for(
        &mut source,
        &scope,
        &config.transformer()?,
        only.as_deref(),
    )
    .await?;
    let identity = source.info.identity;

    let (with_capture, until, backfill_tables, keys) = match &job {
        Job::Run { until_caught_up } => (
            true,
            *until_caught_up,
            if config.backfill.enabled {
                all_tables.clone()
            } else {
                Vec::new()
            },
            None,
        ),
        Job::Capture { until_caught_up } => (true, *until_caught_up, Vec::new(), None),
        Job::Backfill { tables, keys, .. } => {
            let tables = if tables.is_empty() {
                all_tables.clone()
            } else {
                scope.restrict(tables)?;
                tables.clone()
            };
            let keys = match keys {
                Some(path) => Some(read_keys_file(path, &mut source).await?),
                None => None,
            };
            (
                false,
                false,
                if keys.is_some() { Vec::new() } else { tables },
                keys,
            )
        }
        Job::Repair { keys } => (false, false, Vec::new(), Some(keys.clone())),
    };

    let (tx, rx) = mpsc::channel(config.capture.queue_capacity.max(1));
    tokio::spawn(crate::metrics::watch_queue(
        "apply",
        tx.downgrade(),
        cancel.clone(),
    ));
    let stop_later = watch::channel(None::<BinlogPosition>);
    let failed = cancel.child_token();

    // Capture's start is fixed before the backfill reads anything (see ingest::backfill).
    let mut capture_task = None;
    let mut lag_watch: Option<tokio::task::JoinHandle<()>> = None;
    // Re-reads of tables whose schema changed (see `tidemark_ingest::ResyncMarker`): those left
    // over from before a restart, then each one capture asks for as it passes a schema change.
    let mut ddl_rereads: Vec<(TableId, tidemark_ingest::ResyncMarker)> = Vec::new();
    let mut reread_rx: Option<
        tokio::sync::mpsc::UnboundedReceiver<(TableId, BinlogPosition, bool)>,
    > = None;
    let mut start = None;
    if with_capture {
        let checkpoint = block_in_place(|| sink.checkpoint(CAPTURE_STAGE, ALL_TABLES))?
            .map(|text| {
                serde_json::from_str::<CaptureCheckpoint>(&text).with_context(|| {
                    format!("the stored capture checkpoint `{text}` is unreadable")
                })
            })
            .transpose()?;
        let capture_source = Source::connect(&config.source.url).await?;
        let stored = block_in_place(|| sink.checkpoints())?;
        let markers = crate::resync::markers_in_scope(&stored, &scope)?;
        // Re-reads a schema change asked for before a restart, and not done yet (those of tables
        // dropped or renamed away since included).
        ddl_rereads.extend(
            markers
                .iter()
                .filter(|(t, m)| !m.sweep_done && (!m.rebackfill || !backfill_tables.contains(t)))
                .map(|(t, m)| (*t, m.clone())),
        );
        let (reread_tx, rx) = tokio::sync::mpsc::unbounded_channel();
        reread_rx = Some(rx);
        let mut capture = Capture::new(
            capture_source,
            scope.clone(),
            config.source.server_id,
            config.capture.clone(),
        )
        .with_resynced(crate::resync::capture_skips(&markers)?)
        .with_reread(reread_tx)
        .with_known_tables(
            all_tables
                .iter()
                .copied()
                .chain(crate::resync::described_tables(&stored, &scope)),
        );
        let from = capture.resolve_start(checkpoint.as_ref()).await?;
        if checkpoint.is_none() {
            // Durable before the backfill reads anything: a restart must resume capture here,
            // not at a later end of log, or the changes in between would be lost.
            let checkpoint = CaptureCheckpoint::new(&from, identity, None).to_checkpoint();
            block_in_place(|| sink.write(&[], &[checkpoint]))?;
        }
        let stop = match (until, backfill_tables.is_empty()) {
            (false, _) => StopAt::Never,
            (true, true) => StopAt::Position(source.end_of_log().await?),
            (true, false) => StopAt::Later(stop_later.1.clone()),
        };
        info!(start = %from, resumed = checkpoint.is_some(), "starting capture");
        start = Some(from);
        let tx = tx.clone();
        let failed = failed.clone();
        lag_watch = Some(tokio::spawn(crate::metrics::watch_lag_bytes(
            config.source.url.clone(),
            cancel.clone(),
        )));
        capture_task = Some(tokio::spawn(async move {
            let result = capture.run(from, stop, tx, failed.clone()).await;
            if result.is_err() {
                failed.cancel();
            }
            result
        }));
    } else if block_in_place(|| sink.checkpoint(CAPTURE_STAGE, ALL_TABLES))?.is_none() {
        warn!("no capture position is recorded in this target: changes made to the source during this backfill reach the target only if a capture runs from a position before it began");
    }

    let checkpoints = block_in_place(|| read_backfill_checkpoints(&mut *sink, &backfill_tables))?;
    let resyncs = block_in_place(|| crate::resync::read_markers(&mut *sink, &backfill_tables))?;
    crate::metrics::set_ready();
    let transformer = config.transformer()?;
    let apply_cfg = config.apply.clone();
    let apply_failed = failed.clone();
    let apply = tokio::task::spawn_blocking(move || {
        apply_loop(
            &mut *sink,
            &mut *dlq,
            rx,
            &transformer,
            &identity,
            &apply_cfg,
            &apply_failed,
        )
    });

    let mut backfill = Backfill::new(source, config.backfill.clone(), control)?;
    let display = crate::progress::spawn(
        "backfill",
        backfill.progress(),
        config.backfill.progress_seconds,
        cancel.clone(),
    );
    let mut report = RunReport {
        start,
        dead_letters: match config.target()? {
            Target::Sqlite { .. } => "the _tm_dlq table".into(),
            Target::Scylla {
                dead_letter_path, ..
            } => dead_letter_path.display().to_string(),
        },
        ..RunReport::default()
    };
    let backfill_result: Result<()> = async {
        if let Some(keys) = &keys {
            let (mut found, mut gone) = (0, 0);
            for (table, typed) in keys {
                scope.restrict(std::slice::from_ref(table))?;
                let (f, g) = backfill.reread_keys(table, typed, &tx).await?;
                found += f;
                gone += g;
            }
            report.repaired = Some((found, gone));
        } else if let Job::Backfill {
            part: Some(part), ..
        } = &job
        {
            // One part of one table: its own checkpoint and range; the re-reads of a resync are
            // a whole-table backfill's.
            let table = backfill_tables[0];
            let (mut reader, _) = block_in_place(|| open_sink(config))?;
            let stored = crate::parts::Stored::Target(&mut *reader);
            let rows =
                crate::parts::backfill_part(&mut backfill, &table, *part, stored, &tx, &failed)
                    .await?;
            report.backfilled.insert(table, rows);
        } else if !backfill_tables.is_empty() {
            report.backfilled = if config.backfill.parts > 1 {
                let (mut reader, _) = block_in_place(|| open_sink(config))?;
                let stored = crate::parts::Stored::Target(&mut *reader);
                crate::parts::backfill_in_parts(
                    &mut backfill,
                    &backfill_tables,
                    stored,
                    &tx,
                    &failed,
                )
                .await?
            } else {
                backfill
                    .run(&backfill_tables, &checkpoints, &tx, &failed)
                    .await?
            };
            for (table, marker) in resyncs.iter().filter(|(_, m)| !m.sweep_done) {
                if failed.is_cancelled() {
                    break;
                }
                let (found, gone) =
                    sweep_resynced(config, &mut backfill, table, marker, &tx, true, &failed)
                        .await?;
                report.swept.insert(*table, (found, gone));
            }
        }
        Ok(())
    }
    .await;
    display.abort();
    if backfill_result.is_err() {
        failed.cancel();
    } else if until && !backfill_tables.is_empty() {
        // Everything changed while the backfill ran is captured up to here.
        let end = backfill.source().end_of_log().await?;
        stop_later.0.send_replace(Some(end));
    }
    // The re-reads schema changes ask for, until capture ends (its end closes the channel).
    let reread_result: Result<()> = async {
        let Some(mut requests) = reread_rx.take().filter(|_| backfill_result.is_ok()) else {
            return Ok(());
        };
        loop {
            for (table, marker) in std::mem::take(&mut ddl_rereads) {
                if failed.is_cancelled() {
                    return Ok(());
                }
                let exists = backfill.source().table_exists(&table).await?;
                if marker.rebackfill && exists {
                    // Backfilled again from scratch (capture skips its changes before `from`).
                    let fresh = BTreeMap::from([(table, BackfillCheckpoint::default())]);
                    let rows = backfill.run(&[table], &fresh, &tx, &failed).await?;
                    *report.backfilled.entry(table).or_default() +=
                        rows.get(&table).copied().unwrap_or(0);
                }
                let waits = exists && (marker.rebackfill || backfill_tables.contains(&table));
                let (found, gone) =
                    sweep_resynced(config, &mut backfill, &table, &marker, &tx, waits, &failed)
                        .await?;
                let e = report.swept.entry(table).or_default();
                e.0 += found;
                e.1 += gone;
            }
            let next = tokio::select! {
                _ = failed.cancelled() => None,
                next = requests.recv() => next,
            };
            let Some((table, from, rebackfill)) = next else {
                return Ok(());
            };
            ddl_rereads.push((
                table,
                tidemark_ingest::ResyncMarker {
                    from: from.to_string(),
                    sweep_done: false,
                    rebackfill,
                },
            ));
        }
    }
    .await;
    if reread_result.is_err() {
        failed.cancel();
    }
    drop(tx);
    let captured = match capture_task {
        Some(task) => Some(task.await.context("the capture task panicked")?),
        None => None,
    };
    if let Some(watch) = lag_watch {
        watch.abort();
    }
    // Apply's own error first: a backfill or re-read that stopped because apply did only says
    // "apply stopped", never why.
    let totals = apply.await.context("the apply thread panicked")??;
    backfill_result?;
    reread_result?;
    if let Some(captured) = captured {
        report.end = Some(captured?);
    }
    report.stats = totals.stats;
    report.rejected = totals.rejected;
    Ok(report)
}

/// A capture message after the transform stage, in the order it arrived.
enum Transformed {
    /// A table's first description (or a new one after DDL): create or widen its target table.
    Table(tidemark_schemas::TargetSchema),
    Changes {
        records: Vec<TargetRecord>,
        rejections: Vec<Rejection>,
    },
    Checkpoint(Checkpoint),
    Commit {
        position: BinlogPosition,
        gtid: Option<String>,
        source_time: Option<u32>,
    },
}

/// Transformed messages in flight between the two apply stages; each holds up to one capture
/// message's changes (≤ 256 rows from the backfill).
const TRANSFORMED_QUEUE: usize = 16;

/// The sweep of a resynced table whose backfill is done (see [`crate::resync`]): wait until the
/// backfill's last checkpoint is in the target (so its rows are), re-read the keys of the target
/// rows it did not rewrite, and mark the sweep done after them. Returns (rows re-sent, keys
/// tombstoned).
async fn sweep_resynced(
    config: &Config,
    backfill: &mut Backfill,
    table: &TableId,
    marker: &tidemark_ingest::ResyncMarker,
    tx: &mpsc::Sender<CaptureMessage>,
    wait_for_backfill: bool,
    cancel: &CancellationToken,
) -> Result<(u64, u64)> {
    let from = marker.from_position()?;
    let (mut reader, _) = block_in_place(|| open_sink(config))?;
    // Each wait below is `false` when a shutdown interrupts it: the re-read runs on the next start.
    let backfill_written = !wait_for_backfill
        || until_in_target(tx, cancel, || {
            let done = block_in_place(|| read_backfill_checkpoints(&mut *reader, &[*table]))?
                .get(table)
                .is_some_and(|cp| cp.done);
            Ok(done.then_some(()).ok_or_else(|| {
                format!("the backfill of {table} was written; its re-read runs on the next start")
            }))
        })
        .await?;
    if !backfill_written {
        return Ok((0, 0));
    }
    // Observed before the look at the table: if it is missing, it was at this position too
    // (see `Backfill::tombstone_keys`).
    let observed = backfill.source().end_of_log().await?;
    let schema = match backfill.source().load_schema(table).await {
        Ok(schema) => Some(schema),
        Err(tidemark_ingest::Error::TableNotFound { .. }) => None,
        Err(e) => return Err(e.into()),
    };
    // After a schema change: every change before it must be in the target first, or a row
    // written before it but applied after the scan would keep the old shape's values (or, of a
    // table gone since, stay live).
    let changes_before_written = (marker.rebackfill && schema.is_some())
        || until_in_target(tx, cancel, || {
            let applied = block_in_place(|| reader.checkpoint(CAPTURE_STAGE, ALL_TABLES))?
                .and_then(|text| serde_json::from_str::<CaptureCheckpoint>(&text).ok())
                .and_then(|cp| cp.position.parse::<BinlogPosition>().ok());
            Ok(applied.filter(|p| *p >= from).map(drop).ok_or_else(|| {
                format!("the schema change of {table} at {from} was written; its re-read runs on the next start")
            }))
        })
        .await?;
    if !changes_before_written {
        return Ok((0, 0));
    }
    // A table the source no longer has (dropped, or renamed away: a rename's new name is
    // backfilled on its own) is traced back with the last description the target kept of it.
    let gone_from_source = schema.is_none();
    let schema = match schema {
        Some(schema) => schema,
        None => {
            match block_in_place(|| crate::resync::stored_source_schema(&mut *reader, table))? {
                Some(schema) => schema,
                None => {
                    // Never described to this target: it holds no row of it.
                    info!(table = %table, "table gone from the source; the target holds none of its rows");
                    mark_swept(tx, table, marker).await;
                    return Ok((0, 0));
                }
            }
        }
    };
    let plan = config.transformer()?.plan(&schema)?;
    let server = backfill.source().info.identity;
    let (keys, untraceable) =
        block_in_place(|| crate::resync::sweep_keys(&mut *reader, &plan, server, &from))?;
    block_in_place(|| drop(reader));
    if untraceable > 0 {
        warn!(table = %table, rows = untraceable, "target rows whose key no source key maps to were left alone; `tidemark reconcile` reports them as extra");
    }
    let (found, gone) = if gone_from_source {
        warn!(table = %table, rows = keys.len(), "table dropped or renamed away on the source: its rows in the target are tombstoned");
        (
            0,
            backfill
                .tombstone_keys(std::sync::Arc::new(schema), &keys, observed, tx)
                .await?,
        )
    } else {
        info!(table = %table, keys = keys.len(), "resync sweep: re-reading the target rows the backfill did not rewrite");
        backfill.reread_keys(table, &keys, tx).await?
    };
    mark_swept(tx, table, marker).await;
    Ok((found, gone))
}

/// Sends `marker` of `table` marked swept, behind the re-read rows sent before it (written in
/// the same transaction as the last of them, or after).
async fn mark_swept(
    tx: &mpsc::Sender<CaptureMessage>,
    table: &TableId,
    marker: &tidemark_ingest::ResyncMarker,
) {
    let swept = tidemark_ingest::ResyncMarker {
        sweep_done: true,
        ..marker.clone()
    };
    let _ = tx
        .send(CaptureMessage::Checkpoint(swept.to_checkpoint(table)))
        .await;
}

/// Wait until `ready` finds what it looks for in the target (`Ok(Ok(()))`): `true`; while it
/// does not (`Ok(Err(what))`), look again every 100 ms, unless apply stopped (then: apply
/// stopped before `what`) or `cancel` asks for a shutdown (`false`: the caller leaves its work
/// for the next start).
async fn until_in_target(
    tx: &mpsc::Sender<CaptureMessage>,
    cancel: &CancellationToken,
    mut ready: impl FnMut() -> Result<std::result::Result<(), String>>,
) -> Result<bool> {
    loop {
        match ready()? {
            Ok(()) => return Ok(true),
            Err(what) if tx.is_closed() => anyhow::bail!("apply stopped before {what}"),
            Err(_) if cancel.is_cancelled() => return Ok(false),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Drain capture messages into the sink until the channel closes.
///
/// Two stages on two threads, joined by a bounded queue that keeps the order of the messages:
/// the transform stage turns changes into records (key text, digest, lineage), the write stage
/// batches records with the newest checkpoints into one sink transaction. A bulk backfill keeps
/// both busy at once; either stage's error stops the other, and a write stage's error cancels
/// `failed`, which stops capture, the backfill and the re-reads that feed the channel.
fn apply_loop(
    sink: &mut dyn Sink,
    dlq: &mut dyn DeadLetterOutput,
    rx: mpsc::Receiver<CaptureMessage>,
    transformer: &Transformer,
    server: &str,
    cfg: &crate::config::ApplyConfig,
    failed: &CancellationToken,
) -> Result<ApplyTotals> {
    let (staged_tx, staged_rx) = std::sync::mpsc::sync_channel(TRANSFORMED_QUEUE);
    std::thread::scope(|threads| {
        let transform = std::thread::Builder::new()
            .name("tidemark-transform".into())
            .spawn_scoped(threads, move || transform_stage(rx, transformer, staged_tx))
            .context("starting the transform thread")?;
        let batch = ApplyBatch::default();
        let written = write_stage(sink, dlq, staged_rx, batch, server, cfg);
        // The write stage's end dropped its receiver: the transform stage stops at its next send.
        // It may be waiting for its input instead, which stays open while capture, a backfill or
        // a re-read feeds it (a re-read waits for a checkpoint only this stage writes): a
        // failure is said to them at once, so that they stop and close it.
        if written.is_err() {
            failed.cancel();
        }
        let transformed = transform
            .join()
            .map_err(|_| anyhow::anyhow!("the transform thread panicked"))?;
        let totals = written?;
        transformed?;
        Ok(totals)
    })
}

/// The transform stage: capture messages → [`Transformed`], in order.
fn transform_stage(
    mut rx: mpsc::Receiver<CaptureMessage>,
    transformer: &Transformer,
    out: std::sync::mpsc::SyncSender<Transformed>,
) -> Result<()> {
    let mut plans = ShapePlans::default();
    while let Some(msg) = rx.blocking_recv() {
        let staged = match msg {
            CaptureMessage::Schema(source_schema) => {
                let plan = transformer.plan(&source_schema)?;
                let target = plan.target_schema().clone();
                plans.insert(plan);
                if out.send(Transformed::Table(target)).is_err() {
                    return Ok(());
                }
                // Kept in the target beside the rows: once the source drops the table, this is
                // what its rows there are traced back and tombstoned with.
                Transformed::Checkpoint(crate::resync::source_schema_checkpoint(&source_schema))
            }
            CaptureMessage::Changes(changes) => {
                let mut records = Vec::with_capacity(changes.len());
                let mut rejections = Vec::new();
                for change in changes {
                    let plan = plans.for_change(&change).with_context(|| {
                        format!(
                            "no table description arrived for {} before its changes",
                            change.table
                        )
                    })?;
                    match plan.apply_owned(change) {
                        Ok(record) => records.push(record),
                        Err(rejection) => rejections.push(*rejection),
                    }
                }
                Transformed::Changes {
                    records,
                    rejections,
                }
            }
            CaptureMessage::Checkpoint(cp) => Transformed::Checkpoint(cp),
            CaptureMessage::Commit {
                position,
                gtid,
                source_time,
            } => Transformed::Commit {
                position,
                gtid,
                source_time,
            },
        };
        if out.send(staged).is_err() {
            // The write stage stopped; its error is the one reported.
            return Ok(());
        }
    }
    Ok(())
}

/// The write stage: batches of transformed messages → one sink transaction each.
fn write_stage(
    sink: &mut dyn Sink,
    dlq: &mut dyn DeadLetterOutput,
    rx: std::sync::mpsc::Receiver<Transformed>,
    mut batch: ApplyBatch,
    server: &str,
    cfg: &crate::config::ApplyConfig,
) -> Result<ApplyTotals> {
    let mut totals = ApplyTotals::default();
    let progress_every = Duration::from_secs(cfg.progress_seconds.max(1));
    let mut last_progress = Instant::now();
    let mut since_progress = 0u64;
    let mut position = String::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Transformed::Table(schema) => {
                    batch.flush(sink, dlq, &mut totals, cfg)?;
                    batch
                        .tables
                        .ensure(sink, schema, cfg.retry_duration())
                        .map_err(|e| with_retry_context(e, cfg))?;
                }
                Transformed::Changes {
                    mut records,
                    mut rejections,
                } => {
                    batch.records.append(&mut records);
                    batch.rejections.append(&mut rejections);
                }
                Transformed::Checkpoint(cp) => {
                    batch
                        .checkpoints
                        .insert((cp.stage.clone(), cp.scope.clone()), cp);
                }
                Transformed::Commit {
                    position: p,
                    gtid,
                    source_time,
                } => {
                    crate::metrics::note_captured(p);
                    position = p.to_string();
                    let cp = CaptureCheckpoint::new(&p, server, gtid)
                        .at_source_time(source_time)
                        .to_checkpoint();
                    batch
                        .checkpoints
                        .insert((cp.stage.clone(), cp.scope.clone()), cp);
                }
            }
            if batch.records.len() < cfg.batch_records {
                next = rx.try_recv().ok();
            }
        }
        since_progress += batch.records.len() as u64;
        batch.flush(sink, dlq, &mut totals, cfg)?;
        if last_progress.elapsed() >= progress_every {
            let rate = since_progress as f64 / last_progress.elapsed().as_secs_f64();
            info!(
                applied = totals.stats.applied(),
                ignored_older = totals.stats.ignored(),
                rejected = totals.rejected.values().sum::<u64>(),
                rows_per_s = rate as u64,
                position = %position,
                "apply progress"
            );
            last_progress = Instant::now();
            since_progress = 0;
        }
    }
    batch.flush(sink, dlq, &mut totals, cfg)?;
    Ok(totals)
}

/// What apply did: sink counts and rejections per source table.
#[derive(Debug, Default)]
pub struct ApplyTotals {
    pub stats: WriteStats,
    pub rejected: BTreeMap<String, u64>,
}

/// Records, rejections and the newest checkpoint of each stage and scope, waiting for one target
/// transaction.
#[derive(Default)]
struct ApplyBatch {
    records: Vec<TargetRecord>,
    rejections: Vec<Rejection>,
    checkpoints: BTreeMap<(String, String), Checkpoint>,
    /// The target tables announced to the sink, never narrowed.
    tables: TargetTables,
}

impl ApplyBatch {
    fn flush(
        &mut self,
        sink: &mut dyn Sink,
        dlq: &mut dyn DeadLetterOutput,
        totals: &mut ApplyTotals,
        cfg: &crate::config::ApplyConfig,
    ) -> Result<()> {
        if self.records.is_empty() && self.checkpoints.is_empty() && self.rejections.is_empty() {
            return Ok(());
        }
        // Rejections first: the checkpoint below must never be ahead of them.
        dlq.record(&self.rejections)?;
        for r in self.rejections.drain(..) {
            count_rejected(&r);
            *totals.rejected.entry(r.source_table).or_default() += 1;
        }
        let checkpoints: Vec<Checkpoint> = std::mem::take(&mut self.checkpoints)
            .into_values()
            .collect();
        let retry_for = cfg.retry_duration();
        let written = write_batch(sink, &self.tables, &self.records, &checkpoints, retry_for)
            .map_err(|e| with_retry_context(e, cfg))?;
        let mut stats = written.stats;
        // Records the target refused: in the dead-letter output before the checkpoints that
        // pass them are written.
        for (_, rejection) in written.refused {
            dlq.record(std::slice::from_ref(&rejection))?;
            count_rejected(&rejection);
            *totals.rejected.entry(rejection.source_table).or_default() += 1;
        }
        if written.checkpoints_pending {
            stats.merge(
                &write_checkpoints(sink, &checkpoints, retry_for)
                    .map_err(|e| with_retry_context(e, cfg))?,
            );
        }
        count_applied(&stats);
        totals.stats.merge(&stats);
        self.records.clear();
        Ok(())
    }
}

/// A transient error that outlasted `apply.retry_seconds` says so.
fn with_retry_context(e: tidemark_sink::Error, cfg: &crate::config::ApplyConfig) -> anyhow::Error {
    let transient = e.is_transient();
    let e = anyhow::Error::new(e);
    if transient {
        e.context(format!(
            "the target refused the write for apply.retry_seconds ({} s)",
            cfg.retry_seconds
        ))
    } else {
        e
    }
}
