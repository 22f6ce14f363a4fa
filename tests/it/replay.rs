//! The file source over real RocksDB: totals, resumption and idempotence of a backfill.

use std::io::Write;
use std::sync::Arc;

use customer_pulse::outbox::{DiscardSink, NdjsonSink};
use customer_pulse::processor::Processor;
use customer_pulse::replay::replay;
use customer_pulse::store::{RocksBackend, Store};
use customer_pulse::telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

use crate::support::{expected_totals, settings, totals_of};

/// The binary, logging warnings and errors only.
fn binary() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_customer-pulse"));
    command.env("RUST_LOG", "warn");
    command
}

fn write_file(dir: &std::path::Path, name: &str, lines: &[String]) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut file = std::fs::File::create(&path).unwrap();
    for line in lines {
        writeln!(file, "{line}").unwrap();
    }
    path
}

/// A RocksDB store at `path`, as a job opens it.
fn open_store(path: &std::path::Path) -> Store {
    Store::open(Arc::new(RocksBackend::open(path, 8 << 20).unwrap())).unwrap()
}

fn events(seed: u64) -> Vec<serde_json::Value> {
    customer_pulse::generate::generate(&customer_pulse::generate::TrafficSpec {
        customers: 200,
        events: 5_000,
        seed,
        start_ms: customer_pulse::replay::wall_clock_ms() - 10 * 86_400_000,
        step_ms: 60_000,
    })
    .into_iter()
    .map(|g| g.value)
    .collect()
}

fn all_states(store: &Store) -> Vec<customer_pulse::fold::CustomerState> {
    (0..4)
        .flat_map(|p| store.customers(p, "", usize::MAX).unwrap())
        .collect()
}

#[tokio::test]
async fn a_replay_matches_independent_totals_and_a_second_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let events = events(3);
    let mut lines: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    lines.insert(100, "this line is not an event".into());
    let path = write_file(dir.path(), "events.ndjson", &lines);
    let store = open_store(&dir.path().join("state"));
    let telemetry = Telemetry::new();

    let outputs = dir.path().join("outputs.ndjson");
    let mut sink = NdjsonSink::new(std::fs::File::create(&outputs).unwrap());
    let mut processor = Processor::new(store.clone(), settings(64));
    let first = replay(
        std::slice::from_ref(&path),
        &mut processor,
        &mut sink,
        &telemetry,
        700,
        false,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(first.lines_read, 5_001);
    assert_eq!(first.applied, 5_000);
    assert_eq!(first.rejected, 1);
    assert!(
        store.outbox(1).unwrap().is_empty(),
        "delivered records leave the outbox"
    );
    let written = std::fs::read_to_string(&outputs).unwrap();
    let records: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect();
    assert_eq!(first.outputs_delivered, records.len() as u64);
    // Every customer's first applied event publishes its risk; later ones only on a change.
    let risk_customers: std::collections::BTreeSet<String> = records
        .iter()
        .filter(|r| r["topic"] == "customer.churn-risk")
        .map(|r| r["key"].as_str().unwrap().to_owned())
        .collect();
    let customers: std::collections::BTreeSet<String> =
        expected_totals(&events).into_keys().collect();
    assert_eq!(risk_customers, customers);
    let dead: Vec<serde_json::Value> = written
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["topic"] == "customer.events.dlq")
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["headers"]["reason"], "not_json");
    assert_eq!(dead[0]["headers"]["source_offset"], "100");

    let expected = expected_totals(&events);
    let states = all_states(&store);
    assert_eq!(states.len(), expected.len());
    for state in &states {
        assert_eq!(totals_of(state), expected[&state.customer_id]);
    }

    // The same file again: the stored position skips every line.
    let mut processor = Processor::new(store.clone(), settings(64));
    let second = replay(
        std::slice::from_ref(&path),
        &mut processor,
        &mut DiscardSink,
        &telemetry,
        700,
        false,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(second.lines_skipped, 5_001);
    assert_eq!(second.applied, 0);
    assert_eq!(all_states(&store), states);

    // The same events in another file (a re-published copy): every one is a duplicate.
    let copy = write_file(dir.path(), "copy.ndjson", &lines);
    let third = replay(
        std::slice::from_ref(&copy),
        &mut processor,
        &mut DiscardSink,
        &telemetry,
        333,
        false,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(third.duplicates, 5_000);
    assert_eq!(third.applied, 0);
    // Each event looks its customer up, and a referral its referrer too (before the event is
    // known to be a duplicate). All are stored, and this processor's cache began empty, so
    // every customer was read back at least once.
    let referrals = events
        .iter()
        .filter(|e| {
            e["type"] == "customer.registered"
                && e["referred_by"].is_string()
                && e["referred_by"] != e["customer_id"]
        })
        .count() as u64;
    assert!(referrals > 0, "the traffic has referrals");
    let looked_up = third.customers;
    assert_eq!(looked_up.absent, 0);
    assert_eq!(looked_up.hit + looked_up.stored, 5_000 + referrals);
    assert!(
        looked_up.stored >= customers.len() as u64,
        "{} customers: {looked_up:?}",
        customers.len()
    );
    assert_eq!(all_states(&store), states);
}

#[tokio::test]
async fn an_interrupted_replay_resumes_where_it_stopped_with_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let events = events(4);
    let lines: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    let path = write_file(dir.path(), "events.ndjson", &lines);
    let open = |name: &str| open_store(&dir.path().join(name));
    let telemetry = Telemetry::new();

    let straight = open("straight");
    let mut processor = Processor::new(straight.clone(), settings(64));
    replay(
        std::slice::from_ref(&path),
        &mut processor,
        &mut DiscardSink,
        &telemetry,
        500,
        false,
        CancellationToken::new(),
    )
    .await
    .unwrap();

    // A cancelled token stops the replay after its first batch is committed.
    let stopped = CancellationToken::new();
    stopped.cancel();
    {
        let interrupted = open("interrupted");
        let mut processor = Processor::new(interrupted, settings(64));
        let partial = replay(
            std::slice::from_ref(&path),
            &mut processor,
            &mut DiscardSink,
            &telemetry,
            500,
            false,
            stopped,
        )
        .await
        .unwrap();
        assert_eq!(partial.applied, 500);
    }
    let reopened = open("interrupted");
    let mut processor = Processor::new(reopened.clone(), settings(64));
    let rest = replay(
        std::slice::from_ref(&path),
        &mut processor,
        &mut DiscardSink,
        &telemetry,
        500,
        false,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(rest.lines_skipped, 500);
    assert_eq!(rest.applied, 4_500);
    assert_eq!(all_states(&reopened), all_states(&straight));
}

/// The output records of a replay's `--out` file, with the ids of the churn-risk records an
/// event caused taken out: those name the file and line the event came from. Sorted, as the
/// order records are drained in is not the comparison.
fn outputs_without_file_ids(path: &std::path::Path) -> Vec<String> {
    let mut records: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|line| {
            let mut record: serde_json::Value = serde_json::from_str(line).unwrap();
            let from_a_line = record["headers"]["record_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("replay:"));
            if from_a_line {
                record["headers"]["record_id"] = serde_json::Value::Null;
                record["value"]["record_id"] = serde_json::Value::Null;
            }
            record.to_string()
        })
        .collect();
    records.sort();
    records
}

/// A backfill from per-topic exports: the interactions, orders and complaints of one traffic in
/// three files. Replayed together they are read in event-time order across the files, so no
/// event is late for a window or day another file's events would have closed, and the outputs
/// and states equal those of the same traffic replayed as one file in time order. Interrupted
/// after its first batch, the replay of the three resumes each file where it stopped, with the
/// same result.
#[tokio::test]
async fn per_topic_files_replayed_together_equal_one_file_in_time_order() {
    let dir = tempfile::tempdir().unwrap();
    let events = events(6);
    let lines: Vec<String> = events.iter().map(|e| e.to_string()).collect();
    let one = write_file(dir.path(), "events.ndjson", &lines);
    let topic_of = |line: &String| {
        let kind = serde_json::from_str::<serde_json::Value>(line).unwrap()["type"]
            .as_str()
            .unwrap()
            .to_owned();
        if kind.starts_with("order.") {
            "orders"
        } else if kind.starts_with("complaint.") {
            "complaints"
        } else {
            "interactions"
        }
    };
    let per_topic: Vec<std::path::PathBuf> = ["interactions", "orders", "complaints"]
        .into_iter()
        .map(|topic| {
            let mine: Vec<String> = lines
                .iter()
                .filter(|l| topic_of(l) == topic)
                .cloned()
                .collect();
            assert!(mine.len() > 100, "{topic}: {}", mine.len());
            write_file(dir.path(), &format!("{topic}.ndjson"), &mine)
        })
        .collect();
    let open = |name: &str| open_store(&dir.path().join(name));
    let telemetry = Telemetry::new();
    let run = |store: &Store, paths: Vec<std::path::PathBuf>, out: &str, stop: bool| {
        let mut processor = Processor::new(store.clone(), settings(64));
        let file = std::fs::File::create(dir.path().join(out)).unwrap();
        let telemetry = &telemetry;
        async move {
            let mut sink = NdjsonSink::new(file);
            let shutdown = CancellationToken::new();
            if stop {
                shutdown.cancel();
            }
            replay(
                &paths,
                &mut processor,
                &mut sink,
                telemetry,
                400,
                false,
                shutdown,
            )
            .await
            .unwrap()
        }
    };

    let single = open("single");
    let straight = run(&single, vec![one], "single.ndjson", false).await;
    assert_eq!((straight.applied, straight.late), (5_000, 0));
    let merged = open("merged");
    let together = run(&merged, per_topic.clone(), "merged.ndjson", false).await;
    assert_eq!((together.applied, together.late), (5_000, 0));
    assert_eq!(all_states(&merged), all_states(&single));
    let expected = outputs_without_file_ids(&dir.path().join("single.ndjson"));
    for topic in ["customer.complaint-trends", "customer.segment-metrics"] {
        assert!(
            expected
                .iter()
                .any(|r| r.contains(&format!("\"topic\":\"{topic}\""))),
            "the traffic closes {topic} windows"
        );
    }
    assert_eq!(
        outputs_without_file_ids(&dir.path().join("merged.ndjson")),
        expected
    );

    let resumed = open("resumed");
    let first = run(&resumed, per_topic.clone(), "first.ndjson", true).await;
    assert_eq!(first.applied, 400);
    let rest = run(&resumed, per_topic, "rest.ndjson", false).await;
    assert_eq!(
        (rest.lines_skipped, rest.applied, rest.late),
        (400, 4_600, 0)
    );
    assert_eq!(all_states(&resumed), all_states(&single));
    let both = dir.path().join("both.ndjson");
    let mut written = std::fs::read(dir.path().join("first.ndjson")).unwrap();
    written.extend(std::fs::read(dir.path().join("rest.ndjson")).unwrap());
    std::fs::write(&both, written).unwrap();
    assert_eq!(outputs_without_file_ids(&both), expected);
}

/// A replay's position is kept by the file's name, so another file written under the same
/// name (a daily export written over, or `/dev/stdin` again) had its lines up to the position
/// skipped as applied: lost. Such a file is refused before anything is folded, naming the
/// file; the same file grown by more lines resumes where it stopped.
#[tokio::test]
async fn another_file_under_a_replayed_files_name_is_refused_and_a_grown_one_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events(7).iter().map(|e| e.to_string()).collect();
    let path = write_file(dir.path(), "daily.ndjson", &lines[..2_000]);
    let store = open_store(&dir.path().join("state"));
    let telemetry = Telemetry::new();
    let run = |store: &Store| {
        let mut processor = Processor::new(store.clone(), settings(64));
        let path = path.clone();
        let telemetry = &telemetry;
        async move {
            replay(
                std::slice::from_ref(&path),
                &mut processor,
                &mut DiscardSink,
                telemetry,
                500,
                false,
                CancellationToken::new(),
            )
            .await
        }
    };
    assert_eq!(run(&store).await.unwrap().applied, 2_000);
    let before = all_states(&store);

    // The next day's export, written over the first.
    write_file(dir.path(), "daily.ndjson", &lines[2_000..4_000]);
    let refused = run(&store).await.unwrap_err().to_string();
    assert!(
        refused.contains("daily.ndjson: the state holds 2000 applied lines of a file of the same name that began with another line"),
        "{refused}"
    );
    assert_eq!(all_states(&store), before, "nothing was folded");

    // The first file grown by the rest: its 2,000 lines are skipped, the rest applied.
    write_file(dir.path(), "daily.ndjson", &lines);
    let grown = run(&store).await.unwrap();
    assert_eq!((grown.lines_skipped, grown.applied), (2_000, 3_000));
}

/// `--out` naming the file `--from` reads, by its path or through a link, is refused before
/// anything is written: creating it would have emptied the events before a line was read.
#[test]
fn a_replay_refuses_to_write_its_outputs_over_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events(5).iter().take(20).map(|e| e.to_string()).collect();
    let path = write_file(dir.path(), "events.ndjson", &lines);
    let before = std::fs::read(&path).unwrap();
    let linked = dir.path().join("linked.ndjson");
    std::fs::hard_link(&path, &linked).unwrap();
    for out in [
        path.clone(),
        dir.path().join(".").join("events.ndjson"),
        linked,
    ] {
        let run = binary()
            .arg("replay")
            .arg("--from")
            .arg(&path)
            .arg("--out")
            .arg(&out)
            .env("CUSTOMER_PULSE__STATE__PATH", dir.path().join("state"))
            .output()
            .expect("the binary runs");
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{}: {stderr}", out.display());
        assert!(stderr.contains("is a file --from reads"), "{stderr}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "the events are intact"
        );
    }
}

/// A state written with one `input.partitions` (or `trends.window_minutes`) is refused under
/// another, naming both, before anything is folded: customers are placed in partitions by that count, and under
/// another one each customer's next events were taken for a new customer's in another
/// partition (checked by hand with `replay`: 237 of 477 customers then stored twice), and
/// `score` left out the partitions past the count.
#[test]
fn a_state_is_refused_under_another_partition_count_or_window_length() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events(5).iter().map(|e| e.to_string()).collect();
    let first = write_file(dir.path(), "first.ndjson", &lines[..2_500]);
    let second = write_file(dir.path(), "second.ndjson", &lines[2_500..]);
    let state = dir.path().join("state");
    // The binary with `args` on the state, under a partition count and a window length.
    let run = |args: &[&std::ffi::OsStr], partitions: &str, window_minutes: &str| {
        binary()
            .args(args)
            .env("CUSTOMER_PULSE__STATE__PATH", &state)
            .env("CUSTOMER_PULSE__INPUT__PARTITIONS", partitions)
            .env("CUSTOMER_PULSE__TRENDS__WINDOW_MINUTES", window_minutes)
            .output()
            .expect("the binary runs")
    };
    let replay_with = |path: &std::path::Path, partitions: &str, window_minutes: &str| {
        run(
            &["replay".as_ref(), "--from".as_ref(), path.as_os_str()],
            partitions,
            window_minutes,
        )
    };
    let replay = |path: &std::path::Path, partitions: &str| replay_with(path, partitions, "60");
    let out = replay(&first, "6");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let customers = || {
        let store = open_store(&state);
        (0..8)
            .flat_map(|p| store.customers(p, "", usize::MAX).unwrap())
            .collect::<Vec<_>>()
    };
    let before = customers();
    let refused = |out: std::process::Output, says: &str| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{says}: {stderr}");
        assert!(stderr.contains(says), "{stderr}");
    };
    for partitions in ["4", "8"] {
        refused(
            replay(&second, partitions),
            &format!("places customers by 6 partitions, and input.partitions is {partitions}"),
        );
    }
    // Nor under complaint windows of another length: its open windows and baselines are of
    // an hour.
    for minutes in ["15", "120"] {
        refused(
            replay_with(&second, "6", minutes),
            &format!("complaint windows of 60 minutes, and trends.window_minutes is {minutes}"),
        );
    }
    // `score` reads no complaint windows: another length is no reason to refuse it. It is
    // refused under another partition count, which would leave customers out.
    let now = customer_pulse::event::format_millis(customer_pulse::replay::wall_clock_ms());
    let score = |partitions: &str, window_minutes: &str| {
        run(
            &["score".as_ref(), "--as-of".as_ref(), now.as_ref()],
            partitions,
            window_minutes,
        )
    };
    let scored = score("6", "15");
    assert!(
        scored.status.success(),
        "{}",
        String::from_utf8_lossy(&scored.stderr)
    );
    assert!(!scored.stdout.is_empty(), "customers scored");
    refused(
        score("4", "60"),
        "places customers by 6 partitions, and input.partitions is 4",
    );
    assert_eq!(customers(), before, "nothing was folded");
    let out = replay(&second, "6");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = customers();
    let ids: std::collections::BTreeSet<&str> =
        after.iter().map(|c| c.customer_id.as_str()).collect();
    assert_eq!(ids.len(), after.len(), "each customer in one partition");
}

/// A command whose reader goes away (`generate | head -1`) ends quietly with the status a
/// shell gives a process a broken pipe ended (141): before, it printed `error: Broken pipe`,
/// and `replay`'s summary panicked with a backtrace.
#[test]
fn a_reader_that_goes_away_ends_a_command_quietly() {
    use std::io::BufRead;
    let mut child = binary()
        .args(["generate", "--events", "200000"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"event_id\""), "{first}");
    // The reader is dropped here, with 199,999 events still to write.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
}

/// A replay reads a line no further than `max_event_bytes` (4,096 here) and its line break: a
/// longer one is dead-lettered as `too_large` with its first bytes and its whole length, so a
/// file with no line breaks is not read into memory whole. Before, each line was read whole.
#[tokio::test]
async fn a_line_longer_than_max_event_bytes_is_read_no_further() {
    let dir = tempfile::tempdir().unwrap();
    let events = events(7);
    // An event padded with spaces inside its object to `bytes`.
    let padded = |event: &serde_json::Value, bytes: usize| {
        let text = event.to_string();
        let body = &text[..text.len() - 1];
        format!("{body}{}}}", " ".repeat(bytes - text.len()))
    };
    let mut file = Vec::new();
    file.extend_from_slice(format!("{}\n", events[0]).as_bytes());
    file.extend_from_slice(format!("{}\r\n", padded(&events[1], 4_096)).as_bytes());
    file.extend_from_slice(format!("{}\r\n", padded(&events[2], 4_097)).as_bytes());
    file.extend_from_slice(format!("{}\n", padded(&events[3], 5_000_000)).as_bytes());
    file.extend_from_slice(format!("{}\n", events[4]).as_bytes());
    file.extend_from_slice(padded(&events[5], 10_000).as_bytes());
    let path = dir.path().join("events.ndjson");
    std::fs::write(&path, file).unwrap();
    let store = open_store(&dir.path().join("state"));
    let outputs = dir.path().join("outputs.ndjson");
    let mut sink = NdjsonSink::new(std::fs::File::create(&outputs).unwrap());
    let mut processor = Processor::new(store.clone(), settings(64));
    let summary = replay(
        std::slice::from_ref(&path),
        &mut processor,
        &mut sink,
        &Telemetry::new(),
        700,
        false,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!((summary.applied, summary.rejected), (3, 3), "{summary:?}");
    let dead: Vec<(String, String, serde_json::Value)> = std::fs::read_to_string(&outputs)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["topic"] == "customer.events.dlq")
        .map(|r| {
            assert_eq!(r["headers"]["reason"], "too_large");
            (
                r["headers"]["source_offset"].as_str().unwrap().to_owned(),
                r["headers"]["message"].as_str().unwrap().to_owned(),
                r["value"].clone(),
            )
        })
        .collect();
    let message =
        |bytes: usize| format!("event is {bytes} bytes, more than max_event_bytes = 4096");
    let cut = |event: &serde_json::Value, bytes: usize| {
        serde_json::Value::String(padded(event, bytes)[..4_098].to_owned())
    };
    assert_eq!(
        dead,
        [
            ("2".into(), message(4_097), events[2].clone()),
            ("3".into(), message(5_000_000), cut(&events[3], 5_000_000)),
            ("5".into(), message(10_000), cut(&events[5], 10_000)),
        ],
        "the line ending in \\r\\n kept whole (its value is JSON, written as such); the longer ones cut after 4,098 bytes (text)"
    );
    let customers: std::collections::BTreeSet<String> = all_states(&store)
        .into_iter()
        .map(|s| s.customer_id)
        .collect();
    for applied in [0, 1, 4] {
        let id = events[applied]["customer_id"].as_str().unwrap();
        assert!(customers.contains(id), "{id}");
    }
}

/// An erasure marker is kept while an event it keeps out could still be applied: once its
/// time is older than `input.max_event_age_days`, every such event is refused as
/// `ancient_timestamp` first, and the next run or replay to open the state forgets it. Before,
/// markers were kept for good (about 40 bytes of memory each).
#[test]
fn an_erasure_marker_is_forgotten_once_the_events_it_kept_out_are_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let now = customer_pulse::replay::wall_clock_ms();
    let at = |ms_ago: i64| customer_pulse::event::format_millis(now - ms_ago);
    let day = 86_400_000;
    let event = |id: &str, kind: &str, ms_ago: i64, extra: &str| {
        format!(
            r#"{{"event_id":"{id}","customer_id":"c-gone","type":"{kind}","occurred_at":"{}"{extra}}}"#,
            at(ms_ago)
        )
    };
    let history = write_file(
        dir.path(),
        "history.ndjson",
        &[
            event("e1", "customer.registered", 3 * day, ""),
            event("e2", "customer.erased", 3 * day - 60_000, ""),
        ],
    );
    let late = write_file(
        dir.path(),
        "late.ndjson",
        &[event(
            "e3",
            "order.placed",
            3 * day + 60_000,
            r#","order_id":"o1","amount_minor":100,"margin_minor":10"#,
        )],
    );
    let replay = |path: &std::path::Path, max_age_days: &str| {
        let out = binary()
            .args(["replay", "--from"])
            .arg(path)
            .env("CUSTOMER_PULSE__STATE__PATH", &state)
            .env("CUSTOMER_PULSE__INPUT__MAX_EVENT_AGE_DAYS", max_age_days)
            .output()
            .expect("the binary runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let markers = || open_store(&state).erasure_markers();
    replay(&history, "10");
    assert_eq!(markers(), 1);
    // Opened again under the same age, the marker stays, and keeps the order out.
    let kept = replay(&late, "10");
    assert!(kept.contains("1 of erased customers"), "{kept}");
    assert_eq!(markers(), 1);
    // Under one day, the marker is three days old: forgotten, and the order from before the
    // erasure, read again under another name, is refused as too old.
    let again = dir.path().join("late-again.ndjson");
    std::fs::copy(&late, &again).unwrap();
    let refused = replay(&again, "1");
    assert!(refused.contains("1 rejected"), "{refused}");
    assert_eq!(markers(), 0);
    let store = open_store(&state);
    assert!(
        (0..64).all(|p| store.customer(p, "c-gone").unwrap().is_none()),
        "the customer stays erased"
    );
}

/// A command whose standard error goes away (`... 2>&1 | head -1`) ends with its own status:
/// before, its messages there (a summary, a warning, the error that ended it) panicked on
/// the broken pipe, and the command ended with 101 whatever it had done.
#[test]
fn a_standard_error_that_goes_away_leaves_the_status_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events(6).iter().take(200).map(|e| e.to_string()).collect();
    let path = write_file(dir.path(), "events.ndjson", &lines);
    let state = dir.path().join("state");
    let run = |args: &[&std::ffi::OsStr]| {
        // Its reading end closed before the command starts.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        binary()
            .args(args)
            .env("CUSTOMER_PULSE__STATE__PATH", &state)
            .stdout(std::process::Stdio::null())
            .stderr(writer)
            .status()
            .expect("the binary runs")
            .code()
    };
    let no_file = dir.path().join("no-such-file.ndjson");
    assert_eq!(
        run(&["replay".as_ref(), "--from".as_ref(), no_file.as_os_str()]),
        Some(1),
        "an error it cannot say"
    );
    assert_eq!(
        run(&["replay".as_ref(), "--from".as_ref(), path.as_os_str()]),
        Some(0)
    );
    let now = customer_pulse::event::format_millis(customer_pulse::replay::wall_clock_ms());
    assert_eq!(
        run(&["score".as_ref(), "--as-of".as_ref(), now.as_ref()]),
        Some(0),
        "a summary it cannot say"
    );
}

/// A command whose output cannot be written (a full disk) fails, naming where it was writing:
/// "No space left on device" alone did not say which of its files or standard output.
#[test]
fn an_output_that_cannot_be_written_is_named() {
    let full = || {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap()
    };
    let generate = |args: &[&str], stdout: std::process::Stdio| {
        binary()
            .args(["generate", "--events", "100"])
            .args(args)
            .stdout(stdout)
            .output()
            .expect("the binary runs")
    };
    for (out, says) in [
        (
            generate(&["--out", "/dev/full"], std::process::Stdio::null()),
            "/dev/full",
        ),
        (generate(&[], full().into()), "standard output"),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "error: cannot write to {says}: No space left on device"
            )),
            "{stderr}"
        );
    }
}

/// With `--log-format json`, a command that fails says so in a JSON object too, with the log's
/// keys, so that every line a log shipper reads is one (before, a plain `error: ...` line);
/// without it, in a plain line.
#[test]
fn a_failure_in_the_json_log_format_is_a_json_line() {
    let missing = tempfile::tempdir().unwrap().path().join("missing.toml");
    let stderr = |format: &str| {
        let out = binary()
            .args(["run", "--log-format", format, "--config"])
            .arg(&missing)
            .env("RUST_LOG", "off")
            .output()
            .expect("the binary runs");
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let json = stderr("json");
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let failure = lines
        .iter()
        .find(|l| l["level"] == "ERROR")
        .unwrap_or_else(|| panic!("{json}"));
    assert!(failure["timestamp"].is_string(), "{failure}");
    let error = failure["fields"]["error"].as_str().unwrap();
    assert!(error.starts_with("cannot read config file"), "{failure}");
    assert!(stderr("text").starts_with("error: cannot read config file"));
}

/// A replay under a config with the changelog on says that it writes no changelog records:
/// a run with the changelog over its state would hold its customers there only from their next
/// change (before, it said nothing, and the changelog's absence showed at the next instance's
/// restore).
#[test]
fn a_replay_with_the_changelog_on_says_it_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events(3).iter().take(20).map(|e| e.to_string()).collect();
    let path = write_file(dir.path(), "events.ndjson", &lines);
    let replay = |changelog: &str, state: &str| {
        let out = binary()
            .args(["replay", "--from"])
            .arg(&path)
            .env("CUSTOMER_PULSE__STATE__PATH", dir.path().join(state))
            .env("CUSTOMER_PULSE__STATE__CHANGELOG", changelog)
            .output()
            .expect("the binary runs");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warning = "The replay writes no changelog records";
    assert!(replay("true", "on").contains(warning));
    assert!(!replay("false", "off").contains(warning));
}

/// A state path that is a directory of other files and no state (`state.path = "."` by
/// mistake), or a file, is refused before RocksDB writes a file there; an empty one, one holding only a
/// volume's `lost+found`, and one a first open killed early left, are taken.
#[test]
fn a_state_path_among_other_files_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events(8).iter().take(20).map(|e| e.to_string()).collect();
    let path = write_file(dir.path(), "events.ndjson", &lines);
    let replay_into = |state: &std::path::Path| {
        binary()
            .arg("replay")
            .arg("--from")
            .arg(&path)
            .env("CUSTOMER_PULSE__STATE__PATH", state)
            .output()
            .expect("the binary runs")
    };
    let crowded = dir.path().join("crowded");
    std::fs::create_dir(&crowded).unwrap();
    std::fs::write(crowded.join("notes.txt"), "mine").unwrap();
    let out = replay_into(&crowded);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("holds 1 other file(s) (notes.txt, ...) and no state"),
        "{stderr}"
    );
    let names: Vec<_> = std::fs::read_dir(&crowded).unwrap().collect();
    assert_eq!(names.len(), 1, "nothing written beside it");
    // A file (the events' own, say): creating the directory said only "File exists".
    let out = replay_into(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is a file, not a directory"), "{stderr}");
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(volume.join("lost+found")).unwrap();
    // What a first open killed before RocksDB wrote `CURRENT` may leave.
    let killed = dir.path().join("killed");
    std::fs::create_dir_all(killed.join(".options-a1b2c3")).unwrap();
    for name in ["LOCK", "LOG", "IDENTITY", "MANIFEST-000001"] {
        std::fs::write(killed.join(name), "").unwrap();
    }
    for state in [volume, killed, dir.path().join("new")] {
        let out = replay_into(&state);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // And again, now that it holds a state.
        assert!(replay_into(&state).status.success());
    }
}

/// Where the root filesystem is read-only (the Kubernetes manifest's), the state's volume is
/// the one place the job may write: the store opens without the system's temporary directory.
#[test]
fn the_store_opens_with_no_temporary_directory_to_write_to() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events(5).iter().take(100).map(|e| e.to_string()).collect();
    let path = write_file(dir.path(), "events.ndjson", &lines);
    let state = dir.path().join("state");
    let out = binary()
        .arg("replay")
        .arg("--from")
        .arg(&path)
        .env("CUSTOMER_PULSE__STATE__PATH", &state)
        .env("TMPDIR", dir.path().join("no-such-directory"))
        .output()
        .expect("the binary runs");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The summary says where the state is: a replay again skips what it holds.
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains(&format!("state: {}\n", state.display())),
        "{summary}"
    );
    let store = open_store(&state);
    assert!(!all_states(&store).is_empty(), "the events were folded");
}

/// `score` and `fit` read the state a job or a replay left: given a state path where there is
/// none (a typo, a volume not mounted), each says so and creates nothing, where before each
/// opened an empty store there and reported no customers as if that were the answer. On the
/// state a replay left, both run, and what `fit` prints can be configured.
#[test]
fn score_and_fit_refuse_a_state_path_with_no_state() {
    let dir = tempfile::tempdir().unwrap();
    let now = customer_pulse::event::format_millis(customer_pulse::replay::wall_clock_ms());
    let run = |command: &str, state: &std::path::Path| {
        binary()
            .arg(command)
            .arg("--as-of")
            .arg(&now)
            .env("CUSTOMER_PULSE__STATE__PATH", state)
            .output()
            .expect("the binary runs")
    };
    let missing = dir.path().join("no-state-here");
    for command in ["score", "fit"] {
        let out = run(command, &missing);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command}: {stderr}");
        assert!(
            stderr.contains(&format!("no state at {}", missing.display())),
            "{command}: {stderr}"
        );
        assert!(!missing.exists(), "{command} created {}", missing.display());
    }
    let lines: Vec<String> = events(5).iter().map(|e| e.to_string()).collect();
    let path = write_file(dir.path(), "events.ndjson", &lines);
    let state = dir.path().join("state");
    let replay = binary()
        .arg("replay")
        .arg("--from")
        .arg(&path)
        .env("CUSTOMER_PULSE__STATE__PATH", &state)
        .output()
        .expect("the binary runs");
    assert!(replay.status.success());
    for command in ["score", "fit"] {
        let out = run(command, &state);
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // What `fit` prints, its comments and caveats included, is a `[churn]` section the config
    // takes, however few customers it had.
    let section = String::from_utf8(run("fit", &state).stdout).unwrap();
    assert!(section.contains("# caveat:"), "five events: {section}");
    let config = format!("[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n{section}");
    customer_pulse::config::Config::parse(&config, Vec::new())
        .unwrap_or_else(|e| panic!("{e:#}\n{section}"));
}

/// A replay whose `--out` cannot be written (a full disk) stops, says how many output records
/// it could not write, and fails; the records stay in the state's outbox, and the next replay
/// writes them first, also when it has nothing new to apply. Before, the replay went on and
/// ended with success, "0 output records", and a next replay with nothing new wrote none of
/// them.
#[test]
fn outputs_that_cannot_be_written_fail_the_replay_and_go_out_with_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events(5).iter().map(|e| e.to_string()).collect();
    let replay = |file: &std::path::Path, state: &str, out: &std::path::Path| {
        binary()
            .args(["replay", "--from"])
            .arg(file)
            .arg("--out")
            .arg(out)
            .env("CUSTOMER_PULSE__STATE__PATH", dir.path().join(state))
            .env("CUSTOMER_PULSE__PROCESSING__MAX_BATCH_EVENTS", "1000")
            .output()
            .expect("the binary runs")
    };
    let succeeded = |out: &std::process::Output| {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let full = std::path::Path::new("/dev/full");
    let failed = |out: &std::process::Output| {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        assert!(
            stderr.contains("output records could not be written to /dev/full"),
            "{stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let count = |path: &std::path::Path| std::fs::read_to_string(path).unwrap().lines().count();

    // Five batches: the replay stops after the first, and the next writes its outputs first,
    // then the rest.
    let five = write_file(dir.path(), "five.ndjson", &lines);
    let clean = dir.path().join("clean.ndjson");
    succeeded(&replay(&five, "clean", &clean));
    let stdout = failed(&replay(&five, "stopped", full));
    assert!(stdout.contains(": 1000 applied"), "{stdout}");
    let rest = dir.path().join("rest.ndjson");
    let stdout = succeeded(&replay(&five, "stopped", &rest));
    assert!(
        stdout.contains(&format!(": {} applied", lines.len() - 1_000)),
        "{stdout}"
    );
    assert_eq!(count(&rest), count(&clean));

    // One batch, all of it applied: the next replay has nothing new to apply, and writes
    // what was left all the same.
    let one = write_file(dir.path(), "one.ndjson", &lines[..800]);
    let clean = dir.path().join("clean-one.ndjson");
    succeeded(&replay(&one, "clean-one", &clean));
    failed(&replay(&one, "left", full));
    let last = dir.path().join("last.ndjson");
    let stdout = succeeded(&replay(&one, "left", &last));
    assert!(stdout.contains(": 0 applied"), "{stdout}");
    assert!(count(&clean) > 100);
    assert_eq!(count(&last), count(&clean));
}

/// A compressed file is refused before anything is read from it, naming its compression: read
/// as NDJSON, a gzip file of 1,000 events was 85 lines of garbage, each dead-lettered as
/// `not_json`, and the replay ended as a success.
#[test]
fn a_compressed_file_is_refused_naming_its_compression() {
    let dir = tempfile::tempdir().unwrap();
    let lines: Vec<String> = events(5)
        .iter()
        .take(1_000)
        .map(|e| e.to_string())
        .collect();
    let path = write_file(dir.path(), "events.ndjson", &lines);
    let gzip = std::process::Command::new("gzip")
        .arg("-k")
        .arg(&path)
        .status()
        .expect("gzip runs");
    assert!(gzip.success());
    let state = dir.path().join("state");
    let out = binary()
        .args(["replay", "--from"])
        .arg(dir.path().join("events.ndjson.gz"))
        .env("CUSTOMER_PULSE__STATE__PATH", &state)
        .output()
        .expect("the binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("events.ndjson.gz is gzip-compressed, and replay reads NDJSON"),
        "{stderr}"
    );
    let store = open_store(&state);
    assert_eq!(store.offset("replay:events.ndjson.gz", 0).unwrap(), None);
    assert!(all_states(&store).is_empty(), "nothing folded");
}
