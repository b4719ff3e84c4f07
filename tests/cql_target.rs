//! The CQL target (`[target] kind = "cassandra"` or `"scylla"`) end to end through the binary,
//! on the Apache Cassandra node the test run shares (`dev/cassandra`; or the ScyllaDB that
//! `TIDEMARK_SCYLLA_URI` names): every table of Sakila and the type matrix checked row by row,
//! a backfill racing hot keys through `kill -9`, the node restarted under writes, every drift
//! class found and repaired, `target init` and its errors, the `gc_grace_seconds` warning.

mod common;

use std::time::Duration;

use common::workload::{hot_keys, preload, tables, Workload, SHOP};
use common::{
    assert_cql_target_equals_source, reconcile_classes, run_ok, spawn, tidemark, CqlTarget,
};
use tidemark_schemas::TableId;
use tidemark_testkit::{wait_for, MariaDb};

/// A config reading `databases` of `source_url` into `target`.
fn cql_config(
    dir: &std::path::Path,
    source_url: &str,
    databases: &[&str],
    target: &CqlTarget,
    extra: &str,
) -> std::path::PathBuf {
    let dbs: Vec<String> = databases.iter().map(|d| format!("\"{d}\"")).collect();
    let text = format!(
        "[source]\nurl = \"{source_url}\"\nserver_id = 4711\ndatabases = [{}]\n\n{}\n{extra}\n",
        dbs.join(", "),
        target.target_toml()
    );
    let path = dir.join("tidemark.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_unreachable_cql_node_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let target = CqlTarget::at(vec!["127.0.0.1:9".into()], "tidemark_test");
    // Distinct ports: the error must be about the node, not the source.
    let config = cql_config(dir.path(), "mysql://root@127.0.0.1:1", &["tm"], &target, "");
    let out = tidemark()
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--until-caught-up",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach ScyllaDB node(s) 127.0.0.1:9"),
        "{err}"
    );
}

#[test]
fn a_cql_target_without_nodes_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    for kind in ["scylla", "cassandra"] {
        std::fs::write(
            &path,
            format!("[source]\nurl = \"mysql://root@127.0.0.1:1\"\nserver_id = 1\ndatabases = [\"x\"]\n[target]\nkind = \"{kind}\"\n"),
        )
        .unwrap();
        let out = tidemark()
            .args(["run", "--config", path.to_str().unwrap()])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("target.scylla") && err.contains(kind), "{err}");
    }
}

/// Every table of Sakila through `tidemark run --until-caught-up`, and the type matrix (every
/// column type at its edges), checked row by row; then live changes; reconcile finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sakila_and_the_type_matrix_arrive_exactly_in_cql() {
    let db = MariaDb::start();
    db.load_sakila();
    db.sql(tidemark_testkit::TYPE_MATRIX_DDL);
    db.sql(tidemark_testkit::TYPE_MATRIX_DML);
    let target = CqlTarget::shared();
    let dir = tempfile::tempdir().unwrap();
    let config = cql_config(dir.path(), &db.url(), &["sakila", "tm"], &target, "");
    let cfg = config.to_str().unwrap();
    run_ok(&["target", "init", "--config", cfg]);
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    // Nothing of the matrix was rejected: the CQL types hold every value (README table).
    assert!(
        !dir.path().join("dead-letters.jsonl").exists()
            || std::fs::read_to_string(dir.path().join("dead-letters.jsonl"))
                .unwrap()
                .is_empty()
    );
    db.sql(
        "UPDATE tm.types SET vc = 'after', y = 2000 WHERE id = 1;
         UPDATE sakila.customer SET email = 'x@example.com' WHERE customer_id = 5;
         DELETE FROM sakila.payment WHERE payment_id = 7;",
    );
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);

    let mut all: Vec<TableId> = tidemark_testkit::SAKILA_ROW_COUNTS
        .iter()
        .map(|(t, _)| TableId::new("sakila", *t))
        .collect();
    all.push(TableId::new("tm", "types"));
    let rows = assert_cql_target_equals_source(&db.url(), &target, &all).await;
    let sakila: u64 = tidemark_testkit::SAKILA_ROW_COUNTS
        .iter()
        .map(|(_, n)| n)
        .sum();
    assert_eq!(rows as u64, sakila - 1 + 2);
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "{drift:?}");

    // `status` on the CQL target: the checkpoints (capture's, each table's backfill done).
    let out = run_ok(&["status", "--config", cfg]);
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.starts_with("checkpoints:\n"), "{status}");
    assert!(status.contains("capture"), "{status}");
    assert!(status.contains("sakila.payment"), "{status}");
    assert!(
        status.contains("rows: not counted on a CQL target"),
        "{status}"
    );
}

/// A value the mapping cannot make fit goes to the dead-letter file as a `schema_rejection`
/// naming the column, the value and the reason; the rest of the table arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_value_goes_to_the_dead_letter_file_with_its_context() {
    let db = MariaDb::start();
    db.sql(
        "CREATE DATABASE shop CHARACTER SET utf8mb4;
         CREATE TABLE shop.notes (id INT PRIMARY KEY, body VARCHAR(100) NOT NULL, at DATE);
         INSERT INTO shop.notes VALUES (1, 'short', '2024-01-01'), (2, 'far too long for ten', '2024-01-02');",
    );
    let target = CqlTarget::shared();
    let dir = tempfile::tempdir().unwrap();
    let mapping =
        "[[mapping]]\nsource = \"shop.notes\"\n[mapping.columns.body]\ntype = \"text(10)\"\n";
    let config = cql_config(dir.path(), &db.url(), &["shop"], &target, mapping);
    let cfg = config.to_str().unwrap();
    run_ok(&["target", "init", "--config", cfg]);
    let out = run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("rejected shop.notes: 1"));
    let dead = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap();
    let record: serde_json::Value = serde_json::from_str(dead.lines().next().unwrap()).unwrap();
    assert_eq!(record["class"], "schema_rejection", "{record}");
    assert_eq!(record["column"], "body", "{record}");
    assert_eq!(record["value"], "far too long for ten", "{record}");
    assert!(
        record["reason"].as_str().unwrap().contains("10"),
        "{record}"
    );
    // The reconciler reports the key as schema_rejection (actionable), nothing else.
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!(code, 2);
    assert_eq!(
        drift.get("shop.notes {\"id\":2}").map(String::as_str),
        Some("schema_rejection")
    );
    assert_eq!(drift.len(), 1, "{drift:?}");

    // A value the mapping admits but CQL refuses: an empty text as a partition key. The row goes
    // to the dead-letter file with the target's reason; its neighbours arrive.
    db.sql(
        "CREATE TABLE shop.tags (name VARCHAR(20) PRIMARY KEY, n INT);
         INSERT INTO shop.tags VALUES ('a', 1), ('', 2), ('b', 3);",
    );
    run_ok(&["target", "init", "--config", cfg]);
    let out = run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    let report = String::from_utf8_lossy(&out.stdout);
    // Twice: the row's backfill copy and its captured insert.
    assert!(
        report.contains("rejected shop.tags: 2") && report.contains("dead-letters.jsonl"),
        "{report}"
    );
    let dead = std::fs::read_to_string(dir.path().join("dead-letters.jsonl")).unwrap();
    let refused: serde_json::Value = dead
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["source_table"] == "shop.tags")
        .expect("the refused row is a dead letter");
    assert_eq!(refused["kind"], "target_refused", "{refused}");
    assert_eq!(refused["key"], "{\"name\":\"\"}", "{refused}");
    assert_eq!(refused["column"], "name", "{refused}");
    assert_eq!(refused["target_type"], "text(20) not null", "{refused}");
    let stored = tokio::task::block_in_place(|| {
        use tidemark_sink::Sink;
        let mut sink = target.sink();
        let plan = tidemark_transform::Transformer::new(&[]).unwrap();
        let schema = tidemark_schemas::SourceSchema::clone(&source_schema_of_tags(&db));
        sink.ensure_table(plan.plan(&schema).unwrap().target_schema())
            .unwrap();
        sink.scan("tags", None, 100).unwrap().len()
    });
    assert_eq!(stored, 2, "the neighbours of the refused row arrived");
    // The reconciler reads the refused key as absent (no row can be stored under it) and
    // reports it as schema_rejection, beside the earlier one.
    let (code, drift) = reconcile_classes(cfg, dir.path(), &[]);
    assert_eq!(code, 2, "{drift:?}");
    assert_eq!(
        drift.get("shop.tags {\"name\":\"\"}").map(String::as_str),
        Some("schema_rejection"),
        "{drift:?}"
    );
}

/// `shop.tags` as the source describes it.
fn source_schema_of_tags(db: &MariaDb) -> tidemark_schemas::SourceSchema {
    let url = db.url();
    common::block_on_own_runtime(async move {
        let mut source = tidemark_ingest::Source::connect(&url).await.unwrap();
        source
            .load_schema(&TableId::new("shop", "tags"))
            .await
            .unwrap()
    })
}

/// A backfill racing a hot-key workload into CQL, killed with SIGKILL three times: the target
/// ends equal to the source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_racing_hot_keys_survives_kill_9_three_times() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 5_000);
    let target = CqlTarget::shared();
    let dir = tempfile::tempdir().unwrap();
    let config = cql_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &target,
        "[backfill]\nchunk_rows = 200\nmin_chunk_rows = 100\nrows_per_second = 1500\n[apply]\nbatch_records = 300\n",
    );
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["target", "init", "--config", &cfg]);
    // The workload races the first run; the two after it are killed in its backlog.
    let mut load = Some(Workload::start(db.url(), hot_keys(5_000)));
    for kill in 0..3 {
        let mut child = spawn(
            &["run", "--config", &cfg],
            &dir.path().join(format!("run-{kill}.log")),
        );
        // Each run gets somewhere before it dies: wait for its capture to start.
        let log = dir.path().join(format!("run-{kill}.log"));
        wait_for(
            "the run to start capturing",
            Duration::from_secs(60),
            || {
                std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("binlog capture started")
            },
        );
        tokio::time::sleep(Duration::from_millis(700 + 400 * kill)).await;
        child.kill().expect("kill -9");
        child.wait().unwrap();
        if let Some(load) = load.take() {
            load.finish(300).await;
        }
    }
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let rows = assert_cql_target_equals_source(&db.url(), &target, &tables()).await;
    assert!(rows > 7_000, "compared {rows} rows");
    let (code, drift) = reconcile_classes(&cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "{drift:?}");
}

/// The Cassandra node stops and starts again while `tidemark run` applies a backfill and live
/// changes: writes are retried, nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_restarted_under_writes_loses_nothing() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 5_000);
    let (target, node) = CqlTarget::dedicated();
    let dir = tempfile::tempdir().unwrap();
    let config = cql_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &target,
        "[backfill]\nchunk_rows = 200\nrows_per_second = 1500\n",
    );
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["target", "init", "--config", &cfg]);
    let log = dir.path().join("run.log");
    // Writes go on until the node is down; the node comes back while the run works through
    // the backlog (the CQL target of a debug build applies a few thousand changes a second).
    let load = Workload::start(db.url(), hot_keys(5_000));
    let mut child = spawn(&["run", "--config", &cfg], &log);
    wait_for(
        "the backfill to be under way",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("apply progress")
                || std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("backfill of table started")
        },
    );
    println!("the backfill is under way; stopping the node");
    node.stop();
    let ran = load.finish(300).await;
    println!("the node is down; the workload ran {ran} statements; starting the node again");
    node.start_again();
    println!("the node is up again");
    // The run is still alive: it retried, it did not give up.
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run stopped:\n{}",
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("scylla::"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    child.kill().unwrap();
    child.wait().unwrap();
    println!("catching up");
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    println!("caught up; comparing");
    let rows = assert_cql_target_equals_source(&db.url(), &target, &tables()).await;
    assert!(rows > 7_000, "compared {rows} rows");
}

/// Faults injected into the CQL target and the source, one class each; repair clears them.
/// Also issue 34: a row copied under a new key with its lineage, and one with no lineage at
/// all (CQL has no NOT NULL to prevent it), are `extra`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_drift_class_is_found_on_cql_and_repair_clears_it() {
    let db = MariaDb::start();
    db.sql(SHOP);
    preload(&db, 200);
    let target = CqlTarget::shared();
    let dir = tempfile::tempdir().unwrap();
    let config = cql_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &target,
        "[reconcile]\nsettle_timeout_seconds = 3\n",
    );
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["target", "init", "--config", &cfg]);
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let (code, drift) = reconcile_classes(&cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "{drift:?}");

    // Faults a faulty writer in tidemark's version range would leave (an application writing
    // with the database's own wall-clock timestamps outranks every version by design, so that
    // it wins after cutover; see the README's Known limits).
    let ks = &target.keyspace;
    let version = |id: i64| -> i64 {
        tokio::task::block_in_place(|| {
            use tidemark_sink::Sink;
            let mut sink = target.sink();
            sink.ensure_table(&sink_schema_of_accounts()).unwrap();
            let key = tidemark_schemas::Row(vec![("id".into(), tidemark_schemas::Value::Int(id))]);
            sink.read("accounts", &key)
                .unwrap()
                .expect("the key is there")
                .lineage
                .version
        })
    };
    let v1 = version(1);
    target.cql(&format!(
        "DELETE FROM \"{ks}\".accounts USING TIMESTAMP {v1} WHERE id = 1"
    )); // missing
    let v3 = version(3);
    target.cql(&format!(
        "UPDATE \"{ks}\".accounts USING TIMESTAMP {} SET note = 'edited' WHERE id = 3",
        v3 + 1
    )); // value_mismatch
        // extra: a row copied under a new key, lineage and all; and one with no lineage at all.
    tokio::task::block_in_place(|| {
        use tidemark_sink::Sink;
        let mut sink = target.sink();
        sink.ensure_table(&sink_schema_of_accounts()).unwrap();
        let key5 = tidemark_schemas::Row(vec![("id".into(), tidemark_schemas::Value::Int(5))]);
        let mut copy = sink
            .read("accounts", &key5)
            .unwrap()
            .expect("key 5 is there");
        copy.key = tidemark_schemas::Row(vec![("id".into(), tidemark_schemas::Value::Int(9000))]);
        let columns = copy.columns.as_mut().unwrap();
        columns.0[0].1 = tidemark_schemas::Value::Int(9000);
        sink.write(&[copy], &[]).unwrap();
    });
    target.cql(&format!(
        "INSERT INTO \"{ks}\".accounts (id, balance, note) VALUES (9001, 1, 'no lineage') USING TIMESTAMP 1000"
    ));
    // stale: a source change that never reached the binlog.
    db.sql("SET sql_log_bin = 0; UPDATE shop.accounts SET balance = -5 WHERE id = 7");

    let (code, drift) = reconcile_classes(&cfg, dir.path(), &[]);
    assert_eq!(code, 2);
    let class = |key: &str| drift.get(&format!("shop.accounts {key}")).cloned();
    assert_eq!(class("{\"id\":1}").as_deref(), Some("missing"), "{drift:?}");
    assert_eq!(
        class("{\"id\":3}").as_deref(),
        Some("value_mismatch"),
        "{drift:?}"
    );
    assert_eq!(class("{\"id\":7}").as_deref(), Some("stale"), "{drift:?}");
    assert_eq!(
        class("{\"id\":9000}").as_deref(),
        Some("extra"),
        "{drift:?}"
    );
    assert_eq!(
        class("{\"id\":9001}").as_deref(),
        Some("extra"),
        "{drift:?}"
    );
    assert_eq!(drift.len(), 5, "{drift:?}");

    // Repair needs the binlog to move past the out-of-band change (README, Known limits).
    db.sql("FLUSH BINARY LOGS");
    reconcile_classes(&cfg, dir.path(), &["--repair"]);
    let (code, drift) = reconcile_classes(&cfg, dir.path(), &[]);
    assert_eq!((code, drift.len()), (0, 0), "{drift:?}");
    let rows = assert_cql_target_equals_source(&db.url(), &target, &tables()).await;
    assert_eq!(rows, 400);
}

/// `target init` twice is harmless; against a table whose columns differ, it names the table
/// and the column; a short `gc_grace_seconds` is warned about, read from the table itself.
#[test]
fn target_init_is_idempotent_names_a_conflicting_column_warns_about_gc_grace_and_refuses_another_format(
) {
    let db = MariaDb::start();
    db.sql(SHOP);
    let target = CqlTarget::shared();
    let dir = tempfile::tempdir().unwrap();
    let config = cql_config(dir.path(), &db.url(), &["shop"], &target, "");
    let cfg = config.to_str().unwrap();
    run_ok(&["target", "init", "--config", cfg]);
    let out = run_ok(&["target", "init", "--config", cfg]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("accounts"));

    let ks = &target.keyspace;
    target.cql(&format!(
        "ALTER TABLE \"{ks}\".links WITH gc_grace_seconds = 60"
    ));
    let out = run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("gc_grace_seconds") && err.contains("links") && err.contains("60"),
        "{err}"
    );

    // Another keyspace whose `accounts` has `balance` as text.
    let other = CqlTarget::at(
        target.nodes.clone(),
        &tidemark_testkit::servers::unique_name("ks"),
    );
    target.cql(&format!(
        "CREATE KEYSPACE \"{}\" WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': 1}}",
        other.keyspace
    ));
    target.cql(&format!(
        "CREATE TABLE \"{}\".accounts (id int PRIMARY KEY, balance text)",
        other.keyspace
    ));
    let config = cql_config(dir.path(), &db.url(), &["shop"], &other, "");
    let out = tidemark()
        .args(["target", "init", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("accounts") && err.contains("balance"), "{err}");

    // A keyspace written by a build of another target format is refused, naming the keyspace.
    target.cql(&format!(
        "UPDATE \"{ks}\".tidemark_checkpoints SET value = '0' WHERE stage = 'target_format' AND scope = '*'"
    ));
    let config = cql_config(dir.path(), &db.url(), &["shop"], &target, "");
    let out = tidemark()
        .args(["status", "--config", config.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(ks.as_str()) && err.contains("target format 0"),
        "{err}"
    );
}

/// The target schema of `shop.accounts` under the identity mapping.
fn sink_schema_of_accounts() -> tidemark_schemas::TargetSchema {
    use tidemark_schemas::{TargetColumn, TargetType};
    let col = |name: &str, ty, nullable| TargetColumn {
        name: name.into(),
        ty,
        nullable,
    };
    tidemark_schemas::TargetSchema {
        table: "accounts".into(),
        columns: vec![
            col("id", TargetType::Int { bits: 32 }, false),
            col("balance", TargetType::Int { bits: 64 }, false),
            col(
                "note",
                TargetType::Text {
                    max_chars: Some(40),
                },
                true,
            ),
        ],
        key: vec!["id".into()],
    }
}
