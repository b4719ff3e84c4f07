//! Retrying source reads that the server, or the network, asks to have repeated.
//!
//! A backfill or a reconcile runs for hours beside a live application, so some of its reads
//! fail for reasons that say nothing about the data: the source restarted or failed over (the
//! connection is gone), the server killed the session, or InnoDB chose the read as a deadlock
//! victim (1213) or gave up waiting for a row lock (1205) — the server's way of saying "try
//! again". [`Error::is_retryable_read`] tells those apart from definite errors (a missing table,
//! a value that cannot be decoded, a wrong setting), which stop the stage at once.
//!
//! [`ReadRetry`] is the bounded policy both stages use: after a retryable failure the caller
//! waits (0.5 s, doubling, at most 30 s), opens fresh connections and repeats the *whole* unit
//! it was reading (a chunk, a batch of keys), observing the end of log again, so the versions
//! it labels rows with stay correct (DESIGN.md §2). Rows of a failed chunk that already went
//! downstream are harmless: they are re-sent with a newer version, and the sink keeps the
//! newest. After [`ReadRetry::MAX_ATTEMPTS`] failures in a row the last error stops the stage;
//! its checkpoint resumes it from the last completed chunk.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{Error, Result};

/// Server error codes that mean "repeat the statement" or "this session is gone".
const RETRYABLE_SERVER_CODES: &[u16] = &[
    1205, // ER_LOCK_WAIT_TIMEOUT
    1213, // ER_LOCK_DEADLOCK
    1053, // ER_SERVER_SHUTDOWN
    1077, // ER_NORMAL_SHUTDOWN
    1079, // ER_SHUTDOWN_COMPLETE
    1152, // ER_ABORTING_CONNECTION
    1158, // ER_NET_READ_ERROR
    1159, // ER_NET_READ_INTERRUPTED
    1160, // ER_NET_ERROR_ON_WRITE
    1161, // ER_NET_WRITE_INTERRUPTED
    1317, // ER_QUERY_INTERRUPTED
    1927, // ER_CONNECTION_KILLED (MariaDB)
    1040, // ER_CON_COUNT_ERROR: too many connections, for now
    4031, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8)
];

impl Error {
    /// Whether repeating a source read on a fresh connection can succeed: the connection was
    /// lost or refused, the server is shutting down or killed the session, or it asked for the
    /// statement to be repeated (deadlock, lock wait timeout).
    pub fn is_retryable_read(&self) -> bool {
        match self {
            Error::Connect { .. } => true,
            Error::Mysql(e) => match e {
                mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => true,
                mysql_async::Error::Server(s) => RETRYABLE_SERVER_CODES.contains(&s.code),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Bounded retries of a unit of source reads (see the module docs).
#[derive(Debug)]
pub struct ReadRetry {
    failures: u32,
    backoff: Duration,
}

impl Default for ReadRetry {
    fn default() -> Self {
        ReadRetry {
            failures: 0,
            backoff: Self::FIRST_BACKOFF,
        }
    }
}

impl ReadRetry {
    /// Failures in a row after which the last error stops the stage (about 3 minutes of waits).
    pub const MAX_ATTEMPTS: u32 = 10;
    const FIRST_BACKOFF: Duration = Duration::from_millis(500);
    const MAX_BACKOFF: Duration = Duration::from_secs(30);

    /// The unit succeeded: the next failure starts a new series.
    pub fn succeeded(&mut self) {
        *self = ReadRetry::default();
    }

    /// After a failed attempt at `what`: `Ok(())` once the back-off has passed (the caller
    /// reconnects and repeats the unit), or the error itself when it is definite, the attempts
    /// are spent, or `cancel` fired meanwhile.
    pub async fn after_failure(
        &mut self,
        error: Error,
        what: &str,
        cancel: &CancellationToken,
    ) -> Result<()> {
        self.failures += 1;
        if !error.is_retryable_read()
            || self.failures >= Self::MAX_ATTEMPTS
            || cancel.is_cancelled()
        {
            return Err(error);
        }
        warn!(error = %error, attempt = self.failures, retry_in = ?self.backoff, "{what}: the source read failed; repeating it on a fresh connection");
        metrics::counter!("tidemark_source_retries_total").increment(1);
        tokio::select! {
            _ = cancel.cancelled() => return Err(error),
            _ = tokio::time::sleep(self.backoff) => {}
        }
        self.backoff = (self.backoff * 2).min(Self::MAX_BACKOFF);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> Error {
        Error::Mysql(mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "x".into(),
            state: "40001".into(),
        }))
    }

    #[test]
    fn deadlocks_lock_waits_and_lost_connections_are_retried_definite_errors_are_not() {
        assert!(server(1213).is_retryable_read());
        assert!(server(1205).is_retryable_read());
        assert!(server(1927).is_retryable_read());
        assert!(Error::Connect {
            addr: "a".into(),
            message: "refused".into()
        }
        .is_retryable_read());
        assert!(!server(1146).is_retryable_read()); // no such table
        assert!(!server(1064).is_retryable_read()); // syntax
        assert!(!Error::TableNotFound {
            table: tidemark_schemas::TableId::new("a", "b")
        }
        .is_retryable_read());
    }

    #[tokio::test]
    async fn the_attempts_are_bounded_and_a_definite_error_is_returned_at_once() {
        tokio::time::pause();
        let cancel = CancellationToken::new();
        let mut retry = ReadRetry::default();
        assert!(retry
            .after_failure(server(1146), "t", &cancel)
            .await
            .is_err());
        let mut retry = ReadRetry::default();
        for _ in 1..ReadRetry::MAX_ATTEMPTS {
            retry
                .after_failure(server(1213), "t", &cancel)
                .await
                .unwrap();
        }
        assert!(retry
            .after_failure(server(1213), "t", &cancel)
            .await
            .is_err());
        retry.succeeded();
        retry
            .after_failure(server(1213), "t", &cancel)
            .await
            .unwrap();
    }
}
