//! customer-pulse beside a bare consumer and a peer stream processor, in one run on one broker
//! (issue 7). Tansu on loopback; EVENTS generated events are published to the three input
//! topics beforehand; then, one after the other, each reads them all from the beginning:
//!
//! 1. a bare librdkafka consumer in this process (the reference: what the broker can deliver);
//! 2. customer-pulse, the release binary as a process of its own, with its default
//!    configuration (decode, fold with every analytic, RocksDB commit, outputs produced) and
//!    its changelog on;
//! 3. the peer: the per-customer fold alone written with Quix Streams (`benches/peer/quix_fold.py`,
//!    RocksDB state with a changelog topic, its default), as a Python process of its own;
//! 4. and 5. the two again without their changelogs (customer-pulse's default for a lone
//!    instance; Quix Streams' `use_changelog_topics=False`), each from a state of its own.
//!
//! For each: events/s (from its start, so start-up and group join are included, to its end:
//! customer-pulse's once its outputs are delivered too), CPU seconds
//! per million events and peak resident memory of its process. All five run again in each of
//! ROUNDS rounds, each pair from a state, a consumer group and a changelog topic of its own;
//! each ratio is of one round's contenders side by side, and the run prints each round's, then
//! each ratio's median and range and in how many rounds it met issue 7's target.
//!
//! Then customer-pulse's latency (the producer's record timestamp to the commit of the event's
//! state) while events arrive at half and at a quarter of the rate it reached (its median over
//! the rounds), with and without its changelog, restarted on the last round's state and warmed
//! up by a second of the same traffic (not measured: its first batches fire what the month of
//! event time passed). Then the peer's latency at half the rate it reached, with and without
//! its changelog, on topics of its own, from the record timestamp to the end of each event's
//! fold (it notes them itself). Last, one table of all of it.
//!
//! `cargo bench --bench peers` (EVENTS=200000 and ROUNDS=5 by default). The peer needs
//! `quixstreams` for `python3` (or for `PULSE_QUIX_PYTHON`); the test command installs it.
//! Under `cargo test` it runs one round with 2,000 events, so the harness itself stays tested.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use customer_pulse::kafka::{create_topics, publish};
use customer_pulse::replay::wall_clock_ms;

#[path = "../tests/it/broker.rs"]
mod broker;
mod common;
use broker::{free_port, Broker};

const PARTITIONS: i32 = 4;
const INPUTS: [&str; 3] = [
    "customer.interactions",
    "customer.orders",
    "customer.complaints",
];
const DAY_MS: i64 = 86_400_000;
const LATENCY: &str = "customer_pulse_processing_latency_seconds_bucket";
/// How long each batch took to fold and commit, and how many batches there were.
const BATCH: &str = "customer_pulse_commit_duration_seconds";

/// One contender's run.
struct Run {
    seconds: f64,
    cpu_seconds: f64,
    /// Peak resident set of its process; `None` for the reference, which runs in this one.
    peak_mib: Option<f64>,
    /// Where its process's CPU went, thread by thread (customer-pulse's only).
    threads: Option<common::CpuUse>,
    /// How many times the harness read its `/metrics` to see how far it had got
    /// (customer-pulse's only; the peer counts for itself and says when it is done).
    scrapes: u32,
    /// From the read that saw every event folded to the one that saw its outputs delivered
    /// too (customer-pulse's only; the run ends at the latter).
    outputs_tail: Option<Duration>,
}

/// CPU seconds (user and system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let (_, ticks) = common::stat_ticks(std::path::Path::new(&format!("/proc/{pid}/stat")))
        .expect("process stat");
    ticks as f64 / common::clock_ticks()
}

/// The peak resident set of a process so far (VmHWM), in MiB.
fn peak_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM");
    kib / 1024.0
}

/// A child's usage so far, `done` being when it finished its work.
fn usage(child: &Child, started: Instant, done: Instant) -> Run {
    Run {
        seconds: (done - started).as_secs_f64(),
        cpu_seconds: cpu_seconds(&child.id().to_string()),
        peak_mib: Some(peak_mib(child.id())),
        threads: None,
        scrapes: 0,
        outputs_tail: None,
    }
}

/// Ends a child with SIGTERM (customer-pulse then leaves its consumer group, so that the next
/// member is assigned at once), or SIGKILL when it is still there after 30 s.
fn end(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    for _ in 0..300 {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn reference(brokers: &str, events: u64) -> Run {
    let before = cpu_seconds("self");
    let seconds = common::raw_read(brokers, &INPUTS, PARTITIONS, events).as_secs_f64();
    Run {
        seconds,
        cpu_seconds: cpu_seconds("self") - before,
        peak_mib: None,
        threads: None,
        scrapes: 0,
        outputs_tail: None,
    }
}

/// customer-pulse with its default configuration, its changelog on or off, until it has folded
/// `events` and delivered their outputs (before 2026-12-07, until it had folded them: the
/// outputs of its last commits were sent after the run); returns its run, and the process
/// still running with its HTTP port (for the latency phase). `tag` names its consumer group and its changelog topic
/// ([`changelog_topic`]), so that a round's job neither resumes an earlier round's group nor
/// restores its changelog.
async fn pulse(
    brokers: &str,
    state: &std::path::Path,
    tag: &str,
    events: u64,
    inputs: &[&str; 3],
    fetch_wait_ms: u64,
    changelog: bool,
) -> (Run, Child, u16) {
    let port = free_port();
    std::fs::create_dir_all(state).expect("state directory");
    let config = state.join("config.toml");
    let [interactions, orders, complaints] = inputs;
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"bench-peers-pulse-{tag}\"\n\
             fetch_wait_milliseconds = {fetch_wait_ms}\n\
             [input]\npartitions = {PARTITIONS}\n[state]\npath = \"{}\"\nchangelog = {changelog}\n\
             [http]\nlisten_address = \"127.0.0.1:{port}\"\n\
             [topics]\ninteractions = \"{interactions}\"\norders = \"{orders}\"\n\
             complaints = \"{complaints}\"\nchangelog = \"{}\"\n",
            state.join("state").display(),
            changelog_topic(tag)
        ),
    )
    .expect("config file");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
        .args(["run", "--config"])
        .arg(&config)
        .env(
            "RUST_LOG",
            std::env::var("PULSE_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .spawn()
        .expect("customer-pulse starts");
    let spawned = common::CpuSnapshot::of(&child.id().to_string());
    let deadline = Instant::now() + Duration::from_secs(900);
    // Rendering `/metrics` costs the job CPU time, which is measured, and which the peer, which
    // counts for itself, does not pay (about 0.45 ms a read; every 20 ms, a few percent of the
    // job's CPU). So the reads are seldom while the end is far, by the rate so far, and 20 ms
    // apart near it, where they time the end.
    let mut scrapes = 0;
    // When a read first saw every event folded: the run ends once a later read sees the
    // outbox empty as well (by then the drain, which the last commit woke, has counted what
    // that commit left), so that its outputs are produced within the run.
    let mut folded_all = None;
    loop {
        let scrape = common::Scrape::of(port);
        scrapes += 1;
        let folded = scrape.sum("customer_pulse_events_total");
        if folded >= events as f64 && scrape.sum("customer_pulse_ready") >= 1.0 {
            if folded_all.is_some() && scrape.sum("customer_pulse_outbox_backlog_records") == 0.0 {
                break;
            }
            folded_all.get_or_insert_with(Instant::now);
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        }
        assert!(
            Instant::now() < deadline,
            "customer-pulse finished within 900 s"
        );
        let rate = folded / started.elapsed().as_secs_f64();
        let half_the_rest = (events as f64 - folded).max(0.0) / rate / 2.0;
        let wait = if half_the_rest.is_finite() {
            half_the_rest.clamp(0.02, 0.25)
        } else {
            0.02
        };
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let done = Instant::now();
    let threads = common::CpuSnapshot::of(&child.id().to_string()).since(&spawned);
    let run = Run {
        threads: Some(threads),
        scrapes,
        outputs_tail: folded_all.map(|at| done - at),
        ..usage(&child, started, done)
    };
    (run, child, port)
}

/// The Quix Streams peer on `topics`, in consumer group `group`, keeping its state in `state`,
/// with its changelog topic or without, told to say when it took in `expected` events; `more`
/// are further arguments (its fetch wait, which the harness sets as it sets the job's).
/// Returns the process and the lines it says (`warm`, `processed ...`).
fn spawn_quix(
    brokers: &str,
    group: &str,
    state: &std::path::Path,
    expected: u64,
    changelog: bool,
    topics: &[&str],
    more: &[std::ffi::OsString],
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let python = std::env::var("PULSE_QUIX_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = common::repo().join("benches/peer/quix_fold.py");
    let mut child = Command::new(python)
        .arg(script)
        .args(["--brokers", brokers, "--group", group, "--changelog"])
        .arg(if changelog { "on" } else { "off" })
        .arg("--expected")
        .arg(expected.to_string())
        .arg("--state-dir")
        .arg(state)
        .args(more)
        .args(topics)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the Quix Streams peer starts (python3 with quixstreams, or PULSE_QUIX_PYTHON)");
    let stdout = child.stdout.take().expect("peer stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("processed") || line == "warm" {
                let _ = tx.send(line);
            }
        }
    });
    (child, rx)
}

/// The peer's arguments for its consumer's `fetch.wait.max.ms`.
fn fetch_wait(ms: u64) -> Vec<std::ffi::OsString> {
    vec!["--fetch-wait-ms".into(), ms.to_string().into()]
}

/// The next line the peer says, which must start with `what`, within `seconds`.
fn said(lines: &std::sync::mpsc::Receiver<String>, what: &str, seconds: u64) -> String {
    let line = lines
        .recv_timeout(Duration::from_secs(seconds))
        .unwrap_or_else(|_| panic!("the peer said {what} within {seconds} s"));
    assert!(line.starts_with(what), "the peer said {line:?}, not {what}");
    line
}

/// The Quix Streams peer, with its changelog topic or without, until it says it took in
/// `events`; in a consumer group named by `tag` (its changelog topics are named by the group).
fn quix(brokers: &str, state: &std::path::Path, tag: &str, events: u64, changelog: bool) -> Run {
    let started = Instant::now();
    let (child, lines) = spawn_quix(
        brokers,
        &format!("bench-peers-quix-{tag}"),
        &state.join("quix"),
        events,
        changelog,
        &INPUTS,
        &fetch_wait(common::throughput_fetch_wait_ms()),
    );
    let line = said(&lines, "processed", 1800);
    let run = usage(&child, started, Instant::now());
    eprintln!("peer: {line}");
    end(child);
    run
}

/// The peer's latency, as [`paced`] measures the job's: started on input topics of its own
/// (`livepeer{seed}.*`) with a state of its own, a second of traffic at `rate` first (not
/// measured: it also covers the peer's start and its group's join), then 10 s of fresh events
/// at `rate`. Each paced event's time from its record timestamp to the end of its fold in the
/// peer, exact (the peer notes them; see `benches/peer/quix_fold.py`).
async fn quix_paced(
    brokers: &str,
    topics: &customer_pulse::config::Topics,
    state: &std::path::Path,
    rate: f64,
    seed: u64,
    changelog: bool,
) -> PeerPaced {
    let paced = ((rate * 10.0) as u64).max(100);
    let (names, topics) = live_inputs(brokers, topics, &format!("livepeer{seed}")).await;
    let inputs = [names[0].as_str(), names[1].as_str(), names[2].as_str()];
    let warm = (rate as u64).max(10);
    let noted = state.join(format!("latencies-{seed}.txt"));
    let (child, lines) = spawn_quix(
        brokers,
        &format!("bench-peers-quix-live{seed}"),
        &state.join(format!("quix-live{seed}")),
        warm + paced,
        changelog,
        &inputs,
        &[
            fetch_wait(live_fetch_wait_ms()),
            vec![
                "--latencies".into(),
                noted.clone().into(),
                "--warm".into(),
                warm.to_string().into(),
            ],
        ]
        .concat(),
    );
    let warm_up = common::traffic(warm, 20, seed + 100, wall_clock_ms(), 1_000);
    publish(brokers, &topics, &warm_up, Some(rate as u64), 10_000)
        .await
        .expect("warm-up publish");
    let lines = tokio::task::spawn_blocking(move || {
        said(&lines, "warm", 300);
        lines
    })
    .await
    .expect("the peer's warm-up");
    let from_ms = wall_clock_ms();
    let live = common::traffic(paced, 20, seed, from_ms, 10_000);
    let started = Instant::now();
    publish(brokers, &topics, &live, Some(rate as u64), 10_000)
        .await
        .expect("paced publish");
    tokio::task::spawn_blocking(move || said(&lines, "processed", 300))
        .await
        .expect("the peer's paced events");
    let achieved = paced as f64 / started.elapsed().as_secs_f64();
    end(child);
    let text = std::fs::read_to_string(&noted).expect("the peer's latencies");
    let mut latencies: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let (timestamp, ms) = line.split_once(' ')?;
            let timestamp: i64 = timestamp.parse().ok()?;
            (timestamp >= from_ms).then(|| ms.parse().ok())?
        })
        .collect();
    latencies.sort_by(f64::total_cmp);
    assert_eq!(
        latencies.len() as u64,
        paced,
        "the peer noted every paced event, once"
    );
    PeerPaced {
        rate,
        achieved,
        latencies,
    }
}

/// What the peer's latency run measured.
struct PeerPaced {
    /// Events per second offered.
    rate: f64,
    /// Events per second folded while they arrived.
    achieved: f64,
    /// Record timestamp to the end of the event's fold, sorted, in milliseconds.
    latencies: Vec<f64>,
}

/// The share `q` of `sorted` (ascending) at or under the value returned.
fn exact_quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

/// How long the job's and the reference's fetches may wait at the broker while latency is
/// measured (`FETCH_WAIT_MS`, default 2): Tansu 0.6.0 holds every fetch that long, records or
/// not, so it is a floor under both latencies (README, *Latency*).
fn live_fetch_wait_ms() -> u64 {
    std::env::var("FETCH_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
}

/// Waits until the job at `port` has folded `events` in all, for at most 300 s.
async fn folded(port: u16, events: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while common::metric_sum(port, "customer_pulse_events_total") < events as f64 {
        assert!(Instant::now() < deadline, "{what} were folded within 300 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What each series of `now` gained since `before` (the same metric read earlier).
fn gained(now: Vec<(String, f64)>, before: &[(String, f64)]) -> Vec<(String, f64)> {
    now.into_iter()
        .map(|(labels, value)| {
            let earlier = before
                .iter()
                .find(|(l, _)| *l == labels)
                .map_or(0.0, |(_, v)| *v);
            (labels, value - earlier)
        })
        .collect()
}

/// A histogram's cumulative buckets as (upper bound in seconds, observations at or under it),
/// in the order of their bounds, `+Inf` last.
fn cumulative(buckets: &[(String, f64)]) -> Vec<(f64, f64)> {
    let bound = |labels: &str| -> f64 {
        let le = labels.trim_start_matches("{le=\"").trim_end_matches("\"}");
        if le == "+Inf" {
            f64::INFINITY
        } else {
            le.parse().unwrap_or(f64::INFINITY)
        }
    };
    let mut buckets: Vec<(f64, f64)> = buckets
        .iter()
        .map(|(labels, n)| (bound(labels), *n))
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The smallest bucket bound (seconds) of a histogram under which a share `q` of its
/// observations fall.
fn quantile(buckets: &[(String, f64)], q: f64) -> Option<f64> {
    let buckets = cumulative(buckets);
    let total = buckets.last()?.1;
    buckets
        .iter()
        .find(|(_, n)| *n >= q * total)
        .map(|(le, _)| *le)
}

/// The share of a histogram's observations at or under the bucket bound `le` (seconds), which
/// must be one of its bounds.
fn within(buckets: &[(String, f64)], le: f64) -> f64 {
    let buckets = cumulative(buckets);
    let total = buckets.last().map_or(0.0, |(_, n)| *n);
    if total == 0.0 {
        return 0.0;
    }
    buckets
        .iter()
        .find(|(bound, _)| *bound == le)
        .map_or(0.0, |(_, n)| n / total)
}

/// What names a pair's state directory and consumer groups in round `round`: with their
/// changelogs or alone.
fn tag(changelog: bool, round: u64) -> String {
    let pair = if changelog { "changelog" } else { "alone" };
    format!("{pair}-r{round}")
}

/// customer-pulse's changelog topic in the run tagged `tag`.
fn changelog_topic(tag: &str) -> String {
    format!("bench-peers-changelog-{tag}")
}

/// One contender pair's runs in a round: customer-pulse and the peer, with their changelogs
/// or without.
struct Pair {
    changelog: bool,
    state: std::path::PathBuf,
    tag: String,
    pulse: Run,
    peer: Run,
}

/// One round: the bare consumer, then both pairs.
struct Round {
    reference: Run,
    pairs: Vec<Pair>,
}

/// Every round's pair with its changelogs or without, beside that round's bare consumer.
fn pairs_of(rounds: &[Round], changelog: bool) -> impl Iterator<Item = (&Run, &Pair)> {
    rounds.iter().flat_map(move |round| {
        round
            .pairs
            .iter()
            .filter(move |p| p.changelog == changelog)
            .map(move |p| (&round.reference, p))
    })
}

fn main() {
    let events = common::size("EVENTS", 200_000, 2_000);
    let rounds = common::size("ROUNDS", 5, 1).max(1);
    common::runtime().block_on(async move {
        let broker = Broker::start();
        let brokers = broker.address.clone();
        create_topics(&brokers, &common::job_topics(PARTITIONS))
            .await
            .expect("topics");
        let config = customer_pulse::config::Config::parse(
            "[kafka]\nbrokers = \"x\"\n[state]\npath = \"/tmp/unused\"\n",
            Vec::new(),
        )
        .expect("config");
        let now = wall_clock_ms();
        let generated = common::traffic(events, 20, 7, now - 31 * DAY_MS, 30 * DAY_MS);
        let bytes: usize = generated.iter().map(|g| g.value.to_string().len()).sum();
        // One record per batch: Quix Streams' consumer refuses the offsets Tansu 0.6.0 returns
        // when a fetch starts inside a larger batch (see the README's deviations).
        publish(&brokers, &config.topics, &generated, None, 1)
            .await
            .expect("publish");
        let dir = tempfile::tempdir().expect("temp dir");
        println!(
            "\nTansu on loopback: {events} events, {} bytes on average, {PARTITIONS} partitions x 3 topics; rounds: {rounds}",
            bytes / generated.len()
        );

        // Rounds, each the bare consumer, then customer-pulse and the peer with their
        // changelogs (Quix Streams' default, and customer-pulse's when it scales out), then
        // without (customer-pulse's default for a lone instance), each from a state, a consumer
        // group and a changelog topic of its own. The machine's pace drifts by a tenth or more
        // within minutes, so one round compares the contenders only side by side, and the
        // rounds say how often a ratio holds.
        let mut all = Vec::new();
        for round in 0..rounds {
            let reference = tokio::task::spawn_blocking({
                let brokers = brokers.clone();
                move || reference(&brokers, events)
            })
            .await
            .expect("reference");
            let mut pairs = Vec::new();
            for changelog in [true, false] {
                let tag = tag(changelog, round);
                if changelog {
                    create_topics(&brokers, &[(&changelog_topic(&tag), PARTITIONS, true)])
                        .await
                        .expect("changelog topic");
                }
                let state = dir.path().join(&tag);
                let (pulse_run, child, _) = pulse(
                    &brokers,
                    &state,
                    &tag,
                    events,
                    &INPUTS,
                    common::throughput_fetch_wait_ms(),
                    changelog,
                )
                .await;
                end(child);
                let peer = tokio::task::spawn_blocking({
                    let (brokers, state, tag) = (brokers.clone(), state.clone(), tag.clone());
                    move || quix(&brokers, &state, &tag, events, changelog)
                })
                .await
                .expect("peer");
                pairs.push(Pair {
                    changelog,
                    state,
                    tag,
                    pulse: pulse_run,
                    peer,
                });
            }
            let round = Round { reference, pairs };
            for pair in &round.pairs {
                if let Some(threads) = &pair.pulse.threads {
                    println!(
                        "CPU while customer-pulse {} its changelog ran ({} reads of its /metrics; its outputs delivered {} ms after its last event was folded): {threads}",
                        with(pair.changelog),
                        pair.pulse.scrapes,
                        pair.pulse.outputs_tail.unwrap_or_default().as_millis()
                    );
                }
            }
            all.push(round);
        }

        let rate = |r: &Run| events as f64 / r.seconds;
        let cpu = |r: &Run| r.cpu_seconds / events as f64 * 1e6;
        // The most peak memory of `runs`, for the tables.
        let most = |runs: &mut dyn Iterator<Item = &Run>| {
            runs.filter_map(|r| r.peak_mib)
                .reduce(f64::max)
                .map_or("—".into(), |m| format!("{m:.0}"))
        };
        let mib = |r: &Run| most(&mut std::iter::once(r));
        // The median over the rounds of `of` for the pair with its changelogs or without.
        let median_of = |changelog: bool, of: &dyn Fn(&Pair) -> f64| {
            common::median(pairs_of(&all, changelog).map(|(_, p)| of(p)))
        };
        println!("\n| round | changelogs | bare consumer, events/s | customer-pulse, events/s | CPU s per million events | peak MiB | Quix Streams peer, events/s | CPU s per million events | peak MiB | customer-pulse / bare consumer | / peer, events/s | / peer, CPU per event |");
        println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
        for (i, round) in all.iter().enumerate() {
            for p in &round.pairs {
                println!(
                    "| {} | {} | {:.0} | {:.0} | {:.1} | {} | {:.0} | {:.1} | {} | {:.2} | {:.1}x | {:.3} |",
                    i + 1,
                    with(p.changelog),
                    rate(&round.reference),
                    rate(&p.pulse),
                    cpu(&p.pulse),
                    mib(&p.pulse),
                    rate(&p.peer),
                    cpu(&p.peer),
                    mib(&p.peer),
                    rate(&p.pulse) / rate(&round.reference),
                    rate(&p.pulse) / rate(&p.peer),
                    cpu(&p.pulse) / cpu(&p.peer)
                );
            }
        }
        // Each ratio is of one round's contenders, side by side; its median and range are
        // over the rounds.
        for changelog in [true, false] {
            let summary = |ratio: &dyn Fn(&Run, &Pair) -> f64, target: &dyn Fn(f64) -> bool| {
                let values: Vec<f64> = pairs_of(&all, changelog)
                    .map(|(r, p)| ratio(r, p))
                    .collect();
                let (low, high) = values
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                        (l.min(*v), h.max(*v))
                    });
                let met = values.iter().filter(|v| target(**v)).count();
                (common::median(values.iter().copied()), low, high, met)
            };
            let of_bare = summary(&|r, p| rate(&p.pulse) / rate(r), &|v| v >= 0.5);
            let times = summary(&|_, p| rate(&p.pulse) / rate(&p.peer), &|v| v >= 5.0);
            let share = summary(&|_, p| cpu(&p.pulse) / cpu(&p.peer), &|v| v <= 0.2);
            println!(
                "ratios {} changelogs, of {rounds} rounds: the median (the range; the rounds at issue 7's target): customer-pulse / bare consumer {:.2} ({:.2}-{:.2}; {} at 0.5 or more); / peer {:.1}x the events/s ({:.1}-{:.1}; {} at 5 or more), {:.3} of the CPU per event ({:.3}-{:.3}; {} at 0.2 or less)",
                with(changelog),
                of_bare.0, of_bare.1, of_bare.2, of_bare.3,
                times.0, times.1, times.2, times.3,
                share.0, share.1, share.2, share.3,
            );
        }

        // Latency at half and at a quarter of the rate customer-pulse reached (its median
        // over the rounds): it starts again on the last round's state (it has read everything),
        // and fresh events arrive at that pace for 10 s, published in batches as a busy
        // producer's would be, their event times moving with the clock as live traffic's do
        // (10 s of traffic spread over hours of event time would fire hours of timers and
        // windows in seconds). Beside it, a bare consumer reads the same events: the broker's
        // own latency, the reference. The events go to input topics of their own: on the
        // topics above (200,000 records, one per batch) Tansu 0.6.0 delivered them to the bare
        // consumer 1-3 s late.
        let last = all.last().expect("a round");
        let mut latencies = Vec::new();
        for pair in &last.pairs {
            let seeds = if pair.changelog { [8, 9] } else { [10, 11] };
            for (share, seed) in [(2.0, seeds[0]), (4.0, seeds[1])] {
                let rate = (median_of(pair.changelog, &|p| rate(&p.pulse)) / share).max(10.0);
                let measured = paced(
                    &brokers,
                    &config.topics,
                    &pair.state,
                    &pair.tag,
                    rate,
                    seed,
                    pair.changelog,
                )
                .await;
                latencies.push((pair.changelog, share, rate, measured));
            }
        }
        // The peer's at half the rate it reached (its median), measured the same way (its own
        // latency to the end of each event's fold, which it notes itself).
        let mut peer_latencies = Vec::new();
        for pair in &last.pairs {
            let rate = (median_of(pair.changelog, &|p| rate(&p.peer)) / 2.0).max(10.0);
            let seed = if pair.changelog { 12 } else { 13 };
            let measured = quix_paced(
                &brokers,
                &config.topics,
                &pair.state,
                rate,
                seed,
                pair.changelog,
            )
            .await;
            peer_latencies.push((pair.changelog, measured));
        }

        println!(
            "latency runs: the job's and the bare consumer's fetches wait at most {} ms at the broker (FETCH_WAIT_MS)",
            live_fetch_wait_ms()
        );
        for (changelog, share, rate, m) in &latencies {
            let ms = |q| bucket_bound(&m.buckets, q);
            let reference = &m.reference;
            let exact = |q: f64| exact_quantile(reference, q);
            println!(
                "customer-pulse latency {} its changelog (record timestamp to state commit) at 1/{share} of its rate: {rate:.0} events/s offered for 10 s, {:.0} events/s folded: p50 {}, p99 {} (histogram bucket bounds), {:.2}% within 100 ms; the bare consumer (record timestamp to receipt): p50 {:.0} ms, p99 {:.0} ms",
                with(*changelog),
                m.achieved,
                ms(0.5),
                ms(0.99),
                within(&m.buckets, 0.1) * 100.0,
                exact(0.5),
                exact(0.99)
            );
            // Where the job's share of the latency goes: folding and committing a batch, or
            // waiting for one to start.
            println!(
                "  its batches while paced (after the warm-up): {:.0}, about {:.0} events each, each folded and committed in p50 {}, p99 {}; {:.1} s folding and committing in all, {:.0} events/s while at it",
                m.batches,
                m.paced / m.batches.max(1.0),
                bucket_bound(&m.batch_buckets, 0.5),
                bucket_bound(&m.batch_buckets, 0.99),
                m.busy,
                m.paced / m.busy.max(1e-9)
            );
        }
        let within_100 = |sorted: &[f64]| {
            sorted.iter().filter(|ms| **ms <= 100.0).count() as f64 / sorted.len() as f64 * 100.0
        };
        for (changelog, m) in &peer_latencies {
            println!(
                "Quix Streams peer latency {} its changelog (record timestamp to the end of the event's fold; it commits its state at checkpoints, every 5 s) at 1/2 of its rate: {:.0} events/s offered for 10 s, {:.0} events/s folded: p50 {:.0} ms, p99 {:.0} ms, {:.2}% within 100 ms",
                with(*changelog),
                m.rate,
                m.achieved,
                exact_quantile(&m.latencies, 0.5),
                exact_quantile(&m.latencies, 0.99),
                within_100(&m.latencies)
            );
        }

        // Everything in one table: each contender at its most (the median over the rounds of
        // its own run through every event; the peak memory the most of any round), and at
        // half of that rate (latency).
        println!(
            "\nAt their most (the median of the rounds; peak memory the most of any), and at half that rate: customer-pulse's latency is to its state's commit (its histogram's bucket bounds), the bare consumer's to receipt and the peer's to the end of its fold (exact)"
        );
        println!("| changelogs | what | events/s | CPU s per million events | peak resident MiB | at half its rate, events/s | p50 | p99 |");
        println!("|---|---|---|---|---|---|---|---|");
        let ms = |v: f64| format!("{v:.0} ms");
        for changelog in [true, false] {
            let w = with(changelog);
            let peak = |which: &dyn Fn(&Pair) -> &Run| {
                most(&mut pairs_of(&all, changelog).map(|(_, p)| which(p)))
            };
            let half = latencies
                .iter()
                .find(|(c, share, _, _)| *c == changelog && *share == 2.0);
            if let Some((_, _, offered, m)) = half {
                println!(
                    "| {w} | bare librdkafka consumer | {:.0} | {:.1} | — | {offered:.0} | {} | {} |",
                    common::median(all.iter().map(|r| rate(&r.reference))),
                    common::median(all.iter().map(|r| cpu(&r.reference))),
                    ms(exact_quantile(&m.reference, 0.5)),
                    ms(exact_quantile(&m.reference, 0.99))
                );
                println!(
                    "| {w} | customer-pulse | {:.0} | {:.1} | {} | {offered:.0} | {} | {} |",
                    median_of(changelog, &|p| rate(&p.pulse)),
                    median_of(changelog, &|p| cpu(&p.pulse)),
                    peak(&|p| &p.pulse),
                    bucket_bound(&m.buckets, 0.5),
                    bucket_bound(&m.buckets, 0.99)
                );
            }
            if let Some((_, m)) = peer_latencies.iter().find(|(c, _)| *c == changelog) {
                println!(
                    "| {w} | Quix Streams peer | {:.0} | {:.1} | {} | {:.0} | {} | {} |",
                    median_of(changelog, &|p| rate(&p.peer)),
                    median_of(changelog, &|p| cpu(&p.peer)),
                    peak(&|p| &p.peer),
                    m.rate,
                    ms(exact_quantile(&m.latencies, 0.5)),
                    ms(exact_quantile(&m.latencies, 0.99))
                );
            }
        }
    });
}

/// "with" or "without", of a pair's changelogs.
fn with(changelog: bool) -> &'static str {
    if changelog {
        "with"
    } else {
        "without"
    }
}

/// "≤ N ms": the smallest bucket bound of a histogram under which a share `q` of its
/// observations fall.
fn bucket_bound(buckets: &[(String, f64)], q: f64) -> String {
    quantile(buckets, q).map_or("—".into(), |s| format!("≤ {:.0} ms", s * 1e3))
}

/// What one latency run measured.
struct Paced {
    /// Events per second folded while the paced events arrived.
    achieved: f64,
    /// What the job's latency histogram gained.
    buckets: Vec<(String, f64)>,
    /// The bare consumer's latencies, sorted, in milliseconds.
    reference: Vec<f64>,
    /// What the job's commit-duration histogram gained, its batches and their seconds.
    batch_buckets: Vec<(String, f64)>,
    batches: f64,
    busy: f64,
    /// The paced events.
    paced: f64,
}

/// Input topics of a latency run's own, `{prefix}.<input>`, created: their names, and `topics`
/// with its inputs named so.
async fn live_inputs(
    brokers: &str,
    topics: &customer_pulse::config::Topics,
    prefix: &str,
) -> ([String; 3], customer_pulse::config::Topics) {
    let names = INPUTS.map(|t| format!("{prefix}.{t}"));
    let created: Vec<(&str, i32, bool)> = names
        .iter()
        .map(|t| (t.as_str(), PARTITIONS, false))
        .collect();
    create_topics(brokers, &created).await.expect("topics");
    let mut topics = topics.clone();
    (topics.interactions, topics.orders, topics.complaints) =
        (names[0].clone(), names[1].clone(), names[2].clone());
    (names, topics)
}

/// customer-pulse restarted on `state` (its changelog on or off), then 10 s of fresh events
/// at `rate` on input topics of their own (`live{seed}.*`), after a second of the same
/// traffic that is not measured; beside it a bare consumer reading the same events.
async fn paced(
    brokers: &str,
    topics: &customer_pulse::config::Topics,
    state: &std::path::Path,
    tag: &str,
    rate: f64,
    seed: u64,
    changelog: bool,
) -> Paced {
    let paced = ((rate * 10.0) as u64).max(100);
    let (names, topics) = live_inputs(brokers, topics, &format!("live{seed}")).await;
    let inputs = [names[0].as_str(), names[1].as_str(), names[2].as_str()];
    let wait = live_fetch_wait_ms();
    let (_, child, port) = pulse(brokers, state, tag, 0, &inputs, wait, changelog).await;
    // A second of the same traffic first, not measured: the restarted job's first batches
    // fire what the jump from the throughput run's event times to the clock passes (a month
    // of windows, days and silence timers), which is a restart's cost, not live traffic's.
    // The figures are what the histograms gained after it.
    let warm = (rate as u64).max(10);
    let warm_up = common::traffic(warm, 20, seed + 100, wall_clock_ms(), 1_000);
    publish(brokers, &topics, &warm_up, Some(rate as u64), 10_000)
        .await
        .expect("warm-up publish");
    folded(port, warm, "the warm-up events").await;
    let warmed = common::Scrape::of(port);
    let live = common::traffic(paced, 20, seed, wall_clock_ms(), 10_000);
    let from = common::ends(brokers, &inputs, PARTITIONS);
    let reference = tokio::task::spawn_blocking({
        let brokers = brokers.to_owned();
        move || common::raw_latencies(&brokers, &from, paced, wait)
    });
    let started = Instant::now();
    publish(brokers, &topics, &live, Some(rate as u64), 10_000)
        .await
        .expect("paced publish");
    folded(port, warm + paced, "the paced events").await;
    let achieved = paced as f64 / started.elapsed().as_secs_f64();
    let reference = reference.await.expect("reference latencies");
    let now = common::Scrape::of(port);
    let (buckets, counts, sums) = (
        format!("{BATCH}_bucket"),
        format!("{BATCH}_count"),
        format!("{BATCH}_sum"),
    );
    let measured = Paced {
        achieved,
        buckets: gained(now.lines(LATENCY), &warmed.lines(LATENCY)),
        reference,
        batch_buckets: gained(now.lines(&buckets), &warmed.lines(&buckets)),
        batches: now.sum(&counts) - warmed.sum(&counts),
        busy: now.sum(&sums) - warmed.sum(&sums),
        paced: paced as f64,
    };
    end(child);
    measured
}
