//! The SQLite sink: the conformance suite, and what only SQLite promises (exact "ignored" counts,
//! readable tombstones, "ignore equal" on any content, checkpoint and data in one transaction).

mod conformance;

use std::path::{Path, PathBuf};

use tidemark_schemas::{
    Checkpoint, Lineage, Operation, Row, TargetColumn, TargetRecord, TargetSchema, TargetType,
    Value,
};
use tidemark_sink::{Error, Sink, SqliteSink};

fn open(path: &Path) -> SqliteSink {
    SqliteSink::open(path)
        .unwrap_or_else(|e| panic!("the SQLite target {} must open: {e}", path.display()))
}

#[test]
fn sqlite_conformance() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("target.db");
    conformance::run_all(&|| open(&path), conformance::Options::default());
}

fn schema() -> TargetSchema {
    TargetSchema {
        table: "t".into(),
        columns: vec![
            TargetColumn {
                name: "id".into(),
                ty: TargetType::Int { bits: 64 },
                nullable: false,
            },
            TargetColumn {
                name: "v".into(),
                ty: TargetType::Text { max_chars: None },
                nullable: true,
            },
        ],
        key: vec!["id".into()],
    }
}

fn record(id: i64, v: Option<&str>, version: i64, position: &str) -> TargetRecord {
    let key: Row = [("id".into(), Value::Int(id))].into_iter().collect();
    TargetRecord {
        table: "t".into(),
        columns: v.map(|v| {
            let mut r = key.clone();
            r.push("v", Value::Text(v.into()));
            r
        }),
        lineage: Lineage {
            source_server: "s".into(),
            source_table: "db.t".into(),
            source_key: key.canonical_text(),
            position: position.into(),
            gtid: None,
            version,
            op: if v.is_some() {
                Operation::Insert
            } else {
                Operation::Delete
            },
            commit_time_us: 0,
            transform_name: "identity".into(),
            transform_version: "x".into(),
            source_digest: String::new(),
            chunk: None,
        },
        key,
    }
}

#[test]
fn ignored_counts_are_exact() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sink = open(&dir.path().join("t.db"));
    sink.ensure_table(&schema()).expect("table");
    let stats = sink
        .write(&[record(1, Some("a"), 10, "f:10")], &[])
        .expect("write");
    assert_eq!(stats.per_table["t"], (1, 0), "a new key is applied");
    let stats = sink
        .write(
            &[
                record(1, Some("old"), 5, "f:5"),
                record(1, Some("a"), 10, "f:10"),
                record(1, None, 11, "f:11"),
            ],
            &[],
        )
        .expect("write");
    assert_eq!(
        stats.per_table["t"],
        (1, 2),
        "an older and an equal version are ignored, the newer delete applied"
    );
}

#[test]
fn an_equal_version_keeps_the_first_content_and_tombstones_read_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sink = open(&dir.path().join("t.db"));
    sink.ensure_table(&schema()).expect("table");
    let first = record(1, Some("first"), 10, "f:10");
    sink.write(std::slice::from_ref(&first), &[])
        .expect("write");
    sink.write(&[record(1, Some("second"), 10, "g:10")], &[])
        .expect("write");
    let key = first.key.clone();
    assert_eq!(
        sink.read("t", &key).expect("read"),
        Some(first),
        "SQLite ignores an equal version whatever its content"
    );
    let del = record(1, None, 12, "f:12");
    sink.write(std::slice::from_ref(&del), &[]).expect("write");
    assert_eq!(
        sink.read("t", &key).expect("read"),
        Some(del),
        "a deleted key reads back as its tombstone, with version and lineage"
    );
}

#[test]
fn a_failed_write_stores_neither_records_nor_checkpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sink = open(&dir.path().join("t.db"));
    sink.ensure_table(&schema()).expect("table");
    let mut stray = record(2, Some("x"), 20, "f:20");
    stray.table = "never_announced".into();
    let cp = Checkpoint {
        stage: "apply".into(),
        scope: "*".into(),
        value: "f:20".into(),
    };
    let err = sink
        .write(&[record(1, Some("a"), 10, "f:10"), stray], &[cp])
        .expect_err("a record for an unannounced table must fail the write");
    assert!(
        matches!(&err, Error::Write { table, .. } if table == "never_announced"),
        "the error names the table: {err}"
    );
    let key: Row = [("id".into(), Value::Int(1))].into_iter().collect();
    assert_eq!(
        sink.read("t", &key).expect("read"),
        None,
        "the record before the failure must be rolled back"
    );
    assert_eq!(
        sink.checkpoint("apply", "*").expect("checkpoint"),
        None,
        "the checkpoint must not be stored without its records"
    );
}

#[test]
fn read_before_ensure_table_says_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sink = open(&dir.path().join("t.db"));
    let key: Row = [("id".into(), Value::Int(1))].into_iter().collect();
    let err = sink.read("t", &key).expect_err("unknown table");
    assert!(err.to_string().contains("ensure_table"), "{err}");
}
