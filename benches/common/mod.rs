//! What the benchmarks share. Each includes this module; not every one uses every item.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

/// The binary's allocator (`src/main.rs`), so that what a benchmark runs in process (the fold,
/// a restore, the state's memory) costs what it costs in the binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The repository's root, as `cargo bench` names it at run time: a binary cargo took as fresh
/// from a build in another checkout would name that one at build time (`env!`), which serves
/// only a binary run without cargo.
pub fn repo() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    )
}

/// The benchmark's size: the environment variable `var` (or `bench`) under `cargo bench`, and
/// `smoke` under `cargo test`, which runs each benchmark once so that it cannot rot.
pub fn size(var: &str, bench: u64, smoke: u64) -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(bench)
    } else {
        smoke
    }
}

/// How long a fetch may wait at the broker in the throughput runs, the job's, the references'
/// and the peer's alike: `THROUGHPUT_FETCH_WAIT_MS`, by default the job's default
/// (`kafka.fetch_wait_milliseconds`, 50). Tansu 0.6.0 holds every fetch that long, records or
/// not.
pub fn throughput_fetch_wait_ms() -> u64 {
    std::env::var("THROUGHPUT_FETCH_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
}

/// The middle of `values` (the mean of the two middle ones when they are even in number).
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.into_iter().collect();
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The reference reader: a bare librdkafka consumer assigned partitions `0..partitions` of every
/// topic from the beginning, timed until it has read `records`.
pub fn raw_read(brokers: &str, topics: &[&str], partitions: i32, records: u64) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        // As customer-pulse's consumer: Tansu holds every fetch this long.
        .set("fetch.wait.max.ms", throughput_fetch_wait_ms().to_string())
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            // Offset 0 rather than `Offset::Beginning`, as the job's readers: a logical offset
            // assigned before the leader is known waits 500 ms to be looked up, which is no
            // part of a consume rate.
            tpl.add_partition_offset(topic, p, Offset::Offset(0))
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    let started = Instant::now();
    let mut seen = 0;
    while seen < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(_)) => seen += 1,
            Some(Err(e)) => panic!("raw consumer failed: {e}"),
            None => panic!("raw consumer idle for 10 s at {seen} of {records}"),
        }
    }
    started.elapsed()
}

/// The next offset of each partition of `topics` now: where records published from here on
/// start, for [`raw_latencies`].
pub fn ends(brokers: &str, topics: &[&str], partitions: i32) -> Vec<(String, i32, i64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer");
    let mut ends = Vec::new();
    for topic in topics {
        for p in 0..partitions {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            ends.push(((*topic).to_owned(), p, high));
        }
    }
    ends
}

/// A bare librdkafka consumer's latency, the reference for the job's: it reads `records`
/// records from `from` (see [`ends`]), its fetches waiting at most `fetch_wait_ms` at the
/// broker, and returns, for each, how long after its timestamp it was received, in
/// milliseconds, sorted.
pub fn raw_latencies(
    brokers: &str,
    from: &[(String, i32, i64)],
    records: u64,
    fetch_wait_ms: u64,
) -> Vec<f64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-raw-latency")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", fetch_wait_ms.to_string())
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for (topic, p, offset) in from {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*offset))
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut latencies = Vec::with_capacity(records as usize);
    while (latencies.len() as u64) < records {
        match consumer.poll(Duration::from_secs(30)) {
            Some(Ok(message)) => {
                let now = customer_pulse::replay::wall_clock_ms();
                let at = message.timestamp().to_millis().unwrap_or(now);
                latencies.push((now - at) as f64);
            }
            Some(Err(e)) => panic!("raw consumer failed: {e}"),
            None => panic!(
                "raw consumer idle for 30 s at {} of {records}",
                latencies.len()
            ),
        }
    }
    latencies.sort_by(f64::total_cmp);
    latencies
}

/// The sum of every series of metric `name` on the processor's `/metrics` at `port`; 0 when it
/// does not answer.
pub fn metric_sum(port: u16, name: &str) -> f64 {
    Scrape::of(port).sum(name)
}

/// One read of the processor's `/metrics`, empty when it does not answer. A harness that
/// waits on several metrics reads them from one scrape: rendering the page costs the
/// measured process CPU time.
pub struct Scrape(String);

impl Scrape {
    pub fn of(port: u16) -> Scrape {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            return Scrape(String::new());
        };
        let _ = write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        );
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        Scrape(text)
    }

    /// The sum of every series of metric `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.lines(name).iter().map(|(_, v)| v).sum()
    }

    /// The series of metric `name` (its exact name, then labels or a space) as `(labels, value)`.
    pub fn lines(&self, name: &str) -> Vec<(String, f64)> {
        self.0
            .lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series[name.len()..].to_owned(), value.parse::<f64>().ok()?))
            })
            .collect()
    }
}

/// The multi-threaded runtime a benchmark's `main` runs in. With `RUST_LOG` set, the log of
/// what runs in it (the job, a restore) goes to stderr as the binary's does, to see where a
/// run's time goes.
pub fn runtime() -> tokio::runtime::Runtime {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The job's topics, `(name, partitions, compacted)`: the three inputs and the outputs.
pub fn job_topics(partitions: i32) -> Vec<(&'static str, i32, bool)> {
    vec![
        ("customer.interactions", partitions, false),
        ("customer.orders", partitions, false),
        ("customer.complaints", partitions, false),
        ("customer.churn-risk", partitions, true),
        ("customer.complaint-trends", partitions, false),
        ("customer.segment-metrics", partitions, false),
        ("customer.events.dlq", 1, false),
        ("customer-pulse.customers-changelog", partitions, true),
    ]
}

/// Folds one order for each of `customers` distinct customers (`c-000000000` on), and every tenth
/// of them a complaint too, with event times over the 30 days before `now`, in batches of
/// `batch_size`, acknowledging the outbox as a producer would. Calls `each(customers so far,
/// events so far)` after every customer; returns the number of events.
pub fn fill(
    store: &customer_pulse::store::Store,
    processor: &mut customer_pulse::processor::Processor,
    customers: u64,
    batch_size: usize,
    now: i64,
    mut each: impl FnMut(u64, u64),
) -> u64 {
    use customer_pulse::event::format_millis;
    let record = |offset: i64, payload: String| customer_pulse::processor::InputRecord {
        source: "bench".into(),
        source_partition: 0,
        offset,
        stream: None,
        state_partition: None,
        key: None,
        payload: payload.into_bytes(),
        cut_from: None,
        append_time_ms: None,
    };
    let start = now - 30 * 86_400_000;
    let step = (30 * 86_400_000 / customers as i64).max(1);
    let mut batch = Vec::with_capacity(batch_size);
    let mut offset = 0i64;
    for i in 0..customers {
        let at = format_millis(start + i as i64 * step);
        let id = format!("c-{i:09}");
        batch.push(record(
            offset,
            format!(
                r#"{{"event_id":"o-{i}","customer_id":"{id}","type":"order.placed","occurred_at":"{at}","order_id":"{i}","amount_minor":{},"margin_minor":{},"currency":"EUR","channel":"web"}}"#,
                1_000 + i % 9_000,
                200 + i % 1_500
            ),
        ));
        offset += 1;
        if i % 10 == 0 {
            batch.push(record(
                offset,
                format!(
                    r#"{{"event_id":"k-{i}","customer_id":"{id}","type":"complaint.opened","occurred_at":"{at}","complaint_id":"k-{i}","category":"delivery","severity":"medium"}}"#
                ),
            ));
            offset += 1;
        }
        if batch.len() >= batch_size || i + 1 == customers {
            processor.process(&batch, now).expect("commit");
            batch.clear();
            loop {
                let pending = store.outbox_shared(10_000).expect("outbox");
                if pending.is_empty() {
                    break;
                }
                let seqs: Vec<u64> = pending.iter().map(|(seq, _)| *seq).collect();
                store.acknowledge(&seqs).expect("acknowledge");
            }
        }
        each(i + 1, offset as u64);
    }
    offset as u64
}

/// `events` generated events for `events / customers_per` + 1 customers, spread evenly over
/// `span_ms` from `start_ms`.
pub fn traffic(
    events: u64,
    customers_per: u64,
    seed: u64,
    start_ms: i64,
    span_ms: i64,
) -> Vec<customer_pulse::generate::Generated> {
    customer_pulse::generate::generate(&customer_pulse::generate::TrafficSpec {
        customers: events / customers_per + 1,
        events,
        seed,
        start_ms,
        step_ms: (span_ms / events as i64).max(1),
    })
}

/// The kernel's clock ticks per second, in which `/proc` reports CPU time.
pub fn clock_ticks() -> f64 {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("getconf");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK")
}

/// The command name and the CPU ticks (user and system) of a process or thread so far, from
/// its `/proc/.../stat`; `None` when it is gone.
pub fn stat_ticks(path: &std::path::Path) -> Option<(String, u64)> {
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name is in parentheses and may hold spaces; fields count from after it.
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let fields: Vec<&str> = stat.get(close + 2..)?.split(' ').collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((stat[open + 1..close].to_owned(), ticks(11)? + ticks(12)?))
}

/// How long a thread has been runnable but waiting for a core, in nanoseconds: the second
/// field of its `/proc/.../schedstat` (the first, its time on a core, the ticks give already).
fn waiting_ns(path: &std::path::Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().nth(1)?.parse().ok()
}

/// A live thread in a [`CpuSnapshot`]: its name, CPU ticks and time waiting for a core.
struct ThreadTime {
    name: String,
    ticks: u64,
    waiting_ns: Option<u64>,
}

/// CPU ticks used so far: by every core of the machine, by one process (its threads that
/// ended included), and by each of its live threads, with their names.
pub struct CpuSnapshot {
    at: Instant,
    machine: u64,
    process: u64,
    threads: std::collections::HashMap<String, ThreadTime>,
}

impl CpuSnapshot {
    /// This process's.
    pub fn take() -> CpuSnapshot {
        CpuSnapshot::of("self")
    }

    /// The process `pid`'s (a number, or `self`); zeros once it is gone.
    pub fn of(pid: &str) -> CpuSnapshot {
        // The first line of /proc/stat sums every core: user, nice, system, idle, iowait, irq,
        // softirq, steal, ...; busy is all but idle and iowait.
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let n: Vec<u64> = s
                    .lines()
                    .next()?
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|f| f.parse().ok())
                    .collect();
                Some([0, 1, 2, 5, 6, 7].iter().filter_map(|&i| n.get(i)).sum())
            })
            .unwrap_or(0);
        let process =
            stat_ticks(std::path::Path::new(&format!("/proc/{pid}/stat"))).map_or(0, |(_, t)| t);
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| {
                let (name, ticks) = stat_ticks(&task.path().join("stat"))?;
                let waiting_ns = waiting_ns(&task.path().join("schedstat"));
                let thread = ThreadTime {
                    name,
                    ticks,
                    waiting_ns,
                };
                Some((task.file_name().to_string_lossy().into_owned(), thread))
            })
            .collect();
        CpuSnapshot {
            at: Instant::now(),
            machine,
            process,
            threads,
        }
    }

    /// What was used between `before` and this snapshot, in cores (CPU seconds a second):
    /// the machine's, the process's, and each of its threads', the busiest first; threads
    /// that ended in between (and so have no ticks to read) are summed as `(ended)`. A thread
    /// live at both snapshots also has the share of the span it spent runnable but waiting
    /// for a core.
    pub fn since(&self, before: &CpuSnapshot) -> CpuUse {
        let span = self.at.duration_since(before.at).as_secs_f64();
        let ticks = clock_ticks() * span;
        let cores = |t: u64| t as f64 / ticks;
        let mut threads: Vec<ThreadUse> = self
            .threads
            .iter()
            .map(|(tid, now)| {
                let then = before.threads.get(tid);
                let waited = match (then.and_then(|t| t.waiting_ns), now.waiting_ns) {
                    (Some(then), Some(now)) => Some(now.saturating_sub(then) as f64 / 1e9 / span),
                    _ => None,
                };
                ThreadUse {
                    name: now.name.clone(),
                    cores: cores(now.ticks.saturating_sub(then.map_or(0, |t| t.ticks))),
                    waited,
                }
            })
            .collect();
        let process = cores(self.process.saturating_sub(before.process));
        let live: f64 = threads.iter().map(|thread| thread.cores).sum();
        threads.push(ThreadUse {
            name: "(ended)".into(),
            cores: (process - live).max(0.0),
            waited: None,
        });
        threads.sort_by(|a, b| b.cores.total_cmp(&a.cores));
        CpuUse {
            seconds: span,
            machine: cores(self.machine.saturating_sub(before.machine)),
            process,
            threads,
        }
    }
}

/// CPU used over a span, in cores: see [`CpuSnapshot::since`].
pub struct CpuUse {
    pub seconds: f64,
    pub machine: f64,
    pub process: f64,
    pub threads: Vec<ThreadUse>,
}

/// One thread's share of a [`CpuUse`].
pub struct ThreadUse {
    pub name: String,
    /// On a core, in cores.
    pub cores: f64,
    /// Runnable but waiting for a core, as a share of the span; `None` for a thread that
    /// started or ended within it.
    pub waited: Option<f64>,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        write!(
            f,
            "over {:.2} s the machine was busy {:.2} cores of {cores}, the process {:.2} (the rest of the machine {:.2}); its threads:",
            self.seconds,
            self.machine,
            self.process,
            (self.machine - self.process).max(0.0)
        )?;
        // Each thread with a fiftieth of the process or more; the rest summed.
        let share = |used: f64| {
            if self.process > 0.0 {
                used / self.process * 100.0
            } else {
                0.0
            }
        };
        let (shown, rest): (Vec<_>, Vec<_>) = self
            .threads
            .iter()
            .partition(|thread| share(thread.cores) >= 2.0);
        for ThreadUse {
            name,
            cores,
            waited,
        } in shown
        {
            write!(f, " {name} {cores:.2} ({:.0}%", share(*cores))?;
            // A thread live over the whole span: on a core, waiting for one, or asleep.
            if let Some(waited) = waited {
                let asleep = (1.0 - cores - waited).max(0.0);
                write!(f, "; waiting for a core {waited:.2}, asleep {asleep:.2}")?;
            }
            write!(f, "),")?;
        }
        let rest: f64 = rest.iter().map(|thread| thread.cores).sum();
        write!(f, " the others {rest:.2} ({:.0}%)", share(rest))?;
        Ok(())
    }
}

/// What a RocksDB directory holds on disk: its table files (`*.sst`), its write-ahead log
/// (`*.log`: what the memtables hold, not flushed yet, which a flush or the next start turns
/// into table files), and the rest (the manifest, options, RocksDB's own `LOG`).
#[derive(Default)]
pub struct DiskUse {
    pub tables: u64,
    pub log: u64,
    pub rest: u64,
}

impl DiskUse {
    pub fn of(dir: &std::path::Path) -> DiskUse {
        let mut disk = DiskUse::default();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if meta.is_dir() {
                let inner = DiskUse::of(&entry.path());
                disk.tables += inner.tables;
                disk.log += inner.log;
                disk.rest += inner.rest;
            } else if name.ends_with(".sst") {
                disk.tables += meta.len();
            } else if name.ends_with(".log") {
                disk.log += meta.len();
            } else {
                disk.rest += meta.len();
            }
        }
        disk
    }
}

impl std::fmt::Display for DiskUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |bytes: u64| bytes as f64 / (1 << 20) as f64;
        write!(
            f,
            "{:.0} MiB on disk (table files {:.0}, write-ahead log {:.0}, the rest {:.0})",
            mib(self.tables + self.log + self.rest),
            mib(self.tables),
            mib(self.log),
            mib(self.rest)
        )
    }
}
