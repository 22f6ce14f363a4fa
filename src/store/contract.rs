//! One contract suite, run against every backend: what the processor relies on from a store.

use std::sync::Arc;

use super::*;

fn backends() -> Vec<(&'static str, Store, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().expect("temp dir");
    let rocks = RocksBackend::open(dir.path(), 8 << 20).expect("rocksdb opens");
    vec![
        ("memory", Store::in_memory(), None),
        (
            "rocksdb",
            Store::open(Arc::new(rocks)).expect("store"),
            Some(dir),
        ),
    ]
}

fn state(id: &str, orders: u32) -> CustomerState {
    CustomerState {
        orders,
        ..CustomerState::new(id)
    }
}

fn record(topic: &str, n: u8) -> OutboxRecord {
    OutboxRecord {
        topic: topic.into(),
        key: Some(vec![n]),
        value: Some(vec![n, n]),
        headers: vec![("h".into(), vec![n])],
    }
}

#[test]
fn a_commit_writes_states_offsets_and_outbox_together() {
    for (name, store, _dir) in backends() {
        store
            .commit(&Commit {
                customers: vec![(3, "a".into(), Some(state("a", 2).into()))],
                offsets: vec![("orders".into(), 3, 42)],
                event_times: vec![("orders".into(), 3, 1_780_000_000_000)],
                outbox: vec![record("out", 1), record("out", 2)],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(
            store.event_time("orders", 3).unwrap(),
            Some(1_780_000_000_000),
            "{name}"
        );
        assert_eq!(store.event_time("orders", 2).unwrap(), None, "{name}");
        assert_eq!(
            store.customer(3, "a").unwrap(),
            Some(state("a", 2)),
            "{name}"
        );
        assert_eq!(
            store.customer(4, "a").unwrap(),
            None,
            "{name}: partition-scoped"
        );
        assert_eq!(store.offset("orders", 3).unwrap(), Some(42), "{name}");
        assert_eq!(store.offset("orders", 4).unwrap(), None, "{name}");
        let pending = store.outbox(10).unwrap();
        assert_eq!(
            pending,
            vec![(0, record("out", 1)), (1, record("out", 2))],
            "{name}"
        );
    }
}

#[test]
fn acknowledged_outbox_records_are_gone_and_the_rest_stay_in_order() {
    for (name, store, _dir) in backends() {
        let outbox = (0..5).map(|n| record("t", n)).collect();
        store
            .commit(&Commit {
                outbox,
                ..Commit::default()
            })
            .unwrap();
        store.acknowledge(&[0, 2]).unwrap();
        let seqs: Vec<u64> = store.outbox(10).unwrap().iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![1, 3, 4], "{name}");
        assert_eq!(store.outbox(2).unwrap().len(), 2, "{name}: limit holds");
    }
}

#[test]
fn the_outbox_never_skips_a_record_left_unacknowledged() {
    for (name, store, _dir) in backends() {
        let commit = |n: u8| {
            store
                .commit(&Commit {
                    outbox: (0..n).map(|i| record("t", i)).collect(),
                    ..Commit::default()
                })
                .unwrap()
        };
        let seqs = |limit| -> Vec<u64> {
            store
                .outbox(limit)
                .unwrap()
                .iter()
                .map(|(s, _)| *s)
                .collect()
        };
        commit(4);
        assert_eq!(seqs(2), vec![0, 1], "{name}");
        // The sink took 1 but not 0: 0 is still the oldest pending record.
        store.acknowledge(&[1]).unwrap();
        assert_eq!(seqs(10), vec![0, 2, 3], "{name}");
        store.acknowledge(&[0, 2, 3]).unwrap();
        assert_eq!(seqs(10), Vec::<u64>::new(), "{name}: all delivered");
        commit(2);
        assert_eq!(
            seqs(10),
            vec![4, 5],
            "{name}: later records after an empty outbox"
        );
        store.acknowledge(&[5]).unwrap();
        commit(1);
        assert_eq!(seqs(10), vec![4, 6], "{name}");
    }
}

#[test]
fn deleting_a_customer_removes_it() {
    for (name, store, _dir) in backends() {
        let put = Commit {
            customers: vec![(0, "gone".into(), Some(state("gone", 1).into()))],
            ..Commit::default()
        };
        store.commit(&put).unwrap();
        let delete = Commit {
            customers: vec![(0, "gone".into(), None)],
            ..Commit::default()
        };
        store.commit(&delete).unwrap();
        assert_eq!(store.customer(0, "gone").unwrap(), None, "{name}");
    }
}

#[test]
fn customers_are_listed_per_partition_in_id_order() {
    for (name, store, _dir) in backends() {
        let customers = ["b", "a", "c"]
            .iter()
            .map(|id| (1, id.to_string(), Some(state(id, 1).into())))
            .chain([(2, "z".to_string(), Some(state("z", 1).into()))])
            .collect();
        store
            .commit(&Commit {
                customers,
                ..Commit::default()
            })
            .unwrap();
        let ids: Vec<String> = store
            .customers(1, "", 10)
            .unwrap()
            .into_iter()
            .map(|c| c.customer_id)
            .collect();
        assert_eq!(ids, vec!["a", "b", "c"], "{name}");
        assert_eq!(
            store.customers(1, "b", 1).unwrap()[0].customer_id,
            "b",
            "{name}"
        );
    }
}

#[test]
fn outbox_sequence_continues_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store =
            Store::open(Arc::new(RocksBackend::open(dir.path(), 1 << 20).unwrap())).unwrap();
        let outbox = (0..3).map(|n| record("t", n)).collect();
        store
            .commit(&Commit {
                outbox,
                ..Commit::default()
            })
            .unwrap();
        store.acknowledge(&[0]).unwrap();
    }
    let store = Store::open(Arc::new(RocksBackend::open(dir.path(), 1 << 20).unwrap())).unwrap();
    store
        .commit(&Commit {
            outbox: vec![record("t", 9)],
            ..Commit::default()
        })
        .unwrap();
    let seqs: Vec<u64> = store.outbox(10).unwrap().iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
}

#[test]
fn timers_come_back_due_in_time_order_and_go_when_cleared() {
    for (name, store, _dir) in backends() {
        let timer = |partition, at: Millis, id: &str| Timer {
            partition,
            at,
            customer_id: id.into(),
        };
        store
            .commit(&Commit {
                timers_set: vec![
                    timer(1, 500, "late"),
                    timer(1, -20, "before-epoch"),
                    timer(1, 100, "b"),
                    timer(1, 100, "a"),
                    timer(2, 0, "other-partition"),
                ],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(
            store.due_timers(1, (None, 100), 10).unwrap(),
            [
                timer(1, -20, "before-epoch"),
                timer(1, 100, "a"),
                timer(1, 100, "b")
            ],
            "{name}"
        );
        assert_eq!(
            store.due_timers(1, (None, 100), 1).unwrap().len(),
            1,
            "{name}"
        );
        assert_eq!(
            store.due_timers(1, (Some(0), 100), 10).unwrap(),
            [timer(1, 100, "a"), timer(1, 100, "b")],
            "{name}: from a floor"
        );
        store
            .commit(&Commit {
                timers_cleared: vec![timer(1, -20, "before-epoch"), timer(1, 100, "a")],
                timers_set: vec![timer(1, 700, "a")],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(
            store.due_timers(1, (None, i64::MAX), 10).unwrap(),
            [
                timer(1, 100, "b"),
                timer(1, 500, "late"),
                timer(1, 700, "a")
            ],
            "{name}"
        );
    }
}

#[test]
fn trends_round_trip_and_stay_until_replaced() {
    use crate::event::Severity;
    use crate::trends::{TrendSettings, Trends};
    let settings = TrendSettings::defaults(&["billing"]);
    for (name, store, _dir) in backends() {
        assert_eq!(store.trends().unwrap(), None, "{name}");
        let mut trends = Trends::default();
        trends.opened("billing", Severity::High, 10, &settings);
        trends.resolved("billing", 10, 70_000, &settings);
        store
            .commit(&Commit {
                trends: Some(trends.clone()),
                ..Commit::default()
            })
            .unwrap();
        store.commit(&Commit::default()).unwrap();
        assert_eq!(store.trends().unwrap(), Some(trends), "{name}");
    }
}
