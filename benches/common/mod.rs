//! What the benchmarks share. Each includes this module; not every one uses every item.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

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

/// The reference reader: a bare librdkafka consumer assigned partitions `0..partitions` of every
/// topic from the beginning, timed until it has read `records`.
pub fn raw_read(brokers: &str, topics: &[&str], partitions: i32, records: u64) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "bench-raw")
        .set("enable.auto.commit", "false")
        // As customer-pulse's consumer: Tansu holds every fetch for about half of this.
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
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

/// The sum of every series of metric `name` on the processor's `/metrics` at `port`; 0 when it
/// does not answer.
pub fn metric_sum(port: u16, name: &str) -> f64 {
    metric_lines(port, name).iter().map(|(_, v)| v).sum()
}

/// The series of metric `name` (its exact name, then labels or a space) as `(labels, value)`.
pub fn metric_lines(port: u16, name: &str) -> Vec<(String, f64)> {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    let _ = write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series[name.len()..].to_owned(), value.parse::<f64>().ok()?))
        })
        .collect()
}

/// The multi-threaded runtime a benchmark's `main` runs in.
pub fn runtime() -> tokio::runtime::Runtime {
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
    ]
}
