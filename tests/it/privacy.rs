//! `/customers/{id}` serves personal data: off unless a token is configured, then only with the
//! bearer token; the operational endpoints stay open either way.

use std::sync::Arc;

use customer_pulse::config::Config;
use customer_pulse::fold::{Close, CustomerState, EarlyClose};
use customer_pulse::http::{serve, HttpState};
use customer_pulse::processor::partition_for;
use customer_pulse::store::{Commit, Store};
use customer_pulse::telemetry::Telemetry;
use tokio_util::sync::CancellationToken;

use crate::broker::free_port;
use crate::end_to_end::{http_get_with, TOKEN};

/// Serves a store holding customer `ann` with the given `[http]` extra lines; returns the port.
async fn start(http_extra: &str) -> (u16, CancellationToken) {
    start_owning(http_extra, None, None).await
}

/// A partition's owner as [`HttpState::owner_of`] tells it.
type OwnerOf = Arc<dyn Fn(i32) -> Option<String> + Send + Sync>;

/// As [`start`], with `owns` telling which state partitions this instance owns and `owner_of`
/// which instance owns the others.
async fn start_owning(
    http_extra: &str,
    owns: Option<Arc<dyn Fn(i32) -> bool + Send + Sync>>,
    owner_of: Option<OwnerOf>,
) -> (u16, CancellationToken) {
    let port = free_port();
    let text = format!(
        "[kafka]\nbrokers = \"unused:9092\"\n[input]\npartitions = 4\n[state]\npath = \"unused\"\n\
         [http]\nlisten_address = \"127.0.0.1:{port}\"\n{http_extra}"
    );
    let config = Config::parse(&text, Vec::new()).unwrap();
    let store = Store::in_memory();
    let mut ann = CustomerState::new("ann");
    ann.orders = 3;
    ann.early_closes.push(EarlyClose {
        id: "o-7".into(),
        at: 1_000,
        close: Close::Delivered,
    });
    ann.last_renewal_at = Some(2_000);
    let mut put = Commit::default();
    put.put_customer(partition_for(b"ann", 4), "ann".into(), Some(&ann.into()));
    store.commit(put).unwrap();
    let listener = tokio::net::TcpListener::bind(config.listen_address)
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let state = HttpState {
        store,
        telemetry: Arc::new(Telemetry::new()),
        partitions: 4,
        risk: Arc::new(config.risk.clone()),
        customer_token: config.customer_lookup_token.clone().map(Arc::new),
        owns,
        owner_of,
    };
    tokio::spawn(serve(listener, state, stop.clone()));
    (port, stop)
}

async fn get(port: u16, path: &str, headers: &str) -> u16 {
    let (path, headers) = (path.to_owned(), headers.to_owned());
    tokio::task::spawn_blocking(move || http_get_with(port, &path, &headers).unwrap().0)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_customer_lookup_is_off_unless_a_token_is_configured() {
    let (port, stop) = start("").await;
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    assert_eq!(get(port, "/customers/ann", &bearer).await, 404);
    assert_eq!(get(port, "/metrics", "").await, 200);
    assert_eq!(get(port, "/healthz", "").await, 200);
    stop.cancel();
}

#[tokio::test]
async fn with_a_token_the_lookup_needs_exactly_that_bearer_token() {
    let (port, stop) = start(&format!("customer_lookup_token = \"{TOKEN}\"\n")).await;
    let with = |token: &str| format!("Authorization: Bearer {token}\r\n");
    assert_eq!(get(port, "/customers/ann", &with(TOKEN)).await, 200);
    assert_eq!(get(port, "/customers/nobody", &with(TOKEN)).await, 404);
    assert_eq!(get(port, "/customers/ann", "").await, 401, "no token");
    let mut wrong = TOKEN.to_owned();
    wrong.replace_range(TOKEN.len() - 1.., "x");
    assert_eq!(
        get(port, "/customers/ann", &with(&wrong)).await,
        401,
        "last byte wrong"
    );
    assert_eq!(
        get(port, "/customers/ann", &with(&TOKEN[1..])).await,
        401,
        "a prefix"
    );
    assert_eq!(
        get(
            port,
            "/customers/ann",
            &format!("Authorization: Basic {TOKEN}\r\n")
        )
        .await,
        401,
        "another scheme"
    );
    assert_eq!(get(port, "/metrics", "").await, 200, "metrics stay open");
    assert_eq!(
        get(port, "/readyz", "").await,
        503,
        "not ready: no job runs"
    );
    stop.cancel();
}

/// The lookup shows the deliveries, cancellations and resolutions waiting for their order or
/// complaint, which the state's own JSON leaves out (they are stored apart from it): an order
/// that stays open although its delivery was read is explained there. The latest renewal's
/// time, also stored apart, is in the state.
#[tokio::test]
async fn the_lookup_shows_the_closes_waiting_for_their_order_or_complaint() {
    let (port, stop) = start(&format!("customer_lookup_token = \"{TOKEN}\"\n")).await;
    let headers = format!("Authorization: Bearer {TOKEN}\r\n");
    let (status, body) =
        tokio::task::spawn_blocking(move || http_get_with(port, "/customers/ann", &headers))
            .await
            .unwrap()
            .unwrap();
    assert_eq!(status, 200, "{body}");
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["early_closes"],
        serde_json::json!([{"id": "o-7", "at": 1_000, "close": "delivered"}])
    );
    assert_eq!(body["state"]["last_renewal_at"], 2_000);
    assert_eq!(body["state"]["orders"], 3);
    stop.cancel();
}

#[test]
fn a_token_file_is_read_and_the_token_never_shows_in_debug_output() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{TOKEN}\n")).unwrap();
    let text = format!(
        "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[http]\ncustomer_lookup_token_file = \"{}\"\n",
        file.display()
    );
    let config = Config::parse(&text, Vec::new()).unwrap();
    let token = config.customer_lookup_token.as_ref().unwrap();
    assert!(token.matches(TOKEN.as_bytes()));
    assert!(!format!("{config:?}").contains(TOKEN));
    // Refused, each with the field and what it takes: too short, a space, a control character.
    // Until 2026-12-05 the message said what `kafka.group_instance_id` takes (1 to 249
    // letters, digits, '.', '_' and '-'), which a token of 11 such characters met.
    for token in [
        "short-token",
        "sixteen or more chars",
        "sixteen-or-more\\u0007",
    ] {
        let text = format!(
            "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[http]\ncustomer_lookup_token = \"{token}\"\n"
        );
        let err = format!("{:#}", Config::parse(&text, Vec::new()).unwrap_err());
        assert!(
            err.contains("http.customer_lookup_token")
                && err.contains("at least 16 printable ASCII characters without spaces"),
            "{token:?}: {err}"
        );
    }
}

#[test]
fn after_erasure_no_key_or_value_in_rocksdb_holds_the_customer_id() {
    use customer_pulse::processor::Processor;
    use customer_pulse::store::{Backend, RocksBackend};

    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(RocksBackend::open(dir.path(), 8 << 20).unwrap());
    let store = Store::open(backend.clone()).unwrap();
    let mut processor = Processor::new(store.clone(), crate::support::settings(100));
    let id = "erin-9f3c";
    let event = |n: usize, kind: &str, fields: &str| {
        format!(
            r#"{{"event_id":"{id}-{n}","customer_id":"{id}","type":"{kind}","occurred_at":"2026-05-0{n}T10:00:00Z"{fields}}}"#
        )
    };
    let events = [
        event(1, "customer.registered", r#","referred_by":"zed""#),
        event(2, "order.placed", r#","order_id":"o1","amount_minor":500,"margin_minor":50"#),
        event(3, "complaint.opened", r#","complaint_id":"k1","category":"billing","severity":"high""#),
        event(4, "interaction.survey", r#","score":2"#),
        // Another customer keeps the watermark moving so that timers and windows fire.
        r#"{"event_id":"z1","customer_id":"zed","type":"interaction.contact","occurred_at":"2026-05-05T10:00:00Z","channel":"web","direction":"inbound"}"#.to_owned(),
        event(6, "customer.erased", ""),
        r#"{"event_id":"z2","customer_id":"zed","type":"interaction.contact","occurred_at":"2026-05-09T10:00:00Z","channel":"web","direction":"inbound"}"#.to_owned(),
    ];
    for (i, json) in events.iter().enumerate() {
        processor
            .process(
                &[crate::support::file_record(i as i64, json)],
                crate::catalogue::NOW_MS,
            )
            .unwrap();
    }
    // The tombstone is the last churn-risk record for the customer; then the outbox is delivered.
    let pending: Vec<_> = store.outbox(usize::MAX).unwrap();
    let last = pending
        .iter()
        .rfind(|(_, r)| r.topic == "customer.churn-risk" && r.key.as_deref() == Some(id.as_bytes()))
        .unwrap();
    assert_eq!(last.1.value, None, "a tombstone");
    let seqs: Vec<u64> = pending.iter().map(|(s, _)| *s).collect();
    store.acknowledge(&seqs).unwrap();

    let everything = backend.scan(&[], &[], None, usize::MAX).unwrap();
    assert!(
        everything.len() > 3,
        "zed's state, offsets, trends, timers remain"
    );
    let needle = id.as_bytes();
    for (key, value) in &everything {
        let holds = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            !holds(key) && !holds(value),
            "{} holds the id",
            String::from_utf8_lossy(key)
        );
    }
    // The complaint left the open backlog with the customer, and the customer left the
    // population: zed alone is counted from now on (no future aggregate counts the erased).
    let trends = store.trends().unwrap().unwrap();
    assert_eq!(trends.categories["billing"].open_backlog, 0);
    let segments = store.segments().unwrap().unwrap();
    let counted: i64 = segments
        .population
        .values()
        .map(|p| p.by_lifecycle.iter().sum::<i64>())
        .sum();
    assert_eq!(counted, 1, "{:?}", segments.population);
}

/// A customer's `referred_by` names its referrer: once the referrer is erased, its id must stay
/// in no other customer's state. The referred customer keeps the referrer's fingerprint only,
/// which is all the fold needs (to count a referral once).
#[test]
fn an_erased_referrer_s_id_stays_in_no_state_of_a_customer_it_referred() {
    use customer_pulse::processor::Processor;
    use customer_pulse::store::{Backend, RocksBackend};

    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(RocksBackend::open(dir.path(), 8 << 20).unwrap());
    let store = Store::open(backend.clone()).unwrap();
    let mut processor = Processor::new(store.clone(), crate::support::settings(100));
    let referrer = "ref-7c1d";
    let events = [
        format!(
            r#"{{"event_id":"r1","customer_id":"{referrer}","type":"order.placed","occurred_at":"2026-05-01T10:00:00Z","order_id":"o1","amount_minor":500,"margin_minor":50}}"#
        ),
        format!(
            r#"{{"event_id":"a1","customer_id":"amy","type":"customer.registered","occurred_at":"2026-05-02T10:00:00Z","referred_by":"{referrer}"}}"#
        ),
        format!(
            r#"{{"event_id":"r2","customer_id":"{referrer}","type":"customer.erased","occurred_at":"2026-05-03T10:00:00Z"}}"#
        ),
        r#"{"event_id":"a2","customer_id":"amy","type":"interaction.contact","occurred_at":"2026-05-05T10:00:00Z","channel":"web","direction":"inbound"}"#.to_owned(),
    ];
    let mut referrals = 0;
    for (i, json) in events.iter().enumerate() {
        let report = processor
            .process(
                &[crate::support::file_record(i as i64, json)],
                crate::catalogue::NOW_MS,
            )
            .unwrap();
        referrals += report
            .segment_flows
            .values()
            .map(|f| f.referrals)
            .sum::<u64>();
    }
    assert_eq!(referrals, 1, "the referral counts");
    let amy = store
        .customer(customer_pulse::processor::partition_for(b"amy", 4), "amy")
        .unwrap()
        .expect("amy stays");
    assert!(amy.referred_by.is_some(), "amy was referred");
    let pending: Vec<u64> = store
        .outbox(usize::MAX)
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    store.acknowledge(&pending).unwrap();
    let needle = referrer.as_bytes();
    for (key, value) in backend.scan(&[], &[], None, usize::MAX).unwrap() {
        let holds = |bytes: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(
            !holds(&key) && !holds(&value),
            "{} holds the referrer's id",
            String::from_utf8_lossy(&key)
        );
    }
}

/// The real binary at `RUST_LOG=info`, fed valid and malformed events that carry a marker in
/// every place a payload can hold text, and configured with a secret token: its log holds neither
/// the marker nor the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_holds_no_payload_and_no_secret() {
    use customer_pulse::kafka::{publish_raw, RawMessage};
    use std::process::{Command, Stdio};

    const MARKER: &str = "PAYLOADMARKER7f3a";
    const SECRET: &str = "SECRETTOKEN-0f9e8d7c6b5a";
    let broker = crate::broker::Broker::start();
    crate::end_to_end::create_all_topics(&broker.address).await;
    let at = customer_pulse::event::format_millis(customer_pulse::replay::wall_clock_ms() - 60_000);
    let message = |topic: &str, key: &str, payload: String| RawMessage {
        topic: topic.into(),
        key: Some(key.as_bytes().to_vec()),
        payload: payload.into_bytes(),
    };
    let messages = vec![
        message(
            "customer.interactions",
            "c-1",
            format!(
                r#"{{"event_id":"e-1","customer_id":"c-1","type":"subscription.cancelled","occurred_at":"{at}","reason":"{MARKER}"}}"#
            ),
        ),
        message(
            "customer.complaints",
            "c-1",
            format!(
                r#"{{"event_id":"e-2","customer_id":"c-1","type":"complaint.opened","occurred_at":"{at}","complaint_id":"{MARKER}","category":"{MARKER}","severity":"low"}}"#
            ),
        ),
        message("customer.orders", "c-2", format!("not json {MARKER}")),
        message(
            "customer.orders",
            "c-2",
            format!(
                r#"{{"event_id":"e-3","customer_id":"c-2","type":"{MARKER}","occurred_at":"{at}"}}"#
            ),
        ),
        message(
            "customer.orders",
            "c-3",
            format!(
                r#"{{"event_id":"e-4","customer_id":"{MARKER}","type":"order.placed","occurred_at":"{at}","order_id":"o","amount_minor":1,"margin_minor":0}}"#
            ),
        ),
        message(
            "customer.orders",
            "c-3",
            format!(
                r#"{{"event_id":"e-5","customer_id":"c-3","type":"order.placed","occurred_at":"{at}","order_id":"o","amount_minor":"{MARKER}","margin_minor":0}}"#
            ),
        ),
    ];
    publish_raw(&broker.address, &messages, 1).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let text = crate::end_to_end::config_text(&broker.address, &dir.path().join("state"), port)
        .replace(TOKEN, SECRET)
        .replace("group_id = \"pulse-test\"", "group_id = \"pulse-logs\"");
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let log_path = dir.path().join("stderr.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
        .args(["run", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let processed = crate::end_to_end::wait_for(std::time::Duration::from_secs(60), || {
        crate::end_to_end::metric_sum(port, "customer_pulse_events_total") >= 6.0
    })
    .await;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(processed, "all six events were taken in:\n{log}");
    assert!(status.success(), "{status}:\n{log}");
    assert!(log.contains("Consuming."), "the log is the job's:\n{log}");
    // An operator reading the log after a SIGTERM sees that the job stopped, and how.
    let stopped = log
        .lines()
        .rfind(|line| line.contains("INFO"))
        .unwrap_or_default();
    assert!(
        stopped.contains("Stopped.") && stopped.contains("seconds="),
        "the job's last line says it stopped:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "terminal colour codes in a log written to a file:\n{log}"
    );
    let starting = log
        .lines()
        .find(|line| line.contains("Starting."))
        .unwrap_or_else(|| panic!("no line says what starts:\n{log}"));
    for setting in [
        concat!("version=", env!("CARGO_PKG_VERSION")),
        "partitions=4",
        "changelog=false",
        "cache_customers=500",
        "max_batch_events=500",
        "compression=lz4",
    ] {
        assert!(
            starting.contains(setting),
            "{setting:?} not in {starting:?}"
        );
    }
    assert!(!log.contains(MARKER), "a payload reached the log:\n{log}");
    assert!(!log.contains(SECRET), "the secret reached the log:\n{log}");
}

#[test]
fn with_log_format_json_every_log_line_is_a_json_object() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    // No broker answers: the job logs its start and then waits for one; that is enough.
    let text =
        crate::end_to_end::config_text("127.0.0.1:9", &dir.path().join("state"), free_port());
    let config_path = dir.path().join("config.toml");
    std::fs::write(&config_path, &text).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
        .args(["run", "--log-format", "json", "--config"])
        .arg(&config_path)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let first = lines.next().map(Result::unwrap);
    let _ = child.kill();
    let _ = child.wait();
    let first = first.expect("a log line");
    let line: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["fields"]["message"], "Starting.", "{line}");
    assert_eq!(
        line["fields"]["version"],
        env!("CARGO_PKG_VERSION"),
        "{line}"
    );
    assert_eq!(line["fields"]["partitions"], 4, "{line}");
}

#[tokio::test]
async fn a_customer_whose_partition_another_instance_owns_is_refused_with_421() {
    let token = format!("customer_lookup_token = \"{TOKEN}\"\n");
    let bearer = format!("Authorization: Bearer {TOKEN}\r\n");
    let home = partition_for(b"ann", 4);
    // A customer nobody has folded yet, in a partition other than ann's.
    let nobody = (0..)
        .map(|n| format!("nobody-{n}"))
        .find(|id| partition_for(id.as_bytes(), 4) != home)
        .unwrap();
    let lookup = |port: u16, id: &str| {
        let (path, bearer) = (format!("/customers/{id}"), bearer.clone());
        async move {
            let (status, body) =
                tokio::task::spawn_blocking(move || http_get_with(port, &path, &bearer).unwrap())
                    .await
                    .unwrap();
            (status, serde_json::from_str(&body).unwrap_or_default())
        }
    };
    // Owning every partition but ann's, which another instance owns: the local copy may be
    // stale, so it is not served, and the owner is named.
    let owner_of: OwnerOf =
        Arc::new(move |p| (p == home).then(|| "http://pulse-1.pulse:9464".to_owned()));
    let (port, stop) =
        start_owning(&token, Some(Arc::new(move |p| p != home)), Some(owner_of)).await;
    let (status, body): (u16, serde_json::Value) = lookup(port, "ann").await;
    assert_eq!(status, 421);
    assert_eq!(body["partition"].as_i64(), Some(i64::from(home)));
    assert_eq!(body["owned_here"], false);
    assert_eq!(body["owner"], "http://pulse-1.pulse:9464");
    // Unknown in an owned partition: nobody has it.
    assert_eq!(lookup(port, &nobody).await.0, 404);
    stop.cancel();

    // Owning only ann's partition, with no way to tell who owns the others: a customer unknown
    // here may be known there, so it is 421 too, without an owner.
    let (port, stop) = start_owning(&token, Some(Arc::new(move |p| p == home)), None).await;
    assert_eq!(lookup(port, "ann").await.0, 200);
    let (status, body) = lookup(port, &nobody).await;
    assert_eq!(status, 421);
    assert_eq!(
        body["partition"].as_i64(),
        Some(i64::from(partition_for(nobody.as_bytes(), 4)))
    );
    assert_eq!(body["owner"], serde_json::Value::Null);
    stop.cancel();
}
