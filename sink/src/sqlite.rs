//! The embedded SQLite target.
//!
//! Each target table has the mapped columns plus `_tm_version`, `_tm_deleted` (1 for a
//! tombstone) and lineage columns, all prefixed `_tm_`. A write is a conditional upsert:
//!
//! ```sql
//! INSERT INTO t (…) VALUES (…)
//! ON CONFLICT (key) DO UPDATE SET … WHERE excluded._tm_version > t._tm_version
//! ```
//!
//! so an older or equal version never replaces a newer one, and a delete is an upsert of a
//! tombstone (key, version, `_tm_deleted = 1`, other columns NULL) that shadows older inserts.
//! Records of one [`Sink::write`] call and its checkpoints commit in one transaction (WAL mode):
//! after a crash, the data and the checkpoint agree.
//!
//! Storage is lossless: values SQLite cannot hold natively (DECIMAL, BIT(64)) are stored as
//! their exact text; temporal values as their canonical text; binary as BLOB. A BIGINT UNSIGNED
//! column has no declared type (no affinity, so SQLite converts nothing): a value up to
//! 2^63 − 1 is an INTEGER, a larger one its exact text. [`value_from_storage`] is the inverse of
//! [`storage_value`] for every target type, so [`Sink::read`] gives back exactly the values that
//! were written. The one exception is a table's single BIGINT UNSIGNED key, below.
//!
//! ## Layout, and why
//!
//! A table keyed by one integer column is an ordinary rowid table whose key is the rowid
//! (`INTEGER PRIMARY KEY`); every other table is `WITHOUT ROWID`, clustered on its key. A single
//! BIGINT UNSIGNED key is a rowid too: declared `INTEGER`, it holds the key's 64 bits as an i64
//! (so keys from 2^63 up are negative there, and sort before the others in SQLite's own order;
//! read back, the bits are the u64 again). Rowid tables are what SQLite appends to cheaply: a
//! bulk load in key order fills each leaf and starts the next (its "quick balance"), where a
//! clustered table redistributes three leaves at every split. Measured on a 1,000,000-row
//! backfill keyed by BIGINT UNSIGNED (three alternating runs): 4.04, 3.76, 4.29 s → 3.35, 3.82,
//! 3.53 s, the file 438 → 393 MB. Either way a row lives in one B-tree, found and written by its key: a rowid table with any other
//! key needs a second B-tree (the key index) that every upsert searches and writes too. New
//! database files use 16 KiB pages (SQLite's default is 4 KiB): a target row with its lineage
//! is about 350 bytes, well under the twentieth of a page that `WITHOUT ROWID` rows should stay
//! below, and a bulk load writes a quarter as many pages (and WAL frames). Measured in alternating
//! runs of a 300,000-row backfill of a BIGINT UNSIGNED-keyed table: 16 KiB pages alone took it
//! from about 4.3 to 3.9 s with a third less system time; this layout with the binding below and
//! the hand-written canonical text, 4.64 → 4.10 s.
//!
//! This layout, with the lineage columns and the digest scheme of `_tm_source_digest`, is target
//! format [`FORMAT`], kept in the file's `PRAGMA user_version`: a file of another format (written
//! by another build) is refused at open with an error that says what to do, never read as if it
//! had this one.
//!
//! ## Checkpoints off the write path
//!
//! In WAL mode every commit appends pages to the WAL, and a checkpoint copies them into the
//! database file (and syncs both). SQLite's automatic checkpoint runs inside the commit that
//! crosses its threshold, so a bulk load stopped for a quarter of a second every 64 MiB while the
//! queues behind it filled up and the reader and the transform waited. The writer's connection
//! therefore never checkpoints (`wal_autocheckpoint = 0`); after a commit that leaves the WAL at
//! [`CHECKPOINT_AFTER_BYTES`] or more, it wakes a checkpointer thread with a connection of its
//! own, which runs a `PASSIVE` checkpoint (copies what is committed, waits for no one) while the
//! writer goes on. The WAL starts over at the writer's next transaction once all of it has been
//! copied. How much it holds comes from SQLite's WAL hook, which reports the frames in the WAL
//! after every commit. Should the checkpointer never catch up, a writer that finds the WAL four
//! times the threshold runs a `RESTART` checkpoint itself. Durability is unchanged: a commit is in
//! the WAL (synced at commit), and a checkpoint syncs before it copies. Measured on a 1,000,000-row backfill (three
//! alternating runs): 3.92 → 3.63 s.
//!
//! A WAL that starts over keeps its file (`journal_size_limit` is twice the threshold, so only a
//! WAL that grew past that is cut back): the next cycle overwrites pages the file already has in
//! the page cache and blocks it already has on disk, where a file cut back to nothing had the
//! file system free and allocate them again 64 MiB at a time. Measured on a 1,000,000-row
//! backfill (seven alternating pairs, Xeon): 2.37 → 2.24 s on average, faster in six pairs and
//! equal in one, CPU 3.52 → 3.42 s.
//!
//! Concurrency: several `SqliteSink`s (threads or processes) may share one file. Every write and
//! every schema change runs in an `IMMEDIATE` transaction, so a writer takes the write lock
//! before it reads anything and waits for it (busy timeout 30 s) instead of failing on a stale
//! snapshot; the conditional upsert then decides per key against the committed state, which is
//! what makes concurrent writers converge to the max-version state.
//!
//! Durability: `synchronous = FULL`, so a commit is on disk (the WAL synced) when
//! [`Sink::write`] returns. Kafka mode commits consumer offsets right after; with `NORMAL` a
//! power loss could roll back commits whose offsets Kafka already holds.
//!
//! Failure modes: another connection holding the write lock through five busy timeouts is
//! [`Error::Busy`] (transient); a full disk or a corrupt file are
//! [`Error::Open`] (the transaction rolled back: nothing of the batch, and no checkpoint, was
//! written); a record for a table that was never announced with [`Sink::ensure_table`] is
//! [`Error::Write`] naming the table.

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_int;
use std::path::Path;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params, CachedStatement, Connection, OptionalExtension, TransactionBehavior};
use tidemark_schemas::{
    Checkpoint, Lineage, Operation, Row, TargetRecord, TargetSchema, TargetType, Value,
};

use crate::text::value_from_text;
use crate::{
    check_schema, key_in_order, key_text, Error, Result, ScannedKey, Sink, StoredRecord, WriteStats,
};

/// Statements the connection keeps prepared (one upsert per target table, and the reads).
const STATEMENT_CACHE_CAPACITY: usize = 512;

/// Lineage columns every target table carries, after the mapped columns.
pub const LINEAGE_COLUMNS: &[(&str, &str)] = &[
    ("_tm_version", "INTEGER NOT NULL"),
    ("_tm_deleted", "INTEGER NOT NULL"),
    ("_tm_op", "TEXT NOT NULL"),
    ("_tm_source_server", "TEXT NOT NULL"),
    ("_tm_source_table", "TEXT NOT NULL"),
    ("_tm_source_key", "TEXT NOT NULL"),
    ("_tm_position", "TEXT NOT NULL"),
    ("_tm_gtid", "TEXT"),
    ("_tm_commit_time_us", "INTEGER NOT NULL"),
    ("_tm_transform", "TEXT NOT NULL"),
    ("_tm_transform_version", "TEXT NOT NULL"),
    ("_tm_source_digest", "TEXT NOT NULL"),
    ("_tm_chunk", "TEXT"),
];

/// A prepared description of one target table.
struct TableState {
    schema: TargetSchema,
    /// The conditional upsert ([`upsert_sql`]), prepared once and kept in the connection's
    /// statement cache.
    upsert_sql: String,
    /// `SELECT <columns and lineage> FROM t`, to which read and scan add their conditions.
    select_sql: String,
    /// `select_sql` of one key: `… WHERE (k1, …) = (?1, …)`.
    read_sql: String,
    /// `SELECT <key columns>, _tm_deleted FROM t`, for the reconciler's scan.
    keys_sql: String,
    /// The column (index among the schema's columns) of a BIGINT UNSIGNED key stored as the
    /// rowid, by [`rowid_of_unsigned`]; every other column is stored by [`storage_value`].
    unsigned_rowid: Option<usize>,
}

pub struct SqliteSink {
    /// Declared before `conn`, so its prepared statements are finalized before the connection
    /// closes.
    tables: HashMap<String, TableState>,
    conn: Connection,
    path: String,
    /// Started by the first write; dropped after `conn`, so its connection closes last and
    /// copies what is left of the WAL.
    checkpointer: Option<Checkpointer>,
    /// The WAL size past which a write wakes the checkpointer.
    checkpoint_after_bytes: u64,
    /// Bytes of one WAL frame: a page and its header.
    wal_frame_bytes: u64,
    /// Frames in the WAL after this connection's last commit (from [`note_wal_frames`]).
    wal_frames: u64,
}

/// The WAL size past which a write wakes the checkpointer, by default: 64 MiB.
pub const CHECKPOINT_AFTER_BYTES: u64 = 64 << 20;

/// The WAL size, in multiples of the checkpoint threshold, past which the writer stops and
/// checkpoints itself, should the checkpointer never catch up (the WAL only starts over once all
/// of it has been copied).
const CHECKPOINT_NOW_FACTOR: u64 = 4;

/// Bytes of a WAL frame's header (before its page).
const WAL_FRAME_HEADER_BYTES: u64 = 24;

/// The size a WAL that starts over is cut back to: twice the checkpoint threshold. A WAL that
/// keeps its file is overwritten in place (page-cache pages and disk blocks the file already has);
/// one cut back to nothing makes the file system free and allocate them again on every cycle.
fn wal_size_limit(checkpoint_after: u64) -> i64 {
    i64::try_from(checkpoint_after.saturating_mul(2)).unwrap_or(i64::MAX)
}

thread_local! {
    /// Frames in the WAL after the last commit on this thread, as SQLite's WAL hook reports
    /// them; `None` until a commit reports.
    static WAL_FRAMES: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The WAL hook of a writer's connection: SQLite calls it after each commit that wrote to the
/// WAL, on the committing thread, with the number of frames the WAL now holds (counting from
/// the last time it started over).
fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(Some(u64::try_from(frames).unwrap_or(0)));
    Ok(())
}

/// Copies the WAL into the database file on its own thread and connection, so that the writer
/// never stops for it (see the module doc).
struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &str) -> Result<Checkpointer> {
        let open_err = |e: rusqlite::Error| Error::Open {
            path: path.to_string(),
            message: format!("opening the checkpointer's connection: {e}"),
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(open_err)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let name = path.to_string();
        let thread = std::thread::Builder::new()
            .name("tidemark-wal-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    // Each pass copies what the writer committed during the one before, so the
                    // passes shrink until one ends between two commits with nothing left: then
                    // the writer's next transaction starts the WAL over.
                    let pass = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = pass {
                        // Nothing is lost: the WAL keeps what was not copied.
                        tracing::warn!(target = %name, error = %e, "WAL checkpoint failed; it is retried after the next write");
                    }
                }
            })
            .map_err(|e| Error::Open {
                path: path.to_string(),
                message: format!("starting the checkpointer thread: {e}"),
            })?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// After a commit that left `size` bytes in the WAL: wake the checkpointer when that is
    /// `after` bytes or more; whether it is [`CHECKPOINT_NOW_FACTOR`] times that.
    fn after_commit(&self, size: u64, after: u64) -> bool {
        if size >= after {
            if let Some(wake) = &self.wake {
                // Full: it is awake already.
                let _ = wake.try_send(());
            }
        }
        size >= CHECKPOINT_NOW_FACTOR * after
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Quote an identifier for SQLite.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Page size of a new target file (see the module doc).
pub const PAGE_SIZE: u32 = 16384;

/// The SQLite column type that holds a target type losslessly (`""`: no declared type, so no
/// affinity converts what is stored).
pub fn storage_type(ty: &TargetType) -> &'static str {
    match ty {
        TargetType::Int { .. } | TargetType::Year => "INTEGER",
        TargetType::UInt { bits } if *bits < 64 => "INTEGER",
        TargetType::UInt { .. } => "",
        TargetType::Bit { width } if *width < 64 => "INTEGER",
        TargetType::Float | TargetType::Double => "REAL",
        TargetType::Bytes { .. } | TargetType::Geometry => "BLOB",
        _ => "TEXT",
    }
}

/// The SQLite value of `value` in a column of type `ty`.
pub fn storage_value(ty: &TargetType, value: &Value) -> SqlValue {
    match (ty, value) {
        (_, Value::Null) => SqlValue::Null,
        (_, Value::Int(i)) => SqlValue::Integer(*i),
        (_, Value::UInt(u)) => match i64::try_from(*u) {
            Ok(i) => SqlValue::Integer(i),
            Err(_) => SqlValue::Text(u.to_string()),
        },
        (_, Value::Float(f)) => SqlValue::Real(f64::from(*f)),
        (_, Value::Double(f)) => SqlValue::Real(*f),
        (_, Value::Year(y)) => SqlValue::Integer(i64::from(*y)),
        (TargetType::Bit { width }, Value::Bit { value, .. }) if *width < 64 => {
            SqlValue::Integer(*value as i64)
        }
        (_, Value::Bytes(b)) | (_, Value::Geometry(b)) => SqlValue::Blob(b.clone()),
        (_, other) => SqlValue::Text(other.temporal_string().unwrap_or_else(|| other.to_string())),
    }
}

/// The value stored as `stored` in a column of type `ty`: the inverse of [`storage_value`].
/// It reads SQLite's value in place (a text becomes one `String`, or none for a date or a number
/// stored as text).
pub fn value_from_storage(
    ty: &TargetType,
    stored: ValueRef<'_>,
) -> std::result::Result<Value, String> {
    let mismatch = |got: &str| format!("a {got} is stored where {ty:?} was expected");
    match (ty, stored) {
        (_, ValueRef::Null) => Ok(Value::Null),
        (TargetType::Int { .. }, ValueRef::Integer(i)) => Ok(Value::Int(i)),
        (TargetType::UInt { .. }, ValueRef::Integer(i)) => u64::try_from(i)
            .map(Value::UInt)
            .map_err(|_| format!("{i} is stored in an unsigned column")),
        (TargetType::Year, ValueRef::Integer(i)) => u16::try_from(i)
            .map(Value::Year)
            .map_err(|_| format!("{i} is not a YEAR")),
        (TargetType::Bit { width }, ValueRef::Integer(i)) => u64::try_from(i)
            .map(|value| Value::Bit {
                width: *width,
                value,
            })
            .map_err(|_| format!("{i} is not a BIT value")),
        // REAL affinity may hand back an integral value as INTEGER.
        (TargetType::Float, ValueRef::Integer(i)) => Ok(Value::Float(i as f32)),
        (TargetType::Double, ValueRef::Integer(i)) => Ok(Value::Double(i as f64)),
        // The f64 holds an f32 exactly, so narrowing gives back the written f32.
        (TargetType::Float, ValueRef::Real(f)) => Ok(Value::Float(f as f32)),
        (TargetType::Double, ValueRef::Real(f)) => Ok(Value::Double(f)),
        (TargetType::Bytes { .. }, ValueRef::Blob(b)) => Ok(Value::Bytes(b.to_vec())),
        (TargetType::Geometry, ValueRef::Blob(b)) => Ok(Value::Geometry(b.to_vec())),
        (ty, ValueRef::Text(t)) => match std::str::from_utf8(t) {
            Ok(text) => value_from_text(ty, text),
            Err(e) => Err(format!("the stored text is not UTF-8: {e}")),
        },
        (_, ValueRef::Integer(_)) => Err(mismatch("INTEGER")),
        (_, ValueRef::Real(_)) => Err(mismatch("REAL")),
        (_, ValueRef::Blob(_)) => Err(mismatch("BLOB")),
    }
}

/// Attempts of one write while another connection holds the write lock, each waiting up to
/// the busy timeout (30 s): about two and a half minutes in all.
const BUSY_ATTEMPTS: u32 = 5;

/// [`Error::Busy`] when SQLite says another connection holds the lock (transient), else
/// [`Error::Open`].
fn busy_or_open(path: &str, e: rusqlite::Error) -> Error {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    if busy {
        Error::Busy {
            path: path.to_string(),
            message: e.to_string(),
        }
    } else {
        Error::Open {
            path: path.to_string(),
            message: e.to_string(),
        }
    }
}

impl SqliteSink {
    /// Open (or create) the target database at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path_str = path.as_ref().display().to_string();
        let open_err = |e: rusqlite::Error| Error::Open {
            path: path_str.clone(),
            message: e.to_string(),
        };
        let conn = Connection::open(path.as_ref()).map_err(open_err)?;
        // Takes effect only while the file is empty (a new target); an existing file keeps its
        // page size.
        conn.pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // FULL: a commit is on disk when `write` returns, as the `Sink` contract says. With
        // NORMAL a power loss may roll back the last commits of a WAL, which embedded mode
        // survives (its checkpoint rolls back with them) but Kafka mode does not: the consumer
        // offsets committed after `write` would point past records the file lost.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        // A 64 MiB page cache (the default is 2 MiB): a bulk load re-reads the B-tree's interior
        // pages on every batch otherwise.
        conn.pragma_update(None, "cache_size", -65536)
            .map_err(open_err)?;
        // This connection never checkpoints: the checkpointer does, on its own thread (see the
        // module doc). The pragma replaces the connection's WAL hook, so ours comes after it.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(open_err)?;
        conn.wal_hook(Some(note_wal_frames));
        // Each table's upsert is prepared once and kept in the statement cache: room for the
        // upserts of as many tables as a database holds, and the reads beside them.
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE_CAPACITY);
        conn.pragma_update(
            None,
            "journal_size_limit",
            wal_size_limit(CHECKPOINT_AFTER_BYTES),
        )
        .map_err(open_err)?;
        check_format(&conn, &path_str)?;
        let page_size: u64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(open_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS _tm_checkpoints (
                stage TEXT NOT NULL,
                scope TEXT NOT NULL,
                value TEXT NOT NULL,
                PRIMARY KEY (stage, scope)
            );",
        )
        .map_err(open_err)?;
        Ok(SqliteSink {
            conn,
            path: path_str,
            tables: HashMap::new(),
            checkpointer: None,
            checkpoint_after_bytes: CHECKPOINT_AFTER_BYTES,
            wal_frame_bytes: page_size + WAL_FRAME_HEADER_BYTES,
            wal_frames: 0,
        })
    }

    /// One attempt at [`Sink::write`]: one `IMMEDIATE` transaction.
    fn write_once(
        &mut self,
        records: &[TargetRecord],
        checkpoints: &[Checkpoint],
    ) -> Result<WriteStats> {
        let mut stats: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| busy_or_open(&self.path, e))?;
        // Records come in runs of one table: its statement is looked up once a run.
        for run in records.chunk_by(|a, b| a.table == b.table) {
            let table = &run[0].table;
            let TableState {
                schema,
                upsert_sql,
                unsigned_rowid,
                ..
            } = self
                .tables
                .get_mut(table.as_str())
                .ok_or_else(|| Error::Write {
                    table: table.to_string(),
                    message: "no schema was announced for this table before its records".into(),
                })?;
            let mut stmt = tx
                .prepare_cached(upsert_sql)
                .map_err(|e| table_err(table, e))?;
            let (mut applied, mut ignored) = (0, 0);
            let mut prev = None;
            for rec in run {
                let changed = write_record(&mut stmt, schema, *unsigned_rowid, rec, prev)?;
                prev = Some(rec);
                if changed {
                    applied += 1;
                } else {
                    ignored += 1;
                }
            }
            let e = stats.entry(table.to_string()).or_default();
            e.0 += applied;
            e.1 += ignored;
        }
        for cp in checkpoints {
            tx.execute(
                "INSERT INTO _tm_checkpoints (stage, scope, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT (stage, scope) DO UPDATE SET value = excluded.value",
                params![cp.stage, cp.scope, cp.value],
            )
            .map_err(|e| Error::Checkpoint(e.to_string()))?;
        }
        WAL_FRAMES.set(None);
        tx.commit().map_err(|e| busy_or_open(&self.path, e))?;
        // A commit that wrote nothing leaves the WAL as it was.
        if let Some(frames) = WAL_FRAMES.take() {
            self.wal_frames = frames;
        }
        if self.checkpointer.is_none() {
            self.checkpointer = Some(Checkpointer::start(&self.path)?);
        }
        let after = self.checkpoint_after_bytes;
        let overgrown = self
            .checkpointer
            .as_ref()
            .is_some_and(|c| c.after_commit(self.wal_frames * self.wal_frame_bytes, after));
        if overgrown {
            self.checkpoint_now(after)?;
        }
        Ok(WriteStats { per_table: stats })
    }

    /// How long one statement waits for another connection's lock (default 30 s; tests use
    /// less). A write waits this long up to five times before it fails with [`Error::Busy`].
    pub fn set_busy_timeout(&mut self, timeout: std::time::Duration) -> Result<()> {
        self.conn
            .busy_timeout(timeout)
            .map_err(|e| busy_or_open(&self.path, e))
    }

    /// Wake the checkpointer once the WAL holds this many bytes (default
    /// [`CHECKPOINT_AFTER_BYTES`]; tests use less).
    pub fn set_checkpoint_after(&mut self, bytes: u64) -> Result<()> {
        self.checkpoint_after_bytes = bytes.max(1);
        self.conn
            .pragma_update(
                None,
                "journal_size_limit",
                wal_size_limit(self.checkpoint_after_bytes),
            )
            .map_err(|e| Error::Open {
                path: self.path.clone(),
                message: e.to_string(),
            })
    }

    /// The writer's own checkpoint, for a WAL the checkpointer has not caught up with: copy all
    /// of it, so that the next write transaction starts it over. A checkpoint already running
    /// (the checkpointer's pass) makes SQLite answer "busy" at once rather than wait, so this
    /// retries until that pass is over.
    fn checkpoint_now(&mut self, after: u64) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            let busy: i64 = self
                .conn
                .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))
                .map_err(|e| Error::Open {
                    path: self.path.clone(),
                    message: format!(
                        "checkpointing a WAL of over {} MiB: {e}",
                        (CHECKPOINT_NOW_FACTOR * after) >> 20
                    ),
                })?;
            if busy == 0 {
                return Ok(());
            }
            if started.elapsed() > std::time::Duration::from_secs(30) {
                // Only another process's long read keeps it busy this long; the WAL keeps
                // everything meanwhile, and the next write tries again.
                tracing::warn!(target = %self.path, "the WAL could not be checkpointed for 30 s; another connection is reading an old snapshot");
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The underlying connection, for reads (reconcile, tests).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }
}

/// Whether a column declared `declared` stores values of type `ty` as this format does: the
/// table's rowid key (`rowid_key`) is declared `INTEGER` whatever its integer type; every other
/// column is declared [`storage_type`]. (A BIGINT UNSIGNED column declared `INTEGER` would turn
/// a value from 2^63 up, bound as its digits, into a REAL: it is not accepted.)
fn holds(declared: &str, ty: &TargetType, rowid_key: bool) -> bool {
    let want = if rowid_key {
        "INTEGER"
    } else {
        storage_type(ty)
    };
    declared.eq_ignore_ascii_case(want)
}

/// The columns of `table` as stored: name and declared type (none when there is no such table).
/// The layout of the tables a target file holds (their key, column types and lineage columns,
/// and the digest scheme of `_tm_source_digest`), kept in the file's `PRAGMA user_version`. A
/// file written by a build with another format is refused, never read or written as if it had
/// this one.
pub const FORMAT: i64 = 1;

/// Stamp a new file with [`FORMAT`]; refuse a file of another format.
fn check_format(conn: &Connection, path: &str) -> Result<()> {
    let open_err = |e: rusqlite::Error| Error::Open {
        path: path.to_string(),
        message: e.to_string(),
    };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(open_err)?;
    if tables == 0 && found == 0 {
        return conn
            .pragma_update(None, "user_version", FORMAT)
            .map_err(open_err);
    }
    if found != FORMAT {
        return Err(Error::Open {
            path: path.to_string(),
            message: format!(
                "this file holds target format {found}{}, and this build of tidemark reads and writes format {FORMAT} only: point [target] path at a new file and backfill into it (`tidemark target init`, then `tidemark run`), or use the build that wrote it",
                if found == 0 {
                    " (a build from before formats were numbered, or not a tidemark target)"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(())
}

fn existing_columns(conn: &Connection, table: &str) -> Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({})", quote(table)))
        .map_err(|e| table_err(table, e))?;
    let cols = stmt
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
        .map_err(|e| table_err(table, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| table_err(table, e))?;
    Ok(cols)
}

fn table_err(table: &str, e: impl std::fmt::Display) -> Error {
    Error::Table {
        table: table.to_string(),
        message: e.to_string(),
    }
}

/// Whether a new table's key is one column declared `INTEGER`, which SQLite makes the rowid:
/// an integer column, or a BIGINT UNSIGNED one stored as its bits (see the module doc).
fn is_rowid_key(schema: &TargetSchema) -> bool {
    match schema.key.as_slice() {
        [key] => schema
            .column(key)
            .is_some_and(|c| storage_type(&c.ty) == "INTEGER" || is_bigint_unsigned(&c.ty)),
        _ => false,
    }
}

fn is_bigint_unsigned(ty: &TargetType) -> bool {
    matches!(ty, TargetType::UInt { bits: 64 })
}

/// The index, among `schema`'s columns, of a BIGINT UNSIGNED key the table stores as its rowid:
/// the one key column, declared `INTEGER` in the table as it is (`existing`: names and declared
/// types).
fn unsigned_rowid(schema: &TargetSchema, existing: &[(String, String)]) -> Option<usize> {
    let [key] = schema.key.as_slice() else {
        return None;
    };
    let index = schema.columns.iter().position(|c| c.name == *key)?;
    let declared = existing
        .iter()
        .find(|(name, _)| *name == **key)
        .map(|(_, ty)| ty.as_str());
    (is_bigint_unsigned(&schema.columns[index].ty) && declared == Some("INTEGER")).then_some(index)
}

/// A BIGINT UNSIGNED stored as a rowid: its 64 bits as an i64 (2^63 and above are negative).
fn rowid_of_unsigned(value: u64) -> i64 {
    value as i64
}

/// The inverse of [`rowid_of_unsigned`], for a value read from such a column.
fn unsigned_of_rowid(stored: ValueRef<'_>) -> std::result::Result<Value, String> {
    match stored {
        ValueRef::Integer(i) => Ok(Value::UInt(i as u64)),
        ValueRef::Null => Ok(Value::Null),
        other => Err(format!(
            "a {:?} is stored in a BIGINT UNSIGNED rowid key",
            other.data_type()
        )),
    }
}

fn upsert_sql(schema: &TargetSchema) -> String {
    let names: Vec<String> = schema
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .chain(LINEAGE_COLUMNS.iter().map(|(n, _)| quote(n)))
        .collect();
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    let table = quote(&schema.table);
    let updates: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.key.contains(&c.name))
        .map(|c| quote(&c.name))
        .chain(LINEAGE_COLUMNS.iter().map(|(n, _)| quote(n)))
        .map(|n| format!("{n} = excluded.{n}"))
        .collect();
    let key: Vec<String> = schema.key.iter().map(|k| quote(k)).collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {} WHERE excluded.\"_tm_version\" > {table}.\"_tm_version\"",
        names.join(", "),
        placeholders.join(", "),
        key.join(", "),
        updates.join(", ")
    )
}

fn select_sql(schema: &TargetSchema) -> String {
    let names: Vec<String> = schema
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .chain(LINEAGE_COLUMNS.iter().map(|(n, _)| quote(n)))
        .collect();
    format!("SELECT {} FROM {}", names.join(", "), quote(&schema.table))
}

/// `(k1, k2) <op> (?1, ?2)` over the key columns.
fn key_condition(schema: &TargetSchema, op: &str) -> String {
    let cols: Vec<String> = schema.key.iter().map(|k| quote(k)).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    format!("({}) {op} ({})", cols.join(", "), marks.join(", "))
}

/// The stored key values of `key` for `schema`, in key order (`unsigned_rowid`: see
/// [`TableState`]).
fn key_params(
    schema: &TargetSchema,
    unsigned_rowid: Option<usize>,
    key: &Row,
) -> Result<Vec<SqlValue>> {
    let values = key_in_order(schema, key)?;
    Ok(schema
        .key
        .iter()
        .zip(values)
        .map(|(k, v)| match (unsigned_rowid, v) {
            (Some(_), Value::UInt(u)) => SqlValue::Integer(rowid_of_unsigned(*u)),
            _ => {
                let ty = &schema.column(k).expect("key columns are checked").ty;
                storage_value(ty, v)
            }
        })
        .collect())
}

/// The value of a column of type `ty` stored as `stored`: [`value_from_storage`], or
/// [`unsigned_of_rowid`] when the column is the table's BIGINT UNSIGNED rowid key.
fn column_from_storage(
    ty: &TargetType,
    is_unsigned_rowid: bool,
    stored: ValueRef<'_>,
) -> std::result::Result<Value, String> {
    if is_unsigned_rowid {
        unsigned_of_rowid(stored)
    } else {
        value_from_storage(ty, stored)
    }
}

/// A stored row (the columns of [`select_sql`]) back into the record it holds.
fn record_from_row(
    schema: &TargetSchema,
    unsigned_rowid: Option<usize>,
    row: &rusqlite::Row<'_>,
) -> Result<StoredRecord> {
    let read_err = |message: String| Error::Read {
        table: schema.table.clone(),
        key: "(stored row)".into(),
        message,
    };
    let mut columns = Row(Vec::with_capacity(schema.columns.len()));
    for (i, col) in schema.columns.iter().enumerate() {
        let stored = row.get_ref(i).map_err(|e| read_err(e.to_string()))?;
        let value = column_from_storage(&col.ty, unsigned_rowid == Some(i), stored)
            .map_err(|e| read_err(format!("column `{}`: {e}", col.name)))?;
        columns.push(col.name, value);
    }
    let n = schema.columns.len();
    // Read in place (`get_ref`): rusqlite's owned `Value` panics on text that is not UTF-8, and
    // a target file may hold anything — written out of band, or corrupted.
    let get = |i: usize| -> Result<ValueRef<'_>> {
        row.get_ref(n + i).map_err(|e| read_err(e.to_string()))
    };
    let held = |i: usize, v: ValueRef<'_>| {
        read_err(format!(
            "lineage column {} holds {:?}",
            LINEAGE_COLUMNS[i].0,
            v.data_type()
        ))
    };
    let int = |i: usize| -> Result<i64> {
        match get(i)? {
            ValueRef::Integer(v) => Ok(v),
            other => Err(held(i, other)),
        }
    };
    let opt_text = |i: usize| -> Result<Option<String>> {
        match get(i)? {
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(|t| Some(t.to_string()))
                .map_err(|e| {
                    read_err(format!(
                        "lineage column {} is not UTF-8 text: {e}",
                        LINEAGE_COLUMNS[i].0
                    ))
                }),
            ValueRef::Null => Ok(None),
            other => Err(held(i, other)),
        }
    };
    let text = |i: usize| -> Result<String> {
        opt_text(i)?
            .ok_or_else(|| read_err(format!("lineage column {} is NULL", LINEAGE_COLUMNS[i].0)))
    };
    let op_text = text(2)?;
    let lineage = Lineage {
        version: int(0)?,
        op: Operation::parse(&op_text)
            .ok_or_else(|| read_err(format!("unknown operation `{op_text}`")))?,
        source_server: text(3)?.into(),
        source_table: text(4)?.into(),
        source_key: text(5)?,
        position: text(6)?.into(),
        gtid: opt_text(7)?,
        commit_time_us: int(8)?,
        transform_name: text(9)?.into(),
        transform_version: text(10)?.into(),
        source_digest: text(11)?,
        chunk: opt_text(12)?.map(Into::into),
    };
    let deleted = int(1)? != 0;
    let key: Row = schema
        .key
        .iter()
        .map(|k| (*k, columns.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    Ok(TargetRecord {
        table: schema.table.clone().into(),
        key,
        columns: (!deleted).then_some(columns),
        lineage,
    })
}

/// The upsert of one table, from the connection's statement cache.
type Upsert<'c> = CachedStatement<'c>;

/// Bind one parameter (SQLite copies a text or blob).
fn bind(stmt: &mut Upsert<'_>, index: c_int, value: impl rusqlite::ToSql) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(index as usize, value)
}

/// Bind `value` (of a column of type `ty`) to parameter `index`: a text or blob as it is, a date
/// or time as its text from the stack, a number as itself (the mapping of [`storage_value`]).
fn bind_value(
    stmt: &mut Upsert<'_>,
    index: c_int,
    ty: &TargetType,
    value: Option<&Value>,
) -> rusqlite::Result<()> {
    let Some(value) = value else {
        return bind(stmt, index, rusqlite::types::Null);
    };
    match value {
        Value::Text(s) | Value::Decimal(s) | Value::Enum(s) | Value::Json(s) => {
            bind(stmt, index, s.as_str())
        }
        Value::Bytes(v) | Value::Geometry(v) => bind(stmt, index, v.as_slice()),
        Value::Int(i) => bind(stmt, index, *i),
        Value::Date { .. }
        | Value::DateTime { .. }
        | Value::Timestamp { .. }
        | Value::Time { .. } => match value.temporal_text() {
            Some(text) => bind(stmt, index, text.as_str()),
            None => bind(stmt, index, storage_value(ty, value)),
        },
        _ => bind(stmt, index, storage_value(ty, value)),
    }
}

/// Bind `rec` to the table's upsert and run it; whether a row changed. `prev` is the record the
/// statement ran with last, if any (see [`bind_record`]).
fn write_record(
    stmt: &mut Upsert<'_>,
    schema: &TargetSchema,
    unsigned_rowid: Option<usize>,
    rec: &TargetRecord,
    prev: Option<&TargetRecord>,
) -> Result<bool> {
    bind_record(stmt, schema, unsigned_rowid, rec, prev).map_err(|e| write_err(rec, e))?;
    let changed = stmt.raw_execute().map_err(|e| write_err(rec, e))?;
    Ok(changed > 0)
}

/// The values of `rec`'s columns, in the schema's order (`None`: the record has no such column,
/// as a tombstone holds only the key).
fn column_values<'r>(
    schema: &'r TargetSchema,
    rec: &'r TargetRecord,
) -> impl Iterator<Item = Option<&'r Value>> + 'r {
    let source = rec.columns.as_ref().unwrap_or(&rec.key);
    schema.columns.iter().enumerate().map(move |(i, col)| {
        // A record's columns come in the schema's order; look up by name only when they do not.
        match source.0.get(i).filter(|(n, _)| *n == col.name) {
            Some((_, v)) => Some(v),
            None => source.get(&col.name),
        }
    })
}

/// Bind the columns of `rec`, then its lineage, in the order of [`upsert_sql`].
///
/// SQLite keeps a statement's parameters from one execution to the next (it holds its own copy
/// of each text), so a lineage text equal to `prev`'s (the statement's last record) is not bound
/// again. In a run of records most of the lineage repeats (operation, server, table, transform
/// and its version; in a backfill also the position and the chunk), and comparing a few bytes
/// costs less than SQLite's unbinding, allocating and copying. Column values, which seldom
/// repeat, are always bound; a BIGINT UNSIGNED rowid key (`unsigned_rowid`, see [`TableState`])
/// as its bits.
fn bind_record(
    stmt: &mut Upsert<'_>,
    schema: &TargetSchema,
    unsigned_rowid: Option<usize>,
    rec: &TargetRecord,
    prev: Option<&TargetRecord>,
) -> rusqlite::Result<()> {
    let mut index: c_int = 0;
    for (i, (col, value)) in schema
        .columns
        .iter()
        .zip(column_values(schema, rec))
        .enumerate()
    {
        index += 1;
        match value {
            Some(Value::UInt(u)) if unsigned_rowid == Some(i) => {
                bind(stmt, index, rowid_of_unsigned(*u))?
            }
            _ => bind_value(stmt, index, &col.ty, value)?,
        }
    }
    let l = &rec.lineage;
    let p = prev.map(|p| &p.lineage);
    // A text shared by a run of records (interned names, a position, a chunk) is one copy:
    // equal at its pointer, without reading it.
    let same = |a: &str, b: &str| std::ptr::eq(a, b) || a == b;
    let text = |stmt: &mut Upsert<'_>, index: c_int, f: fn(&Lineage) -> &str| {
        if p.is_some_and(|p| same(f(p), f(l))) {
            Ok(())
        } else {
            bind(stmt, index, f(l))
        }
    };
    let opt_text = |stmt: &mut Upsert<'_>, index: c_int, f: fn(&Lineage) -> Option<&str>| match f(l)
    {
        Some(v) if p.and_then(f).is_some_and(|pv| same(pv, v)) => Ok(()),
        v => bind(stmt, index, v),
    };
    bind(stmt, index + 1, l.version)?;
    bind(stmt, index + 2, i64::from(rec.is_tombstone()))?;
    text(stmt, index + 3, |l| l.op.as_str())?;
    text(stmt, index + 4, |l| &l.source_server)?;
    text(stmt, index + 5, |l| &l.source_table)?;
    bind(stmt, index + 6, l.source_key.as_str())?;
    text(stmt, index + 7, |l| &l.position)?;
    opt_text(stmt, index + 8, |l| l.gtid.as_deref())?;
    bind(stmt, index + 9, l.commit_time_us)?;
    text(stmt, index + 10, |l| &l.transform_name)?;
    text(stmt, index + 11, |l| &l.transform_version)?;
    bind(stmt, index + 12, l.source_digest.as_str())?;
    opt_text(stmt, index + 13, |l| l.chunk.as_deref())
}

fn write_err(rec: &TargetRecord, e: impl std::fmt::Display) -> Error {
    Error::Write {
        table: rec.table.to_string(),
        message: format!("key {}: {e}", rec.lineage.source_key),
    }
}

impl Sink for SqliteSink {
    fn ensure_table(&mut self, schema: &TargetSchema) -> Result<()> {
        check_schema(schema)?;
        // One IMMEDIATE transaction: another sink on the same file cannot create or alter the
        // table between our look and our change.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| table_err(&schema.table, e))?;
        let existing = existing_columns(&tx, &schema.table)?;
        if existing.is_empty() {
            let rowid = is_rowid_key(schema);
            let mut defs: Vec<String> = schema
                .columns
                .iter()
                .map(|c| {
                    let ty = if rowid && schema.key[0] == c.name {
                        "INTEGER"
                    } else {
                        storage_type(&c.ty)
                    };
                    format!("{} {ty}", quote(&c.name))
                })
                .collect();
            defs.extend(
                LINEAGE_COLUMNS
                    .iter()
                    .map(|(n, t)| format!("{} {t}", quote(n))),
            );
            let key: Vec<String> = schema.key.iter().map(|k| quote(k)).collect();
            defs.push(format!("PRIMARY KEY ({})", key.join(", ")));
            tx.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {} (\n  {}\n){}",
                quote(&schema.table),
                defs.join(",\n  "),
                if rowid { "" } else { " WITHOUT ROWID" }
            ))
            .map_err(|e| table_err(&schema.table, e))?;
        } else {
            // A column whose type changed (a MODIFY at the source) and that SQLite would convert
            // by its declared affinity: dropped and added again with the new type. Its values are
            // NULL until rewritten (capture re-reads the table's rows after a schema change).
            for col in &schema.columns {
                let Some((_, declared)) = existing.iter().find(|(name, _)| *name == col.name)
                else {
                    continue;
                };
                let rowid_key = is_rowid_key(schema) && schema.key[0] == col.name;
                if holds(declared, &col.ty, rowid_key) {
                    continue;
                }
                if schema.key.contains(&col.name) {
                    return Err(table_err(
                        &schema.table,
                        format!(
                            "key column `{}` is declared {declared} but now holds {:?}; a key column's type cannot change in place: write the table to a new target table (`[[mapping]] target = …`)",
                            col.name, col.ty
                        ),
                    ));
                }
                for sql in [
                    format!(
                        "ALTER TABLE {} DROP COLUMN {}",
                        quote(&schema.table),
                        quote(&col.name)
                    ),
                    format!(
                        "ALTER TABLE {} ADD COLUMN {} {}",
                        quote(&schema.table),
                        quote(&col.name),
                        storage_type(&col.ty)
                    ),
                ] {
                    tx.execute_batch(&sql)
                        .map_err(|e| table_err(&schema.table, e))?;
                }
            }
            let existing = existing_columns(&tx, &schema.table)?;
            for col in &schema.columns {
                if !existing.iter().any(|(name, _)| *name == col.name) {
                    tx.execute_batch(&format!(
                        "ALTER TABLE {} ADD COLUMN {} {}",
                        quote(&schema.table),
                        quote(&col.name),
                        storage_type(&col.ty)
                    ))
                    .map_err(|e| table_err(&schema.table, e))?;
                }
            }
        }
        let unsigned_rowid = unsigned_rowid(schema, &existing_columns(&tx, &schema.table)?);
        tx.commit().map_err(|e| table_err(&schema.table, e))?;
        let select = select_sql(schema);
        self.tables.insert(
            schema.table.clone(),
            TableState {
                upsert_sql: upsert_sql(schema),
                read_sql: format!("{select} WHERE {}", key_condition(schema, "=")),
                select_sql: select,
                keys_sql: format!(
                    "SELECT {}, \"_tm_deleted\" FROM {}",
                    schema
                        .key
                        .iter()
                        .map(|k| quote(k))
                        .collect::<Vec<_>>()
                        .join(", "),
                    quote(&schema.table)
                ),
                schema: schema.clone(),
                unsigned_rowid,
            },
        );
        Ok(())
    }

    fn write(
        &mut self,
        records: &[TargetRecord],
        checkpoints: &[Checkpoint],
    ) -> Result<WriteStats> {
        // Another connection holding the write lock past the busy timeout (a second backfill
        // into the same file, a long `sqlite3` session) is waited out a few more times; the
        // failed transaction rolled back, so repeating it whole is safe.
        let mut attempt = 1;
        loop {
            match self.write_once(records, checkpoints) {
                Err(e @ Error::Busy { .. }) if attempt < BUSY_ATTEMPTS => {
                    tracing::warn!(error = %e, attempt, "the target is locked by another connection; trying the write again");
                    attempt += 1;
                }
                done => return done,
            }
        }
    }

    fn checkpoint(&mut self, stage: &str, scope: &str) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT value FROM _tm_checkpoints WHERE stage = ?1 AND scope = ?2",
                params![stage, scope],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| Error::Checkpoint(e.to_string()))
    }

    fn checkpoints(&mut self) -> Result<Vec<Checkpoint>> {
        let checkpoint_err = |e: rusqlite::Error| Error::Checkpoint(e.to_string());
        let mut stmt = self
            .conn
            .prepare("SELECT stage, scope, value FROM _tm_checkpoints ORDER BY stage, scope")
            .map_err(checkpoint_err)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(Checkpoint {
                    stage: r.get(0)?,
                    scope: r.get(1)?,
                    value: r.get(2)?,
                })
            })
            .map_err(checkpoint_err)?;
        rows.collect::<rusqlite::Result<_>>()
            .map_err(checkpoint_err)
    }

    fn read(&mut self, table: &str, key: &Row) -> Result<Option<StoredRecord>> {
        let mut found = self.read_many(table, std::slice::from_ref(key))?;
        Ok(found.pop().flatten())
    }

    fn read_many(&mut self, table: &str, keys: &[Row]) -> Result<Vec<Option<StoredRecord>>> {
        let state = self.table_state(table)?;
        // One read transaction: each statement outside one takes and drops the WAL read lock
        // (two fcntl calls and a look at the WAL index), which cost more than the read itself.
        let begin_err = |e: rusqlite::Error| Error::Read {
            table: table.to_string(),
            key: String::new(),
            message: format!("starting a read transaction: {e}"),
        };
        let in_tx = !self.conn.is_autocommit();
        if !in_tx && keys.len() > 1 {
            self.conn.execute_batch("BEGIN").map_err(begin_err)?;
        }
        let read_one = |stmt: &mut rusqlite::CachedStatement<'_>, key: &Row| {
            let read_err = |e: rusqlite::Error| Error::Read {
                table: table.to_string(),
                key: key_text(key),
                message: e.to_string(),
            };
            let params = key_params(&state.schema, state.unsigned_rowid, key)?;
            let mut rows = stmt
                .query(rusqlite::params_from_iter(params))
                .map_err(read_err)?;
            match rows.next().map_err(read_err)? {
                Some(row) => record_from_row(&state.schema, state.unsigned_rowid, row).map(Some),
                None => Ok(None),
            }
        };
        let out: Result<Vec<_>> = self
            .conn
            .prepare_cached(&state.read_sql)
            .map_err(|e| Error::Read {
                table: table.to_string(),
                key: String::new(),
                message: e.to_string(),
            })
            .and_then(|mut stmt| keys.iter().map(|k| read_one(&mut stmt, k)).collect());
        if !in_tx && keys.len() > 1 {
            self.conn.execute_batch("COMMIT").map_err(begin_err)?;
        }
        out
    }

    fn scan(
        &mut self,
        table: &str,
        after: Option<&Row>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>> {
        let state = self.table_state(table)?;
        let schema = state.schema.clone();
        let unsigned_rowid = state.unsigned_rowid;
        let select = state.select_sql.clone();
        self.page(table, &select, after, limit, |row| {
            record_from_row(&schema, unsigned_rowid, row)
        })
    }

    fn scan_keys(
        &mut self,
        table: &str,
        after: Option<&Row>,
        limit: usize,
    ) -> Result<Vec<ScannedKey>> {
        let state = self.table_state(table)?;
        let schema = state.schema.clone();
        let key_types: Vec<&TargetType> = schema
            .key
            .iter()
            .map(|k| &schema.column(k).expect("key columns are checked").ty)
            .collect();
        let select = state.keys_sql.clone();
        let unsigned_rowid = state.unsigned_rowid;
        let n = schema.key.len();
        self.page(table, &select, after, limit, |row| {
            let read_err = |message: String| Error::Read {
                table: schema.table.clone(),
                key: "(stored row)".into(),
                message,
            };
            let mut key = Row::new();
            for (i, (name, ty)) in schema.key.iter().zip(&key_types).enumerate() {
                let stored = row.get_ref(i).map_err(|e| read_err(e.to_string()))?;
                // A table with an unsigned rowid key has that one key column.
                let value = column_from_storage(ty, unsigned_rowid.is_some(), stored)
                    .map_err(|e| read_err(format!("column `{name}`: {e}")))?;
                key.push(*name, value);
            }
            Ok(ScannedKey {
                key,
                tombstone: row.get::<_, i64>(n).map_err(|e| read_err(e.to_string()))? != 0,
            })
        })
    }

    fn reads_tombstones(&self) -> bool {
        true
    }
}

impl SqliteSink {
    /// Up to `limit` rows of `select` (a `SELECT … FROM table` without conditions) with keys
    /// after `after`, in key order, each made into a `T` by `each`.
    fn page<T>(
        &mut self,
        table: &str,
        select: &str,
        after: Option<&Row>,
        limit: usize,
        mut each: impl FnMut(&rusqlite::Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let state = self.table_state(table)?;
        let schema = &state.schema;
        let order: Vec<String> = schema.key.iter().map(|k| quote(k)).collect();
        let (condition, mut params) = match after {
            Some(after) => (
                format!(" WHERE {}", key_condition(schema, ">")),
                key_params(schema, state.unsigned_rowid, after)?,
            ),
            None => (String::new(), Vec::new()),
        };
        let sql = format!(
            "{select}{condition} ORDER BY {} LIMIT ?{}",
            order.join(", "),
            params.len() + 1
        );
        params.push(SqlValue::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
        let scan_err = |e: rusqlite::Error| Error::Read {
            table: table.to_string(),
            key: after.map_or_else(|| "(start)".to_string(), key_text),
            message: e.to_string(),
        };
        let mut stmt = self.conn.prepare_cached(&sql).map_err(scan_err)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params))
            .map_err(scan_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(scan_err)? {
            out.push(each(row)?);
        }
        Ok(out)
    }

    fn table_state(&self, table: &str) -> Result<&TableState> {
        self.tables.get(table).ok_or_else(|| Error::Table {
            table: table.to_string(),
            message: "no schema was announced for this table (call ensure_table first)".into(),
        })
    }
}
