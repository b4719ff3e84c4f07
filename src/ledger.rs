//! What the pipeline records about its own evidence, beside its checkpoints: the reconcile runs,
//! the dead letters accepted by name, and the authority-transfer record of a cutover.
//!
//! They live where the checkpoints live, so that every job and every restart sees the same ones:
//! in the target's checkpoint table (embedded mode), or in the compacted checkpoints topic (Kafka
//! mode; the authority-transfer record on its own compacted topic, `<prefix>.authority`), as
//! checkpoints of their own stages:
//! - [`RECONCILE_RUN_STAGE`], scope `latest` (the newest run) and `complete` (the newest run that
//!   compared every table in scope, unsampled, from its start): a [`ReconcileRun`];
//! - [`ACCEPTED_STAGE`], scope `<db.table>` (the whole table) or `<db.table>/<key>`: an
//!   [`Acceptance`];
//! - [`AUTHORITY_STAGE`], scope `*`: the authority-transfer record (JSON, see `cutover`);
//! - [`VERDICT_STAGE`], scope `*`: the newest verdict of `cutover check` ([`StoredVerdict`]).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tidemark_schemas::Checkpoint;
use tokio::task::block_in_place;

use crate::config::Config;
use crate::target::open_sink;

pub const RECONCILE_RUN_STAGE: &str = "reconcile_run";
pub const ACCEPTED_STAGE: &str = "dead_letter_accepted";
pub const AUTHORITY_STAGE: &str = "authority";
/// The newest verdict of the cutover gate (scope `*`), for the metrics of other processes.
pub const VERDICT_STAGE: &str = "cutover_verdict";

/// Scope of the newest reconcile run, and of the newest complete one.
pub const LATEST: &str = "latest";
pub const COMPLETE: &str = "complete";

/// What one `tidemark reconcile` found, as the cutover gate reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileRun {
    pub started_unix: f64,
    pub finished_unix: f64,
    /// The source's end of log when the run started: the run proves the target up to here.
    pub observed_at: String,
    /// Whether it compared every table in scope, unsampled, each from its first key.
    pub complete: bool,
    /// Why not, when it is not.
    #[serde(default)]
    pub incomplete_because: Vec<String>,
    pub tables: Vec<String>,
    pub rows_compared: u64,
    /// Rows compared per table.
    #[serde(default)]
    pub rows_per_table: BTreeMap<String, u64>,
    /// The `transform_version` each table was compared with.
    #[serde(default)]
    pub transforms: BTreeMap<String, String>,
    /// Findings per drift class.
    pub drift: BTreeMap<String, u64>,
    pub actionable: u64,
    /// The keys found `schema_rejection` (table, key), so that accepted dead letters can be told
    /// from the others; at most [`ReconcileRun::MAX_REJECTED_KEYS`].
    #[serde(default)]
    pub rejected_keys: Vec<(String, String)>,
    #[serde(default)]
    pub rejected_keys_truncated: bool,
    pub invariants: Vec<InvariantResult>,
}

impl ReconcileRun {
    pub const MAX_REJECTED_KEYS: usize = 10_000;
}

/// One invariant's verdict in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvariantResult {
    pub name: String,
    pub table: String,
    pub held: bool,
    /// The verdict as the report printed it.
    pub verdict: String,
    /// The canonical text of both queries evaluated.
    #[serde(default)]
    pub source_query: String,
    #[serde(default)]
    pub target_query: String,
}

/// A dead letter (or every dead letter of a table) accepted as not to be repaired.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acceptance {
    pub table: String,
    /// `None`: every dead letter of the table, now and later.
    pub key: Option<String>,
    pub by: String,
    pub reason: String,
    pub at_unix: f64,
}

impl Acceptance {
    pub fn scope(&self) -> String {
        match &self.key {
            Some(k) => format!("{}/{k}", self.table),
            None => self.table.clone(),
        }
    }

    /// Whether it covers the dead letters of `key` in `table`.
    pub fn covers(&self, table: &str, key: &str) -> bool {
        self.table == table && self.key.as_deref().is_none_or(|k| k == key)
    }
}

/// The newest verdict of the cutover gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredVerdict {
    pub ready: bool,
    pub checked_unix: f64,
    /// Each criterion and whether it passed.
    pub criteria: Vec<(String, bool)>,
}

impl StoredVerdict {
    /// `tidemark_cutover_ready`, `tidemark_cutover_checked_timestamp_seconds` and
    /// `tidemark_cutover_criterion_passed{criterion}`.
    pub fn export(&self) {
        metrics::gauge!("tidemark_cutover_ready").set(if self.ready { 1.0 } else { 0.0 });
        metrics::gauge!("tidemark_cutover_checked_timestamp_seconds").set(self.checked_unix);
        for (name, passed) in &self.criteria {
            metrics::gauge!("tidemark_cutover_criterion_passed", "criterion" => name.clone())
                .set(if *passed { 1.0 } else { 0.0 });
        }
    }
}

/// Every stored checkpoint and record (in Kafka mode the authority-transfer record comes from
/// its own topic, `<prefix>.authority`).
pub async fn read_all(config: &Config) -> Result<Vec<Checkpoint>> {
    Ok(match config.transport.kafka() {
        Some(kafka) => kafka_records(kafka).await?,
        None => block_in_place(|| -> Result<_> {
            let (mut sink, _) = open_sink(config)?;
            Ok(sink.checkpoints()?)
        })?,
    })
}

/// The checkpoints topic's checkpoints and records, with the authority-transfer record of its
/// own topic.
pub async fn kafka_records(kafka: &tidemark_kafka::KafkaConfig) -> Result<Vec<Checkpoint>> {
    let mut all: Vec<Checkpoint> = tidemark_kafka::CheckpointStore::load(kafka)
        .await?
        .entries()
        .values()
        .cloned()
        .collect();
    let k = kafka.clone();
    let authority =
        tokio::task::spawn_blocking(move || tidemark_kafka::read_authority(&k)).await??;
    if let Some(value) = authority {
        all.push(Checkpoint {
            stage: AUTHORITY_STAGE.into(),
            scope: "*".into(),
            value,
        });
    }
    Ok(all)
}

/// The record of `stage` and `scope` among `checkpoints`, parsed (an unreadable one is absent).
pub fn find<T: serde::de::DeserializeOwned>(
    checkpoints: &[Checkpoint],
    stage: &str,
    scope: &str,
) -> Option<T> {
    checkpoints
        .iter()
        .find(|c| c.stage == stage && c.scope == scope)
        .and_then(|c| serde_json::from_str(&c.value).ok())
}

/// Store records (the latest per stage and scope wins).
pub async fn write(config: &Config, records: &[Checkpoint]) -> Result<()> {
    match config.transport.kafka() {
        Some(kafka) => {
            let mut store = tidemark_kafka::CheckpointStore::load(kafka).await?;
            for r in records {
                if r.stage == AUTHORITY_STAGE {
                    tidemark_kafka::publish_authority(kafka, &r.value).await?;
                } else {
                    store.store(r).await?;
                }
            }
            Ok(())
        }
        None => block_in_place(|| -> Result<()> {
            let (mut sink, _) = open_sink(config)?;
            sink.write(&[], records)?;
            Ok(())
        }),
    }
}

/// A record of `stage` and `scope` holding `value` as JSON.
pub fn record<T: Serialize>(stage: &str, scope: &str, value: &T) -> Checkpoint {
    Checkpoint {
        stage: stage.into(),
        scope: scope.into(),
        value: serde_json::to_string(value).expect("records serialize"),
    }
}

/// The accepted dead letters.
pub async fn acceptances(config: &Config) -> Result<Vec<Acceptance>> {
    acceptances_in(&read_all(config).await?)
}

/// The accepted dead letters among `checkpoints` (what [`read_all`] read).
pub fn acceptances_in(checkpoints: &[Checkpoint]) -> Result<Vec<Acceptance>> {
    checkpoints
        .iter()
        .filter(|c| c.stage == ACCEPTED_STAGE)
        .map(|c| {
            serde_json::from_str(&c.value)
                .with_context(|| format!("the stored acceptance {} is unreadable", c.scope))
        })
        .collect()
}

/// Each table's backfill progress and resync marker, where there are some: the target's
/// (embedded) or the checkpoints topic's (Kafka).
pub async fn table_progress(
    config: &Config,
    scope: &tidemark_ingest::Scope,
    tables: &[tidemark_schemas::TableId],
) -> Result<TableProgress> {
    table_progress_in(&read_all(config).await?, scope, tables)
}

/// Per table: its backfill progress (a table backfilled in parts: the sum of its parts) and its
/// resync marker.
pub type TableProgress = (
    BTreeMap<tidemark_schemas::TableId, tidemark_ingest::BackfillCheckpoint>,
    BTreeMap<tidemark_schemas::TableId, tidemark_ingest::ResyncMarker>,
);

/// [`table_progress`] from `checkpoints` (what [`read_all`] read).
pub fn table_progress_in(
    checkpoints: &[Checkpoint],
    scope: &tidemark_ingest::Scope,
    tables: &[tidemark_schemas::TableId],
) -> Result<TableProgress> {
    let mut backfills = BTreeMap::new();
    for t in tables {
        let stored = tidemark_ingest::split::StoredBackfill::from_checkpoints(t, checkpoints)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(cp) = stored.combined() {
            backfills.insert(*t, cp);
        }
    }
    Ok((
        backfills,
        crate::resync::markers_in_scope(checkpoints, scope)?,
    ))
}
