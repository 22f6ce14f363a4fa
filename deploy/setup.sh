#!/usr/bin/env bash
# Installs what customer-pulse needs to build and test on a Debian machine that has only the Rust
# toolchain, saying what it does; what is already there is left alone. Sourced by
# deploy/demo.sh and tests/run.sh.
set -euo pipefail

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Reuse one cargo target directory across runs and sessions: the first build of RocksDB and
# librdkafka takes about 15 minutes on 2 cores; later ones take seconds.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/customer-pulse/target}"
mkdir -p "$CARGO_TARGET_DIR"

need_debian() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "Installing Debian packages: ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
}

# libclang-dev: RocksDB's bindings are generated at build time. The rest: a C/C++ toolchain,
# make and perl for librdkafka's configure, zlib, and OpenSSL for Kafka's TLS and SASL/SCRAM.
need_debian libclang-dev g++ make perl pkg-config zlib1g-dev libssl-dev curl

# RocksDB computes the CRC32C of its write-ahead log and blocks with the CPU's SSE 4.2 and
# PCLMUL instructions only when it is compiled for them, and librocksdb-sys asks the C++
# compiler for them only when rustc targets them, which a default build does not. Where this
# machine has both, the compiler is told so: a replay takes about 7% less CPU (README,
# Performance). The binary then needs a CPU with both, as x86-64 servers since about 2010 have.
if [ "$(uname -m)" = x86_64 ] && grep -qw sse4_2 /proc/cpuinfo && grep -qw pclmulqdq /proc/cpuinfo; then
    case " ${CXXFLAGS:-} " in
        *" -msse4.2 "*) ;;
        *)
            export CXXFLAGS="${CXXFLAGS:+$CXXFLAGS }-msse4.2 -mpclmul"
            say "Building RocksDB for this CPU's SSE 4.2 and PCLMUL (CRC32C in hardware): CXXFLAGS=\"$CXXFLAGS\""
            ;;
    esac
fi

# RocksDB counts what every operation did, per thread (its perf and I/O-stats contexts),
# behind thread-local variables that each memtable insert and read touches, whatever the perf
# level: 1.3% of a replay's instructions went to their initialisation checks alone.
# customer-pulse never reads them, so they are compiled out, as RocksDB's own headers allow.
case " ${CXXFLAGS:-} " in
    *" -DNPERF_CONTEXT "*) ;;
    *)
        export CXXFLAGS="${CXXFLAGS:+$CXXFLAGS }-DNPERF_CONTEXT -DNIOSTATS_CONTEXT"
        say "Building RocksDB without its per-thread perf and I/O-stats counters: CXXFLAGS=\"$CXXFLAGS\""
        ;;
esac

need_pip() {
    local spec="$1" module="${1%%==*}"
    if ! python3 -c "import ${module//-/_}" >/dev/null 2>&1; then
        say "Installing $spec from PyPI"
        python3 -m pip install --quiet --disable-pip-version-check "$spec"
    fi
}

# Tansu with two storage engines: in memory (every test's broker) and SQLite (`libsql`: the SASL
# test's broker, whose user has to be stored before the broker asks for authentication).
need_tansu() {
    export PATH="$HOME/.cargo/bin:$PATH"
    # cargo notes each installed crate's features in .crates2.json; an older install of the
    # tests' broker lacks SQLite.
    local installed="${CARGO_HOME:-$HOME/.cargo}/.crates2.json"
    if ! command -v tansu >/dev/null 2>&1 ||
        ! python3 -c 'import json, sys
installs = json.load(open(sys.argv[1]))["installs"]
sys.exit(not any(k.startswith("tansu 0.6.0 ") and {"dynostore", "libsql"} <= set(v["features"]) for k, v in installs.items()))' "$installed" 2>/dev/null; then
        say "Installing the Tansu Kafka-protocol broker for the tests, with its in-memory and SQLite storage (cargo install, about 10 minutes the first time)"
        cargo install tansu --version 0.6.0 --features dynostore,libsql --locked
    fi
}
