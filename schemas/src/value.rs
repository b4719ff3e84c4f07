//! Typed source values and rows.
//!
//! Each variant keeps exactly what the source held. Their canonical text (`Display`), the one
//! digests, keys and lossless text storage in targets are made from, is written and parsed in
//! `text/`.

use serde::{Deserialize, Serialize};

/// One column value, exactly as the source held it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Value {
    Null,
    /// Any signed integer column (TINYINT … BIGINT).
    Int(i64),
    /// Any unsigned integer column, up to BIGINT UNSIGNED's 18446744073709551615.
    UInt(u64),
    Float(f32),
    Double(f64),
    /// DECIMAL/NUMERIC as its exact decimal text, e.g. `-12.500`.
    Decimal(String),
    /// DATE; zero parts are kept (`0000-00-00`).
    Date {
        year: u16,
        month: u8,
        day: u8,
    },
    /// DATETIME (no time zone).
    DateTime(DateTime),
    /// TIMESTAMP, as an instant rendered in UTC; the zero timestamp is all zeros.
    Timestamp(DateTime),
    /// TIME, a signed duration up to ±838:59:59.999999.
    Time {
        negative: bool,
        hours: u16,
        minute: u8,
        second: u8,
        micros: u32,
        fsp: u8,
    },
    /// YEAR; 0 stands for the zero year `0000`.
    Year(u16),
    /// Character data, decoded from the column's character set.
    Text(String),
    /// BINARY/VARBINARY/BLOB bytes.
    Bytes(Vec<u8>),
    /// ENUM, as the member's name (the empty string for the error value 0).
    Enum(String),
    /// SET, as the names of the members present, in definition order.
    Set(Vec<String>),
    /// BIT(width), as an unsigned number.
    Bit {
        width: u8,
        value: u64,
    },
    /// JSON as text (MariaDB stores JSON as text; MySQL's binary JSON is rendered to text).
    Json(String),
    /// GEOMETRY in the server's internal form: 4-byte little-endian SRID followed by WKB.
    Geometry(Vec<u8>),
}

/// The parts of a DATETIME or TIMESTAMP value: a date and a time of day to the microsecond, and
/// the column's fractional-second precision `fsp` (how many fraction digits its canonical text
/// shows). Zero parts are kept (`0000-00-00 00:00:00`). (In JSON, a `Value` holding one reads as
/// the eight fields under the variant's name.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DateTime {
    pub year: u16,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub micros: u32,
    pub fsp: u8,
}

impl DateTime {
    /// The zero date-time `0000-00-00 00:00:00`, with `fsp` 0.
    pub const ZERO: DateTime = DateTime {
        year: 0,
        month: 0,
        day: 0,
        hour: 0,
        minute: 0,
        second: 0,
        micros: 0,
        fsp: 0,
    };
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A short name of the variant, for error messages and type checks.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Int(_) => "int",
            Value::UInt(_) => "uint",
            Value::Float(_) => "float",
            Value::Double(_) => "double",
            Value::Decimal(_) => "decimal",
            Value::Date { .. } => "date",
            Value::DateTime(_) => "datetime",
            Value::Timestamp(_) => "timestamp",
            Value::Time { .. } => "time",
            Value::Year(_) => "year",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
            Value::Enum(_) => "enum",
            Value::Set(_) => "set",
            Value::Bit { .. } => "bit",
            Value::Json(_) => "json",
            Value::Geometry(_) => "geometry",
        }
    }
}

/// A column name as rows carry it: an interned string ([`ustr::Ustr`]), so that naming a column
/// in every row of a table costs one pointer copy — no allocation, no copy of the text, nothing
/// to free. Column names are a small set that lives as long as the process (every name of every
/// table in scope), which is what interning is for: the cache is never emptied. (Names decoded
/// from Kafka messages are interned too; only a producer other than tidemark could make that set
/// grow beyond the tables' columns.) Schemas hold their column names as `ColumnName` as well, so
/// a row built from a schema never looks a name up.
pub type ColumnName = ustr::Ustr;

/// An ordered list of named column values.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Row(pub Vec<(ColumnName, Value)>);

impl Row {
    pub fn new() -> Self {
        Row(Vec::new())
    }

    pub fn push(&mut self, name: impl Into<ColumnName>, value: Value) {
        self.0.push((name.into(), value));
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }
}

impl FromIterator<(ColumnName, Value)> for Row {
    fn from_iter<I: IntoIterator<Item = (ColumnName, Value)>>(iter: I) -> Self {
        Row(iter.into_iter().collect())
    }
}
