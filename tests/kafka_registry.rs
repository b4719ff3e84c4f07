//! A whole Kafka-mode Sakila run with `[transport.schema_registry]` on Apicurio Registry (its
//! Confluent-compatible API), and the registry stopped in the middle of it.
//!
//! Capture and backfill register tidemark's `ChangeEvent` schema under each changes topic's
//! value subject (TopicNameStrategy) and write every value in the Confluent wire format (byte 0,
//! the registry's 4-byte id, the datum), which the test reads back from the registry and from
//! the topics. Then the registry stops: capture publishes on (it holds the id), but an apply
//! started now cannot fetch the writer schema: it stops with an error naming the registry's URL,
//! having committed no offset past a change it could not decode and written no row. The registry
//! starts again (its schemas kept on disk, under the same ids) and apply finishes: every Sakila
//! row in the target exactly, nothing undecodable, and reconcile reports no actionable drift.
//!
//! The registry is this test's own (`Registry::dedicated`): it is the one test that stops it.

mod common;
mod kafka_support;

use std::collections::{BTreeMap, BTreeSet};

use common::{assert_target_equals_source, run_ok, tidemark, write_config};
use kafka_support::*;
use tidemark_kafka::Topics;
use tidemark_schemas::avro::{self, RecordKind};
use tidemark_schemas::{BinlogPosition, TableId};
use tidemark_testkit::{Kafka, MariaDb, Registry, SAKILA_ROW_COUNTS};

fn sakila() -> Vec<TableId> {
    SAKILA_ROW_COUNTS
        .iter()
        .map(|(t, _)| TableId::new("sakila", *t))
        .collect()
}

/// The id and schema text of the newest version of `subject`, and how many versions it has.
fn latest(url: &str, subject: &str) -> (u32, String, usize) {
    let (status, versions) = registry_get(&format!("{url}/subjects/{subject}/versions"));
    assert_eq!(status, 200, "subject {subject}: {versions}");
    let (status, latest) = registry_get(&format!("{url}/subjects/{subject}/versions/latest"));
    assert_eq!(status, 200, "latest of {subject}: {latest}");
    (
        latest["id"].as_u64().expect("an id") as u32,
        latest["schema"].as_str().expect("a schema").to_string(),
        versions.as_array().expect("versions").len(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sakila_over_kafka_with_apicurio_survives_a_registry_outage() {
    let started = std::time::Instant::now();
    let phase = |what: &str| println!("{:>6.1} s  {what}", started.elapsed().as_secs_f64());
    let db = MariaDb::start();
    db.load_sakila();
    phase("Sakila loaded");
    let broker = Kafka::shared();
    phase("the broker is up");
    let registry = Registry::dedicated();
    phase("the registry is up");
    let url = registry.url();
    let kafka = kafka_config(&broker);
    let topics = Topics::new(&kafka);
    let tables = sakila();
    let dir = tempfile::tempdir().unwrap();
    let transport = format!(
        "{}[transport.schema_registry]\nurl = \"{url}\"\n",
        broker.transport_toml()
    );
    let config = write_config(
        dir.path(),
        &db.url(),
        &["sakila"],
        &format!("[backfill]\nchunk_rows = 2000\n{transport}"),
    );
    let cfg = config.to_str().unwrap().to_string();
    // The apply run during the outage gives up on the registry after 5 s rather than 20.
    let outage = dir.path().join("outage.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("connect_timeout_seconds = 20\n"), "{text}");
    std::fs::write(
        &outage,
        text.replace(
            "connect_timeout_seconds = 20\n",
            "connect_timeout_seconds = 5\n",
        ),
    )
    .unwrap();
    let target = dir.path().join("target.db");

    run_ok(&["topics", "init", "--config", &cfg]);
    let mut capture = Proc::start("capture", &["capture", "--config", &cfg], dir.path());
    wait_for_capture_start(&kafka);
    run_ok(&["backfill", "--config", &cfg]);
    phase("Sakila published");

    // TopicNameStrategy: tidemark's ChangeEvent schema under `<topic>-value`, one version, and
    // every value framed with its id.
    let current = avro::schema(RecordKind::ChangeEvent).canonical_form();
    let mut ids = BTreeSet::new();
    let mut first = BTreeMap::new();
    for t in &tables {
        let topic = topics.changes(t);
        let (id, text, versions) = latest(&url, &format!("{topic}-value"));
        assert_eq!(versions, 1, "one version under {topic}-value");
        let held = avro::Schema::parse_str(&text).expect("valid Avro in the registry");
        assert_eq!(
            held.canonical_form(),
            current,
            "tidemark's schema under {topic}-value"
        );
        let changes = first_changes(&kafka, &topic);
        assert!(!changes.is_empty(), "changes in {topic}");
        for (offset, value) in changes.values() {
            assert_eq!(value[0], 0, "{topic}@{offset}: the Confluent magic byte");
            assert_eq!(
                value[1..5],
                id.to_be_bytes(),
                "{topic}@{offset}: the registry's id, 4 bytes big-endian"
            );
        }
        ids.insert(id);
        first.insert(topic, changes);
    }
    assert_eq!(
        ids.len(),
        1,
        "one schema, one id under every subject: {ids:?}"
    );
    let id = *ids.first().expect("an id");

    phase("subjects and framing checked");
    // The registry stops mid-run. Capture publishes on: it registered at start.
    blocking(|| registry.server.stop());
    phase("the registry is stopped");
    db.sql_db(
        "sakila",
        "UPDATE actor SET last_name = 'OUTAGE' WHERE actor_id <= 5;
         INSERT INTO category (name) VALUES ('Outage');",
    );
    let end = end_of_log(&db);
    wait("capture to publish through the outage", 120, || {
        capture_checkpoint(&kafka)
            .is_some_and(|c| c.position.parse::<BinlogPosition>().expect("a position") >= end)
    });
    assert!(capture.running(), "capture runs on without the registry");

    // An apply started now stops, naming the registry, with nothing committed past a change it
    // could not decode and nothing written.
    let out = tidemark()
        .args([
            "apply",
            "--config",
            outage.to_str().unwrap(),
            "--until-caught-up",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "apply stops:\n{err}");
    assert!(
        err.contains(&url) && err.contains(&format!("schema id {id}")),
        "the error names the registry and what it was asked:\n{err}"
    );
    phase("apply stopped on the outage");
    let changes_topics = changes_topics(&kafka, &tables);
    for ((topic, partition), (committed, _)) in offsets(&kafka, &changes_topics) {
        let first_change = first[&topic].get(&partition).map(|(o, _)| *o);
        assert!(
            first_change.is_none_or(|o| committed <= o),
            "{topic}/{partition}: committed {committed}, past the first change at {first_change:?}"
        );
    }
    for t in &tables {
        assert_eq!(live_rows(&target, &t.table), 0, "nothing written to {t}");
    }

    // The registry is back, with its schemas (same ids); apply finishes exactly.
    blocking(|| registry.server.start_again());
    phase("the registry is up again");
    for t in &tables {
        let (back, _, _) = latest(&url, &format!("{}-value", topics.changes(t)));
        assert_eq!(back, id, "the registry kept its schemas across the restart");
    }
    capture.terminate();
    run_ok(&["capture", "--config", &cfg, "--until-caught-up"]);
    wait_for_members(&kafka, 0);
    phase("capture caught up");
    let out = run_ok(&["apply", "--config", &cfg, "--until-caught-up"]);
    phase("apply caught up");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        !report.contains("undecodable") && !report.contains("rejected"),
        "every change decoded and applied:\n{report}"
    );

    let rows = assert_target_equals_source(&db.url(), &target, &tables).await;
    let sakila_rows: u64 = SAKILA_ROW_COUNTS.iter().map(|(_, n)| n).sum();
    assert_eq!(
        rows as u64,
        sakila_rows + 1,
        "every Sakila row, and the new category"
    );
    phase("the target equals the source");
    let summary = assert_reconcile_clean(&cfg);
    phase("reconciled");
    println!("{summary}");
}
