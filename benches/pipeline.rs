//! Benchmarks of the hot path: decode alone, the per-customer fold alone, a store commit alone,
//! and decode + fold + atomic store commit through the processor (with every analytic), in
//! memory and on RocksDB; the same for live traffic in small batches and large, with the
//! changelog and without. Events are the generator's (about 200 bytes each). And
//! the models a published churn-risk record computes: the hypergeometric function 2F1, a
//! 12-month CLV, and scoring one customer (probability alive, reasons, level, CLV). Beside the
//! generator's traffic, real data (`../shared/data`): UCI Online Retail's invoices and the CFPB
//! extract's complaints, through the processor on RocksDB.
//! Run: `cargo bench --bench pipeline`; figures are in the README's Performance section.

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use customer_pulse::config::Config;
use customer_pulse::decode::decode;
use customer_pulse::event::{Event, Stream};
use customer_pulse::fold::{CustomerState, FoldLimits};
use customer_pulse::generate::{generate, TrafficSpec};
use customer_pulse::processor::{partition_for, InputRecord, Processor, ProcessorSettings};
use customer_pulse::store::{Commit, Customer, OutboxRecord, RocksBackend, Store, Timer};

// The binary's allocator (mimalloc), as every benchmark's, and the repository's root.
mod common;
#[path = "../tests/it/real_data.rs"]
mod real_data;

const NOW: i64 = 1_780_315_200_000;
const EVENTS: u64 = 20_000;

/// The processor's settings of the binary's default configuration, as a replay runs it, but
/// for the oldest event accepted: Online Retail's invoices are of 2010 and 2011, older than the
/// default's 730 days at this benchmark's clock (`NOW`, 2026-06-01).
fn settings() -> ProcessorSettings {
    // The two fields without a default; the benchmark opens its stores itself.
    let text = "[kafka]\nbrokers = \"unused\"\n[state]\npath = \"unused\"\n";
    let config = Config::parse(text, Vec::new()).expect("the default configuration");
    let mut settings = customer_pulse::pipeline::processor_settings(&config);
    settings.rules.max_event_age_ms = 20 * 365 * 86_400_000;
    settings
}

/// The generator's traffic over 5,000 customers: 20,000 events a minute apart (two weeks of
/// event time), from a month before the clock.
fn records() -> Vec<InputRecord> {
    records_of(TrafficSpec {
        customers: 5_000,
        events: EVENTS,
        seed: 1,
        start_ms: NOW - 30 * 86_400_000,
        step_ms: 60_000,
    })
}

/// The same number of events as live traffic: 20 a customer, a millisecond apart, ending at
/// `NOW`.
fn live_records() -> Vec<InputRecord> {
    records_of(TrafficSpec {
        customers: EVENTS / 20,
        events: EVENTS,
        seed: 2,
        start_ms: NOW - EVENTS as i64,
        step_ms: 1,
    })
}

/// The customers' history for the live batches that follow it: a month of the broker
/// benchmark's traffic (200,000 events over 10,000 customers, a fifth of them busy; 20,000
/// under `cargo test`), ending a minute before `NOW`.
fn history_records() -> Vec<InputRecord> {
    let events = if std::env::args().any(|a| a == "--bench") {
        200_000
    } else {
        20_000
    };
    records_of(TrafficSpec {
        customers: 10_000,
        events,
        seed: 3,
        start_ms: NOW - 60_000 - 30 * 86_400_000,
        step_ms: 30 * 86_400_000 / events as i64,
    })
}

/// Live traffic over the customers of [`history_records`], as the peers benchmark's latency
/// runs send it after its throughput run: two events a customer on average, the busy fifth
/// getting most (`seed` picks which).
fn live_over_history(seed: u64, start_ms: i64) -> Vec<InputRecord> {
    records_of(TrafficSpec {
        customers: 10_000,
        events: EVENTS,
        seed,
        start_ms,
        step_ms: 1,
    })
}

/// The broker benchmark's traffic (`benches/broker.rs`: 200,000 events over 10,001 customers in
/// a month, ending a minute before `NOW`; 20,000 under `cargo test`) as its job received it
/// from Tansu 0.6.0: keyed by customer into the four partitions of each of the three input
/// topics, and delivered one partition after another, each to its end, the complaints' four
/// first, then the interactions', then the orders' (HISTORY.md, 2026-12-06). A partition that has delivered nothing holds the watermark, so the month's
/// timers and complaint windows wait for the last one. With the processor's settings for those
/// four partitions, and the twelve input partitions to assign.
fn broker_order() -> (Vec<InputRecord>, ProcessorSettings, Vec<(String, i32)>) {
    const PARTITIONS: i32 = 4;
    const MONTH_MS: i64 = 30 * 86_400_000;
    let events = if std::env::args().any(|a| a == "--bench") {
        200_000
    } else {
        20_000
    };
    let text = format!(
        "[kafka]\nbrokers = \"unused\"\n[state]\npath = \"unused\"\n\
         [input]\npartitions = {PARTITIONS}\n"
    );
    let config = Config::parse(&text, Vec::new()).expect("the broker benchmark's configuration");
    let settings = customer_pulse::pipeline::processor_settings(&config);
    // One lane per input partition: by stream in `Stream::ALL`'s order, then by partition.
    let index = |stream: Stream| Stream::ALL.iter().position(|s| *s == stream).unwrap_or(0);
    let lane_of =
        |stream: Stream, partition: i32| index(stream) * PARTITIONS as usize + partition as usize;
    let mut lanes: Vec<Vec<InputRecord>> =
        vec![Vec::new(); Stream::ALL.len() * PARTITIONS as usize];
    let sources: Vec<Arc<str>> = Stream::ALL
        .iter()
        .map(|&stream| Arc::from(config.topics.input(stream)))
        .collect();
    for event in common::traffic(events, 20, 5, NOW - 60_000 - MONTH_MS, MONTH_MS) {
        let stream = Stream::of_type(event.type_name).unwrap_or(Stream::Interactions);
        let partition = partition_for(event.customer_id.as_bytes(), PARTITIONS);
        let lane = &mut lanes[lane_of(stream, partition)];
        lane.push(InputRecord {
            source: Arc::clone(&sources[index(stream)]),
            source_partition: partition,
            offset: lane.len() as i64,
            stream: Some(stream),
            state_partition: Some(partition),
            key: Some(event.customer_id.as_bytes().to_vec()),
            payload: event.value.to_string().into_bytes(),
            cut_from: None,
            append_time_ms: None,
        });
    }
    let assigned = Stream::ALL
        .iter()
        .flat_map(|&stream| {
            let topic = config.topics.input(stream).to_owned();
            (0..PARTITIONS).map(move |p| (topic.clone(), p))
        })
        .collect();
    let delivered = [Stream::Complaints, Stream::Interactions, Stream::Orders]
        .iter()
        .flat_map(|&stream| (0..PARTITIONS).map(move |p| lane_of(stream, p)))
        .flat_map(|lane| std::mem::take(&mut lanes[lane]))
        .collect();
    (delivered, settings, assigned)
}

fn records_of(spec: TrafficSpec) -> Vec<InputRecord> {
    let events: Vec<String> = generate(&spec)
        .into_iter()
        .map(|g| g.value.to_string())
        .collect();
    as_records(&events)
}

/// Events as a file source reads them, in their order.
fn as_records(events: &[String]) -> Vec<InputRecord> {
    events
        .iter()
        .enumerate()
        .map(|(i, event)| InputRecord {
            source: "bench".into(),
            source_partition: 0,
            offset: i as i64,
            stream: None,
            state_partition: None,
            key: None,
            payload: event.as_bytes().to_vec(),
            cut_from: None,
            append_time_ms: None,
        })
        .collect()
}

/// A file of `../shared/data`.
fn shared_data(name: &str) -> std::path::PathBuf {
    common::repo().join("../shared/data").join(name)
}

/// The CFPB extract's complaints in the order received, read as the `cfpb` test reads them: at
/// its clock, with its six categories, the four too old dead-lettered.
fn cfpb() -> (Vec<InputRecord>, ProcessorSettings, i64) {
    let complaints = real_data::cfpb_complaints(&shared_data("cfpb_complaints_sample.csv"));
    let events: Vec<String> = complaints.iter().map(real_data::cfpb_event).collect();
    let mut settings = settings();
    real_data::read_cfpb_with(&mut settings);
    (as_records(&events), settings, real_data::CFPB_CLOCK_MS)
}

/// Folds `records` once, in memory, and says what their work is made of: the span of event
/// time that the events within the input's age limit cover, and per event the complaint
/// windows and segment days closed, the timers fired and the outputs written.
fn describe(name: &str, records: &[InputRecord], settings: &ProcessorSettings, now: i64) {
    let mut processor = Processor::new(Store::in_memory(), settings.clone());
    let (mut windows, mut days, mut timers, mut outputs) = (0, 0, 0, 0);
    for chunk in records.chunks(5_000) {
        let report = processor.process(chunk, now).expect("memory commit");
        windows += report.closed_windows.len();
        days += report.closed_days;
        timers += report.timers_fired;
        outputs += report.outbox_records;
    }
    let times: Vec<i64> = records
        .iter()
        .filter_map(|r| {
            let event: serde_json::Value = serde_json::from_slice(&r.payload).ok()?;
            customer_pulse::event::parse_millis(event["occurred_at"].as_str()?)
        })
        .filter(|at| *at >= now - settings.rules.max_event_age_ms)
        .collect();
    let span = times.iter().max().unwrap_or(&0) - times.iter().min().unwrap_or(&0);
    let per = |n: usize| n as f64 / records.len() as f64;
    eprintln!(
        "{name}: {} events over {:.0} days of event time; per event {:.2} complaint windows and \
         {:.3} segment days closed, {:.2} timers fired, {:.2} outputs",
        records.len(),
        span as f64 / 86_400_000.0,
        per(windows),
        per(days),
        per(timers),
        per(outputs),
    );
}

/// Says what `records`' work is made of ([`describe`]), then times folding them in batches of
/// 5,000 through a processor with `settings` on a fresh RocksDB store, at processor time `now`.
fn rocksdb_bench(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    records: &[InputRecord],
    settings: &ProcessorSettings,
    now: i64,
) {
    describe(name, records, settings, now);
    group.throughput(Throughput::Elements(records.len() as u64));
    group.bench_function(name, |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("temp dir");
                let processor = Processor::new(store_at(dir.path()), settings.clone());
                (dir, processor)
            },
            // Returned, so that closing the store and removing its directory are not timed.
            |(dir, mut processor)| {
                fold_timed(&mut processor, records, 5_000, now);
                (dir, processor)
            },
            BatchSize::PerIteration,
        )
    });
}

/// A processor on a fresh RocksDB store in a temporary directory; with the changelog, as one
/// instance of a group (the aggregator elsewhere), else as a lone instance.
fn on_rocksdb(changelog: bool) -> (tempfile::TempDir, Processor) {
    let dir = tempfile::tempdir().expect("temp dir");
    let processor = open_rocksdb(dir.path(), changelog);
    (dir, processor)
}

/// The RocksDB store in `path`, with a 64 MiB block cache.
fn store_at(path: &std::path::Path) -> Store {
    let backend = RocksBackend::open(path, 64 << 20).expect("rocksdb");
    Store::open(Arc::new(backend)).expect("store")
}

/// A processor on the RocksDB store in `path`, as [`on_rocksdb`].
fn open_rocksdb(path: &std::path::Path, changelog: bool) -> Processor {
    let mut store = store_at(path);
    let mut settings = settings();
    if changelog {
        store = store
            .with_changelog("customer-pulse.customers-changelog")
            .expect("changelog");
        settings.aggregation = customer_pulse::processor::Aggregation::Elsewhere;
    }
    Processor::new(store, settings)
}

/// A RocksDB store (with the changelog or without, as [`on_rocksdb`]) holding the customers
/// of [`history_records`], its outbox drained, closed.
fn with_history(changelog: bool) -> tempfile::TempDir {
    let (dir, mut processor) = on_rocksdb(changelog);
    for chunk in history_records().chunks(10_000) {
        processor.process(chunk, NOW).expect("history");
    }
    let store = processor.store().clone();
    loop {
        let pending = store.outbox_shared(10_000).expect("outbox");
        if pending.is_empty() {
            break;
        }
        let seqs: Vec<u64> = pending.into_iter().map(|(seq, _)| seq).collect();
        store.acknowledge(&seqs).expect("acknowledge");
    }
    dir
}

/// A processor on a copy of `history` (from [`with_history`]), its cache warmed by 20,000 live
/// events first, as the latency runs warm theirs with a second of traffic that is not measured.
fn reopened(history: &std::path::Path, changelog: bool) -> (tempfile::TempDir, Processor) {
    let dir = tempfile::tempdir().expect("temp dir");
    for file in std::fs::read_dir(history).expect("history dir") {
        let file = file.expect("history file");
        std::fs::copy(file.path(), dir.path().join(file.file_name())).expect("copy");
    }
    let mut processor = open_rocksdb(dir.path(), changelog);
    for batch in live_over_history(4, NOW - 2 * EVENTS as i64).chunks(1_000) {
        processor.process(batch, NOW).expect("warm-up");
    }
    (dir, processor)
}

/// Times folding `live` in batches of `chunk` on the processor `setup` opens, with the
/// changelog or without (the name says which).
fn live_batches(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    prefix: &str,
    live: &[InputRecord],
    chunk: usize,
    changelog: bool,
    setup: impl Fn() -> (tempfile::TempDir, Processor),
) {
    let name = match changelog {
        true => format!("{prefix}_changelog_batches_of_{chunk}"),
        false => format!("{prefix}_batches_of_{chunk}"),
    };
    group.bench_function(name, |b| {
        b.iter_batched(
            &setup,
            // Returned, so that closing the store and removing its directory are not timed.
            |(dir, mut processor)| {
                fold_timed(&mut processor, live, chunk, NOW);
                (dir, processor)
            },
            BatchSize::PerIteration,
        )
    });
}

/// Folds `records` in batches of `chunk` at processor time `now`: the timed part of the
/// benchmarks on RocksDB. A function of its own, never inlined, so that callgrind can count it
/// apart from a setup's folding (the live benchmarks' warm-up folds as many events through the
/// same processor): `--toggle-collect=pipeline::fold_timed`.
#[inline(never)]
fn fold_timed(processor: &mut Processor, records: &[InputRecord], chunk: usize, now: i64) {
    for batch in records.chunks(chunk) {
        processor.process(batch, now).expect("rocksdb commit");
    }
}

/// Each customer's state after its events, by the fold alone.
fn fold<'a>(events: &'a [Event], limits: &FoldLimits) -> HashMap<&'a str, CustomerState> {
    let mut states = HashMap::<&str, CustomerState>::new();
    for event in events {
        states
            .entry(&event.customer_id)
            .or_insert_with(|| CustomerState::new(&event.customer_id))
            .apply(event, limits);
    }
    states
}

fn bench(c: &mut Criterion) {
    let records = records();
    let bytes: usize = records.iter().map(|r| r.payload.len()).sum();
    eprintln!(
        "{} events, {} bytes on average",
        records.len(),
        bytes / records.len()
    );
    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(records.len() as u64));
    group.sample_size(10);

    let rules = settings().rules;
    group.bench_function("decode", |b| {
        b.iter(|| {
            records
                .iter()
                .filter(|r| decode(None, None, &r.payload, NOW, &rules).is_ok())
                .count()
        })
    });

    // The fold alone: decoded events into per-customer state, no analytics, no store.
    let events: Vec<_> = records
        .iter()
        .filter_map(|r| decode(None, None, &r.payload, NOW, &rules).ok())
        .collect();
    let limits = settings().limits;
    group.bench_function("fold", |b| b.iter(|| fold(&events, &limits).len()));

    group.bench_function("decode_fold_commit_memory", |b| {
        b.iter_batched(
            || Processor::new(Store::in_memory(), settings()),
            |mut processor| {
                for chunk in records.chunks(5_000) {
                    processor.process(chunk, NOW).expect("memory commit");
                }
            },
            BatchSize::PerIteration,
        )
    });

    rocksdb_bench(
        &mut group,
        "decode_fold_commit_rocksdb",
        &records,
        &settings(),
        NOW,
    );

    // The same on real data, beside it in the same run and timed alike: Online Retail's orders
    // and returns (a year of a shop's invoices over 4,372 customers), and the CFPB extract's
    // complaints.
    let retail = as_records(&real_data::online_retail(&shared_data(
        "online_retail.csv.gz",
    )));
    rocksdb_bench(
        &mut group,
        "online_retail_rocksdb",
        &retail,
        &settings(),
        NOW,
    );
    let (complaints, cfpb_settings, cfpb_now) = cfpb();
    rocksdb_bench(
        &mut group,
        "cfpb_complaints_rocksdb",
        &complaints,
        &cfpb_settings,
        cfpb_now,
    );
    group.throughput(Throughput::Elements(records.len() as u64));

    // Live traffic (20 seconds of event time), folded on RocksDB as an instance folds it, with
    // the changelog (one of a group's, the aggregator elsewhere) and without (a lone
    // instance): in the batches a paced input delivers (200 records, where a batch rarely
    // holds two events of a customer), and in a backlog's (5,000, where a customer's events
    // coalesce into one write). The first is what the latency runs of `benches/peers.rs` fold.
    let live = live_records();
    for changelog in [true, false] {
        for chunk in [200, 1_000, 5_000] {
            live_batches(&mut group, "live", &live, chunk, changelog, || {
                on_rocksdb(changelog)
            });
        }
    }

    // The same on customers with a month of history, as the latency runs' are: each event
    // writes its customer whole, and a busy customer's remembered events, open orders and
    // purchase days make it several times the size of a new one's.
    for changelog in [true, false] {
        let history = with_history(changelog);
        let live = live_over_history(5, NOW - EVENTS as i64);
        for chunk in [200, 1_000] {
            live_batches(&mut group, "live_history", &live, chunk, changelog, || {
                reopened(history.path(), changelog)
            });
        }
    }

    // The broker benchmark's job without the broker: its traffic in the order Tansu delivered
    // it, folded in its batches of 10,000 on RocksDB as a lone instance (no changelog), with
    // the twelve input partitions assigned, at one processor time throughout (no partition
    // goes idle). Its fold thread's work, counted by callgrind where the broker's noise is not.
    // Then the same with the changelog, as one of a group's instances folds it (the
    // aggregator elsewhere): each written customer is a changelog record in the outbox too.
    let (delivered, settings, assigned) = broker_order();
    group.throughput(Throughput::Elements(delivered.len() as u64));
    for changelog in [false, true] {
        let name = if changelog {
            "broker_order_changelog_batches_of_10000"
        } else {
            "broker_order_batches_of_10000"
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().expect("temp dir");
                    let mut store = store_at(dir.path());
                    let mut settings = settings.clone();
                    if changelog {
                        store = store
                            .with_changelog("customer-pulse.customers-changelog")
                            .expect("changelog");
                        settings.aggregation = customer_pulse::processor::Aggregation::Elsewhere;
                    }
                    let mut processor = Processor::new(store, settings);
                    processor.assign(&assigned, NOW);
                    (dir, processor)
                },
                |(dir, mut processor)| {
                    fold_timed(&mut processor, &delivered, 10_000, NOW);
                    (dir, processor)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();

    // One atomic commit to RocksDB of what a batch of 1,000 events writes (1,000 customers, each
    // with a timer and an output record, and the input offset), then, as the outbox drain does
    // once the sink has them, reading the output records back and deleting them.
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1_000));
    group.sample_size(20);
    let customers: Vec<Customer> = fold(&events, &limits)
        .into_values()
        .take(1_000)
        .map(Customer::from)
        .collect();
    // Each commit as the fold makes it: a thousand customers with a timer and a churn-risk
    // record each, then the drain reading and acknowledging the outbox. With the changelog on,
    // each customer's changelog record and a position record per partition too.
    for changelog in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = store_at(dir.path());
        let mut name = "commit_and_acknowledge_1000_customers_rocksdb".to_owned();
        if changelog {
            store = store
                .with_changelog("customer-pulse.customers-changelog")
                .expect("changelog");
            name.push_str("_changelog");
        }
        let mut offset = 0;
        group.bench_function(&name, |b| {
            b.iter(|| {
                let mut commit = Commit::default();
                for (i, customer) in customers.iter().enumerate() {
                    let id = customer.state.customer_id.clone();
                    commit.put_customer(i as i32 % 6, id.clone(), Some(customer));
                    commit.timers_set.push(Timer {
                        partition: i as i32 % 6,
                        at: NOW + offset,
                        customer_id: id.clone(),
                    });
                    commit.outbox.push(
                        OutboxRecord {
                            topic: "customer.churn-risk".into(),
                            key: Some(id.into_bytes()),
                            value: Some(vec![b'x'; 500]),
                            headers: Vec::new(),
                            partition: None,
                        }
                        .into(),
                    );
                }
                offset += 1_000;
                commit.offsets.push(("bench".into(), 0, offset));
                store.commit(commit).expect("commit");
                let delivered: Vec<u64> = store
                    .outbox_shared(4_000)
                    .expect("outbox")
                    .into_iter()
                    .map(|(seq, _)| seq)
                    .collect();
                store.acknowledge(&delivered).expect("acknowledge");
            })
        });
    }
    group.finish();
}

fn models(c: &mut Criterion) {
    use customer_pulse::churn::{hyp2f1, Clv, Recency};
    use customer_pulse::fold::CustomerState;
    use customer_pulse::risk::{assess, RiskSettings};
    use customer_pulse::segments::Trailing;
    use customer_pulse::tables::ModelTables;
    use std::hint::black_box;

    let risk = RiskSettings::default();
    let model = risk.model;
    // A customer with 6 repeat purchases over 40 weeks, scored 52 weeks after the first.
    let h = Recency {
        x: 6.0,
        t_x: 40.0,
        t: 52.0,
    };
    let mut group = c.benchmark_group("models");
    group.bench_function("hyp2f1", |b| {
        b.iter(|| {
            hyp2f1(
                black_box(0.24 + 6.0),
                black_box(4.41),
                7.63,
                black_box(0.37),
            )
        })
    });
    // The CLV as the job computes it, from a table built for the customer's repeat purchases
    // the first time they are asked for (`tables::ModelTables`, built before the timing), beside
    // the sum it replaced (a Taylor step from each month's 2F1 to the next, `Clv::walked`) and
    // the reference (each month's 2F1 summed on its own), for the customer above and for a
    // customer of the replay's kind: a purchase a week for three weeks, scored a week later.
    let recent = Recency {
        x: 2.0,
        t_x: 2.0,
        t: 3.0,
    };
    let month = 30.0 / 7.0;
    let clv_of = |h| Clv {
        model: &model,
        h,
        month,
        months: 12,
        margin_per_purchase: black_box(25.0),
        monthly_discount: 0.01,
    };
    let tables = ModelTables::default();
    for (name, h) in [("", h), ("_recent", recent)] {
        let by_table = |h| tables.clv(&model, h, month, 12, black_box(25.0), 0.01);
        let (tabled, walked) = (by_table(h), clv_of(h).walked());
        assert!(
            (tabled - walked).abs() <= 1e-12 * walked.abs(),
            "{tabled} {walked}"
        );
        group.bench_function(format!("clv_12_months{name}"), |b| {
            b.iter(|| by_table(black_box(h)))
        });
        group.bench_function(format!("clv_12_months{name}_walked"), |b| {
            b.iter(|| clv_of(black_box(h)).walked())
        });
        group.bench_function(format!("clv_12_months{name}_summed_at_each_month"), |b| {
            b.iter(|| clv_of(black_box(h)).summed_at_each_month())
        });
    }
    // The generator's two busiest customers after the benchmark's traffic: the states a
    // published record is computed from. Taken in turn, so that no CLV is the thread's last.
    let mut processor = Processor::new(Store::in_memory(), settings());
    processor.process(&records(), NOW).expect("fold");
    let store = processor.store().clone();
    let mut customers: Vec<CustomerState> = (0..6)
        .flat_map(|p| store.customers(p, "", usize::MAX).expect("customers"))
        .collect();
    customers.sort_by_key(|c| std::cmp::Reverse(c.orders));
    let busiest = [&customers[0], &customers[1]];
    assert_ne!(
        busiest[0].purchase_days, busiest[1].purchase_days,
        "two histories, two CLVs"
    );
    let trailing = Trailing::default();
    group.bench_function("assess", |b| {
        let mut turn = 0;
        b.iter(|| {
            turn ^= 1;
            assess(black_box(busiest[turn]), &trailing, NOW, &risk)
        })
    });
    group.finish();
}

criterion_group!(benches, bench, models);
criterion_main!(benches);
