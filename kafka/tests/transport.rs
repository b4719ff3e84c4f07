//! The Kafka transport against Apache Kafka (the broker the test run shares, started through
//! `dev/kafka` by the test kit), each test under a topic prefix and consumer group of its own.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Headers;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tidemark_ingest::{BackfillCheckpoint, CaptureMessage};
use tidemark_kafka::{
    group_frontier, send_control, topics_init, ApplyOptions, CheckpointReader, CheckpointStore,
    ControlListener, ControlMessage, Error, FrontierReader, KafkaApplier, KafkaConfig,
    KafkaPublisher, Topics, CAPTURE_STAGE,
};
use tidemark_sink::SqliteSink;
use tidemark_transform::Transformer;
use tokio_util::sync::CancellationToken;

async fn init(config: &KafkaConfig) {
    topics_init(config, &[table()]).await.expect("topics init");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_init_is_idempotent_and_refuses_smaller_topics() {
    let broker = Broker::start();
    let config = broker.config();
    let first = topics_init(&config, &[table()]).await.expect("first init");
    assert!(first.iter().all(|t| t.created), "{first:?}");
    let topics = Topics::new(&config);
    let names: Vec<&str> = first.iter().map(|t| t.name.as_str()).collect();
    for want in [
        topics.changes(&table()),
        topics.checkpoints(),
        topics.drift(),
        topics.dlq(),
        topics.control(),
    ] {
        assert!(names.contains(&want.as_str()), "{want} in {names:?}");
    }
    let second = topics_init(&config, &[table()]).await.expect("second init");
    assert!(second.iter().all(|t| !t.created), "{second:?}");
    assert_eq!(
        second.iter().map(|t| t.partitions).collect::<Vec<_>>(),
        first.iter().map(|t| t.partitions).collect::<Vec<_>>()
    );

    let mut bigger = config.clone();
    bigger.table_partitions.insert(table().to_string(), 8);
    match topics_init(&bigger, &[table()]).await {
        Err(Error::TopicTooSmall {
            topic,
            actual,
            wanted,
        }) => {
            assert_eq!(topic, topics.changes(&table()));
            assert_eq!((actual, wanted), (3, 8));
        }
        other => panic!("expected TopicTooSmall, got {other:?}"),
    }
    // Without topics init, a publisher names the missing topic.
    let mut other = config.clone();
    other.topic_prefix = broker.name("elsewhere");
    let err = KafkaPublisher::new(&other, "s", &[table()])
        .await
        .err()
        .expect("missing topics are an error");
    assert!(err.to_string().contains("tidemark topics init"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publisher_to_applier_round_trip_with_checkpoints_and_frontier() {
    let broker = Broker::start();
    let config = broker.config();
    init(&config).await;
    let mut messages = workload(300);
    // Updates of some keys, a delete, and a backfill-style progress checkpoint.
    messages.push(CaptureMessage::Changes(vec![
        upsert(7, "seven again", 70, 9000),
        upsert(8, "eight again", 80, 9001),
        delete(9, 9002),
    ]));
    let progress = BackfillCheckpoint {
        last_key: None,
        rows: 42,
        done: true,
        chunks: 1,
        ..BackfillCheckpoint::default()
    };
    messages.push(CaptureMessage::Checkpoint(progress.to_checkpoint(&table())));
    messages.push(CaptureMessage::Commit {
        position: pos(9100),
        gtid: Some("0-1-77".into()),
        source_time: None,
    });
    let want = expected(&changes_of(&messages));
    let report = publish(&config, messages).await;
    assert_eq!(report.total_changes(), 303);
    assert_eq!(report.last_position, Some(pos(9100)));
    assert!(report.markers >= 3, "markers into every partition");

    // Capture and backfill resume from the checkpoints topic.
    let store = CheckpointStore::load(&config)
        .await
        .expect("load checkpoints");
    let capture = store
        .capture_checkpoint()
        .expect("readable")
        .expect("capture checkpoint stored");
    assert_eq!(capture.position, "mysql-bin.000001:9100");
    assert_eq!(capture.server, "test-server");
    assert_eq!(capture.gtid.as_deref(), Some("0-1-77"));
    let backfill = store.backfill_checkpoints(&[table()]).expect("readable");
    assert_eq!(backfill.get(&table()), Some(&progress));

    let dir = tempfile::tempdir().expect("tmp");
    let sink_path = dir.path().join("target.db");
    let applied = apply(&config, &sink_path, until_caught_up()).await;
    assert_eq!(applied.undecodable, 0);
    assert!(applied.rejected.is_empty());
    assert_eq!(applied.stats.applied(), 303);
    assert_same(&contents(&sink_path), &want);
    assert_eq!(
        applied.frontier,
        Some(pos(9100)),
        "frontier after the last marker"
    );
    let frontier = group_frontier(&config, &[table()]).await.expect("frontier");
    assert_eq!(frontier.partitions.len(), 3);
    assert_eq!(frontier.min(), Some(pos(9100)));

    // A second run of the same group finds nothing new (offsets were committed).
    let again = apply(&config, &sink_path, until_caught_up()).await;
    assert_eq!(again.messages, 0, "everything was committed: {again:?}");
}

/// A table's shape announced after a wider one of the same table (a row written before an ADD
/// COLUMN, met after rows written since: other partitions, or an apply member restarted in the
/// middle of the change) must not make apply forget the wider shape's column. The wider record
/// after it keeps its value, and the older row's record holds NULL there, as the row did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_narrower_shape_never_drops_a_newer_column() {
    use tidemark_schemas::{SourceColumn, SourceType, Value};
    let broker = Broker::start();
    let config = broker.config();
    init(&config).await;
    let mut wide = schema();
    wide.columns.push(SourceColumn {
        name: "note".into(),
        ty: SourceType::Text {
            charset: "utf8mb4".into(),
            max_chars: Some(20),
            fixed: false,
        },
        nullable: true,
        column_type: "varchar(20)".into(),
    });
    let with_note = |id: i64, note: &str, version: i64| {
        let mut change = upsert(id, "wide", 1, version);
        let after = change.after.as_mut().expect("an upsert has an after image");
        after.push("note", Value::Text(note.into()));
        change
    };
    let commit = |at: u64| CaptureMessage::Commit {
        position: pos(at),
        gtid: None,
        source_time: None,
    };
    // One key, so one partition: apply meets the three shapes in this order.
    let messages = vec![
        CaptureMessage::Schema(Arc::new(wide.clone())),
        CaptureMessage::Changes(vec![with_note(1, "first", 1000)]),
        commit(1005),
        CaptureMessage::Schema(Arc::new(schema())),
        CaptureMessage::Changes(vec![upsert(1, "narrow", 2, 1010)]),
        commit(1015),
        CaptureMessage::Schema(Arc::new(wide)),
        CaptureMessage::Changes(vec![with_note(1, "second", 1020)]),
        commit(1025),
    ];
    publish(&config, messages).await;
    let dir = tempfile::tempdir().expect("tmp");
    let sink_path = dir.path().join("target.db");
    let applied = apply(&config, &sink_path, until_caught_up()).await;
    assert_eq!(applied.stats.applied(), 3, "{applied:?}");
    let target = SqliteSink::open(&sink_path).expect("open the target");
    let (name, note): (String, Option<String>) = target
        .connection()
        .query_row(
            &format!("SELECT name, note FROM \"{}\" WHERE id = 1", target_table()),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("key 1 in the target");
    assert_eq!(
        (name.as_str(), note.as_deref()),
        ("wide", Some("second")),
        "the newest record, written whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_is_never_visible_before_its_data() {
    let broker = Broker::start();
    let config = broker.config();
    init(&config).await;
    let n = 300;
    let last_commit = format!("mysql-bin.000001:{}", 1000 + (n - 1) * 10 + 5);

    // The watcher observes (checkpoint, changes in the topic) pairs, reading the checkpoint
    // first: whatever a visible checkpoint covers must already be readable. It reports its
    // first observation before any data is sent, so the publisher starts on an empty topic.
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher_config = broker.config();
    let watcher_group = broker.name("watcher");
    let done_at = last_commit.clone();
    let watching = tokio::task::spawn_blocking(move || {
        let topics = Topics::new(&watcher_config);
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", watcher_config.bootstrap())
            .set("group.id", watcher_group)
            .create()
            .expect("watcher");
        let mut reader = CheckpointReader::open(&watcher_config).expect("reader");
        let mut first_tx = Some(first_tx);
        let mut seen = Vec::new();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(90) {
            reader.catch_up().expect("catch up");
            let cp = reader
                .entries()
                .get(&format!("{CAPTURE_STAGE}/*"))
                .map(|c| c.value.clone());
            // The high watermarks count changes and markers (the idempotent producer writes no
            // control records), and changes are what the checkpoint covers.
            let mut total = 0;
            for p in 0..3 {
                let (low, high) = consumer
                    .fetch_watermarks(&topics.changes(&table()), p, Duration::from_secs(10))
                    .expect("watermarks");
                total += high - low;
            }
            let done = cp.as_deref().is_some_and(|v| v.contains(&done_at));
            seen.push((cp, total));
            if let Some(tx) = first_tx.take() {
                let _ = tx.send(());
            }
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        seen
    });
    first_rx
        .await
        .expect("the watcher made its first observation");

    // Feed the publisher in small steps so that the watcher sees it mid-way.
    let publisher = KafkaPublisher::new(&config, "test-server", &[table()])
        .await
        .expect("publisher");
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let task = tokio::spawn(publisher.run(rx));
    for (i, m) in workload(n).into_iter().enumerate() {
        tx.send(m).await.expect("publisher alive");
        if i % 20 == 19 {
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }
    drop(tx);
    task.await.expect("task").expect("publisher");
    let observations = watching.await.expect("watcher");

    assert!(
        observations.first().is_some_and(|(cp, _)| cp.is_none()),
        "no checkpoint before anything was sent: {:?}",
        observations.first()
    );
    let mut checkpoints = 0;
    for (cp, total) in &observations {
        if let Some(v) = cp {
            checkpoints += 1;
            // The position of change i is 1000 + 10 i + 5; every change before it must be there.
            let position: tidemark_schemas::BinlogPosition =
                serde_json::from_str::<tidemark_ingest::CaptureCheckpoint>(v)
                    .expect("capture checkpoint")
                    .position
                    .parse()
                    .expect("position");
            let covered = (position.offset as i64 - 1005) / 10 + 1;
            assert!(
                *total >= covered,
                "checkpoint {v} visible with only {total} changes in the changes topic"
            );
        }
    }
    assert!(
        observations
            .last()
            .and_then(|(cp, _)| cp.as_deref())
            .is_some_and(|v| v.contains(&last_commit)),
        "the final checkpoint appeared: {:?}",
        observations.last()
    );
    println!(
        "{} observations, {checkpoints} with a checkpoint",
        observations.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_messages_and_rejections_go_to_the_dlq_and_apply_goes_on() {
    let broker = Broker::start();
    let config = broker.config();
    init(&config).await;
    let topics = Topics::new(&config);
    let changes_topic = topics.changes(&table());
    // Good data first (registers the table description), including one rejection: a name
    // longer than varchar(20).
    let mut messages = workload(20);
    messages.push(CaptureMessage::Changes(vec![upsert(
        100,
        "a name far too long for twenty characters",
        1,
        5000,
    )]));
    messages.push(CaptureMessage::Commit {
        position: pos(5005),
        gtid: None,
        source_time: None,
    });
    publish(&config, messages).await;

    let schema_id = tidemark_kafka::wire::schema_id(&schema());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", config.bootstrap())
        .create()
        .expect("producer");
    let mut unknown_fingerprint = vec![0xC3, 0x01];
    unknown_fingerprint.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
    unknown_fingerprint.extend_from_slice(b"\x02\x04xy");
    let change_headers =
        tidemark_kafka::wire::headers(&[("tm-kind", "change"), ("tm-schema", &schema_id)]);
    // A well-formed change of a table no capture described (no table description in the
    // checkpoints topic under its `tm-schema`).
    let mut ghost = upsert(7, "boo", 1, 5500);
    ghost.table = tidemark_schemas::TableId::new("shop", "ghost");
    let ghost_payload = tidemark_schemas::avro::encode_change_event(&ghost).expect("encode");
    let ghost_headers =
        tidemark_kafka::wire::headers(&[("tm-kind", "change"), ("tm-schema", "00000000deadbeef")]);
    for (payload, headers) in [
        (b"garbage, not avro".to_vec(), Some(change_headers.clone())),
        (unknown_fingerprint, Some(change_headers.clone())),
        (b"no headers at all".to_vec(), None),
        (ghost_payload, Some(ghost_headers)),
    ] {
        let mut record = FutureRecord::<str, [u8]>::to(&changes_topic)
            .key("{\"id\":1}")
            .payload(&payload)
            .partition(0);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .expect("raw message delivered");
    }
    // Then more good data after the bad messages.
    let mut later = vec![CaptureMessage::Schema(Arc::new(schema()))];
    later.push(CaptureMessage::Changes(vec![upsert(200, "after", 2, 6000)]));
    later.push(CaptureMessage::Commit {
        position: pos(6005),
        gtid: None,
        source_time: None,
    });
    publish(&config, later).await;

    let dir = tempfile::tempdir().expect("tmp");
    let sink_path = dir.path().join("target.db");
    let report = apply(&config, &sink_path, until_caught_up()).await;
    assert_eq!(report.undecodable, 4, "{report:?}");
    assert_eq!(report.rejected.get("shop.items"), Some(&1), "{report:?}");
    let sink = contents(&sink_path);
    assert_eq!(
        sink.len(),
        21,
        "20 rows before and one after the bad messages"
    );
    assert!(
        sink.contains_key("{\"id\":200}"),
        "apply went on after the bad messages"
    );

    // The dead-letter topic holds the four raw messages and the rejection.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", config.bootstrap())
        .set("group.id", broker.name("dlq-reader"))
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topics.dlq(), p, Offset::Beginning)
            .expect("tpl");
    }
    consumer.assign(&tpl).expect("assign");
    let mut kinds = Vec::new();
    let mut ghosts = 0;
    let started = Instant::now();
    while kinds.len() < 5 && started.elapsed() < Duration::from_secs(20) {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("dlq message");
            let headers = m.headers().expect("dlq headers");
            let get = |k: &str| {
                headers
                    .iter()
                    .find(|h| h.key == k)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            };
            let kind = get("tm-kind").expect("kind");
            if kind == "undecodable" {
                let error = get("tm-error").expect("error header");
                assert_eq!(
                    get("tm-source-topic").as_deref(),
                    Some(changes_topic.as_str())
                );
                assert!(get("tm-source-offset").is_some());
                if m.payload() == Some(&b"garbage, not avro"[..]) {
                    assert!(error.contains("Avro"), "{error}");
                }
                if m.payload()
                    .is_some_and(|p| p.starts_with(&[0xC3, 0x01, 1, 2]))
                {
                    assert!(error.contains("fingerprint"), "{error}");
                }
                if get("tm-original-kind").is_some() && error.contains("00000000deadbeef") {
                    assert!(error.contains("unknown table description"), "{error}");
                    ghosts += 1;
                }
            } else {
                assert_eq!(kind, "rejection");
                let v: serde_json::Value =
                    serde_json::from_slice(m.payload().expect("payload")).expect("json");
                assert_eq!(v["class"], "schema_rejection");
                assert_eq!(v["key"], "{\"id\":100}");
            }
            kinds.push(kind);
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            "rejection",
            "undecodable",
            "undecodable",
            "undecodable",
            "undecodable"
        ]
    );
    assert_eq!(
        ghosts, 1,
        "the change of an unknown table is named in the dead-letter topic"
    );
    // The rejection reads back for the reconciler (schema_rejection, not missing).
    let rejections = tidemark_kafka::read_rejections(&config).expect("read rejections");
    assert_eq!(rejections.len(), 1, "{rejections:?}");
    assert_eq!(rejections[0].source_table, "shop.items");
    assert_eq!(rejections[0].key, "{\"id\":100}");
    assert_eq!(rejections[0].lineage.version, 5000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applier_dropped_mid_stream_loses_nothing_and_duplicates_are_harmless() {
    let broker = Broker::start();
    let mut config = broker.config();
    init(&config).await;
    let messages = workload(600);
    let want = expected(&changes_of(&messages));
    publish(&config, messages).await;

    config.batch_records = 50;
    let dir = tempfile::tempdir().expect("tmp");
    let sink_path = dir.path().join("target.db");
    // The first member writes three batches and "dies" before committing the last one.
    let first = apply(
        &config,
        &sink_path,
        ApplyOptions {
            max_batches: Some(3),
            abandon: true,
            ..ApplyOptions::default()
        },
    )
    .await;
    eprintln!("first member: {first:?}");
    assert_eq!(first.batches, 3);
    assert!(first.stats.applied() > 0);
    assert!(contents(&sink_path).len() < 600, "stopped mid-stream");

    let second = apply(&config, &sink_path, until_caught_up()).await;
    eprintln!("second member: {second:?}");
    assert!(
        second.stats.ignored() > 0,
        "the uncommitted batch is read again and ignored by the version guard: {second:?}"
    );
    assert_eq!(first.stats.applied() + second.stats.applied(), 600);
    assert_same(&contents(&sink_path), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_appliers_in_one_group_split_the_partitions() {
    let broker = Broker::start();
    let mut config = broker.config();
    config.partitions = 4;
    init(&config).await;
    config.batch_records = 100;
    let dir = tempfile::tempdir().expect("tmp");
    let cancel = CancellationToken::new();
    let mut members = Vec::new();
    for i in 0..2 {
        let path = dir.path().join(format!("member{i}.db"));
        let config = config.clone();
        let cancel = cancel.clone();
        members.push((
            path.clone(),
            tokio::task::spawn_blocking(move || {
                let mut sink = SqliteSink::open(&path).expect("sink");
                let mut applier =
                    KafkaApplier::new(&config, Transformer::identity(), Some(&[table()]))
                        .expect("applier");
                applier
                    .run(&mut sink, &ApplyOptions::default(), &cancel)
                    .expect("run")
            }),
        ));
    }
    // Both members joined (a stable group of two) before the data arrives.
    tokio::task::block_in_place(|| {
        tidemark_testkit::wait_for("both members in the group", Duration::from_secs(60), || {
            group_members(&config) == 2
        })
    });
    let messages = workload(1000);
    let want = expected(&changes_of(&messages));
    publish(&config, messages).await;
    tokio::task::block_in_place(|| {
        tidemark_testkit::wait_for(
            "the two members to apply the 1,000 keys between them",
            Duration::from_secs(60),
            || {
                members
                    .iter()
                    .map(|(p, _)| contents(p).len())
                    .sum::<usize>()
                    >= 1000
            },
        )
    });
    cancel.cancel();
    let mut union = BTreeMap::new();
    let mut assigned = Vec::new();
    for (i, (path, task)) in members.into_iter().enumerate() {
        // A member that does not stop is a failure with a message, not a stalled run.
        let report = tokio::time::timeout(Duration::from_secs(150), task)
            .await
            .unwrap_or_else(|_| panic!("member {i} did not stop within 150 s of the cancel"))
            .expect("member thread");
        assert!(
            report.stats.applied() > 0,
            "each member applied part of the data: {report:?}"
        );
        assigned.push(report.assigned.clone());
        union.extend(contents(&path));
    }
    assert!(
        assigned[0].iter().all(|tp| !assigned[1].contains(tp)),
        "disjoint assignments: {assigned:?}"
    );
    assert_eq!(assigned[0].len() + assigned[1].len(), 4, "{assigned:?}");
    assert_same(&union, &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_throughput_is_measured() {
    let broker = Broker::start();
    let config = broker.config();
    init(&config).await;
    let n = 20_000;
    let messages = workload(n);
    let published = Instant::now();
    publish(&config, messages).await;
    let publish_secs = published.elapsed().as_secs_f64();
    let dir = tempfile::tempdir().expect("tmp");
    let sink_path = dir.path().join("target.db");
    let started = Instant::now();
    let report = apply(&config, &sink_path, until_caught_up()).await;
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(report.stats.applied(), n as u64);
    println!(
        "published {n} changes (+ commits, markers) in {publish_secs:.2}s ({:.0}/s); applied them into SQLite in {secs:.2}s ({:.0} changes/s, including group join and the caught-up check)",
        n as f64 / publish_secs,
        n as f64 / secs
    );
}

/// A publisher whose input is never empty (capture reading a binlog backlog) still writes its
/// checkpoint every `checkpoint_interval_ms`, not only at the end: a crash then re-sends a
/// moment's worth of changes, not everything since the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_are_written_while_a_backlog_is_published() {
    let broker = Broker::start();
    let config = broker.config();
    init(&config).await;
    let messages = workload(20_000);
    // Everything is in the channel before the publisher starts: it never waits for input.
    let (tx, rx) = tokio::sync::mpsc::channel(messages.len());
    for m in messages {
        tx.send(m).await.expect("room in the channel");
    }
    drop(tx);
    let publisher = KafkaPublisher::new(&config, "test-server", &[table()])
        .await
        .expect("publisher");
    let started = Instant::now();
    let report = publisher.run(rx).await.expect("publisher run");
    let secs = started.elapsed().as_secs_f64();
    println!("{} checkpoints in {secs:.2} s", report.checkpoints);
    let interval = config.checkpoint_interval_ms as f64 / 1000.0;
    assert!(
        report.checkpoints as f64 >= (secs / interval / 4.0).floor().max(2.0),
        "{} checkpoints in {secs:.2} s of publishing a backlog (interval {interval} s)",
        report.checkpoints
    );
}

/// The reconciler reads the apply frontier before every chunk it compares. A read of a quiet
/// checkpoints topic asks the broker for its watermarks; asked through the reader's own consumer
/// it waited behind that consumer's pending Fetch, which the broker holds up to
/// `fetch.wait.max.ms` (500 ms) when nothing is new: half a second a chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reading_the_frontier_of_a_quiet_topic_does_not_wait_for_a_fetch() {
    let broker = Broker::start();
    let config = broker.config();
    init(&config).await;
    publish(&config, workload(50)).await;
    let dir = tempfile::tempdir().expect("tmp");
    apply(&config, &dir.path().join("target.db"), until_caught_up()).await;
    let c = config.clone();
    let reads = tokio::task::spawn_blocking(move || {
        let mut reader = FrontierReader::open(&c, &[table()]).expect("frontier reader");
        reader.frontier().expect("first read");
        let started = Instant::now();
        for _ in 0..10 {
            assert!(reader.frontier().expect("frontier").is_some());
        }
        started.elapsed()
    })
    .await
    .expect("reader thread");
    println!("10 reads of the frontier in {reads:?}");
    assert!(
        reads < Duration::from_millis(2500),
        "10 reads of a quiet frontier took {reads:?} (each waited for a Fetch?)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_messages_reach_a_listener() {
    let broker = Broker::start();
    let config = broker.config();
    init(&config).await;
    // A listener without a group sees every message sent once `start` returned, and only those:
    // no wait between starting it and sending.
    let mut early = ControlListener::start(&config, None)
        .await
        .expect("listener");
    send_control(&config, &ControlMessage::PauseBackfill)
        .await
        .expect("send");
    let mut late = ControlListener::start(&config, None)
        .await
        .expect("listener");
    let sent = ControlMessage::RereadKeys {
        table: "shop.items".into(),
        keys: vec![serde_json::json!({"id": 42})],
    };
    send_control(&config, &sent).await.expect("send");
    assert_eq!(
        next(&mut early, "early").await,
        ControlMessage::PauseBackfill
    );
    assert_eq!(next(&mut early, "early").await, sent);
    assert_eq!(
        next(&mut late, "late").await,
        sent,
        "the late listener starts after the pause"
    );
}

async fn next(listener: &mut ControlListener, which: &str) -> ControlMessage {
    tokio::time::timeout(Duration::from_secs(20), listener.next())
        .await
        .unwrap_or_else(|_| panic!("a control message for the {which} listener within 20 s"))
        .expect("valid control message")
        .message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_at_start_is_a_clear_error() {
    // A port nothing listens on: bind, note the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut config = KafkaConfig::new(format!("127.0.0.1:{port}"));
    config.connect_timeout_seconds = 3;
    let started = Instant::now();
    let err = KafkaPublisher::new(&config, "s", &[table()])
        .await
        .err()
        .expect("no broker is an error");
    let text = err.to_string();
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("cannot reach Kafka broker"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "gave up after the configured time, not never"
    );
    let err = topics_init(&config, &[table()]).await.expect_err("error");
    assert!(matches!(err, Error::Unreachable { .. }), "{err:?}");
}

/// A checkpoint reader open across a broker restart reads on once the broker is back: the
/// connection errors its consumer queued while the broker was away (`AllBrokersDown`, read
/// only after the outage is over) do not fail its next call, and it reads from where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_reader_reads_on_after_a_broker_restart() {
    let broker = Broker::dedicated();
    let config = broker.config();
    init(&config).await;
    let checkpoint = |scope: &str, value: &str| tidemark_schemas::Checkpoint {
        stage: "test".into(),
        scope: scope.into(),
        value: value.into(),
    };
    let mut store = CheckpointStore::load(&config).await.expect("store");
    store.store(&checkpoint("a", "1")).await.expect("stored");
    let mut reader =
        tokio::task::block_in_place(|| CheckpointReader::open(&config)).expect("reader");
    tokio::task::block_in_place(|| reader.catch_up()).expect("caught up");
    assert_eq!(reader.entries()["test/a"].value, "1");

    tokio::task::block_in_place(|| {
        broker.kafka().server.stop();
        broker.kafka().server.start_again();
    });
    let mut store = CheckpointStore::load(&config)
        .await
        .expect("store after the restart");
    store.store(&checkpoint("a", "2")).await.expect("stored");
    store.store(&checkpoint("b", "1")).await.expect("stored");
    tokio::task::block_in_place(|| reader.catch_up())
        .expect("the reader reads on after the restart");
    assert_eq!(reader.entries()["test/a"].value, "2");
    assert_eq!(reader.entries()["test/b"].value, "1");
}
