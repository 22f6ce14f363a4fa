//! Segment metrics through the processor: new, lost (once, with its strongest reason) and
//! won-back customers, renewals and referrals in the day they happened; and the revenue, margin,
//! orders and new customers per segment and day equal a batch recount, written here, over the
//! UCI Online Retail invoices, however the events are batched and when they are delivered twice;
//! so do the segment counters of `/metrics`, summed over the days.

use std::collections::BTreeMap;

use customer_pulse::event::{format_millis, parse_millis};
use customer_pulse::processor::{InputRecord, Processor, ProcessorSettings};
use customer_pulse::store::Store;
use serde_json::Value;

use crate::catalogue::NOW_MS;
use crate::real_data::{event, sorted_by_time};
use crate::support::{file_record, settings_with_partitions};

const DAY: i64 = 86_400_000;
/// 2026-01-01T00:00:00Z.
const START: i64 = 1_767_225_600_000;

fn at(day: i64, hour: i64) -> String {
    format_millis(START + day * DAY + hour * 3_600_000)
}

fn order(customer: &str, day: i64, amount: i64) -> [String; 2] {
    let id = format!("{customer}-{day}");
    [
        event(
            &format!("o-{id}"),
            customer,
            "order.placed",
            &at(day, 10),
            &format!(
                r#""order_id":"{id}","amount_minor":{amount},"margin_minor":{}"#,
                amount / 4
            ),
        ),
        event(
            &format!("d-{id}"),
            customer,
            "order.delivered",
            &at(day + 1, 9),
            &format!(r#""order_id":"{id}""#),
        ),
    ]
}

/// Runs the events (ordered by event time) in batches of `batch` through one partition and
/// returns the output values by topic.
fn run(events: &[String], batch: usize) -> BTreeMap<String, Vec<Value>> {
    run_with_metrics(events, batch).outputs
}

/// What [`run_with_metrics`] leaves.
struct Ran {
    /// The output values by topic.
    outputs: BTreeMap<String, Vec<Value>>,
    /// The customers per named RFM segment when the last day closed.
    rfm: BTreeMap<String, i64>,
    /// `/metrics` as the batches' reports left it.
    metrics: String,
    store: Store,
}

/// Also returns the RFM segments, the metrics and the store.
fn run_with_metrics(events: &[String], batch: usize) -> Ran {
    run_with_settings(events, batch, settings_with_partitions(100_000, 1))
}

/// [`run_with_metrics`] under `settings`.
fn run_with_settings(events: &[String], batch: usize, settings: ProcessorSettings) -> Ran {
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), settings);
    let telemetry = customer_pulse::telemetry::Telemetry::new();
    let records: Vec<InputRecord> = events
        .iter()
        .enumerate()
        .map(|(i, json)| file_record(i as i64, json))
        .collect();
    let mut rfm = BTreeMap::new();
    for chunk in records.chunks(batch) {
        let report = processor.process(chunk, NOW_MS).unwrap();
        telemetry.record_batch(&report, 0.0, NOW_MS);
        if let Some(counts) = report.rfm_segments {
            rfm = counts;
        }
    }
    let mut by_topic: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (_, record) in store.outbox(usize::MAX).unwrap() {
        if let Some(value) = record.value {
            by_topic
                .entry(record.topic)
                .or_default()
                .push(serde_json::from_slice(&value).unwrap());
        }
    }
    Ran {
        outputs: by_topic,
        rfm,
        metrics: telemetry.render(),
        store,
    }
}

/// The days (counted from `START`) on which `segment` has a non-zero `field` (a path into the
/// record), with that value.
fn days_with(records: &[Value], segment: &str, field: &[&str]) -> Vec<(i64, Value)> {
    records
        .iter()
        .filter(|r| r["segment"] == segment)
        .filter_map(|r| {
            let v = field.iter().fold(r, |v, f| &v[*f]);
            let nonzero = match v {
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::Object(o) => !o.is_empty(),
                _ => false,
            };
            let start = parse_millis(r["window_start"].as_str().unwrap()).unwrap();
            nonzero.then(|| ((start - START) / DAY, v.clone()))
        })
        .collect()
}

/// The day (counted from `START`) of an RFC 3339 time.
fn day_of(time: &Value) -> i64 {
    (parse_millis(time.as_str().unwrap()).unwrap() - START).div_euclid(DAY)
}

#[test]
fn new_lost_won_back_renewals_and_referrals_land_in_their_segment_and_day() {
    let mut events = Vec::new();
    // sam buys weekly for four weeks, complains on day 28 and is never answered, goes silent,
    // and comes back on day 120.
    for day in [0, 7, 14, 21, 28, 120] {
        events.extend(order("sam", day, 2_000));
    }
    events.push(event(
        "k-sam",
        "sam",
        "complaint.opened",
        &at(28, 12),
        r#""complaint_id":"k1","category":"delivery","severity":"high""#,
    ));
    // pat buys every day: the clock of the partition, never lost.
    for day in 0..=125 {
        events.extend(order("pat", day, 100));
    }
    // cat is gold from the first order, returns 40,000 of it on day 5 and cancels on day 10.
    events.extend(order("cat", 0, 150_000));
    events.push(event(
        "ret-cat",
        "cat",
        "order.returned",
        &at(5, 8),
        r#""order_id":"cat-0","amount_minor":40000"#,
    ));
    events.push(event(
        "x-cat",
        "cat",
        "subscription.cancelled",
        &at(10, 8),
        r#""reason":"Too expensive""#,
    ));
    // rob registers on day 1 referred by cat (gold) and renews twice.
    events.push(event(
        "r-rob",
        "rob",
        "customer.registered",
        &at(1, 9),
        r#""referred_by":"cat""#,
    ));
    events.extend(order("rob", 1, 3_000));
    events.push(event(
        "n1-rob",
        "rob",
        "subscription.renewed",
        &at(2, 9),
        r#""amount_minor":900,"reason":"Loyalty""#,
    ));
    events.push(event(
        "n2-rob",
        "rob",
        "subscription.renewed",
        &at(2, 10),
        r#""amount_minor":900"#,
    ));
    // rob registers again on day 4, referred by cat again: a referral counts once.
    events.push(event(
        "r2-rob",
        "rob",
        "customer.registered",
        &at(4, 9),
        r#""referred_by":"cat""#,
    ));
    let events = sorted_by_time(events);
    let Ran { outputs, store, .. } = run_with_metrics(&events, 7);
    let days = &outputs["customer.segment-metrics"];
    let risk = &outputs["customer.churn-risk"];

    // New customers: sam, pat and cat on day 0 (cat in gold: its first order made it gold),
    // rob on day 1.
    assert_eq!(
        days_with(days, "standard", &["new_customers", "count"]),
        vec![(0, 2.into()), (1, 1.into())]
    );
    assert_eq!(
        days_with(days, "standard", &["new_customers", "value_minor"]),
        vec![(0, 2_100.into()), (1, 3_000.into())]
    );
    assert_eq!(
        days_with(days, "gold", &["new_customers", "count"]),
        vec![(0, 1.into())]
    );
    // The referral counts for the referrer's segment, once; renewals with their normalised
    // reasons.
    assert_eq!(days_with(days, "gold", &["referrals"]), vec![(1, 1.into())]);
    assert_eq!(
        days_with(days, "standard", &["renewals", "reasons"]),
        vec![(2, serde_json::json!({"loyalty": 1, "unspecified": 1}))]
    );

    // cat is lost on the day it cancels, with the revenue it kept (its order less its return),
    // for the cancellation.
    assert_eq!(
        days_with(days, "gold", &["lost_customers", "count"]),
        vec![(10, 1.into())],
        "cat is lost once"
    );
    assert_eq!(
        days_with(days, "gold", &["lost_customers", "reasons"]),
        vec![(10, serde_json::json!({"cancelled": 1}))]
    );
    assert_eq!(
        days_with(days, "gold", &["lost_customers", "value_minor"]),
        vec![(10, 110_000.into())]
    );

    // sam is lost once, through silence, on the day its churn-risk record says so, and the
    // reason counted is the strongest it had: the unresolved complaint.
    let sam: Vec<&Value> = risk.iter().filter(|r| r["customer_id"] == "sam").collect();
    let lost_at: Vec<&Value> = sam
        .windows(2)
        .filter(|w| w[0]["lifecycle"] != "lost" && w[1]["lifecycle"] == "lost")
        .map(|w| &w[1]["as_of"])
        .collect();
    assert_eq!(lost_at.len(), 1, "sam turns lost once: {sam:#?}");
    let lost_day = day_of(lost_at[0]);
    assert!((29..120).contains(&lost_day), "lost on day {lost_day}");
    let lost_record = sam.iter().find(|r| r["lifecycle"] == "lost").unwrap();
    let codes: Vec<&str> = lost_record["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"unresolved_complaint"), "{codes:?}");
    assert!(codes.contains(&"inactive"), "{codes:?}");
    let sam_lost = days_with(days, "standard", &["lost_customers", "reasons"]);
    assert!(
        sam_lost.contains(&(lost_day, serde_json::json!({"unresolved_complaint": 1}))),
        "{sam_lost:?}"
    );
    // And won back by the order on day 120, the record of which says so.
    let back = sam
        .iter()
        .find(|r| r["caused_by_event_id"] == "o-sam-120")
        .unwrap();
    assert_eq!(back["lifecycle"], "won_back");
    assert!(back["rfm"]["segment"].is_string(), "{back}");
    assert!((1..=5).contains(&back["rfm"]["r"].as_u64().unwrap()));
    assert_eq!(
        days_with(days, "standard", &["won_back", "count"]),
        vec![(120, 1.into())]
    );
    // Each keeps its losses for the lost-customer review: when its record turned lost, in
    // which segment, the reason counted, the revenue it had kept then, and when it was won back.
    let losses = |customer: &str| {
        let stored = store.customer_record(0, customer).unwrap().expect("stored");
        serde_json::to_value(&stored.losses).unwrap()
    };
    let millis = |v: &Value| parse_millis(v.as_str().unwrap()).unwrap();
    assert_eq!(
        losses("sam"),
        serde_json::json!([{
            "at": millis(lost_at[0]),
            "segment": "standard",
            "reason": "unresolved_complaint",
            "value_minor": 10_000,
            "won_back_at": millis(&back["as_of"]),
        }])
    );
    assert_eq!(
        losses("cat"),
        serde_json::json!([{
            "at": START + 10 * DAY + 8 * 3_600_000,
            "segment": "gold",
            "reason": "cancelled",
            "value_minor": 110_000,
            "won_back_at": null,
        }])
    );
    assert_eq!(losses("pat"), serde_json::json!([]));

    // Everyone lost is counted once, whatever came after: the lost count of all days equals the
    // number of customers whose records turned lost.
    let turned_lost: usize = ["sam", "pat", "cat", "rob"]
        .iter()
        .map(|c| {
            let records: Vec<&Value> = risk.iter().filter(|r| r["customer_id"] == *c).collect();
            let first = usize::from(records[0]["lifecycle"] == "lost");
            first
                + records
                    .windows(2)
                    .filter(|w| w[0]["lifecycle"] != "lost" && w[1]["lifecycle"] == "lost")
                    .count()
        })
        .sum();
    let counted: u64 = days
        .iter()
        .map(|r| r["lost_customers"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted as usize, turned_lost);

    // The population at each close adds up: pat and one of the others are active at the end.
    let last = days.last().unwrap();
    let active: i64 = days
        .iter()
        .filter(|r| r["window_start"] == last["window_start"])
        .map(|r| r["active_customers"].as_i64().unwrap())
        .sum();
    let lifecycles: i64 = days
        .iter()
        .filter(|r| r["window_start"] == last["window_start"])
        .flat_map(|r| r["customers_by_lifecycle"].as_object().unwrap().values())
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(
        lifecycles, 4,
        "every customer is counted in exactly one lifecycle"
    );
    assert!(active >= 2, "pat and sam are not lost at the end");
}

/// What a segment did in a day, recounted from the events.
#[derive(Debug, Default, PartialEq)]
struct Recount {
    orders: u64,
    revenue: i64,
    margin: i64,
    new_count: u64,
    new_value: i64,
}

/// The batch recomputation: each order counts for the segment its customer is in once the order
/// is added (the documented default tiers over the trailing twelve calendar months, the order's
/// included: gold from 1,000.00 of revenue with a margin of at least 0, else standard), in the
/// UTC day of its event time.
fn recount(events: &[String]) -> BTreeMap<(String, i64), Recount> {
    // Customer -> month ("YYYY-MM" as year * 12 + month) -> (revenue, margin).
    let mut customers: BTreeMap<String, BTreeMap<i64, (i64, i64)>> = BTreeMap::new();
    let mut days: BTreeMap<(String, i64), Recount> = BTreeMap::new();
    for json in events {
        let v: Value = serde_json::from_str(json).unwrap();
        if v["type"] != "order.placed" {
            continue;
        }
        let amount = v["amount_minor"].as_i64().unwrap();
        let margin = v["margin_minor"].as_i64().unwrap();
        let first = !customers.contains_key(v["customer_id"].as_str().unwrap());
        let when = v["occurred_at"].as_str().unwrap();
        let month = when[..4].parse::<i64>().unwrap() * 12 + when[5..7].parse::<i64>().unwrap();
        let months = customers
            .entry(v["customer_id"].as_str().unwrap().to_owned())
            .or_default();
        let bucket = months.entry(month).or_default();
        bucket.0 += amount;
        bucket.1 += margin;
        let (revenue, margin_12) = months
            .range(month - 11..=month)
            .fold((0, 0), |(r, g), (_, (a, b))| (r + a, g + b));
        let segment = if revenue >= 100_000 && margin_12 >= 0 {
            "gold"
        } else {
            "standard"
        };
        let time = parse_millis(v["occurred_at"].as_str().unwrap()).unwrap();
        let day = days
            .entry((segment.to_owned(), time.div_euclid(DAY) * DAY))
            .or_default();
        day.orders += 1;
        day.revenue += amount;
        day.margin += margin;
        if first {
            day.new_count += 1;
            day.new_value += amount;
        }
    }
    days
}

/// A customer that names itself as its referrer was referred by nobody: that counts no
/// referral, and its first registration naming another customer still counts one.
#[test]
fn a_customer_naming_itself_as_referrer_is_no_referral() {
    let mut events = Vec::new();
    events.extend(order("cat", 0, 150_000));
    for (id, day, referrer) in [("r1", 1, "ann"), ("r2", 3, "cat"), ("r3", 4, "cat")] {
        events.push(event(
            id,
            "ann",
            "customer.registered",
            &at(day, 9),
            &format!(r#""referred_by":"{referrer}""#),
        ));
    }
    // pat moves the watermark past the last registration's day.
    events.extend(order("pat", 6, 100));
    let outputs = run(&sorted_by_time(events), 2);
    let days = &outputs["customer.segment-metrics"];
    assert_eq!(days_with(days, "gold", &["referrals"]), vec![(3, 1.into())]);
    assert!(days_with(days, "standard", &["referrals"]).is_empty());
}
/// UCI Online Retail publishes no deliveries, so every order stays open. With the default
/// `risk.late_delivery_days` every customer lost in its year is lost for `late_delivery`;
/// with 0 (no order is ever late) just as many are lost, none of them for it.
#[test]
fn online_retail_loses_no_customer_for_late_delivery_with_late_delivery_off() {
    let events = crate::real_data::online_retail(
        &crate::support::repo().join("../shared/data/online_retail.csv.gz"),
    );
    let lost = |settings: ProcessorSettings| -> (u64, BTreeMap<String, u64>) {
        let outputs = run_with_settings(&events, 5_000, settings).outputs;
        let mut count = 0;
        let mut reasons = BTreeMap::new();
        for day in &outputs["customer.segment-metrics"] {
            count += day["lost_customers"]["count"].as_u64().unwrap();
            for (reason, n) in day["lost_customers"]["reasons"].as_object().unwrap() {
                *reasons.entry(reason.clone()).or_default() += n.as_u64().unwrap();
            }
        }
        reasons.retain(|_, n| *n > 0);
        (count, reasons)
    };
    let (by_default, default_reasons) = lost(settings_with_partitions(100_000, 1));
    assert!(by_default > 50, "{by_default} lost in the year");
    assert_eq!(
        default_reasons,
        BTreeMap::from([("late_delivery".to_owned(), by_default)]),
        "every order stays open, so every lost customer has late orders"
    );
    let mut off = settings_with_partitions(100_000, 1);
    off.risk.late_delivery_ms = 0;
    let (with_off, off_reasons) = lost(off);
    assert_eq!(
        with_off, by_default,
        "the same customers lost: {off_reasons:?}"
    );
    assert!(
        !off_reasons.contains_key("late_delivery"),
        "{off_reasons:?}"
    );
    assert_eq!(
        off_reasons.values().sum::<u64>(),
        with_off,
        "{off_reasons:?}"
    );
}

#[test]
fn segment_totals_equal_a_batch_recount_of_online_retail_however_delivered() {
    let events = crate::real_data::online_retail(
        &crate::support::repo().join("../shared/data/online_retail.csv.gz"),
    );
    assert!(events.len() > 20_000, "{} events", events.len());
    let expected = recount(&events);
    let records =
        |outputs: &BTreeMap<String, Vec<Value>>| outputs["customer.segment-metrics"].clone();
    let Ran {
        outputs,
        rfm,
        metrics,
        ..
    } = run_with_metrics(&events, 1_000);
    let once = records(&outputs);
    assert!(once.len() > 2 * 300, "about a year of days in two segments");
    let mut days_seen = std::collections::BTreeSet::new();
    for r in &once {
        let segment = r["segment"].as_str().unwrap().to_owned();
        let day = parse_millis(r["window_start"].as_str().unwrap()).unwrap();
        days_seen.insert(day);
        let got = Recount {
            orders: r["orders"].as_u64().unwrap(),
            revenue: r["revenue_minor"].as_i64().unwrap(),
            margin: r["margin_minor"].as_i64().unwrap(),
            new_count: r["new_customers"]["count"].as_u64().unwrap(),
            new_value: r["new_customers"]["value_minor"].as_i64().unwrap(),
        };
        let want = expected.get(&(segment.clone(), day));
        assert_eq!(
            &got,
            want.unwrap_or(&Recount::default()),
            "{segment} {}",
            format_millis(day)
        );
    }
    // Every day with orders was emitted, except those the watermark has not passed yet.
    let last_closed = *days_seen.last().unwrap();
    for (segment, day) in expected.keys().filter(|(_, d)| *d <= last_closed) {
        assert!(
            once.iter().any(|r| r["segment"] == segment.as_str()
                && parse_millis(r["window_start"].as_str().unwrap()) == Some(*day)),
            "{segment} {} missing",
            format_millis(*day)
        );
    }
    // The named RFM segments when the last day closed equal a recount by mid-rank.
    let last_day_end = last_closed + DAY;
    assert_eq!(rfm, rfm_recount(&events, last_day_end));
    assert!(rfm["champions"] > 0 && rfm["hibernating"] > 0, "{rfm:?}");
    // The segment counters of `/metrics`, which count each order when it is folded, add up to
    // the recount over every day, the one still open included.
    for segment in ["gold", "standard"] {
        let total = |field: fn(&Recount) -> i64| -> f64 {
            expected
                .iter()
                .filter(|((s, _), _)| s == segment)
                .map(|(_, r)| field(r) as f64)
                .sum()
        };
        for (metric, want) in [
            ("orders_total", total(|r| r.orders as i64)),
            ("revenue_minor_total", total(|r| r.revenue)),
            ("new_customers_total", total(|r| r.new_count as i64)),
            ("new_customer_value_minor_total", total(|r| r.new_value)),
        ] {
            let series = format!("customer_pulse_{metric}{{segment=\"{segment}\"}} ");
            let got = metrics
                .lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .and_then(|v| v.parse::<f64>().ok());
            assert_eq!(got, Some(want), "{series}");
        }
    }
    // Small batches, and every batch delivered twice (at-least-once redelivery), change nothing.
    assert_same(&records(&run(&events, 37)), &once, "batches of 37");
    let twice: Vec<String> = events
        .chunks(500)
        .flat_map(|chunk| chunk.iter().chain(chunk.iter()).cloned())
        .collect();
    let Ran {
        outputs: twice_outputs,
        metrics: twice_metrics,
        ..
    } = run_with_metrics(&twice, 500);
    assert_same(&records(&twice_outputs), &once, "every batch twice");
    let segment_counters = |metrics: &str| -> Vec<String> {
        let names = [
            "orders",
            "revenue",
            "new_customer",
            "lost_customer",
            "won_back",
            "renewals",
        ];
        metrics
            .lines()
            .filter(|l| {
                names
                    .iter()
                    .any(|n| l.starts_with(&format!("customer_pulse_{n}")))
            })
            .map(str::to_owned)
            .collect()
    };
    let counted = segment_counters(&metrics);
    assert!(counted.len() >= 8, "{counted:?}");
    assert_eq!(
        segment_counters(&twice_metrics),
        counted,
        "every batch twice"
    );
}

fn assert_same(got: &[Value], want: &[Value], case: &str) {
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "{case}");
    }
    assert_eq!(got.len(), want.len(), "{case}");
}

/// The batch recomputation of the named RFM segments when the last day closed: every customer's
/// last purchase day and order count after the events up to the one that moved the watermark
/// (newest event time minus the hour of allowed lateness) past that day's end, scored 1..5 by
/// mid-rank against everyone, named by the documented default rules.
fn rfm_recount(events: &[String], last_day_end: i64) -> BTreeMap<String, i64> {
    let mut points: BTreeMap<String, (i64, u32)> = BTreeMap::new();
    for json in events {
        let v: Value = serde_json::from_str(json).unwrap();
        let time = parse_millis(v["occurred_at"].as_str().unwrap()).unwrap();
        if v["type"] == "order.placed" {
            let p = points
                .entry(v["customer_id"].as_str().unwrap().to_owned())
                .or_default();
            p.0 = p.0.max(time.div_euclid(DAY));
            p.1 += 1;
        }
        if time - 3_600_000 >= last_day_end {
            break;
        }
    }
    let n = points.len() as f64;
    let score = |value: i64, all: &[i64]| -> u8 {
        let below = all.iter().filter(|v| **v < value).count() as f64;
        let equal = all.iter().filter(|v| **v == value).count() as f64;
        (1.0 + (5.0 * (below + equal / 2.0) / n).floor()).min(5.0) as u8
    };
    let days: Vec<i64> = points.values().map(|p| p.0).collect();
    let orders: Vec<i64> = points.values().map(|p| i64::from(p.1)).collect();
    type Range = (u8, u8);
    let rules: [(&str, Range, Range); 7] = [
        ("champions", (4, 5), (4, 5)),
        ("loyal", (3, 5), (3, 5)),
        ("promising", (4, 5), (1, 2)),
        ("cant_lose", (1, 2), (5, 5)),
        ("at_risk", (1, 2), (3, 4)),
        ("hibernating", (1, 2), (1, 2)),
        ("need_attention", (1, 5), (1, 5)),
    ];
    let mut counts: BTreeMap<String, i64> = rules
        .iter()
        .map(|(name, _, _)| ((*name).to_owned(), 0))
        .chain([("other".to_owned(), 0)])
        .collect();
    for (day, orders_of) in points.values() {
        let r = score(*day, &days);
        let f = score(i64::from(*orders_of), &orders);
        let name = rules
            .iter()
            .find(|(_, (rl, rh), (fl, fh))| (*rl..=*rh).contains(&r) && (*fl..=*fh).contains(&f))
            .map_or("other", |(name, _, _)| name);
        *counts.get_mut(name).unwrap() += 1;
    }
    counts
}

#[test]
fn a_silent_customer_leaves_its_tier_when_its_revenue_ages_out_of_the_trailing_months() {
    // gus buys for 1,500.00 on 2024-12-07 (gold) and never again; pat buys daily until
    // 2026-01-01 (the tests' clock is mid-2026, so all of this is in the past).
    let mut events: Vec<String> = order("gus", -390, 150_000).into();
    for day in -395..=0 {
        events.extend(order("pat", day, 100));
    }
    let outputs = run(&sorted_by_time(events), 500);
    let gus: Vec<&Value> = outputs["customer.churn-risk"]
        .iter()
        .filter(|r| r["customer_id"] == "gus")
        .collect();
    assert_eq!(gus[0]["segment"], "gold");
    // December 2024 leaves the twelve months when December 2025 starts: a timer, not an event.
    let dropped = gus
        .iter()
        .find(|r| r["segment"] == "standard")
        .expect("gus is standard again");
    assert_eq!(dropped["as_of"], "2025-12-01T00:00:00.000Z");
    assert_eq!(dropped["caused_by_event_id"], Value::Null);
    // And the population moved with it: in the last closed day gold has nobody.
    let days = &outputs["customer.segment-metrics"];
    let last = days.last().unwrap()["window_start"].clone();
    let gold = days
        .iter()
        .find(|r| r["window_start"] == last && r["segment"] == "gold")
        .unwrap();
    assert_eq!(
        gold["customers_by_lifecycle"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_i64().unwrap())
            .sum::<i64>(),
        0
    );
}
