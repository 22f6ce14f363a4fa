//! The alerting rules and the dashboard in `deploy/` against the real tools and the real metrics:
//! `promtool` checks the rules and runs their unit tests, and every metric the rules and the
//! dashboard query is one the processor exports.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use customer_pulse::telemetry::Telemetry;

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn promtool(args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(deploy("prometheus"))
        .output()
        .expect("promtool runs (Debian's prometheus package; tests/run.sh installs it)");
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts_test.yml"]);
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

#[test]
fn every_metric_the_alerts_and_the_dashboard_query_is_exported() {
    let exported = exported();
    let rules = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
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
