//! Several instances in one consumer group (issue 6, the part built so far): three processes of
//! the real binary share the partitions while traffic flows; one is killed with SIGKILL, a fourth
//! with no local state joins later. In the end each customer's state, served by whichever
//! instance owns its partition, equals one uninterrupted file replay of the same events: nothing
//! lost, nothing counted twice. A fifth instance then takes a partition from one that keeps its
//! copy: that one answers 421 rather than serve it. Last, the changelog itself must hold that
//! state: a store with nothing local restores every partition from it and ends equal to the
//! replay, whatever the instances wrote while two of them owned a partition at once. (The
//! aggregates are still per instance; see the README.)

use std::time::Duration;

use std::collections::BTreeMap;

use customer_pulse::config::Config;
use customer_pulse::kafka::{publish, ChangelogReader};
use customer_pulse::replay::wall_clock_ms;
use customer_pulse::restore::{restore, ChangelogSource};
use customer_pulse::store::{Ownership, Store};

use crate::broker::{free_port, Broker};
use crate::crash::Job;
use crate::end_to_end::{
    config_text, create_all_topics, http_get, metric_sum, replayed_states, served_states,
    sort_seen, test_topics, traffic, wait_for, PARTITIONS,
};

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
        );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    Instance {
        job: Job::start(&path),
        port,
        _dir: dir,
    }
}

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
    let settled = wait_for(Duration::from_secs(120), || {
        served_states(&ports(&live), &ids) == expected
    })
    .await;
    let got = served_states(&ports(&live), &ids);
    for (id, want) in &expected {
        assert_eq!(
            got.get(id),
            Some(want),
            "{id}: served state equals the replay"
        );
    }
    assert!(settled);

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
    let mut misdirected = 0;
    for id in &ids {
        let answers: Vec<(u16, u16, String)> = live
            .iter()
            .map(|i| {
                let (status, body) = http_get(i.port, &format!("/customers/{id}")).unwrap();
                (i.port, status, body)
            })
            .collect();
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
    // The added instance took partitions that others had written, and restored them.
    let restored = ["tail", "from_scratch"]
        .iter()
        .map(|o| {
            crate::changelog::metric(
                d.port,
                &format!(r#"customer_pulse_restores_total{{outcome="{o}"}}"#),
            )
        })
        .sum::<f64>();
    assert!(
        restored >= 1.0,
        "the new instance restored what it took over"
    );
    assert!(metric_sum(d.port, "customer_pulse_restored_records_total") > 0.0);

    // The changelog holds the same state. Records an instance wrote after another had claimed its
    // partition (Tansu hands a partition on before its old owner has revoked it) do not count.
    let (restored, stale) = changelog_states(&broker.address);
    eprintln!("scale: {stale} changelog records were written by an instance that no longer owned the partition");
    assert_eq!(
        restored, expected,
        "the changelog restores the replayed state"
    );
}

/// Each customer's state as a store with nothing local restores it from the changelog, and how
/// many changelog records do not count.
fn changelog_states(brokers: &str) -> (BTreeMap<String, serde_json::Value>, usize) {
    let config = Config::parse(
        &config_text(brokers, std::path::Path::new("/tmp/unused"), 1),
        Vec::new(),
    )
    .unwrap();
    let topic = &config.topics.changelog;
    let reader = ChangelogReader::connect(brokers, &config.kafka_security, topic).unwrap();
    let mut stale = 0;
    for partition in 0..PARTITIONS {
        let mut ownership = Ownership::default();
        reader
            .read(partition, None, i64::MAX, &mut |offset, record| {
                match record.claim()? {
                    Some(claim) => ownership.claimed(offset, &claim),
                    None => stale += usize::from(!ownership.counts(record.epoch)),
                }
                Ok(())
            })
            .unwrap();
    }
    let store = Store::in_memory().with_changelog(topic).unwrap();
    let mut by_id = BTreeMap::new();
    for partition in 0..PARTITIONS {
        restore(&store, &reader, partition, &mut |_, _| {}).unwrap();
        for state in store.customers(partition, "", usize::MAX).unwrap() {
            let mut json = serde_json::to_value(&state).unwrap();
            sort_seen(&mut json);
            by_id.insert(state.customer_id.clone(), json);
        }
    }
    (by_id, stale)
}
