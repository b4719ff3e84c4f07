//! `tidemark reconcile`: compare source and target (the reconciler of `tidemark_reconcile`, with
//! this configuration's frontier, dead letters and drift outputs), print the clustered summary,
//! and repair through the pipeline when asked.

use std::path::PathBuf;

use anyhow::{Context, Result};
use tidemark_ingest::split::{KeySplit, Part, SPLIT_STAGE};
use tidemark_ingest::{BackfillControl, Scope, Source};
use tidemark_schemas::{Row, TableId};
use tokio::task::block_in_place;
use tokio_util::sync::CancellationToken;

use std::collections::BTreeMap;

use tidemark_reconcile::DriftClass;

use crate::config::{Config, Target};
use crate::dlq::{FileDeadLetters, LoadedDeadLetters, SinkFrontier};
use crate::embedded::{run, Job};
use crate::ledger::{self, InvariantResult, ReconcileRun, COMPLETE, LATEST, RECONCILE_RUN_STAGE};
use crate::target::open_sink;

/// What `tidemark reconcile` is asked to do.
#[derive(Debug, Clone)]
pub struct ReconcileArgs {
    pub tables: Vec<TableId>,
    pub sample: f64,
    pub output: Option<PathBuf>,
    pub settle_timeout: Option<f64>,
    pub repair: bool,
    pub dry_run: bool,
    /// Only this part of the one table named (its stored split).
    pub part: Option<Part>,
}

/// Compare source and target; print the clustered summary; repair through the pipeline when
/// asked. Returns the report and whether actionable drift was found.
pub async fn reconcile(
    config: &Config,
    args: ReconcileArgs,
    cancel: CancellationToken,
) -> Result<(String, bool)> {
    let target = config.target()?;
    let (mut sink, _) = block_in_place(|| open_sink(config))?;
    let scope = Scope::from_config(&config.source)?;
    let mut source = Source::connect(&config.source.url).await?;
    let tables = if args.tables.is_empty() {
        crate::preflight::checked_scope(&mut source, &scope, &config.transformer()?)
            .await?
            .0
    } else {
        scope.restrict(&args.tables)?;
        args.tables.clone()
    };
    let split = match args.part {
        Some(part) => Some((part, stored_split(config, &tables, part).await?)),
        None => None,
    };
    if !(args.sample > 0.0 && args.sample <= 1.0) {
        anyhow::bail!("--sample: must be a fraction in (0, 1], e.g. 0.1 for a tenth of the keys");
    }
    // A table whose backfill is still running is not comparable yet: its history is only partly
    // in the target, and the apply frontier says nothing about rows the backfill has not reached.
    let mut skipped = String::new();
    // Likewise a table whose rows are being re-read (`tidemark resync`, or after a schema change).
    // Both are kept in the target, or in Kafka mode in the checkpoints topic.
    let (backfills, rereads) = crate::ledger::table_progress(config, &scope, &tables).await?;
    let tables: Vec<TableId> = tables
        .into_iter()
        .filter(|t| match (backfills.get(t), rereads.get(t)) {
            (Some(cp), _) if !cp.done => {
                skipped.push_str(&format!(
                    "skipped {t}: its backfill is still running ({} rows so far); reconcile it once done\n",
                    cp.rows
                ));
                false
            }
            (_, Some(m)) if !m.sweep_done => {
                skipped.push_str(&format!(
                    "skipped {t}: its rows are being re-read after {} at {} (in flight); reconcile it once done\n",
                    if m.rebackfill { "a resync" } else { "a schema change" },
                    m.from
                ));
                false
            }
            _ => true,
        })
        .collect();
    let transformer = config.transformer()?;
    let mut rc = config.reconcile.clone();
    if let Some(t) = args.settle_timeout {
        rc.settle_timeout_seconds = t;
    }
    rc.server_id
        .get_or_insert(config.source.server_id.wrapping_add(1));
    let mut frontier: Box<dyn tidemark_reconcile::Frontier> = match config.transport.kafka() {
        Some(kafka) => Box::new(crate::kafka_mode::KafkaFrontier(block_in_place(|| {
            tidemark_kafka::FrontierReader::open(kafka, &tables)
        })?)),
        None => Box::new(SinkFrontier(block_in_place(|| open_sink(config))?.0)),
    };
    // Rejections are where apply put them: in Kafka mode the dead-letter topic, else next to
    // the target.
    let mut dead: Box<dyn tidemark_reconcile::DeadLetters> =
        match (config.transport.kafka(), &target) {
            (Some(kafka), _) => {
                Box::new(LoadedDeadLetters::from_rejections(block_in_place(|| {
                    tidemark_kafka::read_rejections(kafka)
                })?))
            }
            (None, Target::Sqlite { path }) => Box::new(crate::dlq::EmbeddedView::open(path)?),
            (
                None,
                Target::Scylla {
                    dead_letter_path, ..
                },
            ) => Box::new(FileDeadLetters::load(dead_letter_path)?),
        };
    let mut output = match &args.output {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("cannot create the drift output {}", p.display()))?,
        )),
        None => None,
    };
    let mut write_error = None;
    // In Kafka mode every finding also goes to the drift topic (Avro).
    let mut drift_topic = match config.transport.kafka() {
        // Blocking: with a schema registry it registers the drift schema first.
        Some(kafka) => Some(block_in_place(|| {
            tidemark_kafka::DriftPublisher::new(kafka)
        })?),
        None => None,
    };
    let mut publish_error = None;
    let mut rejected_keys = Vec::new();
    let mut rejected_keys_truncated = false;
    let mut emit = |event: &tidemark_schemas::DriftEvent| {
        if event.class == DriftClass::SchemaRejection.as_str() {
            if rejected_keys.len() < ReconcileRun::MAX_REJECTED_KEYS {
                rejected_keys.push((event.table.clone(), event.key.clone()));
            } else {
                rejected_keys_truncated = true;
            }
        }
        if let Some(out) = output.as_mut() {
            use std::io::Write;
            let line = serde_json::to_string(event).expect("drift events serialize");
            if let Err(e) = writeln!(out, "{line}") {
                write_error.get_or_insert(e);
            }
        }
        if let Some(topic) = drift_topic.as_mut() {
            if let Err(e) = topic.enqueue(event) {
                publish_error.get_or_insert(e);
            }
        }
    };
    let observed_at = source.end_of_log().await?;
    let mut reconciler = tidemark_reconcile::Reconciler::new(source, &mut *sink, &transformer, rc)
        .await?
        .with_invariants(config.invariant.clone());
    if let Some((part, split)) = split {
        reconciler = reconciler.with_part(part, split);
    }
    let display = crate::progress::spawn(
        "reconcile",
        reconciler.progress(),
        config.backfill.progress_seconds,
        cancel.clone(),
    );
    let started = crate::metrics::unix_now();
    let outcome = reconciler
        .run(
            &tables,
            tidemark_reconcile::Sample(args.sample),
            &mut *frontier,
            &mut *dead,
            &mut emit,
        )
        .await;
    display.abort();
    drop(reconciler);
    let outcome = outcome?;
    if let Some(e) = write_error {
        return Err(e).context("writing the drift output");
    }
    if let Some(e) = publish_error {
        return Err(e).context("publishing to the drift topic");
    }
    if let Some(topic) = drift_topic {
        topic
            .finish()
            .await
            .context("publishing to the drift topic")?;
    }
    if let Some(mut out) = output {
        use std::io::Write;
        out.flush().context("writing the drift output")?;
    }
    // The run's record, for the cutover gate: complete only when it compared every table in
    // scope, unsampled, each from its first key.
    let mut incomplete_because = Vec::new();
    if !args.tables.is_empty() {
        incomplete_because.push("it was restricted with --table".to_string());
    }
    if let Some(part) = args.part {
        incomplete_because.push(format!("it compared part {part} of the table"));
    }
    if args.sample < 1.0 {
        incomplete_because.push(format!("it sampled {} of the keys", args.sample));
    }
    if !skipped.is_empty() {
        incomplete_because.push(format!(
            "it skipped tables: {}",
            skipped.trim_end().replace('\n', "; ")
        ));
    }
    let in_flight: u64 = outcome
        .summary
        .clusters
        .iter()
        .filter(|((_, class, _), _)| *class == DriftClass::InFlight)
        .map(|(_, c)| c.count)
        .sum();
    if in_flight > 0 {
        incomplete_because.push(format!(
            "{in_flight} keys were still in flight and not compared (a settle timeout of 0 does not wait for them)"
        ));
    }
    for t in &outcome.resumed {
        incomplete_because.push(format!(
            "{t} was compared from where an interrupted run stopped"
        ));
    }
    let summary = &outcome.summary;
    let run_record = ReconcileRun {
        started_unix: started,
        finished_unix: crate::metrics::unix_now(),
        observed_at: observed_at.to_string(),
        complete: incomplete_because.is_empty(),
        incomplete_because,
        tables: tables.iter().map(ToString::to_string).collect(),
        rows_compared: summary.compared.values().sum(),
        rows_per_table: summary.compared.clone(),
        transforms: tables
            .iter()
            .map(|t| (t.to_string(), transformer.transform_version(t).to_string()))
            .collect(),
        drift: summary
            .clusters
            .iter()
            .fold(BTreeMap::new(), |mut m, ((_, class, _), c)| {
                *m.entry(class.as_str().to_string()).or_default() += c.count;
                m
            }),
        actionable: summary.actionable(),
        rejected_keys,
        rejected_keys_truncated,
        invariants: summary
            .invariants
            .iter()
            .map(|v| InvariantResult {
                name: v.name.clone(),
                table: v.table.to_string(),
                held: v.held(),
                verdict: v.render(3).trim_end().to_string(),
                source_query: v.source_query.clone(),
                target_query: v.target_query.clone(),
            })
            .collect(),
    };
    crate::metrics::note_reconcile(&run_record);
    let mut records = vec![ledger::record(RECONCILE_RUN_STAGE, LATEST, &run_record)];
    if run_record.complete {
        records.push(ledger::record(RECONCILE_RUN_STAGE, COMPLETE, &run_record));
    }
    match config.transport.kafka() {
        Some(_) => ledger::write(config, &records).await?,
        None => {
            block_in_place(|| sink.write(&[], &records))?;
        }
    }
    let mut text = skipped;
    text.push_str(&outcome.summary.render());
    let actionable = outcome.summary.actionable() > 0;
    if args.repair && !outcome.repair.is_empty() {
        let keys: usize = outcome.repair.values().map(Vec::len).sum();
        text.push_str(&format!(
            "repair plan: re-read {keys} keys from the source through the pipeline\n"
        ));
        for (table, ks) in &outcome.repair {
            let examples: Vec<String> = ks.iter().take(3).map(Row::canonical_text).collect();
            text.push_str(&format!(
                "  {table}: {} keys, e.g. {}\n",
                ks.len(),
                examples.join(" ")
            ));
        }
        if args.dry_run {
            text.push_str("dry run: nothing was sent\n");
        } else {
            block_in_place(|| drop(sink));
            match config.transport.kafka() {
                Some(kafka) => {
                    let report = Box::pin(crate::kafka_mode::backfill(
                        config,
                        kafka,
                        crate::kafka_mode::Reading::Keys(outcome.repair),
                        cancel,
                        BackfillControl::default(),
                        true,
                    ))
                    .await?;
                    text.push_str(&report);
                }
                None => {
                    let report = Box::pin(run(
                        config,
                        Job::Repair {
                            keys: outcome.repair,
                        },
                        cancel,
                        BackfillControl::default(),
                    ))
                    .await?;
                    text.push_str(&report.render());
                }
            }
        }
    }
    Ok((text, actionable))
}

/// The split stored for the one table of `tables` by its backfill in parts, checked against
/// `part`.
async fn stored_split(config: &Config, tables: &[TableId], part: Part) -> Result<KeySplit> {
    let [table] = tables else {
        anyhow::bail!("--part compares one table: name exactly one with --table");
    };
    let scope = table.to_string();
    let text = match config.transport.kafka() {
        Some(kafka) => tidemark_kafka::CheckpointStore::load(kafka)
            .await?
            .get(SPLIT_STAGE, &scope)
            .map(str::to_string),
        None => block_in_place(|| -> Result<Option<String>> {
            Ok(open_sink(config)?.0.checkpoint(SPLIT_STAGE, &scope)?)
        })?,
    };
    let Some(text) = text else {
        anyhow::bail!(
            "--part: no split of {table} is stored; its backfill in parts makes one (tidemark backfill --table {table} --part 0/N), or reconcile it whole without --part"
        );
    };
    let split: KeySplit = serde_json::from_str(&text)
        .with_context(|| format!("the stored split of {table} is unreadable: `{text}`"))?;
    if split.parts != part.of {
        anyhow::bail!(
            "--part {part}: {table} is split in {} parts (split {}); reconcile its parts as i/{}",
            split.parts,
            split.id,
            split.parts
        );
    }
    Ok(split)
}
