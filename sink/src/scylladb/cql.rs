//! CQL text and bound values, without a server: what [`super::ScyllaSink`] prepares and sends.
//!
//! - [`TableLayout`] derives every statement of one table from its [`TargetSchema`]: `CREATE
//!   TABLE`, `INSERT … USING TIMESTAMP ?`, `DELETE … USING TIMESTAMP ? WHERE key`, the point
//!   `SELECT` and the token-ordered scans. Every identifier is double-quoted (case kept, and the
//!   `_tm_` lineage columns must be quoted anyway).
//! - [`write_timestamp`] maps a version to its write timestamp: the identity, checked.
//! - [`plan`] turns one `write` call into units of work: it keeps per key only the
//!   highest-version record of the call (an older one could only lose), groups the rest by
//!   partition, and cuts each partition's statements into unlogged batches of bounded size.

use std::collections::HashMap;

use scylla::value::CqlValue;
use tidemark_schemas::{
    Lineage, Operation, Row, TargetRecord, TargetSchema, Value, Version, MAX_FILE_SEQ,
};

use super::config::defaults;
use super::types::{cql_type, cql_value, value_from_cql};
use crate::{key_text, Error, Result, StoredRecord, WriteStats};

/// Lineage columns every ScyllaDB target table carries after the mapped columns. Unlike SQLite
/// there is no `_tm_deleted`: a delete is a real row tombstone, never a stored row.
pub const LINEAGE_COLUMNS: &[(&str, &str)] = &[
    ("_tm_version", "bigint"),
    ("_tm_op", "text"),
    ("_tm_source_server", "text"),
    ("_tm_source_table", "text"),
    ("_tm_source_key", "text"),
    ("_tm_position", "text"),
    ("_tm_gtid", "text"),
    ("_tm_commit_time_us", "bigint"),
    ("_tm_transform", "text"),
    ("_tm_transform_version", "text"),
    ("_tm_source_digest", "text"),
    ("_tm_chunk", "text"),
];

/// Bound values of one statement, in marker order; `None` is CQL null.
pub type Values = Vec<Option<CqlValue>>;

/// Table of checkpoints, in the target keyspace.
pub const CHECKPOINT_TABLE: &str = "tidemark_checkpoints";

/// Versions at or above this cannot come from `tidemark_schemas::row_version` (DESIGN.md §2) and
/// would, as write timestamps, risk beating application writes made after cutover.
pub const VERSION_LIMIT: Version = (MAX_FILE_SEQ << 32) as Version;

/// Quote a CQL identifier.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// `"ks"."table"`.
pub fn qualified(keyspace: &str, table: &str) -> String {
    format!("{}.{}", quote(keyspace), quote(table))
}

/// The write timestamp (microseconds, by CQL convention) of a record of `version`: the version
/// itself. Versions are below 2^49 (≈ 5.6e14 µs, year 1987 as a wall clock), so application
/// writes with default wall-clock timestamps (≈ 1.7e15 in 2026) win after cutover.
pub fn write_timestamp(version: Version) -> std::result::Result<i64, String> {
    if (0..VERSION_LIMIT).contains(&version) {
        Ok(version)
    } else {
        Err(format!(
            "version {version} is outside 0..2^49: it cannot come from a binlog position, and as a write timestamp it could shadow writes made after cutover"
        ))
    }
}

/// `CREATE KEYSPACE IF NOT EXISTS` with `replication_factor` in every datacenter.
pub fn create_keyspace_cql(keyspace: &str, replication_factor: u32) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {} WITH replication = {{'class': 'NetworkTopologyStrategy', 'replication_factor': {replication_factor}}}",
        quote(keyspace)
    )
}

pub fn create_checkpoint_table_cql(keyspace: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\"stage\" text, \"scope\" text, \"value\" text, PRIMARY KEY ((\"stage\", \"scope\")))",
        qualified(keyspace, CHECKPOINT_TABLE)
    )
}

pub fn checkpoint_insert_cql(keyspace: &str) -> String {
    format!(
        "INSERT INTO {} (\"stage\", \"scope\", \"value\") VALUES (?, ?, ?) USING TIMESTAMP ?",
        qualified(keyspace, CHECKPOINT_TABLE)
    )
}

pub fn checkpoint_select_cql(keyspace: &str) -> String {
    format!(
        "SELECT \"value\", WRITETIME(\"value\") FROM {} WHERE \"stage\" = ? AND \"scope\" = ?",
        qualified(keyspace, CHECKPOINT_TABLE)
    )
}

/// Which prepared statement a bound value list belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatementKind {
    Insert,
    Delete,
}

/// Every statement of one target table.
#[derive(Debug, Clone)]
pub struct TableLayout {
    pub schema: TargetSchema,
    /// The leading key columns that form the partition key (≥ 1); the rest are clustering.
    pub partition_len: usize,
    pub insert_cql: String,
    pub delete_cql: String,
    pub select_cql: String,
    /// First page of a scan: `SELECT … LIMIT ?`.
    pub scan_first_cql: String,
    /// Next partitions: `SELECT … WHERE token(pk) > token(?) LIMIT ?`.
    pub scan_next_cql: String,
    /// Rest of a partition after a clustering key; `None` without clustering columns.
    pub scan_rest_cql: Option<String>,
}

impl TableLayout {
    /// The layout of `schema` in `keyspace`; `partition_key` (from the configuration) names the
    /// leading key columns forming the partition key, the whole key when `None`.
    pub fn new(
        keyspace: &str,
        schema: &TargetSchema,
        partition_key: Option<&[String]>,
    ) -> Result<Self> {
        crate::check_schema(schema)?;
        let partition_len = match partition_key {
            None => schema.key.len(),
            Some(pk) => {
                if pk.is_empty() || pk.len() > schema.key.len() || schema.key[..pk.len()] != *pk {
                    return Err(Error::Config {
                        setting: format!("partition_keys.{}", schema.table),
                        message: format!(
                            "{pk:?} is not a leading part of the table's key {:?}",
                            schema.key
                        ),
                    });
                }
                pk.len()
            }
        };
        let table = qualified(keyspace, &schema.table);
        let all: Vec<String> = column_names(schema).map(|n| quote(&n)).collect();
        let selected = all.join(", ");
        let key_eq: Vec<String> = schema
            .key
            .iter()
            .map(|k| format!("{} = ?", quote(k)))
            .collect();
        let pk: Vec<String> = schema.key[..partition_len]
            .iter()
            .map(|k| quote(k))
            .collect();
        let pk_marks = vec!["?"; partition_len].join(", ");
        let ck: Vec<String> = schema.key[partition_len..]
            .iter()
            .map(|k| quote(k))
            .collect();
        let scan_rest_cql = (!ck.is_empty()).then(|| {
            let pk_eq: Vec<String> = pk.iter().map(|k| format!("{k} = ?")).collect();
            // A single clustering column takes the plain slice; several, the tuple slice.
            let slice = if ck.len() == 1 {
                format!("{} > ?", ck[0])
            } else {
                format!("({}) > ({})", ck.join(", "), vec!["?"; ck.len()].join(", "))
            };
            format!(
                "SELECT {selected} FROM {table} WHERE {} AND {slice} LIMIT ?",
                pk_eq.join(" AND "),
            )
        });
        Ok(TableLayout {
            insert_cql: format!(
                "INSERT INTO {table} ({selected}) VALUES ({}) USING TIMESTAMP ?",
                vec!["?"; all.len()].join(", ")
            ),
            delete_cql: format!(
                "DELETE FROM {table} USING TIMESTAMP ? WHERE {}",
                key_eq.join(" AND ")
            ),
            select_cql: format!(
                "SELECT {selected} FROM {table} WHERE {}",
                key_eq.join(" AND ")
            ),
            scan_first_cql: format!("SELECT {selected} FROM {table} LIMIT ?"),
            scan_next_cql: format!(
                "SELECT {selected} FROM {table} WHERE token({}) > token({pk_marks}) LIMIT ?",
                pk.join(", ")
            ),
            scan_rest_cql,
            partition_len,
            schema: schema.clone(),
        })
    }

    /// Every column with its CQL type: mapped columns, then lineage.
    pub fn columns(&self) -> Vec<(String, &'static str)> {
        self.schema
            .columns
            .iter()
            .map(|c| (c.name.to_string(), cql_type(&c.ty)))
            .chain(LINEAGE_COLUMNS.iter().map(|(n, t)| (n.to_string(), *t)))
            .collect()
    }

    /// `CREATE TABLE IF NOT EXISTS …` with the given `gc_grace_seconds`.
    pub fn create_table_cql(&self, keyspace: &str, gc_grace_seconds: u64) -> String {
        let mut defs: Vec<String> = self
            .columns()
            .iter()
            .map(|(n, t)| format!("{} {t}", quote(n)))
            .collect();
        let pk: Vec<String> = self.schema.key[..self.partition_len]
            .iter()
            .map(|k| quote(k))
            .collect();
        let mut primary = vec![format!("({})", pk.join(", "))];
        primary.extend(
            self.schema.key[self.partition_len..]
                .iter()
                .map(|k| quote(k)),
        );
        defs.push(format!("PRIMARY KEY ({})", primary.join(", ")));
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}) WITH gc_grace_seconds = {gc_grace_seconds}",
            qualified(keyspace, &self.schema.table),
            defs.join(", ")
        )
    }

    /// `ALTER TABLE … ADD` for one missing column.
    pub fn add_column_cql(&self, keyspace: &str, column: &str, cql_type: &str) -> String {
        format!(
            "ALTER TABLE {} ADD {} {cql_type}",
            qualified(keyspace, &self.schema.table),
            quote(column)
        )
    }

    fn value_err(&self, key: &Row, column: &str, message: String) -> Error {
        Error::Value {
            table: self.schema.table.clone(),
            key: key_text(key),
            column: column.to_string(),
            message,
        }
    }

    /// Bound values of the key columns of `key` (taken by name), in key order. Partition-key
    /// values may not be NULL nor empty (ScyllaDB rejects an empty partition key).
    pub fn key_values(&self, key: &Row) -> Result<Values> {
        self.schema
            .key
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let col = self.schema.column(k).expect("key columns are checked");
                let v = key
                    .get(k)
                    .ok_or_else(|| self.value_err(key, k, "the key lacks this column".into()))?;
                let cql = cql_value(&col.ty, v).map_err(|e| self.value_err(key, k, e))?;
                match &cql {
                    None => Err(self.value_err(key, k, "a key column cannot be NULL".into())),
                    Some(CqlValue::Text(s)) if i < self.partition_len && s.is_empty() => Err(self
                        .value_err(
                            key,
                            k,
                            "ScyllaDB cannot store an empty partition key value".into(),
                        )),
                    Some(CqlValue::Blob(b)) if i < self.partition_len && b.is_empty() => Err(self
                        .value_err(
                            key,
                            k,
                            "ScyllaDB cannot store an empty partition key value".into(),
                        )),
                    _ => Ok(cql),
                }
            })
            .collect()
    }

    /// [`Self::key_values`] for a read: `None` for a key no row can be stored under (an empty
    /// partition-key value, refused by ScyllaDB and Cassandra on writes and reads alike), whose
    /// answer is "not there". Any other fault of the key is an error, as for a write.
    pub fn key_values_for_read(&self, key: &Row) -> Result<Option<Values>> {
        match self.key_values(key) {
            Ok(values) => Ok(Some(values)),
            Err(e) if self.has_empty_partition_value(key) => {
                tracing::debug!(error = %e, "a key no row can be stored under reads as absent");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn has_empty_partition_value(&self, key: &Row) -> bool {
        self.schema.key[..self.partition_len].iter().any(|k| {
            let Some(col) = self.schema.column(k) else {
                return false;
            };
            match key.get(k).map(|v| cql_value(&col.ty, v)) {
                Some(Ok(Some(CqlValue::Text(s)))) => s.is_empty(),
                Some(Ok(Some(CqlValue::Blob(b)))) => b.is_empty(),
                _ => false,
            }
        })
    }

    /// Bound values of the `INSERT`: every mapped column (NULL for columns the record does not
    /// carry, so a newer version always overwrites every cell), lineage, then the timestamp.
    pub fn insert_values(&self, rec: &TargetRecord) -> Result<Values> {
        let row = rec.columns.as_ref().expect("insert_values is for upserts");
        // Validates the key (NULL, empty partition key) even if `columns` repeats it.
        self.key_values(&rec.key)?;
        let mut values = Vec::with_capacity(self.schema.columns.len() + LINEAGE_COLUMNS.len() + 1);
        for col in &self.schema.columns {
            let v = row
                .get(&col.name)
                .or_else(|| rec.key.get(&col.name))
                .unwrap_or(&Value::Null);
            values.push(cql_value(&col.ty, v).map_err(|e| self.value_err(&rec.key, &col.name, e))?);
        }
        let l = &rec.lineage;
        let text = |s: &str| Some(CqlValue::Text(s.to_string()));
        values.extend([
            Some(CqlValue::BigInt(l.version)),
            text(l.op.as_str()),
            text(&l.source_server),
            text(&l.source_table),
            text(&l.source_key),
            text(&l.position),
            l.gtid.as_deref().and_then(text),
            Some(CqlValue::BigInt(l.commit_time_us)),
            text(&l.transform_name),
            text(&l.transform_version),
            text(&l.source_digest),
            l.chunk.as_deref().and_then(text),
        ]);
        values.push(Some(CqlValue::BigInt(self.timestamp(rec)?)));
        Ok(values)
    }

    /// Bound values of the `DELETE`: the timestamp, then the key.
    pub fn delete_values(&self, rec: &TargetRecord) -> Result<Values> {
        let mut values = vec![Some(CqlValue::BigInt(self.timestamp(rec)?))];
        values.extend(self.key_values(&rec.key)?);
        Ok(values)
    }

    fn timestamp(&self, rec: &TargetRecord) -> Result<i64> {
        write_timestamp(rec.version()).map_err(|message| Error::Write {
            table: self.schema.table.clone(),
            message: format!("key {}: {message}", key_text(&rec.key)),
        })
    }

    /// A selected row (every column of [`TableLayout::columns`], in order) back into a record.
    pub fn record_from_row(&self, row: Vec<Option<CqlValue>>) -> Result<StoredRecord> {
        let n = self.schema.columns.len();
        if row.len() != n + LINEAGE_COLUMNS.len() {
            return Err(self.read_err(format!(
                "a row of {} columns where {} were selected",
                row.len(),
                n + LINEAGE_COLUMNS.len()
            )));
        }
        // The key first, so that every later error names it.
        let key = self.key_from_row(&row)?;
        let key_text = crate::key_text(&key);
        let read_err = |message: String| Error::Read {
            table: self.schema.table.clone(),
            key: key_text.clone(),
            message,
        };
        let mut cells = row.into_iter();
        let mut columns = Row::new();
        for col in &self.schema.columns {
            let v = value_from_cql(&col.ty, cells.next().flatten())
                .map_err(|e| read_err(format!("column `{}`: {e}", col.name)))?;
            columns.push(col.name, v);
        }
        let lineage: Vec<Option<CqlValue>> = cells.collect();
        let text = |i: usize| -> Result<Option<String>> {
            match &lineage[i] {
                None => Ok(None),
                Some(CqlValue::Text(s)) => Ok(Some(s.clone())),
                Some(other) => Err(read_err(format!(
                    "lineage column {} holds {other:?}",
                    LINEAGE_COLUMNS[i].0
                ))),
            }
        };
        let required = |i: usize| -> Result<String> {
            text(i)?
                .ok_or_else(|| read_err(format!("lineage column {} is NULL", LINEAGE_COLUMNS[i].0)))
        };
        let int = |i: usize| -> Result<i64> {
            match &lineage[i] {
                Some(CqlValue::BigInt(v)) => Ok(*v),
                other => Err(read_err(format!(
                    "lineage column {} holds {other:?}",
                    LINEAGE_COLUMNS[i].0
                ))),
            }
        };
        let op = required(1)?;
        let lineage = Lineage {
            version: int(0)?,
            op: Operation::parse(&op)
                .ok_or_else(|| read_err(format!("unknown operation `{op}`")))?,
            source_server: required(2)?.into(),
            source_table: required(3)?.into(),
            source_key: required(4)?,
            position: required(5)?.into(),
            gtid: text(6)?,
            commit_time_us: int(7)?,
            transform_name: required(8)?.into(),
            transform_version: required(9)?.into(),
            source_digest: required(10)?,
            chunk: text(11)?.map(Into::into),
        };
        Ok(TargetRecord {
            table: self.schema.table.clone().into(),
            key,
            columns: Some(columns),
            lineage,
        })
    }

    /// The key of a selected row (every column, then lineage), decoded alone: what the
    /// reconciler's key scan needs, whatever the rest of the row holds.
    pub fn key_from_row(&self, row: &[Option<CqlValue>]) -> Result<Row> {
        self.schema
            .key
            .iter()
            .map(|k| {
                let (i, col) = self
                    .schema
                    .columns
                    .iter()
                    .enumerate()
                    .find(|(_, c)| c.name == *k)
                    .expect("key columns are checked");
                let v = value_from_cql(&col.ty, row.get(i).cloned().flatten())
                    .map_err(|e| self.read_err(format!("key column `{k}`: {e}")))?;
                Ok((*k, v))
            })
            .collect()
    }

    fn read_err(&self, message: String) -> Error {
        Error::Read {
            table: self.schema.table.clone(),
            key: "(stored row)".into(),
            message,
        }
    }

    /// The key of `key` split into partition and clustering values (bound values, key order).
    pub fn split_key(&self, key: &Row) -> Result<(Values, Values)> {
        let mut values = self.key_values(key)?;
        let clustering = values.split_off(self.partition_len);
        Ok((values, clustering))
    }
}

fn column_names(schema: &TargetSchema) -> impl Iterator<Item = String> + '_ {
    schema
        .columns
        .iter()
        .map(|c| c.name.to_string())
        .chain(LINEAGE_COLUMNS.iter().map(|(n, _)| n.to_string()))
}

/// One statement with its bound values.
#[derive(Debug, Clone, PartialEq)]
pub struct Bound {
    pub kind: StatementKind,
    pub values: Values,
    /// Target key, for messages.
    pub key: String,
}

/// What one request sends: a single statement, or an unlogged batch of statements that all
/// touch one partition of one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    pub table: String,
    pub statements: Vec<Bound>,
}

/// The requests of one `write` call, and its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub units: Vec<Unit>,
    pub stats: WriteStats,
}

/// Bounds of one unlogged batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub max_statements: usize,
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        BatchLimits {
            max_statements: defaults::MAX_BATCH_STATEMENTS,
            max_bytes: defaults::MAX_BATCH_BYTES,
        }
    }
}

/// Rough serialized size of bound values, to keep batches small.
fn estimated_bytes(values: &[Option<CqlValue>]) -> usize {
    values
        .iter()
        .map(|v| {
            4 + match v {
                Some(CqlValue::Text(s)) => s.len(),
                Some(CqlValue::Blob(b)) => b.len(),
                Some(CqlValue::Varint(v)) => v.as_signed_bytes_be_slice().len(),
                Some(CqlValue::Decimal(d)) => d.as_signed_be_bytes_slice_and_exponent().0.len() + 4,
                Some(_) => 8,
                None => 0,
            }
        })
        .sum()
}

/// The requests for `records`, in first-seen order of their partitions.
///
/// Per target key only the highest-version record is sent (ties: the first seen, as SQLite
/// keeps); the others are counted as ignored. Statements of one partition go into unlogged
/// batches within `limits`; a partition with one statement is a single request.
pub fn plan(
    layouts: &HashMap<String, TableLayout>,
    records: &[TargetRecord],
    limits: BatchLimits,
) -> Result<Plan> {
    let mut stats = WriteStats::default();
    // (table, key) → index of the winning record.
    let mut winner: HashMap<(&str, String), usize> = HashMap::new();
    let mut order: Vec<(&str, String)> = Vec::new();
    for (i, rec) in records.iter().enumerate() {
        let layout = layouts
            .get(rec.table.as_str())
            .ok_or_else(|| Error::Write {
                table: rec.table.to_string(),
                message: "no schema was announced for this table before its records".into(),
            })?;
        let key_id = format!("{:?}", layout.key_values(&rec.key)?);
        let slot = (rec.table.as_str(), key_id);
        match winner.get(&slot) {
            Some(&w) => {
                stats.per_table.entry(rec.table.to_string()).or_default().1 += 1;
                if rec.version() > records[w].version() {
                    winner.insert(slot, i);
                }
            }
            None => {
                order.push(slot.clone());
                winner.insert(slot, i);
            }
        }
    }
    // Partition → statements, in first-seen order.
    let mut partitions: Vec<((&str, String), Vec<Bound>)> = Vec::new();
    let mut index: HashMap<(&str, String), usize> = HashMap::new();
    for slot in &order {
        let rec = &records[winner[slot]];
        let layout = &layouts[rec.table.as_str()];
        let (pk, _) = layout.split_key(&rec.key)?;
        let bound = if rec.is_tombstone() {
            Bound {
                kind: StatementKind::Delete,
                values: layout.delete_values(rec)?,
                key: key_text(&rec.key),
            }
        } else {
            Bound {
                kind: StatementKind::Insert,
                values: layout.insert_values(rec)?,
                key: key_text(&rec.key),
            }
        };
        stats.per_table.entry(rec.table.to_string()).or_default().0 += 1;
        let part = (rec.table.as_str(), format!("{pk:?}"));
        let at = *index.entry(part.clone()).or_insert_with(|| {
            partitions.push((part, Vec::new()));
            partitions.len() - 1
        });
        partitions[at].1.push(bound);
    }
    let mut units = Vec::new();
    for ((table, _), statements) in partitions {
        let mut current: Vec<Bound> = Vec::new();
        let mut bytes = 0;
        for b in statements {
            let size = estimated_bytes(&b.values);
            if !current.is_empty()
                && (current.len() >= limits.max_statements || bytes + size > limits.max_bytes)
            {
                units.push(Unit {
                    table: table.to_string(),
                    statements: std::mem::take(&mut current),
                });
                bytes = 0;
            }
            bytes += size;
            current.push(b);
        }
        if !current.is_empty() {
            units.push(Unit {
                table: table.to_string(),
                statements: current,
            });
        }
    }
    Ok(Plan { units, stats })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schemas::{TargetColumn, TargetType};

    fn schema(key: &[&str]) -> TargetSchema {
        let col = |name: &str, ty: TargetType, nullable: bool| TargetColumn {
            name: name.into(),
            ty,
            nullable,
        };
        TargetSchema {
            table: "Orders".into(),
            columns: vec![
                col("customer", TargetType::Int { bits: 32 }, false),
                col("id", TargetType::UInt { bits: 64 }, false),
                col("note", TargetType::Text { max_chars: None }, true),
            ],
            key: key.iter().map(|k| (*k).into()).collect(),
        }
    }

    fn lineage(version: Version, op: Operation) -> Lineage {
        Lineage {
            source_server: "srv".into(),
            source_table: "shop.orders".into(),
            source_key: "{}".into(),
            position: "binlog.000001:4".into(),
            gtid: None,
            version,
            op,
            commit_time_us: 1_700_000_000_000_000,
            transform_name: "identity".into(),
            transform_version: "abc".into(),
            source_digest: "d".into(),
            chunk: None,
        }
    }

    fn rec(customer: i64, id: u64, version: Version, note: Option<&str>) -> TargetRecord {
        let key: Row = [
            ("customer".into(), Value::Int(customer)),
            ("id".into(), Value::UInt(id)),
        ]
        .into_iter()
        .collect();
        let columns = note.map(|n| {
            let mut r = key.clone();
            r.push("note", Value::Text(n.into()));
            r
        });
        let op = if note.is_some() {
            Operation::Update
        } else {
            Operation::Delete
        };
        TargetRecord {
            table: "Orders".into(),
            key,
            columns,
            lineage: lineage(version, op),
        }
    }

    #[test]
    fn statements_are_quoted_and_bind_the_timestamp() {
        let l = TableLayout::new(
            "shop",
            &schema(&["customer", "id"]),
            Some(&["customer".into()]),
        )
        .expect("layout");
        assert_eq!(
            l.insert_cql,
            "INSERT INTO \"shop\".\"Orders\" (\"customer\", \"id\", \"note\", \"_tm_version\", \"_tm_op\", \"_tm_source_server\", \"_tm_source_table\", \"_tm_source_key\", \"_tm_position\", \"_tm_gtid\", \"_tm_commit_time_us\", \"_tm_transform\", \"_tm_transform_version\", \"_tm_source_digest\", \"_tm_chunk\") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?"
        );
        assert_eq!(
            l.delete_cql,
            "DELETE FROM \"shop\".\"Orders\" USING TIMESTAMP ? WHERE \"customer\" = ? AND \"id\" = ?"
        );
        assert!(l
            .select_cql
            .ends_with("FROM \"shop\".\"Orders\" WHERE \"customer\" = ? AND \"id\" = ?"));
        assert!(l
            .scan_next_cql
            .ends_with("FROM \"shop\".\"Orders\" WHERE token(\"customer\") > token(?) LIMIT ?"));
        assert!(l
            .scan_rest_cql
            .as_deref()
            .expect("clustering")
            .ends_with("FROM \"shop\".\"Orders\" WHERE \"customer\" = ? AND \"id\" > ? LIMIT ?"));
        assert_eq!(
            l.create_table_cql("shop", 864_000),
            "CREATE TABLE IF NOT EXISTS \"shop\".\"Orders\" (\"customer\" int, \"id\" varint, \"note\" text, \"_tm_version\" bigint, \"_tm_op\" text, \"_tm_source_server\" text, \"_tm_source_table\" text, \"_tm_source_key\" text, \"_tm_position\" text, \"_tm_gtid\" text, \"_tm_commit_time_us\" bigint, \"_tm_transform\" text, \"_tm_transform_version\" text, \"_tm_source_digest\" text, \"_tm_chunk\" text, PRIMARY KEY ((\"customer\"), \"id\")) WITH gc_grace_seconds = 864000"
        );
        let whole = TableLayout::new("shop", &schema(&["customer", "id"]), None).expect("layout");
        assert!(whole
            .create_table_cql("shop", 1)
            .contains("PRIMARY KEY ((\"customer\", \"id\"))"));
        assert!(whole.scan_rest_cql.is_none());
        let deep = TableLayout::new(
            "shop",
            &schema(&["customer", "id", "note"]),
            Some(&["customer".into()]),
        )
        .expect("layout");
        assert!(deep
            .scan_rest_cql
            .as_deref()
            .expect("clustering")
            .ends_with("WHERE \"customer\" = ? AND (\"id\", \"note\") > (?, ?) LIMIT ?"));
        assert!(deep
            .create_table_cql("shop", 1)
            .contains("PRIMARY KEY ((\"customer\"), \"id\", \"note\")"));
        assert_eq!(quote("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(
            create_keyspace_cql("shop", 3),
            "CREATE KEYSPACE IF NOT EXISTS \"shop\" WITH replication = {'class': 'NetworkTopologyStrategy', 'replication_factor': 3}"
        );
    }

    #[test]
    fn a_partition_key_that_is_not_a_key_prefix_is_a_config_error() {
        let e = TableLayout::new("shop", &schema(&["customer", "id"]), Some(&["id".into()]))
            .expect_err("id is not the leading key column");
        assert!(e.to_string().contains("partition_keys.Orders"), "{e}");
    }

    #[test]
    fn bound_values_carry_columns_lineage_and_the_version_as_timestamp() {
        let l = TableLayout::new("shop", &schema(&["customer", "id"]), None).expect("layout");
        let r = rec(7, u64::MAX, 4_294_967_400, Some("hi"));
        let v = l.insert_values(&r).expect("insert values");
        assert_eq!(v.len(), 3 + LINEAGE_COLUMNS.len() + 1);
        assert_eq!(v[0], Some(CqlValue::Int(7)));
        assert_eq!(v[2], Some(CqlValue::Text("hi".into())));
        assert_eq!(v[3], Some(CqlValue::BigInt(4_294_967_400)), "_tm_version");
        assert_eq!(v[4], Some(CqlValue::Text("update".into())), "_tm_op");
        assert_eq!(v[9], None, "_tm_gtid is NULL");
        assert_eq!(
            v.last(),
            Some(&Some(CqlValue::BigInt(4_294_967_400))),
            "USING TIMESTAMP"
        );
        let d = l
            .delete_values(&rec(7, 1, 99, None))
            .expect("delete values");
        assert_eq!(
            d[0],
            Some(CqlValue::BigInt(99)),
            "the timestamp binds first"
        );
        assert_eq!(d[1], Some(CqlValue::Int(7)));
        assert_eq!(d.len(), 3);
        // A record without a column binds NULL, so the newer version clears the cell.
        let mut r2 = rec(7, 1, 100, Some("x"));
        r2.columns.as_mut().unwrap().0.retain(|(n, _)| n != "note");
        assert_eq!(l.insert_values(&r2).unwrap()[2], None);
    }

    #[test]
    fn version_is_the_write_timestamp_within_the_reserved_range() {
        assert_eq!(write_timestamp(0), Ok(0));
        assert_eq!(write_timestamp(VERSION_LIMIT - 1), Ok(VERSION_LIMIT - 1));
        assert!(write_timestamp(-1).is_err());
        let e = write_timestamp(1_700_000_000_000_000).expect_err("a wall-clock-sized version");
        assert!(e.contains("cutover"), "{e}");
        let l = TableLayout::new("shop", &schema(&["customer", "id"]), None).expect("layout");
        let e = l
            .insert_values(&rec(1, 1, -5, Some("x")))
            .expect_err("negative version");
        assert!(
            e.to_string().contains("Orders") && e.to_string().contains("-5"),
            "{e}"
        );
    }

    #[test]
    fn key_errors_name_table_key_and_column() {
        let mut s = schema(&["note"]);
        s.columns[2].nullable = false;
        let l = TableLayout::new("shop", &s, None).expect("layout");
        let mut r = rec(1, 1, 5, Some(""));
        r.key = [("note".into(), Value::Text(String::new()))]
            .into_iter()
            .collect();
        let e = l.insert_values(&r).expect_err("empty partition key");
        let msg = e.to_string();
        assert!(
            msg.contains("Orders") && msg.contains("note") && msg.contains("empty"),
            "{msg}"
        );
    }

    #[test]
    fn a_key_no_row_can_be_stored_under_reads_as_absent() {
        let mut s = schema(&["note"]);
        s.columns[2].nullable = false;
        let l = TableLayout::new("shop", &s, None).expect("layout");
        let empty: Row = [("note".into(), Value::Text(String::new()))]
            .into_iter()
            .collect();
        assert!(l.key_values_for_read(&empty).expect("no error").is_none());
        let some: Row = [("note".into(), Value::Text("x".into()))]
            .into_iter()
            .collect();
        assert!(l.key_values_for_read(&some).expect("values").is_some());
        let lacking = Row::default();
        assert!(
            l.key_values_for_read(&lacking).is_err(),
            "a key lacking its column is a fault"
        );
    }

    #[test]
    fn plan_keeps_the_newest_per_key_and_batches_per_partition() {
        let l = TableLayout::new(
            "shop",
            &schema(&["customer", "id"]),
            Some(&["customer".into()]),
        )
        .expect("layout");
        let layouts: HashMap<String, TableLayout> =
            [("Orders".to_string(), l)].into_iter().collect();
        let records = vec![
            rec(1, 1, 10, Some("a")),
            rec(2, 1, 11, Some("b")),
            rec(1, 1, 12, None), // newer delete of (1,1)
            rec(1, 2, 13, Some("c")),
            rec(1, 1, 9, Some("old")), // older than the delete
            rec(2, 1, 11, Some("b")),  // replay, equal version
        ];
        let p = plan(&layouts, &records, BatchLimits::default()).expect("plan");
        assert_eq!(
            p.stats.per_table["Orders"],
            (3, 3),
            "3 keys written, 3 records superseded within the call"
        );
        assert_eq!(
            p.units.len(),
            2,
            "one unit per partition: customer 1, customer 2"
        );
        let kinds: Vec<StatementKind> = p.units[0].statements.iter().map(|b| b.kind).collect();
        assert_eq!(kinds, vec![StatementKind::Delete, StatementKind::Insert]);
        assert_eq!(
            p.units[0].statements[0].values[0],
            Some(CqlValue::BigInt(12))
        );
        assert_eq!(p.units[1].statements.len(), 1);

        let small = BatchLimits {
            max_statements: 1,
            max_bytes: usize::MAX,
        };
        assert_eq!(plan(&layouts, &records, small).unwrap().units.len(), 3);
        let tiny = BatchLimits {
            max_statements: 100,
            max_bytes: 1,
        };
        assert_eq!(
            plan(&layouts, &records, tiny).unwrap().units.len(),
            3,
            "a statement larger than the byte bound still goes, alone"
        );
        let e = plan(&HashMap::new(), &records, BatchLimits::default()).expect_err("unknown table");
        assert!(e.to_string().contains("Orders"), "{e}");
    }

    #[test]
    fn a_stored_row_reads_back_as_the_record_written() {
        let l = TableLayout::new("shop", &schema(&["customer", "id"]), None).expect("layout");
        let r = rec(3, 4, 77, Some("n"));
        let mut values = l.insert_values(&r).expect("values");
        values.pop(); // the timestamp is not a column
        let back = l.record_from_row(values).expect("row");
        assert_eq!(back, r);
    }
}
