//! A producer whose events (delivery reports, client errors) a thread of its own serves, as
//! rdkafka's `ThreadedProducer` does, but in waits of a second rather than 100 ms.
//!
//! Why not `ThreadedProducer`: rdkafka's `poll` hands librdkafka the time left in whole
//! milliseconds, rounded down, and then polls without waiting until the fraction left is gone.
//! Its thread waits 100 ms at a time, so it spun about 0.85 ms at the end of each wait (strace
//! of an idle job's polling thread, 2026-12-02): 0.9% of a core per producer, idle or busy, and
//! two thirds of an idle job's CPU with its three producers. Waiting a second at a time, the
//! spin is a tenth of that. A report is served as it comes, so deliveries are not slower.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};

/// How long the polling thread waits for an event at a time: how soon, at most, it sees that
/// its producer was dropped.
const POLL_WAIT: Duration = Duration::from_secs(1);

/// A producer's context that is told when its [`Polled`] is dropped. librdkafka goes on
/// reporting to it until the polling thread's last wait ends, up to [`POLL_WAIT`] later: a
/// broker gone in that time (the demo's embedded one, stopped as the demo ends) is no longer
/// the job's error to warn of (see [`Release`]).
pub trait Released: ProducerContext {
    /// Where the context notes that its [`Polled`] was dropped.
    fn release(&self) -> &Release;
}

/// A context's note that its client was let go: its producer dropped (see [`Released`]), or a
/// changelog reader's consumer closing.
#[derive(Default)]
pub struct Release(AtomicBool);

impl Release {
    pub(super) fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether a client error is a let-go client's last words: then it is logged at debug
    /// level here and is not to be warned of or counted.
    pub fn after(&self, client: &'static str, error: &KafkaError, reason: &str) -> bool {
        let released = self.0.load(Ordering::Relaxed);
        if released {
            tracing::debug!(client, error = %error, reason, "Kafka client error after the client was let go.");
        }
        released
    }

    /// A line of librdkafka's own log, at its level as rdkafka logs it, or at debug level once
    /// the client was let go: a connection cut as a client closes is logged by librdkafka as a
    /// failure (with SASL, "SASL authentication error" for a handshake under way), which is not
    /// the job's error to report.
    pub fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        use RDKafkaLogLevel as L;
        if self.0.load(Ordering::Relaxed) {
            tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message} (after the client was let go)");
            return;
        }
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {facility} {message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {facility} {message}"),
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {facility} {message}")
            }
            L::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}"),
        }
    }
}

/// A [`BaseProducer`] with a thread that serves its events. Dropped, the thread stops within
/// [`POLL_WAIT`] and the producer is destroyed there (librdkafka purges what it still holds and
/// waits for its own threads), not on the thread that dropped it. Until then its context still
/// hears from librdkafka, told first that it was let go ([`Released`]).
pub struct Polled<C: Released + 'static> {
    producer: Arc<BaseProducer<C>>,
    stop: Arc<AtomicBool>,
}

impl<C: Released + 'static> Polled<C> {
    /// Starts the thread, named `name`, that polls `producer`.
    pub fn start(producer: BaseProducer<C>, name: &str) -> std::io::Result<Polled<C>> {
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        std::thread::Builder::new().name(name.to_owned()).spawn({
            let (producer, stop) = (Arc::clone(&producer), Arc::clone(&stop));
            move || {
                while !stop.load(Ordering::Relaxed) {
                    producer.poll(POLL_WAIT);
                }
            }
        })?;
        Ok(Polled { producer, stop })
    }

    /// The producer, shared: for work on another thread (a warm-up) while this one sends.
    pub fn shared(&self) -> Arc<BaseProducer<C>> {
        Arc::clone(&self.producer)
    }
}

impl<C: Released + 'static> std::ops::Deref for Polled<C> {
    type Target = BaseProducer<C>;

    fn deref(&self) -> &BaseProducer<C> {
        &self.producer
    }
}

impl<C: Released + 'static> Drop for Polled<C> {
    fn drop(&mut self) {
        self.producer.context().release().set();
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseRecord, DeliveryResult};
    use rdkafka::ClientContext;
    use std::sync::mpsc;

    /// Reports each delivery's outcome on a channel, and notes when it was let go where the
    /// test still sees it once the producer is gone.
    struct Reports {
        outcomes: std::sync::Mutex<mpsc::Sender<bool>>,
        release: Arc<Release>,
    }

    impl ClientContext for Reports {}

    impl ProducerContext for Reports {
        type DeliveryOpaque = ();

        fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
            let _ = self.outcomes.lock().unwrap().send(result.is_ok());
        }
    }

    impl Released for Reports {
        fn release(&self) -> &Release {
            &self.release
        }
    }

    fn let_go(release: &Release) -> bool {
        let error = KafkaError::Global(rdkafka::types::RDKafkaErrorCode::AllBrokersDown);
        release.after("producer", &error, "1/1 brokers are down")
    }

    /// With no broker to deliver to, a record's report comes once its timeout passes: only a
    /// thread polling the producer hands it over. Dropped, the context is told at once and the
    /// thread lets the producer go.
    #[test]
    fn the_thread_serves_delivery_reports_and_stops_once_dropped() {
        let (tx, rx) = mpsc::channel();
        let release = Arc::new(Release::default());
        let producer: BaseProducer<Reports> = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:1")
            .set("message.timeout.ms", "200")
            .create_with_context(Reports {
                outcomes: std::sync::Mutex::new(tx),
                release: Arc::clone(&release),
            })
            .unwrap();
        let polled = Polled::start(producer, "test-poll").unwrap();
        polled
            .send(BaseRecord::<'_, [u8], [u8]>::to("t").payload(&b"x"[..]))
            .map_err(|(e, _)| e)
            .unwrap();
        let delivered = rx.recv_timeout(Duration::from_secs(30));
        assert_eq!(delivered, Ok(false), "a failed delivery reported");
        assert!(!let_go(&release), "not let go while held");
        let producer = Arc::downgrade(&polled.shared());
        drop(polled);
        assert!(let_go(&release), "told as it is dropped");
        let gone = (0..300).any(|_| {
            std::thread::sleep(Duration::from_millis(100));
            producer.upgrade().is_none()
        });
        assert!(gone, "the polling thread let the producer go");
    }

    #[test]
    fn a_release_turns_later_client_errors_into_debug_lines() {
        let release = Release::default();
        assert!(!let_go(&release));
        release.set();
        assert!(let_go(&release));
    }
}
