//! `[[mapping]]`: how one source table becomes one target table.
//!
//! ```toml
//! [[mapping]]
//! source = "sakila.customer"          # database.table; one mapping per source table
//! target = "customers"                # default: the source table's name
//! drop = ["address_id"]               # leave these source columns out of the target
//! key = ["customer_id"]               # target key, in key order; default: the source key
//! filter = "active = 1"               # keep rows for which this is true (others: tombstones)
//! zero_dates = "reject"               # or "keep" / "null"; default "reject"
//!
//! [mapping.columns.first_name]        # per source column
//! rename = "given_name"
//! type = "text(45)"                   # target type; conversion must be exact or the row is rejected
//! nullable = false                    # default: like the source column
//!
//! [mapping.computed.full_name]        # a computed target column
//! expr = "concat(first_name, ' ', last_name)"
//! type = "text(91)"                   # default: inferred from the expression
//! ```
//!
//! Type strings and expressions are parsed while the configuration is read, so a typo there is
//! reported with the key path (`mapping[0].computed.full_name.expr: …`). Everything that needs the
//! source table (column names, type compatibility, key rules) is checked by
//! [`Transformer::plan`](crate::Transformer::plan) when the table is first seen.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tidemark_schemas::TargetType;

use crate::syntax::{self, Expr, Pred};

/// One `[[mapping]]` entry: how one source table becomes one target table.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    /// The source table, `database.table`. At most one mapping per source table; tables without
    /// a mapping are copied by the identity mapping.
    pub source: String,
    /// The target table's name. Default: the source table's name (without the database).
    #[serde(default)]
    pub target: Option<String>,
    /// Source columns to leave out of the target. They stay readable by `computed` and `filter`.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Settings per source column, by source column name: `rename`, `type`, `nullable`.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnConfig>,
    /// Computed target columns, by target column name. They follow the source columns in the
    /// target, in name order.
    #[serde(default)]
    pub computed: BTreeMap<String, ComputedConfig>,
    /// The target key: target column names, in key order. Default: the source key's columns
    /// (under their target names). Every key column must be derived from source key columns only,
    /// and the key must include every source key column, so a delete (which carries only the
    /// source key) finds its target row and two source rows never share a target key.
    #[serde(default)]
    pub key: Option<Vec<String>>,
    /// A predicate over source columns, e.g. `active = 1 and store_id in (1, 2)`. A row for which
    /// it is not true (false or unknown) becomes a tombstone, so a row updated out of the filter
    /// leaves the target. Default: every row.
    #[serde(default)]
    pub filter: Option<FilterSpec>,
    /// What an invalid date (`0000-00-00`, a zero month or day, `2021-02-30`) bound for a date,
    /// datetime or timestamp column becomes: `"reject"` (a `schema_rejection`, the default),
    /// `"keep"` (stored as it is, for targets that store dates as text) or `"null"` (NULL; the
    /// column then defaults to nullable).
    #[serde(default)]
    pub zero_dates: ZeroDates,
}

/// `[mapping.columns.<source column>]`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The column's name in the target. Default: the source name.
    #[serde(default)]
    pub rename: Option<String>,
    /// The target type, in the type syntax (`int32`, `decimal(10,2)`, `text(50)`, …). Values are
    /// converted exactly or the row is rejected. Default: the lossless type of the source column.
    #[serde(default, rename = "type")]
    pub ty: Option<TypeSpec>,
    /// Whether the target column admits NULL. Default: like the source column (and nullable when
    /// `zero_dates = "null"` may turn a date into NULL).
    #[serde(default)]
    pub nullable: Option<bool>,
}

/// `[mapping.computed.<target column>]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputedConfig {
    /// The expression over source columns, e.g. `concat(first_name, ' ', last_name)`.
    pub expr: ExprSpec,
    /// The target type. Default: inferred from the expression.
    #[serde(default, rename = "type")]
    pub ty: Option<TypeSpec>,
    /// Whether the column admits NULL. Default: inferred (nullable when any input that can make
    /// the result NULL is nullable).
    #[serde(default)]
    pub nullable: Option<bool>,
}

/// What an invalid date bound for a date, datetime or timestamp column becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZeroDates {
    /// Reject the change with `schema_rejection` / `invalid_date`.
    #[default]
    Reject,
    /// Store the value as the source holds it (for targets that keep dates as canonical text,
    /// such as the embedded SQLite target).
    Keep,
    /// Store NULL.
    Null,
}

impl ZeroDates {
    pub fn as_str(self) -> &'static str {
        match self {
            ZeroDates::Reject => "reject",
            ZeroDates::Keep => "keep",
            ZeroDates::Null => "null",
        }
    }
}

/// A target type written in the type syntax (see [`parse_type`](crate::parse_type)).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct TypeSpec(pub TargetType);

impl FromStr for TypeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        syntax::parse_type(s).map(TypeSpec)
    }
}

impl TryFrom<String> for TypeSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for TypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&syntax::render_type(&self.0))
    }
}

/// A value expression (computed column). `Display` gives its canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ExprSpec(pub(crate) Expr);

impl FromStr for ExprSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        syntax::parse_expr(s).map(ExprSpec)
    }
}

impl TryFrom<String> for ExprSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for ExprSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A row filter predicate. `Display` gives its canonical text.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct FilterSpec(pub(crate) Pred);

impl FromStr for FilterSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        syntax::parse_pred(s).map(FilterSpec)
    }
}

impl TryFrom<String> for FilterSpec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for FilterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl MappingConfig {
    /// A mapping for `source` with every setting at its default (the identity shape, but with
    /// explicit-mapping defaults such as `zero_dates = "reject"`).
    pub fn new(source: impl Into<String>) -> Self {
        MappingConfig {
            source: source.into(),
            target: None,
            drop: Vec::new(),
            columns: BTreeMap::new(),
            computed: BTreeMap::new(),
            key: None,
            filter: None,
            zero_dates: ZeroDates::default(),
        }
    }
}
