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

mod layout;
mod rows;
mod wal;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tidemark_schemas::{Checkpoint, Row, TargetRecord, TargetSchema, TargetType};

use crate::{check_schema, key_text, Error, Result, ScannedKey, Sink, StoredRecord, WriteStats};

pub use layout::{quote, storage_type, storage_value, value_from_storage, FORMAT, PAGE_SIZE};
pub use wal::CHECKPOINT_AFTER_BYTES;

use layout::{
    check_format, existing_columns, holds, is_rowid_key, key_condition, select_sql, table_err,
    unsigned_rowid, upsert_sql,
};
use rows::{column_from_storage, key_params, record_from_row, write_record};
use wal::{
    note_wal_frames, wal_size_limit, Checkpointer, CHECKPOINT_NOW_FACTOR, WAL_FRAMES,
    WAL_FRAME_HEADER_BYTES,
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
