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

/// Commits `outbox` alone.
fn commit_outbox(store: &Store, outbox: Vec<Output>) {
    store
        .commit(Commit {
            outbox,
            ..Commit::default()
        })
        .unwrap();
}

/// The numbers of the first `limit` pending outbox records.
fn pending_seqs(store: &Store, limit: usize) -> Vec<u64> {
    store
        .outbox(limit)
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect()
}

fn record(topic: &str, n: u8) -> OutboxRecord {
    OutboxRecord {
        topic: topic.into(),
        key: Some(vec![n]),
        value: Some(vec![n, n]),
        headers: vec![("h".into(), vec![n])],
        partition: n.is_multiple_of(2).then_some(i32::from(n)),
    }
}

fn churn_risk(customer: &str) -> Output {
    Output::ChurnRisk {
        topic: "customer.churn-risk".into(),
        record: Box::new(crate::risk::ChurnRiskRecord {
            customer_id: customer.into(),
            record_id: format!("orders-0-{customer}"),
            caused_by: Some("e-1".into()),
            as_of: 1_780_000_000_000,
            expected_orders_90d: 0.123456,
            level: crate::risk::Level::High,
            lifecycle: crate::fold::Lifecycle::AtRisk,
            ltv_minor: 12_345,
            p_alive: 0.25,
            reasons: vec![crate::risk::Reason {
                code: crate::risk::ReasonCode::Detractor,
                detail: "survey score 2".into(),
            }],
            rfm: None,
            score: 0.75,
            segment: "gold".into(),
        }),
    }
}

/// A churn-risk record is stored as data and read back, from memory or from the backend, as
/// the record the sink sends: its JSON, keyed by the customer, with its `record_id` header.
#[test]
fn a_churn_risk_record_reads_back_as_its_json_keyed_by_the_customer() {
    for (name, store, _dir) in backends() {
        let output = churn_risk("c-7");
        let Output::ChurnRisk { record, .. } = &output else {
            unreachable!()
        };
        let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(json["customer_id"], "c-7", "{name}");
        assert_eq!(
            json["expected_orders_90d"], 0.1235,
            "{name}: rounded when written"
        );
        let want = OutboxRecord {
            topic: "customer.churn-risk".into(),
            key: Some(b"c-7".to_vec()),
            value: Some(record.to_json()),
            headers: vec![("record_id".into(), b"orders-0-c-7".to_vec())],
            partition: None,
        };
        commit_outbox(&store, vec![output.clone()]);
        assert_eq!(store.outbox(10).unwrap(), vec![(0, want.clone())], "{name}");
        let afresh = Store::open(Arc::clone(&store.backend)).unwrap();
        assert_eq!(
            afresh.outbox(10).unwrap(),
            vec![(0, want)],
            "{name}: stored"
        );
    }
}

#[test]
fn a_commit_writes_states_offsets_and_outbox_together() {
    for (name, store, _dir) in backends() {
        store
            .commit(Commit {
                customers: vec![(
                    3,
                    "a".into(),
                    Some(codec::encode_customer(&state("a", 2).into())),
                )
                    .into()],
                offsets: vec![("orders".into(), 3, 42)],
                event_times: vec![("orders".into(), 3, 1_780_000_000_000)],
                outbox: vec![record("out", 1).into(), record("out", 2).into()],
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
        let outbox = (0..5).map(|n| record("t", n).into()).collect();
        commit_outbox(&store, outbox);
        store.acknowledge(&[0, 2]).unwrap();
        let seqs = pending_seqs(&store, 10);
        assert_eq!(seqs, vec![1, 3, 4], "{name}");
        assert_eq!(store.outbox(2).unwrap().len(), 2, "{name}: limit holds");
        // The commit's records are stored as one chunk, kept while any of them is pending: a
        // store opened afresh reads it whole, not knowing what was acknowledged.
        store.acknowledge(&[1, 3]).unwrap();
        let afresh = || Store::open(Arc::clone(&store.backend)).unwrap();
        let seqs = pending_seqs(&afresh(), 10);
        assert_eq!(seqs, vec![0, 1, 2, 3, 4], "{name}: one record pending");
        store.acknowledge(&[4]).unwrap();
        assert!(
            afresh().outbox(10).unwrap().is_empty(),
            "{name}: none pending"
        );
    }
}

/// The drain reads records committed since the store opened from memory (`recent`), others from
/// the backend: at every step both read the same, as a store opened afresh on the same backend
/// (which has only the backend to read) shows, past the weight it keeps in memory too. A store
/// opened afresh does not know which records of a stored chunk were acknowledged (a restart
/// sends them again): it is told what was, once it has read the chunks.
#[test]
fn the_outbox_reads_the_same_from_memory_as_from_the_backend() {
    for (name, store, _dir) in backends() {
        let acknowledged = std::cell::RefCell::new(Vec::new());
        let acknowledge = |seqs: &[u64]| {
            store.acknowledge(seqs).unwrap();
            acknowledged.borrow_mut().extend_from_slice(seqs);
        };
        let afresh = || {
            let afresh = Store::open(Arc::clone(&store.backend)).unwrap();
            afresh.outbox(usize::MAX).unwrap();
            afresh.acknowledge(&acknowledged.borrow()).unwrap();
            afresh
        };
        let same = |step: &str| {
            for limit in [1, 3, 10_000] {
                assert_eq!(
                    store.outbox(limit).unwrap(),
                    afresh().outbox(limit).unwrap(),
                    "{name}: {step}, limit {limit}"
                );
            }
        };
        let commit = |records: Vec<OutboxRecord>| {
            commit_outbox(&store, records.into_iter().map(Output::from).collect())
        };
        commit((0..6).map(|n| record("t", n)).collect());
        commit_outbox(&store, vec![churn_risk("c-1"), churn_risk("c-2")]);
        same("churn-risk records committed as data");
        same("committed");
        acknowledge(&[0, 1]);
        same("the first two acknowledged");
        acknowledge(&[4, 3]);
        same("two further on, out of order");
        commit((6..9).map(|n| record("u", n)).collect());
        same("more committed");
        // Heavier than memory keeps: these are read from the backend until acknowledged.
        let heavy = |n: u8| OutboxRecord {
            value: Some(vec![n; recent::MAX_BYTES / 3]),
            ..record("v", n)
        };
        commit(vec![heavy(9), heavy(10), heavy(11), heavy(12)]);
        same("past the weight kept");
        commit(vec![record("w", 13)]);
        same("after it");
        let pending = pending_seqs(&store, 10_000);
        assert_eq!(
            pending,
            vec![2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
            "{name}"
        );
        acknowledge(&pending[..8]);
        same("the heavy ones partly acknowledged");
        acknowledge(&pending[8..]);
        same("all acknowledged");
        assert!(store.outbox(10).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn acknowledging_runs_and_holes_deletes_exactly_the_records_named() {
    for (name, store, _dir) in backends() {
        let outbox = (0..2_600)
            .map(|n| record("t", (n % 200) as u8).into())
            .collect();
        commit_outbox(&store, outbox);
        let pending = || pending_seqs(&store, 10_000);
        // Long runs (1,000 and 1,200 records), short runs, single records, and numbers out of
        // order, all of one commit's chunk.
        let mut acked: Vec<u64> = (0..1_000).chain(1_001..2_201).collect();
        acked.extend([2_300, 2_301, 2_302, 2_304, 2_599, 2_598]);
        store.acknowledge(&acked).unwrap();
        let mut left = vec![1_000];
        left.extend((2_201..2_600).filter(|s| !acked.contains(s)));
        assert_eq!(pending(), left, "{name}");
        store.acknowledge(&left).unwrap();
        assert_eq!(pending(), Vec::<u64>::new(), "{name}: all delivered");
    }
}

#[test]
fn the_outbox_never_skips_a_record_left_unacknowledged() {
    for (name, store, _dir) in backends() {
        let commit = |n: u8| commit_outbox(&store, (0..n).map(|i| record("t", i).into()).collect());
        let seqs = |limit| pending_seqs(&store, limit);
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
            customers: vec![(
                0,
                "gone".into(),
                Some(codec::encode_customer(&state("gone", 1).into())),
            )
                .into()],
            ..Commit::default()
        };
        store.commit(put).unwrap();
        let delete = Commit {
            customers: vec![(0, "gone".into(), None).into()],
            ..Commit::default()
        };
        store.commit(delete).unwrap();
        assert_eq!(store.customer(0, "gone").unwrap(), None, "{name}");
    }
}

#[test]
fn every_customer_of_a_partition_is_visited_once_in_id_order_across_pages() {
    for (name, store, _dir) in backends() {
        let mut commit = Commit::default();
        // Two and a half pages in partition 1, and one customer in partition 2.
        for n in 0..2_500 {
            let id = format!("c-{n:05}");
            commit.put_customer(1, id.clone(), Some(&state(&id, 1).into()));
        }
        commit.put_customer(2, "other".into(), Some(&state("other", 1).into()));
        store.commit(commit).unwrap();
        let mut visited = Vec::new();
        store
            .for_each_customer(1, |c| {
                visited.push(c.state.customer_id.clone());
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let want: Vec<String> = (0..2_500).map(|n| format!("c-{n:05}")).collect();
        assert_eq!(visited, want, "{name}");
        // The visitor's error ends the visit.
        let mut seen = 0;
        let stopped = store.for_each_customer(1, |_| {
            seen += 1;
            if seen == 3 {
                Err(StoreError::Corrupt {
                    key: "x".into(),
                    reason: "stop".into(),
                })
            } else {
                Ok(())
            }
        });
        assert!(stopped.is_err() && seen == 3, "{name}");
    }
}

#[test]
fn customers_are_listed_per_partition_in_id_order() {
    for (name, store, _dir) in backends() {
        let customers = ["b", "a", "c"]
            .iter()
            .map(|id| {
                (
                    1,
                    id.to_string(),
                    Some(codec::encode_customer(&state(id, 1).into())),
                )
            })
            .chain([(
                2,
                "z".to_string(),
                Some(codec::encode_customer(&state("z", 1).into())),
            )])
            .map(CustomerWrite::from)
            .collect();
        store
            .commit(Commit {
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

/// A commit's records heavier than a chunk holds are stored in several chunks, in order, each
/// deleted once its own records are acknowledged: a store opened afresh reads again only the
/// chunks with a record still pending.
#[test]
fn a_commit_heavier_than_a_chunk_is_stored_in_several() {
    for (name, store, _dir) in backends() {
        // A third of a chunk each, with their topic, key and framing a little more: two to a
        // chunk.
        let third = |n: u8| OutboxRecord {
            value: Some(vec![n; OUTBOX_CHUNK_BYTES / 3]),
            ..record("t", n)
        };
        commit_outbox(&store, (0..5).map(|n| third(n).into()).collect());
        let keys: Vec<Vec<u8>> = store
            .backend
            .scan(&[OUTBOX], &[OUTBOX], None, 100)
            .unwrap()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(
            keys,
            vec![outbox_key(0), outbox_key(2), outbox_key(4)],
            "{name}"
        );
        assert_eq!(pending_seqs(&store, 10), vec![0, 1, 2, 3, 4], "{name}");
        store.acknowledge(&[0, 1, 3]).unwrap();
        let afresh = Store::open(Arc::clone(&store.backend)).unwrap();
        assert_eq!(pending_seqs(&afresh, 10), vec![2, 3, 4], "{name}");
        assert_eq!(
            afresh.outbox(10).unwrap()[1],
            (3, third(3)),
            "{name}: read back whole"
        );
    }
}

/// Stores written before chunks (2026-12-06) hold a record under each key: they are read,
/// numbered by their keys, and deleted as they are acknowledged.
#[test]
fn outbox_records_stored_one_a_key_are_still_read() {
    for (name, store, _dir) in backends() {
        let ops = (0..3)
            .map(|n| {
                Op::Put(
                    outbox_key(n),
                    codec::encode_outbox(&record("t", n as u8).into()),
                )
            })
            .collect();
        store.backend.write(ops).unwrap();
        let store = Store::open(Arc::clone(&store.backend)).unwrap();
        let pending = store.outbox(10).unwrap();
        assert_eq!(
            pending,
            (0..3)
                .map(|n| (n, record("t", n as u8)))
                .collect::<Vec<_>>(),
            "{name}"
        );
        store.acknowledge(&[0, 2]).unwrap();
        commit_outbox(&store, vec![record("u", 3).into()]);
        let seqs = pending_seqs(&store, 10);
        assert_eq!(seqs, [1, 3], "{name}: numbered on past them");
        store.acknowledge(&[1, 3]).unwrap();
        let afresh = Store::open(Arc::clone(&store.backend)).unwrap();
        assert!(afresh.outbox(10).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn outbox_sequence_continues_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store =
            Store::open(Arc::new(RocksBackend::open(dir.path(), 1 << 20).unwrap())).unwrap();
        let outbox = (0..3).map(|n| record("t", n).into()).collect();
        commit_outbox(&store, outbox);
        store.acknowledge(&[0]).unwrap();
        // A second commit's chunk, acknowledged whole: deleted.
        commit_outbox(&store, vec![record("t", 3).into()]);
        store.acknowledge(&[3]).unwrap();
    }
    let store = Store::open(Arc::new(RocksBackend::open(dir.path(), 1 << 20).unwrap())).unwrap();
    commit_outbox(&store, vec![record("t", 9).into()]);
    // The first chunk was acknowledged in part before the restart: it is read whole again, and
    // record 0 sent again (under the same record id), as after a crash.
    let seqs = pending_seqs(&store, 10);
    assert_eq!(seqs, vec![0, 1, 2, 4]);
    store.acknowledge(&[0, 1, 2, 4]).unwrap();
    assert!(store.outbox(10).unwrap().is_empty());
    drop(store);
    let store = Store::open(Arc::new(RocksBackend::open(dir.path(), 1 << 20).unwrap())).unwrap();
    assert!(store.outbox(10).unwrap().is_empty(), "every chunk deleted");
    commit_outbox(&store, vec![record("t", 10).into()]);
    let seqs = pending_seqs(&store, 10);
    assert_eq!(seqs, vec![5], "numbered on past every record ever stored");
}

/// The changelog's readers tell a repeat by its number (`Ownership::is_new`): a number given
/// again after a restart would make a new record look like a repeat.
#[test]
fn outbox_numbers_are_never_given_twice_even_once_every_record_was_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let open = || Store::open(Arc::new(RocksBackend::open(dir.path(), 1 << 20).unwrap())).unwrap();
    let commit_two = |store: &Store| {
        let outbox = (0..2).map(|n| record("t", n).into()).collect();
        commit_outbox(store, outbox);
        let seqs = pending_seqs(store, 10);
        store.acknowledge(&seqs).unwrap();
        seqs
    };
    {
        let store = open();
        assert_eq!(commit_two(&store), vec![0, 1]);
        assert_eq!(commit_two(&store), vec![2, 3]);
        // A commit without outputs moves nothing.
        store.commit(Commit::default()).unwrap();
    }
    let store = open();
    assert!(store.outbox(10).unwrap().is_empty(), "all acknowledged");
    assert_eq!(commit_two(&store), vec![4, 5]);
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
            .commit(Commit {
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
        // The earliest past a time, of the partition asked for only.
        let next = |partition, after| store.next_timer(partition, after).unwrap();
        assert_eq!(next(1, i64::MIN), Some(-20), "{name}");
        assert_eq!(next(1, -20), Some(100), "{name}");
        assert_eq!(next(1, 99), Some(100), "{name}");
        assert_eq!(next(1, 100), Some(500), "{name}");
        assert_eq!(next(1, 500), None, "{name}: none past the last");
        assert_eq!(next(2, -1), Some(0), "{name}");
        assert_eq!(
            next(3, i64::MIN),
            None,
            "{name}: none in a partition without timers"
        );
        store
            .commit(Commit {
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
            .commit(Commit {
                trends: Some(Arc::new(trends.clone())),
                ..Commit::default()
            })
            .unwrap();
        store.commit(Commit::default()).unwrap();
        assert_eq!(store.trends().unwrap(), Some(trends), "{name}");
    }
}

/// A customer with a pending timer at `at`.
fn timed(id: &str, orders: u32, at: Millis) -> Customer {
    let mut customer = Customer::from(state(id, orders));
    customer.risk.timer_at = Some(at);
    customer
}

#[test]
fn an_erasure_marker_is_stored_carried_by_the_changelog_and_restored_by_fingerprint() {
    for (name, source, _dir) in backends() {
        let source = source.with_changelog("log").unwrap();
        source
            .commit(Commit {
                customers: vec![CustomerWrite {
                    partition: 1,
                    id: "gone".into(),
                    value: None,
                    erased_until: Some(500),
                    ..CustomerWrite::default()
                }],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(source.erased_until(1, "gone"), Some(500), "{name}");
        assert_eq!(source.erased_until(2, "gone"), None, "{name}");
        assert_eq!(source.erased_until(1, "kept"), None, "{name}");
        let pending: Vec<OutboxRecord> = source
            .outbox(100)
            .unwrap()
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        let keys: Vec<(Option<i32>, Vec<u8>, bool)> = pending
            .iter()
            .map(|r| (r.partition, r.key.clone().unwrap(), r.value.is_some()))
            .collect();
        let marker = erased::changelog_key(erased::fingerprint("gone"));
        assert_eq!(
            keys,
            vec![
                (Some(1), b"gone".to_vec(), false),
                (Some(1), marker.clone(), true),
                (Some(1), POSITION_KEY.to_vec(), true),
            ],
            "{name}: the customer's tombstone, then its marker, then the partition's position"
        );
        assert!(!is_customer_key(&marker));
        assert!(
            !marker.windows(4).any(|w| w == b"gone"),
            "the marker keeps no id"
        );

        let target = Store::in_memory();
        let records = pending.iter().map(ChangelogRecord::delivered).collect();
        target.restore(1, records).unwrap();
        assert_eq!(target.erased_until(1, "gone"), Some(500), "{name}");
        assert_eq!(target.erasure_markers(), 1);
        target.clear_partition(1).unwrap();
        assert_eq!(target.erased_until(1, "gone"), None, "{name}");
        assert_eq!(target.erasure_markers(), 0);
    }
}

#[test]
fn erasure_markers_older_than_a_time_are_forgotten_for_good() {
    for (name, store, _dir) in backends() {
        let erased = |partition: i32, id: &str, until: Millis| CustomerWrite {
            partition,
            id: id.into(),
            value: None,
            erased_until: Some(until),
            ..CustomerWrite::default()
        };
        store
            .commit(Commit {
                customers: vec![
                    erased(0, "a", 100),
                    erased(1, "b", 200),
                    erased(1, "c", 300),
                ],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(store.forget_erasures_before(250).unwrap(), 2, "{name}");
        assert_eq!(store.erasure_markers(), 1, "{name}");
        assert_eq!(store.erased_until(0, "a"), None, "{name}");
        assert_eq!(store.erased_until(1, "b"), None, "{name}");
        assert_eq!(store.erased_until(1, "c"), Some(300), "{name}");
        assert_eq!(
            store.forget_erasures_before(300).unwrap(),
            0,
            "{name}: not before"
        );
        let reopened = Store::open(Arc::clone(&store.backend)).unwrap();
        assert_eq!(
            reopened.erasure_markers(),
            1,
            "{name}: gone from the backend"
        );
        assert_eq!(reopened.erased_until(1, "c"), Some(300), "{name}");
    }
}

#[test]
fn the_changelog_carries_customers_and_positions_and_restores_them_elsewhere() {
    for (name, source, _dir) in backends() {
        let source = source.with_changelog("log").unwrap();
        let writer = source.changelog().unwrap().1;
        source
            .commit(Commit {
                customers: vec![
                    (
                        1,
                        "a".into(),
                        Some(codec::encode_customer(&timed("a", 1, 100))),
                    )
                        .into(),
                    (
                        2,
                        "b".into(),
                        Some(codec::encode_customer(&timed("b", 2, 200))),
                    )
                        .into(),
                ],
                timers_set: vec![],
                offsets: vec![("orders".into(), 1, 7)],
                event_times: vec![("orders".into(), 1, 50)],
                outbox: vec![record("out", 1).into()],
                ..Commit::default()
            })
            .unwrap();
        source
            .commit(Commit {
                customers: vec![(
                    1,
                    "a".into(),
                    Some(codec::encode_customer(&timed("a", 2, 300))),
                )
                    .into()],
                offsets: vec![("orders".into(), 1, 9)],
                ..Commit::default()
            })
            .unwrap();
        let pending = source.outbox(100).unwrap();
        let routed: Vec<(&str, Option<i32>, Vec<u8>)> = pending
            .iter()
            .map(|(_, r)| (r.topic.as_str(), r.partition, r.key.clone().unwrap()))
            .collect();
        assert_eq!(
            routed,
            vec![
                ("log", Some(1), b"a".to_vec()),
                ("log", Some(2), b"b".to_vec()),
                ("log", Some(1), POSITION_KEY.to_vec()),
                ("log", Some(2), POSITION_KEY.to_vec()),
                ("out", None, vec![1]),
                ("log", Some(1), b"a".to_vec()),
                ("log", Some(1), POSITION_KEY.to_vec()),
            ],
            "{name}: customers, then a position per partition, then the other outputs"
        );
        // Each changelog record is numbered by the outbox, under the store's writer id; the
        // other outputs are not.
        let numbered: Vec<Option<Sequence>> = pending
            .iter()
            .map(|(_, r)| ChangelogRecord::delivered(r).sequence)
            .collect();
        let number = |n: usize| {
            Some(Sequence {
                writer,
                number: pending[n].0,
            })
        };
        let expected: Vec<Option<Sequence>> = (0..7)
            .map(|n| if n == 4 { None } else { number(n) })
            .collect();
        assert_eq!(numbered, expected, "{name}");
        let position = decode_position(pending[2].1.value.as_ref().unwrap()).unwrap();
        assert_eq!(
            position,
            Position {
                writer,
                offsets: vec![("orders".into(), 7)],
                event_times: vec![("orders".into(), 50)],
            },
            "{name}"
        );
        // A position carries the partition's whole position, also what the commit did not
        // move: compaction keeps only the latest.
        let position = decode_position(pending[6].1.value.as_ref().unwrap()).unwrap();
        assert_eq!(
            (position.offsets, position.event_times),
            (vec![("orders".into(), 9)], vec![("orders".into(), 50)]),
            "{name}"
        );

        // Partition 1's records, in log order, into another store that has an older `a`.
        let target = Store::in_memory();
        target
            .commit(Commit {
                customers: vec![(
                    1,
                    "a".into(),
                    Some(codec::encode_customer(&timed("a", 9, 50))),
                )
                    .into()],
                timers_set: vec![Timer {
                    partition: 1,
                    at: 50,
                    customer_id: "a".into(),
                }],
                ..Commit::default()
            })
            .unwrap();
        let partition_1: Vec<ChangelogRecord> = pending
            .iter()
            .filter(|(_, r)| r.topic == "log" && r.partition == Some(1))
            .map(|(_, r)| ChangelogRecord {
                key: r.key.clone().unwrap(),
                value: r.value.clone(),
                epoch: None,
                facts: None,
                sequence: None,
            })
            .collect();
        target.restore(1, partition_1).unwrap();
        assert_eq!(
            target.customer(1, "a").unwrap(),
            Some(state("a", 2)),
            "{name}"
        );
        assert_eq!(
            target.customer(2, "b").unwrap(),
            None,
            "{name}: other partition"
        );
        assert_eq!(target.offset("orders", 1).unwrap(), Some(9), "{name}");
        assert_eq!(target.event_time("orders", 1).unwrap(), Some(50), "{name}");
        let due: Vec<Millis> = target
            .due_timers(1, (None, 1_000), 10)
            .unwrap()
            .iter()
            .map(|t| t.at)
            .collect();
        assert_eq!(
            due,
            vec![300],
            "{name}: the old timer went, the last one stands"
        );

        // An erasure travels as a tombstone and deletes the customer and its timer.
        let tombstone = ChangelogRecord {
            key: b"a".to_vec(),
            value: None,
            epoch: None,
            facts: None,
            sequence: None,
        };
        target.restore(1, vec![tombstone]).unwrap();
        assert_eq!(target.customer(1, "a").unwrap(), None, "{name}");
        assert!(
            target.due_timers(1, (None, 1_000), 10).unwrap().is_empty(),
            "{name}"
        );

        // Stale changelog records of one partition leave the outbox; the rest stay, a
        // churn-risk record stored as data among them.
        commit_outbox(&source, vec![churn_risk("z")]);
        assert_eq!(source.drop_pending("log", 1).unwrap(), 4, "{name}");
        let left = pending_seqs(&source, 100);
        assert_eq!(left.len(), 4, "{name}");
        // What is left of each chunk goes once acknowledged.
        source.acknowledge(&left).unwrap();
        let afresh = Store::open(Arc::clone(&source.backend)).unwrap();
        assert!(afresh.outbox(100).unwrap().is_empty(), "{name}");
    }
}

#[test]
fn a_position_record_carries_what_commits_restores_and_clears_left_stored() {
    for (name, store, _dir) in backends() {
        let store = store.with_changelog("log").unwrap();
        let writer = store.changelog().unwrap().1;
        let a = || -> CustomerWrite {
            (
                1,
                "a".into(),
                Some(codec::encode_customer(&timed("a", 1, 100))),
            )
                .into()
        };
        // The position record of each commit that writes `a` in partition 1.
        let commit_a = |offsets: Vec<(String, i32, i64)>, event_times: Vec<(String, i32, i64)>| {
            let before = store.outbox(1_000).unwrap().len();
            store
                .commit(Commit {
                    customers: vec![a()],
                    offsets,
                    event_times,
                    ..Commit::default()
                })
                .unwrap();
            let pending = store.outbox(1_000).unwrap();
            assert_eq!(
                pending.len(),
                before + 2,
                "{name}: the customer and a position"
            );
            let position = pending.last().unwrap().1.value.clone().unwrap();
            let Position {
                writer: from,
                offsets,
                event_times,
            } = decode_position(&position).unwrap();
            assert_eq!(from, writer, "{name}");
            (offsets, event_times)
        };
        let entries = |e: &[(&str, i64)]| -> Vec<(String, i64)> {
            e.iter().map(|(t, v)| (t.to_string(), *v)).collect()
        };

        commit_a(
            vec![("orders".into(), 1, 7)],
            vec![("orders".into(), 1, 50)],
        );
        assert_eq!(
            commit_a(vec![("complaints".into(), 1, 4)], vec![]),
            (
                entries(&[("complaints", 4), ("orders", 7)]),
                entries(&[("orders", 50)])
            ),
            "{name}: a commit's own on top of what was stored"
        );
        assert_eq!(
            commit_a(vec![], vec![]),
            (
                entries(&[("complaints", 4), ("orders", 7)]),
                entries(&[("orders", 50)])
            ),
            "{name}: a commit that moves nothing carries what the commits before it stored"
        );

        let restored = Position {
            writer: writer + 1,
            offsets: vec![("interactions".into(), 30), ("orders".into(), 20)],
            event_times: vec![("orders".into(), 80)],
        };
        store
            .restore(
                1,
                vec![ChangelogRecord {
                    key: POSITION_KEY.to_vec(),
                    value: Some(codec::encode_position(&restored)),
                    epoch: None,
                    facts: None,
                    sequence: None,
                }],
            )
            .unwrap();
        assert_eq!(
            commit_a(vec![], vec![]),
            (
                entries(&[("complaints", 4), ("interactions", 30), ("orders", 20)]),
                entries(&[("orders", 80)])
            ),
            "{name}: what a restore stored"
        );

        store.clear_partition(1).unwrap();
        assert_eq!(
            commit_a(vec![("orders".into(), 1, 2)], vec![]),
            (entries(&[("orders", 2)]), entries(&[])),
            "{name}: nothing of what a clear removed"
        );
    }
}

#[test]
fn the_writer_id_is_kept_with_the_state() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        Store::open(Arc::new(RocksBackend::open(dir.path(), 1 << 20).unwrap()))
            .unwrap()
            .with_changelog("log")
            .unwrap()
            .changelog()
            .unwrap()
            .1
    };
    let first = open();
    assert_eq!(open(), first);
    let other = tempfile::tempdir().unwrap();
    let elsewhere = Store::open(Arc::new(RocksBackend::open(other.path(), 1 << 20).unwrap()))
        .unwrap()
        .with_changelog("log")
        .unwrap()
        .changelog()
        .unwrap()
        .1;
    assert_ne!(
        elsewhere, first,
        "another state directory is another writer"
    );
}

/// A customer with `n` remembered events, the first `sealed` of them sealed under `seal`.
fn remembering(n: i64, sealed: u32, seal: u32) -> Customer {
    let mut state = state("r", 1);
    state.seen = (0..n)
        .map(|i| crate::fold::SeenEvent {
            fingerprint: crate::fold::EventFingerprint(1_000 + i as u64),
            occurred_at: 10 * i,
        })
        .collect();
    state.last_event_at = 10 * n;
    state.seen_sealed = sealed;
    state.seal = seal;
    state.into()
}

#[test]
fn sealed_remembered_events_are_kept_apart_written_when_their_seal_moves_and_go_with_the_customer()
{
    for (name, store, _dir) in backends() {
        let store = store.with_changelog("log").unwrap();
        let apart = |seal| store.backend.get(&sealed_key(0, "r", seal)).unwrap();
        let sealed_record = |seal| changelog::sealed_changelog_key(seal, "r");
        // Commits the customer as the processor does; returns the changelog records it sent,
        // by key, with whether each has a value.
        let put = |customer: Option<&Customer>, stored_seal| -> Vec<(Vec<u8>, bool)> {
            let before = pending_seqs(&store, 10_000);
            let mut commit = Commit::default();
            commit.put_customer_apart(0, "r".into(), customer, stored_seal);
            store.commit(commit).unwrap();
            let records = store.outbox(10_000).unwrap();
            (records.into_iter())
                .filter(|(seq, r)| !before.contains(seq) && r.key.as_deref() != Some(POSITION_KEY))
                .map(|(_, r)| (r.key.unwrap(), r.value.is_some()))
                .collect()
        };
        let customer_record = || (b"r".to_vec(), true);

        // A new customer with events sealed under seal 1: they go apart, ahead of the customer.
        let first = remembering(3, 2, 1);
        assert_eq!(
            put(Some(&first), Some(0)),
            [(sealed_record(1), true), customer_record()],
            "{name}"
        );
        assert!(apart(1).is_some(), "{name}");
        assert_eq!(
            store.customer_stored(0, "r").unwrap(),
            Some((first.clone(), Some(1))),
            "{name}"
        );

        // An event after the sealed ones: the seal did not move, and they stay as stored.
        let second = remembering(4, 2, 1);
        assert_eq!(put(Some(&second), Some(1)), [customer_record()], "{name}");
        assert_eq!(
            store.customer_record(0, "r").unwrap(),
            Some(second.clone()),
            "{name}"
        );

        // Swept: the new sealed events go ahead of the customer, the old ones after it.
        let third = remembering(5, 5, 2);
        assert_eq!(
            put(Some(&third), Some(1)),
            [
                (sealed_record(2), true),
                customer_record(),
                (sealed_record(1), false)
            ],
            "{name}"
        );
        assert_eq!((apart(1), apart(2).is_some()), (None, true), "{name}");
        assert_eq!(
            store.customer_stored(0, "r").unwrap(),
            Some((third.clone(), Some(2))),
            "{name}"
        );

        // Into another store, the changelog as it is now: the same customer, however far into
        // the log the read got, as long as it stops after a customer record.
        let log: Vec<ChangelogRecord> = (store.outbox(10_000).unwrap().iter())
            .map(|(_, r)| ChangelogRecord::delivered(r))
            .collect();
        let customers = (log.iter().enumerate())
            .filter(|(_, r)| r.key == b"r")
            .map(|(i, _)| i);
        for (end, expected) in customers.zip([&first, &second, &third]) {
            let target = Store::in_memory();
            target.restore(0, log[..=end].to_vec()).unwrap();
            assert_eq!(
                target.customer_record(0, "r").unwrap().as_ref(),
                Some(expected),
                "{name}"
            );
        }
        // Or stops between: the sealed events of the seal to come are there, unused.
        let target = Store::in_memory();
        let before_third = log.iter().rposition(|r| r.key == b"r").unwrap();
        target.restore(0, log[..before_third].to_vec()).unwrap();
        assert_eq!(
            target.customer_record(0, "r").unwrap(),
            Some(second.clone()),
            "{name}"
        );

        // Swept to nothing sealed: none are kept apart.
        let fourth = remembering(1, 0, 3);
        assert_eq!(
            put(Some(&fourth), Some(2)),
            [customer_record(), (sealed_record(2), false)],
            "{name}"
        );
        assert_eq!(apart(2), None, "{name}");
        assert_eq!(
            store.customer_stored(0, "r").unwrap(),
            Some((fourth.clone(), Some(3))),
            "{name}"
        );

        // Erased: nothing of it stays, in the store or the changelog.
        put(Some(&third), Some(3));
        assert_eq!(
            put(None, Some(2)),
            [(b"r".to_vec(), false), (sealed_record(2), false)],
            "{name}"
        );
        assert_eq!(apart(2), None, "{name}");
        assert_eq!(store.customer_stored(0, "r").unwrap(), None, "{name}");

        // Cleared with its partition.
        put(Some(&third), Some(0));
        store.clear_partition(0).unwrap();
        assert_eq!(apart(2), None, "{name}");

        // A customer whole, as a restore of an earlier version's record leaves it: its sealed
        // events are written at its next commit.
        store
            .commit({
                let mut commit = Commit::default();
                commit.put_customer(0, "r".into(), Some(&third));
                commit
            })
            .unwrap();
        assert_eq!(
            store.customer_stored(0, "r").unwrap(),
            Some((third.clone(), None)),
            "{name}"
        );
        assert_eq!(
            put(Some(&third), None),
            [(sealed_record(2), true), customer_record()],
            "{name}"
        );

        // Missing (an old owner's tombstone compacted over them), the customer is read
        // without them, and they are written again from what it holds at its next commit.
        store
            .backend
            .write(vec![Op::Delete(sealed_key(0, "r", 2))])
            .unwrap();
        let (read, stored_seal) = store.customer_stored(0, "r").unwrap().unwrap();
        let mut without = third.clone();
        without.state.seen.drain(..5);
        without.state.seen_sealed = 0;
        assert_eq!((read, stored_seal), (without, None), "{name}");

        // Sealed events that do not match the customer's seal are an error, not a customer.
        put(Some(&third), None);
        store
            .backend
            .write(vec![Op::Put(
                sealed_key(0, "r", 2),
                codec::encode_sealed(&fourth.state),
            )])
            .unwrap();
        assert!(
            matches!(
                store.customer_record(0, "r"),
                Err(StoreError::Corrupt { .. })
            ),
            "{name}: another seal's events passed for the customer's"
        );
    }
}

#[test]
fn a_store_is_held_to_the_partition_count_its_customers_were_placed_by() {
    for (name, store, _dir) in backends() {
        assert_eq!(
            store.hold_partitions(6, true).unwrap(),
            Held::Held,
            "{name}"
        );
        assert_eq!(
            store.hold_partitions(6, true).unwrap(),
            Held::Held,
            "{name}"
        );
        assert_eq!(
            store.hold_partitions(4, true).unwrap(),
            Held::Other { stored: 6 },
            "{name}"
        );
        assert_eq!(
            store.hold_partitions(8, true).unwrap(),
            Held::Other { stored: 6 },
            "{name}"
        );
    }
    // A store of an earlier version, which kept no count: refused only for a count that has
    // no partition of a customer it holds, and then held to the count it took.
    for (name, store, _dir) in backends() {
        store
            .commit(Commit {
                customers: vec![(
                    5,
                    "a".into(),
                    Some(codec::encode_customer(&state("a", 1).into())),
                )
                    .into()],
                ..Commit::default()
            })
            .unwrap();
        for count in [4, 5] {
            assert_eq!(
                store.hold_partitions(count, true).unwrap(),
                Held::Beyond { partition: 5 },
                "{name}: {count}"
            );
        }
        assert_eq!(
            store.hold_partitions(6, true).unwrap(),
            Held::Held,
            "{name}"
        );
        assert_eq!(
            store.hold_partitions(7, true).unwrap(),
            Held::Other { stored: 6 },
            "{name}"
        );
    }
}

#[test]
fn a_store_is_held_to_the_length_of_its_complaint_windows() {
    for (name, store, _dir) in backends() {
        // A command that only reads fixes nothing.
        assert_eq!(
            store.hold_window(900_000, false).unwrap(),
            Held::Held,
            "{name}"
        );
        assert_eq!(
            store.hold_partitions(8, false).unwrap(),
            Held::Held,
            "{name}"
        );
        assert_eq!(
            store.hold_window(3_600_000, true).unwrap(),
            Held::Held,
            "{name}"
        );
        assert_eq!(
            store.hold_window(3_600_000, true).unwrap(),
            Held::Held,
            "{name}"
        );
        assert_eq!(
            store.hold_window(900_000, false).unwrap(),
            Held::Other { stored: 3_600_000 },
            "{name}: a reader is refused too"
        );
        assert_eq!(
            store.hold_window(900_000, true).unwrap(),
            Held::Other { stored: 3_600_000 },
            "{name}"
        );
        // Held apart from the partition count.
        assert_eq!(
            store.hold_partitions(4, true).unwrap(),
            Held::Held,
            "{name}"
        );
        assert_eq!(
            store.hold_window(60_000, true).unwrap(),
            Held::Other { stored: 3_600_000 },
            "{name}"
        );
    }
}

#[test]
fn a_state_kept_without_the_changelog_goes_to_it_whole_and_is_restored_from_it() {
    for (name, store, _dir) in backends() {
        // Kept without the changelog: customers (one with sealed remembered events kept
        // apart), an erasure marker, the partition's input position; and a customer of
        // another partition, which stays out of partition 0's records.
        let mut commit = Commit {
            offsets: vec![("orders".into(), 0, 42)],
            event_times: vec![("orders".into(), 0, 4_200)],
            ..Commit::default()
        };
        let ids: Vec<String> = (0..7).map(|i| format!("c-{i}")).collect();
        for (i, id) in ids.iter().enumerate() {
            let customer = Customer::from(state(id, i as u32 + 1));
            commit.put_customer_apart(0, id.clone(), Some(&customer), None);
        }
        commit.put_customer_apart(0, "r".into(), Some(&remembering(40, 32, 3)), None);
        commit.put_customer(1, "elsewhere".into(), Some(&state("elsewhere", 9).into()));
        commit.customers.push(CustomerWrite {
            partition: 0,
            id: "gone".into(),
            erased_until: Some(777),
            ..CustomerWrite::default()
        });
        store.commit(commit).unwrap();
        assert!(
            store.outbox(10).unwrap().is_empty(),
            "{name}: no changelog yet"
        );

        let store = store.with_changelog("log").unwrap();
        let published = store.publish_partition(0).unwrap();
        let records: Vec<ChangelogRecord> = (store.outbox(10_000).unwrap().iter())
            .map(|(_, record)| ChangelogRecord::delivered(record))
            .collect();
        // Eight customers, one's sealed events, the marker; a position record a commit, each
        // commit a page of one key family.
        let page = |n: usize| n.div_ceil(changelog::PUBLISH_PAGE);
        let pages = page(1) + page(8) + page(1);
        assert_eq!(published, 10, "{name}");
        assert!(
            page(8) > 1,
            "{name}: the test covers a family over several commits"
        );
        assert_eq!(records.len(), 10 + pages, "{name}");
        let sealed_at = records.iter().position(|r| r.key.first() == Some(&0xfe));
        let customer_at = records.iter().position(|r| r.key == b"r");
        assert!(sealed_at < customer_at, "{name}: sealed events first");
        assert!(
            records.iter().all(|r| r.key != b"elsewhere"),
            "{name}: only partition 0"
        );

        // A store restored from those records holds what the store holds.
        let restored = Store::in_memory();
        restored.restore(0, records).unwrap();
        for id in ids.iter().map(String::as_str).chain(["r"]) {
            assert_eq!(
                restored.customer_stored(0, id).unwrap(),
                store.customer_stored(0, id).unwrap(),
                "{name}: {id}"
            );
        }
        assert_eq!(
            restored.customer(0, "r").unwrap().unwrap().seen.len(),
            40,
            "{name}: with its sealed events"
        );
        assert_eq!(restored.erased_until(0, "gone"), Some(777), "{name}");
        assert_eq!(restored.offset("orders", 0).unwrap(), Some(42), "{name}");
        assert_eq!(restored.customer(1, "elsewhere").unwrap(), None, "{name}");
    }
}

#[test]
fn a_partitions_input_offsets_and_the_aggregators_counted_input_are_kept_and_forgotten() {
    for (name, store, _dir) in backends() {
        // Offsets of two sources in partition 1, one in partition 2: each partition's own, in
        // source order whatever the order committed.
        store
            .commit(Commit {
                offsets: vec![
                    ("orders".into(), 1, 7),
                    ("complaints".into(), 1, 3),
                    ("orders".into(), 2, 9),
                ],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(
            store.input_offsets(1).unwrap(),
            vec![("complaints".into(), 3), ("orders".into(), 7)],
            "{name}"
        );
        assert_eq!(store.input_offsets(0).unwrap(), Vec::new(), "{name}");

        let position = |next: i64| Position {
            writer: 5,
            offsets: vec![("orders".into(), next)],
            event_times: vec![("".into(), 1_000)],
        };
        assert_eq!(store.counted_input(1).unwrap(), None, "{name}");
        store
            .commit(Commit {
                counted_inputs: vec![(1, Some(position(7))), (2, Some(position(9)))],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(store.counted_input(1).unwrap(), Some(position(7)), "{name}");
        // A later commit replaces one and forgets the other.
        store
            .commit(Commit {
                counted_inputs: vec![(1, Some(position(8))), (2, None)],
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(store.counted_input(1).unwrap(), Some(position(8)), "{name}");
        assert_eq!(store.counted_input(2).unwrap(), None, "{name}");
    }
}
