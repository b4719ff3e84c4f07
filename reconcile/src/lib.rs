//! Reconcile: compare the source with the target in the target's terms, and classify every
//! difference (DESIGN.md §6) without false alarms under live load.
//!
//! ## Algorithm, per table
//! 1. **Source pass.** Keyset chunks of the source, as the backfill reads them (locking read, so
//!    nothing in the binlog before P is invisible to it). Around each read the end of log is
//!    observed: P before, H after. The rows are transformed with the *current* mapping and the
//!    same keys are read from the target. Reading and transforming run on a task of their own
//!    (its own connection), one chunk ahead of the comparison. A target written before source
//!    digests became XXH3 holds SHA-256 ones; those are compared in their own scheme.
//! 2. **Settling.** A key is *settled* once the apply frontier (every change up to it is in the
//!    target; in embedded mode the capture checkpoint stored with the rows) has reached H, and the
//!    target's version for the key is at most `repair_version(P)` — the target reflects the
//!    source no later than P, and no change between P and H touched the key (it would be applied
//!    and carry a higher version). Only settled keys are classified (`classify`); the others are
//!    re-read — source and target — on later passes until they settle or the settle timeout
//!    expires (`unsettled`, actionable). With a settle timeout of zero the reconciler does not
//!    wait and reports them as `in_flight` (not actionable).
//!
//!    When the frontier F is behind H (apply lags, or no pipeline runs at all and the end of log
//!    moved because of writes elsewhere), the reconciler reads the binlog from F to H itself, as
//!    a replica of its own (`reconcile.server_id`), and collects the keys of the table that
//!    changed there. A key that no change there touched is settled too: the target holds every
//!    change up to F, and the key's source row is the same at F and at the read. So a
//!    standalone `reconcile` settles every quiet key, and under live load only the keys that
//!    really changed wait.
//! 3. **Target pass.** The target's live keys are scanned; those the source pass did not expect
//!    (it remembers the target key the mapping gives each source row) are traced back to the
//!    source key they must come from (each source key column is held by one target key column,
//!    converted one to one; the traced key is checked by mapping it forward again). Those source
//!    keys are read from the source (`key IN (…)`); a row that exists now is compared as in the
//!    source pass, a gone one leaves its target row unexplained: settled the same way and
//!    reported `extra`. A target key that traces back to no source key at all is `extra` at
//!    once. Lineage plays no part in this: a row copied under a new key with its lineage, or
//!    with lineage that is empty or unreadable, is found by its key (DESIGN.md §6).
//!
//! Source reads that fail for a reason the server or the network gives (a restart, a deadlock,
//! a lock wait timeout) are repeated on fresh connections, a bounded number of times
//! (`tidemark_ingest::retry`).
//!
//! Every finding is a [`DriftEvent`] (handed to the caller as it is found, so 100,000 findings are
//! not held in memory) and counted in a [`Summary`] clustered by (table, class, columns).
//! Findings that re-reading the source can fix are collected for repair; repair itself goes
//! through the normal pipeline (the caller re-reads the keys with `Backfill::reread_keys`).
//!
//! Reconcile is throttled like backfill (`rows_per_second`) and resumable per chunk: its
//! checkpoint (`reconcile`, table) holds the last compared key until the table is done.

pub mod classify;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tidemark_ingest::backfill::{read_chunk, read_keys};
use tidemark_ingest::capture::key_of;
use tidemark_ingest::split::{KeyRange, KeySplit, Part};
use tidemark_ingest::{Progress, ReadRetry, Source};
use tidemark_schemas::{
    repair_version, BinlogPosition, ChangeEvent, Checkpoint, DriftEvent, Operation, Row, TableId,
    TargetRecord, Ustr, Version,
};
use tidemark_sink::Sink;
use tidemark_transform::{
    shown, Invariant, InvariantConfig, TablePlan, Tally, Transformer, Verdict,
};
use tracing::info;

pub use classify::{classify, DriftClass, Finding, Summary};

/// The replica server id of the reconciler's binlog reads when the caller sets none.
const FALLBACK_SERVER_ID: u32 = 4_294_000_000;

/// Checkpoint stage of the reconciler; the scope is the table.
pub const RECONCILE_STAGE: &str = "reconcile";

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Source(#[from] tidemark_ingest::Error),
    #[error(transparent)]
    Target(#[from] tidemark_sink::Error),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Mapping(#[from] tidemark_transform::ConfigError),
}

/// `[reconcile]`: how the comparison runs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Source rows per chunk.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u32,
    /// Cap on source rows compared per second (unset: no cap).
    #[serde(default)]
    pub rows_per_second: Option<u32>,
    /// How long a key may stay unsettled (changing, or ahead of the apply frontier) before it is
    /// reported `unsettled`. Zero: do not wait; report such keys `in_flight`.
    #[serde(default = "default_settle_timeout")]
    pub settle_timeout_seconds: f64,
    /// Pause between re-checks of unsettled keys, in milliseconds.
    #[serde(default = "default_recheck_ms")]
    pub recheck_interval_ms: u64,
    /// The replica server id the reconciler reads the binlog with when the apply frontier is
    /// behind (see "Settling"); unique among the source's replicas. Default: `source.server_id`
    /// + 1.
    #[serde(default)]
    pub server_id: Option<u32>,
}

fn default_chunk_rows() -> u32 {
    1000
}
fn default_settle_timeout() -> f64 {
    30.0
}
fn default_recheck_ms() -> u64 {
    250
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            chunk_rows: default_chunk_rows(),
            rows_per_second: None,
            settle_timeout_seconds: default_settle_timeout(),
            recheck_interval_ms: default_recheck_ms(),
            server_id: None,
        }
    }
}

impl ReconcileConfig {
    pub fn check(&self) -> Result<()> {
        if self.chunk_rows == 0 {
            return Err(Error::Config(
                "reconcile.chunk_rows: must be at least 1".into(),
            ));
        }
        if self.rows_per_second == Some(0) {
            return Err(Error::Config(
                "reconcile.rows_per_second: must be at least 1 (leave it out for no cap)".into(),
            ));
        }
        if !(0.0..=86_400.0).contains(&self.settle_timeout_seconds) {
            return Err(Error::Config(
                "reconcile.settle_timeout_seconds: must be from zero to 86400 seconds (a day)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Where the target stands: the position up to which every change is applied.
pub trait Frontier {
    fn frontier(&mut self) -> Result<Option<BinlogPosition>>;
}

/// The dead-letter output: the version of the latest rejected change of a key, if any.
pub trait DeadLetters {
    fn rejected_version(&mut self, table: &TableId, key_text: &str) -> Result<Option<Version>>;
}

/// What one run found.
#[derive(Debug, Default)]
pub struct Outcome {
    pub summary: Summary,
    /// Keys to re-read from the source to repair, per table.
    pub repair: BTreeMap<TableId, Vec<Row>>,
    /// Tables this run compared only from where an interrupted run stopped.
    pub resumed: Vec<TableId>,
}

/// Which part of the key space to compare.
#[derive(Debug, Clone, Copy)]
pub struct Sample(pub f64);

impl Sample {
    /// Deterministic: the same keys are sampled on every run.
    fn includes(self, key_text: &str) -> bool {
        if self.0 >= 1.0 {
            return true;
        }
        use sha2::Digest;
        let h = sha2::Sha256::digest(key_text.as_bytes());
        let x = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as f64 / u32::MAX as f64;
        x < self.0
    }
}

/// A key waiting to settle.
struct Pending {
    key: Row,
}

/// Where one table's findings go, and the keys still waiting to settle.
struct TableRun<'x> {
    frontier: &'x mut dyn Frontier,
    dead: &'x mut dyn DeadLetters,
    emit: &'x mut dyn FnMut(&DriftEvent),
    outcome: &'x mut Outcome,
    pending: BTreeMap<String, Pending>,
    /// The table's keys changed in the binlog after the apply frontier, when it is behind.
    touched: Option<Touched>,
    /// The table's invariants, each with what its two sides have aggregated so far.
    invariants: Vec<Tallied>,
}

/// An invariant and the settled rows of each side, aggregated.
struct Tallied {
    invariant: Invariant,
    source: Tally,
    target: Tally,
}

impl TableRun<'_> {
    /// A key settled: its source row (if the source has one) and its target record (if the
    /// target holds one) join the invariants' tallies, once each.
    fn settled(&mut self, source_row: Option<&Row>, stored: Option<&TargetRecord>) {
        for t in &mut self.invariants {
            if let Some(row) = source_row {
                t.invariant.add_source(&mut t.source, row);
            }
            if let Some(record) = stored {
                t.invariant.add_target(&mut t.target, record);
            }
        }
    }
}

/// Keys of one table changed in the binlog between `from` (the apply frontier when it was read)
/// and `to`.
struct Touched {
    from: BinlogPosition,
    to: BinlogPosition,
    keys: std::collections::HashSet<String>,
}

pub struct Reconciler<'a, S: Sink + ?Sized> {
    invariants: Vec<InvariantConfig>,
    source: Source,
    conn: mysql_async::Conn,
    sink: &'a mut S,
    transformer: &'a Transformer,
    config: ReconcileConfig,
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
    progress: Progress,
    /// Compare only this part of the table's split.
    part: Option<(Part, KeySplit)>,
}

/// Where a comparison was observed.
struct Observed {
    p: BinlogPosition,
    h: BinlogPosition,
}

impl<'a, S: Sink + ?Sized> Reconciler<'a, S> {
    pub async fn new(
        source: Source,
        sink: &'a mut S,
        transformer: &'a Transformer,
        config: ReconcileConfig,
    ) -> Result<Self> {
        config.check()?;
        let conn = source.new_connection().await?;
        let limiter = config.rows_per_second.map(|r| {
            Arc::new(RateLimiter::direct(
                Quota::per_second(NonZeroU32::new(r).expect("checked"))
                    .allow_burst(NonZeroU32::new(config.chunk_rows.min(r).max(1)).expect("≥ 1")),
            ))
        });
        Ok(Reconciler {
            invariants: Vec::new(),
            source,
            conn,
            sink,
            transformer,
            config,
            limiter,
            progress: Progress::default(),
            part: None,
        })
    }

    /// Compare only part `part` of `split` (of the one table of the run): the source pass reads
    /// the part's key range, the target pass handles the target keys whose source key lies in
    /// it (decided by the source server, in the key's collation) and, of the target keys that
    /// trace back to no source key, those whose hash falls to this part. The parts of a split
    /// together compare every key once. Invariants need a whole table: not evaluated.
    pub fn with_part(mut self, part: Part, split: KeySplit) -> Self {
        self.part = Some((part, split));
        self
    }

    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    /// Evaluate these invariants over the tables they name (those of the run's tables).
    pub fn with_invariants(mut self, invariants: Vec<InvariantConfig>) -> Self {
        self.invariants = invariants;
        self
    }

    /// The invariants of `tables`, compiled against the source and target tables: a
    /// misconfigured one stops the run before anything is read.
    pub async fn compile_invariants(
        &mut self,
        tables: &[TableId],
    ) -> Result<BTreeMap<TableId, Vec<Invariant>>> {
        let mut out: BTreeMap<TableId, Vec<Invariant>> = BTreeMap::new();
        for config in &self.invariants {
            let table = config.check().map_err(Error::Config)?;
            if !tables.contains(&table) {
                continue;
            }
            let schema = self.source.load_schema(&table).await?;
            let plan = self.transformer.plan(&schema)?;
            let invariant =
                Invariant::compile(config, &schema, plan.target_schema(), plan.zero_dates())
                    .map_err(Error::Config)?;
            out.entry(table).or_default().push(invariant);
        }
        Ok(out)
    }

    /// Compare `tables`; every finding goes to `emit` as it is made.
    pub async fn run(
        &mut self,
        tables: &[TableId],
        sample: Sample,
        frontier: &mut dyn Frontier,
        dead: &mut dyn DeadLetters,
        emit: &mut dyn FnMut(&DriftEvent),
    ) -> Result<Outcome> {
        let mut outcome = Outcome::default();
        let mut invariants = self.compile_invariants(tables).await?;
        for table in tables {
            let invariants = invariants.remove(table).unwrap_or_default();
            self.table(
                table,
                sample,
                invariants,
                frontier,
                dead,
                emit,
                &mut outcome,
            )
            .await?;
        }
        Ok(outcome)
    }

    async fn observe(&mut self) -> Result<BinlogPosition> {
        Ok(self.source.end_of_log().await?)
    }

    /// `keys`' rows read from the source between two observations of the end of log (P, rows,
    /// H); repeated on fresh connections when the read fails for a reason the server or the
    /// network gives (see `tidemark_ingest::retry`).
    async fn read_keys_observed(
        &mut self,
        schema: &tidemark_schemas::SourceSchema,
        keys: &[Row],
    ) -> Result<(BinlogPosition, Vec<Row>, BinlogPosition)> {
        let never = tokio_util::sync::CancellationToken::new();
        let mut retry = ReadRetry::default();
        loop {
            let attempt = async {
                let p = self.source.end_of_log().await?;
                let rows = read_keys(&mut self.conn, schema, keys).await?;
                let h = self.source.end_of_log().await?;
                Ok::<_, tidemark_ingest::Error>((p, rows, h))
            }
            .await;
            match attempt {
                Ok(read) => return Ok(read),
                Err(e) => {
                    retry
                        .after_failure(e, &format!("reconcile of {}", schema.table), &never)
                        .await?;
                    // A failed reconnect is one more failure of the next attempt.
                    if self.source.reconnect().await.is_ok() {
                        if let Ok(conn) = self.source.new_connection().await {
                            self.conn = conn;
                        }
                    }
                }
            }
        }
    }

    /// The target's records of `keys`; a key whose row cannot be read gets the reason instead
    /// (the batch read fails as a whole, so then each key is read on its own).
    fn read_target(
        &mut self,
        table: &str,
        keys: &[Row],
    ) -> Result<Vec<std::result::Result<Option<TargetRecord>, String>>> {
        tokio::task::block_in_place(|| match self.sink.read_many(table, keys) {
            Ok(records) => Ok(records.into_iter().map(Ok).collect()),
            Err(tidemark_sink::Error::Read { .. }) => keys
                .iter()
                .map(|k| match self.sink.read(table, k) {
                    Ok(record) => Ok(Ok(record)),
                    Err(e @ tidemark_sink::Error::Read { .. }) => Ok(Err(e.to_string())),
                    Err(e) => Err(e.into()),
                })
                .collect(),
            Err(e) => Err(e.into()),
        })
    }

    /// Make `touched` hold the keys of `table` changed in the binlog from `from` to at least
    /// `to`, reading only what it does not cover yet. Returns whether it does; `false` when the
    /// binlog cannot be read there (purged, a table whose shape changed since): keys then settle
    /// only once the apply frontier passes H.
    async fn scan_touched(
        &mut self,
        table: &TableId,
        from: BinlogPosition,
        to: BinlogPosition,
        touched: &mut Option<Touched>,
    ) -> bool {
        // A set read from an earlier frontier still holds every key changed after this one.
        let (covered_from, start, mut keys) = match touched.take() {
            Some(t) if t.from <= from && t.to >= to => {
                *touched = Some(t);
                return true;
            }
            Some(t) if t.from <= from => (t.from, t.to, t.keys),
            _ => (from, from, std::collections::HashSet::new()),
        };
        let read = async {
            let source = self.source.another().await?;
            let server_id = self.config.server_id.unwrap_or(FALLBACK_SERVER_ID);
            let scope = tidemark_ingest::Scope::from_config(&tidemark_ingest::SourceConfig {
                url: String::new(),
                server_id,
                databases: Vec::new(),
                tables: vec![table.to_string()],
                exclude_tables: Vec::new(),
            })?;
            let mut capture = tidemark_ingest::Capture::new(
                source,
                scope,
                server_id,
                tidemark_ingest::CaptureConfig::default(),
            );
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let collect = async {
                let mut found = Vec::new();
                while let Some(msg) = rx.recv().await {
                    if let tidemark_ingest::CaptureMessage::Changes(changes) = msg {
                        found.extend(changes.into_iter().map(|c| c.key.canonical_text()));
                    }
                }
                found
            };
            let never = tokio_util::sync::CancellationToken::new();
            let (reached, found) = tokio::join!(
                capture.run(start, tidemark_ingest::StopAt::Position(to), tx, never),
                collect
            );
            Ok::<_, tidemark_ingest::Error>((reached?, found))
        };
        match read.await {
            Ok((reached, found)) if reached >= to => {
                keys.extend(found);
                *touched = Some(Touched {
                    from: covered_from,
                    to: reached,
                    keys,
                });
                true
            }
            Ok((reached, _)) => {
                tracing::debug!(table = %table, %reached, %to, "the binlog read after the apply frontier stopped early");
                false
            }
            Err(e) => {
                tracing::debug!(table = %table, error = %e, "cannot read the binlog after the apply frontier; keys settle once the frontier passes them");
                false
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn table(
        &mut self,
        table: &TableId,
        sample: Sample,
        invariants: Vec<Invariant>,
        frontier: &mut dyn Frontier,
        dead: &mut dyn DeadLetters,
        emit: &mut dyn FnMut(&DriftEvent),
        outcome: &mut Outcome,
    ) -> Result<()> {
        let keep_rows = !invariants.is_empty();
        let schema = self.source.load_schema(table).await?;
        if let Some(range) = self
            .part
            .as_ref()
            .and_then(|(part, split)| split.range(part.index))
        {
            range.check_key(&schema)?;
        }
        let plan = self.transformer.plan(&schema)?;
        let target = plan.target_schema().clone();
        tokio::task::block_in_place(|| self.sink.ensure_table(&target))?;
        let started = Instant::now();
        let mut compared = 0u64;
        let mut run = TableRun {
            frontier,
            dead,
            emit,
            outcome,
            pending: BTreeMap::new(),
            touched: None,
            invariants: invariants
                .into_iter()
                .map(|invariant| Tallied {
                    invariant,
                    source: Tally::default(),
                    target: Tally::default(),
                })
                .collect(),
        };
        let scope = match &self.part {
            Some((part, _)) => tidemark_ingest::split::part_scope(table, part.index),
            None => table.to_string(),
        };
        // The part's keys: `None` for an empty part (past the split's last boundary).
        let range: Option<KeyRange> = match &self.part {
            Some((part, split)) => split.range(part.index),
            None => Some(KeyRange {
                after: None,
                upto: None,
            }),
        };
        // A part resumes only in the split it was compared in (a new split moves the ranges).
        let split_id: Option<String> = self.part.as_ref().map(|(_, s)| s.id.clone());
        if let Some((part, split)) = &self.part {
            info!(table = %table, part = %part, split = %split.id, "reconcile of one part of the table's split");
        }
        let mut last_key: Option<Row> =
            tokio::task::block_in_place(|| self.sink.checkpoint(RECONCILE_STAGE, &scope))?
                .and_then(|text| serde_json::from_str::<ReconcileCheckpoint>(&text).ok())
                .filter(|cp| !cp.done && cp.split == split_id)
                .and_then(|cp| cp.last_key);
        if let Some(k) = &last_key {
            info!(table = %table, after = %k.canonical_text(), "reconcile resumes after the last compared chunk");
        }
        // Invariants aggregate whole tables: a run that resumes in the middle sees only part.
        let resumed_after = last_key.as_ref().map(Row::canonical_text);
        if resumed_after.is_some() {
            run.outcome.resumed.push(*table);
        }

        // 1. Source pass. It remembers which keys it saw (a 64-bit hash each: 16 MB per million
        // keys), so that the target pass re-reads from the source only the target keys it did
        // not see, the candidates for `extra`. A key seen here and deleted from the source
        // during this run is compared again by the next run.
        let mut seen: std::collections::HashSet<u64> = std::collections::HashSet::new();
        // The next chunk is read (on its own connection and task) while this one is compared.
        let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel(1);
        let reader = tokio::spawn(read_ahead(
            self.source.another().await?,
            plan.clone(),
            sample,
            keep_rows,
            range.clone().map(|r| KeyRange {
                after: last_key.clone().or(r.after),
                upto: r.upto,
            }),
            self.config.chunk_rows,
            self.limiter.clone().map(|l| {
                // Rows waited for per chunk, at most the limiter's burst.
                let per_chunk = self
                    .config
                    .chunk_rows
                    .min(self.config.rows_per_second.unwrap_or(u32::MAX))
                    .max(1);
                (l, NonZeroU32::new(per_chunk).expect("≥ 1"))
            }),
            chunks_tx,
        ));
        while let Some(chunk) = chunks.recv().await {
            let SourceChunk {
                p,
                items,
                hashes,
                h,
                last,
            } = chunk?;
            if last.is_some() {
                last_key = last;
            }
            seen.extend(hashes);
            compared += items.len() as u64;
            let obs = Observed { p, h };
            self.evaluate(&plan, items, &obs, &mut run).await?;
            let cp = ReconcileCheckpoint {
                last_key: last_key.clone(),
                done: false,
                split: split_id.clone(),
            };
            tokio::task::block_in_place(|| self.sink.write(&[], &[cp.to_checkpoint(&scope)]))?;
            self.report(table, compared, started, false);
        }
        reader
            .await
            .map_err(|e| Error::Config(format!("the source reader of {table} failed: {e}")))?;

        // 3. Target pass: live target rows that no source row of the pass explains. A target
        // row's identity is its own key, never its lineage (DESIGN.md §6): the source key it
        // must come from is traced back from the target key through the mapping, and a target
        // key that traces back to nothing is `extra` whatever its lineage says.
        let mut after: Option<Row> = None;
        let server = self.source.info.identity;
        loop {
            let page = tokio::task::block_in_place(|| {
                self.sink.scan_keys(
                    &target.table,
                    after.as_ref(),
                    self.config.chunk_rows as usize,
                )
            })?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            let full = page.len() == self.config.chunk_rows as usize;
            let mut traced = Vec::new();
            let mut untraceable = Vec::new();
            for scanned in page.into_iter().filter(|r| !r.tombstone) {
                if seen.contains(&key_hash(&scanned.key.canonical_text())) {
                    continue;
                }
                match source_key_of_target(&plan, server, &scanned.key) {
                    Some(key) => {
                        let text = key.canonical_text();
                        if sample.includes(&text) {
                            traced.push((key, text));
                        }
                    }
                    None if sample.includes(&scanned.key.canonical_text()) => {
                        untraceable.push(scanned.key)
                    }
                    None => {}
                }
            }
            // In a part: only the traced keys of its range; of the untraceable ones, its share.
            if let Some((part, _)) = &self.part {
                let inside = match &range {
                    Some(range) if !traced.is_empty() => {
                        let keys: Vec<Row> = traced.iter().map(|(k, _)| k.clone()).collect();
                        tidemark_ingest::split::keys_in_range(&mut self.conn, &schema, range, &keys)
                            .await?
                    }
                    _ => vec![false; traced.len()],
                };
                let mut inside = inside.into_iter();
                traced.retain(|_| inside.next().unwrap_or(false));
                untraceable.retain(|k| {
                    key_hash(&k.canonical_text()) % u64::from(part.of) == u64::from(part.index)
                });
            }
            if !traced.is_empty() {
                let keys: Vec<Row> = traced.iter().map(|(k, _)| k.clone()).collect();
                let (p, found, h) = self.read_keys_observed(&schema, &keys).await?;
                let mut by_key: BTreeMap<String, Row> = found
                    .into_iter()
                    .map(|r| (key_of(&schema, &r).canonical_text(), r))
                    .collect();
                // A source row that exists now (written after the source pass read its chunk)
                // is compared as any other; a gone one leaves its target key unexplained.
                let batch: Vec<Prepared> = traced
                    .into_iter()
                    .map(|(k, text)| {
                        let row = by_key.remove(&text);
                        prepare(&plan, server, k, text, row, keep_rows)
                    })
                    .collect();
                let obs = Observed { p, h };
                self.evaluate(&plan, batch, &obs, &mut run).await?;
            }
            if !untraceable.is_empty() {
                self.report_untraceable(table, &target, untraceable, &mut run)?;
            }
            if !full {
                break;
            }
        }

        // 2. Settle the keys that were in flight.
        let timeout = Duration::from_secs_f64(self.config.settle_timeout_seconds);
        let deadline = Instant::now() + timeout;
        while !run.pending.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(self.config.recheck_interval_ms)).await;
            let keys: Vec<Row> = run.pending.values().map(|p| p.key.clone()).collect();
            for chunk in keys.chunks(500) {
                let (p, rows, h) = self.read_keys_observed(&schema, chunk).await?;
                let mut by_key: BTreeMap<String, Row> = rows
                    .into_iter()
                    .map(|r| (key_of(&schema, &r).canonical_text(), r))
                    .collect();
                let server = self.source.info.identity;
                let batch = chunk
                    .iter()
                    .map(|k| {
                        let text = k.canonical_text();
                        let row = by_key.remove(&text);
                        prepare(&plan, server, k.clone(), text, row, keep_rows)
                    })
                    .collect();
                let obs = Observed { p, h };
                self.evaluate(&plan, batch, &obs, &mut run).await?;
            }
        }
        let leftover_class = if timeout.is_zero() {
            DriftClass::InFlight
        } else {
            DriftClass::Unsettled
        };
        let now = self.observe().await?;
        let left_out = run.pending.len() as u64;
        let tallied = std::mem::take(&mut run.invariants);
        for (key_text, p) in std::mem::take(&mut run.pending) {
            let reason = if timeout.is_zero() {
                "not settled yet (the apply frontier is behind, or the key changed during the comparison); not waited for".to_string()
            } else {
                format!(
                    "still not settled after {}s: the apply frontier did not reach the comparison, or the key kept changing",
                    self.config.settle_timeout_seconds
                )
            };
            let event = DriftEvent {
                table: table.to_string(),
                key: key_text.clone(),
                class: leftover_class.as_str().into(),
                columns: Vec::new(),
                target_version: None,
                target_lineage: None,
                observed_before: now.to_string(),
                observed_after: now.to_string(),
                reason,
            };
            outcome
                .summary
                .add(&event.table, leftover_class, &[], &key_text);
            if leftover_class.repairable() {
                outcome.repair.entry(*table).or_default().push(p.key);
            }
            emit(&event);
        }
        outcome.summary.count_compared(&table.to_string(), compared);
        for t in tallied {
            let verdict = match (&resumed_after, &self.part) {
                (_, Some((part, _))) => Verdict::not_evaluated(
                    &t.invariant,
                    format!("this run compared part {part} of the table; an invariant needs the whole table: run reconcile without --part"),
                ),
                (Some(after), None) => Verdict::not_evaluated(
                    &t.invariant,
                    format!("this run resumed after key {after}, so it did not see the whole table; run reconcile again for a complete pass"),
                ),
                (None, None) => t.invariant.verdict(&t.source, &t.target, left_out),
            };
            report_verdict(&verdict, &now, outcome, emit);
        }
        let cp = ReconcileCheckpoint {
            last_key: None,
            done: true,
            split: split_id,
        };
        tokio::task::block_in_place(|| self.sink.write(&[], &[cp.to_checkpoint(&scope)]))?;
        self.report(table, compared, started, true);
        Ok(())
    }

    fn report(&self, table: &TableId, compared: u64, started: Instant, done: bool) {
        let mut map = self.progress.lock().expect("progress lock");
        let p = map.entry(*table).or_default();
        p.rows = compared;
        p.estimated_total = p.estimated_total.max(compared);
        p.rows_per_second = compared as f64 / started.elapsed().as_secs_f64().max(1e-3);
        p.done = done;
    }

    /// Classify the settled keys of `batch` (key, source row); keep the others pending.
    async fn evaluate(
        &mut self,
        plan: &TablePlan,
        mut prepared: Vec<Prepared>,
        obs: &Observed,
        run: &mut TableRun<'_>,
    ) -> Result<()> {
        let applied_to = run.frontier.frontier()?;
        let all_applied = applied_to.as_ref().is_some_and(|f| f >= &obs.h);
        // Behind: the keys changed between the frontier and H are the ones that may not be in
        // the target yet; every other key is (see "Settling" in the module doc).
        let untouched_known = match (&applied_to, all_applied) {
            (Some(from), false) => {
                self.scan_touched(&plan.source().table, *from, obs.h, &mut run.touched)
                    .await
            }
            _ => false,
        };
        let bound = repair_version(
            obs.p.file_seq().map_err(tidemark_ingest::Error::from)?,
            obs.p.offset,
        )
        .map_err(tidemark_ingest::Error::from)?;
        let schema = plan.source();
        let target_table = &plan.target_schema().table;
        // Taken, not cloned: nothing below reads them again.
        let target_keys: Vec<Row> = prepared
            .iter_mut()
            .map(|p| std::mem::take(&mut p.target_key))
            .collect();
        let stored_records = self.read_target(target_table, &target_keys)?;
        for (item, stored) in prepared.into_iter().zip(stored_records) {
            // A target row that cannot be read (text that is not UTF-8, a value of the wrong
            // type, written out of band or by corruption) is drift of that key, not the end of
            // the run: `value_mismatch`, repairable (a re-read of the source key rewrites it).
            let stored = match stored {
                Ok(stored) => stored,
                Err(unreadable) => {
                    let applied = all_applied
                        || (untouched_known
                            && run
                                .touched
                                .as_ref()
                                .is_some_and(|t| !t.keys.contains(&item.key_text)));
                    if !applied {
                        run.pending.insert(item.key_text, Pending { key: item.key });
                        continue;
                    }
                    run.pending.remove(&item.key_text);
                    run.settled(item.source_row.as_ref(), None);
                    for t in &mut run.invariants {
                        t.invariant.target_unreadable(&mut t.target, &unreadable);
                    }
                    // Something unreadable where the source has no row is extra all the same.
                    let class = if item.expected.is_some() || item.rejected_by_transform {
                        DriftClass::ValueMismatch
                    } else {
                        DriftClass::Extra
                    };
                    let event = DriftEvent {
                        table: schema.table.to_string(),
                        key: item.key_text.clone(),
                        class: class.as_str().into(),
                        columns: Vec::new(),
                        target_version: None,
                        target_lineage: None,
                        observed_before: obs.p.to_string(),
                        observed_after: obs.h.to_string(),
                        reason: format!("the target row cannot be read: {unreadable}"),
                    };
                    run.outcome
                        .summary
                        .add(&event.table, class, &[], &item.key_text);
                    run.outcome
                        .repair
                        .entry(schema.table)
                        .or_default()
                        .push(item.key);
                    (run.emit)(&event);
                    continue;
                }
            };
            let Prepared {
                key,
                key_text,
                expected,
                rejected_by_transform,
                source_row,
                ..
            } = item;
            let applied = all_applied
                || (untouched_known
                    && run
                        .touched
                        .as_ref()
                        .is_some_and(|t| !t.keys.contains(&key_text)));
            let settled = applied && stored.as_ref().is_none_or(|s| s.lineage.version <= bound);
            if !settled {
                run.pending.insert(key_text, Pending { key });
                continue;
            }
            run.pending.remove(&key_text);
            run.settled(source_row.as_ref(), stored.as_ref());
            // The source row cannot be held by the target, or its latest change was rejected
            // (a dead letter newer than what the target holds, while the source still has it).
            let rejected = rejected_by_transform
                || (expected.is_some()
                    && run
                        .dead
                        .rejected_version(&schema.table, &key_text)?
                        .is_some_and(|v| stored.as_ref().is_none_or(|s| v > s.lineage.version)));
            let Some(finding) = classify(expected.as_ref(), stored.as_ref(), rejected) else {
                continue;
            };
            let event = DriftEvent {
                table: schema.table.to_string(),
                key: key_text.clone(),
                class: finding.class.as_str().into(),
                columns: finding.columns.clone(),
                target_version: stored.as_ref().map(|s| s.lineage.version),
                target_lineage: stored.as_ref().map(|s| s.lineage.clone()),
                observed_before: obs.p.to_string(),
                observed_after: obs.h.to_string(),
                reason: finding.reason.clone(),
            };
            run.outcome
                .summary
                .add(&event.table, finding.class, &finding.columns, &key_text);
            if finding.class.repairable() {
                run.outcome
                    .repair
                    .entry(schema.table)
                    .or_default()
                    .push(key);
            }
            (run.emit)(&event);
        }
        Ok(())
    }
}

impl<'a, S: Sink + ?Sized> Reconciler<'a, S> {
    /// Live target rows whose key no source key maps to (a key of the wrong form for the
    /// mapping, written out of band): `extra`, at once — no change in flight can explain them.
    /// Not repairable through the source (there is no source key to re-read): the report says to
    /// delete them from the target.
    fn report_untraceable(
        &mut self,
        table: &TableId,
        target: &tidemark_schemas::TargetSchema,
        keys: Vec<Row>,
        run: &mut TableRun<'_>,
    ) -> Result<()> {
        let stored = self.read_target(&target.table, &keys)?;
        for (key, stored) in keys.into_iter().zip(stored) {
            // An unreadable row is reported all the same: its key alone makes it extra.
            let stored = match stored {
                Ok(Some(s)) if !s.is_tombstone() => Some(s),
                Ok(_) => continue,
                Err(e) => {
                    for t in &mut run.invariants {
                        t.invariant.target_unreadable(&mut t.target, &e);
                    }
                    None
                }
            };
            // Settled at once (nothing in flight explains it): the target side counts it.
            run.settled(None, stored.as_ref());
            let key_text = key.canonical_text();
            let class = DriftClass::Extra;
            let event = DriftEvent {
                table: table.to_string(),
                key: key_text.clone(),
                class: class.as_str().into(),
                columns: Vec::new(),
                target_version: stored.as_ref().map(|s| s.lineage.version),
                target_lineage: stored.map(|s| s.lineage),
                observed_before: String::new(),
                observed_after: String::new(),
                reason: format!(
                    "the target key {key_text} of {} corresponds to no key of {table}: no source row can explain it, whatever its lineage says; delete it from the target",
                    target.table
                ),
            };
            run.outcome.summary.add(&event.table, class, &[], &key_text);
            (run.emit)(&event);
        }
        Ok(())
    }
}

/// Put an invariant's verdict in the summary; each group that differs is an
/// `invariant_violation` finding (the key is the group, the one column the invariant with both
/// answers), and so are rows that could not be evaluated.
fn report_verdict(
    verdict: &Verdict,
    at: &BinlogPosition,
    outcome: &mut Outcome,
    emit: &mut dyn FnMut(&DriftEvent),
) {
    let class = DriftClass::InvariantViolation;
    let mut finding =
        |group: &str, source: Option<String>, target: Option<String>, reason: String| {
            let columns = vec![tidemark_schemas::DriftColumn {
                name: verdict.name.clone(),
                source,
                target,
            }];
            let event = DriftEvent {
                table: verdict.table.to_string(),
                key: group.to_string(),
                class: class.as_str().into(),
                columns,
                target_version: None,
                target_lineage: None,
                observed_before: at.to_string(),
                observed_after: at.to_string(),
                reason,
            };
            outcome
                .summary
                .add(&event.table, class, &event.columns, group);
            emit(&event);
        };
    for d in &verdict.differences {
        let (a, b) = (shown(&d.source), shown(&d.target));
        let reason = format!(
            "invariant \"{}\" differs in group {}: the source's `{}` gives {a}, the target's `{}` gives {b}",
            verdict.name, d.group, verdict.source_query, verdict.target_query
        );
        finding(&d.group, Some(a), Some(b), reason);
    }
    for f in &verdict.failures {
        finding(
            "(rows not evaluated)",
            None,
            None,
            format!("invariant \"{}\": {f}", verdict.name),
        );
    }
    outcome.summary.invariants.push(verdict.clone());
}

/// The target key the mapping gives source key `key` (a function of the source key alone: the
/// mapping rules see to it).
pub fn target_key_of(plan: &TablePlan, server: Ustr, key: &Row) -> Row {
    prepare(plan, server, key.clone(), String::new(), None, false).target_key
}

/// The source key whose rows the mapping writes at `target_key`, if there is one: each source key
/// column read back from the target key column that holds it, and checked by mapping it forward
/// again. `None` for a key no source key maps to.
pub fn source_key_of_target(plan: &TablePlan, server: Ustr, target_key: &Row) -> Option<Row> {
    let schema = plan.source();
    let mut key = Row::new();
    for (source_name, target_name) in plan.source_key_in_target() {
        let value = target_key.get(&target_name)?;
        if value.is_null() {
            return None;
        }
        let column = schema.column(&source_name)?;
        let text = value.to_string();
        key.push(
            source_name,
            tidemark_ingest::decode::from_canonical_text(column, &text).ok()?,
        );
    }
    (target_key_of(plan, server, &key).canonical_text() == target_key.canonical_text())
        .then_some(key)
}

/// A source key made ready for comparison: what the current mapping expects in the target.
struct Prepared {
    key: Row,
    key_text: String,
    /// The record the mapping makes of the source row; `None` when the source has no row, the
    /// mapping filters it out, or rejects it.
    expected: Option<TargetRecord>,
    rejected_by_transform: bool,
    /// The target key to read.
    target_key: Row,
    /// The source row itself, kept when the table has invariants (their source side is
    /// computed from source rows, never from the mapping's output).
    source_row: Option<Row>,
}

/// Prepare one source key (`key_text` is its canonical text) and its row, when the source has
/// it, with the current mapping.
fn prepare(
    plan: &TablePlan,
    server: Ustr,
    key: Row,
    key_text: String,
    source_row: Option<Row>,
    keep_row: bool,
) -> Prepared {
    let kept = if keep_row { source_row.clone() } else { None };
    let change = |op, after| ChangeEvent {
        source_server: server,
        table: plan.source().table,
        op,
        key: key.clone(),
        after,
        version: 0,
        position: BinlogPosition::new("-", 0),
        gtid: None,
        commit_time_us: 0,
        chunk: None,
    };
    let (expected, rejected_by_transform) = match source_row {
        Some(row) => match plan.apply(&change(Operation::Backfill, Some(row))) {
            // A row the mapping filters out is expected to be absent from the target.
            Ok(rec) if rec.is_tombstone() => (None, false),
            Ok(rec) => (Some(rec), false),
            Err(_) => (None, true),
        },
        None => (None, false),
    };
    let target_key = match &expected {
        Some(e) => e.key.clone(),
        // The mapping derives the target key of a gone row as it does for a delete.
        None => plan
            .apply(&change(Operation::Delete, None))
            .map_or_else(|_| key.clone(), |r| r.key),
    };
    Prepared {
        key,
        key_text,
        expected,
        rejected_by_transform,
        target_key,
        source_row: kept,
    }
}

/// One source chunk of the source pass: its rows in key order, observed at `p` before the read
/// and `h` after it, and the key of its last row.
struct SourceChunk {
    p: BinlogPosition,
    /// The sampled rows, prepared for comparison.
    items: Vec<Prepared>,
    /// [`key_hash`] of the target key of every row of the chunk, sampled or not.
    hashes: Vec<u64>,
    h: BinlogPosition,
    last: Option<Row>,
}

/// The source pass's reader: keyset chunks after `after`, each between two observations of the
/// end of log, transformed with the current mapping (so reading and transforming run beside the
/// comparison, on another thread), sent in order until the table ends (a short chunk), the
/// receiver is gone, or an error (sent as the last item). Throttled by the reconciler's
/// `rows_per_second`.
#[allow(clippy::too_many_arguments)]
async fn read_ahead(
    mut source: Source,
    plan: TablePlan,
    sample: Sample,
    keep_rows: bool,
    range: Option<KeyRange>,
    chunk_rows: u32,
    limiter: Option<(Arc<DefaultDirectRateLimiter>, NonZeroU32)>,
    out: tokio::sync::mpsc::Sender<Result<SourceChunk>>,
) {
    // An empty part has no source rows.
    let Some(KeyRange { mut after, upto }) = range else {
        return;
    };
    let never = tokio_util::sync::CancellationToken::new();
    let mut retry = ReadRetry::default();
    loop {
        if let Some((limiter, rows)) = &limiter {
            let _ = limiter.until_n_ready(*rows).await;
        }
        let read = loop {
            let attempt = async {
                let p = source.end_of_log().await?;
                let rows = read_chunk(
                    source.conn_mut(),
                    plan.source(),
                    after.as_ref(),
                    upto.as_ref(),
                    chunk_rows,
                )
                .await?;
                let h = source.end_of_log().await?;
                Ok::<_, tidemark_ingest::Error>((p, rows, h))
            }
            .await;
            match attempt {
                Ok(read) => {
                    retry.succeeded();
                    break Ok(read);
                }
                Err(e) => {
                    let what = format!("reconcile of {}", plan.source().table);
                    if let Err(e) = retry.after_failure(e, &what, &never).await {
                        break Err(Error::from(e));
                    }
                    // A failed reconnect is one more failure of the next attempt.
                    let _ = source.reconnect().await;
                }
            }
        };
        let server = source.info.identity;
        let mut full = false;
        let chunk = read.map(|(p, rows, h)| {
            full = rows.len() == chunk_rows as usize;
            let last = rows.last().map(|r| key_of(plan.source(), r));
            let mut items = Vec::with_capacity(rows.len());
            let mut hashes = Vec::with_capacity(rows.len());
            for row in rows {
                let key = key_of(plan.source(), &row);
                let text = key.canonical_text();
                if sample.includes(&text) {
                    let item = prepare(&plan, server, key, text, Some(row), keep_rows);
                    hashes.push(key_hash(&item.target_key.canonical_text()));
                    items.push(item);
                } else {
                    hashes.push(key_hash(
                        &target_key_of(&plan, server, &key).canonical_text(),
                    ));
                }
            }
            SourceChunk {
                p,
                items,
                hashes,
                h,
                last,
            }
        });
        let more = match &chunk {
            Ok(c) => {
                if let Some(last) = &c.last {
                    after = Some(last.clone());
                }
                full
            }
            Err(_) => false,
        };
        if out.send(chunk).await.is_err() || !more {
            return;
        }
    }
}

/// A fixed 64-bit hash of a key's canonical text (the same in every run and process).
fn key_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// A table's reconcile checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ReconcileCheckpoint {
    last_key: Option<Row>,
    done: bool,
    /// The split of a part's checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    split: Option<String>,
}

impl ReconcileCheckpoint {
    fn to_checkpoint(&self, scope: &str) -> Checkpoint {
        Checkpoint {
            stage: RECONCILE_STAGE.into(),
            scope: scope.into(),
            value: serde_json::to_string(self).expect("checkpoints serialize"),
        }
    }
}
