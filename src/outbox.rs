//! The outbox drain: committed output records go to a [`Sink`] and are deleted from the store only
//! once the sink acknowledges them, so a crash can repeat an output (same `record_id`) but never
//! lose one. Must not know which sink it drains into.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::store::{OutboxRecord, Store, StoreError};
use crate::telemetry::Telemetry;

/// Where output records go. Returns the sequence numbers it has durably delivered.
pub trait Sink {
    /// `records` are shared with the store's copy in memory: a sink reads them, or copies
    /// what it must keep.
    fn deliver(
        &mut self,
        records: &[(u64, Arc<OutboxRecord>)],
    ) -> impl std::future::Future<Output = Vec<u64>> + Send;
}

/// Which outbox a drain empties: the job's, or (with the changelog) the aggregator's. It names
/// the outbox's backlog series (`outbox` label, [`Outbox::label`]), a closed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbox {
    Job,
    Aggregator,
}

impl Outbox {
    /// Its backlog series' `outbox` label.
    pub fn label(self) -> &'static str {
        match self {
            Outbox::Job => "job",
            Outbox::Aggregator => "aggregator",
        }
    }
}

/// Delivers pending records until the outbox is empty or the sink stops acknowledging.
/// Returns how many records were delivered. Before and after each chunk it sets the backlog of
/// `outbox` (`Telemetry::set_outbox_backlog`): the records numbered from the oldest one waiting
/// to the newest one committed (`Store::outbox_next`). Numbers a failed commit took count with
/// them until a read passes them; so do records a restore removed.
pub async fn drain<S: Sink>(
    store: &Store,
    sink: &mut S,
    telemetry: &Telemetry,
    outbox: Outbox,
    chunk: usize,
) -> Result<usize, StoreError> {
    let backlog_from = |seq: u64| {
        let waiting = store.outbox_next().saturating_sub(seq);
        telemetry.set_outbox_backlog(outbox, waiting);
    };
    let mut delivered = 0;
    loop {
        let pending = store.outbox_shared(chunk)?;
        let (Some(&(oldest, _)), Some(&(newest, _))) = (pending.first(), pending.last()) else {
            telemetry.set_outbox_backlog(outbox, 0);
            return Ok(delivered);
        };
        backlog_from(oldest);
        let acked = sink.deliver(&pending).await;
        store.acknowledge(&acked)?;
        delivered += acked.len();
        telemetry.delivered(acked.len());
        if let Some(&(refused, _)) = pending.get(acked.len()) {
            backlog_from(refused);
            return Ok(delivered);
        }
        backlog_from(newest + 1);
    }
}

/// Writes output records as NDJSON lines (`topic`, `key`, `value`, `headers`), for replays and
/// the demo. A value that is JSON is embedded as JSON, on the record's one line; a tombstone is
/// `null`.
pub struct NdjsonSink<W: Write + Send> {
    out: W,
}

impl<W: Write + Send> NdjsonSink<W> {
    pub fn new(out: W) -> Self {
        NdjsonSink { out }
    }
}

/// A record as one NDJSON line's object, its fields in this order.
#[derive(serde::Serialize)]
struct Line<'a> {
    headers: BTreeMap<&'a str, Cow<'a, str>>,
    key: Option<Cow<'a, str>>,
    topic: &'a str,
    value: Option<LineValue<'a>>,
}

/// A record's value: its JSON as it is, or else its bytes as text.
#[derive(serde::Serialize)]
#[serde(untagged)]
enum LineValue<'a> {
    Json(&'a RawValue),
    /// JSON over several lines (a dead-lettered event as it came), written again on one.
    Reformatted(serde_json::Value),
    Text(Cow<'a, str>),
}

/// Writes `record` as one NDJSON line. The value's JSON is copied as it is, not parsed into a
/// tree and written again (which was a third of the instructions of a replay writing its
/// outputs).
fn write_line(out: &mut impl Write, record: &OutboxRecord) -> std::io::Result<()> {
    let text = String::from_utf8_lossy;
    let value = record.value.as_deref().map(|v| {
        match serde_json::from_slice::<&RawValue>(v) {
            // Outside its strings, where they would be escaped, JSON may hold line breaks.
            Ok(raw) if !v.contains(&b'\n') && !v.contains(&b'\r') => LineValue::Json(raw),
            Ok(_) => serde_json::from_slice(v)
                .map_or_else(|_| LineValue::Text(text(v)), LineValue::Reformatted),
            Err(_) => LineValue::Text(text(v)),
        }
    });
    let line = Line {
        headers: record
            .headers
            .iter()
            .map(|(k, v)| (k.as_ref(), text(v)))
            .collect(),
        key: record.key.as_deref().map(text),
        topic: &record.topic,
        value,
    };
    serde_json::to_writer(&mut *out, &line)?;
    out.write_all(b"\n")
}

impl<W: Write + Send> Sink for NdjsonSink<W> {
    async fn deliver(&mut self, records: &[(u64, Arc<OutboxRecord>)]) -> Vec<u64> {
        let mut acked = Vec::with_capacity(records.len());
        for (seq, record) in records {
            if let Err(e) = write_line(&mut self.out, record) {
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
    async fn deliver(&mut self, records: &[(u64, Arc<OutboxRecord>)]) -> Vec<u64> {
        records.iter().map(|(seq, _)| *seq).collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;

    fn line(record: &OutboxRecord) -> String {
        let mut out = Vec::new();
        write_line(&mut out, record).unwrap();
        String::from_utf8(out).unwrap()
    }

    /// Takes the first `takes` records of each chunk, then none until `takes` is raised.
    struct Partly {
        takes: usize,
    }

    impl Sink for Partly {
        async fn deliver(&mut self, records: &[(u64, Arc<OutboxRecord>)]) -> Vec<u64> {
            records
                .iter()
                .take(self.takes)
                .map(|(seq, _)| *seq)
                .collect()
        }
    }

    fn commit(store: &Store, records: usize) {
        let record = |i: usize| OutboxRecord {
            topic: "out".into(),
            key: Some(i.to_string().into_bytes()),
            value: Some(b"{}".to_vec()),
            headers: Vec::new(),
            partition: None,
        };
        store
            .commit(crate::store::Commit {
                outbox: (0..records).map(|i| record(i).into()).collect(),
                ..Default::default()
            })
            .unwrap();
    }

    fn backlog(telemetry: &Telemetry, outbox: &str) -> String {
        let line = format!("customer_pulse_outbox_backlog_records{{outbox=\"{outbox}\"}} ");
        let text = telemetry.render();
        let found = text.lines().find_map(|l| l.strip_prefix(line.as_str()));
        found.unwrap_or("absent").to_owned()
    }

    /// The backlog is every record waiting, not just the chunk a drain read: with a sink that
    /// takes nothing, 250 records committed in chunks of 100 show 250, then 330 once 80 more
    /// come; a sink that takes 30 of each chunk leaves 300; one that takes all leaves none.
    /// Each outbox has its own (the job's and the aggregator's share the telemetry). Until
    /// 2026-12-07 it showed at most a chunk, and only after a failed delivery: with a sink that
    /// took nothing it stopped at 10,000, where `OutboxBacklogGrowing`, which asks for a rising
    /// backlog, no longer held.
    #[tokio::test]
    async fn the_backlog_counts_every_record_waiting_in_its_outbox() {
        let telemetry = Telemetry::new();
        let (store, other) = (Store::in_memory(), Store::in_memory());
        commit(&store, 250);
        commit(&other, 7);
        let mut sink = Partly { takes: 0 };
        assert_eq!(
            drain(&store, &mut sink, &telemetry, Outbox::Job, 100)
                .await
                .unwrap(),
            0
        );
        assert_eq!(backlog(&telemetry, "job"), "250");
        drain(&other, &mut sink, &telemetry, Outbox::Aggregator, 100)
            .await
            .unwrap();
        assert_eq!(backlog(&telemetry, "aggregator"), "7");
        assert_eq!(backlog(&telemetry, "job"), "250");
        commit(&store, 80);
        drain(&store, &mut sink, &telemetry, Outbox::Job, 100)
            .await
            .unwrap();
        assert_eq!(backlog(&telemetry, "job"), "330");
        // 30 of the first chunk: the rest of the chunk is refused, the drain stops there.
        sink.takes = 30;
        assert_eq!(
            drain(&store, &mut sink, &telemetry, Outbox::Job, 100)
                .await
                .unwrap(),
            30
        );
        assert_eq!(backlog(&telemetry, "job"), "300");
        sink.takes = usize::MAX;
        assert_eq!(
            drain(&store, &mut sink, &telemetry, Outbox::Job, 100)
                .await
                .unwrap(),
            300
        );
        assert_eq!(backlog(&telemetry, "job"), "0");
        assert!(store.outbox(1).unwrap().is_empty());
    }

    #[test]
    fn a_record_is_one_line_holding_its_value_s_json_text_otherwise_and_null_for_a_tombstone() {
        let mut record = OutboxRecord {
            topic: "customer.churn-risk".into(),
            key: Some(b"c-1".to_vec()),
            value: Some(br#"{"b":1,"a":[2.5,"x"]}"#.to_vec()),
            headers: vec![
                ("record_id".into(), b"r-1".to_vec()),
                ("content_type".into(), b"json".to_vec()),
            ],
            partition: None,
        };
        assert_eq!(
            line(&record),
            concat!(
                r#"{"headers":{"content_type":"json","record_id":"r-1"},"key":"c-1","#,
                r#""topic":"customer.churn-risk","value":{"b":1,"a":[2.5,"x"]}}"#,
                "\n"
            )
        );
        record.value = Some(b"not \"json\"".to_vec());
        record.key = None;
        record.headers.clear();
        assert_eq!(
            line(&record),
            concat!(
                r#"{"headers":{},"key":null,"topic":"customer.churn-risk","#,
                r#""value":"not \"json\""}"#,
                "\n"
            )
        );
        // JSON over several lines, as a dead-lettered event may be: still one line.
        record.value = Some(b"{\r\n  \"b\": 1,\n  \"a\": [\"x\\ny\"]\n}".to_vec());
        let written = line(&record);
        assert_eq!(written.matches('\n').count(), 1, "{written}");
        let parsed: serde_json::Value = serde_json::from_str(&written).unwrap();
        assert_eq!(parsed["value"], serde_json::json!({"a": ["x\ny"], "b": 1}));
        record.value = None;
        assert_eq!(
            line(&record),
            "{\"headers\":{},\"key\":null,\"topic\":\"customer.churn-risk\",\"value\":null}\n"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever a record holds, its line is one line of JSON whose fields give the record
        /// back: the value as JSON where it is JSON, else as text.
        #[test]
        fn any_record_is_one_line_of_json_that_gives_it_back(
            topic in ".{0,20}",
            key in proptest::option::of(proptest::collection::vec(proptest::num::u8::ANY, 0..20)),
            value in proptest::option::of(proptest::prop_oneof![
                proptest::collection::vec(proptest::num::u8::ANY, 0..60),
                // JSON, compact or spread over lines with any whitespace between its tokens.
                (".{0,12}", proptest::num::i64::ANY, "[ \t\r\n]{0,3}").prop_map(|(text, n, gap)| {
                    let text = serde_json::to_string(&text).unwrap();
                    format!("{gap}{{{gap}\"t\":{gap}{text},{gap}\"n\":{n}{gap}}}{gap}").into_bytes()
                }),
            ]),
            headers in proptest::collection::vec(("[a-z_]{1,8}", ".{0,10}"), 0..4),
        ) {
            let record = OutboxRecord {
                topic,
                key,
                value,
                headers: headers.into_iter().map(|(k, v)| (k.into(), v.into_bytes())).collect(),
                partition: None,
            };
            let written = line(&record);
            proptest::prop_assert!(written.ends_with('\n'));
            proptest::prop_assert_eq!(written.matches('\n').count(), 1);
            let parsed: serde_json::Value = serde_json::from_str(&written).unwrap();
            proptest::prop_assert_eq!(&parsed["topic"], &serde_json::json!(record.topic));
            let text = |b: &[u8]| serde_json::json!(String::from_utf8_lossy(b));
            let key = record.key.as_deref().map_or(serde_json::Value::Null, text);
            proptest::prop_assert_eq!(&parsed["key"], &key);
            let value = match record.value.as_deref() {
                None => serde_json::Value::Null,
                Some(v) => serde_json::from_slice(v).unwrap_or_else(|_| text(v)),
            };
            proptest::prop_assert_eq!(&parsed["value"], &value);
            for (name, _) in &record.headers {
                // A later header of the same name wins, as in a map.
                let (_, last) = record.headers.iter().rev().find(|(n, _)| n == name).unwrap();
                proptest::prop_assert_eq!(&parsed["headers"][name.as_ref()], &text(last));
            }
        }
    }
}
