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
