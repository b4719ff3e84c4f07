//! Shared helpers for end-to-end tests of the `tidemark` binary.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use rusqlite::types::Value as SqlValue;
use tidemark_ingest::source::select_rows;
use tidemark_ingest::Source;
use tidemark_schemas::TableId;
use tidemark_sink::sqlite::{quote, storage_value};
use tidemark_transform::target_type_for;

pub fn tidemark() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tidemark"));
    cmd.env("TIDEMARK_LOG", "info");
    cmd
}

/// Write a configuration file for `url`, capturing `databases`, into `dir`.
pub fn write_config(dir: &Path, url: &str, databases: &[&str], extra: &str) -> PathBuf {
    let dbs: Vec<String> = databases.iter().map(|d| format!("\"{d}\"")).collect();
    let text = format!(
        "[source]\nurl = \"{url}\"\nserver_id = 4711\ndatabases = [{}]\n\n[target]\nkind = \"sqlite\"\npath = \"target.db\"\n{extra}\n",
        dbs.join(", ")
    );
    let path = dir.join("tidemark.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// Run `tidemark ARGS` to completion; panics with its output unless it exits 0.
pub fn run_ok(args: &[&str]) -> Output {
    let out = tidemark().args(args).output().expect("start tidemark");
    assert!(
        out.status.success(),
        "tidemark {args:?} failed with {}:\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn spawn(args: &[&str], log: &Path) -> Child {
    let log = std::fs::File::create(log).expect("log file");
    tidemark()
        .args(args)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tidemark")
}

/// Live target rows of `table` keyed by source key text, as SQLite stores them.
fn target_rows(db: &Path, table: &str, columns: &[String]) -> BTreeMap<String, Vec<SqlValue>> {
    let conn = rusqlite::Connection::open(db).expect("open target");
    let cols: Vec<String> = columns.iter().map(|c| quote(c)).collect();
    let sql = format!(
        "SELECT _tm_source_key, {} FROM {} WHERE _tm_deleted = 0",
        cols.join(", "),
        quote(table)
    );
    let mut stmt = match conn.prepare(&sql) {
        Ok(s) => s,
        Err(rusqlite::Error::SqliteFailure(_, Some(m))) if m.contains("no such table") => {
            return BTreeMap::new()
        }
        Err(e) => panic!("read target table {table}: {e}"),
    };
    let rows = stmt
        .query_map([], |r| {
            let key: String = r.get(0)?;
            let vals = (1..=columns.len())
                .map(|i| r.get::<_, SqlValue>(i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((key, vals))
        })
        .expect("query target");
    rows.map(|r| r.expect("target row")).collect()
}

/// Assert that every table equals the source exactly: same keys, same values as stored.
/// Returns the number of rows compared.
pub async fn assert_target_equals_source(url: &str, target: &Path, tables: &[TableId]) -> usize {
    let mut source = Source::connect(url).await.expect("connect to source");
    let mut conn = source.new_connection().await.expect("connection");
    let mut compared = 0;
    for table in tables {
        let schema = source.load_schema(table).await.expect("source schema");
        let rows = select_rows(&mut conn, &schema, "", mysql_async::Params::Empty)
            .await
            .expect("source rows");
        let names: Vec<String> = schema.columns.iter().map(|c| c.name.to_string()).collect();
        let expected: BTreeMap<String, Vec<SqlValue>> = rows
            .iter()
            .map(|row| {
                let key = tidemark_ingest::capture::key_of(&schema, row).canonical_text();
                let vals = schema
                    .columns
                    .iter()
                    .zip(row.iter())
                    .map(|(c, (_, v))| storage_value(&target_type_for(&c.ty), v))
                    .collect();
                (key, vals)
            })
            .collect();
        let actual = target_rows(target, &table.table, &names);
        for (key, vals) in &expected {
            match actual.get(key) {
                None => panic!("{table} key {key}: missing from the target"),
                Some(got) => {
                    for (i, (want, have)) in vals.iter().zip(got).enumerate() {
                        assert_eq!(have, want, "{table} key {key} column {}", names[i]);
                    }
                }
            }
        }
        for key in actual.keys() {
            assert!(
                expected.contains_key(key),
                "{table} key {key}: live in the target but gone from the source"
            );
        }
        compared += expected.len();
    }
    compared
}
