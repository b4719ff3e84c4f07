//! The data contract of tidemark: the types every stage exchanges, and their Avro form.
//!
//! What this crate owns:
//! - [`Value`]: one source column value, typed exactly (no float for DECIMAL, no wrap for
//!   BIGINT UNSIGNED, zero dates kept as zero dates, ENUM/SET as their names).
//! - [`ChangeEvent`]: one row change with its [`BinlogPosition`], its [`Version`] and its operation,
//!   produced by capture and backfill alike.
//! - [`Version`] arithmetic (DESIGN.md §2): the single total order that the sink's max-version
//!   register relies on. The rules live here, once, so capture and backfill cannot disagree.
//! - [`Lineage`] and [`TargetRecord`]: what the transform hands the sink.
//! - [`avro`]: the Avro schemas in `schemas/avro/*.avsc` and encoding of these types.
//!
//! Invariants kept here:
//! - `version(file_seq, event_offset, row_index) = file_seq × 2^32 + event_offset + row_index`,
//!   `backfill_version(file_seq, P) = file_seq × 2^32 + P − 2` and
//!   `repair_version(file_seq, P) = file_seq × 2^32 + P − 1`. Anything that would overflow the
//!   layout (file sequence ≥ 2^17, an offset ≥ 2^32) is an error, never a wrap.
//!
//! Why two reads at P get two versions (a refinement of DESIGN.md §2's single `V(P) = … + P − 1`):
//! a change made out of band (`sql_log_bin = 0`) does not move the binlog, so a repair re-read
//! can observe the same P as the backfill read it corrects. With one `V(P)` the two would tie and
//! the sink would ignore the repair. Both values stay strictly between every change before P and
//! every change at or after it: a rows event ending at P starts at least 19 header bytes before
//! P and its rows' versions stay below `event start + row count`, so `… + P − 2` is above them.
//! - A [`BinlogPosition`] orders by (file sequence, offset) and round-trips through its text form
//!   `file:offset`.

pub mod avro;
mod position;
pub mod source;
pub mod target;
pub mod text;
mod value;

pub use position::{file_seq, BinlogPosition, PositionError};
pub use source::{SourceColumn, SourceSchema, SourceType};
pub use target::{TargetColumn, TargetSchema, TargetType};
pub use text::{is_canonical_decimal, TemporalText};
/// An interned text: one copy per distinct text for the life of the process, cloned by copying
/// a pointer and compared by comparing pointers. Table names and the lineage texts every record
/// of a table repeats (source server, source table, transform and its version) are interned, so
/// that a record carries them without an allocation of its own.
pub use ustr::Ustr;
pub use value::{ColumnName, DateTime, Row, Value};

use serde::{Deserialize, Serialize};

/// The version of a change: one total order over all changes of a source, decided at the source.
pub type Version = i64;

/// Largest binlog file sequence number the version layout admits (exclusive).
pub const MAX_FILE_SEQ: u64 = 1 << 17;
/// Largest offset inside one binlog file the version layout admits (exclusive).
pub const MAX_FILE_OFFSET: u64 = 1 << 32;

/// Length of a binlog event header.
pub const EVENT_HEADER_LEN: u64 = 19;

/// Why a version could not be computed. Each case breaks DESIGN.md §2 invariant 5.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "binlog file sequence {0} is at or above 2^17; versions would exceed the range reserved below ScyllaDB's write timestamps"
    )]
    FileSeqOutOfRange(u64),
    #[error("binlog offset {0} is at or above 4 GiB; tidemark cannot version changes in a binlog file this large (lower max_binlog_size)")]
    OffsetOutOfRange(u64),
    #[error("row {row_index} of the rows event at offset {event_offset} lies beyond the event's length {event_len}")]
    RowOutsideEvent {
        event_offset: u64,
        event_len: u64,
        row_index: u64,
    },
}

/// Version of the row at `row_index` inside the rows event that starts at `event_offset`
/// (and is `event_len` bytes long) in binlog file number `file_seq`.
///
/// A row image occupies at least one byte, so `row_index < event_len` and two rows never
/// share a version.
pub fn row_version(
    file_seq: u64,
    event_offset: u64,
    event_len: u64,
    row_index: u64,
) -> Result<Version, VersionError> {
    check_seq_offset(file_seq, event_offset + event_len)?;
    // Every event has a 19-byte header, and each row image takes at least one byte after it.
    if row_index + EVENT_HEADER_LEN >= event_len {
        return Err(VersionError::RowOutsideEvent {
            event_offset,
            event_len,
            row_index,
        });
    }
    Ok(((file_seq << 32) + event_offset + row_index) as Version)
}

/// Version of a backfill row read after observing end-of-log position `end_pos` in file
/// `file_seq`: greater than every change written before the position, smaller than every change
/// written at or after it.
pub fn backfill_version(file_seq: u64, end_pos: u64) -> Result<Version, VersionError> {
    check_seq_offset(file_seq, end_pos)?;
    // end_pos ≥ 4 always (the binlog magic), so this does not underflow.
    Ok(((file_seq << 32) + end_pos.saturating_sub(2)) as Version)
}

/// Version of a row re-read for repair after observing `end_pos`: like [`backfill_version`], and
/// one above it, so a repair outranks a backfill read at the same position.
pub fn repair_version(file_seq: u64, end_pos: u64) -> Result<Version, VersionError> {
    check_seq_offset(file_seq, end_pos)?;
    Ok(((file_seq << 32) + end_pos.saturating_sub(1)) as Version)
}

fn check_seq_offset(file_seq: u64, offset: u64) -> Result<(), VersionError> {
    if file_seq >= MAX_FILE_SEQ {
        return Err(VersionError::FileSeqOutOfRange(file_seq));
    }
    if offset >= MAX_FILE_OFFSET {
        return Err(VersionError::OffsetOutOfRange(offset));
    }
    Ok(())
}

/// What a change did. Backfill and repair rows are upserts that carry their origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Insert,
    Update,
    Delete,
    Backfill,
    Repair,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Backfill => "backfill",
            Operation::Repair => "repair",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "insert" => Operation::Insert,
            "update" => Operation::Update,
            "delete" => Operation::Delete,
            "backfill" => Operation::Backfill,
            "repair" => Operation::Repair,
            _ => return None,
        })
    }

    /// Whether the change leaves a row behind (everything but a delete).
    pub fn is_upsert(self) -> bool {
        !matches!(self, Operation::Delete)
    }
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A source table, `database.table`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TableId {
    pub database: Ustr,
    pub table: Ustr,
}

impl TableId {
    pub fn new(database: impl Into<Ustr>, table: impl Into<Ustr>) -> Self {
        TableId {
            database: database.into(),
            table: table.into(),
        }
    }
}

impl std::fmt::Display for TableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.database)?;
        f.write_str(".")?;
        f.write_str(&self.table)
    }
}

impl std::str::FromStr for TableId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('.') {
            Some((d, t)) if !d.is_empty() && !t.is_empty() && !t.contains('.') => {
                Ok(TableId::new(d, t))
            }
            _ => Err(format!(
                "`{s}` is not a table name of the form database.table"
            )),
        }
    }
}

/// One row change, as capture or backfill saw it at the source.
///
/// The position travels with the change all the way to the sink; it is never reconstructed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// Identity of the source server (`@@server_uuid` or `@@server_id` when there is no uuid).
    pub source_server: Ustr,
    pub table: TableId,
    pub op: Operation,
    /// The primary key (or chosen unique key) of the row, in key order.
    pub key: Row,
    /// The full row image after the change; `None` for a delete.
    pub after: Option<Row>,
    pub version: Version,
    /// Where the change sits in the binlog: the rows event for captured changes, the observed
    /// end of log for backfill reads.
    pub position: BinlogPosition,
    /// Global transaction id, when the server has one for the transaction (`domain-server-seq`
    /// on MariaDB, `uuid:n` on MySQL).
    pub gtid: Option<String>,
    /// Source commit time in microseconds since the epoch (the event's own timestamp).
    pub commit_time_us: i64,
    /// For backfill rows: the chunk they were read in (one text shared by the chunk's rows).
    pub chunk: Option<std::sync::Arc<str>>,
}

/// What the transform stamps on every target record (DESIGN.md §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lineage {
    pub source_server: Ustr,
    pub source_table: Ustr,
    /// Canonical text of the source key, e.g. `{"id":42}`.
    pub source_key: String,
    /// `file:offset` of the change (shared by the records of one rows event or backfill chunk).
    pub position: std::sync::Arc<str>,
    pub gtid: Option<String>,
    pub version: Version,
    pub op: Operation,
    pub commit_time_us: i64,
    pub transform_name: Ustr,
    pub transform_version: Ustr,
    /// Hash of the source row image the record was made from; empty for tombstones.
    pub source_digest: String,
    pub chunk: Option<std::sync::Arc<str>>,
}

/// A record ready for the sink: the target table, the target key, the columns (or a tombstone),
/// and lineage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TargetRecord {
    pub table: Ustr,
    pub key: Row,
    /// `None` marks a tombstone.
    pub columns: Option<Row>,
    pub lineage: Lineage,
}

impl TargetRecord {
    pub fn version(&self) -> Version {
        self.lineage.version
    }
    pub fn is_tombstone(&self) -> bool {
        self.columns.is_none()
    }
}

/// A stored checkpoint: which stage, for which scope (a table, or `*`), and its value in text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub stage: String,
    pub scope: String,
    pub value: String,
}

/// A reconciler finding (DESIGN.md §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriftEvent {
    pub table: String,
    pub key: String,
    pub class: String,
    pub columns: Vec<DriftColumn>,
    pub target_version: Option<Version>,
    pub target_lineage: Option<Lineage>,
    pub observed_before: String,
    pub observed_after: String,
    pub reason: String,
}

/// One differing column in a drift event, with both sides in canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftColumn {
    pub name: String,
    pub source: Option<String>,
    pub target: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn version_layout_matches_design() {
        assert_eq!(row_version(1, 100, 50, 0).unwrap(), (1 << 32) + 100);
        assert_eq!(backfill_version(1, 100).unwrap(), (1 << 32) + 98);
        assert_eq!(repair_version(1, 100).unwrap(), (1 << 32) + 99);
        assert!(matches!(
            row_version(MAX_FILE_SEQ, 4, 10, 0),
            Err(VersionError::FileSeqOutOfRange(_))
        ));
        assert!(matches!(
            backfill_version(1, MAX_FILE_OFFSET),
            Err(VersionError::OffsetOutOfRange(_))
        ));
        assert!(
            row_version(1, 4, 30, 11).is_err(),
            "row index beyond the event body"
        );
        assert!(row_version(1, 4, 30, 10).is_ok());
        // Stays below ScyllaDB's microsecond timestamps (≈1.7e15 in 2026).
        let max = backfill_version(MAX_FILE_SEQ - 1, MAX_FILE_OFFSET - 1).unwrap();
        assert!(max < 1_700_000_000_000_000, "max version {max}");
    }

    /// An event in a binlog: where it starts and how long it is.
    fn events() -> impl Strategy<Value = Vec<(u64, u64, u64)>> {
        // (file_seq, length, rows) runs of consecutive events, laid out back to back.
        prop::collection::vec((0u64..3, 24u64..200, 1u64..5), 1..40)
    }

    proptest! {
        /// Invariants 1 and 2: versions strictly increase in log order, and a backfill read at
        /// any event boundary P sits strictly between everything before P and everything after.
        #[test]
        fn versions_follow_log_order_and_backfill_never_ties(spec in events(), cut in 0usize..40) {
            let mut seq = 1u64;
            let mut offset = 4u64;
            let mut versions = Vec::new();   // (version, file_seq, event_start)
            for (bump, len, rows) in spec {
                if bump == 0 { seq += 1; offset = 4; }
                let rows = rows.min(len);
                for r in 0..rows {
                    versions.push((row_version(seq, offset, len, r).unwrap(), seq, offset));
                }
                offset += len;
            }
            for w in versions.windows(2) {
                prop_assert!(w[0].0 < w[1].0, "versions must strictly increase: {:?}", w);
            }
            let cut = cut.min(versions.len() - 1);
            let (_, seq_p, pos_p) = versions[cut];
            let v_p = backfill_version(seq_p, pos_p).unwrap();
            let r_p = repair_version(seq_p, pos_p).unwrap();
            prop_assert!(v_p < r_p, "a repair outranks a backfill read at the same position");
            for (v, seq, start) in &versions {
                if (*seq, *start) < (seq_p, pos_p) {
                    prop_assert!(*v < v_p, "change before P must be older than V(P)");
                } else {
                    prop_assert!(*v > r_p, "change at or after P must be newer than repair V(P)");
                }
            }
        }
    }
}
