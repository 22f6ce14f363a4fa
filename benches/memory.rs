//! Resident memory with many customers in state (issue 4): the processor, with the default
//! configuration (`state.cache_customers` 100,000, `state.block_cache_bytes` 64 MiB, no
//! changelog: `CUSTOMER_PULSE__STATE__CHANGELOG=true` measures with it), folds one
//! order for each of CUSTOMERS distinct customers (10 million by default) and every tenth of
//! them a complaint too, into RocksDB in a temporary directory, committing batches of
//! `processing.max_batch_events` and acknowledging the outbox as a producer would. It prints the
//! resident set (VmRSS) and its peak (VmHWM) as the customers grow, and the state size on disk;
//! at the end, closed, what the state holds by key family.
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
    print_families(&config.state_path);
}

/// What the closed state holds, by key family: entries, the bytes of their keys and values as
/// written (before RocksDB compresses them), and RocksDB's estimate of the bytes the family's
/// key range takes in table files (compressed, and its share of each file's index and filter).
/// The families and their names are the store's (`store::KEY_FAMILIES`).
fn print_families(path: &std::path::Path) {
    let db = match rocksdb::DB::open_for_read_only(&rocksdb::Options::default(), path, false) {
        Ok(db) => db,
        Err(e) => {
            println!("the state's key families not read: {e}");
            return;
        }
    };
    // Entries, key bytes and value bytes, by the key's first byte.
    let mut families = std::collections::BTreeMap::<u8, (u64, u64, u64)>::new();
    for item in db.iterator(rocksdb::IteratorMode::Start) {
        let (key, value) = match item {
            Ok(entry) => entry,
            Err(e) => {
                println!("the state's key families not read to the end: {e}");
                return;
            }
        };
        let family = families
            .entry(key.first().copied().unwrap_or(0))
            .or_default();
        family.0 += 1;
        family.1 += key.len() as u64;
        family.2 += value.len() as u64;
    }
    let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
    println!(
        "{:<26} {:>12} {:>10} {:>12} {:>12} {:>14}",
        "key family", "entries", "B/entry", "keys MiB", "values MiB", "in tables MiB"
    );
    for (&tag, &(entries, keys, values)) in &families {
        let name = customer_pulse::store::KEY_FAMILIES
            .iter()
            .find(|(t, _)| *t == tag)
            .map_or("(unknown)", |(_, name)| name);
        // The family's range, from its first byte to the next; the last byte value has no
        // next, and no family uses it.
        let in_tables = tag.checked_add(1).map_or(0, |next| {
            db.get_approximate_sizes(&[rocksdb::Range::new(&[tag], &[next])])[0]
        });
        println!(
            "{:<26} {:>12} {:>10.1} {:>12.1} {:>12.1} {:>14.1}",
            format!("{} {name}", tag as char),
            entries,
            (keys + values) as f64 / entries as f64,
            mib(keys),
            mib(values),
            mib(in_tables)
        );
    }
}
