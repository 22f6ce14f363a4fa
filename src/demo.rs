//! The demo: one process, no setup. An embedded Kafka-protocol broker (librdkafka's in-process
//! mock cluster), a generator publishing live traffic with a complaint spike in one category a
//! minute in, the job itself (`pipeline::run`, unchanged), and a terminal summary read from what
//! the job exports: `/metrics` and the `customer.churn-risk` topic.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::format_millis;
use crate::generate::{generate, Generated, Rng, TrafficSpec};
use crate::replay::wall_clock_ms;

/// Event-time history published at once before the live traffic, so that the complaint
/// baselines have windows behind them when the spike comes.
const HISTORY_MS: i64 = 10 * 60_000;
/// When the complaint spike starts, how long it lasts and its category.
const SPIKE_AFTER_MS: i64 = 60_000;
const SPIKE_FOR_MS: i64 = 30_000;
const SPIKE_CATEGORY: &str = "delivery";
/// When the first injected churner's journey starts, and how far apart the next ones start.
const CHURN_FIRST_MS: i64 = 2_000;
const CHURN_EVERY_MS: i64 = 10_000;
/// A churner's journey: a complaint, a detractor survey this long after it, the cancellation
/// this long after it, then silence.
const CHURN_SURVEY_AFTER_MS: i64 = 2_000;
const CHURN_CANCEL_AFTER_MS: i64 = 4_000;
/// How an injected churner's event ids begin: [`churners`] finds them by it.
const CHURN_ID_PREFIX: &str = "churn-";

/// The most events the live traffic may hold: it is generated whole before it is published
/// (about 1 KB an event in memory), and the embedded broker keeps every event it is sent.
/// `demo --rate 100000000` took the machine's 24 GB and was killed by the kernel.
pub const MOST_LIVE_EVENTS: u64 = 2_000_000;

/// How many events the traffic of `rate` a second for `seconds`, after its ten minutes of
/// history, holds; refused, naming both, past [`MOST_LIVE_EVENTS`].
pub fn live_events(rate: u64, seconds: u64) -> anyhow::Result<u64> {
    let history = (HISTORY_MS / 1000) as u64;
    let events = rate.saturating_mul(seconds.saturating_add(history));
    anyhow::ensure!(
        events <= MOST_LIVE_EVENTS,
        "--rate {rate} for --seconds {seconds} (after {history} s of history) is {events} events, more than the {MOST_LIVE_EVENTS} the live traffic is generated with in memory: lower either, or publish more with `generate --brokers ... --events N --rate R`"
    );
    Ok(events)
}

/// Runs the demo for `seconds` (or until `shutdown`): `rate` events per second over `customers`.
pub async fn run(
    mut config: Config,
    customers: u64,
    rate: u64,
    seconds: u64,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // The HTTP address is held while the embedded broker takes a port of its own, so that it
    // cannot take that one; and an address in use is reported before anything starts.
    live_events(rate, seconds)?;
    let held = std::net::TcpListener::bind(config.listen_address)
        .with_context(|| {
            format!(
                "cannot listen on {} (another address: CUSTOMER_PULSE__HTTP__LISTEN_ADDRESS=127.0.0.1:9465)",
                config.listen_address
            )
        })?;
    let cluster = MockCluster::new(1).context("cannot start the embedded broker")?;
    let brokers = cluster.bootstrap_servers();
    let t = &config.topics;
    for (topic, partitions) in [
        (&t.interactions, config.partitions),
        (&t.orders, config.partitions),
        (&t.complaints, config.partitions),
        (&t.churn_risk, config.partitions),
        (&t.complaint_trends, config.partitions),
        (&t.segment_metrics, config.partitions),
        (&t.dead_letter, 1),
        (&t.changelog, config.partitions),
    ] {
        cluster
            .create_topic(topic, partitions, 1)
            .with_context(|| format!("cannot create topic {topic}"))?;
    }
    config.brokers = brokers.clone();
    // Minutes instead of hours, so that the spike shows within a couple of minutes.
    config.trends.window_ms = 60_000;
    config.allowed_lateness_ms = 5_000;
    config.idle_partition_ms = 2_000;
    show(format_args!(
        "Embedded broker at {brokers}; {customers} customers, {rate} events/s for {seconds} s."
    ));
    show(format_args!(
        "Ten minutes of history first, then live traffic; a complaint spike in `{SPIKE_CATEGORY}` starts {} s in (complaint windows are one minute here, so it shows a minute or two later).",
        SPIKE_AFTER_MS / 1000
    ));
    show(format_args!(
        "Metrics:   http://{}/metrics",
        config.listen_address
    ));
    show(format_args!(
        "Customer:  curl -H 'Authorization: Bearer demo-token-not-a-secret' http://{}/customers/c-0000001",
        config.listen_address
    ));

    let now = wall_clock_ms();
    let traffic = live_traffic(customers, rate.max(1), seconds, now, true);
    let churners = churners(&traffic);
    if churners.is_empty() {
        show(format_args!(
            "No churner is injected: the demo ends before the first could cancel ({} s in), or every customer with history has cancelled of its own.",
            (CHURN_FIRST_MS + CHURN_CANCEL_AFTER_MS) / 1000
        ));
    } else {
        show(format_args!(
            "{} churners are injected, one every {} s from {} s in: a complaint, a detractor survey, a cancellation, then silence.",
            churners.len(),
            CHURN_EVERY_MS / 1000,
            CHURN_FIRST_MS / 1000
        ));
    }
    let publisher = {
        let brokers = brokers.clone();
        let topics = config.topics.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                result = publish_traffic(&brokers, &topics, &[], &traffic, rate, now) => result,
                () = stop.cancelled() => Ok(()),
            }
        })
    };
    let risks = Arc::new(Mutex::new(HashMap::new()));
    let reader = tokio::spawn(read_risks(
        brokers.clone(),
        config.topics.churn_risk.clone(),
        risks.clone(),
        shutdown.clone(),
    ));
    let address = config.listen_address;
    drop(held);
    let mut job = tokio::spawn(crate::pipeline::run(config, shutdown.clone()));
    let started = std::time::Instant::now();
    let mut last_events = 0.0;
    let mut ended = None;
    while !shutdown.is_cancelled() && started.elapsed().as_secs() < seconds {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
            () = shutdown.cancelled() => break,
            // The job stopped on its own (it could not start, say): no summaries of nothing.
            result = &mut job => {
                ended = Some(result);
                break;
            }
        }
        let metrics = tokio::task::spawn_blocking(move || http_get(address, "/metrics"))
            .await
            .unwrap_or_default();
        let events = metric_sum(&metrics, "customer_pulse_events_total");
        let snapshot = risks.lock().map(|r| r.clone()).unwrap_or_default();
        print_summary(
            started.elapsed().as_secs(),
            (events - last_events) / 5.0,
            &metrics,
            &snapshot,
        );
        print_churners(&churners, &snapshot, wall_clock_ms());
        last_events = events;
    }
    shutdown.cancel();
    if let Ok(Err(e)) = publisher.await {
        tracing::error!(error = format!("{e:#}"), "The generator stopped.");
    }
    let _ = reader.await;
    let result = match ended {
        Some(result) => result,
        None => job.await,
    };
    result.context("the job panicked")??;
    // The job's clients go on threads of their own after it returns: its producers' polling
    // threads let them go within a second (`kafka::polled`), its consumers close beside it. The
    // embedded broker outlives them, so that none of them reports it gone.
    tokio::time::sleep(CLIENTS_GONE).await;
    drop(cluster);
    Ok(())
}

/// How long the embedded broker stays up after the job returned: a polled producer's one-second
/// wait and a margin.
const CLIENTS_GONE: Duration = Duration::from_millis(1_500);

/// Publishes the demo's traffic to `brokers`: ten minutes of history at once, then `seconds`
/// of live traffic at `rate` events per second with the complaint spike a minute in (also what
/// `generate --live-seconds` sends to any broker).
pub async fn publish_live(
    brokers: &str,
    topics: &crate::config::Topics,
    properties: &[(&str, &str)],
    customers: u64,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<()> {
    live_events(rate, seconds)?;
    let now = wall_clock_ms();
    let traffic = live_traffic(customers, rate.max(1), seconds, now, true);
    publish_traffic(brokers, topics, properties, &traffic, rate, now).await
}

/// Publishes `traffic` through a producer with librdkafka `properties` (security) on top: what
/// lies before `now` at once, the rest at `rate` events per second.
async fn publish_traffic(
    brokers: &str,
    topics: &crate::config::Topics,
    properties: &[(&str, &str)],
    traffic: &[Generated],
    rate: u64,
    now: i64,
) -> anyhow::Result<()> {
    use crate::kafka::publish_with;
    let split = traffic.partition_point(|g| event_time(g, now) <= now);
    let (history, live) = traffic.split_at(split);
    publish_with(brokers, topics, history, None, 500, properties).await?;
    publish_with(brokers, topics, live, Some(rate.max(1)), 500, properties).await
}

fn event_time(g: &Generated, otherwise: i64) -> i64 {
    g.value["occurred_at"]
        .as_str()
        .and_then(crate::event::parse_millis)
        .unwrap_or(otherwise)
}

/// The generator's traffic from ten minutes before `start` to `seconds` after it, `rate` per
/// second of event time, with (if `injected`) a burst of five high-severity `delivery`
/// complaints a second from a minute after `start`, for half a minute, and churners
/// (`churners`).
pub fn live_traffic(
    customers: u64,
    rate: u64,
    seconds: u64,
    start: i64,
    injected: bool,
) -> Vec<Generated> {
    let mut traffic = generate(&TrafficSpec {
        customers,
        events: rate * (seconds + (HISTORY_MS / 1000) as u64),
        seed: 11,
        start_ms: start - HISTORY_MS,
        step_ms: (1_000 / rate as i64).max(1),
    });
    // Exactly `rate` per second of event time, so that the live part keeps pace with the clock
    // (the generator's own steps are whole milliseconds around a mean).
    for (i, g) in traffic.iter_mut().enumerate() {
        let at = start - HISTORY_MS + i as i64 * 1_000 / rate as i64;
        g.value["occurred_at"] = json!(format_millis(at));
    }
    let mut rng = Rng::new(5);
    let burst = if injected {
        (SPIKE_FOR_MS / 200) as usize
    } else {
        0
    };
    for i in 0..burst {
        let at = start + SPIKE_AFTER_MS + i as i64 * 200;
        let customer = format!("c-{:07}", rng.below(customers.max(1)));
        traffic.push(Generated {
            customer_id: customer.clone(),
            type_name: "complaint.opened",
            value: json!({
                "event_id": format!("spike-{i}"),
                "customer_id": customer,
                "type": "complaint.opened",
                "occurred_at": format_millis(at),
                "complaint_id": format!("spike-{i}"),
                "category": SPIKE_CATEGORY,
                "severity": "high",
            }),
        });
    }
    if injected {
        inject_churners(&mut traffic, customers, seconds, start);
    }
    // Stable: each customer's own events keep their order.
    traffic.sort_by_key(|g| event_time(g, start));
    traffic
}

/// Makes churners of customers the live traffic would have kept: one in a hundred (at least
/// one, at most 60), one every `CHURN_EVERY_MS` from `CHURN_FIRST_MS` after `start` while the
/// traffic lasts. Each is a customer with history and no cancellation of its own: a high
/// complaint about billing, a detractor survey, its subscription cancelled for a competitor,
/// and none of its events after that.
fn inject_churners(traffic: &mut Vec<Generated>, customers: u64, seconds: u64, start: i64) {
    let cancelled: std::collections::HashSet<&str> = traffic
        .iter()
        .filter(|g| g.type_name == "subscription.cancelled")
        .map(|g| g.customer_id.as_str())
        .collect();
    let mut candidates: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for g in traffic.iter().take_while(|g| event_time(g, start) < start) {
        let id = g.customer_id.as_str();
        if !cancelled.contains(id) && seen.insert(id) {
            candidates.push(id.to_owned());
        }
    }
    let end = i64::try_from(seconds)
        .map_or(i64::MAX, |s| s.saturating_mul(1_000))
        .saturating_add(start);
    let wanted = (customers / 100).clamp(1, 60) as usize;
    let mut rng = Rng::new(6);
    let mut churners = Vec::new();
    for i in 0..wanted {
        let begins = start + CHURN_FIRST_MS + i as i64 * CHURN_EVERY_MS;
        if candidates.is_empty() || begins + CHURN_CANCEL_AFTER_MS > end {
            break;
        }
        let pick = rng.below(candidates.len() as u64) as usize;
        churners.push((candidates.swap_remove(pick), begins));
    }
    let silent: HashMap<&str, i64> = churners
        .iter()
        .map(|(id, begins)| (id.as_str(), *begins))
        .collect();
    traffic.retain(|g| {
        silent
            .get(g.customer_id.as_str())
            .is_none_or(|begins| event_time(g, *begins) < *begins)
    });
    for (i, (customer, begins)) in churners.into_iter().enumerate() {
        let journey = [
            (
                0,
                "complaint.opened",
                json!({"complaint_id": format!("{CHURN_ID_PREFIX}{i}"), "category": "billing", "severity": "high"}),
            ),
            (
                CHURN_SURVEY_AFTER_MS,
                "interaction.survey",
                json!({"score": 1}),
            ),
            (
                CHURN_CANCEL_AFTER_MS,
                "subscription.cancelled",
                json!({"reason": "competitor"}),
            ),
        ];
        for (step, (after, type_name, fields)) in journey.into_iter().enumerate() {
            let mut value = json!({
                "event_id": format!("{CHURN_ID_PREFIX}{i}-{step}"),
                "customer_id": customer,
                "type": type_name,
                "occurred_at": format_millis(begins + after),
            });
            if let (Value::Object(v), Value::Object(f)) = (&mut value, fields) {
                v.extend(f);
            }
            traffic.push(Generated {
                customer_id: customer.clone(),
                type_name,
                value,
            });
        }
    }
}

/// The injected churners of `traffic` and when each cancelled, in that order.
pub fn churners(traffic: &[Generated]) -> Vec<(String, i64)> {
    let mut churners: Vec<(String, i64)> = traffic
        .iter()
        .filter(|g| {
            g.type_name == "subscription.cancelled"
                && g.value["event_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with(CHURN_ID_PREFIX))
        })
        .map(|g| (g.customer_id.clone(), event_time(g, 0)))
        .collect();
    churners.sort_by_key(|(_, at)| *at);
    churners
}

/// Keeps the newest churn-risk record of each customer, read from the output topic.
async fn read_risks(
    brokers: String,
    topic: String,
    risks: Arc<Mutex<HashMap<String, Value>>>,
    stop: CancellationToken,
) {
    let consumer: StreamConsumer = match ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "demo-summary")
        .set("auto.offset.reset", "earliest")
        .create()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "The demo summary cannot read churn risks.");
            return;
        }
    };
    if consumer.subscribe(&[&topic]).is_err() {
        return;
    }
    loop {
        let message = tokio::select! {
            m = consumer.recv() => m,
            () = stop.cancelled() => return,
        };
        let Ok(message) = message else { continue };
        let key = message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned());
        let value = message
            .payload()
            .and_then(|p| serde_json::from_slice::<Value>(p).ok());
        if let (Some(key), Ok(mut risks)) = (key, risks.lock()) {
            match value {
                Some(v) => risks.insert(key, v),
                None => risks.remove(&key),
            };
        }
    }
}

/// Writes a line for the person watching. A reader that went away (`demo | head`) is not the
/// demo's failure: it goes on serving, where `println!` panicked.
fn show(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}

fn print_summary(elapsed: u64, rate: f64, metrics: &str, risks: &HashMap<String, Value>) {
    let customers = metric_sum(metrics, "customer_pulse_customers{");
    show(format_args!(
        "\n[{elapsed:>4} s] {rate:>7.0} events/s | {customers:.0} customers | {} dead letters",
        metric_sum(metrics, "customer_pulse_dead_letters_total")
    ));
    let mut complaints = Vec::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("customer_pulse_complaint_z_score{category=\"") {
            if let Some((category, z)) = rest.split_once("\"} ") {
                let spike = metrics.contains(&format!(
                    "customer_pulse_complaint_spike{{category=\"{category}\"}} 1"
                ));
                // Rounded first, so that -0.04 is not shown as -0.0.
                let z = (z.parse::<f64>().unwrap_or(0.0) * 10.0).round() / 10.0 + 0.0;
                complaints.push(format!(
                    "{category} z={z:.1}{}",
                    if spike { " SPIKE" } else { "" }
                ));
            }
        }
    }
    if !complaints.is_empty() {
        show(format_args!(
            "  complaint windows: {}",
            complaints.join(", ")
        ));
    }
    let mut top: Vec<&Value> = risks.values().collect();
    top.sort_by(|a, b| {
        let score = |v: &Value| v["score"].as_f64().unwrap_or(0.0);
        score(b).total_cmp(&score(a))
    });
    for risk in top.iter().take(5) {
        let reasons: Vec<&str> = risk["reasons"]
            .as_array()
            .map(|r| r.iter().filter_map(|x| x["code"].as_str()).collect())
            .unwrap_or_default();
        show(format_args!(
            "  {} risk {:.2} {} ({}) — {}",
            risk["customer_id"].as_str().unwrap_or("?"),
            risk["score"].as_f64().unwrap_or(0.0),
            risk["level"].as_str().unwrap_or("?"),
            risk["lifecycle"].as_str().unwrap_or("?"),
            if reasons.is_empty() {
                "no named reason".to_owned()
            } else {
                reasons.join(", ")
            }
        ));
    }
}

/// How many injected churners have cancelled by `now`, and how many of them the job's latest
/// churn-risk records call lost, with the reasons those records name.
fn print_churners(churners: &[(String, i64)], risks: &HashMap<String, Value>, now: i64) {
    let gone: Vec<&String> = churners
        .iter()
        .filter(|(_, cancelled_at)| *cancelled_at <= now)
        .map(|(id, _)| id)
        .collect();
    if gone.is_empty() {
        return;
    }
    let mut lost = 0;
    let mut reasons = std::collections::BTreeSet::new();
    for risk in gone.iter().filter_map(|id| risks.get(id.as_str())) {
        if risk["lifecycle"] == "lost" {
            lost += 1;
            for reason in risk["reasons"].as_array().into_iter().flatten() {
                reasons.extend(reason["code"].as_str());
            }
        }
    }
    show(format_args!(
        "  churners: {} of {} injected so far, {lost} of them lost in their churn-risk records{}{}",
        gone.len(),
        churners.len(),
        if reasons.is_empty() { "" } else { ", for " },
        reasons.into_iter().collect::<Vec<_>>().join(", "),
    ));
}

/// The sum of every series whose line starts with `prefix`.
fn metric_sum(metrics: &str, prefix: &str) -> f64 {
    let sum: f64 = metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    // The sum of nothing is -0.0, which the summary printed as "-0 customers".
    sum + 0.0
}

/// A plain HTTP GET on loopback; the body, or nothing.
fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(address) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_traffic_past_what_memory_holds_is_refused_naming_rate_and_seconds() {
        // The defaults: 200 a second for ten minutes, after ten minutes of history.
        assert_eq!(live_events(200, 600).unwrap(), 240_000);
        assert_eq!(live_events(1_000, 1_400).unwrap(), MOST_LIVE_EVENTS);
        for (rate, seconds) in [(100_000_000, 600), (1_000, 1_401), (u64::MAX, u64::MAX)] {
            let refused = live_events(rate, seconds).unwrap_err().to_string();
            assert!(
                refused.contains(&format!("--rate {rate} for --seconds {seconds}")),
                "{refused}"
            );
        }
    }

    #[test]
    fn churners_are_customers_with_history_who_complain_turn_detractors_cancel_and_fall_silent() {
        let start = 1_790_000_000_000;
        let traffic = live_traffic(500, 20, 60, start, true);
        let churners = churners(&traffic);
        // One in a hundred customers, one every 10 s from 2 s in, while the minute lasts.
        assert_eq!(churners.len(), 5);
        for (i, (id, cancelled_at)) in churners.iter().enumerate() {
            let begins = start + 2_000 + i as i64 * 10_000;
            assert_eq!(*cancelled_at, begins + 4_000);
            let own: Vec<&Generated> = traffic.iter().filter(|g| &g.customer_id == id).collect();
            assert!(
                own.iter().any(|g| event_time(g, 0) < start),
                "{id} has history"
            );
            let journey: Vec<&str> = own
                .iter()
                .filter(|g| event_time(g, 0) >= begins)
                .map(|g| g.type_name)
                .collect();
            assert_eq!(
                journey,
                [
                    "complaint.opened",
                    "interaction.survey",
                    "subscription.cancelled"
                ],
                "{id}: its journey, then nothing"
            );
            let cancellations = own
                .iter()
                .filter(|g| g.type_name == "subscription.cancelled")
                .count();
            assert_eq!(cancellations, 1, "{id} had not cancelled before");
        }
        let ids: std::collections::HashSet<&String> = churners.iter().map(|(id, _)| id).collect();
        assert_eq!(ids.len(), 5, "five customers");
        // A journey that would end after the traffic is not begun; with nothing injected, none.
        assert_eq!(
            super::churners(&live_traffic(500, 20, 6, start, true)).len(),
            1
        );
        assert_eq!(
            super::churners(&live_traffic(500, 20, 5, start, true)).len(),
            0
        );
        assert!(super::churners(&live_traffic(500, 20, 60, start, false)).is_empty());
    }

    #[test]
    fn a_sum_of_no_metric_is_zero_not_minus_zero() {
        assert_eq!(
            format!("{:.0}", metric_sum("", "customer_pulse_customers{")),
            "0"
        );
        let metrics = "customer_pulse_customers{segment=\"gold\"} 2\ncustomer_pulse_customers{segment=\"standard\"} 3\n";
        assert_eq!(metric_sum(metrics, "customer_pulse_customers{"), 5.0);
    }
}
