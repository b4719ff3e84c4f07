//! Shared helpers for end-to-end tests of the `tidemark` binary.
#![allow(dead_code)]

pub mod workload;

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

/// A `tidemark` process a test started: killed when dropped, so that a test that panics
/// (a failed assertion, a timed-out wait) leaves no `tidemark` running after it.
pub struct Spawned(Child);

impl std::ops::Deref for Spawned {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A checkpoint stored in a SQLite target (its value), read while other processes may write it.
pub fn target_checkpoint(target: &Path, stage: &str, scope: &str) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(target, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    conn.query_row(
        "SELECT value FROM _tm_checkpoints WHERE stage = ?1 AND scope = ?2",
        [stage, scope],
        |r| r.get(0),
    )
    .ok()
}

/// Start `tidemark ARGS` with its log (stderr) in `log`.
pub fn spawn(args: &[&str], log: &Path) -> Spawned {
    let log = std::fs::File::create(log).expect("log file");
    Spawned(
        tidemark()
            .args(args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tidemark"),
    )
}

/// `tidemark reconcile`: the exit code and the drift classes by "table key" (see
/// [`reconcile_drift`]).
pub fn reconcile_classes(cfg: &str, dir: &Path, extra: &[&str]) -> (i32, BTreeMap<String, String>) {
    let (code, _, drift) = reconcile_drift(cfg, dir, extra);
    (code, drift)
}

/// Run `tidemark reconcile` (it must exit 0 or 2) writing its drift records to
/// `dir/drift.jsonl`: (exit code, stdout, drift class by "table key"). A key reported twice fails.
pub fn reconcile_drift(
    cfg: &str,
    dir: &Path,
    extra: &[&str],
) -> (i32, String, BTreeMap<String, String>) {
    let output = dir.join("drift.jsonl");
    let _ = std::fs::remove_file(&output);
    let mut args = vec![
        "reconcile",
        "--config",
        cfg,
        "--output",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = tidemark().args(&args).output().expect("run reconcile");
    let code = out.status.code().expect("exit code");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        code == 0 || code == 2,
        "reconcile failed ({code}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut by_key = BTreeMap::new();
    for line in std::fs::read_to_string(&output).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("drift record is JSON");
        let key = format!(
            "{} {}",
            v["table"].as_str().unwrap(),
            v["key"].as_str().unwrap()
        );
        let previous = by_key.insert(key.clone(), v["class"].as_str().unwrap().to_string());
        assert!(previous.is_none(), "{key} reported twice");
    }
    (code, stdout, by_key)
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

/// The CQL target of a test: the shared Cassandra node (or `TIDEMARK_SCYLLA_URI`'s ScyllaDB) and
/// a keyspace of the test's own.
pub struct CqlTarget {
    pub nodes: Vec<String>,
    pub keyspace: String,
    _server: Option<tidemark_testkit::servers::Server>,
}

impl CqlTarget {
    pub fn shared() -> CqlTarget {
        let keyspace = tidemark_testkit::servers::unique_name("ks");
        match std::env::var("TIDEMARK_SCYLLA_URI") {
            Ok(uri) => CqlTarget {
                nodes: uri.split(',').map(|s| s.trim().to_string()).collect(),
                keyspace,
                _server: None,
            },
            Err(_) => {
                let server =
                    tidemark_testkit::servers::shared(tidemark_testkit::servers::Kind::Cassandra);
                CqlTarget {
                    nodes: vec![server.addr.clone()],
                    keyspace,
                    _server: Some(server),
                }
            }
        }
    }

    /// A target at `nodes` (nothing started), e.g. an unreachable one or another keyspace.
    pub fn at(nodes: Vec<String>, keyspace: &str) -> CqlTarget {
        CqlTarget {
            nodes,
            keyspace: keyspace.to_string(),
            _server: None,
        }
    }

    /// A node of this test only, which it may stop and start again.
    pub fn dedicated() -> (CqlTarget, tidemark_testkit::servers::Server) {
        let server =
            tidemark_testkit::servers::dedicated(tidemark_testkit::servers::Kind::Cassandra);
        (
            CqlTarget {
                nodes: vec![server.addr.clone()],
                keyspace: tidemark_testkit::servers::unique_name("ks"),
                _server: None,
            },
            server,
        )
    }

    /// `[target]` of a tidemark configuration writing here (`kind = "cassandra"`).
    pub fn target_toml(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("\"{n}\"")).collect();
        format!(
            "[target]\nkind = \"cassandra\"\ndead_letter_path = \"dead-letters.jsonl\"\n[target.scylla]\nnodes = [{}]\nkeyspace = \"{}\"\nconsistency = \"one\"\nreplication_factor = 1\nconnect_timeout_seconds = 10\n",
            nodes.join(", "),
            self.keyspace
        )
    }

    pub fn sink_config(&self) -> tidemark_sink::ScyllaConfig {
        let mut c = tidemark_sink::ScyllaConfig::new(self.nodes.clone(), self.keyspace.clone());
        c.replication_factor = 1;
        c.consistency = tidemark_sink::scylladb::ConsistencyLevel::One;
        c
    }

    /// A sink on this keyspace (its own runtime): call it off async workers.
    pub fn sink(&self) -> tidemark_sink::ScyllaSink {
        tidemark_sink::ScyllaSink::connect(self.sink_config())
            .unwrap_or_else(|e| panic!("connect to the CQL target {:?}: {e}", self.nodes))
    }

    /// The count a `SELECT COUNT(*) …` statement answers, or `None` when it fails (e.g. the
    /// table does not exist yet). Rows deleted in CQL are not counted: what is counted is live.
    pub fn count(&self, statement: &str) -> Option<i64> {
        let nodes = self.nodes.clone();
        let statement = statement.to_string();
        block_on_own_runtime(async move {
            let (n,): (i64,) = cql_session(&nodes)
                .await
                .ok()?
                .query_unpaged(statement, ())
                .await
                .ok()?
                .into_rows_result()
                .ok()?
                .first_row()
                .ok()?;
            Some(n)
        })
    }

    /// Run one CQL statement (e.g. a fault injected out of band).
    pub fn cql(&self, statement: &str) {
        let nodes = self.nodes.clone();
        let statement = statement.to_string();
        block_on_own_runtime(async move {
            cql_session(&nodes)
                .await
                .expect("CQL session")
                .query_unpaged(statement.clone(), ())
                .await
                .unwrap_or_else(|e| panic!("CQL `{statement}`: {e}"));
        })
    }
}

/// A CQL session on `nodes`.
async fn cql_session(
    nodes: &[String],
) -> Result<scylla::client::session::Session, scylla::errors::NewSessionError> {
    scylla::client::session_builder::SessionBuilder::new()
        .known_nodes(nodes)
        .build()
        .await
}

/// Run `work` to its end on a runtime of its own, on a thread of its own: callable from a test's
/// async code and from plain threads alike.
pub fn block_on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(work)
    })
    .join()
    .unwrap()
}

/// Assert that the CQL target holds exactly what the identity mapping makes of every source row
/// of `tables`: the same keys, every column equal (read back through the sink). Returns the rows
/// compared.
pub async fn assert_cql_target_equals_source(
    url: &str,
    target: &CqlTarget,
    tables: &[TableId],
) -> usize {
    use tidemark_schemas::{BinlogPosition, ChangeEvent, Operation};
    use tidemark_sink::Sink;
    let transformer = tidemark_transform::Transformer::new(&[]).expect("identity mapping");
    let mut source = Source::connect(url).await.expect("connect to source");
    let mut conn = source.new_connection().await.expect("connection");
    let mut expected_by_table = Vec::new();
    for table in tables {
        let schema = source.load_schema(table).await.expect("source schema");
        let plan = transformer.plan(&schema).expect("plan");
        let rows = select_rows(&mut conn, &schema, "", mysql_async::Params::Empty)
            .await
            .expect("source rows");
        let mut expected = BTreeMap::new();
        for row in rows {
            let key = tidemark_ingest::capture::key_of(&schema, &row);
            let change = ChangeEvent {
                source_server: "s".into(),
                table: *table,
                op: Operation::Backfill,
                key,
                after: Some(row),
                version: 0,
                position: BinlogPosition::new("-", 0),
                gtid: None,
                commit_time_us: 0,
                chunk: None,
            };
            let record = plan.apply(&change).expect("the source row maps");
            expected.insert(record.key.canonical_text(), record.columns.expect("a row"));
        }
        expected_by_table.push((*table, plan.target_schema().clone(), expected));
    }
    tokio::task::block_in_place(|| {
        let mut sink = target.sink();
        let mut compared = 0;
        for (table, schema, expected) in expected_by_table {
            sink.ensure_table(&schema)
                .expect("announce the target table");
            let mut actual = BTreeMap::new();
            let mut after = None;
            loop {
                let page = sink
                    .scan(&schema.table, after.as_ref(), 1000)
                    .expect("scan the target");
                let Some(last) = page.last() else { break };
                after = Some(last.key.clone());
                let full = page.len() == 1000;
                for r in page.into_iter().filter(|r| !r.is_tombstone()) {
                    actual.insert(r.key.canonical_text(), r.columns.expect("a live row"));
                }
                if !full {
                    break;
                }
            }
            for (key, want) in &expected {
                match actual.get(key) {
                    None => panic!("{table} key {key}: missing from the CQL target"),
                    Some(have) => assert_eq!(have, want, "{table} key {key}"),
                }
            }
            for key in actual.keys() {
                assert!(
                    expected.contains_key(key),
                    "{table} key {key}: live in the CQL target but gone from the source"
                );
            }
            compared += expected.len();
        }
        compared
    })
}

/// The tidemark metrics the Helm chart's alerts and Grafana dashboard use
/// (`dev/helm-check --metrics-used`) whose name starts with one of `prefixes` (every one when
/// `prefixes` is empty), less those starting with one of `except`.
pub fn chart_metrics(prefixes: &[&str], except: &[&str]) -> Vec<String> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let run = Command::new(root.join("dev/helm-check"))
        .arg("--metrics-used")
        .arg(out.path())
        .current_dir(&root)
        .output()
        .expect("run dev/helm-check");
    assert!(
        run.status.success(),
        "dev/helm-check --metrics-used:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let names: Vec<String> = std::fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .filter(|n| prefixes.is_empty() || prefixes.iter().any(|p| n.starts_with(p)))
        .filter(|n| !except.iter().any(|p| n.starts_with(p)))
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "the chart uses some of these metrics");
    names
}

/// Every metric of `names` has a sample in `scraped` (a `/metrics` body).
pub fn assert_serves(scraped: &str, names: &[String]) {
    for name in names {
        assert!(
            scraped.lines().any(|l| !l.starts_with('#')
                && (l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))),
            "the chart's alerts or dashboard use {name}, which this run does not serve:\n{scraped}"
        );
    }
}

/// GET `path` on 127.0.0.1:`port`; (status code, body), or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    Some((status, body))
}

/// The value of the series `name` (with exactly `labels`, e.g. `{table="shop.t"}` or empty) in
/// a Prometheus text body.
pub fn series(body: &str, name: &str, labels: &str) -> Option<f64> {
    let want = format!("{name}{labels} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse().ok())
}
