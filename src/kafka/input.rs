//! The input side: the consumer (a group member, or reading fixed partitions outside the group)
//! that feeds input records in, restores each assigned partition from the changelog before it
//! reads it, and lets partitions go on revocation; and the owner lookup by committed offsets.
//! Must not know how events are decoded or folded.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, Statistics, TopicPartitionList};

use super::changelog::{ChangelogReader, ClaimCheck, ClaimWatch, ClaimedAway};
use super::gaps::{Gap, Positions};
use super::{client_config, client_error, lock, Assignment, LogErrors, FIRST_RECORD};
use crate::config::{Config, OffsetReset};
use crate::event::Stream;
use crate::processor::InputRecord;
use crate::restore::Restored;
use crate::store::Store;
use crate::telemetry::{repeated, Telemetry};

/// How many partitions of one assignment restore from the changelog at the same time.
const RESTORES_AT_ONCE: usize = 4;

/// How long after a failed restore (four attempts) a partition is tried again; each failure
/// doubles the wait, up to [`RESTORE_RETRY_MAX`].
const RESTORE_RETRY_FIRST: Duration = Duration::from_secs(10);
const RESTORE_RETRY_MAX: Duration = Duration::from_secs(300);

/// An assigned partition whose restore failed: not started, tried again at `next`.
#[derive(Debug, Clone, Copy)]
struct Unstarted {
    next: Instant,
    /// The wait before `next`, doubled at each failure.
    wait: Duration,
}

/// Consumer callbacks: on assignment, bring each partition's state up to the changelog, then
/// start it at the offset stored with the state; on revocation, let the outbox drain first.
pub struct PulseContext {
    store: Store,
    reset: OffsetReset,
    telemetry: Arc<Telemetry>,
    assignment: Assignment,
    /// Reads the changelog, when customer writes are mirrored to one.
    changelog: Option<Arc<ChangelogReader>>,
    /// Owned partitions that another instance claimed in the changelog, and when that was found
    /// (see [`ClaimCheck`]).
    claimed_away: ClaimedAway,
    /// How long a partition claimed away may stay owned before this instance claims it back:
    /// the session timeout, by which a member the group really moved it from has been told.
    claim_grace: Duration,
    /// State partitions restored from the changelog since the loop last looked: whatever the
    /// processor has cached of them is stale.
    restored: Arc<Mutex<Vec<i32>>>,
    /// How long a revocation waits for the outbox to drain.
    flush_limit: Duration,
    /// Stored with committed offsets, so that other instances can name this one as the owner.
    advertised_url: Option<String>,
    /// The input topics, distinct, the subscribed one first.
    inputs: Vec<String>,
    /// Their partition count (`input.partitions`).
    partitions: i32,
    /// librdkafka's join state as its statistics last told it (`init` once it left the group,
    /// or before it joined), with when they came.
    join_state: Mutex<(Instant, String)>,
    /// Partitions this instance was given whose restore failed: held back from consuming, and
    /// restored again between batches ([`Input::retry_restores`]) until one succeeds or the
    /// partition is revoked.
    unstarted: Mutex<HashMap<i32, Unstarted>>,
    /// Held by a rebalance while it runs, and by a fold while the next batch is gathered beside
    /// it ([`Input::hold_rebalances`]).
    rebalancing: Mutex<()>,
    /// Where each owned input partition's next record is due, to tell the offsets the brokers
    /// did not deliver ([`Input::next_batch`]).
    positions: Mutex<Positions>,
}

impl PulseContext {
    /// Restores `partitions` side by side, [`RESTORES_AT_ONCE`] at a time, and returns those
    /// restored; the others are noted to be tried again ([`PulseContext::note_unstarted`]).
    /// Side by side: Tansu serves one partition's fetches at about a third of the rate it serves
    /// four (benches/restore.rs), so each restore waits on the broker; each holds a reader, a
    /// writer thread and a chunk in flight, hence the bound.
    fn restore_all(&self, partitions: &[i32]) -> HashSet<i32> {
        let (mut restored, mut published) = (HashSet::new(), 0);
        for group in partitions.chunks(RESTORES_AT_ONCE) {
            std::thread::scope(|scope| {
                let restores: Vec<_> = group
                    .iter()
                    .map(|&p| scope.spawn(move || (p, self.restore(p))))
                    .collect();
                for restore in restores {
                    if let Ok((p, Some(outcome))) = restore.join() {
                        restored.insert(p);
                        published += usize::from(matches!(outcome, Restored::Published { .. }));
                    }
                }
            });
        }
        self.note_unstarted(partitions, &restored);
        if published > 0 {
            self.seed_aggregator(published);
        }
        restored
    }

    /// After `published` partitions' states kept without the changelog went to it
    /// ([`Restored::Published`]): when they are every input partition, this instance's
    /// aggregates are the whole job's, and the aggregator starts from them
    /// ([`crate::aggregator::Aggregator::adopt_seed`]) rather than from empty windows, days
    /// and baselines. Before anything of them is folded, which would move the RFM histograms
    /// the aggregator counts from the changelog's facts.
    fn seed_aggregator(&self, published: usize) {
        if published != self.partitions as usize {
            tracing::warn!(
                published,
                of = self.partitions,
                "Some partitions' states, kept without the changelog, went to it, but not every partition's at once: the aggregator's complaint windows, segment days and baselines start empty."
            );
            return;
        }
        match crate::aggregator::keep_seed(&self.store, self.partitions) {
            Ok(()) => tracing::info!(
                "The state was kept without the changelog: every partition went to it, and the aggregator starts from this instance's complaint windows, segment days and RFM histograms."
            ),
            Err(e) => tracing::warn!(error = %e, "The aggregator's start from this instance's aggregates could not be kept: its complaint windows, segment days and baselines start empty."),
        }
    }

    /// Restores `partition` from the changelog, retrying a failed read a few times. `None`
    /// when it could not: the partition must not start on a state that may be stale.
    fn restore(&self, partition: i32) -> Option<Restored> {
        let Some(reader) = &self.changelog else {
            return Some(Restored::UpToDate);
        };
        let mut wait = Duration::from_millis(500);
        for attempt in 1..=4 {
            let started = std::time::Instant::now();
            let result = crate::restore::restore(
                &self.store,
                reader.as_ref(),
                partition,
                &mut |done, total| {
                    self.telemetry.restore_progress(partition, done, total);
                },
            );
            match result {
                Ok(restored) => {
                    let (outcome, records) = match restored {
                        Restored::UpToDate => ("up_to_date", 0),
                        Restored::Own { .. } => ("own", 0),
                        Restored::Applied {
                            records,
                            from_scratch: false,
                        } => ("tail", records),
                        Restored::Applied {
                            records,
                            from_scratch: true,
                        } => ("from_scratch", records),
                        Restored::LostWrites { records } => ("lost_writes", records),
                        Restored::Published { records } => ("published", records),
                    };
                    self.telemetry.restore_finished(partition, outcome, records);
                    if matches!(
                        restored,
                        Restored::Applied { .. } | Restored::LostWrites { .. }
                    ) {
                        lock(&self.restored).push(partition);
                    }
                    tracing::info!(
                        partition,
                        outcome,
                        records,
                        writer = self.store.changelog().map(|(_, writer)| writer),
                        claim = self.store.epoch(partition),
                        seconds = started.elapsed().as_secs_f64(),
                        "Partition state checked against the changelog."
                    );
                    return Some(restored);
                }
                Err(e) => {
                    tracing::warn!(partition, attempt, error = %e, "Restoring from the changelog failed.");
                    if attempt < 4 {
                        std::thread::sleep(wait);
                        wait *= 2;
                    }
                }
            }
        }
        self.telemetry.restore_finished(partition, "failed", 0);
        tracing::error!(partition, "Restoring from the changelog failed repeatedly; the partition is not started until a later try succeeds.");
        None
    }

    /// Notes those of `partitions` that are not in `restored` as unstarted, to be tried again
    /// after a wait that doubles with each failure; forgets those restored.
    fn note_unstarted(&self, partitions: &[i32], restored: &HashSet<i32>) {
        let mut unstarted = lock(&self.unstarted);
        for &partition in partitions {
            if restored.contains(&partition) {
                unstarted.remove(&partition);
                continue;
            }
            let wait = unstarted
                .get(&partition)
                .map_or(RESTORE_RETRY_FIRST, |u| (u.wait * 2).min(RESTORE_RETRY_MAX));
            tracing::warn!(
                partition,
                seconds = wait.as_secs(),
                "The partition is tried again after a wait."
            );
            unstarted.insert(
                partition,
                Unstarted {
                    next: Instant::now() + wait,
                    wait,
                },
            );
        }
    }

    /// Waits (at most the flush limit) until the outbox is empty, so that the changelog has
    /// every change of the partitions about to go before another instance restores them.
    fn flush_outbox(&self) {
        let deadline = std::time::Instant::now() + self.flush_limit;
        loop {
            match self.store.outbox(1) {
                Ok(pending) if pending.is_empty() => return,
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(_) => {
                    tracing::warn!("The outbox did not drain before the partitions were handed over; the new owner restores without the undelivered changes and folds their events again.");
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "Reading the outbox failed while handing partitions over.");
                    return;
                }
            }
        }
    }
}

impl ClientContext for PulseContext {
    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.telemetry, "consumer", &error, reason);
    }

    fn stats(&self, statistics: Statistics) {
        if let Some(group) = &statistics.cgrp {
            *lock(&self.join_state) = (Instant::now(), group.join_state.clone());
        }
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.telemetry.set_lag(topic, *partition, p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for PulseContext {
    /// The group assigns partitions of the interactions topic alone (see [`Input::join`]);
    /// each one brings the same partition of all three inputs with it, so that a customer's
    /// events are folded by one member. The protocol is cooperative: a callback names only the
    /// partitions that move.
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        // After the fold under way, if any, has committed: a revoked partition's last changes
        // are in the outbox it drains, and a restore writes while nothing else does.
        let _gate = lock(&self.rebalancing);
        let mut partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        partitions.sort_unstable();
        partitions.dedup();
        // A partition that moves is claimed afresh on its next assignment, and restored then.
        {
            let mut away = lock(&self.claimed_away);
            away.retain(|p, _| !partitions.contains(p));
            self.telemetry.set_claimed_away(away.len());
        }
        lock(&self.unstarted).retain(|p, _| !partitions.contains(p));
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                self.take_on(consumer, &partitions)
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                self.hand_over(consumer, &partitions)
            }
            other => {
                tracing::error!(error = ?other, "Rebalance failed; dropping the assignment.");
                lock(&self.unstarted).clear();
                let all: Vec<i32> = (0..self.partitions).collect();
                let mut owned = lock(&self.assignment);
                let stop = self.take_from(&mut owned, &all);
                let _ = consumer.incremental_unassign(&stop);
                self.telemetry.rebalanced("error", 0);
                self.telemetry.set_ready(false);
            }
        }
    }
}

impl PulseContext {
    /// Takes `partitions` on (of every input topic): restores each from the changelog, then
    /// starts it at the offset stored with its state. On a group's assignment, or at start with
    /// `kafka.assigned_partitions`.
    fn take_on<C: Consumer<PulseContext>>(&self, consumer: &C, partitions: &[i32]) {
        // Readiness falls while state is restored; the loop raises it again. The restore runs
        // without holding the assignment, which the outbox drain reads.
        let mut restored = HashSet::new();
        if !partitions.is_empty() {
            self.telemetry.set_ready(false);
            restored = tokio::task::block_in_place(|| self.restore_all(partitions));
        }
        let mut owned = lock(&self.assignment);
        let start = self.start(consumer, partitions, &restored, &mut owned);
        if start.count() > 0 {
            self.telemetry.rebalanced("assign", owned.len());
        }
        // None owned is left alone: the input topics may not exist yet.
        let held = owned.len() / self.inputs.len();
        if self.changelog.is_none() && held > 0 && held < self.partitions as usize {
            tracing::error!(
                owned = held,
                of = self.partitions,
                "state.changelog is off, yet another instance shares the input partitions: a partition that moves loses its state, and each instance emits partial complaint trends and segment metrics. Turn state.changelog on for every instance."
            );
        }
        self.telemetry.set_ready(!owned.is_empty());
    }

    /// Hands `partitions` over: lets the outbox drain, so that the changelog has every change
    /// of theirs before another instance restores them, releases them in the changelog (see
    /// [`crate::restore::ForeignClaim`]), then stops them.
    fn hand_over<C: Consumer<PulseContext>>(&self, consumer: &C, partitions: &[i32]) {
        if let Some(changelog) = &self.changelog {
            tokio::task::block_in_place(|| {
                self.flush_outbox();
                let held: Vec<i32> = {
                    let owned = lock(&self.assignment);
                    let held = |p: &&i32| owned.iter().any(|(_, q)| q == *p);
                    partitions.iter().filter(held).copied().collect()
                };
                if let Err(e) = crate::restore::release(&self.store, &**changelog, &held) {
                    tracing::warn!(partitions = ?held, error = %e, "Releasing partitions in the changelog failed: an instance the group gave them back to without telling it waits a session timeout, then lets them go and rejoins the group.");
                }
            });
        }
        let mut owned = lock(&self.assignment);
        let stop = self.take_from(&mut owned, partitions);
        if let Err(e) = consumer.incremental_unassign(&stop) {
            tracing::error!(error = %e, "Unassigning partitions failed.");
        }
        if stop.count() > 0 {
            self.telemetry.rebalanced("revoke", owned.len());
        }
        self.telemetry.set_ready(!owned.is_empty());
    }

    /// Starts the `restored` ones of `partitions`, in every input topic, at the offsets stored
    /// with their state, adds them to `owned`, and commits those offsets at once with this
    /// instance's address: the others name it as the owner from now on, even before it folds
    /// anything. Returns what was assigned.
    fn start<C: Consumer<PulseContext>>(
        &self,
        consumer: &C,
        partitions: &[i32],
        restored: &HashSet<i32>,
        owned: &mut HashSet<(String, i32)>,
    ) -> TopicPartitionList {
        let mut start = TopicPartitionList::new();
        for &partition in partitions.iter().filter(|p| restored.contains(p)) {
            let Some(offsets) = self.start_offsets(partition) else {
                continue;
            };
            for (topic, offset) in offsets {
                if let Err(e) = start.add_partition_offset(topic, partition, offset) {
                    tracing::error!(topic, partition, error = %e, "Partition could not be added to the assignment.");
                    continue;
                }
                tracing::info!(topic, partition, ?offset, "Partition assigned.");
                owned.insert((topic.to_owned(), partition));
                let next = match offset {
                    Offset::Offset(next) => Some(next),
                    _ => None,
                };
                lock(&self.positions).start(topic, partition, next);
            }
        }
        if let Err(e) = consumer.incremental_assign(&start) {
            tracing::error!(error = %e, "Assigning partitions failed.");
        }
        let stored: Vec<(String, i32, i64)> = start
            .elements()
            .iter()
            .filter_map(|e| match e.offset() {
                Offset::Offset(next) => Some((e.topic().to_owned(), e.partition(), next)),
                _ => None,
            })
            .collect();
        commit_with_url(consumer, &stored, self.advertised_url.as_deref());
        start
    }

    /// Where each input topic's `partition` starts: at the offset stored with the state, or
    /// by the reset policy where none is stored. `None` when a stored offset cannot be read:
    /// starting elsewhere would lose or repeat events, so the partition is not started, and
    /// the error surfaces when the loop's next commit meets the same store.
    fn start_offsets(&self, partition: i32) -> Option<Vec<(&str, Offset)>> {
        let mut offsets = Vec::with_capacity(self.inputs.len());
        for topic in &self.inputs {
            let offset = match self.store.offset(topic, partition) {
                Ok(Some(next)) => Offset::Offset(next),
                Ok(None) => match self.reset {
                    OffsetReset::Earliest => FIRST_RECORD,
                    OffsetReset::Latest => Offset::End,
                },
                Err(e) => {
                    tracing::error!(topic, partition, error = %e, "Reading the stored offset failed; the partition is not started.");
                    return None;
                }
            };
            offsets.push((topic.as_str(), offset));
        }
        Some(offsets)
    }

    /// Removes `partitions` of every input topic from `owned` and returns those that were
    /// there, to be unassigned: a partition whose restore failed was never started.
    fn take_from(
        &self,
        owned: &mut HashSet<(String, i32)>,
        partitions: &[i32],
    ) -> TopicPartitionList {
        let mut stop = TopicPartitionList::new();
        for &partition in partitions {
            for topic in &self.inputs {
                if owned.remove(&(topic.clone(), partition)) {
                    stop.add_partition(topic, partition);
                    self.telemetry.forget_partition(topic, partition);
                    lock(&self.positions).forget(topic, partition);
                    tracing::info!(topic, partition, "Partition revoked.");
                }
            }
        }
        stop
    }
}

/// The input side: reads the three input topics, either as a consumer-group member subscribed to
/// the first and assigned the same partitions of the others (see [`PulseContext::rebalance`]),
/// or, with `kafka.assigned_partitions`, the partitions listed, without joining the group.
pub struct Input {
    /// `Some` for as long as the Input is usable: taken only by [`Input::close`] and by `Drop`,
    /// which close it off the caller's thread ([`close_elsewhere`]).
    consumer: Option<StreamConsumer<PulseContext>>,
    assignment: Assignment,
    /// Each input topic's name, shared by its records, and its stream.
    streams: Vec<(Arc<str>, Stream)>,
    restored: Arc<Mutex<Vec<i32>>>,
    /// When the owned partitions' offsets were last committed again (see
    /// [`Input::refresh_ownership`]).
    ownership_refreshed: Mutex<Instant>,
    /// Where the changelog's delivery reports send their gaps, when there is a changelog.
    claim_check: Option<ClaimCheck>,
    /// `kafka.assigned_partitions`: `None` when the group assigns.
    fixed: Option<Vec<i32>>,
    /// When this member left the group to join it again, until it does (see [`Input::rejoin`]).
    rejoining: Mutex<Option<Instant>>,
    /// The input partitions [`Input::pause_ahead`] paused and has not resumed yet (owned, or
    /// revoked since).
    paused: Mutex<HashSet<(String, i32)>>,
}

/// How long a member that left the group to join it again waits for the leaving to be done
/// (see [`Input::rejoin_when_left`]).
const REJOIN_WAIT: Duration = Duration::from_secs(60);

/// How often an instance commits its owned partitions' offsets again, idle or not.
const OWNERSHIP_REFRESH: Duration = Duration::from_secs(5);

impl Input {
    /// Connects, without reading yet (see [`Input::join`]); `assignment` is kept up to date
    /// with the partitions this instance owns.
    pub fn connect(
        config: &Config,
        store: Store,
        telemetry: Arc<Telemetry>,
        assignment: Assignment,
    ) -> anyhow::Result<Input> {
        let streams: Vec<(Arc<str>, Stream)> = Stream::ALL
            .iter()
            .map(|&stream| (config.topics.input(stream).into(), stream))
            .collect();
        let mut inputs: Vec<String> = Vec::with_capacity(streams.len());
        for (topic, _) in &streams {
            if !inputs.iter().any(|i| **i == **topic) {
                inputs.push(topic.to_string());
            }
        }
        telemetry.set_input_partitions(inputs.len() * config.partitions.max(0) as usize);
        let restored = Arc::default();
        let changelog = match store.changelog() {
            Some((topic, _)) => Some(Arc::new(ChangelogReader::connect(
                &config.brokers,
                &config.kafka_security,
                topic,
            )?)),
            None => None,
        };
        let claimed_away = ClaimedAway::default();
        let claim_check = match &changelog {
            Some(reader) => Some(ClaimCheck::start(
                ClaimWatch {
                    store: store.clone(),
                    reader: Arc::clone(reader),
                    owned: assignment.clone(),
                    claimed_away: Arc::clone(&claimed_away),
                    telemetry: Arc::clone(&telemetry),
                    marks: HashMap::new(),
                },
                // Well within the session timeout that a claim is given before it is acted on.
                config.session_timeout / 2,
            )?),
            None => None,
        };
        let context = PulseContext {
            store,
            reset: config.offset_reset,
            telemetry,
            assignment: assignment.clone(),
            changelog,
            claimed_away,
            claim_grace: config.session_timeout,
            restored: Arc::clone(&restored),
            flush_limit: config.shutdown_flush,
            advertised_url: config.advertised_url.clone(),
            inputs: inputs.clone(),
            partitions: config.partitions,
            join_state: Mutex::new((Instant::now(), String::new())),
            unstarted: Mutex::default(),
            rebalancing: Mutex::new(()),
            positions: Mutex::default(),
        };
        let mut client = client_config(&config.brokers, &config.kafka_security);
        if let Ok(debug) = std::env::var("PULSE_KAFKA_DEBUG") {
            client.set("debug", debug);
        }
        if let Some(id) = &config.group_instance_id {
            client.set("group.instance.id", id);
        }
        let consumer: StreamConsumer<PulseContext> = client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            // Where a partition starts when its offset is out of range (retention removed the
            // records after it): `kafka.auto_offset_reset`, as for one with none stored.
            .set(
                "auto.offset.reset",
                match config.offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            )
            .set("statistics.interval.ms", "5000")
            // How long a fetch may wait for records. Apache Kafka answers as soon as records
            // arrive, whatever this is; Tansu 0.6.0 waits it out on every fetch, records or not,
            // so it is a floor under every event's latency there (README, *Latency*).
            .set(
                "fetch.wait.max.ms",
                config.fetch_wait.as_millis().to_string(),
            )
            // When the local queue holds more than librdkafka's threshold (100,000 records),
            // fetching stops for this long: librdkafka's 1,000 ms default left the job idle for
            // up to a second after it had folded the queue down, a third of a 200,000-event
            // run through the broker in some runs (README, *Through the broker*). The fetch
            // wait bounds the pause as it bounds a fetch.
            .set(
                "fetch.queue.backoff.ms",
                config.fetch_wait.as_millis().to_string(),
            )
            // A rebalance moves only the partitions that must move; the others keep folding.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                config.session_timeout.as_millis().to_string(),
            )
            // Three heartbeats per session, so a short session (a test's) stays valid.
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout.as_millis() / 3)
                    .min(3_000)
                    .to_string(),
            )
            .create_with_context(context)?;
        Ok(Input {
            consumer: Some(consumer),
            assignment,
            streams,
            restored,
            ownership_refreshed: Mutex::new(Instant::now()),
            claim_check,
            fixed: config.assigned_partitions.clone(),
            rejoining: Mutex::new(None),
            paused: Mutex::new(HashSet::new()),
        })
    }

    /// Starts reading: joins the group, or takes the configured partitions on at once
    /// (restored from the changelog first, when there is one).
    pub fn join(&self) -> anyhow::Result<()> {
        let consumer = self.consumer();
        let context = consumer.context();
        match &self.fixed {
            Some(partitions) => {
                tracing::info!(
                    ?partitions,
                    "Reading the assigned partitions, without joining the group."
                );
                context.take_on(consumer, partitions);
            }
            // Partition p of all three inputs must go to one member: a customer's state is
            // folded from all three. cooperative-sticky balances topic-partitions one by one
            // and would split them, so the group is given one topic to assign, and each of its
            // partitions brings the others' along (`PulseContext::rebalance`): the input topics
            // must have the same partition count, which the pipeline checks at start
            // (`mispartitioned_topics`).
            None => consumer.subscribe(&[context.inputs[0].as_str()])?,
        }
        Ok(())
    }

    /// The input topics whose partition count is not `expected` (`input.partitions`), with
    /// their count; a topic the brokers do not know yet is not listed. Blocks up to `timeout`.
    pub fn mispartitioned_topics(
        &self,
        expected: i32,
        timeout: Duration,
    ) -> anyhow::Result<Vec<(String, usize)>> {
        let metadata = self.consumer().fetch_metadata(None, timeout)?;
        let inputs = &self.consumer().context().inputs;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| inputs.iter().any(|i| i == t.name()) && t.error().is_none())
            .map(|t| (t.name().to_owned(), t.partitions().len()))
            .filter(|&(_, count)| count != expected as usize)
            .collect())
    }

    /// Leaves the group within about `limit`: unsubscribes, serves the rebalance that hands the
    /// partitions back (the outbox drains first, as on any revocation), then closes the
    /// consumer. librdkafka's cooperative close can hang when a rebalance is under way
    /// (confluentinc/librdkafka#4527, #4884); with no partition left it has nothing to wait
    /// for, and a close that still does not finish in time is left behind on a thread of its
    /// own, with an error logged, rather than hold the shutdown forever.
    pub async fn close(mut self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        match &self.fixed {
            // No group to leave: the partitions are handed over here, as on a revocation (of
            // those listed, only the ones started are owned, and only those stop).
            Some(partitions) => self
                .consumer()
                .context()
                .hand_over(self.consumer(), partitions),
            None => self.consumer().unsubscribe(),
        }
        // Records still fetched are not folded: their offsets are not stored, so the next
        // owner reads them again.
        while self.has_assignment() && tokio::time::Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_millis(100), self.consumer().recv()).await;
        }
        let Some(consumer) = self.consumer.take() else {
            return;
        };
        let (closed, done) = tokio::sync::oneshot::channel();
        if !close_elsewhere(consumer, Some(closed)) {
            return;
        }
        let rest = deadline
            .saturating_duration_since(tokio::time::Instant::now())
            .max(Duration::from_secs(5));
        if tokio::time::timeout(rest, done).await.is_err() {
            tracing::error!(
                seconds = rest.as_secs(),
                "The consumer did not close in time; shutting down without waiting for it."
            );
        }
    }

    /// The consumer, which only `close` and `Drop` take.
    fn consumer(&self) -> &StreamConsumer<PulseContext> {
        self.consumer
            .as_ref()
            .expect("the consumer is taken only as the Input goes")
    }

    /// The state partitions restored from the changelog since the last call.
    pub fn take_restored(&self) -> Vec<i32> {
        std::mem::take(&mut *lock(&self.restored))
    }

    /// The shared set of owned partitions, for the changelog's delivery reports.
    pub fn assignment_handle(&self) -> Assignment {
        Arc::clone(&self.assignment)
    }

    /// Where the changelog's delivery reports send the gaps they find (see [`ClaimCheck`]).
    pub fn claim_check(&self) -> Option<ClaimCheck> {
        self.claim_check.clone()
    }

    /// Acts, between batches, on the owned partitions that another instance claimed in the
    /// changelog ([`ClaimCheck`]) and that this one has not claimed again since. Nothing this
    /// member wrote after that claim counts.
    ///
    /// - In a group, the claimant has released the partition since (it was revoked from it),
    ///   yet the group still leaves it here: the group handed it on and back without telling
    ///   this member, as Tansu can. This member claims it again, restores it as on an
    ///   assignment (from scratch, as it wrote after the claim) and consumes it again from the
    ///   offsets restored.
    /// - In a group, the claimant still holds it a session timeout later (a member the group
    ///   really moved it from has been told by then): the group handed it on without telling
    ///   this member, as Tansu can. This member lets it go at once, as on a revocation, so
    ///   that two members do not fold it side by side, and leaves the group and joins it again
    ///   (`Input::rejoin`), so that its own view of what it holds is the coordinator's again.
    /// - With `kafka.assigned_partitions`, a session timeout later: two instances are configured
    ///   with the same partitions. This one claims them back, as above, and logs an error.
    ///
    /// Between batches, so that no fetched record of such a partition is folded on top of a
    /// restored state it does not follow.
    pub fn resolve_claims(&self) {
        let context = self.consumer().context();
        self.rejoin_when_left();
        let (claim_back, let_go): (Vec<i32>, Vec<i32>) = {
            let mut away = lock(&context.claimed_away);
            // Nearly always: called before every batch.
            if away.is_empty() {
                return;
            }
            let owned = lock(&context.assignment);
            // An assignment since claimed the partition afresh.
            away.retain(|p, away| {
                owned.iter().any(|(_, q)| q == p)
                    && context
                        .store
                        .epoch(*p)
                        .is_none_or(|epoch| epoch < away.claim.offset)
            });
            let (mut claim_back, mut let_go) = (Vec::new(), Vec::new());
            for (&partition, away) in away.iter() {
                let grace_over = away.found.elapsed() >= context.claim_grace;
                match &self.fixed {
                    Some(_) if grace_over => claim_back.push(partition),
                    None if away.claim.released => claim_back.push(partition),
                    None if grace_over => let_go.push(partition),
                    _ => {}
                }
            }
            away.retain(|p, _| !claim_back.contains(p) && !let_go.contains(p));
            context.telemetry.set_claimed_away(away.len());
            (claim_back, let_go)
        };
        if !let_go.is_empty() {
            tracing::warn!(partitions = ?let_go, "Another instance claimed these partitions in the changelog and still holds them, yet the group leaves them with this one too: the group handed them on without telling this one. Letting them go, then leaving the group and joining it again.");
            context.hand_over(self.consumer(), &let_go);
            context.telemetry.let_go(let_go.len());
            self.rejoin();
        }
        if claim_back.is_empty() {
            return;
        }
        if self.fixed.is_some() {
            tracing::error!(partitions = ?claim_back, "Another instance claimed these partitions in the changelog, yet kafka.assigned_partitions lists them for this one: two instances are configured with the same partitions. Claiming them again and restoring them; give each partition to one instance.");
        } else {
            tracing::warn!(partitions = ?claim_back, "Another instance claimed these partitions in the changelog and released them since, yet the group never told this one: it handed them on and back. Claiming them again and restoring them.");
        }
        context.telemetry.set_ready(false);
        let restored = tokio::task::block_in_place(|| context.restore_all(&claim_back));
        let mut owned = lock(&context.assignment);
        let mut stop = TopicPartitionList::new();
        for &partition in &claim_back {
            for topic in &context.inputs {
                if owned.remove(&(topic.clone(), partition)) {
                    stop.add_partition(topic, partition);
                }
            }
        }
        if let Err(e) = self.consumer().incremental_unassign(&stop) {
            tracing::error!(error = %e, "Unassigning partitions to claim them back failed.");
        }
        context.start(self.consumer(), &claim_back, &restored, &mut owned);
        context.telemetry.set_assigned_partitions(owned.len());
        context.telemetry.claimed_back(claim_back.len());
        context.telemetry.set_ready(!owned.is_empty());
    }

    /// Restores again, between batches, the assigned partitions whose restore failed and whose
    /// wait is over, and starts those restored as an assignment does. A partition that is never
    /// restored is never consumed: the broker or changelog fault that failed it (a topic not
    /// readable yet, a broker down for longer than four attempts) is often gone minutes later,
    /// and the instance should not need a restart to notice.
    pub fn retry_restores(&self) {
        let context = self.consumer().context();
        let due: Vec<i32> = {
            let unstarted = lock(&context.unstarted);
            if unstarted.is_empty() {
                return;
            }
            let now = Instant::now();
            let mut due: Vec<i32> = unstarted
                .iter()
                .filter(|(_, u)| u.next <= now)
                .map(|(p, _)| *p)
                .collect();
            due.sort_unstable();
            due
        };
        if due.is_empty() {
            return;
        }
        tracing::info!(partitions = ?due, "Restoring again the partitions whose restore failed.");
        // No rebalance runs meanwhile: its callbacks run on this loop, when it polls.
        let restored = tokio::task::block_in_place(|| context.restore_all(&due));
        let mut owned = lock(&context.assignment);
        context.start(self.consumer(), &due, &restored, &mut owned);
        if !restored.is_empty() {
            let mut started: Vec<i32> = restored.into_iter().collect();
            started.sort_unstable();
            tracing::info!(partitions = ?started, "Partitions restored on a later try; consuming them.");
        }
        context.telemetry.set_assigned_partitions(owned.len());
        context.telemetry.set_ready(!owned.is_empty());
    }

    /// Leaves the group, to join it again as a new member ([`Input::rejoin_when_left`]): the
    /// coordinator then starts a new generation that every member joins. The partitions are
    /// revoked first (the outbox drains, as on any revocation). The records polled meanwhile
    /// drive it.
    fn rejoin(&self) {
        let mut rejoining = lock(&self.rejoining);
        if rejoining.is_none() {
            *rejoining = Some(Instant::now());
            self.consumer().context().telemetry.rejoined();
            self.consumer().unsubscribe();
        }
    }

    /// Subscribes again once the leaving asked for by [`Input::rejoin`] is done: the
    /// subscription is gone and librdkafka's statistics, taken since, show it in its `init`
    /// join state, which it reaches once it has sent the LeaveGroup. Not before: librdkafka
    /// holds a leaving back while a rebalance is under way, and a subscription made meanwhile
    /// cancels it, or turns it into a rejoin under the old member id (in the scale test, an
    /// instance "rejoined" four times in a minute and was revoked nothing, and another was
    /// assigned nothing for a minute after). After [`REJOIN_WAIT`] it subscribes anyway.
    fn rejoin_when_left(&self) {
        let mut rejoining = lock(&self.rejoining);
        let Some(since) = *rejoining else {
            return;
        };
        let context = self.consumer().context();
        let left = {
            let (at, state) = &*lock(&context.join_state);
            *at > since && state == "init"
        };
        let unsubscribed = self
            .consumer()
            .subscription()
            .is_ok_and(|topics| topics.count() == 0);
        let done = left && unsubscribed;
        if !done && since.elapsed() < REJOIN_WAIT {
            return;
        }
        *rejoining = None;
        if !done {
            tracing::warn!(
                seconds = REJOIN_WAIT.as_secs(),
                "The consumer has not left the group yet; joining it again anyway."
            );
        }
        match self.consumer().subscribe(&[context.inputs[0].as_str()]) {
            Ok(()) => {
                context.telemetry.subscribed_again();
                tracing::info!("Left the group; joining it again.");
            }
            // The gauge stays at 1: it holds nothing and will not.
            Err(e) => {
                tracing::error!(error = %e, "Subscribing again after leaving the group failed; this instance consumes nothing until it restarts.")
            }
        }
    }

    /// Adds to `batch` every record already fetched, up to `max` in all; with `batch` empty it
    /// first waits for one (at most 200 ms, so that a caller's shutdown check runs even on an
    /// idle stream). While fewer than `max`, it waits up to `linger` (`max_batch_wait`) for
    /// more. With `linger` zero, the default, a batch is only what arrived while the last one
    /// was folded: no event waits for a batch to fill. Then drops the records of partitions no
    /// longer owned, and counts and logs the offsets the brokers passed over.
    pub async fn next_batch(&self, batch: &mut Vec<InputRecord>, max: usize, linger: Duration) {
        let deadline = tokio::time::Instant::now() + linger;
        // One stream for the whole batch: each `recv` makes a stream of its own, which takes
        // a slot in the consumer's table of wakers and gives it back, two locks per record.
        let mut messages = self.consumer().stream();
        while batch.len() < max {
            let next = if batch.is_empty() {
                tokio::time::timeout(Duration::from_millis(200), messages.next()).await
            } else {
                match messages.next().now_or_never() {
                    Some(next) => Ok(next),
                    None if linger.is_zero() => break,
                    None => tokio::time::timeout_at(deadline, messages.next()).await,
                }
            };
            // A consumer's stream never ends.
            let Ok(Some(next)) = next else {
                break;
            };
            if !self.take(next, batch) {
                break;
            }
        }
        self.keep_owned(batch);
        self.follow(batch);
    }

    /// Adds to `batch` the records fetched until `stop` completes or `batch` holds `max`: the
    /// next batch, gathered while the fold works on the last one. The rebalances it serves wait
    /// for that fold to be committed (see [`Input::hold_rebalances`]). A record taken stays in
    /// `batch` even when the stop comes while the next is awaited.
    pub async fn gather_until(
        &self,
        batch: &mut Vec<InputRecord>,
        max: usize,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let mut messages = self.consumer().stream();
        let mut stop = std::pin::pin!(stop);
        while batch.len() < max {
            let next = tokio::select! {
                biased;
                () = &mut stop => return,
                next = messages.next() => next,
            };
            let Some(next) = next else {
                return;
            };
            if !self.take(next, batch) {
                return;
            }
        }
    }

    /// Copies a message into `batch`; `false` for a consumer error, which is logged.
    fn take(
        &self,
        next: Result<rdkafka::message::BorrowedMessage<'_>, KafkaError>,
        batch: &mut Vec<InputRecord>,
    ) -> bool {
        let message = match next {
            Ok(message) => message,
            Err(e) => {
                if let Some(held_back) = repeated(&format!("consume {e}")) {
                    tracing::warn!(error = %e, held_back, "Consuming failed; retrying.");
                }
                return false;
            }
        };
        let topic = message.topic();
        let (source, stream) = match self.streams.iter().find(|(t, _)| **t == *topic) {
            Some((t, s)) => (Arc::clone(t), Some(*s)),
            None => (Arc::from(topic), None),
        };
        batch.push(InputRecord {
            source,
            source_partition: message.partition(),
            offset: message.offset(),
            stream,
            state_partition: Some(message.partition()),
            key: message.key().map(<[u8]>::to_vec),
            payload: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
            cut_from: None,
            append_time_ms: message.timestamp().to_millis(),
        });
        true
    }

    /// Drops the records of partitions revoked while `batch` was gathered: they belong to
    /// their new owner. Looked up once per run of records from one partition rather than once
    /// per record.
    fn keep_owned(&self, batch: &mut Vec<InputRecord>) {
        let owned = lock(&self.assignment);
        let mut run: Option<(Arc<str>, i32, bool)> = None;
        batch.retain(|r| match &run {
            Some((source, partition, keep))
                if Arc::ptr_eq(source, &r.source) && *partition == r.source_partition =>
            {
                *keep
            }
            _ => {
                let keep = owned.contains(&(r.source.to_string(), r.source_partition));
                run = Some((Arc::clone(&r.source), r.source_partition, keep));
                keep
            }
        });
    }

    /// Follows each partition's offsets through `batch` (every record of it, gathered beside the
    /// last fold or not, passes here once, in order): the offsets its records pass over held
    /// records the brokers did not deliver (see [`super::gaps`]), counted in
    /// `customer_pulse_input_offsets_skipped_total` and warned of.
    fn follow(&self, batch: &[InputRecord]) {
        let context = self.consumer().context();
        let mut gaps = Vec::new();
        lock(&context.positions).follow(batch, &mut gaps);
        for Gap {
            topic,
            partition,
            from,
            to,
        } in gaps
        {
            let skipped = to - from;
            context.telemetry.offsets_skipped(&topic, skipped as u64);
            if let Some(held_back) = repeated(&format!("offsets skipped {topic} {partition}")) {
                tracing::warn!(
                    topic = &*topic,
                    partition,
                    from,
                    to,
                    skipped,
                    held_back,
                    "The brokers delivered this input partition's records from `to` on where `from` was next: the offsets between held records this instance was not given. Retention deleted them before they were read (the instance fell behind: raise the topic's retention or catch up sooner), the topic is compacted, or a transactional publisher's markers and aborted records hold them (a marker takes one offset per transaction and partition: gaps of one); Tansu 0.6.0 also serves a fetch that starts inside a record batch from the next batch on. Counted in customer_pulse_input_offsets_skipped_total and customer_pulse_input_offset_gaps_total; warned at most every 30 s per partition."
                );
            }
        }
    }

    /// Pauses the owned partitions among `ahead` (read too far ahead in event time:
    /// `Processor::partitions_ahead`) and resumes the others it paused, so that the
    /// partitions behind are fetched while those ahead wait. librdkafka drops what it had
    /// fetched of a partition it pauses and fetches again from the next record on resume, so
    /// nothing is lost or read twice; records already taken into a batch are folded. A paused
    /// partition revoked meanwhile is resumed too: librdkafka keeps a partition the
    /// application paused paused across a revocation and a later assignment, which would
    /// otherwise start paused. Only partitions it paused are resumed. Returns how many owned
    /// partitions are paused, and how many of them it paused now.
    pub fn pause_ahead(&self, ahead: &[(String, i32)]) -> (usize, usize) {
        let owned = lock(&self.assignment).clone();
        let mut paused = lock(&self.paused);
        let wanted: HashSet<&(String, i32)> = ahead.iter().filter(|p| owned.contains(*p)).collect();
        let pause: Vec<&(String, i32)> = wanted
            .iter()
            .copied()
            .filter(|p| !paused.contains(*p))
            .collect();
        let resume: Vec<(String, i32)> = paused
            .iter()
            .filter(|p| !wanted.contains(p))
            .cloned()
            .collect();
        let mut newly = 0;
        if !pause.is_empty() {
            match self
                .consumer()
                .pause(&partition_list(pause.iter().copied()))
            {
                Ok(()) => {
                    tracing::debug!(partitions = ?pause, "Paused: read too far ahead in event time.");
                    newly = pause.len();
                    paused.extend(pause.into_iter().cloned());
                }
                Err(e) => {
                    if let Some(held_back) = repeated(&format!("pause {e}")) {
                        tracing::warn!(error = %e, held_back, "Pausing partitions read ahead in event time failed; they are read on.");
                    }
                }
            }
        }
        if !resume.is_empty() {
            match self.consumer().resume(&partition_list(&resume)) {
                Ok(()) => {
                    tracing::debug!(partitions = ?resume, "Resumed: the others came within the lead, or revoked.");
                    for p in &resume {
                        paused.remove(p);
                    }
                }
                Err(e) => {
                    if let Some(held_back) = repeated(&format!("resume {e}")) {
                        tracing::warn!(error = %e, held_back, "Resuming partitions failed; retried after the next batch.");
                    }
                }
            }
        }
        (paused.iter().filter(|p| owned.contains(*p)).count(), newly)
    }

    /// Holds off the group's rebalances for as long as the guard lives: a fold holds it while
    /// the next batch is gathered beside it ([`Input::gather_until`]), so that a partition is
    /// handed over only after the fold's commit, and restored only while no fold writes.
    pub fn hold_rebalances(&self) -> std::sync::MutexGuard<'_, ()> {
        lock(&self.consumer().context().rebalancing)
    }

    /// Tells Kafka the offsets already committed with the state, so that lag tools see them,
    /// with this instance's advertised URL as their metadata (see [`Owners`]). RocksDB stays the
    /// source of truth; a failure here is only logged.
    pub fn commit_offsets(&self, offsets: &[(String, i32, i64)]) {
        let url = self.consumer().context().advertised_url.as_deref();
        commit_with_url(self.consumer(), offsets, url);
    }

    /// Commits the stored offsets of every owned partition again, with this instance's URL,
    /// at most every `OWNERSHIP_REFRESH`. The owner named by the group's offsets is the last
    /// committer's: an old owner's commit still in flight when its partition moved can land
    /// after the new owner's, and would name the old owner until the new one folds an event of
    /// that partition, which may be never. Refreshed, it is right again within seconds.
    pub fn refresh_ownership(&self) {
        {
            let mut last = lock(&self.ownership_refreshed);
            if last.elapsed() < OWNERSHIP_REFRESH {
                return;
            }
            *last = Instant::now();
        }
        let store = &self.consumer().context().store;
        let offsets: Vec<(String, i32, i64)> = self
            .assignment()
            .into_iter()
            .filter_map(|(topic, partition)| {
                let next = store.offset(&topic, partition).ok()??;
                Some((topic, partition, next))
            })
            .collect();
        self.commit_offsets(&offsets);
    }

    /// The assigned input partitions, as `(topic, partition)`, in order.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        let mut assigned: Vec<(String, i32)> = lock(&self.assignment).iter().cloned().collect();
        assigned.sort();
        assigned
    }

    /// Whether this member owns any partition.
    pub fn has_assignment(&self) -> bool {
        !lock(&self.assignment).is_empty()
    }
}

impl Drop for Input {
    /// An Input that goes without [`Input::close`] (an early return, a panic) still must not
    /// close its consumer on the caller's thread: librdkafka's close can hang (see `close`),
    /// and on an async worker that holds the runtime, and so the process, forever.
    fn drop(&mut self) {
        if let Some(consumer) = self.consumer.take() {
            close_elsewhere(consumer, None);
        }
    }
}

/// `(topic, partition)`s as librdkafka's list.
fn partition_list<'a>(
    partitions: impl IntoIterator<Item = &'a (String, i32)>,
) -> TopicPartitionList {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition(topic, *partition);
    }
    list
}

/// Drops `consumer` (librdkafka closes it) on a thread of its own, then sends `closed`. Without
/// a thread to do it on, the consumer is left open, leaked, rather than closed here: `false`.
fn close_elsewhere(
    consumer: StreamConsumer<PulseContext>,
    closed: Option<tokio::sync::oneshot::Sender<()>>,
) -> bool {
    let (hand, take) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("consumer-close".into())
        .spawn(move || {
            if let Ok(consumer) = take.recv() {
                drop::<StreamConsumer<PulseContext>>(consumer);
            }
            if let Some(closed) = closed {
                let _ = closed.send(());
            }
        });
    match spawned {
        Ok(_) => {
            if let Err(back) = hand.send(consumer) {
                std::mem::forget(back.0);
            }
            true
        }
        Err(e) => {
            tracing::error!(error = %e, "No thread to close the consumer on; it is left open.");
            std::mem::forget(consumer);
            false
        }
    }
}

/// Commits `offsets` asynchronously, each with `url` as its metadata.
fn commit_with_url<C: Consumer<PulseContext>>(
    consumer: &C,
    offsets: &[(String, i32, i64)],
    url: Option<&str>,
) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, next) in offsets {
        let mut elem = tpl.add_partition(topic, *partition);
        if elem.set_offset(Offset::Offset(*next)).is_err() {
            return;
        }
        if let Some(url) = url {
            elem.set_metadata(url);
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::warn!(error = %e, "Committing offsets to Kafka failed; the stored offsets stay authoritative.");
    }
}

/// Which instance owns an input partition, as the consumer group's committed offsets tell: every
/// owner commits its advertised URL as the offsets' metadata (`http.advertised_url`). Reads
/// the group's offsets without joining it.
///
/// Its client queues an event for each error it meets (a broker down: several a second) until
/// it is polled; [`Owners::serve`] must be called now and then, or they pile up in memory (and
/// were all logged at once when the job stopped: 270 lines after 30 s without brokers).
pub struct Owners {
    /// Its errors are logged, not counted: the job's consumer meets and counts the same.
    consumer: BaseConsumer<LogErrors>,
    topic: String,
}

/// How long a lookup of an owner waits for the group coordinator.
const OWNER_WAIT: Duration = Duration::from_secs(2);

impl Owners {
    pub fn connect(config: &Config) -> anyhow::Result<Owners> {
        let consumer = client_config(&config.brokers, &config.kafka_security)
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .create_with_context(LogErrors("owner lookup"))?;
        Ok(Owners {
            consumer,
            topic: config.topics.interactions.clone(),
        })
    }

    /// Serves the events the client queued (its errors, which it logs). Does not block.
    pub fn serve(&self) {
        while self.consumer.poll(Duration::ZERO).is_some() {}
    }

    /// The advertised URL stored with the last commit of `partition` of the interactions topic;
    /// `None` when none is stored or the coordinator does not answer in time. Blocks.
    pub fn owner(&self, partition: i32) -> Option<String> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, partition);
        let committed = self.consumer.committed_offsets(tpl, OWNER_WAIT).ok()?;
        let elem = committed.find_partition(&self.topic, partition)?;
        // rdkafka panics on metadata that is not UTF-8, which another client of the group
        // could have committed: such metadata names no owner.
        let url = std::panic::catch_unwind(|| elem.metadata().to_owned()).ok()?;
        Some(url).filter(|u| !u.is_empty())
    }
}
