//! The `customer-pulse` command: parses the command line, sets up logging and signals, and hands
//! a validated config to the library. Errors leave here with their context, as one message.

use std::path::PathBuf;

use std::io::Write;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use customer_pulse::config::Config;
use customer_pulse::generate::{generate_until, TrafficSpec};
use customer_pulse::outbox::{DiscardSink, NdjsonSink};
use customer_pulse::processor::Processor;
use customer_pulse::replay::{replay, wall_clock_ms};
use customer_pulse::telemetry::Telemetry;
use customer_pulse::{kafka, pipeline};

/// `println!` that hands back the write's error rather than panicking on it: a reader that went
/// away (`replay ... | head -1`) is a broken pipe, on which `main` ends quietly.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err(|e| named(e, "standard output"))
    }};
}

/// `eprintln!` that lets the write's error go rather than panicking on it: with standard error
/// gone (`... 2>&1 | head -1`) there is no one left to tell, and the command's status stands.
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Rust's allocations go to mimalloc: the fold allocates a few small buffers per event and frees
/// them at the batch's commit, and glibc's malloc spent a quarter of a file replay's CPU time on
/// them (`benches/HISTORY.md`). RocksDB's and librdkafka's own allocations stay with glibc.
/// mimalloc is built without asking the kernel for transparent huge pages (its `no_thp`
/// feature): with them, the fold thread of the broker benchmark spent 13% of its time in the
/// kernel zeroing fresh 2 MiB pages at their first touch (`benches/HISTORY.md`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The demo's configuration, embedded so that the demo needs no file.
const DEMO_CONFIG: &str = include_str!("../config/demo.toml");

#[derive(Parser)]
#[command(
    version,
    about = "Event-sourced stream processor for customer interactions"
)]
struct Cli {
    /// How log lines go to stderr: `text`, or `json` (an object a line, for a log shipper).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "CUSTOMER_PULSE_LOG_FORMAT",
        default_value_t = LogFormat::Text
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The main job: consume the input topics, fold into state, emit outputs.
    Run {
        /// The TOML config file; CUSTOMER_PULSE__<SECTION>__<FIELD> variables override it.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Fold NDJSON files of events into the state (backfill); resumes where it stopped.
    Replay {
        /// The events, one JSON object per line. Given more than once (per-topic exports), the
        /// files are read together in event-time order, each resuming on its own.
        #[arg(long, required = true)]
        from: Vec<PathBuf>,
        /// The TOML config file (the embedded demo config when absent).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Write output records here as NDJSON (otherwise they are discarded); never the --from file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write synthetic traffic as NDJSON, or publish it to a broker.
    #[command(group(clap::ArgGroup::new("publish").args(["brokers", "config"]).multiple(true)))]
    Generate {
        #[arg(long, default_value_t = 1_000, value_parser = at_least_one)]
        customers: u64,
        /// At most 10,000,000: the traffic is generated whole in memory (about 1 KB an event).
        #[arg(long, default_value_t = 10_000, value_parser = at_most_generated)]
        events: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the events to this file.
        #[arg(long, conflicts_with_all = ["brokers", "config"])]
        out: Option<PathBuf>,
        /// Publish the events to these brokers (the default topic names, or --config's).
        #[arg(long)]
        brokers: Option<String>,
        /// Publish the events as the job with this config file reads them: to its brokers
        /// (unless --brokers), its input topics, with its Kafka security (TLS, SASL).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Events per second when publishing (unlimited when absent).
        #[arg(long, value_parser = at_least_one)]
        rate: Option<u64>,
        /// Records per record batch when publishing; 1 for Tansu 0.6.0, which cannot start a
        /// fetch inside a batch.
        #[arg(long, default_value_t = 10_000)]
        batch_records: usize,
        /// Publish the demo's traffic instead: ten minutes of history, then this many seconds
        /// live at --rate (default 200) with a complaint spike a minute in.
        #[arg(long, requires = "publish")]
        live_seconds: Option<u64>,
    },
    /// Every customer's churn model evaluated at one event time, as NDJSON (the monthly
    /// lost-customer review). Reads the state of a stopped job: RocksDB admits one process.
    Score {
        /// The event time to score at, RFC 3339 (e.g. 2026-06-30T23:59:59Z).
        #[arg(long)]
        as_of: String,
        /// The TOML config file (the embedded demo config when absent).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Expected orders are over this many days.
        #[arg(long, default_value_t = 90)]
        horizon_days: u32,
        /// The lost-customer review: only the customers counted lost from this time (RFC 3339)
        /// to --as-of, with a summary of the losses by reason on stderr.
        #[arg(long)]
        lost_since: Option<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Fits the purchase model's parameters by maximum likelihood to every customer's history
    /// at one event time, and prints them as the `[churn]` lines to configure. Reads the state
    /// of a stopped job.
    Fit {
        /// The event time the histories end at, RFC 3339 (e.g. 2026-06-30T23:59:59Z).
        #[arg(long)]
        as_of: String,
        /// The TOML config file (the embedded demo config when absent); its model and
        /// parameters are the starting point.
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// One command, no setup: an embedded broker, live generated traffic with a complaint spike
    /// a minute in, the job, its HTTP endpoints, and a summary every five seconds.
    Demo {
        #[arg(long, default_value_t = 2_000, value_parser = at_least_one)]
        customers: u64,
        /// Events per second the generator publishes.
        #[arg(long, default_value_t = 200, value_parser = at_least_one)]
        rate: u64,
        /// How long the demo runs (Ctrl-C stops it sooner).
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
}

/// Whether `a` and `b` name one existing file, through symbolic or hard links.
#[cfg(unix)]
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

/// Whether `a` and `b` name one existing file, through symbolic links.
#[cfg(not(unix))]
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// A count that must be at least 1: a rate of 0 events a second, or traffic over no customers,
/// is refused where it is typed rather than divided by.
fn at_least_one(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// The most events `generate` makes: it holds them all in memory before the first is written
/// or published, about 1 KB each (`--events 100000000` would need some 100 GB, and the machine
/// stalls and the kernel kills it before that).
const MOST_GENERATED: u64 = 10_000_000;

/// A count of events `generate` can hold.
fn at_most_generated(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n > MOST_GENERATED => Err(format!(
            "must be at most {MOST_GENERATED}: the traffic is generated whole in memory, about 1 KB an event (for more, write several files with other --seed values)"
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (filter, unread_filter) = log_filter(std::env::var("RUST_LOG").ok());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        // Colours for a person at a terminal; a file or a container's log gets plain text.
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => log.json().init(),
    }
    if let Some(unread) = unread_filter {
        tracing::warn!("{unread}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tell!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let log_format = cli.log_format;
    let result = runtime.block_on(dispatch(cli.command));
    // A blocking call still waiting on brokers that do not answer (the start's check of the
    // output topics, up to 10 s) does not hold the exit: everything that had to finish did.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if broken_pipe(&e) => std::process::ExitCode::from(141),
        Err(e) => {
            match log_format {
                LogFormat::Text => tell!("error: {e:#}"),
                // A log shipper reads one JSON object a line: the failure is one too, with the
                // log's keys, and shown whatever `RUST_LOG` filters (before, a plain line).
                LogFormat::Json => tell!(
                    "{}",
                    serde_json::json!({
                        "timestamp": customer_pulse::event::format_millis(
                            customer_pulse::replay::wall_clock_ms()
                        ),
                        "level": "ERROR",
                        "fields": {"message": "The command failed.", "error": format!("{e:#}")},
                        "target": "customer_pulse",
                    })
                ),
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The log's filter: `RUST_LOG`'s, or `info` where it is unset or blank (a blank one, as an
/// empty variable in a manifest gives, logged errors alone); and, for one that does not parse,
/// why, to be logged once the log is up (before, `info` was taken without a word).
fn log_filter(rust_log: Option<String>) -> (tracing_subscriber::EnvFilter, Option<String>) {
    let info = || tracing_subscriber::EnvFilter::new("info");
    match rust_log {
        Some(text) if !text.trim().is_empty() => {
            match tracing_subscriber::EnvFilter::try_new(&text) {
                Ok(filter) => (filter, None),
                Err(e) => (
                    info(),
                    Some(format!(
                        "RUST_LOG={text:?} is not a log filter ({e}); logging at info."
                    )),
                ),
            }
        }
        _ => (info(), None),
    }
}

/// Whether `error` is a write to a reader that went away (`score ... | head`): the command
/// then ends quietly, with the status a shell gives a process a broken pipe ended.
fn broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// A token cancelled by SIGTERM or Ctrl-C.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = ctrl_c => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = ctrl_c.await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("Shutdown requested.");
        cancel.cancel();
    });
    token
}

async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run { config } => {
            let config = Config::load(&config)?;
            pipeline::run(config, shutdown_on_signals()).await
        }
        Command::Replay { from, config, out } => {
            if let Some(out) = &out {
                anyhow::ensure!(
                    !from.iter().any(|from| same_file(from, out)),
                    "--out {} is a file --from reads: writing the outputs there would empty it before a line is read",
                    out.display()
                );
            }
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::parse(DEMO_CONFIG, std::env::vars())?,
            };
            if config.changelog {
                tracing::warn!(
                    "The replay writes no changelog records (state.changelog is run's): a run with the changelog on over this state sends each partition's state to the changelog whole as it claims it (README, Scaling out)."
                );
            }
            let store = pipeline::open_store(&config)?;
            pipeline::write_without_changelog(&store, &config)?;
            let mut processor = Processor::new(store, pipeline::processor_settings(&config));
            let telemetry = Telemetry::new();
            let shutdown = shutdown_on_signals();
            let started = std::time::Instant::now();
            let summary = match &out {
                Some(path) => {
                    let file = std::fs::File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut sink = NdjsonSink::new(std::io::BufWriter::new(file));
                    replay(
                        &from,
                        &mut processor,
                        &mut sink,
                        &telemetry,
                        config.max_batch_events,
                        true,
                        shutdown,
                    )
                    .await?
                }
                None => {
                    replay(
                        &from,
                        &mut processor,
                        &mut DiscardSink,
                        &telemetry,
                        config.max_batch_events,
                        true,
                        shutdown,
                    )
                    .await?
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            say!(
                "replayed {} lines in {seconds:.1} s ({:.0} lines/s): {} applied ({} of them late for their window), {} duplicates, {} of erased customers from before their erasure, {} rejected to the dead-letter output, {} skipped as already applied, {} output records",
                summary.lines_read,
                summary.lines_read as f64 / seconds.max(1e-9),
                summary.applied,
                summary.late,
                summary.duplicates,
                summary.erased,
                summary.rejected,
                summary.lines_skipped,
                summary.outputs_delivered
            )?;
            let customers = &summary.customers;
            say!(
                "customers looked up: {} in the cache, {} read back from the store (a larger state.cache_customers would keep them), {} new",
                customers.hit, customers.stored, customers.absent
            )?;
            // Lines skipped as already applied are the state's doing: say whose.
            say!("state: {}", config.state_path.display())?;
            if let (Some(out), left @ 1..) = (&out, summary.outputs_left) {
                anyhow::bail!(
                    "{left} output records could not be written to {} (the log says why), and the replay stopped there: they stay in the state's outbox, and the next replay of this state writes them first, then goes on",
                    out.display()
                );
            }
            Ok(())
        }
        Command::Generate {
            customers,
            events,
            seed,
            out,
            brokers,
            config,
            rate,
            batch_records,
            live_seconds,
        } => {
            // Where it publishes, if it does: the brokers, topics and security.
            let target = match (brokers, config) {
                (None, None) => None,
                (brokers, Some(path)) => {
                    let config = Config::load(&path)?;
                    Some((brokers.unwrap_or_else(|| config.brokers.clone()), config))
                }
                (Some(brokers), None) => {
                    Some((brokers, Config::parse(DEMO_CONFIG, std::env::vars())?))
                }
            };
            let security = target
                .as_ref()
                .map(|(_, config)| config.kafka_security.client_properties())
                .unwrap_or_default();
            let properties: Vec<(&str, &str)> =
                security.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if let (Some(seconds), Some((brokers, config))) = (live_seconds, &target) {
                let rate = rate.unwrap_or(200);
                customer_pulse::demo::publish_live(
                    brokers,
                    &config.topics,
                    &properties,
                    customers,
                    rate,
                    seconds,
                )
                .await?;
                say!("published {seconds} s of live traffic to {brokers}")?;
                return Ok(());
            }
            // A month of traffic that ends by now.
            let now = wall_clock_ms();
            let spec = TrafficSpec {
                customers,
                events,
                seed,
                start_ms: now - 30 * 86_400_000,
                step_ms: (30 * 86_400_000 / events.max(1) as i64).max(1),
            };
            let generated = generate_until(&spec, now);
            if let Some((brokers, config)) = &target {
                kafka::publish_with(
                    brokers,
                    &config.topics,
                    &generated,
                    rate,
                    batch_records,
                    &properties,
                )
                .await?;
                say!("published {} events to {brokers}", generated.len())?;
            } else {
                write_events(out.as_deref(), &generated)?;
            }
            Ok(())
        }
        Command::Score {
            as_of,
            config,
            horizon_days,
            lost_since,
            out,
        } => {
            let (config, as_of) = config_and_time(config, &as_of)?;
            let lost_since = match lost_since.as_deref() {
                None => None,
                Some(since) => {
                    let since = customer_pulse::event::parse_millis(since).with_context(|| {
                        format!("--lost-since must be an RFC 3339 time with offset, not {since:?}")
                    })?;
                    anyhow::ensure!(
                        since <= as_of,
                        "--lost-since must not be after --as-of: the period would be empty"
                    );
                    Some(since)
                }
            };
            let store = pipeline::open_existing_store(&config)?;
            let mut writer = output(out.as_deref())?;
            let at = pipeline::ScoreAt {
                as_of,
                horizon_days,
                lost_since,
            };
            let report = pipeline::score(&store, &config, at, &mut writer)?;
            writer.flush()?;
            tell!(
                "scored {} customers as of {}",
                report.written,
                customer_pulse::event::format_millis(as_of)
            );
            if report.not_yet_seen > 0 {
                tell!(
                    "left out {} customers first seen after it",
                    report.not_yet_seen
                );
            }
            if report.seen_since > 0 {
                tell!(
                    "{} of those scored have events after it: their purchases, lifecycle and cancellation are taken back to it, but their other reasons and segment are those of their state now, and their LTV values a purchase as their state now does",
                    report.seen_since
                );
            }
            if let Some(since) = lost_since {
                let lost = &report.lost;
                let reasons: Vec<String> = lost
                    .reasons
                    .iter()
                    .map(|(reason, n)| format!("{reason} {n}"))
                    .collect();
                tell!(
                    "lost from {} to {}: {} loss(es) of those customers, worth {} minor units of revenue to date (less returns); by reason: {}",
                    customer_pulse::event::format_millis(since),
                    customer_pulse::event::format_millis(as_of),
                    lost.count,
                    lost.value_minor,
                    if reasons.is_empty() { "none".to_owned() } else { reasons.join(", ") }
                );
            }
            if report.losses_unknown > 0 {
                tell!(
                    "{} customers are lost or won back with no loss kept (stored by a build before losses were kept): a review leaves them out, and their lifecycle is that of now",
                    report.losses_unknown
                );
            }
            Ok(())
        }
        Command::Fit { as_of, config } => {
            let (config, as_of) = config_and_time(config, &as_of)?;
            let store = pipeline::open_existing_store(&config)?;
            let pipeline::FitReport {
                fitted,
                customers,
                repeat,
            } = pipeline::fit(&store, &config, as_of)?;
            say!(
                "# maximum likelihood over {customers} customers ({repeat} of whom bought again) as of {}: log-likelihood {:.3}, {} iterations\n{}",
                customer_pulse::event::format_millis(as_of),
                fitted.log_likelihood,
                fitted.iterations,
                fitted.config_section(),
            )?;
            // Beside the section, where whoever pastes it sees them, and on stderr.
            for caveat in fitted.caveats(repeat) {
                say!("# caveat: {caveat}")?;
                tell!("warning: {caveat}");
            }
            Ok(())
        }
        Command::Demo {
            customers,
            rate,
            seconds,
        } => {
            let work = tempfile::tempdir().context("cannot create a temporary directory")?;
            let mut config = Config::parse(DEMO_CONFIG, std::env::vars())?;
            config.state_path = work.path().join("state");
            customer_pulse::demo::run(config, customers, rate, seconds, shutdown_on_signals()).await
        }
    }
}

/// A buffered file, or standard output, whose write errors name it.
fn output(path: Option<&std::path::Path>) -> anyhow::Result<Output> {
    Ok(match path {
        Some(path) => Output {
            inner: Box::new(std::io::BufWriter::new(
                std::fs::File::create(path)
                    .with_context(|| format!("cannot create {}", path.display()))?,
            )),
            name: path.display().to_string(),
        },
        None => Output {
            inner: Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            name: "standard output".into(),
        },
    })
}

/// A command's output: its errors say where it was writing ("No space left on device" alone
/// did not), and keep their kind, so that a reader gone away still ends it quietly.
struct Output {
    inner: Box<dyn std::io::Write>,
    name: String,
}

impl std::io::Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).map_err(|e| named(e, &self.name))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().map_err(|e| named(e, &self.name))
    }
}

/// A write error that says where the write went, of the same kind.
fn named(e: std::io::Error, written_to: &str) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("cannot write to {written_to}: {e}"))
}

fn write_events(
    out: Option<&std::path::Path>,
    events: &[customer_pulse::generate::Generated],
) -> anyhow::Result<()> {
    let mut writer = output(out)?;
    for event in events {
        writeln!(writer, "{}", event.value)?;
    }
    writer.flush()?;
    Ok(())
}

/// The config a stored-state command reads (the embedded demo config when none is named), and
/// its `--as-of` time.
fn config_and_time(
    config: Option<PathBuf>,
    as_of: &str,
) -> anyhow::Result<(Config, customer_pulse::event::Millis)> {
    let config = match config {
        Some(path) => Config::load(&path)?,
        None => Config::parse(DEMO_CONFIG, std::env::vars())?,
    };
    let as_of = customer_pulse::event::parse_millis(as_of)
        .with_context(|| format!("--as-of must be an RFC 3339 time with offset, not {as_of:?}"))?;
    Ok((config, as_of))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_or_a_number_of_customers_of_zero_is_refused_by_name() {
        for args in [
            &["customer-pulse", "demo", "--rate", "0"][..],
            &["customer-pulse", "demo", "--customers", "0"],
            &["customer-pulse", "generate", "--customers", "0"],
            &[
                "customer-pulse",
                "generate",
                "--brokers",
                "b:9092",
                "--rate",
                "0",
            ],
        ] {
            let error = Cli::try_parse_from(args).err().expect("refused");
            let name = args[args.len() - 2];
            assert!(
                error.to_string().contains(&format!("'{name} <")),
                "{args:?}: {error}"
            );
            assert!(error.to_string().contains("must be at least 1"), "{error}");
        }
        assert!(Cli::try_parse_from(["customer-pulse", "demo", "--rate", "1"]).is_ok());
    }

    #[test]
    fn more_events_than_generate_holds_in_memory_are_refused_by_name() {
        let error = Cli::try_parse_from(["customer-pulse", "generate", "--events", "10000001"])
            .err()
            .expect("refused");
        assert!(error.to_string().contains("'--events <"), "{error}");
        assert!(
            error.to_string().contains("must be at most 10000000"),
            "{error}"
        );
        for events in ["0", "10000000"] {
            assert!(
                Cli::try_parse_from(["customer-pulse", "generate", "--events", events]).is_ok(),
                "{events}"
            );
        }
    }

    /// `generate` publishes where `--brokers` or `--config` says (the live traffic too), and
    /// writes a file only when it publishes nowhere.
    #[test]
    fn generate_publishes_with_brokers_or_a_config_and_writes_a_file_only_otherwise() {
        let generate = |args: &[&str]| {
            let mut all = vec!["customer-pulse", "generate"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all)
        };
        for args in [
            &["--config", "c.toml"][..],
            &["--brokers", "b:9092"],
            &["--config", "c.toml", "--brokers", "b:9092"],
            &["--config", "c.toml", "--live-seconds", "5"],
            &["--brokers", "b:9092", "--live-seconds", "5"],
            &["--out", "events.ndjson"],
        ] {
            assert!(generate(args).is_ok(), "{args:?}");
        }
        for (args, named) in [
            (&["--live-seconds", "5"][..], "--brokers"),
            (&["--out", "e.ndjson", "--config", "c.toml"], "--config"),
            (&["--out", "e.ndjson", "--brokers", "b:9092"], "--brokers"),
        ] {
            let error = generate(args).err().expect("refused").to_string();
            assert!(error.contains(named), "{args:?}: {error}");
        }
    }
}
