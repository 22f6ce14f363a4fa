//! `processing.max_event_time_lead_seconds`: a backlog read aligned in event time, against
//! Tansu, which hands a backlog over one partition at a time (each to its end before the next).
//! The partitions ahead are paused until the others come within the lead, so the events are
//! folded nearly in event time across partitions and topics, and none is lost or read twice.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use customer_pulse::config::Config;
use customer_pulse::event::{format_millis, parse_millis, Stream};
use customer_pulse::generate::{generate, Generated, TrafficSpec};
use customer_pulse::kafka::publish;
use customer_pulse::processor::partition_for;
use customer_pulse::replay::wall_clock_ms;

use crate::broker::{free_port, Broker};
use crate::changelog::{customer_ids, Instance};
use crate::end_to_end::{
    config_text, create_all_topics, customer_state, metric_sum, read_topic, replayed_states,
    stop_job, test_topics, wait_for, PARTITIONS,
};

const DAY_MS: i64 = 86_400_000;

/// The job's `processing.max_batch_events` here: the lead is kept between batches, and a
/// batch may take a partition up to this many records further.
const BATCH: usize = 5;

/// How far a partition's events run in `BATCH` records, at most: from any of its events to
/// the `BATCH`th after it, and from the traffic's first event to its own `BATCH`th (the first
/// batch is taken before the reader knows where any partition is).
fn most_in_a_batch(events: &[Generated], occurred: &HashMap<String, i64>) -> i64 {
    let at = |g: &Generated| occurred[g.value["event_id"].as_str().unwrap()];
    let start = events.iter().map(at).min().unwrap();
    let mut partitions: HashMap<(Stream, i32), Vec<i64>> = HashMap::new();
    for g in events {
        let stream = Stream::of_type(g.type_name).unwrap();
        let partition = partition_for(g.customer_id.as_bytes(), PARTITIONS);
        partitions
            .entry((stream, partition))
            .or_default()
            .push(at(g));
    }
    partitions
        .values()
        .flat_map(|times| {
            let first = times[(BATCH - 1).min(times.len() - 1)] - start;
            let later = times.windows(BATCH + 1).map(|w| w[BATCH] - w[0]);
            std::iter::once(first).chain(later)
        })
        .max()
        .unwrap()
}

/// How far behind the newest event folded before it, in its output partition, each event that
/// caused a `customer.churn-risk` record was folded, at most: for each output partition (each
/// holds the customers of one input partition, of all three input topics), the running maximum
/// of the causing events' times less the event's own. The records come out in the order their
/// events were folded.
fn most_folded_behind(
    messages: &[rdkafka::message::OwnedMessage],
    occurred: &HashMap<String, i64>,
) -> i64 {
    use rdkafka::message::Message;
    let mut newest: BTreeMap<i32, i64> = BTreeMap::new();
    let mut behind = 0;
    for m in messages {
        let value: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
        let Some(event) = value["caused_by_event_id"].as_str() else {
            continue;
        };
        let at = occurred[event];
        let newest = newest.entry(m.partition()).or_insert(at);
        *newest = (*newest).max(at);
        behind = behind.max(*newest - at);
    }
    behind
}

/// Runs the job over a backlog of 2,400 events spanning 24 days with `lead_days` of lead (0:
/// not aligned), and returns how far behind the newest event folded before it an event was
/// folded, at most (see [`most_folded_behind`]), and how far one partition's events run in a
/// batch, at most ([`most_in_a_batch`]), once the job's states are checked against one
/// uninterrupted pass.
async fn folded_behind(lead_days: i64) -> (i64, i64) {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let now = wall_clock_ms();
    let events = generate(&TrafficSpec {
        customers: 120,
        events: 2_400,
        seed: 41,
        start_ms: now - 30 * DAY_MS,
        step_ms: DAY_MS / 100,
    });
    publish(&broker.address, &test_topics(), &events, None, 1)
        .await
        .unwrap();
    let occurred: HashMap<String, i64> = events
        .iter()
        .map(|g| {
            let at = g.value["occurred_at"].as_str().unwrap();
            (
                g.value["event_id"].as_str().unwrap().to_owned(),
                parse_millis(at).unwrap(),
            )
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Small batches: the lead is kept between batches, and a batch may take a partition
    // further ahead.
    let text = config_text(&broker.address, &dir.path().join("state"), port)
        .replacen(
            "[kafka]\n",
            "[kafka]\nassigned_partitions = [0, 1, 2, 3]\nfetch_wait_milliseconds = 10\n",
            1,
        )
        .replacen(
            "max_batch_events = 500\n",
            &format!(
                "max_batch_events = {BATCH}\nidle_partition_seconds = 5\nmax_event_time_lead_seconds = {}\n",
                lead_days * 86_400
            ),
            1,
        );
    let config = Config::parse(&text, Vec::new()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let job = tokio::spawn(customer_pulse::pipeline::run(config, shutdown.clone()));
    let events_total = || metric_sum(port, "customer_pulse_events_total") as usize;
    assert!(
        wait_for(Duration::from_secs(120), || events_total() >= events.len()).await,
        "every event folded within 120 s ({} of {})",
        events_total(),
        events.len()
    );
    assert!(
        wait_for(Duration::from_secs(30), || {
            metric_sum(port, "customer_pulse_outbox_backlog_records") == 0.0
        })
        .await
    );
    let records = metric_sum(port, "customer_pulse_churn_risk_records_total") as usize;
    assert!(records > 500, "{records} churn-risk records");
    let risk = read_topic(&broker.address, "customer.churn-risk", records).await;
    assert_eq!(risk.len(), records);

    // Paused and resumed, every partition was read once, to its end.
    assert_eq!(events_total(), events.len(), "no event read twice");
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let replayed = replayed_states(&values, wall_clock_ms());
    for (id, want) in &replayed {
        assert_eq!(customer_state(port, id).as_ref(), Some(want), "{id}");
    }
    // At their ends no partition holds another.
    assert!(
        wait_for(Duration::from_secs(10), || {
            metric_sum(port, "customer_pulse_paused_partitions") == 0.0
        })
        .await
    );
    stop_job(shutdown, job).await;
    (
        most_folded_behind(&risk, &occurred),
        most_in_a_batch(&events, &occurred),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_read_aligned_in_event_time_folds_no_partition_far_ahead_of_the_others() {
    // A day of lead. A partition is paused between batches, so one may run a batch past the
    // lead: ten records span up to a few days of the sparsest partition's events (the
    // complaints', about 3.5 a day). Read as it comes, Tansu's order (each partition to its end
    // before the next) folds events about 24 days behind.
    let days = |ms: i64| ms as f64 / DAY_MS as f64;
    let (behind, batch) = folded_behind(1).await;
    assert!(
        batch < 8 * DAY_MS,
        "the traffic tells aligned from not: a batch spans {:.1} days",
        days(batch)
    );
    assert!(
        behind <= DAY_MS + batch,
        "an event folded {:.1} days behind one folded before it; a day of lead and a batch of {:.1} days allow less",
        days(behind),
        days(batch)
    );
}

/// Traffic of `events` from `start_ms` over `span_ms`, under `seed`.
fn traffic_over(events: u64, seed: u64, start_ms: i64, span_ms: i64) -> Vec<Generated> {
    generate(&TrafficSpec {
        customers: 120,
        events,
        seed,
        start_ms,
        step_ms: span_ms / events as i64,
    })
}

/// A partition paused for running ahead and revoked is not left paused: taken back later, when
/// nothing is ahead, it is read on. librdkafka keeps a partition the application paused paused
/// across a revocation and a new assignment. First the complaints are dated two days after the
/// interactions and orders of the same traffic (as if those topics' publisher sent in arrears),
/// so their partitions wait while the others deliver, and a second instance joins and takes
/// half of them; then traffic of all topics alike brings every partition within the lead, the
/// second instance leaves, and the first takes its partitions back and folds what comes next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_when_revoked_is_read_when_assigned_again() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let now = wall_clock_ms();
    let mut arrears = traffic_over(3_000, 43, now - 6 * DAY_MS, DAY_MS / 2);
    for g in &mut arrears {
        if Stream::of_type(g.type_name) == Some(Stream::Complaints) {
            let at = parse_millis(g.value["occurred_at"].as_str().unwrap()).unwrap();
            g.value["occurred_at"] = format_millis(at + 2 * DAY_MS).into();
        }
    }
    let hour = DAY_MS / 24;
    let alike = traffic_over(600, 44, now - 2 * hour, hour / 2);
    let last = traffic_over(600, 45, now - hour, hour / 2);
    let aligned = "max_event_time_lead_seconds = 3600\nidle_partition_seconds = 3\n";
    let paused = |port| metric_sum(port, "customer_pulse_paused_partitions");
    let held = |port| metric_sum(port, "customer_pulse_assigned_partitions");
    let topics = test_topics();

    let a = Instance::start_with(&broker.address, "", aligned);
    assert!(wait_for(Duration::from_secs(90), || held(a.port) == 12.0).await);
    // 15 s of traffic in arrears: the complaints wait while the other topics deliver.
    let publishing = tokio::spawn({
        let (brokers, events) = (broker.address.clone(), arrears.clone());
        async move { publish(&brokers, &test_topics(), &events, Some(200), 1).await }
    });
    assert!(
        wait_for(Duration::from_secs(30), || paused(a.port) == 4.0).await,
        "the complaints' four partitions paused"
    );
    let b = Instance::start_with(&broker.address, "", aligned);
    let split = wait_for(Duration::from_secs(90), || {
        held(a.port) > 0.0 && held(b.port) > 0.0
    })
    .await;
    assert!(split, "the partitions shared within 90 s");
    publishing.await.unwrap().unwrap();

    // Every topic within the lead of the others: nothing paused.
    publish(&broker.address, &topics, &alike, None, 1)
        .await
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || {
            paused(a.port) == 0.0 && paused(b.port) == 0.0
        })
        .await
    );
    b.stop().await;
    assert!(wait_for(Duration::from_secs(90), || held(a.port) == 12.0).await);
    publish(&broker.address, &topics, &last, None, 1)
        .await
        .unwrap();

    let events: Vec<Generated> = [arrears, alike, last].concat();
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let expected = replayed_states(&values, wall_clock_ms());
    crate::scale::served_as_replayed(&[a.port], &customer_ids(&events), &expected).await;
    a.stop().await;
}
