//! The changelog against the real broker (issue 6): an instance that starts without local state
//! restores the customers and their input positions from the changelog before it consumes, reads
//! on from where the previous instance stopped (counting nothing twice), and an erased customer
//! stays erased. An instance whose partition another claimed while the group left it there
//! claims it back, so that the changelog counts its work again.

use std::collections::BTreeMap;
use std::time::Duration;

use customer_pulse::config::Config;
use customer_pulse::event::format_millis;
use customer_pulse::generate::Generated;
use customer_pulse::kafka::{publish, ChangelogReader};
use customer_pulse::replay::wall_clock_ms;
use customer_pulse::restore::ChangelogSource;
use customer_pulse::store::Claim;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::broker::{free_port, Broker};
use crate::end_to_end::{
    config_text, create_all_topics, http_get, metric_sum, replayed_states, served_states,
    test_topics, traffic, wait_for,
};

/// A counter or gauge with one exact label set, as `/metrics` shows it.
pub fn metric(port: u16, series: &str) -> f64 {
    let Some((200, text)) = http_get(port, "/metrics") else {
        return 0.0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

struct Instance {
    port: u16,
    shutdown: CancellationToken,
    job: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Instance {
    fn start(brokers: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let text = config_text(brokers, &dir.path().join("state"), port).replace(
            "cache_customers = 500",
            "cache_customers = 500\nchangelog = true",
        );
        let config = Config::parse(&text, Vec::new()).unwrap();
        let shutdown = CancellationToken::new();
        let job = tokio::spawn(customer_pulse::pipeline::run(config, shutdown.clone()));
        Instance {
            port,
            shutdown,
            job,
            _dir: dir,
        }
    }

    async fn processed(&self, events: usize) {
        let port = self.port;
        let done = wait_for(Duration::from_secs(90), || {
            metric_sum(port, "customer_pulse_events_total") as usize >= events
        })
        .await;
        assert!(done, "{events} events processed within 90 s");
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.job.await.unwrap().unwrap();
    }
}

/// The customers of `events`, each once, in order.
fn customer_ids(events: &[Generated]) -> Vec<String> {
    let mut ids: Vec<String> = events.iter().map(|g| g.customer_id.clone()).collect();
    ids.sort();
    ids.dedup();
    ids
}

/// Asserts two sets of customer states are equal, naming the first customer and fields that
/// differ rather than printing every state.
fn assert_same(
    got: &BTreeMap<String, serde_json::Value>,
    want: &BTreeMap<String, serde_json::Value>,
    what: &str,
) {
    let missing: Vec<&String> = want.keys().filter(|id| !got.contains_key(*id)).collect();
    let extra: Vec<&String> = got.keys().filter(|id| !want.contains_key(*id)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: customers missing {missing:?}, unexpected {extra:?}"
    );
    for (id, want) in want {
        let got = &got[id];
        let fields: Vec<String> = want
            .as_object()
            .unwrap()
            .iter()
            .filter(|(field, value)| got.get(field.as_str()) != Some(value))
            .map(|(field, value)| format!("{field}: {} instead of {value}", got[field.as_str()]))
            .collect();
        assert!(fields.is_empty(), "{what}: {id} differs: {fields:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_restores_from_the_changelog_and_reads_on_without_counting_twice() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let topics = test_topics();
    let now = wall_clock_ms();
    let events = traffic(2_000, 61);
    let erased = events[0].customer_id.clone();
    let erasure = Generated {
        customer_id: erased.clone(),
        type_name: "customer.erased",
        value: json!({
            "event_id": "erase-1",
            "customer_id": erased,
            "type": "customer.erased",
            "occurred_at": format_millis(now - 86_400_000),
        }),
    };
    let (first, rest) = events.split_at(1_200);
    // After the erasure the customer has no more events, so file order and topic order agree.
    let second: Vec<Generated> = rest
        .iter()
        .filter(|g| g.customer_id != erased)
        .cloned()
        .collect();
    let ids = customer_ids(&events);

    // The first instance folds the first part and the erasure, then stops.
    publish(&broker.address, &topics, first, None, 1)
        .await
        .unwrap();
    let a = Instance::start(&broker.address);
    a.processed(first.len()).await;
    publish(
        &broker.address,
        &topics,
        std::slice::from_ref(&erasure),
        None,
        1,
    )
    .await
    .unwrap();
    a.processed(first.len() + 1).await;
    let before: Vec<serde_json::Value> = first
        .iter()
        .chain([&erasure])
        .map(|g| g.value.clone())
        .collect();
    let expected = replayed_states(&before, now);
    assert_same(
        &served_states(&[a.port], &ids),
        &expected,
        "the first instance",
    );
    assert_eq!(
        metric(
            a.port,
            r#"customer_pulse_restores_total{outcome="up_to_date"}"#
        ),
        4.0,
        "an empty changelog: nothing to restore in any of the 4 partitions"
    );
    a.stop().await;

    // The second instance has no local state: it restores every partition before consuming.
    let b = Instance::start(&broker.address);
    let port = b.port;
    let ready = wait_for(Duration::from_secs(60), || {
        http_get(port, "/readyz").is_some_and(|(s, _)| s == 200)
    })
    .await;
    assert!(ready, "ready within 60 s");
    assert_eq!(
        metric(port, r#"customer_pulse_restores_total{outcome="tail"}"#),
        4.0,
        "each partition restored from the changelog"
    );
    assert!(metric(port, "customer_pulse_restored_records_total") >= expected.len() as f64);
    assert_same(&served_states(&[port], &ids), &expected, "restored state");
    assert_eq!(
        http_get(port, &format!("/customers/{erased}")).map(|r| r.0),
        Some(404)
    );

    // It reads on from the restored positions: only the new events are folded.
    publish(&broker.address, &topics, &second, None, 1)
        .await
        .unwrap();
    b.processed(second.len()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        metric_sum(port, "customer_pulse_events_total") as usize,
        second.len(),
        "nothing folded twice"
    );
    let all: Vec<serde_json::Value> = before
        .iter()
        .cloned()
        .chain(second.iter().map(|g| g.value.clone()))
        .collect();
    assert_eq!(
        served_states(&[port], &ids),
        replayed_states(&all, now),
        "final state"
    );
    assert_eq!(
        http_get(port, &format!("/customers/{erased}")).map(|r| r.0),
        Some(404)
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_another_instance_claimed_while_the_group_left_it_here_is_claimed_back() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let topics = test_topics();
    let now = wall_clock_ms();
    let events = traffic(1_600, 63);
    let (first, second) = events.split_at(800);
    let ids = customer_ids(&events);
    publish(&broker.address, &topics, first, None, 1)
        .await
        .unwrap();
    let a = Instance::start(&broker.address);
    a.processed(first.len()).await;

    // Another member claims partition 0, as a new member does when the broker hands it the
    // partition, and loses it again before it writes anything: the group leaves the partition
    // with `a`, which is never told (Tansu's early handoff, seen in the `scale` test).
    let config = Config::parse(
        &config_text(&broker.address, std::path::Path::new("/tmp/unused"), 1),
        Vec::new(),
    )
    .unwrap();
    let reader = ChangelogReader::connect(
        &broker.address,
        &config.kafka_security,
        &config.topics.changelog,
    )
    .unwrap();
    reader
        .claim(
            0,
            &Claim {
                writer: 42,
                continues: None,
            },
        )
        .unwrap();

    // `a` folds on, finds the claim in the changelog past its own records, and once the group
    // has had a session timeout to move the partition, claims it back and folds it again from
    // what counts.
    publish(&broker.address, &topics, second, None, 1)
        .await
        .unwrap();
    let port = a.port;
    let claimed_back = wait_for(Duration::from_secs(60), || {
        metric_sum(port, "customer_pulse_partitions_claimed_back_total") >= 1.0
    })
    .await;
    assert!(claimed_back, "partition 0 claimed back within 60 s");
    let all: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let expected = replayed_states(&all, now);
    let settled = wait_for(Duration::from_secs(60), || {
        http_get(port, "/readyz").is_some_and(|(s, _)| s == 200)
            && metric_sum(port, "customer_pulse_outbox_backlog_records") == 0.0
            && served_states(&[port], &ids) == expected
    })
    .await;
    assert_same(&served_states(&[port], &ids), &expected, "served state");
    assert!(settled, "ready, the outbox drained");
    assert_eq!(
        metric(
            port,
            r#"customer_pulse_restores_total{outcome="from_scratch"}"#
        ),
        1.0,
        "what it wrote after the claim did not count: rebuilt from what does"
    );

    // The changelog counts what it wrote once it had claimed the partition back.
    let (restored, log) = crate::scale::changelog_states(&broker.address);
    assert!(
        log.iter()
            .any(|e| e.claim.as_ref().is_some_and(|c| c.writer == 42)),
        "the other's claim is in the log"
    );
    if restored != expected {
        panic!(
            "the changelog does not restore the replayed state:\n{}",
            crate::scale::explain_changelog(&restored, &expected, &log)
        );
    }
    a.stop().await;
}
