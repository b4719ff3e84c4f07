//! `[target] kind = "scylla"` through the binary. The unreachable-node test always runs; the
//! end-to-end run needs a ScyllaDB server (`TIDEMARK_SCYLLA_URI=host:port`, see the README).

mod common;

use common::{run_ok, tidemark};
use tidemark_testkit::MariaDb;

/// A config whose target is ScyllaDB at `node`.
fn scylla_config(
    dir: &std::path::Path,
    source_url: &str,
    node: &str,
    keyspace: &str,
) -> std::path::PathBuf {
    let text = format!(
        "[source]\nurl = \"{source_url}\"\nserver_id = 4711\ndatabases = [\"tm\"]\n\n[reconcile]\nsettle_timeout_seconds = 10\n\n[target]\nkind = \"scylla\"\n\n[target.scylla]\nnodes = [\"{node}\"]\nkeyspace = \"{keyspace}\"\nreplication_factor = 1\nconnect_timeout_seconds = 3\n"
    );
    let path = dir.join("scylla.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn an_unreachable_scylla_node_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    // Distinct ports: the error must be about the node, not the source.
    let config = scylla_config(
        dir.path(),
        "mysql://root@127.0.0.1:1",
        "127.0.0.1:9",
        "tidemark_test",
    );
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
fn a_scylla_target_without_nodes_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.toml");
    std::fs::write(
        &path,
        "[source]\nurl = \"mysql://root@127.0.0.1:1\"\nserver_id = 1\ndatabases = [\"x\"]\n[target]\nkind = \"scylla\"\n",
    )
    .unwrap();
    let out = tidemark()
        .args(["run", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("target.scylla"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_reconcile_end_to_end_on_scylla() {
    let Ok(node) = std::env::var("TIDEMARK_SCYLLA_URI") else {
        eprintln!("run_and_reconcile_end_to_end_on_scylla NOT RUN: TIDEMARK_SCYLLA_URI is not set, so no ScyllaDB server was tested (see the README)");
        return;
    };
    let db = MariaDb::start();
    db.sql(tidemark_testkit::TYPE_MATRIX_DDL);
    db.sql(tidemark_testkit::TYPE_MATRIX_DML);
    let dir = tempfile::tempdir().unwrap();
    let keyspace = format!("tidemark_e2e_{}", std::process::id());
    let config = scylla_config(dir.path(), &db.url(), &node, &keyspace);
    let cfg = config.to_str().unwrap();
    run_ok(&["target", "init", "--config", cfg]);
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    db.sql("UPDATE tm.types SET vc = 'after' WHERE id = 1");
    run_ok(&["run", "--config", cfg, "--until-caught-up"]);
    let out = tidemark()
        .args(["reconcile", "--config", cfg])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "no drift on ScyllaDB:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
