//! Faults end to end, the job running in this process against librdkafka's in-process mock
//! cluster: broker errors on produce, fetch and offset commit, the broker down and up again, a
//! slow broker; and a store that refuses writes as a full disk does. The job waits or retries,
//! says so in its metrics, and loses nothing: every customer's state equals an uninterrupted
//! file replay of the same events. Also here, since it needs offset-commit metadata, which Tansu
//! does not keep: two instances name each other as the owners of their partitions. And the
//! output sink on its own, with a produce request the broker refuses. And a stored offset the
//! brokers no longer have, which starts at the first record.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use customer_pulse::config::Config;
use customer_pulse::kafka::publish_with;
use customer_pulse::replay::wall_clock_ms;
use customer_pulse::store::Store;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::broker::free_port;
use crate::end_to_end::{
    config_text, customer_state, http_get, metric_sum, read_last_risk_records, replayed_states,
    traffic, wait_for, PARTITIONS,
};
use crate::store_faults::Refusing;

const INPUTS: [&str; 3] = [
    "customer.interactions",
    "customer.orders",
    "customer.complaints",
];

/// A mock cluster of one broker with every topic of the contract.
fn cluster() -> MockCluster<'static, DefaultProducerContext> {
    let cluster = MockCluster::new(1).unwrap();
    for topic in INPUTS {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    for topic in [
        "customer.churn-risk",
        "customer.complaint-trends",
        "customer.segment-metrics",
    ] {
        cluster.create_topic(topic, PARTITIONS, 1).unwrap();
    }
    cluster.create_topic("customer.events.dlq", 1, 1).unwrap();
    cluster
        .create_topic("customer-pulse.customers-changelog", PARTITIONS, 1)
        .unwrap();
    cluster
}

struct Job {
    port: u16,
    brokers: String,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    config: Config,
    _dir: tempfile::TempDir,
}

impl Job {
    /// Starts the job on `store` (or on RocksDB at the configured path when `None`).
    fn start(brokers: &str, group: &str, dir: tempfile::TempDir, store: Option<Store>) -> Job {
        Job::start_with(brokers, group, dir, store, "", "")
    }

    /// As [`Job::start`], with `kafka` added to the `[kafka]` section and `http` to the
    /// `[http]` one.
    fn start_with(
        brokers: &str,
        group: &str,
        dir: tempfile::TempDir,
        store: Option<Store>,
        kafka: &str,
        http: &str,
    ) -> Job {
        let port = free_port();
        let text = config_text(brokers, &dir.path().join("state"), port).replace(
            "group_id = \"pulse-test\"\n",
            &format!("group_id = \"{group}\"\n{kafka}"),
        ) + http;
        Job::launch(brokers, &text, port, dir, store)
    }

    /// Starts the job with the configuration `text`, whose HTTP endpoints listen on `port`.
    fn launch(
        brokers: &str,
        text: &str,
        port: u16,
        dir: tempfile::TempDir,
        store: Option<Store>,
    ) -> Job {
        let config = Config::parse(text, Vec::new()).unwrap();
        let shutdown = CancellationToken::new();
        let handle = match store {
            Some(store) => tokio::spawn(customer_pulse::pipeline::run_on(
                config.clone(),
                store,
                shutdown.clone(),
            )),
            None => tokio::spawn(customer_pulse::pipeline::run(
                config.clone(),
                shutdown.clone(),
            )),
        };
        Job {
            port,
            brokers: brokers.to_owned(),
            shutdown,
            handle,
            config,
            _dir: dir,
        }
    }

    fn processed(&self) -> usize {
        metric_sum(self.port, "customer_pulse_events_total") as usize
    }

    async fn wait_processed(&self, count: usize, what: &str) {
        let done = wait_for(Duration::from_secs(90), || self.processed() >= count).await;
        assert!(
            done,
            "{what}: {} of {count} processed in 90 s; the input topics hold {} records",
            self.processed(),
            input_records(&self.brokers),
        );
        assert_eq!(self.processed(), count, "{what}: nothing counted twice");
    }

    fn ready(&self) -> Option<u16> {
        http_get(self.port, "/readyz").map(|(status, _)| status)
    }

    /// One produce request in flight at a time: once, under injected produce errors, the mock
    /// cluster acknowledged every record yet its input topics held one fewer (1,199 of 1,200;
    /// 2026-12-01), which looks like a retried request judged a duplicate of a later one that
    /// had gone ahead. Whether this prevents it is not shown: it happened in 2 of about a dozen
    /// full runs (the first time, 2026-11-30, without the count of what the topics held).
    async fn publish(&self, events: &[customer_pulse::generate::Generated]) {
        let in_order = [("max.in.flight.requests.per.connection", "1")];
        publish_with(
            &self.brokers,
            &self.config.topics,
            events,
            None,
            1,
            &in_order,
        )
        .await
        .unwrap();
    }

    /// Every customer's state through HTTP equals the uninterrupted replay's, and each
    /// customer's last churn-risk record arrived on the topic.
    async fn assert_state_equals_replay(&self, values: &[serde_json::Value]) {
        let replayed = replayed_states(values, wall_clock_ms());
        let served: BTreeMap<String, serde_json::Value> = replayed
            .keys()
            .map(|id| {
                let state = customer_state(self.port, id).unwrap_or_else(|| panic!("{id} known"));
                (id.clone(), state)
            })
            .collect();
        for (id, state) in &replayed {
            assert_eq!(
                &served[id], state,
                "{id}: the faulted run equals the replay"
            );
        }
        let customers: Vec<String> = replayed.keys().cloned().collect();
        read_last_risk_records(&self.brokers, self.port, &customers).await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(60), self.handle)
            .await
            .expect("the job stops within 60 s")
            .unwrap()
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_faults_delay_the_job_but_lose_nothing() {
    let cluster = cluster();
    let job = Job::start(
        &cluster.bootstrap_servers(),
        "pulse-faults",
        tempfile::tempdir().unwrap(),
        None,
    );
    let events = traffic(3_000, 41);
    let chunks: Vec<_> = events.chunks(600).collect();
    use RDKafkaRespErr::*;

    job.publish(chunks[0]).await;
    job.wait_processed(600, "before any fault").await;

    // Produce requests fail (the job's outputs): the idempotent producer retries them.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 8],
    );
    job.publish(chunks[1]).await;
    job.wait_processed(1_200, "produce errors").await;

    // Fetch and offset-commit requests fail: the consumer refetches; the offsets stored with the
    // state stay authoritative.
    cluster.request_errors(
        RDKafkaApiKey::Fetch,
        &[RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 8],
    );
    cluster.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 8],
    );
    job.publish(chunks[2]).await;
    job.wait_processed(1_800, "fetch and commit errors").await;

    // The broker goes down, with records waiting, for at least three seconds and until the
    // job has reported it (librdkafka notices at its next reconnect attempt), then comes back.
    job.publish(chunks[3]).await;
    cluster.broker_down(1).unwrap();
    let down = std::time::Instant::now();
    let reported = wait_for(Duration::from_secs(30), || {
        metric_sum(job.port, "customer_pulse_kafka_errors_total") > 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(down.elapsed())).await;
    cluster.broker_up(1).unwrap();
    assert!(reported, "the broker being down is reported in the metrics");
    job.wait_processed(2_400, "broker down and up").await;

    // A slow broker: 200 ms on every request.
    cluster
        .broker_round_trip_time(1, Duration::from_millis(200))
        .unwrap();
    job.publish(chunks[4]).await;
    job.wait_processed(3_000, "a slow broker").await;
    cluster.broker_round_trip_time(1, Duration::ZERO).unwrap();

    let backlog_empty = wait_for(Duration::from_secs(60), || {
        metric_sum(job.port, "customer_pulse_outbox_backlog_records") == 0.0
    })
    .await;
    assert!(backlog_empty, "every output was acknowledged in the end");
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    job.assert_state_equals_replay(&values).await;
    job.stop().await;
}

/// A restore that fails (the changelog refuses the claim that opens it, as a topic not writable
/// yet, or a missing ACL, would) leaves its partitions unstarted, and nobody consumes them: the
/// instance owns none of the 12 input topic-partitions (what `InputPartitionsUnowned` pages on)
/// and is not ready. It tries again by itself; once the changelog takes writes, it restores
/// them and folds every event that waited, to the replay's state. Without the tries again it
/// folded nothing until a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_is_tried_again_and_its_partitions_start_once_the_changelog_takes_writes()
{
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    // Every produce request refused, for longer than four attempts at each partition's claim.
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 1_000],
    );
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config_text(&brokers, &dir.path().join("state"), port)
        .replace(
            "cache_customers = 500",
            "cache_customers = 500\nchangelog = true",
        )
        .replace(
            "group_id = \"pulse-test\"\n",
            "group_id = \"pulse-restore-retry\"\nassigned_partitions = [0, 1, 2, 3]\n",
        );
    let job = Job::launch(&brokers, &text, port, dir, None);
    let failed =
        || crate::changelog::metric(port, r#"customer_pulse_restores_total{outcome="failed"}"#);
    assert!(
        wait_for(Duration::from_secs(60), || failed() >= 4.0).await,
        "every partition's restore failed: {} failed",
        failed()
    );
    assert_eq!(metric_sum(port, "customer_pulse_assigned_partitions"), 0.0);
    assert_eq!(metric_sum(port, "customer_pulse_input_partitions"), 12.0);
    assert_eq!(job.ready(), Some(503));

    // The changelog takes writes again; events arrive.
    cluster.clear_request_errors(RDKafkaApiKey::Produce);
    let events = traffic(600, 43);
    job.publish(&events).await;
    job.wait_processed(events.len(), "after the changelog took writes again")
        .await;
    assert_eq!(metric_sum(port, "customer_pulse_assigned_partitions"), 12.0);
    assert_eq!(job.ready(), Some(200));
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    job.assert_state_equals_replay(&values).await;
    job.stop().await;
}

/// How many records the input topics hold (the mock cluster's topics start empty), so that a
/// shortfall in processing tells an event never stored from one never folded.
fn input_records(brokers: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut total = 0;
    for topic in INPUTS {
        for p in 0..PARTITIONS {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(10)) {
                Ok((low, high)) => total += high - low,
                Err(e) => panic!("watermarks of {topic}/{p}: {e}"),
            }
        }
    }
    total
}

/// The next offsets the consumer group committed to Kafka, by input partition.
fn committed_in_kafka(brokers: &str, group: &str) -> BTreeMap<(String, i32), i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for topic in INPUTS {
        for p in 0..PARTITIONS {
            tpl.add_partition(topic, p);
        }
    }
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
            _ => None,
        })
        .collect()
}

fn stored_offsets(store: &Store) -> BTreeMap<(String, i32), i64> {
    INPUTS
        .iter()
        .flat_map(|topic| (0..PARTITIONS).map(move |p| (topic.to_string(), p)))
        .filter_map(|(topic, p)| Some(((topic.clone(), p), store.offset(&topic, p).unwrap()?)))
        .collect()
}

/// A RocksDB state in `dir` that stored `offset` as the next of every input partition.
fn stored_at(dir: &tempfile::TempDir, offset: i64) -> Store {
    let store = Store::open(std::sync::Arc::new(
        customer_pulse::store::RocksBackend::open(&dir.path().join("state"), 8 << 20).unwrap(),
    ))
    .unwrap();
    let offsets = INPUTS
        .iter()
        .flat_map(|topic| (0..PARTITIONS).map(move |p| (topic.to_string(), p, offset)))
        .collect();
    store
        .commit(customer_pulse::store::Commit {
            offsets,
            ..Default::default()
        })
        .unwrap();
    store
}

/// A stored offset the brokers no longer have (the topic was recreated, or retention removed
/// the records after it) starts where `kafka.auto_offset_reset` says, `earliest` by default, as
/// a partition with no stored offset does: the records waiting there are folded. (librdkafka's
/// own default is the end, which skipped them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_offset_the_brokers_no_longer_have_starts_at_the_first_record() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    // Offsets far past the end of every input partition, as a topic recreated empty leaves them.
    let store = stored_at(&dir, 1_000_000);
    // The events are there before the job starts: starting at the end would skip them all.
    let events = traffic(300, 47);
    let topics = crate::end_to_end::test_topics();
    publish_with(&brokers, &topics, &events, None, 1, &[])
        .await
        .unwrap();
    assert_eq!(input_records(&brokers), 300);

    let job = Job::start(&brokers, "pulse-out-of-range", dir, Some(store));
    job.wait_processed(300, "from the first record").await;
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    job.assert_state_equals_replay(&values).await;
    job.stop().await;
}

/// Records retention deleted before the job read them are counted and warned of, not lost
/// silently: the mock cluster keeps 5 MB of a partition (librdkafka's `rdkafka_mock.c`) and
/// drops its oldest record batches past that, as retention does; a stored offset before the
/// first record left is out of range, the partition starts at that first record, and the
/// offsets between are `customer_pulse_input_offsets_skipped_total`, exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_deleted_before_they_were_read_are_counted_skipped() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    // The state had read nothing of any input partition yet.
    let store = stored_at(&dir, 0);
    // 60 records of 100 kB, one a batch, for one customer: 6 MB in its partition, more than
    // the cluster keeps. (They are no events: each is dead-lettered as too large.)
    let junk: Vec<customer_pulse::kafka::RawMessage> = (0..60)
        .map(|n| customer_pulse::kafka::RawMessage {
            topic: "customer.orders".into(),
            key: Some(b"c-0000001".to_vec()),
            payload: vec![b'a' + (n % 26) as u8; 100_000],
        })
        .collect();
    customer_pulse::kafka::publish_raw(&brokers, &junk, 1)
        .await
        .unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    let (mut deleted, mut partitions_deleted) = (0, 0);
    for p in 0..PARTITIONS {
        let (low, _) = consumer
            .fetch_watermarks("customer.orders", p, Duration::from_secs(10))
            .unwrap();
        deleted += low;
        partitions_deleted += i64::from(low > 0);
    }
    assert_eq!(
        partitions_deleted, 1,
        "the cluster dropped the oldest records of one partition"
    );
    assert!((1..60).contains(&deleted), "{deleted} records dropped");

    let job = Job::start(&brokers, "pulse-retention", dir, Some(store));
    let skipped = || metric_sum(job.port, "customer_pulse_input_offsets_skipped_total") as i64;
    let accounted = wait_for(Duration::from_secs(90), || {
        job.processed() as i64 + skipped() >= 60
    })
    .await;
    assert!(
        accounted,
        "every record folded or counted skipped in 90 s: {} and {}",
        job.processed(),
        skipped()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        skipped(),
        deleted,
        "the offsets deleted before they were read"
    );
    assert_eq!(
        job.processed() as i64,
        60 - deleted,
        "the records left, each once"
    );
    assert_eq!(
        metric_sum(job.port, "customer_pulse_input_offset_gaps_total"),
        1.0,
        "one run of offsets"
    );
    job.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_pauses_the_job_readyz_says_503_and_it_resumes_when_space_returns() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let dir = tempfile::tempdir().unwrap();
    let backend = Refusing::open(&dir.path().join("state"));
    let store = Store::open(backend.clone()).unwrap();
    let job = Job::start(&brokers, "pulse-disk", dir, Some(store.clone()));
    let events = traffic(1_200, 43);

    job.publish(&events[..600]).await;
    job.wait_processed(600, "before the disk fills").await;
    assert!(
        wait_for(Duration::from_secs(10), || job.ready() == Some(200)).await,
        "ready while writes succeed"
    );

    // The disk is full: every write is refused.
    backend.refuse.store(true, Ordering::SeqCst);
    let stored = stored_offsets(&store);
    job.publish(&events[600..]).await;
    let paused = wait_for(Duration::from_secs(30), || {
        metric_sum(job.port, "customer_pulse_commit_failures_total") >= 2.0
            && job.ready() == Some(503)
    })
    .await;
    assert!(
        paused,
        "the failed commits are counted and /readyz says 503"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        job.ready(),
        Some(503),
        "still not ready while the disk is full"
    );
    assert_eq!(
        job.processed(),
        600,
        "nothing of the refused batches counts"
    );
    assert_eq!(stored_offsets(&store), stored, "no stored offset moved");
    for (partition, committed) in committed_in_kafka(&brokers, "pulse-disk") {
        let at = stored.get(&partition).copied().unwrap_or(0);
        assert!(
            committed <= at,
            "{partition:?}: Kafka's committed offset {committed} is not past the state's {at}"
        );
    }

    // Space returns: the job resumes on its own and applies every event exactly once.
    backend.refuse.store(false, Ordering::SeqCst);
    job.wait_processed(1_200, "after space returned").await;
    assert!(
        wait_for(Duration::from_secs(10), || job.ready() == Some(200)).await,
        "ready again"
    );
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    job.assert_state_equals_replay(&values).await;
    job.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_name_each_other_as_owners_of_their_partitions() {
    owners_are_named(["", ""]).await;
}

/// The same with `kafka.assigned_partitions`: instances outside the group commit their offsets
/// all the same, and so name each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_with_assigned_partitions_name_each_other_as_owners() {
    owners_are_named([
        "assigned_partitions = [0, 3]\n",
        "assigned_partitions = [1, 2]\n",
    ])
    .await;
}

/// Two instances, `kafka` added to each one's `[kafka]` section, each with its
/// `http.advertised_url`: every customer is served by one, and the other's 421 names it.
async fn owners_are_named(kafka: [&str; 2]) {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let url = |name: &str| format!("http://{name}.pulse.test:9464");
    let start = |name: &str, kafka: &str| {
        Job::start_with(
            &brokers,
            "pulse-owners",
            tempfile::tempdir().unwrap(),
            None,
            kafka,
            &format!("advertised_url = \"{}\"\n", url(name)),
        )
    };
    let (a, b) = (start("a", kafka[0]), start("b", kafka[1]));
    let events = traffic(400, 23);
    a.publish(&events).await;
    let both = wait_for(Duration::from_secs(60), || {
        a.processed() + b.processed() == 400
    })
    .await;
    assert!(
        both,
        "{} + {} of 400 processed",
        a.processed(),
        b.processed()
    );
    assert!(
        a.processed() > 0 && b.processed() > 0,
        "both own partitions"
    );

    let mut ids: Vec<String> = events.iter().map(|g| g.customer_id.clone()).collect();
    ids.sort();
    ids.dedup();
    // Per customer: (the URL of the instance that serves it, the owner the other one names).
    let answers = || -> Vec<(Option<String>, Option<String>)> {
        ids.iter()
            .map(|id| {
                let path = format!("/customers/{id}");
                let header = format!("Authorization: Bearer {}\r\n", crate::end_to_end::TOKEN);
                let mut served = None;
                let mut named = None;
                for (name, job) in [("a", &a), ("b", &b)] {
                    let (status, body) =
                        crate::end_to_end::http_get_with(job.port, &path, &header).unwrap();
                    match status {
                        200 => served = Some(url(name)),
                        421 => {
                            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                            named = body["owner"].as_str().map(str::to_owned);
                        }
                        other => panic!("{id} on {name}: {other}"),
                    }
                }
                (served, named)
            })
            .collect()
    };
    // Offsets are committed asynchronously after each batch: allow them a moment to land.
    let named = wait_for(Duration::from_secs(30), || {
        answers()
            .iter()
            .all(|(served, named)| served.is_some() && served == named)
    })
    .await;
    assert!(
        named,
        "every customer served by one instance and its owner named by the other: {:?}",
        answers()
    );
    a.stop().await;
    b.stop().await;
}

/// Cooperative rebalancing, against the mock cluster, whose group coordinator waits for every
/// member to rejoin as Apache Kafka's does (Tansu 0.6.0 does not: see the README). Two members
/// share the four partitions; a third joins: only one of the two gives a partition up, the
/// other is not revoked anything, and every member holds whole partitions (the same partition
/// of all three input topics). With the eager range assignor both were revoked everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_joins_takes_a_partition_from_one_member_only() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let start = || {
        Job::start(
            &brokers,
            "pulse-cooperative",
            tempfile::tempdir().unwrap(),
            None,
        )
    };
    let assigned = |job: &Job| metric_sum(job.port, "customer_pulse_assigned_partitions");
    let revokes = |job: &Job| {
        metric_sum(
            job.port,
            r#"customer_pulse_rebalances_total{kind="revoke"}"#,
        )
    };
    let (a, b) = (start(), start());
    let split = wait_for(Duration::from_secs(60), || {
        assigned(&a) == 6.0 && assigned(&b) == 6.0
    })
    .await;
    assert!(
        split,
        "two partitions (of three topics) each: {} and {}",
        assigned(&a),
        assigned(&b)
    );
    let before = (revokes(&a), revokes(&b));
    let c = start();
    let settled = wait_for(Duration::from_secs(60), || {
        let counts = [assigned(&a), assigned(&b), assigned(&c)];
        counts.iter().sum::<f64>() == 12.0
            && counts.iter().all(|&n| n == 3.0 || n == 6.0)
            && assigned(&c) > 0.0
    })
    .await;
    let counts = [assigned(&a), assigned(&b), assigned(&c)];
    assert!(settled, "whole partitions on every member: {counts:?}");
    let revoked = [revokes(&a) - before.0, revokes(&b) - before.1];
    assert_eq!(
        revoked.iter().filter(|&&n| n > 0.0).count(),
        1,
        "one member gave a partition up, the other was not interrupted: {revoked:?}, {counts:?}"
    );
    // A's and B's events still flow: a member that kept its partitions folds on.
    let events = traffic(200, 29);
    a.publish(&events).await;
    let all = wait_for(Duration::from_secs(60), || {
        a.processed() + b.processed() + c.processed() == 200
    })
    .await;
    assert!(all, "every event folded once after the rebalance");
    for job in [a, b, c] {
        job.stop().await;
    }
}

/// A backlog split between members while one folds it: the first member takes every partition
/// and folds a backlog in batches of up to 5,000, gathering the next beside each fold, on a
/// store whose writes each take 400 ms (so that its folds last: since a batch commits once,
/// 150 ms let the whole backlog fold before the second member's join once in four runs); the
/// second joins meanwhile and takes two partitions. The revocation waits for the fold under
/// way to commit, for the outbox to drain and the release to be written, so the second member
/// restores every change the first committed and starts where it stopped: each event is
/// folded once between them, and every customer's state equals one uninterrupted replay.
///
/// It does not isolate that wait: taken out, the test still passed twice, as the first
/// member's fold committed after the release still reached the changelog before the second
/// member's claim (the mock cluster takes seconds over a rebalance), and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_joins_during_a_backlog_takes_its_partitions_after_the_fold_under_way() {
    let cluster = cluster();
    let brokers = cluster.bootstrap_servers();
    let events = traffic(100_000, 37);
    let topics = crate::end_to_end::test_topics();
    publish_with(&brokers, &topics, &events, None, 1_000, &[])
        .await
        .unwrap();
    let start = |dir: tempfile::TempDir, store: Option<Store>| {
        let port = free_port();
        let text = config_text(&brokers, &dir.path().join("state"), port)
            .replace(
                "cache_customers = 500",
                "cache_customers = 500\nchangelog = true",
            )
            .replace("max_batch_events = 500", "max_batch_events = 5000")
            .replace("group_id = \"pulse-test\"", "group_id = \"pulse-backlog\"");
        Job::launch(&brokers, &text, port, dir, store)
    };
    let dir = tempfile::tempdir().unwrap();
    let slow = Refusing::open(&dir.path().join("state"));
    slow.delay_ms.store(400, Ordering::SeqCst);
    let a = start(dir, Some(Store::open(slow.clone()).unwrap()));
    let total = events.len();
    assert!(
        wait_for(Duration::from_secs(60), || a.processed() > 0).await,
        "the first member folds"
    );
    let b = start(tempfile::tempdir().unwrap(), None);
    let revokes = |job: &Job| {
        metric_sum(
            job.port,
            r#"customer_pulse_rebalances_total{kind="revoke"}"#,
        )
    };
    let mut folded_at_revocation = 0;
    let revoked = wait_for(Duration::from_secs(60), || {
        folded_at_revocation = a.processed();
        revokes(&a) > 0.0
    })
    .await;
    assert!(revoked, "the first member gave partitions up");
    assert!(
        folded_at_revocation < total,
        "the partitions moved while the backlog was folded ({folded_at_revocation} of {total} folded)"
    );
    slow.delay_ms.store(0, Ordering::SeqCst);
    let assigned = |job: &Job| metric_sum(job.port, "customer_pulse_assigned_partitions");
    let done = wait_for(Duration::from_secs(90), || {
        a.processed() + b.processed() >= total && assigned(&a) == 6.0 && assigned(&b) == 6.0
    })
    .await;
    assert!(
        done,
        "the backlog folded and split: {} and {} of {total} folded, {} and {} partitions",
        a.processed(),
        b.processed(),
        assigned(&a),
        assigned(&b)
    );
    assert_eq!(
        a.processed() + b.processed(),
        total,
        "each event folded once: {} and {}",
        a.processed(),
        b.processed()
    );
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let expected = replayed_states(&values, wall_clock_ms());
    let ids: Vec<String> = expected.keys().cloned().collect();
    crate::scale::served_as_replayed(&[a.port, b.port], &ids, &expected).await;
    a.stop().await;
    b.stop().await;
}

/// The output sink on its own: it acknowledges a chunk's records in order, as far as the broker
/// took them, and a record the broker refused, with every one after it, stays to be delivered
/// again. A chunk of several batches a partition goes out in rounds, acknowledged whole. Every
/// record reaches the topic with its key, value, headers and any partition it names, the large
/// ones in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sink_acknowledges_in_order_only_what_the_broker_took() {
    use customer_pulse::kafka::KafkaSink;
    use customer_pulse::outbox::Sink;
    use customer_pulse::store::OutboxRecord;
    use customer_pulse::telemetry::Telemetry;
    use rdkafka::message::{Headers, Message};

    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("out", 2, 1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let config = Config::parse(
        &config_text(&brokers, "/tmp/unused".as_ref(), 1),
        Vec::new(),
    )
    .unwrap();
    let telemetry = std::sync::Arc::new(Telemetry::new());
    let mut sink = KafkaSink::connect(
        &brokers,
        &config.kafka_security,
        config.compression,
        telemetry.clone(),
    )
    .unwrap();
    // Records from 400 on are 200,000 bytes each.
    let value = |i: u64| {
        let mut value = format!("v-{i}").into_bytes();
        if i >= 400 {
            value.resize(200_000, b'.');
        }
        value
    };
    let record = |i: u64| {
        (
            1_000 + i,
            std::sync::Arc::new(OutboxRecord {
                topic: "out".into(),
                key: Some(format!("k-{i}").into_bytes()),
                value: (i % 50 != 7).then(|| value(i)),
                headers: vec![("n".into(), i.to_string().into_bytes())],
                partition: i.is_multiple_of(3).then_some((i / 3 % 2) as i32),
            }),
        )
    };
    let first: Vec<_> = (0..300).map(record).collect();
    let seqs = |records: &[(u64, std::sync::Arc<OutboxRecord>)]| {
        records.iter().map(|(s, _)| *s).collect::<Vec<_>>()
    };
    assert_eq!(sink.deliver(&first).await, seqs(&first));

    // The broker refuses the next produce request outright (not an error it retries).
    cluster.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE],
    );
    let second: Vec<_> = (300..400).map(record).collect();
    let acked = sink.deliver(&second).await;
    assert!(
        acked.len() < second.len() && acked[..] == seqs(&second)[..acked.len()],
        "a prefix of the chunk, in order, short of the refused record: {} of 100",
        acked.len()
    );
    assert!(telemetry
        .render()
        .contains("customer_pulse_output_delivery_failures_total 1"));
    // What was not acknowledged is delivered again, and now taken.
    let rest = &second[acked.len()..];
    assert_eq!(sink.deliver(rest).await, seqs(rest));

    // A chunk of 5 MB, 2.5 MB a partition: sent in rounds of at most 750,000 bytes a
    // partition, one batch each, and acknowledged whole, in order.
    assert_eq!(
        sink.missing_topics(&["out"], Duration::from_secs(10))
            .unwrap(),
        Vec::<String>::new()
    );
    let large: Vec<_> = (400..425).map(record).collect();
    assert_eq!(sink.deliver(&large).await, seqs(&large));

    // Every record is on the topic as it was given, in its named partition where it had one.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "sink-check")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        tpl.add_partition_offset("out", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut seen = BTreeMap::new();
    let mut last_large = BTreeMap::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while seen.len() < 425 && std::time::Instant::now() < deadline {
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        let header = message.headers().unwrap().get(0);
        let i: u64 = std::str::from_utf8(header.value.unwrap())
            .unwrap()
            .parse()
            .unwrap();
        let (_, sent) = record(i);
        assert_eq!(header.key, "n");
        assert_eq!(message.key(), sent.key.as_deref(), "record {i}'s key");
        assert_eq!(
            message.payload(),
            sent.value.as_deref(),
            "record {i}'s value"
        );
        if let Some(partition) = sent.partition {
            assert_eq!(message.partition(), partition, "record {i}'s partition");
        }
        if i >= 400 {
            let last = last_large.insert(message.partition(), i);
            assert!(
                last < Some(i),
                "the large records in their order in partition {}: {i} after {last:?}",
                message.partition()
            );
        }
        seen.insert(i, ());
    }
    assert_eq!(seen.len(), 425, "every record reached the topic");
}

/// A job whose brokers do not answer logs each of its Kafka clients' errors once, then at most
/// once every 30 s with how many it held back, and stops on SIGTERM with none piled up. Before,
/// the errors came some 60 a second, each a log line (880 lines in the first ten seconds), and
/// the client that looks up partitions' owners queued its own until the job stopped, then
/// logged them all at once.
#[test]
fn a_job_without_brokers_logs_each_client_error_once_a_period() {
    let log = run_without_brokers("", Duration::from_secs(14));
    for client in [
        "client=\"consumer\"",
        "client=\"producer\"",
        "client=\"owner lookup\"",
    ] {
        assert!(log.contains(client), "{client} logged its errors:\n{log}");
    }
}

/// The same with the changelog on: its claims producer's errors too, and its reader's when it
/// has met any by then (349 lines in 16 s before).
#[test]
fn a_job_with_the_changelog_without_brokers_logs_each_client_error_once_a_period() {
    let log = run_without_brokers("changelog = true\n", Duration::from_secs(14));
    assert!(log.contains("client=\"claims producer\""), "{log}");
}

/// The binary's `run` with `RUST_LOG` at `rust_log` and its HTTP address taken, so that it
/// stops at once: whether it succeeded, its standard error, and the address.
fn run_with_its_http_address_taken(rust_log: &str) -> (bool, String, std::net::SocketAddr) {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let brokers = format!("127.0.0.1:{}", free_port());
    let text = config_text(&brokers, &dir.path().join("state"), address.port());
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", rust_log)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), stderr, address)
}

/// An HTTP address in use stops the job at once, naming the field that sets it (before, only
/// the address: the demo's error, which a config does not set, had to say the same).
#[test]
fn a_job_whose_http_address_is_taken_stops_naming_the_field() {
    let (succeeded, stderr, address) = run_with_its_http_address_taken("warn");
    assert!(!succeeded, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on {address} (config field `http.listen_address`)"
        )),
        "{stderr}"
    );
}

/// A blank `RUST_LOG` (an empty variable in a manifest) logs at `info`, as an unset one does:
/// before, it logged errors alone. One that does not parse logs at `info` and says so: before,
/// without a word.
#[test]
fn a_blank_or_unreadable_rust_log_logs_at_info_and_an_unreadable_one_says_so() {
    for rust_log in ["", " ", "garbage[", "info,rdkafka=loud"] {
        let (_, log, _) = run_with_its_http_address_taken(rust_log);
        assert!(log.contains(" INFO "), "RUST_LOG={rust_log:?}: {log}");
        assert_eq!(
            log.contains("is not a log filter"),
            !rust_log.trim().is_empty(),
            "RUST_LOG={rust_log:?}: {log}"
        );
    }
    let (_, log, _) = run_with_its_http_address_taken("warn");
    assert!(
        !log.contains(" INFO ") && !log.contains("is not a log filter"),
        "{log}"
    );
}

/// A stop during the start's check of the input topics' partition counts, which waits up to
/// ten seconds for brokers that do not answer, is not held up by it: the check ends with the
/// stop, and does not go on to say it could not read them.
#[test]
fn a_stop_during_the_start_s_check_of_the_inputs_does_not_wait_for_it() {
    let log = run_without_brokers("", Duration::from_secs(2));
    assert!(
        !log.contains("Could not read the input topics' partition counts"),
        "the stop waited for the check:\n{log}"
    );
}

/// A client that sent part of a request and waits does not hold the job at SIGTERM: the job
/// stops cleanly while the client is still connected, and says that it dropped the request.
/// Until 2026-12-05 it waited for the client to go away (two minutes, by hand).
#[test]
fn a_client_that_sent_part_of_a_request_does_not_hold_the_job_at_sigterm() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let brokers = format!("127.0.0.1:{}", free_port());
    let http_port = free_port();
    let text = config_text(&brokers, &dir.path().join("state"), http_port);
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("job.log");
    let mut job = crate::crash::Job::start_logging_to(&config, &log);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut client = loop {
        match std::net::TcpStream::connect(("127.0.0.1", http_port)) {
            Ok(client) => break client,
            Err(_) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("the job's HTTP port did not open: {e}"),
        }
    };
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: pulse\r\n")
        .unwrap();
    // The request is under way once the server has read its first line.
    std::thread::sleep(Duration::from_millis(500));
    let stopped = job.terminate_within(Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        stopped,
        Some(true),
        "a clean stop, the client connected:\n{text}"
    );
    assert!(
        text.contains("HTTP requests still under way at shutdown were dropped."),
        "{text}"
    );
    drop(client);
}

/// The log of the binary's `run` against a port nobody listens on, with `state` added to the
/// config's `[state]` section, stopped by SIGTERM `after` its start; asserts a clean stop in
/// under 60 lines that did not wait for the start's last check of the brokers.
fn run_without_brokers(state: &str, after: Duration) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    let brokers = format!("127.0.0.1:{}", free_port());
    let text = config_text(&brokers, &dir.path().join("state"), free_port())
        .replace("[state]\n", &format!("[state]\n{state}"));
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("job.log");
    let job = crate::crash::Job::start_logging_to(&config, &log);
    // At 14 s: past the start's ten seconds waiting for the input topics' partition counts,
    // after which the consumer and the producer start and meet the errors too.
    std::thread::sleep(after);
    assert!(job.terminate(), "a clean stop");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.lines().count();
    assert!(lines < 60, "{lines} lines:\n{text}");
    // The start's check of the output topics begins when the input topics' gives up, at 10 s,
    // and would give up itself at 20 s: the stop did not wait for it (it waited until 2026-12-04).
    assert!(
        !text.contains("Could not read the brokers' topic list"),
        "the stop waited for the check:\n{text}"
    );
    text
}

/// `generate --brokers` with brokers that do not answer says so within ten seconds, having
/// logged its producer's errors once each (400 lines before).
#[test]
fn generate_without_brokers_says_so_and_logs_each_error_once() {
    let brokers = format!("127.0.0.1:{}", free_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
        .args(["generate", "--events", "100", "--brokers", &brokers])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains(&format!(
            "error: cannot reach the brokers {brokers} within 10 s"
        )),
        "{text}"
    );
    assert!(text.contains("client=\"publisher\""), "{text}");
    let lines = text.lines().count();
    assert!(lines < 20, "{lines} lines:\n{text}");
}
