//! `tidemark control`: the control topic's worker, and sending control messages.
//!
//! `tidemark control serve` is a long-running job (one per deployment) that acts on what is sent
//! to `<prefix>.control` (DESIGN.md §7):
//!
//! - `pause_backfill` / `resume_backfill` take effect at once on the backfill the worker runs
//!   (and on one started later: a paused worker starts its next backfill paused);
//! - `start_backfill`, `reread_keys` and `reconcile` are actions: they run one at a time, in the
//!   order they were sent, through the same code as `tidemark backfill`, `tidemark backfill
//!   --keys` and `tidemark reconcile` (whose drift goes to the drift topic).
//!
//! Between messages, the worker also runs the re-reads the checkpoints topic asks for: capture
//! stores a resync marker there when it passes a schema change, a TRUNCATE, a DROP or RENAME
//! TABLE of a captured table (and `tidemark resync` stores one per table). While no action is
//! running or queued, the worker looks for markers not yet swept every [`REREAD_CHECK`] and runs
//! them one at a time ([`crate::kafka_mode::sweep`]); a sweep that failed is tried again after
//! [`REREAD_RETRY`]. A marker is swept once its re-read rows were acknowledged, so a worker
//! killed mid-sweep leaves it for its replacement.
//!
//! The worker is a member of the consumer group `<transport.group_id>-control` and commits a
//! message's offset only once it was acted on: every message before the committed offset is
//! done. Killed mid-action, the worker (or its replacement) starts that action again, which is
//! harmless: a backfill resumes from its checkpoints and re-sends rows with the same versions, a
//! reconcile compares again. An action that fails (an unknown table, say) is logged with its
//! offset and counted as done: sending it again is the operator's call, a retry loop is not.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use anyhow::{Context, Result};
use tidemark_ingest::{BackfillControl, Source};
use tidemark_kafka::{ControlEnvelope, ControlListener, ControlMessage, KafkaConfig};
use tidemark_schemas::{Row, TableId};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{parse_tables, Config};
use crate::reconcile::ReconcileArgs;

/// `tidemark control send`: parse `message` as a control message and send it.
pub async fn send(kafka: &KafkaConfig, message: &str) -> Result<String> {
    let parsed: ControlMessage = serde_json::from_str(message).with_context(|| {
        format!(
            "not a control message: {message}\nexpected one of {{\"action\":\"start_backfill\",\"tables\":[\"db.t\"]}}, {{\"action\":\"pause_backfill\"}}, {{\"action\":\"resume_backfill\"}}, {{\"action\":\"reread_keys\",\"table\":\"db.t\",\"keys\":[{{\"id\":42}}]}}, {{\"action\":\"reconcile\",\"tables\":[\"db.t\"],\"sample\":0.1}}"
        )
    })?;
    tidemark_kafka::send_control(kafka, &parsed).await?;
    Ok(format!(
        "sent to {}: {}\n",
        tidemark_kafka::Topics::new(kafka).control(),
        serde_json::to_string(&parsed)?
    ))
}

/// An action under way.
type Action = Pin<Box<dyn Future<Output = Result<String>>>>;

/// What the worker is doing: a message of the control topic, or a re-read a resync marker in
/// the checkpoints topic asks for.
enum Work {
    Message(ControlEnvelope),
    Reread(TableId),
}

/// How often an idle worker looks for re-reads to run.
const REREAD_CHECK: std::time::Duration = std::time::Duration::from_secs(2);
/// How long after a failed re-read the worker tries it again.
const REREAD_RETRY: std::time::Duration = std::time::Duration::from_secs(30);

/// What the worker did, for its exit report.
#[derive(Debug, Default)]
pub struct WorkerReport {
    pub done: u64,
    /// Re-reads of resync markers done.
    pub rereads: u64,
    pub failed: u64,
    pub signals: u64,
}

/// `tidemark control serve`: act on control messages until cancelled.
pub async fn serve(
    config: &Config,
    kafka: &KafkaConfig,
    cancel: CancellationToken,
) -> Result<WorkerReport> {
    let group = format!("{}-control", kafka.group_id);
    let mut listener = ControlListener::worker(kafka, &group).await?;
    info!(group = %group, topic = %tidemark_kafka::Topics::new(kafka).control(), "control worker listening");
    crate::metrics::set_ready();
    let control = BackfillControl::default();
    let mut queue: VecDeque<ControlEnvelope> = VecDeque::new();
    // The offset after the last message read, and the offset last committed.
    let mut read_to: Option<i64> = None;
    let mut committed: Option<i64> = None;
    let mut report = WorkerReport::default();
    let scope = tidemark_ingest::Scope::from_config(&config.source)?;
    let mut checkpoints =
        tokio::task::block_in_place(|| tidemark_kafka::CheckpointReader::open(kafka))?;
    let mut reread_check = tokio::time::interval(REREAD_CHECK);
    reread_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Re-reads that failed, and when: not tried again before REREAD_RETRY.
    let mut failed_rereads: std::collections::HashMap<TableId, std::time::Instant> =
        Default::default();
    // The action under way: polled by this loop (not spawned: the reconciler is not `Send`),
    // so the listener keeps reading pause/resume while it runs.
    let mut running: Option<(Work, Action)> = None;
    loop {
        if running.is_none() {
            if let Some(next) = queue.pop_front() {
                info!(offset = next.offset, message = ?next.message, "control: starting");
                let task = Box::pin(act(
                    config.clone(),
                    kafka.clone(),
                    next.message.clone(),
                    control.clone(),
                    cancel.child_token(),
                ));
                running = Some((Work::Message(next), task));
            }
        }
        // Everything before the oldest message still to do is done.
        let committable = running
            .as_ref()
            .and_then(|(work, _)| match work {
                Work::Message(e) => Some(e.offset),
                Work::Reread(_) => None,
            })
            .or_else(|| queue.front().map(|e| e.offset))
            .or(read_to);
        if committable != committed {
            if let Some(offset) = committable {
                match listener.commit(offset) {
                    Ok(()) => committed = committable,
                    Err(e) => {
                        warn!(error = %e, "committing the control offset failed; it is committed again after the next message")
                    }
                }
            }
        }
        let idle = running.is_none() && queue.is_empty();
        let finished = async {
            match running.as_mut() {
                Some((_, task)) => task.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => break,
            outcome = finished => {
                let (work, _) = running.take().expect("an action was running");
                match (work, outcome) {
                    (Work::Message(envelope), Ok(text)) => {
                        report.done += 1;
                        info!(offset = envelope.offset, message = ?envelope.message, "control: done\n{text}");
                    }
                    (Work::Message(envelope), Err(e)) => {
                        report.failed += 1;
                        error!(offset = envelope.offset, message = ?envelope.message, "control: failed: {e:#}");
                    }
                    (Work::Reread(table), Ok(text)) => {
                        report.rereads += 1;
                        failed_rereads.remove(&table);
                        info!(table = %table, "control: re-read done\n{text}");
                    }
                    (Work::Reread(table), Err(e)) => {
                        report.failed += 1;
                        failed_rereads.insert(table, std::time::Instant::now());
                        error!(table = %table, "control: re-read failed (tried again in {} s): {e:#}", REREAD_RETRY.as_secs());
                    }
                }
            }
            _ = reread_check.tick(), if idle => {
                failed_rereads.retain(|_, at| at.elapsed() < REREAD_RETRY);
                tokio::task::block_in_place(|| checkpoints.catch_up())?;
                let pending = crate::resync::markers_in_scope(checkpoints.entries().values(), &scope)?;
                if let Some((table, marker)) = pending
                    .into_iter()
                    .find(|(t, m)| !m.sweep_done && !failed_rereads.contains_key(t))
                {
                    info!(table = %table, from = %marker.from, "control: re-reading the table's target rows (resync marker)");
                    let (config, kafka) = (config.clone(), kafka.clone());
                    let (cancel, control) = (cancel.child_token(), control.clone());
                    let task: Action = Box::pin(async move {
                        crate::kafka_mode::sweep(&config, &kafka, table, marker, cancel, control, false).await
                    });
                    running = Some((Work::Reread(table), task));
                }
            }
            next = listener.next() => match next {
                Ok(envelope) => {
                    read_to = Some(envelope.offset + 1);
                    match envelope.message {
                        ControlMessage::PauseBackfill => {
                            report.signals += 1;
                            control.pause();
                            info!(offset = envelope.offset, "control: backfill paused");
                        }
                        ControlMessage::ResumeBackfill => {
                            report.signals += 1;
                            control.resume();
                            info!(offset = envelope.offset, "control: backfill resumed");
                        }
                        _ => queue.push_back(envelope),
                    }
                }
                Err(tidemark_kafka::Error::Decode { offset, message, .. }) => {
                    read_to = Some(offset + 1);
                    report.failed += 1;
                    error!(offset, "control: not a control message, skipped: {message}");
                }
                Err(e) => {
                    warn!(error = %e, "reading the control topic failed; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            },
        }
    }
    if let Some((work, task)) = running.take() {
        // Cancelled: the action drains (its checkpoints are written) and is not committed.
        match work {
            Work::Message(envelope) => info!(
                offset = envelope.offset,
                "control: stopping the running action; it starts again after a restart"
            ),
            Work::Reread(table) => info!(
                table = %table,
                "control: stopping the running re-read; it starts again after a restart"
            ),
        }
        let _ = task.await;
    }
    Ok(report)
}

/// Carry out one action.
async fn act(
    config: Config,
    kafka: KafkaConfig,
    message: ControlMessage,
    control: BackfillControl,
    cancel: CancellationToken,
) -> Result<String> {
    match message {
        ControlMessage::StartBackfill { tables } => {
            let tables = parse_tables(&tables, "start_backfill: tables")?;
            crate::kafka_mode::backfill(
                &config,
                &kafka,
                crate::kafka_mode::Reading::Tables(tables),
                cancel,
                control,
                false,
            )
            .await
        }
        ControlMessage::RereadKeys { table, keys } => {
            let table: TableId = table
                .parse()
                .map_err(|e: String| anyhow::anyhow!("reread_keys: table: {e}"))?;
            let mut source = Source::connect(&config.source.url).await?;
            let schema = source.load_schema(&table).await?;
            let typed = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let object = k.as_object().with_context(|| {
                        format!(
                            "reread_keys: key {} of {table} is not a JSON object: {k}",
                            i + 1
                        )
                    })?;
                    tidemark_ingest::backfill::key_from_json(&schema, object)
                        .map_err(|e| anyhow::anyhow!("reread_keys: key {} of {table}: {e}", i + 1))
                })
                .collect::<Result<Vec<Row>>>()?;
            let keys = [(table, typed)].into_iter().collect();
            crate::kafka_mode::backfill(
                &config,
                &kafka,
                crate::kafka_mode::Reading::Keys(keys),
                cancel,
                control,
                false,
            )
            .await
        }
        ControlMessage::Reconcile { tables, sample } => {
            let args = ReconcileArgs {
                tables: parse_tables(&tables, "reconcile: tables")?,
                sample: sample.unwrap_or(1.0),
                output: None,
                settle_timeout: None,
                repair: false,
                dry_run: false,
                part: None,
            };
            let (text, actionable) = crate::reconcile::reconcile(&config, args, cancel).await?;
            if actionable {
                warn!("control: reconcile found actionable drift (see the drift topic)");
            }
            Ok(text)
        }
        ControlMessage::PauseBackfill | ControlMessage::ResumeBackfill => {
            unreachable!("signals are handled by the listener loop")
        }
    }
}
