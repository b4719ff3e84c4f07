//! `tidemark resync`: the one recovery for what capture cannot follow.
//!
//! A purged binlog (capture's position is gone), a TRUNCATE, a write logged as a statement
//! instead of rows: each leaves the target missing changes that no binlog event will ever
//! bring. Resync re-backfills the tables from scratch, version-aware, and then removes what
//! the source no longer has:
//!
//! 1. If capture's stored position is no longer in the server's binlogs, capture starts over
//!    at the current end of log (stored before anything is read, as on a first start). Every
//!    table in scope lost changes then, so every table must be resynced (`--all`).
//! 2. `P0`, the end of log now, is recorded per table ([`ResyncMarker`]) with a fresh backfill
//!    checkpoint. The backfill reads each chunk after observing a position at or past `P0`, so
//!    every row it writes has a version above `V(P0)` and still never beats a later live change
//!    (DESIGN.md §2). Capture, restarted before `P0`, skips a TRUNCATE or statement-logged write
//!    of such a table before `P0`: the backfill covers it.
//! 3. Once a table's backfill is done and applied, the **sweep**: every live target row with a
//!    version below `V(P0)` was not rewritten by the backfill (nor changed since), so its source
//!    row was gone when the backfill passed. Its source key (traced back from the target key)
//!    is re-read through the normal path, which tombstones it if the source still lacks it. Then
//!    the marker is marked swept, in the same transaction as the re-read rows.
//!
//! A resync that is killed resumes in the next `run`, `backfill` or `resync`: the backfill from
//! its checkpoint, the sweep from the start (it only re-reads).
//!
//! In Kafka mode the markers and checkpoints live in the checkpoints topic, "applied" means the
//! apply group committed everything the table's changes topic held, and the re-read rows and
//! the swept marker go through the changes and checkpoints topics ([`crate::kafka_mode::sweep`]);
//! the control worker runs every marker's re-read on its own, those capture stores for a schema
//! change included, and finishes one a killed `resync` left.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use tidemark_ingest::{
    BackfillCheckpoint, BackfillControl, Capture, CaptureCheckpoint, ResyncMarker, Scope, Source,
    RESYNC_STAGE,
};
use tidemark_schemas::{backfill_version, BinlogPosition, Row, TableId};
use tidemark_sink::Sink;
use tokio::task::block_in_place;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::embedded::{Job, ALL_TABLES, CAPTURE_STAGE};
use crate::target::open_sink;

/// The resync markers stored for `tables`.
pub fn read_markers(
    sink: &mut dyn Sink,
    tables: &[TableId],
) -> Result<BTreeMap<TableId, ResyncMarker>> {
    crate::target::read_table_checkpoints(sink, RESYNC_STAGE, tables)
}

/// The resync markers among `checkpoints` (of the target, or of the checkpoints topic in Kafka
/// mode) of tables in `scope`, those of tables the source no longer has included (a table
/// dropped or renamed away whose rows in the target are still to be tombstoned: a restart must
/// finish that too).
pub fn markers_in_scope<'a>(
    checkpoints: impl IntoIterator<Item = &'a tidemark_schemas::Checkpoint>,
    scope: &Scope,
) -> Result<BTreeMap<TableId, ResyncMarker>> {
    let mut out = BTreeMap::new();
    for cp in checkpoints {
        if cp.stage != RESYNC_STAGE {
            continue;
        }
        let Ok(table) = cp.scope.parse::<TableId>() else {
            continue;
        };
        if !scope.includes(&table.database, &table.table) {
            continue;
        }
        let marker: ResyncMarker = serde_json::from_str(&cp.value).with_context(|| {
            format!(
                "the stored {RESYNC_STAGE} checkpoint of {table} is unreadable: `{}`",
                cp.value
            )
        })?;
        out.insert(table, marker);
    }
    Ok(out)
}

/// Checkpoint stage of the last source description the target was told of, per table (scope:
/// the table): the description of a table the source no longer has (dropped, renamed away),
/// which its rows in the target are traced back and tombstoned with.
pub const SOURCE_SCHEMA_STAGE: &str = "source_schema";

/// The checkpoint that keeps `schema` in the target.
pub fn source_schema_checkpoint(
    schema: &tidemark_schemas::SourceSchema,
) -> tidemark_schemas::Checkpoint {
    tidemark_schemas::Checkpoint {
        stage: SOURCE_SCHEMA_STAGE.into(),
        scope: schema.table.to_string(),
        value: serde_json::to_string(schema).expect("source schemas serialize"),
    }
}

/// The tables in `scope` whose description the target keeps (among `checkpoints`): every table
/// it may hold rows of, those the source no longer has included.
pub fn described_tables<'a>(
    checkpoints: impl IntoIterator<Item = &'a tidemark_schemas::Checkpoint>,
    scope: &Scope,
) -> Vec<TableId> {
    checkpoints
        .into_iter()
        .filter(|cp| cp.stage == SOURCE_SCHEMA_STAGE)
        .filter_map(|cp| cp.scope.parse::<TableId>().ok())
        .filter(|t| scope.includes(&t.database, &t.table))
        .collect()
}

/// The last description of `table` the target was told of, if any.
pub fn stored_source_schema(
    sink: &mut dyn Sink,
    table: &TableId,
) -> Result<Option<tidemark_schemas::SourceSchema>> {
    Ok(crate::target::read_table_checkpoints(sink, SOURCE_SCHEMA_STAGE, &[*table])?.remove(table))
}

/// Where capture may skip what it cannot follow, per table (step 2 of the module doc).
pub fn capture_skips(
    markers: &BTreeMap<TableId, ResyncMarker>,
) -> Result<BTreeMap<TableId, BinlogPosition>> {
    markers
        .iter()
        .filter(|(_, m)| m.rebackfill)
        .map(|(t, m)| Ok((*t, m.from_position()?)))
        .collect()
}

/// What a resync writes before its backfill reads anything (steps 1 and 2 of the module doc).
struct Reset {
    tables: Vec<TableId>,
    /// Capture's new position, when its stored one was purged.
    capture: Option<tidemark_schemas::Checkpoint>,
    /// Per table: a fresh backfill checkpoint and the resync marker.
    checkpoints: Vec<tidemark_schemas::Checkpoint>,
    /// Where the new backfills start (the markers' `from`).
    from: BinlogPosition,
    report: String,
}

/// Decide steps 1 and 2 for `tables` (or all in scope), given capture's stored checkpoint.
async fn plan_reset(
    config: &Config,
    tables: Vec<TableId>,
    all: bool,
    stored: Option<&CaptureCheckpoint>,
) -> Result<Reset> {
    if tables.is_empty() && !all {
        bail!("name the tables to resync with --table db.t (repeatable), or --all");
    }
    let scope = Scope::from_config(&config.source)?;
    let mut source = Source::connect(&config.source.url).await?;
    source.check_binlog_settings().await?;
    let (in_scope, _) =
        crate::preflight::checked_scope(&mut source, &scope, &config.transformer()?).await?;
    let tables = if all {
        in_scope.clone()
    } else {
        scope.restrict(&tables)?;
        tables
    };
    let mut report = String::new();
    let mut capture_checkpoint = None;
    if let Some(checkpoint) = stored {
        let mut capture = Capture::new(
            source.another().await?,
            scope.clone(),
            config.source.server_id,
            config.capture.clone(),
        );
        match capture.resolve_start(Some(checkpoint)).await {
            Ok(_) => {}
            Err(tidemark_ingest::Error::PositionPurged { position, .. }) => {
                let missing: Vec<String> = in_scope
                    .iter()
                    .filter(|t| !tables.contains(t))
                    .map(|t| t.to_string())
                    .collect();
                if !missing.is_empty() {
                    bail!(
                        "capture's position {position} is no longer in the source's binlogs, so every table in scope lost changes; resync them all (`tidemark resync --config <file> --all`), not only some (left out: {})",
                        missing.join(", ")
                    );
                }
                let end = source.end_of_log().await?;
                capture_checkpoint =
                    Some(CaptureCheckpoint::new(&end, source.info.identity, None).to_checkpoint());
                report.push_str(&format!(
                    "capture's position {position} was purged: capture resumes at {end}\n"
                ));
                warn!(purged = %position, resumes = %end, "capture starts over at the end of log");
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Observed after capture's new position: every row the backfill writes is newer than both.
    let from = source.end_of_log().await?;
    let mut checkpoints = Vec::new();
    for t in &tables {
        checkpoints.push(BackfillCheckpoint::default().to_checkpoint(t));
        checkpoints.push(
            ResyncMarker {
                from: from.to_string(),
                sweep_done: false,
                rebackfill: true,
            }
            .to_checkpoint(t),
        );
    }
    info!(from = %from, tables = tables.len(), "resync: re-backfilling");
    report.push_str(&format!(
        "resync from {from}: {}\n",
        tables
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(Reset {
        tables,
        capture: capture_checkpoint,
        checkpoints,
        from,
        report,
    })
}

/// `tidemark resync`: steps 1 and 2, then the backfill and the sweep (embedded: those of
/// [`crate::embedded::run`]; Kafka mode: [`crate::kafka_mode::sweep`]).
pub async fn resync(
    config: &Config,
    tables: Vec<TableId>,
    all: bool,
    cancel: CancellationToken,
    control: BackfillControl,
) -> Result<String> {
    if let Some(kafka) = config.transport.kafka() {
        let mut store = tidemark_kafka::CheckpointStore::load(kafka).await?;
        let stored = store.capture_checkpoint()?;
        let reset = plan_reset(config, tables, all, stored.as_ref()).await?;
        for checkpoint in reset.capture.iter().chain(&reset.checkpoints) {
            store.store(checkpoint).await?;
        }
        let mut report = reset.report;
        // The backfill and sweep of each table, as the control worker runs them for a marker
        // (it may pick these up too: both are version-aware, so the second finds little to do).
        for table in &reset.tables {
            let marker = ResyncMarker {
                from: reset.from.to_string(),
                sweep_done: false,
                rebackfill: true,
            };
            report.push_str(
                &crate::kafka_mode::sweep(
                    config,
                    kafka,
                    *table,
                    marker,
                    cancel.clone(),
                    control.clone(),
                    true,
                )
                .await?,
            );
        }
        if reset.capture.is_some() {
            report.push_str("restart `tidemark capture` to resume capture\n");
        }
        return Ok(report);
    }
    let (mut sink, _) = block_in_place(|| open_sink(config))?;
    let stored = block_in_place(|| sink.checkpoint(CAPTURE_STAGE, ALL_TABLES))?
        .map(|text| {
            serde_json::from_str::<CaptureCheckpoint>(&text)
                .with_context(|| format!("the stored capture checkpoint `{text}` is unreadable"))
        })
        .transpose()?;
    let reset = plan_reset(config, tables, all, stored.as_ref()).await?;
    if let Some(capture) = &reset.capture {
        block_in_place(|| sink.write(&[], std::slice::from_ref(capture)))?;
    }
    block_in_place(|| sink.write(&[], &reset.checkpoints))?;
    block_in_place(|| drop(sink));
    let mut report = reset.report;
    let run = crate::embedded::run(
        config,
        Job::Backfill {
            tables: reset.tables,
            keys: None,
            part: None,
        },
        cancel,
        control,
    )
    .await?;
    report.push_str(&run.render());
    if reset.capture.is_some() {
        report.push_str("restart `tidemark run` (or `tidemark capture`) to resume capture\n");
    }
    Ok(report)
}

/// Step 3 for one table: the source keys of the live target rows the backfill from `from` did
/// not rewrite (their version is below `V(from)`), found by scanning `reader`, a sink of its own.
/// Returns the keys to re-read and how many target keys trace back to no source key (reported,
/// not re-readable).
pub fn sweep_keys(
    reader: &mut dyn Sink,
    plan: &tidemark_transform::TablePlan,
    server: tidemark_schemas::Ustr,
    from: &BinlogPosition,
) -> Result<(Vec<Row>, u64)> {
    let below = backfill_version(from.file_seq()?, from.offset)?;
    let table = plan.target_schema().table.clone();
    reader.ensure_table(plan.target_schema())?;
    let (mut keys, mut untraceable) = (Vec::new(), 0u64);
    let mut after: Option<Row> = None;
    loop {
        let page = reader.scan(&table, after.as_ref(), 1000)?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        let full = page.len() == 1000;
        for record in page {
            if record.is_tombstone() || record.lineage.version >= below {
                continue;
            }
            match tidemark_reconcile::source_key_of_target(plan, server, &record.key) {
                Some(key) => keys.push(key),
                None => untraceable += 1,
            }
        }
        if !full {
            break;
        }
    }
    Ok((keys, untraceable))
}
