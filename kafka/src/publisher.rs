//! The producer side: [`CaptureMessage`]s from capture or backfill → changes topics, markers,
//! and checkpoints that never run ahead of delivered data.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use futures_util::StreamExt;
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tidemark_ingest::{CaptureCheckpoint, CaptureMessage};
use tidemark_schemas::avro::RecordKind;
use tidemark_schemas::{BinlogPosition, ChangeEvent, Checkpoint, SourceSchema, TableId};
use tokio::sync::mpsc;
use tracing::{debug, info};

use crate::checkpoints::{await_delivery, checkpoint_key, send_checkpoint};
use crate::registry::{self, Registry};
use crate::topics::{blocking, partition_count, producer_config, wait_for_brokers};
use crate::wire::{self, Marker};
use crate::{Error, KafkaConfig, Result, Topics};

/// What a delivery future resolves to.
pub(crate) type DeliveryOutcome = <DeliveryFuture as std::future::Future>::Output;

/// What a publisher did.
#[derive(Debug, Clone, Default)]
pub struct PublishReport {
    /// Changes produced and acknowledged, per source table.
    pub changes: BTreeMap<String, u64>,
    /// Position markers produced (one per partition per round).
    pub markers: u64,
    /// Checkpoints written (after the data they cover was acknowledged).
    pub checkpoints: u64,
    /// The last transaction boundary published (capture).
    pub last_position: Option<BinlogPosition>,
}

impl PublishReport {
    pub fn total_changes(&self) -> u64 {
        self.changes.values().sum()
    }
}

/// Publishes capture or backfill output to Kafka. See the crate documentation for the algorithm.
pub struct KafkaPublisher {
    config: KafkaConfig,
    topics: Topics,
    producer: FutureProducer,
    server: String,
    /// Changes topic and partition count of every table markers go to.
    tables: BTreeMap<TableId, (String, usize)>,
    /// The schema registry, when values use the Confluent wire format.
    registry: Option<Arc<Registry>>,
    /// Registry id of the `ChangeEvent` schema under each changes topic's value subject.
    value_ids: HashMap<String, u32>,
    /// The schema id of each table's current description.
    current_schema: HashMap<TableId, String>,
    /// Schema ids stored (acknowledged) in the checkpoints topic.
    registered: HashSet<String>,
    /// Deliveries of changes and markers, in production order.
    pending: FuturesOrdered<DeliveryFuture>,
    produced: u64,
    acked: u64,
    /// Checkpoints waiting for the data before them: (messages produced before it, checkpoint).
    waiting: VecDeque<(u64, Checkpoint)>,
    /// Checkpoints whose data is acknowledged, newest per key, waiting to be written.
    ready: BTreeMap<String, Checkpoint>,
    checkpoint_deliveries: FuturesUnordered<DeliveryFuture>,
    last_checkpoint_write: Instant,
    last_commit: Option<(BinlogPosition, Option<String>)>,
    /// Whether a boundary arrived since the last round of markers.
    marker_due: bool,
    last_marker: Instant,
    report: PublishReport,
}

impl KafkaPublisher {
    /// Connect (retrying with backoff until `transport.connect_timeout_seconds`) and look up the
    /// partitions of the changes topics of `tables`: every table in scope, so markers reach
    /// every partition the apply frontier is computed over. `server` is the source identity
    /// stored in the capture checkpoint.
    pub async fn new(
        config: &KafkaConfig,
        server: impl Into<String>,
        tables: &[TableId],
    ) -> Result<Self> {
        config.check()?;
        let registry = Registry::from_config(config)?;
        let topics = Topics::new(config);
        let producer: FutureProducer = producer_config(config)
            .create()
            .map_err(|e| Error::kafka("creating the producer", e))?;
        let tables_topics: Vec<(TableId, String)> =
            tables.iter().map(|t| (*t, topics.changes(t))).collect();
        // A table that arrived while capture was running or stopped (CREATE or RENAME TABLE)
        // has no topic yet: it is created as `topics init` would, in a deployment `topics init`
        // set up (its checkpoints topic exists; without it, the error names `topics init`).
        let missing = {
            let producer = producer.clone();
            let tables_topics = tables_topics.clone();
            let config = config.clone();
            let checkpoints = topics.checkpoints();
            blocking(move || {
                wait_for_brokers(producer.client(), &config)?;
                partition_count(producer.client(), &checkpoints)?;
                let mut missing = Vec::new();
                for (t, topic) in tables_topics {
                    match partition_count(producer.client(), &topic) {
                        Err(Error::TopicMissing { .. }) => missing.push(t),
                        other => drop(other?),
                    }
                }
                Ok(missing)
            })
            .await?
        };
        if !missing.is_empty() {
            info!(tables = ?missing, "tables without a changes topic: creating theirs");
            crate::topics::topics_init(config, &missing).await?;
        }
        let (resolved, value_ids) = {
            let producer = producer.clone();
            let registry = registry.clone();
            blocking(move || {
                let mut out = BTreeMap::new();
                let mut ids = HashMap::new();
                for (t, topic) in tables_topics {
                    let n = partition_count(producer.client(), &topic)?;
                    if let Some(r) = &registry {
                        ids.insert(topic.clone(), r.register(&topic, RecordKind::ChangeEvent)?);
                    }
                    out.insert(t, (topic, n));
                }
                Ok((out, ids))
            })
            .await?
        };
        Ok(KafkaPublisher {
            config: config.clone(),
            topics,
            producer,
            server: server.into(),
            tables: resolved,
            registry,
            value_ids,
            current_schema: HashMap::new(),
            registered: HashSet::new(),
            pending: FuturesOrdered::new(),
            produced: 0,
            acked: 0,
            waiting: VecDeque::new(),
            ready: BTreeMap::new(),
            checkpoint_deliveries: FuturesUnordered::new(),
            last_checkpoint_write: Instant::now(),
            last_commit: None,
            marker_due: false,
            last_marker: Instant::now(),
            report: PublishReport::default(),
        })
    }

    /// Capture only: the position capture starts from. Everything before it was published by an
    /// earlier run (its checkpoint says so), so markers may carry it while the source is idle.
    pub fn with_start(mut self, position: BinlogPosition, gtid: Option<String>) -> Self {
        self.last_commit = Some((position, gtid));
        self.marker_due = true;
        self
    }

    /// Publish everything `rx` delivers until the channel closes (capture or backfill finished
    /// or was cancelled), then write final markers, wait for every acknowledgement, write the
    /// final checkpoints and flush. Returns what was published.
    pub async fn run(mut self, mut rx: mpsc::Receiver<CaptureMessage>) -> Result<PublishReport> {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // The tick comes before new messages: while capture has a backlog, `rx` is always
            // ready, and a tick polled after it would never run (no checkpoint written, no
            // heartbeat, for as long as the backlog lasts). It is ready once per 100 ms at most.
            tokio::select! {
                biased;
                Some(res) = self.pending.next(), if !self.pending.is_empty() => self.delivered(res)?,
                Some(res) = self.checkpoint_deliveries.next(), if !self.checkpoint_deliveries.is_empty() => {
                    self.checkpoint_delivered(res)?;
                }
                _ = tick.tick() => self.on_tick().await?,
                msg = rx.recv() => match msg {
                    Some(msg) => self.handle(msg).await?,
                    None => break,
                },
            }
        }
        self.finish().await
    }

    async fn handle(&mut self, msg: CaptureMessage) -> Result<()> {
        match msg {
            CaptureMessage::Schema(schema) => self.schema(&schema).await,
            CaptureMessage::Changes(changes) => {
                for change in &changes {
                    self.change(change).await?;
                }
                Ok(())
            }
            CaptureMessage::Commit {
                position,
                gtid,
                source_time,
            } => {
                self.checkpoint(
                    CaptureCheckpoint::new(&position, self.server.clone(), gtid.clone())
                        .at_source_time(source_time)
                        .to_checkpoint(),
                );
                self.report.last_position = Some(position);
                self.last_commit = Some((position, gtid));
                self.marker_due = true;
                if self.last_marker.elapsed() >= self.config.marker_interval() {
                    self.markers().await?;
                }
                Ok(())
            }
            CaptureMessage::Checkpoint(cp) => {
                self.checkpoint(cp);
                Ok(())
            }
        }
    }

    /// Store the table description (once per id, acknowledged before any change names it).
    async fn schema(&mut self, schema: &SourceSchema) -> Result<()> {
        let id = wire::schema_id(schema);
        if !self.registered.contains(&id) {
            let cp = Checkpoint {
                stage: wire::SCHEMA_STAGE.into(),
                scope: id.clone(),
                value: serde_json::to_string(schema).map_err(|e| Error::Encode(e.to_string()))?,
            };
            let topic = self.topics.checkpoints();
            let f = send_checkpoint(&self.producer, &topic, &cp)?;
            await_delivery(&topic, f).await?;
            self.registered.insert(id.clone());
            debug!(table = %schema.table, schema = %id, "table description stored");
        }
        if !self.tables.contains_key(&schema.table) {
            let topic = self.topics.changes(&schema.table);
            let count = |producer: FutureProducer, t: String| {
                blocking(move || partition_count(producer.client(), &t))
            };
            let n = match count(self.producer.clone(), topic.clone()).await {
                // A table that arrived while capturing (CREATE TABLE, or the new name of a
                // RENAME TABLE): its topic is created as `topics init` would.
                Err(Error::TopicMissing { .. }) => {
                    info!(table = %schema.table, topic = %topic, "a table new to capture: creating its changes topic");
                    crate::topics::topics_init(&self.config, &[schema.table]).await?;
                    count(self.producer.clone(), topic.clone()).await?
                }
                n => n?,
            };
            let registry = self.registry.clone();
            let t = topic.clone();
            let id = blocking(move || match &registry {
                Some(r) => Ok(Some(r.register(&t, RecordKind::ChangeEvent)?)),
                None => Ok(None),
            })
            .await?;
            if let Some(id) = id {
                self.value_ids.insert(topic.clone(), id);
            }
            self.tables.insert(schema.table, (topic, n));
        }
        self.current_schema.insert(schema.table, id);
        Ok(())
    }

    async fn change(&mut self, change: &ChangeEvent) -> Result<()> {
        let schema = self.current_schema.get(&change.table).ok_or_else(|| {
            Error::Protocol(format!(
                "a change of {} arrived before its table description",
                change.table
            ))
        })?;
        let (topic, partitions) = &self.tables[&change.table];
        let key = change.key.canonical_text();
        let schema_id = match &self.registry {
            Some(_) => Some(*self.value_ids.get(topic).ok_or_else(|| {
                Error::Protocol(format!("no schema registry id for topic `{topic}`"))
            })?),
            None => None,
        };
        let value = registry::encode_value(schema_id, change)?;
        let headers = wire::headers(&[(wire::KIND, wire::KIND_CHANGE), (wire::SCHEMA, schema)]);
        let partition = wire::partition_for(&key, *partitions);
        let topic = topic.clone();
        let record = FutureRecord::<str, [u8]>::to(&topic)
            .key(key.as_str())
            .payload(value.as_slice())
            .partition(partition)
            .headers(headers);
        self.send(record).await?;
        *self
            .report
            .changes
            .entry(change.table.to_string())
            .or_default() += 1;
        Ok(())
    }

    /// One marker with the last boundary into every partition of every changes topic.
    async fn markers(&mut self) -> Result<()> {
        let Some((position, gtid)) = self.last_commit.clone() else {
            return Ok(());
        };
        let marker = serde_json::to_vec(&Marker {
            position: position.to_string(),
            gtid,
            server: self.server.clone(),
        })
        .map_err(|e| Error::Encode(e.to_string()))?;
        let headers = wire::headers(&[(wire::KIND, wire::KIND_MARKER)]);
        let targets: Vec<(String, usize)> = self.tables.values().cloned().collect();
        for (topic, partitions) in targets {
            for p in 0..partitions as i32 {
                let record = FutureRecord::<str, [u8]>::to(&topic)
                    .payload(marker.as_slice())
                    .partition(p)
                    .headers(headers.clone());
                self.send(record).await?;
                self.report.markers += 1;
            }
        }
        self.marker_due = false;
        self.last_marker = Instant::now();
        Ok(())
    }

    /// Produce, waiting for acknowledgements while librdkafka's queue is full.
    async fn send(&mut self, mut record: FutureRecord<'_, str, [u8]>) -> Result<()> {
        loop {
            match self.producer.send_result(record) {
                Ok(f) => {
                    self.pending.push_back(f);
                    self.produced += 1;
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    match self.pending.next().await {
                        Some(res) => self.delivered(res)?,
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, r)) => {
                    return Err(Error::Delivery {
                        topic: r.topic.to_string(),
                        message: e.to_string(),
                    })
                }
            }
        }
    }

    fn checkpoint(&mut self, cp: Checkpoint) {
        self.waiting.push_back((self.produced, cp));
        self.release();
    }

    /// Move checkpoints whose preceding data is all acknowledged to `ready`.
    fn release(&mut self) {
        while self
            .waiting
            .front()
            .is_some_and(|(seq, _)| *seq <= self.acked)
        {
            let (_, cp) = self.waiting.pop_front().expect("front exists");
            self.ready.insert(checkpoint_key(&cp.stage, &cp.scope), cp);
        }
    }

    fn delivered(&mut self, res: DeliveryOutcome) -> Result<()> {
        match res {
            Ok(Ok(_)) => {
                self.acked += 1;
                self.release();
                Ok(())
            }
            Ok(Err((e, msg))) => Err(Error::Delivery {
                topic: rdkafka::Message::topic(&msg).to_string(),
                message: e.to_string(),
            }),
            Err(_) => Err(Error::Delivery {
                topic: "(unknown)".into(),
                message: "the producer was dropped before the broker answered".into(),
            }),
        }
    }

    fn checkpoint_delivered(&mut self, res: DeliveryOutcome) -> Result<()> {
        match res {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(Error::Delivery {
                topic: self.topics.checkpoints(),
                message: e.to_string(),
            }),
            Err(_) => Err(Error::Delivery {
                topic: self.topics.checkpoints(),
                message: "the producer was dropped before the broker answered".into(),
            }),
        }
    }

    fn write_ready(&mut self) -> Result<()> {
        let topic = self.topics.checkpoints();
        for (_, cp) in std::mem::take(&mut self.ready) {
            let f = send_checkpoint(&self.producer, &topic, &cp)?;
            self.checkpoint_deliveries.push(f);
            self.report.checkpoints += 1;
        }
        self.last_checkpoint_write = Instant::now();
        Ok(())
    }

    async fn on_tick(&mut self) -> Result<()> {
        let since = self.last_marker.elapsed();
        if (self.marker_due && since >= self.config.marker_interval())
            || since >= self.config.heartbeat()
        {
            self.markers().await?;
        }
        if !self.ready.is_empty()
            && self.last_checkpoint_write.elapsed() >= self.config.checkpoint_interval()
        {
            self.write_ready()?;
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<PublishReport> {
        if self.last_commit.is_some() {
            self.markers().await?;
        }
        while let Some(res) = self.pending.next().await {
            self.delivered(res)?;
        }
        self.release();
        self.write_ready()?;
        while let Some(res) = self.checkpoint_deliveries.next().await {
            self.checkpoint_delivered(res)?;
        }
        let producer = self.producer.clone();
        blocking(move || {
            producer
                .flush(Duration::from_secs(30))
                .map_err(|e| Error::kafka("flushing the producer", e))
        })
        .await?;
        info!(
            changes = self.report.total_changes(),
            markers = self.report.markers,
            checkpoints = self.report.checkpoints,
            position = ?self.report.last_position.as_ref().map(|p| p.to_string()),
            "publisher finished; everything acknowledged"
        );
        Ok(self.report)
    }
}
