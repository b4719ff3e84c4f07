//! How a target table is laid out in SQLite: the column types that hold each target type
//! losslessly and the conversions both ways, the rowid key, the file's format stamp, and the SQL
//! of the upsert and the selects.

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::Connection;
use tidemark_schemas::{TargetSchema, TargetType, Value};

use super::LINEAGE_COLUMNS;
use crate::{Error, Result};
use tidemark_schemas::text::value_from_text;

/// Quote an identifier for SQLite.
pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Page size of a new target file (see the module doc).
pub const PAGE_SIZE: u32 = 16384;

/// The SQLite column type that holds a target type losslessly (`""`: no declared type, so no
/// affinity converts what is stored).
pub fn storage_type(ty: &TargetType) -> &'static str {
    match ty {
        TargetType::Int { .. } | TargetType::Year => "INTEGER",
        TargetType::UInt { bits } if *bits < 64 => "INTEGER",
        TargetType::UInt { .. } => "",
        TargetType::Bit { width } if *width < 64 => "INTEGER",
        TargetType::Float | TargetType::Double => "REAL",
        TargetType::Bytes { .. } | TargetType::Geometry => "BLOB",
        _ => "TEXT",
    }
}

/// The SQLite value of `value` in a column of type `ty`.
pub fn storage_value(ty: &TargetType, value: &Value) -> SqlValue {
    match (ty, value) {
        (_, Value::Null) => SqlValue::Null,
        (_, Value::Int(i)) => SqlValue::Integer(*i),
        (_, Value::UInt(u)) => match i64::try_from(*u) {
            Ok(i) => SqlValue::Integer(i),
            Err(_) => SqlValue::Text(u.to_string()),
        },
        (_, Value::Float(f)) => SqlValue::Real(f64::from(*f)),
        (_, Value::Double(f)) => SqlValue::Real(*f),
        (_, Value::Year(y)) => SqlValue::Integer(i64::from(*y)),
        (TargetType::Bit { width }, Value::Bit { value, .. }) if *width < 64 => {
            SqlValue::Integer(*value as i64)
        }
        (_, Value::Bytes(b)) | (_, Value::Geometry(b)) => SqlValue::Blob(b.clone()),
        (_, other) => SqlValue::Text(other.temporal_string().unwrap_or_else(|| other.to_string())),
    }
}

/// The value stored as `stored` in a column of type `ty`: the inverse of [`storage_value`].
/// It reads SQLite's value in place (a text becomes one `String`, or none for a date or a number
/// stored as text).
pub fn value_from_storage(
    ty: &TargetType,
    stored: ValueRef<'_>,
) -> std::result::Result<Value, String> {
    let mismatch = |got: &str| format!("a {got} is stored where {ty:?} was expected");
    match (ty, stored) {
        (_, ValueRef::Null) => Ok(Value::Null),
        (TargetType::Int { .. }, ValueRef::Integer(i)) => Ok(Value::Int(i)),
        (TargetType::UInt { .. }, ValueRef::Integer(i)) => u64::try_from(i)
            .map(Value::UInt)
            .map_err(|_| format!("{i} is stored in an unsigned column")),
        (TargetType::Year, ValueRef::Integer(i)) => u16::try_from(i)
            .map(Value::Year)
            .map_err(|_| format!("{i} is not a YEAR")),
        (TargetType::Bit { width }, ValueRef::Integer(i)) => u64::try_from(i)
            .map(|value| Value::Bit {
                width: *width,
                value,
            })
            .map_err(|_| format!("{i} is not a BIT value")),
        // REAL affinity may hand back an integral value as INTEGER.
        (TargetType::Float, ValueRef::Integer(i)) => Ok(Value::Float(i as f32)),
        (TargetType::Double, ValueRef::Integer(i)) => Ok(Value::Double(i as f64)),
        // The f64 holds an f32 exactly, so narrowing gives back the written f32.
        (TargetType::Float, ValueRef::Real(f)) => Ok(Value::Float(f as f32)),
        (TargetType::Double, ValueRef::Real(f)) => Ok(Value::Double(f)),
        (TargetType::Bytes { .. }, ValueRef::Blob(b)) => Ok(Value::Bytes(b.to_vec())),
        (TargetType::Geometry, ValueRef::Blob(b)) => Ok(Value::Geometry(b.to_vec())),
        (ty, ValueRef::Text(t)) => match std::str::from_utf8(t) {
            Ok(text) => value_from_text(ty, text),
            Err(e) => Err(format!("the stored text is not UTF-8: {e}")),
        },
        (_, ValueRef::Integer(_)) => Err(mismatch("INTEGER")),
        (_, ValueRef::Real(_)) => Err(mismatch("REAL")),
        (_, ValueRef::Blob(_)) => Err(mismatch("BLOB")),
    }
}

/// Whether a column declared `declared` stores values of type `ty` as this format does: the
/// table's rowid key (`rowid_key`) is declared `INTEGER` whatever its integer type; every other
/// column is declared [`storage_type`]. (A BIGINT UNSIGNED column declared `INTEGER` would turn
/// a value from 2^63 up, bound as its digits, into a REAL: it is not accepted.)
pub(super) fn holds(declared: &str, ty: &TargetType, rowid_key: bool) -> bool {
    let want = if rowid_key {
        "INTEGER"
    } else {
        storage_type(ty)
    };
    declared.eq_ignore_ascii_case(want)
}

/// The layout of the tables a target file holds (their key, column types and lineage columns,
/// and the digest scheme of `_tm_source_digest`), kept in the file's `PRAGMA user_version`. A
/// file written by a build with another format is refused, never read or written as if it had
/// this one.
pub const FORMAT: i64 = 1;

/// Stamp a new file with [`FORMAT`]; refuse a file of another format.
pub(super) fn check_format(conn: &Connection, path: &str) -> Result<()> {
    let open_err = |e: rusqlite::Error| Error::Open {
        path: path.to_string(),
        message: e.to_string(),
    };
    let found: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err)?;
    let tables: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(open_err)?;
    if tables == 0 && found == 0 {
        return conn
            .pragma_update(None, "user_version", FORMAT)
            .map_err(open_err);
    }
    if found != FORMAT {
        return Err(Error::Open {
            path: path.to_string(),
            message: format!(
                "this file holds target format {found}{}, and this build of tidemark reads and writes format {FORMAT} only: point [target] path at a new file and backfill into it (`tidemark target init`, then `tidemark run`), or use the build that wrote it",
                if found == 0 {
                    " (a build from before formats were numbered, or not a tidemark target)"
                } else {
                    ""
                }
            ),
        });
    }
    Ok(())
}

/// The columns of `table` as stored: name and declared type (none when there is no such table).
pub(super) fn existing_columns(conn: &Connection, table: &str) -> Result<Vec<(String, String)>> {
    let mut stmt = conn
        .prepare(&format!("PRAGMA table_info({})", quote(table)))
        .map_err(|e| table_err(table, e))?;
    let cols = stmt
        .query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))
        .map_err(|e| table_err(table, e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| table_err(table, e))?;
    Ok(cols)
}

pub(super) fn table_err(table: &str, e: impl std::fmt::Display) -> Error {
    Error::Table {
        table: table.to_string(),
        message: e.to_string(),
    }
}

/// Whether a new table's key is one column declared `INTEGER`, which SQLite makes the rowid:
/// an integer column, or a BIGINT UNSIGNED one stored as its bits (see the module doc).
pub(super) fn is_rowid_key(schema: &TargetSchema) -> bool {
    match schema.key.as_slice() {
        [key] => schema
            .column(key)
            .is_some_and(|c| storage_type(&c.ty) == "INTEGER" || is_bigint_unsigned(&c.ty)),
        _ => false,
    }
}

pub(super) fn is_bigint_unsigned(ty: &TargetType) -> bool {
    matches!(ty, TargetType::UInt { bits: 64 })
}

/// The index, among `schema`'s columns, of a BIGINT UNSIGNED key the table stores as its rowid:
/// the one key column, declared `INTEGER` in the table as it is (`existing`: names and declared
/// types).
pub(super) fn unsigned_rowid(
    schema: &TargetSchema,
    existing: &[(String, String)],
) -> Option<usize> {
    let [key] = schema.key.as_slice() else {
        return None;
    };
    let index = schema.columns.iter().position(|c| c.name == *key)?;
    let declared = existing
        .iter()
        .find(|(name, _)| *name == **key)
        .map(|(_, ty)| ty.as_str());
    (is_bigint_unsigned(&schema.columns[index].ty) && declared == Some("INTEGER")).then_some(index)
}

/// A BIGINT UNSIGNED stored as a rowid: its 64 bits as an i64 (2^63 and above are negative).
pub(super) fn rowid_of_unsigned(value: u64) -> i64 {
    value as i64
}

/// The inverse of [`rowid_of_unsigned`], for a value read from such a column.
pub(super) fn unsigned_of_rowid(stored: ValueRef<'_>) -> std::result::Result<Value, String> {
    match stored {
        ValueRef::Integer(i) => Ok(Value::UInt(i as u64)),
        ValueRef::Null => Ok(Value::Null),
        other => Err(format!(
            "a {:?} is stored in a BIGINT UNSIGNED rowid key",
            other.data_type()
        )),
    }
}

pub(super) fn upsert_sql(schema: &TargetSchema) -> String {
    let names: Vec<String> = schema
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .chain(LINEAGE_COLUMNS.iter().map(|(n, _)| quote(n)))
        .collect();
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    let table = quote(&schema.table);
    let updates: Vec<String> = schema
        .columns
        .iter()
        .filter(|c| !schema.key.contains(&c.name))
        .map(|c| quote(&c.name))
        .chain(LINEAGE_COLUMNS.iter().map(|(n, _)| quote(n)))
        .map(|n| format!("{n} = excluded.{n}"))
        .collect();
    let key: Vec<String> = schema.key.iter().map(|k| quote(k)).collect();
    format!(
        "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT ({}) DO UPDATE SET {} WHERE excluded.\"_tm_version\" > {table}.\"_tm_version\"",
        names.join(", "),
        placeholders.join(", "),
        key.join(", "),
        updates.join(", ")
    )
}

pub(super) fn select_sql(schema: &TargetSchema) -> String {
    let names: Vec<String> = schema
        .columns
        .iter()
        .map(|c| quote(&c.name))
        .chain(LINEAGE_COLUMNS.iter().map(|(n, _)| quote(n)))
        .collect();
    format!("SELECT {} FROM {}", names.join(", "), quote(&schema.table))
}

/// `(k1, k2) <op> (?1, ?2)` over the key columns.
pub(super) fn key_condition(schema: &TargetSchema, op: &str) -> String {
    let cols: Vec<String> = schema.key.iter().map(|k| quote(k)).collect();
    let marks: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
    format!("({}) {op} ({})", cols.join(", "), marks.join(", "))
}
