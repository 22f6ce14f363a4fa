//! Hostile input, bounded so the test command runs it: arbitrary bytes and arbitrary JSON thrown
//! at the decoder and the fold through the processor never panic, and every record ends either
//! applied (or duplicate, or late) or rejected with a known reason code, its offset committed.

use customer_pulse::decode::Reason;
use customer_pulse::processor::Processor;
use customer_pulse::store::Store;
use customer_pulse::telemetry::Telemetry;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::catalogue::NOW_MS;
use crate::support::{file_record, settings, EVENT_TYPES};

const FIELDS: [&str; 16] = [
    "order_id",
    "amount_minor",
    "margin_minor",
    "currency",
    "channel",
    "direction",
    "score",
    "reason",
    "complaint_id",
    "category",
    "severity",
    "satisfied",
    "referred_by",
    "first_response_seconds",
    "schema_version",
    "plan",
];

/// Any JSON value, a few levels deep.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,40}".prop_map(Value::from),
        Just(json!("2026-05-01T10:00:00Z")),
        Just(json!("2026-05-01T10:00:00+25:00")),
        Just(json!(u64::MAX)),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An event-shaped object: a real or bogus type, envelope fields that are right or arbitrary,
/// and type fields with arbitrary values, so the decoder's deeper paths are reached too.
fn event_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select([&EVENT_TYPES[..], &["no.such.type", ""]].concat()),
        prop_oneof![Just(json!("e-1")), any_json()],
        prop_oneof![Just(json!("c-1")), Just(json!("c-2")), any_json()],
        prop_oneof![Just(json!("2026-05-01T10:00:00Z")), any_json()],
        prop::collection::vec((prop::sample::select(FIELDS.to_vec()), any_json()), 0..6),
    )
        .prop_map(|(kind, id, customer, at, fields)| {
            let mut object = serde_json::Map::new();
            object.insert("type".into(), json!(kind));
            object.insert("event_id".into(), id);
            object.insert("customer_id".into(), customer);
            object.insert("occurred_at".into(), at);
            for (name, value) in fields {
                object.insert(name.into(), value);
            }
            Value::Object(object)
        })
}

/// Runs the payloads through one processor, one record each, and checks every outcome, and
/// that every label value the metrics then carry comes from a closed set.
fn check(payloads: &[Vec<u8>]) {
    let store = Store::in_memory();
    let settings = settings(8);
    let telemetry = Telemetry::new();
    let mut processor = Processor::new(store.clone(), settings.clone());
    let codes: Vec<&str> = Reason::ALL.iter().map(|r| r.code()).collect();
    for (offset, payload) in payloads.iter().enumerate() {
        let mut record = file_record(offset as i64, "");
        record.payload = payload.clone();
        let report = processor
            .process(&[record], NOW_MS)
            .expect("the memory store never fails");
        telemetry.record_batch(&report, 0.001, NOW_MS);
        let settled = report.count("applied")
            + report.count("duplicate")
            + report.count("late")
            + report.count("erased")
            + report.count("rejected");
        assert_eq!(settled, 1, "one outcome per record: {:?}", report.events);
        for reason in report.dead_letters.keys() {
            assert!(codes.contains(reason), "unknown reason {reason}");
            assert_ne!(*reason, "processing_error", "nothing panicked inside");
        }
        assert_eq!(store.offset("test", 0).unwrap(), Some(offset as i64 + 1));
    }
    labels_are_bounded(&telemetry.render(), &settings);
}

/// Every label value of every series is one of its closed set (CONTRACT section 3): input can
/// never add a series.
fn labels_are_bounded(metrics: &str, settings: &customer_pulse::processor::ProcessorSettings) {
    let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
    let tiers: Vec<String> = settings.risk.tiers.iter().map(|t| t.name.clone()).collect();
    let mut renewal = settings.rules.renewal_reasons.clone();
    renewal.extend(owned(&["other", "unspecified"]));
    let mut rfm: Vec<String> = settings.rfm_rules.iter().map(|r| r.name.clone()).collect();
    rfm.push("other".into());
    let mut types = owned(&EVENT_TYPES);
    types.push("invalid".into());
    let reasons: Vec<String> = customer_pulse::risk::REASON_CODES
        .iter()
        .map(|c| c.code().to_owned())
        .collect();
    let allowed = |metric: &str, label: &str| -> Vec<String> {
        match (metric, label) {
            (_, "category") => settings.trends.categories.clone(),
            (_, "severity") => owned(&["low", "medium", "high", "critical"]),
            (_, "segment") => tiers.clone(),
            (_, "lifecycle") => owned(&["new", "active", "at_risk", "lost", "won_back"]),
            (_, "level") => owned(&["low", "medium", "high"]),
            (_, "rfm_segment") => rfm.clone(),
            (_, "spike") => owned(&["true", "false"]),
            (_, "channel") => owned(&["web", "phone", "email", "store", "chat", "mobile", "other"]),
            (_, "topic") => owned(&["test"]),
            (_, "type") => types.clone(),
            (_, "outcome") => owned(&["applied", "duplicate", "rejected", "late", "erased"]),
            ("customer_pulse_dead_letters_total", "reason") => {
                Reason::ALL.iter().map(|r| r.code().to_owned()).collect()
            }
            ("customer_pulse_lost_customers_total", "reason") => reasons.clone(),
            ("customer_pulse_renewals_total", "reason") => renewal.clone(),
            ("customer_pulse_kafka_errors_total", "client") => owned(&["consumer", "producer"]),
            ("customer_pulse_limits_reached_total", "limit") => {
                owned(&["open_orders", "open_complaints", "dedup_ids"])
            }
            ("customer_pulse_customer_cache_lookups_total", "result") => {
                owned(&["hit", "stored", "absent"])
            }
            ("customer_pulse_processing_latency_seconds_bucket", "le")
            | ("customer_pulse_commit_duration_seconds_bucket", "le")
            | ("customer_pulse_first_response_seconds_bucket", "le")
            | ("customer_pulse_delivery_seconds_bucket", "le")
            | ("customer_pulse_complaint_resolution_seconds_bucket", "le") => Vec::new(),
            _ => panic!("{metric}: unexpected label {label}"),
        }
    };
    let mut checked = 0;
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, rest)) = line.split_once('{') else {
            continue;
        };
        let labels = rest.split_once('}').map_or("", |(l, _)| l);
        for pair in labels.split("\",").filter(|p| !p.is_empty()) {
            let (label, value) = pair.split_once("=\"").unwrap();
            let value = value.trim_end_matches('"');
            let set = allowed(name, label);
            if label != "le" {
                assert!(
                    set.iter().any(|v| v == value),
                    "{name}{{{label}={value:?}}} not in {set:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "some labelled series exist: {metrics}");
}

/// The fuzz target's committed corpus (tests/fuzz/corpus/process), replayed by the test command
/// as the target reads it, one record per line and a fresh processor per input: every input the
/// fuzzer kept, and every crash it once found, stays settled.
#[test]
fn the_fuzz_corpus_is_applied_or_rejected_with_a_reason() {
    let dir = crate::support::repo().join("tests/fuzz/corpus/process");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(files.len() >= 20, "a corpus of {} inputs", files.len());
    for file in files {
        let bytes = std::fs::read(&file).unwrap();
        let lines: Vec<Vec<u8>> = bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
        check(&lines);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_applied_or_rejected_with_a_reason(
        payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 1..8)
    ) {
        check(&payloads);
    }

    #[test]
    fn arbitrary_json_is_applied_or_rejected_with_a_reason(
        values in prop::collection::vec(prop_oneof![any_json(), event_like()], 1..12)
    ) {
        let payloads: Vec<Vec<u8>> = values.iter().map(|v| v.to_string().into_bytes()).collect();
        check(&payloads);
    }
}
