//! The TOML configuration file.
//!
//! Every section denies unknown keys, so a typo is an error that names the key rather than a
//! silently ignored setting. Errors name the file and the key path (`source.server_id: …`).
//! Defaults live in one place: the `default_*` functions next to each section's struct.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tidemark_ingest::{BackfillConfig, CaptureConfig, SourceConfig};
use tidemark_kafka::KafkaConfig;
use tidemark_reconcile::ReconcileConfig;
use tidemark_sink::ScyllaConfig;
use tidemark_transform::{MappingConfig, Transformer};

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The MySQL/MariaDB server to read, and which of its tables.
    pub source: SourceConfig,
    /// Binlog capture settings.
    #[serde(default)]
    pub capture: CaptureConfig,
    /// Copying table history: chunking and throttles.
    #[serde(default)]
    pub backfill: BackfillConfig,
    /// Where the target records go.
    pub target: TargetConfig,
    /// How records are applied to the target.
    #[serde(default)]
    pub apply: ApplyConfig,
    /// Per-table mappings (`[[mapping]]`); tables without one use the identity mapping.
    #[serde(default)]
    pub mapping: Vec<MappingConfig>,
    /// How the reconciler compares source and target.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    /// Queries whose answers must be the same on both sides (`[[invariant]]`), evaluated by
    /// every reconcile.
    #[serde(default)]
    pub invariant: Vec<tidemark_transform::InvariantConfig>,
    /// The bounds of the cutover gate (`tidemark cutover check`).
    #[serde(default)]
    pub cutover: crate::cutover::CutoverConfig,
    /// Health and Prometheus metrics over HTTP (off when absent).
    pub metrics: Option<crate::metrics::MetricsConfig>,
    /// How stages hand changes to each other: in-process (default) or Kafka.
    #[serde(default)]
    pub transport: TransportConfig,
}

/// `[transport]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TransportConfig {
    /// One process: capture and backfill hand changes to apply through a bounded channel.
    #[default]
    InProcess,
    /// Separate jobs with Kafka between them (`brokers`, `topic_prefix`, … in the same table).
    Kafka(Box<KafkaConfig>),
}

impl TransportConfig {
    pub fn kafka(&self) -> Option<&KafkaConfig> {
        match self {
            TransportConfig::Kafka(k) => Some(k),
            TransportConfig::InProcess => None,
        }
    }
}

/// `[target]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `"sqlite"` (the embedded default), `"scylla"`, or `"cassandra"` (the same CQL sink).
    pub kind: String,
    /// For `kind = "sqlite"`: the database file, relative to the config file's folder.
    pub path: Option<PathBuf>,
    /// For `kind = "scylla"`: the cluster (`[target.scylla]`; credentials come from the
    /// environment variables TIDEMARK_SCYLLA_USER / TIDEMARK_SCYLLA_PASSWORD, never the file).
    pub scylla: Option<ScyllaConfig>,
    /// For `kind = "scylla"`: the JSON-lines file rejected changes are appended to (relative to
    /// the config file's folder). Default `dead-letters.jsonl`.
    pub dead_letter_path: Option<PathBuf>,
}

/// `[apply]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyConfig {
    /// Most records written in one target transaction.
    #[serde(default = "default_batch_records")]
    pub batch_records: usize,
    /// Seconds between progress lines.
    #[serde(default = "default_progress_seconds")]
    pub progress_seconds: u64,
    /// How long a write the target refuses for a transient reason (a node restarting, the file
    /// locked) is retried before apply stops.
    #[serde(default = "default_retry_seconds")]
    pub retry_seconds: u64,
}

impl ApplyConfig {
    /// `retry_seconds` as a duration.
    pub fn retry_duration(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.retry_seconds)
    }
}

fn default_retry_seconds() -> u64 {
    300
}

fn default_batch_records() -> usize {
    5000
}
fn default_progress_seconds() -> u64 {
    5
}

impl Default for ApplyConfig {
    fn default() -> Self {
        ApplyConfig {
            batch_records: default_batch_records(),
            progress_seconds: default_progress_seconds(),
            retry_seconds: default_retry_seconds(),
        }
    }
}

/// The resolved target.
#[derive(Debug, Clone)]
pub enum Target {
    Sqlite {
        path: PathBuf,
    },
    Scylla {
        config: ScyllaConfig,
        dead_letter_path: PathBuf,
    },
}

impl Config {
    /// Read and check a configuration file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        let mut config = Config::parse(&text)
            .with_context(|| format!("configuration file {}", path.display()))?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Parse configuration text; an error names the key path.
    pub fn parse(text: &str) -> Result<Config> {
        let de = toml::Deserializer::parse(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().to_string();
            anyhow::anyhow!("{path}: {message}")
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        tidemark_ingest::Scope::from_config(&self.source)?;
        if self.source.server_id == 0 {
            bail!("source.server_id: must be a non-zero replica id, unique among the source's replicas");
        }
        self.target()?;
        self.backfill.check()?;
        self.reconcile.check()?;
        if self.reconcile.server_id == Some(self.source.server_id) {
            bail!("reconcile.server_id: must differ from source.server_id ({}): the reconciler reads the binlog as a replica of its own, and two replicas with one id cut each other off", self.source.server_id);
        }
        self.transformer()?;
        self.check_invariants()?;
        self.cutover.check()?;
        if let Some(k) = self.transport.kafka() {
            k.check()?;
        }
        if self.apply.batch_records == 0 {
            bail!("apply.batch_records: must be at least 1");
        }
        Ok(())
    }

    /// What can be checked of the invariants without the tables: names unique, queries
    /// well-formed, each table in scope. Columns are checked against the tables by
    /// `tidemark invariants explain` and by reconcile before it reads anything.
    fn check_invariants(&self) -> Result<()> {
        let scope = tidemark_ingest::Scope::from_config(&self.source)?;
        let mut names = std::collections::BTreeSet::new();
        for inv in &self.invariant {
            let table = inv.check().map_err(|e| anyhow::anyhow!("{e}"))?;
            if !names.insert(inv.name.as_str()) {
                bail!(
                    "invariant \"{}\".name: two invariants have this name; reports tell them apart by name",
                    inv.name
                );
            }
            if !scope.includes(&table.database, &table.table) {
                bail!(
                    "invariant \"{}\".table: {table} is not in scope (source.databases, source.tables, source.exclude_tables)",
                    inv.name
                );
            }
        }
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.target.path, &mut self.target.dead_letter_path]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if matches!(self.target.kind.as_str(), "scylla" | "cassandra")
            && self.target.dead_letter_path.is_none()
        {
            self.target.dead_letter_path = Some(base.join("dead-letters.jsonl"));
        }
    }

    /// The transform the mappings describe (identity for tables without one).
    pub fn transformer(&self) -> Result<Transformer> {
        Ok(Transformer::new(&self.mapping)?)
    }

    pub fn target(&self) -> Result<Target> {
        match self.target.kind.as_str() {
            "sqlite" => {
                let path = self
                    .target
                    .path
                    .clone()
                    .context("target.path: kind = \"sqlite\" needs a database file path")?;
                Ok(Target::Sqlite { path })
            }
            // One CQL sink for both: Cassandra speaks the same protocol, with the same
            // last-write-wins by write timestamp.
            "scylla" | "cassandra" => {
                let config = self.target.scylla.clone().with_context(|| format!(
                    "target.scylla: kind = \"{}\" needs a [target.scylla] table with nodes and keyspace",
                    self.target.kind
                ))?;
                if config.nodes.is_empty() {
                    bail!("target.scylla.nodes: name at least one node, e.g. [\"10.0.0.1:9042\"]");
                }
                let dead_letter_path = self
                    .target
                    .dead_letter_path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("dead-letters.jsonl"));
                Ok(Target::Scylla {
                    config,
                    dead_letter_path,
                })
            }
            other => bail!(
                "target.kind: `{other}` is not a target tidemark can write; use \"sqlite\", \"scylla\" or \"cassandra\""
            ),
        }
    }
}

/// Table names (`database.table`) as given on the command line or in a control message; an
/// error names `setting` and the name at fault.
pub fn parse_tables(tables: &[String], setting: &str) -> Result<Vec<tidemark_schemas::TableId>> {
    tables
        .iter()
        .map(|t| {
            t.parse()
                .map_err(|e: String| anyhow::anyhow!("{setting}: {e}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[source]
url = "mysql://root@127.0.0.1:3307"
server_id = 4711
databases = ["shop"]
[target]
kind = "sqlite"
path = "target.db"
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.source.server_id, 4711);
        assert_eq!(c.capture.start, "end");
        assert_eq!(c.apply.batch_records, 5000);
        assert!(matches!(c.target().unwrap(), Target::Sqlite { .. }));
    }

    #[test]
    fn kafka_transport_parses_and_checks_its_keys() {
        let kafka =
            format!("{MINIMAL}[transport]\nkind = \"kafka\"\nbrokers = [\"127.0.0.1:9092\"]\n");
        let c = Config::parse(&kafka).unwrap();
        assert!(c.transport.kafka().is_some());
        let typo = format!("{MINIMAL}[transport]\nkind = \"kafka\"\nbrokerz = [\"x\"]\n");
        let e = format!("{:#}", Config::parse(&typo).unwrap_err());
        assert!(e.contains("brokerz"), "{e}");
        let bad = format!("{MINIMAL}[transport]\nkind = \"carrier-pigeon\"\n");
        assert!(Config::parse(&bad).is_err());
    }

    #[test]
    fn errors_name_the_key() {
        let typo = MINIMAL.replace("server_id", "server_idd");
        let e = format!("{:#}", Config::parse(&typo).unwrap_err());
        assert!(e.contains("server_idd"), "{e}");
        let wrong_type = MINIMAL.replace("4711", "\"x\"");
        let e = format!("{:#}", Config::parse(&wrong_type).unwrap_err());
        assert!(e.contains("source.server_id"), "{e}");
        let bad_throttle = format!("{MINIMAL}[backfill]\nrows_per_second = 0\n");
        let e = format!("{:#}", Config::parse(&bad_throttle).unwrap_err());
        assert!(e.contains("backfill.rows_per_second"), "{e}");
        let bad_kind = MINIMAL.replace("\"sqlite\"", "\"oracle\"");
        let e = format!("{:#}", Config::parse(&bad_kind).unwrap_err());
        assert!(e.contains("target.kind"), "{e}");
        let nothing = MINIMAL.replace("databases = [\"shop\"]", "");
        let e = format!("{:#}", Config::parse(&nothing).unwrap_err());
        assert!(e.contains("source.databases"), "{e}");
    }
}
