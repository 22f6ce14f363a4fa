//! `kafka.assigned_partitions`: instances that read the partitions listed, without joining the
//! group, against Tansu. Each serves exactly its partitions' customers, with the state of an
//! uninterrupted replay, and a restarted one goes on from the offsets stored with its state.

use std::collections::BTreeMap;
use std::time::Duration;

use customer_pulse::config::Config;
use customer_pulse::event::Stream;
use customer_pulse::generate::{generate, Generated, TrafficSpec};
use customer_pulse::kafka::publish;
use customer_pulse::processor::partition_for;
use customer_pulse::replay::wall_clock_ms;
use tokio_util::sync::CancellationToken;

use crate::broker::{free_port, Broker};
use crate::end_to_end::{
    config_text, create_all_topics, customer_state, http_get, metric_sum, replayed_states,
    stop_job, test_topics, traffic, wait_for, PARTITIONS,
};

/// The tests' configuration, reading `partitions` without the group.
fn fixed_config(brokers: &str, state: &std::path::Path, port: u16, partitions: &str) -> Config {
    let text = config_text(brokers, state, port).replacen(
        "[kafka]\n",
        &format!("[kafka]\nassigned_partitions = {partitions}\n"),
        1,
    );
    Config::parse(&text, Vec::new()).unwrap()
}

/// The partition `port`'s instance names in its 421 for customer `id`, if it answers 421. (The
/// owner it would name comes from the group's committed offsets' metadata, which Tansu 0.6.0
/// does not keep: `faults` checks that on the mock cluster.)
fn misdirected(port: u16, id: &str) -> Option<i64> {
    let (status, body) = http_get(port, &format!("/customers/{id}"))?;
    if status != 421 {
        return None;
    }
    let body: serde_json::Value = serde_json::from_str(&body).ok()?;
    body["partition"].as_i64()
}

/// How many of `events` fall in `partitions`.
fn events_in(events: &[Generated], partitions: &[i32]) -> usize {
    events
        .iter()
        .filter(|g| partitions.contains(&partition_for(g.customer_id.as_bytes(), PARTITIONS)))
        .count()
}

/// Runs the job until it has folded `count` events (at most 90 s), checks it is ready, and
/// returns it running.
async fn run_until(
    config: Config,
    port: u16,
    count: usize,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let job = tokio::spawn(customer_pulse::pipeline::run(config, shutdown.clone()));
    let folded = wait_for(Duration::from_secs(90), || {
        metric_sum(port, "customer_pulse_events_total") as usize >= count
    })
    .await;
    assert!(folded, "{count} events folded within 90 s");
    assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));
    (shutdown, job)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assigned_partitions_are_read_without_the_group_and_resumed_after_a_restart() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let first = traffic(2_000, 31);
    publish(&broker.address, &test_topics(), &first, None, 1)
        .await
        .unwrap();

    // Two instances in the same group id split the partitions by configuration.
    let (odd_dir, even_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (odd_port, even_port) = (free_port(), free_port());
    let odd = || {
        fixed_config(
            &broker.address,
            &odd_dir.path().join("state"),
            odd_port,
            "[3, 1]",
        )
    };
    let (odd_stop, odd_job) = run_until(odd(), odd_port, events_in(&first, &[1, 3])).await;
    let even = fixed_config(
        &broker.address,
        &even_dir.path().join("state"),
        even_port,
        "[0, 2]",
    );
    let (even_stop, even_job) = run_until(even, even_port, events_in(&first, &[0, 2])).await;
    // Each folded its own partitions' events, and no other: nothing waits to be folded twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        metric_sum(odd_port, "customer_pulse_events_total") as usize,
        events_in(&first, &[1, 3])
    );
    assert_eq!(
        metric_sum(even_port, "customer_pulse_events_total") as usize,
        events_in(&first, &[0, 2])
    );

    // Between them they own every input partition once (6 topic-partitions each of 12), which
    // is what the InputPartitionsUnowned alert compares.
    for port in [odd_port, even_port] {
        assert_eq!(
            metric_sum(port, "customer_pulse_assigned_partitions"),
            6.0,
            "{port}"
        );
        assert_eq!(
            metric_sum(port, "customer_pulse_input_partitions"),
            12.0,
            "{port}"
        );
    }

    // Every customer is served by the instance of its partition alone, with the replay's state.
    let now = wall_clock_ms();
    let check = |events: &[Generated]| {
        let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
        let replayed: BTreeMap<String, serde_json::Value> = replayed_states(&values, now);
        for (id, want) in &replayed {
            let p = partition_for(id.as_bytes(), PARTITIONS);
            let (owner, other) = if p % 2 == 1 {
                (odd_port, even_port)
            } else {
                (even_port, odd_port)
            };
            assert_eq!(
                customer_state(owner, id).as_ref(),
                Some(want),
                "{id} (partition {p}): the owner's state is the replay's"
            );
            assert_eq!(
                misdirected(other, id),
                Some(i64::from(p)),
                "{id} (partition {p}): the other instance answers 421 with its partition"
            );
        }
        replayed.len()
    };
    assert!(
        check(&first) > 100,
        "the traffic has customers in every partition"
    );

    // The odd instance stops; more events arrive; it starts again on the same state and folds
    // the new events of its partitions alone, from the offsets stored with its state.
    stop_job(odd_stop, odd_job).await;
    // Later than the first traffic, which spans about a day and a half from ten days ago.
    let second = generate(&TrafficSpec {
        customers: 120,
        events: 600,
        seed: 32,
        start_ms: wall_clock_ms() - 5 * 86_400_000,
        step_ms: 60_000,
    });
    publish(&broker.address, &test_topics(), &second, None, 1)
        .await
        .unwrap();
    let both: Vec<Generated> = first.iter().chain(&second).cloned().collect();
    let (odd_stop, odd_job) = run_until(odd(), odd_port, events_in(&second, &[1, 3])).await;
    assert!(
        wait_for(Duration::from_secs(60), || {
            metric_sum(even_port, "customer_pulse_events_total") as usize
                >= events_in(&both, &[0, 2])
        })
        .await
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        metric_sum(odd_port, "customer_pulse_events_total") as usize,
        events_in(&second, &[1, 3]),
        "the restarted instance read on from its stored offsets, nothing again"
    );
    check(&both);

    stop_job(odd_stop, odd_job).await;
    stop_job(even_stop, even_job).await;
}

/// The counter `name`'s series of `topic`, summed over their other labels but those with
/// `except`.
fn topic_sum_except(port: u16, name: &str, topic: &str, except: &str) -> i64 {
    let Some((200, text)) = http_get(port, "/metrics") else {
        return 0;
    };
    let label = format!("topic=\"{topic}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&label))
        .filter(|l| except.is_empty() || !l.contains(except))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as i64
}

/// The counter `name`'s series of `topic`, summed over their other labels.
fn topic_sum(port: u16, name: &str, topic: &str) -> i64 {
    topic_sum_except(port, name, topic, "")
}

/// Offsets the brokers pass over are counted, by topic, with the records folded: Tansu 0.6.0
/// serves a fetch that starts inside a record batch from the next batch on (`kafka_smoke`),
/// so an instance whose stored offsets lie inside batches is not given the rest of them. Every
/// offset from where each partition starts is either folded or counted skipped. (Tansu also
/// delivers some records twice then, which the fold finds `duplicate`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_the_brokers_pass_over_are_counted_beside_the_records_folded() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    // Record batches of up to 100 records.
    let events = traffic(3_000, 34);
    publish(&broker.address, &test_topics(), &events, None, 100)
        .await
        .unwrap();
    let topics = test_topics();
    let inputs = [
        topics.interactions.clone(),
        topics.orders.clone(),
        topics.complaints.clone(),
    ];
    // How many records each input partition holds, from the events published (Tansu's own
    // end offsets are no help: `kafka_smoke`).
    let records = |topic: &str, p: i32| {
        events
            .iter()
            .filter(|g| {
                let stream = Stream::of_type(g.type_name).unwrap_or(Stream::Interactions);
                topics.input(stream) == topic
                    && partition_for(g.customer_id.as_bytes(), PARTITIONS) == p
            })
            .count() as i64
    };
    // A state that stored offset 50 of every input partition of 200 records or more, inside
    // its first batch (one of batches of at most 100 records starts after 50 and by 150, with
    // records after it); the others start at their first record.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let mut stored = Vec::new();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for topic in &inputs {
        for p in 0..PARTITIONS {
            let n = records(topic, p);
            let start = if n >= 200 { 50 } else { 0 };
            if start > 0 {
                stored.push((topic.clone(), p, start));
            }
            *expected.entry(topic.clone()).or_default() += n - start;
        }
    }
    assert!(
        stored.len() >= 3,
        "the traffic fills at least three partitions past 200 records: {stored:?}"
    );
    {
        let store = customer_pulse::store::Store::open(std::sync::Arc::new(
            customer_pulse::store::RocksBackend::open(&state, 8 << 20).unwrap(),
        ))
        .unwrap();
        store
            .commit(customer_pulse::store::Commit {
                offsets: stored.clone(),
                ..Default::default()
            })
            .unwrap();
    }

    let port = free_port();
    let shutdown = CancellationToken::new();
    let job = tokio::spawn(customer_pulse::pipeline::run(
        fixed_config(&broker.address, &state, port, "[0, 1, 2, 3]"),
        shutdown.clone(),
    ));
    // The traffic sends no event twice: a `duplicate` is a record delivered again.
    let mut ids: Vec<&str> = events
        .iter()
        .map(|g| g.value["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len());
    let folded = |topic: &str| {
        topic_sum_except(
            port,
            "customer_pulse_events_total",
            topic,
            "outcome=\"duplicate\"",
        )
    };
    let accounted = |topic: &str| {
        folded(topic) + topic_sum(port, "customer_pulse_input_offsets_skipped_total", topic)
    };
    let all = wait_for(Duration::from_secs(90), || {
        expected.iter().all(|(topic, n)| accounted(topic) >= *n)
    })
    .await;
    assert!(
        all,
        "every offset folded or counted skipped within 90 s: {:?} of {expected:?}",
        expected.keys().map(|t| accounted(t)).collect::<Vec<_>>()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut gaps = 0;
    for (topic, n) in &expected {
        assert_eq!(
            accounted(topic),
            *n,
            "{topic}: nothing counted twice ({} folded, {} skipped in {} runs)",
            folded(topic),
            topic_sum(port, "customer_pulse_input_offsets_skipped_total", topic),
            topic_sum(port, "customer_pulse_input_offset_gaps_total", topic),
        );
        gaps += topic_sum(port, "customer_pulse_input_offset_gaps_total", topic);
    }
    // At most one run skipped in each partition started inside a batch, and one at least in
    // all (a stored offset on a batch's first record skips nothing).
    let skipped: i64 = inputs
        .iter()
        .map(|t| topic_sum(port, "customer_pulse_input_offsets_skipped_total", t))
        .sum();
    assert!(
        (1..=stored.len() as i64).contains(&gaps),
        "{gaps} runs skipped, of {} partitions started inside a batch",
        stored.len()
    );
    assert!(
        (1..=100 * stored.len() as i64).contains(&skipped),
        "{skipped} offsets skipped"
    );
    stop_job(shutdown, job).await;
}
