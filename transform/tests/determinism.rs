//! Determinism: the same change gives byte-identical output, within a process and across
//! processes (run with a different locale and time zone), for a table that uses every type,
//! every function, a filter and zero-date handling, and for the Sakila mappings.

mod common;

use std::process::Command;

use common::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::FileFailurePersistence;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use tidemark_schemas::{
    ChangeEvent, ColumnName, DateTime, Operation, Row, SourceSchema, SourceType, TargetRecord,
    Value,
};
use tidemark_transform::{canonical_bytes, canonical_json, Rejection, TablePlan, Transformer};

/// A table with one column of (nearly) every source type.
fn kitchen() -> SourceSchema {
    let members = |m: &[&str]| m.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    schema(
        "lab",
        "kitchen",
        vec![
            col("id", uint(64), false, "bigint(20) unsigned"),
            col("small", int(16), true, "smallint(6)"),
            col(
                "amount",
                SourceType::Decimal {
                    precision: 10,
                    scale: 3,
                },
                true,
                "decimal(10,3)",
            ),
            col("ratio", SourceType::Double, true, "double"),
            col("f", SourceType::Float, true, "float"),
            col("name", varchar(20), true, "varchar(20)"),
            col("note", varchar(1000), true, "varchar(1000)"),
            col("born", SourceType::Date, true, "date"),
            col("seen", SourceType::DateTime { fsp: 6 }, true, "datetime(6)"),
            col("at", SourceType::Timestamp { fsp: 3 }, true, "timestamp(3)"),
            col("dur", SourceType::Time { fsp: 2 }, true, "time(2)"),
            col("yr", SourceType::Year, true, "year(4)"),
            col(
                "kind",
                SourceType::Enum {
                    members: members(&["a", "b", "ç"]),
                },
                true,
                "enum('a','b','ç')",
            ),
            col(
                "tags",
                SourceType::Set {
                    members: members(&["x", "y", "z"]),
                },
                true,
                "set('x','y','z')",
            ),
            col("flags", SourceType::Bit { width: 5 }, true, "bit(5)"),
            col(
                "blob",
                SourceType::Binary {
                    max_len: Some(16),
                    fixed: false,
                },
                true,
                "varbinary(16)",
            ),
            col("doc", SourceType::Json, true, "json"),
        ],
        &["id"],
    )
}

const KITCHEN_MAPPING: &str = r#"
[[mapping]]
source = "lab.kitchen"
target = "kitchen"
zero_dates = "null"
filter = "small is null or small > -30000 or name in ('a', 'b')"
columns.small = { type = "int8" }
columns.amount = { type = "decimal(12,2)" }
columns.ratio = { type = "text" }
columns.f = { type = "double" }
columns.name = { rename = "label", type = "text(12)" }
columns.yr = { type = "uint16" }
columns.kind = { type = "text(1)" }
columns.flags = { type = "uint8" }
[mapping.computed]
lower_name = { expr = "lower(name)" }
upper_name = { expr = "upper(name)" }
trimmed = { expr = "trim(note)" }
sub = { expr = "substring(name, 2, 3)" }
joined = { expr = "concat(coalesce(name, '∅'), '|', amount, '|', yr, '|', kind, '|', tags, '|', dur, '|', ratio)" }
day = { expr = "date_format(born, '[year]/[month]/[day] [weekday] [month repr:long]')" }
moment = { expr = "date_format(at, '[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z')" }
digest = { expr = "hash(blob)" }
small_text = { expr = "cast(small as text)" }
seen_date = { expr = "cast(seen as date)" }
"#;

fn nullable<S: Strategy<Value = Value> + 'static>(s: S) -> BoxedStrategy<Value> {
    prop_oneof![1 => Just(Value::Null), 4 => s].boxed()
}

fn text_strategy(max: usize) -> BoxedStrategy<String> {
    prop_oneof![
        // ASCII letters and spaces, often short.
        prop::string::string_regex(&format!("[ a-zA-Z0-9]{{0,{max}}}")).expect("regex"),
        // Any Unicode scalar values, including combining marks and multi-byte characters.
        prop::collection::vec(any::<char>(), 0..=max).prop_map(|c| c.into_iter().collect()),
        // Combining sequences and case-mapping oddities.
        prop::collection::vec(
            prop::sample::select(vec![
                "e\u{301}",
                "ß",
                "Σ",
                "İ",
                "ﬁ",
                " ",
                "\t",
                "\u{3000}",
                "👩‍👩‍👧",
                "Ω",
                "a"
            ]),
            0..=max.min(8)
        )
        .prop_map(|p| p.concat()),
    ]
    .boxed()
}

fn date_parts() -> impl Strategy<Value = (u16, u8, u8)> {
    prop_oneof![
        1 => Just((0u16, 0u8, 0u8)),
        8 => (1000u16..=9999, 1u8..=12, 1u8..=28),
        2 => (0u16..=9999, 0u8..=12, 0u8..=31),
    ]
}

fn value_for(ty: &SourceType) -> BoxedStrategy<Value> {
    match ty {
        SourceType::Integer { bits, unsigned } => {
            // Mostly small values (so filters and narrow target types pass), sometimes any.
            if *unsigned {
                let max = if *bits == 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                };
                prop_oneof![2 => 0u64..=3, 2 => 0..=max.min(300), 1 => 0..=max]
                    .prop_map(Value::UInt)
                    .boxed()
            } else {
                let half = 1i64 << (bits - 1);
                prop_oneof![2 => -2i64..=2, 2 => -100i64..=100, 1 => -half..half]
                    .prop_map(Value::Int)
                    .boxed()
            }
        }
        SourceType::Decimal { precision, scale } => {
            let int_digits = usize::from(precision - scale);
            let scale = usize::from(*scale);
            (
                any::<bool>(),
                prop::string::string_regex(&format!("[0-9]{{1,{int_digits}}}")).expect("regex"),
                prop::string::string_regex(&format!("[0-9]{{{scale}}}")).expect("regex"),
            )
                .prop_map(move |(neg, int, frac)| {
                    let int = int.trim_start_matches('0');
                    let int = if int.is_empty() { "0" } else { int };
                    let zero = int == "0" && frac.bytes().all(|b| b == b'0');
                    let sign = if neg && !zero { "-" } else { "" };
                    Value::Decimal(if scale == 0 {
                        format!("{sign}{int}")
                    } else {
                        format!("{sign}{int}.{frac}")
                    })
                })
                .boxed()
        }
        SourceType::Double => prop_oneof![
            any::<f64>().prop_filter("finite", |f| f.is_finite()),
            (-1000i32..1000).prop_map(|i| f64::from(i) / 8.0),
        ]
        .prop_map(Value::Double)
        .boxed(),
        SourceType::Float => any::<f32>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::Float)
            .boxed(),
        SourceType::Text { max_chars, .. } => {
            let max = max_chars.unwrap_or(100).min(40) as usize;
            text_strategy(max).prop_map(Value::Text).boxed()
        }
        SourceType::Json => prop::sample::select(vec!["{}", "[1,2]", "{\"a\":\"ü\"}", "null"])
            .prop_map(|s| Value::Json(s.into()))
            .boxed(),
        SourceType::Date => date_parts()
            .prop_map(|(year, month, day)| Value::Date { year, month, day })
            .boxed(),
        SourceType::DateTime { fsp } | SourceType::Timestamp { fsp } => {
            let fsp = *fsp;
            let timestamp = matches!(ty, SourceType::Timestamp { .. });
            let unit = 10u32.pow(u32::from(6 - fsp));
            (
                date_parts(),
                0u8..24,
                0u8..60,
                0u8..60,
                0u32..(1_000_000 / unit),
            )
                .prop_map(move |((year, month, day), hour, minute, second, frac)| {
                    let micros = frac * unit;
                    if timestamp {
                        Value::Timestamp(DateTime {
                            year,
                            month,
                            day,
                            hour,
                            minute,
                            second,
                            micros,
                            fsp,
                        })
                    } else {
                        Value::DateTime(DateTime {
                            year,
                            month,
                            day,
                            hour,
                            minute,
                            second,
                            micros,
                            fsp,
                        })
                    }
                })
                .boxed()
        }
        SourceType::Time { fsp } => {
            let fsp = *fsp;
            let unit = 10u32.pow(u32::from(6 - fsp));
            (
                any::<bool>(),
                0u16..=838,
                0u8..60,
                0u8..60,
                0u32..(1_000_000 / unit),
            )
                .prop_map(move |(negative, hours, minute, second, frac)| Value::Time {
                    negative,
                    hours,
                    minute,
                    second,
                    micros: if hours == 838 { 0 } else { frac * unit },
                    fsp,
                })
                .boxed()
        }
        SourceType::Year => prop_oneof![Just(0u16), 1901u16..=2155]
            .prop_map(Value::Year)
            .boxed(),
        SourceType::Enum { members } => {
            let mut all = members.clone();
            all.push(String::new());
            prop::sample::select(all).prop_map(Value::Enum).boxed()
        }
        SourceType::Set { members } => {
            let members = members.clone();
            prop::collection::vec(any::<bool>(), members.len())
                .prop_map(move |present| {
                    Value::Set(
                        members
                            .iter()
                            .zip(present)
                            .filter(|(_, p)| *p)
                            .map(|(m, _)| m.clone())
                            .collect(),
                    )
                })
                .boxed()
        }
        SourceType::Bit { width } => (0..(1u64 << width))
            .prop_map({
                let width = *width;
                move |value| Value::Bit { width, value }
            })
            .boxed(),
        SourceType::Binary { max_len, .. } => {
            prop::collection::vec(any::<u8>(), 0..=max_len.unwrap_or(32) as usize)
                .prop_map(Value::Bytes)
                .boxed()
        }
        SourceType::Geometry => Just(Value::Geometry(vec![0, 0, 0, 0, 1])).boxed(),
    }
}

/// A row of `schema`: NULL only where the column admits it.
fn row_for(schema: &SourceSchema) -> BoxedStrategy<Row> {
    let cols: Vec<BoxedStrategy<(ColumnName, Value)>> = schema
        .columns
        .iter()
        .map(|c| {
            let name = c.name;
            let v = if c.nullable {
                nullable(value_for(&c.ty))
            } else {
                value_for(&c.ty)
            };
            v.prop_map(move |v| (name, v)).boxed()
        })
        .collect();
    cols.prop_map(Row).boxed()
}

fn change_for(schema: SourceSchema) -> BoxedStrategy<ChangeEvent> {
    (
        row_for(&schema),
        prop::sample::select(vec![
            Operation::Insert,
            Operation::Update,
            Operation::Delete,
            Operation::Backfill,
            Operation::Repair,
        ]),
        1i64..1_000_000,
    )
        .prop_map(move |(row, op, version)| change(&schema, op, &row, version))
        .boxed()
}

/// Tables, their mappings and a strategy for their changes.
fn cases() -> Vec<(SourceSchema, &'static str)> {
    vec![
        (kitchen(), KITCHEN_MAPPING),
        (customer(), SAKILA_MAPPINGS),
        (film(), SAKILA_MAPPINGS),
        (film_actor(), SAKILA_MAPPINGS),
        (payment(), SAKILA_MAPPINGS),
        (kitchen(), ""),
        (film(), ""),
    ]
}

fn plan(schema: &SourceSchema, mapping: &str) -> TablePlan {
    let t = if mapping.is_empty() {
        Transformer::identity()
    } else {
        transformer(mapping)
    };
    t.plan(schema)
        .unwrap_or_else(|e| panic!("{} must plan: {e}", schema.table))
}

/// The canonical bytes of a change's outcome, record or rejection alike.
fn outcome_bytes(plan: &TablePlan, change: &ChangeEvent) -> Vec<u8> {
    bytes_of(plan.apply(change))
}

/// The canonical bytes of an outcome.
fn bytes_of(outcome: Result<TargetRecord, Box<Rejection>>) -> Vec<u8> {
    match outcome {
        Ok(record) => {
            let bytes = canonical_bytes(&record);
            let mut out = b"record ".to_vec();
            out.extend(bytes);
            out
        }
        Err(rejection) => {
            let mut out = b"rejection ".to_vec();
            out.extend(canonical_json(&rejection));
            out
        }
    }
}

proptest! {
    #![proptest_config(Config {
        cases: 96,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("proptest-regressions"))),
        ..Config::default()
    })]

    /// Same input → identical bytes: applying twice, and with a transformer built afresh from
    /// the same configuration text.
    #[test]
    fn same_change_same_bytes(
        which in 0usize..7,
        seed in any::<u64>(),
    ) {
        let (schema, mapping) = cases().swap_remove(which);
        let first = plan(&schema, mapping);
        let second = plan(&schema, mapping);
        for c in changes(&schema, seed) {
            let a = outcome_bytes(&first, &c);
            let b = outcome_bytes(&first, &c.clone());
            let d = outcome_bytes(&second, &c);
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(&a, &d);
        }
    }

    /// Giving the change away (`apply_owned`, which moves unchanged values into the record)
    /// gives the same record or rejection as lending it (`apply`), also for a row image whose
    /// columns are not in table order.
    #[test]
    fn owned_and_borrowed_apply_agree(
        which in 0usize..7,
        seed in any::<u64>(),
        reversed in any::<bool>(),
    ) {
        let (schema, mapping) = cases().swap_remove(which);
        let plan = plan(&schema, mapping);
        for mut c in changes(&schema, seed) {
            if reversed {
                if let Some(row) = &mut c.after {
                    row.0.reverse();
                }
            }
            let lent = outcome_bytes(&plan, &c);
            let given = bytes_of(plan.apply_owned(c));
            prop_assert_eq!(String::from_utf8_lossy(&lent), String::from_utf8_lossy(&given));
        }
    }
}

/// Eight changes of `schema`, drawn from `seed`.
fn changes(schema: &SourceSchema, seed: u64) -> Vec<ChangeEvent> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes(seed)),
    );
    let strategy = change_for(schema.clone());
    (0..8)
        .map(|_| strategy.new_tree(&mut runner).expect("a change").current())
        .collect()
}

fn seed_bytes(seed: u64) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&(seed.wrapping_mul(i as u64 + 1)).to_le_bytes());
    }
    out
}

/// A fixed corpus (fixed seed) of changes over every case, and their outcomes' bytes.
fn fixed_corpus() -> (Vec<u8>, usize, usize) {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7u8; 32]),
    );
    let mut out = Vec::new();
    let (mut records, mut rejections) = (0, 0);
    for (schema, mapping) in cases() {
        let p = plan(&schema, mapping);
        let strategy = change_for(schema.clone());
        for _ in 0..60 {
            let c = strategy.new_tree(&mut runner).expect("a change").current();
            let bytes = outcome_bytes(&p, &c);
            if bytes.starts_with(b"record ") {
                records += 1;
            } else {
                rejections += 1;
            }
            out.extend(bytes);
            out.push(b'\n');
        }
    }
    (out, records, rejections)
}

const CHILD_OUT: &str = "TIDEMARK_DETERMINISM_CHILD_OUT";

/// Runs this test binary again as a child process (with another locale and time zone) and
/// compares its bytes for the fixed corpus with this process's bytes.
#[test]
fn determinism_across_processes() {
    let (bytes, records, rejections) = fixed_corpus();
    if let Ok(path) = std::env::var(CHILD_OUT) {
        std::fs::write(&path, &bytes).unwrap_or_else(|e| panic!("cannot write {path}: {e}"));
        return;
    }
    assert!(
        records > 100 && rejections > 10,
        "the corpus must exercise both records ({records}) and rejections ({rejections})"
    );
    let dir = tempfile::tempdir().expect("a temporary folder");
    let out = dir.path().join("child.bytes");
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new(&exe)
        .args([
            "determinism_across_processes",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_OUT, &out)
        .env("LC_ALL", "tr_TR.UTF-8")
        .env("LANG", "tr_TR.UTF-8")
        .env("TZ", "Pacific/Chatham")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    assert!(status.success(), "the child process failed: {status}");
    let child = std::fs::read(&out).unwrap_or_else(|e| {
        panic!(
            "the child wrote no output at {} ({e}); did the test filter match?",
            out.display()
        )
    });
    if child != bytes {
        let ours = String::from_utf8_lossy(&bytes);
        let theirs = String::from_utf8_lossy(&child);
        let (i, (a, b)) = ours
            .lines()
            .zip(theirs.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b)
            .unwrap_or((0, ("(length differs)", "(length differs)")));
        panic!("outputs differ between processes at line {i}:\n  this:  {a}\n  child: {b}");
    }
}
