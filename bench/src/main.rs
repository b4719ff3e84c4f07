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

use std::process::ExitCode;
use std::time::Instant;

use tidemark_ingest::{
    Capture, CaptureConfig, CaptureMessage, Scope, Source, SourceConfig, StopAt,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const USAGE: &str = "usage: tidemark-bench capture --url URL --database DB [--start earliest|FILE:POS] [--stop FILE:POS] [--server-id N]
       tidemark-bench consume --brokers HOST:PORT --topic TOPIC [--consumer KEY=VALUE]...";

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

fn main() -> ExitCode {
    // The allocator the `tidemark` binary uses, set up alike, so that capture is measured as it
    // runs there.
    tidemark_allocator::configure();
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some("consume") {
        return report(consume(raw));
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
