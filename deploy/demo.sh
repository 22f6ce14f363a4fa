#!/usr/bin/env bash
# The demo: one command, no setup. Installs what is missing, builds, and runs `customer-pulse demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/setup.sh
say "Building customer-pulse (release; the first build compiles RocksDB and librdkafka)"
cargo build --release --quiet
say "Running the demo; Ctrl-C stops it"
exec "$CARGO_TARGET_DIR/release/customer-pulse" demo "$@"
