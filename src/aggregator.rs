//! The aggregator: with several instances, complaint trends and segment metrics sum over every
//! partition, so one instance — the owner of input partition 0 — emits them for all. It reads
//! every partition of the changelog in log order, counts records exactly as a restore does
//! (`Ownership`: only the latest claimant's), applies the facts that the customer records
//! carry (`facts`), and takes each partition's watermark from its positions. A window or day
//! closes when the lowest of those watermarks passes it, and its record goes out as a single
//! instance's would, with the same record id.
//!
//! Why the changelog: a fact counts exactly when the change that caused it counts, so nothing
//! is counted twice when a partition moves (the new owner folds again only what did not count)
//! and nothing an overlapping old owner wrote is counted at all.
//!
//! Its state — the aggregates, how far it read each partition, each partition's ownership —
//! lives in a store of its own, committed together with its records' outbox. Every
//! [`SNAPSHOT_EVERY_MS`] a snapshot of it goes to changelog partition 0, from which an
//! aggregator on an instance that never held partition 0 starts, rather than from a changelog
//! that compaction has thinned. A lone instance turning the changelog off takes that state over
//! when it counts exactly the input the instance's state holds: the aggregator records, per
//! partition, the input position of the last position record it counted ([`take_over`]). Must
//! not know about Kafka (it reads through a
//! [`ChangelogFeed`] and a `ChangelogSource`), the input or customers' states.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::event::Millis;
use crate::processor::{BatchReport, PartitionFacts, Processor};
use crate::restore::ChangelogSource;
use crate::rfm::Cell;
use crate::store::{
    decode_facts, decode_position, AggregatorSnapshot, ChangelogRecord, Claim, Commit,
    OutboxRecord, Ownership, Position, StoreError, AGGREGATOR_KEY, POSITION_KEY, WATERMARK_SOURCE,
};

/// At most this many records per step, so a long backlog (an aggregator starting from the
/// beginning) is applied in bounded commits.
const RECORDS_PER_STEP: usize = 20_000;

/// Where the aggregator reads the changelog: every partition, on from where it stopped.
pub trait ChangelogFeed {
    /// Up to `max` records past `from` (per partition, the next offset to read; a partition
    /// not in it from its first record), each partition's in log order, as `(partition,
    /// offset, record)`; waits a moment for the first, none when nothing came. A customer
    /// record's value may be left out (`None`): the aggregator reads only its facts.
    fn next(
        &mut self,
        from: &BTreeMap<i32, i64>,
        max: usize,
    ) -> anyhow::Result<Vec<(i32, i64, ChangelogRecord)>>;

    /// Per partition that holds records, the offset past its last one now.
    fn ends(&mut self) -> anyhow::Result<BTreeMap<i32, i64>>;
}

/// How often (processor time) the aggregator writes its snapshot to the changelog.
pub const SNAPSHOT_EVERY_MS: Millis = 10_000;
/// The largest snapshot written: under the brokers' default `max.message.bytes` (1 MB), with
/// room for the record's framing. The RFM histograms are most of it.
const SNAPSHOT_MAX_BYTES: usize = 900_000;

pub struct Aggregator {
    processor: Processor,
    /// The changelog topic: the name the read offsets and watermarks are stored under.
    topic: String,
    partitions: i32,
    /// When the next snapshot is due; `None`: at the next step that read something.
    next_snapshot: Option<Millis>,
    /// Whether it read something since its last snapshot.
    unsnapshotted: bool,
}

impl Aggregator {
    /// An aggregator over `processor`, whose store is the aggregator's own and whose settings
    /// emit the aggregates.
    pub fn new(processor: Processor, topic: &str, partitions: i32) -> Aggregator {
        Aggregator {
            processor,
            topic: topic.to_owned(),
            partitions,
            next_snapshot: None,
            unsnapshotted: false,
        }
    }

    /// Starts an aggregator that has never read the changelog from the latest snapshot an
    /// aggregator wrote to its partition 0, if there is one, rather than from the changelog's
    /// start. Returns whether it took one. An aggregator that has read before goes on from its
    /// own store (see [`Aggregator::catch_up`]).
    pub fn bootstrap(&mut self, source: &dyn ChangelogSource) -> anyhow::Result<bool> {
        let store = self.processor.store().clone();
        for partition in 0..self.partitions {
            if store.offset(&self.topic, partition)?.is_some() {
                return Ok(false);
            }
        }
        let Some(snapshot) = self.latest_snapshot(source)? else {
            return Ok(false);
        };
        self.adopt(snapshot)?;
        Ok(true)
    }

    /// For an aggregator that read before, as its instance takes input partition 0 back: goes
    /// on from the latest snapshot when that is ahead of its own store in every partition it
    /// read (another aggregator went on meanwhile, and wrote it as it gave partition 0 up, or on
    /// its schedule), rather than from its own store, which would close and emit again every
    /// window and day the other emitted meanwhile. Returns whether it did.
    pub fn catch_up(&mut self, source: &dyn ChangelogSource) -> anyhow::Result<bool> {
        let Some(snapshot) = self.latest_snapshot(source)? else {
            return Ok(false);
        };
        let store = self.processor.store().clone();
        let read: BTreeMap<i32, i64> = snapshot.partitions.iter().map(|p| (p.0, p.1)).collect();
        let mut further = false;
        for partition in 0..self.partitions {
            let own = store.offset(&self.topic, partition)?;
            match (own, read.get(&partition)) {
                (Some(own), Some(&theirs)) if theirs >= own => further |= theirs > own,
                (None, _) => further |= read.contains_key(&partition),
                _ => return Ok(false),
            }
        }
        // What a store ahead holds, one further on holds too; never trade it for nothing.
        let loses = |ours: bool, theirs: bool| ours && !theirs;
        if !further
            || loses(store.trends()?.is_some(), snapshot.trends.is_some())
            || loses(store.segments()?.is_some(), snapshot.segments.is_some())
        {
            return Ok(false);
        }
        self.adopt(snapshot)?;
        Ok(true)
    }

    /// The latest snapshot in changelog partition 0 that an aggregator of this configuration
    /// can go on from, if any.
    fn latest_snapshot(
        &self,
        source: &dyn ChangelogSource,
    ) -> anyhow::Result<Option<AggregatorSnapshot>> {
        let mut latest = None;
        source.read(0, None, i64::MAX, &mut |_, record| {
            if record.key.as_slice() == AGGREGATOR_KEY {
                latest = record.value;
            }
            Ok(())
        })?;
        let Some(bytes) = latest else {
            return Ok(None);
        };
        let snapshot = match AggregatorSnapshot::from_bytes(&bytes) {
            Ok(snapshot) => snapshot,
            // Never stuck on it: the changelog from its start is the slower way to the same.
            Err(e) => {
                tracing::error!(error = %e, "The aggregator's snapshot cannot be read; it reads the changelog from its start.");
                return Ok(None);
            }
        };
        // Its open windows are keyed by their start and its baselines are mean counts of
        // windows of its length: weighed against windows of another, no spike would page.
        let window_ms = self.processor.settings().trends.window_ms;
        if let Some(stored) = snapshot.window_ms.filter(|&stored| stored != window_ms) {
            tracing::error!(
                snapshot_window_minutes = stored / 60_000,
                window_minutes = window_ms / 60_000,
                "The aggregator's snapshot holds complaint windows of another length than trends.window_minutes: it is passed over, and the aggregator reads the changelog from its start. A new topics.changelog starts the new length clean."
            );
            return Ok(None);
        }
        Ok(Some(snapshot))
    }

    /// Replaces the aggregator's state with `snapshot`'s: its aggregates, and per partition
    /// where it read to, its watermark and which of its records count.
    fn adopt(&mut self, snapshot: AggregatorSnapshot) -> anyhow::Result<()> {
        let store = self.processor.store().clone();
        // A cell of its own that the snapshot has not is emptied (a count of 0 deletes it).
        let mut rfm_cells = snapshot.rfm_cells;
        let kept: std::collections::BTreeSet<Cell> =
            rfm_cells.iter().map(|cell| cell.emptied()).collect();
        for cell in store.rfm()?.cells() {
            let emptied = cell.emptied();
            if !kept.contains(&emptied) {
                rfm_cells.push(emptied);
            }
        }
        let mut commit = Commit {
            trends: snapshot.trends.map(Arc::new),
            segments: snapshot.segments,
            rfm_cells,
            rfm_scales: Some(snapshot.rfm_scales),
            ..Commit::default()
        };
        for (partition, next, watermark, ownership) in snapshot.partitions {
            commit.offsets.push((self.topic.clone(), partition, next));
            if let Some(at) = watermark {
                commit.event_times.push((self.topic.clone(), partition, at));
            }
            commit.ownerships.push((partition, ownership));
        }
        // What it counted of each partition's input is the snapshot's now, or not known.
        let mut inputs: BTreeMap<i32, Position> = snapshot.inputs.into_iter().collect();
        for partition in 0..self.partitions {
            commit
                .counted_inputs
                .push((partition, inputs.remove(&partition)));
        }
        store.commit(commit)?;
        self.processor.forget_aggregates();
        self.unsnapshotted = false;
        Ok(())
    }

    /// Starts from `seed`: the instance's own aggregates, kept when its state, kept without the
    /// changelog until then, went to it whole ([`keep_seed`]). They replace what the
    /// aggregator's store held (written before the changelog was turned off, if ever), as a
    /// snapshot's do: the seed counts everything folded since.
    pub fn adopt_seed(&mut self, seed: AggregatorSnapshot) -> anyhow::Result<()> {
        self.adopt(seed)?;
        // Nothing read yet: its first snapshot goes out at its first step that reads.
        self.unsnapshotted = true;
        Ok(())
    }

    /// Makes the next step report every gauge of the aggregates, not only those it changes:
    /// the instance took input partition 0 back, and dropped the gauges when it gave it up.
    pub fn show_again(&mut self) {
        self.processor.show_aggregates_again();
    }

    /// The lowest of the partitions' watermarks: where windows and days close. `None` while
    /// a partition has reported none.
    pub fn watermark(&self) -> Result<Option<Millis>, StoreError> {
        self.processor.lowest_watermark(&self.topic)
    }

    /// The aggregator's state as its store holds it.
    fn snapshot(&self) -> Result<AggregatorSnapshot, StoreError> {
        let store = self.processor.store();
        let window_ms = Some(self.processor.settings().trends.window_ms);
        let mut snapshot = aggregates_of(store, window_ms)?;
        for partition in 0..self.partitions {
            if let Some(next) = store.offset(&self.topic, partition)? {
                let watermark = store.event_time(&self.topic, partition)?;
                let ownership = store.ownership(partition)?;
                snapshot
                    .partitions
                    .push((partition, next, watermark, ownership));
            }
            if let Some(input) = store.counted_input(partition)? {
                snapshot.inputs.push((partition, input));
            }
        }
        Ok(snapshot)
    }

    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// Reads what the changelog got since the last step (at most `RECORDS_PER_STEP`
    /// records), applies it and closes what the watermarks passed, in one commit and the
    /// windows' own. Returns the report and whether there may be more to read at once.
    ///
    /// At most every [`SNAPSHOT_EVERY_MS`] of processor time `now`, a step that read something
    /// also writes the aggregator's snapshot to the changelog, through its outbox.
    pub fn step(
        &mut self,
        feed: &mut dyn ChangelogFeed,
        now: Millis,
    ) -> anyhow::Result<(BatchReport, bool)> {
        let store = self.processor.store().clone();
        let mut from = BTreeMap::new();
        for partition in 0..self.partitions {
            if let Some(next) = store.offset(&self.topic, partition)? {
                from.insert(partition, next);
            }
        }
        let records = feed.next(&from, RECORDS_PER_STEP)?;
        let more = records.len() >= RECORDS_PER_STEP;
        let read_any = !records.is_empty();
        let mut read: BTreeMap<i32, PartitionFacts> = BTreeMap::new();
        for (partition, offset, record) in records {
            let facts = match read.entry(partition) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::btree_map::Entry::Vacant(e) => e.insert(PartitionFacts {
                    partition,
                    ownership: store.ownership(partition)?,
                    ..PartitionFacts::default()
                }),
            };
            take(facts, offset, &record);
            facts.next = offset + 1;
        }
        let report = self
            .processor
            .aggregate(&self.topic, read.into_values().collect())?;
        self.unsnapshotted |= read_any;
        if read_any && self.next_snapshot.is_none_or(|at| at <= now) {
            self.next_snapshot = Some(now + SNAPSHOT_EVERY_MS);
            self.write_snapshot()?;
        }
        Ok((report, more))
    }

    /// Steps until it has read every partition up to where the changelog ends now
    /// ([`ChangelogFeed::ends`]), while `time_left` says so, handing each step's report to
    /// `each`. At a graceful stop, once the instance's last records are delivered (or, after a
    /// crash, at a lone instance's first start without the changelog): its aggregates then
    /// count everything the instance's state holds, which a lone instance turning the changelog
    /// off takes over ([`take_over`]). Returns whether it got there.
    pub fn read_to_end(
        &mut self,
        feed: &mut dyn ChangelogFeed,
        now: Millis,
        time_left: &dyn Fn() -> bool,
        each: &mut dyn FnMut(BatchReport),
    ) -> anyhow::Result<bool> {
        let ends = feed.ends()?;
        loop {
            let store = self.processor.store();
            let mut behind = false;
            for (&partition, &end) in &ends {
                behind |= store.offset(&self.topic, partition)?.unwrap_or(0) < end;
            }
            if !behind {
                return Ok(true);
            }
            if !time_left() {
                return Ok(false);
            }
            each(self.step(feed, now)?.0);
        }
    }

    /// Writes the snapshot now if it read something since the last one: as the instance gives
    /// input partition 0 up, or stops, so that the next owner's aggregator, which starts from
    /// the latest snapshot, goes on from here rather than from up to [`SNAPSHOT_EVERY_MS`]
    /// before, closing and emitting again the windows and days closed since (under the same
    /// `record_id`s, but counted again in `complaint_windows_total` and
    /// `segment_metrics_records_total`). Returns whether it wrote one.
    pub fn hand_over(&mut self) -> anyhow::Result<bool> {
        if !self.unsnapshotted {
            return Ok(false);
        }
        self.next_snapshot = None;
        self.write_snapshot()
    }

    /// Commits the snapshot to the outbox, for changelog partition 0; returns whether it did.
    fn write_snapshot(&mut self) -> anyhow::Result<bool> {
        let bytes = self.snapshot()?.to_bytes();
        // A record the brokers refuse as too large would hold up the outbox behind it.
        if bytes.len() > SNAPSHOT_MAX_BYTES {
            if let Some(held_back) = crate::telemetry::repeated("aggregator snapshot too large") {
                tracing::warn!(
                    bytes = bytes.len(),
                    limit = SNAPSHOT_MAX_BYTES,
                    held_back,
                    "The aggregator's snapshot is too large to write; a new aggregator would read the changelog from its start."
                );
            }
            return Ok(false);
        }
        let snapshot = OutboxRecord {
            topic: self.topic.clone(),
            key: Some(AGGREGATOR_KEY.to_vec()),
            value: Some(bytes),
            headers: Vec::new(),
            partition: Some(0),
        };
        self.processor.store().commit(Commit {
            outbox: vec![snapshot.into()],
            ..Commit::default()
        })?;
        self.unsnapshotted = false;
        Ok(true)
    }
}

/// A snapshot of the aggregates `store` holds (complaint windows of `window_ms`), with no
/// partition read yet.
fn aggregates_of(
    store: &crate::store::Store,
    window_ms: Option<Millis>,
) -> Result<AggregatorSnapshot, StoreError> {
    let rfm = store.rfm()?;
    Ok(AggregatorSnapshot {
        trends: store.trends()?,
        segments: store.segments()?,
        rfm_cells: rfm.cells(),
        rfm_scales: rfm.scales,
        partitions: Vec::new(),
        inputs: Vec::new(),
        window_ms,
    })
}

/// Keeps, in the instance's `store`, a start for its aggregator from the instance's own
/// aggregates: complaint windows and baselines, segment days, RFM histograms and scales. For a
/// state kept without the changelog, every one of whose `partitions` the instance just claimed
/// and published ([`crate::restore::Restored::Published`]): its aggregates then count every
/// event folded before the claims, and the changelog's facts count only what is folded after
/// them, so the aggregator goes on from them, reading each partition from its claim on, with
/// the claim's writer the one that counts. Must run before the instance folds anything more.
pub fn keep_seed(store: &crate::store::Store, partitions: i32) -> anyhow::Result<()> {
    let Some((_, writer)) = store.changelog() else {
        return Ok(());
    };
    let mut seed = aggregates_of(store, store.window_ms()?)?;
    for partition in 0..partitions {
        let claim = store
            .epoch(partition)
            .ok_or_else(|| anyhow::anyhow!("partition {partition} is not claimed"))?;
        let mut ownership = Ownership::default();
        ownership.claimed(
            claim,
            &Claim {
                writer,
                continues: None,
            },
        );
        seed.partitions
            .push((partition, claim + 1, None, ownership));
        let position = Position {
            writer,
            offsets: store.input_offsets(partition)?,
            event_times: Vec::new(),
        };
        seed.inputs.push((partition, position));
    }
    store.keep_aggregator_seed(seed.to_bytes())?;
    Ok(())
}

/// What an instance starting with the changelog off did with its aggregator's state
/// ([`take_over`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOver {
    /// Its aggregates counted exactly the input the instance's state holds: they are the
    /// instance's now.
    Taken,
    /// They counted other input than the instance's state holds in these partitions (the
    /// aggregator had not read the instance's last records, or the instance did not own them
    /// all): passed over.
    PassedOver(Vec<i32>),
    /// It recorded no input it counted (no aggregator ran here, or its state was taken or
    /// passed over before).
    NotCounted,
}

/// For an instance about to fold without the changelog on a state kept with it: takes over the
/// complaint windows and baselines and the segment days from the state of the aggregator that
/// ran beside it (`aggregator`), if they count exactly the input the instance's state holds, in
/// every one of the `partitions` (the last position each counted is where the instance's state
/// stands); else the instance goes on with the times of its windows and days only, their
/// counts empty. Either way the aggregator's records not yet delivered (windows and days it
/// emitted; not its snapshots, bound for the `changelog` topic) move to the instance's outbox,
/// the only one drained now, and what it counted is forgotten, so that this is decided once. The instance keeps its
/// own RFM histograms and scales, which it kept for its churn-risk records all along.
pub fn take_over(
    instance: &crate::store::Store,
    aggregator: &crate::store::Store,
    partitions: i32,
    changelog: &str,
) -> Result<(TakeOver, usize), StoreError> {
    let pending: Vec<(u64, OutboxRecord)> = aggregator
        .outbox(usize::MAX)?
        .into_iter()
        .filter(|(_, record)| record.topic != changelog)
        .collect();
    let verdict = match differing(instance, aggregator, partitions)? {
        None => TakeOver::NotCounted,
        Some(differ) if differ.is_empty() => TakeOver::Taken,
        Some(differ) => TakeOver::PassedOver(differ),
    };
    let mut commit = Commit {
        outbox: pending.iter().map(|(_, r)| r.clone().into()).collect(),
        ..Commit::default()
    };
    if verdict == TakeOver::Taken {
        commit.trends = aggregator.trends()?.map(Arc::new);
        commit.segments = aggregator.segments()?;
    }
    instance.commit(commit)?;
    let moved: Vec<u64> = pending.iter().map(|(seq, _)| *seq).collect();
    aggregator.acknowledge(&moved)?;
    aggregator.commit(Commit {
        counted_inputs: (0..partitions).map(|p| (p, None)).collect(),
        ..Commit::default()
    })?;
    Ok((verdict, moved.len()))
}

/// Of the `partitions`, those in which what the `aggregator` counted differs from the input the
/// `instance`'s state holds (its stored offsets); `None` when it recorded nothing it counted.
pub fn differing(
    instance: &crate::store::Store,
    aggregator: &crate::store::Store,
    partitions: i32,
) -> Result<Option<Vec<i32>>, StoreError> {
    let mut differ = Vec::new();
    let mut counted_any = false;
    for partition in 0..partitions {
        let counted = aggregator.counted_input(partition)?;
        counted_any |= counted.is_some();
        let mut counted = counted.map(|position| position.offsets).unwrap_or_default();
        let mut holds = instance.input_offsets(partition)?;
        counted.sort();
        holds.sort();
        if counted != holds {
            differ.push(partition);
        }
    }
    Ok(counted_any.then_some(differ))
}

/// Takes in the changelog record at `offset`: a claim changes who counts; a counted customer
/// record's facts are applied, a counted position's watermark is the partition's; a repeat
/// counts once. A record that cannot be read is logged and skipped: it never stops the
/// aggregates.
fn take(into: &mut PartitionFacts, offset: i64, record: &ChangelogRecord) {
    let skip = |into: &mut PartitionFacts, what: &str, e: &dyn std::fmt::Display| {
        let partition = into.partition;
        tracing::error!(partition, offset, error = %e, "A changelog {what} could not be read; the aggregator skips it.");
        into.unreadable += 1;
    };
    match record.claim() {
        Ok(Some(claim)) => return into.ownership.claimed(offset, &claim),
        Ok(None) => {}
        Err(e) => return skip(into, "claim", &e),
    }
    // A repeat (sent again after its writer's crash) was counted when it first came.
    if !into.ownership.counts(record.epoch) || !into.ownership.is_new(record.epoch, record.sequence)
    {
        return;
    }
    if record.key.as_slice() == POSITION_KEY {
        let Some(bytes) = &record.value else { return };
        match decode_position(bytes) {
            Ok(position) => {
                let watermark = position
                    .event_times
                    .iter()
                    .find(|(source, _)| source == WATERMARK_SOURCE)
                    .map(|(_, at)| *at);
                into.watermark = into.watermark.max(watermark);
                into.input = Some(position);
            }
            Err(e) => skip(into, "position", &e),
        }
        return;
    }
    if let Some(bytes) = &record.facts {
        match decode_facts(bytes) {
            Ok(facts) => into.facts.extend(facts),
            Err(e) => skip(into, "customer record's facts", &e),
        }
    }
}
