//! A real Kafka-protocol broker (Tansu, in memory) on a free loopback port, for the tests.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub struct Broker {
    child: Child,
    pub address: String,
    /// Where a broker on SQLite keeps it (see [`Broker::start_with_scram_user`]).
    _storage: Option<tempfile::TempDir>,
}

/// A loopback port nobody listens on right now, and one no other call in this process gave
/// out. It is taken from below the kernel's range of ephemeral ports: a port the kernel picks
/// for a listener or a connection of its own choosing (librdkafka's mock cluster in the demo or
/// in another test, any client's socket) could otherwise be the very port a test picked and
/// released, taken before the test's broker or job binds it (the demo test failed so once).
pub fn free_port() -> u16 {
    static GIVEN: AtomicU32 = AtomicU32::new(0);
    let ephemeral_from = ephemeral_ports_from().unwrap_or(32_768);
    const SPAN: u32 = 10_000;
    if ephemeral_from <= SPAN + 1_024 {
        // No room below the range: any free port, as the kernel picks it.
        return TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    // Where in the span this process starts: another test process running at the same time
    // most likely starts elsewhere.
    let start = std::process::id() % SPAN;
    for _ in 0..SPAN {
        let offset = (start + GIVEN.fetch_add(1, Ordering::Relaxed)) % SPAN;
        let port = (ephemeral_from - SPAN + offset) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port below {ephemeral_from}");
}

/// The first port of the range the kernel hands out ports of its own choosing from.
fn ephemeral_ports_from() -> Option<u32> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

fn tansu() -> String {
    let home = std::env::var("HOME").unwrap_or_default();
    let installed = format!("{home}/.cargo/bin/tansu");
    if std::path::Path::new(&installed).exists() {
        installed
    } else {
        "tansu".into()
    }
}

impl Broker {
    pub fn start() -> Broker {
        let port = free_port();
        Broker::start_on(port, port)
    }

    /// A broker listening on `port` that tells its clients to connect to `advertised` (a TLS
    /// front's port, see `tls`), whose address it takes.
    pub fn start_on(port: u16, advertised: u16) -> Broker {
        let child = spawn(port, advertised, |command| {
            command.args(["--storage-engine", "memory://tansu/"]);
        });
        Broker {
            child,
            address: format!("127.0.0.1:{advertised}"),
            _storage: None,
        }
    }

    /// A broker that takes only clients authenticated by SASL/SCRAM-SHA-512, and knows one user.
    /// Tansu 0.6.0 keeps its users in its storage, and once it asks for authentication, only an
    /// authenticated client may add one (its in-memory storage starts with none, and it offers
    /// no PLAIN). So the user is added first by Tansu's own client to a broker that does not
    /// ask, on a SQLite file (the `libsql` storage engine), and the broker that asks then
    /// starts on that file.
    // The benchmarks, which share this file, start no such broker.
    #[allow(dead_code)]
    pub fn start_with_scram_user(user: &str, password: &str) -> Broker {
        let port = free_port();
        Broker::start_with_scram_user_on(port, port, Scram::Sha512, user, password)
    }

    /// [`Broker::start_with_scram_user`] listening on `port` and telling its clients to connect
    /// to `advertised` (a TLS front's port), whose address it takes, its user's credentials for
    /// `scram`.
    #[allow(dead_code)]
    pub fn start_with_scram_user_on(
        port: u16,
        advertised: u16,
        scram: Scram,
        user: &str,
        password: &str,
    ) -> Broker {
        let storage = tempfile::tempdir().unwrap();
        let on_file = |command: &mut Command| {
            command
                .current_dir(storage.path())
                .args(["--storage-engine", "sqlite://tansu.db"]);
        };
        let mut open = spawn(port, port, on_file);
        let added = Command::new(tansu())
            .args(["user", "create", "--mechanism", scram.tansu_name()])
            .args([
                "--broker",
                &format!("tcp://127.0.0.1:{port}"),
                user,
                password,
            ])
            .output()
            .expect("tansu's client runs");
        let said = String::from_utf8_lossy(&added.stderr).into_owned();
        assert!(
            added.status.success() && !said.contains("Error"),
            "tansu added the user: {said}"
        );
        let _ = open.kill();
        let _ = open.wait();
        let child = spawn(port, advertised, |command| {
            on_file(command);
            command.arg("--authentication");
        });
        Broker {
            child,
            address: format!("127.0.0.1:{advertised}"),
            _storage: Some(storage),
        }
    }
}

/// A SCRAM mechanism, as Tansu's client and Kafka's clients name it.
#[allow(dead_code)]
#[derive(Clone, Copy)]
pub enum Scram {
    Sha256,
    Sha512,
}

#[allow(dead_code)]
impl Scram {
    fn tansu_name(self) -> &'static str {
        match self {
            Scram::Sha256 => "scram256",
            Scram::Sha512 => "scram512",
        }
    }

    /// The mechanism's name in librdkafka's `sasl.mechanisms` and `kafka.sasl_mechanism`.
    pub fn kafka_name(self) -> &'static str {
        match self {
            Scram::Sha256 => "SCRAM-SHA-256",
            Scram::Sha512 => "SCRAM-SHA-512",
        }
    }
}

/// Starts Tansu listening on `port` and advertising `advertised`, with `storage` adding its
/// storage engine, and waits until it listens.
fn spawn(port: u16, advertised: u16, storage: impl FnOnce(&mut Command)) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised_url = format!("tcp://127.0.0.1:{advertised}");
    let mut command = Command::new(tansu());
    command
        .args(["broker", "--listener-url", &url])
        .args(["--advertised-listener-url", &advertised_url])
        .env(
            "RUST_LOG",
            std::env::var("PULSE_TEST_BROKER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(log_target(port))
        .stderr(Stdio::null());
    storage(&mut command);
    let child = command
        .spawn()
        .expect("the tansu broker starts (tests/run.sh installs it: cargo install tansu --version 0.6.0 --features dynostore,libsql --locked)");
    let listening = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&listening).is_err() {
        assert!(
            Instant::now() < deadline,
            "tansu did not listen on {listening} within 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Where the broker's log (on its standard output) goes: nowhere, or with `PULSE_TEST_LOG_DIR`
/// set, `broker-<port>.log` there, beside the jobs' logs (`PULSE_TEST_BROKER_LOG` sets its
/// level; its coordinator tells at `info` which members it dropped for missed heartbeats).
fn log_target(port: u16) -> Stdio {
    log_file(|| format!("broker-{port}.log")).unwrap_or_else(Stdio::null)
}

/// With `PULSE_TEST_LOG_DIR` set, a new file there, named by `name`, for a process's log.
pub fn log_file(name: impl FnOnce() -> String) -> Option<Stdio> {
    let dir = std::env::var_os("PULSE_TEST_LOG_DIR")?;
    let path = std::path::Path::new(&dir).join(name());
    match std::fs::File::create(&path) {
        Ok(file) => Some(file.into()),
        Err(e) => panic!("cannot create {}: {e}", path.display()),
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn free_ports_differ_and_lie_below_the_kernels_ephemeral_range() {
    let ephemeral_from = ephemeral_ports_from().expect("the kernel's ephemeral port range");
    let ports: Vec<u16> = (0..20).map(|_| free_port()).collect();
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    assert!(
        ports.iter().all(|p| u32::from(*p) < ephemeral_from),
        "{ports:?}"
    );
    // And each is free: a listener can have it.
    for port in ports {
        TcpListener::bind(("127.0.0.1", port)).unwrap();
    }
}
