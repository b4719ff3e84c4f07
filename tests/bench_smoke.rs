//! `bench/run` must not rot: a tiny run (10,000 rows, one round, on its own MariaDB, Apache Kafka
//! and Apache Cassandra) prints every figure, each a number. No speed is asserted here: the
//! figures are for `bench/run` on a quiet machine.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

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
    "backfill_2_parts_rows_per_s",
    "backfill_2_parts_vs_1_part",
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

/// The whole run must end well before nextest's limit for this test (960 s, `.config/nextest.toml`)
/// so that a run that hangs is stopped here, with what it printed, instead of by nextest without.
const RUN_DEADLINE: Duration = Duration::from_secs(840);
/// One step of the run (a server start, a drain, a backfill) longer than this is stopped by
/// `bench/run` itself with an error naming the step.
const STEP_TIMEOUT_SECONDS: &str = "300";

#[test]
fn bench_run_prints_every_figure() {
    let repo = env!("CARGO_MANIFEST_DIR");
    let work = tempfile::Builder::new()
        .prefix("tidemark-bench-smoke-")
        .tempdir()
        .expect("a scratch directory");
    let stdout_path = work.path().join("stdout");
    let stderr_path = work.path().join("stderr");
    let mut child = Command::new(format!("{repo}/bench/run"))
        .args(["--rows", "10000", "--runs", "1", "--profile", "dev"])
        .args(["--step-timeout", STEP_TIMEOUT_SECONDS])
        .arg("--tidemark")
        .arg(env!("CARGO_BIN_EXE_tidemark"))
        .arg("--work")
        .arg(work.path().join("bench"))
        .current_dir(repo)
        .process_group(0)
        .stdout(File::create(&stdout_path).expect("a stdout file"))
        .stderr(File::create(&stderr_path).expect("a stderr file"))
        .spawn()
        .expect("bench/run starts");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for bench/run") {
            break Some(status);
        }
        if started.elapsed() > RUN_DEADLINE {
            stop_process_group(&mut child);
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "bench/run had not ended after {} s and was stopped.\nstdout:\n{stdout}\nstderr:\n{stderr}",
            RUN_DEADLINE.as_secs()
        );
    };
    assert!(
        status.success(),
        "bench/run failed ({status}).\nstdout:\n{stdout}\nstderr:\n{stderr}"
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

/// Stops bench/run and everything it started in its process group: TERM (its exit trap stops its
/// servers), then KILL for whatever is left after ten seconds.
fn stop_process_group(child: &mut Child) {
    let group = format!("-{}", child.id());
    let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(10) {
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    let _ = child.wait();
}
