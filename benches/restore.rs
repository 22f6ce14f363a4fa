//! Changelog restore speed (issue 6): Tansu on loopback holds a changelog of CUSTOMERS customer
//! records over 4 partitions, written by one store through the job's own producer; then, in the
//! same run, (1) a bare librdkafka consumer reads the whole topic, the reference, and (2) a fresh
//! RocksDB store restores every partition from it through `restore::restore`. Prints records/s
//! for both and their ratio, and checks that every customer arrived.
//!
//! `cargo bench --bench restore` (CUSTOMERS=500000 by default). Under `cargo test` it runs once
//! with 5,000 customers, so the harness itself stays tested.

use std::time::{Duration, Instant};

use customer_pulse::fold::{CustomerState, EventFingerprint, SeenEvent};
use customer_pulse::kafka::{create_topics, ChangelogReader, KafkaSink};
use customer_pulse::outbox::Sink;
use customer_pulse::processor::partition_for;
use customer_pulse::restore::{restore, Restored};
use customer_pulse::store::{Commit, Customer, RocksBackend, Store};
use customer_pulse::telemetry::Telemetry;

const PARTITIONS: i32 = 4;
const TOPIC: &str = "customer-pulse.customers-changelog";

#[path = "../tests/it/broker.rs"]
mod broker;
mod common;
use broker::Broker;

/// A customer as a few weeks of traffic leave it: a dozen remembered events and some orders.
fn customer(n: u64) -> Customer {
    let id = format!("c-{n:09}");
    let mut state = CustomerState::new(&id);
    state.orders = 3 + (n % 7) as u32;
    state.revenue_minor = 10_000 + (n % 90_000) as i64;
    state.seen = (0..12)
        .map(|i| SeenEvent {
            fingerprint: EventFingerprint::of(&format!("e-{n}-{i}")),
            occurred_at: 1_790_000_000_000 + (n as i64) * 1_000 + i,
        })
        .collect();
    state.last_event_at = state.seen.last().map_or(0, |s| s.occurred_at);
    Customer::from(state)
}

fn main() {
    let customers = common::size("CUSTOMERS", 500_000, 5_000);
    common::runtime().block_on(async move {
        let broker = Broker::start();
        let brokers = broker.address.clone();
        create_topics(&brokers, &[(TOPIC, PARTITIONS, true)])
            .await
            .expect("topic");

        // The writer: commits of 1,000 customers, drained by the job's producer.
        let writer = Store::in_memory().with_changelog(TOPIC).expect("changelog");
        let config = customer_pulse::config::Config::parse(
            "[kafka]\nbrokers = \"x\"\n[state]\npath = \"/tmp/unused\"\n",
            Vec::new(),
        )
        .expect("config");
        let mut sink = KafkaSink::connect(
            &brokers,
            &config.kafka_security,
            config.compression,
            std::sync::Arc::new(Telemetry::new()),
        )
        .expect("producer");
        let filled = Instant::now();
        let mut bytes = 0usize;
        for first in (0..customers).step_by(1_000) {
            let mut commit = Commit::default();
            for n in first..(first + 1_000).min(customers) {
                let c = customer(n);
                let id = c.state.customer_id.clone();
                commit.put_customer(partition_for(id.as_bytes(), PARTITIONS), id, Some(&c));
            }
            writer
                .commit(commit)
                .expect("commit");
            let pending = writer.outbox_shared(10_000).expect("outbox");
            bytes += pending
                .iter()
                .map(|(_, r)| r.value.as_ref().map_or(0, Vec::len))
                .sum::<usize>();
            let acked = sink.deliver(&pending).await;
            assert_eq!(acked.len(), pending.len(), "every changelog record delivered");
            writer.acknowledge(&acked).expect("acknowledge");
        }
        let fill_time = filled.elapsed();
        // One position record per partition per commit besides the customers.
        let records = customers + customers.div_ceil(1_000) * PARTITIONS as u64;

        let raw = tokio::task::spawn_blocking({
            let brokers = brokers.clone();
            move || common::raw_read(&brokers, &[TOPIC], PARTITIONS, records)
        })
        .await
        .expect("raw read");

        let (restored, restore_time, state) = tokio::task::spawn_blocking(move || {
            let dir = tempfile::tempdir().expect("temp dir");
            let backend = RocksBackend::open(dir.path(), 64 << 20).expect("rocksdb");
            let store = Store::open(std::sync::Arc::new(backend))
                .expect("store")
                .with_changelog(TOPIC)
                .expect("changelog");
            let reader = ChangelogReader::connect(&brokers, &config.kafka_security, TOPIC).expect("reader");
            let started = Instant::now();
            // Side by side, as the assignment callback restores them.
            let applied: u64 = std::thread::scope(|scope| {
                let restores: Vec<_> = (0..PARTITIONS)
                    .map(|p| {
                        let (store, reader) = (&store, &reader);
                        scope.spawn(move || {
                            match restore(store, reader, p, &mut |_, _| {}).expect("restore") {
                                Restored::Applied { records, .. } => records,
                                other => panic!("partition {p}: {other:?}"),
                            }
                        })
                    })
                    .collect();
                restores.into_iter().map(|r| r.join().expect("restore thread")).sum()
            });
            let elapsed = started.elapsed();
            let mut state = 0;
            for p in 0..PARTITIONS {
                state += store.customers(p, "", usize::MAX).expect("read").len() as u64;
            }
            (applied, elapsed, state)
        })
        .await
        .expect("restore");
        assert_eq!(restored, records, "every changelog record applied");
        assert_eq!(state, customers, "every customer restored");

        let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
        println!(
            "{customers} customers, {records} changelog records ({:.0} bytes per customer) over {PARTITIONS} partitions; written in {:.1} s",
            bytes as f64 / customers as f64,
            fill_time.as_secs_f64()
        );
        println!("{:<44} {:>12} {:>14}", "", "seconds", "records/s");
        println!(
            "{:<44} {:>12.2} {:>14.0}",
            "bare librdkafka consumer (reference)",
            raw.as_secs_f64(),
            rate(records, raw)
        );
        println!(
            "{:<44} {:>12.2} {:>14.0}",
            "restore into a new RocksDB store",
            restore_time.as_secs_f64(),
            rate(records, restore_time)
        );
        println!(
            "restore / reference: {:.2}",
            rate(records, restore_time) / rate(records, raw)
        );
    });
}
