//! Health and Prometheus metrics over HTTP, for Kubernetes probes and scraping.
//!
//! `[metrics] listen = "0.0.0.0:9090"` serves:
//! - `/healthz`: 200 while the process runs (liveness);
//! - `/readyz`: 200 once the stage has connected to the source and opened the target (readiness),
//!   503 before;
//! - `/metrics`: Prometheus text:
//!   - applying (embedded `run`, Kafka-mode `apply`), per target table: `tidemark_rows_applied_total`,
//!     `tidemark_rows_ignored_older_total`; dead letters per source table and kind
//!     (`too_long`, `target_refused`, …): `tidemark_rows_rejected_total{table, kind}`; in Kafka
//!     mode also `tidemark_messages_undecodable_total` (messages sent raw to the dead-letter topic),
//!     `tidemark_apply_lag_messages{topic, partition}` (librdkafka's consumer lag of each
//!     partition the member consumes, every 5 s) and `tidemark_apply_frontier_file_seq` /
//!     `tidemark_apply_frontier_offset` (the member's applied frontier);
//!   - capture: `tidemark_capture_lag_seconds` (how long ago the source wrote the event being
//!     read; 0 once the server says it has nothing more), and, in `run` and Kafka-mode
//!     `capture`, `tidemark_capture_lag_bytes` (binlog bytes between where capture has read to and the
//!     source's end of log, read every 5 s), `tidemark_capture_position_file_seq` and
//!     `tidemark_capture_position_offset` (the last transaction captured);
//!   - backfill, per table: `tidemark_backfill_rows`, `tidemark_backfill_rows_estimated`,
//!     `tidemark_backfill_done`, `tidemark_backfill_paused`, `tidemark_backfill_rows_per_second`;
//!   - capture, per table and operation: `tidemark_capture_events_total{table, op}`;
//!     `tidemark_source_reconnects_total` (the binlog stream lost and reopened);
//!   - backfill, per table: also `tidemark_backfill_eta_seconds` (time left at the current rate);
//!   - `tidemark_queue_depth{queue}`: messages waiting in the channel into `apply` (embedded) or
//!     the Kafka publisher (`publish`), sampled every second ([`watch_queue`]);
//!     `tidemark_apply_batch_records`: records in the last batch apply wrote to the target (a
//!     write of checkpoints alone, such as a heartbeat's, leaves it as it is);
//!   - reconcile (the last one this process ran, [`note_reconcile`]; or, in the process that
//!     measures the uncertainty window, the last one stored: [`show_reconcile`]):
//!     `tidemark_reconcile_last_started_timestamp_seconds`,
//!     `tidemark_reconcile_last_finished_timestamp_seconds`, `tidemark_reconcile_runs_total`,
//!     `tidemark_reconcile_last_drift_keys{class}` (every class, 0 where none),
//!     `tidemark_reconcile_last_actionable_keys`, `tidemark_reconcile_last_rows_compared{table}`;
//!   - `tidemark_source_retries_total`: source reads repeated after a lost connection, a
//!     deadlock or a lock wait.
//!
//! The server runs on its own thread (tiny_http); rendering reads the recorder's atomics, so a
//! scrape never blocks the pipeline.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `/healthz`, `/readyz` and `/metrics` on, e.g. `"0.0.0.0:9090"`.
    pub listen: String,
    /// Seconds between two measurements of the uncertainty window (by `tidemark run`, or the
    /// control worker in Kafka mode).
    #[serde(default = "default_window_seconds")]
    pub window_seconds: u64,
}

fn default_window_seconds() -> u64 {
    30
}

/// Whether the stage is ready: set once it has connected to its source and opened its target.
static READY: AtomicBool = AtomicBool::new(false);

/// Mark the process ready (`/readyz` answers 200 from now on).
pub fn set_ready() {
    READY.store(true, Ordering::Relaxed);
}

/// Install the metrics recorder and serve the endpoints on `config.listen`.
pub fn serve(config: &MetricsConfig) -> Result<()> {
    let handle: PrometheusHandle = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the metrics recorder")?;
    // Counters of rare events are served from the start (at 0), so that an alert on their
    // growth has a series to look at before the first one.
    for name in [
        "tidemark_source_retries_total",
        "tidemark_source_reconnects_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    let server = tiny_http::Server::http(&config.listen)
        .map_err(|e| anyhow::anyhow!("metrics.listen: cannot listen on {}: {e}", config.listen))?;
    std::thread::Builder::new()
        .name("tidemark-metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let (status, body) = match request.url() {
                    "/healthz" => (200, "ok\n".to_string()),
                    "/readyz" if READY.load(Ordering::Relaxed) => (200, "ready\n".to_string()),
                    "/readyz" => (503, "starting\n".to_string()),
                    "/metrics" => (200, handle.render()),
                    _ => (
                        404,
                        "not found: try /healthz, /readyz or /metrics\n".to_string(),
                    ),
                };
                let _ = request
                    .respond(tiny_http::Response::from_string(body).with_status_code(status));
            }
        })
        .context("starting the metrics thread")?;
    Ok(())
}

/// A transaction up to `position` was captured and handed to the write stage: the position
/// gauges.
pub fn note_captured(position: tidemark_schemas::BinlogPosition) {
    metrics::gauge!("tidemark_capture_position_file_seq")
        .set(position.file_seq().unwrap_or(0) as f64);
    metrics::gauge!("tidemark_capture_position_offset").set(position.offset as f64);
}

/// Binlog bytes from `applied` to the end of the files the server has (`sizes`, oldest first);
/// `None` when `applied`'s file is no longer among them.
pub fn bytes_behind(
    applied: &tidemark_schemas::BinlogPosition,
    sizes: &[(String, u64)],
) -> Option<u64> {
    let at = sizes
        .iter()
        .position(|(name, _)| name.as_str() == applied.file.as_str())?;
    let rest: u64 = sizes[at + 1..].iter().map(|(_, size)| size).sum();
    Some(sizes[at].1.saturating_sub(applied.offset) + rest)
}

/// Every 5 s until `cancel`, `tidemark_capture_lag_bytes` from the source's binlog sizes and
/// where capture has read to ([`tidemark_ingest::capture::read_to`]). A failed read is logged and tried again at the next tick.
pub async fn watch_lag_bytes(url: String, cancel: tokio_util::sync::CancellationToken) {
    let mut source = None;
    loop {
        if let Some(applied) = tidemark_ingest::capture::read_to() {
            if source.is_none() {
                source = tidemark_ingest::Source::connect(&url).await.ok();
            }
            if let Some(s) = source.as_mut() {
                match s.binlog_sizes().await {
                    Ok(sizes) => {
                        if let Some(bytes) = bytes_behind(&applied, &sizes) {
                            metrics::gauge!("tidemark_capture_lag_bytes").set(bytes as f64);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "reading the source's binlog sizes");
                        source = None;
                    }
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// Every second until `cancel`, `tidemark_queue_depth{queue}`: the messages waiting in the
/// channel `weak` sends into (capture and backfill → apply, or → the Kafka publisher), until
/// the channel closes. Holds it only weakly, so it never keeps it open.
pub async fn watch_queue<T: Send + 'static>(
    queue: &'static str,
    weak: tokio::sync::mpsc::WeakSender<T>,
    cancel: tokio_util::sync::CancellationToken,
) {
    loop {
        let Some(tx) = weak.upgrade() else { return };
        let depth = tx.max_capacity() - tx.capacity();
        drop(tx);
        metrics::gauge!("tidemark_queue_depth", "queue" => queue).set(depth as f64);
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// A reconcile ran and stored `run`: `tidemark_reconcile_runs_total`, and its gauges.
pub fn note_reconcile(run: &crate::ledger::ReconcileRun) {
    metrics::counter!("tidemark_reconcile_runs_total").increment(1);
    show_reconcile(run);
}

/// The gauges of the last reconcile, from its record: set by the process that ran it, and by
/// the long-running process that serves the uncertainty window (a reconcile Job's pod may end
/// before it is scraped). Every drift class is set, 0 where none was found, so that an alert on
/// a class sees a value.
pub fn show_reconcile(run: &crate::ledger::ReconcileRun) {
    use tidemark_reconcile::classify::DriftClass;
    metrics::gauge!("tidemark_reconcile_last_started_timestamp_seconds").set(run.started_unix);
    metrics::gauge!("tidemark_reconcile_last_finished_timestamp_seconds").set(run.finished_unix);
    for (table, n) in &run.rows_per_table {
        metrics::gauge!("tidemark_reconcile_last_rows_compared", "table" => table.clone())
            .set(*n as f64);
    }
    for class in DriftClass::ALL {
        let keys = run.drift.get(class.as_str()).copied().unwrap_or(0);
        metrics::gauge!("tidemark_reconcile_last_drift_keys", "class" => class.as_str())
            .set(keys as f64);
    }
    metrics::gauge!("tidemark_reconcile_last_actionable_keys").set(run.actionable as f64);
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::bytes_behind;
    use tidemark_schemas::BinlogPosition;

    #[test]
    fn bytes_behind_counts_the_rest_of_the_file_and_the_files_after_it() {
        let sizes = vec![
            ("mysql-bin.000001".to_string(), 1000),
            ("mysql-bin.000002".to_string(), 500),
            ("mysql-bin.000003".to_string(), 300),
        ];
        let at = |f: &str, o| BinlogPosition::new(f, o);
        assert_eq!(
            bytes_behind(&at("mysql-bin.000002", 400), &sizes),
            Some(400)
        );
        assert_eq!(bytes_behind(&at("mysql-bin.000003", 300), &sizes), Some(0));
        assert_eq!(bytes_behind(&at("mysql-bin.000000", 4), &sizes), None);
    }
}
