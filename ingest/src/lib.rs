//! Ingest: everything tidemark reads from the source MySQL/MariaDB server.
//!
//! - [`source`]: connecting, preflight checks (`log_bin`, `binlog_format=ROW`,
//!   `binlog_row_image=FULL`), binlog coordinates (`SHOW MASTER STATUS`, or `SHOW BINARY LOG
//!   STATUS` on MySQL 8.4+), and table descriptions from `information_schema`.
//! - [`decode`]: exact decoding of binlog row images and result-set values into typed values.
//! - [`capture`]: the binlog tail, producing versioned change events and transaction
//!   boundaries (the only positions ever checkpointed).
//!
//! Ingest knows MySQL and nothing of the target.
//!
//! Errors are split by what the caller must do ([`Error::is_transient`]): connection and
//! stream failures are transient (reconnect from the last boundary, with backoff); everything
//! else is definite and stops the stage with a message that names the table, the position and
//! the fix.

pub mod backfill;
pub mod capture;
pub mod decode;
pub mod source;

pub use backfill::{
    Backfill, BackfillCheckpoint, BackfillConfig, BackfillControl, Progress, TableProgress,
};
pub use capture::{Capture, CaptureCheckpoint, CaptureConfig, CaptureMessage, StopAt};
pub use source::{Flavor, Scope, ServerInfo, Source, SourceConfig};

use tidemark_schemas::{BinlogPosition, TableId};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the source at {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("source query failed: {0}")]
    Mysql(#[from] mysql_async::Error),
    #[error("binlog stream: {0}")]
    Stream(String),
    #[error("{key}: {message}")]
    Config { key: String, message: String },
    #[error("table {table} does not exist on the source")]
    TableNotFound { table: TableId },
    #[error("table {table} has no primary key and no unique index over NOT NULL columns; add a primary key so its rows can be identified")]
    NoKey { table: TableId },
    #[error("column {table}.{column} has type {column_type}, which tidemark cannot decode yet")]
    UnsupportedType {
        table: TableId,
        column: String,
        column_type: String,
    },
    #[error(
        "the resume position {position} is no longer in the source's binlogs (oldest is {oldest}); changes in the gap are lost to capture, so these tables need a new backfill: {}",
        tables.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    )]
    PositionPurged {
        position: BinlogPosition,
        oldest: String,
        tables: Vec<TableId>,
    },
    #[error("the checkpoint was taken on source server {checkpoint_server} but this is {current_server}; binlog positions are not comparable across servers (re-backfill into a fresh target, or remove the capture checkpoint)")]
    ServerChanged {
        checkpoint_server: String,
        current_server: String,
    },
    #[error("the schema of {table} at {position} does not match information_schema ({detail}); the table changed again later in the binlog: re-backfill {table}")]
    SchemaMismatch {
        table: TableId,
        position: BinlogPosition,
        detail: String,
    },
    /// `detail` starts with the column (`column c: …`) when one column is at fault.
    #[error("cannot decode {table} at {position}: {detail}")]
    Decode {
        table: TableId,
        position: BinlogPosition,
        detail: String,
    },
    #[error("TRUNCATE TABLE {table} at {position} logs no row events, so the target cannot follow it; re-backfill {table} and restart capture after {position}")]
    Truncated {
        table: TableId,
        position: BinlogPosition,
    },
    #[error(transparent)]
    Version(#[from] tidemark_schemas::VersionError),
    #[error(transparent)]
    Position(#[from] tidemark_schemas::PositionError),
    #[error("binlog event could not be parsed: {0}")]
    Event(#[from] std::io::Error),
}

impl Error {
    /// Whether retrying (reconnecting from the last boundary) can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Connect { .. } | Error::Stream(_) => true,
            Error::Mysql(e) => {
                matches!(e, mysql_async::Error::Io(_) | mysql_async::Error::Driver(_))
            }
            _ => false,
        }
    }
}
