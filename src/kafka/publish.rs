//! Publishing events and raw records, and creating topics: for the demo, the tests and the
//! benchmarks, not for the job. Must not know how events are folded.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

use super::LogErrors;
use crate::event::Stream;

/// How long publishing waits for the brokers to answer before it gives up.
const METADATA_WAIT: Duration = Duration::from_secs(10);

/// The publisher's callbacks: errors logged as every client's are, and a note of whether the
/// brokers refused the client's authentication or TLS handshake, so that a publisher that
/// cannot start says that rather than that the brokers could not be reached.
struct PublishContext {
    refused: Arc<AtomicBool>,
}

impl rdkafka::ClientContext for PublishContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(
            error.rdkafka_error_code(),
            Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SSL)
        ) {
            self.refused.store(true, Ordering::Relaxed);
        }
        LogErrors("publisher").error(error, reason);
    }
}

/// Publishes generated events to their topics, keyed by customer, at most `rate` events per second
/// (unlimited when `None`), partitioned as Kafka's Java client would (murmur2), with at most
/// `batch_records` records per record batch (1 for brokers that cannot fetch from inside a batch,
/// such as Tansu 0.6.0; see the README).
pub async fn publish(
    brokers: &str,
    topics: &crate::config::Topics,
    events: &[crate::generate::Generated],
    rate: Option<u64>,
    batch_records: usize,
) -> anyhow::Result<()> {
    publish_with(brokers, topics, events, rate, batch_records, &[]).await
}

/// [`publish`], with librdkafka producer properties of the caller's on top.
pub async fn publish_with(
    brokers: &str,
    topics: &crate::config::Topics,
    events: &[crate::generate::Generated],
    rate: Option<u64>,
    batch_records: usize,
    properties: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("batch.num.messages", batch_records.max(1).to_string())
        .set("partitioner", "murmur2_random")
        .set("queue.buffering.max.messages", "1000000")
        // How long a record waits for its topic to appear (librdkafka's default is 30 s): on
        // brokers that create topics on first use, well within this.
        .set("topic.metadata.propagation.max.ms", "10000");
    for (key, value) in properties {
        config.set(*key, *value);
    }
    let refused = Arc::new(AtomicBool::new(false));
    let producer: FutureProducer<PublishContext> = config.create_with_context(PublishContext {
        refused: refused.clone(),
    })?;
    // Brokers that cannot be reached are said so at once: the records themselves would wait
    // out librdkafka's delivery timeout (five minutes) before failing.
    let probe = producer.clone();
    tokio::task::spawn_blocking(move || probe.client().fetch_metadata(None, METADATA_WAIT))
        .await?
        .map_err(|e| {
            let wait = METADATA_WAIT.as_secs();
            if refused.load(Ordering::Relaxed) {
                anyhow::anyhow!(
                    "the brokers {brokers} refused the client's authentication or TLS handshake (the kafka.sasl_* and ssl_* settings; the log above says what they answered), within {wait} s: {e}"
                )
            } else {
                anyhow::anyhow!("cannot reach the brokers {brokers} within {wait} s: {e}")
            }
        })?;
    let started = tokio::time::Instant::now();
    let mut pending = Vec::new();
    for (n, event) in events.iter().enumerate() {
        let stream = Stream::of_type(event.type_name).unwrap_or(Stream::Interactions);
        let topic = topics.input(stream);
        let payload = event.value.to_string();
        let mut record = FutureRecord::to(topic)
            .key(event.customer_id.as_bytes())
            .payload(payload.as_bytes());
        let delivery = loop {
            match producer.send_result(record) {
                Ok(delivery) => break delivery,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => anyhow::bail!("publishing to {topic} failed: {e}"),
            }
        };
        pending.push(delivery);
        if let Some(rate) = rate.filter(|r| *r > 0) {
            let due = started + Duration::from_secs_f64((n + 1) as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
        }
        if pending.len() >= 10_000 {
            confirm(join_all(pending.drain(..)).await)?;
        }
    }
    confirm(join_all(pending).await)?;
    Ok(())
}

fn confirm(
    results: Vec<
        Result<
            rdkafka::producer::future_producer::OwnedDeliveryResult,
            futures::channel::oneshot::Canceled,
        >,
    >,
) -> anyhow::Result<()> {
    for result in results {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((e, message))) => {
                let topic = rdkafka::Message::topic(&message);
                let missing =
                    e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownTopicOrPartition);
                anyhow::bail!(
                    "publishing to {topic} failed: {e}{}",
                    if missing {
                        ": the brokers have no such topic and do not create one on first use; create the input topics first, with input.partitions partitions each (deploy/docker-compose.yml shows how)"
                    } else {
                        ""
                    }
                )
            }
            Err(_) => anyhow::bail!("publishing failed: the producer was dropped"),
        }
    }
    Ok(())
}

/// One message as bytes, for [`publish_raw`].
pub struct RawMessage {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// Publishes raw bytes in order, with at most `batch_records` records per record batch (1 for
/// Tansu 0.6.0), waiting for every acknowledgement at the end; for tests and tools.
pub async fn publish_raw(
    brokers: &str,
    messages: &[RawMessage],
    batch_records: usize,
) -> anyhow::Result<()> {
    let producer: FutureProducer<LogErrors> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "20")
        .set("batch.num.messages", batch_records.max(1).to_string())
        .set("partitioner", "murmur2_random")
        .create_with_context(LogErrors("publisher"))?;
    let mut pending = Vec::with_capacity(messages.len());
    for RawMessage {
        topic,
        key,
        payload,
    } in messages
    {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        pending.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("publishing to {topic} failed: {e}"))?,
        );
    }
    confirm(join_all(pending).await)
}

/// Creates topics that do not exist yet: `(name, partitions, compacted)`. Existing ones are left
/// as they are.
pub async fn create_topics(brokers: &str, topics: &[(&str, i32, bool)]) -> anyhow::Result<()> {
    create_topics_with(brokers, topics, &[]).await
}

/// [`create_topics`], with librdkafka client properties of the caller's on top (TLS, SASL).
pub async fn create_topics_with(
    brokers: &str,
    topics: &[(&str, i32, bool)],
    properties: &[(&str, &str)],
) -> anyhow::Result<()> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (key, value) in properties {
        config.set(*key, *value);
    }
    let admin: AdminClient<LogErrors> = config.create_with_context(LogErrors("topic creation"))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, compacted)| {
            let topic = NewTopic::new(name, *partitions, TopicReplication::Fixed(1));
            if *compacted {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics(&new, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("creating topic {name} failed: {code}"),
        }
    }
    Ok(())
}
