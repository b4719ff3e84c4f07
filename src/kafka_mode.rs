//! The stages as separate jobs with Kafka between them (`[transport] kind = "kafka"`).
//!
//! - `capture` and `backfill` send their messages through the same bounded channel as in
//!   embedded mode, into a [`KafkaPublisher`]: changes to `<prefix>.changes.<db>.<table>` with the
//!   idempotent producer, position markers into every partition, and checkpoints into the
//!   compacted checkpoints topic only after everything before them was acknowledged. On start they
//!   resume from the checkpoints topic.
//! - `apply` is a consumer-group member: it transforms and writes to the target, and commits
//!   offsets only after the sink acknowledged; run N of them to scale out.
//! - A running backfill also listens on the control topic: `pause_backfill` / `resume_backfill`.
//!
//! Capture's start position is stored in the checkpoints topic before a backfill can begin, as in
//! embedded mode, so a restart never starts capture after history the backfill already copied.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tidemark_ingest::split::Part;
use tidemark_ingest::{
    Backfill, BackfillControl, Capture, CaptureCheckpoint, Scope, Source, StopAt,
};
use tidemark_kafka::{
    topics_init, ApplyOptions, CheckpointStore, ControlListener, ControlMessage, KafkaApplier,
    KafkaConfig, KafkaPublisher, PublishReport,
};
use tidemark_schemas::{Row, TableId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::target::open_sink;

fn render_publish(report: &PublishReport) -> String {
    let mut out = String::new();
    for (table, n) in &report.changes {
        out.push_str(&format!("published {table}: {n} changes\n"));
    }
    out.push_str(&format!(
        "markers {}, checkpoints {}, last position {}\n",
        report.markers,
        report.checkpoints,
        report
            .last_position
            .as_ref()
            .map_or("-".into(), |p| p.to_string())
    ));
    out
}

/// The channel into `publisher` (of `capture.queue_capacity`, its depth watched as
/// `tidemark_queue_depth{queue="publish"}`), and the task publishing what it receives.
fn start_publishing(
    config: &Config,
    publisher: KafkaPublisher,
    cancel: &CancellationToken,
) -> (
    mpsc::Sender<tidemark_ingest::CaptureMessage>,
    tokio::task::JoinHandle<tidemark_kafka::Result<PublishReport>>,
) {
    let (tx, rx) = mpsc::channel(config.capture.queue_capacity.max(1));
    tokio::spawn(crate::metrics::watch_queue(
        "publish",
        tx.downgrade(),
        cancel.clone(),
    ));
    (tx, tokio::spawn(publisher.run(rx)))
}

/// `tidemark topics init`: create the topics of every table in scope (idempotent).
pub async fn init_topics(config: &Config, kafka: &KafkaConfig) -> Result<String> {
    let scope = Scope::from_config(&config.source)?;
    let mut source = Source::connect(&config.source.url).await?;
    let tables = source.tables_in_scope(&scope).await?;
    let statuses = topics_init(kafka, &tables).await?;
    let mut out = String::new();
    for s in statuses {
        out.push_str(&format!(
            "{:<60} {:>3} partitions {}\n",
            s.name,
            s.partitions,
            if s.created { "created" } else { "exists" }
        ));
    }
    Ok(out)
}

/// `tidemark capture` in Kafka mode.
pub async fn capture(
    config: &Config,
    kafka: &KafkaConfig,
    until_caught_up: bool,
    cancel: CancellationToken,
) -> Result<String> {
    let scope = Scope::from_config(&config.source)?;
    let mut source = Source::connect(&config.source.url).await?;
    source.check_binlog_settings().await?;
    let (tables, _) =
        crate::preflight::checked_scope(&mut source, &scope, &config.transformer()?).await?;
    let identity = source.info.identity;
    let mut store = CheckpointStore::load(kafka).await?;
    let checkpoint = store.capture_checkpoint()?;
    let mut markers = BTreeMap::new();
    for t in &tables {
        if let Some(text) = store.get(tidemark_ingest::RESYNC_STAGE, &t.to_string()) {
            let marker: tidemark_ingest::ResyncMarker = serde_json::from_str(text)
                .with_context(|| format!("the resync checkpoint of {t} is unreadable: `{text}`"))?;
            markers.insert(*t, marker);
        }
    }
    let described = described_tables(&store, &scope);
    let mut capture = Capture::new(
        source,
        scope,
        config.source.server_id,
        config.capture.clone(),
    )
    .with_resynced(crate::resync::capture_skips(&markers)?)
    .with_known_tables(tables.iter().copied().chain(described));
    let from = capture.resolve_start(checkpoint.as_ref()).await?;
    if checkpoint.is_none() {
        // Durable before any backfill reads: see the module doc.
        store
            .store(&CaptureCheckpoint::new(&from, identity, None).to_checkpoint())
            .await?;
    }
    let stop = if until_caught_up {
        StopAt::Position(capture.source().end_of_log().await?)
    } else {
        StopAt::Never
    };
    info!(start = %from, resumed = checkpoint.is_some(), "starting capture into Kafka");
    let publisher = KafkaPublisher::new(kafka, identity, &tables)
        .await?
        .with_start(from, None);
    let (tx, publishing) = start_publishing(config, publisher, &cancel);
    let lag = tokio::spawn(crate::metrics::watch_lag_bytes(
        config.source.url.clone(),
        cancel.clone(),
    ));
    let captured = capture.run(from, stop, tx, cancel).await;
    lag.abort();
    let published = publishing.await.context("the publisher task panicked")?;
    let end = captured?;
    let report = published?;
    Ok(format!(
        "captured from {from} to {end}\n{}",
        render_publish(&report)
    ))
}

/// What a Kafka-mode backfill reads.
pub enum Reading {
    /// Every table in scope (empty), or these.
    Tables(Vec<TableId>),
    /// One part of one table's split (see [`crate::parts`]).
    Part(TableId, Part),
    /// These keys again (repair).
    Keys(BTreeMap<TableId, Vec<Row>>),
}

/// `tidemark backfill` in Kafka mode: every table in scope (or those named), one part of a
/// table, or re-read keys. With `follow_control_topic`, the backfill also obeys pause/resume sent
/// to the control topic (the control worker, which reads that topic itself, drives `control`
/// directly instead).
pub async fn backfill(
    config: &Config,
    kafka: &KafkaConfig,
    reading: Reading,
    cancel: CancellationToken,
    control: BackfillControl,
    follow_control_topic: bool,
) -> Result<String> {
    let scope = Scope::from_config(&config.source)?;
    let mut source = Source::connect(&config.source.url).await?;
    source.check_binlog_settings().await?;
    let only: Option<Vec<TableId>> = match &reading {
        Reading::Keys(keys) => Some(keys.keys().copied().collect()),
        Reading::Part(table, _) => Some(vec![*table]),
        Reading::Tables(tables) if !tables.is_empty() => Some(tables.clone()),
        Reading::Tables(_) => None,
    };
    let (all, _) = crate::preflight::checked_scope_for(
        &mut source,
        &scope,
        &config.transformer()?,
        only.as_deref(),
    )
    .await?;
    let tables = match &only {
        None => all.clone(),
        Some(named) => {
            scope.restrict(named)?;
            named.clone()
        }
    };
    let identity = source.info.identity;
    let store = CheckpointStore::load(kafka).await?;
    if store.capture_checkpoint()?.is_none() {
        warn!("no capture position is recorded in the checkpoints topic: changes made to the source during this backfill reach the target only if a capture runs from a position before it began");
    }
    let checkpoints = store.backfill_checkpoints(&tables)?;
    let publisher = KafkaPublisher::new(kafka, identity, &all).await?;
    let (tx, publishing) = start_publishing(config, publisher, &cancel);
    let listening = follow_control_topic.then(|| {
        tokio::spawn(follow_control(
            kafka.clone(),
            control.clone(),
            cancel.clone(),
        ))
    });

    let mut backfill = Backfill::new(source, config.backfill.clone(), control)?;
    let display = crate::progress::spawn(
        "backfill",
        backfill.progress(),
        config.backfill.progress_seconds,
        cancel.clone(),
    );
    let mut out = String::new();
    let result: Result<()> = async {
        match &reading {
            Reading::Keys(keys) => {
                for (table, typed) in keys {
                    let (found, gone) = backfill.reread_keys(table, typed, &tx).await?;
                    out.push_str(&format!(
                        "re-read {table}: {found} rows re-sent, {gone} gone from the source (tombstoned)\n"
                    ));
                }
            }
            Reading::Part(table, part) => {
                let stored = crate::parts::Stored::Topic(kafka);
                let rows =
                    crate::parts::backfill_part(&mut backfill, table, *part, stored, &tx, &cancel)
                        .await?;
                out.push_str(&format!("backfilled {table} part {part}: {rows} rows\n"));
            }
            Reading::Tables(_) => {
                let done = if config.backfill.parts > 1 {
                    let stored = crate::parts::Stored::Topic(kafka);
                    crate::parts::backfill_in_parts(&mut backfill, &tables, stored, &tx, &cancel)
                        .await?
                } else {
                    backfill.run(&tables, &checkpoints, &tx, &cancel).await?
                };
                for (t, rows) in done {
                    out.push_str(&format!("backfilled {t}: {rows} rows\n"));
                }
            }
        }
        Ok(())
    }
    .await;
    display.abort();
    if let Some(listening) = listening {
        listening.abort();
    }
    drop(tx);
    let published = publishing.await.context("the publisher task panicked")?;
    result?;
    out.push_str(&render_publish(&published?));
    Ok(out)
}

/// Pause/resume a running backfill from the control topic.
async fn follow_control(kafka: KafkaConfig, control: BackfillControl, cancel: CancellationToken) {
    let mut listener = match ControlListener::start(&kafka, None).await {
        Ok(l) => l,
        Err(e) => {
            warn!(error = %e, "the control topic is not readable; pause/resume via SIGUSR1 only");
            return;
        }
    };
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            next = listener.next() => next,
        };
        match next {
            Ok(envelope) => match envelope.message {
                ControlMessage::PauseBackfill => {
                    info!(offset = envelope.offset, "control: backfill paused");
                    control.pause();
                }
                ControlMessage::ResumeBackfill => {
                    info!(offset = envelope.offset, "control: backfill resumed");
                    control.resume();
                }
                other => info!(message = ?other, "control message for another job"),
            },
            Err(e) => {
                warn!(error = %e, "reading the control topic failed");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

/// `tidemark apply`: consume the changes topics as a member of the consumer group.
pub async fn apply(
    config: &Config,
    kafka: &KafkaConfig,
    until_caught_up: bool,
    cancel: CancellationToken,
) -> Result<String> {
    let scope = Scope::from_config(&config.source)?;
    let mut source = Source::connect(&config.source.url).await?;
    let tables = source.tables_in_scope(&scope).await?;
    let transformer = config.transformer()?;
    let kafka = kafka.clone();
    let config = config.clone();
    let report = tokio::task::spawn_blocking(move || -> Result<_> {
        let (mut sink, _) = open_sink(&config)?;
        let mut applier = KafkaApplier::new(&kafka, transformer, Some(&tables))?;
        crate::metrics::set_ready();
        let options = ApplyOptions {
            until_caught_up,
            retry_transient_for: config.apply.retry_duration(),
            ..ApplyOptions::default()
        };
        Ok(applier.run(&mut *sink, &options, &cancel)?)
    })
    .await
    .context("the apply thread panicked")??;
    let mut out = format!("{:<32} {:>12} {:>12}\n", "table", "applied", "ignored");
    for (t, (a, i)) in &report.stats.per_table {
        out.push_str(&format!("{t:<32} {a:>12} {i:>12}\n"));
    }
    for (t, n) in &report.rejected {
        out.push_str(&format!(
            "rejected {t}: {n} changes (schema_rejection; see the dead-letter topic)\n"
        ));
    }
    if report.undecodable > 0 {
        out.push_str(&format!(
            "undecodable messages: {} (sent to the dead-letter topic)\n",
            report.undecodable
        ));
    }
    out.push_str(&format!(
        "frontier {}\n",
        report
            .frontier
            .as_ref()
            .map_or("-".into(), |p| p.to_string())
    ));
    Ok(out)
}

/// The group's apply frontier, for the reconciler.
pub struct KafkaFrontier(pub tidemark_kafka::FrontierReader);

impl tidemark_reconcile::Frontier for KafkaFrontier {
    fn frontier(&mut self) -> tidemark_reconcile::Result<Option<tidemark_schemas::BinlogPosition>> {
        tokio::task::block_in_place(|| self.0.frontier()).map_err(|e| {
            tidemark_reconcile::Error::Config(format!("reading the apply frontier: {e}"))
        })
    }
}

/// How often a sweep waiting for apply says so.
const WAITING_NOTICE: std::time::Duration = std::time::Duration::from_secs(30);

/// The re-read of `table` a [`tidemark_ingest::ResyncMarker`] in the checkpoints topic asks for
/// (after a schema change, a TRUNCATE, a DROP or RENAME TABLE, or `tidemark resync`), in Kafka
/// mode: what the embedded pipeline does after a schema change (see [`crate::resync`]), with the
/// changes topics between the stages.
///
/// 1. A table to be backfilled again (`rebackfill`, and still on the source) is backfilled,
///    resuming from its checkpoint.
/// 2. Wait until the apply group has committed everything its changes topic holds now: every
///    change before the marker (published before it) and the backfill's rows are in the target.
/// 3. The live target rows older than the marker's position are traced back to their source
///    keys and re-read through the changes topic at a version observed now (tombstoned where the
///    source has no such row, or no such table any more: a table gone is traced back with the
///    description the checkpoints topic kept of it).
/// 4. The marker is stored swept, after the re-read rows were acknowledged.
///
/// Interrupted (`cancel`), it leaves the marker as it was: the next sweep starts over. With
/// `follow_control_topic`, its backfill obeys pause/resume sent to the control topic.
pub async fn sweep(
    config: &Config,
    kafka: &KafkaConfig,
    table: TableId,
    marker: tidemark_ingest::ResyncMarker,
    cancel: CancellationToken,
    control: BackfillControl,
    follow_control_topic: bool,
) -> Result<String> {
    let from = marker.from_position()?;
    let mut out = String::new();
    let mut source = Source::connect(&config.source.url).await?;
    if marker.rebackfill && source.table_exists(&table).await? {
        out.push_str(
            &backfill(
                config,
                kafka,
                Reading::Tables(vec![table]),
                cancel.clone(),
                control.clone(),
                follow_control_topic,
            )
            .await?,
        );
    }
    let interrupted = || {
        format!("{out}the re-read of {table} was interrupted; it starts over on the next start\n")
    };
    // A backfill stopped before its end leaves the marker as it is: the next sweep resumes it.
    if cancel.is_cancelled() {
        return Ok(interrupted());
    }
    let ends = tidemark_kafka::end_offsets(kafka, &[table]).await?;
    let mut noticed = std::time::Instant::now();
    loop {
        let left = tidemark_kafka::uncommitted(kafka, &ends).await?;
        if left == 0 {
            break;
        }
        if noticed.elapsed() >= WAITING_NOTICE {
            info!(table = %table, messages = left, "re-read: waiting for the apply group to write what was published before it");
            noticed = std::time::Instant::now();
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(interrupted()),
            _ = tokio::time::sleep(std::time::Duration::from_millis(500)) => {}
        }
    }
    // Observed before the look at the table: if it is missing, it was at this position too
    // (see `Backfill::tombstone_keys`).
    let observed = source.end_of_log().await?;
    let (schema, gone) = match source.load_schema(&table).await {
        Ok(schema) => (Some(schema), false),
        Err(tidemark_ingest::Error::TableNotFound { .. }) => {
            (stored_source_schema(kafka, &table).await?, true)
        }
        Err(e) => return Err(e.into()),
    };
    let identity = source.info.identity;
    let publisher = KafkaPublisher::new(kafka, identity, &[table]).await?;
    let (tx, publishing) = start_publishing(config, publisher, &cancel);
    let mut backfill = Backfill::new(source, config.backfill.clone(), control)?;
    let result: Result<()> = async {
        let Some(schema) = schema else {
            out.push_str(&format!(
                "{table} is gone from the source and was never described to apply: the target holds none of its rows\n"
            ));
            return Ok(());
        };
        let plan = config.transformer()?.plan(&schema)?;
        let (keys, untraceable) = tokio::task::block_in_place(|| -> Result<_> {
            let (mut reader, _) = open_sink(config)?;
            crate::resync::sweep_keys(&mut *reader, &plan, identity, &from)
        })?;
        if untraceable > 0 {
            warn!(table = %table, rows = untraceable, "target rows whose key no source key maps to were left alone; `tidemark reconcile` reports them as extra");
        }
        if gone {
            warn!(table = %table, rows = keys.len(), "table dropped or renamed away on the source: its rows in the target are tombstoned");
            let n = backfill
                .tombstone_keys(std::sync::Arc::new(schema), &keys, observed, &tx)
                .await?;
            out.push_str(&format!("{table} is gone from the source: {n} target rows tombstoned\n"));
        } else {
            info!(table = %table, keys = keys.len(), "re-read: re-reading the target rows written before {from}");
            let (found, tombstoned) = backfill.reread_keys(&table, &keys, &tx).await?;
            out.push_str(&format!(
                "re-read {table}: {found} rows re-sent, {tombstoned} gone from the source (tombstoned)\n"
            ));
        }
        Ok(())
    }
    .await;
    if result.is_ok() {
        let swept = tidemark_ingest::ResyncMarker {
            sweep_done: true,
            ..marker
        };
        let _ = tx
            .send(tidemark_ingest::CaptureMessage::Checkpoint(
                swept.to_checkpoint(&table),
            ))
            .await;
    }
    drop(tx);
    let published = publishing.await.context("the publisher task panicked")?;
    result?;
    published?;
    Ok(out)
}

/// The tables in `scope` the checkpoints topic keeps a description of (publishers store each
/// table description they send): every table the target may hold rows of.
fn described_tables(store: &CheckpointStore, scope: &Scope) -> Vec<TableId> {
    stored_descriptions(store)
        .map(|schema| schema.table)
        .filter(|t| scope.includes(&t.database, &t.table))
        .collect()
}

/// The table descriptions publishers stored in the checkpoints topic.
fn stored_descriptions(
    store: &CheckpointStore,
) -> impl Iterator<Item = tidemark_schemas::SourceSchema> + '_ {
    store
        .entries()
        .values()
        .filter(|cp| cp.stage == tidemark_kafka::wire::SCHEMA_STAGE)
        .filter_map(|cp| serde_json::from_str(&cp.value).ok())
}

/// The description of `table` the checkpoints topic keeps (publishers store each table
/// description they send), for a table the source no longer has.
async fn stored_source_schema(
    kafka: &KafkaConfig,
    table: &TableId,
) -> Result<Option<tidemark_schemas::SourceSchema>> {
    let store = CheckpointStore::load(kafka).await?;
    let found = stored_descriptions(&store).find(|schema| schema.table == *table);
    Ok(found)
}
