//! Crash safety: the real binary, killed with SIGKILL mid-stream several times and restarted on the
//! same state, ends with the same per-customer totals as the events say, and every output record
//! arrived at least once, duplicates only under the same record_id with the same value. The last
//! process stops on SIGTERM and exits 0.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use customer_pulse::config::Config;
use customer_pulse::kafka::publish;
use rdkafka::Message;

use crate::broker::{free_port, Broker};
use crate::end_to_end::{
    config_text, create_all_topics, header, metric_sum, read_last_risk_records, read_topic_until,
    totals_via_http, traffic, wait_for,
};
use crate::support::expected_totals;

struct Job(Child);

impl Job {
    fn start(config: &std::path::Path) -> Job {
        let child = Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
            .args(["run", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("PULSE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the binary starts");
        Job(child)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_four_times_mid_stream_the_totals_and_outputs_are_exact() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let events = traffic(12_000, 33);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config_text(&broker.address, &dir.path().join("state"), port)
        .replace("max_batch_events = 500", "max_batch_events = 100")
        .replace(
            "group_id = \"pulse-test\"",
            "group_id = \"pulse-crash\"\nsession_timeout_milliseconds = 6000",
        );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let topics = Config::parse(&text, Vec::new()).unwrap().topics;
    publish(&broker.address, &topics, &events, None, 1)
        .await
        .unwrap();

    for round in 0..4 {
        let job = Job::start(&config_path);
        // Each incarnation gets somewhere before it dies: 1,000 events or more of its own.
        let progressed = wait_for(Duration::from_secs(90), || {
            metric_sum(port, "customer_pulse_events_total") >= 1_000.0
        })
        .await;
        assert!(
            progressed,
            "round {round} processed 1,000 events within 90 s"
        );
        job.signal("-KILL");
    }

    let mut job = Job::start(&config_path);
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let expected = expected_totals(&values);
    let settled = wait_for(Duration::from_secs(120), || {
        expected
            .iter()
            .all(|(id, totals)| totals_via_http(port, id).as_ref() == Some(totals))
    })
    .await;
    if !settled {
        for (id, totals) in &expected {
            assert_eq!(totals_via_http(port, id).as_ref(), Some(totals), "{id}");
        }
    }

    // Nothing lost: each customer's last churn-risk record is what the store last published.
    // A repeat (from a replay after a kill) has the same record_id and the same value.
    let customers: Vec<String> = expected.keys().cloned().collect();
    let risk = read_last_risk_records(&broker.address, port, &customers).await;
    let mut by_id: HashMap<String, Vec<u8>> = HashMap::new();
    for message in &risk {
        let id = header(message, "record_id").unwrap();
        let value = message.payload().unwrap_or_default().to_vec();
        if let Some(earlier) = by_id.insert(id.clone(), value.clone()) {
            assert_eq!(earlier, value, "{id}: a repeated output is the same record");
        }
    }

    // Complaint windows: every hour up to the last one the final watermark (newest event time
    // minus the hour of allowed lateness) closes arrived, with no gap, and a repeat after a kill
    // carries the same counts: nothing counted twice, nothing lost.
    const HOUR: i64 = 3_600_000;
    let newest = values
        .iter()
        .map(|v| customer_pulse::event::parse_millis(v["occurred_at"].as_str().unwrap()).unwrap())
        .max()
        .unwrap();
    let last_start = (newest - HOUR).div_euclid(HOUR) * HOUR - HOUR;
    let windows = windows_arrived(
        &broker.address,
        "customer.complaint-trends",
        ["billing", "delivery", "other"].map(|c| format!("trend-{c}-60-{last_start}")),
    )
    .await;
    no_gap(&windows, "trend-billing-60-", last_start, HOUR);

    // Segment days likewise: every day up to the last one the final watermark closes arrived
    // for both tiers, with no gap, a repeat identical.
    const DAY: i64 = 86_400_000;
    let last_day = (newest - HOUR).div_euclid(DAY) * DAY - DAY;
    let days = windows_arrived(
        &broker.address,
        "customer.segment-metrics",
        ["gold", "standard"].map(|s| format!("segment-{s}-{last_day}")),
    )
    .await;
    no_gap(&days, "segment-standard-", last_day, DAY);

    // A graceful stop: SIGTERM, commit, flush, exit 0.
    job.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let status = job.0.wait();
        std::mem::forget(job);
        status
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

/// Reads `topic` until every `wanted` record id arrived; returns the records by id, asserting
/// that a repeated id (after a kill) carries the same value.
async fn windows_arrived<const N: usize>(
    brokers: &str,
    topic: &str,
    wanted: [String; N],
) -> HashMap<String, Vec<u8>> {
    let messages = read_topic_until(brokers, topic, |messages| {
        let ids: HashSet<String> = messages
            .iter()
            .filter_map(|m| header(m, "record_id"))
            .collect();
        wanted.iter().all(|w| ids.contains(w))
    })
    .await;
    let mut records: HashMap<String, Vec<u8>> = HashMap::new();
    for message in &messages {
        let id = header(message, "record_id").unwrap();
        let value = message.payload().unwrap_or_default().to_vec();
        if let Some(earlier) = records.insert(id.clone(), value.clone()) {
            assert_eq!(earlier, value, "{id}: a repeated record is the same record");
        }
    }
    for w in &wanted {
        assert!(records.contains_key(w), "{w} arrived");
    }
    records
}

/// Every window of length `step` with ids `<prefix><start>` from the first that arrived to
/// `last` arrived: nothing lost in between.
fn no_gap(records: &HashMap<String, Vec<u8>>, prefix: &str, last: i64, step: i64) {
    let starts: Vec<i64> = records
        .keys()
        .filter_map(|id| id.strip_prefix(prefix)?.parse().ok())
        .collect();
    let first = *starts.iter().min().unwrap();
    assert!(last > first, "{prefix}: the traffic spans closed windows");
    assert_eq!(
        starts.len() as i64,
        (last - first) / step + 1,
        "{prefix}: every window from the first to the last closed one"
    );
}
