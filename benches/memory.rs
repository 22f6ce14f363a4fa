//! Resident memory with many customers in state (issue 4): the processor, with the default
//! configuration (`state.cache_customers` 100,000, `state.block_cache_bytes` 64 MiB, no
//! changelog: `CUSTOMER_PULSE__STATE__CHANGELOG=true` measures with it), folds one
//! order for each of CUSTOMERS distinct customers (10 million by default) and every tenth of
//! them a complaint too, into RocksDB in a temporary directory, committing batches of
//! `processing.max_batch_events` and acknowledging the outbox as a producer would. It prints the
//! resident set (VmRSS) and its peak (VmHWM) as the customers grow, and the state size on disk.
//!
//! `cargo bench --bench memory` (CUSTOMERS=10000000; set CUSTOMERS to change it). Under
//! `cargo test` it runs once with 20,000 customers, so the harness itself stays tested.

use std::time::Instant;

use customer_pulse::config::Config;
use customer_pulse::processor::Processor;

mod common;

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn resident_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let customers = common::size("CUSTOMERS", 10_000_000, 20_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let text = format!(
        "[kafka]\nbrokers = \"unused\"\n[state]\npath = \"{}\"\n",
        dir.path().join("state").display()
    );
    let config = Config::parse(&text, std::env::vars()).expect("config");
    let mut store = customer_pulse::pipeline::open_store(&config).expect("store");
    let mut settings = customer_pulse::pipeline::processor_settings(&config);
    // As `run` does with the changelog on: every customer write also goes to the changelog
    // through the outbox, carrying its facts, and the aggregates are left to the aggregator
    // (which this does not run: its store holds no customers).
    if config.changelog {
        store = store
            .with_changelog(&config.topics.changelog)
            .expect("changelog");
        settings.aggregation = customer_pulse::processor::Aggregation::Elsewhere;
    }
    let mut processor = Processor::new(store.clone(), settings);
    let batch_size = config.max_batch_events;
    let now = customer_pulse::replay::wall_clock_ms();

    println!(
        "{} customers, cache_customers {}, block_cache_bytes {}, changelog {}, batches of {batch_size}",
        customers, config.cache_customers, config.block_cache_bytes, config.changelog
    );
    println!(
        "{:>12} {:>10} {:>12} {:>12} {:>14}",
        "customers", "events", "rss MiB", "peak MiB", "state MiB"
    );
    let started = Instant::now();
    let report_every = (customers / 10).max(1);
    let events = common::fill(
        &store,
        &mut processor,
        customers,
        batch_size,
        now,
        |filled, events| {
            if filled % report_every == 0 {
                let (rss, peak) = resident_mib();
                println!(
                    "{:>12} {:>10} {:>12.0} {:>12.0} {:>14.0}",
                    filled,
                    events,
                    rss,
                    peak,
                    store.size_bytes() as f64 / (1 << 20) as f64
                );
            }
        },
    );
    assert!(
        store
            .customer(
                customer_pulse::processor::partition_for(b"c-000000000", config.partitions),
                "c-000000000"
            )
            .expect("read")
            .is_some(),
        "the first customer is in state"
    );
    let offset = events as i64;
    let (rss, peak) = resident_mib();
    println!(
        "done in {:.0} s ({:.0} events/s); resident {rss:.0} MiB, peak {peak:.0} MiB; {}",
        started.elapsed().as_secs_f64(),
        offset as f64 / started.elapsed().as_secs_f64(),
        common::DiskUse::of(&config.state_path)
    );
    println!(
        "RocksDB's count at the end: {:.0} MiB",
        store.size_bytes() as f64 / (1 << 20) as f64
    );
    // Closed, RocksDB has ended the compaction under way, if any (finished, or abandoned and
    // its output removed), and deleted the table files no version needs any more.
    drop(processor);
    drop(store);
    println!("closed: {}", common::DiskUse::of(&config.state_path));
}
