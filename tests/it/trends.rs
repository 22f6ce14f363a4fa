//! Complaint trends through the processor: a spike raises the flag in its window only, and the
//! emitted counts equal a batch recomputation over the same events written here from the JSON.

use std::collections::{BTreeMap, HashSet};

use customer_pulse::event::format_millis;
use customer_pulse::processor::{BatchReport, Processor};
use customer_pulse::store::Store;
use serde_json::Value;

use crate::catalogue::NOW_MS;
use crate::support::{file_record, settings};

const HOUR: i64 = 3_600_000;
/// 2026-04-01T00:00:00Z.
const START: i64 = 1_775_001_600_000;

fn complaint(n: usize, at: i64, category: &str) -> String {
    format!(
        r#"{{"event_id":"k{n}","customer_id":"c{}","type":"complaint.opened","occurred_at":"{}","complaint_id":"k{n}","category":"{category}","severity":"high"}}"#,
        n % 37,
        format_millis(at)
    )
}

/// Runs the events in batches of `batch` and returns the complaint-trends values in order.
fn trend_records(events: &[String], batch: usize) -> Vec<Value> {
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), settings(1_000));
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, json)| file_record(i as i64, json))
        .collect();
    for chunk in records.chunks(batch) {
        processor.process(chunk, NOW_MS).unwrap();
    }
    store
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.topic == "customer.complaint-trends")
        .map(|r| serde_json::from_slice(&r.value.unwrap()).unwrap())
        .collect()
}

#[test]
fn a_burst_in_one_category_raises_the_spike_flag_in_its_window_only() {
    let mut events = Vec::new();
    let mut n = 0;
    // Two billing complaints an hour for ten hours, then twelve in the eleventh hour.
    for hour in 0..11 {
        let count = if hour == 10 { 12 } else { 2 };
        for i in 0..count {
            events.push(complaint(n, START + hour * HOUR + i * 60_000, "Billing"));
            n += 1;
        }
    }
    // A delivery complaint two hours later moves the watermark (allowed lateness 1 h) past the
    // burst's window.
    events.push(complaint(n, START + 13 * HOUR, "delivery"));
    let records = trend_records(&events, 7);
    let spikes: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| r["spike"] == true)
        .map(|r| {
            (
                r["category"].as_str().unwrap(),
                r["window_start"].as_str().unwrap(),
            )
        })
        .collect();
    let burst_start = format_millis(START + 10 * HOUR);
    assert_eq!(spikes, [("billing", burst_start.as_str())]);
    let burst = records
        .iter()
        .find(|r| r["category"] == "billing" && r["window_start"] == burst_start.as_str())
        .unwrap();
    assert_eq!(burst["opened"], 12);
    assert_eq!(burst["by_severity"]["high"], 12);
    assert_eq!(burst["baseline"], 2.0, "ten steady hours of two");
    assert!((burst["z_score"].as_f64().unwrap() - 10.0 / 2f64.sqrt()).abs() < 1e-3);
    assert_eq!(burst["open_backlog"], 32);
    // Every configured category gets every closed hour, complaints or not.
    let windows: HashSet<&str> = records
        .iter()
        .map(|r| r["window_start"].as_str().unwrap())
        .collect();
    assert_eq!(windows.len(), 12, "hours 0 to 11 are closed");
    assert_eq!(records.len(), 12 * 3, "billing, delivery, other");
}

#[test]
fn a_history_that_begins_mid_hour_pages_no_one_for_its_first_full_hours() {
    // Thirty billing complaints an hour, steady, from 00:40: the first hour has only ten.
    // Compared with that partial hour, the full hours after it read z = 6.3, 4.4, 3.2...
    let mut events = Vec::new();
    let mut at = START + 40 * 60_000;
    while at < START + 6 * HOUR {
        events.push(complaint(events.len(), at, "billing"));
        at += 2 * 60_000;
    }
    events.push(complaint(events.len(), START + 8 * HOUR, "delivery"));
    let records = trend_records(&events, 11);
    let billing: Vec<&Value> = records
        .iter()
        .filter(|r| r["category"] == "billing")
        .collect();
    let counts: Vec<u64> = billing
        .iter()
        .map(|r| r["opened"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [10, 30, 30, 30, 30, 30, 0]);
    let flagged: Vec<&Value> = records.iter().filter(|r| r["spike"] == true).collect();
    assert!(flagged.is_empty(), "no spike: {flagged:?}");
    assert_eq!(
        billing[0]["z_score"], 0.0,
        "the partial hour is compared with nothing"
    );
    assert_eq!(
        billing[2]["baseline"], 30.0,
        "the first full hour is the baseline"
    );
    // Hour 6 has no complaint: a fall, measured against the full hours.
    let fall = billing[6]["z_score"].as_f64().unwrap();
    assert!((fall + 30f64.sqrt()).abs() < 1e-3, "z = {fall}");
}

#[test]
fn emitted_counts_equal_a_batch_recomputation_from_the_raw_events() {
    let generated = customer_pulse::generate::generate(&customer_pulse::generate::TrafficSpec {
        customers: 300,
        events: 20_000,
        seed: 9,
        start_ms: START,
        step_ms: 30_000,
    });
    let values: Vec<Value> = generated.iter().map(|g| g.value.clone()).collect();
    let mut events: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    // Redelivered events must not count twice.
    events.extend(values[..500].iter().map(|v| v.to_string()));
    let records = trend_records(&events, 900);
    // Where the batches end changes nothing: the same records, byte for byte in meaning,
    // population and lateness included.
    assert_eq!(trend_records(&events, 1), records, "batches of 1");
    assert_eq!(trend_records(&events, 5_000), records, "batches of 5,000");

    // The batch side: distinct complaint.opened ids per normalised category and hour.
    let known = ["billing", "delivery"];
    let mut seen = HashSet::new();
    let mut batch: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut batch_days: BTreeMap<(String, String), u64> = BTreeMap::new();
    for v in &values {
        if v["type"] != "complaint.opened" || !seen.insert(v["event_id"].as_str().unwrap()) {
            continue;
        }
        let raw = v["category"].as_str().unwrap().trim().to_lowercase();
        let category = if known.contains(&raw.as_str()) {
            raw
        } else {
            "other".to_owned()
        };
        let t = customer_pulse::event::parse_millis(v["occurred_at"].as_str().unwrap()).unwrap();
        let hour = format_millis(t.div_euclid(HOUR) * HOUR);
        let day = format_millis(t.div_euclid(24 * HOUR) * 24 * HOUR);
        *batch_days.entry((category.clone(), day)).or_default() += 1;
        *batch.entry((category, hour)).or_default() += 1;
    }
    assert!(
        batch.values().sum::<u64>() > 100,
        "the traffic has complaints"
    );

    let length = |r: &Value| {
        let ms = |f: &str| customer_pulse::event::parse_millis(r[f].as_str().unwrap()).unwrap();
        ms("window_end") - ms("window_start")
    };
    let (days, records): (Vec<Value>, Vec<Value>) =
        records.into_iter().partition(|r| length(r) == 24 * HOUR);
    assert!(records.iter().all(|r| length(r) == HOUR));
    // Daily roll-ups: every full day the stream closed equals the batch count of that day.
    assert!(days.len() >= 3 * 5, "several days for each category");
    for r in &days {
        let key = (
            r["category"].as_str().unwrap().to_owned(),
            r["window_start"].as_str().unwrap().to_owned(),
        );
        let want = batch_days.get(&key).copied().unwrap_or(0);
        assert_eq!(r["opened"].as_u64(), Some(want), "{key:?}");
    }
    let last_closed = records
        .iter()
        .map(|r| r["window_end"].as_str().unwrap().to_owned())
        .max()
        .unwrap();
    let mut stream: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &records {
        let key = (
            r["category"].as_str().unwrap().to_owned(),
            r["window_start"].as_str().unwrap().to_owned(),
        );
        assert!(
            stream
                .insert(key.clone(), r["opened"].as_u64().unwrap())
                .is_none(),
            "{key:?}: one record per category and window"
        );
    }
    // Every hour the stream closed agrees with the batch, empty hours included.
    for ((category, hour), count) in &stream {
        let want = batch
            .get(&(category.clone(), hour.clone()))
            .copied()
            .unwrap_or(0);
        assert_eq!(*count, want, "{category} {hour}");
    }
    // And every batch hour before the last closed window was emitted.
    for ((category, hour), count) in &batch {
        if *hour < last_closed {
            assert_eq!(stream.get(&(category.clone(), hour.clone())), Some(count));
        }
    }
}

/// What the pipeline does while its input is idle: `advance` every 200 ms of processor time
/// after `from`, up to `to`. The reports of the calls that moved the watermark.
fn idle_polls(processor: &mut Processor, from: i64, to: i64) -> Vec<BatchReport> {
    let mut reports = Vec::new();
    let mut now = from;
    while now < to {
        now = (now + 200).min(to);
        reports.extend(processor.advance(now).unwrap());
    }
    reports
}

/// Records as the Kafka input makes them: topic, partition 0.
fn kafka_record(topic: &str, offset: i64, json: &str) -> customer_pulse::processor::InputRecord {
    customer_pulse::processor::InputRecord {
        source: topic.into(),
        source_partition: 0,
        offset,
        stream: None,
        state_partition: Some(0),
        key: None,
        payload: json.as_bytes().to_vec(),
        cut_from: None,
        append_time_ms: None,
    }
}

#[test]
fn a_topic_read_ahead_does_not_make_another_topics_complaints_late() {
    // A backlog as a consumer may read it: two days of orders first, then the first day's
    // complaints from the other topic. The watermark trails the slowest partition still
    // delivering, and one assigned but silent holds it, so none of the complaints is late.
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), settings(1_000));
    let topics = [
        "customer.orders".to_owned(),
        "customer.complaints".to_owned(),
    ];
    processor.assign(&[(topics[0].clone(), 0), (topics[1].clone(), 0)], NOW_MS);
    let orders: Vec<_> = (0..48 * 6)
        .map(|i| {
            let at = START + i * 10 * 60_000;
            let json = format!(
                r#"{{"event_id":"o{i}","customer_id":"c{}","type":"order.placed","occurred_at":"{}","order_id":"o{i}","amount_minor":100,"margin_minor":10}}"#,
                i % 7,
                format_millis(at)
            );
            kafka_record(&topics[0], i, &json)
        })
        .collect();
    let complaints: Vec<_> = (0..24 * 3)
        .map(|i| {
            kafka_record(
                &topics[1],
                i,
                &complaint(i as usize, START + i * 20 * 60_000, "billing"),
            )
        })
        .collect();
    let first = processor.process(&orders, NOW_MS).unwrap();
    assert!(
        first.closed_windows.is_empty(),
        "the silent complaints topic holds the watermark"
    );
    let second = processor.process(&complaints, NOW_MS).unwrap();
    assert_eq!(second.count("late"), 0);
    assert_eq!(second.count("applied"), 72);
    // Both topics fall silent; once they are idle the watermark moves to the newest order.
    assert!(
        idle_polls(&mut processor, NOW_MS, NOW_MS + 5_000).is_empty(),
        "not idle yet"
    );
    assert!(!idle_polls(&mut processor, NOW_MS + 5_000, NOW_MS + 11_000).is_empty());
    let hourly: Vec<Value> = store
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.topic == "customer.complaint-trends")
        .map(|r| serde_json::from_slice::<Value>(&r.value.unwrap()).unwrap())
        .filter(|v| v["category"] == "billing" && v["record_id"].as_str().unwrap().contains("-60-"))
        .collect();
    // The newest order is at 47:50, so the watermark is 46:50: hours 0 to 45 have closed.
    assert_eq!(hourly.len(), 46, "every hour up to the watermark");
    for window in &hourly[..24] {
        assert_eq!(window["opened"], 3, "{window}");
    }
    assert!(hourly[24..].iter().all(|w| w["opened"] == 0));
}

/// A record of the file source `test` at `offset`, on input `partition`.
fn on_partition(
    partition: i32,
    offset: i64,
    json: String,
) -> customer_pulse::processor::InputRecord {
    let mut record = file_record(offset, &json);
    record.source_partition = partition;
    record
}

/// A restarted processor knows how far each input partition got (the newest event time is
/// stored with the offsets) and, with nothing left to read, still closes the windows the input
/// already passed once its partitions go idle.
#[test]
fn after_a_restart_with_nothing_to_read_idle_partitions_still_close_the_windows() {
    let store = Store::in_memory();
    let assigned = [("test".to_owned(), 0), ("test".to_owned(), 1)];
    let mut first = Processor::new(store.clone(), settings(100));
    first.assign(&assigned, NOW_MS);
    // Partition 0 reaches four hours in; partition 1 only one: the slowest holds the watermark
    // at one hour minus the hour of lateness, so no window closes yet.
    let records: Vec<_> = (0..5)
        .map(|h| on_partition(0, h, complaint(h as usize, START + h * HOUR, "billing")))
        .chain((0..2).map(|h| {
            on_partition(
                1,
                h,
                complaint(10 + h as usize, START + h * HOUR, "billing"),
            )
        }))
        .collect();
    let report = first.process(&records, NOW_MS).unwrap();
    assert!(
        report.closed_windows.is_empty(),
        "{:?}",
        report.closed_windows
    );
    drop(first);

    // Restarted: both partitions assigned again, nothing new on either. Once they have been
    // idle for processing.idle_partition_seconds, the watermark is the newest any delivered
    // (four hours in) minus the lateness, and the first three hours close.
    let mut second = Processor::new(store.clone(), settings(100));
    second.assign(&assigned, NOW_MS);
    let idle = settings(100).idle_partition_ms;
    let reports = idle_polls(&mut second, NOW_MS, NOW_MS + idle + 1_000);
    let billing: Vec<_> = reports
        .iter()
        .flat_map(|r| &r.closed_windows)
        .filter(|w| w.category == "billing")
        .collect();
    let closed: Vec<i64> = billing
        .iter()
        .map(|w| (w.window_start - START) / HOUR)
        .collect();
    assert_eq!(closed, vec![0, 1, 2]);
    let counts: Vec<u32> = billing.iter().map(|w| w.opened).collect();
    assert_eq!(
        counts,
        vec![2, 2, 1],
        "both partitions' complaints, each once"
    );
}

/// The instance's own pause (a commit retried, a revocation waiting for its outbox, a restore
/// of another partition) is not silence of its input partitions: after a pause longer than the
/// idle time, a partition that the first batch holds nothing of still holds the watermark,
/// and its records, older than the other partition's, are not late when they come.
#[test]
fn a_pause_of_the_instance_does_not_make_its_partitions_idle() {
    let store = Store::in_memory();
    let assigned = [("test".to_owned(), 0), ("test".to_owned(), 1)];
    let mut processor = Processor::new(store.clone(), settings(100));
    processor.assign(&assigned, NOW_MS);
    let both = [
        on_partition(0, 0, complaint(0, START, "billing")),
        on_partition(1, 0, complaint(1, START, "billing")),
    ];
    processor.process(&both, NOW_MS).unwrap();
    // A pause a second longer than the idle time; then a batch of five more hours of partition
    // 0, and nothing of partition 1 (its records wait behind them in the consumer's queue).
    let resumed = NOW_MS + settings(100).idle_partition_ms + 1_000;
    processor.assign(&assigned, resumed);
    let ahead: Vec<_> = (1..6)
        .map(|h| {
            on_partition(
                0,
                h,
                complaint(10 + h as usize, START + h * HOUR, "billing"),
            )
        })
        .collect();
    let report = processor.process(&ahead, resumed).unwrap();
    assert!(
        report.closed_windows.is_empty(),
        "partition 1 holds the watermark: {:?}",
        report.closed_windows
    );
    let behind: Vec<_> = (1..4)
        .map(|h| {
            on_partition(
                1,
                h,
                complaint(20 + h as usize, START + h * HOUR, "billing"),
            )
        })
        .collect();
    let report = processor.process(&behind, resumed + 200).unwrap();
    assert_eq!(report.count("late"), 0);
    assert_eq!(report.count("applied"), 3);
}
