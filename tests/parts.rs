//! One big table backfilled by several processes at once (`tidemark backfill --part i/N`),
//! against a real MariaDB, under a live workload, with `kill -9`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::workload::{hot_keys, tables, Workload, SHOP};
use common::{assert_target_equals_source, run_ok, spawn, target_checkpoint, Spawned};
use tidemark_ingest::split::{KeySplit, PART_STAGE, SPLIT_STAGE};
use tidemark_ingest::{BackfillCheckpoint, Source};
use tidemark_schemas::TableId;
use tidemark_testkit::{wait_for, MariaDb};

const ROWS: u64 = 2_000_000;
const PARTS: u32 = 4;

fn part_progress(target: &Path, index: u32) -> Option<BackfillCheckpoint> {
    target_checkpoint(target, PART_STAGE, &format!("shop.links/{index}"))
        .and_then(|text| serde_json::from_str(&text).ok())
}

fn spawn_part(dir: &Path, cfg: &str, index: u32, life: u32) -> Spawned {
    spawn(
        &[
            "backfill",
            "--config",
            cfg,
            "--table",
            "shop.links",
            "--part",
            &format!("{index}/{PARTS}"),
        ],
        &dir.join(format!("part-{index}-{life}.log")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_processes_backfill_two_million_rows_under_writes_and_kill_9() {
    let db = MariaDb::start();
    db.sql(SHOP);
    // A composite key (a INT, b VARCHAR): ten b's per a.
    db.sql_db(
        "shop",
        &format!(
            "INSERT INTO shop.links (a, b, w) SELECT seq DIV 10, CONCAT('k', seq MOD 10), seq FROM seq_1_to_{ROWS}"
        ),
    );
    db.sql("ANALYZE TABLE shop.links");
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target.db");
    // Each part at most 30,000 rows/s, so that a part is still running when it is killed.
    let config = common::write_config(
        dir.path(),
        &db.url(),
        &["shop"],
        "[backfill]\nchunk_rows = 5000\nrows_per_second = 30000",
    );
    let cfg = config.to_str().unwrap().to_string();

    // Capture first: its start is stored before any part reads.
    let mut capture = spawn(
        &["capture", "--config", &cfg],
        &dir.path().join("capture.log"),
    );
    wait_for("capture stored its start", Duration::from_secs(60), || {
        target_checkpoint(&target, "capture", "*").is_some()
    });

    // Hot keys at both ends of the key space, until the parts are done.
    let workload = Workload::start(db.url(), hot_keys(ROWS as i64 / 10));

    let mut parts: Vec<Spawned> = (0..PARTS)
        .map(|i| spawn_part(dir.path(), &cfg, i, 0))
        .collect();

    // Part 1 killed twice in the middle of its range, each time after it stored progress.
    let mut seen = 0;
    for life in 1..=2 {
        wait_for(
            "part 1 stored more progress",
            Duration::from_secs(300),
            || part_progress(&target, 1).is_some_and(|p| p.rows > seen && !p.done),
        );
        parts[1].kill().expect("kill -9");
        parts[1].wait().unwrap();
        seen = part_progress(&target, 1).unwrap().rows;
        parts[1] = spawn_part(dir.path(), &cfg, 1, life);
    }

    // `status` shows the table and each of its parts while they run.
    let status =
        String::from_utf8_lossy(&run_ok(&["status", "--config", &cfg]).stdout).into_owned();
    assert!(
        (0..PARTS).all(|i| status.contains(&format!("part {i}/{PARTS}"))),
        "status shows each part:\n{status}"
    );

    let deadline = Instant::now() + Duration::from_secs(900);
    for (i, part) in parts.iter_mut().enumerate() {
        let mut exit = None;
        tokio::task::block_in_place(|| {
            wait_for(
                &format!(
                    "part {i} to finish (its log is in {})",
                    dir.path().display()
                ),
                deadline.saturating_duration_since(Instant::now()),
                || {
                    exit = part.try_wait().unwrap();
                    exit.is_some()
                },
            )
        });
        let exit = exit.expect("waited for above");
        assert!(
            exit.success(),
            "part {i} exited with {exit}; see its log in {}",
            dir.path().display()
        );
    }
    workload.finish(100).await;
    capture.kill().unwrap();
    capture.wait().unwrap();
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);

    // Row by row, every table.
    let compared = assert_target_equals_source(&db.url(), &target, &tables()).await;
    assert!(compared as u64 >= ROWS, "compared {compared} rows");

    // Each key exactly once: the middle parts, which the workload does not touch, read exactly
    // the source's rows in their ranges, the killed part included; and the parts are balanced.
    let split: KeySplit =
        serde_json::from_str(&target_checkpoint(&target, SPLIT_STAGE, "shop.links").unwrap())
            .unwrap();
    assert_eq!(split.parts, PARTS);
    let table: TableId = "shop.links".parse().unwrap();
    let mut source = Source::connect(&db.url()).await.unwrap();
    let schema = source.load_schema(&table).await.unwrap();
    let mut conn = source.new_connection().await.unwrap();
    let mut rows = Vec::new();
    for i in 0..PARTS {
        let progress = part_progress(&target, i).unwrap();
        assert!(progress.done, "part {i}: {progress:?}");
        assert_eq!(progress.split.as_deref(), Some(split.id.as_str()));
        rows.push(progress.rows);
    }
    for i in [1, 2] {
        let range = split.range(i).unwrap();
        let in_source = tidemark_ingest::backfill::count_range(&mut conn, &schema, &range)
            .await
            .unwrap();
        assert_eq!(
            rows[i as usize], in_source,
            "part {i} read each of its keys once"
        );
    }
    let ideal = ROWS as f64 / f64::from(PARTS);
    assert!(
        rows.iter()
            .all(|n| (*n as f64) > ideal * 0.75 && (*n as f64) < ideal * 1.25),
        "the parts are balanced: {rows:?}"
    );

    // The table counts as backfilled (all its parts are), and reconcile agrees.
    let status =
        String::from_utf8_lossy(&run_ok(&["status", "--config", &cfg]).stdout).into_owned();
    let line = status
        .lines()
        .find(|l| l.trim_start().starts_with("shop.links") && l.contains("done"))
        .unwrap_or_else(|| panic!("shop.links is done:\n{status}"));
    assert!(
        line.contains(&format!("{}", rows.iter().sum::<u64>())),
        "{line}"
    );
    let (code, drift) = reconcile_parts(dir.path(), &cfg);
    assert_eq!(code, [0; PARTS as usize], "no actionable drift: {drift:?}");

    // Faults in several parts, each found by exactly one part: a target row the source no
    // longer has (an unlogged delete), one it never had, and an edited target value.
    db.sql("SET sql_log_bin = 0; DELETE FROM shop.links WHERE a = 100000 AND b = 'k2';");
    let t = rusqlite::Connection::open(&target).unwrap();
    t.execute(
        "INSERT INTO links SELECT a, 'zz', w, _tm_version, _tm_deleted, _tm_op, _tm_source_server, _tm_source_table, _tm_source_key, _tm_position, _tm_gtid, _tm_commit_time_us, _tm_transform, _tm_transform_version, _tm_source_digest, _tm_chunk FROM links WHERE a = 150000 AND b = 'k1'",
        [],
    )
    .unwrap();
    t.execute("UPDATE links SET w = -1 WHERE a = 60000 AND b = 'k4'", [])
        .unwrap();
    drop(t);
    let (code, drift) = reconcile_parts(dir.path(), &cfg);
    assert!(code.contains(&2), "actionable drift found: {code:?}");
    let expected: Vec<(String, String)> = [
        ("shop.links {\"a\":100000,\"b\":\"k2\"}", "extra"),
        ("shop.links {\"a\":150000,\"b\":\"zz\"}", "extra"),
        ("shop.links {\"a\":60000,\"b\":\"k4\"}", "value_mismatch"),
    ]
    .into_iter()
    .map(|(k, c)| (k.to_string(), c.to_string()))
    .collect();
    assert_eq!(drift, expected, "each fault once, in one part");
}

/// `tidemark reconcile --table shop.links --part i/4` in four processes at once: their exit
/// codes, and every drift record of all four as (table key, class), sorted.
fn reconcile_parts(dir: &Path, cfg: &str) -> (Vec<i32>, Vec<(String, String)>) {
    let runs: Vec<(Spawned, std::path::PathBuf)> = (0..PARTS)
        .map(|i| {
            let output = dir.join(format!("drift-{i}.jsonl"));
            let run = spawn(
                &[
                    "reconcile",
                    "--config",
                    cfg,
                    "--table",
                    "shop.links",
                    "--part",
                    &format!("{i}/{PARTS}"),
                    "--settle-timeout",
                    "60",
                    "--output",
                    output.to_str().unwrap(),
                ],
                &dir.join(format!("reconcile-{i}.log")),
            );
            (run, output)
        })
        .collect();
    let mut codes = Vec::new();
    let mut drift = Vec::new();
    for (mut run, output) in runs {
        let code = run.wait().unwrap().code().unwrap_or(-1);
        assert!(
            code == 0 || code == 2,
            "reconcile exited {code}; see {}",
            dir.display()
        );
        codes.push(code);
        for line in std::fs::read_to_string(output).unwrap().lines() {
            let event: serde_json::Value = serde_json::from_str(line).unwrap();
            drift.push((
                format!(
                    "{} {}",
                    event["table"].as_str().unwrap(),
                    event["key"].as_str().unwrap()
                ),
                event["class"].as_str().unwrap().to_string(),
            ));
        }
    }
    drift.sort();
    (codes, drift)
}
