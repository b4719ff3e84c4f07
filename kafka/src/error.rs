//! Errors of the Kafka transport, split by what the caller must do.

/// What went wrong, in the operator's terms. [`Error::is_transient`] tells whether retrying (or
/// restarting from the last checkpoint) may succeed without any change.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting is wrong (fatal): the message names it and the fix.
    #[error("setting `{setting}`: {message}")]
    Config { setting: String, message: String },
    /// No broker answered within `transport.connect_timeout_seconds` (transient: the brokers
    /// may come back; fatal if the addresses are wrong).
    #[error("cannot reach Kafka broker(s) {brokers} after {attempts} attempt(s) over {waited_seconds}s: {message} (check transport.brokers and that the brokers are up)")]
    Unreachable {
        brokers: String,
        attempts: u32,
        waited_seconds: u64,
        message: String,
    },
    /// A topic tidemark needs does not exist (fatal until `tidemark topics init` ran).
    #[error("Kafka topic `{topic}` does not exist; run `tidemark topics init` first (brokers do not create tidemark's topics on their own)")]
    TopicMissing { topic: String },
    /// A topic exists with fewer partitions than configured (fatal: the layout differs).
    #[error("Kafka topic `{topic}` has {actual} partition(s), fewer than the {wanted} configured; add partitions to it (kafka-topics --alter) or lower the setting")]
    TopicTooSmall {
        topic: String,
        actual: usize,
        wanted: usize,
    },
    /// A topic that must be compacted (the checkpoints topic) exists with another cleanup
    /// policy (fatal: the layout differs, and old checkpoints would be deleted).
    #[error("Kafka topic `{topic}` has cleanup.policy={policy}, but tidemark's checkpoints must be kept per key: make it compacted (kafka-configs --alter --entity-type topics --entity-name {topic} --add-config cleanup.policy=compact)")]
    TopicNotCompacted { topic: String, policy: String },
    /// The broker refused to create a topic (fatal: permissions, policy, replication factor).
    #[error("cannot create Kafka topic `{topic}`: {message}")]
    CreateTopic { topic: String, message: String },
    /// A Kafka client call failed (transient: the broker or the network).
    #[error("Kafka {operation}: {message}")]
    Kafka { operation: String, message: String },
    /// A produced message was not acknowledged by the broker (transient: restart from the last
    /// checkpoint, which never covers it).
    #[error("Kafka did not acknowledge a message to `{topic}`: {message}")]
    Delivery { topic: String, message: String },
    /// A message that cannot be read (definite: caused by the data). The applier counts it and
    /// routes the raw message to the dead-letter topic rather than returning it.
    #[error("cannot decode the message at {topic}/{partition}@{offset}: {message}")]
    Decode {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    /// The schema registry did not answer or refused a request. Transient when it did not answer
    /// (within `transport.connect_timeout_seconds`) or answered 5xx; definite when it answered a
    /// 4xx (the message carries its `error_code` and message).
    #[error("schema registry {url}: {action}: {message}")]
    Registry {
        url: String,
        action: String,
        message: String,
        transient: bool,
    },
    /// A stored checkpoint cannot be read (definite: fix or delete the key).
    #[error("checkpoint `{key}` in the checkpoints topic is unreadable: {message}")]
    Checkpoint { key: String, message: String },
    /// The mapping does not fit a table (fatal for the table): the message names the setting.
    #[error("transform of {table}: {message}")]
    Transform { table: String, message: String },
    /// Capture or backfill sent something out of order (a bug upstream; definite).
    #[error("publisher: {0}")]
    Protocol(String),
    /// Encoding a value for a topic failed (definite).
    #[error("encoding for Kafka: {0}")]
    Encode(String),
    /// The sink refused a batch; transient or definite as the sink says.
    #[error(transparent)]
    Sink(#[from] tidemark_sink::Error),
}

impl Error {
    /// Whether retrying later (or restarting from the last checkpoint) may succeed without any
    /// change to data or configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } | Error::Kafka { .. } | Error::Delivery { .. } => true,
            Error::Registry { transient, .. } => *transient,
            Error::Sink(e) => e.is_transient(),
            _ => false,
        }
    }

    pub(crate) fn kafka(operation: impl Into<String>, e: impl std::fmt::Display) -> Error {
        Error::Kafka {
            operation: operation.into(),
            message: e.to_string(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
