//! `[transport]` with `kind = "kafka"`: where the brokers are and how topics are laid out.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use tidemark_schemas::TableId;

use crate::{Error, Result};

/// librdkafka producer settings that carry an invariant of this crate and cannot be overridden.
const FIXED_PRODUCER: &[&str] = &[
    "bootstrap.servers",
    "enable.idempotence",
    "acks",
    "request.required.acks",
];
/// librdkafka consumer settings that carry an invariant of this crate and cannot be overridden.
const FIXED_CONSUMER: &[&str] = &[
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
];

/// The Kafka transport: brokers, topic layout, and librdkafka passthrough settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `host:port` each (librdkafka `bootstrap.servers`).
    pub brokers: Vec<String>,
    /// Prefix of every topic name: `<prefix>.changes.<db>.<table>`, `<prefix>.checkpoints`, …
    #[serde(default = "default_prefix")]
    pub topic_prefix: String,
    /// Partitions of each changes topic (= apply parallelism), unless `table_partitions` names
    /// the table.
    #[serde(default = "default_partitions")]
    pub partitions: u32,
    /// Partitions per table, `"db.table" = n`, overriding `partitions`.
    #[serde(default)]
    pub table_partitions: BTreeMap<String, u32>,
    /// Replication factor of the topics `topics init` creates.
    #[serde(default = "default_replication")]
    pub replication_factor: u32,
    /// Extra librdkafka producer settings (e.g. `"compression.type" = "lz4"`). The settings that
    /// keep ordering and checkpoint safety (`enable.idempotence`, `acks`, `bootstrap.servers`)
    /// are fixed and refused here.
    #[serde(default)]
    pub producer: BTreeMap<String, String>,
    /// Extra librdkafka consumer settings (e.g. `"session.timeout.ms" = "10000"`). Offset
    /// handling (`enable.auto.commit`, `enable.auto.offset.store`), `group.id` and
    /// `bootstrap.servers` are fixed and refused here.
    #[serde(default)]
    pub consumer: BTreeMap<String, String>,
    /// Consumer group of the apply stage; every `tidemark apply` process of the group shares the
    /// partitions.
    #[serde(default = "default_group")]
    pub group_id: String,
    /// `[transport.schema_registry]`: a Confluent schema registry. When set, the values of the
    /// changes and drift topics are written in the Confluent wire format with the registry's
    /// schema id; when absent, Avro single-object encoding (fingerprint header). See the crate
    /// documentation, *Schema registry*.
    #[serde(default)]
    pub schema_registry: Option<SchemaRegistryConfig>,
    /// Seconds between position markers (heartbeats) while the source is idle.
    #[serde(default = "default_heartbeat")]
    pub heartbeat_seconds: u64,
    /// Least milliseconds between two rounds of position markers while changes flow.
    #[serde(default = "default_marker_interval")]
    pub marker_interval_ms: u64,
    /// Least milliseconds between two writes of the same checkpoint key (capture position,
    /// apply frontier); the final value is always written at shutdown.
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval_ms: u64,
    /// Most records apply writes to the sink in one batch (one `Sink::write`).
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// Seconds to keep retrying (with backoff) when no broker answers at start, before giving up
    /// with an error that names the brokers.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Seconds an apply member stays out of its consumer group (librdkafka's group state not
    /// `up`: no coordinator, or a join that does not complete) before it stops with an error,
    /// so that it is restarted: librdkafka can stay detached after the coordinator restarts.
    #[serde(default = "default_coordinator_timeout")]
    pub coordinator_timeout_seconds: u64,
}

fn default_coordinator_timeout() -> u64 {
    120
}

/// `[transport.schema_registry]`: where the Confluent schema registry is and how to log in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaRegistryConfig {
    /// Base URL of the registry, `http://host:8081` or `https://…` (a path prefix is kept).
    pub url: String,
    /// HTTP basic-auth user. The password is never in the file: it comes from the environment
    /// variable [`REGISTRY_PASSWORD_ENV`] (`TIDEMARK_SCHEMA_REGISTRY_PASSWORD`).
    #[serde(default)]
    pub user: Option<String>,
    /// Seconds one HTTP request may take. Failed or unanswered requests are retried with backoff
    /// for `transport.connect_timeout_seconds` in all.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
}

/// Environment variable holding the schema registry password of `transport.schema_registry.user`
/// (so it need not be written into a config file or a ConfigMap).
pub const REGISTRY_PASSWORD_ENV: &str = "TIDEMARK_SCHEMA_REGISTRY_PASSWORD";

impl SchemaRegistryConfig {
    /// A registry at `url`, no login, default timeouts.
    pub fn new(url: impl Into<String>) -> Self {
        SchemaRegistryConfig {
            url: url.into(),
            user: None,
            request_timeout_seconds: default_request_timeout(),
        }
    }

    /// The URL without a trailing `/`, to append `/subjects/…` to.
    pub(crate) fn base_url(&self) -> &str {
        self.url.trim_end_matches('/')
    }

    fn check(&self) -> std::result::Result<(), (&'static str, String)> {
        let url = self.url.trim();
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("https://"));
        let Some(rest) = rest else {
            return Err((
                "url",
                format!("`{}` is not an http:// or https:// URL", self.url),
            ));
        };
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() || url != self.url {
            return Err(("url", format!("`{}` names no host", self.url)));
        }
        if authority.contains('@') {
            return Err((
                "url",
                format!("put no credentials in the URL: set transport.schema_registry.user and the environment variable {REGISTRY_PASSWORD_ENV}"),
            ));
        }
        if url.contains(['?', '#']) {
            return Err((
                "url",
                format!(
                    "`{}` must be the registry's base URL, without a query or fragment",
                    self.url
                ),
            ));
        }
        if self.user.as_deref().is_some_and(|u| u.trim().is_empty()) {
            return Err((
                "user",
                "must not be empty; remove it to connect without a login".into(),
            ));
        }
        if self.request_timeout_seconds == 0 {
            return Err(("request_timeout_seconds", "must be at least 1".into()));
        }
        Ok(())
    }
}

fn default_request_timeout() -> u64 {
    10
}

fn default_prefix() -> String {
    "tidemark".into()
}
fn default_partitions() -> u32 {
    3
}
fn default_replication() -> u32 {
    1
}
fn default_group() -> String {
    "tidemark-apply".into()
}
fn default_heartbeat() -> u64 {
    1
}
fn default_marker_interval() -> u64 {
    200
}
fn default_checkpoint_interval() -> u64 {
    500
}
fn default_batch_records() -> usize {
    5000
}
fn default_connect_timeout() -> u64 {
    60
}

impl KafkaConfig {
    /// A configuration with every default and these brokers.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: vec![brokers.into()],
            topic_prefix: default_prefix(),
            partitions: default_partitions(),
            table_partitions: BTreeMap::new(),
            replication_factor: default_replication(),
            producer: BTreeMap::new(),
            consumer: BTreeMap::new(),
            group_id: default_group(),
            schema_registry: None,
            heartbeat_seconds: default_heartbeat(),
            marker_interval_ms: default_marker_interval(),
            checkpoint_interval_ms: default_checkpoint_interval(),
            batch_records: default_batch_records(),
            connect_timeout_seconds: default_connect_timeout(),
            coordinator_timeout_seconds: default_coordinator_timeout(),
        }
    }

    /// Check every setting; the error names the key (`transport.<key>`) and the fix.
    pub fn check(&self) -> Result<()> {
        let bad = |key: &str, message: String| {
            Err(Error::Config {
                setting: format!("transport.{key}"),
                message,
            })
        };
        if self.brokers.is_empty() || self.brokers.iter().any(|b| b.trim().is_empty()) {
            return bad(
                "brokers",
                "list at least one broker as \"host:port\"".into(),
            );
        }
        if let Some(registry) = &self.schema_registry {
            if let Err((key, message)) = registry.check() {
                return bad(&format!("schema_registry.{key}"), message);
            }
        }
        if self.topic_prefix.is_empty()
            || !self
                .topic_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return bad(
                "topic_prefix",
                format!(
                    "`{}` is not a valid topic name prefix: use ASCII letters, digits, `.`, `_` and `-`",
                    self.topic_prefix
                ),
            );
        }
        if self.partitions == 0 {
            return bad("partitions", "must be at least 1".into());
        }
        for (table, n) in &self.table_partitions {
            if table.parse::<TableId>().is_err() {
                return bad(
                    &format!("table_partitions.\"{table}\""),
                    "the key must be a table name of the form database.table".into(),
                );
            }
            if *n == 0 {
                return bad(
                    &format!("table_partitions.\"{table}\""),
                    "must be at least 1".into(),
                );
            }
        }
        if self.replication_factor == 0 {
            return bad("replication_factor", "must be at least 1".into());
        }
        if let Some(k) = self
            .producer
            .keys()
            .find(|k| FIXED_PRODUCER.contains(&k.as_str()))
        {
            return bad(
                &format!("producer.\"{k}\""),
                "is fixed by tidemark (idempotent producer, acks=all, brokers from transport.brokers); remove it".into(),
            );
        }
        if let Some(k) = self
            .consumer
            .keys()
            .find(|k| FIXED_CONSUMER.contains(&k.as_str()))
        {
            return bad(
                &format!("consumer.\"{k}\""),
                "is fixed by tidemark (offsets are committed only after the sink acknowledged; group from transport.group_id); remove it".into(),
            );
        }
        if self.group_id.is_empty() {
            return bad("group_id", "must not be empty".into());
        }
        if self.heartbeat_seconds == 0 {
            return bad("heartbeat_seconds", "must be at least 1".into());
        }
        if self.batch_records == 0 {
            return bad("batch_records", "must be at least 1".into());
        }
        Ok(())
    }

    /// The brokers as librdkafka's `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        self.brokers.join(",")
    }

    /// Partitions of the changes topic of `table`.
    pub fn partitions_of(&self, table: &TableId) -> u32 {
        self.table_partitions
            .get(&table.to_string())
            .copied()
            .unwrap_or(self.partitions)
    }

    pub(crate) fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.heartbeat_seconds.max(1))
    }
    pub(crate) fn marker_interval(&self) -> Duration {
        Duration::from_millis(self.marker_interval_ms)
    }
    pub(crate) fn checkpoint_interval(&self) -> Duration {
        Duration::from_millis(self.checkpoint_interval_ms)
    }
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_seconds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> KafkaConfig {
        toml::from_str(text).expect("config parses")
    }

    #[test]
    fn defaults_and_overrides() {
        let c = parse("brokers = [\"k:9092\"]\ntable_partitions = { \"db.t\" = 8 }\n");
        c.check().expect("valid");
        assert_eq!(c.partitions_of(&TableId::new("db", "t")), 8);
        assert_eq!(c.partitions_of(&TableId::new("db", "u")), 3);
        assert_eq!(c.topic_prefix, "tidemark");
    }

    #[test]
    fn unknown_keys_and_fixed_settings_are_refused() {
        assert!(toml::from_str::<KafkaConfig>("brokers = [\"k\"]\nbrokerz = 1\n").is_err());
        let mut c = KafkaConfig::new("k:9092");
        c.producer.insert("acks".into(), "1".into());
        let e = c.check().unwrap_err().to_string();
        assert!(e.contains("transport.producer.\"acks\""), "{e}");
    }

    #[test]
    fn schema_registry_settings() {
        let c = parse(
            "brokers = [\"k:9092\"]\n[schema_registry]\nurl = \"https://registry:8081/\"\nuser = \"tm\"\n",
        );
        c.check().expect("valid");
        let r = c.schema_registry.as_ref().expect("registry");
        assert_eq!(r.base_url(), "https://registry:8081");
        assert_eq!(r.user.as_deref(), Some("tm"));
        assert_eq!(r.request_timeout_seconds, 10);
        assert!(toml::from_str::<KafkaConfig>(
            "brokers = [\"k\"]\n[schema_registry]\nurl = \"http://r\"\npassword = \"x\"\n"
        )
        .is_err());
        for (url, user, timeout, key) in [
            ("registry:8081", None, 10, "url"),
            ("http://", None, 10, "url"),
            (" http://r:8081", None, 10, "url"),
            ("http://u:pw@r:8081", None, 10, "url"),
            ("http://r:8081?x=1", None, 10, "url"),
            ("http://r:8081", Some(" "), 10, "user"),
            ("http://r:8081", None, 0, "request_timeout_seconds"),
        ] {
            let mut c = KafkaConfig::new("k:9092");
            c.schema_registry = Some(SchemaRegistryConfig {
                url: url.into(),
                user: user.map(str::to_string),
                request_timeout_seconds: timeout,
            });
            let e = c.check().unwrap_err().to_string();
            assert!(
                e.contains(&format!("`transport.schema_registry.{key}`")),
                "{url}: {e}"
            );
        }
    }
}
