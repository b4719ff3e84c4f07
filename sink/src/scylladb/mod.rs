//! The ScyllaDB target.
//!
//! # The guard is the database's own last-write-wins
//!
//! Every upsert is `INSERT INTO t (every column, lineage) VALUES (…) USING TIMESTAMP ?` and every
//! delete is `DELETE FROM t USING TIMESTAMP ? WHERE key`, with the record's version bound as the
//! write timestamp ([`cql::write_timestamp`]: the identity, checked to lie in `0..2^49`). ScyllaDB
//! keeps, per cell, the value with the highest write timestamp, and a row tombstone at timestamp
//! `v` shadows every cell written at or below `v`. Since every insert writes *every* column
//! (NULL included, which writes a cell tombstone), the row a key shows is exactly the record with
//! the highest version, whatever order the writes arrive in: that is DESIGN.md §3's per-key
//! max-version register, with no read-before-write and no lightweight transaction.
//!
//! # Equal versions
//!
//! ScyllaDB does not "ignore equal" as SQLite does. On equal write timestamps it decides per
//! cell: a tombstone beats a live cell (so a delete wins over an insert), and between two live
//! cells the greater value wins (byte-wise comparison). So a row written twice at the same version
//! with *different* content could end up a mix of both. When can one key see one version twice?
//! - Replays (at-least-once delivery, restart from a checkpoint): the same binlog event, the same
//!   version, and — the transform being deterministic — byte-identical cells. Harmless.
//! - Two different row changes: never (DESIGN.md §2 invariant 1; `row_version` adds the row index,
//!   so rows of one event differ too).
//! - A primary-key-changing update: its delete (old key) and insert (new key) share a version but
//!   touch *different* keys. They could meet on one key only if the transform mapped two source
//!   keys to one target key; the transform must then emit only the upsert (a delete and an
//!   insert of one key at one version would lose the row in ScyllaDB, and in SQLite too,
//!   whichever came first).
//! - Backfill and repair reads against live changes: never (invariant 2; `tidemark_schemas`
//!   labels a backfill read at observed position P with `… + P − 2` and a repair read with
//!   `… + P − 1`, both strictly between the changes before P and those at or after it, and a
//!   repair outranks a backfill at the same P).
//! - Two reads of one key of the same kind at the same observed P (a re-read backfill chunk, two
//!   repairs before the binlog moved): one version twice. If the row changed through the binlog
//!   in between, that change's own, higher version overwrites both. If it changed out of band
//!   (`sql_log_bin = 0` does not move the binlog), the two reads carry different images at one
//!   version: SQLite keeps the first, ScyllaDB keeps per cell the greater value, a mix of both
//!   images. The reconciler reports the key, and a repair made after the binlog moved gets a
//!   higher version and settles it.
//! - Re-applying old changes after the mapping changed (new `transform_version`): same version,
//!   different cells, so a mix. The reconciler reports it (`transform_skew` / `value_mismatch`)
//!   and repair rewrites those keys with fresh, higher versions.
//!
//! Within one [`Sink::write`] call the sink sends only the highest-version record per key
//! (first seen on a tie, as SQLite keeps), so ties inside a batch resolve like SQLite.
//!
//! # What is known, and what is not
//!
//! - "Ignored as older" cannot be known without reads: [`WriteStats`] counts every record sent as
//!   applied, and as ignored only records superseded within the same call (never sent).
//! - A deleted key reads as `None`: row tombstones are invisible, so [`Sink::read`] never
//!   returns a tombstone ([`Sink::reads_tombstones`] is false).
//! - Tombstones live `gc_grace_seconds`. A change older than a delete that arrives after the
//!   tombstone was purged resurrects the row. At start (and for each table it is given) the sink
//!   reads `gc_grace_seconds` from `system_schema.tables` and warns (table, both numbers) when it
//!   is shorter than `backfill_window_seconds`; tables it creates get at least that window. A
//!   table set to `tombstone_gc = {'mode': 'repair'}` purges tombstones after repair instead,
//!   regardless of `gc_grace_seconds`: keep `timeout` mode for tidemark's tables.
//!
//! # Requests
//!
//! - Statements are prepared once per table and bound with their partition key, so the driver's
//!   default load balancing (token-aware, and shard-aware on ScyllaDB's shard-aware port) sends
//!   each to a replica that owns it.
//! - A write call becomes units ([`cql::plan`]): one statement, or an unlogged batch of
//!   statements of *one partition* (keys sharing the partition key when `partition_keys` makes
//!   part of the key clustering), bounded to 64 statements / 64 KiB. Units run concurrently, at
//!   most `concurrency` in flight, on the sink's tokio runtime; `write` returns only when every
//!   unit was acknowledged at the configured consistency, and only then writes the checkpoints
//!   (so a checkpoint is never ahead of the data).
//! - Every statement is marked idempotent (a write with an explicit timestamp is), so the driver
//!   may retry it, and the sink retries transient failures (timeouts, unavailable or overloaded
//!   replicas, broken connections) with doubling backoff up to `max_attempts`. A failed `write`
//!   may have applied part of its records: harmless, the caller retries the whole call.
//! - Checkpoints live in `tidemark_checkpoints` (created on first use if missing) and are written
//!   with a timestamp above both the wall clock and the stored value's `WRITETIME`, so a newer
//!   checkpoint is never lost to clock skew between processes.
//!
//! # Failure modes
//!
//! - No node reachable at start: [`Error::Connect`] naming the nodes.
//! - Keyspace missing: [`Error::Config`] naming `keyspace` and `tidemark target init`.
//! - A table whose columns or key differ from what tidemark would create: [`Error::Table`] naming
//!   the column and both types (tidemark never drops or retypes a column).
//! - A value ScyllaDB cannot hold (an empty partition-key text or blob, a type mismatch):
//!   [`Error::Value`] naming table, key and column.
//! - Transient failures after every retry: [`Error::Unacknowledged`] (retry the call later).
//!
//! # Runtime
//!
//! The [`Sink`] trait is synchronous. [`ScyllaSink::connect`] starts its own two-thread tokio
//! runtime; [`ScyllaSink::connect_with_handle`] uses the caller's multi-thread runtime (with
//! time and I/O enabled). Either way, call the sink from a thread that is not running async code
//! (e.g. `tokio::task::spawn_blocking`): it blocks on the runtime.

pub mod config;
pub mod cql;
pub mod types;

use std::collections::HashMap;
use std::future::Future;

use futures_util::stream::{self, StreamExt, TryStreamExt};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, PrepareError, RequestAttemptError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryResult;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::value::{CqlValue, Row as CqlRow};
use tidemark_schemas::{Checkpoint, Row, TargetRecord, TargetSchema};

use config::{backoff_delay, credentials_from_env, short_gc_grace};
pub use config::{ConsistencyLevel, GcGraceWarning, ScyllaConfig};
use cql::{plan, BatchLimits, StatementKind, TableLayout, Unit, CHECKPOINT_TABLE};

use crate::{key_text, Error, Result, Sink, StoredRecord, WriteStats};

enum Runtime {
    Owned(tokio::runtime::Runtime),
    Shared(tokio::runtime::Handle),
}

impl Runtime {
    fn block_on<F: Future>(&self, f: F) -> F::Output {
        match self {
            Runtime::Owned(rt) => rt.block_on(f),
            Runtime::Shared(h) => h.block_on(f),
        }
    }
}

/// The prepared statements of one table.
struct Prepared {
    insert: PreparedStatement,
    delete: PreparedStatement,
    select: PreparedStatement,
    scan_first: PreparedStatement,
    scan_next: PreparedStatement,
    scan_rest: Option<PreparedStatement>,
}

/// The layout of a keyspace's tables (key, column types, lineage columns, the digest scheme),
/// stamped in its checkpoint table (stage [`FORMAT_STAGE`]): a keyspace of another format is
/// refused, never read or written as if it had this one.
pub const FORMAT: i64 = 1;
/// The checkpoint stage of the [`FORMAT`] stamp (scope `*`).
pub const FORMAT_STAGE: &str = "target_format";

struct CheckpointStatements {
    insert: PreparedStatement,
    select: PreparedStatement,
}

/// A sink writing to ScyllaDB; see the module documentation.
pub struct ScyllaSink {
    // Declared before `runtime`, so it is dropped while the runtime still runs.
    session: Session,
    config: ScyllaConfig,
    layouts: HashMap<String, TableLayout>,
    prepared: HashMap<String, Prepared>,
    checkpoints: Option<CheckpointStatements>,
    /// (stage, scope) → write timestamp of the stored checkpoint, once known.
    checkpoint_floor: HashMap<(String, String), i64>,
    runtime: Runtime,
}

/// Whether a failed request may succeed when sent again unchanged.
pub fn is_transient(e: &ExecutionError) -> bool {
    match e {
        ExecutionError::EmptyPlan
        | ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::SchemaAgreementError(_)
        | ExecutionError::MetadataError(_)
        | ExecutionError::PrepareError(PrepareError::ConnectionPoolError(_)) => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
                    | DbError::ReadFailure { .. }
                    | DbError::WriteFailure { .. }
                    | DbError::ServerError
                    | DbError::RateLimitReached { .. }
                    | DbError::TruncateError
            ),
            _ => false,
        },
        _ => false,
    }
}

/// Write timestamp of a checkpoint: above the wall clock and above the stored one.
pub fn checkpoint_timestamp(now_us: i64, stored: Option<i64>) -> i64 {
    stored.map_or(now_us, |s| now_us.max(s.saturating_add(1)))
}

/// `(primary key as stored)` differs from what `layout` expects: the message, or `None`.
/// `existing` holds `(column, kind, position)` rows of `system_schema.columns`.
pub fn primary_key_mismatch(
    layout: &TableLayout,
    existing: &[(String, String, i32)],
) -> Option<String> {
    let of_kind = |kind: &str| {
        let mut cols: Vec<(i32, &str)> = existing
            .iter()
            .filter(|(_, k, _)| k == kind)
            .map(|(n, _, p)| (*p, n.as_str()))
            .collect();
        cols.sort();
        cols.into_iter()
            .map(|(_, n)| n.to_string())
            .collect::<Vec<_>>()
    };
    let (pk, ck) = (of_kind("partition_key"), of_kind("clustering"));
    let key = &layout.schema.key;
    let (want_pk, want_ck) = key.split_at(layout.partition_len);
    (pk != want_pk || ck != want_ck).then(|| {
        format!(
            "the table has partition key {pk:?} and clustering columns {ck:?}, but tidemark expects partition key {want_pk:?} and clustering columns {want_ck:?} (set partition_keys, or drop and re-create the table)"
        )
    })
}

fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

impl ScyllaSink {
    /// Connect to the cluster with a runtime of the sink's own. Reads the credentials from
    /// `TIDEMARK_SCYLLA_USER` / `TIDEMARK_SCYLLA_PASSWORD`, and warns about tables of the keyspace
    /// whose `gc_grace_seconds` is shorter than the backfill window.
    pub fn connect(config: ScyllaConfig) -> Result<Self> {
        config.validate()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tidemark-scylla")
            .enable_all()
            .build()
            .map_err(|e| Error::Connect {
                nodes: config.nodes.join(", "),
                message: format!("cannot start the driver's runtime: {e}"),
            })?;
        Self::start(config, Runtime::Owned(runtime))
    }

    /// Like [`ScyllaSink::connect`], on the caller's multi-thread runtime.
    pub fn connect_with_handle(
        config: ScyllaConfig,
        handle: tokio::runtime::Handle,
    ) -> Result<Self> {
        config.validate()?;
        Self::start(config, Runtime::Shared(handle))
    }

    fn start(config: ScyllaConfig, runtime: Runtime) -> Result<Self> {
        let credentials = credentials_from_env()?;
        let profile = ExecutionProfile::builder()
            .consistency(config.consistency.to_driver())
            .request_timeout(Some(config.request_timeout()))
            .load_balancing_policy(DefaultPolicy::builder().token_aware(true).build())
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.nodes)
            .connection_timeout(config.connect_timeout())
            .default_execution_profile_handle(profile.into_handle());
        if let Some((user, password)) = credentials {
            builder = builder.user(user, password);
        }
        let session = runtime
            .block_on(builder.build())
            .map_err(|e| Error::Connect {
                nodes: config.nodes.join(", "),
                message: e.to_string(),
            })?;
        let sink = ScyllaSink {
            session,
            config,
            layouts: HashMap::new(),
            prepared: HashMap::new(),
            checkpoints: None,
            checkpoint_floor: HashMap::new(),
            runtime,
        };
        sink.check_gc_grace(None)?;
        Ok(sink)
    }

    /// The configuration the sink runs with.
    pub fn config(&self) -> &ScyllaConfig {
        &self.config
    }

    /// Create the keyspace (if missing, with `replication_factor`), the checkpoint table and every
    /// table of `schemas` (or add the columns they lack). What `tidemark target init` runs.
    pub fn init(&mut self, schemas: &[TargetSchema]) -> Result<()> {
        let ks = self.config.keyspace.clone();
        self.runtime
            .block_on(self.ddl(&cql::create_keyspace_cql(
                &ks,
                self.config.replication_factor,
            )))
            .map_err(|e| Error::Config {
                setting: "keyspace".into(),
                message: format!("cannot create keyspace `{ks}`: {e}"),
            })?;
        self.checkpoint_statements()?;
        for schema in schemas {
            self.ensure_table(schema)?;
        }
        Ok(())
    }

    /// Tables of the keyspace (or only `table`) whose `gc_grace_seconds` is shorter than the
    /// backfill window; each is also logged as a warning.
    pub fn check_gc_grace(&self, table: Option<&str>) -> Result<Vec<GcGraceWarning>> {
        let ks = &self.config.keyspace;
        let rows: Vec<(String, i32)> = self
            .runtime
            .block_on(async {
                let result = match table {
                    Some(t) => {
                        self.session
                            .query_unpaged(
                                "SELECT table_name, gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
                                (ks, t),
                            )
                            .await
                    }
                    None => {
                        self.session
                            .query_unpaged(
                                "SELECT table_name, gc_grace_seconds FROM system_schema.tables WHERE keyspace_name = ?",
                                (ks,),
                            )
                            .await
                    }
                };
                typed_rows::<(String, i32)>(result)
            })
            .map_err(|message| Error::Table {
                table: "system_schema.tables".into(),
                message,
            })?;
        let tables: Vec<(String, i64)> = rows
            .into_iter()
            .filter(|(t, _)| t != CHECKPOINT_TABLE)
            .map(|(t, gc)| (t, i64::from(gc)))
            .collect();
        let warnings = short_gc_grace(&tables, self.config.backfill_window_seconds);
        for w in &warnings {
            tracing::warn!(
                keyspace = %ks,
                table = %w.table,
                gc_grace_seconds = w.gc_grace_seconds,
                backfill_window_seconds = w.backfill_window_seconds,
                "gc_grace_seconds is shorter than the backfill window: a delete's tombstone may be purged while older changes of the key are still in flight, and they would resurrect the row (raise it with ALTER TABLE … WITH gc_grace_seconds = …)"
            );
        }
        Ok(warnings)
    }

    async fn ddl(&self, cql: &str) -> std::result::Result<(), String> {
        self.session
            .query_unpaged(cql, ())
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn prepare(&self, cql: &str) -> std::result::Result<PreparedStatement, String> {
        let mut p = self
            .session
            .prepare(cql)
            .await
            .map_err(|e| format!("cannot prepare `{cql}`: {e}"))?;
        p.set_consistency(self.config.consistency.to_driver());
        p.set_is_idempotent(true);
        Ok(p)
    }

    /// [`Self::prepare`] of a statement naming columns another sink may have just added: a
    /// Cassandra node lists a column in `system_schema.columns` a moment before it can prepare a
    /// statement naming it ("Undefined column name"), which two tidemark sinks adding the same
    /// column at once (apply, and a re-read after a schema change) meet. Such a refusal is
    /// tried again, up to 5 s, after waiting for schema agreement.
    async fn prepare_after_schema_change(
        &self,
        cql: &str,
    ) -> std::result::Result<PreparedStatement, String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match self.prepare(cql).await {
                Err(e)
                    if e.contains("Undefined column name")
                        && std::time::Instant::now() < deadline =>
                {
                    let _ = self.session.await_schema_agreement().await;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                result => return result,
            }
        }
    }

    /// Run `request` until it succeeds, fails definitely, or `max_attempts` is spent.
    async fn with_retries<T, Fut>(
        &self,
        mut request: impl FnMut() -> Fut,
    ) -> std::result::Result<T, (ExecutionError, u32)>
    where
        Fut: Future<Output = std::result::Result<T, ExecutionError>>,
    {
        let mut attempt = 1;
        loop {
            match request().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.config.max_attempts && is_transient(&e) => {
                    tracing::warn!(attempt, error = %e, "a CQL request failed transiently; trying it again");
                    tokio::time::sleep(backoff_delay(attempt, self.config.retry_backoff_ms)).await;
                    attempt += 1;
                }
                Err(e) => return Err((e, attempt)),
            }
        }
    }

    async fn keyspace_exists(&self) -> std::result::Result<bool, String> {
        let result = self
            .session
            .query_unpaged(
                "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
                (&self.config.keyspace,),
            )
            .await;
        Ok(!typed_rows::<(String,)>(result)?.is_empty())
    }

    async fn ensure_table_async(&self, layout: &TableLayout) -> Result<Prepared> {
        let ks = &self.config.keyspace;
        let table = &layout.schema.table;
        let table_err = |message: String| Error::Table {
            table: table.clone(),
            message,
        };
        if !self.keyspace_exists().await.map_err(table_err)? {
            return Err(Error::Config {
                setting: "keyspace".into(),
                message: format!(
                    "keyspace `{ks}` does not exist on the cluster: create it with `tidemark target init` (or CREATE KEYSPACE)"
                ),
            });
        }
        let result = self
            .session
            .query_unpaged(
                "SELECT column_name, type, kind, position FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ?",
                (ks, table),
            )
            .await;
        let existing = typed_rows::<(String, String, String, i32)>(result).map_err(table_err)?;
        if existing.is_empty() {
            self.ddl(&layout.create_table_cql(ks, self.config.gc_grace_seconds_for_new_tables()))
                .await
                .map_err(table_err)?;
        } else {
            let keys: Vec<(String, String, i32)> = existing
                .iter()
                .map(|(n, _, k, p)| (n.clone(), k.clone(), *p))
                .collect();
            if let Some(message) = primary_key_mismatch(layout, &keys) {
                return Err(table_err(message));
            }
            for (name, want) in layout.columns() {
                match existing.iter().find(|(n, ..)| *n == name) {
                    None => self.add_column(layout, &name, want).await.map_err(table_err)?,
                    Some((_, have, ..)) if have != want => {
                        return Err(table_err(format!(
                            "column `{name}` has CQL type {have}, but tidemark stores {want} there (tidemark never retypes a column: drop it or map it to another name)"
                        )))
                    }
                    Some(_) => {}
                }
            }
        }
        let prepare = |cql: String| async move {
            self.prepare_after_schema_change(&cql)
                .await
                .map_err(table_err)
        };
        Ok(Prepared {
            insert: prepare(layout.insert_cql.clone()).await?,
            delete: prepare(layout.delete_cql.clone()).await?,
            select: prepare(layout.select_cql.clone()).await?,
            scan_first: prepare(layout.scan_first_cql.clone()).await?,
            scan_next: prepare(layout.scan_next_cql.clone()).await?,
            scan_rest: match &layout.scan_rest_cql {
                Some(cql) => Some(prepare(cql.clone()).await?),
                None => None,
            },
        })
    }

    /// `ALTER TABLE … ADD name want`. Another sink may add the same column at the same moment
    /// (apply, and a re-read after a schema change, both meet the new shape): the node then
    /// refuses one of the two ("already exists"), which is success once the column is there
    /// with the type wanted.
    async fn add_column(
        &self,
        layout: &TableLayout,
        name: &str,
        want: &str,
    ) -> std::result::Result<(), String> {
        let ks = &self.config.keyspace;
        let Err(e) = self.ddl(&layout.add_column_cql(ks, name, want)).await else {
            return Ok(());
        };
        if !(e.contains("already exists") || e.contains("conflicts with an existing column")) {
            return Err(e);
        }
        let _ = self.session.await_schema_agreement().await;
        let result = self
            .session
            .query_unpaged(
                "SELECT type FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
                (ks, &layout.schema.table, name),
            )
            .await;
        match typed_rows::<(String,)>(result)?.first() {
            Some((have,)) if have == want => Ok(()),
            Some((have,)) => Err(format!(
                "column `{name}` was just added with CQL type {have} by another client, but tidemark stores {want} there"
            )),
            None => Err(e),
        }
    }

    fn table(&self, table: &str) -> Result<(&TableLayout, &Prepared)> {
        match (self.layouts.get(table), self.prepared.get(table)) {
            (Some(l), Some(p)) => Ok((l, p)),
            _ => Err(Error::Table {
                table: table.to_string(),
                message: "no schema was announced for this table (call ensure_table first)".into(),
            }),
        }
    }

    async fn execute_unit(&self, unit: &Unit) -> Result<()> {
        let prepared = &self.prepared[&unit.table];
        let statement = |kind| match kind {
            StatementKind::Insert => &prepared.insert,
            StatementKind::Delete => &prepared.delete,
        };
        let result = if let [single] = unit.statements.as_slice() {
            self.with_retries(|| {
                self.session
                    .execute_unpaged(statement(single.kind), single.values.as_slice())
            })
            .await
        } else {
            let mut batch = Batch::new(BatchType::Unlogged);
            for s in &unit.statements {
                batch.append_statement(statement(s.kind).clone());
            }
            batch.set_consistency(self.config.consistency.to_driver());
            batch.set_is_idempotent(true);
            let values: Vec<&[Option<CqlValue>]> = unit
                .statements
                .iter()
                .map(|s| s.values.as_slice())
                .collect();
            self.with_retries(|| self.session.batch(&batch, &values))
                .await
        };
        result.map(|_| ()).map_err(|(e, attempts)| {
            let key = match unit.statements.as_slice() {
                [one] => one.key.clone(),
                [first, rest @ ..] => {
                    format!("{} (and {} more of its partition)", first.key, rest.len())
                }
                [] => String::new(),
            };
            if is_transient(&e) {
                Error::Unacknowledged {
                    table: unit.table.clone(),
                    key,
                    attempts,
                    message: e.to_string(),
                }
            } else {
                Error::Write {
                    table: unit.table.clone(),
                    message: format!("key {key}: {e}"),
                }
            }
        })
    }

    /// Create (if missing) and prepare the checkpoint table's statements.
    fn checkpoint_statements(&mut self) -> Result<&CheckpointStatements> {
        if self.checkpoints.is_none() {
            let ks = self.config.keyspace.clone();
            let stmts = self
                .runtime
                .block_on(async {
                    self.ddl(&cql::create_checkpoint_table_cql(&ks)).await?;
                    Ok::<_, String>(CheckpointStatements {
                        insert: self.prepare(&cql::checkpoint_insert_cql(&ks)).await?,
                        select: self.prepare(&cql::checkpoint_select_cql(&ks)).await?,
                    })
                })
                .map_err(|e| {
                    Error::Checkpoint(format!("ScyllaDB table {ks}.{CHECKPOINT_TABLE}: {e}"))
                })?;
            self.runtime.block_on(self.check_format(&stmts))?;
            self.checkpoints = Some(stmts);
        }
        Ok(self.checkpoints.as_ref().expect("just set"))
    }

    /// Stamp a new keyspace with [`FORMAT`] (a row of the checkpoint table); refuse one of another
    /// format. Every sink stamps before it writes its first checkpoint, so a keyspace with
    /// checkpoints and no stamp was written before formats were numbered — unless another sink
    /// stamped it between the two looks, which a second look tells.
    async fn check_format(&self, stmts: &CheckpointStatements) -> Result<()> {
        let ks = &self.config.keyspace;
        let err = |message: String| {
            Error::Checkpoint(format!("ScyllaDB table {ks}.{CHECKPOINT_TABLE}: {message}"))
        };
        let stamp = || async {
            let result = self
                .session
                .execute_unpaged(&stmts.select, (FORMAT_STAGE, "*"))
                .await;
            Ok::<_, Error>(
                typed_rows::<(String, i64)>(result)
                    .map_err(err)?
                    .first()
                    .map(|(v, _)| v.clone()),
            )
        };
        let found = match stamp().await? {
            Some(found) => found,
            None => {
                let result = self
                    .session
                    .query_unpaged(
                        format!(
                            "SELECT stage FROM {} LIMIT 1",
                            cql::qualified(ks, CHECKPOINT_TABLE)
                        ),
                        (),
                    )
                    .await;
                let written = !typed_rows::<(String,)>(result).map_err(err)?.is_empty();
                match stamp().await? {
                    Some(found) => found,
                    None if written => "0".to_string(),
                    None => {
                        self.session
                            .execute_unpaged(
                                &stmts.insert,
                                (FORMAT_STAGE, "*", FORMAT.to_string(), 1i64),
                            )
                            .await
                            .map_err(|e| err(e.to_string()))?;
                        return Ok(());
                    }
                }
            }
        };
        if found == FORMAT.to_string() {
            return Ok(());
        }
        Err(Error::Config {
            setting: "keyspace".into(),
            message: format!(
                "keyspace `{ks}` holds target format {found}{}, and this build of tidemark reads and writes format {FORMAT} only: use a new keyspace and backfill into it (`tidemark target init`, then `tidemark run`), or the build that wrote it",
                if found == "0" {
                    " (written before formats were numbered)"
                } else {
                    ""
                }
            ),
        })
    }

    async fn select_rows(
        &self,
        layout: &TableLayout,
        statement: &PreparedStatement,
        values: &[Option<CqlValue>],
        key: &str,
    ) -> Result<Vec<StoredRecord>> {
        self.select_with(layout, statement, values, key, |l, cells| {
            l.record_from_row(cells)
        })
        .await
    }

    /// The rows a select returns, each decoded by `decode`.
    async fn select_with<T>(
        &self,
        layout: &TableLayout,
        statement: &PreparedStatement,
        values: &[Option<CqlValue>],
        key: &str,
        decode: impl Fn(&TableLayout, Vec<Option<CqlValue>>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let read_err = |message: String| Error::Read {
            table: layout.schema.table.clone(),
            key: key.to_string(),
            message,
        };
        let result = self
            .with_retries(|| self.session.execute_unpaged(statement, values))
            .await
            .map_err(|(e, n)| format!("{e} (after {n} attempt(s))"));
        let rows = typed_rows::<CqlRow>(result).map_err(read_err)?;
        rows.into_iter()
            .map(|r| decode(layout, r.columns))
            .collect()
    }

    /// One page of a scan after `after` (from the start when `None`), each row decoded by
    /// `decode`: the rest of `after`'s partition, then the next partitions in token order.
    fn scan_with<T>(
        &mut self,
        table: &str,
        after: Option<&Row>,
        limit: usize,
        decode: impl Fn(&TableLayout, Vec<Option<CqlValue>>) -> Result<T> + Copy,
    ) -> Result<Vec<T>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let (layout, prepared) = self.table(table)?;
        let limit_value = |n: usize| Some(CqlValue::Int(i32::try_from(n).unwrap_or(i32::MAX)));
        let Some(after) = after else {
            return self.runtime.block_on(self.select_with(
                layout,
                &prepared.scan_first,
                &[limit_value(limit)],
                "(start)",
                decode,
            ));
        };
        let key = key_text(after);
        let (pk, ck) = layout.split_key(after)?;
        self.runtime.block_on(async {
            let mut out = Vec::new();
            if let Some(rest) = &prepared.scan_rest {
                let mut values = pk.clone();
                values.extend(ck);
                values.push(limit_value(limit));
                out = self
                    .select_with(layout, rest, &values, &key, decode)
                    .await?;
            }
            if out.len() < limit {
                let mut values = pk;
                values.push(limit_value(limit - out.len()));
                out.extend(
                    self.select_with(layout, &prepared.scan_next, &values, &key, decode)
                        .await?,
                );
            }
            Ok(out)
        })
    }
}

/// Every row of a result, typed.
fn typed_rows<R>(
    result: std::result::Result<QueryResult, impl std::fmt::Display>,
) -> std::result::Result<Vec<R>, String>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let rows = result
        .map_err(|e| e.to_string())?
        .into_rows_result()
        .map_err(|e| e.to_string())?;
    let typed = rows.rows::<R>().map_err(|e| e.to_string())?;
    typed
        .collect::<std::result::Result<Vec<R>, _>>()
        .map_err(|e| e.to_string())
}

impl Sink for ScyllaSink {
    fn ensure_table(&mut self, schema: &TargetSchema) -> Result<()> {
        let layout = TableLayout::new(
            &self.config.keyspace,
            schema,
            self.config
                .partition_keys
                .get(&schema.table)
                .map(Vec::as_slice),
        )?;
        let prepared = match self.runtime.block_on(self.ensure_table_async(&layout)) {
            Ok(prepared) => prepared,
            // A failure while the cluster is unreachable (a node restarting) says nothing about
            // the table: transient, so the caller tries again. Otherwise the table error stands.
            Err(e @ Error::Table { .. }) => {
                let probe = self.runtime.block_on(self.with_retries(|| {
                    self.session
                        .query_unpaged("SELECT release_version FROM system.local", ())
                }));
                return Err(match probe {
                    Err((probe_error, attempts)) if is_transient(&probe_error) => {
                        Error::Unacknowledged {
                            table: schema.table.clone(),
                            key: "(table description)".into(),
                            attempts,
                            message: format!("{e}; the cluster is unreachable: {probe_error}"),
                        }
                    }
                    _ => e,
                });
            }
            Err(e) => return Err(e),
        };
        self.check_gc_grace(Some(&schema.table))?;
        self.layouts.insert(schema.table.clone(), layout);
        self.prepared.insert(schema.table.clone(), prepared);
        Ok(())
    }

    fn write(
        &mut self,
        records: &[TargetRecord],
        checkpoints: &[Checkpoint],
    ) -> Result<WriteStats> {
        let plan = plan(&self.layouts, records, BatchLimits::default())?;
        // Learn the stored checkpoints' timestamps before writing anything.
        for cp in checkpoints {
            if !self
                .checkpoint_floor
                .contains_key(&(cp.stage.clone(), cp.scope.clone()))
            {
                self.checkpoint(&cp.stage, &cp.scope)?;
            }
        }
        let concurrency = self.config.concurrency;
        self.runtime.block_on(
            stream::iter(&plan.units)
                .map(|unit| self.execute_unit(unit))
                .buffer_unordered(concurrency)
                .try_for_each(|()| async { Ok(()) }),
        )?;
        // Every record is acknowledged: now the checkpoints.
        for cp in checkpoints {
            let slot = (cp.stage.clone(), cp.scope.clone());
            let ts = checkpoint_timestamp(now_micros(), self.checkpoint_floor.get(&slot).copied());
            let insert = self.checkpoint_statements()?.insert.clone();
            self.runtime
                .block_on(self.with_retries(|| {
                    self.session.execute_unpaged(
                        &insert,
                        (cp.stage.as_str(), cp.scope.as_str(), cp.value.as_str(), ts),
                    )
                }))
                .map_err(|(e, n)| {
                    // A node restarting is transient here as for the records: the caller retries
                    // the whole write, records included (they are idempotent).
                    if is_transient(&e) {
                        Error::Unacknowledged {
                            table: CHECKPOINT_TABLE.to_string(),
                            key: format!("{}/{}", cp.stage, cp.scope),
                            attempts: n,
                            message: e.to_string(),
                        }
                    } else {
                        Error::Checkpoint(format!(
                            "writing {}/{} after {n} attempt(s): {e}",
                            cp.stage, cp.scope
                        ))
                    }
                })?;
            self.checkpoint_floor.insert(slot, ts);
        }
        tracing::debug!(
            records = records.len(),
            requests = plan.units.len(),
            checkpoints = checkpoints.len(),
            "ScyllaDB write acknowledged"
        );
        Ok(plan.stats)
    }

    fn checkpoint(&mut self, stage: &str, scope: &str) -> Result<Option<String>> {
        let select = self.checkpoint_statements()?.select.clone();
        let result = self
            .runtime
            .block_on(self.with_retries(|| self.session.execute_unpaged(&select, (stage, scope))));
        if let Err((e, n)) = &result {
            if is_transient(e) {
                return Err(Error::Unacknowledged {
                    table: CHECKPOINT_TABLE.to_string(),
                    key: format!("{stage}/{scope}"),
                    attempts: *n,
                    message: e.to_string(),
                });
            }
        }
        let rows = typed_rows::<(Option<String>, Option<i64>)>(result.map_err(|(e, _)| e))
            .map_err(|e| Error::Checkpoint(format!("reading {stage}/{scope}: {e}")))?;
        match rows.into_iter().next() {
            Some((value, writetime)) => {
                if let Some(ts) = writetime {
                    self.checkpoint_floor
                        .insert((stage.to_string(), scope.to_string()), ts);
                }
                Ok(value)
            }
            None => {
                self.checkpoint_floor
                    .insert((stage.to_string(), scope.to_string()), i64::MIN);
                Ok(None)
            }
        }
    }

    fn checkpoints(&mut self) -> Result<Vec<Checkpoint>> {
        // Creates the table when it is missing, as every checkpoint access does.
        self.checkpoint_statements()?;
        let ks = self.config.keyspace.clone();
        let select = format!(
            "SELECT \"stage\", \"scope\", \"value\" FROM {}",
            cql::qualified(&ks, CHECKPOINT_TABLE)
        );
        let result = self
            .runtime
            .block_on(self.with_retries(|| self.session.query_unpaged(select.clone(), ())));
        let mut rows =
            typed_rows::<(String, String, Option<String>)>(result.map_err(|(e, _)| e))
                .map_err(|e| Error::Checkpoint(format!("reading {ks}.{CHECKPOINT_TABLE}: {e}")))?;
        rows.sort();
        Ok(rows
            .into_iter()
            .map(|(stage, scope, value)| Checkpoint {
                stage,
                scope,
                value: value.unwrap_or_default(),
            })
            .collect())
    }

    fn read(&mut self, table: &str, key: &Row) -> Result<Option<StoredRecord>> {
        let (layout, prepared) = self.table(table)?;
        let Some(values) = layout.key_values_for_read(key)? else {
            return Ok(None);
        };
        let mut rows = self.runtime.block_on(self.select_rows(
            layout,
            &prepared.select,
            &values,
            &key_text(key),
        ))?;
        Ok(rows.pop())
    }

    /// The keys read concurrently (at most `concurrency` in flight), in order: one round trip
    /// at a time made the reconciler's comparison of a 47,000-row database take minutes.
    fn read_many(&mut self, table: &str, keys: &[Row]) -> Result<Vec<Option<StoredRecord>>> {
        let (layout, prepared) = self.table(table)?;
        let concurrency = self.config.concurrency.max(1);
        let reads = keys
            .iter()
            .map(|key| Ok((layout.key_values_for_read(key)?, key_text(key))))
            .collect::<Result<Vec<_>>>()?;
        let this = &*self;
        this.runtime.block_on(
            stream::iter(reads)
                .map(|(values, text)| async move {
                    let Some(values) = values else {
                        return Ok(None);
                    };
                    let mut rows = this
                        .select_rows(layout, &prepared.select, &values, &text)
                        .await?;
                    Ok(rows.pop())
                })
                .buffered(concurrency)
                .try_collect(),
        )
    }

    fn scan(
        &mut self,
        table: &str,
        after: Option<&Row>,
        limit: usize,
    ) -> Result<Vec<StoredRecord>> {
        self.scan_with(table, after, limit, |l, cells| l.record_from_row(cells))
    }

    /// Keys only: a row whose other columns or lineage cannot be read (written out of band,
    /// e.g. with no lineage at all) still shows its key, for the reconciler to report.
    fn scan_keys(
        &mut self,
        table: &str,
        after: Option<&Row>,
        limit: usize,
    ) -> Result<Vec<crate::ScannedKey>> {
        self.scan_with(table, after, limit, |l, cells| {
            Ok(crate::ScannedKey {
                key: l.key_from_row(&cells)?,
                tombstone: false,
            })
        })
    }

    fn reads_tombstones(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tidemark_schemas::{TargetColumn, TargetType};

    #[test]
    fn transient_errors_are_retried_and_definite_ones_are_not() {
        assert!(is_transient(&ExecutionError::RequestTimeout(
            Duration::from_secs(1)
        )));
        assert!(is_transient(&ExecutionError::EmptyPlan));
        let db = |e: DbError| {
            ExecutionError::LastAttemptError(RequestAttemptError::DbError(e, "m".into()))
        };
        assert!(is_transient(&db(DbError::Overloaded)));
        assert!(is_transient(&db(DbError::IsBootstrapping)));
        assert!(
            !is_transient(&db(DbError::SyntaxError)),
            "a syntax error is definite"
        );
        assert!(
            !is_transient(&db(DbError::Invalid)),
            "an invalid request is definite"
        );
        assert!(!is_transient(&db(DbError::Unauthorized)));
    }

    #[test]
    fn checkpoint_timestamps_never_go_back() {
        assert_eq!(checkpoint_timestamp(1_000, None), 1_000);
        assert_eq!(checkpoint_timestamp(1_000, Some(5)), 1_000);
        assert_eq!(
            checkpoint_timestamp(1_000, Some(2_000)),
            2_001,
            "a stored checkpoint written by a clock ahead of ours must still be overwritten"
        );
        assert_eq!(checkpoint_timestamp(1_000, Some(i64::MIN)), 1_000);
    }

    #[test]
    fn an_existing_table_with_another_key_is_reported() {
        let schema = TargetSchema {
            table: "t".into(),
            columns: vec![
                TargetColumn {
                    name: "a".into(),
                    ty: TargetType::Int { bits: 64 },
                    nullable: false,
                },
                TargetColumn {
                    name: "b".into(),
                    ty: TargetType::Int { bits: 64 },
                    nullable: false,
                },
            ],
            key: vec!["a".into(), "b".into()],
        };
        let layout = TableLayout::new("ks", &schema, Some(&["a".into()])).expect("layout");
        let row = |n: &str, k: &str, p: i32| (n.to_string(), k.to_string(), p);
        assert_eq!(
            primary_key_mismatch(
                &layout,
                &[
                    row("a", "partition_key", 0),
                    row("b", "clustering", 0),
                    row("x", "regular", -1)
                ]
            ),
            None
        );
        let msg = primary_key_mismatch(
            &layout,
            &[row("b", "partition_key", 1), row("a", "partition_key", 0)],
        )
        .expect("a composite partition key where a clustering column is expected");
        assert!(msg.contains("partition_keys"), "{msg}");
    }
}
