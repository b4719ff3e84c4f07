//! Invariants on Sakila: the queries that matter hold under a live workload (never a false
//! alarm), and a mapping whose computed column is subtly wrong — which row reconciliation
//! accepts, because the target holds exactly what the mapping made — is caught by one.

mod common;

use std::time::Duration;

use common::workload::{Pace, Workload};
use common::{reconcile_drift, run_ok, spawn, tidemark};
use tidemark_testkit::MariaDb;

/// Only `sakila.payment` is in scope (its foreign keys point to tables the workload does not
/// change).
fn write_config(dir: &std::path::Path, url: &str, extra: &str) -> String {
    let text = format!(
        "[source]\nurl = \"{url}\"\nserver_id = 4711\ntables = [\"sakila.payment\"]\n\n[target]\nkind = \"sqlite\"\npath = \"target.db\"\n\n[reconcile]\nsettle_timeout_seconds = 20\nchunk_rows = 1000\n\n{extra}\n"
    );
    let path = dir.join("tidemark.toml");
    std::fs::write(&path, text).expect("write config");
    path.to_str().unwrap().to_string()
}

const INVARIANTS: &str = r#"
[[invariant]]
name = "revenue per customer"
table = "sakila.payment"
source = "sum(amount) where amount > 0 group by customer_id"
target = "sum(amount) where amount > 0 group by customer_id"

[[invariant]]
name = "payments per staff member"
table = "sakila.payment"
source = "count(*) group by staff_id"
target = "count(*) group by staff_id"

[[invariant]]
name = "paying customers"
table = "sakila.payment"
source = "count(distinct customer_id)"
target = "count(distinct customer_id)"

[[invariant]]
name = "last payment"
table = "sakila.payment"
source = "max(payment_date)"
target = "max(payment_date)"
"#;

/// Payments inserted, re-priced and deleted at random (the statements of a [`Workload`]).
fn payments() -> impl FnMut(u64) -> String + Send + 'static {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    move |_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let customer = x % 599 + 1;
        let payment = x % 16_049 + 1;
        match x % 4 {
            0 => format!(
                "INSERT INTO sakila.payment (customer_id, staff_id, rental_id, amount, payment_date) VALUES ({customer}, {}, NULL, {}.{:02}, '2006-03-{:02} 10:00:00')",
                x % 2 + 1,
                x % 12,
                x % 100,
                x % 28 + 1
            ),
            1 => format!("DELETE FROM sakila.payment WHERE payment_id = {payment}"),
            2 => format!(
                "UPDATE sakila.payment SET amount = amount + 0.01, customer_id = {customer} WHERE payment_id = {payment}"
            ),
            _ => format!(
                "START TRANSACTION; UPDATE sakila.payment SET amount = amount - 1 WHERE payment_id = {payment}; UPDATE sakila.payment SET amount = amount + 1 WHERE payment_id = {}; COMMIT",
                (payment + 7) % 16_049 + 1
            ),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invariants_hold_under_a_live_workload() {
    let db = MariaDb::start();
    db.load_sakila();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &db.url(), INVARIANTS);

    let explained = run_ok(&["invariants", "explain", "--config", &cfg]);
    let explained = String::from_utf8_lossy(&explained.stdout);
    assert!(
        explained.contains("source: sum(`amount`) where `amount` > 0 group by `customer_id`"),
        "{explained}"
    );

    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let mut pipeline = spawn(&["run", "--config", &cfg], &dir.path().join("pipeline.log"));
    let pace = Pace {
        pause: Duration::from_millis(3),
        tolerate_errors: false,
    };
    let load = Workload::start_paced(db.url(), pace, payments());
    for round in 0..2 {
        let before = load.ran();
        let (code, stdout, drift) = reconcile_drift(&cfg, dir.path(), &[]);
        assert_eq!(
            (code, drift.len()),
            (0, 0),
            "round {round}: no drift under live load, invariants included:\n{stdout}\n{drift:?}"
        );
        for name in [
            "revenue per customer",
            "payments per staff member",
            "paying customers",
            "last payment",
        ] {
            let line = stdout
                .lines()
                .find(|l| l.starts_with(&format!("invariant \"{name}\" on sakila.payment")))
                .unwrap_or_else(|| panic!("round {round}: no verdict for {name}:\n{stdout}"));
            assert!(line.contains(": held in "), "round {round}: {line}");
        }
        assert!(
            stdout.contains(
                "invariant \"revenue per customer\" on sakila.payment: held in 599 groups"
            ),
            "every customer has paid: {stdout}"
        );
        assert!(
            load.ran() > before,
            "round {round}: the reconcile ran while the load was running"
        );
    }
    load.finish(1000).await;
    pipeline.kill().unwrap();
    pipeline.wait().unwrap();

    // Quiet now: the same answers, with nothing left out.
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let (code, stdout, _) = reconcile_drift(&cfg, dir.path(), &[]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("; 0 unsettled keys left out of both"),
        "{stdout}"
    );
}

/// The mapping buckets payments by `[year]-[day]` where `[year]-[month]` was meant: every
/// target row is exactly what the mapping makes of its source row, so row reconciliation finds
/// nothing; "payments per month" finds the wrong buckets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subtly_wrong_computed_column_passes_rows_and_fails_its_invariant() {
    let db = MariaDb::start();
    db.load_sakila();
    let dir = tempfile::tempdir().unwrap();
    let mapping = r#"
[[mapping]]
source = "sakila.payment"
target = "payment"
[mapping.computed.payment_month]
expr = "date_format(payment_date, '[year]-[day]')"

[[invariant]]
name = "payments per month"
table = "sakila.payment"
source = "count(*) group by date_format(payment_date, '[year]-[month]')"
target = "count(*) group by payment_month"

[[invariant]]
name = "revenue"
table = "sakila.payment"
source = "sum(amount)"
target = "sum(amount)"
"#;
    let cfg = write_config(dir.path(), &db.url(), mapping);
    run_ok(&["run", "--config", &cfg, "--until-caught-up"]);
    let (code, stdout, drift) = reconcile_drift(&cfg, dir.path(), &[]);
    println!("{stdout}");
    assert_eq!(code, 2, "a violated invariant is actionable:\n{stdout}");
    assert!(
        drift.values().all(|class| class == "invariant_violation"),
        "row by row the target is what the mapping made: {drift:?}"
    );
    assert!(!drift.is_empty(), "{stdout}");
    assert!(
        stdout.contains("invariant \"revenue\" on sakila.payment: held in 1 group"),
        "{stdout}"
    );
    let violated = stdout
        .lines()
        .find(|l| l.starts_with("invariant \"payments per month\""))
        .expect("a verdict");
    assert!(violated.contains("VIOLATED"), "{stdout}");
    // The drift records name the group and both answers.
    let records = std::fs::read_to_string(dir.path().join("drift.jsonl")).unwrap();
    let group = |month: &str| -> serde_json::Value {
        records
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .find(|r| r["key"].as_str().is_some_and(|k| k.ends_with(month)))
            .unwrap_or_else(|| panic!("no difference reported for {month}:\n{records}"))
    };
    let count = |from: &str, to: &str| {
        db.sql(&format!(
            "SELECT COUNT(*) FROM sakila.payment WHERE payment_date >= '{from}' AND payment_date < '{to}'"
        ))
        .trim()
        .to_string()
    };
    // Every 2006 payment is of February 14th: the target has a "2006-14" group and no
    // "2006-02" one.
    let february = group("=2006-02");
    assert_eq!(february["class"], "invariant_violation");
    assert_eq!(february["columns"][0]["name"], "payments per month");
    assert_eq!(
        february["columns"][0]["source"].as_str(),
        Some(count("2006-02-01", "2006-03-01").as_str()),
        "{february}"
    );
    assert_eq!(february["columns"][0]["target"], "(no such group)");
    // "2005-07" is July on one side and the 7th of each month on the other.
    let july = group("=2005-07");
    assert_eq!(
        july["columns"][0]["source"].as_str(),
        Some(count("2005-07-01", "2005-08-01").as_str()),
        "{july}"
    );
    assert_ne!(july["columns"][0]["target"], july["columns"][0]["source"]);

    // A misconfigured invariant is named, with the column, before anything is compared.
    let bad = write_config(
        dir.path(),
        &db.url(),
        r#"
[[invariant]]
name = "refunds"
table = "sakila.payment"
source = "sum(amount) group by customer"
target = "sum(amount) group by customer_id"
"#,
    );
    for command in [&["invariants", "explain"][..], &["reconcile"][..]] {
        let out = tidemark()
            .args(command)
            .args(["--config", &bad])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?}: {stderr}");
        assert!(
            stderr.contains(
                "invariant \"refunds\".source: no column `customer` in source table sakila.payment"
            ),
            "{command:?}: {stderr}"
        );
    }
}
