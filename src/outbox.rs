//! The outbox drain: committed output records go to a [`Sink`] and are deleted from the store only
//! once the sink acknowledges them, so a crash can repeat an output (same `record_id`) but never
//! lose one. Must not know which sink it drains into.

use std::io::Write;

use serde_json::json;

use crate::store::{OutboxRecord, Store, StoreError};
use crate::telemetry::Telemetry;

/// Where output records go. Returns the sequence numbers it has durably delivered.
pub trait Sink {
    fn deliver(
        &mut self,
        records: &[(u64, OutboxRecord)],
    ) -> impl std::future::Future<Output = Vec<u64>> + Send;
}

/// Delivers pending records until the outbox is empty or the sink stops acknowledging.
/// Returns how many records were delivered.
pub async fn drain<S: Sink>(
    store: &Store,
    sink: &mut S,
    telemetry: &Telemetry,
    chunk: usize,
) -> Result<usize, StoreError> {
    let mut delivered = 0;
    loop {
        let pending = store.outbox(chunk)?;
        if pending.is_empty() {
            telemetry.set_outbox_backlog(0);
            return Ok(delivered);
        }
        let acked = sink.deliver(&pending).await;
        store.acknowledge(&acked)?;
        delivered += acked.len();
        telemetry.delivered(acked.len());
        if acked.len() < pending.len() {
            telemetry.set_outbox_backlog(pending.len() - acked.len());
            return Ok(delivered);
        }
    }
}

/// Writes output records as NDJSON lines (`topic`, `key`, `value`, `headers`), for replays and
/// the demo. A value that is JSON is embedded as JSON; a tombstone is `null`.
pub struct NdjsonSink<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> NdjsonSink<W> {
    pub fn new(out: W) -> Self {
        NdjsonSink { out }
    }
}

/// A record as one JSON object, for files and logs of outputs.
pub fn record_json(record: &OutboxRecord) -> serde_json::Value {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let value = record
        .value
        .as_deref()
        .map(|v| serde_json::from_slice::<serde_json::Value>(v).unwrap_or_else(|_| json!(text(v))));
    let headers: serde_json::Map<String, serde_json::Value> = record
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), json!(text(v))))
        .collect();
    json!({
        "topic": record.topic,
        "key": record.key.as_deref().map(text),
        "value": value,
        "headers": headers,
    })
}

impl<W: Write + Send> Sink for NdjsonSink<W> {
    async fn deliver(&mut self, records: &[(u64, OutboxRecord)]) -> Vec<u64> {
        let mut acked = Vec::with_capacity(records.len());
        for (seq, record) in records {
            if let Err(e) = writeln!(self.out, "{}", record_json(record)) {
                tracing::error!(error = %e, "Writing output records failed; they stay in the outbox.");
                break;
            }
            acked.push(*seq);
        }
        if let Err(e) = self.out.flush() {
            tracing::error!(error = %e, "Flushing output records failed; they stay in the outbox.");
            return Vec::new();
        }
        acked
    }
}

/// Acknowledges and forgets every record: for replays whose outputs nobody reads.
pub struct DiscardSink;

impl Sink for DiscardSink {
    async fn deliver(&mut self, records: &[(u64, OutboxRecord)]) -> Vec<u64> {
        records.iter().map(|(seq, _)| *seq).collect()
    }
}
