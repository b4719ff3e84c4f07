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
