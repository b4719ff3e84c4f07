//! Sinks: write target records under the version guard (DESIGN.md §3).
//!
//! What this crate owns: the [`Sink`] trait and its backends, [`sqlite::SqliteSink`] (the
//! embedded default) and [`scylladb::ScyllaSink`] (production). Both pass one conformance suite
//! (`sink/tests/conformance/mod.rs`), written once and generic over the trait.
//!
//! Invariants every backend keeps:
//! - A sink is a per-key max-version register: for each target key it keeps the row (or a
//!   tombstone) with the highest version it has seen and ignores anything older. So replays and
//!   duplicates are harmless, and any permutation of the same changes converges to the same
//!   state. SQLite also ignores an *equal* version; ScyllaDB breaks write-timestamp ties its own
//!   way, which is harmless because equal versions for one key only come from replays of the
//!   same change (see [`scylladb`] for the full analysis).
//! - Checkpoints are written through the sink and never get ahead of the data they cover:
//!   SQLite commits them in the same transaction as the records; ScyllaDB writes them only after
//!   every record of the [`Sink::write`] call was acknowledged.
//! - Storage is lossless: every [`tidemark_schemas::Value`] reads back equal through
//!   [`Sink::read`]. Where a backend has no native type that holds every source value (BIGINT
//!   UNSIGNED in SQLite, zero dates in ScyllaDB, …) the value is stored as its canonical text.
//!
//! Failure modes, by what the caller must do ([`Error::is_transient`]):
//! - transient (a node unreachable, a timeout after every retry): retry the same batch, or
//!   restart from the last checkpoint; writes are idempotent, so a partly applied batch is safe.
//! - definite (a value the target cannot hold, a record for a table never announced): a bug
//!   upstream or a schema the transform should have rejected; the error names table, key and
//!   column.
//! - fatal configuration (bad consistency name, credentials half set, keyspace missing): stop;
//!   the message names the setting.

pub mod resilient;
pub mod scylladb;
pub mod sqlite;

use std::collections::BTreeMap;

use tidemark_schemas::{Checkpoint, Row, TargetRecord, TargetSchema};

pub use scylladb::{ScyllaConfig, ScyllaSink};
pub use sqlite::SqliteSink;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a sink holds for one key: the record that won, with its lineage. `columns` holds every
/// column of the table's schema in schema order (NULL for columns the record did not carry);
/// `None` marks a tombstone.
pub type StoredRecord = TargetRecord;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("target database {path}: {message}")]
    Open { path: String, message: String },
    /// Another connection holds the target's write lock (SQLite `SQLITE_BUSY`/`SQLITE_LOCKED`)
    /// beyond every retry (transient: the lock will be released).
    #[error("target database {path} is locked by another connection (e.g. a second tidemark writing to the same file): {message}")]
    Busy { path: String, message: String },
    #[error("target table {table}: {message}")]
    Table { table: String, message: String },
    #[error("target write to {table}: {message}")]
    Write { table: String, message: String },
    #[error("target checkpoint store: {0}")]
    Checkpoint(String),
    /// No node of the cluster answered at start (fatal if the addresses are wrong, transient if
    /// the cluster is down).
    #[error("cannot reach ScyllaDB node(s) {nodes}: {message}")]
    Connect { nodes: String, message: String },
    /// A setting is wrong; the message names it and the fix.
    #[error("target setting `{setting}`: {message}")]
    Config { setting: String, message: String },
    /// A value the target cannot hold (definite: caused by the data).
    #[error("target table {table}, key {key}, column {column}: {message}")]
    Value {
        table: String,
        key: String,
        column: String,
        message: String,
    },
    /// The target did not acknowledge a write after every retry (transient).
    #[error("ScyllaDB did not acknowledge the write to {table}, key {key}, after {attempts} attempt(s): {message}")]
    Unacknowledged {
        table: String,
        key: String,
        attempts: u32,
        message: String,
    },
    /// Reading a key back failed.
    #[error("target read from {table}, key {key}: {message}")]
    Read {
        table: String,
        key: String,
        message: String,
    },
}

impl Error {
    /// Whether retrying later (or restarting from the last checkpoint) may succeed without any
    /// change to data or configuration.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Connect { .. } | Error::Unacknowledged { .. } | Error::Busy { .. }
        )
    }
}

/// Counts of one write, per target table.
///
/// "Applied" means written. SQLite knows exactly which records its conditional upsert ignored
/// because the stored version was newer or equal. ScyllaDB does not read before writing, so it
/// cannot know: it counts every record it sent as applied (the database's last-write-wins may
/// still shadow it) and counts as ignored only records superseded by a newer (or identical-version)
/// record of the same key *within the same write call*, which it does not send at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// table → (records applied, records ignored because a newer or equal version won)
    pub per_table: BTreeMap<String, (u64, u64)>,
}

impl WriteStats {
    pub fn applied(&self) -> u64 {
        self.per_table.values().map(|(a, _)| a).sum()
    }
    pub fn ignored(&self) -> u64 {
        self.per_table.values().map(|(_, i)| i).sum()
    }
    pub fn merge(&mut self, other: &WriteStats) {
        for (t, (a, i)) in &other.per_table {
            let e = self.per_table.entry(t.clone()).or_default();
            e.0 += a;
            e.1 += i;
        }
    }
}

/// A target that keeps, per key, the record with the highest version.
///
/// Deliberately synchronous: the apply loop runs on a blocking thread, SQLite is synchronous, and
/// the ScyllaDB backend blocks on its own (or a given) tokio runtime.
pub trait Sink {
    /// Create the target table, or add the columns it lacks. Also announces the table's schema to
    /// this sink instance: [`Sink::write`], [`Sink::read`] and [`Sink::scan`] need it first.
    fn ensure_table(&mut self, schema: &TargetSchema) -> Result<()>;
    /// Write records under the version guard, and the checkpoints after them: when this returns
    /// `Ok`, every record and checkpoint is durable (SQLite: committed; ScyllaDB: acknowledged at
    /// the configured consistency), and the checkpoints never without the records.
    fn write(&mut self, records: &[TargetRecord], checkpoints: &[Checkpoint])
        -> Result<WriteStats>;
    /// Read a checkpoint.
    fn checkpoint(&mut self, stage: &str, scope: &str) -> Result<Option<String>>;
    /// Every checkpoint the target holds, by stage and scope (for `tidemark status`).
    fn checkpoints(&mut self) -> Result<Vec<Checkpoint>>;
    /// The record the register holds for `key` (the key columns by name, any order), or `None`.
    /// A deleted key reads as a tombstone where the backend keeps them readable
    /// ([`Sink::reads_tombstones`]), otherwise as `None`.
    fn read(&mut self, table: &str, key: &Row) -> Result<Option<StoredRecord>>;
    /// [`Sink::read`] of each key, in order. Backends override it where reading many keys at
    /// once is cheaper than one at a time (SQLite: one read transaction for all of them).
    fn read_many(&mut self, table: &str, keys: &[Row]) -> Result<Vec<Option<StoredRecord>>> {
        keys.iter().map(|k| self.read(table, k)).collect()
    }
    /// Up to `limit` records with keys after `after` (from the start when `None`), in the
    /// backend's own key order (SQLite: key order of the stored values; ScyllaDB: token order of
    /// the partition key, then clustering order). Paging with the last key of each page visits
    /// every stored key once. Tombstones are included where the backend keeps them readable.
    fn scan(&mut self, table: &str, after: Option<&Row>, limit: usize)
        -> Result<Vec<StoredRecord>>;
    /// [`Sink::scan`] reduced to what the reconciler's target pass needs: each record's target
    /// key and whether it is a tombstone (never its lineage: a target row is identified by its
    /// own key). Backends override it where reading the key columns is cheaper than whole
    /// records.
    fn scan_keys(
        &mut self,
        table: &str,
        after: Option<&Row>,
        limit: usize,
    ) -> Result<Vec<ScannedKey>> {
        Ok(self
            .scan(table, after, limit)?
            .into_iter()
            .map(|r| ScannedKey {
                tombstone: r.is_tombstone(),
                key: r.key,
            })
            .collect())
    }
    /// Whether a deleted key reads back as a tombstone with its version (SQLite) or as nothing
    /// (ScyllaDB: a row tombstone is invisible to reads).
    fn reads_tombstones(&self) -> bool;
}

/// One record as [`Sink::scan_keys`] sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ScannedKey {
    /// The target key (page with the last one).
    pub key: Row,
    pub tombstone: bool,
}

/// A key as canonical text, for messages.
pub(crate) fn key_text(key: &Row) -> String {
    key.canonical_text()
}

/// The key columns of `schema`, taken by name from `key`, in key order; an error names the
/// missing column.
pub(crate) fn key_in_order<'a>(
    schema: &TargetSchema,
    key: &'a Row,
) -> Result<Vec<&'a tidemark_schemas::Value>> {
    schema
        .key
        .iter()
        .map(|k| {
            key.get(k).ok_or_else(|| Error::Read {
                table: schema.table.clone(),
                key: key_text(key),
                message: format!("the key lacks column `{k}`"),
            })
        })
        .collect()
}

/// Checks a schema is usable by any backend: a key, and every key column among the columns.
pub(crate) fn check_schema(schema: &TargetSchema) -> Result<()> {
    if schema.key.is_empty() {
        return Err(Error::Table {
            table: schema.table.clone(),
            message: "the target schema has no key".into(),
        });
    }
    if let Some(k) = schema.key.iter().find(|k| schema.column(k).is_none()) {
        return Err(Error::Table {
            table: schema.table.clone(),
            message: format!("key column `{k}` is not among the table's columns"),
        });
    }
    Ok(())
}
