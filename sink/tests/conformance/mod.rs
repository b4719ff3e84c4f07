//! The sink conformance suite, written once and run on every backend (DESIGN.md §3).
//!
//! `conformance_tests!` makes one test per check; each check takes a factory of sink instances
//! that all share one store (the same SQLite file, the same CQL keyspace), uses its own tables,
//! and the property checks use fresh keys for every case, so checks never see each other's data.
//!
//! What every backend must show:
//! - older versions are ignored, and replaying an equal version (the same change) changes nothing;
//! - a tombstone shadows every older insert, whichever arrives first;
//! - replaying the same changes twice changes nothing;
//! - any permutation of a set of changes, cut into any batches, yields the same state (proptest);
//! - two sink instances writing the same keys concurrently converge to the max-version state;
//! - 1 MiB values and every target type, at its edges, read back equal;
//! - checkpoints are written with the data and read back by another instance;
//! - scanning page by page visits every live key once;
//! - a schema that gains a column keeps the old rows (NULL in the new column).
//!
//! Where backends differ by design, the suite asks the sink: a deleted key reads as a tombstone
//! only where [`Sink::reads_tombstones`] says so, and the counts of [`WriteStats`] must add up to
//! the records written but "ignored" is exact only for SQLite (its own tests check that).
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tidemark_schemas::{
    Checkpoint, DateTime, Lineage, Operation, Row, TargetColumn, TargetRecord, TargetSchema,
    TargetType, Value, Version,
};
use tidemark_sink::{Sink, StoredRecord, WriteStats};

/// How much work the heavier checks do.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Cases of the permutation property.
    pub proptest_cases: u32,
    /// Changes written by each of the two concurrent writers.
    pub concurrent_changes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            proptest_cases: 128,
            concurrent_changes: 400,
        }
    }
}

/// One `#[test]` per property of the suite, so that one failure does not hide the others:
/// `conformance_tests!(setup, options)` where `setup()` returns `(make, guard)` — a factory of
/// sink instances sharing one store (a fresh one per test), and whatever must live as long as
/// the test (a temporary directory, a keyspace dropped at the end).
macro_rules! conformance_tests {
    ($setup:path, $options:expr; $($check:ident),* $(,)?) => {
        $(
            #[test]
            fn $check() {
                let (make, _guard) = $setup();
                let started = std::time::Instant::now();
                conformance::$check(&make, &$options);
                eprintln!("conformance: {} passed in {:.2?}", stringify!($check), started.elapsed());
            }
        )*
    };
    ($setup:path, $options:expr) => {
        conformance_tests!(
            $setup,
            $options;
            rejects_older_and_equal_versions,
            tombstones_shadow_older_inserts,
            replaying_changes_changes_nothing,
            any_permutation_converges,
            concurrent_writers_converge,
            large_values_round_trip,
            every_target_type_round_trips,
            checkpoints_are_stored_with_the_data,
            scan_visits_every_live_key_once,
            added_columns_keep_old_rows,
        );
    };
}

// ---------------------------------------------------------------------------------------------
// Building records

fn col(name: &str, ty: TargetType, nullable: bool) -> TargetColumn {
    TargetColumn {
        name: name.into(),
        ty,
        nullable,
    }
}

fn schema(table: &str, columns: Vec<TargetColumn>, key: &[&str]) -> TargetSchema {
    TargetSchema {
        table: table.into(),
        columns,
        key: key.iter().map(|k| (*k).into()).collect(),
    }
}

fn text(s: &str) -> Value {
    Value::Text(s.into())
}

fn lineage(schema: &TargetSchema, key: &Row, version: Version, op: Operation) -> Lineage {
    Lineage {
        source_server: "conformance".into(),
        source_table: format!("src.{}", schema.table).into(),
        source_key: key.canonical_text(),
        position: format!("binlog.000001:{version}").into(),
        gtid: (version % 2 == 0).then(|| format!("0-1-{version}")),
        version,
        op,
        commit_time_us: 1_700_000_000_000_000 + version,
        transform_name: "identity".into(),
        transform_version: "conformance-1".into(),
        source_digest: if op == Operation::Delete {
            String::new()
        } else {
            format!("digest-{version}")
        },
        chunk: (op == Operation::Backfill).then(|| format!("chunk-{version}").into()),
    }
}

/// An upsert: `values` are every column of `schema`, in schema order.
fn upsert(schema: &TargetSchema, values: Vec<Value>, version: Version) -> TargetRecord {
    assert_eq!(
        values.len(),
        schema.columns.len(),
        "test bug: an upsert of {} needs a value for every column",
        schema.table
    );
    let columns: Row = schema.columns.iter().map(|c| c.name).zip(values).collect();
    let key: Row = schema
        .key
        .iter()
        .map(|k| (*k, columns.get(k).expect("key column").clone()))
        .collect();
    let op = match version % 3 {
        0 => Operation::Insert,
        1 => Operation::Update,
        _ => Operation::Backfill,
    };
    TargetRecord {
        table: schema.table.clone().into(),
        lineage: lineage(schema, &key, version, op),
        key,
        columns: Some(columns),
    }
}

/// A tombstone: `key` values in key order.
fn tombstone(schema: &TargetSchema, key: Vec<Value>, version: Version) -> TargetRecord {
    let key: Row = schema.key.iter().cloned().zip(key).collect();
    TargetRecord {
        table: schema.table.clone().into(),
        lineage: lineage(schema, &key, version, Operation::Delete),
        key,
        columns: None,
    }
}

/// Per key, the record with the highest version (the first on a tie): the state every sink must
/// converge to.
fn winners(records: &[TargetRecord]) -> BTreeMap<String, TargetRecord> {
    let mut out: BTreeMap<String, TargetRecord> = BTreeMap::new();
    for r in records {
        let id = format!("{}/{}", r.table, r.key.canonical_text());
        match out.get(&id) {
            Some(w) if w.version() >= r.version() => {}
            _ => {
                out.insert(id, r.clone());
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Driving a sink

fn ensure<S: Sink>(sink: &mut S, schema: &TargetSchema) {
    sink.ensure_table(schema)
        .unwrap_or_else(|e| panic!("ensure_table({}) must succeed: {e}", schema.table));
}

fn write<S: Sink>(sink: &mut S, records: &[TargetRecord]) -> WriteStats {
    let stats = sink
        .write(records, &[])
        .unwrap_or_else(|e| panic!("writing {} record(s) must succeed: {e}", records.len()));
    assert_eq!(
        stats.applied() + stats.ignored(),
        records.len() as u64,
        "every record is counted once, as applied or ignored: {stats:?}"
    );
    stats
}

fn read<S: Sink>(sink: &mut S, table: &str, key: &Row) -> Option<StoredRecord> {
    sink.read(table, key).unwrap_or_else(|e| {
        panic!(
            "read of {table} key {} must succeed: {e}",
            key.canonical_text()
        )
    })
}

/// Short description of a stored record, for messages (values may be 1 MiB).
fn describe(r: Option<&StoredRecord>) -> String {
    match r {
        None => "nothing".into(),
        Some(r) if r.is_tombstone() => format!("a tombstone of version {}", r.version()),
        Some(r) => format!("a row of version {}", r.version()),
    }
}

/// The key must hold `expected`: that row exactly, or for a tombstone either the tombstone
/// (backends that keep them readable) or nothing.
fn assert_holds<S: Sink>(sink: &mut S, expected: &TargetRecord, context: &str) {
    let got = read(sink, &expected.table, &expected.key);
    let key = expected.key.canonical_text();
    if expected.is_tombstone() && !sink.reads_tombstones() {
        assert!(
            got.is_none(),
            "{context}: {} key {key} was deleted at version {}, so it must read as nothing, but it holds {}",
            expected.table,
            expected.version(),
            describe(got.as_ref())
        );
        return;
    }
    if got.as_ref() != Some(expected) {
        let detail = if expected.lineage.source_key.len() + format!("{got:?}").len() < 20_000 {
            format!("\n expected: {expected:?}\n      got: {got:?}")
        } else {
            String::new()
        };
        panic!(
            "{context}: {} key {key} must hold {} exactly, but it holds {}{detail}",
            expected.table,
            describe(Some(expected)),
            describe(got.as_ref()),
        );
    }
}

fn assert_state<S: Sink>(sink: &mut S, expected: &BTreeMap<String, TargetRecord>, context: &str) {
    for w in expected.values() {
        assert_holds(sink, w, context);
    }
}

// ---------------------------------------------------------------------------------------------
// The checks

fn basic_schema(table: &str) -> TargetSchema {
    schema(
        table,
        vec![
            col("id", TargetType::Int { bits: 64 }, false),
            col("v", TargetType::Text { max_chars: None }, true),
            col("n", TargetType::Int { bits: 32 }, true),
        ],
        &["id"],
    )
}

pub fn rejects_older_and_equal_versions<S: Sink>(make: &(dyn Fn() -> S + Sync), _: &Options) {
    let mut sink = make();
    let s = basic_schema("cf_versions");
    ensure(&mut sink, &s);
    let key1 = [("id".into(), Value::Int(1))].into_iter().collect::<Row>();
    assert!(
        read(&mut sink, &s.table, &key1).is_none(),
        "a key never written must read as nothing"
    );

    let five = upsert(&s, vec![Value::Int(1), text("five"), Value::Int(5)], 500);
    write(&mut sink, std::slice::from_ref(&five));
    assert_holds(&mut sink, &five, "after writing version 500");

    let three = upsert(&s, vec![Value::Int(1), text("three"), Value::Null], 300);
    write(&mut sink, &[three]);
    assert_holds(&mut sink, &five, "an older version (300) must be ignored");

    write(&mut sink, std::slice::from_ref(&five));
    assert_holds(
        &mut sink,
        &five,
        "replaying the equal version must change nothing",
    );

    // Newer and older of one key inside one call, in both orders.
    let new2 = upsert(&s, vec![Value::Int(2), text("new"), Value::Int(9)], 900);
    let old2 = upsert(&s, vec![Value::Int(2), text("old"), Value::Int(8)], 800);
    let new3 = upsert(&s, vec![Value::Int(3), text("new"), Value::Null], 901);
    let old3 = upsert(&s, vec![Value::Int(3), text("old"), Value::Int(1)], 801);
    write(&mut sink, &[new2.clone(), old2, old3, new3.clone()]);
    assert_holds(&mut sink, &new2, "newer before older in one call");
    assert_holds(&mut sink, &new3, "older before newer in one call");

    // A newer version replaces every column, NULLs included.
    let six = upsert(&s, vec![Value::Int(1), Value::Null, Value::Null], 600);
    write(&mut sink, std::slice::from_ref(&six));
    assert_holds(
        &mut sink,
        &six,
        "a newer version with NULLs must clear the columns",
    );
}

pub fn tombstones_shadow_older_inserts<S: Sink>(make: &(dyn Fn() -> S + Sync), _: &Options) {
    let mut sink = make();
    let s = basic_schema("cf_tombstones");
    ensure(&mut sink, &s);
    let row =
        |id: i64, v: &str, version| upsert(&s, vec![Value::Int(id), text(v), Value::Null], version);

    // The delete arrives first; older inserts arrive late.
    let del = tombstone(&s, vec![Value::Int(10)], 1000);
    write(&mut sink, std::slice::from_ref(&del));
    assert_holds(&mut sink, &del, "after the delete");
    write(&mut sink, &[row(10, "late", 700)]);
    assert_holds(
        &mut sink,
        &del,
        "an insert older than the delete must stay shadowed",
    );
    write(&mut sink, &[tombstone(&s, vec![Value::Int(10)], 900)]);
    assert_holds(
        &mut sink,
        &del,
        "an older delete must not replace the newer one",
    );
    let back = row(10, "back", 1100);
    write(&mut sink, std::slice::from_ref(&back));
    assert_holds(
        &mut sink,
        &back,
        "an insert newer than the delete must show",
    );
    write(&mut sink, &[tombstone(&s, vec![Value::Int(10)], 1050)]);
    assert_holds(
        &mut sink,
        &back,
        "a delete older than the live row must be ignored",
    );

    // Insert and delete in one call, and across calls with a late older insert.
    let del11 = tombstone(&s, vec![Value::Int(11)], 200);
    write(&mut sink, &[row(11, "a", 100), del11.clone()]);
    assert_holds(&mut sink, &del11, "insert then delete in one call");
    let del12 = tombstone(&s, vec![Value::Int(12)], 200);
    write(&mut sink, &[del12.clone(), row(12, "a", 100)]);
    assert_holds(&mut sink, &del12, "delete then older insert in one call");
    let del13 = tombstone(&s, vec![Value::Int(13)], 200);
    write(&mut sink, &[row(13, "a", 100)]);
    write(&mut sink, std::slice::from_ref(&del13));
    write(&mut sink, &[row(13, "b", 150)]);
    assert_holds(
        &mut sink,
        &del13,
        "a late insert between the two must stay shadowed",
    );
}

/// A deterministic mix of inserts and deletes over `keys` keys with distinct versions.
fn mixed_changes(s: &TargetSchema, count: usize, keys: i64, base: Version) -> Vec<TargetRecord> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ base as u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..count)
        .map(|i| {
            let version = base + 1 + i as Version;
            let id = (next() % keys as u64) as i64;
            if next() % 4 == 0 {
                tombstone(s, vec![Value::Int(id)], version)
            } else {
                upsert(
                    s,
                    vec![
                        Value::Int(id),
                        text(&format!("v{version}")),
                        Value::Int(i as i64),
                    ],
                    version,
                )
            }
        })
        .collect()
}

pub fn replaying_changes_changes_nothing<S: Sink>(make: &(dyn Fn() -> S + Sync), _: &Options) {
    let mut sink = make();
    let s = basic_schema("cf_replay");
    ensure(&mut sink, &s);
    let changes = mixed_changes(&s, 60, 7, 10_000);
    let expected = winners(&changes);
    write(&mut sink, &changes);
    assert_state(&mut sink, &expected, "after the first delivery");
    for round in 0..2 {
        for chunk in changes.chunks(4) {
            write(&mut sink, chunk);
        }
        assert_state(
            &mut sink,
            &expected,
            &format!("after replay {} in batches of 4", round + 1),
        );
    }
}

/// Keys of each property case are fresh: `(case, k)`.
static CASE: AtomicI64 = AtomicI64::new(0);

fn perm_schema() -> TargetSchema {
    schema(
        "cf_permutations",
        vec![
            col("case_id", TargetType::Int { bits: 64 }, false),
            col("k", TargetType::Int { bits: 16 }, false),
            col("v", TargetType::Text { max_chars: None }, true),
            col("b", TargetType::Bytes { max_len: None }, true),
        ],
        &["case_id", "k"],
    )
}

pub fn any_permutation_converges<S: Sink>(make: &(dyn Fn() -> S + Sync), options: &Options) {
    let sink = RefCell::new(make());
    let s = perm_schema();
    ensure(&mut *sink.borrow_mut(), &s);
    // (key, delete?, value) with versions in generation order, applied in a shuffled order cut
    // into batches of a random size.
    let changes = prop::collection::vec((0i64..4, prop::bool::weighted(0.3), "[a-c]{0,3}"), 1..24);
    let strategy = changes.prop_flat_map(|c| {
        let n = c.len();
        (
            Just(c),
            Just((0..n).collect::<Vec<usize>>()).prop_shuffle(),
            1usize..6,
            prop::collection::vec(0usize..n, 0..4),
        )
    });
    let mut runner = TestRunner::new(Config {
        cases: options.proptest_cases,
        failure_persistence: None,
        ..Config::default()
    });
    let first_case = CASE.load(Ordering::Relaxed);
    let result = runner.run(&strategy, |(changes, order, batch, replays)| {
        let case = CASE.fetch_add(1, Ordering::Relaxed);
        let records: Vec<TargetRecord> = changes
            .iter()
            .enumerate()
            .map(|(i, (k, delete, v))| {
                let version = 1_000 + 10 * i as Version;
                if *delete {
                    tombstone(&s, vec![Value::Int(case), Value::Int(*k)], version)
                } else {
                    upsert(
                        &s,
                        vec![
                            Value::Int(case),
                            Value::Int(*k),
                            text(v),
                            Value::Bytes(v.as_bytes().to_vec()),
                        ],
                        version,
                    )
                }
            })
            .collect();
        let expected = winners(&records);
        // The shuffled order, with some records delivered again (duplicates).
        let mut applied: Vec<TargetRecord> = order.iter().map(|&i| records[i].clone()).collect();
        applied.extend(replays.iter().map(|&i| records[i].clone()));
        let mut sink = sink.borrow_mut();
        for chunk in applied.chunks(batch) {
            write(&mut *sink, chunk);
        }
        assert_state(
            &mut *sink,
            &expected,
            &format!("case {case}: order {order:?}, batches of {batch}"),
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("any permutation of the same changes must converge to the max-version state: {e}");
    }
    let ran = CASE.load(Ordering::Relaxed) - first_case;
    assert!(
        ran >= i64::from(options.proptest_cases),
        "the property must run {} cases, it ran {ran}",
        options.proptest_cases
    );
}

pub fn concurrent_writers_converge<S: Sink + Send>(
    make: &(dyn Fn() -> S + Sync),
    options: &Options,
) {
    let s = basic_schema("cf_concurrent");
    let mut a = make();
    let mut b = make();
    ensure(&mut a, &s);
    ensure(&mut b, &s);
    let changes = mixed_changes(&s, options.concurrent_changes, 8, 50_000);
    let expected = winners(&changes);
    let reversed: Vec<TargetRecord> = changes.iter().rev().cloned().collect();
    std::thread::scope(|scope| {
        let forward = scope.spawn(|| {
            for chunk in changes.chunks(5) {
                write(&mut a, chunk);
            }
        });
        let backward = scope.spawn(|| {
            for chunk in reversed.chunks(3) {
                write(&mut b, chunk);
            }
        });
        forward.join().expect("the forward writer must not panic");
        backward.join().expect("the backward writer must not panic");
    });
    let mut reader = make();
    ensure(&mut reader, &s);
    assert_state(
        &mut reader,
        &expected,
        "two writers, one forward and one backward, interleaved",
    );
}

pub fn large_values_round_trip<S: Sink>(make: &(dyn Fn() -> S + Sync), _: &Options) {
    let mut sink = make();
    let s = schema(
        "cf_large",
        vec![
            col("id", TargetType::Int { bits: 64 }, false),
            col("t", TargetType::Text { max_chars: None }, true),
            col("b", TargetType::Bytes { max_len: None }, true),
        ],
        &["id"],
    );
    ensure(&mut sink, &s);
    const MIB: usize = 1 << 20;
    let big_text: String = "é☃x".repeat(MIB / 6 + 1).chars().take(MIB / 2).collect();
    assert!(
        big_text.len() >= MIB,
        "test bug: the text must be at least 1 MiB"
    );
    let big_bytes: Vec<u8> = (0..MIB).map(|i| (i % 251) as u8).collect();
    let first = upsert(
        &s,
        vec![
            Value::Int(1),
            Value::Text(big_text.clone()),
            Value::Bytes(big_bytes.clone()),
        ],
        100,
    );
    write(&mut sink, std::slice::from_ref(&first));
    assert_holds(&mut sink, &first, "a 1 MiB text and a 1 MiB blob");
    let mut other = big_bytes;
    other.reverse();
    let second = upsert(
        &s,
        vec![
            Value::Int(1),
            Value::Text(big_text.to_uppercase()),
            Value::Bytes(other),
        ],
        101,
    );
    let two = upsert(
        &s,
        vec![Value::Int(2), Value::Text(big_text), Value::Null],
        102,
    );
    write(&mut sink, &[second.clone(), two.clone()]);
    assert_holds(&mut sink, &second, "a 1 MiB value replaced by a newer one");
    assert_holds(&mut sink, &two, "two 1 MiB records in one call");
}

fn type_schema() -> TargetSchema {
    use TargetType as T;
    schema(
        "cf_types",
        vec![
            col("id", T::Int { bits: 64 }, false),
            col("i8", T::Int { bits: 8 }, true),
            col("i16", T::Int { bits: 16 }, true),
            col("i24", T::Int { bits: 24 }, true),
            col("i32", T::Int { bits: 32 }, true),
            col("i64", T::Int { bits: 64 }, true),
            col("u8", T::UInt { bits: 8 }, true),
            col("u16", T::UInt { bits: 16 }, true),
            col("u24", T::UInt { bits: 24 }, true),
            col("u32", T::UInt { bits: 32 }, true),
            col("u64", T::UInt { bits: 64 }, true),
            col("f", T::Float, true),
            col("d", T::Double, true),
            col(
                "dec",
                T::Decimal {
                    precision: 65,
                    scale: 30,
                },
                true,
            ),
            col(
                "dec0",
                T::Decimal {
                    precision: 10,
                    scale: 0,
                },
                true,
            ),
            col("date", T::Date, true),
            col("dt0", T::DateTime { fsp: 0 }, true),
            col("dt6", T::DateTime { fsp: 6 }, true),
            col("ts3", T::Timestamp { fsp: 3 }, true),
            col("tm0", T::Time { fsp: 0 }, true),
            col("tm6", T::Time { fsp: 6 }, true),
            col("yr", T::Year, true),
            col(
                "txt",
                T::Text {
                    max_chars: Some(255),
                },
                true,
            ),
            col("bin", T::Bytes { max_len: Some(16) }, true),
            col(
                "en",
                T::Enum {
                    members: vec!["small".into(), "large".into()],
                },
                true,
            ),
            col(
                "st",
                T::Set {
                    members: vec!["a".into(), "b".into(), "c d".into()],
                },
                true,
            ),
            col("bit1", T::Bit { width: 1 }, true),
            col("bit64", T::Bit { width: 64 }, true),
            col("js", T::Json, true),
            col("geo", T::Geometry, true),
        ],
        &["id"],
    )
}

fn date(year: u16, month: u8, day: u8) -> Value {
    Value::Date { year, month, day }
}

#[allow(clippy::too_many_arguments)]
fn datetime(ts: bool, y: u16, mo: u8, d: u8, h: u8, mi: u8, s: u8, micros: u32, fsp: u8) -> Value {
    if ts {
        Value::Timestamp(DateTime {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
            micros,
            fsp,
        })
    } else {
        Value::DateTime(DateTime {
            year: y,
            month: mo,
            day: d,
            hour: h,
            minute: mi,
            second: s,
            micros,
            fsp,
        })
    }
}

fn time(negative: bool, hours: u16, minute: u8, second: u8, micros: u32, fsp: u8) -> Value {
    Value::Time {
        negative,
        hours,
        minute,
        second,
        micros,
        fsp,
    }
}

pub fn every_target_type_round_trips<S: Sink>(make: &(dyn Fn() -> S + Sync), _: &Options) {
    let mut sink = make();
    let s = type_schema();
    ensure(&mut sink, &s);
    let dec_max = "99999999999999999999999999999999999.999999999999999999999999999999";
    let minimum = vec![
        Value::Int(1),
        Value::Int(i64::from(i8::MIN)),
        Value::Int(i64::from(i16::MIN)),
        Value::Int(-8_388_608),
        Value::Int(i64::from(i32::MIN)),
        Value::Int(i64::MIN),
        Value::UInt(0),
        Value::UInt(0),
        Value::UInt(0),
        Value::UInt(0),
        Value::UInt(0),
        Value::Float(f32::MIN),
        Value::Double(f64::MIN),
        Value::Decimal(format!("-{dec_max}")),
        Value::Decimal("-9999999999".into()),
        date(1000, 1, 1),
        datetime(false, 1000, 1, 1, 0, 0, 0, 0, 0),
        datetime(false, 1000, 1, 1, 0, 0, 0, 0, 6),
        datetime(true, 1970, 1, 1, 0, 0, 1, 0, 3),
        time(true, 838, 59, 59, 0, 0),
        time(true, 838, 59, 59, 999_999, 6),
        Value::Year(1901),
        Value::Text(String::new()),
        Value::Bytes(Vec::new()),
        Value::Enum(String::new()),
        Value::Set(Vec::new()),
        Value::Bit { width: 1, value: 0 },
        Value::Bit {
            width: 64,
            value: 0,
        },
        Value::Json("null".into()),
        Value::Geometry(vec![0; 25]),
    ];
    let maximum = vec![
        Value::Int(2),
        Value::Int(i64::from(i8::MAX)),
        Value::Int(i64::from(i16::MAX)),
        Value::Int(8_388_607),
        Value::Int(i64::from(i32::MAX)),
        Value::Int(i64::MAX),
        Value::UInt(u64::from(u8::MAX)),
        Value::UInt(u64::from(u16::MAX)),
        Value::UInt(16_777_215),
        Value::UInt(u64::from(u32::MAX)),
        Value::UInt(u64::MAX),
        Value::Float(f32::MAX),
        Value::Double(f64::MAX),
        Value::Decimal(dec_max.into()),
        Value::Decimal("9999999999".into()),
        date(9999, 12, 31),
        datetime(false, 9999, 12, 31, 23, 59, 59, 0, 0),
        datetime(false, 9999, 12, 31, 23, 59, 59, 999_999, 6),
        datetime(true, 2038, 1, 19, 3, 14, 7, 999_000, 3),
        time(false, 838, 59, 59, 0, 0),
        time(false, 838, 59, 59, 999_999, 6),
        Value::Year(2155),
        Value::Text("héllo 😀 \u{0} ,;'\"\\".into()),
        Value::Bytes(vec![0, 1, 0x7f, 0x80, 0xff]),
        Value::Enum("large".into()),
        Value::Set(vec!["a".into(), "c d".into()]),
        Value::Bit { width: 1, value: 1 },
        Value::Bit {
            width: 64,
            value: u64::MAX,
        },
        Value::Json(r#"{"a": [1, 2.5, null, "é"]}"#.into()),
        Value::Geometry((0u8..=40).collect()),
    ];
    let zeros = vec![
        Value::Int(3),
        Value::Int(0),
        Value::Int(-1),
        Value::Int(1),
        Value::Int(0),
        Value::Int(-1),
        Value::UInt(1),
        Value::UInt(1),
        Value::UInt(1),
        Value::UInt(1),
        Value::UInt(i64::MAX as u64 + 1),
        Value::Float(0.1),
        Value::Double(0.1),
        Value::Decimal("0.000000000000000000000000000000".into()),
        Value::Decimal("0".into()),
        date(0, 0, 0),
        datetime(false, 0, 0, 0, 0, 0, 0, 0, 0),
        datetime(false, 2024, 0, 15, 12, 0, 0, 500_000, 6),
        datetime(true, 0, 0, 0, 0, 0, 0, 0, 3),
        time(false, 0, 0, 0, 0, 0),
        time(true, 0, 0, 0, 1, 6),
        Value::Year(0),
        Value::Text("0".into()),
        Value::Bytes(vec![0]),
        Value::Enum("small".into()),
        Value::Set(vec!["a".into(), "b".into(), "c d".into()]),
        Value::Bit { width: 1, value: 1 },
        Value::Bit {
            width: 64,
            value: 1 << 63,
        },
        Value::Json("{}".into()),
        Value::Geometry(vec![0xff; 4]),
    ];
    let mut nulls = vec![Value::Int(4)];
    nulls.extend(std::iter::repeat_n(Value::Null, s.columns.len() - 1));
    let records: Vec<TargetRecord> = [minimum, maximum, zeros, nulls]
        .into_iter()
        .enumerate()
        .map(|(i, values)| upsert(&s, values, 10 + i as Version))
        .collect();
    write(&mut sink, &records);
    for r in &records {
        let got = read(&mut sink, &s.table, &r.key);
        let Some(got) = got else {
            panic!("row {} of cf_types must read back", r.key.canonical_text());
        };
        let want = r.columns.as_ref().expect("upsert");
        let have = got.columns.as_ref().expect("a live row");
        for ((name, w), (_, h)) in want.0.iter().zip(&have.0) {
            assert_eq!(
                h,
                w,
                "column `{name}` of row {} must read back exactly as written",
                r.key.canonical_text()
            );
        }
        assert_eq!(
            &got, r,
            "the whole row, with lineage, must read back as written"
        );
    }
}

pub fn checkpoints_are_stored_with_the_data<S: Sink>(make: &(dyn Fn() -> S + Sync), _: &Options) {
    let mut sink = make();
    let s = basic_schema("cf_checkpoints");
    ensure(&mut sink, &s);
    let cp = |value: &str| Checkpoint {
        stage: "conformance".into(),
        scope: "cf_checkpoints".into(),
        value: value.into(),
    };
    let rec = upsert(&s, vec![Value::Int(1), text("x"), Value::Null], 5);
    sink.write(std::slice::from_ref(&rec), &[cp("pos-10")])
        .unwrap_or_else(|e| panic!("a write with a checkpoint must succeed: {e}"));
    assert_holds(&mut sink, &rec, "the record written with the checkpoint");
    let got = sink
        .checkpoint("conformance", "cf_checkpoints")
        .expect("checkpoint read");
    assert_eq!(
        got.as_deref(),
        Some("pos-10"),
        "the checkpoint must be stored"
    );
    sink.write(&[], &[cp("pos-20"), cp("pos-30")])
        .unwrap_or_else(|e| panic!("a write of checkpoints only must succeed: {e}"));
    let mut other = make();
    let got = other
        .checkpoint("conformance", "cf_checkpoints")
        .expect("checkpoint read");
    assert_eq!(
        got.as_deref(),
        Some("pos-30"),
        "another instance must see the last checkpoint written"
    );
    other
        .write(&[], &[cp("pos-40")])
        .unwrap_or_else(|e| panic!("a second instance must advance the checkpoint: {e}"));
    let got = sink
        .checkpoint("conformance", "cf_checkpoints")
        .expect("checkpoint read");
    assert_eq!(got.as_deref(), Some("pos-40"), "the newest checkpoint wins");
    assert_eq!(
        sink.checkpoint("conformance", "never-written")
            .expect("checkpoint read"),
        None,
        "an unknown checkpoint reads as nothing"
    );
}

pub fn scan_visits_every_live_key_once<S: Sink>(make: &(dyn Fn() -> S + Sync), _: &Options) {
    let mut sink = make();
    let s = schema(
        "cf_scan",
        vec![
            col("a", TargetType::Int { bits: 64 }, false),
            col("b", TargetType::Text { max_chars: None }, false),
            col("v", TargetType::Int { bits: 64 }, true),
        ],
        &["a", "b"],
    );
    ensure(&mut sink, &s);
    let mut records = Vec::new();
    let mut version = 100;
    for a in 0..6 {
        for b in ["p", "q", "r", "s"] {
            version += 1;
            records.push(upsert(
                &s,
                vec![Value::Int(a), text(b), Value::Int(version)],
                version,
            ));
        }
    }
    // Delete some keys afterwards.
    for (a, b) in [(0, "p"), (2, "q"), (2, "r"), (5, "s")] {
        version += 1;
        records.push(tombstone(&s, vec![Value::Int(a), text(b)], version));
    }
    write(&mut sink, &records);
    let expected = winners(&records);
    let live: BTreeSet<String> = expected
        .values()
        .filter(|r| !r.is_tombstone())
        .map(|r| r.key.canonical_text())
        .collect();
    let mut seen: Vec<String> = Vec::new();
    let mut after: Option<Row> = None;
    for page in 0.. {
        assert!(
            page < 100,
            "scan must end; it is still going after 100 pages"
        );
        let rows = sink
            .scan(&s.table, after.as_ref(), 5)
            .unwrap_or_else(|e| panic!("scan page {page} must succeed: {e}"));
        assert!(
            rows.len() <= 5,
            "a page holds at most the limit, got {}",
            rows.len()
        );
        let Some(last) = rows.last() else { break };
        // The reconciler's key scan pages the same records, reduced to keys.
        let keys = sink
            .scan_keys(&s.table, after.as_ref(), 5)
            .unwrap_or_else(|e| panic!("scan_keys page {page} must succeed: {e}"));
        let reduced: Vec<tidemark_sink::ScannedKey> = rows
            .iter()
            .map(|r| tidemark_sink::ScannedKey {
                key: r.key.clone(),
                tombstone: r.is_tombstone(),
            })
            .collect();
        assert_eq!(keys, reduced, "scan_keys must page exactly as scan");
        after = Some(last.key.clone());
        for r in rows {
            let id = format!("{}/{}", s.table, r.key.canonical_text());
            assert_eq!(
                Some(&r),
                expected.get(&id),
                "a scanned record must be the key's winning record"
            );
            if r.is_tombstone() {
                assert!(
                    sink.reads_tombstones(),
                    "this backend must not scan tombstones"
                );
            } else {
                seen.push(r.key.canonical_text());
            }
        }
    }
    let distinct: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "no key may be visited twice: {seen:?}"
    );
    assert_eq!(distinct, live, "scan must visit exactly the live keys");
}

pub fn added_columns_keep_old_rows<S: Sink>(make: &(dyn Fn() -> S + Sync), _: &Options) {
    let mut sink = make();
    let v1 = schema(
        "cf_evolve",
        vec![
            col("id", TargetType::Int { bits: 64 }, false),
            col("a", TargetType::Text { max_chars: None }, true),
        ],
        &["id"],
    );
    ensure(&mut sink, &v1);
    write(
        &mut sink,
        &[upsert(&v1, vec![Value::Int(1), text("old")], 10)],
    );
    let mut v2 = v1.clone();
    v2.columns.push(col(
        "b",
        TargetType::Decimal {
            precision: 10,
            scale: 2,
        },
        true,
    ));
    ensure(&mut sink, &v2);
    ensure(&mut sink, &v2); // idempotent
    let old_as_v2 = upsert(&v2, vec![Value::Int(1), text("old"), Value::Null], 10);
    assert_holds(
        &mut sink,
        &old_as_v2,
        "a row written before the column was added",
    );
    let new = upsert(
        &v2,
        vec![Value::Int(2), text("new"), Value::Decimal("-1.50".into())],
        11,
    );
    write(&mut sink, std::slice::from_ref(&new));
    assert_holds(&mut sink, &new, "a row written with the added column");
    let mut other = make();
    ensure(&mut other, &v2);
    assert_holds(
        &mut other,
        &new,
        "another instance announcing the same schema",
    );
}
