//! End-to-end benchmark through a real broker: Tansu on loopback, events published beforehand,
//! then (1) a bare librdkafka consumer reading them all, the reference, and (2) customer-pulse
//! consuming, folding, committing to RocksDB and producing its outputs, in the same run on the
//! same topics. Prints one table, a row a run, and with several rounds their medians.
//!
//! `cargo bench --bench broker` (EVENTS=200000 by default; set EVENTS to change it; CUSTOMERS,
//! by default a twentieth of EVENTS; CHANGELOG=false runs the job without its changelog,
//! CHANGELOG=both each round without it and then with it; ROUNDS, by default 1, runs the
//! reference and the job that many times on the same published events; BATCH_RECORDS, by
//! default 10,000, the records a produce batch holds; the job's settings from the environment,
//! `CUSTOMER_PULSE__...`). Under `cargo test` it
//! runs once with 2,000 events, so the harness itself stays tested.

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
    // Rounds of the reference and the job on the same published events: one figure of this
    // machine varies by a third from run to run, so a claim rests on the rounds' median.
    let rounds = common::size("ROUNDS", 1, 1).max(1);
    // CHANGELOG=false measures the job without its changelog (state.changelog); `both`, each
    // round without it and then with it.
    let modes: &[bool] = match std::env::var("CHANGELOG").as_deref() {
        Ok("false") => &[false],
        Ok("both") => &[false, true],
        _ => &[true],
    };
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
        let published = Instant::now();
        // The default topic names, which every round's job reads.
        let topics = Config::parse("[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n", Vec::new())
            .expect("config")
            .topics;
        // BATCH_RECORDS=1 publishes one record per batch, for a job that pauses partitions
        // (processing.max_event_time_lead_seconds): Tansu 0.6.0 cannot fetch from inside a
        // batch, where a resumed partition starts (README, *Deviations from the contract*).
        let batch_records = common::size("BATCH_RECORDS", 10_000, 10_000).max(1);
        publish(&brokers, &topics, &generated, None, batch_records as usize)
            .await
            .expect("publish");
        let publish_time = published.elapsed();
        println!("\nend-to-end through Tansu on loopback: {events} events over {customers} customers, {} bytes on average, {PARTITIONS} partitions x 3 topics; published in {:.2} s", bytes / generated.len(), publish_time.as_secs_f64());

        let mut runs = Vec::new();
        for round in 1..=rounds {
            for &changelog in modes {
                let run = run_round(&brokers, events, round, changelog).await;
                // The job runs in this process, so its threads are this process's, beside the
                // harness's (which only polls /metrics while the job runs); the rest of the
                // machine is mostly Tansu.
                println!(
                    "round {round}, changelog {}: CPU while customer-pulse ran in this process (start to last event counted): {}",
                    if changelog { "on" } else { "off" },
                    run.cpu
                );
                runs.push((round, changelog, run));
            }
        }
        println!("\n| round | changelog | bare librdkafka consumer (reference), s | customer-pulse: consume, decode, fold, commit (incl. start and group join), s | customer-pulse, events/s | share of the reference's rate | outputs flushed by a graceful stop after the last commit, s |");
        println!("|---|---|---|---|---|---|---|");
        for (round, changelog, run) in &runs {
            println!(
                "| {round} | {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} |",
                if *changelog { "on" } else { "off" },
                run.reference.as_secs_f64(),
                run.job.as_secs_f64(),
                events as f64 / run.job.as_secs_f64(),
                run.share(),
                run.outputs_tail.as_secs_f64()
            );
        }
        if rounds > 1 {
            println!("\nover {rounds} rounds:");
            println!("| changelog | reference, s | customer-pulse, s | share of the reference: median, range | rounds at 0.5 or more |");
            println!("|---|---|---|---|---|");
            for &changelog in modes {
                let of = |f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
                    let mut v: Vec<f64> = runs.iter().filter(|(_, c, _)| *c == changelog).map(|(_, _, r)| f(r)).collect();
                    v.sort_by(f64::total_cmp);
                    v
                };
                let reference = of(&|r| r.reference.as_secs_f64());
                let job = of(&|r| r.job.as_secs_f64());
                let shares = of(&Run::share);
                println!(
                    "| {} | {:.2}-{:.2} | {:.2}-{:.2}, median {:.3} | {:.3}, {:.2}-{:.2} | {} of {} |",
                    if changelog { "on" } else { "off" },
                    reference[0],
                    reference[reference.len() - 1],
                    job[0],
                    job[job.len() - 1],
                    common::median(job.iter().copied()),
                    common::median(shares.iter().copied()),
                    shares[0],
                    shares[shares.len() - 1],
                    shares.iter().filter(|s| **s >= 0.5).count(),
                    shares.len()
                );
            }
        }
    });
}

/// One round's figures.
struct Run {
    reference: Duration,
    job: Duration,
    outputs_tail: Duration,
    cpu: common::CpuUse,
}

impl Run {
    /// The job's rate as a share of the reference's, on the same events.
    fn share(&self) -> f64 {
        self.reference.as_secs_f64() / self.job.as_secs_f64()
    }
}

/// The bare consumer reads the published events, then the job consumes them all on a fresh
/// state, in a group of its own and, with the changelog, with a changelog topic of its own (a
/// fresh state would otherwise restore the round before's).
async fn run_round(brokers: &str, events: u64, round: u64, changelog: bool) -> Run {
    let reference = tokio::task::spawn_blocking({
        let brokers = brokers.to_owned();
        move || common::raw_read(&brokers, &INPUTS, PARTITIONS, events)
    })
    .await
    .expect("raw consumer");

    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let suffix = format!("{round}-{}", if changelog { "on" } else { "off" });
    let changelog_topic = format!("customer-pulse.customers-changelog-{suffix}");
    if changelog {
        create_topics(brokers, &[(changelog_topic.as_str(), PARTITIONS, true)])
            .await
            .expect("changelog topic");
    }
    let text = format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"bench-pulse-{suffix}\"\nfetch_wait_milliseconds = {}\n\
         [input]\npartitions = {PARTITIONS}\n\
         [topics]\nchangelog = \"{changelog_topic}\"\n\
         [state]\npath = \"{}\"\nchangelog = {changelog}\n[http]\nlisten_address = \"127.0.0.1:{port}\"\n",
        common::throughput_fetch_wait_ms(),
        dir.path().join("state").display()
    );
    // The environment's `CUSTOMER_PULSE__...` settings apply, so that a setting can be measured
    // without a build (e.g. `CUSTOMER_PULSE__PROCESSING__MAX_EVENT_TIME_LEAD_SECONDS=3600`).
    let config = Config::parse(&text, std::env::vars()).expect("config");

    let shutdown = CancellationToken::new();
    let cpu_before = common::CpuSnapshot::take();
    let started = Instant::now();
    let job = tokio::spawn(customer_pulse::pipeline::run(config, shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(600);
    while common::metric_sum(port, "customer_pulse_events_total") < events as f64 {
        assert!(
            Instant::now() < deadline,
            "customer-pulse finished within 600 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let job_time = started.elapsed();
    let cpu = common::CpuSnapshot::take().since(&cpu_before);
    let commits = common::metric_sum(port, "customer_pulse_commit_duration_seconds_count");
    let pauses = common::metric_sum(port, "customer_pulse_partition_pauses_total");
    println!(
        "round {round}, changelog {}: {commits} commits ({:.0} events a commit), {pauses} partitions paused for running ahead",
        if changelog { "on" } else { "off" },
        events as f64 / commits.max(1.0)
    );
    // A graceful stop flushes the outbox before `run` returns: the time it takes is the tail
    // of output delivery after the last commit.
    let delivered_by = Instant::now();
    shutdown.cancel();
    job.await.expect("job task").expect("job");
    Run {
        reference,
        job: job_time,
        outputs_tail: delivered_by.elapsed(),
        cpu,
    }
}
