//! Backfill and reconcile progress for a person: live bars on a terminal, structured log lines otherwise.
//!
//! Each table shows rows done of the estimated total (`information_schema.TABLES.TABLE_ROWS`,
//! raised to the rows actually seen), the rate, the ETA, and whether it is paused or backing off.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tidemark_ingest::{Progress, TableProgress};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

fn eta(p: &TableProgress) -> String {
    if p.done {
        return "done".into();
    }
    if p.rows_per_second <= 0.0 || p.estimated_total <= p.rows {
        return "-".into();
    }
    let secs = (p.estimated_total - p.rows) as f64 / p.rows_per_second;
    format!("{}s", secs.ceil() as u64)
}

fn state(p: &TableProgress) -> String {
    if p.paused {
        "paused".into()
    } else if let Some(reason) = &p.backing_off {
        format!("backing off: {reason}")
    } else {
        String::new()
    }
}

/// Show `progress` of `stage` ("backfill", "reconcile") until the returned task is aborted or
/// `cancel` fires.
pub fn spawn(
    stage: &'static str,
    progress: Progress,
    log_every_seconds: u64,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let terminal = std::io::stderr().is_terminal();
        let bars = MultiProgress::with_draw_target(if terminal {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let style = ProgressStyle::with_template(
            "{prefix:<28} [{bar:30}] {pos:>9}/{len:<9} {per_sec:>12} eta {eta:<6} {msg}",
        )
        .expect("valid template")
        .progress_chars("=> ");
        let mut shown: std::collections::BTreeMap<String, ProgressBar> = Default::default();
        let period = if terminal {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(log_every_seconds.max(1))
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(period) => {}
            }
            let snapshot = progress.lock().expect("progress lock").clone();
            for (table, p) in snapshot {
                if terminal {
                    let bar = shown.entry(table.to_string()).or_insert_with(|| {
                        let b = bars.add(ProgressBar::new(p.estimated_total));
                        b.set_style(style.clone());
                        b.set_prefix(table.to_string());
                        b
                    });
                    bar.set_length(p.estimated_total.max(p.rows));
                    bar.set_position(p.rows);
                    bar.set_message(state(&p));
                    if p.done && !bar.is_finished() {
                        bar.finish_with_message("done");
                    }
                } else if !p.done || !shown.contains_key(&table.to_string()) {
                    if p.done {
                        shown.insert(table.to_string(), ProgressBar::hidden());
                    }
                    info!(
                        stage,
                        table = %table,
                        rows = p.rows,
                        estimated_total = p.estimated_total,
                        rows_per_s = p.rows_per_second as u64,
                        eta = %eta(&p),
                        state = %state(&p),
                        "progress"
                    );
                }
            }
        }
    })
}
