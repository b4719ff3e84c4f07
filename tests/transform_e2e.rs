//! Mappings through the binary: a value the target schema rejects goes to the dead-letter table
//! with its context and is counted; nothing of it reaches the target; `transform explain` shows
//! the mapping applied to a real source row.

mod common;

use common::{run_ok, write_config};
use tidemark_testkit::MariaDb;

const MAPPING: &str = r#"
[[mapping]]
source = "shop.notes"
target = "memos"
[mapping.columns.body]
rename = "text"
type = "text(10)"
[mapping.computed.shout]
expr = "upper(body)"
"#;

#[test]
fn rejected_values_go_to_the_dead_letter_table_with_context_and_are_counted() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.notes (id INT PRIMARY KEY, body VARCHAR(100) NOT NULL);
         INSERT INTO shop.notes VALUES (1, 'short'), (2, 'this one is far too long');",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], MAPPING);
    let cfg = config.to_str().unwrap();
    let out = run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("rejected shop.notes: 1 changes (schema_rejection"),
        "{report}"
    );

    let conn = rusqlite::Connection::open(dir.path().join("target.db")).unwrap();
    let rows: Vec<(i64, String, String)> = conn
        .prepare("SELECT id, text, shout FROM memos WHERE _tm_deleted = 0 ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        rows,
        vec![(1, "short".to_string(), "SHORT".to_string())],
        "nothing of the rejected row reached the target"
    );
    let (class, kind, column, value, reason, position): (String, String, String, String, String, String) = conn
        .query_row(
            "SELECT class, kind, target_column, value, reason, position FROM _tm_dlq WHERE source_table = 'shop.notes' AND source_key = '{\"id\":2}'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
        )
        .expect("the rejection is in the dead-letter table");
    assert_eq!(
        (class.as_str(), kind.as_str(), column.as_str()),
        ("schema_rejection", "too_long", "text")
    );
    assert_eq!(value, "this one is far too long");
    assert!(reason.contains("10"), "{reason}");
    assert!(position.starts_with("mysql-bin."), "{position}");

    // A restart re-delivers nothing twice: the dead letter is keyed by table, key and version.
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    let n: i64 = conn
        .query_row("SELECT COUNT(*) FROM _tm_dlq", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    let status = run_ok(&["status", "--config", cfg]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("shop.notes"), "status lists dead letters");
    // Caught up: capture's stored position is the source's end of log.
    assert!(
        status.contains("capture: every change up to mysql-bin.")
            && status.contains("is in the target; 0 bytes of binlog behind"),
        "{status}"
    );
    // A write since: the bytes capture has yet to read.
    db.sql("INSERT INTO shop.notes VALUES (100, 'later')");
    let status = run_ok(&["status", "--config", cfg]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        !status.contains(" 0 bytes of binlog behind") && status.contains("bytes of binlog behind"),
        "{status}"
    );
}

#[test]
fn transform_explain_shows_the_mapping_and_a_transformed_source_row() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.notes (id INT PRIMARY KEY, body VARCHAR(100) NOT NULL);
         INSERT INTO shop.notes VALUES (7, 'hello');",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], MAPPING);
    let out = run_ok(&[
        "transform",
        "explain",
        "--config",
        config.to_str().unwrap(),
        "--table",
        "shop.notes",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("shop.notes -> memos"), "{text}");
    assert!(
        text.contains("HELLO"),
        "the sample row is transformed:\n{text}"
    );
    assert!(
        text.to_lowercase().contains("transform_version") || text.contains("version"),
        "{text}"
    );
}
