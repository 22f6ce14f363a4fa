//! Several instances in one consumer group (issue 6): three processes of the real binary share
//! the partitions while traffic flows; one is killed with SIGKILL, a fourth with no local state
//! joins later. In the end each customer's state, served by whichever instance owns its
//! partition, equals one uninterrupted file replay of the same events: nothing lost, nothing
//! counted twice. A fifth instance then takes a partition from one that keeps its copy: that one
//! answers 421 rather than serve it. Then the changelog itself must hold that state: a store
//! with nothing local restores every partition from it and ends equal to the replay, whatever
//! the instances wrote while two of them owned a partition at once. Last, the complaint windows
//! and segment days that the aggregator (the owner of partition 0) emitted over every partition
//! equal the replay's.

use std::time::Duration;

use std::collections::BTreeMap;

use customer_pulse::config::Config;
use customer_pulse::kafka::{publish, ChangelogReader};
use customer_pulse::replay::wall_clock_ms;
use customer_pulse::restore::{restore, ChangelogSource};
use customer_pulse::store::{
    decode_position, ChangelogRecord, Claim, Epoch, Ownership, Sequence, Store, StoreError,
    POSITION_KEY,
};

use customer_pulse::event::parse_millis;
use customer_pulse::pipeline::processor_settings;
use customer_pulse::processor::Processor;
use rdkafka::Message;

use crate::aggregation::{aggregates, per_day, strip};
use crate::broker::{free_port, Broker};
use crate::crash::Job;
use crate::end_to_end::{
    config_text, create_all_topics, header, http_get, metric_sum, read_topic_until,
    replayed_states, served_states, sort_seen, test_topics, traffic, wait_for, PARTITIONS,
};
use crate::support::file_record;

struct Instance {
    job: Job,
    port: u16,
    _dir: tempfile::TempDir,
}

fn start(brokers: &str) -> Instance {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config_text(brokers, &dir.path().join("state"), port)
        .replace(
            "group_id = \"pulse-test\"",
            // The default session (10 s): a shorter one, with three members and the broker on
            // two busy cores, missed heartbeats and kept the group rebalancing.
            "group_id = \"pulse-scale\"",
        )
        .replace(
            "cache_customers = 500",
            "cache_customers = 500\nchangelog = true",
        )
        // The default: batches that do not wait, so more and smaller commits while partitions
        // move (with 20 ms the handoff this test checks went wrong less often).
        .replace(
            "max_batch_wait_milliseconds = 20",
            "max_batch_wait_milliseconds = 0",
        );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    Instance {
        job: Job::start(&path),
        port,
        _dir: dir,
    }
}

/// `customer_pulse_restores_total` of the instance at `port`, by outcome, from one scrape.
fn restores_by_outcome(port: u16) -> BTreeMap<String, f64> {
    let (status, text) = http_get(port, "/metrics").expect("the instance serves its metrics");
    assert_eq!(status, 200, "{port}: /metrics");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(r#"customer_pulse_restores_total{outcome=""#)?;
            let (outcome, value) = rest.split_once(r#""} "#)?;
            Some((outcome.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// One instance's answer to a customer lookup: its port, the status and the body.
type Answer = (u16, u16, String);

fn ports(instances: &[&Instance]) -> Vec<u16> {
    instances.iter().map(|i| i.port).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_one_killed_one_added_serve_the_state_of_one_uninterrupted_pass() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let topics = test_topics();
    let events = traffic(6_000, 71);
    let mut ids: Vec<String> = events.iter().map(|g| g.customer_id.clone()).collect();
    ids.sort();
    ids.dedup();

    let a = start(&broker.address);
    let b = start(&broker.address);
    let c = start(&broker.address);
    // 6,000 events at 250 a second: 24 s of traffic while the group changes.
    let publisher = {
        let brokers = broker.address.clone();
        let events = events.clone();
        tokio::spawn(async move { publish(&brokers, &topics, &events, Some(250), 1).await })
    };
    tokio::time::sleep(Duration::from_secs(8)).await;
    b.job.signal("-KILL");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let d = start(&broker.address);
    publisher.await.unwrap().unwrap();

    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let expected = replayed_states(&values, wall_clock_ms());
    let live = [&a, &c, &d];
    served_as_replayed(&ports(&live), &ids, &expected).await;

    // A fifth instance joins: four members for four partitions, so the one that had two gives
    // one up and keeps its old copy. Every customer is still served by exactly one instance;
    // one that holds an old copy refuses with 421 and names the partition.
    let e = start(&broker.address);
    let live = [&a, &c, &d, &e];
    let port_e = e.port;
    let joined = wait_for(Duration::from_secs(60), || {
        http_get(port_e, "/readyz").is_some_and(|(s, _)| s == 200)
            && served_states(&ports(&live), &ids) == expected
    })
    .await;
    assert!(
        joined,
        "the fifth instance took a partition and all is served within 60 s"
    );
    // Once the group is quiet, each partition is held by one member, with its three input
    // topics, and each customer has one owner. Against Tansu a join can take several rounds (it
    // completes a join before every member has rejoined, and may hand a partition on without
    // telling its old owner, which finds the new owner's claim in the changelog and rejoins the
    // group a session timeout later, even with no events to write), so partitions may still
    // move for a while after the new member took its first: a reading counts once it and one
    // taken 6 s later, with no rebalance or rejoin anywhere between them, agree, and no
    // instance has found its partition claimed by another.
    // (Which members are revoked anything is checked against the mock cluster, in `faults`.)
    let moves = || -> f64 {
        ports(&live)
            .into_iter()
            .map(|port| {
                metric_sum(port, "customer_pulse_rebalances_total")
                    + metric_sum(port, "customer_pulse_group_rejoins_total")
            })
            .sum()
    };
    // Partitions an instance found claimed by another and will rejoin for, and instances that
    // left the group to join it again and have not subscribed yet: not quiet yet.
    let unsettled = || -> f64 {
        ports(&live)
            .into_iter()
            .map(|port| {
                metric_sum(port, "customer_pulse_partitions_claimed_away")
                    + metric_sum(port, "customer_pulse_group_rejoining")
            })
            .sum()
    };
    let counts = || -> Vec<f64> {
        ports(&live)
            .into_iter()
            .map(|port| metric_sum(port, "customer_pulse_assigned_partitions"))
            .collect()
    };
    // Every instance's answer for every customer.
    let answers_of = || -> Vec<(&String, Vec<Answer>)> {
        ids.iter()
            .map(|id| {
                let answers = live
                    .iter()
                    .map(|i| {
                        let (status, body) = http_get(i.port, &format!("/customers/{id}")).unwrap();
                        (i.port, status, body)
                    })
                    .collect();
                (id, answers)
            })
            .collect()
    };
    // Who answers what; the bodies are not compared (a risk is worked out at the time asked).
    let statuses = |answers: &[(&String, Vec<Answer>)]| -> Vec<Vec<(u16, u16)>> {
        answers
            .iter()
            .map(|(_, a)| a.iter().map(|(port, status, _)| (*port, *status)).collect())
            .collect()
    };
    // Which ports answer 200 for the customers of each partition.
    let serving = |answers: &[(&String, Vec<Answer>)]| -> BTreeMap<i32, Vec<u16>> {
        let mut serving: BTreeMap<i32, Vec<u16>> = BTreeMap::new();
        for (id, answers) in answers {
            let partition = customer_pulse::processor::partition_for(id.as_bytes(), 4);
            let ports = serving.entry(partition).or_default();
            for (port, status, _) in answers {
                if *status == 200 && !ports.contains(port) {
                    ports.push(*port);
                }
            }
        }
        serving
    };
    // Each of the four partitions held by exactly one member, with its three input topics.
    let held_once = |counts: &[f64]| {
        counts.iter().all(|c| *c % 3.0 == 0.0) && counts.iter().sum::<f64>() == 12.0
    };
    // A quiet reading with a partition held by nobody is not the end (it failed one CI run of the
    // test command, 2026-12-02): Tansu's coordinator completes a round without waiting for every
    // member, and drops a live member that spent a session timeout in a join (its log, with
    // `PULSE_TEST_BROKER_LOG`, shows it), so a round can leave a partition with a member that no
    // longer holds it until a later round, which may come more than 6 s later. Such a reading is
    // printed and the test waits on; each partition must still have one holder within the 120 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let quiet = loop {
        let before = (moves(), counts(), statuses(&answers_of()));
        tokio::time::sleep(Duration::from_secs(6)).await;
        let answers = answers_of();
        let after = (moves(), counts(), statuses(&answers));
        // Input partitions per instance, and who serves each partition's customers.
        let reading = format!(
            "{:?} (ports {:?}); who serves each partition: {:?}",
            after.1,
            ports(&live),
            serving(&answers)
        );
        if before == after && unsettled() == 0.0 {
            if held_once(&after.1) {
                break Ok((after.1, answers));
            }
            eprintln!("scale: quiet for 6 s, yet the partitions are not each held once: {reading}; waiting on");
        }
        if std::time::Instant::now() >= deadline {
            break Err(reading);
        }
    };
    let (counts, answers) = quiet.unwrap_or_else(|reading| {
        panic!("the group is quiet for 6 s with each partition held once, with its three input topics, within 120 s: {reading}")
    });
    // What the InputPartitionsUnowned alert compares the instances' sum with: silent now.
    for port in ports(&live) {
        assert_eq!(
            metric_sum(port, "customer_pulse_input_partitions"),
            counts.iter().sum::<f64>(),
            "{port}: input partitions"
        );
    }
    // How the partitions are spread is the coordinator's: Tansu may complete a round without a
    // member that has just joined (again), which then holds none while another holds two; that
    // is printed, not asserted.
    if counts.iter().any(|c| *c != 3.0) {
        eprintln!("scale: the group settled unbalanced: {counts:?}");
    }
    let mut misdirected = 0;
    for (id, answers) in answers {
        let owners: Vec<u16> = answers
            .iter()
            .filter(|(_, status, _)| *status == 200)
            .map(|(port, _, _)| *port)
            .collect();
        assert_eq!(owners.len(), 1, "{id}: one owner");
        for (_, status, body) in &answers {
            assert!([200, 404, 421].contains(status), "{id}: {status}");
            if *status == 421 {
                misdirected += 1;
                let body: serde_json::Value = serde_json::from_str(body).unwrap();
                assert_eq!(body["owned_here"], false, "{id}");
                assert_eq!(
                    body["partition"].as_i64(),
                    Some(i64::from(customer_pulse::processor::partition_for(
                        id.as_bytes(),
                        4
                    ))),
                    "{id}: the partition named"
                );
            }
        }
    }
    assert!(
        misdirected > 0,
        "a partition moved away from an instance that keeps its copy"
    );
    // The partition that moved away from an instance that keeps its copy was taken by one that
    // restored it: the other's claim, and its records, were in the changelog. Which instance
    // that was is the coordinator's choice. It need not be the added one: in one CI run
    // (2026-12-04) the fourth instance took, with no state, a partition whose changelog held
    // only the killed instance's claim (it was killed before it wrote a record), so it restored
    // nothing, rebuilt the partition from the input, and kept it to the end.
    let restores: Vec<(u16, BTreeMap<String, f64>)> = ports(&live)
        .into_iter()
        .map(|port| (port, restores_by_outcome(port)))
        .collect();
    let applied: f64 = restores
        .iter()
        .flat_map(|(_, by)| ["tail", "from_scratch"].map(|o| by.get(o).copied().unwrap_or(0.0)))
        .sum();
    eprintln!("scale: restores by port and outcome: {restores:?}");
    assert!(
        applied >= 1.0,
        "an instance restored what another had written: restores by port and outcome {restores:?}"
    );
    let records: f64 = ports(&live)
        .into_iter()
        .map(|port| metric_sum(port, "customer_pulse_restored_records_total"))
        .sum();
    assert!(records > 0.0, "the restores applied records");

    // The changelog holds the same state once every instance's outbox has delivered it. Records
    // an instance wrote after another had claimed its partition (Tansu hands a partition on
    // before its old owner has revoked it) do not count; an instance that the group left such a
    // partition with claims it back after a session timeout and writes its state again, so the
    // changelog is read again until it holds that state, for at most 60 s.
    let drained = wait_for(Duration::from_secs(60), || {
        live.iter()
            .all(|i| metric_sum(i.port, "customer_pulse_outbox_backlog_records") == 0.0)
    })
    .await;
    assert!(drained, "every live instance's outbox drained");
    let mut read = changelog_states(&broker.address);
    let same = wait_for(Duration::from_secs(60), || {
        read = changelog_states(&broker.address);
        read.0 == expected
    })
    .await;
    let (restored, log) = read;
    let stale = log
        .iter()
        .filter(|e| e.claim.is_none() && !e.counts)
        .count();
    let claims = log.iter().filter(|e| e.claim.is_some()).count();
    let rejoins: f64 = live
        .iter()
        .map(|i| metric_sum(i.port, "customer_pulse_group_rejoins_total"))
        .sum();
    eprintln!("scale: {stale} changelog records were written by an instance that no longer owned the partition; {claims} claims; {rejoins} rejoins of the group");
    if !same {
        panic!(
            "the changelog does not restore the replayed state:\n{}",
            explain_changelog(&restored, &expected, &log)
        );
    }

    // The aggregates: the owner of input partition 0 emits, from every partition's changelog,
    // the complaint windows and segment days one instance emits over the same events.
    aggregates_of_one_pass(&broker.address, &values, &ports(&[&a, &c, &d, &e])).await;
}

/// Waits up to 120 s for the instances at `ports` to serve each customer of `ids` with its
/// `expected` state, then asserts on the reading the wait ended on, not a new one: a partition
/// handed on and back (Tansu can do so while the machine is loaded) is restored again a moment
/// later, and its customers are not served meanwhile.
pub async fn served_as_replayed(
    ports: &[u16],
    ids: &[String],
    expected: &BTreeMap<String, serde_json::Value>,
) {
    let mut got = BTreeMap::new();
    let settled = wait_for(Duration::from_secs(120), || {
        got = served_states(ports, ids);
        &got == expected
    })
    .await;
    for (id, want) in expected {
        assert_eq!(
            got.get(id),
            Some(want),
            "{id}: served state equals the replay"
        );
    }
    assert!(settled);
}

/// The complaint windows and segment days that the instances at `ports` (one of them the
/// aggregator) emitted over `values` are those one processor emits in one pass. Those ending
/// two hours (twice the allowed lateness) before the newest event must all be out; the last
/// ones wait for the slowest partition's watermark.
pub async fn aggregates_of_one_pass(brokers: &str, values: &[serde_json::Value], ports: &[u16]) {
    emitted_as_in_one_pass(brokers, values, ports, true).await;
}

/// As [`aggregates_of_one_pass`], for windows and days emitted by an aggregator at first and
/// then by the lone instance at `port`, which now runs without the changelog (no aggregator's
/// watermark to wait for: the instance emits a window in the commit that closes it).
pub async fn lone_aggregates_of_one_pass(brokers: &str, values: &[serde_json::Value], port: u16) {
    emitted_as_in_one_pass(brokers, values, &[port], false).await;
}

async fn emitted_as_in_one_pass(
    brokers: &str,
    values: &[serde_json::Value],
    ports: &[u16],
    aggregator_runs: bool,
) {
    let want = replayed_aggregates(values, brokers);
    let newest = values
        .iter()
        .filter_map(|v| parse_millis(v["occurred_at"].as_str()?))
        .max()
        .unwrap();
    let due: Vec<&String> = want
        .iter()
        .filter(|(_, v)| {
            parse_millis(v["window_end"].as_str().unwrap()).unwrap() <= newest - 7_200_000
        })
        .map(|(id, _)| id)
        .collect();
    assert!(due.len() > 100, "{} windows and days due", due.len());
    // The aggregator's watermark, a metric of the instance that runs it, passes the windows
    // due. Waited for before the windows are read: an aggregator that reads the changelog again
    // (a state put back from a copy) emits again windows that are out already.
    let aggregator_watermark = || {
        ports
            .iter()
            .map(|port| metric_sum(*port, "customer_pulse_aggregator_watermark_seconds"))
            .fold(0.0, f64::max)
    };
    let caught_up = || aggregator_watermark() * 1000.0 >= (newest - 7_200_000) as f64;
    if aggregator_runs {
        wait_for(Duration::from_secs(60), caught_up).await;
    }
    let mut got = BTreeMap::new();
    // Every segment-day record as emitted, in order: which copies a day had, should it differ.
    let mut emitted_days = Vec::new();
    for topic in ["customer.complaint-trends", "customer.segment-metrics"] {
        let messages = read_topic_until(brokers, topic, |messages| {
            let emitted = by_record_id(messages);
            due.iter()
                .filter(|id| {
                    id.starts_with(if topic.contains("trends") {
                        "trend-"
                    } else {
                        "segment-"
                    })
                })
                .all(|id| emitted.contains_key(*id))
        })
        .await;
        got.extend(by_record_id(&messages));
        if topic.contains("segment") {
            emitted_days = messages
                .iter()
                .filter_map(|m| {
                    let value: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
                    Some((header(m, "record_id")?, m.partition(), m.offset(), value))
                })
                .collect();
        }
    }
    for id in &due {
        assert!(got.contains_key(*id), "{id} emitted");
    }
    // How one customer's events from the three topics of a partition interleave differs from
    // run to run (one instance's too): changes of standing (lost, won back, and so the
    // population by lifecycle and the active customers) and the segment a renewal or referral
    // fell in depend on it. Those are compared per day over the segments, or not at all here;
    // the `aggregation` test compares them exactly, in a fixed order.
    let order_free = |record: &serde_json::Value| {
        let mut record = strip(record);
        if let Some(fields) = record.as_object_mut() {
            for field in [
                "lost_customers",
                "won_back",
                "renewals",
                "customers_by_lifecycle",
                "active_customers",
                "at_risk_customers",
                "avg_ltv_minor",
                "opened_per_1000_active",
            ] {
                fields.remove(field);
            }
        }
        record
    };
    let mut differ = Vec::new();
    for (id, value) in &got {
        let wanted = want
            .get(id)
            .unwrap_or_else(|| panic!("{id}: one instance emits it too"));
        if order_free(value) != order_free(wanted) {
            let (got, want) = (order_free(value), order_free(wanted));
            differ.push(format!("{id}:\n  got  {got}\n  want {want}"));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        got.len(),
        differ.join("\n")
    );
    // The days due only: a later one may be emitted in part when the reading stops, and which
    // segment a renewal or referral falls in depends on the order of reading, so a day's
    // segments in part need not add up. Until 2026-12-04 every emitted day was taken: in a run
    // begun after about 21:00 UTC the traffic's last day closed within the last two hours of
    // event time, and both tests that use this check failed on it, a renewal or three short.
    let got_days: BTreeMap<String, serde_json::Value> = got
        .iter()
        .filter(|(id, _)| id.starts_with("segment-") && due.contains(id))
        .map(|(id, v)| (id.clone(), v.clone()))
        .collect();
    let want_days: BTreeMap<String, serde_json::Value> = want
        .iter()
        .filter(|(id, _)| got_days.contains_key(*id))
        .map(|(id, v)| (id.clone(), v.clone()))
        .collect();
    let aggregator_watermark = aggregator_watermark();
    assert!(
        !aggregator_runs || aggregator_watermark * 1000.0 >= (newest - 7_200_000) as f64,
        "aggregator watermark {aggregator_watermark} s, newest event {newest} ms"
    );
    // Should a count differ: whether the aggregator took a fact after its day was emitted.
    let late: f64 = ports
        .iter()
        .map(|port| metric_sum(*port, "customer_pulse_aggregator_late_facts_total"))
        .sum();
    for path in [&["referrals"][..], &["renewals", "count"]] {
        let (got, want) = (per_day(&got_days, path), per_day(&want_days, path));
        if got != want {
            // Each copy of the days that differ, as emitted.
            let days: Vec<&String> = got.keys().filter(|d| got.get(*d) != want.get(*d)).collect();
            let copies: Vec<String> = emitted_days
                .iter()
                .filter(|(_, _, _, v)| days.iter().any(|d| v["window_start"] == d.as_str()))
                .map(|(id, partition, offset, v)| {
                    let value = path.iter().fold(v, |v, field| &v[*field]);
                    format!("  {id} at {partition}/{offset}: {value}")
                })
                .collect();
            panic!(
                "{path:?} per day: got {got:?}, want {want:?}; facts the live instances' aggregators applied late: {late}; every copy of the days that differ:\n{}",
                copies.join("\n")
            );
        }
    }
}

/// The complaint-trend and segment-metric records one processor emits over `values` in one
/// pass, with the settings of the instances' configuration, by record id.
fn replayed_aggregates(
    values: &[serde_json::Value],
    brokers: &str,
) -> BTreeMap<String, serde_json::Value> {
    let text = config_text(brokers, std::path::Path::new("/tmp/unused"), 1);
    let config = Config::parse(&text, Vec::new()).unwrap();
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), processor_settings(&config));
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| file_record(i as i64, &v.to_string()))
        .collect();
    processor.process(&records, wall_clock_ms()).unwrap();
    aggregates(&store)
}

/// The last value per `record_id` header.
fn by_record_id(
    messages: &[rdkafka::message::OwnedMessage],
) -> BTreeMap<String, serde_json::Value> {
    let mut last = BTreeMap::new();
    for m in messages {
        if let (Some(id), Some(payload)) = (header(m, "record_id"), m.payload()) {
            last.insert(id, serde_json::from_slice(payload).unwrap());
        }
    }
    last
}

/// One record of the changelog as a restore reads it, for a failure's explanation.
pub struct Entry {
    pub partition: i32,
    pub offset: i64,
    /// The customer id, or what else the record is.
    pub key: String,
    pub epoch: Option<Epoch>,
    /// Its writer's number for it (header `customer-pulse-sequence`).
    pub sequence: Option<Sequence>,
    pub claim: Option<Claim>,
    /// A position record's input offsets.
    pub position: Option<Vec<(String, i64)>>,
    pub counts: bool,
}

/// Reads the changelog as a restore does, but does not claim: a claim would make what the
/// instances write next not count (and they would claim their partitions back).
struct Peek<'r>(&'r ChangelogReader);

impl ChangelogSource for Peek<'_> {
    fn read(
        &self,
        partition: i32,
        from: Option<i64>,
        to: i64,
        each: &mut dyn FnMut(i64, ChangelogRecord) -> Result<(), StoreError>,
    ) -> anyhow::Result<Option<i64>> {
        self.0.read(partition, from, to, each)
    }

    /// Restores read up to their claim: everything there is.
    fn claim(&self, _: i32, _: &Claim) -> anyhow::Result<i64> {
        Ok(i64::MAX - 1)
    }

    fn end(&self, partition: i32) -> anyhow::Result<i64> {
        self.0.end(partition)
    }

    /// Peeking holds nothing.
    fn release(&self, _: &[(i32, Epoch)]) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Each customer's state as a store with nothing local restores it from the changelog, and
/// every record of the changelog, with whether it counts.
pub fn changelog_states(brokers: &str) -> (BTreeMap<String, serde_json::Value>, Vec<Entry>) {
    let config = Config::parse(
        &config_text(brokers, std::path::Path::new("/tmp/unused"), 1),
        Vec::new(),
    )
    .unwrap();
    let topic = &config.topics.changelog;
    let reader = ChangelogReader::connect(brokers, &config.kafka_security, topic).unwrap();
    let mut log = Vec::new();
    for partition in 0..PARTITIONS {
        let mut ownership = Ownership::default();
        reader
            .read(partition, None, i64::MAX, &mut |offset, record| {
                let claim = record.claim()?;
                if let Some(claim) = &claim {
                    ownership.claimed(offset, claim);
                }
                let position = (record.key == POSITION_KEY)
                    .then(|| record.value.as_deref().map(decode_position))
                    .flatten()
                    .transpose()?
                    .map(|p| p.offsets);
                log.push(Entry {
                    partition,
                    offset,
                    key: String::from_utf8_lossy(&record.key).into_owned(),
                    epoch: record.epoch,
                    sequence: record.sequence,
                    counts: claim.is_some() || ownership.counts(record.epoch),
                    claim,
                    position,
                });
                Ok(())
            })
            .unwrap();
    }
    let store = Store::in_memory().with_changelog(topic).unwrap();
    let mut by_id = BTreeMap::new();
    for partition in 0..PARTITIONS {
        restore(&store, &Peek(&reader), partition, &mut |_, _| {}).unwrap();
        for state in store.customers(partition, "", usize::MAX).unwrap() {
            let mut json = customer_pulse::http::state_json(&state);
            sort_seen(&mut json);
            by_id.insert(state.customer_id.clone(), json);
        }
    }
    (by_id, log)
}

/// Which customers the changelog restores otherwise than the replay, and, for the partitions
/// they are in, every claim, every position record, and each such customer's records: who
/// wrote them, in which epoch, and whether they count.
pub fn explain_changelog(
    restored: &BTreeMap<String, serde_json::Value>,
    expected: &BTreeMap<String, serde_json::Value>,
    log: &[Entry],
) -> String {
    let seen = |state: Option<&serde_json::Value>| -> Vec<String> {
        state
            .and_then(|s| s["seen"].as_array())
            .map(|seen| {
                seen.iter()
                    .filter_map(|e| Some(e["fingerprint"].as_str()?.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let differ: Vec<&String> = expected
        .keys()
        .chain(restored.keys())
        .filter(|id| restored.get(*id) != expected.get(*id))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out = format!("{} customers differ\n", differ.len());
    let mut partitions = std::collections::BTreeSet::new();
    for id in differ.iter().take(8) {
        let (got, want) = (seen(restored.get(*id)), seen(expected.get(*id)));
        let missing: Vec<&String> = want.iter().filter(|e| !got.contains(e)).collect();
        let extra: Vec<&String> = got.iter().filter(|e| !want.contains(e)).collect();
        out += &format!("{id}: events missing {missing:?}, extra {extra:?}\n");
        for e in log.iter().filter(|e| &e.key == *id) {
            partitions.insert(e.partition);
            out += &format!(
                "  p{} @{} {:?} counts {}\n",
                e.partition, e.offset, e.epoch, e.counts
            );
        }
    }
    for partition in partitions {
        out += &format!("partition {partition}: claims and positions\n");
        for e in log.iter().filter(|e| e.partition == partition) {
            if let Some(claim) = &e.claim {
                out += &format!("  @{} claim {claim:?}\n", e.offset);
            } else if let Some(position) = &e.position {
                out += &format!(
                    "  @{} position {position:?} {:?} counts {}\n",
                    e.offset, e.epoch, e.counts
                );
            }
        }
    }
    out
}
