//! Transform: the pure, deterministic step from a source
//! [`ChangeEvent`](tidemark_schemas::ChangeEvent) to a [`TargetRecord`] with lineage, or to a
//! classified [`Rejection`] (DESIGN.md §5).
//!
//! # What it owns
//!
//! - The `[[mapping]]` configuration ([`MappingConfig`]): per source table a target name, column
//!   renames and drops, target types, computed columns from a fixed set of pure functions, the
//!   target key and a row filter. Tables without a mapping use the identity mapping (same names,
//!   same columns, lossless types from [`target_type_for`]).
//! - Compiling a mapping against the source table's description ([`Transformer::plan`] →
//!   [`TablePlan`]), and applying it to each change ([`TablePlan::apply`]).
//! - `transform_version` and `source_digest`, stamped in every record's lineage.
//! - [`explain`]: the human-readable account behind `tidemark transform explain`.
//!
//! # Algorithm
//!
//! 1. [`Transformer::new`] reads the mappings. Types and expressions were already parsed while
//!    the configuration was deserialized ([`TypeSpec`], [`ExprSpec`], [`FilterSpec`]); here the
//!    checks that need no source table run, and each mapping's canonical form is built: a
//!    normalized struct (sorted maps and sets, defaults filled in, empty settings left out, types
//!    and expressions as their canonical text) serialized to JSON. `transform_version` is the
//!    first 64 bits of SHA-256 over [`CODE_VERSION`] and that JSON, per source table, so key
//!    order, whitespace and comments in the TOML do not change it, any semantic change does, and
//!    table A's mapping never affects table B's version. When an expression uses Unicode tables
//!    (`lower`, `upper`, `trim`, `substring`) their versions join the canonical form.
//! 2. [`Transformer::plan`] compiles a mapping against the table's
//!    [`SourceSchema`](tidemark_schemas::SourceSchema) when the table is first seen (and after
//!    each DDL): it resolves every column (an unknown one is a
//!    [`ConfigError`] naming mapping, setting and column), derives the strict target schema
//!    (every column typed with its constraints, and nullability), type-checks computed columns
//!    and the filter, and checks that every declared conversion exists. The target key must be
//!    derivable from the source key alone and contain all of it (converted injectively), because
//!    a delete carries only the source key and two source rows must never share a target key.
//! 3. [`TablePlan::apply`] builds the lineage, evaluates the filter (a row for which it is not
//!    true becomes a tombstone, so a row updated out of the filter leaves the target), then reads
//!    or computes each target column and converts it into the column's type exactly. A delete
//!    becomes a tombstone keyed by the target key computed from the source key.
//!
//! # Determinism
//!
//! No clock (the record's time is the source commit time), no randomness, no hash-map
//! iteration (only `BTreeMap`s and vectors), no locale (binary text comparison, Unicode default
//! case mapping, dates formatted in UTC with fixed English names), and stable number text
//! (exact decimals as digit strings, floats as their shortest round-trip text). The same change
//! yields byte-identical [`canonical_bytes`] in every run and on every machine built from the
//! same source.
//!
//! # Failure modes
//!
//! - [`ConfigError`] (fatal for the table): a mapping that is malformed or does not fit the
//!   source table. Stop and show the message; it names the setting to fix.
//! - [`Rejection`] (definite, per change): a value the target cannot hold — too long, out of
//!   range, an invalid date (unless `zero_dates` admits it), NULL into NOT NULL, a declared
//!   conversion that is not exact — is never coerced or dropped. The change yields no record but
//!   a `schema_rejection` with the source position, table, key, column, value, reason and the
//!   lineage; the caller writes it to the dead-letter output, counts it and goes on. A row image
//!   that does not match the table description is rejected as `schema_mismatch`.
//!
//! # Zero dates and the identity mapping
//!
//! MySQL can hold dates that are not calendar days (`0000-00-00`, `2021-00-10`, `2021-02-30`).
//! An explicit mapping rejects them by default (`zero_dates = "reject"`); `"keep"` stores them
//! as they are and `"null"` stores NULL. The identity mapping keeps them by default: it is a
//! lossless copy, and the embedded SQLite target stores dates as canonical text, so the zero date
//! round-trips and reconciles. A target with a native date type (ScyllaDB's `date`) cannot hold
//! one; run the identity with [`Transformer::with_identity_zero_dates`] `Reject` or `Null` there.

mod config;
mod convert;
mod decimal;
mod error;
mod eval;
mod explain;
mod invariant;
mod plan;
mod syntax;

use serde::Serialize;
use sha2::{Digest, Sha256};
use tidemark_schemas::{Row, SourceType, TargetRecord, TargetType, Value};

pub use config::{
    ColumnConfig, ComputedConfig, ExprSpec, FilterSpec, MappingConfig, TypeSpec, ZeroDates,
};
pub use error::{ConfigError, Rejection, RejectionClass, RejectionKind, MAX_REJECTED_VALUE_CHARS};
pub use explain::{explain, sample_change};
pub use invariant::{shown, Answer, Difference, Invariant, InvariantConfig, Tally, Verdict};
pub use plan::{
    canonical_form, unicode_versions, Outcome, ShapePlans, TablePlan, Transformer, IDENTITY_NAME,
    RESERVED_PREFIX,
};
pub use syntax::{parse_type, render_type};

/// Version of the transform code; part of every `transform_version`. Bump it when the output of
/// an unchanged mapping changes.
pub const CODE_VERSION: &str = "tidemark-transform/2";

/// The lossless target type of a source type.
pub fn target_type_for(ty: &SourceType) -> TargetType {
    match ty {
        SourceType::Integer {
            bits,
            unsigned: true,
        } => TargetType::UInt { bits: *bits },
        SourceType::Integer {
            bits,
            unsigned: false,
        } => TargetType::Int { bits: *bits },
        SourceType::Decimal { precision, scale } => TargetType::Decimal {
            precision: *precision,
            scale: *scale,
        },
        SourceType::Float => TargetType::Float,
        SourceType::Double => TargetType::Double,
        SourceType::Bit { width } => TargetType::Bit { width: *width },
        SourceType::Date => TargetType::Date,
        SourceType::DateTime { fsp } => TargetType::DateTime { fsp: *fsp },
        SourceType::Timestamp { fsp } => TargetType::Timestamp { fsp: *fsp },
        SourceType::Time { fsp } => TargetType::Time { fsp: *fsp },
        SourceType::Year => TargetType::Year,
        SourceType::Text { max_chars, .. } => TargetType::Text {
            max_chars: *max_chars,
        },
        SourceType::Binary { max_len, .. } => TargetType::Bytes { max_len: *max_len },
        SourceType::Enum { members } => TargetType::Enum {
            members: members.clone(),
        },
        SourceType::Set { members } => TargetType::Set {
            members: members.clone(),
        },
        SourceType::Json => TargetType::Json,
        SourceType::Geometry => TargetType::Geometry,
    }
}

/// `transform_version` of a mapping given in canonical form: the first 64 bits of
/// SHA-256(`CODE_VERSION` ‖ 0x00 ‖ canonical form), in hex.
pub fn transform_version(canonical_mapping: &str) -> String {
    let mut h = Sha256::new();
    h.update(CODE_VERSION.as_bytes());
    h.update([0u8]);
    h.update(canonical_mapping.as_bytes());
    hex::encode(&h.finalize()[..8])
}

/// Hash of a source row image: `y` and the XXH3-128, in 32 hex digits, of the row's
/// [`Row::digest_input`] (equal exactly when the canonical texts are equal). The digest only has
/// to tell two images of a row apart (it is not a security boundary). A target holds digests of
/// this scheme only: its format says so (`tidemark_sink::sqlite::FORMAT`).
pub fn source_digest(row: &Row) -> String {
    thread_local! {
        /// The digest input of the last row, kept for its capacity: no allocation per row.
        static INPUT: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    INPUT.with_borrow_mut(|input| {
        input.clear();
        row.digest_input(input);
        hex_digest(b'y', twox_hash::XxHash3_128::oneshot(input))
    })
}

/// `prefix` and `digest` in 32 hex digits, written into a fixed buffer (`hex::encode` goes
/// through a char iterator, a tenth of a digest's time).
fn hex_digest(prefix: u8, digest: u128) -> String {
    let mut text = [0u8; 33];
    text[0] = prefix;
    hex::encode_to_slice(digest.to_be_bytes(), &mut text[1..]).expect("32 hex digits fit");
    String::from_utf8(text.to_vec()).expect("hex digits are ASCII")
}

/// A value's canonical text, or `None` for NULL (used by comparisons and messages).
pub fn value_text(v: &Value) -> Option<String> {
    (!v.is_null()).then(|| v.to_string())
}

/// The canonical bytes of a target record: JSON with fields in declaration order, rows in
/// column order, numbers in shortest round-trip form. Equal records give equal bytes.
pub fn canonical_bytes(record: &TargetRecord) -> Vec<u8> {
    to_canonical_json(record)
}

/// The canonical bytes of any transform output (a record or a rejection).
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    to_canonical_json(value)
}

fn to_canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("transform output always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidemark_schemas::{
        BinlogPosition, ChangeEvent, Operation, SourceColumn, SourceSchema, TableId,
    };

    fn schema() -> SourceSchema {
        SourceSchema {
            table: TableId::new("shop", "t"),
            columns: vec![
                SourceColumn {
                    name: "id".into(),
                    ty: SourceType::Integer {
                        bits: 32,
                        unsigned: false,
                    },
                    nullable: false,
                    column_type: "int(11)".into(),
                },
                SourceColumn {
                    name: "name".into(),
                    ty: SourceType::Text {
                        charset: "utf8mb4".into(),
                        max_chars: Some(10),
                        fixed: false,
                    },
                    nullable: true,
                    column_type: "varchar(10)".into(),
                },
            ],
            key: vec![0],
            key_name: "PRIMARY".into(),
        }
    }

    fn change(after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            source_server: "s".into(),
            table: TableId::new("shop", "t"),
            op: if after.is_some() {
                Operation::Insert
            } else {
                Operation::Delete
            },
            key: Row(vec![("id".into(), Value::Int(1))]),
            after,
            version: 42,
            position: BinlogPosition::new("mysql-bin.000001", 400),
            gtid: Some("0-1-7".into()),
            commit_time_us: 1_700_000_000_000_000,
            chunk: None,
        }
    }

    /// `y` digest of `{"id":1,"name":"a"}`.
    const CURRENT_DIGEST: &str = "y2bcbb437e6884fa7e3122651e387052f";

    /// Digests are stored in targets: their text must never change by accident. The expected
    /// values were computed independently (Python's `xxhash.xxh3_128` over the bytes spelled
    /// out below, and over the canonical text; `hashlib.sha256`).
    #[test]
    fn source_digests_of_every_scheme_are_stable_and_recognised() {
        let row = Row(vec![
            ("id".into(), Value::Int(1)),
            ("name".into(), Value::Text("a".into())),
        ]);
        assert_eq!(row.canonical_text(), r#"{"id":1,"name":"a"}"#);
        let mut input = Vec::new();
        row.digest_input(&mut input);
        let spelled: Vec<u8> = [
            &b"c"[..],
            &2u64.to_le_bytes(),
            b"id+",
            &1u64.to_le_bytes(),
            b"c",
            &4u64.to_le_bytes(),
            b"names",
            &1u64.to_le_bytes(),
            b"a",
        ]
        .concat();
        assert_eq!(input, spelled);
        assert_eq!(source_digest(&row), CURRENT_DIGEST);
    }

    /// The digest input tells apart exactly what the canonical text tells apart.
    #[test]
    fn digest_input_is_equal_exactly_when_the_canonical_text_is() {
        let rows = [
            vec![("a", Value::Int(5))],
            vec![("a", Value::UInt(5))],
            vec![("a", Value::Text("5".into()))],
            vec![("a", Value::Decimal("5".into()))],
            vec![("a", Value::Int(-1))],
            vec![("a", Value::UInt(u64::MAX))],
            vec![("a", Value::Null)],
            vec![("a", Value::Text("null".into()))],
            vec![("a", Value::Text("".into()))],
            vec![("a", Value::Text("b".into())), ("c", Value::Null)],
            vec![("a", Value::Text("b\",\"c".into()))],
            vec![("ab", Value::Text("c".into()))],
            vec![("a", Value::Text("bc".into()))],
            vec![("a", Value::Bit { width: 3, value: 5 })],
            vec![("a", Value::Double(0.5))],
            vec![("a", Value::Text("0.5".into()))],
            vec![(
                "a",
                Value::Date {
                    year: 2020,
                    month: 1,
                    day: 2,
                },
            )],
            vec![("a", Value::Text("2020-01-02".into()))],
        ];
        let rows: Vec<Row> = rows
            .into_iter()
            .map(|r| r.into_iter().map(|(n, v)| (n.into(), v)).collect())
            .collect();
        for a in &rows {
            for b in &rows {
                let (mut ia, mut ib) = (Vec::new(), Vec::new());
                a.digest_input(&mut ia);
                b.digest_input(&mut ib);
                assert_eq!(
                    ia == ib,
                    a.canonical_text() == b.canonical_text(),
                    "{} vs {}",
                    a.canonical_text(),
                    b.canonical_text()
                );
            }
        }
    }

    #[test]
    fn identity_keeps_values_and_stamps_lineage() {
        let t = Transformer::identity();
        let plan = t.plan(&schema()).unwrap();
        let row = Row(vec![
            ("id".into(), Value::Int(1)),
            ("name".into(), Value::Text("a".into())),
        ]);
        let rec = plan.apply(&change(Some(row.clone()))).unwrap();
        assert_eq!(rec.columns.as_ref(), Some(&row));
        assert_eq!(rec.lineage.version, 42);
        assert_eq!(rec.lineage.source_key, r#"{"id":1}"#);
        assert_eq!(rec.lineage.source_digest, source_digest(&row));
        assert_eq!(rec.lineage.transform_name, "identity");
        assert_eq!(
            rec.lineage.transform_version,
            t.transform_version(&TableId::new("shop", "t"))
        );
        let tomb = plan.apply(&change(None)).unwrap();
        assert!(tomb.is_tombstone());
        assert_eq!(tomb.key, Row(vec![("id".into(), Value::Int(1))]));
        assert_eq!(tomb.lineage.source_digest, "");
    }

    #[test]
    fn plans_cross_threads() {
        fn send_sync<T: Send + Sync + 'static>() {}
        send_sync::<Transformer>();
        send_sync::<TablePlan>();
        send_sync::<Rejection>();
        send_sync::<ConfigError>();
    }

    #[test]
    fn transform_version_is_stable_and_sensitive() {
        assert_eq!(transform_version("a"), transform_version("a"));
        assert_ne!(transform_version("a"), transform_version("b"));
        let keep = Transformer::identity();
        let reject = Transformer::identity().with_identity_zero_dates(ZeroDates::Reject);
        let t = TableId::new("shop", "t");
        assert_eq!(keep.transform_version(&t).len(), 16);
        assert_ne!(keep.transform_version(&t), reject.transform_version(&t));
    }
}
