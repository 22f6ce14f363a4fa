//! Aggregates over several instances (issue 6): two processors, each folding the input
//! partitions it owns and writing a changelog, and the aggregator reading that changelog, emit
//! the complaint trends and segment metrics one processor emits over all the partitions:
//! the same windows and days, with the same counts.
//!
//! The changelog here is a log in memory (the real broker carries it in the `scale` test):
//! what is under test is what the records say and who counts them, not Kafka.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use customer_pulse::aggregator::{keep_seed, take_over, Aggregator, ChangelogFeed, TakeOver};
use customer_pulse::event::{format_millis, parse_millis};
use customer_pulse::generate::{generate, TrafficSpec};
use customer_pulse::processor::{
    partition_for, Aggregation, InputRecord, Processor, ProcessorSettings,
};
use customer_pulse::restore::{restore, ChangelogSource, Restored};
use customer_pulse::rfm::{point, Cell, Rfm};
use customer_pulse::store::{
    AggregatorSnapshot, ChangelogRecord, Claim, Epoch, MemoryBackend, Store, StoreError,
    AGGREGATOR_KEY, CLAIM_KEY,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::catalogue::NOW_MS;
use crate::support::{aggregate_gauges, settings_with_partitions, EVENT_TYPES};

const PARTITIONS: i32 = 4;
const TOPIC: &str = "changelog";

/// Changelog partitions in memory, as the outbox drain would deliver them; `None` where
/// compaction removed a record (offsets stay).
#[derive(Default)]
struct Log(Mutex<HashMap<i32, Vec<Option<ChangelogRecord>>>>);

impl Log {
    /// Moves `store`'s pending changelog records into the log; leaves its other outputs.
    fn deliver(&self, store: &Store) {
        let delivered = self.send(store);
        store.acknowledge(&delivered).unwrap();
    }

    /// Copies `store`'s pending changelog records into the log and returns their numbers,
    /// unacknowledged: as a drain killed before it acknowledged what the broker took, whose
    /// instance sends them again once restarted.
    fn send(&self, store: &Store) -> Vec<u64> {
        let pending = store.outbox(usize::MAX).unwrap();
        let mut log = self.0.lock().unwrap();
        let mut delivered = Vec::new();
        for (seq, record) in pending.into_iter().filter(|(_, r)| r.topic == TOPIC) {
            log.entry(record.partition.unwrap())
                .or_default()
                .push(Some(ChangelogRecord::delivered(&record)));
            delivered.push(seq);
        }
        delivered
    }

    /// Compacts each partition below `cut` (its next offset there) as Kafka does: a record goes
    /// when a later one has its key.
    fn compact(&self, cut: &BTreeMap<i32, i64>) {
        let mut log = self.0.lock().unwrap();
        for (partition, records) in log.iter_mut() {
            let below = cut.get(partition).copied().unwrap_or(0) as usize;
            let mut later_keys = std::collections::HashSet::new();
            for (offset, slot) in records.iter_mut().enumerate().rev() {
                let Some(record) = slot else { continue };
                let seen_later = !later_keys.insert(record.key.clone());
                if offset < below && seen_later {
                    *slot = None;
                }
            }
        }
    }

    /// The latest aggregator snapshot in partition 0.
    fn latest_snapshot(&self) -> Option<AggregatorSnapshot> {
        let log = self.0.lock().unwrap();
        let mut records = log.get(&0)?.iter().flatten();
        let last = records.rfind(|r| r.key == AGGREGATOR_KEY)?;
        Some(AggregatorSnapshot::from_bytes(last.value.as_ref()?).unwrap())
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
            let start = from.get(partition).copied().unwrap_or(0) as usize;
            for (offset, record) in records.iter().enumerate().skip(start) {
                if out.len() == max {
                    return Ok(out);
                }
                if let Some(record) = record {
                    out.push((*partition, offset as i64, record.clone()));
                }
            }
        }
        Ok(out)
    }

    fn ends(&mut self) -> anyhow::Result<BTreeMap<i32, i64>> {
        let log = self.0.lock().unwrap();
        Ok(log
            .iter()
            .filter(|(_, records)| !records.is_empty())
            .map(|(partition, records)| (*partition, records.len() as i64))
            .collect())
    }
}

impl ChangelogSource for Log {
    fn read(
        &self,
        partition: i32,
        from: Option<i64>,
        to: i64,
        each: &mut dyn FnMut(i64, ChangelogRecord) -> Result<(), StoreError>,
    ) -> anyhow::Result<Option<i64>> {
        let records = self.0.lock().unwrap().get(&partition).cloned();
        let mut end = None;
        let start = from.unwrap_or(0).max(0) as usize;
        for (offset, record) in records
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .skip(start)
        {
            if offset as i64 >= to {
                break;
            }
            if let Some(record) = record {
                each(offset as i64, record)?;
                end = Some(offset as i64 + 1);
            }
        }
        Ok(end)
    }

    fn claim(&self, partition: i32, claim: &Claim) -> anyhow::Result<i64> {
        let mut log = self.0.lock().unwrap();
        let records = log.entry(partition).or_default();
        records.push(Some(ChangelogRecord {
            key: CLAIM_KEY.to_vec(),
            value: Some(claim.to_bytes()),
            epoch: None,
            facts: None,
            sequence: None,
        }));
        Ok(records.len() as i64 - 1)
    }

    fn end(&self, partition: i32) -> anyhow::Result<i64> {
        Ok(self.0.lock().unwrap().get(&partition).map_or(0, Vec::len) as i64)
    }

    fn release(&self, _: &[(i32, Epoch)]) -> anyhow::Result<()> {
        anyhow::bail!("nothing releases here")
    }
}

/// Synthetic traffic over about six weeks of event time: orders, renewals, registrations,
/// complaints opened and resolved, silences that time out.
fn traffic() -> Vec<InputRecord> {
    let events = generate(&SPEC).into_iter();
    records_of(events.map(|g| (g.customer_id, g.value)))
}

/// The shape of [`traffic`].
const SPEC: TrafficSpec = TrafficSpec {
    customers: 1_500,
    events: 20_000,
    seed: 6,
    // Six weeks ending before the processors' clock: none of it is in the future.
    start_ms: NOW_MS - 43 * 86_400_000,
    step_ms: 180_000,
};

/// [`traffic`] with one customer in ten who opens a complaint erased half an hour after it:
/// the complaint, and any other still open, leaves the backlog unresolved in the erasure's
/// window, a fact the aggregator reads from the changelog.
fn traffic_with_erasures() -> Vec<InputRecord> {
    let mut events = Vec::new();
    for (i, g) in generate(&SPEC).into_iter().enumerate() {
        let erased = (g.type_name == "complaint.opened" && i % 10 == 0).then(|| {
            let opened_at = parse_millis(g.value["occurred_at"].as_str().unwrap()).unwrap();
            let at = format_millis(opened_at + 1_800_000);
            let value = serde_json::json!({
                "event_id": format!("erasure-{i}"),
                "customer_id": g.customer_id,
                "type": "customer.erased",
                "occurred_at": at,
            });
            (g.customer_id.clone(), value)
        });
        events.push((g.customer_id, g.value));
        events.extend(erased);
    }
    records_of(events)
}

/// Each event as its customer's partition's next record.
fn records_of(events: impl IntoIterator<Item = (String, Value)>) -> Vec<InputRecord> {
    let mut next_offset = [0i64; PARTITIONS as usize];
    events
        .into_iter()
        .map(|(customer_id, value)| {
            let partition = partition_for(customer_id.as_bytes(), PARTITIONS);
            let offset = &mut next_offset[partition as usize];
            *offset += 1;
            InputRecord {
                source: "events".into(),
                source_partition: partition,
                offset: *offset,
                stream: None,
                state_partition: Some(partition),
                key: Some(customer_id.into_bytes()),
                payload: serde_json::to_vec(&value).unwrap(),
                cut_from: None,
                append_time_ms: None,
            }
        })
        .collect()
}

/// The record id of each complaint-trend and segment-metric record in `store`'s outbox, one
/// for each time it was emitted.
fn emissions(store: &Store) -> Vec<String> {
    let records = store.outbox(usize::MAX).unwrap().into_iter();
    let values = records.filter_map(|(_, r)| r.value.filter(|_| r.topic != TOPIC));
    values
        .map(|v| {
            serde_json::from_slice::<Value>(&v).unwrap()["record_id"]
                .as_str()
                .unwrap()
                .to_owned()
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

/// What befalls the instances and the aggregator in [`two_instances_and_the_aggregator`].
#[derive(Debug, Clone, Copy, PartialEq)]
enum Disruption {
    /// One aggregator throughout.
    None,
    /// Every seventh round, the first instance's drain is killed after the changelog took its
    /// records and before it acknowledged them: restarted, it sends them again.
    Redelivery,
    /// Halfway, the changelog is compacted below the latest snapshot and an aggregator with
    /// nothing local takes over: from that snapshot, or (`false`) from the compacted start.
    Compacted { from_snapshot: bool },
    /// The aggregator steps every round but writes its snapshot only at its first step (its
    /// processor clock stands still); halfway, an aggregator with nothing local takes over from
    /// the latest snapshot, after the first wrote one for it (`Aggregator::hand_over`) or
    /// (`false`) not.
    HandOver { written: bool },
    /// As `HandOver`, written: then at three quarters the first aggregator takes partition 0
    /// back, going on from the second's snapshot, written as it gave partition 0 up
    /// (`Aggregator::catch_up`), or (`false`) from its own store.
    TakenBack { caught_up: bool },
}

/// A processor with a changelog, owning input partitions `owned`, its aggregates elsewhere.
fn instance(owned: &[i32]) -> Processor {
    instance_with(owned, settings_with_partitions(500, PARTITIONS))
}

/// [`instance`] with `settings` but for where its aggregates are.
fn instance_with(owned: &[i32], mut settings: ProcessorSettings) -> Processor {
    settings.aggregation = Aggregation::Elsewhere;
    let store = Store::in_memory().with_changelog(TOPIC).unwrap();
    let mut processor = Processor::new(store, settings);
    let assigned: Vec<(String, i32)> = owned.iter().map(|p| ("events".into(), *p)).collect();
    processor.assign(&assigned, NOW_MS);
    processor
}

fn new_aggregator() -> Aggregator {
    let settings = settings_with_partitions(500, PARTITIONS);
    Aggregator::new(
        Processor::new(Store::in_memory(), settings),
        TOPIC,
        PARTITIONS,
    )
}

/// Two processors, one owning partitions 0 and 1, the other 2 and 3, each with a changelog, in
/// alternating batches; the aggregator reads their changelog now and then, and to the end. The
/// records emitted, the last per record id (as a reader of the topics sees them), how many
/// times a record id was emitted again, and the last aggregator's RFM histograms.
fn two_instances_and_the_aggregator(
    records: &[InputRecord],
    disruption: Disruption,
) -> (BTreeMap<String, Value>, usize, Vec<Cell>) {
    let mut log = Log::default();
    let mut instances = [([0, 1], instance(&[0, 1])), ([2, 3], instance(&[2, 3]))];
    let mut aggregator = new_aggregator();
    let mut emitted = BTreeMap::new();
    // Every emission of the aggregators retired (each of them kept), and the first one while
    // another runs in its place.
    let mut retired: Vec<Aggregator> = Vec::new();
    let mut parked: Option<Aggregator> = None;
    let rounds = records.len().div_ceil(1_000);
    for (round, batch) in records.chunks(1_000).enumerate() {
        for (i, (owned, processor)) in instances.iter_mut().enumerate() {
            let mine: Vec<InputRecord> = batch
                .iter()
                .filter(|r| owned.contains(&r.source_partition))
                .cloned()
                .collect();
            processor.process(&mine, NOW_MS).unwrap();
            if disruption == Disruption::Redelivery && i == 0 && round % 7 == 0 {
                // The next round's delivery sends them again, ahead of that round's records.
                log.send(processor.store());
            } else {
                log.deliver(processor.store());
            }
        }
        // Processor time: five seconds a round, a snapshot every other step or so.
        let (now, steps) = match disruption {
            Disruption::HandOver { .. } | Disruption::TakenBack { .. } => (0, true),
            _ => (round as i64 * 5_000, round % 3 == 0),
        };
        if steps {
            aggregator.step(&mut log, now).unwrap();
            log.deliver(aggregator.processor().store());
        }
        if round == rounds / 2 {
            if let Disruption::Compacted { from_snapshot } = disruption {
                let snapshot = log.latest_snapshot().expect("a snapshot was written");
                assert_eq!(snapshot.window_ms, Some(3_600_000), "its windows' length");
                let cut = snapshot.partitions.iter().map(|p| (p.0, p.1)).collect();
                log.compact(&cut);
                emitted.extend(aggregates(aggregator.processor().store()));
                aggregator = new_aggregator();
                if from_snapshot {
                    assert!(
                        aggregator.bootstrap(&log).unwrap(),
                        "started from the snapshot"
                    );
                }
            }
            let written = match disruption {
                Disruption::HandOver { written } => Some(written),
                Disruption::TakenBack { .. } => Some(true),
                _ => None,
            };
            if let Some(written) = written {
                if written {
                    assert!(
                        aggregator.hand_over().unwrap(),
                        "it read since its snapshot"
                    );
                    assert!(
                        !aggregator.hand_over().unwrap(),
                        "and nothing since that one"
                    );
                    log.deliver(aggregator.processor().store());
                }
                emitted.extend(aggregates(aggregator.processor().store()));
                let first = std::mem::replace(&mut aggregator, new_aggregator());
                parked = Some(first);
                assert!(
                    aggregator.bootstrap(&log).unwrap(),
                    "started from the snapshot"
                );
            }
        }
        if let Disruption::TakenBack { caught_up } = disruption {
            if round == rounds * 3 / 4 {
                assert!(
                    aggregator.hand_over().unwrap(),
                    "it read since its snapshot"
                );
                log.deliver(aggregator.processor().store());
                emitted.extend(aggregates(aggregator.processor().store()));
                let first = parked.take().expect("the first aggregator");
                retired.push(std::mem::replace(&mut aggregator, first));
                let went_on = caught_up && aggregator.catch_up(&log).unwrap();
                assert_eq!(went_on, caught_up, "went on from the second's snapshot");
            }
        }
    }
    let end = rounds as i64 * 5_000;
    while aggregator.step(&mut log, end).unwrap().1 {}
    aggregator.step(&mut log, end).unwrap();
    for (_, processor) in &instances {
        assert!(
            aggregates(processor.store()).is_empty(),
            "an instance leaves the aggregates to the aggregator"
        );
    }
    emitted.extend(aggregates(aggregator.processor().store()));
    retired.extend(parked);
    retired.push(aggregator);
    let all: Vec<String> = retired
        .iter()
        .flat_map(|a| emissions(a.processor().store()))
        .collect();
    let distinct: std::collections::BTreeSet<&String> = all.iter().collect();
    let last = retired
        .last()
        .expect("the last aggregator")
        .processor()
        .store();
    (
        emitted,
        all.len() - distinct.len(),
        last.rfm().unwrap().cells(),
    )
}

/// The fields that may differ: a referral counts in the referrer's segment, which only the
/// referrer's owner knows.
const MAY_DIFFER: [&str; 1] = ["referrals"];

/// A record without the fields that may differ ([`MAY_DIFFER`]).
pub fn strip(record: &Value) -> Value {
    let mut record = record.clone();
    if let Some(fields) = record.as_object_mut() {
        for field in MAY_DIFFER {
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

/// Whether `got` holds exactly the windows and days of `want`, equal but for what they read at
/// close and a referral's segment; referrals per day equal. The differences, if not.
fn differences(got: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>) -> Vec<String> {
    let mut differ = Vec::new();
    if got.keys().ne(want.keys()) {
        differ.push(format!(
            "{} windows and days, not {}",
            got.len(),
            want.len()
        ));
    }
    for (id, value) in want {
        if got.get(id).map(strip) != Some(strip(value)) {
            let fields: Vec<&String> = match got.get(id) {
                Some(Value::Object(fields)) => fields
                    .iter()
                    .filter(|(k, v)| value.get(k.as_str()) != Some(v))
                    .map(|(k, _)| k)
                    .collect(),
                _ => Vec::new(),
            };
            differ.push(format!("{id} {fields:?}"));
        }
    }
    if per_day(got, &["referrals"]) != per_day(want, &["referrals"]) {
        differ.push("referrals per day".into());
    }
    differ
}

#[test]
fn two_instances_and_the_aggregator_emit_the_windows_and_days_of_one_instance() {
    let records = traffic();
    let want = one_instance(&records);
    let trends = want.keys().filter(|id| id.starts_with("trend-")).count();
    let days = want.keys().filter(|id| id.starts_with("segment-")).count();
    assert!(trends > 2_000 && days > 60, "{trends} windows, {days} days");
    assert!(
        per_day(&want, &["referrals"]).values().sum::<i64>() > 0,
        "the traffic refers"
    );
    let (got, _, _) = two_instances_and_the_aggregator(&records, Disruption::None);
    assert_eq!(differences(&got, &want), Vec::<String>::new());
}

/// The same with erasures of customers whose complaints are open: the complaints leave each
/// window's backlog where one instance has them leave it, in the erasure's window.
#[test]
fn complaints_an_erasure_leaves_open_leave_the_aggregator_s_windows_as_one_instance_s() {
    let records = traffic_with_erasures();
    let erasures = records.len() - traffic().len();
    assert!(erasures > 100, "{erasures} erasures");
    let want = one_instance(&records);
    let (got, _, _) = two_instances_and_the_aggregator(&records, Disruption::None);
    assert_eq!(differences(&got, &want), Vec::<String>::new());
}

/// Changelog records an instance sends again after a crash (the broker took them, the outbox
/// had not yet heard so) reach the changelog twice; the aggregator applies their facts once.
#[test]
fn changelog_records_sent_again_after_a_crash_count_once() {
    let records = traffic();
    let want = one_instance(&records);
    let (got, _, _) = two_instances_and_the_aggregator(&records, Disruption::Redelivery);
    assert_eq!(differences(&got, &want), Vec::<String>::new());
}

/// An aggregator on an instance that never held partition 0 starts from the latest snapshot
/// its predecessor wrote to the changelog, and emits what one aggregator would, though the
/// changelog below that snapshot was compacted. From the compacted start it could not.
#[test]
fn a_new_aggregator_starts_from_the_snapshot_in_a_compacted_changelog() {
    let records = traffic();
    let want = one_instance(&records);
    let from_snapshot = Disruption::Compacted {
        from_snapshot: true,
    };
    let (got, _, _) = two_instances_and_the_aggregator(&records, from_snapshot);
    assert_eq!(differences(&got, &want), Vec::<String>::new());
    let from_start = Disruption::Compacted {
        from_snapshot: false,
    };
    let (got, _, _) = two_instances_and_the_aggregator(&records, from_start);
    assert!(
        differences(&got, &want).len() > 10,
        "compaction took facts away from a start without the snapshot"
    );
}

/// As input partition 0 moves to an instance that never held it, the old aggregator writes its
/// snapshot for the new one, which goes on from there: no window or day is emitted twice, and
/// together they emit what one aggregator would. Without that snapshot, the new one starts from
/// the latest one written on the old one's schedule and emits again every window and day
/// closed since.
#[test]
fn an_aggregator_giving_partition_0_up_hands_its_snapshot_over() {
    once_with_and_again_without(
        Disruption::HandOver { written: true },
        Disruption::HandOver { written: false },
    );
}

/// Both disruptions end with one aggregator's windows and days; under `with` none is emitted
/// twice, under `without` more than 100 are emitted again. Returns the RFM cells under `with`.
fn once_with_and_again_without(with: Disruption, without: Disruption) -> Vec<Cell> {
    let records = traffic();
    let want = one_instance(&records);
    let (got, twice, rfm) = two_instances_and_the_aggregator(&records, with);
    assert_eq!(differences(&got, &want), Vec::<String>::new());
    assert_eq!(twice, 0, "windows and days emitted by both aggregators");
    let (got, twice, _) = two_instances_and_the_aggregator(&records, without);
    assert_eq!(differences(&got, &want), Vec::<String>::new());
    assert!(twice > 100, "{twice} windows and days emitted again");
    rfm
}

/// An aggregator that takes input partition 0 back goes on from the snapshot of the one that
/// ran meanwhile, which is ahead of its own store: no window or day is emitted twice. From its
/// own store it would emit again every window and day the other emitted.
#[test]
fn an_aggregator_taking_partition_0_back_goes_on_from_a_later_snapshot() {
    let rfm = once_with_and_again_without(
        Disruption::TakenBack { caught_up: true },
        Disruption::TakenBack { caught_up: false },
    );
    // Its RFM histograms too are those of one aggregator throughout: none of its own cells
    // that the snapshot no longer had is left behind.
    let (_, _, one) = two_instances_and_the_aggregator(&traffic(), Disruption::None);
    let stale: Vec<&Cell> = rfm.iter().filter(|c| !one.contains(c)).collect();
    let missing: Vec<&Cell> = one.iter().filter(|c| !rfm.contains(c)).collect();
    assert!(
        stale.is_empty() && missing.is_empty(),
        "cells not one aggregator's: {stale:?}; missing: {missing:?}"
    );
}

/// A snapshot that cannot be read never keeps an aggregator from starting: it starts from the
/// changelog's first record instead.
#[test]
fn an_unreadable_snapshot_is_passed_over() {
    let log = Log::default();
    log.0.lock().unwrap().insert(
        0,
        vec![Some(ChangelogRecord {
            key: AGGREGATOR_KEY.to_vec(),
            value: Some(vec![9, 9, 9]),
            epoch: None,
            facts: None,
            sequence: None,
        })],
    );
    let mut aggregator = new_aggregator();
    assert!(!aggregator.bootstrap(&log).unwrap());
}

/// A changelog record the aggregator cannot read (facts of a later build's encoding, read by
/// an earlier one during a rolling upgrade) is skipped, and counted in
/// `aggregator_unreadable_records_total`, which the `AggregatorSkippedChangelogRecords` alert
/// watches: its changes are missing from the aggregates.
#[test]
fn changelog_records_the_aggregator_cannot_read_are_skipped_and_counted() {
    let mut log = Log::default();
    let mut instance = instance(&[0, 1, 2, 3]);
    instance.process(&traffic()[..2_000], NOW_MS).unwrap();
    log.deliver(instance.store());
    // Two customer records' facts in an encoding this build does not know.
    let mut partitions = log.0.lock().unwrap();
    let records = partitions.values_mut().flat_map(|p| p.iter_mut().flatten());
    let mut with_facts = records.filter_map(|r| r.facts.as_mut());
    for _ in 0..2 {
        with_facts.next().expect("a customer record with facts")[0] = 9;
    }
    drop(partitions);
    let telemetry = customer_pulse::telemetry::Telemetry::new();
    let mut aggregator = new_aggregator();
    let mut skipped = 0;
    loop {
        let (report, more) = aggregator.step(&mut log, NOW_MS).unwrap();
        skipped += report.unreadable_changelog_records;
        telemetry.record_batch(&report, 0.0, NOW_MS);
        if !more {
            break;
        }
    }
    assert_eq!(skipped, 2);
    assert!(telemetry
        .render()
        .contains("customer_pulse_aggregator_unreadable_records_total 2"));
}

/// A snapshot of complaint windows of another length than `trends.window_minutes` is passed
/// over (its open windows and baselines are of that length); one of the same length is taken,
/// and so is one of a build that did not record the length.
#[test]
fn a_snapshot_of_another_window_length_is_passed_over() {
    let hourly = settings_with_partitions(500, PARTITIONS).trends;
    assert_eq!(hourly.window_ms, 3_600_000);
    let mut trends = customer_pulse::trends::Trends::default();
    trends.opened(
        "billing",
        customer_pulse::event::Severity::High,
        NOW_MS,
        &hourly,
    );
    let snapshot = |window_ms| AggregatorSnapshot {
        trends: Some(trends.clone()),
        partitions: vec![(0, 7, Some(NOW_MS), Default::default())],
        window_ms,
        ..AggregatorSnapshot::default()
    };
    let started = |snapshot: AggregatorSnapshot, window_minutes: i64| {
        let log = Log::default();
        log.0.lock().unwrap().insert(
            0,
            vec![Some(ChangelogRecord {
                key: AGGREGATOR_KEY.to_vec(),
                value: Some(snapshot.to_bytes()),
                epoch: None,
                facts: None,
                sequence: None,
            })],
        );
        let mut settings = settings_with_partitions(500, PARTITIONS);
        settings.trends.window_ms = window_minutes * 60_000;
        let store = Store::in_memory();
        let mut aggregator =
            Aggregator::new(Processor::new(store.clone(), settings), TOPIC, PARTITIONS);
        let took = aggregator.bootstrap(&log).unwrap();
        assert_eq!(took, store.trends().unwrap().is_some(), "took {took}");
        assert_eq!(took, store.offset(TOPIC, 0).unwrap() == Some(7));
        took
    };
    assert!(started(snapshot(Some(3_600_000)), 60));
    assert!(!started(snapshot(Some(3_600_000)), 15));
    assert!(!started(snapshot(Some(900_000)), 60));
    assert!(started(snapshot(None), 15), "an older build's snapshot");
}

/// The RFM histograms one instance holds, against a count of the customers its store holds in
/// `partitions`.
fn histograms_and_recount(store: &Store, partitions: &[i32]) -> (Vec<Cell>, Vec<Cell>) {
    let mut recount = Rfm::default();
    for &partition in partitions {
        for customer in store.customers(partition, "", usize::MAX).unwrap() {
            recount.relocate(None, point(&customer));
        }
    }
    (store.rfm().unwrap().cells(), recount.cells())
}

/// An instance's RFM scales come from the customers of the partitions it owns: after a
/// partition is restored into it from another instance's changelog, and after it gives one up,
/// its histograms hold exactly those customers, as its store holds them; none goes below zero
/// when a restored customer orders again.
#[test]
fn an_instance_s_rfm_histograms_hold_the_customers_of_the_partitions_it_owns() {
    let records = traffic();
    let (early, late) = records.split_at(records.len() * 2 / 3);
    let mine = |records: &[InputRecord], partitions: &[i32]| -> Vec<InputRecord> {
        let wanted = |r: &&InputRecord| partitions.contains(&r.source_partition);
        records.iter().filter(wanted).cloned().collect()
    };
    let assigned = |partitions: &[i32]| -> Vec<(String, i32)> {
        partitions.iter().map(|p| ("events".into(), *p)).collect()
    };
    let mut settings = settings_with_partitions(500, PARTITIONS);
    settings.aggregation = Aggregation::Elsewhere;
    let log = Log::default();

    // A holds partition 1 for the first two thirds of the traffic; B holds partition 2.
    let a_store = Store::in_memory().with_changelog(TOPIC).unwrap();
    let mut a = Processor::new(a_store.clone(), settings.clone());
    a.assign(&assigned(&[1]), NOW_MS);
    for batch in mine(early, &[1]).chunks(500) {
        a.process(batch, NOW_MS).unwrap();
    }
    log.deliver(&a_store);
    let b_store = Store::in_memory().with_changelog(TOPIC).unwrap();
    let mut b = Processor::new(b_store.clone(), settings);
    b.assign(&assigned(&[2]), NOW_MS);
    for batch in mine(early, &[2]).chunks(500) {
        b.process(batch, NOW_MS).unwrap();
    }

    // Partition 1 moves to B, which restores it from A's changelog records.
    let moved: Vec<ChangelogRecord> = log.0.lock().unwrap()[&1]
        .iter()
        .flatten()
        .cloned()
        .collect();
    assert!(
        moved.len() > 100,
        "{} changelog records of partition 1",
        moved.len()
    );
    b_store.restore(1, moved).unwrap();
    b.forget_partition(1);
    b.assign(&assigned(&[1, 2]), NOW_MS);
    for batch in mine(late, &[1, 2]).chunks(500) {
        b.process(batch, NOW_MS).unwrap();
    }
    let (held, recount) = histograms_and_recount(&b_store, &[1, 2]);
    assert!(!recount.is_empty());
    assert_eq!(held, recount, "after the restore, over partitions 1 and 2");

    // B gives partition 2 up (keeping its copy) and processes a batch of partition 1: events
    // it already folded, delivered again at later offsets, which change no customer and
    // commit what the recount changed.
    b.assign(&assigned(&[1]), NOW_MS);
    let more: Vec<InputRecord> = mine(late, &[1])
        .into_iter()
        .map(|mut r| {
            r.offset += 1_000_000;
            r
        })
        .take(50)
        .collect();
    b.process(&more, NOW_MS).unwrap();
    let (held, recount) = histograms_and_recount(&b_store, &[1]);
    assert_eq!(held, recount, "after giving partition 2 up");
    let negative = held
        .iter()
        .any(|c| matches!(c, Cell::Joint(_, _, n) | Cell::Monetary(_, n) if *n < 0));
    assert!(!negative, "no cell below zero");
}

/// An instance that gives up input partition 0 drops its aggregator's gauges; when it takes
/// the partition back, its aggregator's next step exports them all again, though nothing new
/// was read. Before, they stayed away until the next change, which a quiet system may not
/// bring for hours.
#[test]
fn an_aggregator_taken_back_exports_its_gauges_at_its_next_step() {
    let mut log = Log::default();
    let mut settings = settings_with_partitions(500, PARTITIONS);
    settings.aggregation = Aggregation::Elsewhere;
    let store = Store::in_memory().with_changelog(TOPIC).unwrap();
    let mut processor = Processor::new(store, settings);
    let all: Vec<(String, i32)> = (0..PARTITIONS).map(|p| ("events".into(), p)).collect();
    processor.assign(&all, NOW_MS);
    let records = traffic();
    for batch in records[..6_000].chunks(1_000) {
        processor.process(batch, NOW_MS).unwrap();
        log.deliver(processor.store());
    }
    let telemetry = customer_pulse::telemetry::Telemetry::new();
    let mut aggregator = new_aggregator();
    loop {
        let (report, more) = aggregator.step(&mut log, NOW_MS).unwrap();
        telemetry.record_aggregates(&report);
        if !more {
            break;
        }
    }
    let (report, _) = aggregator.step(&mut log, NOW_MS).unwrap();
    telemetry.record_aggregates(&report);
    let shown = aggregate_gauges(&telemetry.render());
    assert!(shown.len() > 20, "{shown:?}");
    assert!(
        shown
            .iter()
            .any(|(series, n)| series.starts_with("customer_pulse_complaints_open{") && n != "0"),
        "{shown:?}"
    );

    // Partition 0 goes elsewhere, and comes back: no record was written meanwhile.
    telemetry.forget_aggregates();
    assert!(aggregate_gauges(&telemetry.render()).is_empty());
    aggregator.show_again();
    let (report, more) = aggregator.step(&mut log, NOW_MS).unwrap();
    assert!(!more);
    telemetry.record_aggregates(&report);
    assert_eq!(aggregate_gauges(&telemetry.render()), shown);
}

/// What a processor emitted and counted over `records`, batch by batch.
#[derive(Default)]
struct Ran {
    /// The churn-risk records, in order.
    churn_risk: Vec<customer_pulse::store::OutboxRecord>,
    /// Events by type and outcome (`applied`, `late`, ...).
    events: BTreeMap<(&'static str, &'static str), u64>,
    timers_fired: usize,
    /// The segment flows counted for telemetry, by segment.
    flows: BTreeMap<String, customer_pulse::segments::Flows>,
}

fn run(processor: &mut Processor, records: &[InputRecord]) -> Ran {
    run_batches(processor, records.chunks(500), |_, _| {})
}

/// [`run`] over `batches`, in order, calling `between` with the number of batches run so far
/// before each.
fn run_batches<'a>(
    processor: &mut Processor,
    batches: impl IntoIterator<Item = &'a [InputRecord]>,
    mut between: impl FnMut(usize, &mut Processor),
) -> Ran {
    let mut ran = Ran::default();
    for (i, batch) in batches.into_iter().enumerate() {
        between(i, processor);
        let report = processor.process(batch, NOW_MS).unwrap();
        for ((_, kind, outcome), n) in report.events {
            *ran.events.entry((kind, outcome)).or_default() += n;
        }
        ran.timers_fired += report.timers_fired;
        for (segment, flows) in report.segment_flows {
            ran.flows.entry(segment).or_default().merge(&flows);
        }
    }
    for (_, record) in processor.store().outbox(usize::MAX).unwrap() {
        if record.topic == "customer.churn-risk" {
            ran.churn_risk.push(record);
        }
    }
    ran
}

/// An instance whose aggregator is elsewhere and which owns every partition emits the
/// churn-risk records a lone instance emits (their RFM scores rescaled as the same days close),
/// fires the same timers and counts the same events late; it counts no complaints or
/// populations of its own, which the aggregator counts, and keeps the windows' and days' times.
#[test]
fn an_instance_with_the_aggregator_elsewhere_emits_and_counts_what_a_lone_instance_does() {
    // The traffic, then the orders, complaints and resolutions of its first six days published
    // again under new ids after six weeks: late for their windows and days.
    let mut records = traffic_with_erasures();
    let again = generate(&SPEC).into_iter().take(3_000).filter_map(|g| {
        let wanted = ["order.placed", "complaint.opened", "complaint.resolved"];
        let mut value = g.value;
        wanted.contains(&g.type_name).then(|| {
            for field in ["event_id", "order_id", "complaint_id"] {
                if let Some(Value::String(id)) = value.get_mut(field) {
                    id.push_str("-again");
                }
            }
            (g.customer_id, value)
        })
    });
    let mut late = records_of(again);
    let mut next = [0i64; PARTITIONS as usize];
    for r in &records {
        next[r.source_partition as usize] = r.offset + 1;
    }
    for r in &mut late {
        r.offset += next[r.source_partition as usize];
    }
    records.extend(late);
    let every: Vec<(String, i32)> = (0..PARTITIONS).map(|p| ("events".into(), p)).collect();

    let lone_store = Store::in_memory();
    let mut lone = Processor::new(
        lone_store.clone(),
        settings_with_partitions(500, PARTITIONS),
    );
    lone.assign(&every, NOW_MS);
    let want = run(&mut lone, &records);
    let mut instance = instance(&[0, 1, 2, 3]);
    let got = run(&mut instance, &records);

    let late: u64 = want
        .events
        .iter()
        .filter(|((_, o), _)| *o == "late")
        .map(|(_, n)| n)
        .sum();
    assert!(late > 100, "{late} events late: {:?}", want.events);
    assert!(want.churn_risk.len() > 10_000 && want.timers_fired > 1_000);
    assert_eq!(got.events, want.events);
    assert_eq!(got.timers_fired, want.timers_fired);
    assert_eq!(got.flows, want.flows);
    assert!(
        got.churn_risk == want.churn_risk,
        "the churn-risk records differ"
    );
    let (lone_rfm, rfm) = (lone_store.rfm().unwrap(), instance.store().rfm().unwrap());
    assert_eq!(rfm.cells(), lone_rfm.cells());
    assert_eq!(rfm.scales, lone_rfm.scales);

    let (lone_trends, trends) = (
        lone_store.trends().unwrap().unwrap(),
        instance.store().trends().unwrap().unwrap(),
    );
    let (lone_segments, segments) = (
        lone_store.segments().unwrap().unwrap(),
        instance.store().segments().unwrap().unwrap(),
    );
    assert!(lone_trends.closed_before.is_some() && lone_segments.closed_before.is_some());
    assert_eq!(trends.closed_before, lone_trends.closed_before);
    assert_eq!(trends.newest, lone_trends.newest);
    assert_eq!(segments.closed_before, lone_segments.closed_before);
    assert!(!lone_trends.categories.is_empty() && !lone_segments.population.is_empty());
    assert!(
        trends.categories.is_empty() && trends.windows.is_empty(),
        "the instance counted complaints: {:?}",
        trends.categories
    );
    assert!(
        segments.population.is_empty() && segments.days.is_empty(),
        "the instance counted its customers: {:?}",
        segments.population
    );
}

/// Eight customers' events of every valid type over forty days, at times that mostly move on
/// and now and then go back as far as three days (late for their windows and days), a few of
/// them under an earlier event's id again, and one in about sixty an erasure.
fn small_traffic() -> impl Strategy<Value = Vec<InputRecord>> {
    let event = (
        0..8u8,
        0..60usize,
        -4_320..2_880i64,
        0..8u8,
        100..50_000i64,
        any::<bool>(),
        0..11u8,
    );
    let ordinary: Vec<&str> = EVENT_TYPES
        .into_iter()
        .filter(|kind| *kind != "customer.erased")
        .collect();
    prop::collection::vec(event, 1..160).prop_map(move |drawn| {
        let start = NOW_MS - 40 * 86_400_000;
        let mut at = start;
        let mut events = Vec::new();
        for (i, (c, kind, minutes, item, amount, flag, score)) in drawn.into_iter().enumerate() {
            let kind = match kind {
                59 => "customer.erased",
                _ => ordinary[kind % ordinary.len()],
            };
            at = (at + minutes * 60_000).clamp(start, NOW_MS - 60_000);
            let customer = format!("c-{c}");
            let event_id = match item {
                0 if i > 0 => format!("e-{}", i / 2),
                _ => format!("e-{i}"),
            };
            let mut value = json!({
                "event_id": event_id,
                "customer_id": customer,
                "type": kind,
                "occurred_at": format_millis(at),
            });
            let order = format!("o-{}", item % 4);
            let complaint = format!("k-{}", item % 3);
            let fields = match kind {
                "customer.registered" if flag => {
                    json!({"channel": "web", "referred_by": format!("c-{}", (c + 1) % 8)})
                }
                "customer.registered" => json!({"channel": "store"}),
                "interaction.contact" => json!({
                    "channel": "phone",
                    "direction": if flag { "inbound" } else { "outbound" },
                }),
                "interaction.survey" => json!({"score": score}),
                "subscription.renewed" if flag => {
                    json!({"plan": "monthly", "reason": "loyalty", "amount_minor": amount})
                }
                "subscription.renewed" => json!({"plan": "yearly", "amount_minor": amount}),
                "subscription.cancelled" => json!({"reason": "price"}),
                "order.placed" => json!({
                    "order_id": order,
                    "amount_minor": amount,
                    "margin_minor": amount / 4,
                    "currency": "EUR",
                }),
                "order.returned" => json!({"order_id": order, "amount_minor": amount / 2}),
                "order.delivered" | "order.cancelled" => json!({"order_id": order}),
                "complaint.opened" => {
                    let severity = ["low", "medium", "high", "critical"][usize::from(score % 4)];
                    json!({
                        "complaint_id": complaint,
                        "category": if flag { "billing" } else { "delivery" },
                        "severity": severity,
                    })
                }
                "complaint.resolved" => json!({"complaint_id": complaint, "satisfied": flag}),
                _ => json!({}),
            };
            for (name, field) in fields.as_object().unwrap() {
                value[name] = field.clone();
            }
            events.push((customer, value));
        }
        records_of(events)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// For any small traffic in any batches, an instance whose aggregator is elsewhere and
    /// which owns every partition emits the churn-risk records of a lone instance, counts the
    /// same events late, fires the same timers and moves the windows' and days' times alike
    /// (the test above shows it on one large traffic), each stopped and started again on its
    /// state before every batch, every second or every third. The processor clock stands still,
    /// so no partition goes idle: where one does, the two differ by design (README, *Scaling out*,
    /// watermarks per partition), the lone instance firing a quiet partition's timers at the
    /// others' watermark and the other only at its own input's, so that a late event of it
    /// read afterwards is assessed after its customer's timer in one and before it in the
    /// other (with the clock moving on at each batch, 3,000 cases found such a customer).
    #[test]
    fn any_traffic_is_folded_alike_with_the_aggregator_here_or_elsewhere(
        records in small_traffic(),
        sizes in prop::collection::vec(1..40usize, 1..6),
        period in 1..4usize,
    ) {
        let batches = || {
            let mut rest = records.as_slice();
            let mut sizes = sizes.iter().cycle();
            std::iter::from_fn(move || {
                let n = (*sizes.next()?).min(rest.len());
                let (batch, after) = rest.split_at(n);
                rest = after;
                (!batch.is_empty()).then_some(batch)
            })
        };
        // Two open complaints at most, so that a third is counted open and left untracked.
        let mut settings = settings_with_partitions(500, PARTITIONS);
        settings.limits.max_open_items = 2;
        let every: Vec<(String, i32)> = (0..PARTITIONS).map(|p| ("events".into(), p)).collect();
        let lone_store = Store::in_memory();
        let mut lone = Processor::new(lone_store.clone(), settings.clone());
        lone.assign(&every, NOW_MS);
        // Each stopped before every `period`th batch and started again on its state, so also
        // before the first window closes, where the times an instance keeps of windows and
        // days matter most.
        let again = |i: usize, processor: &mut Processor| {
            if i > 0 && i.is_multiple_of(period) {
                let store = processor.store().clone();
                *processor = Processor::new(store, processor.settings().clone());
                processor.assign(&every, NOW_MS);
            }
        };
        let want = run_batches(&mut lone, batches(), again);
        let mut instance = instance_with(&[0, 1, 2, 3], settings);
        let got = run_batches(&mut instance, batches(), again);

        let settled: u64 = want.events.values().sum();
        prop_assert_eq!(settled, records.len() as u64);
        prop_assert_eq!(&got.events, &want.events);
        prop_assert_eq!(got.timers_fired, want.timers_fired);
        prop_assert!(got.flows == want.flows, "the flows differ");
        prop_assert!(got.churn_risk == want.churn_risk, "the churn-risk records differ");
        let (lone_rfm, rfm) = (lone_store.rfm().unwrap(), instance.store().rfm().unwrap());
        prop_assert_eq!(rfm.cells(), lone_rfm.cells());
        prop_assert!(rfm.scales == lone_rfm.scales, "the RFM scales differ");
        // Where nothing was counted yet, one stores empty trends or segments and the other
        // none: alike.
        let times = |store: &Store| {
            let trends = store.trends().unwrap();
            let segments = store.segments().unwrap();
            (
                trends.as_ref().and_then(|t| t.closed_before),
                trends.as_ref().and_then(|t| t.newest),
                segments.as_ref().and_then(|s| s.closed_before),
            )
        };
        prop_assert_eq!(times(instance.store()), times(&lone_store));
    }
}

/// The store on `disk` with the changelog on, every partition claimed and restored in a new log
/// as an instance does at its assignment, with what each restore found.
fn claimed_on(disk: &std::sync::Arc<MemoryBackend>) -> (Store, Log, Vec<Restored>) {
    let store = Store::open(disk.clone())
        .unwrap()
        .with_changelog(TOPIC)
        .unwrap();
    let log = Log::default();
    let restored = (0..PARTITIONS)
        .map(|partition| restore(&store, &log, partition, &mut |_, _| {}).unwrap())
        .collect();
    (store, log, restored)
}

/// A processor over `store` (with the changelog) owning every partition, its aggregates
/// elsewhere.
fn owning_every_partition(store: &Store) -> Processor {
    let mut settings = settings_with_partitions(500, PARTITIONS);
    settings.aggregation = Aggregation::Elsewhere;
    let mut processor = Processor::new(store.clone(), settings);
    let every: Vec<(String, i32)> = (0..PARTITIONS).map(|p| ("events".into(), p)).collect();
    processor.assign(&every, NOW_MS);
    processor
}

/// A lone instance whose state, kept without the changelog, turns the changelog on after some
/// batches: as it claims each partition its state goes to the changelog whole
/// (`Restored::Published`), its aggregates become the aggregator's start (`keep_seed`,
/// `Aggregator::adopt_seed`), and it goes on with its aggregates elsewhere. The windows and days
/// emitted before the switch, by the lone instance, and after it, by the aggregator, are those
/// of one lone instance throughout, wherever the switch falls.
#[test]
fn a_lone_instance_turning_the_changelog_on_emits_with_its_aggregator_what_it_would_alone() {
    let records = traffic();
    let want = one_instance(&records);
    let batches: Vec<&[InputRecord]> = records.chunks(500).collect();
    for switch in [1, batches.len() / 2] {
        let disk = std::sync::Arc::new(MemoryBackend::default());
        let lone_store = Store::open(disk.clone()).unwrap();
        let mut lone = Processor::new(
            lone_store.clone(),
            settings_with_partitions(500, PARTITIONS),
        );
        for batch in &batches[..switch] {
            lone.process(batch, NOW_MS).unwrap();
        }
        let mut emitted = aggregates(&lone_store);
        drop(lone);

        let (store, mut log, restored) = claimed_on(&disk);
        for (partition, restored) in restored.iter().enumerate() {
            assert!(
                matches!(restored, Restored::Published { records } if *records > 0),
                "partition {partition}: {restored:?}"
            );
        }
        keep_seed(&store, PARTITIONS).unwrap();
        let mut aggregator = new_aggregator();
        let seed = store.aggregator_seed().unwrap().expect("a seed kept");
        aggregator.adopt_seed(seed).unwrap();
        let mut instance = owning_every_partition(&store);
        for (round, batch) in batches[switch..].iter().enumerate() {
            instance.process(batch, NOW_MS).unwrap();
            log.deliver(instance.store());
            if round % 3 == 0 {
                aggregator.step(&mut log, round as i64 * 5_000).unwrap();
                log.deliver(aggregator.processor().store());
            }
        }
        let end = batches.len() as i64 * 5_000;
        while aggregator.step(&mut log, end).unwrap().1 {}
        aggregator.step(&mut log, end).unwrap();
        emitted.extend(aggregates(aggregator.processor().store()));
        assert_eq!(
            differences(&emitted, &want),
            Vec::<String>::new(),
            "switched after batch {switch} of {}",
            batches.len()
        );
    }
}

/// A lone instance with the changelog on, its aggregator beside it, turning the changelog off
/// after some batches. At the graceful stop the aggregator reads the changelog to its end
/// (`Aggregator::read_to_end`); the instance, started without the changelog, takes over its
/// complaint windows and baselines and segment days, which count exactly the input its state
/// holds (`take_over`). The windows and days emitted before the switch, by the aggregator, and
/// after it, by the lone instance, are those of one lone instance throughout, wherever the
/// switch falls. An aggregator stopped before it read the last batch's records is passed over
/// (its counts are of less than the state holds), and the windows and days open at the switch
/// then differ from one lone instance's.
#[test]
fn a_lone_instance_turning_the_changelog_off_takes_over_its_aggregators_windows_and_days() {
    let records = traffic();
    let want = one_instance(&records);
    let batches: Vec<&[InputRecord]> = records.chunks(500).collect();
    let half = batches.len() / 2;
    for (switch, to_the_end) in [(1, true), (half, true), (half, false)] {
        let disk = std::sync::Arc::new(MemoryBackend::default());
        let (store, mut log, _) = claimed_on(&disk);
        let mut aggregator = new_aggregator();
        let mut instance = owning_every_partition(&store);
        for (round, batch) in batches[..switch].iter().enumerate() {
            // The aggregator a step behind: it has not read the batch folded last.
            if round % 3 == 0 {
                aggregator.step(&mut log, round as i64 * 5_000).unwrap();
                log.deliver(aggregator.processor().store());
            }
            instance.process(batch, NOW_MS).unwrap();
            log.deliver(instance.store());
        }
        drop((instance, store));
        let end = switch as i64 * 5_000;
        if to_the_end {
            let mut steps = 0;
            let reached = aggregator
                .read_to_end(&mut log, end, &|| true, &mut |_| steps += 1)
                .unwrap();
            assert!(reached && steps > 0, "read to the end in {steps} steps");
        }
        let mut emitted = aggregates(aggregator.processor().store());

        let lone_store = Store::open(disk).unwrap();
        let take = || {
            let from = aggregator.processor().store();
            take_over(&lone_store, from, PARTITIONS, TOPIC).unwrap()
        };
        let (verdict, _) = take();
        let mut lone = Processor::new(
            lone_store.clone(),
            settings_with_partitions(500, PARTITIONS),
        );
        for batch in &batches[switch..] {
            lone.process(batch, NOW_MS).unwrap();
        }
        emitted.extend(aggregates(&lone_store));
        let differ = differences(&emitted, &want);
        if to_the_end {
            assert_eq!(verdict, TakeOver::Taken, "switched after batch {switch}");
            assert_eq!(
                differ,
                Vec::<String>::new(),
                "switched after batch {switch} of {}",
                batches.len()
            );
        } else {
            assert_eq!(
                verdict,
                TakeOver::PassedOver((0..PARTITIONS).collect()),
                "the last batch touched every partition"
            );
            assert!(!differ.is_empty(), "without the aggregator's counts");
        }
        // Decided once: started again, the instance finds nothing counted to take.
        assert_eq!(take(), (TakeOver::NotCounted, 0));
    }
}

/// What the aggregator counted of each partition's input goes with its state: an aggregator
/// that starts from another's snapshot counts what that one counted, and one that starts from
/// an instance's seed counts what the instance's state holds, before it reads anything more;
/// either is taken over by the instance turning the changelog off.
#[test]
fn what_an_aggregator_counted_of_the_input_goes_with_its_snapshot_and_its_seed() {
    let records = traffic();
    let batches: Vec<&[InputRecord]> = records.chunks(500).collect();
    let counted = |store: &Store| -> Vec<Option<Vec<(String, i64)>>> {
        (0..PARTITIONS)
            .map(|p| store.counted_input(p).unwrap().map(|c| c.offsets))
            .collect()
    };
    let holds = |store: &Store| -> Vec<Option<Vec<(String, i64)>>> {
        (0..PARTITIONS)
            .map(|p| Some(store.input_offsets(p).unwrap()))
            .collect()
    };

    // A lone instance's state, kept without the changelog, published as it is turned on: the
    // seed counts what it holds.
    let disk = std::sync::Arc::new(MemoryBackend::default());
    let mut lone = Processor::new(
        Store::open(disk.clone()).unwrap(),
        settings_with_partitions(500, PARTITIONS),
    );
    for batch in &batches[..4] {
        lone.process(batch, NOW_MS).unwrap();
    }
    drop(lone);
    let (store, mut log, _) = claimed_on(&disk);
    keep_seed(&store, PARTITIONS).unwrap();
    let mut seeded = new_aggregator();
    seeded
        .adopt_seed(store.aggregator_seed().unwrap().unwrap())
        .unwrap();
    let holds_then = holds(&store);
    assert!(holds_then
        .iter()
        .all(|h| h.as_ref().is_some_and(|h| !h.is_empty())));
    assert_eq!(counted(seeded.processor().store()), holds_then);

    // The instance folds more with its aggregates elsewhere; the aggregator reads it all and
    // writes its snapshot, from which another starts.
    let mut instance = owning_every_partition(&store);
    for batch in &batches[4..8] {
        instance.process(batch, NOW_MS).unwrap();
        log.deliver(instance.store());
    }
    drop(instance);
    assert!(seeded
        .read_to_end(&mut log, 50_000, &|| true, &mut |_| {})
        .unwrap());
    seeded.hand_over().unwrap();
    log.deliver(seeded.processor().store());
    assert_ne!(holds(&store), holds_then, "the instance folded more");
    assert_eq!(counted(seeded.processor().store()), holds(&store));
    let mut next = new_aggregator();
    assert!(next.bootstrap(&log).unwrap(), "started from the snapshot");
    assert_eq!(counted(next.processor().store()), holds(&store));

    let lone_store = Store::open(disk).unwrap();
    let (verdict, _) = take_over(&lone_store, next.processor().store(), PARTITIONS, TOPIC).unwrap();
    assert_eq!(verdict, TakeOver::Taken);
    assert_eq!(
        lone_store.segments().unwrap(),
        seeded.processor().store().segments().unwrap()
    );
}
