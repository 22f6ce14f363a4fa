//! Kafka over TLS (`kafka.security_protocol = "ssl"`): the binary's job against Tansu behind a
//! TLS front, trusting the test CA of `tests/tls/` through `kafka.ssl_ca_location`. The front
//! is socat (tests/run.sh installs it): Tansu 0.6.0's own TLS listener took no connection from
//! librdkafka. Until 2026-12-04 the build had no OpenSSL, and librdkafka refused the option at
//! start ("not supported in this build"): TLS, documented since issue 5, had never worked.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use customer_pulse::kafka::{create_topics_with, publish_with};

use crate::broker::{free_port, Broker};
use crate::end_to_end::{config_text, metric_sum, test_topics, traffic, wait_for, PARTITIONS};

fn tls_file(name: &str) -> String {
    format!("{}/tests/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// socat on a free loopback port, taking TLS connections with the test certificate and passing
/// their bytes on to `backend` in the clear.
struct TlsFront {
    child: Child,
    port: u16,
}

impl TlsFront {
    fn start(backend: u16) -> TlsFront {
        let port = free_port();
        let listen = format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,verify=0,cert={},key={}",
            tls_file("server.pem"),
            tls_file("server.key")
        );
        let child = Command::new("socat")
            .args([listen, format!("TCP:127.0.0.1:{backend}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat starts (tests/run.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "socat listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        TlsFront { child, port }
    }
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_consumes_and_produces_over_tls_trusting_the_configured_ca() {
    let backend = free_port();
    let front = TlsFront::start(backend);
    let broker = Broker::start_on(backend, front.port);
    let ca = tls_file("ca.pem");
    let tls = [
        ("security.protocol", "ssl"),
        ("ssl.ca.location", ca.as_str()),
    ];
    let topics: Vec<(&str, i32, bool)> = [
        "customer.interactions",
        "customer.orders",
        "customer.complaints",
        "customer.churn-risk",
        "customer.complaint-trends",
        "customer.segment-metrics",
        "customer.events.dlq",
    ]
    .into_iter()
    .map(|name| (name, PARTITIONS, false))
    .collect();
    create_topics_with(&broker.address, &topics, &tls)
        .await
        .unwrap();
    let events = traffic(300, 5);
    publish_with(&broker.address, &test_topics(), &events, None, 1, &tls)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("config.toml");
    let text = config_text(&broker.address, &dir.path().join("state"), port).replace(
        "[kafka]\n",
        &format!("[kafka]\nsecurity_protocol = \"ssl\"\nssl_ca_location = \"{ca}\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("job.log");
    let mut job = Command::new(env!("CARGO_BIN_EXE_customer-pulse"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Every event read and folded (consumed over TLS), and the outputs delivered (produced
    // over TLS): none waits in the outbox.
    let events_total = events.len() as f64;
    let done = wait_for(Duration::from_secs(90), || {
        metric_sum(port, "customer_pulse_events_total") == events_total
            && metric_sum(port, "customer_pulse_outbox_delivered_total") > 0.0
            && metric_sum(port, "customer_pulse_outbox_backlog_records") == 0.0
    })
    .await;
    let counted = metric_sum(port, "customer_pulse_events_total");
    let delivered = metric_sum(port, "customer_pulse_outbox_delivered_total");
    let status = Command::new("kill")
        .args(["-TERM", &job.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(job.wait().unwrap().success(), "a clean stop");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        done,
        "{counted} of {events_total} events counted, {delivered} outputs delivered, over TLS:\n{text}"
    );
}
