#!/usr/bin/env bash
# Every test: format, lints, unit, integration (real RocksDB, a real Kafka-protocol broker on
# loopback). Installs what is missing first. Nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/setup.sh
need_tansu
# promtool and the Prometheus server: the alert rules' unit tests and the end-to-end alert test.
need_debian prometheus
# Compose's and Kubernetes' own validators for deploy/ (neither needs a container engine).
need_debian docker-compose
need_pip kubernetes-validate==1.37.0
# socat: the TLS front of the Kafka TLS test (Tansu 0.6.0's own TLS took no librdkafka client).
need_debian socat
# The peer stream processor of benches/peers.rs, whose smoke run is part of the tests.
need_pip quixstreams==3.28.1
say "Checking formatting"
cargo fmt --all -- --check
say "Running clippy"
cargo clippy --all-targets --quiet -- -D warnings
say "Checking the code's documentation (every link resolves)"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --document-private-items --quiet
say "Running the tests"
cargo test --all-targets
