//! Checks of the whole scope before any stage starts.
//!
//! A run that copies nine tables and then stops on the tenth (no primary key), or that captures
//! nothing because a database name has a typo, or that writes two source tables into one target
//! table, wastes hours or corrupts data. So every job starts by resolving the scope against the
//! source (each configured database and table must exist), describing every table in it (one
//! error lists every table that cannot be captured, with `source.exclude_tables` as the way
//! out), compiling every table's mapping, and refusing two source tables that would share a
//! target table.

use anyhow::Result;
use tidemark_ingest::{Scope, Source};
use tidemark_schemas::{SourceSchema, TableId};
use tidemark_transform::Transformer;

/// The tables in scope and their descriptions, checked as the module doc says.
pub async fn checked_scope(
    source: &mut Source,
    scope: &Scope,
    transformer: &Transformer,
) -> Result<(Vec<TableId>, Vec<SourceSchema>)> {
    checked_scope_for(source, scope, transformer, None).await
}

/// [`checked_scope`], describing only `only` (a job that reads just those tables, e.g.
/// `backfill --table`) instead of every table in scope; the descriptions are of those tables.
pub async fn checked_scope_for(
    source: &mut Source,
    scope: &Scope,
    transformer: &Transformer,
    only: Option<&[TableId]>,
) -> Result<(Vec<TableId>, Vec<SourceSchema>)> {
    let tables = source.tables_in_scope(scope).await?;
    let schemas = source.describe_all(only.unwrap_or(&tables)).await?;
    for schema in &schemas {
        transformer.plan(schema)?;
    }
    transformer.check_distinct_targets(&tables)?;
    Ok((tables, schemas))
}
