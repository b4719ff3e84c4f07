//! Settings of the ScyllaDB target, and the checks made on them before connecting.
//!
//! Credentials never live in the file: they come from the environment variables
//! [`USER_ENV`] and [`PASSWORD_ENV`] (both or neither).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::{Error, Result};

/// Environment variable holding the ScyllaDB user name.
pub const USER_ENV: &str = "TIDEMARK_SCYLLA_USER";
/// Environment variable holding the ScyllaDB password.
pub const PASSWORD_ENV: &str = "TIDEMARK_SCYLLA_PASSWORD";

/// Defaults, in one place.
pub mod defaults {
    use super::ConsistencyLevel;
    pub const CONSISTENCY: ConsistencyLevel = ConsistencyLevel::LocalQuorum;
    pub const REPLICATION_FACTOR: u32 = 3;
    pub const CONCURRENCY: usize = 64;
    /// One week: Kafka's default retention.
    pub const BACKFILL_WINDOW_SECONDS: u64 = 7 * 24 * 3600;
    pub const MAX_ATTEMPTS: u32 = 5;
    pub const RETRY_BACKOFF_MS: u64 = 100;
    /// Cap of the doubling retry delay.
    pub const RETRY_BACKOFF_MAX_MS: u64 = 10_000;
    pub const CONNECT_TIMEOUT_SECONDS: u64 = 5;
    pub const REQUEST_TIMEOUT_SECONDS: u64 = 30;
    /// ScyllaDB's own default `gc_grace_seconds` (10 days); `init` never creates tables below it.
    pub const GC_GRACE_SECONDS: u64 = 864_000;
    /// Most statements in one single-partition unlogged batch.
    pub const MAX_BATCH_STATEMENTS: usize = 64;
    /// Most estimated bytes of bound values in one batch (ScyllaDB warns above 128 KiB).
    pub const MAX_BATCH_BYTES: usize = 64 * 1024;

    pub(super) fn consistency() -> ConsistencyLevel {
        CONSISTENCY
    }
    pub(super) fn replication_factor() -> u32 {
        REPLICATION_FACTOR
    }
    pub(super) fn concurrency() -> usize {
        CONCURRENCY
    }
    pub(super) fn backfill_window_seconds() -> u64 {
        BACKFILL_WINDOW_SECONDS
    }
    pub(super) fn max_attempts() -> u32 {
        MAX_ATTEMPTS
    }
    pub(super) fn retry_backoff_ms() -> u64 {
        RETRY_BACKOFF_MS
    }
    pub(super) fn connect_timeout_seconds() -> u64 {
        CONNECT_TIMEOUT_SECONDS
    }
    pub(super) fn request_timeout_seconds() -> u64 {
        REQUEST_TIMEOUT_SECONDS
    }
}

/// CQL consistency level of every write and read the sink makes, spelled in snake case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsistencyLevel {
    Any,
    One,
    Two,
    Three,
    Quorum,
    All,
    LocalQuorum,
    EachQuorum,
    LocalOne,
}

impl ConsistencyLevel {
    pub fn to_driver(self) -> scylla::statement::Consistency {
        use scylla::statement::Consistency as C;
        match self {
            ConsistencyLevel::Any => C::Any,
            ConsistencyLevel::One => C::One,
            ConsistencyLevel::Two => C::Two,
            ConsistencyLevel::Three => C::Three,
            ConsistencyLevel::Quorum => C::Quorum,
            ConsistencyLevel::All => C::All,
            ConsistencyLevel::LocalQuorum => C::LocalQuorum,
            ConsistencyLevel::EachQuorum => C::EachQuorum,
            ConsistencyLevel::LocalOne => C::LocalOne,
        }
    }
}

/// The ScyllaDB target.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScyllaConfig {
    /// Contact points, each `host:port` (e.g. `["10.0.0.1:9042", "10.0.0.2:9042"]`). The driver
    /// discovers the rest of the cluster from them, and its shard-aware port by itself.
    pub nodes: Vec<String>,
    /// Keyspace holding the target tables and `tidemark_checkpoints`. Letters, digits and `_`,
    /// at most 48 characters, starting with a letter or digit.
    pub keyspace: String,
    /// Consistency level of every write and read: `any`, `one`, `two`, `three`, `quorum`, `all`,
    /// `local_quorum` (default), `each_quorum` or `local_one`. Reads made by the reconciler see
    /// every acknowledged write only if read + write levels overlap (e.g. both `local_quorum`).
    #[serde(default = "defaults::consistency")]
    pub consistency: ConsistencyLevel,
    /// Replication factor in every datacenter (NetworkTopologyStrategy) when `tidemark target
    /// init` creates the keyspace; ignored when the keyspace exists. Default 3.
    #[serde(default = "defaults::replication_factor")]
    pub replication_factor: u32,
    /// Most write requests (single statements or one-partition batches) in flight at once per
    /// sink instance. Default 64.
    #[serde(default = "defaults::concurrency")]
    pub concurrency: usize,
    /// Longest time, in seconds, that an older change of a key may still arrive after a newer
    /// delete of it (Kafka retention, backfill duration). A table whose `gc_grace_seconds` is
    /// shorter gets a warning at start, and tables created by tidemark get at least this.
    /// Default 604800 (7 days).
    #[serde(default = "defaults::backfill_window_seconds")]
    pub backfill_window_seconds: u64,
    /// Attempts per request before a write fails as unacknowledged (transient errors only:
    /// timeouts, unavailable or overloaded replicas, broken connections). Default 5.
    #[serde(default = "defaults::max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry in milliseconds; it doubles on each retry up to 10 s.
    /// Default 100.
    #[serde(default = "defaults::retry_backoff_ms")]
    pub retry_backoff_ms: u64,
    /// Seconds to wait for a TCP connection to a node. Default 5.
    #[serde(default = "defaults::connect_timeout_seconds")]
    pub connect_timeout_seconds: u64,
    /// Client-side timeout of one request attempt, in seconds. Default 30.
    #[serde(default = "defaults::request_timeout_seconds")]
    pub request_timeout_seconds: u64,
    /// Per target table, the leading key columns that form the partition key (the rest of the
    /// key become clustering columns, and records of one partition share unlogged batches).
    /// Default for every table: the whole key is the partition key.
    #[serde(default)]
    pub partition_keys: BTreeMap<String, Vec<String>>,
}

impl ScyllaConfig {
    /// A configuration with every default, for `nodes` and `keyspace`.
    pub fn new(nodes: Vec<String>, keyspace: impl Into<String>) -> Self {
        ScyllaConfig {
            nodes,
            keyspace: keyspace.into(),
            consistency: defaults::CONSISTENCY,
            replication_factor: defaults::REPLICATION_FACTOR,
            concurrency: defaults::CONCURRENCY,
            backfill_window_seconds: defaults::BACKFILL_WINDOW_SECONDS,
            max_attempts: defaults::MAX_ATTEMPTS,
            retry_backoff_ms: defaults::RETRY_BACKOFF_MS,
            connect_timeout_seconds: defaults::CONNECT_TIMEOUT_SECONDS,
            request_timeout_seconds: defaults::REQUEST_TIMEOUT_SECONDS,
            partition_keys: BTreeMap::new(),
        }
    }

    /// Checks every setting; the error names the setting and the fix.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, message: String| {
            Err(Error::Config {
                setting: setting.to_string(),
                message,
            })
        };
        if self.nodes.is_empty() {
            return bad("nodes", "list at least one node as host:port".into());
        }
        for node in &self.nodes {
            let ok = node
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !ok {
                return bad("nodes", format!("`{node}` is not of the form host:port"));
            }
        }
        let ks = &self.keyspace;
        let valid_ks = !ks.is_empty()
            && ks.len() <= 48
            && ks.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && ks.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_ks {
            return bad(
                "keyspace",
                format!("`{ks}` is not a keyspace name: use letters, digits and _ (at most 48)"),
            );
        }
        if self.replication_factor == 0 {
            return bad("replication_factor", "must be at least 1".into());
        }
        if self.concurrency == 0 {
            return bad("concurrency", "must be at least 1".into());
        }
        if self.max_attempts == 0 {
            return bad("max_attempts", "must be at least 1".into());
        }
        if self.request_timeout_seconds == 0 || self.connect_timeout_seconds == 0 {
            return bad(
                "request_timeout_seconds",
                "timeouts must be at least 1 second".into(),
            );
        }
        Ok(())
    }

    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_seconds)
    }

    /// `gc_grace_seconds` for tables tidemark creates: the backfill window, but never below
    /// ScyllaDB's default.
    pub fn gc_grace_seconds_for_new_tables(&self) -> u64 {
        self.backfill_window_seconds
            .max(defaults::GC_GRACE_SECONDS)
            .min(i32::MAX as u64)
    }
}

/// User and password from the environment values of [`USER_ENV`] and [`PASSWORD_ENV`]: both or
/// neither (then no authentication).
pub fn credentials(
    user: Option<String>,
    password: Option<String>,
) -> Result<Option<(String, String)>> {
    match (user, password) {
        (Some(u), Some(p)) => Ok(Some((u, p))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(Error::Config {
            setting: PASSWORD_ENV.into(),
            message: format!("{USER_ENV} is set but {PASSWORD_ENV} is not: set both or neither"),
        }),
        (None, Some(_)) => Err(Error::Config {
            setting: USER_ENV.into(),
            message: format!("{PASSWORD_ENV} is set but {USER_ENV} is not: set both or neither"),
        }),
    }
}

/// [`credentials`] from the process environment.
pub fn credentials_from_env() -> Result<Option<(String, String)>> {
    let var = |name: &str| match std::env::var(name) {
        Ok(v) => Ok(Some(v)),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::Config {
            setting: name.into(),
            message: "is not valid UTF-8".into(),
        }),
    };
    credentials(var(USER_ENV)?, var(PASSWORD_ENV)?)
}

/// A table whose tombstones may be purged before older changes stop arriving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GcGraceWarning {
    pub table: String,
    pub gc_grace_seconds: i64,
    pub backfill_window_seconds: u64,
}

/// The tables among `(table, gc_grace_seconds)` whose `gc_grace_seconds` is shorter than the
/// backfill window (DESIGN.md §3: a tombstone must outlive every older change still in flight;
/// once it is purged, a late older insert resurrects the deleted row).
pub fn short_gc_grace(
    tables: &[(String, i64)],
    backfill_window_seconds: u64,
) -> Vec<GcGraceWarning> {
    tables
        .iter()
        .filter(|(_, gc)| u64::try_from(*gc).map_or(true, |gc| gc < backfill_window_seconds))
        .map(|(table, gc)| GcGraceWarning {
            table: table.clone(),
            gc_grace_seconds: *gc,
            backfill_window_seconds,
        })
        .collect()
}

/// Delay before retry number `retry` (1 for the first retry): `base_ms` doubling, capped at
/// [`defaults::RETRY_BACKOFF_MAX_MS`].
pub fn backoff_delay(retry: u32, base_ms: u64) -> Duration {
    let factor = 1u64 << retry.saturating_sub(1).min(20);
    Duration::from_millis(
        base_ms
            .saturating_mul(factor)
            .min(defaults::RETRY_BACKOFF_MAX_MS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_full_config_and_fills_defaults() {
        let c: ScyllaConfig = toml::from_str(
            r#"
            nodes = ["10.0.0.1:9042", "scylla-0.scylla:9042"]
            keyspace = "shop"
            consistency = "local_one"
            concurrency = 8
            partition_keys = { orders = ["customer_id"] }
            "#,
        )
        .expect("a valid config must parse");
        assert_eq!(c.consistency, ConsistencyLevel::LocalOne);
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.replication_factor, defaults::REPLICATION_FACTOR);
        assert_eq!(c.backfill_window_seconds, defaults::BACKFILL_WINDOW_SECONDS);
        assert_eq!(c.partition_keys["orders"], vec!["customer_id".to_string()]);
        c.validate().expect("valid");
        let d: ScyllaConfig =
            toml::from_str("nodes = [\"127.0.0.1:9042\"]\nkeyspace = \"k\"").expect("minimal");
        assert_eq!(d, ScyllaConfig::new(vec!["127.0.0.1:9042".into()], "k"));
    }

    #[test]
    fn typos_and_bad_values_name_the_setting() {
        let e =
            toml::from_str::<ScyllaConfig>("nodes = [\"a:1\"]\nkeyspace = \"k\"\nconcurency = 3")
                .expect_err("an unknown key must be rejected");
        assert!(e.to_string().contains("concurency"), "{e}");
        let e = toml::from_str::<ScyllaConfig>(
            "nodes = [\"a:1\"]\nkeyspace = \"k\"\nconsistency = \"local_qorum\"",
        )
        .expect_err("an unknown consistency must be rejected");
        assert!(e.to_string().contains("local_qorum"), "{e}");
        let e =
            toml::from_str::<ScyllaConfig>("nodes = [\"a:1\"]\nkeyspace = \"k\"\npassword = \"x\"")
                .expect_err("credentials are not accepted in the file");
        assert!(e.to_string().contains("password"), "{e}");
        let mut c = ScyllaConfig::new(vec!["10.0.0.1".into()], "k");
        let e = c.validate().expect_err("a node without port");
        assert!(
            e.to_string().contains("`nodes`") && e.to_string().contains("10.0.0.1"),
            "{e}"
        );
        c.nodes = vec!["10.0.0.1:9042".into()];
        c.keyspace = "bad-name".into();
        assert!(c.validate().unwrap_err().to_string().contains("`keyspace`"));
        c.keyspace = "ok_name".into();
        c.concurrency = 0;
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`concurrency`"));
    }

    #[test]
    fn credentials_are_both_or_neither() {
        assert_eq!(credentials(None, None).unwrap(), None);
        assert_eq!(
            credentials(Some("u".into()), Some("p".into())).unwrap(),
            Some(("u".into(), "p".into()))
        );
        let e = credentials(Some("u".into()), None).expect_err("a user without password");
        assert!(e.to_string().contains(PASSWORD_ENV), "{e}");
        let e = credentials(None, Some("p".into())).expect_err("a password without user");
        assert!(e.to_string().contains(USER_ENV), "{e}");
    }

    #[test]
    fn gc_grace_shorter_than_the_backfill_window_is_flagged() {
        let tables = vec![
            ("orders".to_string(), 864_000),
            ("events".to_string(), 3600),
            ("equal".to_string(), 86_400),
            ("negative".to_string(), -1),
        ];
        let w = short_gc_grace(&tables, 86_400);
        assert_eq!(
            w,
            vec![
                GcGraceWarning {
                    table: "events".into(),
                    gc_grace_seconds: 3600,
                    backfill_window_seconds: 86_400
                },
                GcGraceWarning {
                    table: "negative".into(),
                    gc_grace_seconds: -1,
                    backfill_window_seconds: 86_400
                },
            ],
            "only tables below the window are flagged, a window equal to gc_grace is enough"
        );
        let c = ScyllaConfig::new(vec!["a:1".into()], "k");
        assert_eq!(
            c.gc_grace_seconds_for_new_tables(),
            defaults::GC_GRACE_SECONDS
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_cap() {
        assert_eq!(backoff_delay(1, 100), Duration::from_millis(100));
        assert_eq!(backoff_delay(2, 100), Duration::from_millis(200));
        assert_eq!(backoff_delay(4, 100), Duration::from_millis(800));
        assert_eq!(backoff_delay(30, 100), Duration::from_millis(10_000));
        assert_eq!(
            backoff_delay(u32::MAX, u64::MAX),
            Duration::from_millis(10_000)
        );
    }
}
