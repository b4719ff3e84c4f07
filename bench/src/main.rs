//! `tidemark-bench`: measurements `bench/run` cannot take through the `tidemark` binary.
//!
//! ```text
//! tidemark-bench capture --url URL --database DB [--start earliest|FILE:POS] [--stop FILE:POS]
//!                        [--server-id N]
//! ```
//!
//! `capture` reads the binlog over the network as a replica, from `--start` to the end of the
//! log observed when it begins, and decodes every row of the tables of `--database` into
//! versioned change events (the library's capture, exactly as `tidemark run` uses it), counting
//! them on the receiving side of the channel. `--stop` must be a transaction boundary (e.g. the end
//! of log right after the last commit): capture stops at the first boundary at or beyond it, and
//! without `--stop` at the end of log observed at start, which needs a transaction there. It prints `rows=N seconds=S` on stdout; the time
//! covers streaming and decoding only (connecting and resolving the start are excluded).
//!
//! ```text
//! tidemark-bench consume --brokers HOST:PORT --topic TOPIC [--consumer KEY=VALUE]...
//! ```
//!
//! `consume` reads every message of `TOPIC` up to its end with the consumer settings `tidemark
//! apply` uses (`tidemark_kafka::TopicReader`), touching each payload and decoding nothing: the
//! rate at which the broker hands messages to one consumer on this machine, the ceiling of apply.
//! Each `--consumer KEY=VALUE` is a librdkafka consumer setting, as `[transport.consumer]` of a
//! tidemark configuration.
//! It prints `rows=N seconds=S` (connecting and assigning the partitions are excluded).
//!
//! ```text
//! tidemark-bench drained --brokers HOST:PORT --group GROUP --topic TOPIC [--timeout SECONDS]
//! ```
//!
//! `drained` waits until consumer group `GROUP` has committed, on every partition of `TOPIC`, the
//! partition's end offset (apply commits a batch's offsets only once the sink acknowledged it, so
//! then every record published before was acknowledged by the target). It polls every 50 ms and
//! prints `rows=N seconds=S`: the records of the topic and the seconds it waited.
//!
//! ```text
//! tidemark-bench cql-write --nodes HOST:PORT --from KEYSPACE --to KEYSPACE --table T
//!                          [--concurrency N] [--consistency one|local_quorum|…]
//! ```
//!
//! `cql-count --nodes HOST:PORT --keyspace KEYSPACE --table T` pages through the table's
//! partition keys and prints `rows=N seconds=S` (a check, not a figure).
//!
//! `cql-write` is the CQL driver alone doing the sink's work: it reads every row of `FROM.T` (a
//! table tidemark wrote, lineage included) into memory, then writes them into `TO.T` (created
//! beforehand by `tidemark target init`) with the statement the CQL sink prepares (`INSERT INTO …
//! (every column) VALUES (…) USING TIMESTAMP ?`, the row's `_tm_version` as the timestamp), one
//! request per row and at most `--concurrency` in flight (the sink's default, 64), with the
//! driver's token-aware load balancing at `--consistency` (default `one`). It prints `rows=N
//! seconds=S`; the time covers the writes only (reading the rows and preparing are excluded).

use std::process::ExitCode;
use std::time::Instant;

use tidemark_ingest::{
    Capture, CaptureConfig, CaptureMessage, Scope, Source, SourceConfig, StopAt,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: tidemark-bench capture --url URL --database DB [--start earliest|FILE:POS] [--stop FILE:POS] [--server-id N]
       tidemark-bench consume --brokers HOST:PORT --topic TOPIC [--consumer KEY=VALUE]...
       tidemark-bench drained --brokers HOST:PORT --group GROUP --topic TOPIC [--timeout SECONDS]
       tidemark-bench cql-write --nodes HOST:PORT --from KEYSPACE --to KEYSPACE --table T [--concurrency N] [--consistency LEVEL]
       tidemark-bench cql-count --nodes HOST:PORT --keyspace KEYSPACE --table T";

struct Args {
    url: String,
    database: String,
    start: String,
    stop: Option<String>,
    server_id: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    match it.next().as_deref() {
        Some("capture") => {}
        _ => return Err(USAGE.into()),
    }
    let (mut url, mut database) = (None, None);
    let mut start = "earliest".to_string();
    let mut stop = None;
    let mut server_id = 7301;
    for (flag, value) in flag_values(it)? {
        match flag.as_str() {
            "--url" => url = Some(value),
            "--database" => database = Some(value),
            "--start" => start = value,
            "--stop" => stop = Some(value),
            "--server-id" => {
                server_id = value
                    .parse()
                    .map_err(|e| format!("--server-id {value}: {e}"))?
            }
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    Ok(Args {
        url: url.ok_or_else(|| format!("--url is required\n{USAGE}"))?,
        database: database.ok_or_else(|| format!("--database is required\n{USAGE}"))?,
        start,
        stop,
        server_id,
    })
}

async fn capture(args: Args) -> Result<(u64, f64), String> {
    let cfg = SourceConfig {
        url: args.url.clone(),
        server_id: args.server_id,
        databases: vec![args.database.clone()],
        tables: vec![],
        exclude_tables: vec![],
    };
    let scope = Scope::from_config(&cfg).map_err(|e| e.to_string())?;
    let mut source = Source::connect(&args.url)
        .await
        .map_err(|e| e.to_string())?;
    source
        .check_binlog_settings()
        .await
        .map_err(|e| e.to_string())?;
    let capture_cfg = CaptureConfig {
        start: args.start.clone(),
        ..CaptureConfig::default()
    };
    let queue = capture_cfg.queue_capacity;
    let mut capture = Capture::new(source, scope, cfg.server_id, capture_cfg);
    let start = capture
        .resolve_start(None)
        .await
        .map_err(|e| e.to_string())?;
    let end = match &args.stop {
        Some(stop) => stop.parse().map_err(|e| format!("--stop {stop}: {e}"))?,
        None => capture
            .source()
            .end_of_log()
            .await
            .map_err(|e| e.to_string())?,
    };
    let (tx, mut rx) = mpsc::channel(queue);
    let began = Instant::now();
    let counter = tokio::spawn(async move {
        let mut rows = 0u64;
        let mut versions = 0i64;
        while let Some(m) = rx.recv().await {
            if let CaptureMessage::Changes(changes) = m {
                rows += changes.len() as u64;
                // Touch every event so nothing is optimised away.
                for c in &changes {
                    versions = versions.wrapping_add(c.version);
                }
            }
        }
        (rows, versions)
    });
    let reached = capture
        .run(start, StopAt::Position(end), tx, CancellationToken::new())
        .await
        .map_err(|e| e.to_string())?;
    let (rows, _) = counter.await.map_err(|e| e.to_string())?;
    let seconds = began.elapsed().as_secs_f64();
    if reached < end {
        return Err(format!(
            "capture stopped at {reached}, before the end of log {end}"
        ));
    }
    Ok((rows, seconds))
}

/// The arguments as `(--flag, value)` pairs; every flag takes a value.
fn flag_values(mut args: impl Iterator<Item = String>) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        pairs.push((flag, value));
    }
    Ok(pairs)
}

/// `consume`: read `--topic` to its end, as apply's consumer would, and count the messages.
fn consume(args: impl Iterator<Item = String>) -> Result<(u64, f64), String> {
    let (mut brokers, mut topic) = (None, None);
    let mut settings = toml::Table::new();
    for (flag, value) in flag_values(args)? {
        match flag.as_str() {
            "--brokers" => brokers = Some(value),
            "--topic" => topic = Some(value),
            "--consumer" => {
                let (k, v) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--consumer wants KEY=VALUE, not {value}"))?;
                settings.insert(k.to_string(), toml::Value::from(v));
            }
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    let brokers = brokers.ok_or_else(|| format!("--brokers is required\n{USAGE}"))?;
    let topic = topic.ok_or_else(|| format!("--topic is required\n{USAGE}"))?;
    let config: tidemark_kafka::KafkaConfig = toml::from_str(&format!(
        "brokers = [{}]\ngroup_id = \"tidemark-bench\"\n[consumer]\n{settings}",
        toml::Value::from(brokers)
    ))
    .map_err(|e| e.to_string())?;
    let mut reader =
        tidemark_kafka::TopicReader::open(&config, &topic, "bench").map_err(|e| e.to_string())?;
    let began = Instant::now();
    let (mut rows, mut bytes) = (0u64, 0usize);
    reader
        .catch_up(|msg| {
            use rdkafka::Message;
            rows += 1;
            bytes += msg.payload().map_or(0, <[u8]>::len);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let seconds = began.elapsed().as_secs_f64();
    eprintln!("consume: {rows} messages, {bytes} payload bytes");
    Ok((rows, seconds))
}

/// `drained`: wait until the group's committed offsets reach the end of every partition.
fn drained(args: impl Iterator<Item = String>) -> Result<(u64, f64), String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};
    use std::time::Duration;

    let (mut brokers, mut group, mut topic) = (None, None, None);
    let mut timeout = 1800.0f64;
    for (flag, value) in flag_values(args)? {
        match flag.as_str() {
            "--brokers" => brokers = Some(value),
            "--group" => group = Some(value),
            "--topic" => topic = Some(value),
            "--timeout" => {
                timeout = value
                    .parse()
                    .map_err(|e| format!("--timeout {value}: {e}"))?
            }
            _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
        }
    }
    let brokers = brokers.ok_or_else(|| format!("--brokers is required\n{USAGE}"))?;
    let group = group.ok_or_else(|| format!("--group is required\n{USAGE}"))?;
    let topic = topic.ok_or_else(|| format!("--topic is required\n{USAGE}"))?;
    // Never subscribes: it only reads the group's committed offsets, without joining it.
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| format!("a Kafka client for {brokers}: {e}"))?;
    let wait = Duration::from_secs(10);
    let metadata = consumer
        .fetch_metadata(Some(&topic), wait)
        .map_err(|e| format!("metadata of {topic}: {e}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(format!("topic {topic} has no partitions"));
    }
    let began = Instant::now();
    loop {
        let mut ends = Vec::new();
        for &p in &partitions {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p, wait)
                .map_err(|e| format!("end offset of {topic}[{p}]: {e}"))?;
            ends.push(high);
        }
        let mut asked = TopicPartitionList::new();
        for &p in &partitions {
            asked.add_partition(&topic, p);
        }
        let committed = consumer
            .committed_offsets(asked, wait)
            .map_err(|e| format!("offsets of group {group} on {topic}: {e}"))?;
        let done = partitions.iter().zip(&ends).all(|(&p, &end)| {
            match committed.find_partition(&topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => o >= end,
                _ => end == 0,
            }
        });
        if done {
            let rows = ends.iter().map(|&e| e.max(0) as u64).sum();
            return Ok((rows, began.elapsed().as_secs_f64()));
        }
        if began.elapsed().as_secs_f64() > timeout {
            return Err(format!(
                "group {group} had not committed the end of {topic} after {timeout} s"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn main() -> ExitCode {
    // The allocator the `tidemark` binary uses, set up alike, so that capture is measured as it
    // runs there.
    tidemark_allocator::configure();
    let mut raw = std::env::args().skip(1);
    match raw.next().as_deref() {
        Some("consume") => return report(consume(raw)),
        Some("drained") => return report(drained(raw)),
        Some("cql-write") => {
            return report(cql::runtime().and_then(|rt| rt.block_on(cql::write(raw))));
        }
        Some("cql-count") => {
            return report(cql::runtime().and_then(|rt| rt.block_on(cql::count(raw))));
        }
        _ => {}
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    report(runtime.block_on(capture(args)))
}

/// Print a measurement as `rows=N seconds=S`, or its error; the exit code says which.
fn report(measured: Result<(u64, f64), String>) -> ExitCode {
    match measured {
        Ok((rows, seconds)) => {
            println!("rows={rows} seconds={seconds:.6}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

mod cql {
    //! `cql-write`: the raw CQL write limit (see the crate documentation).

    use std::time::Instant;

    use futures_util::stream::{self, StreamExt, TryStreamExt};
    use scylla::client::execution_profile::ExecutionProfile;
    use scylla::client::session::Session;
    use scylla::client::session_builder::SessionBuilder;
    use scylla::errors::ExecutionError;
    use scylla::policies::load_balancing::DefaultPolicy;
    use scylla::response::query_result::QueryResult;
    use scylla::statement::prepared::PreparedStatement;
    use scylla::value::{CqlValue, Row};
    use tidemark_sink::scylladb::config::ConsistencyLevel;
    use tidemark_sink::scylladb::cql::{qualified, quote};

    use super::{flag_values, USAGE};

    /// Two workers, as the CQL sink's own runtime.
    pub fn runtime() -> Result<tokio::runtime::Runtime, String> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the async runtime: {e}"))
    }

    async fn connect(nodes: &str, consistency: ConsistencyLevel) -> Result<Session, String> {
        let profile = ExecutionProfile::builder()
            .consistency(consistency.to_driver())
            .load_balancing_policy(DefaultPolicy::builder().token_aware(true).build())
            .build();
        SessionBuilder::new()
            .known_nodes(nodes.split(','))
            .default_execution_profile_handle(profile.into_handle())
            .build()
            .await
            .map_err(|e| format!("connecting to {nodes}: {e}"))
    }

    pub async fn count(args: impl Iterator<Item = String>) -> Result<(u64, f64), String> {
        let (mut nodes, mut keyspace, mut table) = (None, None, None);
        for (flag, value) in flag_values(args)? {
            match flag.as_str() {
                "--nodes" => nodes = Some(value),
                "--keyspace" => keyspace = Some(value),
                "--table" => table = Some(value),
                _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
            }
        }
        let required =
            |v: Option<String>, name: &str| v.ok_or_else(|| format!("{name} is required\n{USAGE}"));
        let (nodes, keyspace, table) = (
            required(nodes, "--nodes")?,
            required(keyspace, "--keyspace")?,
            required(table, "--table")?,
        );
        let session = connect(&nodes, ConsistencyLevel::One).await?;
        let began = Instant::now();
        // One key column is enough: the scan returns one entry per row.
        let (key,): (String,) = session
            .query_unpaged(
                "SELECT column_name FROM system_schema.columns \
                 WHERE keyspace_name = ? AND table_name = ? AND kind = 'partition_key' \
                 ALLOW FILTERING",
                (keyspace.as_str(), table.as_str()),
            )
            .await
            .map_err(|e| format!("reading the key of {keyspace}.{table}: {e}"))?
            .into_rows_result()
            .map_err(|e| e.to_string())?
            .first_row::<(String,)>()
            .map_err(|e| format!("the key of {keyspace}.{table}: {e}"))?;
        let mut pages = session
            .query_iter(
                format!(
                    "SELECT {} FROM {}",
                    quote(&key),
                    qualified(&keyspace, &table)
                ),
                (),
            )
            .await
            .map_err(|e| format!("reading {keyspace}.{table}: {e}"))?
            .rows_stream::<Row>()
            .map_err(|e| e.to_string())?;
        let mut rows = 0u64;
        while let Some(row) = pages.next().await {
            row.map_err(|e| format!("reading {keyspace}.{table}: {e}"))?;
            rows += 1;
        }
        Ok((rows, began.elapsed().as_secs_f64()))
    }

    /// One row's insert. A write the node answers with a timeout or an overload is written
    /// again (up to five times), as the sink's own retries do: a loaded node is part of the
    /// limit measured, not a failed run.
    async fn write_retrying(
        session: &Session,
        prepared: &PreparedStatement,
        values: &[Option<CqlValue>],
    ) -> Result<QueryResult, ExecutionError> {
        let mut attempt = 1;
        loop {
            match session.execute_unpaged(prepared, values).await {
                Err(e) if attempt < 5 && tidemark_sink::scylladb::is_transient(&e) => {
                    attempt += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                }
                done => return done,
            }
        }
    }

    pub async fn write(args: impl Iterator<Item = String>) -> Result<(u64, f64), String> {
        let (mut nodes, mut from, mut to, mut table) = (None, None, None, None);
        let mut concurrency = 64usize;
        let mut consistency = ConsistencyLevel::One;
        for (flag, value) in flag_values(args)? {
            match flag.as_str() {
                "--nodes" => nodes = Some(value),
                "--from" => from = Some(value),
                "--to" => to = Some(value),
                "--table" => table = Some(value),
                "--concurrency" => {
                    concurrency = value
                        .parse()
                        .map_err(|e| format!("--concurrency {value}: {e}"))?
                }
                "--consistency" => {
                    consistency = toml::Value::from(value.as_str())
                        .try_into()
                        .map_err(|e| format!("--consistency {value}: {e}"))?
                }
                _ => return Err(format!("unknown argument {flag}\n{USAGE}")),
            }
        }
        let required =
            |v: Option<String>, name: &str| v.ok_or_else(|| format!("{name} is required\n{USAGE}"));
        let (nodes, from, to, table) = (
            required(nodes, "--nodes")?,
            required(from, "--from")?,
            required(to, "--to")?,
            required(table, "--table")?,
        );
        let session = connect(&nodes, consistency).await?;
        let columns: Vec<String> = session
            .query_unpaged(
                "SELECT column_name FROM system_schema.columns \
                 WHERE keyspace_name = ? AND table_name = ?",
                (from.as_str(), table.as_str()),
            )
            .await
            .map_err(|e| format!("reading the columns of {from}.{table}: {e}"))?
            .into_rows_result()
            .map_err(|e| e.to_string())?
            .rows::<(String,)>()
            .map_err(|e| e.to_string())?
            .map(|r| r.map(|(c,)| c))
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        let version_at = columns
            .iter()
            .position(|c| c == "_tm_version")
            .ok_or_else(|| format!("{from}.{table} has no _tm_version column"))?;
        let list = columns
            .iter()
            .map(|c| quote(c))
            .collect::<Vec<_>>()
            .join(", ");

        // Every row in memory first, its write timestamp appended: the timed part only writes.
        let select = format!("SELECT {list} FROM {}", qualified(&from, &table));
        let mut rows: Vec<Vec<Option<CqlValue>>> = Vec::new();
        let mut pages = session
            .query_iter(select, ())
            .await
            .map_err(|e| format!("reading {from}.{table}: {e}"))?
            .rows_stream::<Row>()
            .map_err(|e| e.to_string())?;
        while let Some(row) = pages.next().await {
            let mut values = row
                .map_err(|e| format!("reading {from}.{table}: {e}"))?
                .columns;
            let version = match &values[version_at] {
                Some(CqlValue::BigInt(v)) => *v,
                other => return Err(format!("a row of {from}.{table} has _tm_version {other:?}")),
            };
            values.push(Some(CqlValue::BigInt(version)));
            rows.push(values);
        }
        eprintln!("cql-write: {} rows of {from}.{table} read", rows.len());

        let insert = format!(
            "INSERT INTO {} ({list}) VALUES ({}) USING TIMESTAMP ?",
            qualified(&to, &table),
            vec!["?"; columns.len()].join(", ")
        );
        let mut prepared = session
            .prepare(insert)
            .await
            .map_err(|e| format!("preparing the insert into {to}.{table}: {e}"))?;
        prepared.set_is_idempotent(true);

        let began = Instant::now();
        stream::iter(&rows)
            .map(|values| write_retrying(&session, &prepared, values))
            .buffer_unordered(concurrency.max(1))
            .map_err(|e| format!("writing into {to}.{table}: {e}"))
            .try_for_each(|_| async { Ok(()) })
            .await?;
        Ok((rows.len() as u64, began.elapsed().as_secs_f64()))
    }
}
