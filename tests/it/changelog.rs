//! The changelog against the real broker (issue 6): an instance that starts without local state
//! restores the customers and their input positions from the changelog before it consumes, reads
//! on from where the previous instance stopped (counting nothing twice), and an erased customer
//! stays erased. An instance that finds another's claim on a partition it still owns a session
//! timeout later, even with no events to write, asks the group again (or, reading listed
//! partitions, claims it back), so that the changelog counts its work again.

use std::collections::BTreeMap;
use std::time::Duration;

use customer_pulse::config::Config;
use customer_pulse::event::format_millis;
use customer_pulse::generate::Generated;
use customer_pulse::kafka::{create_topics, publish, ChangelogReader};
use customer_pulse::processor::partition_for;
use customer_pulse::replay::wall_clock_ms;
use customer_pulse::restore::ChangelogSource;
use customer_pulse::store::{Claim, Epoch};

use crate::scale::Entry;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::broker::{free_port, Broker};
use crate::end_to_end::{
    config_text, create_all_topics, http_get, metric_sum, replayed_states, served_states,
    test_topics, traffic, wait_for, TOPICS,
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

pub(crate) struct Instance {
    pub(crate) port: u16,
    shutdown: CancellationToken,
    job: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Its state's directory when the instance made it (`None`: the caller's).
    _dir: Option<tempfile::TempDir>,
}

impl Instance {
    fn start(brokers: &str) -> Instance {
        Instance::start_with(brokers, "", "")
    }

    /// With `kafka` added to the `[kafka]` section, and `processing` to `[processing]`.
    pub(crate) fn start_with(brokers: &str, kafka: &str, processing: &str) -> Instance {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut instance = Instance::start_on(brokers, &state, true, kafka, processing);
        instance._dir = Some(dir);
        instance
    }

    /// On the state at `state`, with the changelog on or off; `kafka` added to the `[kafka]`
    /// section, and `processing` to `[processing]`.
    fn start_on(
        brokers: &str,
        state: &std::path::Path,
        changelog: bool,
        kafka: &str,
        processing: &str,
    ) -> Instance {
        let port = free_port();
        let text = config_text(brokers, state, port)
            .replace(
                "cache_customers = 500",
                &format!("cache_customers = 500\nchangelog = {changelog}"),
            )
            .replacen("[kafka]\n", &format!("[kafka]\n{kafka}"), 1)
            .replacen("[processing]\n", &format!("[processing]\n{processing}"), 1);
        let config = Config::parse(&text, Vec::new()).unwrap();
        let shutdown = CancellationToken::new();
        let job = tokio::spawn(customer_pulse::pipeline::run(config, shutdown.clone()));
        Instance {
            port,
            shutdown,
            job,
            _dir: None,
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

    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        self.job.await.unwrap().unwrap();
    }
}

/// A reader (and claimant) of the tests' changelog topic.
pub fn changelog_reader(brokers: &str) -> ChangelogReader {
    let config = Config::parse(
        &config_text(brokers, std::path::Path::new("/tmp/unused"), 1),
        Vec::new(),
    )
    .unwrap();
    ChangelogReader::connect(brokers, &config.kafka_security, &config.topics.changelog).unwrap()
}

/// Every record an instance wrote through its outbox (customers, sealed events, positions: the
/// records with an epoch, but for claims) carries its writer's number for it, and a writer's
/// numbers rise through each partition of the log: none given twice, none out of order.
fn numbered_in_order(log: &[Entry]) {
    let mut last: BTreeMap<(i32, u64), u64> = BTreeMap::new();
    let mut numbered = 0;
    for entry in log {
        let at = format!(
            "partition {} offset {} ({})",
            entry.partition, entry.offset, entry.key
        );
        let Some(sequence) = entry.sequence else {
            assert!(
                entry.epoch.is_none() || entry.claim.is_some(),
                "{at}: written with an epoch but not numbered"
            );
            continue;
        };
        if let Some(epoch) = entry.epoch {
            assert_eq!(
                sequence.writer, epoch.writer,
                "{at}: numbered by its writer"
            );
        }
        let previous = last.insert((entry.partition, sequence.writer), sequence.number);
        assert!(
            previous.is_none_or(|p| p < sequence.number),
            "{at}: number {} after {previous:?}",
            sequence.number
        );
        numbered += 1;
    }
    assert!(numbered > 0, "the log holds numbered records");
}

/// The customers of `events`, each once, in order.
pub(crate) fn customer_ids(events: &[Generated]) -> Vec<String> {
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
    // After the erasure the customer has no events of its own but one order from before the
    // erasure, read after it (as from an orders topic running behind): the new instance, which
    // knows the erasure from the changelog only, must not bring the customer back with it.
    let old_order = Generated {
        customer_id: erased.clone(),
        type_name: "order.placed",
        value: json!({
            "event_id": "old-order-1",
            "customer_id": erased,
            "type": "order.placed",
            "order_id": "old-1",
            "amount_minor": 500,
            "margin_minor": 50,
            "occurred_at": format_millis(now - 2 * 86_400_000),
        }),
    };
    let second: Vec<Generated> = rest
        .iter()
        .filter(|g| g.customer_id != erased)
        .cloned()
        .chain([old_order])
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
    assert_eq!(
        metric(
            port,
            r#"customer_pulse_events_total{outcome="erased",topic="customer.orders",type="order.placed"}"#
        ),
        1.0,
        "the old order is dropped by the erasure's marker, restored from the changelog"
    );
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_partition_another_instance_claimed_is_claimed_back() {
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
    // Outside the group, reading all four partitions.
    let a = Instance::start_with(&broker.address, "assigned_partitions = [0, 1, 2, 3]\n", "");
    a.processed(first.len()).await;

    // Another instance, configured with partition 0 too, claims it once and writes nothing.
    let reader = changelog_reader(&broker.address);
    reader
        .claim(
            0,
            &Claim {
                writer: 42,
                continues: None,
            },
        )
        .unwrap();

    // `a` folds on, finds the claim in the changelog past its own records, and a session timeout
    // later claims the partition back and folds it again from what counts.
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
    numbered_in_order(&log);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_with_nothing_to_write_claims_back_what_the_claimant_released_and_lets_go_what_it_kept(
) {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let topics = test_topics();
    let now = wall_clock_ms();
    let traffic = traffic(1_600, 67);
    // First, customers of partitions 0, 2 and 3 only: nothing of partition 1 to write, no event
    // and no timer of one of its customers.
    let (first, second) = traffic.split_at(800);
    let first: Vec<Generated> = first
        .iter()
        .filter(|g| partition_for(g.customer_id.as_bytes(), 4) != 1)
        .cloned()
        .collect();
    let events: Vec<Generated> = first.iter().chain(second).cloned().collect();
    let ids = customer_ids(&events);
    publish(&broker.address, &topics, &first, None, 1)
        .await
        .unwrap();
    // Partitions without events hold the watermark back for a second only.
    let a = Instance::start_with(&broker.address, "", "idle_partition_seconds = 1\n");
    let port = a.port;
    a.processed(first.len()).await;
    let reader = changelog_reader(&broker.address);
    // `a` wrote partition 1's claim and, once the partition had been idle a second, the
    // watermark it reached; then nothing more: its end stays put for 3 s (15 readings 200 ms
    // apart).
    let mut ends = Vec::new();
    let quiet = wait_for(Duration::from_secs(30), || {
        ends.push(reader.end(1).unwrap());
        ends.len() >= 16
            && ends[ends.len() - 16..]
                .iter()
                .all(|e| *e == ends[ends.len() - 1])
    })
    .await;
    assert!(
        quiet,
        "partition 1 of the changelog quiet within 30 s: {ends:?}"
    );

    // The latest claim of partition 1, by writer.
    let claimant = || {
        let (_, log) = crate::scale::changelog_states(&broker.address);
        log.iter()
            .rev()
            .filter(|e| e.partition == 1)
            .find_map(|e| e.claim.as_ref().map(|c| c.writer))
    };
    let ours = claimant().unwrap();
    let claim_by = |writer: u64| {
        reader
            .claim(
                1,
                &Claim {
                    writer,
                    continues: None,
                },
            )
            .unwrap()
    };

    // The group hands partition 1 to a new member, which claims it, then takes it from it again
    // (which releases it) and leaves it with `a`, which was never told (Tansu can). `a` writes
    // nothing to partition 1 that would show a gap; it reads past its own records, finds the
    // claim released, and claims the partition back at once, without waiting for the group.
    let claim = claim_by(42);
    reader.release(&[(1, Epoch { writer: 42, claim })]).unwrap();
    let claimed_back = wait_for(Duration::from_secs(30), || {
        metric_sum(port, "customer_pulse_partitions_claimed_back_total") >= 1.0
    })
    .await;
    assert!(claimed_back, "claimed back within 30 s");
    assert_eq!(claimant(), Some(ours), "claimed after the other");
    assert_eq!(
        metric_sum(port, "customer_pulse_group_rejoins_total"),
        0.0,
        "no need to ask the group"
    );

    // The group hands partition 1 to another member, which claims it and keeps it, and never
    // tells `a` (Tansu can). A session timeout later `a` lets it go, leaves the group and joins
    // it again; as the only member, it is given every partition back and claims each.
    claim_by(43);
    let rejoined = wait_for(Duration::from_secs(60), || {
        metric_sum(port, "customer_pulse_group_rejoins_total") >= 1.0
            && http_get(port, "/readyz").is_some_and(|(s, _)| s == 200)
            && claimant() == Some(ours)
    })
    .await;
    assert!(
        rejoined,
        "let go, rejoined, and claimed partition 1 again within 60 s"
    );
    assert_eq!(
        metric_sum(port, "customer_pulse_partitions_let_go_total"),
        1.0
    );
    assert_eq!(
        metric_sum(port, "customer_pulse_group_rejoining"),
        0.0,
        "subscribed again: no longer between leaving and joining"
    );
    assert_eq!(
        metric_sum(port, "customer_pulse_partitions_claimed_back_total"),
        1.0,
        "given back by the group, not claimed back"
    );

    // What it folds from now on, customers of partition 1 among them, counts in the changelog.
    publish(&broker.address, &topics, second, None, 1)
        .await
        .unwrap();
    let all: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let expected = replayed_states(&all, now);
    let settled = wait_for(Duration::from_secs(60), || {
        metric_sum(port, "customer_pulse_outbox_backlog_records") == 0.0
            && served_states(&[port], &ids) == expected
    })
    .await;
    assert_same(&served_states(&[port], &ids), &expected, "served state");
    assert!(settled, "the outbox drained");
    let (restored, log) = crate::scale::changelog_states(&broker.address);
    if restored != expected {
        panic!(
            "the changelog does not restore the replayed state:\n{}",
            crate::scale::explain_changelog(&restored, &expected, &log)
        );
    }
    numbered_in_order(&log);
    a.stop().await;
}

/// A job started with the changelog on before its changelog topic exists names the topic at
/// start, as an error, and is not ready; once the topic is created it starts its partitions by
/// itself, and is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_started_before_its_changelog_topic_exists_names_it_and_starts_once_it_is_created() {
    let broker = Broker::start();
    let (others, changelog): (Vec<_>, Vec<_>) = TOPICS
        .into_iter()
        .partition(|(name, _, _)| !name.ends_with("changelog"));
    create_topics(&broker.address, &others).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.toml");
    let text = config_text(&broker.address, &dir.path().join("state"), port)
        .replace("[state]\n", "[state]\nchangelog = true\n");
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("job.log");
    let job = crate::crash::Job::start_logging_to(&config, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let named = wait_for(Duration::from_secs(30), || {
        read_log().lines().any(|l| {
            l.contains("ERROR")
                && l.contains("The changelog topic (topics.changelog) is not on the brokers")
                && l.contains("topic=\"customer-pulse.customers-changelog\"")
        })
    })
    .await;
    assert!(
        named,
        "the missing changelog topic is named at start:\n{}",
        read_log()
    );
    let ready = || http_get(port, "/readyz").is_some_and(|(status, _)| status == 200);
    assert!(!ready(), "not ready without the changelog topic");
    create_topics(&broker.address, &changelog).await.unwrap();
    let started = wait_for(Duration::from_secs(120), ready).await;
    assert!(job.terminate(), "a clean stop");
    assert!(
        started,
        "the partitions start once the topic exists:\n{}",
        read_log()
    );
}

/// From one instance to two over a state kept without the changelog (README, *Scaling out*):
/// the instance restarted with the changelog on sends every partition's state to it, and once
/// that is delivered a second instance joins the group. The partitions it takes are restored
/// from the changelog, with what was folded before the switch; then both fold on, and serve
/// between them every customer's state of one pass, and the windows and days emitted, by the
/// lone instance and then by the aggregator, are those of one pass. (Without the publishing,
/// the first customer checked is served without the first half's events.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_one_instance_to_two_over_a_state_kept_without_the_changelog() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let topics = test_topics();
    let events = traffic(3_000, 67);
    let (first, second) = events.split_at(1_500);
    let ids = customer_ids(&events);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");

    // One instance, the changelog off, folds the first half.
    publish(&broker.address, &topics, first, None, 1)
        .await
        .unwrap();
    let a = Instance::start_on(&broker.address, &state, false, "", "");
    a.processed(first.len()).await;
    a.stop().await;

    // Started again with the changelog on: every partition goes to it.
    let a = Instance::start_on(&broker.address, &state, true, "", "");
    let port = a.port;
    let delivered = wait_for(Duration::from_secs(60), || {
        metric(
            port,
            r#"customer_pulse_restores_total{outcome="published"}"#,
        ) == 4.0
            && http_get(port, "/metrics").is_some_and(|(_, text)| {
                text.lines()
                    .filter(|l| l.starts_with("customer_pulse_outbox_backlog_records{"))
                    .all(|l| l.ends_with(" 0"))
            })
    })
    .await;
    assert!(
        delivered,
        "every partition published and delivered within 60 s"
    );

    // A second instance joins, then the second half arrives.
    let b = Instance::start(&broker.address);
    let split = wait_for(Duration::from_secs(90), || {
        let held = |port| metric_sum(port, "customer_pulse_assigned_partitions");
        held(a.port) > 0.0 && held(b.port) > 0.0
    })
    .await;
    assert!(split, "the partitions shared within 90 s");
    let restored = metric(b.port, r#"customer_pulse_restores_total{outcome="tail"}"#);
    assert!(restored >= 1.0, "the second restored what it took");
    publish(&broker.address, &topics, second, None, 1)
        .await
        .unwrap();
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let expected = replayed_states(&values, wall_clock_ms());
    crate::scale::served_as_replayed(&[a.port, b.port], &ids, &expected).await;
    crate::scale::aggregates_of_one_pass(&broker.address, &values, &[a.port, b.port]).await;
    b.stop().await;
    a.stop().await;
}

/// From two instances to one, then the changelog off (README, *Scaling out*): the second
/// instance stops, the first takes its partitions from the changelog and folds on alone; stopped
/// and started again without the changelog, it takes over its aggregator's windows and days
/// (the aggregator read the changelog to its end at the stop) and folds the rest. It serves one
/// pass's states, and the windows and days emitted across the switches, by the aggregator and
/// then by the lone instance, are one pass's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_two_instances_to_one_and_the_changelog_off() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let topics = test_topics();
    let events = traffic(3_000, 71);
    let ids = customer_ids(&events);
    let (first, rest) = events.split_at(1_000);
    let (second, third) = rest.split_at(1_000);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let values = |events: &[customer_pulse::generate::Generated]| -> Vec<serde_json::Value> {
        events.iter().map(|g| g.value.clone()).collect()
    };
    let held = |port| metric_sum(port, "customer_pulse_assigned_partitions");

    // Two instances share the partitions and fold the first third.
    let a = Instance::start_on(&broker.address, &state, true, "", "");
    let b = Instance::start(&broker.address);
    let split = wait_for(Duration::from_secs(90), || {
        held(a.port) > 0.0 && held(b.port) > 0.0
    })
    .await;
    assert!(split, "the partitions shared within 90 s");
    publish(&broker.address, &topics, first, None, 1)
        .await
        .unwrap();
    let expected = replayed_states(&values(first), wall_clock_ms());
    let first_ids = customer_ids(first);
    crate::scale::served_as_replayed(&[a.port, b.port], &first_ids, &expected).await;

    // The second stops; the first takes every partition and folds the second third alone.
    b.stop().await;
    let alone = wait_for(Duration::from_secs(90), || held(a.port) == 12.0).await;
    assert!(alone, "the first holds every partition within 90 s");
    publish(&broker.address, &topics, second, None, 1)
        .await
        .unwrap();
    let so_far = &events[..2_000];
    let expected = replayed_states(&values(so_far), wall_clock_ms());
    crate::scale::served_as_replayed(&[a.port], &customer_ids(so_far), &expected).await;
    a.stop().await;

    // Started again without the changelog: the aggregator's windows and days go on.
    let a = Instance::start_on(&broker.address, &state, false, "", "");
    publish(&broker.address, &topics, third, None, 1)
        .await
        .unwrap();
    let all = values(&events);
    let expected = replayed_states(&all, wall_clock_ms());
    crate::scale::served_as_replayed(&[a.port], &ids, &expected).await;
    crate::scale::lone_aggregates_of_one_pass(&broker.address, &all, a.port).await;
    a.stop().await;
}
