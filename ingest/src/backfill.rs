//! Backfill: copy table history in throttled keyset chunks that can never overwrite a fresher
//! live change.
//!
//! ## Algorithm (per table, DESIGN.md §2 and §4)
//! 1. Observe the end of the binlog, `P` (`SHOW MASTER STATUS`).
//! 2. Read the next chunk: `SELECT … WHERE key > last ORDER BY key LIMIT n LOCK IN SHARE MODE`.
//!    The key predicate is expanded for composite keys (`a > ? OR (a = ? AND b > ?)`), so ordering
//!    and comparison are always the server's, in the column's collation; ENUM and SET key values
//!    are passed as their numbers, which is how the server orders them.
//! 3. Emit each row as a `backfill` change with version `V(P) = file_seq × 2^32 + P − 2` (see
//!    `tidemark_schemas::backfill_version` for why not `− 1`: that value is the repair version)
//!    and the chunk named in its lineage, then a checkpoint `{last key, rows, done}` for the table.
//!    Rows are emitted as the result set streams in (in messages of [`ROWS_PER_MESSAGE`]), so
//!    reading a chunk overlaps with transforming and writing it and no chunk is held whole in
//!    memory; the checkpoint follows the chunk's last row.
//!
//! Why labelling a row with a position observed *before* the read is safe: the read sees every
//! transaction written before `P`, so the row is at least as new as `V(P)`; any change that also
//! reached the read has its own binlog event with a version above `V(P)`, which wins in the sink.
//! One trap: a transaction can be in the binlog before InnoDB makes it visible (group commit
//! writes the binlog first). A plain snapshot read could miss it while its row is labelled newer
//! than it — a stale row that would win forever. The chunk is therefore a *locking* read
//! (`LOCK IN SHARE MODE`): it waits for such a transaction's row locks and reads the committed
//! row. Locks are held only for the statement (autocommit).
//!
//! Capture must start at or before the first `P` of a backfill, or changes between them are lost:
//! `tidemark run` resolves capture's start position before the backfill begins.
//!
//! ## Throttling
//! - Chunk size adapts toward `target_chunk_seconds` (like pt-table-checksum's `--chunk-time`),
//!   between `min_chunk_rows` and `chunk_rows`.
//! - `rows_per_second` and `bytes_per_second` caps are `governor` rate limiters; a chunk waits for
//!   its rows before it is read and for its bytes after.
//! - Before each chunk: while the source's `Threads_running` is above `max_threads_running`, or
//!   (when reading from a replica) its lag is above `max_replica_lag_seconds`, back off.
//! - Downstream backpressure: the channel to apply is bounded; a full channel stops the reads.
//! - Pause/resume at runtime through [`BackfillControl`].
//!
//! ## Restart
//! The checkpoint per table holds the last key of the last chunk handed downstream and a done
//! flag; it is stored by apply in the same transaction as the chunk's rows. After `kill -9` the
//! backfill resumes with the next chunk.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, Value as MyValue};
use serde::{Deserialize, Serialize};
use tidemark_schemas::{
    backfill_version, repair_version, ChangeEvent, Checkpoint, Operation, Row, SourceSchema,
    SourceType, TableId, Value,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::capture::{key_of, CaptureMessage};
use crate::source::{
    columns_unchanged, decode_row, load_schema, quote_ident, select_rows, select_sql, Source,
};
use crate::split::{between_keys, KeyRange, KeySplit, Part};
use crate::{Error, ReadRetry, Result};

/// Checkpoint stage of the backfill; the scope is the table (`db.table`).
pub const BACKFILL_STAGE: &str = "backfill";

/// `[backfill]`: how history is copied.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackfillConfig {
    /// Whether `tidemark run` backfills the tables in scope beside capture.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Largest chunk, in rows.
    #[serde(default = "default_chunk_rows")]
    pub chunk_rows: u32,
    /// Smallest chunk, in rows.
    #[serde(default = "default_min_chunk_rows")]
    pub min_chunk_rows: u32,
    /// Chunk size adapts so that one chunk read takes about this long.
    #[serde(default = "default_target_chunk_seconds")]
    pub target_chunk_seconds: f64,
    /// Cap on rows read per second (unset: no cap).
    #[serde(default)]
    pub rows_per_second: Option<u32>,
    /// Cap on bytes read per second, counted on decoded values (unset: no cap).
    #[serde(default)]
    pub bytes_per_second: Option<u32>,
    /// Back off while the source's `Threads_running` is above this.
    #[serde(default = "default_max_threads_running")]
    pub max_threads_running: u64,
    /// When reading from a replica: back off while its lag is above this many seconds.
    #[serde(default)]
    pub max_replica_lag_seconds: Option<u64>,
    /// Seconds between progress lines when not on a terminal.
    #[serde(default = "default_progress_seconds")]
    pub progress_seconds: u64,
    /// Backfill each table in this many parts side by side, in this process (see
    /// [`crate::split`]); 1 reads each table whole. Parts in separate processes (pods) are run
    /// with `tidemark backfill --part i/N` instead.
    #[serde(default = "default_parts")]
    pub parts: u32,
}

fn default_enabled() -> bool {
    true
}
fn default_chunk_rows() -> u32 {
    10_000
}
fn default_min_chunk_rows() -> u32 {
    100
}
fn default_target_chunk_seconds() -> f64 {
    0.5
}
fn default_max_threads_running() -> u64 {
    64
}
fn default_progress_seconds() -> u64 {
    5
}
fn default_parts() -> u32 {
    1
}

impl Default for BackfillConfig {
    fn default() -> Self {
        BackfillConfig {
            enabled: default_enabled(),
            chunk_rows: default_chunk_rows(),
            min_chunk_rows: default_min_chunk_rows(),
            target_chunk_seconds: default_target_chunk_seconds(),
            rows_per_second: None,
            bytes_per_second: None,
            max_threads_running: default_max_threads_running(),
            max_replica_lag_seconds: None,
            progress_seconds: default_progress_seconds(),
            parts: default_parts(),
        }
    }
}

impl BackfillConfig {
    /// Check the settings; the error names the key.
    pub fn check(&self) -> Result<()> {
        let bad = |key: &str, message: &str| {
            Err(Error::Config {
                key: format!("backfill.{key}"),
                message: message.into(),
            })
        };
        if self.chunk_rows == 0 || self.min_chunk_rows == 0 {
            return bad("chunk_rows", "chunk sizes must be at least 1");
        }
        if self.min_chunk_rows > self.chunk_rows {
            return bad("min_chunk_rows", "must not exceed backfill.chunk_rows");
        }
        if self.target_chunk_seconds.is_nan() || self.target_chunk_seconds <= 0.0 {
            return bad(
                "target_chunk_seconds",
                "must be a positive number of seconds",
            );
        }
        if self.parts == 0 {
            return bad("parts", "must be at least 1 (1 reads each table whole)");
        }
        if self.rows_per_second == Some(0) {
            return bad(
                "rows_per_second",
                "must be at least 1 (leave it out for no cap)",
            );
        }
        if self.bytes_per_second == Some(0) {
            return bad(
                "bytes_per_second",
                "must be at least 1 (leave it out for no cap)",
            );
        }
        Ok(())
    }
}

/// A table's backfill checkpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackfillCheckpoint {
    /// Key of the last row handed downstream; `None` before the first chunk.
    pub last_key: Option<Row>,
    pub rows: u64,
    pub done: bool,
    pub chunks: u64,
    /// The source's estimate of the table's rows (at least `rows`), as last seen: for `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_rows: Option<u64>,
    /// The rate of the run that wrote this checkpoint, rows per second: for `status`'s ETA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows_per_second: Option<f64>,
    /// The split (`tidemark_ingest::split`) this backfill runs in: in a table's checkpoint, that
    /// its parts hold its progress; in a part's, which split the progress belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
}

impl BackfillCheckpoint {
    /// What `status` says of this backfill: rows read of the estimate, the rate and the time
    /// left at it, or done.
    pub fn progress_text(&self) -> String {
        if self.done {
            return format!("done ({} rows)", self.rows);
        }
        let mut out = match self.estimated_rows {
            Some(total) if total > 0 => format!(
                "{} of about {total} rows ({:.0}%)",
                self.rows,
                100.0 * self.rows.min(total) as f64 / total as f64
            ),
            _ => format!("{} rows", self.rows),
        };
        if let Some(rate) = self.rows_per_second.filter(|r| *r > 0.0) {
            out.push_str(&format!(", {rate:.0} rows/s"));
            if let Some(total) = self.estimated_rows {
                let left = total.saturating_sub(self.rows) as f64 / rate;
                out.push_str(&format!(", about {} left", human_duration(left)));
            }
        }
        out
    }
}

/// `seconds` as "42 s", "7 min", "3 h 5 min".
fn human_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s {
        0..=99 => format!("{s} s"),
        100..=5999 => format!("{} min", (s + 30) / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

impl BackfillCheckpoint {
    pub fn to_checkpoint(&self, table: &TableId) -> Checkpoint {
        Checkpoint {
            stage: BACKFILL_STAGE.into(),
            scope: table.to_string(),
            value: serde_json::to_string(self).expect("checkpoints serialize"),
        }
    }

    /// The checkpoint of part `index` of `table`'s split.
    pub fn to_part_checkpoint(&self, table: &TableId, index: u32) -> Checkpoint {
        Checkpoint {
            stage: crate::split::PART_STAGE.into(),
            scope: crate::split::part_scope(table, index),
            value: serde_json::to_string(self).expect("checkpoints serialize"),
        }
    }
}

/// What one backfill reads: a whole table, or one part of its split.
#[derive(Debug, Clone)]
struct Slot {
    table: TableId,
    /// The part's index and its keys.
    part: Option<(u32, KeyRange)>,
    /// How many parts the table is split in (1: whole).
    parts: u32,
}

impl Slot {
    fn whole(table: &TableId) -> Slot {
        Slot {
            table: *table,
            part: None,
            parts: 1,
        }
    }

    fn checkpoint(&self, checkpoint: &BackfillCheckpoint) -> Checkpoint {
        match &self.part {
            None => checkpoint.to_checkpoint(&self.table),
            Some((index, _)) => checkpoint.to_part_checkpoint(&self.table, *index),
        }
    }

    /// Where the next chunk starts: after the last key read, or after the part's lower bound.
    fn after<'a>(&'a self, checkpoint: &'a BackfillCheckpoint) -> Option<&'a Row> {
        checkpoint
            .last_key
            .as_ref()
            .or_else(|| self.part.as_ref().and_then(|(_, r)| r.after.as_ref()))
    }

    fn upto(&self) -> Option<&Row> {
        self.part.as_ref().and_then(|(_, r)| r.upto.as_ref())
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.part {
            None => write!(f, "{}", self.table),
            Some((index, _)) => write!(f, "{} part {index}", self.table),
        }
    }
}

/// Live progress of one table, shared with whoever displays it.
#[derive(Debug, Clone, Default)]
pub struct TableProgress {
    pub rows: u64,
    pub estimated_total: u64,
    pub done: bool,
    pub rows_per_second: f64,
    pub paused: bool,
    pub backing_off: Option<String>,
}

/// Progress of all tables of a backfill.
pub type Progress = Arc<Mutex<BTreeMap<TableId, TableProgress>>>;

/// Pause and resume a running backfill.
#[derive(Debug, Clone)]
pub struct BackfillControl {
    paused: Arc<watch::Sender<bool>>,
}

impl Default for BackfillControl {
    fn default() -> Self {
        BackfillControl {
            paused: Arc::new(watch::channel(false).0),
        }
    }
}

impl BackfillControl {
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
    pub fn toggle(&self) -> bool {
        let now = !*self.paused.borrow();
        self.paused.send_replace(now);
        now
    }
    fn subscribe(&self) -> watch::Receiver<bool> {
        self.paused.subscribe()
    }
}

/// The backfiller.
pub struct Backfill {
    source: Source,
    config: BackfillConfig,
    control: BackfillControl,
    progress: Progress,
    /// Each part's progress, while parts of a table run in this process (`progress` holds
    /// their sum under the table).
    part_progress: Arc<Mutex<BTreeMap<(TableId, u32), TableProgress>>>,
    /// Shared by the workers of one process (see [`Backfill::worker`]): the caps are the
    /// process's.
    rows_limiter: Option<Arc<DefaultDirectRateLimiter>>,
    bytes_limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// Largest chunk the row limiter admits in one piece.
    rows_burst: u32,
    /// Whether this process runs every part of a split table (in-process parts): then a table
    /// is done once all its parts are; a `--part` process runs one.
    all_parts_here: bool,
}

impl Backfill {
    pub fn new(source: Source, config: BackfillConfig, control: BackfillControl) -> Result<Self> {
        config.check()?;
        // A burst of a tenth of a second keeps the rate even over short windows.
        let rows_burst = config
            .rows_per_second
            .map(|r| (r / 10).max(1))
            .unwrap_or(u32::MAX);
        let limiter = |per_second: u32, burst: u32| {
            Arc::new(RateLimiter::direct(
                Quota::per_second(NonZeroU32::new(per_second).expect("checked non-zero"))
                    .allow_burst(NonZeroU32::new(burst).expect("burst ≥ 1")),
            ))
        };
        let rows_limiter = config.rows_per_second.map(|r| limiter(r, rows_burst));
        let bytes_limiter = config.bytes_per_second.map(|b| limiter(b, (b / 10).max(1)));
        Ok(Backfill {
            source,
            config,
            control,
            progress: Progress::default(),
            part_progress: Arc::default(),
            rows_limiter,
            bytes_limiter,
            rows_burst,
            all_parts_here: false,
        })
    }

    /// Another backfiller on its own connection, sharing this one's rate caps, pause control
    /// and progress: to run parts of a table side by side in one process.
    pub async fn worker(&self) -> Result<Backfill> {
        Ok(Backfill {
            source: self.source.another().await?,
            config: self.config.clone(),
            control: self.control.clone(),
            progress: self.progress.clone(),
            part_progress: self.part_progress.clone(),
            rows_limiter: self.rows_limiter.clone(),
            bytes_limiter: self.bytes_limiter.clone(),
            rows_burst: self.rows_burst,
            all_parts_here: true,
        })
    }

    /// The backfill configuration.
    pub fn config(&self) -> &BackfillConfig {
        &self.config
    }

    pub fn progress(&self) -> Progress {
        self.progress.clone()
    }

    pub fn source(&mut self) -> &mut Source {
        &mut self.source
    }

    /// Backfill `tables`, resuming each from its checkpoint, until all are done or `cancel`.
    /// Returns the rows emitted per table in this run.
    pub async fn run(
        &mut self,
        tables: &[TableId],
        checkpoints: &BTreeMap<TableId, BackfillCheckpoint>,
        out: &mpsc::Sender<CaptureMessage>,
        cancel: &CancellationToken,
    ) -> Result<BTreeMap<TableId, u64>> {
        let mut emitted = BTreeMap::new();
        let mut conn = self.source.new_connection().await?;
        for table in tables {
            let mut checkpoint = checkpoints.get(table).cloned().unwrap_or_default();
            if checkpoint.split.is_some() && !checkpoint.done {
                // Its parts hold its progress; a whole-table backfill reads it all again.
                info!(table = %table, "the table was being backfilled in parts: this backfill reads the whole table");
                checkpoint = BackfillCheckpoint::default();
            }
            if checkpoint.done {
                info!(table = %table, rows = checkpoint.rows, "backfill already complete");
                self.progress.lock().expect("progress lock").insert(
                    *table,
                    TableProgress {
                        rows: checkpoint.rows,
                        estimated_total: checkpoint.rows,
                        done: true,
                        ..Default::default()
                    },
                );
                continue;
            }
            let rows = match self
                .backfill_table(&mut conn, &Slot::whole(table), checkpoint, out, cancel)
                .await
            {
                Ok(rows) => rows,
                Err(e) if table_vanished(&e) || self.is_gone(table).await => {
                    // Dropped or renamed away during its backfill: its backfill is over (done).
                    // Capture, when it reaches that DDL, has the rows written so far tombstoned
                    // and a new name backfilled; a table created again under this name later
                    // (maybe already: the read failed on a missing table, whatever a look now
                    // finds) has all its rows in the binlog after capture's start.
                    warn!(table = %table, error = %e, "the table was dropped or renamed on the source during its backfill: its backfill ends here");
                    let rows = self
                        .progress
                        .lock()
                        .expect("progress lock")
                        .get(table)
                        .map_or(0, |p| p.rows);
                    let over = BackfillCheckpoint {
                        rows,
                        done: true,
                        ..BackfillCheckpoint::default()
                    };
                    if out
                        .send(CaptureMessage::Checkpoint(over.to_checkpoint(table)))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    self.set_progress(table, |p| p.done = true);
                    conn = self.source.new_connection().await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            emitted.insert(*table, rows);
            if cancel.is_cancelled() {
                break;
            }
        }
        let _ = conn.disconnect().await;
        Ok(emitted)
    }

    /// Whether `table` is missing on the source now (asked on a fresh connection).
    async fn is_gone(&mut self, table: &TableId) -> bool {
        let Ok(mut conn) = self.source.new_connection().await else {
            return false;
        };
        let gone = matches!(
            crate::source::table_exists(&mut conn, table).await,
            Ok(false)
        );
        let _ = conn.disconnect().await;
        gone
    }

    /// Backfill part `part` of `table` in `split`, from `checkpoint` (its stored progress in that
    /// split, or a fresh one). Returns the rows emitted in this run; the part's checkpoints carry
    /// the split's id. An empty part (past the split's last boundary) is done at once.
    pub async fn run_part(
        &mut self,
        table: &TableId,
        part: Part,
        split: &KeySplit,
        mut checkpoint: BackfillCheckpoint,
        out: &mpsc::Sender<CaptureMessage>,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        checkpoint.split = Some(split.id.clone());
        let empty = Slot {
            table: *table,
            part: Some((
                part.index,
                KeyRange {
                    after: None,
                    upto: None,
                },
            )),
            parts: part.of,
        };
        let Some(range) = split.range(part.index) else {
            info!(table = %table, part = %part, "this part of the split is empty");
            checkpoint.done = true;
            let _ = out
                .send(CaptureMessage::Checkpoint(
                    checkpoint.to_part_checkpoint(table, part.index),
                ))
                .await;
            self.set_slot_progress(&empty, |p| p.done = true);
            return Ok(0);
        };
        if checkpoint.done {
            info!(table = %table, part = %part, rows = checkpoint.rows, "this part's backfill is already complete");
            self.set_slot_progress(&empty, |p| {
                p.rows = checkpoint.rows;
                p.estimated_total = checkpoint.rows;
                p.done = true;
            });
            return Ok(0);
        }
        let slot = Slot {
            table: *table,
            part: Some((part.index, range)),
            parts: part.of,
        };
        let mut conn = self.source.new_connection().await?;
        let rows = self
            .backfill_table(&mut conn, &slot, checkpoint, out, cancel)
            .await;
        let _ = conn.disconnect().await;
        rows
    }

    async fn backfill_table(
        &mut self,
        conn: &mut Conn,
        slot: &Slot,
        mut checkpoint: BackfillCheckpoint,
        out: &mpsc::Sender<CaptureMessage>,
        cancel: &CancellationToken,
    ) -> Result<u64> {
        let table = &slot.table;
        let mut retry = ReadRetry::default();
        let mut reconnect = false;
        let (mut schema, estimate) = loop {
            match self.describe(conn, table, reconnect).await {
                Ok(described) => break described,
                Err(e) => {
                    retry
                        .after_failure(e, &format!("backfill of {slot}"), cancel)
                        .await?;
                    reconnect = true;
                }
            }
        };
        if let Some((_, range)) = &slot.part {
            range.check_key(&schema)?;
        }
        if out
            .send(CaptureMessage::Schema(schema.clone()))
            .await
            .is_err()
        {
            return Ok(0);
        }
        self.set_slot_progress(slot, |p| {
            p.rows = checkpoint.rows;
            // A part's share of the table's estimate (the split balanced them).
            p.estimated_total =
                (estimate.unwrap_or(0) / u64::from(slot.parts)).max(checkpoint.rows);
        });
        info!(table = %table, part = ?slot.part.as_ref().map(|(i, _)| i), resume_after = ?checkpoint.last_key.as_ref().map(Row::canonical_text), estimated_rows = ?estimate, "backfill of table started");

        let mut chunk_rows = self
            .config
            .min_chunk_rows
            .max(1000)
            .min(self.config.chunk_rows);
        let mut emitted = 0u64;
        let started = Instant::now();
        let mut paused = self.control.subscribe();
        // Chunks read again in a row because a column changed under their read.
        let mut reshaped = 0u32;
        retry.succeeded();
        reconnect = false;
        loop {
            if cancel.is_cancelled() {
                return Ok(emitted);
            }
            self.wait_while_paused(slot, &mut paused, cancel).await;
            let limit = chunk_rows.min(self.rows_burst);
            let step = self
                .read_chunk_downstream(
                    conn,
                    slot,
                    &mut schema,
                    &mut checkpoint,
                    limit,
                    reconnect,
                    out,
                    cancel,
                )
                .await;
            let (n, elapsed) = match step {
                Ok(Some(read)) => read,
                // Downstream is gone: shutting down.
                Ok(None) => return Ok(emitted),
                // A column dropped or renamed between the shape check and the read (ALTER TABLE
                // racing the chunk): the chunk is read again, in the shape the check then finds.
                // Bounded: a shape that keeps failing the read is an error.
                Err(e) if column_vanished(&e) && reshaped < 10 => {
                    reshaped += 1;
                    info!(table = %table, error = %e, "a column changed under the chunk's read: reading it again in the table's new shape");
                    continue;
                }
                Err(e) => {
                    retry
                        .after_failure(e, &format!("backfill of {slot}"), cancel)
                        .await?;
                    // Repeat the chunk from the last checkpoint, on fresh connections.
                    reconnect = true;
                    continue;
                }
            };
            retry.succeeded();
            reconnect = false;
            reshaped = 0;
            emitted += n;
            let rate = emitted as f64 / started.elapsed().as_secs_f64().max(1e-3);
            self.set_slot_progress(slot, |pr| {
                pr.rows = checkpoint.rows;
                pr.estimated_total = pr.estimated_total.max(checkpoint.rows);
                pr.rows_per_second = rate;
                pr.done = checkpoint.done;
            });
            if checkpoint.done {
                info!(table = %table, part = ?slot.part.as_ref().map(|(i, _)| i), rows = checkpoint.rows, chunks = checkpoint.chunks, "backfill of table complete");
                return Ok(emitted);
            }
            // Adapt toward the target chunk time, halfway each step.
            if elapsed > 0.0 {
                let ideal = f64::from(chunk_rows) * self.config.target_chunk_seconds / elapsed;
                let next = (f64::from(chunk_rows) + ideal) / 2.0;
                chunk_rows =
                    (next as u32).clamp(self.config.min_chunk_rows, self.config.chunk_rows);
            }
        }
    }

    /// The table's description and the server's estimate of its rows (on fresh connections
    /// when `reconnect`).
    async fn describe(
        &mut self,
        conn: &mut Conn,
        table: &TableId,
        reconnect: bool,
    ) -> Result<(Arc<SourceSchema>, Option<u64>)> {
        if reconnect {
            self.source.reconnect().await?;
            *conn = self.source.new_connection().await?;
        }
        let schema = Arc::new(load_schema(conn, self.source.info.flavor, table).await?);
        let estimate: Option<u64> = conn
            .exec_first(
                "SELECT CAST(TABLE_ROWS AS CHAR) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
                (table.database.as_str(), table.table.as_str()),
            )
            .await?
            .and_then(|s: String| s.parse().ok());
        Ok((schema, estimate))
    }

    /// Read one chunk after `checkpoint`'s last key and send it downstream, rows first, then
    /// the updated checkpoint. Returns the rows read and the seconds the read took, or `None`
    /// when downstream is gone. `reconnect`: open fresh connections first (the last attempt
    /// failed). On error nothing of `checkpoint` has changed but its chunk count, so the chunk
    /// can be repeated.
    #[allow(clippy::too_many_arguments)]
    async fn read_chunk_downstream(
        &mut self,
        conn: &mut Conn,
        slot: &Slot,
        schema: &mut Arc<SourceSchema>,
        checkpoint: &mut BackfillCheckpoint,
        limit: u32,
        reconnect: bool,
        out: &mpsc::Sender<CaptureMessage>,
        cancel: &CancellationToken,
    ) -> Result<Option<(u64, f64)>> {
        let table = &slot.table;
        if reconnect {
            self.source.reconnect().await?;
            *conn = self.source.new_connection().await?;
        }
        self.back_off_while_loaded(conn, slot, cancel).await?;
        if let Some(l) = &self.rows_limiter {
            l.until_n_ready(NonZeroU32::new(limit).expect("limit ≥ 1"))
                .await
                .expect("chunk within the limiter's burst");
        }
        let p = self.source.end_of_log().await?;
        // The table's shape now, described *after* observing P: a schema change whose binlog
        // event is before P has completed, so the read below uses its columns; one after P gives
        // rows labelled older than it, which the re-read after that change rewrites. Reading with
        // an older column list would label rows of the old shape newer than the change.
        if !columns_unchanged(conn, schema).await? {
            let now = load_schema(conn, self.source.info.flavor, table).await?;
            info!(table = %table, "the table's schema changed during its backfill: reading it in its new shape");
            *schema = Arc::new(now);
            if out
                .send(CaptureMessage::Schema(schema.clone()))
                .await
                .is_err()
            {
                return Ok(None);
            }
        }
        let schema: &SourceSchema = schema;
        let version = backfill_version(p.file_seq()?, p.offset)?;
        checkpoint.chunks += 1;
        let chunk_name: std::sync::Arc<str> = format!("{table}#{}", checkpoint.chunks).into();
        let now_us = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000;
        let server = self.source.info.identity;
        let event = |row: Row| ChangeEvent {
            source_server: server,
            table: *table,
            op: Operation::Backfill,
            key: key_of(schema, &row),
            after: Some(row),
            version,
            position: p,
            gtid: None,
            commit_time_us: now_us as i64,
            chunk: Some(chunk_name.clone()),
        };
        // Rows go downstream in messages of ROWS_PER_MESSAGE as they arrive, so the server's
        // read of a chunk overlaps with transform and write, and a chunk is never held whole
        // in memory. The chunk's row locks last until its last row is read, backpressure
        // included: that is the time `elapsed` measures and the chunk size adapts to.
        let read_started = Instant::now();
        let (tail, params) = chunk_tail(schema, slot.after(checkpoint), slot.upto(), limit);
        let mut result = conn.exec_iter(select_sql(schema, &tail), params).await?;
        let mut n = 0u64;
        // Sized only when a bytes-per-second cap needs it.
        let mut bytes = 0u64;
        let mut piece = Vec::with_capacity(ROWS_PER_MESSAGE);
        let mut last_key = None;
        while let Some(row) = result.next().await? {
            let row = decode_row(schema, row)?;
            if self.bytes_limiter.is_some() {
                bytes += row_bytes(&row);
            }
            piece.push(event(row));
            n += 1;
            if piece.len() == ROWS_PER_MESSAGE && !send_piece(out, &mut piece, &mut last_key).await
            {
                return Ok(None);
            }
        }
        if !piece.is_empty() && !send_piece(out, &mut piece, &mut last_key).await {
            return Ok(None);
        }
        result.drop_result().await?;
        let elapsed = read_started.elapsed().as_secs_f64();
        if last_key.is_some() {
            checkpoint.last_key = last_key;
        }
        checkpoint.rows += n;
        checkpoint.done = n < u64::from(limit);
        if let Some(p) = self.slot_progress(slot) {
            checkpoint.estimated_rows = Some(p.estimated_total.max(checkpoint.rows));
            checkpoint.rows_per_second = (p.rows_per_second > 0.0).then_some(p.rows_per_second);
        }
        if out
            .send(CaptureMessage::Checkpoint(slot.checkpoint(checkpoint)))
            .await
            .is_err()
        {
            return Ok(None);
        }
        if let Some(l) = &self.bytes_limiter {
            wait_for_bytes(l, bytes).await;
        }
        Ok(Some((n, elapsed)))
    }

    /// A slot's progress: its table's, or its part's.
    fn slot_progress(&self, slot: &Slot) -> Option<TableProgress> {
        match &slot.part {
            None => self
                .progress
                .lock()
                .expect("progress lock")
                .get(&slot.table)
                .cloned(),
            Some((index, _)) => self
                .part_progress
                .lock()
                .expect("progress lock")
                .get(&(slot.table, *index))
                .cloned(),
        }
    }

    /// Update a slot's progress: a part's, then its table's as the sum of the parts seen (done
    /// once every part is).
    fn set_slot_progress(&self, slot: &Slot, f: impl FnOnce(&mut TableProgress)) {
        let Some((index, _)) = &slot.part else {
            return self.set_progress(&slot.table, f);
        };
        let sum = {
            let mut parts = self.part_progress.lock().expect("progress lock");
            f(parts.entry((slot.table, *index)).or_default());
            let mut sum = TableProgress {
                done: true,
                ..TableProgress::default()
            };
            let mut seen = 0;
            for p in parts
                .range((slot.table, 0)..=(slot.table, u32::MAX))
                .map(|(_, p)| p)
            {
                seen += 1;
                sum.rows += p.rows;
                sum.estimated_total += p.estimated_total;
                sum.rows_per_second += p.rows_per_second;
                sum.done &= p.done;
                sum.paused |= p.paused;
                if sum.backing_off.is_none() {
                    sum.backing_off.clone_from(&p.backing_off);
                }
            }
            // Parts run in other processes are not seen here: only this process's sum (a `--part`
            // process's table is done when its part is).
            sum.done &= seen == slot.parts || !self.all_parts_here;
            sum
        };
        self.set_progress(&slot.table, |p| *p = sum);
    }

    /// Update the table's progress, and its metrics (gauges labelled by table):
    /// `tidemark_backfill_rows` (rows read so far, resumed runs included),
    /// `tidemark_backfill_rows_estimated` (the source's estimate, at least the rows read),
    /// `tidemark_backfill_done` and `tidemark_backfill_paused` (0 or 1) and
    /// `tidemark_backfill_rows_per_second` (this run's rate).
    fn set_progress(&self, table: &TableId, f: impl FnOnce(&mut TableProgress)) {
        let mut map = self.progress.lock().expect("progress lock");
        let p = map.entry(*table).or_default();
        f(p);
        let label = table.to_string();
        metrics::gauge!("tidemark_backfill_rows", "table" => label.clone()).set(p.rows as f64);
        metrics::gauge!("tidemark_backfill_rows_estimated", "table" => label.clone())
            .set(p.estimated_total as f64);
        metrics::gauge!("tidemark_backfill_done", "table" => label.clone())
            .set(f64::from(u8::from(p.done)));
        metrics::gauge!("tidemark_backfill_paused", "table" => label.clone())
            .set(f64::from(u8::from(p.paused)));
        metrics::gauge!("tidemark_backfill_rows_per_second", "table" => label.clone())
            .set(p.rows_per_second);
        // Time left at the current rate, once there is one (0 when done).
        if p.done || p.rows_per_second > 0.0 {
            let left = if p.done {
                0.0
            } else {
                p.estimated_total.saturating_sub(p.rows) as f64 / p.rows_per_second
            };
            metrics::gauge!("tidemark_backfill_eta_seconds", "table" => label).set(left);
        }
    }

    async fn wait_while_paused(
        &self,
        slot: &Slot,
        paused: &mut watch::Receiver<bool>,
        cancel: &CancellationToken,
    ) {
        if !*paused.borrow_and_update() {
            return;
        }
        info!(table = %slot, "backfill paused");
        self.set_slot_progress(slot, |p| p.paused = true);
        while *paused.borrow_and_update() {
            tokio::select! {
                _ = cancel.cancelled() => break,
                changed = paused.changed() => if changed.is_err() { break },
            }
        }
        self.set_slot_progress(slot, |p| p.paused = false);
        info!(table = %slot, "backfill resumed");
    }

    /// Wait while the source is busy (Threads_running) or, on a replica, lagging.
    async fn back_off_while_loaded(
        &self,
        conn: &mut Conn,
        slot: &Slot,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let mut wait = Duration::from_millis(100);
        loop {
            let reason = self.source_load(conn).await?;
            self.set_slot_progress(slot, |p| p.backing_off = reason.clone());
            let Some(reason) = reason else {
                return Ok(());
            };
            warn!(table = %slot, reason = %reason, wait = ?wait, "backfill backing off");
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }

    async fn source_load(&self, conn: &mut Conn) -> Result<Option<String>> {
        let running: Option<(String, String)> = conn
            .query_first("SHOW GLOBAL STATUS LIKE 'Threads_running'")
            .await?;
        if let Some(n) = running.and_then(|(_, v)| v.parse::<u64>().ok()) {
            if n > self.config.max_threads_running {
                return Ok(Some(format!(
                    "Threads_running {n} > backfill.max_threads_running {}",
                    self.config.max_threads_running
                )));
            }
        }
        if let Some(max_lag) = self.config.max_replica_lag_seconds {
            match replica_lag(conn).await? {
                Some(Some(lag)) if lag > max_lag => {
                    return Ok(Some(format!(
                        "replica lag {lag}s > backfill.max_replica_lag_seconds {max_lag}"
                    )))
                }
                Some(None) => {
                    return Ok(Some(
                        "replication on the source replica is stopped (lag unknown)".into(),
                    ))
                }
                _ => {}
            }
        }
        Ok(None)
    }

    /// Re-read the given keys of `table` from the source and emit them as `repair` changes with
    /// a fresh version; a key that no longer exists becomes a tombstone. Returns (rows, tombstones).
    pub async fn reread_keys(
        &mut self,
        table: &TableId,
        keys: &[Row],
        out: &mpsc::Sender<CaptureMessage>,
    ) -> Result<(u64, u64)> {
        let mut conn = self.source.new_connection().await?;
        let schema = Arc::new(load_schema(&mut conn, self.source.info.flavor, table).await?);
        let _ = out.send(CaptureMessage::Schema(schema.clone())).await;
        let (mut found_total, mut missing_total) = (0u64, 0u64);
        let never = CancellationToken::new();
        let mut retry = ReadRetry::default();
        for batch in keys.chunks(500) {
            let (p, rows) = loop {
                let attempt = async {
                    let p = self.source.end_of_log().await?;
                    Ok::<_, Error>((p, read_keys(&mut conn, &schema, batch).await?))
                }
                .await;
                match attempt {
                    Ok(read) => break read,
                    Err(e) => {
                        retry
                            .after_failure(e, &format!("re-read of keys of {table}"), &never)
                            .await?;
                        // A failed reconnect is one more failure of the next attempt.
                        if self.source.reconnect().await.is_ok() {
                            if let Ok(fresh) = self.source.new_connection().await {
                                conn = fresh;
                            }
                        }
                    }
                }
            };
            retry.succeeded();
            let found: BTreeMap<String, Row> = rows
                .into_iter()
                .map(|r| (key_of(&schema, &r).canonical_text(), r))
                .collect();
            let present = batch
                .iter()
                .filter(|k| found.contains_key(&k.canonical_text()))
                .count() as u64;
            found_total += present;
            missing_total += batch.len() as u64 - present;
            let changes = self.repairs(table, batch, found, p)?;
            if !send_changes(out, changes).await {
                break;
            }
        }
        let _ = conn.disconnect().await;
        Ok((found_total, missing_total))
    }

    /// The rows a table gone from the source (dropped, or renamed away) left in the target:
    /// each of `keys` becomes a tombstone through the normal path, as [`Backfill::reread_keys`]
    /// makes one of a key the source no longer has, at the repair version of `absent_at`: an end
    /// of log observed *before* the table was found missing. Every row the table had is older;
    /// a table of the same name created again after that (and its rows) is newer, so its rows
    /// win over these tombstones. `schema` is the table's last description (the source has none
    /// any more). Returns the number of tombstones.
    pub async fn tombstone_keys(
        &mut self,
        schema: Arc<SourceSchema>,
        keys: &[Row],
        absent_at: tidemark_schemas::BinlogPosition,
        out: &mpsc::Sender<CaptureMessage>,
    ) -> Result<u64> {
        let table = schema.table;
        let _ = out.send(CaptureMessage::Schema(schema)).await;
        for batch in keys.chunks(500) {
            let changes = self.repairs(&table, batch, BTreeMap::new(), absent_at)?;
            if !send_changes(out, changes).await {
                break;
            }
        }
        Ok(keys.len() as u64)
    }

    /// `repair` changes of `keys`, read from the source at `p`: the row `found` holds for a key
    /// (by canonical text), a tombstone where it holds none.
    fn repairs(
        &self,
        table: &TableId,
        keys: &[Row],
        found: BTreeMap<String, Row>,
        p: tidemark_schemas::BinlogPosition,
    ) -> Result<Vec<ChangeEvent>> {
        let version = repair_version(p.file_seq()?, p.offset)?;
        let now_us = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64;
        let server = self.source.info.identity;
        Ok(keys
            .iter()
            .map(|key| ChangeEvent {
                source_server: server,
                table: *table,
                op: Operation::Repair,
                key: key.clone(),
                after: found.get(&key.canonical_text()).cloned(),
                version,
                position: p,
                gtid: None,
                commit_time_us: now_us,
                chunk: None,
            })
            .collect())
    }
}

/// Lag of the replica this connection reads from: `None` when it is not a replica,
/// `Some(None)` when replication is stopped.
async fn replica_lag(conn: &mut Conn) -> Result<Option<Option<u64>>> {
    let rows: Vec<mysql_async::Row> = match conn.query("SHOW REPLICA STATUS").await {
        Ok(r) => r,
        Err(_) => conn.query("SHOW SLAVE STATUS").await?,
    };
    let Some(row) = rows.into_iter().next() else {
        return Ok(None);
    };
    let columns = row.columns_ref().to_vec();
    let idx = columns.iter().position(|c| {
        let n = c.name_str();
        n == "Seconds_Behind_Source" || n == "Seconds_Behind_Master"
    });
    Ok(Some(
        idx.and_then(|i| row.get::<Option<u64>, _>(i).flatten()),
    ))
}

async fn wait_for_bytes(limiter: &DefaultDirectRateLimiter, bytes: u64) {
    let mut remaining = bytes;
    while remaining > 0 {
        // Ask in pieces no larger than the limiter's burst.
        let mut piece = remaining.min(u64::from(u32::MAX)) as u32;
        loop {
            match limiter
                .until_n_ready(NonZeroU32::new(piece.max(1)).expect("≥ 1"))
                .await
            {
                Ok(_) => break,
                Err(governor::InsufficientCapacity(cap)) => piece = cap.max(1),
            }
        }
        remaining -= u64::from(piece.max(1)).min(remaining);
    }
}

/// Decoded size of a row, for the bytes-per-second cap.
fn row_bytes(row: &Row) -> u64 {
    row.iter()
        .map(|(_, v)| match v {
            Value::Text(s) | Value::Json(s) | Value::Decimal(s) | Value::Enum(s) => s.len() as u64,
            Value::Bytes(b) | Value::Geometry(b) => b.len() as u64,
            Value::Set(m) => m.iter().map(|s| s.len() as u64 + 1).sum(),
            Value::Null => 1,
            _ => 8,
        })
        .sum()
}

/// The parameter that makes the server compare a key column exactly as it orders it.
pub(crate) fn key_param(column: &tidemark_schemas::SourceColumn, value: &Value) -> MyValue {
    match (value, &column.ty) {
        (Value::Enum(name), SourceType::Enum { members }) => MyValue::UInt(
            members
                .iter()
                .position(|m| m == name)
                .map_or(0, |i| i as u64 + 1),
        ),
        (Value::Set(names), SourceType::Set { members }) => MyValue::UInt(
            members
                .iter()
                .enumerate()
                .filter(|(_, m)| names.contains(m))
                .fold(0u64, |acc, (i, _)| acc | (1 << i)),
        ),
        (Value::Null, _) => MyValue::NULL,
        (Value::Int(i), _) => MyValue::Int(*i),
        (Value::UInt(u), _) => MyValue::UInt(*u),
        (Value::Float(f), _) => MyValue::Float(*f),
        (Value::Double(f), _) => MyValue::Double(*f),
        (Value::Year(y), _) => MyValue::UInt(u64::from(*y)),
        (Value::Bit { value, .. }, _) => MyValue::UInt(*value),
        (Value::Bytes(b), _) | (Value::Geometry(b), _) => MyValue::Bytes(b.clone()),
        (other, _) => MyValue::Bytes(other.to_string().into_bytes()),
    }
}

/// The rows of `schema`'s table in `range`, counted by the server with the same predicates a
/// part's backfill reads with.
pub async fn count_range(conn: &mut Conn, schema: &SourceSchema, range: &KeyRange) -> Result<u64> {
    let (tail, params) = chunk_tail(schema, range.after.as_ref(), range.upto.as_ref(), 1);
    let predicate = tail.split(" ORDER BY ").next().unwrap_or_default();
    let sql = format!(
        "SELECT COUNT(*) FROM {}.{} {predicate}",
        quote_ident(&schema.table.database),
        quote_ident(&schema.table.table)
    );
    let n: Option<u64> = conn.exec_first(sql, params).await?;
    Ok(n.unwrap_or(0))
}

/// Read up to `limit` rows after `after` (and at or below `upto`) in key order, with a locking
/// read (see the module doc).
pub async fn read_chunk(
    conn: &mut Conn,
    schema: &SourceSchema,
    after: Option<&Row>,
    upto: Option<&Row>,
    limit: u32,
) -> Result<Vec<Row>> {
    let (tail, params) = chunk_tail(schema, after, upto, limit);
    select_rows(conn, schema, &tail, params).await
}

/// The `WHERE … ORDER BY … LIMIT … LOCK IN SHARE MODE` of a chunk of up to `limit` rows after
/// `after`, with its parameters.
fn chunk_tail(
    schema: &SourceSchema,
    after: Option<&Row>,
    upto: Option<&Row>,
    limit: u32,
) -> (String, Params) {
    let key_cols: Vec<&tidemark_schemas::SourceColumn> = schema.key_columns().collect();
    let order: Vec<String> = key_cols.iter().map(|c| quote_ident(&c.name)).collect();
    let (predicate, params) = between_keys(&key_cols, after, upto);
    let tail = format!(
        "{predicate} ORDER BY {} LIMIT {limit} LOCK IN SHARE MODE",
        order.join(", ")
    );
    (tail, Params::Positional(params))
}

/// Read the rows with the given keys (locking read), in statements of at most 4,000 keys (a
/// prepared statement holds at most 65,535 placeholders).
pub async fn read_keys(conn: &mut Conn, schema: &SourceSchema, keys: &[Row]) -> Result<Vec<Row>> {
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(4000) {
        out.extend(read_some_keys(conn, schema, chunk).await?);
    }
    Ok(out)
}

async fn read_some_keys(conn: &mut Conn, schema: &SourceSchema, keys: &[Row]) -> Result<Vec<Row>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    // `key IN (…)`, or `(a, b) IN ((…), …)` for a composite key: one range lookup per key for
    // the server, where an OR chain of equalities costs the optimizer time in its length.
    let key_cols: Vec<&tidemark_schemas::SourceColumn> = schema.key_columns().collect();
    let mut params = Vec::with_capacity(keys.len() * key_cols.len());
    for key in keys {
        for col in &key_cols {
            params.push(key_param(col, key.get(&col.name).unwrap_or(&Value::Null)));
        }
    }
    let names: Vec<String> = key_cols.iter().map(|c| quote_ident(&c.name)).collect();
    let tail = if key_cols.len() == 1 {
        format!(
            "WHERE {} IN ({}) LOCK IN SHARE MODE",
            names[0],
            vec!["?"; keys.len()].join(",")
        )
    } else {
        let tuple = format!("({})", vec!["?"; key_cols.len()].join(","));
        format!(
            "WHERE ({}) IN ({}) LOCK IN SHARE MODE",
            names.join(","),
            vec![tuple.as_str(); keys.len()].join(",")
        )
    };
    select_rows(conn, schema, &tail, Params::Positional(params)).await
}

/// Parse one line of a keys file: `{"table": "db.t", "key": {"id": 42}}`.
pub fn parse_key_line(
    line: &str,
) -> std::result::Result<(TableId, serde_json::Map<String, serde_json::Value>), String> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct KeyLine {
        table: String,
        key: serde_json::Map<String, serde_json::Value>,
    }
    let parsed: KeyLine = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok((parsed.table.parse()?, parsed.key))
}

/// Most rows in one message downstream. The channel to apply is bounded in messages, so this is
/// what bounds the rows in flight (and the memory they hold) to `queue_capacity` × this, however
/// large a chunk grows.
pub const ROWS_PER_MESSAGE: usize = 256;

/// Send the changes of `piece` as one message, leaving it empty (with room for the next) and
/// `last_key` the key of its last change; false when downstream is gone.
async fn send_piece(
    out: &mpsc::Sender<CaptureMessage>,
    piece: &mut Vec<ChangeEvent>,
    last_key: &mut Option<Row>,
) -> bool {
    *last_key = piece.last().map(|e| e.key.clone());
    let full = std::mem::replace(piece, Vec::with_capacity(ROWS_PER_MESSAGE));
    out.send(CaptureMessage::Changes(full)).await.is_ok()
}

/// Send `changes` in messages of at most [`ROWS_PER_MESSAGE`]; false when downstream is gone.
async fn send_changes(out: &mpsc::Sender<CaptureMessage>, changes: Vec<ChangeEvent>) -> bool {
    let mut rest = changes.into_iter();
    loop {
        let piece: Vec<ChangeEvent> = rest.by_ref().take(ROWS_PER_MESSAGE).collect();
        if piece.is_empty() {
            return true;
        }
        if out.send(CaptureMessage::Changes(piece)).await.is_err() {
            return false;
        }
    }
}

/// Turn a JSON key object into a typed key row of `schema` (values as in canonical text).
pub fn key_from_json(
    schema: &SourceSchema,
    key: &serde_json::Map<String, serde_json::Value>,
) -> std::result::Result<Row, String> {
    let mut row = Row::new();
    for col in schema.key_columns() {
        let json = key
            .get(col.name.as_str())
            .ok_or_else(|| format!("key column {} missing", col.name))?;
        let text = match json {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err(format!(
                    "key column {}: unsupported JSON value {other}",
                    col.name
                ))
            }
        };
        row.push(col.name, crate::decode::from_canonical_text(col, &text)?);
    }
    if key.len() != row.len() {
        return Err(format!(
            "the key has columns that are not the table's key ({})",
            schema
                .key_columns()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Ok(row)
}

/// Whether `e` says the table read is missing (dropped or renamed away under the read): its
/// description was not found, or the server answered 1146 (`ER_NO_SUCH_TABLE`).
/// ER_BAD_FIELD_ERROR: the read named a column the table no longer has.
fn column_vanished(e: &Error) -> bool {
    matches!(e, Error::Mysql(mysql_async::Error::Server(s)) if s.code == 1054)
}

fn table_vanished(e: &Error) -> bool {
    match e {
        Error::TableNotFound { .. } => true,
        Error::Mysql(mysql_async::Error::Server(s)) => s.code == 1146,
        _ => false,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn progress_text_says_how_far_how_fast_and_how_long() {
        let cp = BackfillCheckpoint {
            rows: 25_000,
            estimated_rows: Some(100_000),
            rows_per_second: Some(1_000.0),
            ..BackfillCheckpoint::default()
        };
        assert_eq!(
            cp.progress_text(),
            "25000 of about 100000 rows (25%), 1000 rows/s, about 75 s left"
        );
        let early = BackfillCheckpoint {
            rows: 10,
            ..BackfillCheckpoint::default()
        };
        assert_eq!(early.progress_text(), "10 rows");
        let done = BackfillCheckpoint {
            rows: 7,
            done: true,
            ..BackfillCheckpoint::default()
        };
        assert_eq!(done.progress_text(), "done (7 rows)");
        assert_eq!(human_duration(42.0), "42 s");
        assert_eq!(human_duration(7_300.0), "2 h 1 min");
    }
    use super::*;

    #[test]
    fn config_errors_name_the_key() {
        let c = BackfillConfig {
            rows_per_second: Some(0),
            ..Default::default()
        };
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("backfill.rows_per_second"));
        let c = BackfillConfig {
            min_chunk_rows: 50_000,
            ..Default::default()
        };
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("backfill.min_chunk_rows"));
    }

    #[test]
    fn enum_and_set_keys_compare_by_number() {
        let col = tidemark_schemas::SourceColumn {
            name: "e".into(),
            ty: SourceType::Enum {
                members: vec!["b".into(), "a".into()],
            },
            nullable: false,
            column_type: "enum('b','a')".into(),
        };
        assert_eq!(key_param(&col, &Value::Enum("a".into())), MyValue::UInt(2));
    }
}
