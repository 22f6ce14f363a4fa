//! Aggregates over several instances (issue 6): two processors, each folding the input
//! partitions it owns and writing a changelog, and the aggregator reading that changelog, emit
//! the complaint trends and segment metrics one processor emits over all the partitions:
//! the same windows and days, with the same counts.
//!
//! The changelog here is a log in memory (the real broker carries it in the `scale` test):
//! what is under test is what the records say and who counts them, not Kafka.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use customer_pulse::aggregator::{Aggregator, ChangelogFeed};
use customer_pulse::generate::{generate, TrafficSpec};
use customer_pulse::processor::{partition_for, Aggregation, InputRecord, Processor};
use customer_pulse::store::{ChangelogRecord, Epoch, Store, EPOCH_HEADER, FACTS_HEADER};
use serde_json::Value;

use crate::catalogue::NOW_MS;
use crate::support::settings_with_partitions;

const PARTITIONS: i32 = 4;
const TOPIC: &str = "changelog";

/// Changelog partitions in memory, as the outbox drain would deliver them.
#[derive(Default)]
struct Log(Mutex<HashMap<i32, Vec<ChangelogRecord>>>);

impl Log {
    /// Moves `store`'s pending changelog records into the log; leaves its other outputs.
    fn deliver(&self, store: &Store) {
        let pending = store.outbox(usize::MAX).unwrap();
        let mut log = self.0.lock().unwrap();
        let mut delivered = Vec::new();
        for (seq, record) in pending.into_iter().filter(|(_, r)| r.topic == TOPIC) {
            let header = |wanted: &str| {
                let found = record.headers.iter().find(|(name, _)| name == wanted);
                found.map(|(_, bytes)| bytes.clone())
            };
            log.entry(record.partition.unwrap())
                .or_default()
                .push(ChangelogRecord {
                    key: record.key.clone().unwrap(),
                    value: record.value.clone(),
                    epoch: header(EPOCH_HEADER).and_then(|b| Epoch::from_header(&b)),
                    facts: header(FACTS_HEADER),
                });
            delivered.push(seq);
        }
        store.acknowledge(&delivered).unwrap();
    }
}

impl ChangelogFeed for Log {
    fn next(
        &mut self,
        from: &BTreeMap<i32, i64>,
        max: usize,
    ) -> anyhow::Result<Vec<(i32, i64, ChangelogRecord)>> {
        let log = self.0.lock().unwrap();
        let mut out = Vec::new();
        for (partition, records) in log.iter() {
            let start = from.get(partition).copied().unwrap_or(0);
            for (offset, record) in records.iter().enumerate().skip(start as usize) {
                if out.len() == max {
                    return Ok(out);
                }
                out.push((*partition, offset as i64, record.clone()));
            }
        }
        Ok(out)
    }
}

/// Synthetic traffic over about six weeks of event time: orders, renewals, registrations,
/// complaints opened and resolved, silences that time out.
fn traffic() -> Vec<InputRecord> {
    let spec = TrafficSpec {
        customers: 1_500,
        events: 20_000,
        seed: 6,
        // Six weeks ending before the processors' clock: none of it is in the future.
        start_ms: NOW_MS - 43 * 86_400_000,
        step_ms: 180_000,
    };
    let mut next_offset = [0i64; PARTITIONS as usize];
    generate(&spec)
        .into_iter()
        .map(|g| {
            let partition = partition_for(g.customer_id.as_bytes(), PARTITIONS);
            let offset = &mut next_offset[partition as usize];
            *offset += 1;
            InputRecord {
                source: "events".into(),
                source_partition: partition,
                offset: *offset,
                stream: None,
                state_partition: Some(partition),
                key: Some(g.customer_id.into_bytes()),
                payload: serde_json::to_vec(&g.value).unwrap(),
                append_time_ms: None,
            }
        })
        .collect()
}

/// The complaint-trend and segment-metric records in `store`'s outbox, by record id.
pub fn aggregates(store: &Store) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (_, record) in store.outbox(usize::MAX).unwrap() {
        let wanted = ["customer.complaint-trends", "customer.segment-metrics"];
        if let (true, Some(value)) = (wanted.contains(&record.topic.as_str()), record.value) {
            let value: Value = serde_json::from_slice(&value).unwrap();
            let id = value["record_id"].as_str().unwrap().to_owned();
            out.insert(id, value);
        }
    }
    out
}

/// One processor over every partition, in batches of 500.
fn one_instance(records: &[InputRecord]) -> BTreeMap<String, Value> {
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), settings_with_partitions(500, PARTITIONS));
    for batch in records.chunks(500) {
        processor.process(batch, NOW_MS).unwrap();
    }
    aggregates(&store)
}

/// Two processors, one owning partitions 0 and 1, the other 2 and 3, each with a changelog, in
/// alternating batches; the aggregator reads their changelog now and then, and to the end.
fn two_instances_and_the_aggregator(records: &[InputRecord]) -> BTreeMap<String, Value> {
    let mut log = Log::default();
    let mut settings = settings_with_partitions(500, PARTITIONS);
    settings.aggregation = Aggregation::Aggregator;
    let instance = |owned: [i32; 2]| {
        let store = Store::in_memory().with_changelog(TOPIC).unwrap();
        let mut processor = Processor::new(store, settings.clone());
        let assigned: Vec<(String, i32)> = owned.iter().map(|p| ("events".into(), *p)).collect();
        processor.assign(&assigned, NOW_MS);
        (owned, processor)
    };
    let mut instances = [instance([0, 1]), instance([2, 3])];
    let mut aggregator = Aggregator::new(
        Processor::new(
            Store::in_memory(),
            settings_with_partitions(500, PARTITIONS),
        ),
        TOPIC,
        PARTITIONS,
    );
    for (round, batch) in records.chunks(1_000).enumerate() {
        for (owned, processor) in &mut instances {
            let mine: Vec<InputRecord> = batch
                .iter()
                .filter(|r| owned.contains(&r.source_partition))
                .cloned()
                .collect();
            processor.process(&mine, NOW_MS).unwrap();
            log.deliver(processor.store());
        }
        if round % 3 == 0 {
            aggregator.step(&mut log).unwrap();
        }
    }
    while aggregator.step(&mut log).unwrap().1 {}
    aggregator.step(&mut log).unwrap();
    for (_, processor) in &instances {
        assert!(
            aggregates(processor.store()).is_empty(),
            "an instance leaves the aggregates to the aggregator"
        );
    }
    aggregates(aggregator.processor().store())
}

/// The fields a window's or day's record reads from the population or the complaint backlog
/// when it closes: a moment that depends on how far each partition had got, not on the
/// window's own events.
const READ_AT_CLOSE: [&str; 7] = [
    "active_customers",
    "opened_per_1000_active",
    "open_backlog",
    "at_risk_customers",
    "avg_ltv_minor",
    "customers_by_lifecycle",
    // A referral counts in the referrer's segment, which only the referrer's owner knows.
    "referrals",
];

/// A record without the fields it reads when it closes ([`READ_AT_CLOSE`]).
pub fn strip(record: &Value) -> Value {
    let mut record = record.clone();
    if let Some(fields) = record.as_object_mut() {
        for field in READ_AT_CLOSE {
            fields.remove(field);
        }
    }
    record
}

/// A number (at `path` in each segment-day record) summed per day over the segments: each
/// referral or renewal counted once, whichever segment it fell in.
pub fn per_day(records: &BTreeMap<String, Value>, path: &[&str]) -> BTreeMap<String, i64> {
    let mut totals = BTreeMap::new();
    for r in records.values().filter(|r| r.get("segment").is_some()) {
        let day = r["window_start"].as_str().unwrap().to_owned();
        let value = path.iter().fold(r, |v, field| &v[*field]);
        *totals.entry(day).or_default() += value.as_i64().unwrap();
    }
    totals
}

#[test]
fn two_instances_and_the_aggregator_emit_the_windows_and_days_of_one_instance() {
    let records = traffic();
    let want = one_instance(&records);
    let got = two_instances_and_the_aggregator(&records);
    let trends = want.keys().filter(|id| id.starts_with("trend-")).count();
    let days = want.keys().filter(|id| id.starts_with("segment-")).count();
    assert!(trends > 2_000 && days > 60, "{trends} windows, {days} days");
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "the same windows and days"
    );
    for (id, value) in &want {
        assert_eq!(strip(&got[id]), strip(value), "{id}");
    }
    let counted = per_day(&want, &["referrals"]);
    assert!(counted.values().sum::<i64>() > 0, "the traffic refers");
    assert_eq!(per_day(&got, &["referrals"]), counted);
}
