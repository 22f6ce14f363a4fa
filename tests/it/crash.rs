//! Crash safety: the real binary, under load, killed with SIGKILL at twenty random moments (during
//! start or mid-stream) and restarted on the same state each time, ends with every customer's
//! state equal to one uninterrupted pass over the same events, and every output record arrived at
//! least once, duplicates only under the same record_id with the same value. The last process
//! stops on SIGTERM and exits 0.

use std::collections::{HashMap, HashSet};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use customer_pulse::config::Config;
use customer_pulse::kafka::publish;
use rdkafka::Message;

use crate::broker::{free_port, Broker};
use crate::end_to_end::{
    config_text, create_all_topics, customer_state, header, metric_sum, read_last_risk_records,
    read_topic_until, replayed_states, totals_via_http, traffic, wait_for,
};
use crate::support::expected_totals;

pub struct Job(Child);

impl Job {
    pub fn start(config: &std::path::Path) -> Job {
        let child = Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
            .args(["run", "--config"])
            .arg(config)
            .env(
                "RUST_LOG",
                std::env::var("PULSE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(log_target())
            .spawn()
            .expect("the binary starts");
        Job(child)
    }

    /// The job with its log, at `warn`, written to `log` (to be read back).
    pub fn start_logging_to(config: &std::path::Path, log: &std::path::Path) -> Job {
        let child = Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("the binary starts");
        Job(child)
    }

    /// Sends SIGTERM and waits: whether the job stopped cleanly. How it ended otherwise (its
    /// exit code, or the signal that ended it) goes to the test's output.
    pub fn terminate(mut self) -> bool {
        self.signal("-TERM");
        let status = self.0.wait().unwrap();
        if !status.success() {
            eprintln!("the job did not stop cleanly: {status}");
        }
        status.success()
    }

    /// Sends SIGTERM and waits for at most `limit`: whether the job stopped cleanly, `None`
    /// when it was still running then (it is killed when dropped).
    pub fn terminate_within(&mut self, limit: Duration) -> Option<bool> {
        self.signal("-TERM");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.0.try_wait().unwrap() {
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// Where a job's log goes: the test's own stderr, or with `PULSE_TEST_LOG_DIR` set, a file of
/// its own there (`job-<n>.log`, numbered in start order), so that the logs of several instances
/// of one test can be told apart.
fn log_target() -> Stdio {
    static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    crate::broker::log_file(|| {
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("job-{n}.log")
    })
    .unwrap_or_else(Stdio::inherit)
}

impl Drop for Job {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to `limit` for `read` to serve each customer of `want` its value; if it does not
/// by then, fails at the first customer it serves otherwise (or not at all), saying `what`.
async fn served_as<K: std::fmt::Display + Ord, T: PartialEq + std::fmt::Debug>(
    want: &std::collections::BTreeMap<K, T>,
    limit: Duration,
    read: impl Fn(&K) -> Option<T>,
    what: &str,
) {
    let served = wait_for(limit, || {
        want.iter()
            .all(|(id, value)| read(id).as_ref() == Some(value))
    })
    .await;
    if !served {
        for (id, value) in want {
            assert_eq!(read(id).as_ref(), Some(value), "{id}: {what}");
        }
    }
}

/// A small deterministic generator for the kill moments; the seed is printed, and
/// `PULSE_CRASH_SEED` replays a run's moments.
struct Moments(u64);

impl Moments {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn millis(&mut self, below: u64) -> Duration {
        Duration::from_millis(self.next() % below)
    }

    /// From `PULSE_CRASH_SEED`, or else from the clock; the seed is printed, for `test`.
    fn seeded(test: &str) -> (u64, Moments) {
        let seed = std::env::var("PULSE_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| customer_pulse::replay::wall_clock_ms() as u64 | 1);
        eprintln!("{test}: kill moments from PULSE_CRASH_SEED={seed}");
        (seed, Moments(seed))
    }
}

/// Publishes `events` to the input topics of `config` at 250 a second, in the background.
fn publish_at_250_a_second(
    brokers: &str,
    config: &str,
    events: &[customer_pulse::generate::Generated],
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let topics = Config::parse(config, Vec::new()).unwrap().topics;
    let brokers = brokers.to_owned();
    let events = events.to_vec();
    tokio::spawn(async move { publish(&brokers, &topics, &events, Some(250), 1).await })
}

/// Whether the job on `port` took its partitions (`/readyz` answers 200) within 60 s.
async fn consuming(port: u16) -> bool {
    wait_for(Duration::from_secs(60), || {
        crate::end_to_end::http_get(port, "/readyz").is_some_and(|(s, _)| s == 200)
    })
    .await
}

/// Stops `job` with SIGTERM and checks that it exits 0.
async fn stops_gracefully(job: Job) {
    job.signal("-TERM");
    let status = tokio::task::spawn_blocking(move || {
        let mut job = job;
        let status = job.0.wait();
        std::mem::forget(job);
        status
    })
    .await
    .unwrap()
    .unwrap();
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_twenty_times_at_random_moments_state_and_outputs_are_exact() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    // 12,000 events a minute apart: the last is two days before now, none in the future.
    let events = traffic(12_000, 33);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = config_text(&broker.address, &dir.path().join("state"), port)
        .replace("max_batch_events = 500", "max_batch_events = 100")
        .replace(
            "group_id = \"pulse-test\"",
            // A short session, so that the next incarnation is not kept waiting for its killed
            // predecessor's to expire.
            "group_id = \"pulse-crash\"\nsession_timeout_milliseconds = 1500",
        );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let (seed, mut moments) = Moments::seeded("crash test");

    // Load throughout: the events arrive at 250 a second (48 s in all) while the job is killed
    // and restarted.
    let publisher = publish_at_250_a_second(&broker.address, &text, &events);
    let started = std::time::Instant::now();
    for round in 0..20 {
        let job = Job::start(&config_path);
        if moments.next().is_multiple_of(5) {
            // During start: opening the store, joining the group, taking partitions.
            tokio::time::sleep(moments.millis(400)).await;
        } else {
            // Mid-stream: a moment after this incarnation took its partitions.
            assert!(
                consuming(port).await,
                "round {round} took partitions within 60 s (seed {seed})"
            );
            tokio::time::sleep(moments.millis(1_500)).await;
        }
        job.signal("-KILL");
        eprintln!(
            "crash test: round {round} killed at {:?}",
            started.elapsed()
        );
    }
    publisher.await.unwrap().unwrap();

    let job = Job::start(&config_path);
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let expected = expected_totals(&values);
    served_as(
        &expected,
        Duration::from_secs(120),
        |id| totals_via_http(port, id),
        "totals",
    )
    .await;
    // Each customer's whole state equals that of one uninterrupted pass over the same events.
    // Read until it does, for a while: a killed incarnation can stay in the group until its
    // session times out, and the rebalance then moves partitions under the reads (once, in a
    // run of 2026-12-05, the first customer read was not served for it, though every
    // customer's totals had just been).
    let replayed = replayed_states(&values, customer_pulse::replay::wall_clock_ms());
    let what = format!("the killed run equals the uninterrupted one (seed {seed})");
    served_as(
        &replayed,
        Duration::from_secs(60),
        |id| customer_state(port, id),
        &what,
    )
    .await;

    // Nothing lost: each customer's last churn-risk record is what the store last published.
    // A repeat (from a replay after a kill) has the same record_id and the same value.
    let customers: Vec<String> = expected.keys().cloned().collect();
    let risk = read_last_risk_records(&broker.address, port, &customers).await;
    let mut by_id: HashMap<String, Vec<u8>> = HashMap::new();
    for message in &risk {
        let id = header(message, "record_id").unwrap();
        let value = message.payload().unwrap_or_default().to_vec();
        if let Some(earlier) = by_id.insert(id.clone(), value.clone()) {
            assert_eq!(earlier, value, "{id}: a repeated output is the same record");
        }
    }

    // Complaint windows: every hour up to the last one the final watermark (newest event time
    // minus the hour of allowed lateness) closes arrived, with no gap, and a repeat after a kill
    // carries the same counts: nothing counted twice, nothing lost.
    const HOUR: i64 = 3_600_000;
    let newest = values
        .iter()
        .map(|v| customer_pulse::event::parse_millis(v["occurred_at"].as_str().unwrap()).unwrap())
        .max()
        .unwrap();
    let last_start = (newest - HOUR).div_euclid(HOUR) * HOUR - HOUR;
    let windows = windows_arrived(
        &broker.address,
        "customer.complaint-trends",
        ["billing", "delivery", "other"].map(|c| format!("trend-{c}-60-{last_start}")),
    )
    .await;
    no_gap(&windows, "trend-billing-60-", last_start, HOUR);

    // Segment days likewise: every day up to the last one the final watermark closes arrived
    // for both tiers, with no gap, a repeat identical.
    const DAY: i64 = 86_400_000;
    let last_day = (newest - HOUR).div_euclid(DAY) * DAY - DAY;
    let days = windows_arrived(
        &broker.address,
        "customer.segment-metrics",
        ["gold", "standard"].map(|s| format!("segment-{s}-{last_day}")),
    )
    .await;
    no_gap(&days, "segment-standard-", last_day, DAY);

    // A graceful stop: SIGTERM, commit, flush, exit 0.
    stops_gracefully(job).await;
}

/// With the changelog on, the complaint windows and segment days come from the aggregator,
/// which counts the facts that the changelog's records carry (here the lone instance's own, as
/// it owns partition 0). An instance killed after the broker took its changelog records, but
/// before its outbox heard so, sends them again once restarted on its state. Killed a dozen
/// times at random moments under load, the instance ends with every customer's state of one
/// uninterrupted pass, and emits the windows and days one pass emits: no fact counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_changelog_killed_a_dozen_times_the_aggregates_are_those_of_one_pass() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let events = traffic(6_000, 37);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = changelog_outside_the_group(
        config_text(&broker.address, &dir.path().join("state"), port)
            .replace("max_batch_events = 500", "max_batch_events = 100"),
        "pulse-crash-changelog",
    );
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let (seed, mut moments) = Moments::seeded("crash test with the changelog");

    // 6,000 events at 250 a second: 24 s of traffic while the job is killed and restarted.
    let publisher = publish_at_250_a_second(&broker.address, &text, &events);
    for round in 0..12 {
        let job = Job::start(&config_path);
        assert!(
            consuming(port).await,
            "round {round} took its partitions within 60 s (seed {seed})"
        );
        tokio::time::sleep(Duration::from_millis(300) + moments.millis(1_500)).await;
        job.signal("-KILL");
    }
    publisher.await.unwrap().unwrap();

    let job = Job::start(&config_path);
    let (values, ids, expected) = one_pass(&events);
    crate::scale::served_as_replayed(&[port], &ids, &expected).await;
    crate::scale::aggregates_of_one_pass(&broker.address, &values, &[port]).await;
    stops_gracefully(job).await;
}

/// A state directory put back from an earlier copy (a backup, or a disk that lost its last
/// writes when the machine stopped: the write-ahead log is not synced at each commit) is behind
/// the changelog records it had delivered. The restarted instance takes its partitions from the
/// changelog instead of folding those events again, whose facts the aggregator counted once
/// already: it ends with every customer's state, and the windows and days, of one pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_changelog_a_state_put_back_from_an_earlier_copy_counts_nothing_twice() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let events = traffic(4_000, 41);
    let dir = tempfile::tempdir().unwrap();
    let (state, copy) = (dir.path().join("state"), dir.path().join("copy"));
    let port = free_port();
    let text =
        changelog_outside_the_group(config_text(&broker.address, &state, port), "pulse-put-back");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let topics = Config::parse(&text, Vec::new()).unwrap().topics;
    let (first, second) = events.split_at(events.len() / 2);

    // The first half folded, the job stopped, its state copied.
    publish(&broker.address, &topics, first, None, 100)
        .await
        .unwrap();
    let job = Job::start(&config_path);
    let (_, ids, expected) = one_pass(first);
    crate::scale::served_as_replayed(&[port], &ids, &expected).await;
    stops_gracefully(job).await;
    copy_dir(&state, &copy);

    // The second half folded and its changelog records delivered (a graceful stop drains the
    // outbox).
    publish(&broker.address, &topics, second, None, 100)
        .await
        .unwrap();
    let job = Job::start(&config_path);
    let (values, ids, expected) = one_pass(&events);
    crate::scale::served_as_replayed(&[port], &ids, &expected).await;
    stops_gracefully(job).await;

    // The copy put back. Its aggregator (the owner of partition 0) counts the second half's
    // facts from the changelog again, and emits the windows and days they close again.
    std::fs::remove_dir_all(&state).unwrap();
    copy_dir(&copy, &state);
    let job = Job::start(&config_path);
    crate::scale::served_as_replayed(&[port], &ids, &expected).await;
    let lost_writes = crate::changelog::metric(
        port,
        r#"customer_pulse_restores_total{outcome="lost_writes"}"#,
    );
    assert!(
        lost_writes >= 1.0,
        "a partition restored for its lost writes: {lost_writes}"
    );
    crate::scale::aggregates_of_one_pass(&broker.address, &values, &[port]).await;
    // Folded again, the second half's events would count their facts a second time, into
    // windows and days already emitted.
    assert_eq!(
        metric_sum(port, "customer_pulse_aggregator_late_facts_total"),
        0.0,
        "no fact came after its window or day was emitted"
    );
    stops_gracefully(job).await;
}

/// Turning the changelog on over a state kept without it (one instance): as it claims each
/// partition, the instance sends the partition's state to the changelog whole, so that an
/// instance with nothing local restores every customer, also those with no event since; and
/// its aggregator goes on from the instance's own complaint windows, segment days and RFM
/// histograms, so the windows and days open at the switch close with the counts of both sides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_kept_without_the_changelog_goes_to_it_whole_when_it_is_turned_on() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let events = traffic(4_000, 43);
    let (first, second) = events.split_at(events.len() / 2);
    // A third of the customers have no event after the switch: only the state sent whole
    // brings them to the changelog.
    let quiet = |id: &str| id.bytes().map(u32::from).sum::<u32>() % 3 == 0;
    let second: Vec<_> = second
        .iter()
        .filter(|g| !quiet(&g.customer_id))
        .cloned()
        .collect();
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    let quiet_ones = first.iter().filter(|g| quiet(&g.customer_id)).count();
    assert!(quiet_ones > 100, "{quiet_ones} events of quiet customers");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = |state: &str, changelog: bool| {
        let group = "pulse-turned-on";
        switch_config(&broker.address, dir.path(), port, (state, group), changelog)
    };

    // The first half folded without the changelog.
    let (without, topics) = config("state", false);
    publish(&broker.address, &topics, first, None, 100)
        .await
        .unwrap();
    let job = Job::start(&without);
    let (_, ids, expected) = one_pass(first);
    crate::scale::served_as_replayed(&[port], &ids, &expected).await;
    stops_gracefully(job).await;

    // The changelog turned on: every partition's state goes to it, then the second half is
    // folded, and the aggregator emits the windows and days of one pass over both halves.
    let (with, _) = config("state", true);
    let job = Job::start(&with);
    assert!(consuming(port).await, "took its partitions within 60 s");
    let published = crate::changelog::metric(
        port,
        r#"customer_pulse_restores_total{outcome="published"}"#,
    );
    assert_eq!(
        published, 4.0,
        "every partition's state sent to the changelog"
    );
    publish(&broker.address, &topics, &second, None, 100)
        .await
        .unwrap();
    let (values, ids, expected) = one_pass(&all);
    crate::scale::served_as_replayed(&[port], &ids, &expected).await;
    crate::scale::aggregates_of_one_pass(&broker.address, &values, &[port]).await;
    stops_gracefully(job).await;

    // An instance with nothing local restores every customer from the changelog.
    let (fresh, _) = config("fresh", true);
    let job = Job::start(&fresh);
    crate::scale::served_as_replayed(&[port], &ids, &expected).await;
    let tail = crate::changelog::metric(port, r#"customer_pulse_restores_total{outcome="tail"}"#);
    assert_eq!(tail, 4.0, "every partition restored from the changelog");
    stops_gracefully(job).await;
}

/// The changelog turned off over a state kept with it (one instance left): at its graceful stop
/// the instance's aggregator reads the changelog to its end, and the instance, started without
/// the changelog, takes over the aggregator's complaint windows and segment days, which count
/// exactly what its state holds; the windows and days emitted across the switch, first by the
/// aggregator and then by the instance, are those of one pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_kept_with_the_changelog_goes_on_with_its_aggregators_counts_when_it_is_turned_off()
{
    turned_off_after(Stop::Graceful).await;
}

/// As above, the instance killed with SIGKILL rather than stopped: its aggregator had not read
/// its last records (some perhaps still in its outbox), so the instance started without the
/// changelog first sends what its outbox holds and has the aggregator read the changelog to its
/// end, then takes its windows and days over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_kept_with_the_changelog_goes_on_with_its_aggregators_counts_when_it_is_turned_off_after_a_crash(
) {
    turned_off_after(Stop::Killed).await;
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stop {
    Graceful,
    Killed,
}

/// 2,000 events folded with the changelog, the instance stopped as `stop` says, then 2,000 more
/// without the changelog on the same state: the states, windows and days of one pass.
async fn turned_off_after(stop: Stop) {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let events = traffic(4_000, 47);
    let (first, second) = events.split_at(events.len() / 2);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = |changelog: bool| {
        let group = "pulse-turned-off";
        switch_config(
            &broker.address,
            dir.path(),
            port,
            ("state", group),
            changelog,
        )
    };

    // The first half folded with the changelog, the aggregator beside the instance.
    let (with, topics) = config(true);
    publish(&broker.address, &topics, first, None, 100)
        .await
        .unwrap();
    let job = Job::start(&with);
    let (_, ids, expected) = one_pass(first);
    crate::scale::served_as_replayed(&[port], &ids, &expected).await;
    match stop {
        Stop::Graceful => stops_gracefully(job).await,
        Stop::Killed => drop(job),
    }

    // The changelog turned off: the instance takes the aggregator's counts over and folds the
    // second half alone.
    let (without, _) = config(false);
    let job = Job::start(&without);
    publish(&broker.address, &topics, second, None, 100)
        .await
        .unwrap();
    let (values, ids, expected) = one_pass(&events);
    crate::scale::served_as_replayed(&[port], &ids, &expected).await;
    crate::scale::lone_aggregates_of_one_pass(&broker.address, &values, port).await;
    stops_gracefully(job).await;
}

/// A config file in `dir` for the state `state` there, reading partitions 0 to 3 as `group`
/// outside the group protocol, with the changelog on or off: its path, and the topics.
fn switch_config(
    brokers: &str,
    dir: &std::path::Path,
    port: u16,
    (state, group): (&str, &str),
    changelog: bool,
) -> (std::path::PathBuf, customer_pulse::config::Topics) {
    let text = changelog_outside_the_group(config_text(brokers, &dir.join(state), port), group);
    let text = match changelog {
        true => text,
        false => text.replace("changelog = true", "changelog = false"),
    };
    let path = dir.join(format!("{state}-{changelog}.toml"));
    std::fs::write(&path, &text).unwrap();
    (path, Config::parse(&text, Vec::new()).unwrap().topics)
}

/// The events' values, their customers, and each customer's state after one pass over them.
fn one_pass(
    events: &[customer_pulse::generate::Generated],
) -> (
    Vec<serde_json::Value>,
    Vec<String>,
    std::collections::BTreeMap<String, serde_json::Value>,
) {
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let mut ids: Vec<String> = events.iter().map(|g| g.customer_id.clone()).collect();
    ids.sort();
    ids.dedup();
    let expected = replayed_states(&values, customer_pulse::replay::wall_clock_ms());
    (values, ids, expected)
}

/// The tests' config `text` with the changelog on, reading partitions 0 to 3 as `group`
/// outside the group protocol: a restart takes its partitions at once, not after Tansu's
/// coordinator has held its join for seconds.
fn changelog_outside_the_group(text: String, group: &str) -> String {
    text.replace(
        "cache_customers = 500",
        "cache_customers = 500\nchangelog = true",
    )
    .replace(
        "group_id = \"pulse-test\"",
        &format!("group_id = \"{group}\"\nassigned_partitions = [0, 1, 2, 3]"),
    )
}

/// Copies the directory `from` and what it holds to `to`.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Reads `topic` until every `wanted` record id arrived; returns the records by id, asserting
/// that a repeated id (after a kill) carries the same value.
async fn windows_arrived<const N: usize>(
    brokers: &str,
    topic: &str,
    wanted: [String; N],
) -> HashMap<String, Vec<u8>> {
    let messages = read_topic_until(brokers, topic, |messages| {
        let ids: HashSet<String> = messages
            .iter()
            .filter_map(|m| header(m, "record_id"))
            .collect();
        wanted.iter().all(|w| ids.contains(w))
    })
    .await;
    let mut records: HashMap<String, Vec<u8>> = HashMap::new();
    for message in &messages {
        let id = header(message, "record_id").unwrap();
        let value = message.payload().unwrap_or_default().to_vec();
        if let Some(earlier) = records.insert(id.clone(), value.clone()) {
            assert_eq!(earlier, value, "{id}: a repeated record is the same record");
        }
    }
    for w in &wanted {
        let mut near: Vec<&String> = records
            .keys()
            .filter(|k| k.starts_with(&w[..w.len() - 10]))
            .collect();
        near.sort();
        assert!(
            records.contains_key(w),
            "{w} arrived; the last of its kind: {:?}",
            &near[near.len().saturating_sub(3)..]
        );
    }
    records
}

/// Every window of length `step` with ids `<prefix><start>` from the first that arrived to
/// `last` arrived: nothing lost in between.
fn no_gap(records: &HashMap<String, Vec<u8>>, prefix: &str, last: i64, step: i64) {
    let starts: Vec<i64> = records
        .keys()
        .filter_map(|id| id.strip_prefix(prefix)?.parse().ok())
        .collect();
    let first = *starts.iter().min().unwrap();
    assert!(last > first, "{prefix}: the traffic spans closed windows");
    assert_eq!(
        starts.len() as i64,
        (last - first) / step + 1,
        "{prefix}: every window from the first to the last closed one"
    );
}
