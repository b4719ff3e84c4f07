//! Helpers of the end-to-end tests over Apache Kafka (`tests/kafka_*.rs`): the test's transport
//! as a [`KafkaConfig`], what the broker holds read back (checkpoints, changes, the consumer
//! group, its lag), signals to the `tidemark` processes, and the closing reconcile.
//!
//! Every wait here is for a condition ([`tidemark_testkit::wait_for`]), never a fixed time.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use tidemark_ingest::CaptureCheckpoint;
use tidemark_kafka::{CheckpointReader, KafkaConfig, TopicReader, Topics, CAPTURE_STAGE};
use tidemark_schemas::{BinlogPosition, ChangeEvent, TableId};
use tidemark_testkit::Kafka;

/// The transport of `kafka` as the library sees it: what [`Kafka::transport_toml`] writes.
pub fn kafka_config(kafka: &Kafka) -> KafkaConfig {
    let text = kafka.transport_toml();
    let table: toml::Table = toml::from_str(&text).expect("transport_toml parses");
    let mut transport = table["transport"].as_table().expect("[transport]").clone();
    transport.remove("kind");
    transport
        .try_into()
        .expect("transport_toml is a Kafka transport")
}

/// Run blocking broker calls from an async test (multi-threaded runtime).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Wait (blocking) until `ready`, panicking after `secs` seconds with `what`.
pub fn wait(what: &str, secs: u64, ready: impl FnMut() -> bool) {
    blocking(|| tidemark_testkit::wait_for(what, Duration::from_secs(secs), ready))
}

/// The capture checkpoint stored in the checkpoints topic now, if any.
pub fn capture_checkpoint(config: &KafkaConfig) -> Option<CaptureCheckpoint> {
    blocking(|| {
        let mut reader = CheckpointReader::open(config).expect("checkpoints reader");
        reader.catch_up().expect("read the checkpoints topic");
        reader
            .entries()
            .get(&format!("{CAPTURE_STAGE}/*"))
            .map(|cp| serde_json::from_str(&cp.value).expect("a capture checkpoint"))
    })
}

/// Wait until capture stored its start position (it does so before it reads the binlog).
pub fn wait_for_capture_start(config: &KafkaConfig) {
    wait(
        "capture's start position in the checkpoints topic",
        90,
        || capture_checkpoint(config).is_some(),
    );
}

fn client(config: &KafkaConfig) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", config.bootstrap())
        .set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka client")
}

/// The members of the apply group when it is stable (no rebalance under way), else `None`.
pub fn stable_members(config: &KafkaConfig) -> Option<usize> {
    let list = client(config)
        .fetch_group_list(Some(&config.group_id), Duration::from_secs(10))
        .ok()?;
    let group = list.groups().iter().find(|g| g.name() == config.group_id)?;
    match group.state() {
        "Stable" => Some(group.members().len()),
        "Empty" | "Dead" => Some(0),
        _ => None,
    }
}

/// Wait until the apply group is stable with `n` members.
pub fn wait_for_members(config: &KafkaConfig, n: usize) {
    wait(&format!("a stable apply group of {n}"), 90, || {
        stable_members(config) == Some(n)
    });
}

/// The changes topics of `tables` in `config`.
pub fn changes_topics(config: &KafkaConfig, tables: &[TableId]) -> Vec<String> {
    let topics = Topics::new(config);
    tables.iter().map(|t| topics.changes(t)).collect()
}

/// Per partition of `topics`: (the group's committed offset, the high watermark).
pub fn offsets(config: &KafkaConfig, topics: &[String]) -> BTreeMap<(String, i32), (i64, i64)> {
    let consumer = client(config);
    let mut tpl = TopicPartitionList::new();
    let mut out = BTreeMap::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let parts = md.topics()[0].partitions().len() as i32;
        assert!(parts > 0, "topic {topic} exists");
        for p in 0..parts {
            tpl.add_partition(topic, p);
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            out.insert((topic.clone(), p), (0, high));
        }
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    for e in committed.elements() {
        if let Offset::Offset(o) = e.offset() {
            if let Some(entry) = out.get_mut(&(e.topic().to_string(), e.partition())) {
                entry.0 = o;
            }
        }
    }
    out
}

/// Messages of `topics` the group has not committed yet.
pub fn lag(config: &KafkaConfig, topics: &[String]) -> i64 {
    offsets(config, topics)
        .values()
        .map(|(committed, high)| (high - committed).max(0))
        .sum()
}

/// Wait until the running apply members committed everything in `topics`.
pub fn wait_for_no_lag(config: &KafkaConfig, topics: &[String], secs: u64) {
    wait("the apply group committed every message", secs, || {
        lag(config, topics) == 0
    });
}

/// A change message read back from a changes topic.
pub struct Published {
    pub partition: i32,
    pub offset: i64,
    pub change: ChangeEvent,
}

/// Every change message (markers left out) of `topic` now, per partition in offset order.
/// Single-object values only (no registry).
pub fn published_changes(config: &KafkaConfig, topic: &str) -> Vec<Published> {
    blocking(|| {
        let mut reader = TopicReader::open(config, topic, "test-reader").expect("topic reader");
        let mut out = Vec::new();
        reader
            .catch_up(|m| {
                let kind = m.headers().and_then(|h| {
                    use rdkafka::message::Headers;
                    h.iter()
                        .find(|h| h.key == "tm-kind")
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                });
                if kind.as_deref() == Some("change") {
                    let change =
                        tidemark_schemas::avro::decode_change_event(m.payload().expect("a value"))
                            .expect("a change event");
                    out.push(Published {
                        partition: m.partition(),
                        offset: m.offset(),
                        change,
                    });
                }
                Ok(())
            })
            .expect("read the changes topic");
        out.sort_by_key(|p| (p.partition, p.offset));
        out
    })
}

/// Every key's changes keep their source order in the topic: in offset order, each change of a
/// key has a higher version than the one before (so apply, reading a partition in order, never
/// meets an older change of a key after a newer one). For a topic written by one capture run.
pub fn assert_versions_ascend_per_key(published: &[Published]) {
    let mut last: BTreeMap<(i32, String), (i64, i64)> = BTreeMap::new();
    for p in published {
        let key = (p.partition, p.change.key.canonical_text());
        if let Some((version, offset)) = last.get(&key) {
            assert!(
                p.change.version > *version,
                "key {} in partition {}: version {} at offset {} after version {version} at offset {offset}",
                key.1,
                p.partition,
                p.change.version,
                p.offset
            );
        }
        last.insert(key, (p.change.version, p.offset));
    }
}

/// The newest change position in `published`.
pub fn newest_position(published: &[Published]) -> Option<BinlogPosition> {
    published.iter().map(|p| p.change.position).max()
}

/// A `tidemark` process of a test, with its report (stdout) and log (stderr) in files of the
/// test's directory. Dropped while still running (the test failed), it is killed, so a failed
/// test leaves no process behind; dropped while the test panics, it prints the end of its log.
pub struct Proc {
    child: Child,
    name: String,
    out: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl Proc {
    /// Start `tidemark ARGS`; its report goes to `DIR/NAME.out`, its log to `DIR/NAME.log`.
    pub fn start(name: &str, args: &[&str], dir: &std::path::Path) -> Proc {
        let out = dir.join(format!("{name}.out"));
        let log = dir.join(format!("{name}.log"));
        let child = crate::common::tidemark()
            .args(args)
            .stdout(std::fs::File::create(&out).expect("report file"))
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start tidemark");
        Proc {
            child,
            name: name.to_string(),
            out,
            log,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it printed on stdout so far (its report, once it stopped).
    pub fn report(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Send `signal` (`STOP`, `CONT`, `TERM`, `KILL`).
    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.id().to_string()])
            .status()
            .expect("run kill");
        assert!(
            status.success(),
            "kill -{signal} {} ({})",
            self.id(),
            self.name
        );
    }

    /// SIGTERM, then wait for a clean exit (0).
    pub fn terminate(&mut self) {
        self.signal("TERM");
        let status = self.child.wait().expect("wait");
        assert!(
            status.success(),
            "{} shut down cleanly on SIGTERM ({status}):\n{}",
            self.name,
            self.log()
        );
    }

    /// `kill -9`, and reap it.
    pub fn kill_9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }

    /// Wait for it to exit on its own; its exit status.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        self.child.wait().expect("wait")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- the last lines of {} ({}):\n{}",
                self.name,
                self.log.display(),
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
    }
}

/// `tidemark reconcile`: exit 0, no actionable drift. Returns its report.
pub fn assert_reconcile_clean(cfg: &str) -> String {
    let out = crate::common::tidemark()
        .args(["reconcile", "--config", cfg, "--settle-timeout", "30"])
        .output()
        .expect("run tidemark reconcile");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "reconcile reports no actionable drift:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The tables the hot-key workload ([`hot_keys`]) writes.
pub const SHOP: &str = "CREATE DATABASE shop CHARACTER SET utf8mb4;
CREATE TABLE shop.accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL, note VARCHAR(40));
CREATE TABLE shop.links (a INT NOT NULL, b VARCHAR(10) NOT NULL, w INT, PRIMARY KEY (a, b));";

/// `shop.accounts` and `shop.links`.
pub fn shop_tables() -> Vec<TableId> {
    vec![
        TableId::new("shop", "accounts"),
        TableId::new("shop", "links"),
    ]
}

/// 3,000 accounts and 3,000 links, in one transaction each.
pub const PRELOAD: &str = "INSERT INTO shop.accounts (id, balance, note)
   SELECT seq, seq * 10, CONCAT('n', seq) FROM seq_1_to_3000;
 INSERT INTO shop.links (a, b, w)
   SELECT seq DIV 10, CONCAT('k', seq MOD 10), seq FROM seq_1_to_3000;";

/// The pace of the hot-key workloads of the Kafka tests: a breath between statements, a steady
/// stream rather than a flood the machine drowns in.
pub const STEADY: crate::common::workload::Pace = crate::common::workload::Pace {
    pause: Duration::from_millis(2),
    tolerate_errors: false,
};

/// The end of the source's binlog now (`SHOW MASTER STATUS`).
pub fn end_of_log(db: &tidemark_testkit::MariaDb) -> BinlogPosition {
    let status = db.sql("SHOW MASTER STATUS");
    let mut fields = status.split_whitespace();
    let file = fields.next().expect("a binlog file");
    let offset = fields.next().expect("a position");
    format!("{file}:{offset}")
        .parse()
        .expect("a binlog position")
}

/// Wait until capture's checkpoint reaches the source's end of log as it is now: everything
/// written so far is published. The position it stored. On a timeout it says where the stored
/// checkpoint stopped and shows capture's log.
pub fn wait_for_capture_to_publish_all(
    config: &KafkaConfig,
    db: &tidemark_testkit::MariaDb,
    capture: &mut Proc,
) -> BinlogPosition {
    let end = end_of_log(db);
    let mut seen = None;
    let published = blocking(|| {
        let deadline = std::time::Instant::now() + Duration::from_secs(180);
        loop {
            seen = capture_checkpoint(config)
                .map(|c| c.position.parse::<BinlogPosition>().expect("a position"));
            if let Some(p) = seen.filter(|p| *p >= end) {
                return Some(p);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let running = capture.running();
    published.unwrap_or_else(|| {
        panic!(
            "timed out after 180 s waiting for capture to publish the whole binlog (to {end}); its stored checkpoint is at {seen:?}; {} running: {}; its log:\n{}",
            capture.name(),
            running,
            capture.log()
        )
    })
}

/// The apply group's frontier over `tables` (every change before it is in the target).
pub fn frontier(config: &KafkaConfig, tables: &[TableId]) -> Option<BinlogPosition> {
    blocking(|| {
        tidemark_kafka::FrontierReader::open(config, tables)
            .and_then(|mut r| r.frontier())
            .expect("read the apply frontier")
    })
}

/// Wait until the apply group's frontier reached `end`: every change before it was applied.
pub fn wait_for_frontier(config: &KafkaConfig, tables: &[TableId], end: BinlogPosition, secs: u64) {
    wait(&format!("the apply frontier at {end}"), secs, || {
        frontier(config, tables).is_some_and(|f| f >= end)
    });
}

/// Every row of a target table (tombstones too) as source key text → version.
pub fn target_versions(target: &std::path::Path, table: &str) -> BTreeMap<String, i64> {
    let Ok(conn) = rusqlite::Connection::open(target) else {
        return BTreeMap::new();
    };
    let Ok(mut stmt) = conn.prepare(&format!(
        "SELECT _tm_source_key, _tm_version FROM \"{table}\""
    )) else {
        return BTreeMap::new();
    };
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("read the target")
        .map(|r| r.expect("a target row"))
        .collect()
}

/// Live rows of a target table (0 before it exists).
pub fn live_rows(target: &std::path::Path, table: &str) -> i64 {
    rusqlite::Connection::open(target)
        .and_then(|c| {
            c.query_row(
                &format!("SELECT COUNT(*) FROM \"{table}\" WHERE _tm_deleted = 0"),
                [],
                |r| r.get(0),
            )
        })
        .unwrap_or(0)
}

/// `offsets` once two reads 200 ms apart agree (a commit already on its way has landed).
pub fn settled_offsets(
    config: &KafkaConfig,
    topics: &[String],
) -> BTreeMap<(String, i32), (i64, i64)> {
    let mut last = offsets(config, topics);
    let mut settled = None;
    wait("the group's committed offsets to settle", 30, || {
        std::thread::sleep(Duration::from_millis(200));
        let now = offsets(config, topics);
        let same = now
            .iter()
            .all(|(k, (c, _))| last.get(k).map(|(l, _)| l) == Some(c));
        last = now;
        if same {
            settled = Some(last.clone());
        }
        same
    });
    settled.expect("settled")
}

/// The first change message at or after the group's committed offset in each partition of
/// `topic` (partitions with none left out).
pub fn first_uncommitted_changes(config: &KafkaConfig, topic: &str) -> Vec<Published> {
    let committed = settled_offsets(config, &[topic.to_string()]);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", config.bootstrap())
        .set("group.id", format!("{}-test-peek", config.group_id))
        .set("enable.auto.commit", "false")
        .create()
        .expect("a Kafka client");
    let mut tpl = TopicPartitionList::new();
    let mut open = std::collections::BTreeSet::new();
    for ((_, p), (c, high)) in &committed {
        if c < high {
            tpl.add_partition_offset(topic, *p, Offset::Offset(*c))
                .expect("a partition");
            open.insert((*p, *high));
        }
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic} from the committed offsets"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.expect("a message");
        let Some(&(p, high)) = open.iter().find(|(p, _)| *p == m.partition()) else {
            continue;
        };
        use rdkafka::message::Headers;
        let change = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == "tm-kind").and_then(|h| h.value))
            == Some(b"change".as_slice());
        if change {
            out.push(Published {
                partition: p,
                offset: m.offset(),
                change: tidemark_schemas::avro::decode_change_event(m.payload().expect("a value"))
                    .expect("a change event"),
            });
        }
        if change || m.offset() + 1 >= high {
            open.remove(&(p, high));
        }
    }
    out
}

/// A change at or after the group's committed offset of its partition that is in the target
/// already (the target holds its version, or a newer one of its key): a batch written to the
/// target whose offsets are not committed. Batches are written in partition order, so looking at
/// the first uncommitted change of each partition is enough. Read while the apply members are
/// frozen (SIGSTOP).
pub fn written_beyond_commit(
    config: &KafkaConfig,
    topic: &str,
    target: &std::path::Path,
    table: &str,
) -> Option<(i32, i64)> {
    let versions = target_versions(target, table);
    first_uncommitted_changes(config, topic)
        .iter()
        .find(|p| {
            versions
                .get(&p.change.key.canonical_text())
                .is_some_and(|v| *v >= p.change.version)
        })
        .map(|p| (p.partition, p.offset))
}

/// Whether a write transaction is open on the SQLite target (a frozen member in the middle of
/// writing a batch): taking the write lock at once fails.
pub fn target_write_in_progress(target: &std::path::Path) -> bool {
    let conn = rusqlite::Connection::open(target).expect("open the target");
    conn.busy_timeout(Duration::ZERO).expect("busy timeout");
    match conn.execute_batch("BEGIN IMMEDIATE") {
        Ok(()) => {
            conn.execute_batch("ROLLBACK").expect("rollback");
            false
        }
        Err(rusqlite::Error::SqliteFailure(e, _))
            if matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            true
        }
        Err(e) => panic!("probing the target's write lock: {e}"),
    }
}

/// The applied and ignored counts of `table` in a `tidemark apply` report.
pub fn applied_ignored(report: &str, table: &str) -> (u64, u64) {
    report
        .lines()
        .find_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some(table)).then(|| {
                let a = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                let i = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                (a, i)
            })
        })
        .unwrap_or((0, 0))
}

/// The first change message of each partition of `topic` (partitions without one left out):
/// partition → (offset, raw value).
pub fn first_changes(config: &KafkaConfig, topic: &str) -> BTreeMap<i32, (i64, Vec<u8>)> {
    blocking(|| {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", config.bootstrap())
            .set("group.id", format!("{}-test-first", config.group_id))
            .set("enable.auto.commit", "false")
            .create()
            .expect("a Kafka client");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        let mut open = BTreeMap::new();
        for p in 0..md.topics()[0].partitions().len() as i32 {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            if high > low {
                tpl.add_partition_offset(topic, p, Offset::Beginning)
                    .expect("a partition");
                open.insert(p, high);
            }
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = BTreeMap::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !open.is_empty() {
            assert!(std::time::Instant::now() < deadline, "reading {topic}");
            let Some(m) = consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let m = m.expect("a message");
            let Some(&high) = open.get(&m.partition()) else {
                continue;
            };
            use rdkafka::message::Headers;
            let change = m
                .headers()
                .and_then(|h| h.iter().find(|h| h.key == "tm-kind").and_then(|h| h.value))
                == Some(b"change".as_slice());
            if change {
                out.insert(
                    m.partition(),
                    (m.offset(), m.payload().unwrap_or_default().to_vec()),
                );
            }
            if change || m.offset() + 1 >= high {
                open.remove(&m.partition());
            }
        }
        out
    })
}

/// `GET url` of a schema registry's REST API: status and JSON body.
pub fn registry_get(url: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let text = response.body_mut().read_to_string().expect("a body");
    (
        response.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The body of `/metrics` on 127.0.0.1:`port`.
pub fn scrape(port: u16) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("/metrics answers");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.split("\r\n\r\n").nth(1).unwrap_or("").to_string()
}

/// `config` with `[metrics]` on a free port, written beside it as `NAME.toml` (a process of its
/// own serves them: the other stages of the test would take the port): the path and the port.
pub fn with_metrics(config: &std::path::Path, name: &str) -> (std::path::PathBuf, u16) {
    let port = tidemark_testkit::free_port();
    let path = config.with_file_name(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "{}\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            std::fs::read_to_string(config).unwrap()
        ),
    )
    .unwrap();
    (path, port)
}
