//! The alerting rules and the dashboard in `deploy/` against the real tools and the real metrics:
//! `promtool` checks the rules and runs their unit tests, and every metric the rules and the
//! dashboard query is one the processor exports.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use customer_pulse::telemetry::Telemetry;

fn deploy(path: &str) -> PathBuf {
    crate::support::repo().join("deploy").join(path)
}

/// promtool is Debian's prometheus package.
fn promtool(args: &[&str]) {
    crate::support::tool_succeeds("promtool", args, &deploy("prometheus"));
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
}

/// The metrics, as the folded demo traffic leaves them, pass promtool's lint (`promtool check
/// metrics`: names, suffixes, units, help texts). It took `customer_pulse_segment_days_total`'s
/// `days` for a unit, and says so for any name that ends in one but seconds or bytes.
#[test]
fn the_exported_metrics_pass_promtool_s_lint() {
    use std::io::Write;

    let (_, telemetry, _) = fold_traffic(customer_pulse::replay::wall_clock_ms(), true);
    let metrics = telemetry.render();
    assert!(metrics.contains("customer_pulse_segment_metrics_records_total"));
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool runs (Debian's prometheus package)");
    lint.stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `customer_pulse_*` name in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("customer_pulse_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

fn exported() -> BTreeSet<String> {
    let telemetry = Telemetry::new();
    let mut names = BTreeSet::new();
    for name in telemetry.metric_names() {
        names.insert(name.clone());
        for suffix in ["_bucket", "_sum", "_count"] {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// The dashboard's queries: each panel's, then each annotation's.
fn dashboard_queries() -> Vec<String> {
    let dashboard = std::fs::read_to_string(deploy("grafana/customer-pulse.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut queries: Vec<String> = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            continue;
        }
        let targets = panel["targets"].as_array().unwrap();
        assert!(
            !targets.is_empty(),
            "{}: a panel without a query",
            panel["title"]
        );
        queries.extend(
            targets
                .iter()
                .map(|t| t["expr"].as_str().unwrap().to_owned()),
        );
    }
    for annotation in dashboard["annotations"]["list"].as_array().unwrap() {
        queries.push(annotation["expr"].as_str().unwrap().to_owned());
    }
    queries
}

#[test]
fn every_metric_the_alerts_and_the_dashboard_query_is_exported() {
    let exported = exported();
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let queries = dashboard_queries();
    for (source, text) in [("alerts.yml", rules), ("dashboard", queries.join("\n"))] {
        let used = metric_names_in(&text);
        assert!(used.len() >= 8, "{source} queries {used:?}");
        let unknown: Vec<&String> = used.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{source} queries metrics nobody exports: {unknown:?}"
        );
    }
}

/// Every query of the dashboard is PromQL that Prometheus accepts: promtool checks each as a
/// recording rule.
#[test]
fn every_dashboard_query_parses() {
    let dir = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n- name: dashboard\n  rules:\n");
    for (i, query) in dashboard_queries().iter().enumerate() {
        // A JSON string is a double-quoted YAML scalar.
        let query = serde_json::to_string(query).unwrap();
        rules.push_str(&format!(
            "  - record: dashboard:query_{i}\n    expr: {query}\n"
        ));
    }
    std::fs::write(dir.path().join("dashboard.yml"), rules).unwrap();
    crate::support::tool_succeeds("promtool", &["check", "rules", "dashboard.yml"], dir.path());
}

#[test]
fn every_alert_has_a_runbook_and_a_unit_test() {
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/alerts_test.yml")).unwrap();
    // Each rule's block runs from its `- alert:` line to the next one.
    let blocks: Vec<&str> = rules.split("- alert: ").skip(1).collect();
    assert!(blocks.len() >= 7, "{} alerts", blocks.len());
    for block in blocks {
        let name = block.split_whitespace().next().unwrap();
        let runbook = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("runbook: "))
            .unwrap_or_else(|| panic!("{name} has a runbook line"));
        assert!(runbook.len() > 40, "{name}: {runbook}");
        assert!(
            tests.contains(&format!("alertname: {name}")),
            "{name} has a promtool unit test"
        );
    }
}

/// Folds the demo generator's traffic at processor time `now` (ten minutes of history and two
/// and a half minutes more, ending half a minute before `now`'s whole minute, with or without
/// its burst of `delivery` complaints a minute in) through a processor with the demo's
/// one-minute complaint windows. The times are aligned to a whole minute, so the windows'
/// counts depend on nothing else. Returns the store, the metrics and the windows closed, in the
/// order they closed.
fn fold_traffic(
    now: i64,
    spike: bool,
) -> (
    customer_pulse::store::Store,
    std::sync::Arc<Telemetry>,
    Vec<customer_pulse::trends::ClosedWindow>,
) {
    use customer_pulse::processor::Processor;
    use customer_pulse::store::Store;

    let start = traffic_start(now);
    let traffic = customer_pulse::demo::live_traffic(300, 20, 150, start, spike);
    let events: Vec<String> = traffic.iter().map(|g| g.value.to_string()).collect();
    let store = Store::in_memory();
    let telemetry = std::sync::Arc::new(Telemetry::new());
    let mut processor = Processor::new(store.clone(), traffic_settings());
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, json)| crate::support::file_record(i as i64, json))
        .collect();
    let mut closed = Vec::new();
    for chunk in records.chunks(500) {
        let report = processor.process(chunk, now).unwrap();
        telemetry.record_batch(&report, 0.001, now);
        closed.extend(report.closed_windows);
    }
    (store, telemetry, closed)
}

const MINUTE: i64 = 60_000;

/// Where the traffic folded at `now` starts: three whole minutes before `now`'s minute.
fn traffic_start(now: i64) -> i64 {
    now.div_euclid(MINUTE) * MINUTE - 3 * MINUTE
}

/// The demo's one-minute complaint windows.
fn traffic_settings() -> customer_pulse::processor::ProcessorSettings {
    let mut settings = crate::support::settings(1_000);
    settings.trends.window_ms = MINUTE;
    settings.allowed_lateness_ms = 5_000;
    settings
}

/// The demo traffic folded at the wall clock's time, its `/metrics` served on loopback. Returns
/// the HTTP port and what stops the server.
async fn serve_folded_traffic(spike: bool) -> (u16, tokio_util::sync::CancellationToken) {
    use customer_pulse::http::{serve, HttpState};

    let (store, telemetry, _) = fold_traffic(customer_pulse::replay::wall_clock_ms(), spike);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = tokio_util::sync::CancellationToken::new();
    let state = HttpState {
        store,
        telemetry,
        partitions: 4,
        risk: std::sync::Arc::new(customer_pulse::risk::RiskSettings::default()),
        customer_token: None,
        owns: None,
        owner_of: None,
    };
    tokio::spawn(serve(listener, state, stop.clone()));
    (port, stop)
}

/// The value of the sample `series` (name and labels, as rendered) in the metrics text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.parse().ok())
}

/// A restarted processor shows the last window's spike flag and z-score from its first batch,
/// even one that changes nothing: the trends keep them. Before, they waited for the next window, and
/// a restart (a deployment) during a spike resolved the page.
#[test]
fn a_restarted_processor_shows_the_last_windows_spike_before_the_next_window_closes() {
    let now = 1_790_000_000_000;
    let (store, before, closed) = fold_traffic(now, true);
    let spike = "customer_pulse_complaint_spike{category=\"delivery\"}";
    let z_score = "customer_pulse_complaint_z_score{category=\"delivery\"}";
    let last = closed.iter().rfind(|w| w.category == "delivery").unwrap();
    assert!(last.spike);
    assert_eq!(sample(&before.render(), spike), Some(1.0));

    // Its first batch after the restart is an event folded before, delivered again: it
    // changes nothing.
    let mut restarted = customer_pulse::processor::Processor::new(store, traffic_settings());
    let traffic = customer_pulse::demo::live_traffic(300, 20, 150, traffic_start(now), true);
    let again = traffic[1_000].value.to_string();
    let report = restarted
        .process(&[crate::support::file_record(1_000_000, &again)], now)
        .unwrap();
    assert!(report.closed_windows.is_empty(), "no window closes");
    assert!(
        report
            .events
            .keys()
            .any(|(_, _, outcome)| *outcome == "duplicate"),
        "{:?}",
        report.events
    );
    let after = Telemetry::new();
    after.record_batch(&report, 0.001, now);
    let metrics = after.render();
    assert_eq!(sample(&metrics, spike), Some(1.0), "{metrics}");
    assert_eq!(sample(&metrics, z_score), Some(last.z_score));
}

/// The spike flag, the z-score and the count of windows are the minute windows'. The daily
/// roll-up that closes with a day's last window is a record of the trends topic, not a window
/// of the alert: run a minute after midnight, the folded traffic's spike window is the day's
/// last but one, and the roll-up that closes after it must not clear its flag.
#[test]
fn the_spike_metrics_follow_the_windows_not_the_daily_roll_up_closing_after_them() {
    use customer_pulse::trends::ClosedWindow;
    const DAY: i64 = 86_400_000;
    let midnight = 1_790_000_000_000 / DAY * DAY;
    let (_, telemetry, closed) = fold_traffic(midnight + 90_000, true);
    let delivery: Vec<&ClosedWindow> = closed.iter().filter(|w| w.category == "delivery").collect();
    let (rolled_up, windows): (Vec<&ClosedWindow>, Vec<&ClosedWindow>) =
        delivery.iter().partition(|w| w.is_daily());
    assert_eq!(rolled_up.len(), 1, "the day before closes: {delivery:?}");
    let last = windows.last().unwrap();
    assert!(
        last.spike,
        "the last minute window closed is the spike: {last:?}"
    );
    assert!(
        delivery.last().unwrap().is_daily() && !rolled_up[0].spike,
        "the calm daily roll-up closes after it"
    );
    let metrics = telemetry.render();
    let delivery_sample = |name: &str| sample(&metrics, &format!("customer_pulse_{name}"));
    assert_eq!(
        delivery_sample("complaint_spike{category=\"delivery\"}"),
        Some(1.0)
    );
    assert_eq!(
        delivery_sample("complaint_z_score{category=\"delivery\"}"),
        Some(last.z_score)
    );
    let spikes = windows.iter().filter(|w| w.spike).count();
    assert_eq!(
        delivery_sample("complaint_windows_total{category=\"delivery\",spike=\"true\"}"),
        Some(spikes as f64)
    );
    assert_eq!(
        delivery_sample("complaint_windows_total{category=\"delivery\",spike=\"false\"}"),
        Some((windows.len() - spikes) as f64)
    );
}

/// A Prometheus server on loopback, stopped when dropped.
struct PrometheusServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrometheusServer {
    /// Scrapes each target every second and evaluates `deploy/prometheus/alerts.yml` every
    /// second, with each rule's `for` shortened to 2 s (the promtool unit tests check the real
    /// durations; this test checks the expressions against what the processor really exports).
    fn start(targets: &[(&str, u16)]) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
        let rules: String = rules
            .lines()
            .map(|l| match l.trim_start().strip_prefix("for: ") {
                Some(_) => format!("{}for: 2s", &l[..l.len() - l.trim_start().len()]),
                None => l.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(dir.path().join("alerts.yml"), rules).unwrap();
        let scrape: String = targets
            .iter()
            .map(|(name, port)| {
                format!(
                    "  - job_name: {name}\n    scrape_interval: 1s\n    static_configs:\n      - targets: [\"127.0.0.1:{port}\"]\n"
                )
            })
            .collect();
        let config = format!(
            "global:\n  evaluation_interval: 1s\nrule_files:\n  - alerts.yml\nscrape_configs:\n{scrape}"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let port = crate::broker::free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus runs (Debian's prometheus package; tests/run.sh installs it)");
        PrometheusServer {
            child,
            port,
            _dir: dir,
        }
    }

    /// The `data` of a Prometheus API GET, or `None` while the server is not up.
    fn api(&self, path: &str) -> Option<serde_json::Value> {
        let (status, body) = crate::end_to_end::http_get_with(self.port, path, "")?;
        (status == 200)
            .then(|| serde_json::from_str::<serde_json::Value>(&body).ok())??
            .get("data")
            .cloned()
    }

    /// The alerts Prometheus holds now, as `(alertname, "job category", state)`.
    fn alerts(&self) -> Vec<(String, String, String)> {
        self.api("/api/v1/alerts")
            .and_then(|d| d["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|a| {
                let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
                (
                    text(&a["labels"]["alertname"]),
                    format!(
                        "{} {}",
                        text(&a["labels"]["job"]),
                        text(&a["labels"]["category"])
                    ),
                    text(&a["state"]),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_fires_the_complaint_spike_alert_on_the_generated_spike_only() {
    let (spike_port, stop_spike) = serve_folded_traffic(true).await;
    let (calm_port, stop_calm) = serve_folded_traffic(false).await;
    let prometheus = tokio::task::spawn_blocking(move || {
        PrometheusServer::start(&[("spike", spike_port), ("calm", calm_port)])
    })
    .await
    .unwrap();
    let spike_firing = |alerts: &[(String, String, String)]| {
        alerts.iter().any(|(name, job, state)| {
            name == "ComplaintSpike" && job == "spike delivery" && state == "firing"
        })
    };
    let mut fired = false;
    let mut seen = Vec::new();
    for _ in 0..60 {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        seen = prometheus.alerts();
        if spike_firing(&seen) {
            fired = true;
            break;
        }
    }
    assert!(
        fired,
        "ComplaintSpike fires for the spike within 60 s: {seen:?}"
    );
    // By now Prometheus has scraped the calm processor many times: the same generated traffic
    // without the burst, and it pages nobody, in no category.
    let calm_scraped = prometheus
        .api("/api/v1/query?query=customer_pulse_complaint_windows_total%7Bjob%3D%22calm%22%7D")
        .and_then(|d| d["result"].as_array().map(|r| !r.is_empty()))
        .unwrap_or(false);
    assert!(calm_scraped, "the calm processor was scraped");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let alerts = prometheus.alerts();
    assert!(
        !alerts
            .iter()
            .any(|(name, job, _)| name == "ComplaintSpike" && job.starts_with("calm ")),
        "no ComplaintSpike for the same traffic without the spike: {alerts:?}"
    );
    stop_spike.cancel();
    stop_calm.cancel();
}
