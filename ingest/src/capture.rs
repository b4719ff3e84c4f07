//! Binlog capture: tail the source's binlog and turn row events into versioned [`ChangeEvent`]s.
//!
//! ## Algorithm
//! Capture registers as a replica (`COM_REGISTER_SLAVE`, `COM_BINLOG_DUMP`) and reads events
//! from a *transaction boundary* — the position right after a commit (XID or `COMMIT` query), a
//! standalone statement (DDL) or a rotation. It emits, through a bounded channel:
//!
//! 1. [`CaptureMessage::Schema`] the first time a table is seen and after every DDL that touches
//!    it, so the apply side can create or alter the target table before rows arrive;
//! 2. [`CaptureMessage::Changes`] for each rows event: one [`ChangeEvent`] per row, version
//!    `row_version(file_seq, event_start, event_len, row_index)` (DESIGN.md §2). A primary-key
//!    changing update becomes a delete of the old key and an insert of the new key; both halves
//!    carry the version of their row image — they touch different keys, so no register ever sees
//!    a tie;
//! 3. [`CaptureMessage::Commit`] at every transaction boundary, with the boundary position. This
//!    is the only position that may be checkpointed: resuming from it re-reads whole
//!    transactions, and replays are harmless because the sink ignores versions it already has.
//!
//! Changes of a transaction are emitted before its commit is seen (a large transaction is never
//! buffered whole); the checkpoint still only moves at boundaries, so a crash mid-transaction
//! re-delivers the transaction from its start.
//!
//! ## Schema changes
//! A DDL statement in the stream drops the cached descriptions; the next table map re-reads
//! `information_schema`. Each row image is decoded in the shape its table map describes: with
//! `binlog_row_metadata=FULL` the table map names its columns, and each is found by name in
//! today's description (so a row written before a column was added, dropped elsewhere in the
//! order, or moved lands in its own columns); a column dropped or retyped since, whose values
//! cannot be decoded from today's description, stops capture with an error naming the table, the
//! column and `tidemark resync`. A new shape is announced ([`CaptureMessage::Schema`]) before its
//! first change. Servers that cannot write column names (older than MariaDB 10.5 or MySQL 8.0.1)
//! are refused at start ([`Source::check_binlog_settings`]); a table map without names all the
//! same (written before `binlog_row_metadata` was set to FULL) must match `information_schema`
//! column for column.
//!
//! An `ALTER TABLE` or `TRUNCATE` of a captured table changes values no row event carries (a
//! column added with a default, a retyped column, every row of a truncated table): capture sends
//! a [`ResyncMarker`] checkpoint for the table, from the boundary after the statement, and tells
//! whoever listens ([`Capture::with_reread`]) to re-read the target rows written before it. So do
//! `DROP TABLE`, both names of a `RENAME TABLE` (the new one to be backfilled) and `DROP
//! DATABASE` (for every table of it capture knows of: those in scope at start, those the target
//! holds rows of, and those met since).
//!
//! ## Failure modes
//! - A resume position whose binlog file was purged: [`Error::PositionPurged`] naming every table
//!   in scope (each needs a new backfill, since changes in the gap are unknown).
//! - A checkpoint taken on another server (failover to a server with another binlog):
//!   [`Error::ServerChanged`].
//! - A binlog past 4 GiB or a file sequence beyond 2^17: [`Error::Version`].
//! - Connection loss: reconnect with backoff from the last emitted boundary.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use mysql_async::binlog::events::{
    Event, EventData, QueryEvent, RotateEvent, RowsEventData, TableMapEvent,
};
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStream, BinlogStreamRequest};
use mysql_common::binlog::consts::EventType;
use mysql_common::binlog::value::BinlogValue;
use mysql_common::constants::ColumnType;
use mysql_common::io::ParseBuf;
use serde::Deserialize;
use tidemark_schemas::{
    file_seq, row_version, BinlogPosition, ChangeEvent, Operation, Row, SourceSchema, TableId,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::decode;
use crate::source::{connect_opts, load_schema, Flavor, Scope, Source};
use crate::{Error, Result};

/// MariaDB event types that `mysql_common` does not know.
const MARIADB_ANNOTATE_ROWS: u8 = 160;
const MARIADB_BINLOG_CHECKPOINT: u8 = 161;
const MARIADB_GTID: u8 = 162;
const MARIADB_GTID_LIST: u8 = 163;
const MARIADB_QUERY_COMPRESSED: u8 = 165;
const MARIADB_ROWS_COMPRESSED_FIRST: u8 = 166;
const MARIADB_ROWS_COMPRESSED_LAST: u8 = 171;
/// MariaDB GTID flag: the event group is a single statement with no COMMIT (DDL).
const MARIADB_FL_STANDALONE: u8 = 1;

/// `[capture]`: where to start and how to stream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Where to start when there is no checkpoint: `"end"` (the current end of the binlog; history
    /// comes from backfill), `"earliest"` (the oldest binlog the server still has) or an explicit
    /// `"file:offset"`.
    #[serde(default = "default_start")]
    pub start: String,
    /// Seconds between heartbeats the server sends while idle (they also detect a dead link).
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
    /// Capacity of the channel between capture and apply, in messages (backpressure).
    #[serde(default = "default_queue")]
    pub queue_capacity: usize,
}

fn default_start() -> String {
    "end".into()
}
fn default_heartbeat() -> u64 {
    1
}
fn default_queue() -> usize {
    256
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            start: default_start(),
            heartbeat_seconds: default_heartbeat(),
            queue_capacity: default_queue(),
        }
    }
}

/// What capture hands downstream, in binlog order.
#[derive(Debug, Clone)]
pub enum CaptureMessage {
    /// The description of a table, sent before its first change and after DDL.
    Schema(Arc<SourceSchema>),
    /// The row changes of one rows event.
    Changes(Vec<ChangeEvent>),
    /// A transaction boundary: everything before `position` has been emitted.
    Commit {
        position: BinlogPosition,
        gtid: Option<String>,
        /// When the source wrote the transaction (its events' timestamp, seconds since the
        /// epoch); `None` for the start position.
        source_time: Option<u32>,
    },
    /// Store this checkpoint once everything sent before it is written (backfill progress).
    Checkpoint(tidemark_schemas::Checkpoint),
}

/// The capture checkpoint: where to resume, and on which server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct CaptureCheckpoint {
    pub position: String,
    pub server: String,
    #[serde(default)]
    pub gtid: Option<String>,
    /// When the source wrote the last transaction before `position` (seconds since the epoch),
    /// when known: how old the newest captured change is, for the capture lag in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_time: Option<u32>,
}

/// Checkpoint stage of capture; its scope is [`ALL_TABLES`].
pub const CAPTURE_STAGE: &str = "capture";
/// Scope of checkpoints that cover every table.
pub const ALL_TABLES: &str = "*";

impl CaptureCheckpoint {
    /// The checkpoint to resume at `position` of `server`'s binlog.
    pub fn new(position: &BinlogPosition, server: impl Into<String>, gtid: Option<String>) -> Self {
        CaptureCheckpoint {
            position: position.to_string(),
            server: server.into(),
            gtid,
            source_time: None,
        }
    }

    /// With the time the source wrote the last transaction before the position.
    pub fn at_source_time(mut self, source_time: Option<u32>) -> Self {
        self.source_time = source_time;
        self
    }

    /// As a stored checkpoint (stage [`CAPTURE_STAGE`], scope [`ALL_TABLES`]).
    pub fn to_checkpoint(&self) -> tidemark_schemas::Checkpoint {
        tidemark_schemas::Checkpoint {
            stage: CAPTURE_STAGE.into(),
            scope: ALL_TABLES.into(),
            value: serde_json::to_string(self).expect("checkpoints serialize"),
        }
    }
}

/// When capture stops on its own.
#[derive(Debug, Clone)]
pub enum StopAt {
    /// Run until cancelled.
    Never,
    /// Stop at the first boundary at or beyond this position.
    Position(BinlogPosition),
    /// Stop at the first boundary at or beyond a position set later (e.g. the end of log once a
    /// backfill has finished); `None` means not yet.
    Later(tokio::sync::watch::Receiver<Option<BinlogPosition>>),
}

impl StopAt {
    /// Whether a boundary at `position` is where capture stops.
    pub fn reached(&self, position: &BinlogPosition) -> bool {
        match self {
            StopAt::Never => false,
            StopAt::Position(p) => position >= p,
            StopAt::Later(rx) => rx.borrow().as_ref().is_some_and(|p| position >= p),
        }
    }
}

/// Binlog capture of the tables in a [`Scope`].
pub struct Capture {
    source: Source,
    scope: Scope,
    server_id: u32,
    config: CaptureConfig,
    schemas: HashMap<TableId, Arc<SourceSchema>>,
    /// Tables whose schema must be sent downstream again before their next change.
    announced: HashMap<TableId, bool>,
    /// Tables re-backfilled by `tidemark resync` from the position given: a change capture
    /// cannot follow (TRUNCATE, a statement-logged write) before it is covered by that backfill.
    resynced: BTreeMap<TableId, BinlogPosition>,
    /// Tables a DDL changed in the event being handled (ALTER TABLE, TRUNCATE, DROP TABLE, both
    /// names of a RENAME): their rows in the target are to be re-read from the boundary after
    /// it, and, for a table that arrived under its name (`true`: the new name of a RENAME),
    /// backfilled first.
    changed: Vec<(TableId, bool)>,
    /// Told of each re-read as its marker goes downstream (the embedded pipeline runs it): the
    /// table, the position it is re-read from, and whether it is backfilled again first.
    reread: Option<mpsc::UnboundedSender<(TableId, BinlogPosition, bool)>>,
    /// The tables in scope capture knows of: those the caller named
    /// ([`Capture::with_known_tables`]: the tables in scope at start and every table the target
    /// holds rows of), those met in table maps since, and those that arrived under a new name. A
    /// `DROP DATABASE` names none of its tables: these are the ones whose rows are re-read
    /// (tombstoned) after it.
    known: std::collections::BTreeSet<TableId>,
    /// `tidemark_capture_events_total` of each table and operation met.
    event_counters: HashMap<(TableId, &'static str), metrics::Counter>,
}

/// Checkpoint stage of `tidemark resync`; the scope is the table (`db.table`).
pub const RESYNC_STAGE: &str = "resync";

/// What `tidemark resync` recorded for a table: its new backfill reads the source after `from`
/// (every row it writes has a version above `V(from)`), and whether the sweep that follows it
/// (re-reading the target rows the backfill did not rewrite, to remove the ones the source no
/// longer has) is done.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ResyncMarker {
    pub from: String,
    pub sweep_done: bool,
    /// Whether the table is backfilled again from `from` (`tidemark resync`): capture then skips
    /// the table's changes before `from`, which that backfill covers. A schema change (ALTER,
    /// TRUNCATE) only re-reads the rows already in the target (`false`): capture skips nothing.
    #[serde(default = "rebackfill_by_default")]
    pub rebackfill: bool,
}

fn rebackfill_by_default() -> bool {
    true
}

impl ResyncMarker {
    pub fn to_checkpoint(&self, table: &TableId) -> tidemark_schemas::Checkpoint {
        tidemark_schemas::Checkpoint {
            stage: RESYNC_STAGE.into(),
            scope: table.to_string(),
            value: serde_json::to_string(self).expect("checkpoints serialize"),
        }
    }

    /// `from` as a position.
    pub fn from_position(&self) -> Result<BinlogPosition> {
        self.from
            .parse()
            .map_err(|e: tidemark_schemas::PositionError| Error::Config {
                key: "resync checkpoint".into(),
                message: e.to_string(),
            })
    }
}

/// Mutable state of one streaming session.
struct StreamState {
    /// The binlog file being read, interned once per rotation: every position made from it copies it.
    file: tidemark_schemas::Ustr,
    file_seq: u64,
    boundary: BinlogPosition,
    gtid: Option<String>,
    in_txn: bool,
    /// The timestamp of the newest event read that carries one.
    event_time: u32,
    rows: u64,
    /// Whether the stream's format description event arrived (it tells about checksums).
    fde_seen: bool,
}

impl Capture {
    pub fn new(source: Source, scope: Scope, server_id: u32, config: CaptureConfig) -> Self {
        Capture {
            source,
            scope,
            server_id,
            config,
            schemas: HashMap::new(),
            announced: HashMap::new(),
            resynced: BTreeMap::new(),
            changed: Vec::new(),
            reread: None,
            known: Default::default(),
            event_counters: HashMap::new(),
        }
    }

    /// Tables to count as known (see the `known` field): the tables in scope at start, and the
    /// tables the target holds rows of (whose source may be gone already).
    pub fn with_known_tables(mut self, tables: impl IntoIterator<Item = TableId>) -> Self {
        self.known.extend(tables);
        self
    }

    /// Where to tell of each re-read a schema change asks for (see [`ResyncMarker`]).
    pub fn with_reread(
        mut self,
        reread: mpsc::UnboundedSender<(TableId, BinlogPosition, bool)>,
    ) -> Self {
        self.reread = Some(reread);
        self
    }

    /// Tables `tidemark resync` re-backfills, each from a position (see [`ResyncMarker`]).
    pub fn with_resynced(mut self, resynced: BTreeMap<TableId, BinlogPosition>) -> Self {
        self.resynced = resynced;
        self
    }

    /// A row image of `table` at `at` that today's description cannot decode (a column dropped,
    /// renamed or retyped since it was written, while capture was stopped or behind): the table
    /// is backfilled again from the end of log now, and its changes before that are skipped —
    /// the new backfill reads the rows as they are after them (an automatic `tidemark resync`).
    async fn rebackfill(
        &mut self,
        table: &TableId,
        at: &BinlogPosition,
        detail: &str,
        out: &mpsc::Sender<CaptureMessage>,
    ) -> Result<()> {
        let from = self.source.end_of_log().await?;
        warn!(table = %table, position = %at, reason = %detail, from = %from, "a change written before a schema change cannot be decoded now; the table is backfilled again from the end of log");
        self.resynced.insert(*table, from);
        let marker = ResyncMarker {
            from: from.to_string(),
            sweep_done: false,
            rebackfill: true,
        };
        for checkpoint in [
            crate::BackfillCheckpoint::default().to_checkpoint(table),
            marker.to_checkpoint(table),
        ] {
            if out
                .send(CaptureMessage::Checkpoint(checkpoint))
                .await
                .is_err()
            {
                return Ok(());
            }
        }
        if let Some(reread) = &self.reread {
            let _ = reread.send((*table, from, true));
        }
        Ok(())
    }

    /// Whether a change of `table` at `at` that capture cannot apply is covered by a resync.
    fn covered_by_resync(&self, table: &TableId, at: &BinlogPosition) -> bool {
        self.resynced.get(table).is_some_and(|from| at < from)
    }

    pub fn source(&mut self) -> &mut Source {
        &mut self.source
    }

    /// Decide where to start: the checkpoint if there is one (checked against the server), or
    /// the configured start.
    pub async fn resolve_start(
        &mut self,
        checkpoint: Option<&CaptureCheckpoint>,
    ) -> Result<BinlogPosition> {
        let files = self.source.binlog_files().await?;
        let pos = match checkpoint {
            Some(cp) => {
                if cp.server != self.source.info.identity {
                    return Err(Error::ServerChanged {
                        checkpoint_server: cp.server.clone(),
                        current_server: self.source.info.identity.to_string(),
                    });
                }
                cp.position
                    .parse::<BinlogPosition>()
                    .map_err(|e| Error::Config {
                        key: "capture checkpoint".into(),
                        message: e.to_string(),
                    })?
            }
            None => match self.config.start.as_str() {
                "end" => self.source.end_of_log().await?,
                "earliest" => BinlogPosition::new(
                    files.first().cloned().ok_or_else(|| Error::Config {
                        key: "capture.start".into(),
                        message: "the server lists no binlog files".into(),
                    })?,
                    4,
                ),
                explicit => explicit
                    .parse()
                    .map_err(|e: tidemark_schemas::PositionError| Error::Config {
                        key: "capture.start".into(),
                        message: format!("{e}; use \"end\", \"earliest\" or \"file:offset\""),
                    })?,
            },
        };
        if !files.iter().any(|f| pos.file == *f) {
            let tables = self.source.tables_in_scope(&self.scope).await?;
            return Err(Error::PositionPurged {
                position: pos,
                oldest: files.first().cloned().unwrap_or_default(),
                tables,
            });
        }
        Ok(pos)
    }

    /// Stream from `start` into `out` until cancelled or `stop` is reached; reconnects with
    /// backoff on connection loss. Returns the last boundary emitted.
    pub async fn run(
        &mut self,
        start: BinlogPosition,
        stop: StopAt,
        out: mpsc::Sender<CaptureMessage>,
        cancel: CancellationToken,
    ) -> Result<BinlogPosition> {
        // The start is a transaction boundary: announce it, so the position is stored even if
        // no transaction passes before capture stops (it is the apply frontier's floor).
        if out
            .send(CaptureMessage::Commit {
                position: start,
                gtid: None,
                source_time: None,
            })
            .await
            .is_err()
        {
            return Ok(start);
        }
        let mut from = start;
        let mut backoff = Duration::from_millis(500);
        loop {
            if stop.reached(&from) {
                return Ok(from);
            }
            match self.stream_from(&from, &stop, &out, &cancel).await {
                Ok(done) => return Ok(done),
                Err((e, reached)) if e.is_transient() && !cancel.is_cancelled() => {
                    if reached > from {
                        backoff = Duration::from_millis(500);
                    }
                    from = reached;
                    warn!(error = %e, position = %from, retry_in = ?backoff, "binlog stream lost; reconnecting");
                    metrics::counter!("tidemark_source_reconnects_total").increment(1);
                    tokio::select! {
                        _ = cancel.cancelled() => return Ok(from),
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err((Error::BinlogUnreadable { position, message }, _)) => {
                    // The file may have been purged after `resolve_start` checked it (a purge
                    // can run at any time): say so, with the tables that need a new backfill.
                    return Err(self.purged_or(position, message).await);
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// [`Error::PositionPurged`] when the server no longer lists `position`'s file, else the
    /// server's own refusal.
    async fn purged_or(&mut self, position: BinlogPosition, message: String) -> Error {
        let unreadable = Error::BinlogUnreadable { position, message };
        let Ok(files) = self.source.binlog_files().await else {
            return unreadable;
        };
        if files.iter().any(|f| position.file == *f) {
            return unreadable;
        }
        match self.source.tables_in_scope(&self.scope).await {
            Ok(tables) => Error::PositionPurged {
                position,
                oldest: files.first().cloned().unwrap_or_default(),
                tables,
            },
            Err(_) => unreadable,
        }
    }

    /// One streaming session. On error, also returns the last boundary emitted.
    async fn stream_from(
        &mut self,
        from: &BinlogPosition,
        stop: &StopAt,
        out: &mpsc::Sender<CaptureMessage>,
        cancel: &CancellationToken,
    ) -> std::result::Result<BinlogPosition, (Error, BinlogPosition)> {
        let fail = |e: Error| (e, *from);
        let mut conn = self.source.new_connection().await.map_err(fail)?;
        let heartbeat_ns = self.config.heartbeat_seconds.max(1) * 1_000_000_000;
        conn.query_drop(format!("SET @master_heartbeat_period = {heartbeat_ns}"))
            .await
            .map_err(|e| fail(e.into()))?;
        if self.source.info.flavor == Flavor::MariaDb {
            // Announce GTID capability so MariaDB sends its GTID events as such (not as BEGIN).
            conn.query_drop("SET @mariadb_slave_capability = 4")
                .await
                .map_err(|e| fail(e.into()))?;
        }
        let request = BinlogStreamRequest::new(self.server_id)
            .with_filename(from.file.as_bytes())
            .with_pos(from.offset);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(|e| fail(classify_stream_error(e, from)))?;
        info!(position = %from, server = %self.source.info.identity, "binlog capture started");

        let mut st = StreamState {
            file: from.file,
            file_seq: file_seq(&from.file).map_err(|e| fail(e.into()))?,
            boundary: *from,
            gtid: None,
            in_txn: false,
            event_time: 0,
            rows: 0,
            fde_seen: false,
        };
        // A session dropped mid-transaction is resumed from the last boundary.
        let result = self.pump(&mut stream, &mut st, stop, out, cancel).await;
        let boundary = st.boundary;
        // Closing a stream the server is still feeding can block; dropping it is enough.
        drop(stream);
        match result {
            Ok(()) => Ok(boundary),
            Err(e) => Err((e, boundary)),
        }
    }

    async fn pump(
        &mut self,
        stream: &mut BinlogStream,
        st: &mut StreamState,
        stop: &StopAt,
        out: &mpsc::Sender<CaptureMessage>,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let idle_limit = Duration::from_secs(self.config.heartbeat_seconds.max(1) * 10 + 5);
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                next = tokio::time::timeout(idle_limit, stream.next()) => match next {
                    Err(_) => return Err(Error::Stream(format!(
                        "no event or heartbeat for {idle_limit:?} at {}", st.boundary
                    ))),
                    Ok(None) => return Err(Error::Stream(format!("the server ended the binlog stream at {}", st.boundary))),
                    Ok(Some(Err(e))) => return Err(classify_stream_error(e, &st.boundary)),
                    Ok(Some(Ok(event))) => event,
                },
            };
            let at_boundary = self.handle_event(stream, &event, st, out).await?;
            // A schema change of a captured table: its target rows are re-read from the boundary
            // after it (a column added with a default, a retyped column, TRUNCATE change values
            // no row event carries). The marker is stored with the boundary that passes it.
            for (table, arrived) in std::mem::take(&mut self.changed) {
                let marker = ResyncMarker {
                    from: st.boundary.to_string(),
                    sweep_done: false,
                    rebackfill: arrived,
                };
                if arrived {
                    info!(table = %table, from = %st.boundary, "a table arrived under this name (RENAME): it will be backfilled");
                    // Backfilled from scratch: a checkpoint left by an earlier table of this
                    // name must not make a restart take the backfill for done.
                    let fresh = crate::BackfillCheckpoint::default().to_checkpoint(&table);
                    if out.send(CaptureMessage::Checkpoint(fresh)).await.is_err() {
                        return Ok(());
                    }
                } else {
                    info!(table = %table, from = %st.boundary, "schema change: the table's rows in the target will be re-read");
                }
                if out
                    .send(CaptureMessage::Checkpoint(marker.to_checkpoint(&table)))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                if let Some(reread) = &self.reread {
                    let _ = reread.send((table, st.boundary, arrived));
                }
            }
            // `&&` short-circuits: the GTID is only taken at a boundary.
            if at_boundary
                && out
                    .send(CaptureMessage::Commit {
                        position: st.boundary,
                        gtid: st.gtid.take(),
                        source_time: (st.event_time > 0).then_some(st.event_time),
                    })
                    .await
                    .is_err()
            {
                return Ok(()); // downstream is gone: shutting down
            }
            // Heartbeats arrive while the source is idle: the place to notice a stop set later.
            let idle =
                event.header().event_type_raw() == EventType::HEARTBEAT_EVENT as u8 && !st.in_txn;
            if at_boundary || idle {
                *READ_TO.lock().expect("position lock") = Some(st.boundary);
            }
            if (at_boundary || idle) && stop.reached(&st.boundary) {
                info!(position = %st.boundary, rows = st.rows, "capture caught up");
                return Ok(());
            }
        }
    }

    /// Handle one event; returns whether it completed a transaction boundary.
    async fn handle_event(
        &mut self,
        stream: &BinlogStream,
        event: &Event,
        st: &mut StreamState,
        out: &mpsc::Sender<CaptureMessage>,
    ) -> Result<bool> {
        let header = event.header();
        let ty = header.event_type_raw();
        let end = u64::from(header.log_pos());
        let size = u64::from(header.event_size());
        note_lag(ty, header.timestamp(), st.in_txn);
        if header.timestamp() > 0 && ty != EventType::HEARTBEAT_EVENT as u8 {
            st.event_time = header.timestamp();
        }
        let at = |st: &StreamState| BinlogPosition::new(st.file, end.saturating_sub(size));

        if ty == EventType::ROTATE_EVENT as u8 {
            let rotate: RotateEvent<'_> = event.read_event()?;
            st.file = if st.fde_seen {
                rotate.name().as_ref().into()
            } else {
                rotate_target_before_fde(event, &rotate).into()
            };
            st.file_seq = file_seq(&st.file)?;
            if end != 0 && !st.in_txn {
                // A real rotation (not the one the server sends first): a boundary.
                st.boundary = BinlogPosition::new(st.file, rotate.position());
                return Ok(true);
            }
            return Ok(false);
        }
        // Events outside a transaction that end at a real position (the new file's preamble,
        // heartbeats while idle) move the boundary: everything before them has been read. Without
        // this, an end of log just past a rotation would never be reached.
        let preamble = [
            EventType::FORMAT_DESCRIPTION_EVENT as u8,
            EventType::HEARTBEAT_EVENT as u8,
            MARIADB_BINLOG_CHECKPOINT,
            MARIADB_GTID_LIST,
            EventType::PREVIOUS_GTIDS_EVENT as u8,
        ];
        if preamble.contains(&ty) && !st.in_txn && end > 0 {
            if ty == EventType::FORMAT_DESCRIPTION_EVENT as u8 {
                st.fde_seen = true;
            }
            let here = BinlogPosition::new(st.file, end);
            if here > st.boundary {
                st.boundary = here;
                return Ok(true);
            }
            return Ok(false);
        }
        match ty {
            t if t == EventType::FORMAT_DESCRIPTION_EVENT as u8 => {
                st.fde_seen = true;
                return Ok(false);
            }
            t if t == EventType::XID_EVENT as u8 => return Ok(self.boundary(st, end)),
            t if t == EventType::QUERY_EVENT as u8 => {
                let q: QueryEvent<'_> = event.read_event()?;
                return self.handle_query(&q, st, end, &at(st));
            }
            t if t == EventType::GTID_EVENT as u8 => {
                if let Ok(Some(EventData::GtidEvent(g))) = event.read_data() {
                    let sid = g.sid();
                    st.gtid = Some(format!("{}:{}", format_uuid(&sid), g.gno()));
                }
                return Ok(false);
            }
            MARIADB_GTID => {
                let data = event.data();
                if data.len() >= 13 {
                    let seq = u64::from_le_bytes(data[0..8].try_into().expect("8 bytes"));
                    let domain = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
                    let flags = data[12];
                    st.gtid = Some(format!("{domain}-{}-{seq}", header.server_id()));
                    st.in_txn = flags & MARIADB_FL_STANDALONE == 0;
                }
                return Ok(false);
            }
            MARIADB_QUERY_COMPRESSED
            | MARIADB_ROWS_COMPRESSED_FIRST..=MARIADB_ROWS_COMPRESSED_LAST => {
                return Err(Error::Config {
                    key: "source server setting log_bin_compress".into(),
                    message: format!(
                        "a compressed binlog event arrived at {}; set log_bin_compress=OFF on the source",
                        at(st)
                    ),
                });
            }
            MARIADB_ANNOTATE_ROWS => return Ok(false),
            _ => {}
        }
        let rows_event = match event.read_data() {
            Ok(Some(EventData::RowsEvent(r))) => r,
            Ok(Some(EventData::TableMapEvent(tme))) => {
                self.on_table_map(&tme, &at(st), out).await?;
                return Ok(false);
            }
            _ => return Ok(false),
        };
        let table_id = rows_event.table_id();
        let Some(tme) = stream.get_tme(table_id) else {
            return Err(Error::Stream(format!(
                "rows event at {} refers to unknown table id {table_id}",
                at(st)
            )));
        };
        let table = TableId::new(tme.database_name(), tme.table_name());
        // A resynced table's changes before its resync are covered by its new backfill (and
        // may not even decode against today's description of it).
        if !self.scope.includes(&table.database, &table.table)
            || self.covered_by_resync(&table, &at(st))
        {
            return Ok(false);
        }
        let schema = match self.schema_for(&table, tme, &at(st)).await {
            Err(Error::SchemaMismatch { detail, .. }) if self.reread.is_some() => {
                self.rebackfill(&table, &at(st), &detail, out).await?;
                return Ok(false);
            }
            Err(Error::TableNotFound { .. }) => return Ok(false), // see `on_table_map`
            schema => schema?,
        };
        let position = at(st);
        let changes = decode_rows(
            &rows_event,
            tme,
            &schema,
            self.source.info.identity,
            st,
            &position,
            size,
            i64::from(header.timestamp()) * 1_000_000,
        )?;
        st.rows += changes.len() as u64;
        if let Some(first) = changes.first() {
            // The counter of each table and operation is registered once: no label built per
            // event.
            self.event_counters
                .entry((table, first.op.as_str()))
                .or_insert_with(|| {
                    metrics::counter!(
                        "tidemark_capture_events_total",
                        "table" => table.to_string(),
                        "op" => first.op.as_str()
                    )
                })
                .increment(changes.len() as u64);
            let _ = out.send(CaptureMessage::Changes(changes)).await;
        }
        // A rows event outside a transaction (non-transactional engine without COMMIT) is a
        // boundary only if the statement ends there; the server then sends a COMMIT query.
        Ok(false)
    }

    fn boundary(&mut self, st: &mut StreamState, end: u64) -> bool {
        st.in_txn = false;
        st.boundary = BinlogPosition::new(st.file, end);
        true
    }

    fn handle_query(
        &mut self,
        q: &QueryEvent<'_>,
        st: &mut StreamState,
        end: u64,
        at: &BinlogPosition,
    ) -> Result<bool> {
        let sql = q.query();
        let trimmed = strip_leading_comments(&sql);
        let upper: String = trimmed
            .chars()
            .take(16)
            .collect::<String>()
            .to_ascii_uppercase();
        if upper.starts_with("BEGIN") || upper.starts_with("XA START") {
            st.in_txn = true;
            return Ok(false);
        }
        if upper.starts_with("COMMIT")
            || upper.starts_with("XA COMMIT")
            || upper.starts_with("ROLLBACK")
        {
            return Ok(self.boundary(st, end));
        }
        if let Some(written) = crate::statement::written_tables(trimmed, &q.schema()) {
            // A session logging in STATEMENT (or MIXED) format: no row images to apply.
            if let Some(table) = written.into_iter().find(|t| {
                self.scope.includes(&t.database, &t.table) && !self.covered_by_resync(t, at)
            }) {
                return Err(Error::StatementLogged {
                    table,
                    position: *at,
                    statement: trimmed.chars().take(120).collect(),
                });
            }
        }
        if is_ddl(&upper) {
            let db = q.schema().into_owned();
            // One statement per query event, each table in it once (`changed_tables`), and
            // `changed` is emptied after every event.
            let changed = crate::statement::changed_tables(trimmed, &db)
                .into_iter()
                .filter(|(table, _)| {
                    self.scope.includes(&table.database, &table.table)
                        && !self.covered_by_resync(table, at)
                })
                .map(|(table, change)| (table, change == crate::statement::TableChange::Arrived))
                .collect::<Vec<_>>();
            self.known.extend(
                changed
                    .iter()
                    .filter(|(_, arrived)| *arrived)
                    .map(|(t, _)| *t),
            );
            self.changed.extend(changed);
            // DROP DATABASE: every table of it capture knows of is gone.
            if let Some(dropped) = crate::statement::dropped_database(trimmed) {
                let gone: Vec<TableId> = self
                    .known
                    .iter()
                    .filter(|t| t.database.as_str() == dropped && !self.covered_by_resync(t, at))
                    .copied()
                    .collect();
                for t in gone {
                    self.known.remove(&t);
                    self.changed.push((t, false));
                }
            }
            // Drop cached descriptions: the next table map re-reads information_schema.
            debug!(statement = %trimmed, "DDL: refreshing table descriptions");
            self.schemas.clear();
            self.announced.clear();
        }
        if st.in_txn {
            Ok(false)
        } else {
            Ok(self.boundary(st, end))
        }
    }

    async fn on_table_map(
        &mut self,
        tme: &TableMapEvent<'_>,
        at: &BinlogPosition,
        out: &mpsc::Sender<CaptureMessage>,
    ) -> Result<()> {
        let table = TableId::new(tme.database_name(), tme.table_name());
        if !self.scope.includes(&table.database, &table.table) || self.covered_by_resync(&table, at)
        {
            return Ok(());
        }
        let schema = match self.schema_for(&table, tme, at).await {
            Err(Error::SchemaMismatch { detail, .. }) if self.reread.is_some() => {
                return self.rebackfill(&table, at, &detail, out).await;
            }
            Err(Error::TableNotFound { .. }) => {
                // Dropped or renamed later in the binlog (capture is behind that DDL): its rows
                // here are skipped. The DDL, when capture reaches it, has the rows the target
                // holds for this name tombstoned and a renamed table backfilled under its new
                // name, from the DDL's position on (see `changed`).
                debug!(table = %table, position = %at, "rows of a table dropped or renamed later in the binlog: skipped");
                return Ok(());
            }
            schema => schema?,
        };
        if !self.announced.get(&table).copied().unwrap_or(false) {
            self.announced.insert(table, true);
            self.known.insert(table);
            let _ = out.send(CaptureMessage::Schema(schema)).await;
        }
        Ok(())
    }

    /// The shape of `table`'s rows in the events `tme` maps: the columns the binlog has, in its
    /// order, described from `information_schema`. With the column names the server writes
    /// into table maps (`binlog_row_metadata=FULL`), each binlog column is found by name, so an
    /// event written before columns were added, dropped or reordered decodes into the right
    /// columns; a column that no longer exists, or changed type since, stops capture with an
    /// error naming it (never a guess). Without names (a server too old to write them), the
    /// table map must match `information_schema` column for column.
    async fn schema_for(
        &mut self,
        table: &TableId,
        tme: &TableMapEvent<'_>,
        at: &BinlogPosition,
    ) -> Result<Arc<SourceSchema>> {
        let names = table_map_column_names(tme).map_err(|detail| Error::Decode {
            table: *table,
            position: *at,
            detail,
        })?;
        if let Some(s) = self.schemas.get(table) {
            if shape_is(s, tme, names.as_deref()) {
                return Ok(s.clone());
            }
        }
        let mut conn = connect_opts(&self.source.opts).await?;
        let current = load_schema(&mut conn, self.source.info.flavor, table).await;
        let _ = conn.disconnect().await;
        let current = current?;
        let schema = match &names {
            Some(names) => shape_by_names(&current, tme, names, at)?,
            None => {
                check_table_map(&current, tme, at)?;
                current
            }
        };
        let schema = Arc::new(schema);
        // A new shape is announced again before its first change.
        if self
            .schemas
            .get(table)
            .is_some_and(|old| old.columns != schema.columns)
        {
            self.announced.remove(table);
        }
        self.schemas.insert(*table, schema.clone());
        Ok(schema)
    }
}

/// The column names a table map carries (`binlog_row_metadata=FULL`), if any.
fn table_map_column_names(
    tme: &TableMapEvent<'_>,
) -> std::result::Result<Option<Vec<String>>, String> {
    use mysql_common::binlog::events::OptionalMetadataField;
    for field in tme.iter_optional_meta() {
        if let OptionalMetadataField::ColumnName(names) = field.map_err(|e| e.to_string())? {
            let names = names
                .iter_names()
                .map(|n| n.map(|n| n.name().into_owned()))
                .collect::<std::io::Result<Vec<String>>>()
                .map_err(|e| e.to_string())?;
            return Ok(Some(names));
        }
    }
    Ok(None)
}

/// Whether `schema` is the shape `tme` describes (same names, when it has them, and types).
fn shape_is(schema: &SourceSchema, tme: &TableMapEvent<'_>, names: Option<&[String]>) -> bool {
    if tme.columns_count() as usize != schema.columns.len() {
        return false;
    }
    if let Some(names) = names {
        if !schema
            .columns
            .iter()
            .zip(names)
            .all(|(c, n)| c.name.as_str() == n)
        {
            return false;
        }
    }
    schema.columns.iter().enumerate().all(|(i, c)| {
        tme.get_column_type(i)
            .ok()
            .flatten()
            .is_none_or(|ty| binlog_type_fits(ty, &c.ty))
    })
}

/// The shape of a table map with column `names`: each column described as `information_schema`
/// describes it now, in the binlog's order (see [`Capture::schema_for`]).
fn shape_by_names(
    current: &SourceSchema,
    tme: &TableMapEvent<'_>,
    names: &[String],
    at: &BinlogPosition,
) -> Result<SourceSchema> {
    let mismatch = |detail: String| Error::SchemaMismatch {
        table: current.table,
        position: *at,
        detail,
    };
    if names.len() != tme.columns_count() as usize {
        return Err(mismatch(format!(
            "the table map names {} columns but has {}",
            names.len(),
            tme.columns_count()
        )));
    }
    let mut columns = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let Some(col) = current.column(name) else {
            return Err(mismatch(format!(
                "column `{name}` of the binlog row no longer exists (dropped or renamed later)"
            )));
        };
        if let Ok(Some(ty)) = tme.get_column_type(i) {
            if !binlog_type_fits(ty, &col.ty) {
                return Err(mismatch(format!(
                    "column `{name}` is {} in information_schema but {ty:?} in the binlog (its type changed later)",
                    col.column_type
                )));
            }
        }
        columns.push(col.clone());
    }
    let key = current
        .key_columns()
        .map(|k| {
            columns
                .iter()
                .position(|c| c.name == k.name)
                .ok_or_else(|| {
                    mismatch(format!(
                        "key column `{}` is not in the binlog row (the key changed later)",
                        k.name
                    ))
                })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SourceSchema {
        table: current.table,
        columns,
        key,
        key_name: current.key_name.clone(),
    })
}

/// The table map must describe the same columns as `information_schema` does now.
fn check_table_map(
    schema: &SourceSchema,
    tme: &TableMapEvent<'_>,
    at: &BinlogPosition,
) -> Result<()> {
    let mismatch = |detail: String| Error::SchemaMismatch {
        table: schema.table,
        position: *at,
        detail,
    };
    if tme.columns_count() as usize != schema.columns.len() {
        return Err(mismatch(format!(
            "the binlog row has {} columns, information_schema lists {}",
            tme.columns_count(),
            schema.columns.len()
        )));
    }
    for (i, col) in schema.columns.iter().enumerate() {
        let Ok(Some(ty)) = tme.get_column_type(i) else {
            continue;
        };
        if !binlog_type_fits(ty, &col.ty) {
            return Err(mismatch(format!(
                "column {} is {} in information_schema but {ty:?} in the binlog",
                col.name, col.column_type
            )));
        }
    }
    Ok(())
}

fn binlog_type_fits(
    ty: mysql_common::constants::ColumnType,
    source: &tidemark_schemas::SourceType,
) -> bool {
    use mysql_common::constants::ColumnType as C;
    use tidemark_schemas::SourceType as S;
    match source {
        S::Integer { bits, .. } => matches!(
            (bits, ty),
            (8, C::MYSQL_TYPE_TINY)
                | (16, C::MYSQL_TYPE_SHORT)
                | (24, C::MYSQL_TYPE_INT24)
                | (32, C::MYSQL_TYPE_LONG)
                | (64, C::MYSQL_TYPE_LONGLONG)
        ),
        S::Decimal { .. } => matches!(ty, C::MYSQL_TYPE_NEWDECIMAL | C::MYSQL_TYPE_DECIMAL),
        S::Float => ty == C::MYSQL_TYPE_FLOAT,
        S::Double => ty == C::MYSQL_TYPE_DOUBLE,
        S::Bit { .. } => ty == C::MYSQL_TYPE_BIT,
        S::Date => matches!(ty, C::MYSQL_TYPE_DATE | C::MYSQL_TYPE_NEWDATE),
        S::DateTime { .. } => matches!(ty, C::MYSQL_TYPE_DATETIME | C::MYSQL_TYPE_DATETIME2),
        S::Timestamp { .. } => matches!(ty, C::MYSQL_TYPE_TIMESTAMP | C::MYSQL_TYPE_TIMESTAMP2),
        S::Time { .. } => matches!(ty, C::MYSQL_TYPE_TIME | C::MYSQL_TYPE_TIME2),
        S::Year => ty == C::MYSQL_TYPE_YEAR,
        S::Enum { .. } => matches!(ty, C::MYSQL_TYPE_ENUM | C::MYSQL_TYPE_STRING),
        S::Set { .. } => matches!(ty, C::MYSQL_TYPE_SET | C::MYSQL_TYPE_STRING),
        S::Text { .. } | S::Binary { .. } | S::Json | S::Geometry => !matches!(
            ty,
            C::MYSQL_TYPE_TINY
                | C::MYSQL_TYPE_SHORT
                | C::MYSQL_TYPE_INT24
                | C::MYSQL_TYPE_LONG
                | C::MYSQL_TYPE_LONGLONG
                | C::MYSQL_TYPE_NEWDECIMAL
                | C::MYSQL_TYPE_FLOAT
                | C::MYSQL_TYPE_DOUBLE
                | C::MYSQL_TYPE_DATETIME2
                | C::MYSQL_TYPE_TIMESTAMP2
                | C::MYSQL_TYPE_TIME2
                | C::MYSQL_TYPE_NEWDATE
                | C::MYSQL_TYPE_DATE
                | C::MYSQL_TYPE_YEAR
                | C::MYSQL_TYPE_BIT
        ),
    }
}

/// The file named by a rotate event that arrived before the format description event.
///
/// The server sends an artificial rotate *before* the format description event, so the reader
/// cannot know yet that events carry a CRC32 trailer, and the trailer ends up in the name. When
/// the last four bytes are the CRC32 of the rest of the event, they are a trailer, not a name.
fn rotate_target_before_fde(event: &Event, rotate: &RotateEvent<'_>) -> String {
    let name = rotate.name_raw();
    let mut raw = Vec::new();
    if name.len() > 4
        && event
            .write(
                mysql_common::binlog::consts::BinlogVersion::Version4,
                &mut raw,
            )
            .is_ok()
        && raw.len() > 4
    {
        let (body, trailer) = raw.split_at(raw.len() - 4);
        if crc32fast::hash(body).to_le_bytes() == trailer {
            return String::from_utf8_lossy(&name[..name.len() - 4]).into_owned();
        }
    }
    String::from_utf8_lossy(name).into_owned()
}

/// The row images of one rows event, parsed straight from the event's bytes.
///
/// `mysql_common`'s own iterator builds a `BinlogRow` per image with a full result-set `Column`
/// per value (schema, table and column names copied each time), which was more than half of
/// capture's CPU. The wire format is simple: per row, for each image the event carries (before
/// for updates and deletes, after for inserts and updates), a null bitmap over the columns
/// present in that image, then each non-null value encoded by its column type and table-map
/// metadata. Values are parsed with `mysql_common`'s own `BinlogValue` decoder, borrowing from
/// the event. Only FULL images are accepted (`binlog_row_image=FULL`): a row image missing
/// columns would put values under the wrong names. MySQL's partial JSON updates carry a shared
/// image before the after image; such events are refused by the decoder with the setting to
/// change (see `decode::from_binlog`).
struct RowImages<'a> {
    buf: ParseBuf<'a>,
    /// Whether rows carry a before image and an after image.
    before: bool,
    after: bool,
    /// Per column: wire type, table-map metadata, unsignedness.
    layout: Vec<(ColumnType, &'a [u8], bool)>,
    partial: bool,
}

impl<'a> RowImages<'a> {
    fn new(
        event: &'a RowsEventData<'a>,
        tme: &'a TableMapEvent<'a>,
        schema: &SourceSchema,
    ) -> std::result::Result<Self, RowImageError> {
        let n = event.num_columns() as usize;
        if n != schema.columns.len() {
            return Err(RowImageError::Other(format!(
                "the rows event has {n} columns, the table {}",
                schema.columns.len()
            )));
        }
        let mut layout = Vec::with_capacity(n);
        for (i, col) in schema.columns.iter().enumerate() {
            let ty = match tme.get_column_type(i) {
                Ok(Some(ty)) => ty,
                Ok(None) => {
                    return Err(RowImageError::Other(format!(
                        "column {}: no type in the table map",
                        col.name
                    )))
                }
                Err(e) => return Err(RowImageError::Other(format!("column {}: {e}", col.name))),
            };
            let meta = tme.get_column_metadata(i).unwrap_or(&[]);
            let unsigned = matches!(
                col.ty,
                tidemark_schemas::SourceType::Integer { unsigned: true, .. }
            );
            layout.push((ty, meta, unsigned));
        }
        let before = event.columns_before_image().map(|bits| bits.count_ones());
        let after = event.columns_after_image().map(|bits| bits.count_ones());
        if let Some(present) = [before, after].into_iter().flatten().find(|p| *p != n) {
            return Err(RowImageError::NotFull(present));
        }
        Ok(RowImages {
            buf: ParseBuf(event.rows_data()),
            before: before.is_some(),
            after: after.is_some(),
            layout,
            partial: matches!(event, RowsEventData::PartialUpdateRowsEvent(_)),
        })
    }

    /// One full image: the null bitmap, then the non-null values.
    fn image(&mut self) -> std::io::Result<Vec<BinlogValue<'a>>> {
        let nulls: &[u8] = self.buf.parse(self.layout.len().div_ceil(8))?;
        let mut values = Vec::with_capacity(self.layout.len());
        for (i, (ty, meta, unsigned)) in self.layout.iter().enumerate() {
            if nulls[i / 8] & (1 << (i % 8)) != 0 {
                values.push(BinlogValue::Value(mysql_common::Value::NULL));
            } else {
                values.push(
                    self.buf
                        .parse::<BinlogValue<'a>>((*ty, *meta, *unsigned, false))?,
                );
            }
        }
        Ok(values)
    }
}

enum RowImageError {
    /// An image with this many columns instead of all.
    NotFull(usize),
    Other(String),
}

type RowImagePair<'a> = (Option<Vec<BinlogValue<'a>>>, Option<Vec<BinlogValue<'a>>>);

impl<'a> Iterator for RowImages<'a> {
    type Item = std::result::Result<RowImagePair<'a>, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.0.is_empty() {
            return None;
        }
        if self.partial {
            // Stop after reporting it once.
            self.buf = ParseBuf(&[]);
            return Some(Err(
                "a partial JSON update arrived; set binlog_row_value_options='' on the source so full JSON images are logged".into(),
            ));
        }
        let mut parse = || -> std::io::Result<RowImagePair<'a>> {
            let before = if self.before {
                Some(self.image()?)
            } else {
                None
            };
            let after = if self.after {
                Some(self.image()?)
            } else {
                None
            };
            Ok((before, after))
        };
        match parse() {
            Ok(pair) => Some(Ok(pair)),
            Err(e) => {
                self.buf = ParseBuf(&[]);
                Some(Err(format!("undecodable row image: {e}")))
            }
        }
    }
}

/// Decode every row of a rows event into change events.
#[allow(clippy::too_many_arguments)]
fn decode_rows(
    rows_event: &RowsEventData<'_>,
    tme: &TableMapEvent<'_>,
    schema: &SourceSchema,
    server: tidemark_schemas::Ustr,
    st: &StreamState,
    position: &BinlogPosition,
    event_len: u64,
    commit_time_us: i64,
) -> Result<Vec<ChangeEvent>> {
    let (before_op, after_op) = match rows_event {
        RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => {
            (None, Some(Operation::Insert))
        }
        RowsEventData::UpdateRowsEventV1(_)
        | RowsEventData::UpdateRowsEvent(_)
        | RowsEventData::PartialUpdateRowsEvent(_) => {
            (Some(Operation::Update), Some(Operation::Update))
        }
        RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => {
            (Some(Operation::Delete), None)
        }
    };
    let mut changes = Vec::new();
    let decode_error = |detail: String| Error::Decode {
        table: schema.table,
        position: *position,
        detail,
    };
    let images = RowImages::new(rows_event, tme, schema).map_err(|e| match e {
        RowImageError::NotFull(present) => Error::SchemaMismatch {
            table: schema.table,
            position: *position,
            detail: format!(
                "the row image has {present} of {} columns; a session logged it with binlog_row_image other than FULL",
                schema.columns.len()
            ),
        },
        RowImageError::Other(detail) => decode_error(detail),
    })?;
    for (row_index, item) in images.enumerate() {
        let (before, after) = item.map_err(decode_error)?;
        let version = row_version(st.file_seq, position.offset, event_len, row_index as u64)?;
        let decode = |image: Vec<BinlogValue<'_>>| -> Result<Row> {
            let mut row = Row(Vec::with_capacity(schema.columns.len()));
            for (col, value) in schema.columns.iter().zip(image) {
                let v = decode::from_binlog(col, value).map_err(|detail| Error::Decode {
                    table: schema.table,
                    position: *position,
                    detail: format!("column {}: {detail}", col.name),
                })?;
                row.0.push((col.name, v));
            }
            Ok(row)
        };
        let before = before.map(decode).transpose()?;
        let after = after.map(decode).transpose()?;
        let make = |op: Operation, key: Row, after: Option<Row>| ChangeEvent {
            source_server: server,
            table: schema.table,
            op,
            key,
            after,
            version,
            position: *position,
            gtid: st.gtid.clone(),
            commit_time_us,
            chunk: None,
        };
        match (before, after, before_op, after_op) {
            (None, Some(after), _, Some(op)) => {
                changes.push(make(op, key_of(schema, &after), Some(after)))
            }
            (Some(before), None, Some(op), _) => {
                changes.push(make(op, key_of(schema, &before), None))
            }
            (Some(before), Some(after), _, Some(op)) => {
                let old_key = key_of(schema, &before);
                let new_key = key_of(schema, &after);
                if old_key != new_key {
                    changes.push(make(Operation::Delete, old_key, None));
                    changes.push(make(Operation::Insert, new_key, Some(after)));
                } else {
                    changes.push(make(op, new_key, Some(after)));
                }
            }
            _ => {}
        }
    }
    Ok(changes)
}

/// The key columns of `row`, in key order.
pub fn key_of(schema: &SourceSchema, row: &Row) -> Row {
    Row(schema
        .key
        .iter()
        .map(|&i| row.0[i].clone())
        .collect::<Vec<_>>())
}

fn classify_stream_error(e: mysql_async::Error, at: &BinlogPosition) -> Error {
    if let mysql_async::Error::Server(ref s) = e {
        // ER_MASTER_FATAL_ERROR_READING_BINLOG: the requested file/position is gone or invalid.
        // Definite: `Capture::run` tells a purged file (which tables to re-backfill) from the rest.
        if s.code == 1236 {
            return Error::BinlogUnreadable {
                position: *at,
                message: s.message.clone(),
            };
        }
    }
    Error::from(e)
}

fn format_uuid(sid: &[u8; 16]) -> String {
    let h: String = sid.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn strip_leading_comments(sql: &str) -> &str {
    let mut s = sql.trim_start();
    loop {
        if let Some(rest) = s.strip_prefix("/*") {
            match rest.find("*/") {
                Some(end) => s = rest[end + 2..].trim_start(),
                None => return s,
            }
        } else if s.starts_with("--") || s.starts_with('#') {
            match s.find('\n') {
                Some(end) => s = s[end + 1..].trim_start(),
                None => return "",
            }
        } else {
            return s;
        }
    }
}

fn is_ddl(upper: &str) -> bool {
    ["ALTER", "CREATE", "DROP", "RENAME", "TRUNCATE"]
        .iter()
        .any(|k| upper.starts_with(k))
}

/// The boundary the captures of this process last read to (a transaction's end, or the end of
/// log a heartbeat reported), for `tidemark_capture_lag_bytes`.
static READ_TO: std::sync::Mutex<Option<BinlogPosition>> = std::sync::Mutex::new(None);

/// Where capture has read the binlog to, if it has started: see [`READ_TO`].
pub fn read_to() -> Option<BinlogPosition> {
    *READ_TO.lock().expect("position lock")
}

/// `tidemark_capture_lag_seconds`: how far behind the source's clock the event being read was
/// written (its header's timestamp, in whole seconds), and 0 on a heartbeat outside a
/// transaction (the server sends those only once capture has read everything it has). The
/// server's and this machine's clocks are assumed to agree; a negative difference counts as 0.
fn note_lag(event_type: u8, timestamp: u32, in_txn: bool) {
    let lag = if event_type == EventType::HEARTBEAT_EVENT as u8 {
        if in_txn {
            return;
        }
        0.0
    } else if timestamp == 0 {
        return; // the artificial events of a connection's start carry no time
    } else {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        (now - f64::from(timestamp)).max(0.0)
    };
    metrics::gauge!("tidemark_capture_lag_seconds").set(lag);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_comments_before_statements() {
        assert_eq!(strip_leading_comments("/* x */ -- y\n BEGIN"), "BEGIN");
        assert!(is_ddl("ALTER TABLE"));
        assert!(!is_ddl("INSERT"));
    }

    #[test]
    fn formats_mysql_server_uuids() {
        let sid = [
            0x3e, 0x11, 0xfa, 0x47, 0x71, 0xca, 0x11, 0xe1, 0x9e, 0x33, 0xc8, 0x0a, 0xa9, 0x42,
            0x95, 0x62,
        ];
        assert_eq!(format_uuid(&sid), "3e11fa47-71ca-11e1-9e33-c80aa9429562");
    }
}
