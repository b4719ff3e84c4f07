//! The Kafka transport of tidemark: capture, backfill and apply as separate jobs, with Kafka as
//! the spine (DESIGN.md §4, §7).
//!
//! # What this crate owns
//! - [`KafkaConfig`]: the `[transport]` section when `kind = "kafka"`.
//! - The topic layout ([`Topics`]) and [`topics_init`], which creates it idempotently.
//! - [`KafkaPublisher`]: the producer side of capture and backfill. It consumes the same
//!   [`CaptureMessage`](tidemark_ingest::CaptureMessage)s the embedded channel carries.
//! - [`KafkaApplier`]: a member of the apply consumer group, writing through any
//!   [`Sink`](tidemark_sink::Sink).
//! - [`CheckpointStore`] / [`CheckpointReader`]: checkpoints in the compacted checkpoints topic.
//! - [`FrontierReader`] / [`group_frontier`]: the apply frontier for the reconciler.
//! - [`ControlMessage`], [`send_control`], [`ControlListener`]: the control topic.
//!
//! # Topics
//! - `<prefix>.changes.<db>.<table>`: key = canonical text of the source primary key, value =
//!   Avro `ChangeEvent`, header `tm-kind = change` and `tm-schema = <id of the table
//!   description>`; plus position markers (`tm-kind = marker`, JSON). See [`wire`]. The Avro
//!   value is in the Confluent wire format (schema id of the registry) when
//!   `[transport.schema_registry]` is set, else Avro single-object encoding (schema fingerprint
//!   in the header); readers accept both. See *Schema registry* below.
//! - `<prefix>.checkpoints`: compacted, one partition; key `stage/scope`, value Avro
//!   `Checkpoint`. Holds `capture/*` (a `CaptureCheckpoint`), `backfill/<db.table>` (a
//!   `BackfillCheckpoint`), `schema/<id>` (a `SourceSchema` as JSON) and
//!   `apply/<group>/<topic>/<partition>` (the newest marker applied there).
//! - `<prefix>.drift` (Avro `DriftEvent`, framed like the changes), `<prefix>.dlq` (rejections as JSON, undecodable messages raw with
//!   `tm-error` and `tm-source-*` headers), `<prefix>.control` (JSON, one partition).
//!
//! # Schema registry
//! With `[transport.schema_registry] url = "http://…"` (optional `user`, password from
//! `TIDEMARK_SCHEMA_REGISTRY_PASSWORD`), the values of the changes topics and of the drift topic
//! use the Confluent wire format: byte 0, the 4-byte big-endian schema id, the Avro datum.
//! Subjects follow the TopicNameStrategy (`<topic>-value`); a producer registers tidemark's
//! schema once per topic at start and caches the id. A reader fetches the writer schema of an id
//! once and accepts it only when it is tidemark's schema of that record (same canonical-form
//! fingerprint as the current schema or a committed snapshot); an unknown id or a foreign schema
//! makes the message undecodable (dead-letter topic, reason naming the id). Single-object values
//! are read as before, so a topic may mix both during a switch-over. The checkpoints topic always
//! stays single-object: it is tidemark's internal state and must not depend on the registry
//! being up. Details: [`registry`].
//!
//! # Ordering
//! A change goes to partition `crc32(key) mod partitions` of its table's topic, set explicitly
//! by the publisher (not left to a partitioner setting), so every change of one key lands in one
//! partition in production order. The producer is idempotent (`enable.idempotence=true`,
//! `acks=all`), so retries neither reorder nor duplicate within a partition. Across partitions
//! nothing is ordered, and nothing needs to be: the sink is a per-key max-version register
//! (DESIGN.md §3), so apply members may write their partitions in any interleaving.
//!
//! # Table descriptions
//! Apply needs a table's `SourceSchema` to plan its transform. The publisher stores each
//! distinct description once in the checkpoints topic under `schema/<id>` (id = first 64 bits of
//! SHA-256 of its JSON) and waits for the broker's acknowledgement before producing any change
//! that names it in its `tm-schema` header. So every change names the exact description it was
//! decoded against, and an applier that starts anywhere in a partition finds it. A new id seen by
//! apply flushes its batch, then plans and creates/alters the target table, as embedded mode does
//! at a `Schema` message.
//!
//! # Checkpoint after delivery
//! Every produced change and marker has a delivery future; they are kept in production order
//! and counted as the broker acknowledges them. A checkpoint (capture position at a `Commit`,
//! backfill progress at a `Checkpoint` message) is tagged with the number of messages produced
//! before it and is produced to the checkpoints topic only when that many were acknowledged;
//! the newest value per key is written at most every `checkpoint_interval_ms`, and the final one
//! after everything was acknowledged. So a stored checkpoint never covers data the broker might
//! not have: after a crash, capture and backfill resume from [`CheckpointStore`] and re-send at
//! most what came after it (duplicates are harmless: same versions).
//!
//! Apply commits consumer offsets only after (1) the batch's dead letters were acknowledged by
//! the dead-letter topic and (2) `Sink::write` returned `Ok`. Before a rebalance revokes
//! partitions, the consumer context synchronously commits what the sink already acknowledged;
//! whatever was read but not yet written is simply read again by the next owner.
//!
//! # Frontier
//! Capture writes a marker with the last transaction boundary into every partition of every
//! changes topic of the tables in scope: after a commit (at most every `marker_interval_ms`), as
//! a heartbeat every `heartbeat_seconds` while idle, and at the end. A marker at P in a partition
//! follows every change before P that belongs to that partition. Apply records, per partition,
//! the newest marker whose batch the sink acknowledged, and publishes it as
//! `apply/<group>/<topic>/<partition>`. The group frontier is the lowest of these over every
//! partition of every changes topic ([`GroupFrontier::min`]); every change before it is in the
//! target. A partition without a published marker makes the frontier unknown (`None`), which the
//! reconciler treats as "not settled": conservative, never a false alarm. A new owner of a
//! partition may re-publish an older marker while it re-reads: still true, only conservative.
//!
//! # Failure modes
//! - No broker at start: clients retry with backoff for `connect_timeout_seconds`, logging each
//!   attempt, then fail with [`Error::Unreachable`] naming the brokers.
//! - No schema registry answer (connection failures, timeouts, 5xx): retried with backoff for
//!   `connect_timeout_seconds`, then [`Error::Registry`] (transient) naming the URL; a publisher
//!   does not start, an applier stops without committing its batch. A refusal (4xx, e.g. an
//!   incompatible schema under the subject, bad credentials) fails at once with the registry's
//!   `error_code` and message.
//! - A topic missing ([`Error::TopicMissing`]: run `tidemark topics init`) or with fewer
//!   partitions than configured ([`Error::TopicTooSmall`]): fatal, named.
//! - A message the broker does not acknowledge ([`Error::Delivery`], transient): the publisher
//!   stops; no checkpoint covers the message, so a restart re-sends it.
//! - A change that cannot be decoded (corrupt Avro, unknown fingerprint, a schema id the
//!   registry does not know or that is not tidemark's schema, unknown table description, no
//!   tidemark headers): counted, logged with topic/partition/offset, sent raw to the dead-letter
//!   topic with the reason; apply goes on.
//! - A change the target schema cannot hold: a `Rejection` as JSON in the dead-letter topic,
//!   counted per table; apply goes on.
//! - A mapping that does not fit a table ([`Error::Transform`]) or a sink error: apply stops
//!   without committing the batch; a restart re-reads it.

mod applied;
mod applier;
mod authority;
mod checkpoints;
mod config;
mod control;
mod dead_letters;
mod drift;
mod error;
mod frontier;
mod publisher;
mod reader;
pub mod registry;
mod topics;
pub mod wire;

pub use applied::{end_offsets, uncommitted, EndOffsets};
pub use applier::{ApplyContext, ApplyOptions, ApplyReport, KafkaApplier, NEW_TOPICS_SEEN_WITHIN};
pub use authority::{publish_authority, read_authority};
pub use checkpoints::{
    checkpoint_key, CheckpointReader, CheckpointStore, ALL_TABLES, APPLY_STAGE, CAPTURE_STAGE,
};
pub use config::{KafkaConfig, SchemaRegistryConfig, REGISTRY_PASSWORD_ENV};
pub use control::{send_control, ControlEnvelope, ControlListener, ControlMessage};
pub use dead_letters::read_rejections;
pub use drift::{read_drift, DriftPublisher};
pub use error::{Error, Result};
pub use frontier::{frontier_scope, group_frontier, FrontierReader, GroupFrontier};
pub use publisher::{KafkaPublisher, PublishReport};
pub use reader::TopicReader;
pub use topics::{topics_init, TopicStatus, Topics};
