//! The deployment files in `deploy/` agree with the code: their configs parse, the topics the
//! compose file creates are the ones the job reads and writes (churn-risk and the changelog
//! compacted, the changelog partitioned like the input), the image
//! runs as a non-root user, and the probes name endpoints that exist.

use customer_pulse::config::Config;

fn read(path: &str) -> String {
    std::fs::read_to_string(crate::support::repo().join("deploy").join(path)).unwrap()
}

#[test]
fn the_container_and_kubernetes_configs_are_valid() {
    let token = vec![(
        "CUSTOMER_PULSE__HTTP__CUSTOMER_LOOKUP_TOKEN".to_owned(),
        "a-token-of-enough-length".to_owned(),
    )];
    for file in ["docker/config.toml", "k8s/config.toml"] {
        let config =
            Config::parse(&read(file), token.clone()).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        assert_eq!(config.listen_address.port(), 9464, "{file}");
        assert!(
            config.listen_address.ip().is_unspecified(),
            "{file}: reachable from outside"
        );
        assert!(
            config.state_path.starts_with("/var/lib/customer-pulse"),
            "{file}"
        );
    }
}

#[test]
fn compose_creates_the_topics_the_job_uses() {
    let compose = read("docker-compose.yml");
    let config = Config::parse(&read("docker/config.toml"), Vec::new()).unwrap();
    let t = &config.topics;
    let created: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("create "))
        .collect();
    for topic in [
        &t.interactions,
        &t.orders,
        &t.complaints,
        &t.churn_risk,
        &t.complaint_trends,
        &t.segment_metrics,
        &t.dead_letter,
        &t.changelog,
    ] {
        let line = created
            .iter()
            .find(|l| l.split_whitespace().next() == Some(topic.as_str()))
            .unwrap_or_else(|| panic!("compose creates {topic}"));
        let compacted = line.contains("cleanup.policy=compact");
        assert_eq!(
            compacted,
            *topic == t.churn_risk || *topic == t.changelog,
            "{topic}: compacted only churn-risk and the changelog"
        );
        if [&t.interactions, &t.orders, &t.complaints, &t.changelog].contains(&topic) {
            let partitions: i32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert_eq!(partitions, config.partitions, "{topic}: input.partitions");
        }
    }
}

#[test]
fn the_image_runs_as_a_non_root_user_and_the_probes_exist() {
    let dockerfile = read("docker/Dockerfile");
    let runtime = dockerfile.rsplit("FROM ").next().unwrap();
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets a user");
    assert_ne!(user.trim(), "0");
    assert_ne!(user.trim(), "root");
    let statefulset = read("k8s/statefulset.yaml");
    let router = std::fs::read_to_string(crate::support::repo().join("src/http.rs")).unwrap();
    for probe in ["/readyz", "/healthz"] {
        assert!(
            statefulset.contains(&format!("path: {probe}")),
            "{probe} probe"
        );
        assert!(
            router.contains(&format!(".route(\"{probe}\"")),
            "{probe} is served"
        );
    }
    assert!(statefulset.contains("runAsNonRoot: true"));
    assert!(statefulset.contains("prometheus.io/scrape: \"true\""));
}

#[test]
fn compose_starts_the_job_again_when_it_dies() {
    let compose = read("docker-compose.yml");
    let service: Vec<&str> = compose
        .lines()
        .skip_while(|l| *l != "  customer-pulse:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect();
    assert!(
        !service.is_empty(),
        "compose has the customer-pulse service"
    );
    let restart = service
        .iter()
        .find_map(|l| l.trim().strip_prefix("restart:"))
        .map(|policy| policy.trim().trim_matches('"'));
    assert!(
        matches!(restart, Some("on-failure" | "unless-stopped" | "always")),
        "customer-pulse restarts when it dies, not {restart:?}"
    );
}

/// Runs a validator in `deploy/`.
fn validates(program: &str, args: &[&str]) {
    crate::support::tool_succeeds(program, args, &crate::support::repo().join("deploy"));
}

#[test]
fn compose_accepts_the_compose_file() {
    // Compose's own schema check; needs no container engine (Debian's docker-compose package).
    validates(
        "docker-compose",
        &[
            "-p",
            "customer-pulse",
            "-f",
            "docker-compose.yml",
            "config",
            "-q",
        ],
    );
}

#[test]
fn the_kubernetes_manifests_pass_schema_validation() {
    // Every manifest against the Kubernetes API schemas, rejecting unknown fields
    // (kubernetes-validate from PyPI). kustomization.yaml is kustomize's, not the API's.
    let manifests: Vec<String> = std::fs::read_dir(crate::support::repo().join("deploy/k8s"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml") && name != "kustomization.yaml")
        .map(|name| format!("k8s/{name}"))
        .collect();
    assert!(manifests.len() >= 4, "{manifests:?}");
    let mut args = vec!["-m", "kubernetes_validate", "--strict", "--quiet"];
    args.extend(manifests.iter().map(String::as_str));
    validates("python3", &args);
}
