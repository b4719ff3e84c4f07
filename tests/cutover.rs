//! The cutover gate, embedded mode on Sakila's payments: NOT READY for each criterion in turn (nothing run yet, a
//! backfill running, capture behind, no complete reconcile, a stale one, drift, a dead letter not
//! accepted, an invariant that does not hold), then READY, then the authority-transfer record,
//! then the watch after the transfer. And in Kafka mode, where every piece of evidence comes from
//! the topics: the apply group's frontier, the checkpoints topic, the dead-letter topic.

mod common;
mod kafka_support;

use common::{run_ok, spawn, tidemark, write_config};
use tidemark_testkit::MariaDb;

const SHOP: &str = "CREATE DATABASE shop CHARACTER SET utf8mb4;
CREATE TABLE shop.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, note VARCHAR(40));";

/// A note longer than 8 characters cannot be held by the target: a dead letter.
const SETTINGS: &str = r#"
[backfill]
chunk_rows = 100
min_chunk_rows = 100
rows_per_second = 300

[cutover]
max_capture_lag_bytes = 2000
max_reconcile_age_seconds = 600

[[mapping]]
source = "shop.accounts"
target = "accounts"
[mapping.columns.note]
type = "text(8)"

[[invariant]]
name = "total balance"
table = "shop.accounts"
source = "sum(balance) + count(*)"
target = "sum(balance) + count(*)"
"#;

/// Sakila's payments with a target column narrower than the source's (decimal(4,2) for
/// decimal(5,2)): an amount of 100 or more is a dead letter.
const SAKILA_SETTINGS: &str = r#"
[backfill]
chunk_rows = 1000
min_chunk_rows = 500
rows_per_second = 2000

[cutover]
max_capture_lag_bytes = 2000
max_reconcile_age_seconds = 600

[[mapping]]
source = "sakila.payment"
target = "payment"
[mapping.columns.amount]
type = "decimal(4,2)"

[[invariant]]
name = "payments per staff member"
table = "sakila.payment"
source = "count(*) group by staff_id"
target = "count(*) group by staff_id"
"#;

/// `tidemark cutover check`: (exit code, stdout).
fn gate(cfg: &str) -> (i32, String) {
    let out = tidemark()
        .args(["cutover", "check", "--config", cfg])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let code = out.status.code().expect("an exit code");
    assert!(
        code == 0 || code == 3,
        "cutover check failed ({code}):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, stdout)
}

/// The gate's line for `criterion`, which must have failed (or passed).
fn line<'a>(report: &'a str, criterion: &str, passed: bool) -> &'a str {
    let want = format!("{} {criterion}: ", if passed { "ok  " } else { "FAIL" });
    report
        .lines()
        .find(|l| l.starts_with(&want))
        .unwrap_or_else(|| panic!("no `{want}` line:\n{report}"))
}

fn reconcile(cfg: &str, extra: &[&str]) -> (i32, String) {
    let out = tidemark()
        .args(["reconcile", "--config", cfg, "--settle-timeout", "20"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let code = out.status.code().unwrap();
    assert!(
        code == 0 || code == 2,
        "reconcile failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code, stdout)
}

#[test]
fn the_gate_opens_only_on_evidence_and_records_the_transfer() {
    let db = MariaDb::start();
    db.load_sakila();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidemark.toml");
    std::fs::write(
        &config,
        format!(
            "[source]\nurl = \"{}\"\nserver_id = 4711\ntables = [\"sakila.payment\"]\n\n[target]\nkind = \"sqlite\"\npath = \"target.db\"\n{SAKILA_SETTINGS}",
            db.url()
        ),
    )
    .unwrap();
    let cfg = config.to_str().unwrap().to_string();

    // Nothing has run.
    let (code, report) = gate(&cfg);
    assert_eq!(code, 3, "{report}");
    assert!(line(&report, "backfilled", false).contains("sakila.payment (not started)"));
    assert!(line(&report, "capture lag", false).contains("no position"));
    assert!(line(&report, "reconcile", false).contains("no reconcile on record"));
    assert!(report.contains("NOT READY"), "{report}");
    assert!(
        report.contains("to do: "),
        "each failure says what to do: {report}"
    );

    // A backfill running (throttled to 2,000 rows/s: about eight seconds).
    let mut pipeline = spawn(&["run", "--config", &cfg], &dir.path().join("run.log"));
    tidemark_testkit::wait_for(
        "the gate sees the backfill running",
        std::time::Duration::from_secs(60),
        || {
            let (_, report) = gate(&cfg);
            report
                .lines()
                .any(|l| l.starts_with("FAIL backfilled: ") && l.contains("rows so far"))
        },
    );
    pipeline.kill().unwrap();
    pipeline.wait().unwrap();
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let (_, report) = gate(&cfg);
    line(&report, "backfilled", true);
    line(&report, "capture lag", true);
    line(&report, "apply lag", true);

    // Capture behind: writes while nothing captures.
    db.sql_db(
        "sakila",
        "UPDATE payment SET amount = amount + 0.01 WHERE payment_id <= 500",
    );
    let (code, report) = gate(&cfg);
    assert_eq!(code, 3);
    assert!(
        line(&report, "capture lag", false).contains("bound 2000"),
        "{report}"
    );
    // Values the target cannot hold (decimal(4,2)): two dead letters.
    db.sql_db(
        "sakila",
        "UPDATE payment SET amount = 123.45 WHERE payment_id IN (7, 8)",
    );
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let (_, report) = gate(&cfg);
    line(&report, "capture lag", true);
    assert!(
        line(&report, "dead letters", false).contains("2 outstanding"),
        "{report}"
    );
    let listed = run_ok(&["dead-letters", "list", "--config", &cfg]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(r#"sakila.payment {"payment_id":7}"#) && listed.contains("outstanding"),
        "{listed}"
    );

    // A sampled reconcile is not evidence; a complete one is, and finds the rejections.
    reconcile(&cfg, &["--sample", "0.5"]);
    let (_, report) = gate(&cfg);
    assert!(
        line(&report, "reconcile", false).contains("sampled"),
        "{report}"
    );
    let (code, out) = reconcile(&cfg, &[]);
    assert_eq!(code, 2, "{out}");
    let (_, report) = gate(&cfg);
    line(&report, "reconcile", true);
    line(&report, "invariants", true);
    assert!(
        line(&report, "drift", false).contains("schema_rejection 2"),
        "{report}"
    );

    // One dead letter accepted (an unknown key is refused, naming the known ones), the other
    // repaired: its source row changed into one the target can hold.
    let out = tidemark()
        .args([
            "dead-letters",
            "accept",
            "--config",
            &cfg,
            "--table",
            "sakila.payment",
            "--key",
            r#"{"payment_id":9}"#,
            "--by",
            "alice",
            "--reason",
            "refunds are booked elsewhere",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(r#"{"payment_id":7}"#),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run_ok(&[
        "dead-letters",
        "accept",
        "--config",
        &cfg,
        "--table",
        "sakila.payment",
        "--key",
        r#"{"payment_id":7}"#,
        "--by",
        "alice",
        "--reason",
        "refunds are booked elsewhere",
    ]);
    let (_, report) = gate(&cfg);
    assert!(
        line(&report, "dead letters", false).contains("1 outstanding, 1 accepted"),
        "{report}"
    );
    db.sql_db(
        "sakila",
        "UPDATE payment SET amount = 1.00 WHERE payment_id = 8",
    );
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    reconcile(&cfg, &[]);
    let (_, report) = gate(&cfg);
    assert!(
        line(&report, "dead letters", true).contains("1 accepted, 1 repaired"),
        "{report}"
    );
    assert!(
        line(&report, "drift", true)
            .contains("1 schema rejections of accepted dead letters left out"),
        "{report}"
    );

    // Drift: a target row deleted out of band is missing, and the invariant no longer holds;
    // repaired through the pipeline.
    rusqlite::Connection::open(dir.path().join("target.db"))
        .unwrap()
        .execute("DELETE FROM payment WHERE payment_id = 100", [])
        .unwrap();
    reconcile(&cfg, &[]);
    let (_, report) = gate(&cfg);
    assert!(
        line(&report, "drift", false).contains("missing 1"),
        "{report}"
    );
    assert!(
        line(&report, "invariants", false).contains("VIOLATED"),
        "{report}"
    );
    reconcile(&cfg, &["--repair"]);
    reconcile(&cfg, &[]);

    // A stale reconcile: the same evidence under a tighter bound.
    let tight = std::fs::read_to_string(&cfg).unwrap().replace(
        "max_reconcile_age_seconds = 600",
        "max_reconcile_age_seconds = 0.001",
    );
    let tight_cfg = dir.path().join("tight.toml");
    std::fs::write(&tight_cfg, tight).unwrap();
    let (code, report) = gate(tight_cfg.to_str().unwrap());
    assert_eq!(code, 3);
    assert!(
        line(&report, "reconcile", false).contains("(bound 0 s)"),
        "{report}"
    );

    // Not READY: no record.
    let record = dir.path().join("authority.json");
    let out = tidemark()
        .args([
            "cutover",
            "record",
            "--config",
            tight_cfg.to_str().unwrap(),
            "--by",
            "alice",
            "--output",
        ])
        .arg(&record)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(!record.exists());

    // READY.
    let (code, report) = gate(&cfg);
    println!("{report}");
    assert_eq!(code, 0, "{report}");
    assert!(
        report.contains("READY: the target may become authoritative"),
        "{report}"
    );
    let json = tidemark()
        .args(["cutover", "check", "--config", &cfg, "--json"])
        .output()
        .unwrap();
    let verdict: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(verdict["ready"], true);
    assert_eq!(verdict["criteria"].as_array().unwrap().len(), 7);

    // The record.
    let out = run_ok(&[
        "cutover",
        "record",
        "--config",
        &cfg,
        "--by",
        "alice",
        "--output",
        record.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("record written"));
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(rec["by"], "alice");
    assert_eq!(rec["tidemark_version"], env!("CARGO_PKG_VERSION"));
    assert!(rec["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["passed"] == true));
    let payment = &rec["tables"]["sakila.payment"];
    assert_eq!(payment["rows_compared"], 16049, "{rec}");
    assert_eq!(payment["target_table"], "payment");
    assert_eq!(payment["transform_version"].as_str().unwrap().len(), 16);
    assert_eq!(
        rec["reconcile"]["invariants"][0]["name"],
        "payments per staff member"
    );
    assert_eq!(rec["reconcile"]["invariants"][0]["held"], true);
    assert_eq!(rec["reconcile"]["complete"], true);
    assert_eq!(
        rec["accepted_dead_letters"][0]["key"],
        r#"{"payment_id":7}"#
    );
    assert_eq!(
        rec["accepted_dead_letters"][0]["accepted"]["reason"],
        "refunds are booked elsewhere"
    );
    assert!(rec["source_end_of_log"].as_str().unwrap().contains(':'));
    let status = run_ok(&["status", "--config", &cfg]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("authority transferred at "),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );

    // `tidemark run` serves the window and the stored verdict as metrics.
    let (with_metrics, port) = kafka_support::with_metrics(&config, "metrics");
    let mut served = spawn(
        &["run", "--config", with_metrics.to_str().unwrap()],
        &dir.path().join("metrics.log"),
    );
    let mut body = String::new();
    tidemark_testkit::wait_for(
        "the window and the verdict served",
        std::time::Duration::from_secs(60),
        || {
            body = common::http_get(port, "/metrics")
                .map(|(_, b)| b)
                .unwrap_or_default();
            common::series(&body, "tidemark_cutover_ready", "") == Some(1.0)
                && common::series(&body, "tidemark_uncertainty_seconds", "{stage=\"total\"}")
                    .is_some()
        },
    );
    served.kill().unwrap();
    served.wait().unwrap();
    assert_eq!(
        common::series(&body, "tidemark_uncertainty_bytes", "{stage=\"capture\"}"),
        Some(0.0),
        "{body}"
    );
    assert_eq!(
        common::series(
            &body,
            "tidemark_cutover_criterion_passed",
            "{criterion=\"dead letters\"}"
        ),
        Some(1.0),
        "{body}"
    );
    common::assert_serves(
        &body,
        &common::chart_metrics(
            &[
                "tidemark_uncertainty_",
                "tidemark_cutover_",
                // The last stored reconcile's figures (a reconcile Job's pod may end unscraped).
                "tidemark_reconcile_",
            ],
            &[],
        ),
    );
    let status = run_ok(&["status", "--config", &cfg]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("uncertainty window") && status.contains("the proof is "),
        "{status}"
    );

    // After the transfer the gate keeps watching: drift found since is reported against it.
    rusqlite::Connection::open(dir.path().join("target.db"))
        .unwrap()
        .execute("DELETE FROM payment WHERE payment_id = 200", [])
        .unwrap();
    reconcile(&cfg, &[]);
    let (code, report) = gate(&cfg);
    assert_eq!(code, 3);
    assert!(report.contains("authority transferred at "), "{report}");
    assert!(
        report.contains("since the transfer: the newest reconcile")
            && report.contains("against the record"),
        "{report}"
    );
}

#[test]
fn the_gate_in_kafka_mode_reads_its_evidence_from_the_topics() {
    let db = MariaDb::start();
    db.sql(SHOP);
    db.sql_db(
        "shop",
        "INSERT INTO accounts SELECT seq, seq * 10, CONCAT('n', seq) FROM seq_1_to_500",
    );
    let broker = tidemark_testkit::Kafka::shared();
    let dir = tempfile::tempdir().unwrap();
    let settings = SETTINGS.replace("rows_per_second = 300", "rows_per_second = 100000");
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &format!("{settings}\n{}", broker.transport_toml()),
    );
    let cfg = config.to_str().unwrap().to_string();
    run_ok(&["topics", "init", "--config", &cfg]);

    let (code, report) = gate(&cfg);
    assert_eq!(code, 3, "{report}");
    line(&report, "backfilled", false);
    line(&report, "capture lag", false);
    assert!(
        line(&report, "apply lag", false).contains("no frontier"),
        "{report}"
    );

    // Capture's start, the backfill, a live change the target cannot hold, then capture and
    // apply caught up.
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);
    run_ok(&["backfill", "--config", &cfg]);
    db.sql_db(
        "shop",
        "UPDATE accounts SET note = 'far too long a note', balance = balance + 1 WHERE id = 7",
    );
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);
    run_ok(&["apply", "--config", &cfg, "--until-caught-up"]);
    let (_, report) = gate(&cfg);
    line(&report, "backfilled", true);
    line(&report, "capture lag", true);
    assert!(
        line(&report, "apply lag", true).contains("between the apply frontier"),
        "{report}"
    );
    assert!(
        line(&report, "dead letters", false).contains("1 outstanding"),
        "the dead letter is read from the dead-letter topic: {report}"
    );

    let (code, out) = reconcile(&cfg, &[]);
    assert_eq!(code, 2, "{out}");
    let (_, report) = gate(&cfg);
    line(&report, "reconcile", true);
    line(&report, "invariants", false);
    assert!(
        line(&report, "drift", false).contains("schema_rejection 1"),
        "{report}"
    );
    run_ok(&[
        "dead-letters",
        "accept",
        "--config",
        &cfg,
        "--table",
        "shop.accounts",
        "--by",
        "bob",
        "--reason",
        "the whole table's notes are cut",
    ]);
    let (code, report) = gate(&cfg);
    // The invariant counts row 7's balance as the source has it; the target kept the old row.
    assert_eq!(code, 3, "{report}");
    assert!(
        line(&report, "invariants", false).contains("VIOLATED"),
        "{report}"
    );
    line(&report, "dead letters", true);
    // The rejection is accepted; the invariant's difference is drift of its own.
    assert!(
        line(&report, "drift", false).contains("invariant_violation 1"),
        "{report}"
    );

    // Mapping fixed at the source's side: the note fits again, the key's change goes through.
    db.sql_db("shop", "UPDATE accounts SET note = 'short' WHERE id = 7");
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);
    run_ok(&["apply", "--config", &cfg, "--until-caught-up"]);
    let (code, out) = reconcile(&cfg, &[]);
    assert_eq!(code, 0, "{out}");
    let (code, report) = gate(&cfg);
    assert_eq!(code, 0, "{report}");
    let record = dir.path().join("authority.json");
    run_ok(&[
        "cutover",
        "record",
        "--config",
        &cfg,
        "--by",
        "bob",
        "--output",
        record.to_str().unwrap(),
    ]);
    let rec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    assert_eq!(rec["tables"]["shop.accounts"]["rows_compared"], 500);
    assert!(rec["applied_frontier"].as_str().is_some(), "{rec}");
    // Stored on the compacted authority topic: another process sees it.
    let kafka = kafka_support::kafka_config(&broker);
    let stored = tidemark_kafka::read_authority(&kafka)
        .unwrap()
        .expect("the record on <prefix>.authority");
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["by"], "bob");
    let status = run_ok(&["status", "--config", &cfg]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.contains("authority transferred at "), "{status}");
    assert!(status.contains("uncertainty window"), "{status}");
}
