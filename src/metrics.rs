//! Health and Prometheus metrics over HTTP, for Kubernetes probes and scraping.
//!
//! `[metrics] listen = "0.0.0.0:9090"` serves:
//! - `/healthz`: 200 while the process runs (liveness);
//! - `/readyz`: 200 once the stage has connected to the source and opened the target (readiness),
//!   503 before;
//! - `/metrics`: Prometheus text. Counters per table: `tidemark_rows_applied_total`,
//!   `tidemark_rows_ignored_older_total`, `tidemark_rows_rejected_total`,
//!   `tidemark_backfill_rows_total`, plus `tidemark_capture_position_offset` (gauge).
//!
//! The server runs on its own thread (tiny_http); rendering reads the recorder's atomics, so a
//! scrape never blocks the pipeline.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve `/healthz`, `/readyz` and `/metrics` on, e.g. `"0.0.0.0:9090"`.
    pub listen: String,
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
