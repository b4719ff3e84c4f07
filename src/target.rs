//! The target of this configuration: opening it (with its dead-letter output), `tidemark target
//! init`, and reading the checkpoints the pipeline keeps in it.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use tidemark_ingest::split::StoredBackfill;
use tidemark_ingest::{BackfillCheckpoint, Scope, Source};
use tidemark_schemas::TableId;
use tidemark_sink::{ScyllaSink, Sink, SqliteSink};
use tokio::task::block_in_place;
use tracing::warn;

use crate::config::{Config, Target};
use crate::dlq::{DeadLetterOutput, FileDeadLetters, SqliteDeadLetters};

/// A target of either kind.
pub type DynSink = Box<dyn Sink + Send>;

/// Open the configured target and its dead-letter output. Blocking: call it off async workers.
pub fn open_sink(config: &Config) -> Result<(DynSink, Box<dyn DeadLetterOutput>)> {
    match config.target()? {
        Target::Sqlite { path } => {
            if let Some(dir) = path.parent() {
                if !dir.as_os_str().is_empty() {
                    std::fs::create_dir_all(dir).with_context(|| {
                        format!("cannot create the target folder {}", dir.display())
                    })?;
                }
            }
            let sink = SqliteSink::open(&path)?;
            let dlq = SqliteDeadLetters::open(&path)?;
            Ok((Box::new(sink), Box::new(dlq)))
        }
        Target::Scylla {
            config: scylla,
            dead_letter_path,
        } => {
            let sink = ScyllaSink::connect_with_handle(scylla, tokio::runtime::Handle::current())?;
            for w in sink.check_gc_grace(None)? {
                warn!(
                    table = %w.table,
                    gc_grace_seconds = w.gc_grace_seconds,
                    backfill_window_seconds = w.backfill_window_seconds,
                    "gc_grace_seconds is shorter than the backfill window: a tombstone may be purged while an older change is still in flight, and the row would come back"
                );
            }
            Ok((
                Box::new(sink),
                Box::new(FileDeadLetters::new(&dead_letter_path)),
            ))
        }
    }
}

/// Each of `tables`' backfill progress, where it has some (a table backfilled in parts: the sum
/// of its parts, see `tidemark_ingest::split`).
pub(crate) fn read_backfill_checkpoints(
    sink: &mut dyn Sink,
    tables: &[TableId],
) -> Result<BTreeMap<TableId, BackfillCheckpoint>> {
    let mut out = BTreeMap::new();
    for t in tables {
        if let Some(cp) = stored_backfill(sink, t)?.combined() {
            out.insert(*t, cp);
        }
    }
    Ok(out)
}

/// A table's stored backfill state: its checkpoint, and its split and parts' progress.
pub(crate) fn stored_backfill(sink: &mut dyn Sink, table: &TableId) -> Result<StoredBackfill> {
    Ok(StoredBackfill::read(table, |stage, scope| {
        sink.checkpoint(stage, scope)
    })?)
}

/// The checkpoints of `stage` stored for `tables` (scope: the table), where there are some.
pub(crate) fn read_table_checkpoints<T: serde::de::DeserializeOwned>(
    sink: &mut dyn Sink,
    stage: &str,
    tables: &[TableId],
) -> Result<BTreeMap<TableId, T>> {
    let mut out = BTreeMap::new();
    for t in tables {
        if let Some(text) = sink.checkpoint(stage, &t.to_string())? {
            let cp: T = serde_json::from_str(&text).with_context(|| {
                format!("the stored {stage} checkpoint of {t} is unreadable: `{text}`")
            })?;
            out.insert(*t, cp);
        }
    }
    Ok(out)
}

/// `tidemark target init`: create the target tables of every table in scope.
pub async fn target_init(config: &Config) -> Result<String> {
    let transformer = config.transformer()?;
    let scope = Scope::from_config(&config.source)?;
    let mut source = Source::connect(&config.source.url).await?;
    let mut schemas = Vec::new();
    for schema in crate::preflight::checked_scope(&mut source, &scope, &transformer)
        .await?
        .1
    {
        schemas.push(transformer.plan(&schema)?.target_schema().clone());
    }
    let names: Vec<&str> = schemas.iter().map(|s| s.table.as_str()).collect();
    block_in_place(|| -> Result<()> {
        match config.target()? {
            Target::Scylla { config: scylla, .. } => {
                let mut sink =
                    ScyllaSink::connect_with_handle(scylla, tokio::runtime::Handle::current())?;
                sink.init(&schemas)?;
            }
            Target::Sqlite { .. } => {
                let (mut sink, _) = open_sink(config)?;
                for schema in &schemas {
                    sink.ensure_table(schema)?;
                }
            }
        }
        Ok(())
    })?;
    Ok(format!(
        "target ready: {} tables ({})\n",
        schemas.len(),
        names.join(", ")
    ))
}
