//! Complaint trends over real complaints: the CFPB extract in `../shared/data` (3,999 complaints
//! to the US Consumer Financial Protection Bureau, mostly of April 2023), each a
//! `complaint.opened` event. Every daily roll-up equals a recount written here from the CSV, its
//! z-score and spike flag a recomputation of DOMAIN.md's EWMA baseline; the complaints older
//! than the input's age limit are dead-lettered with their reason.

use std::collections::BTreeMap;

use customer_pulse::event::{format_millis, parse_millis};
use customer_pulse::processor::Processor;
use customer_pulse::store::Store;
use serde_json::Value;

use crate::real_data::{
    cfpb_complaints, cfpb_event, read_cfpb_with, Complaint, CFPB_CATEGORIES, CFPB_CLOCK_MS as NOW,
    CFPB_MAX_AGE_MS as MAX_AGE,
};
use crate::support::{file_record, settings};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

#[test]
fn daily_roll_ups_of_real_complaints_equal_a_recount_with_the_baseline_recomputed() {
    let complaints =
        cfpb_complaints(&crate::support::repo().join("../shared/data/cfpb_complaints_sample.csv"));
    assert_eq!(complaints.len(), 3_999);
    let mut settings = settings(1_000);
    read_cfpb_with(&mut settings);
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), settings);
    let records: Vec<_> = complaints
        .iter()
        .enumerate()
        .map(|(i, c)| file_record(i as i64, &cfpb_event(c)))
        .collect();
    for chunk in records.chunks(500) {
        processor.process(chunk, NOW).unwrap();
    }
    let outputs: Vec<_> = store
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();

    // Complaints received more than a year before the clock (2012, 2017, twice 2020) are
    // dead letters, each with its reason; all the others are counted.
    let (old, kept): (Vec<&Complaint>, Vec<&Complaint>) =
        complaints.iter().partition(|c| c.at < NOW - MAX_AGE);
    assert_eq!(old.len(), 4);
    let mut dead: Vec<String> = outputs
        .iter()
        .filter(|r| r.topic == "customer.events.dlq")
        .map(|r| {
            let reason = r.headers.iter().find(|(name, _)| name == "reason");
            assert_eq!(
                reason.map(|(_, v)| v.as_slice()),
                Some(&b"ancient_timestamp"[..])
            );
            let value: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
            value["complaint_id"].as_str().unwrap().to_owned()
        })
        .collect();
    // One dead letter each: a list, not a set.
    dead.sort();
    let mut too_old: Vec<String> = old.iter().map(|c| c.id.clone()).collect();
    too_old.sort();
    assert_eq!(dead, too_old);

    let mut daily: BTreeMap<(String, i64), Value> = BTreeMap::new();
    for r in outputs
        .iter()
        .filter(|r| r.topic == "customer.complaint-trends")
    {
        let value: Value = serde_json::from_slice(r.value.as_ref().unwrap()).unwrap();
        let at = |field: &str| parse_millis(value[field].as_str().unwrap()).unwrap();
        let start = at("window_start");
        if at("window_end") - start == DAY {
            let key = (value["category"].as_str().unwrap().to_owned(), start);
            assert!(daily.insert(key.clone(), value).is_none(), "{key:?} twice");
        }
    }

    // The recount: complaints per category and day.
    let mut opened: BTreeMap<(&str, i64), u64> = BTreeMap::new();
    for c in &kept {
        *opened
            .entry((c.category, c.at.div_euclid(DAY) * DAY))
            .or_default() += 1;
    }
    // Days close as the watermark, an hour behind the newest complaint, passes their end.
    let first_day = kept[0].at.div_euclid(DAY) * DAY;
    let watermark = kept[kept.len() - 1].at - HOUR;
    let closed_days = (watermark.div_euclid(DAY) * DAY - first_day) / DAY;
    assert!(closed_days > 100, "January to April");
    let counted: u64 = opened
        .iter()
        .filter(|((_, day), _)| day + DAY <= watermark)
        .map(|(_, n)| n)
        .sum();
    assert!(counted > 3_800, "the closed days hold most complaints");

    // DOMAIN.md's baseline: mu, an EWMA of the past days with lambda 0.2, the first full day
    // its own; z = (c - mu) / sqrt(mu), mu taken as at least 0.25; a spike when z > 3 and
    // c >= 5. The first day, which the input began in after midnight, is a warm-up: z 0, and
    // the baseline not moved.
    const LAMBDA: f64 = 0.2;
    let mut spikes = Vec::new();
    for category in CFPB_CATEGORIES.iter().chain(&["other"]) {
        let mut mu: Option<f64> = None;
        for k in 0..closed_days {
            let day = first_day + k * DAY;
            let what = format!("{category} on {}", format_millis(day));
            let record = daily
                .remove(&(category.to_string(), day))
                .unwrap_or_else(|| panic!("no daily record for {what}"));
            let count = opened.get(&(*category, day)).copied().unwrap_or(0);
            assert_eq!(record["opened"].as_u64(), Some(count), "{what}");
            let (z, spike) = if k == 0 {
                (0.0, false)
            } else {
                let c = count as f64;
                let base = mu.unwrap_or(c);
                mu = Some(LAMBDA * c + (1.0 - LAMBDA) * base);
                let z = (c - base) / base.max(0.25).sqrt();
                (z, z > 3.0 && count >= 5)
            };
            // The record's z is rounded to four decimals.
            let got = record["z_score"].as_f64().unwrap();
            assert!((got - z).abs() < 1e-4, "{what}: z {got}, recomputed {z}");
            assert_eq!(record["spike"].as_bool(), Some(spike), "{what}");
            if spike {
                spikes.push((*category, format_millis(day)));
            }
        }
    }
    assert!(
        daily.is_empty(),
        "daily records past the watermark or of unknown categories: {:?}",
        daily.keys().collect::<Vec<_>>()
    );
    // The extract's busiest day: 516 credit-reporting complaints on 20 April against a
    // baseline of about 100 (twice the day before).
    assert!(
        spikes.contains(&("credit_reporting", "2023-04-20T00:00:00.000Z".to_owned())),
        "{spikes:?}"
    );
}
