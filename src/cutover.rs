//! The cutover gate: whether the target may become authoritative, on evidence, and the record
//! of the transfer.
//!
//! `tidemark cutover check` measures each criterion from what the pipeline stored (the
//! checkpoints, the reconcile runs and acceptances of `ledger`, the dead-letter output) and from
//! the source itself, and says READY only when all of them pass:
//! 1. **backfilled**: every table in scope has finished its backfill, and none is being re-read;
//! 2. **capture lag**: the binlog bytes between capture's stored position and the source's end
//!    of log are within `cutover.max_capture_lag_bytes`;
//! 3. **apply lag**: in Kafka mode, the bytes between capture's published position and the apply
//!    group's frontier are within `cutover.max_apply_lag_bytes` (embedded mode applies each
//!    change with its checkpoint, in one transaction: nothing is between them);
//! 4. **reconcile**: the newest *complete* reconcile (every table in scope, unsampled, each
//!    from its first key) started within `cutover.max_reconcile_age_seconds` and covered every
//!    table in scope;
//! 5. **drift**: it found no actionable drift, except `schema_rejection` of dead letters that are
//!    accepted;
//! 6. **invariants**: every configured invariant was evaluated by it and held;
//! 7. **dead letters**: every dead letter is repaired (the target holds a newer version of its
//!    key than the rejected change) or accepted by name, with a reason
//!    (`tidemark dead-letters accept`). A rejection is never counted as transient.
//!
//! `tidemark cutover record` writes, only when READY, the authority-transfer record (every
//! criterion with its measured value, the positions it holds at, per table the rows the
//! reconcile compared and the transform that made them, each invariant's verdict, the accepted
//! dead letters, tidemark's version), stores it beside the checkpoints, and from then on
//! `cutover check` also reports the drift found by reconciles run after the transfer.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use tidemark_ingest::{Scope, Source};
use tidemark_schemas::TableId;
use tokio::task::block_in_place;

use crate::config::Config;
use crate::ledger::{
    self, Acceptance, ReconcileRun, ACCEPTED_STAGE, AUTHORITY_STAGE, LATEST, RECONCILE_RUN_STAGE,
    VERDICT_STAGE,
};
use crate::target::open_sink;

/// `[cutover]`: the bounds of the gate.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CutoverConfig {
    /// Binlog bytes capture may be behind the source's end of log.
    #[serde(default = "default_lag_bytes")]
    pub max_capture_lag_bytes: u64,
    /// Binlog bytes the apply frontier may be behind capture (Kafka mode).
    #[serde(default = "default_lag_bytes")]
    pub max_apply_lag_bytes: u64,
    /// How old the newest complete reconcile may be, from its start.
    #[serde(default = "default_reconcile_age")]
    pub max_reconcile_age_seconds: f64,
}

fn default_lag_bytes() -> u64 {
    1 << 20
}
fn default_reconcile_age() -> f64 {
    3600.0
}

impl Default for CutoverConfig {
    fn default() -> Self {
        CutoverConfig {
            max_capture_lag_bytes: default_lag_bytes(),
            max_apply_lag_bytes: default_lag_bytes(),
            max_reconcile_age_seconds: default_reconcile_age(),
        }
    }
}

impl CutoverConfig {
    pub fn check(&self) -> Result<()> {
        if self.max_reconcile_age_seconds.is_nan() || self.max_reconcile_age_seconds <= 0.0 {
            bail!("cutover.max_reconcile_age_seconds: must be more than zero seconds");
        }
        Ok(())
    }
}

/// One dead letter (the newest rejection of its key) and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub table: String,
    pub key: String,
    pub version: i64,
    pub kind: String,
    pub column: String,
    pub reason: String,
    /// `repaired`, `accepted` or `outstanding`.
    pub state: &'static str,
    /// Who accepted it, and why (when accepted).
    pub accepted: Option<Acceptance>,
    /// Why it counts as repaired, or why it could not be checked.
    pub note: Option<String>,
}

/// The dead letters, newest rejection per key, each with its state.
pub async fn dead_letters(config: &Config) -> Result<Vec<DeadLetter>> {
    dead_letters_with(config, &ledger::acceptances(config).await?).await
}

/// [`dead_letters`], with the acceptances already read.
async fn dead_letters_with(config: &Config, accepted: &[Acceptance]) -> Result<Vec<DeadLetter>> {
    let rejections = block_in_place(|| crate::dlq::all_rejections(config))?;
    let mut newest: BTreeMap<(String, String), tidemark_transform::Rejection> = BTreeMap::new();
    for r in rejections {
        let k = (r.source_table.clone(), r.key.clone());
        if newest
            .get(&k)
            .is_none_or(|old| old.lineage.version < r.lineage.version)
        {
            newest.insert(k, r);
        }
    }
    let mut out = Vec::with_capacity(newest.len());
    if newest.is_empty() {
        return Ok(out);
    }
    let transformer = config.transformer()?;
    let mut source = Source::connect(&config.source.url).await?;
    let server = source.info.identity;
    let (mut sink, _) = block_in_place(|| open_sink(config))?;
    let mut plans: BTreeMap<String, std::result::Result<tidemark_transform::TablePlan, String>> =
        BTreeMap::new();
    for ((table, key), r) in newest {
        let acceptance = accepted.iter().find(|a| a.covers(&table, &key)).cloned();
        // Repaired: the target holds a newer version of the key than the rejected change.
        if !plans.contains_key(&table) {
            let plan = async {
                let id: TableId = table.parse().map_err(|e: String| e)?;
                let schema = source.load_schema(&id).await.map_err(|e| e.to_string())?;
                let plan = transformer.plan(&schema).map_err(|e| e.to_string())?;
                block_in_place(|| sink.ensure_table(plan.target_schema()))
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>(plan)
            }
            .await;
            plans.insert(table.clone(), plan);
        }
        let (repaired, note) = match &plans[&table] {
            Ok(plan) => {
                let stored = serde_json::from_str(&key)
                    .map_err(|e| e.to_string())
                    .and_then(|map| tidemark_ingest::backfill::key_from_json(plan.source(), &map))
                    .map(|k| tidemark_reconcile::target_key_of(plan, server, &k))
                    .and_then(|tk| {
                        block_in_place(|| sink.read(&plan.target_schema().table, &tk))
                            .map_err(|e| e.to_string())
                    });
                match stored {
                    Ok(Some(rec)) if !rec.is_tombstone() && rec.version() > r.lineage.version => (
                        true,
                        Some(format!(
                            "the target holds version {} of the key",
                            rec.version()
                        )),
                    ),
                    Ok(_) => (false, None),
                    Err(e) => (
                        false,
                        Some(format!("the target row could not be checked: {e}")),
                    ),
                }
            }
            Err(e) => (false, Some(format!("the table could not be checked: {e}"))),
        };
        let state = if repaired {
            "repaired"
        } else if acceptance.is_some() {
            "accepted"
        } else {
            "outstanding"
        };
        out.push(DeadLetter {
            table,
            key,
            version: r.lineage.version,
            kind: r.kind.as_str().to_string(),
            column: r.column.clone(),
            reason: r.reason.clone(),
            state,
            accepted: acceptance,
            note,
        });
    }
    Ok(out)
}

/// `tidemark dead-letters list`.
pub fn render_dead_letters(letters: &[DeadLetter]) -> String {
    if letters.is_empty() {
        return "no dead letters\n".into();
    }
    let mut out = String::new();
    for d in letters {
        out.push_str(&format!(
            "{} {} version {}: {} ({}, column {}): {}",
            d.table, d.key, d.version, d.state, d.kind, d.column, d.reason
        ));
        if let Some(a) = &d.accepted {
            out.push_str(&format!("; accepted by {}: {}", a.by, a.reason));
        }
        if let Some(n) = &d.note {
            out.push_str(&format!("; {n}"));
        }
        out.push('\n');
    }
    let count = |s: &str| letters.iter().filter(|d| d.state == s).count();
    out.push_str(&format!(
        "{} dead letters: {} outstanding, {} accepted, {} repaired\n",
        letters.len(),
        count("outstanding"),
        count("accepted"),
        count("repaired")
    ));
    out
}

/// `tidemark dead-letters accept`: accept the dead letters of `key` in `table` (or, without a
/// key, every dead letter of the table, now and later) as not to be repaired.
pub async fn accept(
    config: &Config,
    table: &TableId,
    key: Option<String>,
    by: &str,
    reason: &str,
) -> Result<String> {
    if by.trim().is_empty() || reason.trim().is_empty() {
        bail!("--by and --reason: an acceptance names who accepts and why; both must be given");
    }
    let scope = Scope::from_config(&config.source)?;
    if !scope.includes(&table.database, &table.table) {
        bail!("--table: {table} is not in scope (source.databases, source.tables)");
    }
    let table_text = table.to_string();
    if let Some(k) = &key {
        let letters = block_in_place(|| crate::dlq::all_rejections(config))?;
        if !letters
            .iter()
            .any(|r| r.source_table == table_text && &r.key == k)
        {
            let known: Vec<String> = letters
                .iter()
                .filter(|r| r.source_table == table_text)
                .map(|r| r.key.clone())
                .take(5)
                .collect();
            bail!(
                "--key: {table} has no dead letter with key {k}{}",
                if known.is_empty() {
                    String::new()
                } else {
                    format!(" (its dead letters have keys such as {})", known.join(" "))
                }
            );
        }
    }
    let acceptance = Acceptance {
        table: table_text,
        key,
        by: by.to_string(),
        reason: reason.to_string(),
        at_unix: crate::metrics::unix_now(),
    };
    ledger::write(
        config,
        &[ledger::record(
            ACCEPTED_STAGE,
            &acceptance.scope(),
            &acceptance,
        )],
    )
    .await?;
    Ok(format!(
        "accepted {} of {} by {}: {}\n",
        match &acceptance.key {
            Some(k) => format!("the dead letters of key {k}"),
            None => "every dead letter".into(),
        },
        acceptance.table,
        acceptance.by,
        acceptance.reason
    ))
}

/// One criterion of the gate.
#[derive(Debug, Clone, Serialize)]
pub struct Criterion {
    pub name: &'static str,
    pub passed: bool,
    /// What was measured.
    pub measured: String,
    /// What to do when it fails.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// What `cutover check` found.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    pub ready: bool,
    pub checked_unix: f64,
    pub criteria: Vec<Criterion>,
    pub source_end_of_log: String,
    pub captured: Option<String>,
    pub applied_frontier: Option<String>,
    /// The uncertainty window when checked.
    pub window: crate::window::Window,
    pub tables: Vec<String>,
    #[serde(skip)]
    pub last_complete_reconcile: Option<ReconcileRun>,
    #[serde(skip)]
    pub dead_letters: Vec<DeadLetter>,
    /// The authority-transfer record, when one was made.
    pub authority: Option<serde_json::Value>,
    /// Since the transfer: actionable drift found by the reconciles run after it.
    pub since_transfer: Option<String>,
}

impl Gate {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for c in &self.criteria {
            out.push_str(&format!(
                "{} {}: {}\n",
                if c.passed { "ok  " } else { "FAIL" },
                c.name,
                c.measured
            ));
            if let (false, Some(fix)) = (c.passed, &c.fix) {
                out.push_str(&format!("     to do: {fix}\n"));
            }
        }
        if let Some(a) = &self.authority {
            out.push_str(&format!(
                "authority transferred at {} by {}\n",
                a["recorded_at"].as_str().unwrap_or("?"),
                a["by"].as_str().unwrap_or("?")
            ));
        }
        if let Some(s) = &self.since_transfer {
            out.push_str(&format!("since the transfer: {s}\n"));
        }
        let failed = self.criteria.iter().filter(|c| !c.passed).count();
        if self.ready {
            out.push_str("READY: the target may become authoritative\n");
        } else {
            out.push_str(&format!(
                "NOT READY: {failed} of {} criteria failed\n",
                self.criteria.len()
            ));
        }
        out
    }
}

fn criterion(name: &'static str, passed: bool, measured: String, fix: &str) -> Criterion {
    Criterion {
        name,
        passed,
        measured,
        fix: (!passed).then(|| fix.to_string()),
    }
}

/// Measure every criterion of the gate.
pub async fn check(config: &Config) -> Result<Gate> {
    let bounds = &config.cutover;
    let now = crate::metrics::unix_now();
    let scope = Scope::from_config(&config.source)?;
    let mut source = Source::connect(&config.source.url).await?;
    let transformer = config.transformer()?;
    let (tables, _) = crate::preflight::checked_scope(&mut source, &scope, &transformer).await?;
    let mut criteria = Vec::new();

    // Everything stored, read once (in Kafka mode: the whole checkpoints topic).
    let checkpoints = ledger::read_all(config).await?;
    let accepted = ledger::acceptances_in(&checkpoints)?;

    // 1. Backfilled, nothing being re-read.
    let (backfills, rereads) = ledger::table_progress_in(&checkpoints, &scope, &tables)?;
    let not_done: Vec<String> = tables
        .iter()
        .filter(|t| !backfills.get(t).is_some_and(|cp| cp.done))
        .map(|t| match backfills.get(t) {
            Some(cp) => format!("{t} ({} rows so far)", cp.rows),
            None => format!("{t} (not started)"),
        })
        .collect();
    let rereading: Vec<String> = rereads
        .iter()
        .filter(|(t, m)| tables.contains(t) && !m.sweep_done)
        .map(|(t, m)| format!("{t} (re-read from {})", m.from))
        .collect();
    criteria.push(criterion(
        "backfilled",
        not_done.is_empty() && rereading.is_empty(),
        if not_done.is_empty() && rereading.is_empty() {
            format!(
                "all {} tables in scope backfilled, none being re-read",
                tables.len()
            )
        } else {
            let mut parts = Vec::new();
            if !not_done.is_empty() {
                parts.push(format!("backfill not finished: {}", not_done.join(", ")));
            }
            if !rereading.is_empty() {
                parts.push(format!("being re-read: {}", rereading.join(", ")));
            }
            parts.join("; ")
        },
        "let the backfills and re-reads finish (tidemark status shows their progress)",
    ));

    // 2–3. Capture and apply lag: the first two stages of the uncertainty window.
    let window = crate::window::measure(config, &mut source, &checkpoints, &tables).await?;
    criteria.push(match (&window.captured, window.capture_bytes) {
        (None, _) => criterion(
            "capture lag",
            false,
            "capture has stored no position yet".into(),
            "start capture (tidemark run, or tidemark capture in Kafka mode)",
        ),
        (Some(p), None) => criterion(
            "capture lag",
            false,
            format!("capture's position {p} is in a binlog the source no longer has"),
            "run tidemark resync for the tables the lost binlog touched",
        ),
        (Some(p), Some(bytes)) => criterion(
            "capture lag",
            bytes <= bounds.max_capture_lag_bytes,
            format!(
                "{bytes} bytes of binlog between capture ({p}) and the source's end of log ({}){}; bound {}",
                window.end_of_log,
                window
                    .capture_seconds
                    .map(|s| format!(", at most {s:.0} s"))
                    .unwrap_or_default(),
                bounds.max_capture_lag_bytes
            ),
            "let capture catch up (is it running? tidemark status shows where it is)",
        ),
    });
    criteria.push(match (config.transport.kafka(), &window.frontier, window.apply_bytes) {
        (None, _, _) => criterion(
            "apply lag",
            true,
            "0 bytes: embedded mode applies each change in the transaction that stores capture's position".into(),
            "",
        ),
        (Some(_), None, _) => criterion(
            "apply lag",
            false,
            "the apply group has no frontier yet (no marker applied on some partition)".into(),
            "run tidemark apply until it has applied capture's markers",
        ),
        (Some(_), Some(f), None) => criterion(
            "apply lag",
            false,
            format!("the apply frontier {f} cannot be measured against capture's position"),
            "let capture and apply run until both have positions in the source's binlog",
        ),
        (Some(_), Some(f), Some(bytes)) => criterion(
            "apply lag",
            bytes <= bounds.max_apply_lag_bytes,
            format!(
                "{bytes} bytes of binlog between the apply frontier ({f}) and capture; bound {}",
                bounds.max_apply_lag_bytes
            ),
            "let apply catch up (more apply members, up to the partitions)",
        ),
    });

    // 4–6. The newest complete reconcile: its age, coverage, drift and invariants.
    let run: Option<ReconcileRun> = window.proof.clone();
    match &run {
        None => {
            let latest: Option<ReconcileRun> =
                ledger::find(&checkpoints, RECONCILE_RUN_STAGE, LATEST);
            let why = match latest {
                Some(l) => format!(
                    "no complete reconcile on record; the newest was not complete: {}",
                    l.incomplete_because.join("; ")
                ),
                None => "no reconcile on record".into(),
            };
            let fix = "run tidemark reconcile (every table, no --sample, no --table)";
            criteria.push(criterion("reconcile", false, why, fix));
            criteria.push(criterion(
                "drift",
                false,
                "no complete reconcile to tell".into(),
                fix,
            ));
            criteria.push(criterion(
                "invariants",
                false,
                "no complete reconcile to tell".into(),
                fix,
            ));
        }
        Some(run) => {
            let age = now - run.started_unix;
            let missing: Vec<String> = tables
                .iter()
                .map(ToString::to_string)
                .filter(|t| !run.tables.contains(t))
                .collect();
            // A table whose mapping changed since was compared with another transform.
            let remapped: Vec<String> = tables
                .iter()
                .filter_map(|t| {
                    let now = transformer.transform_version(t);
                    match run.transforms.get(&t.to_string()) {
                        Some(then) if then != now => {
                            Some(format!("{t} (transform_version {then} then, {now} now)"))
                        }
                        _ => None,
                    }
                })
                .collect();
            let mut notes = String::new();
            if !missing.is_empty() {
                notes.push_str(&format!("; it did not cover {}", missing.join(", ")));
            }
            if !remapped.is_empty() {
                notes.push_str(&format!(
                    "; the mapping changed since for {}",
                    remapped.join(", ")
                ));
            }
            criteria.push(criterion(
                "reconcile",
                age <= bounds.max_reconcile_age_seconds && missing.is_empty() && remapped.is_empty(),
                format!(
                    "the newest complete reconcile started {:.0} s ago (bound {:.0} s), observed the source at {}, compared {} rows of {} tables{notes}",
                    age,
                    bounds.max_reconcile_age_seconds,
                    run.observed_at,
                    run.rows_compared,
                    run.tables.len(),
                ),
                "run tidemark reconcile (every table, no --sample, no --table)",
            ));
            // Schema rejections of accepted dead letters are not to be acted on.
            let accepted_rejections = run
                .rejected_keys
                .iter()
                .filter(|(t, k)| accepted.iter().any(|a| a.covers(t, k)))
                .count() as u64;
            let open = run.actionable.saturating_sub(accepted_rejections);
            // A later partial reconcile (--table, --sample) that found drift is news all the same.
            let later: Option<ReconcileRun> =
                ledger::find(&checkpoints, RECONCILE_RUN_STAGE, LATEST);
            let later_drift = later
                .filter(|l| l.started_unix > run.started_unix && l.actionable > 0)
                .map(|l| {
                    format!(
                        "; a later partial reconcile ({:.0} s ago, {}) found {} actionable findings",
                        now - l.started_unix,
                        l.incomplete_because.join("; "),
                        l.actionable
                    )
                });
            let classes: Vec<String> = run
                .drift
                .iter()
                .map(|(class, n)| format!("{class} {n}"))
                .collect();
            criteria.push(criterion(
                "drift",
                open == 0 && later_drift.is_none(),
                format!(
                    "{open} actionable findings{}{}{}{}",
                    if accepted_rejections > 0 {
                        format!(" ({accepted_rejections} schema rejections of accepted dead letters left out)")
                    } else {
                        String::new()
                    },
                    if classes.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", classes.join(", "))
                    },
                    if run.rejected_keys_truncated {
                        format!("; only the first {} schema rejections are on record, so accepted ones beyond them still count: accept by table", ReconcileRun::MAX_REJECTED_KEYS)
                    } else {
                        String::new()
                    },
                    later_drift.unwrap_or_default()
                ),
                "repair it (tidemark reconcile --repair), or for dead letters accept them (tidemark dead-letters accept), then reconcile again",
            ));
            let mut problems = Vec::new();
            for inv in &config.invariant {
                let now_queries = inv.canonical().map_err(|e| anyhow::anyhow!("{e}"))?;
                match run.invariants.iter().find(|r| r.name == inv.name) {
                    Some(r) if (r.source_query.clone(), r.target_query.clone()) != now_queries => {
                        problems.push(format!(
                            "invariant \"{}\" was changed since that reconcile evaluated it",
                            inv.name
                        ))
                    }
                    Some(r) if r.held => {}
                    Some(r) => problems.push(r.verdict.clone()),
                    None => problems.push(format!(
                        "invariant \"{}\" was not evaluated by that reconcile",
                        inv.name
                    )),
                }
            }
            criteria.push(criterion(
                "invariants",
                problems.is_empty(),
                if problems.is_empty() {
                    format!("all {} invariants held", config.invariant.len())
                } else {
                    problems.join("; ")
                },
                "find why the answers differ (tidemark invariants explain; the drift output lists the groups), fix the mapping or the data, then reconcile again",
            ));
        }
    }

    // 7. Dead letters.
    let letters = dead_letters_with(config, &accepted).await?;
    let outstanding: Vec<&DeadLetter> = letters
        .iter()
        .filter(|d| d.state == "outstanding")
        .collect();
    criteria.push(criterion(
        "dead letters",
        outstanding.is_empty(),
        format!(
            "{} dead letters: {} outstanding, {} accepted, {} repaired{}",
            letters.len(),
            outstanding.len(),
            letters.iter().filter(|d| d.state == "accepted").count(),
            letters.iter().filter(|d| d.state == "repaired").count(),
            if outstanding.is_empty() {
                String::new()
            } else {
                format!(
                    "; e.g. {}",
                    outstanding
                        .iter()
                        .take(3)
                        .map(|d| format!("{} {}", d.table, d.key))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        ),
        "fix the mapping and re-read the keys (tidemark resync, tidemark backfill --keys), or accept them: tidemark dead-letters accept --table T [--key K] --by NAME --reason TEXT",
    ));

    let authority: Option<serde_json::Value> = ledger::find(&checkpoints, AUTHORITY_STAGE, "*");
    let since_transfer = match &authority {
        Some(a) => {
            let at = a["recorded_unix"].as_f64().unwrap_or(f64::MAX);
            let latest: Option<ReconcileRun> =
                ledger::find(&checkpoints, RECONCILE_RUN_STAGE, LATEST);
            Some(match latest {
                Some(l) if l.started_unix > at => format!(
                    "the newest reconcile ({:.0} s ago) found {} actionable findings{}",
                    now - l.started_unix,
                    l.actionable,
                    if l.actionable > 0 {
                        " against the record: act on them"
                    } else {
                        ""
                    }
                ),
                _ => "no reconcile has run since".into(),
            })
        }
        None => None,
    };
    let ready = criteria.iter().all(|c| c.passed);
    // Stored, so that the long-running processes export it (`tidemark_cutover_ready`).
    let verdict = ledger::StoredVerdict {
        ready,
        checked_unix: now,
        criteria: criteria
            .iter()
            .map(|c| (c.name.to_string(), c.passed))
            .collect(),
    };
    ledger::write(config, &[ledger::record(VERDICT_STAGE, "*", &verdict)]).await?;
    verdict.export();
    Ok(Gate {
        ready,
        checked_unix: now,
        criteria,
        source_end_of_log: window.end_of_log.clone(),
        captured: window.captured.clone(),
        applied_frontier: window.frontier.clone(),
        window,
        tables: tables.iter().map(ToString::to_string).collect(),
        last_complete_reconcile: run,
        dead_letters: letters,
        authority,
        since_transfer,
    })
}

/// `tidemark cutover record`: only when the gate is READY, write the authority-transfer record
/// to `output` and store it beside the checkpoints.
pub async fn record(config: &Config, by: &str, output: &Path) -> Result<(String, bool)> {
    if by.trim().is_empty() {
        bail!("--by: name who takes the decision");
    }
    let gate = check(config).await?;
    if !gate.ready {
        return Ok((
            format!(
                "{}no record written: the gate is not READY\n",
                gate.render()
            ),
            false,
        ));
    }
    let run = gate
        .last_complete_reconcile
        .clone()
        .expect("READY implies a complete reconcile");
    let transformer = config.transformer()?;
    let mut source = Source::connect(&config.source.url).await?;
    let mut tables = BTreeMap::new();
    for t in &gate.tables {
        let id: TableId = t.parse().map_err(|e: String| anyhow::anyhow!(e))?;
        let schema = source.load_schema(&id).await?;
        let plan = transformer.plan(&schema)?;
        tables.insert(
            t.clone(),
            serde_json::json!({
                "target_table": plan.target_schema().table,
                "rows_compared": run.rows_per_table.get(t).copied().unwrap_or(0),
                "transform_name": plan.transform_name(),
                "transform_version": plan.transform_version(),
            }),
        );
    }
    let accepted: Vec<&DeadLetter> = gate
        .dead_letters
        .iter()
        .filter(|d| d.state == "accepted")
        .collect();
    let now = crate::metrics::unix_now();
    let record = serde_json::json!({
        "kind": "tidemark authority transfer",
        "by": by,
        "recorded_unix": now,
        "recorded_at": rfc3339(now),
        "tidemark_version": env!("CARGO_PKG_VERSION"),
        "criteria": gate.criteria,
        "source_end_of_log": gate.source_end_of_log,
        "captured_position": gate.captured,
        "applied_frontier": gate.applied_frontier,
        "tables": tables,
        "reconcile": run,
        "accepted_dead_letters": accepted,
    });
    let text = serde_json::to_string_pretty(&record).expect("the record serializes");
    std::fs::write(output, format!("{text}\n"))
        .with_context(|| format!("cannot write the record to {}", output.display()))?;
    ledger::write(config, &[ledger::record(AUTHORITY_STAGE, "*", &record)]).await?;
    Ok((
        format!(
            "{}authority-transfer record written to {} and stored beside the checkpoints\n",
            gate.render(),
            output.display()
        ),
        true,
    ))
}

/// Seconds since the epoch as RFC 3339 UTC.
fn rfc3339(unix: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{unix}"))
}
