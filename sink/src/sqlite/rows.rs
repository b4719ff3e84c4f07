//! Records to and from rows: the stored key values, a stored row back into its record, and
//! binding a record to its table's upsert.

use std::ffi::c_int;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::CachedStatement;
use tidemark_schemas::{Lineage, Operation, Row, TargetRecord, TargetSchema, TargetType, Value};

use super::layout::{rowid_of_unsigned, storage_value, unsigned_of_rowid, value_from_storage};
use super::LINEAGE_COLUMNS;
use crate::{key_in_order, Error, Result, StoredRecord};

/// The stored key values of `key` for `schema`, in key order (`unsigned_rowid`: see
/// [`TableState`]).
pub(super) fn key_params(
    schema: &TargetSchema,
    unsigned_rowid: Option<usize>,
    key: &Row,
) -> Result<Vec<SqlValue>> {
    let values = key_in_order(schema, key)?;
    Ok(schema
        .key
        .iter()
        .zip(values)
        .map(|(k, v)| match (unsigned_rowid, v) {
            (Some(_), Value::UInt(u)) => SqlValue::Integer(rowid_of_unsigned(*u)),
            _ => {
                let ty = &schema.column(k).expect("key columns are checked").ty;
                storage_value(ty, v)
            }
        })
        .collect())
}

/// The value of a column of type `ty` stored as `stored`: [`value_from_storage`], or
/// [`unsigned_of_rowid`] when the column is the table's BIGINT UNSIGNED rowid key.
pub(super) fn column_from_storage(
    ty: &TargetType,
    is_unsigned_rowid: bool,
    stored: ValueRef<'_>,
) -> std::result::Result<Value, String> {
    if is_unsigned_rowid {
        unsigned_of_rowid(stored)
    } else {
        value_from_storage(ty, stored)
    }
}

/// A stored row (the columns of [`select_sql`]) back into the record it holds.
pub(super) fn record_from_row(
    schema: &TargetSchema,
    unsigned_rowid: Option<usize>,
    row: &rusqlite::Row<'_>,
) -> Result<StoredRecord> {
    let read_err = |message: String| Error::Read {
        table: schema.table.clone(),
        key: "(stored row)".into(),
        message,
    };
    let mut columns = Row(Vec::with_capacity(schema.columns.len()));
    for (i, col) in schema.columns.iter().enumerate() {
        let stored = row.get_ref(i).map_err(|e| read_err(e.to_string()))?;
        let value = column_from_storage(&col.ty, unsigned_rowid == Some(i), stored)
            .map_err(|e| read_err(format!("column `{}`: {e}", col.name)))?;
        columns.push(col.name, value);
    }
    let n = schema.columns.len();
    // Read in place (`get_ref`): rusqlite's owned `Value` panics on text that is not UTF-8, and
    // a target file may hold anything — written out of band, or corrupted.
    let get = |i: usize| -> Result<ValueRef<'_>> {
        row.get_ref(n + i).map_err(|e| read_err(e.to_string()))
    };
    let held = |i: usize, v: ValueRef<'_>| {
        read_err(format!(
            "lineage column {} holds {:?}",
            LINEAGE_COLUMNS[i].0,
            v.data_type()
        ))
    };
    let int = |i: usize| -> Result<i64> {
        match get(i)? {
            ValueRef::Integer(v) => Ok(v),
            other => Err(held(i, other)),
        }
    };
    let opt_text = |i: usize| -> Result<Option<String>> {
        match get(i)? {
            ValueRef::Text(t) => std::str::from_utf8(t)
                .map(|t| Some(t.to_string()))
                .map_err(|e| {
                    read_err(format!(
                        "lineage column {} is not UTF-8 text: {e}",
                        LINEAGE_COLUMNS[i].0
                    ))
                }),
            ValueRef::Null => Ok(None),
            other => Err(held(i, other)),
        }
    };
    let text = |i: usize| -> Result<String> {
        opt_text(i)?
            .ok_or_else(|| read_err(format!("lineage column {} is NULL", LINEAGE_COLUMNS[i].0)))
    };
    let op_text = text(2)?;
    let lineage = Lineage {
        version: int(0)?,
        op: Operation::parse(&op_text)
            .ok_or_else(|| read_err(format!("unknown operation `{op_text}`")))?,
        source_server: text(3)?.into(),
        source_table: text(4)?.into(),
        source_key: text(5)?,
        position: text(6)?.into(),
        gtid: opt_text(7)?,
        commit_time_us: int(8)?,
        transform_name: text(9)?.into(),
        transform_version: text(10)?.into(),
        source_digest: text(11)?,
        chunk: opt_text(12)?.map(Into::into),
    };
    let deleted = int(1)? != 0;
    let key: Row = schema
        .key
        .iter()
        .map(|k| (*k, columns.get(k).cloned().unwrap_or(Value::Null)))
        .collect();
    Ok(TargetRecord {
        table: schema.table.clone().into(),
        key,
        columns: (!deleted).then_some(columns),
        lineage,
    })
}

/// The upsert of one table, from the connection's statement cache.
pub(super) type Upsert<'c> = CachedStatement<'c>;

/// Bind one parameter (SQLite copies a text or blob).
pub(super) fn bind(
    stmt: &mut Upsert<'_>,
    index: c_int,
    value: impl rusqlite::ToSql,
) -> rusqlite::Result<()> {
    stmt.raw_bind_parameter(index as usize, value)
}

/// Bind `value` (of a column of type `ty`) to parameter `index`: a text or blob as it is, a date
/// or time as its text from the stack, a number as itself (the mapping of [`storage_value`]).
pub(super) fn bind_value(
    stmt: &mut Upsert<'_>,
    index: c_int,
    ty: &TargetType,
    value: Option<&Value>,
) -> rusqlite::Result<()> {
    let Some(value) = value else {
        return bind(stmt, index, rusqlite::types::Null);
    };
    match value {
        Value::Text(s) | Value::Decimal(s) | Value::Enum(s) | Value::Json(s) => {
            bind(stmt, index, s.as_str())
        }
        Value::Bytes(v) | Value::Geometry(v) => bind(stmt, index, v.as_slice()),
        Value::Int(i) => bind(stmt, index, *i),
        Value::Date { .. } | Value::DateTime(_) | Value::Timestamp(_) | Value::Time { .. } => {
            match value.temporal_text() {
                Some(text) => bind(stmt, index, text.as_str()),
                None => bind(stmt, index, storage_value(ty, value)),
            }
        }
        _ => bind(stmt, index, storage_value(ty, value)),
    }
}

/// Bind `rec` to the table's upsert and run it; whether a row changed. `prev` is the record the
/// statement ran with last, if any (see [`bind_record`]).
pub(super) fn write_record(
    stmt: &mut Upsert<'_>,
    schema: &TargetSchema,
    unsigned_rowid: Option<usize>,
    rec: &TargetRecord,
    prev: Option<&TargetRecord>,
) -> Result<bool> {
    bind_record(stmt, schema, unsigned_rowid, rec, prev).map_err(|e| write_err(rec, e))?;
    let changed = stmt.raw_execute().map_err(|e| write_err(rec, e))?;
    Ok(changed > 0)
}

/// The values of `rec`'s columns, in the schema's order (`None`: the record has no such column,
/// as a tombstone holds only the key).
pub(super) fn column_values<'r>(
    schema: &'r TargetSchema,
    rec: &'r TargetRecord,
) -> impl Iterator<Item = Option<&'r Value>> + 'r {
    let source = rec.columns.as_ref().unwrap_or(&rec.key);
    schema.columns.iter().enumerate().map(move |(i, col)| {
        // A record's columns come in the schema's order; look up by name only when they do not.
        match source.0.get(i).filter(|(n, _)| *n == col.name) {
            Some((_, v)) => Some(v),
            None => source.get(&col.name),
        }
    })
}

/// Bind the columns of `rec`, then its lineage, in the order of [`upsert_sql`].
///
/// SQLite keeps a statement's parameters from one execution to the next (it holds its own copy
/// of each text), so a lineage text equal to `prev`'s (the statement's last record) is not bound
/// again. In a run of records most of the lineage repeats (operation, server, table, transform
/// and its version; in a backfill also the position and the chunk), and comparing a few bytes
/// costs less than SQLite's unbinding, allocating and copying. Column values, which seldom
/// repeat, are always bound; a BIGINT UNSIGNED rowid key (`unsigned_rowid`, see [`TableState`])
/// as its bits.
pub(super) fn bind_record(
    stmt: &mut Upsert<'_>,
    schema: &TargetSchema,
    unsigned_rowid: Option<usize>,
    rec: &TargetRecord,
    prev: Option<&TargetRecord>,
) -> rusqlite::Result<()> {
    let mut index: c_int = 0;
    for (i, (col, value)) in schema
        .columns
        .iter()
        .zip(column_values(schema, rec))
        .enumerate()
    {
        index += 1;
        match value {
            Some(Value::UInt(u)) if unsigned_rowid == Some(i) => {
                bind(stmt, index, rowid_of_unsigned(*u))?
            }
            _ => bind_value(stmt, index, &col.ty, value)?,
        }
    }
    let l = &rec.lineage;
    let p = prev.map(|p| &p.lineage);
    // A text shared by a run of records (interned names, a position, a chunk) is one copy:
    // equal at its pointer, without reading it.
    let same = |a: &str, b: &str| std::ptr::eq(a, b) || a == b;
    let text = |stmt: &mut Upsert<'_>, index: c_int, f: fn(&Lineage) -> &str| {
        if p.is_some_and(|p| same(f(p), f(l))) {
            Ok(())
        } else {
            bind(stmt, index, f(l))
        }
    };
    let opt_text = |stmt: &mut Upsert<'_>, index: c_int, f: fn(&Lineage) -> Option<&str>| match f(l)
    {
        Some(v) if p.and_then(f).is_some_and(|pv| same(pv, v)) => Ok(()),
        v => bind(stmt, index, v),
    };
    bind(stmt, index + 1, l.version)?;
    bind(stmt, index + 2, i64::from(rec.is_tombstone()))?;
    text(stmt, index + 3, |l| l.op.as_str())?;
    text(stmt, index + 4, |l| &l.source_server)?;
    text(stmt, index + 5, |l| &l.source_table)?;
    bind(stmt, index + 6, l.source_key.as_str())?;
    text(stmt, index + 7, |l| &l.position)?;
    opt_text(stmt, index + 8, |l| l.gtid.as_deref())?;
    bind(stmt, index + 9, l.commit_time_us)?;
    text(stmt, index + 10, |l| &l.transform_name)?;
    text(stmt, index + 11, |l| &l.transform_version)?;
    bind(stmt, index + 12, l.source_digest.as_str())?;
    opt_text(stmt, index + 13, |l| l.chunk.as_deref())
}

pub(super) fn write_err(rec: &TargetRecord, e: impl std::fmt::Display) -> Error {
    Error::Write {
        table: rec.table.to_string(),
        message: format!("key {}: {e}", rec.lineage.source_key),
    }
}
