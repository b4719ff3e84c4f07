//! `bench/run` must not rot: a tiny run (10,000 rows, one round, on its own MariaDB, Apache Kafka
//! and Apache Cassandra) prints every figure, each a number. No speed is asserted here: the
//! figures are for `bench/run` on a quiet machine.

use std::collections::BTreeMap;
use std::process::Command;

/// Every line `bench/run` promises, in the order it prints them.
const FIGURES: &[&str] = &[
    "cores",
    "rows",
    "runs",
    "binlog_mb",
    "raw_binlog_decode_rows_per_s",
    "capture_rows_per_s",
    "capture_peak_rss_mb",
    "peer_debezium_capture_rows_per_s",
    "peer_debezium_peak_rss_mb",
    "capture_vs_debezium",
    "peer_python_replication_rows_per_s",
    "raw_scan_rows_per_s",
    "backfill_rows_per_s",
    "tidemark_peak_rss_mb",
    "reconcile_rows_per_s",
    "raw_consume_rows_per_s",
    "apply_rows_per_s",
    "apply_vs_raw_consume",
    "capture_vs_raw_decode",
    "backfill_vs_raw_scan",
    "reconcile_vs_raw_scan",
    "cql_raw_write_rows_per_s",
    "backfill_cql_rows_per_s",
    "backfill_cql_vs_raw_cql_write",
    "pipeline_kafka_cql_rows_per_s",
    "pipeline_kafka_cql_vs_raw_cql_write",
];

#[test]
fn bench_run_prints_every_figure() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let work = tempfile::Builder::new()
        .prefix("tidemark-bench-smoke-")
        .tempdir()
        .expect("a scratch directory");
    let output = Command::new(format!("{repo}/bench/run"))
        .args(["--rows", "10000", "--runs", "1", "--profile", "dev"])
        .arg("--tidemark")
        .arg(env!("CARGO_BIN_EXE_tidemark"))
        .arg("--work")
        .arg(work.path().join("bench"))
        .current_dir(repo)
        .output()
        .expect("bench/run starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench/run failed ({}).\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    let mut figures = BTreeMap::new();
    for line in stdout.lines() {
        let (name, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a name=value line: {line:?}\nstdout:\n{stdout}"));
        assert!(
            figures.insert(name, value).is_none(),
            "{name} printed twice\nstdout:\n{stdout}"
        );
    }
    for name in FIGURES {
        let value = figures
            .get(name)
            .unwrap_or_else(|| panic!("no {name}= line\nstdout:\n{stdout}\nstderr:\n{stderr}"));
        let numeric = value
            .parse::<f64>()
            .is_ok_and(|v| v.is_finite() && v >= 0.0);
        assert!(
            numeric,
            "{name}={value} is not a number\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    assert_eq!(figures["rows"], "10000", "stdout:\n{stdout}");
    assert_eq!(figures["runs"], "1", "stdout:\n{stdout}");
}
