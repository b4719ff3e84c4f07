//! The two ways a transform can fail, split by what the caller must do (STYLE.md "Errors"):
//!
//! - [`ConfigError`]: the mapping is wrong, or does not fit the source table (an unknown column,
//!   an impossible type conversion, a key that cannot be derived). Fatal for that table: stop and
//!   tell the operator which setting to fix.
//! - [`Rejection`]: one change carries a value the target cannot hold. Definite, caused by the
//!   data: route it to the dead-letter output with its full context and keep going.

use std::fmt;

use serde::{Deserialize, Serialize};
use tidemark_schemas::Lineage;

/// A mapping that cannot be used, naming the mapping, the setting and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The mapping's `source` (`database.table`), or its position when the source is unusable.
    pub mapping: String,
    /// The setting at fault, as a path inside the mapping (`columns.emial`, `computed.x.expr`).
    pub setting: String,
    /// What is wrong, in the user's terms.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(
        mapping: impl Into<String>,
        setting: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            mapping: mapping.into(),
            setting: setting.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.setting.is_empty() {
            write!(f, "mapping for {}: {}", self.mapping, self.message)
        } else {
            write!(
                f,
                "mapping for {}: {}: {}",
                self.mapping, self.setting, self.message
            )
        }
    }
}

/// The dead-letter class of every [`Rejection`] (DESIGN.md §5, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionClass {
    SchemaRejection,
}

impl RejectionClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionClass::SchemaRejection => "schema_rejection",
        }
    }
}

/// Which constraint a rejected value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionKind {
    /// NULL bound for a NOT NULL column.
    NullIntoNotNull,
    /// Text longer than `text(N)` characters, or bytes longer than `bytes(N)`.
    TooLong,
    /// A number outside the integer width, the decimal precision, the bit width or YEAR's range.
    OutOfRange,
    /// A zero or otherwise impossible date bound for a date, datetime or timestamp column.
    InvalidDate,
    /// A conversion that would lose information: a fraction, fractional seconds, float precision.
    Inexact,
    /// A value that does not convert at all: unparsable text, invalid UTF-8, not an enum member.
    BadCast,
    /// The change does not match the table description the plan was made from (a column missing
    /// from the row image, another table): the source schema changed without being announced.
    SchemaMismatch,
    /// The target database refused a value the mapping admits (e.g. an empty text as a CQL
    /// partition key).
    TargetRefused,
}

impl RejectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectionKind::NullIntoNotNull => "null_into_not_null",
            RejectionKind::TooLong => "too_long",
            RejectionKind::OutOfRange => "out_of_range",
            RejectionKind::InvalidDate => "invalid_date",
            RejectionKind::Inexact => "inexact",
            RejectionKind::BadCast => "bad_cast",
            RejectionKind::SchemaMismatch => "schema_mismatch",
            RejectionKind::TargetRefused => "target_refused",
        }
    }
}

impl fmt::Display for RejectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest value text a rejection carries, in characters; longer values are cut and say so.
pub const MAX_REJECTED_VALUE_CHARS: usize = 1000;

/// A change that could not become a target record, with everything an operator needs to find
/// and fix it. Serializes to a flat JSON object for the dead-letter table or topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct Rejection {
    /// Always `schema_rejection`.
    pub class: RejectionClass,
    pub kind: RejectionKind,
    /// `database.table` of the source.
    pub source_table: String,
    pub target_table: String,
    /// Binlog `file:offset` of the change (the observed end of log for backfill rows).
    pub position: String,
    /// Canonical text of the source key, e.g. `{"customer_id":1}`.
    pub key: String,
    /// The target column the value was bound for.
    pub column: String,
    /// The source column the value came from; `None` for a computed column.
    pub source_column: Option<String>,
    /// The target column's type and nullability, e.g. `text(45) not null`.
    pub target_type: String,
    /// Canonical text of the offending value (`None` for NULL), cut at
    /// [`MAX_REJECTED_VALUE_CHARS`] characters.
    pub value: Option<String>,
    pub reason: String,
    /// Lineage the record would have carried: server, version, operation, GTID, commit time,
    /// transform name and version, source digest, backfill chunk.
    pub lineage: Lineage,
}

impl Rejection {
    /// A record the target database refused to store, for the dead-letter output: `column`
    /// and the target's `reason` (the rejection's reason reads "the target refused the value:
    /// …"); the column's type is read from `schema`, the target table's schema, when known.
    pub fn target_refused(
        record: &tidemark_schemas::TargetRecord,
        schema: Option<&tidemark_schemas::TargetSchema>,
        column: &str,
        reason: String,
    ) -> Rejection {
        let target_type = schema
            .and_then(|t| t.column(column))
            .map(|c| {
                let ty = crate::render_type(&c.ty);
                if c.nullable {
                    ty
                } else {
                    format!("{ty} not null")
                }
            })
            .unwrap_or_default();
        let value = record
            .columns
            .as_ref()
            .and_then(|c| c.get(column))
            .or_else(|| record.key.get(column))
            .filter(|v| !v.is_null())
            .map(|v| clip(v.to_string()));
        Rejection {
            class: RejectionClass::SchemaRejection,
            kind: RejectionKind::TargetRefused,
            source_table: record.lineage.source_table.to_string(),
            target_table: record.table.to_string(),
            position: record.lineage.position.to_string(),
            key: record.lineage.source_key.clone(),
            column: column.to_string(),
            source_column: None,
            target_type,
            value,
            reason: format!("the target refused the value: {reason}"),
            lineage: record.lineage.clone(),
        }
    }

    /// The JSON form for the dead-letter output (fields in declaration order, deterministic).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a rejection always serializes")
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}): {} key {} at {}: column {}",
            self.class.as_str(),
            self.kind,
            self.source_table,
            self.key,
            self.position,
            self.column
        )?;
        if let Some(src) = &self.source_column {
            if src != &self.column {
                write!(f, " (from {src})")?;
            }
        }
        write!(f, " {}: ", self.target_type)?;
        match &self.value {
            Some(v) => write!(f, "value {v:?}: ")?,
            None => f.write_str("value NULL: ")?,
        }
        f.write_str(&self.reason)
    }
}

/// Cut a value's text for a rejection message.
pub(crate) fn clip(text: String) -> String {
    match text.char_indices().nth(MAX_REJECTED_VALUE_CHARS) {
        None => text,
        Some((cut, _)) => {
            let rest = text[cut..].chars().count();
            format!("{}…({rest} more characters)", &text[..cut])
        }
    }
}
