//! Smoke: topics can be created and a keyed event published and read back through the broker.

use customer_pulse::kafka::{create_topics, publish_raw, RawMessage};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};

use crate::broker::Broker;

#[tokio::test(flavor = "multi_thread")]
async fn the_broker_takes_and_gives_back_a_message() {
    let broker = Broker::start();
    create_topics(&broker.address, &[("smoke", 3, false)])
        .await
        .unwrap();
    publish_raw(
        &broker.address,
        &[RawMessage {
            topic: "smoke".into(),
            key: Some(b"k".to_vec()),
            payload: b"v".to_vec(),
        }],
    )
    .await
    .unwrap();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "smoke")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["smoke"]).unwrap();
    let message = tokio::time::timeout(std::time::Duration::from_secs(30), consumer.recv())
        .await
        .expect("a message within 30 s")
        .unwrap();
    assert_eq!(message.payload(), Some(&b"v"[..]));
    assert_eq!(message.key(), Some(&b"k"[..]));
}
