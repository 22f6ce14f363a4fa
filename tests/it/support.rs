//! Shared test helpers: processor settings, input records, and totals computed independently of the
//! fold, straight from the contract JSON.

use std::collections::BTreeMap;
use std::path::PathBuf;

use customer_pulse::fold::FoldLimits;
use customer_pulse::processor::{InputRecord, OutputTopics, ProcessorSettings};

/// The repository's root, as `cargo test` tells the test at run time. Not `env!`, which is
/// fixed at build time: with a target directory shared between checkouts (`tests/run.sh` keeps
/// one under `~/.cache`), cargo takes a test binary built from another checkout as fresh when
/// that build is newer than this checkout's files, and `env!` would name the other checkout.
/// The build's path serves only a binary run without cargo.
pub fn repo() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// Only [`repo`] names the repository at build time: on 2026-12-05 the TLS tests' certificate
/// paths did (`wire::tls_file`), and a test binary another checkout had built into the shared
/// target directory looked for them under that checkout, gone; socat found no certificate and
/// never listened.
#[test]
fn no_test_names_the_repository_at_build_time() {
    let needle = concat!("env!(", "\"CARGO_MANIFEST_DIR\")");
    let mut offenders = Vec::new();
    for dir in ["tests/it", "benches", "benches/common"] {
        for entry in std::fs::read_dir(repo().join(dir)).expect("source directory") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("source");
            // The fallbacks for a binary run without cargo: `repo` here and in the benchmarks.
            let allowed = if path.ends_with("support.rs") || path.ends_with("common/mod.rs") {
                1
            } else {
                0
            };
            if text.matches(needle).count() > allowed {
                offenders.push(path.display().to_string());
            }
        }
    }
    assert!(offenders.is_empty(), "use repo() instead in {offenders:?}");
}

pub fn settings(cache_customers: usize) -> ProcessorSettings {
    settings_with_partitions(cache_customers, 4)
}

pub fn settings_with_partitions(cache_customers: usize, partitions: i32) -> ProcessorSettings {
    ProcessorSettings {
        rules: customer_pulse::decode::Rules {
            max_event_bytes: 4096,
            ..crate::catalogue::rules()
        },
        limits: FoldLimits {
            dedup_horizon_ms: 30 * 86_400_000,
            max_dedup_ids: 10_000,
            max_open_items: 1_000,
            clock_skew_ms: 300_000,
        },
        topics: OutputTopics {
            churn_risk: "customer.churn-risk".into(),
            complaint_trends: "customer.complaint-trends".into(),
            segment_metrics: "customer.segment-metrics".into(),
            dead_letter: "customer.events.dlq".into(),
        },
        partitions,
        cache_customers,
        risk: customer_pulse::risk::RiskSettings::default(),
        trends: customer_pulse::trends::TrendSettings::defaults(&["billing", "delivery"]),
        allowed_lateness_ms: 3_600_000,
        idle_partition_ms: 10_000,
        rfm_rules: customer_pulse::rfm::default_rules(),
        aggregation: customer_pulse::processor::Aggregation::Here,
        panic_on_event_id: None,
    }
}

/// The contract's event types (CONTRACT section 1). In this order for the property tests'
/// saved seeds (`tests/proptest-regressions`), which pick types by position.
pub const EVENT_TYPES: [&str; 12] = [
    "customer.registered",
    "interaction.contact",
    "interaction.survey",
    "subscription.renewed",
    "subscription.cancelled",
    "customer.erased",
    "order.placed",
    "order.delivered",
    "order.returned",
    "order.cancelled",
    "complaint.opened",
    "complaint.resolved",
];

/// A record as a file source would make it: no stream, partition from the customer id.
pub fn file_record(offset: i64, json: &str) -> InputRecord {
    InputRecord {
        source: "test".into(),
        source_partition: 0,
        offset,
        stream: None,
        state_partition: None,
        key: None,
        payload: json.as_bytes().to_vec(),
        cut_from: None,
        append_time_ms: None,
    }
}

/// Per-customer totals any correct fold must agree with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Totals {
    pub orders: u32,
    pub revenue_minor: i64,
    pub margin_minor: i64,
    pub complaints_opened: u32,
    pub contacts: u32,
}

/// Totals from distinct event ids of valid events, computed from the JSON alone.
pub fn expected_totals<'a>(
    events: impl IntoIterator<Item = &'a serde_json::Value>,
) -> BTreeMap<String, Totals> {
    let mut seen = std::collections::HashSet::new();
    let mut totals: BTreeMap<String, Totals> = BTreeMap::new();
    for e in events {
        let id = e["event_id"].as_str().unwrap().to_owned();
        if !seen.insert(id) {
            continue;
        }
        let t = totals
            .entry(e["customer_id"].as_str().unwrap().to_owned())
            .or_default();
        match e["type"].as_str().unwrap() {
            "order.placed" => {
                t.orders += 1;
                t.revenue_minor += e["amount_minor"].as_i64().unwrap();
                t.margin_minor += e["margin_minor"].as_i64().unwrap();
            }
            "complaint.opened" => t.complaints_opened += 1,
            "interaction.contact" => t.contacts += 1,
            _ => {}
        }
    }
    totals
}

pub fn totals_of(state: &customer_pulse::fold::CustomerState) -> Totals {
    Totals {
        orders: state.orders,
        revenue_minor: state.revenue_minor,
        margin_minor: state.margin_minor,
        complaints_opened: state.complaints_opened,
        contacts: state.contacts,
    }
}

/// Runs an external tool in `dir` and asserts it succeeded, showing its output otherwise;
/// tests/run.sh installs the tools the tests use.
pub fn tool_succeeds(program: &str, args: &[&str], dir: &std::path::Path) {
    let out = std::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs (tests/run.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The state `store` holds for `customer`, with the 4 partitions of [`settings`]; it must be
/// there.
pub fn stored(
    store: &customer_pulse::store::Store,
    customer: &str,
) -> customer_pulse::fold::CustomerState {
    let partition = customer_pulse::processor::partition_for(customer.as_bytes(), 4);
    store
        .customer(partition, customer)
        .unwrap()
        .unwrap_or_else(|| panic!("{customer} is stored"))
}

/// Runs each inner slice of events through one fresh processor over the memory store as one
/// batch, offsets counting from 1; returns the store and each batch's report.
pub fn run_batches<B: AsRef<[String]>>(
    settings: ProcessorSettings,
    batches: &[B],
) -> (
    customer_pulse::store::Store,
    Vec<customer_pulse::processor::BatchReport>,
) {
    let store = customer_pulse::store::Store::in_memory();
    let mut processor = customer_pulse::processor::Processor::new(store.clone(), settings);
    let mut offset = 0;
    let reports = batches
        .iter()
        .map(|batch| {
            let records: Vec<_> = batch
                .as_ref()
                .iter()
                .map(|json| {
                    offset += 1;
                    file_record(offset, json)
                })
                .collect();
            processor
                .process(&records, crate::catalogue::NOW_MS)
                .unwrap()
        })
        .collect();
    (store, reports)
}

/// The gauges of the aggregates in `metrics`, by series.
pub fn aggregate_gauges(metrics: &str) -> std::collections::BTreeMap<String, String> {
    const GAUGES: [&str; 7] = [
        "customer_pulse_customers{",
        "customer_pulse_churn_risk_customers{",
        "customer_pulse_margin_minor{",
        "customer_pulse_complaints_open{",
        "customer_pulse_complaint_spike{",
        "customer_pulse_complaint_z_score{",
        "customer_pulse_rfm_customers{",
    ];
    metrics
        .lines()
        .filter(|l| GAUGES.iter().any(|g| l.starts_with(g)))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(series, value)| (series.to_owned(), value.to_owned()))
        .collect()
}
