//! `tidemark transform explain`: a mapping, its version, its target schema and what it makes of
//! a sample row, as text for a person. Deterministic, like everything else in the crate.

use std::fmt::Write as _;

use tidemark_schemas::{BinlogPosition, ChangeEvent, Operation, Row, SourceSchema, Value};

use crate::error::ConfigError;
use crate::plan::{Outcome, TablePlan, Transformer};
use crate::{canonical_bytes, syntax::render_type, target_type_for};

/// The change `explain` transforms for a sample row: an insert at a fixed, recognizable position
/// (`sample.000001:4`, version 0, commit time 0, server `sample`).
pub fn sample_change(schema: &SourceSchema, row: &Row) -> ChangeEvent {
    let key = schema
        .key_columns()
        .map(|c| (c.name, row.get(&c.name).cloned().unwrap_or(Value::Null)))
        .collect();
    ChangeEvent {
        source_server: "sample".into(),
        table: schema.table,
        op: Operation::Insert,
        key,
        after: Some(row.clone()),
        version: 0,
        position: BinlogPosition::new("sample.000001", 4),
        gtid: None,
        commit_time_us: 0,
        chunk: None,
    }
}

/// A value for people: text quoted (so spaces show), NULL as `NULL`, the rest canonical.
fn show(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Text(s) | Value::Enum(s) | Value::Json(s) => {
            serde_json::to_string(s).expect("strings serialize")
        }
        other => other.to_string(),
    }
}

fn table(out: &mut String, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::from("  ");
        for (i, cell) in r.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < r.len() {
                let pad = widths[i] - cell.chars().count() + 2;
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

fn row_lines(out: &mut String, row: &Row) {
    let rows: Vec<Vec<String>> = row
        .iter()
        .map(|(n, v)| vec![n.to_string(), "=".into(), show(v)])
        .collect();
    table(out, &rows);
}

impl TablePlan {
    /// The human-readable explanation of this plan, and of `sample` when given.
    pub fn explain(&self, sample: Option<&Row>) -> String {
        let mut out = String::new();
        let src = self.source();
        let w = &mut out;
        let _ = writeln!(
            w,
            "mapping     {} -> {}{}",
            src.table,
            self.target_schema().table,
            if self.is_identity() {
                " (identity: no [[mapping]] for this table)"
            } else {
                ""
            }
        );
        let _ = writeln!(w, "transform   {}", self.transform_name());
        let _ = writeln!(w, "version     {}", self.transform_version());
        let _ = writeln!(w, "canonical   {}", self.canonical_form());
        let _ = writeln!(w, "zero dates  {}", self.zero_dates().as_str());
        let _ = writeln!(w, "filter      {}", self.filter_text().unwrap_or("(none)"));
        if !self.dropped().is_empty() {
            let _ = writeln!(w, "dropped     {}", self.dropped().join(", "));
        }
        let key: Vec<&str> = src.key_columns().map(|c| c.name.as_str()).collect();
        let _ = writeln!(
            w,
            "\nsource {} (key {}: {})",
            src.table,
            src.key_name,
            key.join(", ")
        );
        let rows: Vec<Vec<String>> = src
            .columns
            .iter()
            .map(|c| {
                vec![
                    c.name.to_string(),
                    c.column_type.clone(),
                    if c.nullable { "null" } else { "not null" }.into(),
                    format!("-> {}", render_type(&target_type_for(&c.ty))),
                ]
            })
            .collect();
        table(w, &rows);
        let _ = writeln!(
            w,
            "\ntarget {} (key {})",
            self.target_schema().table,
            self.target_schema()
                .key
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let rows: Vec<Vec<String>> = self
            .column_lines()
            .into_iter()
            .map(|[name, ty, null, from]| {
                let from = if from.starts_with("= ") {
                    from
                } else {
                    format!("<- {from}")
                };
                vec![name, ty, null, from]
            })
            .collect();
        table(w, &rows);
        let Some(sample) = sample else {
            return out;
        };
        let change = sample_change(src, sample);
        let _ = writeln!(out, "\nsample (insert at {})", change.position);
        row_lines(&mut out, sample);
        match self.apply_with_outcome(&change) {
            Ok((record, outcome)) => {
                let what = match outcome {
                    Outcome::Row => "row",
                    Outcome::Deleted => "tombstone (deleted)",
                    Outcome::Filtered => "tombstone (filtered out: the filter is not true)",
                };
                let _ = writeln!(out, "\nresult: {what} for {}", record.table);
                let _ = writeln!(out, "key");
                row_lines(&mut out, &record.key);
                if let Some(columns) = &record.columns {
                    let _ = writeln!(out, "columns");
                    row_lines(&mut out, columns);
                }
                let l = &record.lineage;
                let _ = writeln!(out, "lineage");
                table(
                    &mut out,
                    &[
                        vec!["source_key".into(), l.source_key.clone()],
                        vec!["source_digest".into(), l.source_digest.clone()],
                        vec!["transform".into(), l.transform_name.to_string()],
                        vec!["transform_version".into(), l.transform_version.to_string()],
                    ],
                );
                let _ = writeln!(
                    out,
                    "canonical record\n  {}",
                    String::from_utf8_lossy(&canonical_bytes(&record))
                );
            }
            Err(rejection) => {
                let _ = writeln!(
                    out,
                    "\nresult: rejected ({} / {})",
                    rejection.class.as_str(),
                    rejection.kind
                );
                table(
                    &mut out,
                    &[
                        vec!["column".into(), rejection.column.clone()],
                        vec![
                            "source column".into(),
                            rejection
                                .source_column
                                .clone()
                                .unwrap_or("(computed)".into()),
                        ],
                        vec!["type".into(), rejection.target_type.clone()],
                        vec![
                            "value".into(),
                            rejection.value.clone().unwrap_or("NULL".into()),
                        ],
                        vec!["reason".into(), rejection.reason.clone()],
                    ],
                );
                let _ = writeln!(out, "dead-letter record\n  {}", rejection.to_json());
            }
        }
        out
    }
}

/// What `tidemark transform explain --config F --table T` prints: the mapping of
/// `schema.table` (or the identity), its `transform_version`, the target schema and, when a
/// sample row is given, the record it becomes (or the rejection).
pub fn explain(
    transformer: &Transformer,
    schema: &SourceSchema,
    sample: Option<&Row>,
) -> Result<String, ConfigError> {
    Ok(transformer.plan(schema)?.explain(sample))
}
