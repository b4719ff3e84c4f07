//! `tidemark status`: the checkpoints (the checkpoints topic's in Kafka mode), each backfill's
//! progress, the re-reads in flight, the target's row counts and dead letters, and how far
//! capture is behind the source.

use std::collections::BTreeMap;

use anyhow::Result;
use tidemark_ingest::backfill::BACKFILL_STAGE;
use tidemark_ingest::split::{self, StoredBackfill};
use tidemark_ingest::{CaptureCheckpoint, Source};
use tidemark_schemas::{BinlogPosition, Checkpoint};
use tidemark_sink::{ScyllaSink, Sink, SqliteSink};
use tokio::task::block_in_place;

use crate::config::{Config, Target};
use crate::embedded::{ALL_TABLES, CAPTURE_STAGE};
use crate::ledger;
use crate::target::open_sink;

/// The target's checkpoints, per-table counts of live rows and tombstones (SQLite), the dead
/// letters per table, and how far capture's stored position is behind the source's end of log.
pub async fn status(config: &Config) -> Result<String> {
    // In Kafka mode the pipeline's checkpoints are in the checkpoints topic, not the target. A
    // glance does not wait for brokers that do not answer: it says so and shows the target's.
    let topic = match config.transport.kafka() {
        Some(kafka) => {
            let quick = tidemark_kafka::KafkaConfig {
                connect_timeout_seconds: kafka.connect_timeout_seconds.min(5),
                ..kafka.clone()
            };
            let read = ledger::kafka_records(&quick)
                .await
                .map_err(|e| format!("{e:#}"));
            Some(read)
        }
        None => None,
    };
    let mut out = target_status(config, &topic).await?;
    // One look at the source serves capture's line and the window.
    let window = measure_window(config, &topic).await;
    out.push_str(&capture_behind(config, &topic, &window)?);
    out.push_str(&match &window {
        Ok(w) => w.render(),
        Err(e) => format!("uncertainty window: not measured: {e}\n"),
    });
    Ok(out)
}

/// The uncertainty window, or why it could not be measured.
async fn measure_window(
    config: &Config,
    topic: &TopicCheckpoints,
) -> std::result::Result<crate::window::Window, String> {
    let measured = tokio::time::timeout(SOURCE_WAIT, async {
        let checkpoints = match topic {
            Some(Ok(c)) => c.clone(),
            Some(Err(e)) => anyhow::bail!("the checkpoints topic is not readable: {e}"),
            None => block_in_place(|| -> Result<_> {
                let (mut sink, _) = open_sink(config)?;
                Ok(sink.checkpoints()?)
            })?,
        };
        let mut source = Source::connect(&config.source.url).await?;
        let scope = tidemark_ingest::Scope::from_config(&config.source)?;
        let tables = source.tables_in_scope(&scope).await?;
        crate::window::measure(config, &mut source, &checkpoints, &tables).await
    })
    .await;
    match measured {
        Ok(Ok(w)) => Ok(w),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!(
            "the source did not answer within {} s",
            SOURCE_WAIT.as_secs()
        )),
    }
}

/// The checkpoints topic's checkpoints (Kafka mode), or why they could not be read.
type TopicCheckpoints = Option<std::result::Result<Vec<Checkpoint>, String>>;

/// How long `status` waits for the source before it says it is not reachable.
const SOURCE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Capture's stored position (the target's, or the checkpoints topic's in Kafka mode) and the
/// binlog bytes between it and the source's end of log (the window's capture stage).
fn capture_behind(
    config: &Config,
    topic: &TopicCheckpoints,
    window: &std::result::Result<crate::window::Window, String>,
) -> Result<String> {
    let stored = match topic {
        Some(Ok(checkpoints)) => checkpoints
            .iter()
            .find(|cp| cp.stage == CAPTURE_STAGE && cp.scope == ALL_TABLES)
            .map(|cp| cp.value.clone()),
        Some(Err(_)) => return Ok(String::new()), // said above, with the checkpoints
        None => block_in_place(|| -> Result<_> {
            let (mut sink, _) = open_sink(config)?;
            Ok(sink.checkpoint(CAPTURE_STAGE, ALL_TABLES)?)
        })?,
    }
    .and_then(|text| serde_json::from_str::<CaptureCheckpoint>(&text).ok());
    let Some(position) = stored.and_then(|cp| cp.position.parse::<BinlogPosition>().ok()) else {
        return Ok("capture: no position stored yet\n".into());
    };
    let what = if config.transport.kafka().is_some() {
        "published"
    } else {
        "in the target"
    };
    Ok(match window {
        Ok(w) => match w.capture_bytes {
            Some(bytes) => format!(
                "capture: every change up to {position} is {what}; {bytes} bytes of binlog behind the source's end of log\n"
            ),
            None => format!(
                "capture: its position {position} is no longer in the source's binlogs (purged): capture stops there; `tidemark resync --all` starts over\n"
            ),
        },
        Err(e) => format!("capture: every change up to {position} is {what}; {e}\n"),
    })
}

/// The target's side of [`status`].
async fn target_status(config: &Config, topic: &TopicCheckpoints) -> Result<String> {
    let unreachable = match topic {
        Some(Err(e)) => Some(format!(
            "the checkpoints topic is not readable ({e}); the target's own checkpoints:\n"
        )),
        _ => None,
    };
    let topic_checkpoints = match topic {
        Some(Ok(checkpoints)) => Some(checkpoints),
        _ => None,
    };
    let checkpoints = |sink: &mut dyn Sink| -> Result<String> {
        let mut out = unreachable.clone().unwrap_or_default();
        out.push_str(&checkpoints_text(&match &topic_checkpoints {
            Some(cps) => cps.to_vec(),
            None => sink.checkpoints()?,
        }));
        Ok(out)
    };
    let path = match config.target()? {
        Target::Sqlite { path } => path,
        Target::Scylla {
            config: scylla,
            dead_letter_path,
        } => {
            return block_in_place(|| {
                let mut sink = ScyllaSink::connect_with_handle(
                    scylla.clone(),
                    tokio::runtime::Handle::current(),
                )?;
                let mut out = checkpoints(&mut sink)?;
                out.push_str(&format!(
                    "rows: not counted on a CQL target (a count reads every row of {}); `tidemark reconcile` compares them with the source\n",
                    scylla.keyspace
                ));
                let letters = crate::dlq::FileDeadLetters::load(&dead_letter_path)?;
                let mut per_table: BTreeMap<&str, u64> = BTreeMap::new();
                for (table, _) in letters.0.keys() {
                    *per_table.entry(table.as_str()).or_default() += 1;
                }
                if !per_table.is_empty() {
                    out.push_str(&format!(
                        "dead letters (keys, in {}):\n",
                        dead_letter_path.display()
                    ));
                    for (table, n) in per_table {
                        out.push_str(&format!("  {table:<30} {n:>10}\n"));
                    }
                }
                Ok(out)
            });
        }
    };
    let mut sink = SqliteSink::open(&path)?;
    let mut out = checkpoints(&mut sink)?;
    let conn = sink.connection();
    out.push_str(&format!(
        "{:<32} {:>10} {:>10}\n",
        "table", "live", "tombstones"
    ));
    let mut tables = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE '\\_tm\\_%' ESCAPE '\\' AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )?;
    let names: Vec<String> = tables
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for name in names {
        let (live, dead): (i64, i64) = conn.query_row(
            &format!(
                "SELECT COALESCE(SUM(_tm_deleted = 0), 0), COALESCE(SUM(_tm_deleted = 1), 0) FROM {}",
                tidemark_sink::sqlite::quote(&name)
            ),
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        out.push_str(&format!("{name:<32} {live:>10} {dead:>10}\n"));
    }
    let rejected = crate::dlq::counts(conn)?;
    if !rejected.is_empty() {
        out.push_str("dead letters (schema_rejection, in _tm_dlq):\n");
        for (table, n) in rejected {
            out.push_str(&format!("  {table:<30} {n:>10}\n"));
        }
    }
    Ok(out)
}

/// `checkpoints:` and one line per checkpoint.
fn checkpoints_text(checkpoints: &[Checkpoint]) -> String {
    let mut out = String::from("checkpoints:\n");
    let mut descriptions = 0;
    let mut rereads = String::new();
    let mut backfills = String::new();
    for cp in checkpoints {
        if cp.stage == BACKFILL_STAGE {
            let Ok(table) = cp.scope.parse::<tidemark_schemas::TableId>() else {
                continue;
            };
            if let Ok(stored) = StoredBackfill::from_checkpoints(&table, checkpoints) {
                if let Some(b) = stored.combined() {
                    backfills.push_str(&format!("  {:<30} {}\n", cp.scope, b.progress_text()));
                }
                // While it runs in parts: each part's progress.
                let running = !stored.combined().is_some_and(|t| t.done);
                if let Some(split) = stored.split.as_ref().filter(|_| running) {
                    for (i, part) in stored.parts.iter().enumerate() {
                        let text = match (part, split.range(i as u32)) {
                            (_, None) => "empty (past the split's last boundary)".to_string(),
                            (Some(p), Some(_)) => p.progress_text(),
                            (None, Some(_)) => "not started".to_string(),
                        };
                        let name = format!("part {i}/{}", split.parts);
                        backfills.push_str(&format!("    {name:<28} {text}\n"));
                    }
                }
            }
        }
        // A split and its parts' progress are shown with their table's backfill, above.
        if cp.stage == split::SPLIT_STAGE || cp.stage == split::PART_STAGE {
            continue;
        }
        // The evidence records are summed up below, not printed.
        if [
            ledger::RECONCILE_RUN_STAGE,
            ledger::ACCEPTED_STAGE,
            ledger::AUTHORITY_STAGE,
            ledger::VERDICT_STAGE,
        ]
        .contains(&cp.stage.as_str())
        {
            continue;
        }
        // Table descriptions (JSON of every column) are counted, not printed.
        if cp.stage == crate::resync::SOURCE_SCHEMA_STAGE
            || cp.stage == tidemark_kafka::wire::SCHEMA_STAGE
        {
            descriptions += 1;
            continue;
        }
        out.push_str(&format!(
            "  {:<10} {:<24} {}\n",
            cp.stage, cp.scope, cp.value
        ));
        if cp.stage == tidemark_ingest::RESYNC_STAGE {
            match serde_json::from_str::<tidemark_ingest::ResyncMarker>(&cp.value) {
                Ok(m) if !m.sweep_done => rereads.push_str(&format!(
                    "  {:<30} rows written before {} are re-read{}\n",
                    cp.scope,
                    m.from,
                    if m.rebackfill {
                        ", after a new backfill (a resync, or the new name of a RENAME)"
                    } else {
                        " (a schema change, TRUNCATE or DROP)"
                    }
                )),
                _ => {}
            }
        }
    }
    if descriptions > 0 {
        out.push_str(&format!("  ({descriptions} table descriptions kept)\n"));
    }
    if !backfills.is_empty() {
        out.push_str("backfills:\n");
        out.push_str(&backfills);
    }
    if !rereads.is_empty() {
        out.push_str(
            "re-reads in flight (these tables are not settled for reconcile until done):\n",
        );
        out.push_str(&rereads);
    }
    out.push_str(&evidence_text(checkpoints, crate::metrics::unix_now()));
    out
}

/// The evidence the cutover gate reads: the newest reconcile and the newest complete one (how
/// old the proof is: the reconcile part of the uncertainty window), the accepted dead letters and
/// the authority-transfer record.
fn evidence_text(checkpoints: &[Checkpoint], now: f64) -> String {
    let find = |stage: &str, scope: &str| {
        checkpoints
            .iter()
            .find(|c| c.stage == stage && c.scope == scope)
            .map(|c| c.value.as_str())
    };
    let mut out = String::from("evidence:\n");
    for (scope, what) in [
        (ledger::LATEST, "newest reconcile"),
        (ledger::COMPLETE, "newest complete reconcile"),
    ] {
        let line = match find(ledger::RECONCILE_RUN_STAGE, scope)
            .and_then(|v| serde_json::from_str::<ledger::ReconcileRun>(v).ok())
        {
            Some(r) => format!(
                "started {:.0} s ago, observed the source at {}; {} rows of {} tables compared, {} actionable findings; invariants: {} held, {} not{}",
                now - r.started_unix,
                r.observed_at,
                r.rows_compared,
                r.tables.len(),
                r.actionable,
                r.invariants.iter().filter(|i| i.held).count(),
                r.invariants.iter().filter(|i| !i.held).count(),
                if r.complete {
                    String::new()
                } else {
                    format!(" (not complete: {})", r.incomplete_because.join("; "))
                }
            ),
            None => "none on record".into(),
        };
        out.push_str(&format!("  {what}: {line}\n"));
    }
    let accepted = checkpoints
        .iter()
        .filter(|c| c.stage == ledger::ACCEPTED_STAGE)
        .count();
    out.push_str(&format!("  dead-letter acceptances: {accepted}\n"));
    match find(ledger::AUTHORITY_STAGE, "*")
        .and_then(|v| serde_json::from_str::<serde_json::Value>(v).ok())
    {
        Some(a) => out.push_str(&format!(
            "  authority transferred at {} by {}\n",
            a["recorded_at"].as_str().unwrap_or("?"),
            a["by"].as_str().unwrap_or("?")
        )),
        None => out.push_str(
            "  authority: not transferred (tidemark cutover check says whether it may be)\n",
        ),
    }
    out
}
