//! `tidemark transform explain`: the mapping of one table applied to a sample source row.

use anyhow::Result;
use tidemark_ingest::Source;
use tidemark_schemas::TableId;

use crate::config::Config;

/// `tidemark transform explain`: the mapping of one table applied to a sample source row.
pub async fn explain(config: &Config, table: &TableId) -> Result<String> {
    let transformer = config.transformer()?;
    let mut source = Source::connect(&config.source.url).await?;
    let schema = source.load_schema(table).await?;
    let mut conn = source.new_connection().await?;
    let key: Vec<String> = schema
        .key_columns()
        .map(|c| tidemark_ingest::source::quote_ident(&c.name))
        .collect();
    let sample = tidemark_ingest::source::select_rows(
        &mut conn,
        &schema,
        &format!("ORDER BY {} LIMIT 1", key.join(", ")),
        mysql_async::Params::Empty,
    )
    .await?
    .into_iter()
    .next();
    Ok(tidemark_transform::explain(
        &transformer,
        &schema,
        sample.as_ref(),
    )?)
}

/// `tidemark invariants explain`: each invariant compiled against its source table and the
/// target table its mapping writes, as reconcile evaluates it. Every misconfigured invariant is
/// named in the error, not only the first.
pub async fn explain_invariants(config: &Config) -> Result<String> {
    if config.invariant.is_empty() {
        return Ok(
            "no invariants are configured ([[invariant]] with name, table, source, target)\n"
                .into(),
        );
    }
    let transformer = config.transformer()?;
    let mut source = Source::connect(&config.source.url).await?;
    let mut out = String::new();
    let mut errors = Vec::new();
    for inv in &config.invariant {
        let table = inv.check().map_err(|e| anyhow::anyhow!("{e}"))?;
        let schema = source.load_schema(&table).await?;
        let plan = transformer.plan(&schema)?;
        match tidemark_transform::Invariant::compile(
            inv,
            &schema,
            plan.target_schema(),
            plan.zero_dates(),
        ) {
            Ok(compiled) => out.push_str(&compiled.explain()),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        anyhow::bail!(
            "{} of {} invariants do not fit their tables:\n  {}",
            errors.len(),
            config.invariant.len(),
            errors.join("\n  ")
        );
    }
    out.push_str("each is evaluated by every reconcile, over the keys that settled on both sides; a difference is drift of class invariant_violation\n");
    Ok(out)
}
