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
pub mod retry;
pub mod source;
pub mod split;
pub mod statement;

pub use backfill::{
    Backfill, BackfillCheckpoint, BackfillConfig, BackfillControl, Progress, TableProgress,
};
pub use capture::{
    Capture, CaptureCheckpoint, CaptureConfig, CaptureMessage, ResyncMarker, StopAt, RESYNC_STAGE,
};
pub use retry::ReadRetry;
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
    #[error(
        "these tables in scope cannot be captured:\n  {}\nfix each (add a primary key, or change the column), or leave the table out with source.exclude_tables = [\"db.table\", …]",
        problems.join("\n  ")
    )]
    NotCapturable { problems: Vec<String> },
    #[error("column {table}.{column} has type {column_type}, which tidemark cannot decode yet")]
    UnsupportedType {
        table: TableId,
        column: String,
        column_type: String,
    },
    #[error(
        "the resume position {position} is no longer in the source's binlogs (oldest is {oldest}); changes in the gap are lost to capture, so these tables need a new backfill: {}; run `tidemark resync --config <file> --all`",
        tables.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
    )]
    PositionPurged {
        position: BinlogPosition,
        oldest: String,
        tables: Vec<TableId>,
    },
    /// The server refused to send its binlog from `position` (ER_MASTER_FATAL_ERROR_READING_BINLOG):
    /// the file is gone, or the position is not in it. Definite: reconnecting cannot help.
    #[error("the server cannot send its binlog from {position}: {message}")]
    BinlogUnreadable {
        position: BinlogPosition,
        message: String,
    },
    #[error("the checkpoint was taken on source server {checkpoint_server} but this is {current_server}; binlog positions (and so versions) are not comparable across servers: migrate from this server into a fresh target (a new target path or keyspace)")]
    ServerChanged {
        checkpoint_server: String,
        current_server: String,
    },
    #[error("the schema of {table} at {position} does not match information_schema ({detail}); the table changed again later in the binlog, so its earlier changes cannot be decoded: run `tidemark resync --config <file> --table {table}`")]
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
    #[error("a statement that writes {table} is in the binlog at {position} as SQL text, without row images (`{statement}`): a session ran with binlog_format=STATEMENT or MIXED, so capture cannot apply it. Make every session log in ROW format (remove the SET SESSION binlog_format override), then run `tidemark resync --config <file> --table {table}`")]
    StatementLogged {
        table: TableId,
        position: BinlogPosition,
        statement: String,
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
