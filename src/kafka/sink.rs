//! The output side: the idempotent producer that drains the outbox and acknowledges only what
//! the brokers acknowledged. Must not know what the records mean.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::changelog::ChangelogProgress;
use super::polled::{Polled, Release, Released};
use super::{client_config, client_error, lock, ready_idempotent};
use crate::config::{Compression, KafkaSecurity};
use crate::outbox::Sink;
use crate::store::OutboxRecord;
use crate::telemetry::Telemetry;

/// Producer callbacks: client-level errors (a broker down, a refused connection) are logged and
/// counted, as the consumer's are.
pub struct SinkContext {
    telemetry: Arc<Telemetry>,
    /// The delivery reports of the chunk [`KafkaSink::deliver`] is sending.
    reports: Mutex<Reports>,
    /// Told when the last report of a chunk came in.
    all_reported: tokio::sync::Notify,
    release: Release,
}

impl ClientContext for SinkContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.release.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !self.release.after("producer", &error, reason) {
            client_error(&self.telemetry, "producer", &error, reason);
        }
    }
}

impl Released for SinkContext {
    fn release(&self) -> &Release {
        &self.release
    }
}

/// One chunk's delivery reports, gathered by the producer's polling thread. A record is tagged
/// with a running count of the records sent (`first` + its place in the chunk), so that a report
/// of an earlier chunk, whose wait was given up, is told apart and dropped.
#[derive(Default)]
struct Reports {
    /// The tag of the chunk's first record.
    first: usize,
    /// Each record's report, by its place in the chunk: where it was written, or why not.
    results: Vec<Option<Result<(i32, i64), KafkaError>>>,
    /// Records sent whose report has not come yet.
    waiting: usize,
}

impl ProducerContext for SinkContext {
    /// The record's tag (see `Reports`): no allocation per record, unlike a future's channel.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, tag: usize) {
        let mut reports = lock(&self.reports);
        let place = tag.wrapping_sub(reports.first);
        let Some(slot) = reports.results.get_mut(place) else {
            return;
        };
        if slot.is_some() {
            return;
        }
        *slot = Some(match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((e, _)) => Err(e.clone()),
        });
        reports.waiting -= 1;
        if reports.waiting == 0 {
            self.all_reported.notify_one();
        }
    }
}

/// The output side: an idempotent producer that acknowledges only what the brokers acknowledged.
pub struct KafkaSink {
    producer: Polled<SinkContext>,
    /// How many records were sent before the chunk being delivered: the next chunk's first tag.
    sent: usize,
    telemetry: Arc<Telemetry>,
    changelog: Option<ChangelogProgress>,
}

impl KafkaSink {
    pub fn connect(
        brokers: &str,
        security: &KafkaSecurity,
        compression: Compression,
        telemetry: Arc<Telemetry>,
    ) -> anyhow::Result<KafkaSink> {
        let producer: BaseProducer<SinkContext> = client_config(brokers, security)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // A batch waits up to 50 ms for more records. With the changelog every customer
            // written is a record here, and at 5 ms the producer's thread built many small
            // batches: in the peers benchmark's throughput runs the job's CPU per event with
            // the changelogs was 11.5-12.5 s a million events against 12.9-13.8 at 5 ms (four
            // rounds each, alternating, 2026-12-06), and the same without them. An output's
            // latency is not the state's: the commit it follows has happened.
            .set("linger.ms", "50")
            .set("compression.type", compression.name())
            .set("partitioner", "murmur2_random")
            .set("message.timeout.ms", "30000")
            .create_with_context(SinkContext {
                telemetry: telemetry.clone(),
                reports: Mutex::default(),
                all_reported: tokio::sync::Notify::new(),
                release: Release::default(),
            })?;
        let producer = Polled::start(producer, "sink-poll")?;
        Ok(KafkaSink {
            producer,
            sent: 0,
            telemetry,
            changelog: None,
        })
    }

    /// Reports the changelog's deliveries to the store (see [`ChangelogProgress`]).
    pub fn with_changelog_progress(mut self, progress: ChangelogProgress) -> KafkaSink {
        self.changelog = Some(progress);
        self
    }

    /// Readies the producer to send (see `ready_idempotent`): its first records go out at
    /// once rather than half a second later. Blocks for at most 10 s.
    pub fn ready(&self, topic: &str) {
        ready_idempotent(self.producer.client(), topic);
    }

    /// Which of `topics` the brokers do not know. Blocks for at most `timeout`.
    pub fn missing_topics(
        &self,
        topics: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let metadata = self.producer.client().fetch_metadata(None, timeout)?;
        let known: HashSet<&str> = metadata.topics().iter().map(|t| t.name()).collect();
        Ok(topics
            .iter()
            .filter(|t| !known.contains(**t))
            .map(|t| (*t).to_owned())
            .collect())
    }
}

impl Sink for KafkaSink {
    async fn deliver(&mut self, records: &[(u64, Arc<OutboxRecord>)]) -> Vec<u64> {
        let context = self.producer.context().clone();
        let first = self.sent;
        self.sent = self.sent.wrapping_add(records.len());
        {
            let mut reports = lock(&context.reports);
            reports.first = first;
            reports.results.clear();
            reports.results.resize_with(records.len(), || None);
            reports.waiting = records.len();
        }
        for (place, (_, record)) in records.iter().enumerate() {
            if let Err(e) = self.send(record, first.wrapping_add(place)).await {
                // Not queued, so no report will come: this record and the rest fail here.
                let mut reports = lock(&context.reports);
                for slot in &mut reports.results[place..] {
                    *slot = Some(Err(e.clone()));
                }
                reports.waiting -= records.len() - place;
                break;
            }
        }
        // A report that came before the wait began left a permit, so none is missed.
        while lock(&context.reports).waiting > 0 {
            context.all_reported.notified().await;
        }
        let results = std::mem::take(&mut lock(&context.reports).results);
        let mut acked = Vec::with_capacity(records.len());
        let mut changelog_offsets = std::collections::BTreeMap::<i32, Vec<i64>>::new();
        for ((seq, record), result) in records.iter().zip(results) {
            // Every slot is filled by the time no report is waited for; `Canceled` is never seen.
            match result.unwrap_or(Err(KafkaError::Canceled)) {
                Ok((partition, offset)) => {
                    acked.push(*seq);
                    if self
                        .changelog
                        .as_ref()
                        .is_some_and(|c| c.topic == record.topic)
                    {
                        changelog_offsets.entry(partition).or_default().push(offset);
                    }
                }
                Err(e) => {
                    self.telemetry.delivery_failed();
                    tracing::warn!(seq, error = %e, "Output record not delivered; it stays in the outbox.");
                    break;
                }
            }
        }
        if let Some(progress) = &self.changelog {
            progress.delivered(&mut changelog_offsets);
        }
        acked
    }
}

impl KafkaSink {
    /// Queues `record` with `tag`, waiting while librdkafka's queue is full, for at most 30 s.
    async fn send(&self, record: &OutboxRecord, tag: usize) -> Result<(), KafkaError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (name, value) in &record.headers {
            headers = headers.insert(Header {
                key: name,
                value: Some(value),
            });
        }
        let mut out: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(&record.topic, tag).headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key.as_slice());
        }
        if let Some(value) = &record.value {
            out = out.payload(value.as_slice());
        }
        if let Some(partition) = record.partition {
            out = out.partition(partition);
        }
        // The clock is read only once the queue is full, not for every record.
        let mut deadline = None;
        loop {
            match self.producer.send(out) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    let now = tokio::time::Instant::now();
                    if now >= *deadline.get_or_insert(now + Duration::from_secs(30)) {
                        return Err(KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull));
                    }
                    out = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each compression `kafka.compression` accepts is one this build of librdkafka has:
    /// the producer is created (no broker is needed for that).
    #[test]
    fn every_compression_the_config_accepts_makes_a_producer() {
        let config = crate::config::Config::parse(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[state]\npath = \"/tmp/unused\"\n",
            Vec::new(),
        )
        .unwrap();
        for compression in Compression::ALL {
            let made = KafkaSink::connect(
                &config.brokers,
                &config.kafka_security,
                compression,
                Arc::new(Telemetry::new()),
            );
            assert!(made.is_ok(), "{compression:?}: {:?}", made.err());
        }
    }
}
