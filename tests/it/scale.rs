//! Several instances in one consumer group (issue 6, the part built so far): three processes of
//! the real binary share the partitions while traffic flows; one is killed with SIGKILL, a fourth
//! with no local state joins later. In the end each customer's state, served by whichever
//! instance owns its partition, equals one uninterrupted file replay of the same events: nothing
//! lost, nothing counted twice. (The aggregates are still per instance; see the README.)

use std::time::Duration;

use customer_pulse::kafka::publish;
use customer_pulse::replay::wall_clock_ms;

use crate::broker::{free_port, Broker};
use crate::crash::Job;
use crate::end_to_end::{
    config_text, create_all_topics, http_get, metric_sum, replayed_states, served_states,
    test_topics, traffic, wait_for,
};

struct Instance {
    job: Job,
    port: u16,
    _dir: tempfile::TempDir,
}

fn start(brokers: &str) -> Instance {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config_text(brokers, &dir.path().join("state"), port).replace(
        "group_id = \"pulse-test\"",
        // The default session (10 s): a shorter one, with three members and the broker on
        // two busy cores, missed heartbeats and kept the group rebalancing.
        "group_id = \"pulse-scale\"",
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

    // Every customer is served by exactly one live instance; an instance that holds an old copy
    // of a partition answers 421 rather than serve it.
    for id in &ids {
        let statuses: Vec<u16> = live
            .iter()
            .map(|i| http_get(i.port, &format!("/customers/{id}")).map_or(0, |r| r.0))
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{id}: one owner ({statuses:?})"
        );
        assert!(
            statuses.iter().all(|s| [200, 404, 421].contains(s)),
            "{statuses:?}"
        );
    }
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
}
