//! End-to-end benchmark through a real broker: Tansu on loopback, events published beforehand,
//! then (1) a bare librdkafka consumer reading them all, the reference, and (2) customer-pulse
//! consuming, folding, committing to RocksDB and producing its outputs, in the same run on the
//! same topics. Prints one table.
//!
//! `cargo bench --bench broker` (EVENTS=200000 by default; set EVENTS to change it; CUSTOMERS,
//! by default a twentieth of EVENTS; CHANGELOG=false runs the job without its changelog). Under
//! `cargo test` it runs once with 2,000 events, so the harness itself stays tested.

use std::time::{Duration, Instant};

use customer_pulse::config::Config;
use customer_pulse::generate::{generate, TrafficSpec};
use customer_pulse::kafka::{create_topics, publish};
use customer_pulse::replay::wall_clock_ms;
use tokio_util::sync::CancellationToken;

const PARTITIONS: i32 = 4;
const INPUTS: [&str; 3] = [
    "customer.interactions",
    "customer.orders",
    "customer.complaints",
];

// The tests' Tansu starter, shared rather than written twice.
#[path = "../tests/it/broker.rs"]
mod broker;
mod common;
use broker::{free_port, Broker};

fn main() {
    let events = common::size("EVENTS", 200_000, 2_000);
    // More customers for the same events: each batch writes more distinct customers.
    let customers = common::size("CUSTOMERS", events / 20 + 1, events / 20 + 1);
    common::runtime().block_on(async move {
        let broker = Broker::start();
        let brokers = broker.address.clone();
        create_topics(&brokers, &common::job_topics(PARTITIONS))
            .await
            .expect("topics");

        let generated = generate(&TrafficSpec {
            customers,
            events,
            seed: 5,
            start_ms: wall_clock_ms() - 30 * 86_400_000,
            step_ms: (30 * 86_400_000 / events as i64).max(1),
        });
        let bytes: usize = generated.iter().map(|g| g.value.to_string().len()).sum();
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        // CHANGELOG=false measures the job without its changelog (state.changelog).
        let changelog = std::env::var("CHANGELOG").map_or(true, |v| v != "false");
        let text = format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"bench-pulse\"\nfetch_wait_milliseconds = {}\n\
             [input]\npartitions = {PARTITIONS}\n\
             [state]\npath = \"{}\"\nchangelog = {changelog}\n[http]\nlisten_address = \"127.0.0.1:{port}\"\n",
            common::throughput_fetch_wait_ms(),
            dir.path().join("state").display()
        );
        let config = Config::parse(&text, Vec::new()).expect("config");
        let published = Instant::now();
        publish(&brokers, &config.topics, &generated, None, 10_000).await.expect("publish");
        let publish_time = published.elapsed();

        let raw = tokio::task::spawn_blocking({
            let brokers = brokers.clone();
            move || common::raw_read(&brokers, &INPUTS, PARTITIONS, events)
        })
        .await
        .expect("raw consumer");

        let shutdown = CancellationToken::new();
        let cpu_before = common::CpuSnapshot::take();
        let started = Instant::now();
        let job = tokio::spawn(customer_pulse::pipeline::run(config, shutdown.clone()));
        let deadline = Instant::now() + Duration::from_secs(600);
        while common::metric_sum(port, "customer_pulse_events_total") < events as f64 {
            assert!(Instant::now() < deadline, "customer-pulse finished within 600 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pulse = started.elapsed();
        let cpu = common::CpuSnapshot::take().since(&cpu_before);
        // A graceful stop flushes the outbox before `run` returns: the time it takes is the
        // tail of output delivery after the last commit.
        let delivered_by = Instant::now();
        shutdown.cancel();
        job.await.expect("job task").expect("job");
        let outputs_tail = delivered_by.elapsed();

        let rate = |d: Duration| events as f64 / d.as_secs_f64();
        println!("\nend-to-end through Tansu on loopback: {events} events over {customers} customers, {} bytes on average, {PARTITIONS} partitions x 3 topics", bytes / generated.len());
        println!("| what | seconds | events/s |");
        println!("|---|---|---|");
        println!("| publish (librdkafka producer, reference only) | {:.2} | {:.0} |", publish_time.as_secs_f64(), rate(publish_time));
        println!("| bare librdkafka consumer (reference) | {:.2} | {:.0} |", raw.as_secs_f64(), rate(raw));
        println!("| customer-pulse: consume, decode, fold, commit (incl. start and group join) | {:.2} | {:.0} |", pulse.as_secs_f64(), rate(pulse));
        println!("ratio customer-pulse / bare consumer: {:.2}; outputs flushed by a graceful stop {:.2} s after the last commit", rate(pulse) / rate(raw), outputs_tail.as_secs_f64());
        // The job runs in this process, so its threads are this process's, beside the harness's
        // (which only polls /metrics while the job runs); the rest of the machine is mostly Tansu.
        println!("CPU while customer-pulse ran in this process (start to last event counted): {cpu}");
    });
}
