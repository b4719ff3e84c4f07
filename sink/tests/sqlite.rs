//! The SQLite sink: the conformance suite, and what only SQLite promises (exact "ignored" counts,
//! readable tombstones, "ignore equal" on any content, checkpoint and data in one transaction).

#[macro_use]
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

/// A fresh SQLite file per conformance test; the factory opens sinks on it.
fn sqlite_sinks() -> (impl Fn() -> SqliteSink + Sync, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path: PathBuf = dir.path().join("target.db");
    (move || open(&path), dir)
}

mod sqlite_conformance {
    use super::*;
    conformance_tests!(sqlite_sinks, conformance::Options::default());
}

fn schema() -> TargetSchema {
    keyed_schema("t", TargetType::Int { bits: 64 })
}

/// Table `table`: key `id` of type `key_type`, one nullable text column `v`.
fn keyed_schema(table: &str, key_type: TargetType) -> TargetSchema {
    TargetSchema {
        table: table.into(),
        columns: vec![
            TargetColumn {
                name: "id".into(),
                ty: key_type,
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

/// A value SQLite itself refuses (here a NULL key of a `WITHOUT ROWID` table) fails the write
/// with SQLite's reason, the table and the key; the batch is rolled back, and the same sink then
/// writes and reads back texts of every length, bound where they are in the records.
#[test]
fn a_write_sqlite_refuses_names_the_key_and_the_sink_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sink = open(&dir.path().join("t.db"));
    let text_keyed = keyed_schema("t", TargetType::Text { max_chars: None });
    sink.ensure_table(&text_keyed).expect("table");
    let text_record = |id: &str, v: &str, version: i64| {
        let mut rec = record(0, Some(v), version, "f:1");
        rec.key = [("id".into(), Value::Text(id.into()))]
            .into_iter()
            .collect();
        let mut columns = rec.key.clone();
        columns.push("v", Value::Text(v.into()));
        rec.columns = Some(columns);
        rec.lineage.source_key = rec.key.canonical_text();
        rec
    };
    let mut keyless = text_record("b", "lost", 10);
    keyless.columns = Some(
        [("v".into(), Value::Text("lost".into()))]
            .into_iter()
            .collect(),
    );
    let err = sink
        .write(&[text_record("a", "first", 10), keyless], &[])
        .expect_err("a NULL key must fail the write");
    let message = err.to_string();
    assert!(
        matches!(&err, Error::Write { table, .. } if table == "t")
            && message.contains(r#"{"id":"b"}"#)
            && message.contains("NOT NULL"),
        "the error names the table, the key and SQLite's reason: {message}"
    );
    let key = |id: &str| -> Row {
        [("id".into(), Value::Text(id.into()))]
            .into_iter()
            .collect()
    };
    assert_eq!(
        sink.read("t", &key("a")).expect("read"),
        None,
        "rolled back"
    );

    let long = "é".repeat(100_000);
    let records = [
        text_record("", "", 11),
        text_record("a", &long, 11),
        text_record("c", "third", 11),
    ];
    let stats = sink
        .write(&records, &[])
        .expect("the sink writes after a failure");
    assert_eq!(stats.per_table["t"], (3, 0));
    for rec in &records {
        let stored = sink
            .read("t", &rec.key)
            .expect("read")
            .unwrap_or_else(|| panic!("{} was written", rec.lineage.source_key));
        assert_eq!(stored.columns, rec.columns, "{}", rec.lineage.source_key);
        assert_eq!(stored.lineage, rec.lineage, "{}", rec.lineage.source_key);
    }
}

#[test]
fn read_before_ensure_table_says_what_to_do() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sink = open(&dir.path().join("t.db"));
    let key: Row = [("id".into(), Value::Int(1))].into_iter().collect();
    let err = sink.read("t", &key).expect_err("unknown table");
    assert!(err.to_string().contains("ensure_table"), "{err}");
}

fn u64_schema() -> TargetSchema {
    keyed_schema("u", TargetType::UInt { bits: 64 })
}

fn u64_record(id: u64, v: &str, version: i64) -> TargetRecord {
    let key: Row = [("id".into(), Value::UInt(id))].into_iter().collect();
    let mut columns = key.clone();
    columns.push("v", Value::Text(v.into()));
    let mut rec = record(0, Some(v), version, "f:1");
    rec.table = "u".into();
    rec.lineage.source_key = key.canonical_text();
    rec.key = key;
    rec.columns = Some(columns);
    rec
}

/// BIGINT UNSIGNED keys on both sides of 2^63: written, read back, scanned once each in pages,
/// older versions ignored; returns the storage class SQLite holds for each key.
fn exercise_u64_keys(sink: &mut SqliteSink) -> Vec<(String, String)> {
    let keys = [0, 1, 42, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX];
    let records: Vec<TargetRecord> = keys
        .iter()
        .map(|&k| u64_record(k, &format!("v{k}"), 10))
        .collect();
    let stats = sink.write(&records, &[]).expect("write");
    assert_eq!(stats.per_table["u"], (keys.len() as u64, 0));
    let older: Vec<TargetRecord> = keys.iter().map(|&k| u64_record(k, "old", 5)).collect();
    assert_eq!(
        sink.write(&older, &[]).expect("write").per_table["u"],
        (0, keys.len() as u64),
        "older versions are ignored on every key"
    );
    for rec in &records {
        assert_eq!(
            sink.read("u", &rec.key).expect("read").as_ref(),
            Some(rec),
            "key {}",
            rec.lineage.source_key
        );
    }
    let mut seen = Vec::new();
    let mut after: Option<Row> = None;
    loop {
        let page = sink.scan("u", after.as_ref(), 2).expect("scan");
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        seen.extend(page.iter().map(|r| r.key.clone()));
    }
    let mut want: Vec<Row> = records.iter().map(|r| r.key.clone()).collect();
    want.sort_by_key(|k| k.canonical_text());
    seen.sort_by_key(|k| k.canonical_text());
    assert_eq!(seen, want, "a paged scan visits every key once");
    let mut stmt = sink
        .connection()
        .prepare("SELECT typeof(\"id\"), CAST(\"id\" AS TEXT) FROM \"u\" ORDER BY 2")
        .expect("prepare");
    let stored = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    stored
}

/// The table definition SQLite keeps for `table`, and the file's page size.
fn table_sql_and_page_size(sink: &SqliteSink, table: &str) -> (String, i64) {
    sink.connection()
        .query_row(
            "SELECT sql, (SELECT page_size FROM pragma_page_size) FROM sqlite_master WHERE name = ?1",
            [table],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("table definition")
}

#[test]
fn a_bigint_unsigned_key_is_the_rowid_holding_its_64_bits() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sink = open(&dir.path().join("t.db"));
    sink.ensure_table(&u64_schema()).expect("table");
    let stored = exercise_u64_keys(&mut sink);
    let mut want: Vec<(String, String)> =
        [0, 1, 42, i64::MAX as u64, i64::MAX as u64 + 1, u64::MAX]
            .iter()
            .map(|&k| ("integer".to_string(), (k as i64).to_string()))
            .collect();
    want.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        stored, want,
        "every key is an integer holding the key's bits (2^63 and above negative)"
    );
    let (sql, page_size) = table_sql_and_page_size(&sink, "u");
    assert!(
        sql.contains("\"id\" INTEGER") && !sql.contains("WITHOUT ROWID"),
        "the key is the rowid: {sql}"
    );
    assert_eq!(page_size, i64::from(tidemark_sink::sqlite::PAGE_SIZE));
    let indexes: i64 = sink
        .connection()
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'u'",
            [],
            |r| r.get(0),
        )
        .expect("indexes");
    assert_eq!(
        indexes, 0,
        "the key is the table's own B-tree, not a second index"
    );
}

#[test]
fn a_file_of_another_target_format_is_refused_and_a_new_one_is_stamped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("t.db");
    drop(open(&path));
    let conn = rusqlite::Connection::open(&path).expect("open");
    let stamped: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version");
    assert_eq!(stamped, tidemark_sink::sqlite::FORMAT);
    // A file written by a build of another format (here: before formats were numbered).
    conn.pragma_update(None, "user_version", 0)
        .expect("unstamp");
    drop(conn);
    let err = SqliteSink::open(&path)
        .err()
        .expect("a file of another format is refused");
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string())
            && text.contains("format 0")
            && text.contains("new file"),
        "{text}"
    );
}

#[test]
fn a_column_retyped_to_bigint_unsigned_holds_values_above_2_63_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut sink = open(&dir.path().join("t.db"));
    let mut before = keyed_schema("w", TargetType::Int { bits: 64 });
    before.columns.push(TargetColumn {
        name: "n".into(),
        ty: TargetType::Int { bits: 32 },
        nullable: true,
    });
    sink.ensure_table(&before).expect("table");
    // MODIFY n BIGINT UNSIGNED at the source: an INTEGER column would turn 2^64 - 1, bound as
    // its digits, into a REAL.
    let mut after = before.clone();
    after.columns[2].ty = TargetType::UInt { bits: 64 };
    sink.ensure_table(&after).expect("table retyped");
    let mut rec = record(1, Some("x"), 10, "f:1");
    rec.table = "w".into();
    rec.columns
        .as_mut()
        .expect("columns")
        .push("n", Value::UInt(u64::MAX));
    sink.write(std::slice::from_ref(&rec), &[]).expect("write");
    assert_eq!(sink.read("w", &rec.key).expect("read"), Some(rec));
}

/// The WAL is copied into the database file while writes go on, by the checkpointer's thread,
/// and stays bounded: it starts over whenever all of it has been copied, and a writer that finds
/// it four times the threshold copies the rest itself. Every row is there after a reopen.
#[test]
fn the_wal_is_checkpointed_beside_the_writer_and_stays_bounded() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("target.db");
    let wal = dir.path().join("target.db-wal");
    let mut sink = open(&path);
    let threshold = 2 << 20;
    sink.set_checkpoint_after(threshold).unwrap();
    sink.ensure_table(&schema()).unwrap();
    let text = "w".repeat(1000);
    let (mut largest_wal, rows, batch_rows) = (0, 20_000, 100);
    for batch in 0..rows / batch_rows {
        let records: Vec<TargetRecord> = (0..batch_rows)
            .map(|i| record(batch * batch_rows + i, Some(&text), 1, "f:1"))
            .collect();
        sink.write(&records, &[]).unwrap();
        largest_wal = largest_wal.max(std::fs::metadata(&wal).map_or(0, |m| m.len()));
    }
    // About 20 MB were written in batches of 100 KB; the WAL never held much more than four
    // times the threshold, and the database file holds most of the rows while the sink is open.
    assert!(
        largest_wal <= 4 * threshold + (1 << 20),
        "the WAL grew to {largest_wal} bytes"
    );
    let db_size = std::fs::metadata(&path).unwrap().len();
    assert!(db_size > 10 << 20, "only {db_size} bytes were checkpointed");
    drop(sink);
    let mut sink = open(&path);
    sink.ensure_table(&schema()).unwrap();
    for id in [0, rows / 2, rows - 1] {
        let key: Row = [("id".into(), Value::Int(id))].into_iter().collect();
        let stored = sink.read("t", &key).unwrap().expect("every row is there");
        assert_eq!(
            stored.columns.unwrap().get("v"),
            Some(&Value::Text(text.clone()))
        );
    }
}

/// Issue 34: another connection holding the write lock (a second process writing to the same
/// file) is waited out, not a definite error; past every retry the error is transient and says
/// what holds the file.
#[test]
fn a_target_locked_by_another_connection_is_waited_for_and_then_transient() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("target.db");
    let mut sink = open(&path);
    sink.ensure_table(&schema()).unwrap();
    sink.set_busy_timeout(std::time::Duration::from_millis(100))
        .unwrap();

    // The lock is held for about 250 ms: longer than one busy timeout, shorter than all.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let release = std::thread::spawn(move || {
        locked_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(250));
        holder.execute_batch("COMMIT").unwrap();
    });
    locked_rx.recv().unwrap();
    let stats = sink
        .write(&[record(1, Some("a"), 10, "mysql-bin.000001:10")], &[])
        .expect("the write waits for the lock and succeeds");
    assert_eq!(stats.applied(), 1);
    release.join().unwrap();

    // Held for good: every attempt times out, and the error is transient and names the file.
    let holder = rusqlite::Connection::open(&path).unwrap();
    holder.execute_batch("BEGIN IMMEDIATE").unwrap();
    let err = sink
        .write(&[record(2, Some("b"), 11, "mysql-bin.000001:11")], &[])
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("locked by another connection") && msg.contains("target.db"),
        "{msg}"
    );
    holder.execute_batch("ROLLBACK").unwrap();
    assert_eq!(sink.read("t", &record(2, None, 0, "").key).unwrap(), None);
}
