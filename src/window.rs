//! The uncertainty window: how much of the source's history is not yet proven equal in the
//! target, and where it is.
//!
//! Four points of the source's binlog, newest first: the source's end of log E; capture's stored
//! position C (everything before it is captured: published, or in embedded mode applied); the
//! apply frontier F (everything before it is in the target; in embedded mode F = C, applied in
//! the same transaction); and the observation point R of the newest complete reconcile
//! (everything before it was proven equal). Each stage's share is the binlog bytes between its
//! two points: capture E−C, apply C−F, reconcile F−R; the window is E−R.
//!
//! In seconds: capture's share is at most the age of the newest change captured (its source
//! time, stored with C) when capture is behind, 0 when it is not; the window is the age of the
//! proof (now minus the start of that reconcile). The apply stage's share has no clock of its
//! own (the frontier is a position) and is given in bytes only.
//!
//! Everything comes from what the pipeline stored (the target's checkpoints, or the checkpoints
//! topic in Kafka mode) and from the source, never from one process's memory: `status`, the
//! cutover gate and the `/metrics` of any long-running process see the same window.

use anyhow::Result;
use serde::Serialize;
use tidemark_ingest::{CaptureCheckpoint, Source};
use tidemark_schemas::{BinlogPosition, Checkpoint, TableId};
use tokio::task::block_in_place;

use crate::config::Config;
use crate::ledger::{self, ReconcileRun, COMPLETE, RECONCILE_RUN_STAGE};
use crate::metrics::bytes_behind;

/// The window at one moment. `None` where a point is unknown (nothing stored yet) or lies in a
/// binlog the source no longer has.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Window {
    pub end_of_log: String,
    pub captured: Option<String>,
    pub frontier: Option<String>,
    pub proven_to: Option<String>,
    pub capture_bytes: Option<u64>,
    pub apply_bytes: Option<u64>,
    pub reconcile_bytes: Option<u64>,
    pub total_bytes: Option<u64>,
    pub capture_seconds: Option<f64>,
    pub total_seconds: Option<f64>,
    /// The newest complete reconcile, when there is one.
    #[serde(skip)]
    pub proof: Option<ReconcileRun>,
}

/// Measure the window now. `checkpoints` are the stored ones (all stages), read once by the
/// caller; `tables` those in scope (for the Kafka frontier).
pub async fn measure(
    config: &Config,
    source: &mut Source,
    checkpoints: &[Checkpoint],
    tables: &[TableId],
) -> Result<Window> {
    let now = crate::metrics::unix_now();
    let end = source.end_of_log().await?;
    let sizes = source.binlog_sizes().await?;
    let find = |stage: &str, scope: &str| {
        checkpoints
            .iter()
            .find(|c| c.stage == stage && c.scope == scope)
            .map(|c| c.value.as_str())
    };
    let capture: Option<CaptureCheckpoint> =
        find(crate::embedded::CAPTURE_STAGE, crate::embedded::ALL_TABLES)
            .and_then(|v| serde_json::from_str(v).ok());
    let captured: Option<BinlogPosition> = capture.as_ref().and_then(|c| c.position.parse().ok());
    let frontier: Option<BinlogPosition> = match config.transport.kafka() {
        None => captured,
        Some(kafka) => block_in_place(|| -> Result<Option<BinlogPosition>> {
            let reader = tidemark_kafka::FrontierReader::open(kafka, tables)?;
            let mut f = crate::kafka_mode::KafkaFrontier(reader);
            Ok(tidemark_reconcile::Frontier::frontier(&mut f)?)
        })?,
    };
    let proof: Option<ReconcileRun> =
        find(RECONCILE_RUN_STAGE, COMPLETE).and_then(|v| serde_json::from_str(v).ok());
    let proven_to: Option<BinlogPosition> = proof.as_ref().and_then(|r| r.observed_at.parse().ok());
    let behind = |p: &Option<BinlogPosition>| p.as_ref().and_then(|p| bytes_behind(p, &sizes));
    let (c, f, r) = (behind(&captured), behind(&frontier), behind(&proven_to));
    let between =
        |older: Option<u64>, newer: Option<u64>| older.zip(newer).map(|(o, n)| o.saturating_sub(n));
    let capture_seconds = match (c, capture.as_ref().and_then(|cp| cp.source_time)) {
        (Some(0), _) => Some(0.0),
        (Some(_), Some(t)) => Some((now - f64::from(t)).max(0.0)),
        _ => None,
    };
    Ok(Window {
        end_of_log: end.to_string(),
        captured: captured.map(|p| p.to_string()),
        frontier: frontier.map(|p| p.to_string()),
        proven_to: proven_to.map(|p| p.to_string()),
        capture_bytes: c,
        apply_bytes: between(f, c),
        reconcile_bytes: between(r, f),
        total_bytes: r,
        capture_seconds,
        total_seconds: proof.as_ref().map(|p| (now - p.started_unix).max(0.0)),
        proof,
    })
}

impl Window {
    /// One line per stage, for `status`.
    pub fn render(&self) -> String {
        let bytes = |b: Option<u64>| b.map_or("unknown".to_string(), |b| format!("{b} bytes"));
        let mut out = String::from(
            "uncertainty window (source history not yet proven equal in the target):\n",
        );
        out.push_str(&format!(
            "  capture:   {}{} (end of log {}, captured to {})\n",
            bytes(self.capture_bytes),
            self.capture_seconds
                .map(|s| format!(", at most {s:.0} s"))
                .unwrap_or_default(),
            self.end_of_log,
            self.captured.as_deref().unwrap_or("nothing yet")
        ));
        out.push_str(&format!(
            "  apply:     {} (frontier {})\n",
            bytes(self.apply_bytes),
            self.frontier.as_deref().unwrap_or("none yet")
        ));
        out.push_str(&format!(
            "  reconcile: {} (proven to {})\n",
            bytes(self.reconcile_bytes),
            self.proven_to
                .as_deref()
                .unwrap_or("nothing: no complete reconcile on record")
        ));
        out.push_str(&format!(
            "  total:     {}{}\n",
            bytes(self.total_bytes),
            self.total_seconds
                .map(|s| format!(", the proof is {s:.0} s old"))
                .unwrap_or_default()
        ));
        out
    }

    /// Set the `tidemark_uncertainty_*` gauges (a stage left unset when unknown).
    pub fn export(&self) {
        for (stage, b) in [
            ("capture", self.capture_bytes),
            ("apply", self.apply_bytes),
            ("reconcile", self.reconcile_bytes),
            ("total", self.total_bytes),
        ] {
            if let Some(b) = b {
                metrics::gauge!("tidemark_uncertainty_bytes", "stage" => stage).set(b as f64);
            }
        }
        for (stage, s) in [
            ("capture", self.capture_seconds),
            ("total", self.total_seconds),
        ] {
            if let Some(s) = s {
                metrics::gauge!("tidemark_uncertainty_seconds", "stage" => stage).set(s);
            }
        }
    }
}

/// Every `metrics.window_seconds` until `cancel`: the window, the last stored reconcile's figures
/// and the cutover gate's stored verdict as gauges.
/// Run by the long-running processes that serve `/metrics` (`run`, `control serve`); a failed
/// measurement is logged and tried again at the next tick.
pub async fn watch(config: Config, cancel: tokio_util::sync::CancellationToken) {
    let every = std::time::Duration::from_secs(
        config
            .metrics
            .as_ref()
            .map_or(30, |m| m.window_seconds)
            .max(1),
    );
    let mut source = None;
    loop {
        let tick = async {
            if source.is_none() {
                source = Some(Source::connect(&config.source.url).await?);
            }
            let source = source.as_mut().expect("connected");
            let checkpoints = ledger::read_all(&config).await?;
            let scope = tidemark_ingest::Scope::from_config(&config.source)?;
            let tables = source.tables_in_scope(&scope).await?;
            measure(&config, source, &checkpoints, &tables)
                .await?
                .export();
            if let Some(run) =
                ledger::find::<ReconcileRun>(&checkpoints, RECONCILE_RUN_STAGE, ledger::LATEST)
            {
                crate::metrics::show_reconcile(&run);
            }
            if let Some(v) = checkpoints
                .iter()
                .find(|c| c.stage == ledger::VERDICT_STAGE)
                .and_then(|c| serde_json::from_str::<ledger::StoredVerdict>(&c.value).ok())
            {
                v.export();
            }
            Ok::<_, anyhow::Error>(())
        };
        if let Err(e) = tick.await {
            tracing::warn!(error = %e, retry_in = ?every, "measuring the uncertainty window failed; trying again");
            source = None;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}
