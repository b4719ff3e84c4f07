//! The description of a source table, as read from the server's `information_schema`.
//!
//! Capture uses it to decode row images exactly (signedness, character sets, ENUM/SET member
//! names, fractional-second precision); the transform uses it to derive the target schema. It
//! lives in the data contract because both sides must agree on it.

use serde::{Deserialize, Serialize};

use crate::TableId;

/// The kind of a source column, from `information_schema.COLUMNS.DATA_TYPE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceType {
    /// An integer of `bits` width (8, 16, 24, 32, 64).
    Integer {
        bits: u8,
        unsigned: bool,
    },
    Decimal {
        precision: u8,
        scale: u8,
    },
    Float,
    Double,
    Bit {
        width: u8,
    },
    Date,
    DateTime {
        fsp: u8,
    },
    Timestamp {
        fsp: u8,
    },
    Time {
        fsp: u8,
    },
    Year,
    /// CHAR/VARCHAR/TEXT family. `charset` is the MySQL character set name (utf8mb4, latin1, …).
    Text {
        charset: String,
        max_chars: Option<u64>,
        fixed: bool,
    },
    /// BINARY/VARBINARY/BLOB family. `fixed` BINARY(n) values are padded to `max_len` with zeros.
    Binary {
        max_len: Option<u64>,
        fixed: bool,
    },
    Enum {
        members: Vec<String>,
    },
    Set {
        members: Vec<String>,
    },
    /// MySQL's JSON type, or MariaDB's LONGTEXT with a `json_valid` check.
    Json,
    Geometry,
}

/// One source column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceColumn {
    pub name: crate::ColumnName,
    pub ty: SourceType,
    pub nullable: bool,
    /// The full `COLUMN_TYPE` text (e.g. `bigint(20) unsigned`), for messages.
    pub column_type: String,
}

/// One source table: its columns in table order and its key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SourceSchema {
    pub table: TableId,
    pub columns: Vec<SourceColumn>,
    /// Indexes into `columns` of the primary key (or the chosen unique NOT NULL key), in key order.
    pub key: Vec<usize>,
    /// Name of the key's index (`PRIMARY` or the unique index used instead).
    pub key_name: String,
}

impl SourceSchema {
    pub fn column(&self, name: &str) -> Option<&SourceColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    pub fn key_columns(&self) -> impl Iterator<Item = &SourceColumn> {
        self.key.iter().map(|&i| &self.columns[i])
    }
}
