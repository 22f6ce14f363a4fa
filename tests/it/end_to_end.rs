//! The whole job against a real broker: generated traffic, malformed events and redeliveries in,
//! per-customer state through HTTP and records on the output topics out.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use customer_pulse::config::Config;
use customer_pulse::event::Stream;
use customer_pulse::generate::{generate, Generated, TrafficSpec};
use customer_pulse::kafka::{create_topics, publish, publish_raw, RawMessage};
use customer_pulse::processor::Processor;
use customer_pulse::replay::wall_clock_ms;
use customer_pulse::store::Store;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use tokio_util::sync::CancellationToken;

use crate::broker::{free_port, Broker};
use crate::catalogue::catalogue;
use crate::support::{expected_totals, file_record, totals_of};

pub const PARTITIONS: i32 = 4;
/// The bearer token the tests configure for `/customers/{id}`.
pub const TOKEN: &str = "test-token-0123456789";

pub fn config_text(brokers: &str, state: &std::path::Path, http_port: u16) -> String {
    format!(
        "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"pulse-test\"\n\
         [input]\npartitions = {PARTITIONS}\nmax_event_bytes = 4096\n\
         complaint_categories = [\"billing\", \"delivery\"]\ncancellation_reasons = [\"price\"]\n\
         [state]\npath = \"{}\"\ncache_customers = 500\n\
         [processing]\nmax_batch_events = 500\nmax_batch_wait_milliseconds = 20\n\
         [http]\nlisten_address = \"127.0.0.1:{http_port}\"\n\
         customer_lookup_token = \"{TOKEN}\"\n",
        state.display()
    )
}

/// The topics of the tests' configuration, for publishing.
pub fn test_topics() -> customer_pulse::config::Topics {
    Config::parse(
        &config_text("x", std::path::Path::new("/tmp"), 1),
        Vec::new(),
    )
    .unwrap()
    .topics
}

/// Each customer's state (as [`customer_state`] gives it) from the first of `ports` that serves
/// it: the instance that owns its partition.
pub fn served_states(ports: &[u16], ids: &[String]) -> BTreeMap<String, serde_json::Value> {
    ids.iter()
        .filter_map(|id| {
            let state = ports.iter().find_map(|port| customer_state(*port, id))?;
            Some((id.clone(), state))
        })
        .collect()
}

/// Every topic of the tests' configuration: `(name, partitions, compacted)`, the changelog last.
pub const TOPICS: [(&str, i32, bool); 8] = [
    ("customer.interactions", PARTITIONS, false),
    ("customer.orders", PARTITIONS, false),
    ("customer.complaints", PARTITIONS, false),
    ("customer.churn-risk", PARTITIONS, true),
    // Keyed by category and segment, but a history: not compacted (CONTRACT section 2).
    ("customer.complaint-trends", PARTITIONS, false),
    ("customer.segment-metrics", PARTITIONS, false),
    ("customer.events.dlq", 1, false),
    ("customer-pulse.customers-changelog", PARTITIONS, true),
];

pub async fn create_all_topics(brokers: &str) {
    create_topics(brokers, &TOPICS).await.unwrap();
}

pub fn traffic(events: u64, seed: u64) -> Vec<Generated> {
    generate(&TrafficSpec {
        customers: 120,
        events,
        seed,
        start_ms: wall_clock_ms() - 10 * 86_400_000,
        step_ms: 60_000,
    })
}

/// GET with the test bearer token.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_get_with(port, path, &format!("Authorization: Bearer {TOKEN}\r\n"))
}

/// A plain HTTP/1.1 GET on loopback with extra header lines (each ending in CRLF): the status
/// code and the body.
pub fn http_get_with(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// The sum of a counter over all its label sets, as `/metrics` shows it.
pub fn metric_sum(port: u16, name: &str) -> f64 {
    let Some((200, text)) = http_get(port, "/metrics") else {
        return 0.0;
    };
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Polls `done` every 200 ms for at most `limit`; whether it came true.
pub async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    true
}

/// A customer's totals as `/customers/{id}` reports them.
pub fn totals_via_http(port: u16, id: &str) -> Option<crate::support::Totals> {
    let s = customer_state(port, id)?;
    let int = |field: &str| s[field].as_i64();
    Some(crate::support::Totals {
        orders: int("orders")? as u32,
        revenue_minor: int("revenue_minor")?,
        margin_minor: int("margin_minor")?,
        complaints_opened: int("complaints_opened")? as u32,
        contacts: int("contacts")? as u32,
    })
}

/// Every record on `topic`, read from the beginning until `count` arrived (or 60 s passed).
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    count: usize,
) -> Vec<rdkafka::message::OwnedMessage> {
    read_topic_until(brokers, topic, |messages| messages.len() >= count).await
}

/// Records on `topic` from the beginning, until `enough` says so (or 60 s passed).
pub async fn read_topic_until(
    brokers: &str,
    topic: &str,
    mut enough: impl FnMut(&[rdkafka::message::OwnedMessage]) -> bool,
) -> Vec<rdkafka::message::OwnedMessage> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("reader-{topic}-{}", free_port()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !enough(&out) && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            out.push(m.detach());
        }
    }
    out
}

/// What `/customers/{id}` says was last published, for each of `customers`.
fn last_published(customers: &[String], http_port: u16) -> BTreeMap<String, serde_json::Value> {
    customers
        .iter()
        .map(|id| {
            let (_, body) = http_get(http_port, &format!("/customers/{id}")).unwrap();
            let body: serde_json::Value = serde_json::from_str(&body).unwrap();
            (id.clone(), body["last_published"].clone())
        })
        .collect()
}

/// The value of the last record per key on `customer.churn-risk`.
pub fn last_by_key(
    messages: &[rdkafka::message::OwnedMessage],
) -> BTreeMap<String, serde_json::Value> {
    let mut last = BTreeMap::new();
    for m in messages {
        let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
        let value = serde_json::from_slice(m.payload().unwrap_or(b"null")).unwrap();
        last.insert(key, value);
    }
    last
}

/// Whether a churn-risk record carries what `/customers/{id}` says was last published.
pub fn matches_last_published(record: &serde_json::Value, published: &serde_json::Value) -> bool {
    let codes: Vec<&serde_json::Value> = record["reasons"]
        .as_array()
        .map(|r| r.iter().map(|x| &x["code"]).collect())
        .unwrap_or_default();
    let as_of = customer_pulse::event::format_millis(published["as_of"].as_i64().unwrap_or(0));
    record["as_of"] == as_of.as_str()
        && record["level"] == published["level"]
        && record["lifecycle"] == published["lifecycle"]
        && published["reasons"]
            .as_array()
            .map(|r| r.iter().collect::<Vec<_>>())
            == Some(codes)
        && (record["score"].as_f64().unwrap_or(-1.0) - published["score"].as_f64().unwrap_or(0.0))
            .abs()
            < 1e-4
}

/// Reads `customer.churn-risk` until every customer's last record there matches what the
/// store last published for it (none lost, none stale), or 60 s pass; asserts it did.
pub async fn read_last_risk_records(
    brokers: &str,
    http_port: u16,
    customers: &[String],
) -> Vec<rdkafka::message::OwnedMessage> {
    let all_match = |published: &BTreeMap<String, serde_json::Value>,
                     messages: &[rdkafka::message::OwnedMessage]| {
        let last = last_by_key(messages);
        published.iter().all(|(id, p)| {
            last.get(id)
                .is_some_and(|record| matches_last_published(record, p))
        })
    };
    // A job with nothing left to read still fires timers once its partitions go idle (its
    // watermark moves on): a record may be published after the state was read. Read both
    // again then, at most three times.
    let mut published = last_published(customers, http_port);
    let mut risk = Vec::new();
    for _ in 0..3 {
        risk = read_topic_until(brokers, "customer.churn-risk", |m| all_match(&published, m)).await;
        if all_match(&published, &risk) {
            break;
        }
        published = last_published(customers, http_port);
    }
    let last = last_by_key(&risk);
    for (id, p) in &published {
        assert!(!p.is_null(), "{id}: a risk was published");
        let record = last.get(id).unwrap_or_else(|| panic!("{id}: no record"));
        if !matches_last_published(record, p) {
            // The customer's records in topic order, to show what arrived late or not at all.
            let history: Vec<String> = risk
                .iter()
                .filter(|m| m.key() == Some(id.as_bytes()))
                .map(|m| {
                    let v: serde_json::Value =
                        serde_json::from_slice(m.payload().unwrap_or(b"null")).unwrap();
                    format!("{}@{} {}", v["record_id"], m.offset(), v["as_of"])
                })
                .collect();
            panic!("{id}: {record} vs {p}; its records in topic order: {history:?}");
        }
    }
    risk
}

pub fn header(message: &rdkafka::message::OwnedMessage, name: &str) -> Option<String> {
    customer_pulse::kafka::header_text(message.headers()?, name)
}

/// The state `/customers/{id}` reports, with the remembered ids sorted (their order follows
/// arrival, which differs between topics interleaved differently).
pub fn customer_state(port: u16, id: &str) -> Option<serde_json::Value> {
    let (status, body) = http_get(port, &format!("/customers/{id}"))?;
    if status != 200 {
        return None;
    }
    let mut value: serde_json::Value = serde_json::from_str(&body).ok()?;
    let mut state = value["state"].take();
    sort_seen(&mut state);
    Some(state)
}

/// The reference run: every event folded from a file in one uninterrupted pass; each customer's
/// state as JSON with the remembered ids sorted, as [`customer_state`] gives it.
pub fn replayed_states(
    values: &[serde_json::Value],
    now: i64,
) -> BTreeMap<String, serde_json::Value> {
    let replayed = Store::in_memory();
    let mut processor = Processor::new(
        replayed.clone(),
        crate::support::settings_with_partitions(1_000, PARTITIONS),
    );
    let records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, v)| file_record(i as i64, &v.to_string()))
        .collect();
    processor.process(&records, now).unwrap();
    let mut by_id = BTreeMap::new();
    for p in 0..PARTITIONS {
        for state in replayed.customers(p, "", usize::MAX).unwrap() {
            let mut json = customer_pulse::http::state_json(&state);
            sort_seen(&mut json);
            by_id.insert(state.customer_id.clone(), json);
        }
    }
    by_id
}

pub fn sort_seen(state: &mut serde_json::Value) {
    if let Some(seen) = state["seen"].as_array_mut() {
        seen.sort_by(|a, b| a["fingerprint"].as_str().cmp(&b["fingerprint"].as_str()));
    }
}

fn topic_of(stream: Stream) -> &'static str {
    match stream {
        Stream::Interactions => "customer.interactions",
        Stream::Orders => "customer.orders",
        Stream::Complaints => "customer.complaints",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_folds_traffic_dead_letters_bad_input_and_ignores_redelivery() {
    let broker = Broker::start();
    create_all_topics(&broker.address).await;
    let events = traffic(3_000, 21);
    let now = wall_clock_ms();
    let bad = catalogue(now);
    let config_topics = test_topics();

    // Good events, then the malformed ones, then the first 300 good ones again.
    publish(&broker.address, &config_topics, &events, None, 1)
        .await
        .unwrap();
    let bad_messages: Vec<RawMessage> = bad
        .iter()
        .map(|b| RawMessage {
            topic: topic_of(b.stream).into(),
            key: b.key.map(|k| k.as_bytes().to_vec()),
            payload: b.payload.clone(),
        })
        .collect();
    publish_raw(&broker.address, &bad_messages, 1)
        .await
        .unwrap();
    publish(&broker.address, &config_topics, &events[..300], None, 1)
        .await
        .unwrap();
    let published = events.len() + bad.len() + 300;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = Config::parse(
        &config_text(&broker.address, &dir.path().join("state"), port),
        Vec::new(),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    let job = tokio::spawn(customer_pulse::pipeline::run(config, shutdown.clone()));

    let processed = wait_for(Duration::from_secs(90), || {
        metric_sum(port, "customer_pulse_events_total") as usize >= published
    })
    .await;
    assert!(processed, "every published event processed within 90 s");
    assert_eq!(
        metric_sum(port, "customer_pulse_events_total") as usize,
        published
    );
    assert_eq!(http_get(port, "/readyz").map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/healthz").map(|r| r.0), Some(200));
    assert_eq!(http_get(port, "/customers/nobody").map(|r| r.0), Some(404));

    // State through HTTP equals totals computed from the raw events, and a file replay.
    let values: Vec<serde_json::Value> = events.iter().map(|g| g.value.clone()).collect();
    let expected = expected_totals(&values);
    let by_id = replayed_states(&values, now);
    for (id, state) in &by_id {
        let state: customer_pulse::fold::CustomerState =
            serde_json::from_value(state.clone()).unwrap();
        assert_eq!(totals_of(&state), expected[id]);
    }
    assert_eq!(by_id.len(), expected.len());
    for (id, from_replay) in &by_id {
        // librdkafka placed the events with murmur2_random; the processor's own murmur2 must agree.
        let (_, body) = http_get(port, &format!("/customers/{id}")).unwrap();
        let reported: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            reported["partition"].as_i64(),
            Some(i64::from(customer_pulse::processor::partition_for(
                id.as_bytes(),
                PARTITIONS
            ))),
            "{id}: our murmur2 places the customer where the producer did"
        );
        let from_kafka = customer_state(port, id).unwrap_or_else(|| panic!("{id} is known"));
        assert_eq!(&from_kafka, from_replay, "{id}: Kafka and replay agree");
    }

    // Every malformed event is on the dead-letter topic with its reason and original bytes.
    let dead = read_topic(&broker.address, "customer.events.dlq", bad.len()).await;
    assert_eq!(dead.len(), bad.len());
    let mut want: Vec<(String, Vec<u8>)> = bad
        .iter()
        .map(|b| (b.reason.code().to_owned(), b.payload.clone()))
        .collect();
    let mut got: Vec<(String, Vec<u8>)> = dead
        .iter()
        .map(|m| {
            (
                header(m, "reason").unwrap(),
                m.payload().unwrap_or_default().to_vec(),
            )
        })
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert!(dead
        .iter()
        .all(|m| header(m, "source_topic").is_some() && header(m, "source_offset").is_some()));

    // Each customer's last churn-risk record is what the store says it last published.
    let customers: Vec<String> = expected.keys().cloned().collect();
    let risk = read_last_risk_records(&broker.address, port, &customers).await;
    let ids: HashSet<String> = risk
        .iter()
        .map(|m| header(m, "record_id").unwrap())
        .collect();
    assert_eq!(ids.len(), risk.len(), "each record has its own record_id");

    stop_job(shutdown, job).await;
}

/// Shuts the job down and checks that it stops, without an error, within 60 s.
pub async fn stop_job(
    shutdown: CancellationToken,
    job: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(60), job)
        .await
        .expect("the job stops within 60 s of shutdown")
        .unwrap()
        .unwrap();
}

/// The group assigns the interactions topic's partitions, and each brings the same partition of
/// the other inputs with it: an input topic with another partition count would leave partitions
/// unread, so the job refuses to start and names the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_refuses_input_topics_whose_partition_count_differs() {
    let broker = Broker::start();
    create_topics(
        &broker.address,
        &[
            ("customer.interactions", PARTITIONS, false),
            ("customer.orders", PARTITIONS + 2, false),
            ("customer.complaints", PARTITIONS, false),
        ],
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        config_text(&broker.address, &dir.path().join("state"), free_port()),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let status = status.unwrap_or_else(|| panic!("the job kept running:\n{stderr}"));
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "input.partitions is {PARTITIONS}, but customer.orders has {}",
            PARTITIONS + 2
        )),
        "the error names the topic and both counts:\n{stderr}"
    );
}
