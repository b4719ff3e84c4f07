//! Dead-letter outputs, and the reconciler's view of the target.
//!
//! A change the target schema cannot hold is a `Rejection` (class `schema_rejection`) with its
//! position, key, column, value and reason. Rejections are written before the checkpoint that
//! covers them, so a crash never loses one:
//! - SQLite target: the `_tm_dlq` table of the target database, keyed by (source table, key,
//!   version), so a rejection re-delivered after a restart lands on the same row;
//! - ScyllaDB target: a JSON-lines file (`target.dead_letter_path`), appended and synced; a
//!   re-delivered rejection appears again with the same (table, key, version), and readers keep
//!   the highest version per key.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{params, Connection};
use tidemark_ingest::CaptureCheckpoint;
use tidemark_schemas::{BinlogPosition, TableId, Version};
use tidemark_transform::Rejection;

use crate::embedded::{ALL_TABLES, CAPTURE_STAGE};

const CREATE: &str = "CREATE TABLE IF NOT EXISTS _tm_dlq (
    source_table TEXT NOT NULL,
    source_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    position TEXT NOT NULL,
    class TEXT NOT NULL,
    kind TEXT NOT NULL,
    target_table TEXT NOT NULL,
    target_column TEXT NOT NULL,
    value TEXT,
    reason TEXT NOT NULL,
    rejection TEXT NOT NULL,
    PRIMARY KEY (source_table, source_key, version)
)";

/// Record rejections (idempotent).
pub fn record(conn: &Connection, rejections: &[Rejection]) -> Result<()> {
    if rejections.is_empty() {
        return Ok(());
    }
    conn.execute_batch(CREATE)?;
    let tx = conn.unchecked_transaction()?;
    {
        let mut stmt = tx.prepare_cached(
            "INSERT OR IGNORE INTO _tm_dlq (source_table, source_key, version, position, class, kind, target_table, target_column, value, reason, rejection)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?;
        for r in rejections {
            stmt.execute(params![
                r.source_table,
                r.key,
                r.lineage.version,
                r.position,
                r.class.as_str(),
                r.kind.as_str(),
                r.target_table,
                r.column,
                r.value,
                r.reason,
                serde_json::to_string(r)?,
            ])?;
        }
    }
    tx.commit().context("writing the dead-letter table")?;
    Ok(())
}

/// Rejection counts per source table.
pub fn counts(conn: &Connection) -> Result<Vec<(String, u64)>> {
    conn.execute_batch(CREATE)?;
    let mut stmt = conn.prepare(
        "SELECT source_table, COUNT(*) FROM _tm_dlq GROUP BY source_table ORDER BY source_table",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// The reconciler's read-only view of the embedded target: dead letters and the apply frontier.
pub struct EmbeddedView {
    conn: Connection,
    /// Tables found without any dead letter, and when: the per-key lookup is skipped for them
    /// for a second (a rejection stored since is seen at the next look).
    empty_since: std::collections::HashMap<TableId, std::time::Instant>,
}

impl EmbeddedView {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the target database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(CREATE)?;
        Ok(EmbeddedView {
            conn,
            empty_since: std::collections::HashMap::new(),
        })
    }
}

impl tidemark_reconcile::DeadLetters for EmbeddedView {
    fn rejected_version(
        &mut self,
        table: &TableId,
        key_text: &str,
    ) -> tidemark_reconcile::Result<Option<Version>> {
        let read_err = |e: rusqlite::Error| {
            tidemark_reconcile::Error::Config(format!("reading the dead-letter table: {e}"))
        };
        let fresh = self
            .empty_since
            .get(table)
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(1));
        if fresh {
            return Ok(None);
        }
        let any: bool = self
            .conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM _tm_dlq WHERE source_table = ?1)",
                params![table.to_string()],
                |r| r.get(0),
            )
            .map_err(read_err)?;
        if !any {
            self.empty_since.insert(*table, std::time::Instant::now());
            return Ok(None);
        }
        self.empty_since.remove(table);
        self.conn
            .query_row(
                "SELECT MAX(version) FROM _tm_dlq WHERE source_table = ?1 AND source_key = ?2",
                params![table.to_string(), key_text],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(|e| {
                tidemark_reconcile::Error::Config(format!("reading the dead-letter table: {e}"))
            })
    }
}

/// Where rejected changes go.
pub trait DeadLetterOutput: Send {
    /// Store rejections durably (before the checkpoint that covers them is written).
    fn record(&mut self, rejections: &[Rejection]) -> Result<()>;
}

/// The `_tm_dlq` table of an SQLite target.
pub struct SqliteDeadLetters {
    conn: Connection,
}

impl SqliteDeadLetters {
    pub fn open(path: &Path) -> Result<Self> {
        let conn = Connection::open(path)
            .with_context(|| format!("cannot open the target database {}", path.display()))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(CREATE)?;
        Ok(SqliteDeadLetters { conn })
    }
}

impl DeadLetterOutput for SqliteDeadLetters {
    fn record(&mut self, rejections: &[Rejection]) -> Result<()> {
        record(&self.conn, rejections)
    }
}

/// A JSON-lines dead-letter file, one rejection per line.
pub struct FileDeadLetters {
    path: PathBuf,
}

impl FileDeadLetters {
    pub fn new(path: &Path) -> Self {
        FileDeadLetters {
            path: path.to_path_buf(),
        }
    }

    /// The rejections in the file.
    pub fn load(path: &Path) -> Result<LoadedDeadLetters> {
        Ok(LoadedDeadLetters::from_rejections(read_file(path)?))
    }
}

/// The rejections of a dead-letter file (none when it does not exist yet).
fn read_file(path: &Path) -> Result<Vec<Rejection>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading the dead-letter file {}", path.display()))
        }
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let r: Rejection = serde_json::from_str(line).with_context(|| {
            format!(
                "dead-letter file {} line {}: not a rejection record",
                path.display(),
                i + 1
            )
        })?;
        out.push(r);
    }
    Ok(out)
}

impl DeadLetterOutput for FileDeadLetters {
    fn record(&mut self, rejections: &[Rejection]) -> Result<()> {
        if rejections.is_empty() {
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .with_context(|| format!("cannot open the dead-letter file {}", self.path.display()))?;
        let mut buf = Vec::new();
        for r in rejections {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        file.write_all(&buf)?;
        file.sync_data()
            .with_context(|| format!("syncing the dead-letter file {}", self.path.display()))?;
        Ok(())
    }
}

/// Dead letters loaded from a JSON-lines file or the dead-letter topic, for the reconciler: the
/// highest rejected version per (source table, key).
#[derive(Debug, Default)]
pub struct LoadedDeadLetters(pub BTreeMap<(String, String), Version>);

impl LoadedDeadLetters {
    pub fn from_rejections(rejections: impl IntoIterator<Item = Rejection>) -> Self {
        let mut out: BTreeMap<(String, String), Version> = BTreeMap::new();
        for r in rejections {
            let v = out
                .entry((r.source_table, r.key))
                .or_insert(r.lineage.version);
            *v = (*v).max(r.lineage.version);
        }
        LoadedDeadLetters(out)
    }
}

impl tidemark_reconcile::DeadLetters for LoadedDeadLetters {
    fn rejected_version(
        &mut self,
        table: &TableId,
        key_text: &str,
    ) -> tidemark_reconcile::Result<Option<Version>> {
        Ok(self
            .0
            .get(&(table.to_string(), key_text.to_string()))
            .copied())
    }
}

/// The apply frontier read through any sink: the stored capture position, below which every
/// change is in the target (it is stored only after the changes before it).
pub struct SinkFrontier(pub Box<dyn tidemark_sink::Sink + Send>);

impl tidemark_reconcile::Frontier for SinkFrontier {
    fn frontier(&mut self) -> tidemark_reconcile::Result<Option<BinlogPosition>> {
        let text = tokio::task::block_in_place(|| self.0.checkpoint(CAPTURE_STAGE, ALL_TABLES))?;
        Ok(text
            .and_then(|t| serde_json::from_str::<CaptureCheckpoint>(&t).ok())
            .and_then(|cp| cp.position.parse().ok()))
    }
}

/// Every rejection in the dead-letter output, wherever apply put it: the `_tm_dlq` table of a
/// SQLite target, the dead-letter file of a CQL target, the dead-letter topic in Kafka mode.
pub fn all_rejections(config: &crate::config::Config) -> Result<Vec<Rejection>> {
    use crate::config::Target;
    if let Some(kafka) = config.transport.kafka() {
        return Ok(tidemark_kafka::read_rejections(kafka)?);
    }
    match config.target()? {
        Target::Sqlite { path } => {
            let conn = Connection::open(&path)
                .with_context(|| format!("cannot open the target database {}", path.display()))?;
            conn.busy_timeout(std::time::Duration::from_secs(30))?;
            conn.execute_batch(CREATE)?;
            let mut stmt = conn.prepare(
                "SELECT rejection FROM _tm_dlq ORDER BY source_table, source_key, version",
            )?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|text| {
                let text = text?;
                serde_json::from_str(&text).context("a dead letter of _tm_dlq is unreadable")
            })
            .collect()
        }
        Target::Scylla {
            dead_letter_path, ..
        } => read_file(&dead_letter_path),
    }
}
