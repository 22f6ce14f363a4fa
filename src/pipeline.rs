//! Wiring: the main job (`run`) puts the Kafka input, the processor, the outbox drain and the HTTP
//! endpoints together, and shuts them down in order. Time and shutdown are passed in; every task
//! it spawns is joined before it returns.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::aggregator::{Aggregator, TakeOver};
use crate::config::Config;
use crate::event::Millis;
use crate::fold::Lifecycle;
use crate::http::{self, HttpState};
use crate::kafka::{
    Assignment, ChangelogProgress, ChangelogReader, ChangelogTail, Input, KafkaSink,
};
use crate::outbox::{drain, Outbox, Sink};
use crate::processor::{
    Aggregation, BatchReport, InputRecord, OutputTopics, Processor, ProcessorSettings,
};
use crate::replay::wall_clock_ms;
use crate::store::{Held, RocksBackend, Store, StoreError};
use crate::telemetry::{repeated, Telemetry};

/// Opens the RocksDB store the config names, for a command that only reads what a job or a
/// replay left there (`score`, `fit`): an error, and nothing created, where there is none.
pub fn open_existing_store(config: &Config) -> anyhow::Result<Store> {
    let path = &config.state_path;
    anyhow::ensure!(
        RocksBackend::holds_state(path),
        "no state at {} (state.path): this command reads the state a job or a replay left there",
        path.display()
    );
    open_state(config, false)
}

/// Opens the RocksDB store the config names, creating it where there is none.
pub fn open_store(config: &Config) -> anyhow::Result<Store> {
    open_state(config, true)
}

/// Opens the store, held to the config's partition count and, for a command that folds
/// (`keep`), its window length (`Store::hold_*`); `keep` also stores them where a state has
/// none yet.
fn open_state(config: &Config, keep: bool) -> anyhow::Result<Store> {
    refuse_others_files(&config.state_path)?;
    std::fs::create_dir_all(&config.state_path).with_context(|| {
        format!(
            "cannot create state directory {}",
            config.state_path.display()
        )
    })?;
    let backend = RocksBackend::open(&config.state_path, config.block_cache_bytes).map_err(|e| {
        // RocksDB admits one holder: its message names only its lock file, `LOCK`.
        let held = e.to_string().contains("/LOCK:");
        let e = anyhow::Error::from(e)
            .context(format!("cannot open state at {}", config.state_path.display()));
        if held {
            e.context("the state is in use (by a running job, replay, score or fit): stop that first, or give this command a config with another state.path")
        } else {
            e
        }
    })?;
    let store = Store::open(Arc::new(backend))?;
    let path = config.state_path.display();
    let partitions = config.partitions;
    match store.hold_partitions(partitions, keep)? {
        Held::Held => {}
        Held::Other { stored } => anyhow::bail!(
            "the state at {path} places customers by {stored} partitions, and input.partitions is {partitions}: under another count each customer would be looked for in another partition and split in two. Set input.partitions to {stored}, or fold into a new state.path"
        ),
        Held::Beyond { partition } => anyhow::bail!(
            "the state at {path} holds customers of partition {partition}, and input.partitions is {partitions}: it was written with more partitions, and under another count each customer would be looked for in another partition and split in two. Set input.partitions to the count it was written with, or fold into a new state.path"
        ),
    }
    // `score` and `fit` read no complaint windows: their length is not theirs to check.
    if keep {
        hold_window(&store, config, &path.to_string())?;
        forget_old_erasures(&store, config)?;
    }
    Ok(store)
}

/// Forgets the erasure markers older than `input.max_event_age_days` on the wall clock, the
/// processor's: every event they kept out is refused as `ancient_timestamp` before a marker is
/// looked at, so an erasure costs its marker's memory for that long, not for good. Before
/// anything commits, as `Store::forget_erasures_before` asks.
fn forget_old_erasures(store: &Store, config: &Config) -> anyhow::Result<()> {
    let before = wall_clock_ms().saturating_sub(config.rules.max_event_age_ms);
    let forgotten = store.forget_erasures_before(before)?;
    if forgotten > 0 {
        tracing::info!(
            markers = forgotten,
            kept = store.erasure_markers(),
            "Forgot the erasure markers older than input.max_event_age_days: the events they kept out are refused as too old."
        );
    }
    Ok(())
}

/// Refuses a state path that is a directory of other files and no state (`state.path = "."`
/// by mistake): RocksDB would write its files among them, and removing the state to start
/// again would remove them too. A volume's `lost+found` does not count, nor what a first open
/// killed before RocksDB wrote `CURRENT` may have left (RocksDB's files, the options file's
/// directory).
fn refuse_others_files(path: &std::path::Path) -> anyhow::Result<()> {
    let may_be_there = |name: &str| {
        ["lost+found", "LOCK", "LOG", "IDENTITY"].contains(&name)
            || [".options-", "LOG.old", "MANIFEST-", "OPTIONS-"]
                .iter()
                .any(|prefix| name.starts_with(prefix))
            || name.ends_with(".dbtmp")
    };
    if RocksBackend::holds_state(path) {
        return Ok(());
    }
    // Creating the directory would say only "File exists".
    if path.exists() && !path.is_dir() {
        anyhow::bail!(
            "state.path {} is a file, not a directory: give state.path a new or empty directory",
            path.display()
        );
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        // None yet: it is created next.
        return Ok(());
    };
    let others: Vec<String> = entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| !may_be_there(name))
        .collect();
    if let Some(first) = others.first() {
        anyhow::bail!(
            "state.path {} holds {} other file(s) ({first}, ...) and no state: the state's files would go among them. Give state.path a new or empty directory",
            path.display(),
            others.len()
        );
    }
    Ok(())
}

/// Refuses a store whose complaint windows are of another length than the config's
/// (`Store::hold_window`): its open windows and baselines are of the stored length.
fn hold_window(store: &Store, config: &Config, path: &str) -> anyhow::Result<()> {
    let minutes = |ms: u64| ms / 60_000;
    match store.hold_window(config.trends.window_ms, true)? {
        // (`Beyond` is the partition count's alone.)
        Held::Held | Held::Beyond { .. } => Ok(()),
        Held::Other { stored } => anyhow::bail!(
            "the state at {path} has complaint windows of {} minutes, and trends.window_minutes is {}: its open windows and every category's baseline are of {} minutes, and the spike test would weigh windows of another length against them. Set trends.window_minutes to {}, or fold into a new state.path",
            minutes(stored),
            config.trends.window_ms / 60_000,
            minutes(stored),
            minutes(stored),
        ),
    }
}

/// The processor settings a config describes.
pub fn processor_settings(config: &Config) -> ProcessorSettings {
    ProcessorSettings {
        rules: config.rules.clone(),
        limits: config.limits,
        topics: OutputTopics {
            churn_risk: config.topics.churn_risk.clone(),
            complaint_trends: config.topics.complaint_trends.clone(),
            segment_metrics: config.topics.segment_metrics.clone(),
            dead_letter: config.topics.dead_letter.clone(),
        },
        partitions: config.partitions,
        cache_customers: config.cache_customers,
        risk: config.risk.clone(),
        trends: config.trends.clone(),
        panic_on_event_id: None,
        allowed_lateness_ms: config.allowed_lateness_ms,
        idle_partition_ms: config.idle_partition_ms,
        rfm_rules: config.rfm_rules.clone(),
        aggregation: Aggregation::Here,
    }
}

/// Calls `f` with every customer in state, partition by partition in id order.
fn for_each_customer(
    store: &Store,
    partitions: i32,
    mut f: impl FnMut(&crate::store::Customer) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    for partition in 0..partitions {
        store.for_each_customer(partition, &mut f)?;
    }
    Ok(())
}

/// What `score` evaluates: every customer at `as_of`, or with `lost_since`, the lost-customer
/// review: only those counted lost from that time to `as_of`.
#[derive(Debug, Clone, Copy)]
pub struct ScoreAt {
    pub as_of: crate::event::Millis,
    /// Expected orders are over this many days.
    pub horizon_days: u32,
    pub lost_since: Option<crate::event::Millis>,
}

/// Writes the churn model at `at.as_of` of every customer (with `at.lost_since`, of those lost
/// since then) as NDJSON, partition by partition in id order.
pub fn score(
    store: &Store,
    config: &Config,
    at: ScoreAt,
    out: &mut dyn std::io::Write,
) -> anyhow::Result<ScoreReport> {
    let ScoreAt {
        as_of,
        horizon_days,
        lost_since,
    } = at;
    let mut report = ScoreReport::default();
    let rfm = store.rfm()?;
    for_each_customer(store, config.partitions, |customer| {
        let state = &customer.state;
        // A customer first seen after `as_of` did not exist then.
        if state.first_event_at > as_of {
            report.not_yet_seen += 1;
            return Ok(());
        }
        // Lost or won back, with no loss kept: stored before losses were (customer encoding
        // version 7 or earlier).
        if customer.losses.is_empty()
            && matches!(state.lifecycle, Lifecycle::Lost | Lifecycle::WonBack)
        {
            report.losses_unknown += 1;
        }
        if let Some(since) = lost_since {
            let mut lost = customer
                .losses
                .iter()
                .filter(|l| (since..=as_of).contains(&l.at))
                .peekable();
            if lost.peek().is_none() {
                return Ok(());
            }
            for loss in lost {
                report.lost.count += 1;
                report.lost.value_minor += loss.value_minor;
                *report.lost.reasons.entry(loss.reason.code()).or_default() += 1;
            }
        }
        if state.last_event_at > as_of {
            report.seen_since += 1;
        }
        // As the state stood at `as_of`, as far as it keeps its history: the purchase model
        // sees no purchase after it (as `fit` reads it), nor the lifecycle a later loss gave.
        let now = state;
        let state = crate::risk::as_it_stood(now, &customer.losses, as_of);
        let mut line = crate::risk::score_line(
            &state,
            now,
            &customer.trailing,
            &customer.losses,
            as_of,
            horizon_days,
            &config.risk,
        );
        // R, F and M on the scales of the last closed day.
        let point = crate::rfm::point(&state);
        line["rfm"] = serde_json::json!(rfm.score(point, &config.rfm_rules));
        writeln!(out, "{line}")?;
        report.written += 1;
        Ok(())
    })?;
    Ok(report)
}

/// What `score` wrote, and what it left out or could not take back to `as_of`.
#[derive(Debug, Default)]
pub struct ScoreReport {
    pub written: u64,
    /// Customers first seen after `as_of`: not written.
    pub not_yet_seen: u64,
    /// Customers written with events after `as_of`: their purchases, last order's time,
    /// lifecycle, cancellation and latest survey are taken back to it, the rest of their state
    /// is that of now (`risk::as_it_stood`).
    pub seen_since: u64,
    /// With `lost_since`, the losses counted in the period.
    pub lost: LostInPeriod,
    /// Customers lost or won back whose losses are not known: stored by a build that kept none.
    /// A review leaves them out, and their lifecycle is the one they have now.
    pub losses_unknown: u64,
}

/// The losses a lost-customer review lists: how many, their value, how many by reason.
#[derive(Debug, Default, PartialEq)]
pub struct LostInPeriod {
    pub count: u64,
    pub value_minor: i64,
    pub reasons: std::collections::BTreeMap<&'static str, u64>,
}

/// Fits the configured purchase model to the history at `as_of` of every customer who had
/// bought by then, by maximum likelihood from the configured parameters; returns the fit and
/// how many customers it used. Refuses when none of them bought again.
pub fn fit(
    store: &Store,
    config: &Config,
    as_of: crate::event::Millis,
) -> anyhow::Result<FitReport> {
    let unit = config.risk.time_unit_ms;
    let mut histories = Vec::new();
    for_each_customer(store, config.partitions, |customer| {
        let state = &customer.state;
        let days = crate::risk::purchases_until(&state.purchase_days, as_of);
        if !days.is_empty() {
            let history = crate::risk::recency_of(days, state.first_event_at, as_of, unit);
            histories.push(history);
        }
        Ok(())
    })?;
    anyhow::ensure!(
        !histories.is_empty(),
        "no customer had bought by then: nothing to fit"
    );
    // With no repeat purchase at all, every history says only "nothing since the first": the
    // likelihood is highest where no one buys again (r towards 0), whatever the drop-out, and
    // the fit would print parameters that mean nothing.
    let repeat = histories.iter().filter(|h| h.x > 0.0).count();
    anyhow::ensure!(
        repeat > 0,
        "{} customer(s) had bought by then and none bought again: their histories cannot tell the purchase rate from the drop-out, so there is nothing to fit; keep the configured [churn] parameters",
        histories.len()
    );
    let model = &config.risk.model;
    let unit_days = unit as f64 / crate::segments::DAY_MS as f64;
    let horizon = crate::churn::PurchaseModel::longest_horizon(config.risk.clv_months, unit_days);
    let fitted = crate::fit::fit(model.model, &histories, model, horizon);
    Ok(FitReport {
        fitted,
        customers: histories.len(),
        repeat,
    })
}

/// A fit over the stored histories, and how many histories it had: all, and those with a
/// repeat purchase (the ones that tell the parameters apart).
pub struct FitReport {
    pub fitted: crate::fit::Fitted,
    pub customers: usize,
    pub repeat: usize,
}

/// The main job: consume, fold, commit, emit, until `shutdown`; then finish the batch, commit,
/// flush the outbox and return.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    // What runs, and the settings that shape its speed and memory: no secret among them.
    tracing::info!(
        version = %env!("CARGO_PKG_VERSION"),
        state = %config.state_path.display(),
        partitions = config.partitions,
        assigned_partitions = ?config.assigned_partitions,
        changelog = config.changelog,
        cache_customers = config.cache_customers,
        block_cache_mib = config.block_cache_bytes >> 20,
        max_batch_events = config.max_batch_events,
        compression = %config.compression.name(),
        "Starting."
    );
    let store = open_store(&config)?;
    run_on(config, store, shutdown).await
}

/// Readies `store`, kept with the changelog until now perhaps, to be written without it by a
/// `replay`: forgets what the changelog accounted for (`forget_changelog_read`) and takes over
/// what the aggregator that ran beside it counted, if it counted exactly what the state holds
/// (`take_over_from`; a replay reads no changelog, so the aggregator is not brought up to date
/// first, as `run` does).
pub fn write_without_changelog(store: &Store, config: &Config) -> anyhow::Result<()> {
    let first = forget_changelog_read(store)?;
    match aggregator_state_beside(config)? {
        Some(aggregator) => take_over_from(store, &aggregator, config, first),
        None => Ok(()),
    }
}

/// Forgets what the changelog accounted for of `store`, about to be written without it (see
/// [`Store::forget_changelog_read`]), and says so when it had accounted for something: returns
/// whether it had (the state's first start without the changelog).
fn forget_changelog_read(store: &Store) -> anyhow::Result<bool> {
    let partitions = store.forget_changelog_read()?;
    if partitions > 0 {
        tracing::warn!(
            partitions,
            "This state was kept with the changelog, and is written without it now: the changelog will not hold these changes. With the changelog on again, each partition's state goes to it whole as the instance claims it, unless another instance claimed the partition since (its state is then taken from the changelog, and changes made here are dropped)."
        );
    }
    Ok(partitions > 0)
}

/// `run`'s start without the changelog on a state with an aggregator's beside it
/// (`aggregator/` under `state.path`): at the state's `first` start without the changelog, if
/// the aggregator did not count exactly what the state holds (the instance crashed, or its stop
/// ran out of time), the outbox is drained (the instance's last changelog records may wait
/// there) and the aggregator reads the changelog to its end, within
/// `processing.shutdown_flush_seconds` in all; then [`take_over_from`].
async fn take_over_caught_up(
    store: &Store,
    config: &Config,
    telemetry: &Arc<Telemetry>,
    wake: &Arc<Notify>,
    first: bool,
) -> anyhow::Result<()> {
    let Some(aggregator) = aggregator_state_beside(config)? else {
        return Ok(());
    };
    let exact = crate::aggregator::differing(store, &aggregator, config.partitions)?;
    if first && exact != Some(Vec::new()) {
        catch_up(store, &aggregator, config, telemetry, wake).await;
    }
    take_over_from(store, &aggregator, config, first)
}

/// Brings the aggregator over `aggregator` up to the changelog's end, once the instance's outbox
/// is sent, within `processing.shutdown_flush_seconds`; logs how that went.
async fn catch_up(
    store: &Store,
    aggregator: &Store,
    config: &Config,
    telemetry: &Arc<Telemetry>,
    wake: &Arc<Notify>,
) {
    // A start kept for the aggregator and never taken is checked against the claims, which a
    // store without the changelog does not hold: passed over.
    if !matches!(store.aggregator_seed(), Ok(None)) {
        tracing::warn!("The aggregator never took the start this instance kept for it: it is not brought up to date.");
        return;
    }
    tracing::info!("The aggregator's complaint windows and segment days do not count everything this instance's state holds (it stopped without reading the changelog to its end): the outbox is sent, and the aggregator reads the changelog to its end first.");
    let until = Instant::now() + config.shutdown_flush;
    loop {
        wake.notify_one();
        if matches!(store.outbox(1), Ok(pending) if pending.is_empty()) {
            break;
        }
        if Instant::now() >= until {
            tracing::warn!("The outbox was not sent within processing.shutdown_flush_seconds: the aggregator reads what the changelog holds.");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (instance, aggregator) = (store.clone(), aggregator.clone());
    let (telemetry, wake, config) = (telemetry.clone(), wake.clone(), config.clone());
    let read = tokio::task::spawn_blocking(move || {
        let topic = config.topics.changelog.clone();
        let started = aggregator_over(aggregator, &config, &topic, instance).and_then(
            |(mut aggregator, feed)| start(&mut aggregator, &feed).map(|()| (aggregator, feed)),
        );
        match started {
            Ok((mut aggregator, mut feed)) => {
                read_to_end(&mut aggregator, &mut feed.tail, &telemetry, &wake, until)
            }
            Err(e) => tracing::warn!(error = %e, "The aggregator could not start to read the changelog to its end."),
        }
    })
    .await;
    if let Err(e) = read {
        tracing::warn!(error = %e, "The aggregator's reading to the end panicked.");
    }
}

/// Takes over from the `aggregator`'s state its undelivered records and, when they count
/// exactly what `store` holds, its complaint windows and segment days
/// (`aggregator::take_over`), saying what it did. That nothing was counted is said only at the
/// state's `first` start without the changelog: later, the windows are the instance's own.
fn take_over_from(
    store: &Store,
    aggregator: &Store,
    config: &Config,
    first: bool,
) -> anyhow::Result<()> {
    let (verdict, moved) = crate::aggregator::take_over(
        store,
        aggregator,
        config.partitions,
        &config.topics.changelog,
    )?;
    if moved > 0 {
        tracing::info!(
            records = moved,
            "Records the aggregator emitted and had not delivered go out from this instance's outbox."
        );
    }
    match verdict {
        TakeOver::Taken => tracing::info!("This instance takes over the aggregator's complaint windows and baselines and segment days: they count exactly the input its state holds."),
        TakeOver::PassedOver(partitions) => tracing::warn!(
            ?partitions,
            "The aggregator's complaint windows and segment days count other input than this instance's state holds in these partitions (it did not read the instance's last changelog records, or the instance did not own every partition): they are passed over, and the windows and days open now go on with their counts empty."
        ),
        TakeOver::NotCounted if first => tracing::warn!("The aggregator's state here recorded no input it counted (it did not read the changelog to this instance's records): the windows and days open now go on with their counts empty."),
        TakeOver::NotCounted => {}
    }
    Ok(())
}

/// [`run`] on a store the caller opened (a test's store that can be made to refuse writes).
pub async fn run_on(
    config: Config,
    store: Store,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = match (config.changelog, store.changelog()) {
        (true, None) => store.with_changelog(&config.topics.changelog)?,
        _ => store,
    };
    let first_without_changelog = match config.changelog {
        false => forget_changelog_read(&store)?,
        true => false,
    };
    let telemetry = Arc::new(Telemetry::new());
    let listener = tokio::net::TcpListener::bind(config.listen_address)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (config field `http.listen_address`)",
                config.listen_address
            )
        })?;
    tracing::info!(address = %config.listen_address, "HTTP endpoints listening.");
    let http_stop = CancellationToken::new();
    let assignment: Assignment = Arc::default();
    let owns = {
        let assignment = Arc::clone(&assignment);
        move |partition: i32| {
            assignment
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .any(|(_, p)| *p == partition)
        }
    };
    let owners = Arc::new(crate::kafka::Owners::connect(&config)?);
    tokio::spawn({
        let (owners, stop) = (Arc::clone(&owners), http_stop.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            while tokio::select! {
                _ = stop.cancelled() => false,
                _ = every.tick() => true,
            } {
                owners.serve();
            }
        }
    });
    let own_url = config.advertised_url.clone();
    let http = tokio::spawn(http::serve(
        listener,
        HttpState {
            store: store.clone(),
            telemetry: telemetry.clone(),
            partitions: config.partitions,
            risk: Arc::new(config.risk.clone()),
            customer_token: config.customer_lookup_token.clone().map(Arc::new),
            owns: Some(Arc::new(owns)),
            // Not this instance: a partition it just lost still names it until the new owner
            // commits.
            owner_of: Some(Arc::new(move |partition| {
                owners
                    .owner(partition)
                    .filter(|url| Some(url) != own_url.as_ref())
            })),
        },
        http_stop.clone(),
    ));

    let input = Input::connect(&config, store.clone(), telemetry.clone(), assignment)?;
    check_input_partitions(&input, &config, &shutdown)?;
    let mut sink = KafkaSink::connect(
        &config.brokers,
        &config.kafka_security,
        config.compression,
        telemetry.clone(),
    )?;
    if let Some((topic, _)) = store.changelog() {
        sink = sink.with_changelog_progress(ChangelogProgress {
            topic: topic.to_owned(),
            store: store.clone(),
            owned: input.assignment_handle(),
            claims: input.claim_check(),
        });
    }
    // The producer gets ready (three metadata round trips; 50 ms against Tansu while librdkafka
    // connected sparsely, `kafka::client_config`) while the consumer joins and fetches: nothing
    // is in the outbox to send before the first commit.
    let outputs = output_topics(&config);
    let changelog = config.changelog.then(|| config.topics.changelog.clone());
    let checked = tokio::task::spawn_blocking(move || {
        check_outputs(&mut sink, &outputs, changelog.as_deref());
        sink
    });
    let wake = Arc::new(Notify::new());
    let outbox_stop = CancellationToken::new();
    let flush_deadline = FlushDeadline::default();
    let outbox = tokio::spawn({
        let (store, telemetry, wake) = (store.clone(), telemetry.clone(), wake.clone());
        let stop = outbox_stop.clone();
        let deadline = flush_deadline.clone();
        async move {
            // Brokers that do not answer hold the check up to 10 s: a stop meanwhile does not
            // wait for it, and what the outbox holds is sent on the next start.
            let sink = tokio::select! {
                checked = checked => checked.context("readying the producer panicked")?,
                () = stop.cancelled() => return Ok(()),
            };
            drain_outbox(store, sink, telemetry, Outbox::Job, wake, stop, deadline).await
        }
    });
    tracing::info!(brokers = %config.brokers, group = %config.group_id, "Consuming.");

    let mut settings = processor_settings(&config);
    // Whether this instance owns input partition 0: as the shutdown began, once it has (the
    // consumer's close revokes every partition, and the aggregator reads on while the outbox
    // flushes, then to the changelog's end).
    let owned_first_at_shutdown: Arc<std::sync::OnceLock<bool>> = Arc::default();
    let owns_first = {
        let assignment = input.assignment_handle();
        let at_shutdown = owned_first_at_shutdown.clone();
        move || {
            at_shutdown.get().copied().unwrap_or_else(|| {
                let owned = assignment.lock().unwrap_or_else(|p| p.into_inner());
                owned.iter().any(|(_, p)| *p == 0)
            })
        }
    };
    let aggregator = match store.changelog() {
        Some((topic, _)) => {
            settings.aggregation = Aggregation::Elsewhere;
            let owns = owns_first.clone();
            Some(start_aggregator(
                &config,
                topic,
                &telemetry,
                (owns, store.clone()),
                flush_deadline.clone(),
            )?)
        }
        None => None,
    };
    if !config.changelog {
        take_over_caught_up(&store, &config, &telemetry, &wake, first_without_changelog).await?;
    }
    // Last, as a group's first assignment comes once the loop polls: the outbox drains and
    // the aggregator runs by the time partitions are taken on.
    input.join()?;
    let mut processor = Processor::new(store.clone(), settings);
    consume(
        &input,
        &mut processor,
        &telemetry,
        &wake,
        &config,
        &shutdown,
    )
    .await;

    tracing::info!("Shutting down: the last batch is committed; flushing the outbox.");
    let stopping = std::time::Instant::now();
    let _ = flush_deadline.set(tokio::time::Instant::now() + config.shutdown_flush);
    let _ = owned_first_at_shutdown.set(owns_first());
    telemetry.set_ready(false);
    // The revocation waits up to `shutdown_flush` for the outbox; the close gets more on top.
    input
        .close(config.shutdown_flush + Duration::from_secs(10))
        .await;
    outbox_stop.cancel();
    let flushed = outbox.await.context("outbox task failed")?;
    if let Some(aggregator) = aggregator {
        aggregator.stop().await?;
    }
    http_stop.cancel();
    http.await
        .context("HTTP task failed")?
        .context("HTTP server failed")?;
    if flushed.is_ok() {
        let seconds = (stopping.elapsed().as_secs_f64() * 10.0).round() / 10.0;
        tracing::info!(seconds, "Stopped.");
    }
    flushed
}

/// The aggregator's thread and its outbox's drain.
struct AggregatorTask {
    stop: CancellationToken,
    thread: std::thread::JoinHandle<()>,
    outbox_stop: CancellationToken,
    outbox: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl AggregatorTask {
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .context("aggregator thread")?
            .map_err(|_| anyhow::anyhow!("the aggregator thread panicked"))?;
        self.outbox_stop.cancel();
        self.outbox.await.context("aggregator outbox task failed")?
    }
}

/// Starts the aggregator (see `aggregator`) over its own store in `aggregator/` under the state
/// directory: while `owns_first` says this instance owns input partition 0, it reads the
/// changelog `topic` as it grows (a step every quarter of a second at most) and emits the
/// complaint trends and segment metrics of every partition. `instance` is the instance's own
/// store, where a start for the aggregator may wait (`aggregator::keep_seed`).
fn start_aggregator(
    config: &Config,
    topic: &str,
    telemetry: &Arc<Telemetry>,
    (owns_first, instance): (impl Fn() -> bool + Send + 'static, Store),
    flush_deadline: FlushDeadline,
) -> anyhow::Result<AggregatorTask> {
    let path = config.state_path.join("aggregator");
    std::fs::create_dir_all(&path).with_context(|| format!("cannot create {}", path.display()))?;
    let store = open_aggregator_state(config)?;
    hold_window(&store, config, &path.display().to_string())?;
    let (aggregator, feed) = aggregator_over(store.clone(), config, topic, instance)?;
    let sink = KafkaSink::connect(
        &config.brokers,
        &config.kafka_security,
        config.compression,
        telemetry.clone(),
    )?;
    let wake = Arc::new(Notify::new());
    let outbox_stop = CancellationToken::new();
    let outbox = tokio::spawn(drain_outbox(
        store,
        sink,
        telemetry.clone(),
        Outbox::Aggregator,
        wake.clone(),
        outbox_stop.clone(),
        flush_deadline.clone(),
    ));
    let stop = CancellationToken::new();
    let thread = {
        let stop = stop.clone();
        let telemetry = telemetry.clone();
        std::thread::Builder::new()
            .name("aggregator".into())
            .spawn(move || {
                let stopping = (&stop, &flush_deadline);
                aggregate_while_owner(aggregator, feed, owns_first, &telemetry, &wake, stopping)
            })
            .context("cannot start the aggregator thread")?
    };
    Ok(AggregatorTask {
        stop,
        thread,
        outbox_stop,
        outbox,
    })
}

/// The aggregator's own store, if one is beside the instance's (`aggregator/` under
/// `state.path`).
fn aggregator_state_beside(config: &Config) -> anyhow::Result<Option<Store>> {
    match config.state_path.join("aggregator").is_dir() {
        true => Ok(Some(open_aggregator_state(config)?)),
        false => Ok(None),
    }
}

/// The aggregator's own store, `aggregator/` under `state.path` (which must exist).
fn open_aggregator_state(config: &Config) -> anyhow::Result<Store> {
    let path = config.state_path.join("aggregator");
    let backend = RocksBackend::open(&path, config.block_cache_bytes / 8)
        .with_context(|| format!("cannot open the aggregator's state at {}", path.display()))?;
    Ok(Store::open(Arc::new(backend))?)
}

/// An aggregator over its `store`, emitting with `config`'s settings, and where it reads: the
/// changelog `topic`'s tail, a reader for its snapshot, and its `instance`'s store for a seed.
fn aggregator_over(
    store: Store,
    config: &Config,
    topic: &str,
    instance: Store,
) -> anyhow::Result<(Aggregator, AggregatorFeed)> {
    let mut settings = processor_settings(config);
    settings.aggregation = Aggregation::Here;
    let aggregator = Aggregator::new(Processor::new(store, settings), topic, config.partitions);
    let tail = ChangelogTail::connect(
        &config.brokers,
        &config.kafka_security,
        topic,
        config.partitions,
    )?;
    let (brokers, security) = (config.brokers.clone(), config.kafka_security.clone());
    let topic = topic.to_owned();
    let snapshot_source = move || ChangelogReader::connect(&brokers, &security, &topic);
    let feed = AggregatorFeed {
        tail,
        snapshot_source: Box::new(snapshot_source),
        instance,
    };
    Ok((aggregator, feed))
}

/// Where the aggregator reads: the changelog's tail, and a reader for its snapshot at start.
struct AggregatorFeed {
    tail: ChangelogTail,
    snapshot_source: Box<dyn Fn() -> anyhow::Result<ChangelogReader> + Send>,
    /// The instance's own store, for the start kept there when its state went to the
    /// changelog whole.
    instance: Store,
}

/// Whether this instance runs the aggregator, as last seen.
#[derive(Default)]
struct AggregatorRole {
    owner: bool,
}

impl AggregatorRole {
    /// Takes in whether the instance owns input partition 0 now, and returns it. A change is
    /// logged; when the instance stops owning it, its aggregates' gauges are forgotten.
    fn observe(&mut self, owner: bool, telemetry: &Telemetry) -> bool {
        if owner != self.owner {
            if owner {
                tracing::info!("This instance owns input partition 0: it runs the aggregator.");
            } else {
                tracing::info!("This instance no longer owns input partition 0: its aggregator waits, and its aggregates' gauges go.");
                telemetry.forget_aggregates();
            }
            self.owner = owner;
        }
        owner
    }
}

/// The aggregator thread: while `owns_first` says this instance owns input partition 0, starts
/// the aggregator (from the latest snapshot when it never read) and steps it, until `stop`. As
/// the instance gives partition 0 up, and as it stops, the aggregator writes its snapshot for
/// the next owner (`Aggregator::hand_over`); taking partition 0 back, it goes on from a later
/// owner's snapshot when that is ahead of its own store (`Aggregator::catch_up`). Stopped at a
/// graceful shutdown (`deadline` set), it first reads the changelog to its end.
fn aggregate_while_owner(
    mut aggregator: Aggregator,
    mut feed: AggregatorFeed,
    owns_first: impl Fn() -> bool,
    telemetry: &Telemetry,
    wake: &Notify,
    (stop, deadline): (&CancellationToken, &FlushDeadline),
) {
    let (mut role, mut started) = (AggregatorRole::default(), false);
    while !stop.is_cancelled() {
        let was_owner = role.owner;
        let owner = role.observe(owns_first(), telemetry);
        if was_owner && !owner && started {
            hand_over(&mut aggregator, wake);
        }
        if !owner {
            std::thread::sleep(Duration::from_millis(500));
            continue;
        }
        if started && !was_owner {
            // Another aggregator may have gone on meanwhile: from its snapshot, if ahead.
            match (feed.snapshot_source)().and_then(|source| aggregator.catch_up(&source)) {
                Ok(true) => tracing::info!("The aggregator goes on from the snapshot of the one that ran meanwhile, which is ahead of its own store."),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "The aggregator could not look for a newer snapshot; it goes on from its own store, and emits again what was emitted since it last ran."),
            }
            // It dropped the gauges when it gave partition 0 up: the next step shows them all.
            aggregator.show_again();
        }
        if !started {
            match start(&mut aggregator, &feed) {
                Ok(()) => started = true,
                Err(e) => {
                    if let Some(held_back) = repeated(&format!("aggregator start {e}")) {
                        tracing::warn!(error = %e, held_back, "The aggregator could not start; it retries.");
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    continue;
                }
            }
        }
        // A step waits a moment for records itself, and goes on at once while there is more.
        match aggregator.step(&mut feed.tail, wall_clock_ms()) {
            Ok((report, more)) => {
                telemetry.record_aggregates(&report);
                if let Ok(Some(at)) = aggregator.watermark() {
                    telemetry.set_aggregator_watermark(at);
                }
                wake.notify_one();
                if more {
                    continue;
                }
            }
            Err(e) => {
                if let Some(held_back) = repeated(&format!("aggregator step {e}")) {
                    tracing::warn!(error = %e, held_back, "The aggregator's step failed; it retries.");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    // Stopped before it started (a short run): it starts now, to read to the end.
    let owner = role.owner || owns_first();
    if owner && !started && deadline.get().is_some() {
        match start(&mut aggregator, &feed) {
            Ok(()) => started = true,
            Err(e) => {
                tracing::warn!(error = %e, "The aggregator could not start to read the changelog to its end at the stop.")
            }
        }
    }
    // The outbox's last flush, after this thread, delivers it.
    if owner && started {
        if let Some(end) = deadline.get() {
            // Half the time left: the aggregator's own outbox drains in the rest.
            let now = Instant::now();
            let until = now + end.into_std().saturating_duration_since(now) / 2;
            read_to_end(&mut aggregator, &mut feed.tail, telemetry, wake, until);
        }
        hand_over(&mut aggregator, wake);
    }
}

/// Reads the changelog to its end with `aggregator`, until `until` at most, recording each
/// step's aggregates and waking the outbox: at a graceful stop, once the instance's outbox was
/// flushed (`run_on` stops the aggregator only then), or at a lone instance's first start
/// without the changelog after a crash, so that the aggregates count every change the
/// instance's state holds and that instance takes them over (`aggregator::take_over`). A
/// failure or the time running out is logged.
fn read_to_end(
    aggregator: &mut Aggregator,
    tail: &mut ChangelogTail,
    telemetry: &Telemetry,
    wake: &Notify,
    until: Instant,
) {
    let time_left = || Instant::now() < until;
    let mut record = |report: BatchReport| {
        telemetry.record_aggregates(&report);
        wake.notify_one();
    };
    match aggregator.read_to_end(tail, wall_clock_ms(), &time_left, &mut record) {
        Ok(true) => tracing::info!("The aggregator read the changelog to its end."),
        Ok(false) => tracing::warn!("The aggregator did not read the changelog to its end in time (half the shutdown's flush time left at a stop, processing.shutdown_flush_seconds at a start): a lone instance turning the changelog off will not take over its complaint windows and segment days."),
        Err(e) => tracing::warn!(error = %e, "The aggregator could not read the changelog to its end: a lone instance turning the changelog off will not take over its complaint windows and segment days."),
    }
}

/// Starts `aggregator`: from the seed its instance's store keeps (its state went to the changelog
/// whole), else, if it never read, from the latest snapshot in the changelog, else from its own
/// store.
fn start(aggregator: &mut Aggregator, feed: &AggregatorFeed) -> anyhow::Result<()> {
    if start_from_seed(aggregator, &feed.instance)? {
        tracing::info!("The aggregator starts from this instance's complaint windows, segment days and RFM histograms: its state, kept without the changelog, went to it whole.");
        return Ok(());
    }
    let from_snapshot =
        (feed.snapshot_source)().and_then(|source| aggregator.bootstrap(&source))?;
    tracing::info!(from_snapshot, "The aggregator starts.");
    Ok(())
}

/// Starts `aggregator` from the seed the instance's store keeps, if one waits there, and drops
/// the seed. Returns whether it did.
/// A seed kept under an earlier claim of partition 0 than the instance's latest is stale (the
/// instance gave partition 0 up before its aggregator ran, and another aggregator went on from
/// the changelog meanwhile), and one that cannot be read is of no use: both are dropped.
fn start_from_seed(aggregator: &mut Aggregator, instance: &Store) -> anyhow::Result<bool> {
    let seed = match instance.aggregator_seed() {
        Ok(Some(seed)) => seed,
        Ok(None) => return Ok(false),
        Err(e @ StoreError::Corrupt { .. }) => {
            tracing::error!(error = %e, "The aggregator's start kept by this instance cannot be read: it is dropped, and the aggregator starts as it would without.");
            instance.drop_aggregator_seed()?;
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    };
    let claimed = seed.partitions.iter().find(|p| p.0 == 0).map(|p| p.1 - 1);
    if claimed.is_none() || claimed != instance.epoch(0) {
        tracing::warn!("The aggregator's start kept by this instance is of an earlier claim of partition 0 than its latest: it is dropped, and the aggregator starts as it would without.");
        instance.drop_aggregator_seed()?;
        return Ok(false);
    }
    aggregator.adopt_seed(seed)?;
    instance.drop_aggregator_seed()?;
    Ok(true)
}

/// Writes the aggregator's snapshot for the next owner of input partition 0, if it read
/// something since its last, and wakes the outbox drain. A failure is logged: the next owner
/// then starts from the snapshot before, as after a crash.
fn hand_over(aggregator: &mut Aggregator, wake: &Notify) {
    match aggregator.hand_over() {
        Ok(true) => {
            tracing::info!(
                "The aggregator wrote its snapshot for the next owner of input partition 0."
            );
            wake.notify_one();
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(error = %e, "The aggregator could not write its snapshot for the next owner; that owner's aggregator starts from the one before, and emits again what was emitted since.");
        }
    }
}

/// Refuses to start when an input topic's partition count is not `input.partitions`: the
/// group assigns the interactions topic's partitions and each brings the same partition of the
/// other inputs with it, so a partition beyond the interactions topic's count would never be
/// read, and customers would be routed to the wrong partition. A topic not created yet, or
/// brokers that do not answer, only earn a warning.
fn check_input_partitions(
    input: &Input,
    config: &Config,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    // Brokers that do not answer are waited for up to ten seconds, in reads of one second, so
    // that a stop meanwhile is not held up (a single read of ten held a stop 4 s into such a
    // start for 6 s more). A stop ends the check (`None`): nothing failed.
    let read = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = input.mispartitioned_topics(config.partitions, Duration::from_secs(1));
            if shutdown.is_cancelled() {
                return None;
            }
            if found.is_ok() || Instant::now() >= deadline {
                return Some(found);
            }
        }
    };
    // Read up to three times, a second apart, before refusing: once, in a loaded test run
    // against the mock cluster, a job whose topics had the right count refused at start (the
    // reading itself was not kept), and a topic still being created may not show them all.
    let found = tokio::task::block_in_place(|| {
        let mut found = read();
        for _ in 1..3 {
            if !matches!(&found, Some(Ok(wrong)) if !wrong.is_empty()) {
                break;
            }
            std::thread::sleep(Duration::from_secs(1));
            found = read();
        }
        found
    });
    match found {
        None => Ok(()),
        Some(Ok(wrong)) if wrong.is_empty() => Ok(()),
        Some(Ok(wrong)) => {
            let listed: Vec<String> = wrong
                .iter()
                .map(|(topic, count)| format!("{topic} has {count}"))
                .collect();
            anyhow::bail!(
                "input.partitions is {}, but {}: the three input topics must have input.partitions partitions each",
                config.partitions,
                listed.join(", ")
            )
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "Could not read the input topics' partition counts.");
            Ok(())
        }
    }
}

/// The output topics, the churn-risk topic first (see [`check_outputs`]).
fn output_topics(config: &Config) -> Vec<String> {
    let t = &config.topics;
    let mut outputs = vec![
        t.churn_risk.clone(),
        t.complaint_trends.clone(),
        t.segment_metrics.clone(),
        t.dead_letter.clone(),
    ];
    if config.changelog {
        outputs.push(t.changelog.clone());
    }
    outputs
}

/// Warns of missing output topics, then readies the producer once the brokers have answered
/// (see [`KafkaSink::ready`]) for the first of `outputs`. An output topic that does not exist
/// holds up the outbox behind its first record until it is created (or the brokers create it
/// on first use): say so at start, by name. A missing `changelog` holds up more: no partition
/// starts until it exists, since each starts with a claim written to it. Blocks.
fn check_outputs(sink: &mut KafkaSink, outputs: &[String], changelog: Option<&str>) {
    let names: Vec<&str> = outputs.iter().map(String::as_str).collect();
    match sink.missing_topics(&names, Duration::from_secs(10)) {
        Ok(missing) if missing.is_empty() => {}
        Ok(missing) => {
            tracing::warn!(
                topics = ?missing,
                "Output topics not found on the brokers; their records wait in the outbox until the topics exist."
            );
            if let Some(topic) = changelog.filter(|c| missing.iter().any(|m| m == c)) {
                tracing::error!(
                    topic,
                    "The changelog topic (topics.changelog) is not on the brokers: with state.changelog on, no partition starts until it exists, since each starts by claiming its partition of it. Create it compacted, with input.partitions partitions (deploy/docker-compose.yml shows how); the partitions start on their next try."
                );
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "Could not read the brokers' topic list.");
            return;
        }
    }
    if let Some(first) = names.first() {
        sink.ready(first);
    }
}

async fn consume(
    input: &Input,
    processor: &mut Processor,
    telemetry: &Telemetry,
    wake: &Notify,
    config: &Config,
    shutdown: &CancellationToken,
) {
    // The assignment the processor was last told of.
    let mut assigned = Vec::new();
    // The records gathered while the last batch was folded: the start of the next one.
    let mut ahead = Vec::new();
    // The last batch's vector, emptied: the next fold gathers into it, so that the two
    // vectors are reused, at the size batches reach, rather than allocated for every batch.
    let mut spare = Vec::new();
    while !shutdown.is_cancelled() {
        // Before a batch is gathered: none of it may predate a partition's restore.
        input.resolve_claims();
        input.retry_restores();
        if let Some(lead) = config.max_event_time_lead_ms {
            let ahead = processor.partitions_ahead(wall_clock_ms(), lead);
            let (paused, newly) = input.pause_ahead(&ahead);
            telemetry.set_paused_partitions(paused, newly);
        }
        let mut batch = std::mem::replace(&mut ahead, std::mem::take(&mut spare));
        tokio::select! {
            () = input.next_batch(&mut batch, config.max_batch_events, config.max_batch_wait) => {}
            // Records gathered but not committed are read again from the stored offsets.
            () = shutdown.cancelled() => break,
        }
        // Whatever the processor holds of a partition restored from the changelog is stale.
        let restored = input.take_restored();
        for &partition in &restored {
            processor.forget_partition(partition);
        }
        let assignment = input.assignment();
        if restored.is_empty() && assignment == assigned {
            processor.assign(&assignment, wall_clock_ms());
        } else {
            // After a restore or a change of assignment the processor recounts its RFM
            // histograms from the store: off the runtime's own threads.
            tokio::task::block_in_place(|| processor.assign(&assignment, wall_clock_ms()));
            assigned = assignment;
        }
        input.refresh_ownership();
        if batch.is_empty() {
            // Idle input: partitions that stopped delivering stop holding the watermark back.
            let started = Instant::now();
            match tokio::task::block_in_place(|| processor.advance(wall_clock_ms())) {
                Ok(Some(report)) => {
                    let seconds = started.elapsed().as_secs_f64();
                    telemetry.record_batch(&report, seconds, wall_clock_ms());
                    tracing::debug!(
                        timers_fired = report.timers_fired,
                        milliseconds = seconds * 1e3,
                        "Watermark moved on while idle."
                    );
                    wake.notify_one();
                }
                Ok(None) => {}
                Err(e) => {
                    if let Some(held_back) = repeated(&format!("idle watermark {e}")) {
                        tracing::warn!(error = %e, held_back, "Moving the watermark on failed; the next idle poll retries.")
                    }
                }
            }
            spare = batch;
            continue;
        }
        let mut backoff = Duration::from_millis(100);
        tracing::debug!(records = batch.len(), "Batch gathered.");
        loop {
            let started = Instant::now();
            let now = wall_clock_ms();
            let folded = tokio::task::block_in_place(|| {
                fold_gathering(input, processor, &batch, now, &mut ahead, wake, config)
            });
            match folded {
                Ok(report) => {
                    let seconds = started.elapsed().as_secs_f64();
                    telemetry.record_batch(&report, seconds, wall_clock_ms());
                    tracing::debug!(
                        records = batch.len(),
                        customers_written = report.customers_written,
                        outbox_records = report.outbox_records,
                        timers_fired = report.timers_fired,
                        milliseconds = seconds * 1e3,
                        "Batch folded and committed."
                    );
                    telemetry.set_ready(input.has_assignment());
                    input.commit_offsets(&report.offsets);
                    break;
                }
                Err(e) => {
                    // What the failed commit held was not stored; the batch is folded again from
                    // the stored state once the store accepts writes (a part committed before,
                    // at a window's end, is recognised by its event ids). Offsets do not move
                    // past the stored state meanwhile.
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Committing state failed; consumption is paused.");
                    telemetry.commit_failed();
                    telemetry.set_ready(false);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        batch.clear();
        spare = batch;
    }
}

/// The smallest batch whose fold gathers the next one beside it: a backlog's. Live traffic's
/// batches of a few records would pay for a thread each and gain nothing.
const GATHER_BESIDE_FROM: usize = 1_000;

/// Folds and commits `batch`, and wakes the outbox's drain. From [`GATHER_BESIDE_FROM`]
/// records, gathers the next batch into `ahead` on a thread beside the fold meanwhile, so that
/// copying records out of the consumer (0.4 µs a record, 7-8% of the fold thread's time
/// through the broker) is off the fold's thread. The group's rebalances wait for the commit
/// (`Input::hold_rebalances`): a revoked partition's last changes reach the outbox before it
/// is handed over, and a restore never writes beside a fold. The drain is woken before the
/// gathering stops, as a revocation waiting to hand over waits for it. Blocks.
fn fold_gathering(
    input: &Input,
    processor: &mut Processor,
    batch: &[InputRecord],
    now: Millis,
    ahead: &mut Vec<InputRecord>,
    wake: &Notify,
    config: &Config,
) -> Result<BatchReport, StoreError> {
    let commit = |processor: &mut Processor| {
        let result = processor.process(batch, now);
        if result.is_ok() {
            wake.notify_one();
        }
        result
    };
    if batch.len() < GATHER_BESIDE_FROM {
        return commit(processor);
    }
    let runtime = tokio::runtime::Handle::current();
    let held = input.hold_rebalances();
    let (folded, stop) = tokio::sync::oneshot::channel::<()>();
    std::thread::scope(|scope| {
        let gatherer = scope.spawn(|| {
            let stop = async {
                let _ = stop.await;
            };
            runtime.block_on(input.gather_until(ahead, config.max_batch_events, stop));
        });
        let result = commit(processor);
        drop(held);
        drop(folded);
        if let Err(panic) = gatherer.join() {
            std::panic::resume_unwind(panic);
        }
        result
    })
}

/// When the flushes at shutdown must end: `processing.shutdown_flush_seconds` after the
/// shutdown began, set then, before any outbox is told to stop. The consumer's close waits for
/// the outbox first (a revocation does), and the outboxes' last flushes get only what it left.
type FlushDeadline = Arc<std::sync::OnceLock<tokio::time::Instant>>;

/// Drains the outbox whenever a commit wakes it (and every half second), then once more at
/// shutdown until `deadline`. A drain under way when the
/// stop comes is not waited for past that either: a record the brokers have not acknowledged
/// stays in the outbox (librdkafka waits 30 s for an acknowledgement).
async fn drain_outbox<S: Sink>(
    store: Store,
    mut sink: S,
    telemetry: Arc<Telemetry>,
    outbox: Outbox,
    wake: Arc<Notify>,
    stop: CancellationToken,
    deadline: FlushDeadline,
) -> anyhow::Result<()> {
    let time_up = || flush_time_up(&stop, &deadline);
    loop {
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            () = stop.cancelled() => break,
        }
        let drained = tokio::select! {
            drained = drain(&store, &mut sink, &telemetry, outbox, 10_000) => drained,
            () = time_up() => break,
        };
        if let Err(e) = drained {
            if let Some(held_back) = repeated(&format!("outbox {e}")) {
                tracing::error!(error = %e, held_back, "Reading the outbox failed.");
            }
        }
        telemetry.set_state_size(store.size_bytes());
    }
    let flush = async {
        loop {
            drain(&store, &mut sink, &telemetry, outbox, 10_000).await?;
            if store.outbox(1)?.is_empty() {
                return Ok::<_, crate::store::StoreError>(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    // The flush first: an outbox emptied in time is not reported as left over.
    tokio::select! {
        biased;
        flushed = flush => Ok(flushed?),
        () = time_up() => {
            tracing::warn!("The outbox was not empty when the flush time ran out; it is sent on the next start.");
            Ok(())
        }
    }
}

/// Completes once `stop` has come and the shutdown's `deadline` has passed (at once, should a
/// stop come without one).
async fn flush_time_up(stop: &CancellationToken, deadline: &FlushDeadline) {
    stop.cancelled().await;
    if let Some(end) = deadline.get() {
        tokio::time::sleep_until(*end).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;
    use crate::processor::BatchReport;
    use crate::segments::Population;
    use crate::trends::{TrendSettings, Trends};

    /// The gauges an aggregator's step sets, each with the label it gets below.
    const AGGREGATE_GAUGES: [&str; 7] = [
        "customer_pulse_complaints_open{",
        "customer_pulse_complaint_spike{",
        "customer_pulse_complaint_z_score{",
        "customer_pulse_customers{",
        "customer_pulse_churn_risk_customers{",
        "customer_pulse_margin_minor{",
        "customer_pulse_rfm_customers{",
    ];

    /// A sink whose brokers never answer: a delivery waits for ever.
    struct Hanging;

    impl Sink for Hanging {
        async fn deliver(
            &mut self,
            _: &[(u64, std::sync::Arc<crate::store::OutboxRecord>)],
        ) -> Vec<u64> {
            std::future::pending().await
        }
    }

    /// At shutdown the outbox is not waited for past the shutdown's deadline, however long a
    /// delivery under way waits: the consumer's close, which waits for the outbox too, may have
    /// spent the allowance.
    /// Until 2026-12-05 a drain under way was awaited (librdkafka gives up after 30 s), and
    /// the last flush had the whole allowance again: a job whose broker was frozen took 60 s
    /// to stop, 40 s of them closing its consumer.
    #[tokio::test]
    async fn the_outbox_is_not_waited_for_past_the_shutdown_s_deadline() {
        let store = Store::in_memory();
        let record = crate::store::OutboxRecord {
            topic: "customer.churn-risk".into(),
            key: Some(b"c".to_vec()),
            value: Some(b"{}".to_vec()),
            headers: Vec::new(),
            partition: None,
        };
        store
            .commit(crate::store::Commit {
                outbox: vec![record.into()],
                ..Default::default()
            })
            .unwrap();
        let (stop, deadline) = (CancellationToken::new(), FlushDeadline::default());
        let wake = Arc::new(Notify::new());
        let drain = tokio::spawn(drain_outbox(
            store.clone(),
            Hanging,
            Arc::new(Telemetry::new()),
            Outbox::Job,
            wake.clone(),
            stop.clone(),
            deadline.clone(),
        ));
        // A drain is under way (its delivery hangs) when the shutdown begins.
        wake.notify_one();
        tokio::time::sleep(Duration::from_millis(700)).await;
        deadline
            .set(tokio::time::Instant::now() + Duration::from_millis(300))
            .unwrap();
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(60), drain).await;
        assert!(
            matches!(ended, Ok(Ok(Ok(())))),
            "the outbox was waited for past the deadline"
        );
        assert_eq!(
            store.outbox(10).unwrap().len(),
            1,
            "the record waits for the next start"
        );
    }

    fn samples(metrics: &str, prefix: &str) -> Vec<String> {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_owned)
            .collect()
    }

    /// A step's report: a closed billing window that was a spike (three complaints in the first
    /// hour, twenty in the second), open complaints, a population and RFM segments.
    fn aggregated() -> BatchReport {
        const HOUR: i64 = 3_600_000;
        let s = TrendSettings::defaults(&["billing"]);
        let mut trends = Trends::default();
        for (hour, count) in [(0, 3), (1, 20)] {
            for i in 0..count {
                trends.opened("billing", Severity::Low, hour * HOUR + i * 60_000, &s);
            }
        }
        let gold = Population {
            by_lifecycle: [1, 2, 0, 0, 0],
            by_level: [2, 1, 0],
            ..Population::default()
        };
        let closed_windows = trends.close_until(2 * HOUR, &s);
        BatchReport {
            closed_windows,
            verdicts: trends
                .verdicts
                .iter()
                .map(|(c, v)| (c.clone(), *v))
                .collect(),
            open_complaints: vec![("billing".into(), 23)],
            population: Some((
                [("gold".to_owned(), gold)].into(),
                [("gold".to_owned(), 500)].into(),
            )),
            rfm_segments: Some([("champions".to_owned(), 3)].into()),
            ..BatchReport::default()
        }
    }

    #[test]
    fn an_instance_that_stops_running_the_aggregator_stops_exporting_its_aggregates() {
        let telemetry = Telemetry::new();
        let mut role = AggregatorRole::default();
        assert!(!role.observe(false, &telemetry));
        assert!(role.observe(true, &telemetry));
        telemetry.record_aggregates(&aggregated());
        telemetry.set_aggregator_watermark(7_200_000);
        let running = telemetry.render();
        assert!(samples(&running, "customer_pulse_complaint_spike{")
            .contains(&"customer_pulse_complaint_spike{category=\"billing\"} 1".to_owned()));
        for gauge in AGGREGATE_GAUGES {
            assert!(
                !samples(&running, gauge).is_empty(),
                "{gauge} while it runs"
            );
        }
        assert!(role.observe(true, &telemetry), "still the owner");
        assert_eq!(
            telemetry.render(),
            running,
            "nothing forgotten while it owns"
        );

        assert!(!role.observe(false, &telemetry));
        let stopped = telemetry.render();
        for gauge in AGGREGATE_GAUGES {
            assert_eq!(samples(&stopped, gauge), Vec::<String>::new(), "{gauge}");
        }
        assert_eq!(
            samples(&stopped, "customer_pulse_aggregator_watermark_seconds "),
            ["customer_pulse_aggregator_watermark_seconds 0"]
        );
        // What it counted stays counted.
        assert_eq!(
            samples(&stopped, "customer_pulse_complaint_windows_total{"),
            samples(&running, "customer_pulse_complaint_windows_total{")
        );
    }
}
