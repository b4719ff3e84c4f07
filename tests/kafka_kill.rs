//! `kill -9` over Apache Kafka at the two moments where a crash could lose or double something,
//! each caught on purpose rather than by luck: the process is frozen (SIGSTOP), the broker and
//! the target are read back to prove it is at that moment, then it is killed (SIGKILL).
//!
//! - An apply member in the middle of a batch: frozen either with a batch written to the target
//!   and its offsets not committed (its replacement reads the batch again and the target's
//!   version guard ignores it), or in the middle of writing a batch (the target's transaction is
//!   open; the write is rolled back and the replacement reads the batch again), whichever the
//!   freeze meets first (both were met in runs here; the first most often at the first batches,
//!   before the member's first offset commit has landed). The library test
//!   `an_applier_dropped_mid_stream_loses_nothing_and_duplicates_are_harmless` makes the first
//!   one deterministically.
//! - Capture after publishing changes and before the checkpoint that covers them: its
//!   replacement resumes from the older checkpoint and publishes those changes again, which apply
//!   absorbs.
//!
//! Each ends with the target equal to the source row by row and `tidemark reconcile` reporting
//! no actionable drift.

mod common;
mod kafka_support;

use std::time::Duration;

use common::workload::{hot_keys, Workload};
use common::{assert_target_equals_source, run_ok, write_config};
use kafka_support::*;
use tidemark_schemas::BinlogPosition;
use tidemark_testkit::{Kafka, MariaDb};

/// How many times a test freezes a process looking for the moment it wants.
const ATTEMPTS: usize = 40;

fn position(text: &str) -> BinlogPosition {
    text.parse().expect("a binlog position")
}

/// The sum of the target's versions: it moves whenever apply writes.
fn progress(target: &std::path::Path) -> i64 {
    ["accounts", "links"]
        .iter()
        .map(|t| target_versions(target, t).values().sum::<i64>())
        .sum()
}

/// Where the frozen apply member was.
enum MidBatch {
    /// This change's batch was written to the target; its offsets are not committed.
    WrittenNotCommitted {
        table: String,
        partition: i32,
        offset: i64,
    },
    /// A write transaction was open on the target.
    Writing,
}

impl std::fmt::Display for MidBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MidBatch::WrittenNotCommitted {
                table,
                partition,
                offset,
            } => write!(
                f,
                "the batch of {table} partition {partition} offset {offset} written, its offsets not committed"
            ),
            MidBatch::Writing => write!(f, "a batch being written to the target"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_an_apply_member_in_the_middle_of_a_batch() {
    let db = MariaDb::start();
    db.sql(SHOP);
    let broker = Kafka::shared();
    let kafka = kafka_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], &broker.transport_toml());
    let cfg = config.to_str().unwrap().to_string();
    let target = dir.path().join("target.db");
    let tables = shop_tables();
    let topics = changes_topics(&kafka, &tables);
    run_ok(&["topics", "init", "--config", &cfg]);
    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);

    // A backlog for apply: 6,000 inserts, then 15,000 updates in five transactions.
    db.sql_db("shop", PRELOAD);
    for i in 1..=5 {
        db.sql_db(
            "shop",
            &format!("UPDATE accounts SET balance = balance + {i}, note = 'pass {i}'"),
        );
    }
    let end = end_of_log(&db);
    wait("capture published the backlog", 120, || {
        capture_checkpoint(&kafka).is_some_and(|c| position(&c.position) >= end)
    });

    let mut member = Proc::start("apply-a", &["apply", "--config", &cfg], dir.path());
    wait("the member wrote to the target", 120, || {
        progress(&target) > 0
    });
    let mut caught = None;
    for _ in 0..ATTEMPTS {
        member.signal("STOP");
        caught = blocking(|| {
            tables
                .iter()
                .zip(&topics)
                .find_map(|(t, topic)| {
                    written_beyond_commit(&kafka, topic, &target, &t.table).map(
                        |(partition, offset)| MidBatch::WrittenNotCommitted {
                            table: t.table.to_string(),
                            partition,
                            offset,
                        },
                    )
                })
                .or_else(|| target_write_in_progress(&target).then_some(MidBatch::Writing))
        });
        if caught.is_some() {
            break;
        }
        // Not caught: so no uncommitted change is in the target yet. One must be left for the
        // member to write on (the lag alone does not say so: capture's heartbeat markers keep
        // arriving after the last change).
        let unwritten = blocking(|| {
            topics
                .iter()
                .any(|topic| !first_uncommitted_changes(&kafka, topic).is_empty())
        });
        assert!(
            unwritten,
            "the member applied the whole backlog before a freeze met it in a batch"
        );
        member.signal("CONT");
        let before = progress(&target);
        wait("the member writes on", 120, || progress(&target) != before);
    }
    let caught = caught.unwrap_or_else(|| {
        panic!(
            "in {ATTEMPTS} tries a freeze never met the member in the middle of a batch:\n{}",
            member.log()
        )
    });
    println!("frozen in the middle of a batch: {caught}");
    member.kill_9();
    assert!(
        lag(&kafka, &topics) > 0,
        "killed with messages not committed"
    );

    // Capture stops cleanly; a new member (once the group let the killed one go) catches up.
    capture.terminate();
    wait_for_members(&kafka, 0);
    let out = run_ok(&["apply", "--config", &cfg, "--until-caught-up"]);
    let report = String::from_utf8_lossy(&out.stdout);
    if let MidBatch::WrittenNotCommitted { table, .. } = &caught {
        let (_, ignored) = applied_ignored(&report, table);
        assert!(
            ignored > 0,
            "the batch written but not committed was read again and ignored by the version guard:\n{report}"
        );
    }

    let rows = assert_target_equals_source(&db.url(), &target, &tables).await;
    assert!(rows >= 5000, "compared {rows} rows");
    assert_reconcile_clean(&cfg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_capture_between_a_publish_and_its_checkpoint() {
    let db = MariaDb::start();
    db.sql(SHOP);
    let broker = Kafka::shared();
    let kafka = kafka_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &db.url(), &["shop"], &broker.transport_toml());
    let cfg = config.to_str().unwrap().to_string();
    let target = dir.path().join("target.db");
    let tables = shop_tables();
    run_ok(&["topics", "init", "--config", &cfg]);
    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);
    let mut member = Proc::start("apply", &["apply", "--config", &cfg], dir.path());

    db.sql_db("shop", PRELOAD);
    let load = Workload::start_paced(db.url(), STEADY, hot_keys(3000));
    wait("the workload under way and applied", 120, || {
        progress(&target) > 0 && load.ran() > 100
    });

    // Freeze capture until what it published runs ahead of its checkpoint in the topic.
    let mut caught = None;
    for _ in 0..ATTEMPTS {
        capture.signal("STOP");
        caught = blocking(|| {
            // A checkpoint already on its way lands first: read it until it stops moving.
            let mut checkpoint = capture_checkpoint(&kafka).map(|c| position(&c.position));
            tidemark_testkit::wait_for(
                "the capture checkpoint to settle",
                Duration::from_secs(30),
                || {
                    std::thread::sleep(Duration::from_millis(200));
                    let now = capture_checkpoint(&kafka).map(|c| position(&c.position));
                    std::mem::replace(&mut checkpoint, now) == now
                },
            );
            let checkpoint = checkpoint.expect("capture stored its start");
            let newest = changes_topics(&kafka, &tables)
                .iter()
                .filter_map(|t| newest_position(&published_changes(&kafka, t)))
                .max()?;
            (newest > checkpoint).then_some((checkpoint, newest))
        });
        if caught.is_some() {
            break;
        }
        capture.signal("CONT");
        let before = capture_checkpoint(&kafka).map(|c| c.position);
        wait("capture checkpoints on", 60, || {
            capture_checkpoint(&kafka).map(|c| c.position) != before
        });
    }
    let (checkpoint, newest) = caught.unwrap_or_else(|| {
        panic!("in {ATTEMPTS} tries capture was never frozen with changes published past its checkpoint")
    });
    println!("frozen with changes published up to {newest}, its checkpoint at {checkpoint}");
    capture.kill_9();

    // The replacement resumes from the checkpoint and publishes (checkpoint, newest] again.
    let mut capture = Proc::start("capture-2", &["capture", "--config", &cfg], dir.path());
    load.finish(500).await;
    capture.terminate();
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);
    let end = position(&capture_checkpoint(&kafka).expect("a checkpoint").position);
    wait_for_frontier(&kafka, &tables, end, 180);
    member.terminate();

    let mut resent = 0;
    for topic in changes_topics(&kafka, &tables) {
        let mut seen = std::collections::BTreeSet::new();
        for p in published_changes(&kafka, &topic) {
            if !seen.insert((p.change.key.canonical_text(), p.change.version)) {
                assert!(
                    p.change.position > checkpoint,
                    "only what the checkpoint did not cover is published twice: {} at {}",
                    p.change.key.canonical_text(),
                    p.change.position
                );
                resent += 1;
            }
        }
    }
    assert!(
        resent > 0,
        "the restarted capture published again what its checkpoint did not cover"
    );

    let rows = assert_target_equals_source(&db.url(), &target, &tables).await;
    assert!(rows >= 3000, "compared {rows} rows");
    assert_reconcile_clean(&cfg);
}
