//! One table backfilled and reconciled in parts over Apache Kafka (the Indexed Jobs' path):
//! `tidemark backfill --part i/N` processes publish into the changes topics and agree on one split
//! through the checkpoints topic; a part killed with `kill -9` resumes from its checkpoint there.

mod common;
mod kafka_support;

use common::workload::{hot_keys, Workload};
use common::{assert_target_equals_source, run_ok, write_config};
use kafka_support::*;
use tidemark_kafka::{CheckpointStore, KafkaConfig};
use tidemark_schemas::{BinlogPosition, TableId};
use tidemark_testkit::{Kafka, MariaDb};

const PARTS: u32 = 3;

/// Rows part `index` of shop.links has published, by its checkpoint in the checkpoints topic.
fn published_by_part(kafka: &KafkaConfig, index: u32) -> u64 {
    let table: TableId = "shop.links".parse().unwrap();
    let store = block_on(CheckpointStore::load(kafka)).expect("read the checkpoints topic");
    let stored = store.stored_backfill(&table).expect("readable");
    stored
        .parts
        .get(index as usize)
        .cloned()
        .flatten()
        .map_or(0, |p| p.rows)
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_over_kafka_agree_on_one_split_and_survive_kill_9() {
    let db = MariaDb::start();
    db.sql(SHOP);
    db.sql_db(
        "shop",
        "INSERT INTO shop.links (a, b, w) SELECT seq DIV 10, CONCAT('k', seq MOD 10), seq FROM seq_1_to_60000;
         INSERT INTO shop.accounts (id, balance, note) SELECT seq, seq * 10, CONCAT('n', seq) FROM seq_1_to_3000;",
    );
    let broker = Kafka::shared();
    let kafka = kafka_config(&broker);
    let dir = tempfile::tempdir().unwrap();
    // Each part throttled so that it is still running when it is killed.
    let config = write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        &format!(
            "{}\n[backfill]\nchunk_rows = 1000\nmin_chunk_rows = 100\nrows_per_second = 4000\n",
            broker.transport_toml()
        ),
    );
    let cfg = config.to_str().unwrap().to_string();
    let target = dir.path().join("target.db");
    let tables = shop_tables();
    run_ok(&["topics", "init", "--config", &cfg]);
    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);
    let mut member = Proc::start("apply", &["apply", "--config", &cfg], dir.path());

    let load = Workload::start_paced(db.url(), STEADY, hot_keys(6000));

    let start_part = |i: u32, life: u32| {
        Proc::start(
            &format!("part-{i}-{life}"),
            &[
                "backfill",
                "--config",
                &cfg,
                "--table",
                "shop.links",
                "--part",
                &format!("{i}/{PARTS}"),
            ],
            dir.path(),
        )
    };
    let mut parts: Vec<Proc> = (0..PARTS).map(|i| start_part(i, 0)).collect();
    let mut accounts = Proc::start(
        "accounts",
        &["backfill", "--config", &cfg, "--table", "shop.accounts"],
        dir.path(),
    );
    wait("part 1 published some of its range", 120, || {
        published_by_part(&kafka, 1) > 0
    });
    parts[1].kill_9();
    let before = published_by_part(&kafka, 1);
    parts[1] = start_part(1, 1);

    for part in parts.iter_mut().chain(std::iter::once(&mut accounts)) {
        let status = part.wait();
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            part.name(),
            part.log()
        );
    }
    // The restarted part went on from its checkpoint: it read less than its share again.
    let again: u64 = parts[1]
        .report()
        .lines()
        .filter_map(|l| l.strip_prefix("backfilled shop.links part 1/3: "))
        .filter_map(|l| l.trim_end_matches(" rows").parse::<u64>().ok())
        .sum();
    let share = published_by_part(&kafka, 1);
    assert!(
        before > 0 && again + before / 2 <= share,
        "part 1 resumed ({again} rows read again of {share}, {before} before the kill)"
    );
    load.finish(300).await;
    capture.terminate();
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);
    let end: BinlogPosition = capture_checkpoint(&kafka)
        .expect("a checkpoint")
        .position
        .parse()
        .unwrap();
    wait_for_frontier(&kafka, &tables, end, 180);
    member.terminate();

    let rows = assert_target_equals_source(&db.url(), &target, &tables).await;
    assert!(rows >= 60_000, "compared {rows} rows");
    // The table counts as backfilled, and its parts, reconciled in three processes, agree.
    let status =
        String::from_utf8_lossy(&run_ok(&["status", "--config", &cfg]).stdout).into_owned();
    assert!(
        status
            .lines()
            .any(|l| l.trim_start().starts_with("shop.links") && l.contains("done")),
        "{status}"
    );
    let runs: Vec<Proc> = (0..PARTS)
        .map(|i| {
            Proc::start(
                &format!("reconcile-{i}"),
                &[
                    "reconcile",
                    "--config",
                    &cfg,
                    "--table",
                    "shop.links",
                    "--part",
                    &format!("{i}/{PARTS}"),
                    "--settle-timeout",
                    "30",
                ],
                dir.path(),
            )
        })
        .collect();
    let mut compared = 0u64;
    for mut run in runs {
        let status = run.wait();
        assert!(status.success(), "{}:\n{}", run.name(), run.report());
        compared += run
            .report()
            .lines()
            .filter_map(|l| l.strip_prefix("compared "))
            .filter_map(|l| l.split(' ').next()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    let in_source: u64 = db
        .sql("SELECT COUNT(*) FROM shop.links")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(compared, in_source, "the parts compared every row once");
}
