//! Kafka I/O, the only module that imports rdkafka; every message is copied into an owned
//! [`crate::processor::InputRecord`] at this boundary. `input` is the consumer (a group member,
//! or reading fixed partitions outside the group) that feeds input records in; `changelog`
//! reads and claims changelog partitions outside the group and checks that owned ones stay
//! owned; `sink` is the idempotent producer that drains the outbox; `polled` serves a
//! producer's delivery reports on a thread of its own; `publish` writes events and topics for
//! the demo, the tests and the benchmarks; `gaps` follows each input partition's offsets for
//! the records the brokers did not deliver. Must not know how events are decoded or folded.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::message::Headers;
use rdkafka::{ClientContext, Offset};

use crate::config::KafkaSecurity;
use crate::telemetry::{repeated, Telemetry};

mod changelog;
mod gaps;
mod input;
mod polled;
mod publish;
mod sink;

pub use changelog::{ChangelogProgress, ChangelogReader, ChangelogTail, ClaimCheck};
pub use input::{Input, Owners, PulseContext};
pub use publish::{
    create_topics, create_topics_with, publish, publish_raw, publish_with, RawMessage,
};
pub use sink::{KafkaSink, SinkContext};

/// A librdkafka client configuration for `brokers`, with the security settings (TLS, SASL)
/// passed through.
pub fn client_config(brokers: &str, security: &KafkaSecurity) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    // Connect to every broker at once, as each client soon does anyway. With sparse
    // connections librdkafka connects on demand, and a second demand within
    // reconnect.backoff.ms / 2 (50 ms) of the first waits that long: against Tansu the input
    // consumer's first metadata request took 53 ms in 5 starts of 8 (2-4 ms in 8 of 8 without),
    // and with the changelog the first assignment came 65-68 ms after the start while its
    // reader and claims producer connected sparsely (26-29 ms without; README, *Through the
    // broker*).
    config.set("enable.sparse.connections", "false");
    for (key, value) in security.client_properties() {
        config.set(key, value);
    }
    config
}

/// A partition's first record, named by its absolute offset rather than `Offset::Beginning`: a
/// logical offset is looked up at the partition's leader, and one assigned before the client
/// knows the leader waits for librdkafka's offset-query timer, 500 ms, before it is looked up
/// (measured against Tansu: a fresh reader's first record after 0.51 s, against 0.014 s from
/// offset 0). An absolute offset is fetched as soon as the leader is known. Where retention
/// has removed offset 0, the fetch is out of range and `auto.offset.reset = earliest` starts at
/// the first record kept: the same place.
const FIRST_RECORD: Offset = Offset::Offset(0);

/// The partitions this member owns right now, shared between the rebalance callback and the loop.
pub type Assignment = Arc<Mutex<HashSet<(String, i32)>>>;

/// Makes an idempotent producer ready to send: connected to the broker that leads `topic`, and
/// holding a producer id. librdkafka asks for the id when the producer starts and whenever a
/// metadata answer comes in, but only of a broker already connected, and otherwise tries again
/// 500 ms later. At start the first answer comes over the bootstrap connection, before the
/// broker it names is connected: the first record then waits out the 500 ms (measured against
/// Tansu: 0.50 s for the first record, against 0.05 s after a second fetch). The second fetch
/// goes to that broker once it is up, and its answer has the id asked for at once. Best effort:
/// a broker that is not up yet is waited for by the first record itself.
fn ready_idempotent<C: ClientContext>(client: &rdkafka::client::Client<C>, topic: &str) {
    for _ in 0..2 {
        if let Err(e) = client.fetch_metadata(Some(topic), Duration::from_secs(5)) {
            tracing::debug!(topic, error = %e, "Metadata not fetched ahead of the first record.");
            return;
        }
    }
}

/// A client-level error librdkafka reported (it reconnects and retries by itself): counted
/// each time, and logged as [`repeated`] lets it, for the consumer and the producer alike.
fn client_error(telemetry: &Telemetry, client: &'static str, error: &KafkaError, reason: &str) {
    telemetry.kafka_error(client);
    if let Some(held_back) = repeated(&format!("{client} {error}")) {
        tracing::warn!(client, error = %error, reason, held_back, "Kafka client error; librdkafka reconnects and retries.");
    }
}

/// The callbacks of a client whose errors are logged (as [`repeated`] lets them), not counted:
/// one that works beside the job's own consumer and producer, which count the same errors (the
/// owner lookup, the changelog's reader and claims producer, whose contexts log through it), or
/// a tool's. The name says which client it is.
pub(crate) struct LogErrors(pub &'static str);

impl ClientContext for LogErrors {
    fn error(&self, error: KafkaError, reason: &str) {
        if let Some(held_back) = repeated(&format!("{} {error}", self.0)) {
            tracing::warn!(client = self.0, error = %error, reason, held_back, "Kafka client error; librdkafka reconnects and retries.");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for LogErrors {}

/// Locks `mutex`, whose data stays usable if a holder panicked.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A header's value as text, for tests and tools reading dead letters.
pub fn header_text<H: Headers>(headers: &H, name: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}
