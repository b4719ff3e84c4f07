//! The consumer side: changes topics → transform → [`Sink`], offsets committed only after the
//! sink acknowledged, rejections and undecodable messages to the dead-letter topic, and the
//! apply frontier published to the checkpoints topic.
//!
//! A pipeline of four free-running threads, batches moving on strictly in order: the consumer
//! thread polls, finds each change's table plan by its `tm-schema` header (building it, and the
//! target table, the first time) and copies the message's key and value into the batch; the
//! decode thread decodes the values (Avro → [`ChangeEvent`], through the schema registry when
//! configured); the transform thread applies the plans (records, or rejections); the sink thread
//! writes and answers. The queues between the stages hold one batch each, and at most
//! [`MAX_BATCHES_IN_FLIGHT`] batches are between the consumer thread's hand-over and its settling
//! of the sink's answer. A stage waits only for its input or for room in the queue after it,
//! never for the batch before to finish everywhere: on two cores, a lock-step pipeline (every
//! stage starting its next batch only when the slowest had finished its last) left a core idle a
//! third of the time, and decoding on the consumer thread made it the slowest stage.
//!
//! Settling an answer, on the consumer thread, in the batches' order: the batch's rejections
//! and undecodable messages (found by the consumer or the decode thread) become dead letters,
//! sent and acknowledged by the dead-letter topic; then its offsets are committed (of
//! partitions still assigned) and its position markers applied. So an offset is never committed ahead of its record or its dead letter, and
//! a crash anywhere re-delivers at most the batches in flight, which the version-aware sink
//! absorbs.

mod stages;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Message, Offset, TopicPartitionList};
use tidemark_schemas::{BinlogPosition, Checkpoint, SourceSchema, TableId, TargetRecord};
use tidemark_sink::{Sink, WriteStats};
use tidemark_transform::{TablePlan, Transformer};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::checkpoints::{checkpoint_key, send_checkpoint, CheckpointReader, APPLY_STAGE};
use crate::frontier::frontier_scope;
use crate::registry::Registry;
use crate::topics::{
    consumer_config, partition_count, producer_config, wait_for_brokers, watermarks,
};
use crate::wire::{self, Marker};
use crate::{Error, KafkaConfig, Result, Topics};
use stages::{
    decode_loop, sink_loop, transform_loop, Batch, DeadLetter, DecodeJob, PartitionKey,
    PendingChange, SinkAnswer, SinkJob, Stages, TransformJob, MAX_BATCHES_IN_FLIGHT,
};

/// How long [`KafkaApplier::run`] runs, and how it answers a target that is down.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// How long a write the target fails transiently (a node restarting) is tried again before
    /// apply stops ([`tidemark_sink::resilient::retry_transient`]); `[apply] retry_seconds`.
    pub retry_transient_for: std::time::Duration,
    /// Stop once the consumer lag is zero on every assigned partition (position ≥ high
    /// watermark) and nothing is pending.
    pub until_caught_up: bool,
    /// Stop after this many non-empty batches (smoke runs and tests).
    pub max_batches: Option<u64>,
    /// On stopping, leave without committing the offsets of the last batch (already in the sink):
    /// what a `kill -9` right after a sink write leaves behind. For tests.
    pub abandon: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            retry_transient_for: std::time::Duration::from_secs(300),
            until_caught_up: false,
            max_batches: None,
            abandon: false,
        }
    }
}

/// What an applier did.
#[derive(Debug, Clone, Default)]
pub struct ApplyReport {
    /// Sink counts per target table.
    pub stats: WriteStats,
    /// Changes rejected by the target schema, per source table (sent to the dead-letter topic).
    pub rejected: BTreeMap<String, u64>,
    /// Messages that could not be decoded (sent raw to the dead-letter topic).
    pub undecodable: u64,
    /// Position markers applied.
    pub markers: u64,
    /// Non-empty batches written.
    pub batches: u64,
    /// Messages consumed (changes, markers, undecodable).
    pub messages: u64,
    /// The partitions assigned to this member when it last wrote a batch.
    pub assigned: Vec<(String, i32)>,
    /// The lowest marker applied over the assigned partitions at the end.
    pub frontier: Option<BinlogPosition>,
}

/// Offsets of data the sink acknowledged, for the rebalance callback to commit.
#[derive(Default)]
pub struct ApplyContext {
    written: Mutex<BTreeMap<(String, i32), i64>>,
    generation: AtomicU64,
    /// The consumer group's state and how long it has been in it (ms), from librdkafka's
    /// statistics (`statistics.interval.ms`), and when they were reported.
    group: Mutex<Option<(String, i64, Instant)>>,
}

impl ClientContext for ApplyContext {
    fn stats(&self, statistics: rdkafka::Statistics) {
        if let Some(cgrp) = statistics.cgrp {
            *self.group.lock().expect("group state lock") =
                Some((cgrp.state, cgrp.stateage, Instant::now()));
        }
        // Apply lag per partition this member consumes: messages between its committed offset
        // and the partition's end (librdkafka's `consumer_lag`; -1 while unknown).
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || !p.desired || p.consumer_lag < 0 {
                    continue;
                }
                metrics::gauge!(
                    "tidemark_apply_lag_messages",
                    "topic" => topic.clone(),
                    "partition" => partition.to_string()
                )
                .set(p.consumer_lag as f64);
            }
        }
    }
}

/// Whether a member has been out of its group for longer than `limit`: librdkafka's group state
/// is `up` while the member belongs to the group; any other state (looking for the coordinator,
/// waiting for it) that has lasted `limit` means the member is detached.
fn detached_for(state: &str, age: Duration, limit: Duration) -> bool {
    state != "up" && age > limit
}

/// No `commit_callback`: librdkafka answers a manual asynchronous commit (`rd_kafka_commit`
/// with `async`) on no queue unless the configuration has an `offset_commit_cb`, which
/// rust-rdkafka does not set (it enables the commit *event*, which librdkafka posts only for its
/// own automatic commits). So the callback never hears of these commits; where the answer
/// matters (stopping), the applier asks the coordinator instead.
impl ConsumerContext for ApplyContext {
    /// Before partitions are taken away, commit what the sink acknowledged, so the next owner
    /// starts right after it (anything not yet written is simply read again there). The commit
    /// is asynchronous: a synchronous commit from inside the rebalance can wait on the very
    /// rebalance it is part of, and a commit that is lost only costs re-applying (versions make
    /// that harmless).
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(revoked) = rebalance {
            let mut written = self.written.lock().expect("written offsets lock");
            let mut tpl = TopicPartitionList::new();
            for e in revoked.elements() {
                if let Some(off) = written.remove(&(e.topic().to_string(), e.partition())) {
                    let _ = tpl.add_partition_offset(e.topic(), e.partition(), Offset::Offset(off));
                }
            }
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
                    warn!(error = %e, "committing offsets before a rebalance failed; the next owner re-applies them (harmless)");
                }
            }
        }
        self.generation.fetch_add(1, Ordering::SeqCst);
    }
}

/// A member of the apply consumer group. Synchronous (the sink is): run it on a blocking thread.
pub struct KafkaApplier {
    config: KafkaConfig,
    topics: Topics,
    /// Shared only so that [`Drop`] can leak it when the group does not let it go (see there).
    consumer: Arc<BaseConsumer<ApplyContext>>,
    producer: FutureProducer,
    /// The schema registry of Confluent wire-format values, when configured.
    registry: Option<Arc<Registry>>,
    transformer: Transformer,
    schemas: HashMap<String, Arc<SourceSchema>>,
    plans: HashMap<String, Arc<TablePlan>>,
    checkpoint_reader: Option<CheckpointReader>,
    /// Newest marker applied per assigned partition.
    applied: BTreeMap<PartitionKey, (BinlogPosition, Marker)>,
    published: BTreeMap<PartitionKey, String>,
    /// Per assigned partition, the frontier stored for it (by this member or its previous
    /// owner): a frontier is never stored below it.
    floor: BTreeMap<PartitionKey, Option<BinlogPosition>>,
    last_publish: Instant,
    report: ApplyReport,
}

/// How soon apply consumes the changes topic of a table new to capture (the metadata refresh
/// interval of its pattern subscription; librdkafka's default is five minutes).
pub const NEW_TOPICS_SEEN_WITHIN: Duration = Duration::from_secs(10);

impl KafkaApplier {
    /// Connect (retrying until `transport.connect_timeout_seconds`) and join the group
    /// `transport.group_id`, subscribed to every changes topic under the prefix (a pattern: the
    /// topic of a table that arrives while capturing, by CREATE or RENAME TABLE, is consumed
    /// within [`NEW_TOPICS_SEEN_WITHIN`] unless `transport.consumer` sets
    /// `topic.metadata.refresh.interval.ms`); the topics of `tables` must exist (a missing one is
    /// [`Error::TopicMissing`], naming `topics init`). Blocking.
    pub fn new(
        config: &KafkaConfig,
        transformer: Transformer,
        tables: Option<&[TableId]>,
    ) -> Result<Self> {
        config.check()?;
        let registry = Registry::from_config(config)?;
        let topics = Topics::new(config);
        let mut settings = consumer_config(config, &config.group_id);
        // The group's state every 5 s, for `check_group`.
        settings.set("statistics.interval.ms", "5000");
        const REFRESH: &str = "topic.metadata.refresh.interval.ms";
        if !config.consumer.contains_key(REFRESH) {
            // How soon the pattern subscription sees a new changes topic.
            settings.set(REFRESH, NEW_TOPICS_SEEN_WITHIN.as_millis().to_string());
        }
        let consumer: BaseConsumer<ApplyContext> = settings
            .create_with_context(ApplyContext::default())
            .map_err(|e| Error::kafka("creating the consumer", e))?;
        wait_for_brokers(consumer.client(), config)?;
        for t in tables.unwrap_or_default() {
            partition_count(consumer.client(), &topics.changes(t))?;
        }
        let subscription = vec![format!(
            "^{}.*",
            topics.changes_prefix().replace('.', "\\.")
        )];
        let refs: Vec<&str> = subscription.iter().map(String::as_str).collect();
        consumer
            .subscribe(&refs)
            .map_err(|e| Error::kafka("subscribing to the changes topics", e))?;
        let producer: FutureProducer = producer_config(config)
            .create()
            .map_err(|e| Error::kafka("creating the producer", e))?;
        info!(group = %config.group_id, topics = ?subscription, "apply joined its consumer group");
        Ok(KafkaApplier {
            config: config.clone(),
            topics,
            consumer: Arc::new(consumer),
            producer,
            registry,
            transformer,
            schemas: HashMap::new(),
            plans: HashMap::new(),
            checkpoint_reader: None,
            applied: BTreeMap::new(),
            published: BTreeMap::new(),
            floor: BTreeMap::new(),
            last_publish: Instant::now(),
            report: ApplyReport::default(),
        })
    }

    /// The lowest marker applied over the partitions assigned now; `None` when some assigned
    /// partition has not had one applied yet (or nothing is assigned).
    pub fn frontier(&self) -> Option<BinlogPosition> {
        let assignment = self.assignment();
        if assignment.is_empty() {
            return None;
        }
        let mut min: Option<BinlogPosition> = None;
        for tp in &assignment {
            let (p, _) = self.applied.get(tp)?;
            if min.as_ref().is_none_or(|m| p < m) {
                min = Some(*p);
            }
        }
        min
    }

    /// What was done so far.
    pub fn report(&self) -> &ApplyReport {
        &self.report
    }

    /// Stop with an error when the member has been out of its consumer group for
    /// `transport.coordinator_timeout_seconds`: after a coordinator restart librdkafka can keep
    /// its requests queued and never rejoin. Restarted, the member starts after the offsets it
    /// committed, which never pass what the target acknowledged: nothing is lost.
    fn check_group(&self) -> Result<()> {
        let limit = Duration::from_secs(self.config.coordinator_timeout_seconds);
        let group = self
            .consumer
            .context()
            .group
            .lock()
            .expect("group state lock")
            .clone();
        if let Some((state, age_ms, seen)) = group {
            let age = Duration::from_millis(age_ms.max(0) as u64) + seen.elapsed();
            if detached_for(&state, age, limit) {
                return Err(Error::Kafka {
                    operation: format!("consumer group {}", self.config.group_id),
                    message: format!(
                        "this member has been out of its group for {} s (librdkafka group state `{state}`), longer than transport.coordinator_timeout_seconds ({} s); it stops so that it is restarted, from the offsets it committed",
                        age.as_secs(),
                        limit.as_secs()
                    ),
                });
            }
        }
        Ok(())
    }

    fn assignment(&self) -> Vec<PartitionKey> {
        self.consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .map(|e| (e.topic().to_string(), e.partition()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Consume, transform and write until `cancel`, or as `options` say. Returns the counts.
    ///
    /// Four threads, free-running on their own batches: this one polls while the decode thread
    /// decodes earlier batches and the transform thread turns those into records for the sink
    /// thread, which writes them and answers, in order. No stage waits for another to finish its
    /// batch before starting its next; only the queues between them (one batch each) hold one
    /// back.
    /// This thread settles each answer (see [`Self::settle`]): the batch's dead letters are
    /// sent and acknowledged, then its offsets committed and its markers applied. So an offset
    /// is never committed ahead of its record or its dead letter.
    pub fn run<S: Sink + Send + ?Sized>(
        &mut self,
        sink: &mut S,
        options: &ApplyOptions,
        cancel: &CancellationToken,
    ) -> Result<ApplyReport> {
        let retry_for = options.retry_transient_for;
        std::thread::scope(|scope| {
            let (sink_jobs, sink_jobs_rx) = mpsc::sync_channel::<SinkJob>(1);
            // Unbounded, so the sink never waits to answer: the batches in flight bound it.
            let (answers_tx, answers) = mpsc::channel::<SinkAnswer>();
            let (spent_tx, spent_rx) = mpsc::channel::<Vec<TargetRecord>>();
            std::thread::Builder::new()
                .name("tidemark-sink".into())
                .spawn_scoped(scope, move || {
                    sink_loop(sink, retry_for, sink_jobs_rx, answers_tx, spent_tx)
                })
                .map_err(|e| Error::Protocol(format!("cannot start the sink thread: {e}")))?;
            let (transform_jobs, transform_jobs_rx) = mpsc::sync_channel::<TransformJob>(1);
            std::thread::Builder::new()
                .name("tidemark-transform".into())
                .spawn_scoped(scope, move || {
                    transform_loop(transform_jobs_rx, sink_jobs, spent_rx)
                })
                .map_err(|e| Error::Protocol(format!("cannot start the transform thread: {e}")))?;
            let (jobs, jobs_rx) = mpsc::sync_channel::<DecodeJob>(1);
            let registry = self.registry.clone();
            std::thread::Builder::new()
                .name("tidemark-decode".into())
                .spawn_scoped(scope, move || {
                    decode_loop(registry, jobs_rx, transform_jobs)
                })
                .map_err(|e| Error::Protocol(format!("cannot start the decode thread: {e}")))?;
            let mut stages = Stages {
                jobs,
                answers,
                in_flight: VecDeque::new(),
            };
            self.run_on(&mut stages, options, cancel)
            // Dropping `stages` ends the three threads, one after the other; the scope joins them.
        })
    }

    fn run_on(
        &mut self,
        stages: &mut Stages,
        options: &ApplyOptions,
        cancel: &CancellationToken,
    ) -> Result<ApplyReport> {
        let linger = Duration::from_millis(50);
        let mut empty_since: Option<Instant> = None;
        let mut last_error_log = Instant::now() - Duration::from_secs(60);
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if options
                .max_batches
                .is_some_and(|m| self.report.batches >= m)
            {
                break;
            }
            let generation = self.consumer.context().generation.load(Ordering::SeqCst);
            let mut batch = Batch::default();
            let started = Instant::now();
            // Messages are handled where librdkafka holds them (no copy): they borrow this
            // handle, not `self`.
            let consumer = Arc::clone(&self.consumer);
            while (batch.messages as usize) < self.config.batch_records {
                let timeout = if batch.messages == 0 {
                    Duration::from_millis(200)
                } else {
                    let left = linger.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        break;
                    }
                    left
                };
                match consumer.poll(Timeout::After(timeout)) {
                    None => break,
                    Some(Err(e)) => {
                        if last_error_log.elapsed() > Duration::from_secs(10) {
                            warn!(error = %e, brokers = %self.config.bootstrap(), "Kafka consumer error; retrying");
                            last_error_log = Instant::now();
                        }
                        break;
                    }
                    Some(Ok(m)) => self.handle(stages, &m, &mut batch)?,
                }
                if self.consumer.context().generation.load(Ordering::SeqCst) != generation {
                    // Partitions moved: write what we have now.
                    break;
                }
            }
            let idle = batch.is_empty();
            // Nothing arrived for a whole poll, and the partitions did not move meanwhile.
            let settled =
                idle && self.consumer.context().generation.load(Ordering::SeqCst) == generation;
            if !idle {
                let last = options
                    .max_batches
                    .is_some_and(|m| self.report.batches + 1 >= m);
                let commit = !(options.abandon && last);
                self.flush(stages, &mut batch, commit)?;
                self.report.batches += 1;
            } else {
                // Nothing arrived: let everything handed over count before looking at the lag.
                self.drain(stages)?;
            }
            self.publish_frontier(false)?;
            self.check_group()?;
            if settled && options.until_caught_up {
                let assigned = self.assignment();
                if assigned.is_empty() {
                    let since = *empty_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(10) {
                        info!("no partition assigned for 10 s; nothing to catch up");
                        break;
                    }
                } else {
                    empty_since = None;
                    if self.caught_up(&assigned)? {
                        info!(
                            partitions = assigned.len(),
                            "caught up: no lag on any assigned partition"
                        );
                        break;
                    }
                }
            }
        }
        // The last batches reach the sink (and, unless abandoned, their offsets are committed).
        self.drain(stages)?;
        if options.abandon {
            self.report.frontier = self.frontier();
            return Ok(self.report.clone());
        }
        // Final: commit synchronously what was written, publish the frontier.
        let written = self
            .consumer
            .context()
            .written
            .lock()
            .expect("written offsets lock")
            .clone();
        let assigned = self.assignment();
        let mut tpl = TopicPartitionList::new();
        for ((t, p), off) in written {
            if assigned.contains(&(t.clone(), p)) {
                let _ = tpl.add_partition_offset(&t, p, Offset::Offset(off));
            }
        }
        if tpl.count() > 0 {
            // Asynchronous, then wait (bounded) until the coordinator holds the offsets: a
            // synchronous commit has no time limit, and a group in the middle of a rebalance can
            // keep it waiting. The answer is asked of the coordinator because no callback reports
            // it (see `ApplyContext`). Offsets not committed are applied again by the next owner
            // (harmless).
            self.consumer
                .commit(&tpl, CommitMode::Async)
                .map_err(|e| Error::kafka("committing offsets", e))?;
            let deadline = Instant::now() + FINAL_COMMIT_WAIT;
            let committed = |consumer: &BaseConsumer<ApplyContext>| {
                consumer
                    .committed_offsets(tpl.clone(), Duration::from_millis(500))
                    .is_ok_and(|stored| {
                        tpl.elements().iter().all(|want| {
                            stored
                                .find_partition(want.topic(), want.partition())
                                .is_some_and(|got| match (got.offset(), want.offset()) {
                                    (Offset::Offset(got), Offset::Offset(want)) => got >= want,
                                    _ => false,
                                })
                        })
                    })
            };
            while !committed(&self.consumer) {
                if Instant::now() >= deadline {
                    warn!(
                        seconds = FINAL_COMMIT_WAIT.as_secs(),
                        "the final offset commit was not answered in time; the next owner re-applies those messages (harmless)"
                    );
                    break;
                }
                // Messages polled now are not applied: their offsets are not committed.
                let _ = self.consumer.poll(Duration::from_millis(100));
            }
        }
        self.publish_frontier(true)?;
        self.producer
            .flush(Duration::from_secs(30))
            .map_err(|e| Error::kafka("flushing the producer", e))?;
        self.report.frontier = self.frontier();
        Ok(self.report.clone())
    }

    fn handle(
        &mut self,
        stages: &mut Stages,
        msg: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> Result<()> {
        batch.messages += 1;
        match wire::header(msg.headers(), wire::KIND) {
            Some(wire::KIND_MARKER) => {
                let tp = (msg.topic().to_string(), msg.partition());
                match msg
                    .payload()
                    .and_then(|p| serde_json::from_slice::<Marker>(p).ok())
                    .and_then(|m| m.position().map(|p| (p, m)))
                {
                    Some((pos, marker)) => {
                        batch.marker_count += 1;
                        let newer = batch.markers.get(&tp).is_none_or(|(old, _)| pos >= *old);
                        if newer {
                            batch.markers.insert(tp, (pos, marker));
                        }
                    }
                    None => self.undecodable(
                        msg,
                        "a position marker that is not JSON `{position, server}`",
                        batch,
                    ),
                }
            }
            Some(wire::KIND_CHANGE) => self.change(stages, msg, batch)?,
            other => {
                let why = match other {
                    None => "no `tm-kind` header (not written by tidemark)".to_string(),
                    Some(k) => format!("unknown message kind `{k}`"),
                };
                self.undecodable(msg, &why, batch)
            }
        }
        // Recorded last: a flush inside `change` must not commit this message before it is done.
        let next = msg.offset() + 1;
        match batch
            .offsets
            .iter_mut()
            .find(|((t, p), _)| *p == msg.partition() && t == msg.topic())
        {
            Some((_, offset)) => *offset = next,
            None => {
                batch
                    .offsets
                    .insert((msg.topic().to_string(), msg.partition()), next);
            }
        }
        Ok(())
    }

    fn change(
        &mut self,
        stages: &mut Stages,
        msg: &BorrowedMessage<'_>,
        batch: &mut Batch,
    ) -> Result<()> {
        let Some(payload) = msg.payload() else {
            self.undecodable(msg, "a change without a value", batch);
            return Ok(());
        };
        let Some(schema_id) = wire::header(msg.headers(), wire::SCHEMA) else {
            self.undecodable(msg, "a change without a `tm-schema` header", batch);
            return Ok(());
        };
        let plan = match self.plans.get(schema_id) {
            Some(p) => p.clone(),
            None => match self.new_plan(stages, schema_id, batch)? {
                Some(p) => p,
                None => {
                    self.undecodable(
                        msg,
                        &format!("unknown table description `{schema_id}` (not in the checkpoints topic)"),
                        batch,
                    );
                    return Ok(());
                }
            },
        };
        // Decoding (Avro, and the table check) is the decode thread's: see `decode_batch`.
        let partition = batch.partition_index(msg.topic(), msg.partition());
        let key = msg.key().map(|k| batch.pending.copy_in(k));
        let value = batch.pending.copy_in(payload);
        batch.pending.changes.push(PendingChange {
            plan,
            key,
            value,
            partition,
            offset: msg.offset(),
        });
        Ok(())
    }

    /// Build the plan of a table description seen for the first time: find it in the
    /// checkpoints topic, write what is batched so far (as embedded mode does before a schema
    /// change), create or alter the target table.
    fn new_plan(
        &mut self,
        stages: &mut Stages,
        schema_id: &str,
        batch: &mut Batch,
    ) -> Result<Option<Arc<TablePlan>>> {
        if !self.schemas.contains_key(schema_id) {
            self.load_schemas()?;
        }
        let Some(schema) = self.schemas.get(schema_id).cloned() else {
            return Ok(None);
        };
        self.flush(stages, batch, true)?;
        self.drain(stages)?;
        let plan = self
            .transformer
            .plan(&schema)
            .map_err(|e| Error::Transform {
                table: schema.table.to_string(),
                message: e.to_string(),
            })?;
        stages.ensure_table(plan.target_schema().clone())?;
        debug!(table = %schema.table, schema = %schema_id, "table plan built");
        let plan = Arc::new(plan);
        self.plans.insert(schema_id.to_string(), plan.clone());
        Ok(Some(plan))
    }

    fn load_schemas(&mut self) -> Result<()> {
        if self.checkpoint_reader.is_none() {
            self.checkpoint_reader = Some(CheckpointReader::open(&self.config)?);
        }
        let reader = self.checkpoint_reader.as_mut().expect("opened above");
        reader.catch_up()?;
        let prefix = format!("{}/", wire::SCHEMA_STAGE);
        for (key, cp) in reader.entries().range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            if self.schemas.contains_key(&cp.scope) {
                continue;
            }
            match serde_json::from_str::<SourceSchema>(&cp.value) {
                Ok(s) => {
                    self.schemas.insert(cp.scope.clone(), Arc::new(s));
                }
                Err(e) => {
                    warn!(key = %key, error = %e, "unreadable table description in the checkpoints topic")
                }
            }
        }
        Ok(())
    }

    fn undecodable(&mut self, msg: &BorrowedMessage<'_>, why: &str, batch: &mut Batch) {
        let letter = self.undecodable_letter(
            (msg.topic(), msg.partition(), msg.offset()),
            why,
            wire::header(msg.headers(), wire::KIND),
            msg.key().map(<[u8]>::to_vec),
            msg.payload().map(<[u8]>::to_vec),
        );
        batch.undecodable += 1;
        batch.dead.push(letter);
    }

    /// The dead letter of the undecodable message at `(topic, partition, offset)`, logged.
    fn undecodable_letter(
        &self,
        (topic, partition, offset): (&str, i32, i64),
        why: &str,
        original_kind: Option<&str>,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
    ) -> DeadLetter {
        let e = Error::Decode {
            topic: topic.to_string(),
            partition,
            offset,
            message: why.to_string(),
        };
        warn!(error = %e, dlq = %self.topics.dlq(), "undecodable message sent to the dead-letter topic");
        let mut headers = vec![
            (wire::KIND, wire::KIND_UNDECODABLE.to_string()),
            (wire::ERROR, why.to_string()),
            (wire::SOURCE_TOPIC, topic.to_string()),
            (wire::SOURCE_PARTITION, partition.to_string()),
            (wire::SOURCE_OFFSET, offset.to_string()),
        ];
        if let Some(kind) = original_kind {
            headers.push((wire::KIND_ORIGINAL, kind.to_string()));
        }
        DeadLetter {
            key,
            value,
            headers,
        }
    }

    /// Hand a batch to the decode thread, first settling the oldest batches in flight while
    /// [`MAX_BATCHES_IN_FLIGHT`] are, and afterwards every batch already answered.
    fn flush(&mut self, stages: &mut Stages, batch: &mut Batch, commit: bool) -> Result<()> {
        let mut b = std::mem::take(batch);
        if b.is_empty() {
            return Ok(());
        }
        while stages.in_flight.len() >= MAX_BATCHES_IN_FLIGHT {
            self.settle_oldest(stages)?;
        }
        stages.send(DecodeJob::Changes(std::mem::take(&mut b.pending)))?;
        stages.in_flight.push_back((b, commit));
        self.settle_answered(stages)
    }

    /// Settle the batches whose answers have come, without waiting.
    fn settle_answered(&mut self, stages: &mut Stages) -> Result<()> {
        while !stages.in_flight.is_empty() {
            match stages.answers.try_recv() {
                Ok(answer) => self.settle(stages, answer)?,
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return Err(Stages::stopped()),
            }
        }
        Ok(())
    }

    /// Wait for the sink's answer for the oldest batch in flight, and settle it.
    fn settle_oldest(&mut self, stages: &mut Stages) -> Result<()> {
        let answer = stages.wait()?;
        self.settle(stages, answer)
    }

    /// Every batch handed over is written and settled.
    fn drain(&mut self, stages: &mut Stages) -> Result<()> {
        while !stages.in_flight.is_empty() {
            self.settle_oldest(stages)?;
        }
        Ok(())
    }

    /// Send dead letters to the dead-letter topic and wait until each is acknowledged.
    fn send_dead_letters(&mut self, dead: &[DeadLetter]) -> Result<()> {
        if !dead.is_empty() {
            let topic = self.topics.dlq();
            let mut futures: Vec<DeliveryFuture> = Vec::with_capacity(dead.len());
            for d in dead {
                let pairs: Vec<(&str, &str)> =
                    d.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let mut record =
                    FutureRecord::<[u8], [u8]>::to(&topic).headers(wire::headers(&pairs));
                if let Some(k) = &d.key {
                    record = record.key(k.as_slice());
                }
                if let Some(v) = &d.value {
                    record = record.payload(v.as_slice());
                }
                loop {
                    match self.producer.send_result(record) {
                        Ok(f) => {
                            futures.push(f);
                            break;
                        }
                        Err((
                            rdkafka::error::KafkaError::MessageProduction(
                                rdkafka::types::RDKafkaErrorCode::QueueFull,
                            ),
                            r,
                        )) => {
                            record = r;
                            self.producer.poll(Duration::from_millis(50));
                        }
                        Err((e, _)) => {
                            return Err(Error::Delivery {
                                topic: topic.clone(),
                                message: e.to_string(),
                            })
                        }
                    }
                }
            }
            self.producer
                .flush(Duration::from_secs(60))
                .map_err(|e| Error::Delivery {
                    topic: topic.clone(),
                    message: format!("dead letters not acknowledged: {e}"),
                })?;
            for f in futures {
                match f.now_or_never() {
                    Some(Ok(Ok(_))) => {}
                    Some(Ok(Err((e, _)))) => {
                        return Err(Error::Delivery {
                            topic: topic.clone(),
                            message: e.to_string(),
                        })
                    }
                    _ => {
                        return Err(Error::Delivery {
                            topic: topic.clone(),
                            message: "a dead letter was not acknowledged after the flush".into(),
                        })
                    }
                }
            }
        }
        Ok(())
    }

    /// The sink answered for the oldest batch in flight: count it, send its dead letters (its
    /// rejections and undecodable messages) and wait for their acknowledgement, then make its
    /// offsets and markers count: offsets committed (of partitions still ours), markers applied.
    fn settle(&mut self, stages: &mut Stages, answer: SinkAnswer) -> Result<()> {
        let (mut b, commit) = stages
            .in_flight
            .pop_front()
            .ok_or_else(|| Error::Protocol("a sink answer for no batch in flight".into()))?;
        let stats = answer.written?;
        for u in answer.undecodable {
            let (topic, partition) = &b.partitions[u.partition as usize];
            let letter = self.undecodable_letter(
                (topic, *partition, u.offset),
                &u.why,
                Some(wire::KIND_CHANGE),
                u.key,
                Some(u.value),
            );
            b.undecodable += 1;
            b.dead.push(letter);
        }
        for r in answer.rejected {
            tidemark_apply::count_rejected(&r.rejection);
            let (topic, partition) = &b.partitions[r.partition as usize];
            *b.rejected
                .entry(r.rejection.source_table.clone())
                .or_default() += 1;
            b.dead.push(DeadLetter {
                key: Some(r.rejection.key.clone().into_bytes()),
                value: Some(r.rejection.to_json().into_bytes()),
                headers: vec![
                    (wire::KIND, wire::KIND_REJECTION.to_string()),
                    (wire::SOURCE_TOPIC, topic.clone()),
                    (wire::SOURCE_PARTITION, partition.to_string()),
                    (wire::SOURCE_OFFSET, r.offset.to_string()),
                ],
            });
        }
        self.send_dead_letters(&std::mem::take(&mut b.dead))?;
        tidemark_apply::count_applied(&stats);
        metrics::counter!("tidemark_messages_undecodable_total").increment(b.undecodable);
        self.report.stats.merge(&stats);
        for (t, n) in &b.rejected {
            *self.report.rejected.entry(t.clone()).or_default() += n;
        }
        self.report.undecodable += b.undecodable;
        self.report.markers += b.marker_count;
        self.report.messages += b.messages;
        // 3. Offsets (only of partitions still ours) and markers.
        let assigned = self.assignment();
        self.report.assigned = assigned.clone();
        let mut tpl = TopicPartitionList::new();
        {
            let mut written = self
                .consumer
                .context()
                .written
                .lock()
                .expect("written offsets lock");
            for (tp, off) in &b.offsets {
                if assigned.contains(tp) {
                    if commit {
                        written.insert(tp.clone(), *off);
                    }
                    let _ = tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(*off));
                }
            }
        }
        if commit && tpl.count() > 0 {
            if let Err(e) = self.consumer.commit(&tpl, CommitMode::Async) {
                warn!(error = %e, "committing offsets failed; they are committed again later (or re-applied, harmlessly)");
            }
        }
        for (tp, (pos, marker)) in b.markers {
            let newer = self.applied.get(&tp).is_none_or(|(old, _)| pos >= *old);
            if newer {
                self.applied.insert(tp, (pos, marker));
            }
        }
        self.applied.retain(|tp, _| assigned.contains(tp));
        // A partition given back may come back later, after another member moved its frontier.
        self.floor.retain(|tp, _| assigned.contains(tp));
        self.published.retain(|tp, _| assigned.contains(tp));
        Ok(())
    }

    /// The frontier stored for each applied partition not yet known here (`floor`).
    fn read_stored_frontiers(&mut self) -> Result<()> {
        if self.checkpoint_reader.is_none() {
            self.checkpoint_reader = Some(CheckpointReader::open(&self.config)?);
        }
        let reader = self.checkpoint_reader.as_mut().expect("opened above");
        reader.catch_up()?;
        for (t, p) in self.applied.keys() {
            if self.floor.contains_key(&(t.clone(), *p)) {
                continue;
            }
            let key = checkpoint_key(APPLY_STAGE, &frontier_scope(&self.config.group_id, t, *p));
            let stored = reader
                .entries()
                .get(&key)
                .and_then(|cp| serde_json::from_str::<Marker>(&cp.value).ok())
                .and_then(|m| m.position());
            self.floor.insert((t.clone(), *p), stored);
        }
        Ok(())
    }

    /// Write `apply/<group>/<topic>/<partition>` = newest applied marker, for partitions whose
    /// marker moved, at most every `checkpoint_interval_ms` (always when `force`).
    fn publish_frontier(&mut self, force: bool) -> Result<()> {
        if !force && self.last_publish.elapsed() < self.config.checkpoint_interval() {
            return Ok(());
        }
        self.last_publish = Instant::now();
        let topic = self.topics.checkpoints();
        // A member that took a partition over applies it again from the committed offset, so
        // its first markers can be older than the frontier the previous owner stored. Storing
        // them would move the frontier back (and keep it there if the group stops then), and
        // hold reconcile's settling back: the frontier stored for a partition is read once
        // when it is first published here, and never undercut.
        if self.applied.keys().any(|tp| !self.floor.contains_key(tp)) {
            // Not read (brokers away, as in a restart): those partitions' frontiers are published
            // at a later call, once it is; nothing else waits for them.
            if let Err(e) = self.read_stored_frontiers() {
                warn!(error = %e, "cannot read the stored frontiers yet; the frontier of partitions new to this member is published once they are read");
            }
        }
        for ((t, p), (pos, marker)) in &self.applied {
            let text = pos.to_string();
            if self.published.get(&(t.clone(), *p)) == Some(&text) {
                continue;
            }
            let Some(floor) = self.floor.get_mut(&(t.clone(), *p)) else {
                continue;
            };
            if floor.is_some_and(|f| *pos <= f) {
                continue;
            }
            *floor = Some(*pos);
            let cp = Checkpoint {
                stage: APPLY_STAGE.into(),
                scope: frontier_scope(&self.config.group_id, t, *p),
                value: serde_json::to_string(marker).map_err(|e| Error::Encode(e.to_string()))?,
            };
            // Not awaited: a frontier written late is only conservative.
            drop(send_checkpoint(&self.producer, &topic, &cp)?);
            self.published.insert((t.clone(), *p), text);
        }
        if let Some(frontier) = self.frontier() {
            metrics::gauge!("tidemark_apply_frontier_file_seq")
                .set(frontier.file_seq().unwrap_or(0) as f64);
            metrics::gauge!("tidemark_apply_frontier_offset").set(frontier.offset as f64);
        }
        Ok(())
    }

    /// Whether the lag is zero on every assigned partition: the position (the committed offset
    /// where nothing was consumed yet) has reached the high watermark the broker reports now.
    /// Asked after a poll that brought nothing, with every batch settled; a record the broker
    /// holds and this member has not fetched yet is below the watermark, so the answer is exact
    /// and needs no waiting window.
    fn caught_up(&self, assigned: &[PartitionKey]) -> Result<bool> {
        let positions = self
            .consumer
            .position()
            .map_err(|e| Error::kafka("reading consumer positions", e))?;
        let mut committed: Option<TopicPartitionList> = None;
        for (t, p) in assigned {
            // Asked through the producer: the consumer's own pending Fetch would hold the
            // answer up to `fetch.wait.max.ms` (see `watermarks`).
            let (low, high) = watermarks(self.producer.client(), t, *p)?;
            let mut pos = positions
                .find_partition(t, *p)
                .and_then(|e| match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => None,
                });
            if pos.is_none() {
                if committed.is_none() {
                    committed = Some(
                        self.consumer
                            .committed(Duration::from_secs(10))
                            .map_err(|e| Error::kafka("reading committed offsets", e))?,
                    );
                }
                pos = committed
                    .as_ref()
                    .and_then(|c| c.find_partition(t, *p))
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    });
            }
            if pos.unwrap_or(low) < high {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// How long stopping waits for the answer to the final offset commit.
const FINAL_COMMIT_WAIT: Duration = Duration::from_secs(10);

/// How long dropping an applier waits for the consumer to leave its group.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(20);

impl Drop for KafkaApplier {
    /// Leave the group, within [`CLOSE_TIMEOUT`]. rust-rdkafka's own `BaseConsumer` drop polls
    /// until librdkafka reports the consumer closed, without limit; with a rebalance under way
    /// that can be forever (fede1024/rust-rdkafka#509), which would turn a clean shutdown into a
    /// hang. Here the close is bounded: when the group has not let the member go in time, the
    /// consumer is leaked (its offsets were committed by `run`; the broker drops the member after
    /// `session.timeout.ms`).
    fn drop(&mut self) {
        let consumer = &self.consumer;
        if consumer.close_queue().is_ok() {
            let deadline = Instant::now() + CLOSE_TIMEOUT;
            while !consumer.closed() && Instant::now() < deadline {
                consumer.poll(Duration::from_millis(100));
            }
        }
        if !consumer.closed() {
            warn!(
                group = %self.config.group_id,
                seconds = CLOSE_TIMEOUT.as_secs(),
                "the consumer did not leave its group in time; leaving it to the session timeout"
            );
            std::mem::forget(Arc::clone(consumer));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::detached_for;
    use std::time::Duration;

    #[test]
    fn a_member_is_detached_once_out_of_state_up_for_longer_than_the_limit() {
        let limit = Duration::from_secs(120);
        assert!(!detached_for("up", Duration::from_secs(3600), limit));
        assert!(!detached_for("wait-coord", Duration::from_secs(60), limit));
        assert!(detached_for("wait-coord", Duration::from_secs(121), limit));
        assert!(detached_for("query-coord", Duration::from_secs(500), limit));
    }
}
