//! Shared fixtures: Sakila table descriptions written by hand from
//! `shared/datasets/sakila/sakila-schema.sql` (as capture would read them from
//! `information_schema` on MariaDB, where `utf8` is `utf8mb3`), rows copied from
//! `sakila-data.sql`, change builders and golden-file checking.
#![allow(dead_code)]

use std::path::PathBuf;

use serde::Deserialize;
use tidemark_schemas::{
    BinlogPosition, ChangeEvent, DateTime, Operation, Row, SourceColumn, SourceSchema, SourceType,
    TableId, Value,
};
use tidemark_transform::{MappingConfig, Transformer};

pub fn col(name: &str, ty: SourceType, nullable: bool, column_type: &str) -> SourceColumn {
    SourceColumn {
        name: name.into(),
        ty,
        nullable,
        column_type: column_type.into(),
    }
}

pub fn uint(bits: u8) -> SourceType {
    SourceType::Integer {
        bits,
        unsigned: true,
    }
}

pub fn int(bits: u8) -> SourceType {
    SourceType::Integer {
        bits,
        unsigned: false,
    }
}

pub fn varchar(n: u64) -> SourceType {
    SourceType::Text {
        charset: "utf8mb3".into(),
        max_chars: Some(n),
        fixed: false,
    }
}

pub fn schema(db: &str, table: &str, columns: Vec<SourceColumn>, key: &[&str]) -> SourceSchema {
    let key = key
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|c| c.name == *k)
                .unwrap_or_else(|| panic!("key column {k} is not a column"))
        })
        .collect();
    SourceSchema {
        table: TableId::new(db, table),
        columns,
        key,
        key_name: "PRIMARY".into(),
    }
}

pub fn customer() -> SourceSchema {
    schema(
        "sakila",
        "customer",
        vec![
            col("customer_id", uint(32), false, "int(10) unsigned"),
            col("store_id", uint(32), false, "int(10) unsigned"),
            col("first_name", varchar(45), false, "varchar(45)"),
            col("last_name", varchar(45), false, "varchar(45)"),
            col("email", varchar(50), true, "varchar(50)"),
            col("address_id", uint(32), false, "int(10) unsigned"),
            col("active", int(8), false, "tinyint(1)"),
            col(
                "create_date",
                SourceType::DateTime { fsp: 0 },
                false,
                "datetime",
            ),
            col(
                "last_update",
                SourceType::Timestamp { fsp: 0 },
                true,
                "timestamp",
            ),
        ],
        &["customer_id"],
    )
}

pub fn film() -> SourceSchema {
    let members = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    schema(
        "sakila",
        "film",
        vec![
            col("film_id", uint(32), false, "int(10) unsigned"),
            col("title", varchar(255), false, "varchar(255)"),
            col("description", varchar(65535), true, "text"),
            col("release_year", SourceType::Year, true, "year(4)"),
            col("language_id", uint(32), false, "int(10) unsigned"),
            col("original_language_id", uint(32), true, "int(10) unsigned"),
            col("rental_duration", uint(8), false, "tinyint(3) unsigned"),
            col(
                "rental_rate",
                SourceType::Decimal {
                    precision: 4,
                    scale: 2,
                },
                false,
                "decimal(4,2)",
            ),
            col("length", uint(16), true, "smallint(5) unsigned"),
            col(
                "replacement_cost",
                SourceType::Decimal {
                    precision: 5,
                    scale: 2,
                },
                false,
                "decimal(5,2)",
            ),
            col(
                "rating",
                SourceType::Enum {
                    members: members(&["G", "PG", "PG-13", "R", "NC-17"]),
                },
                true,
                "enum('G','PG','PG-13','R','NC-17')",
            ),
            col(
                "special_features",
                SourceType::Set {
                    members: members(&[
                        "Trailers",
                        "Commentaries",
                        "Deleted Scenes",
                        "Behind the Scenes",
                    ]),
                },
                true,
                "set('Trailers','Commentaries','Deleted Scenes','Behind the Scenes')",
            ),
            col(
                "last_update",
                SourceType::Timestamp { fsp: 0 },
                false,
                "timestamp",
            ),
        ],
        &["film_id"],
    )
}

pub fn film_actor() -> SourceSchema {
    schema(
        "sakila",
        "film_actor",
        vec![
            col("actor_id", uint(32), false, "int(10) unsigned"),
            col("film_id", uint(32), false, "int(10) unsigned"),
            col(
                "last_update",
                SourceType::Timestamp { fsp: 0 },
                false,
                "timestamp",
            ),
        ],
        &["actor_id", "film_id"],
    )
}

pub fn payment() -> SourceSchema {
    schema(
        "sakila",
        "payment",
        vec![
            col("payment_id", uint(32), false, "int(10) unsigned"),
            col("customer_id", uint(32), false, "int(10) unsigned"),
            col("staff_id", uint(32), false, "int(10) unsigned"),
            col("rental_id", int(32), true, "int(11)"),
            col(
                "amount",
                SourceType::Decimal {
                    precision: 5,
                    scale: 2,
                },
                false,
                "decimal(5,2)",
            ),
            col(
                "payment_date",
                SourceType::DateTime { fsp: 0 },
                false,
                "datetime",
            ),
            col(
                "last_update",
                SourceType::Timestamp { fsp: 0 },
                true,
                "timestamp",
            ),
        ],
        &["payment_id"],
    )
}

pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

pub fn dec(s: &str) -> Value {
    Value::Decimal(s.into())
}

/// `YYYY-MM-DD HH:MM:SS` parts of a DATETIME(0).
pub fn datetime(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8) -> Value {
    Value::DateTime(DateTime {
        year: y,
        month: mo,
        day: d,
        hour: h,
        minute: mi,
        second: s,
        micros: 0,
        fsp: 0,
    })
}

/// `YYYY-MM-DD HH:MM:SS` parts of a TIMESTAMP(0), rendered in UTC.
pub fn timestamp(y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8) -> Value {
    Value::Timestamp(DateTime {
        year: y,
        month: mo,
        day: d,
        hour: h,
        minute: mi,
        second: s,
        micros: 0,
        fsp: 0,
    })
}

/// A row in the column order of `schema`, from values in that order.
pub fn row(schema: &SourceSchema, values: Vec<Value>) -> Row {
    assert_eq!(
        schema.columns.len(),
        values.len(),
        "a row of {} needs {} values",
        schema.table,
        schema.columns.len()
    );
    schema.columns.iter().map(|c| c.name).zip(values).collect()
}

/// Sakila `customer` row `(id, store, first, last, email, address, active, create, update)`.
#[allow(clippy::too_many_arguments)]
pub fn customer_row(
    id: u64,
    store: u64,
    first: &str,
    last: &str,
    email: Option<&str>,
    address: u64,
    active: i64,
) -> Row {
    row(
        &customer(),
        vec![
            Value::UInt(id),
            Value::UInt(store),
            text(first),
            text(last),
            email.map_or(Value::Null, text),
            Value::UInt(address),
            Value::Int(active),
            datetime(2006, 2, 14, 22, 4, 36),
            timestamp(2006, 2, 15, 4, 57, 20),
        ],
    )
}

fn key_of(schema: &SourceSchema, row: &Row) -> Row {
    schema
        .key_columns()
        .map(|c| {
            (
                c.name,
                row.get(&c.name)
                    .unwrap_or_else(|| panic!("row lacks key column {}", c.name))
                    .clone(),
            )
        })
        .collect()
}

/// A change of `op` for `row` (for a delete, `row` may hold only the key columns).
pub fn change(schema: &SourceSchema, op: Operation, row: &Row, version: i64) -> ChangeEvent {
    let offset = 4 + (version as u64 % 1_000_000);
    ChangeEvent {
        source_server: "11111111-2222-3333-4444-555555555555".into(),
        table: schema.table,
        op,
        key: key_of(schema, row),
        after: op.is_upsert().then(|| row.clone()),
        version: (1i64 << 32) + offset as i64,
        position: BinlogPosition::new("mysql-bin.000001", offset),
        gtid: Some(format!("0-1-{version}")),
        commit_time_us: 1_139_979_442_000_000 + version * 1_000_000,
        chunk: (op == Operation::Backfill).then(|| "sakila.customer:0".into()),
    }
}

/// The `[[mapping]]` entries of a configuration text.
pub fn mappings(toml_text: &str) -> Vec<MappingConfig> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        mapping: Vec<MappingConfig>,
    }
    let file: File = toml::from_str(toml_text)
        .unwrap_or_else(|e| panic!("the mapping configuration must parse: {e}\n{toml_text}"));
    file.mapping
}

pub fn transformer(toml_text: &str) -> Transformer {
    Transformer::new(&mappings(toml_text))
        .unwrap_or_else(|e| panic!("the mappings must be valid: {e}"))
}

/// The Sakila mappings used by the golden and determinism tests.
pub const SAKILA_MAPPINGS: &str = include_str!("../sakila-mapping.toml");

pub fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(name)
}

/// Compare `actual` with the golden file `name`, or rewrite it when `TIDEMARK_BLESS=1`.
pub fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var("TIDEMARK_BLESS").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().expect("golden files live in a folder"))
            .expect("create the golden folder");
        std::fs::write(&path, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "golden file {} is unreadable ({e}); run with TIDEMARK_BLESS=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let diff = similar::TextDiff::from_lines(expected.as_str(), actual)
            .unified_diff()
            .context_radius(3)
            .header(&format!("{} (golden)", path.display()), "actual")
            .to_string();
        panic!(
            "output differs from the golden file {}; if the change is intended, rerun with TIDEMARK_BLESS=1 and review the diff\n{diff}",
            path.display()
        );
    }
}
