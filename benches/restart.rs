//! Restart after SIGKILL with many customers in state (issue 7): how long customer-pulse takes
//! to process again. The state is built first in this process (CUSTOMERS customers, one order
//! each and every tenth a complaint, as `benches/memory.rs` does, into RocksDB with the default
//! configuration). Then the release binary runs on that state against Tansu on loopback, folds
//! 1,000 new events from the input topics and is killed with SIGKILL; 100 more events are
//! published; and the binary starts again on the same state, a member of the group with static
//! membership (`kafka.group_instance_id`). It is killed again, 100 more events are published,
//! and it starts once more, reading its partitions without the group
//! (`kafka.assigned_partitions`). Last, killed again, it starts on the same partitions with the
//! changelog turned on over that state, kept without it until then: each partition's state goes
//! to the changelog whole before the partition is folded (README, *Scaling out*); it is stopped
//! with SIGTERM once all is delivered (its aggregator reads the changelog to its end), and
//! starts again with the changelog off, taking over the aggregator's windows and days. Printed
//! for each start: the time from it to the first new event folded and committed (processing
//! again), and to all 100; for the switch on, also the records sent, when the outbox had
//! delivered them all, and how long the graceful stop took.
//!
//! `cargo bench --bench restart` (CUSTOMERS=1000000 by default). Under `cargo test` it runs once
//! with 2,000 customers, so the harness itself stays tested.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use customer_pulse::config::Config;
use customer_pulse::kafka::{create_topics, publish};
use customer_pulse::processor::Processor;
use customer_pulse::replay::wall_clock_ms;

#[path = "../tests/it/broker.rs"]
mod broker;
mod common;
use broker::{free_port, Broker};

const PARTITIONS: i32 = 4;

/// Moments after a start, in seconds from it.
#[derive(Default)]
struct Moments {
    /// `/metrics` answers: the state is open.
    up: Option<f64>,
    /// Partitions were assigned (by the group, or by the configuration).
    assigned: Option<f64>,
    /// The first new event is folded and committed: processing again.
    first: Option<f64>,
    /// Every new event is.
    all: f64,
}

/// Starts the binary on `config` and waits until it has folded `events`; returns it running and
/// when each moment came.
async fn run_until(
    config: &std::path::Path,
    port: u16,
    events: u64,
    log: Option<&std::path::Path>,
) -> (Child, Moments) {
    let started = Instant::now();
    let mut command = Command::new(env!("CARGO_BIN_EXE_customer-pulse"));
    command
        .args(["run", "--config"])
        .arg(config)
        .env(
            "RUST_LOG",
            std::env::var("PULSE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null());
    if let Some(log) = log {
        let file = std::fs::File::create(log).expect("log file");
        command.env("RUST_LOG", "info").stderr(file);
    }
    let child = command.spawn().expect("customer-pulse starts");
    let deadline = started + Duration::from_secs(600);
    let mut moments = Moments::default();
    loop {
        let at = started.elapsed().as_secs_f64();
        let scrape = common::Scrape::of(port);
        let lines = scrape.lines("customer_pulse_assigned_partitions");
        if !lines.is_empty() {
            moments.up.get_or_insert(at);
        }
        if lines.iter().any(|(_, v)| *v > 0.0) {
            moments.assigned.get_or_insert(at);
        }
        let folded = scrape.sum("customer_pulse_events_total");
        if folded >= 1.0 {
            moments.first.get_or_insert(at);
        }
        if folded >= events as f64 {
            moments.all = at;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "customer-pulse folded {events} within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (child, moments)
}

fn main() {
    let customers = common::size("CUSTOMERS", 1_000_000, 2_000);
    common::runtime().block_on(async move {
        let broker = Broker::start();
        let brokers = broker.address.clone();
        create_topics(&brokers, &common::job_topics(PARTITIONS))
            .await
            .expect("topics");
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        // Static membership, as a StatefulSet's pods have (STATIC=false measures without).
        let membership = match std::env::var("STATIC").as_deref() {
            Ok("false") => "",
            _ => "group_instance_id = \"bench-restart-0\"\n",
        };
        // The state is filled straight into the store, so there is no changelog of it to check
        // the restarted instance against: the restarts are measured with the changelog off,
        // and then its turning on.
        let config_file = |name: &str, kafka: &str, changelog: bool| {
            let text = format!(
                "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"bench-restart\"\n{kafka}\
                 [input]\npartitions = {PARTITIONS}\n[state]\npath = \"{}\"\nchangelog = {changelog}\n\
                 [http]\nlisten_address = \"127.0.0.1:{port}\"\n",
                dir.path().join("state").display()
            );
            let path = dir.path().join(name);
            std::fs::write(&path, &text).expect("config file");
            (path, text)
        };
        let (path, text) = config_file("group.toml", membership, false);
        let listed = "assigned_partitions = [0, 1, 2, 3]\n";
        let (fixed, _) = config_file("fixed.toml", listed, false);
        let (turned_on, _) = config_file("changelog.toml", listed, true);
        let config = Config::parse(&text, Vec::new()).expect("config");
        let now = wall_clock_ms();

        let filled = Instant::now();
        let events = {
            let store = customer_pulse::pipeline::open_store(&config).expect("store");
            let mut processor = Processor::new(
                store.clone(),
                customer_pulse::pipeline::processor_settings(&config),
            );
            common::fill(
                &store,
                &mut processor,
                customers,
                config.max_batch_events,
                now - 3_600_000,
                |_, _| {},
            )
        };
        println!(
            "state: {customers} customers from {events} events, {}, built in {:.0} s",
            common::DiskUse::of(&dir.path().join("state")),
            filled.elapsed().as_secs_f64()
        );

        // The job on that state folds new events, and is killed.
        publish_traffic(
            &brokers,
            &config.topics,
            1_000,
            11,
            now - 1_800_000,
            1_000_000,
        )
        .await;
        let (mut child, _) = run_until(&path, port, 1_000, None).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("killed");

        // More events wait; the job starts again on the same state, in the group.
        publish_traffic(&brokers, &config.topics, 100, 12, now - 600_000, 100_000).await;
        let (mut child, m) = run_until(&path, port, 100, None).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("killed");
        report(customers, "after SIGKILL, in the group", &m);

        // Once more, reading the same partitions without the group.
        publish_traffic(&brokers, &config.topics, 100, 13, now - 300_000, 100_000).await;
        let (mut child, m) = run_until(&fixed, port, 100, None).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("killed");
        report(customers, "after SIGKILL, with kafka.assigned_partitions", &m);

        // Last, the changelog turned on over that state: every partition sent to it whole
        // before it is folded, then delivered by the outbox as the job goes on.
        publish_traffic(&brokers, &config.topics, 100, 14, now - 120_000, 100_000).await;
        let started = Instant::now();
        let switched_on = dir.path().join("changelog-on.log");
        let (mut child, m) = run_until(&turned_on, port, 100, Some(&switched_on)).await;
        let scrape = common::Scrape::of(port);
        let published = scrape
            .lines("customer_pulse_restores_total")
            .iter()
            .filter(|(labels, _)| labels.contains(r#"outcome="published""#))
            .map(|(_, v)| v)
            .sum::<f64>();
        let records = scrape.sum("customer_pulse_restored_records_total");
        let drained = loop {
            let backlog = common::Scrape::of(port).sum("customer_pulse_outbox_backlog_records");
            if backlog == 0.0 {
                break started.elapsed().as_secs_f64();
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the outbox drained within 600 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        // Stopped gracefully: the aggregator reads the changelog to its end first.
        let stopping = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(status.success());
        let exit = child.wait().expect("stopped");
        let stopped = stopping.elapsed().as_secs_f64();
        assert!(exit.success(), "a graceful stop: {exit}");
        let log = std::fs::read_to_string(&switched_on).expect("the job's log");
        let read_to_end = log.contains("The aggregator read the changelog to its end.");
        assert_eq!(published, PARTITIONS as f64, "every partition published");
        assert!(
            records >= customers as f64,
            "{records} records published for {customers} customers"
        );
        report(
            customers,
            "after SIGKILL, with the changelog turned on over it (each partition's state sent to it first)",
            &m,
        );
        println!(
            "  {records:.0} changelog records published; the outbox had delivered them all {drained:.2} s from the start ({:.0} records/s)",
            records / drained
        );
        println!(
            "  stopped with SIGTERM in {stopped:.2} s, the aggregator having read the changelog to its end: {read_to_end}"
        );

        // And off again: the instance takes over the aggregator's windows and days.
        publish_traffic(&brokers, &config.topics, 100, 15, now - 60_000, 50_000).await;
        let switched_off = dir.path().join("changelog-off.log");
        let (mut child, m) = run_until(&fixed, port, 100, Some(&switched_off)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("killed");
        let log = std::fs::read_to_string(&switched_off).expect("the job's log");
        let taken = log.contains("This instance takes over the aggregator's");
        assert!(
            read_to_end && taken,
            "the aggregator read to the end ({read_to_end}) and its windows and days were taken over ({taken})"
        );
        report(
            customers,
            "after SIGTERM, with the changelog turned off again (the aggregator's windows and days taken over)",
            &m,
        );
    });
}

/// Publishes `events` of the generator's traffic (four events a customer, from `seed`) with
/// event times from `start_ms` over `span_ms`, a record per batch as Tansu needs.
async fn publish_traffic(
    brokers: &str,
    topics: &customer_pulse::config::Topics,
    events: u64,
    seed: u64,
    start_ms: i64,
    span_ms: i64,
) {
    let traffic = common::traffic(events, 4, seed, start_ms, span_ms);
    publish(brokers, topics, &traffic, None, 1)
        .await
        .expect("publish");
}

/// Prints one restart's moments.
fn report(customers: u64, how: &str, m: &Moments) {
    let s = |t: Option<f64>| t.map_or("—".into(), |t| format!("{t:.2} s"));
    println!(
        "restart with {customers} customers in state, {how}, from the process start: state open and /metrics up {}, partitions assigned {}, first new event folded and committed {}, all 100 {:.2} s",
        s(m.up),
        s(m.assigned),
        s(m.first),
        m.all
    );
    if let (Some(assigned), Some(first)) = (m.assigned, m.first) {
        println!(
            "  outside the assignment (start to /metrics up, plus assignment to first commit): {:.2} s",
            m.up.unwrap_or(0.0) + (first - assigned)
        );
    }
}
