//! The WAL off the write path: the checkpointer thread, and how the writer learns the WAL's size
//! (the module doc of `sqlite` says why).

use std::ffi::c_int;

use rusqlite::Connection;

use crate::{Error, Result};

/// The WAL size past which a write wakes the checkpointer, by default: 64 MiB.
pub const CHECKPOINT_AFTER_BYTES: u64 = 64 << 20;

/// The WAL size, in multiples of the checkpoint threshold, past which the writer stops and
/// checkpoints itself, should the checkpointer never catch up (the WAL only starts over once all
/// of it has been copied).
pub(super) const CHECKPOINT_NOW_FACTOR: u64 = 4;

/// Bytes of a WAL frame's header (before its page).
pub(super) const WAL_FRAME_HEADER_BYTES: u64 = 24;

/// The size a WAL that starts over is cut back to: twice the checkpoint threshold. A WAL that
/// keeps its file is overwritten in place (page-cache pages and disk blocks the file already has);
/// one cut back to nothing makes the file system free and allocate them again on every cycle.
pub(super) fn wal_size_limit(checkpoint_after: u64) -> i64 {
    i64::try_from(checkpoint_after.saturating_mul(2)).unwrap_or(i64::MAX)
}

thread_local! {
    /// Frames in the WAL after the last commit on this thread, as SQLite's WAL hook reports
    /// them; `None` until a commit reports.
    pub(super) static WAL_FRAMES: std::cell::Cell<Option<u64>> = const { std::cell::Cell::new(None) };
}

/// The WAL hook of a writer's connection: SQLite calls it after each commit that wrote to the
/// WAL, on the committing thread, with the number of frames the WAL now holds (counting from
/// the last time it started over).
pub(super) fn note_wal_frames(_: &rusqlite::hooks::Wal, frames: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(Some(u64::try_from(frames).unwrap_or(0)));
    Ok(())
}

/// Copies the WAL into the database file on its own thread and connection, so that the writer
/// never stops for it (see the module doc).
pub(super) struct Checkpointer {
    wake: Option<std::sync::mpsc::SyncSender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn start(path: &str) -> Result<Checkpointer> {
        let open_err = |e: rusqlite::Error| Error::Open {
            path: path.to_string(),
            message: format!("opening the checkpointer's connection: {e}"),
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(open_err)?;
        let (wake, woken) = std::sync::mpsc::sync_channel::<()>(1);
        let name = path.to_string();
        let thread = std::thread::Builder::new()
            .name("tidemark-wal-checkpoint".into())
            .spawn(move || {
                while woken.recv().is_ok() {
                    // Each pass copies what the writer committed during the one before, so the
                    // passes shrink until one ends between two commits with nothing left: then
                    // the writer's next transaction starts the WAL over.
                    let pass = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
                    if let Err(e) = pass {
                        // Nothing is lost: the WAL keeps what was not copied.
                        tracing::warn!(target = %name, error = %e, "WAL checkpoint failed; it is retried after the next write");
                    }
                }
            })
            .map_err(|e| Error::Open {
                path: path.to_string(),
                message: format!("starting the checkpointer thread: {e}"),
            })?;
        Ok(Checkpointer {
            wake: Some(wake),
            thread: Some(thread),
        })
    }

    /// After a commit that left `size` bytes in the WAL: wake the checkpointer when that is
    /// `after` bytes or more; whether it is [`CHECKPOINT_NOW_FACTOR`] times that.
    pub(super) fn after_commit(&self, size: u64, after: u64) -> bool {
        if size >= after {
            if let Some(wake) = &self.wake {
                // Full: it is awake already.
                let _ = wake.try_send(());
            }
        }
        size >= CHECKPOINT_NOW_FACTOR * after
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.wake.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
