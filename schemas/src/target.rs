//! The description of a target table, as the transform derives it and sinks create it.

use serde::{Deserialize, Serialize};

/// The type of a target column, independent of the target database. Each sink maps these to its
/// own storage types losslessly (e.g. SQLite keeps `UBigInt` and `Decimal` as text).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
///
/// Constraints are part of the type: an integer's width, a decimal's precision and scale, a
/// text's length. A value outside them is rejected by the transform, never coerced.
pub enum TargetType {
    /// A signed integer of `bits` width (8, 16, 24, 32 or 64): its range is the constraint.
    Int {
        bits: u8,
    },
    /// An unsigned integer of `bits` width; `UInt { bits: 64 }` (BIGINT UNSIGNED) exceeds i64.
    UInt {
        bits: u8,
    },
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
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
    Text {
        max_chars: Option<u64>,
    },
    Bytes {
        max_len: Option<u64>,
    },
    Enum {
        members: Vec<String>,
    },
    Set {
        members: Vec<String>,
    },
    Bit {
        width: u8,
    },
    Json,
    Geometry,
}

/// One target column.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetColumn {
    pub name: crate::ColumnName,
    pub ty: TargetType,
    pub nullable: bool,
}

/// One target table: its columns and its key (column names, in key order).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TargetSchema {
    pub table: String,
    pub columns: Vec<TargetColumn>,
    pub key: Vec<crate::ColumnName>,
}

impl TargetSchema {
    pub fn column(&self, name: &str) -> Option<&TargetColumn> {
        self.columns.iter().find(|c| c.name == name)
    }
}
