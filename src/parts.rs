//! `tidemark backfill --table db.t --part i/N`: one part of a table's backfill, in either mode.
//!
//! What a part does depends only on what is stored (`tidemark_ingest::split::StoredBackfill`):
//! - the table's backfill is complete: nothing;
//! - no split is stored: part 0 computes one from the source's own estimates
//!   (`tidemark_ingest::split::plan`) and sends it downstream, with a table checkpoint that names
//!   it, before any row of its part; every other part waits until it is stored (that is how N pods
//!   started at once agree on one split);
//! - otherwise the part resumes from its own checkpoint in that split (fresh when it has none).
//!
//! The stored state is read from the target in embedded mode and from the checkpoints topic in
//! Kafka mode ([`Stored`]); either way it is what apply (or the publisher) made durable, so a
//! part killed at any point resumes from what the target holds.

use std::time::{Duration, Instant};

use anyhow::Result;
use tidemark_ingest::split::{self, Part, PartStep, StoredBackfill};
use tidemark_ingest::{Backfill, BackfillCheckpoint, CaptureMessage};
use tidemark_schemas::TableId;
use tidemark_sink::Sink;
use tokio::sync::mpsc;
use tokio::task::block_in_place;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where a part reads the stored backfill state from.
pub enum Stored<'a> {
    /// The target (embedded mode): a connection of the part's own.
    Target(&'a mut dyn Sink),
    /// The checkpoints topic (Kafka mode), read again each time.
    Topic(&'a tidemark_kafka::KafkaConfig),
}

impl Stored<'_> {
    async fn read(&mut self, table: &TableId) -> Result<StoredBackfill> {
        match self {
            Stored::Target(sink) => block_in_place(|| crate::target::stored_backfill(*sink, table)),
            Stored::Topic(kafka) => Ok(tidemark_kafka::CheckpointStore::load(kafka)
                .await?
                .stored_backfill(table)?),
        }
    }
}

/// Run `part` of `table`'s backfill until it is done or `cancel`; returns the rows it sent.
pub async fn backfill_part(
    backfill: &mut Backfill,
    table: &TableId,
    part: Part,
    mut stored: Stored<'_>,
    out: &mpsc::Sender<CaptureMessage>,
    cancel: &CancellationToken,
) -> Result<u64> {
    // Every part refuses a table that cannot be split, not only part 0 (the others would wait
    // for a split that never comes).
    let schema = backfill.source().load_schema(table).await?;
    split::check_splittable(&schema)?;
    let waiting_since = Instant::now();
    let mut told = Instant::now();
    loop {
        let state = stored.read(table).await?;
        match state.step(table, part)? {
            PartStep::Done => {
                info!(table = %table, part = %part, "the table's backfill is complete");
                return Ok(0);
            }
            PartStep::Run { split, checkpoint } => {
                return Ok(backfill
                    .run_part(table, part, &split, checkpoint, out, cancel)
                    .await?);
            }
            PartStep::Plan => {
                let Some(split) = plan_and_send(backfill, &schema, part.of, out).await? else {
                    return Ok(0);
                };
                // A fresh part: `run_part` stamps its checkpoints with the split.
                return Ok(backfill
                    .run_part(
                        table,
                        part,
                        &split,
                        BackfillCheckpoint::default(),
                        out,
                        cancel,
                    )
                    .await?);
            }
            PartStep::Wait => {
                if told.elapsed() >= Duration::from_secs(10) {
                    info!(table = %table, part = %part, waited_seconds = waiting_since.elapsed().as_secs(), "waiting for part 0 to store the split of the table's keys");
                    told = Instant::now();
                }
                // The checkpoints topic is read whole each time: not too often.
                let pause = match stored {
                    Stored::Target(_) => Duration::from_millis(500),
                    Stored::Topic(_) => Duration::from_secs(2),
                };
                tokio::select! {
                    _ = cancel.cancelled() => return Ok(0),
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}

/// `[backfill] parts = N` (N > 1): backfill each of `tables` in N parts side by side in this
/// process, one table after another, each part on a connection of its own (the rate caps are the
/// process's). Resumes each table's split and parts from what is stored. Returns the rows sent
/// per table.
pub async fn backfill_in_parts(
    backfill: &mut Backfill,
    tables: &[TableId],
    mut stored: Stored<'_>,
    out: &mpsc::Sender<CaptureMessage>,
    cancel: &CancellationToken,
) -> Result<std::collections::BTreeMap<TableId, u64>> {
    let parts = backfill.config().parts;
    let mut sent = std::collections::BTreeMap::new();
    for table in tables {
        if cancel.is_cancelled() {
            break;
        }
        let state = stored.read(table).await?;
        let schema = backfill.source().load_schema(table).await?;
        if let Err(e) = split::check_splittable(&schema) {
            warn!(table = %table, reason = %e, "this table is read whole, not in parts");
            let whole: std::collections::BTreeMap<TableId, BackfillCheckpoint> = state
                .combined()
                .map(|cp| (*table, cp))
                .into_iter()
                .collect();
            sent.extend(backfill.run(&[*table], &whole, out, cancel).await?);
            continue;
        }
        // Stored in another number of parts (a setting changed since): go on in the stored one.
        let of = state.split.as_ref().map_or(parts, |s| s.parts);
        let (split, checkpoints) = match state.step(table, Part { index: 0, of })? {
            PartStep::Done => {
                info!(table = %table, "the table's backfill is complete");
                continue;
            }
            PartStep::Run { split, .. } => {
                let checkpoints = state.parts.clone();
                (split, checkpoints)
            }
            PartStep::Plan | PartStep::Wait => {
                let split = plan_and_send(backfill, &schema, parts, out).await?;
                let Some(split) = split else { break };
                (split, vec![None; parts as usize])
            }
        };
        // A part that fails stops the others.
        let stop = cancel.child_token();
        let mut workers = tokio::task::JoinSet::new();
        for index in 0..split.parts {
            let mut worker = backfill.worker().await?;
            let checkpoint = checkpoints
                .get(index as usize)
                .cloned()
                .flatten()
                .unwrap_or_default();
            let (split, out, stop, table) = (split.clone(), out.clone(), stop.clone(), *table);
            workers.spawn(async move {
                let part = Part {
                    index,
                    of: split.parts,
                };
                worker
                    .run_part(&table, part, &split, checkpoint, &out, &stop)
                    .await
            });
        }
        let mut rows = 0;
        let mut failed = None;
        while let Some(done) = workers.join_next().await {
            match done? {
                Ok(n) => rows += n,
                Err(e) => {
                    stop.cancel();
                    failed.get_or_insert(e);
                }
            }
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        sent.insert(*table, rows);
    }
    Ok(sent)
}

/// Split `schema`'s table into `parts` and send the split downstream, with a table checkpoint
/// that names it, before any row of a part. `None` when downstream is gone.
async fn plan_and_send(
    backfill: &mut Backfill,
    schema: &tidemark_schemas::SourceSchema,
    parts: u32,
    out: &mpsc::Sender<CaptureMessage>,
) -> Result<Option<split::KeySplit>> {
    let table = &schema.table;
    let mut conn = backfill.source().new_connection().await?;
    let split = split::plan(&mut conn, schema, parts).await?;
    let _ = conn.disconnect().await;
    let named = BackfillCheckpoint {
        split: Some(split.id.clone()),
        ..BackfillCheckpoint::default()
    };
    // The split first: apply (or the publisher) stores it before any row of a part.
    for checkpoint in [split.to_checkpoint(table), named.to_checkpoint(table)] {
        if out
            .send(CaptureMessage::Checkpoint(checkpoint))
            .await
            .is_err()
        {
            return Ok(None);
        }
    }
    Ok(Some(split))
}
