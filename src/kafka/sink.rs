//! The output side: the idempotent producer that drains the outbox and acknowledges only what
//! the brokers acknowledged. Must not know what the records mean.

use std::collections::{HashMap, HashSet};
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
use crate::processor::partition_for;
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
    /// Each output topic's partition count, as the brokers gave it at start
    /// ([`KafkaSink::missing_topics`]), so that a round knows where its keyed records go.
    partitions: HashMap<String, i32>,
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
            // A batch waits up to 5 ms for more records: `deliver` queues a round's records
            // partition by partition, each partition's within that. From 2026-12-06 to
            // 2026-12-07 it waited 50 ms, which, before the rounds, saved the job CPU: at 5 ms
            // a chunk's records left in many small batches while it was being queued (the
            // peers benchmark with the changelogs, 11.5-12.5 CPU s a million events against
            // 12.9-13.8, four rounds each alternating). With rounds, 50 ms a round delayed
            // the outputs seconds behind the state. An output's latency is not the state's:
            // the commit it follows has happened.
            .set("linger.ms", "5")
            .set("batch.size", BATCH_BYTES.to_string())
            .set("batch.num.messages", BATCH_RECORDS.to_string())
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
            partitions: HashMap::new(),
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

    /// Which of `topics` the brokers do not know; the partition counts of those they do are
    /// kept for [`Sink::deliver`]'s rounds. Blocks for at most `timeout`.
    pub fn missing_topics(
        &mut self,
        topics: &[&str],
        timeout: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let metadata = self.producer.client().fetch_metadata(None, timeout)?;
        let mut known = HashSet::new();
        for topic in metadata.topics() {
            known.insert(topic.name());
            if topics.contains(&topic.name()) && !topic.partitions().is_empty() {
                self.partitions
                    .insert(topic.name().to_owned(), topic.partitions().len() as i32);
            }
        }
        Ok(topics
            .iter()
            .filter(|t| !known.contains(**t))
            .map(|t| (*t).to_owned())
            .collect())
    }
}

/// The producer's limits on one batch of a partition's records (librdkafka's defaults, set so
/// that the rounds below stay under them).
const BATCH_BYTES: usize = 1_000_000;
const BATCH_RECORDS: usize = 10_000;
/// A round holds at most three quarters of a batch of each partition's records, well inside
/// it (the batch's own header is 61 bytes).
const ROUND_BYTES: usize = BATCH_BYTES / 4 * 3;
const ROUND_RECORDS: usize = BATCH_RECORDS / 4 * 3;

/// One round of a chunk: the records from `start` to `end`, sent in `order`, partition by
/// partition.
struct Round {
    end: usize,
    order: Vec<usize>,
}

/// The round that starts at `start`: up to the first record that would take its partition's
/// share of the round past `ROUND_BYTES` or `ROUND_RECORDS`, so that each partition's share
/// leaves in one batch (a record larger than that goes alone), sent partition by partition, so
/// that each partition's records are queued together, within the producer's linger. A record's
/// partition is the one it names, or its key's (Kafka's default partitioner, as the producer's
/// `murmur2_random`) in a topic whose partition count is known; the others share one budget a
/// topic. That is an estimate, never where a record goes: the producer partitions it.
fn round(
    records: &[(u64, Arc<OutboxRecord>)],
    start: usize,
    partitions: &HashMap<String, i32>,
) -> Round {
    let mut share_of: HashMap<(&str, Option<i32>), usize> = HashMap::new();
    // Each partition's bytes and records, in the order the partitions first come.
    let mut shares: Vec<(usize, Vec<usize>)> = Vec::new();
    let mut end = records.len();
    for (place, (_, record)) in records.iter().enumerate().skip(start) {
        let partition = record.partition.or_else(|| {
            let count = partitions.get(&record.topic)?;
            Some(partition_for(record.key.as_deref()?, *count))
        });
        let share = *share_of
            .entry((&record.topic, partition))
            .or_insert_with(|| {
                shares.push((0, Vec::new()));
                shares.len() - 1
            });
        let (queued, places) = &mut shares[share];
        let bytes = batch_bytes(record);
        if !places.is_empty() && (*queued + bytes > ROUND_BYTES || places.len() >= ROUND_RECORDS) {
            end = place;
            break;
        }
        *queued += bytes;
        places.push(place);
    }
    let order = shares.into_iter().flat_map(|(_, places)| places).collect();
    Round { end, order }
}

/// What a record adds to its batch at most, as librdkafka counts it against `batch.size`: its
/// key, value and headers, and the record format's largest framing (varints: 36 bytes a
/// record, 10 a header).
fn batch_bytes(record: &OutboxRecord) -> usize {
    let headers: usize = record
        .headers
        .iter()
        .map(|(name, value)| name.len() + value.len() + 10)
        .sum();
    record.key.as_ref().map_or(0, Vec::len)
        + record.value.as_ref().map_or(0, Vec::len)
        + headers
        + 36
}

impl Sink for KafkaSink {
    /// Sends the chunk in rounds, each at most one batch's worth of every partition's records
    /// (`round`), the next once the brokers have acknowledged the round, and returns the
    /// records acknowledged before the first one refused. The idempotent producer sends a
    /// partition's next batch only once its last one is acknowledged (librdkafka 2.12 holds it
    /// while five records, not five requests, are in flight), and a batch kept waiting so once
    /// ready had the producer's thread poll its sockets without waiting until then: in the
    /// peers benchmark with the changelog, spins of up to 200 ms, a tenth to a fifth of the
    /// job's CPU (2026-12-07).
    async fn deliver(&mut self, records: &[(u64, Arc<OutboxRecord>)]) -> Vec<u64> {
        let context = self.producer.context().clone();
        let first = self.sent;
        self.sent = self.sent.wrapping_add(records.len());
        {
            let mut reports = lock(&context.reports);
            reports.first = first;
            reports.results.clear();
            reports.results.resize_with(records.len(), || None);
            reports.waiting = 0;
        }
        let mut start = 0;
        while start < records.len() {
            let Round { end, order } = round(records, start, &self.partitions);
            lock(&context.reports).waiting += order.len();
            let mut failed = None;
            for (queued, &place) in order.iter().enumerate() {
                if let Err(e) = self
                    .send(&records[place].1, first.wrapping_add(place))
                    .await
                {
                    // Not queued, so no report will come: this record and the rest of the
                    // round's order fail here.
                    let mut reports = lock(&context.reports);
                    reports.waiting -= order.len() - queued;
                    for &unsent in &order[queued..] {
                        reports.results[unsent] = Some(Err(e.clone()));
                    }
                    failed = Some(e);
                    break;
                }
            }
            // A report that came before the wait began left a permit, so none is missed.
            while lock(&context.reports).waiting > 0 {
                context.all_reported.notified().await;
            }
            let mut reports = lock(&context.reports);
            // After a record refused or not sent, the rest are not sent: none of them could
            // be acknowledged past it.
            let failed = failed.or_else(|| {
                reports.results[start..end].iter().find_map(|r| match r {
                    Some(Err(e)) => Some(e.clone()),
                    _ => None,
                })
            });
            if let Some(e) = failed {
                for slot in &mut reports.results[end..] {
                    *slot = Some(Err(e.clone()));
                }
                break;
            }
            start = end;
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

    fn record(
        topic: &str,
        key: Option<&str>,
        bytes: usize,
        partition: Option<i32>,
    ) -> (u64, Arc<OutboxRecord>) {
        let record = OutboxRecord {
            topic: topic.into(),
            key: key.map(|k| k.as_bytes().to_vec()),
            value: Some(vec![b'x'; bytes]),
            headers: vec![("record_id".into(), b"r".to_vec())],
            partition,
        };
        (0, Arc::new(record))
    }

    /// The rounds of a chunk, as the places where each starts.
    fn rounds(
        records: &[(u64, Arc<OutboxRecord>)],
        partitions: &HashMap<String, i32>,
    ) -> Vec<usize> {
        let mut starts = Vec::new();
        let mut start = 0;
        while start < records.len() {
            starts.push(start);
            start = round(records, start, partitions).end;
        }
        starts
    }

    /// A round holds at most three quarters of a batch of each partition's records: with
    /// 300,000-byte values, two a partition, sent partition by partition. A record larger than
    /// that goes alone.
    #[test]
    fn a_round_is_at_most_three_quarters_of_a_batch_a_partition() {
        let none = HashMap::new();
        let named = |partition| record("t", Some("k"), 300_000, Some(partition));
        // Partitions 0, 1, 0, 1, 0: the fifth record would be partition 0's third.
        let chunk: Vec<_> = [0, 1, 0, 1, 0, 1].into_iter().map(named).collect();
        assert_eq!(rounds(&chunk, &none), [0, 4]);
        // Sent partition by partition, each in its order.
        assert_eq!(round(&chunk, 0, &none).order, [0, 2, 1, 3]);
        assert_eq!(round(&chunk, 4, &none).order, [4, 5]);
        // Another topic's partition 0 has a budget of its own.
        let mut chunk = chunk;
        chunk.insert(2, record("u", Some("k"), 300_000, Some(0)));
        chunk.insert(3, record("u", Some("k"), 300_000, Some(0)));
        assert_eq!(rounds(&chunk, &none), [0, 6]);
        // Alone, a record larger than a round's share; the next starts a round.
        let chunk = [record("t", None, 800_000, Some(0)), named(0), named(1)];
        assert_eq!(rounds(&chunk, &none), [0, 1]);
        // Many small records: at most three quarters of `batch.num.messages` a round.
        let chunk: Vec<_> = (0..20_000).map(|_| record("t", None, 1, Some(0))).collect();
        assert_eq!(rounds(&chunk, &none), [0, 7_500, 15_000]);
    }

    /// A keyed record counts in its key's partition where the topic's partition count is
    /// known, and in one budget for the whole topic where it is not.
    #[test]
    fn a_keyed_record_counts_in_its_keys_partition_when_the_count_is_known() {
        // Keys the default partitioner puts in partitions 0, 1, 0 and 1 of two.
        let mut candidates = (0..).map(|i| format!("c-{i}"));
        let mut key_in = |partition| {
            candidates
                .by_ref()
                .find(|k| partition_for(k.as_bytes(), 2) == partition)
                .unwrap()
        };
        let keys = [key_in(0), key_in(1), key_in(0), key_in(1)];
        let chunk: Vec<_> = keys
            .iter()
            .map(|k| record("t", Some(k), 300_000, None))
            .collect();
        let known = HashMap::from([("t".to_owned(), 2)]);
        assert_eq!(rounds(&chunk, &known), [0]);
        assert_eq!(rounds(&chunk, &HashMap::new()), [0, 2]);
        // A record without a key counts with the topic's, as the producer places it at random.
        let mut chunk = chunk;
        chunk.insert(1, record("t", None, 300_000, None));
        chunk.insert(2, record("t", None, 300_000, None));
        chunk.insert(3, record("t", None, 300_000, None));
        assert_eq!(rounds(&chunk, &known), [0, 3]);
    }

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
