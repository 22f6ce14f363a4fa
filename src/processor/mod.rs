//! The processor: turns a batch of input records into one atomic [`Commit`] of state changes,
//! next offsets and output records, through a bounded write-back cache of customer states.
//! Shared by every source (Kafka, file). Must not know about Kafka, RocksDB or Prometheus: it sees
//! owned [`InputRecord`]s, a [`Store`] and returns a [`BatchReport`] for telemetry to record.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::decode::{decode, too_large, Rejection, Rules};
use crate::event::{dashed_id, Event, EventKind, IdPart, Millis, Stream};
use crate::facts::{Fact, OwnedFlow, Target};
use crate::fold::{CustomerState, FoldLimits, Lifecycle, Limit, Outcome};
use crate::rfm::Rfm;
use crate::risk::{
    assess_risk, next_check, segment_at, strongest_reason, ReasonCode, RiskSettings,
};
use crate::segments::{note_loss, note_won_back, Flow, Loss, Segments, Standing};
use crate::store::{
    Commit, Customer, OutboxRecord, Output, Store, StoreError, Timer, WATERMARK_SOURCE,
};
use crate::trends::{Counted, TrendSettings, Trends};

mod cache;
mod clock;
mod partition;
mod report;

use cache::StateCache;
use clock::{Clock, Holding};
pub use partition::{murmur2, partition_for};
use report::ServiceSums;
pub use report::{BatchReport, CacheLookups, ServiceTimes};

/// One input message, copied out of its source at the boundary.
#[derive(Debug, Clone)]
pub struct InputRecord {
    /// Where the record came from: a Kafka topic, or `replay:<file>` for a file. Shared by
    /// the records of one source rather than copied into each.
    pub source: Arc<str>,
    /// The source's partition, for offsets (0 for a file).
    pub source_partition: i32,
    pub offset: i64,
    /// The stream the source topic carries; `None` accepts any type (a file mixes them).
    pub stream: Option<Stream>,
    /// The state partition; `None` derives it from the customer id as Kafka's default
    /// partitioner would (a file has no partitions of its own).
    pub state_partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The length of a record whose payload is only its first bytes (a replayed line longer
    /// than `max_event_bytes`, read no further): dead-lettered as `too_large` with them.
    pub cut_from: Option<u64>,
    /// Broker append time, for the processing-latency histogram.
    pub append_time_ms: Option<Millis>,
}

impl InputRecord {
    /// `<source>-<partition>-<offset>`: the id of every output the record causes, stable across
    /// replays.
    pub fn record_id(&self) -> String {
        dashed_id(&[
            IdPart::Text(&self.source),
            IdPart::Number(self.source_partition.into()),
            IdPart::Number(self.offset),
        ])
    }
}

/// Batches of fewer records are decoded on the fold's own thread. A decoding thread costs a
/// batch about 150 µs (its start, its exit, and the fold freeing what it allocated), a
/// record's decoding a third of a microsecond: in batches of 200 live events the thread made
/// the fold 13% slower, in batches of 500 it broke even, and it wins from a thousand on a core
/// of its own (`benches/pipeline.rs`, `live_changelog_batches_of_*`), which in the job the
/// broker and the producers share.
pub const DECODE_AHEAD_FROM: usize = 1_000;

/// How many decoded records the decoding thread sends at a time.
const DECODE_CHUNK: usize = 64;

/// A payload whose decoding panics, in the unit tests: the decoding thread's poison pill.
#[cfg(test)]
const PANICS_IN_DECODING: &[u8] = b"panics in decoding";

fn decode_record(record: &InputRecord, now: Millis, rules: &Rules) -> Result<Event, Rejection> {
    #[cfg(test)]
    assert!(record.payload != PANICS_IN_DECODING, "decoding panicked");
    if let Some(length) = record.cut_from {
        return Err(too_large(length, rules));
    }
    decode(
        record.stream,
        record.key.as_deref(),
        &record.payload,
        now,
        rules,
    )
}

/// `timer-<partition>-<at>-<customer>`: the id of what a timer firing at `at` causes.
fn timer_record_id(partition: i32, at: Millis, customer_id: &str) -> String {
    dashed_id(&[
        IdPart::Text("timer"),
        IdPart::Number(partition.into()),
        IdPart::Number(at),
        IdPart::Text(customer_id),
    ])
}

/// Output topic names.
#[derive(Debug, Clone)]
pub struct OutputTopics {
    pub churn_risk: String,
    pub complaint_trends: String,
    pub segment_metrics: String,
    pub dead_letter: String,
}

#[derive(Clone)]
pub struct ProcessorSettings {
    pub rules: Rules,
    pub limits: FoldLimits,
    pub topics: OutputTopics,
    /// Partition count of the input topics, to place customers read from a file.
    pub partitions: i32,
    pub cache_customers: usize,
    pub risk: RiskSettings,
    pub trends: TrendSettings,
    /// How far behind the input's event time the watermark trails.
    pub allowed_lateness_ms: Millis,
    /// An input partition that delivered nothing for this long (processor time) no longer
    /// holds the watermark back.
    pub idle_partition_ms: Millis,
    /// The rules naming RFM segments.
    pub rfm_rules: Vec<crate::rfm::Rule>,
    /// Who emits the complaint-trend and segment-metric records.
    pub aggregation: Aggregation,
    /// Fault injection for tests: processing an event with this id panics. Never set from
    /// configuration.
    pub panic_on_event_id: Option<String>,
}

/// Who emits the complaint trends and segment metrics, which sum over every partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// This processor, which sees every partition: one instance, or the aggregator itself.
    Here,
    /// The aggregator, elsewhere (several instances, the changelog on): each customer's
    /// changelog record carries the facts its change caused, and each partition's position its
    /// watermark. The processor keeps its own RFM histograms, for the RFM scores of its
    /// churn-risk records, and of the windows and days only their times: its events' lateness,
    /// and the day ends where those histograms rescale (`Aggregates::time`).
    Elsewhere,
}

impl ProcessorSettings {
    /// Whether customers' changes carry their facts to an aggregator elsewhere.
    fn keeps_facts(&self) -> bool {
        self.aggregation == Aggregation::Elsewhere
    }
}

/// What the aggregator read of one changelog partition since its last step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PartitionFacts {
    pub partition: i32,
    /// The facts of the records that count, in log order.
    pub facts: Vec<Fact>,
    /// The partition's newest watermark among them.
    pub watermark: Option<Millis>,
    /// The input position of the last counted position record among them: what the
    /// aggregates count up to in the partition once these facts are applied.
    pub input: Option<crate::store::Position>,
    /// The offset the next read starts at.
    pub next: i64,
    /// Which records count from there on.
    pub ownership: crate::store::Ownership,
    /// The records that could not be read, each logged and skipped: their changes are missing
    /// from the aggregates.
    pub unreadable: u64,
}

/// Processing a batch panicked.
struct Panicked;

pub struct Processor {
    store: Store,
    settings: ProcessorSettings,
    cache: StateCache,
    /// How far each input partition has got in event time.
    clock: Clock,
    /// The processor time of the batch being processed.
    now: Millis,
    /// Loaded at first use and kept between batches; taken out while a batch runs, so a batch
    /// that fails leaves nothing behind and the next one reloads the last commit's.
    aggregates: Option<Aggregates>,
    /// Per partition, a time below which no timer is stored but those this batch passed
    /// (deleted at its commit): every timer up to it has fired, and any armed below it since
    /// lowered it. Scans for due timers start there.
    timer_floor: HashMap<i32, Millis>,
    /// Per partition, a time before which no timer is stored: the earliest stored past the
    /// watermark of a scan that found none due (`Millis::MAX` when there was none), lowered
    /// by any armed since. Until the watermark reaches it nothing can be due, and the
    /// partition is not scanned: a scan opens a RocksDB iterator, about 37,000 instructions,
    /// at every flush (2% of a live pass), where live traffic's timers lie days ahead.
    timer_next: HashMap<i32, Millis>,
    /// The stored timers this batch's scans fired or found stale: their keys stay in the store
    /// until the batch's commit, and the batch's later scans pass over them.
    passed: HashSet<Timer>,
    /// Per partition, the watermark last put into a commit for the aggregator.
    reported: HashMap<i32, Millis>,
    /// The state partitions of the last assignment.
    owned: BTreeSet<i32>,
    /// Whether the RFM histograms were recounted since the start: from then on they hold
    /// exactly the customers of `owned` (every change of it recounts); before, the stored
    /// histograms are taken as they are.
    rfm_recounted: bool,
    /// A restore replaced a partition's customers since the last recount.
    rfm_stale: bool,
}

/// The instance-wide aggregates: complaint trends and segment metrics.
struct Aggregates {
    /// Shared with the commit that stores it, instead of copied into it (with the input's
    /// partitions days apart in event time, thousands of windows are open, and the copy was
    /// 3.5% of the fold thread's time in the broker benchmark). A commit is dropped once it is
    /// stored, so the next change (`Arc::make_mut`) copies nothing.
    trends: Arc<Trends>,
    segments: Segments,
    /// Whether each changed since it was last put into a commit: each is stored whole, and
    /// a batch of orders and interactions changes the segments but not the trends, whose
    /// open windows are thousands while a backlog's partitions are read one after another.
    trends_dirty: bool,
    segments_dirty: bool,
    /// Loaded, and not yet shown to telemetry.
    loaded: bool,
    /// The RFM histograms (their changed cells go into each commit) and scales.
    rfm: Rfm,
    rfm_rescaled: bool,
}

impl Aggregates {
    /// Applies `fact`; or, given `kept` (the customer's facts, which its changelog record
    /// carries to the aggregator elsewhere), keeps it there and applies here only what this
    /// instance's own records need ([`Aggregates::time`]).
    fn note(
        &mut self,
        fact: Fact,
        trends: &TrendSettings,
        kept: Option<&mut Vec<Fact>>,
    ) -> Counted {
        if let Some(kept) = kept {
            let counted = self.time(&fact, trends);
            kept.push(fact);
            return counted;
        }
        let mut target = Target {
            trends: Arc::make_mut(&mut self.trends),
            segments: &mut self.segments,
            rfm: &mut self.rfm,
            settings: trends,
        };
        let counted = fact.apply(&mut target);
        match fact {
            Fact::Opened { .. }
            | Fact::Resolved { .. }
            | Fact::ForgetOpen { .. }
            | Fact::LeftOpen { .. } => self.trends_dirty = true,
            Fact::Count { .. } | Fact::CountChange { .. } | Fact::Restand { .. } => {
                self.segments_dirty = true
            }
            // The RFM histograms keep their own changed cells.
            Fact::Relocate { .. } => {}
        }
        counted
    }

    /// What an instance whose aggregator is elsewhere applies of `fact`: its move in the RFM
    /// histograms, which score its customers; of a complaint's or a segment's count only its
    /// time, whether late (for the events' outcome) and, before the first close, where the
    /// first window or day starts, so that windows and days close (and the RFM scales move)
    /// when a lone instance's would; a flow counted for telemetry, as the instances count
    /// flows. The open backlogs, windows' counts, populations and days' flows are the
    /// aggregator's alone (counting them here too was a twentieth of the fold's instructions).
    fn time(&mut self, fact: &Fact, s: &TrendSettings) -> Counted {
        match fact {
            Fact::Opened { category, at, .. } | Fact::Resolved { category, at, .. } => {
                let windows = self.trends.windows.len();
                let counted = Arc::make_mut(&mut self.trends).time(category, *at, s);
                self.trends_dirty |= self.trends.windows.len() != windows;
                counted
            }
            Fact::LeftOpen { at, .. } if self.trends.closed(*at, s) => Counted::Late,
            Fact::LeftOpen { .. } | Fact::ForgetOpen { .. } | Fact::Restand { .. } => {
                Counted::InWindow
            }
            Fact::Count { segment, at, flow } => {
                let days = self.segments.days.len();
                let counted = self.segments.time(segment, *at, flow.as_flow());
                self.segments_dirty |= self.segments.days.len() != days;
                counted
            }
            Fact::CountChange { segment, at, flow } => {
                let days = self.segments.days.len();
                self.segments.time_change(segment, *at, flow.as_flow());
                self.segments_dirty |= self.segments.days.len() != days;
                Counted::InWindow
            }
            Fact::Relocate { old, new } => {
                self.rfm.relocate(*old, *new);
                Counted::InWindow
            }
        }
    }

    fn load(store: &Store) -> Result<Aggregates, StoreError> {
        Ok(Aggregates {
            trends: Arc::new(store.trends()?.unwrap_or_default()),
            segments: store.segments()?.unwrap_or_default(),
            trends_dirty: false,
            segments_dirty: false,
            loaded: true,
            rfm: store.rfm()?,
            rfm_rescaled: false,
        })
    }

    /// Puts the aggregates into `commit` when they changed, and what telemetry needs into
    /// `report`.
    fn stage(
        &mut self,
        commit: &mut Commit,
        report: &mut BatchReport,
        settings: &ProcessorSettings,
    ) {
        commit.rfm_cells = self.rfm.take_dirty();
        if std::mem::take(&mut self.rfm_rescaled) {
            commit.rfm_scales = Some(self.rfm.scales.clone());
        }
        for (segment, flows) in self.segments.take_counted() {
            report
                .segment_flows
                .entry(segment)
                .or_default()
                .merge(&flows);
        }
        let trends_changed = std::mem::take(&mut self.trends_dirty);
        let segments_changed = std::mem::take(&mut self.segments_dirty);
        if trends_changed {
            commit.trends = Some(Arc::clone(&self.trends));
        }
        if segments_changed {
            commit.segments = Some(self.segments.clone());
        }
        let changed = trends_changed || segments_changed;
        // The gauges, after each change and once after loading: a restarted processor shows
        // the last window's spike flag again without waiting for the next window, and the
        // population and the open complaints without waiting for a change. With an
        // aggregator elsewhere these cover only what this instance saw: the gauges are the
        // aggregator's.
        let loaded = std::mem::take(&mut self.loaded);
        if !(changed || loaded) || settings.aggregation == Aggregation::Elsewhere {
            return;
        }
        // The named RFM segments are counted again when a day closes; and once after loading,
        // so that a restarted processor shows them without waiting for the next day.
        if loaded && report.rfm_segments.is_none() {
            report.rfm_segments = Some(self.rfm.segment_counts(&settings.rfm_rules));
        }
        report.verdicts = self
            .trends
            .verdicts
            .iter()
            .map(|(c, v)| (c.clone(), *v))
            .collect();
        report.open_complaints = self
            .trends
            .categories
            .iter()
            .map(|(c, t)| (c.clone(), t.open_backlog))
            .collect();
        report.population = Some((
            self.segments.population.clone(),
            self.segments.margin_to_date_minor.clone(),
        ));
    }
}

impl Processor {
    pub fn new(store: Store, settings: ProcessorSettings) -> Processor {
        let cache = StateCache::new(settings.cache_customers);
        Processor {
            store,
            settings,
            cache,
            clock: Clock::default(),
            now: 0,
            aggregates: None,
            timer_floor: HashMap::new(),
            timer_next: HashMap::new(),
            passed: HashSet::new(),
            reported: HashMap::new(),
            owned: BTreeSet::new(),
            rfm_recounted: false,
            rfm_stale: false,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn settings(&self) -> &ProcessorSettings {
        &self.settings
    }

    /// Folds a batch and commits it atomically, then fires the timers the batch's event times
    /// made due. On a storage error nothing of the failed commit is kept and the cache is
    /// dropped, so the same batch can be processed again.
    ///
    /// A panic while processing (a poison pill) never takes the process down or loops: the
    /// batch's uncommitted work is dropped and the batch is processed again one record at a
    /// time, each record that panics going to the dead-letter output as `processing_error`.
    pub fn process(
        &mut self,
        records: &[InputRecord],
        now: Millis,
    ) -> Result<BatchReport, StoreError> {
        self.clock.elapse(now);
        match self.attempt(records, now) {
            Ok(result) => result,
            Err(Panicked) => {
                let mut report = BatchReport::default();
                for record in records {
                    let result = match self.attempt(std::slice::from_ref(record), now) {
                        Ok(result) => result?,
                        Err(Panicked) => self.isolate(record)?,
                    };
                    report.absorb(result);
                }
                Ok(report)
            }
        }
    }

    /// Processes `records` as one batch. On a storage error or a panic, drops what the batch
    /// left in memory (the store still holds the last commit), so that it can be tried again.
    fn attempt(
        &mut self,
        records: &[InputRecord],
        now: Millis,
    ) -> Result<Result<BatchReport, StoreError>, Panicked> {
        let clock = self.clock.clone();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.process_batch(records, now)
        }));
        if !matches!(outcome, Ok(Ok(_))) {
            self.cache.clear();
            self.aggregates = None;
            self.clock = clock;
            // The scans' floors passed timers that the failed commit did not delete: the next
            // scans start at each partition's first stored timer again.
            self.passed.clear();
            self.timer_floor.clear();
            self.timer_next.clear();
        }
        outcome.map_err(|_| Panicked)
    }

    /// Commits a record whose processing panicked as a `processing_error` dead letter, and
    /// moves its offset past it.
    fn isolate(&mut self, record: &InputRecord) -> Result<BatchReport, StoreError> {
        let record_id = record.record_id();
        tracing::error!(
            source = %record.source,
            partition = record.source_partition,
            offset = record.offset,
            "Processing an event panicked; it goes to the dead-letter output as processing_error."
        );
        let rejection = Rejection {
            reason: crate::decode::Reason::ProcessingError,
            message: "processing this event panicked; the event is isolated".into(),
        };
        let mut report = BatchReport::default();
        report.count_event(&record.source, "invalid", "rejected");
        report.dead_letters.insert(rejection.reason.code(), 1);
        let commit = Commit {
            offsets: vec![(
                record.source.to_string(),
                record.source_partition,
                record.offset + 1,
            )],
            outbox: vec![self.dead_letter(record, &record_id, &rejection).into()],
            ..Commit::default()
        };
        report.offsets.clone_from(&commit.offsets);
        self.commit(commit, &mut report)?;
        Ok(report)
    }

    /// Decodes the records on a thread of its own while this one folds them, when there are
    /// enough to be worth a thread: decoding is pure, and was 15% of the fold thread's
    /// instructions through the broker. The decoding thread sends them in chunks, in order;
    /// a panic while decoding ends its chunks, the fold then panics too, and `process` takes
    /// the records one at a time, decoded here.
    fn process_batch(
        &mut self,
        records: &[InputRecord],
        now: Millis,
    ) -> Result<BatchReport, StoreError> {
        if records.len() < DECODE_AHEAD_FROM {
            return self.fold_batch(
                records,
                now,
                |rules, record| decode_record(record, now, rules),
                drop,
            );
        }
        // The decoding thread's own copy: the fold holds the processor mutably meanwhile.
        let rules = self.settings.rules.clone();
        std::thread::scope(|scope| {
            let (chunks, decoded) = std::sync::mpsc::channel();
            let (give_back, folded) = std::sync::mpsc::channel::<Vec<_>>();
            scope.spawn(move || {
                for chunk in records.chunks(DECODE_CHUNK) {
                    let events: Vec<_> = chunk
                        .iter()
                        .map(|record| decode_record(record, now, &rules))
                        .collect();
                    // Gone when the fold stopped at an error: the rest is not needed.
                    if chunks.send(events).is_err() {
                        break;
                    }
                }
                drop(chunks);
                // The folded events are freed here, where they were allocated: a thread frees
                // its own allocations for less than another's (mimalloc hands those back
                // through the owning page's shared list), and this one is mostly idle by now.
                for spent in folded {
                    drop(spent);
                }
            });
            let mut decoded = decoded.into_iter().flatten();
            let mut spent = Vec::with_capacity(DECODE_CHUNK);
            let report = self.fold_batch(
                records,
                now,
                |_, _| {
                    decoded
                        .next()
                        .expect("decoding stopped before the batch's end: it panicked")
                },
                |event| {
                    spent.push(event);
                    if spent.len() == DECODE_CHUNK {
                        let full = std::mem::replace(&mut spent, Vec::with_capacity(DECODE_CHUNK));
                        // The decoding thread is gone only after a panic, which this thread
                        // meets as its own when the scope ends.
                        let _ = give_back.send(full);
                    }
                },
            );
            let _ = give_back.send(spent);
            report
        })
    }

    fn fold_batch(
        &mut self,
        records: &[InputRecord],
        now: Millis,
        mut decoded: impl FnMut(&Rules, &InputRecord) -> Result<Event, Rejection>,
        mut spent: impl FnMut(Result<Event, Rejection>),
    ) -> Result<BatchReport, StoreError> {
        self.now = now;
        let mut aggregates = self.take_aggregates()?;
        let mut report = BatchReport::default();
        let mut commit = Commit::default();
        let mut offsets: hashbrown::HashMap<(&str, i32), i64> = hashbrown::HashMap::new();
        for record in records {
            offsets.insert(
                (&*record.source, record.source_partition),
                record.offset + 1,
            );
            if let Some(t) = record.append_time_ms {
                report.append_times_ms.push(t);
            }
            let event = decoded(&self.settings.rules, record);
            self.process_one(
                record,
                &event,
                now,
                &mut aggregates,
                &mut commit,
                &mut report,
            )?;
            spent(event);
            // A complaint window closes the moment the watermark passes its end, so its backlog
            // is the one at that moment, and its records go into the commit that stores it
            // closed. A segment day's population is read after the due timers fire, so its end
            // cuts the batch: what a window's record says never depends on where batches ended.
            let Some(watermark) = self.watermark(&aggregates) else {
                continue;
            };
            let passed = |end: Option<Millis>| end.is_some_and(|end| end <= watermark);
            if passed(aggregates.trends.next_close(&self.settings.trends)) {
                // Not past a segment day's end that is due: that day closes first, after the
                // windows that end with it (`close_windows_at`).
                let until = match aggregates.segments.next_close() {
                    Some(day_end) if day_end <= watermark => day_end,
                    _ => watermark,
                };
                self.close_trends(until, &mut aggregates, &mut commit, &mut report);
            }
            if passed(aggregates.segments.next_close()) {
                self.cut(&mut commit, &mut aggregates, &mut report)?;
            }
        }
        self.finish(commit, &mut offsets, &mut aggregates, &mut report)?;
        self.aggregates = Some(aggregates);
        Ok(report)
    }

    /// The aggregator's step (several instances; see `aggregator`): applies the facts read from
    /// each changelog partition and stores how far it read (`source`: the changelog topic),
    /// then closes the windows and days that every partition's watermark has passed. The
    /// records go into the commits' outbox as a single instance's would.
    pub fn aggregate(
        &mut self,
        source: &str,
        read: Vec<PartitionFacts>,
    ) -> Result<BatchReport, StoreError> {
        let mut aggregates = self.take_aggregates()?;
        let mut report = BatchReport::default();
        let result = self.aggregate_into(source, read, &mut aggregates, &mut report);
        if result.is_ok() {
            self.aggregates = Some(aggregates);
        }
        // Flows are counted in telemetry where they happen, by the instances.
        report.segment_flows.clear();
        result.map(|()| report)
    }

    fn aggregate_into(
        &mut self,
        source: &str,
        read: Vec<PartitionFacts>,
        aggregates: &mut Aggregates,
        report: &mut BatchReport,
    ) -> Result<(), StoreError> {
        let mut commit = Commit::default();
        for partition in read {
            for fact in partition.facts {
                if aggregates.note(fact, &self.settings.trends, None) == Counted::Late {
                    report.late_facts += 1;
                }
            }
            report.unreadable_changelog_records += partition.unreadable;
            let p = partition.partition;
            commit.offsets.push((source.to_owned(), p, partition.next));
            // A partition's watermark never goes back, whoever owns it now.
            let stored = self.store.event_time(source, p)?;
            if let Some(at) = partition
                .watermark
                .filter(|at| stored.is_none_or(|s| s < *at))
            {
                commit.event_times.push((source.to_owned(), p, at));
            }
            commit.ownerships.push((p, partition.ownership));
            if let Some(input) = partition.input {
                commit.counted_inputs.push((p, Some(input)));
            }
        }
        aggregates.stage(&mut commit, report, &self.settings);
        self.commit(commit, report)?;
        let Some(lowest) = self.lowest_watermark(source)? else {
            return Ok(());
        };
        let mut closing = Commit::default();
        if self.close_windows_at(lowest, &mut closing, aggregates, report)? {
            aggregates.stage(&mut closing, report, &self.settings);
            self.commit(closing, report)?;
        }
        Ok(())
    }

    /// The aggregator's watermark: the lowest of the partitions' as stored under `source`;
    /// `None` while a partition has reported none (it holds every window).
    pub fn lowest_watermark(&self, source: &str) -> Result<Option<Millis>, StoreError> {
        let mut lowest = Millis::MAX;
        for partition in 0..self.settings.partitions {
            match self.store.event_time(source, partition)? {
                Some(at) => lowest = lowest.min(at),
                None => return Ok(None),
            }
        }
        Ok(Some(lowest))
    }

    /// Drops the aggregates held in memory: the store's were replaced (the aggregator started
    /// from a snapshot).
    pub fn forget_aggregates(&mut self) {
        self.aggregates = None;
    }

    /// Makes the next batch or aggregator step report every gauge of the aggregates, as the
    /// first after loading does: their instance exports them again.
    pub fn show_aggregates_again(&mut self) {
        if let Some(aggregates) = &mut self.aggregates {
            aggregates.loaded = true;
        }
    }

    /// Tells the processor which input partitions the instance owns, so that one that has not
    /// delivered yet holds the watermark (until it goes idle) instead of being overtaken.
    pub fn assign(&mut self, assigned: &[(String, i32)], now: Millis) {
        self.clock.elapse(now);
        let store = &self.store;
        // A partition taken over (or taken back after a restart) starts from the newest event
        // time its last commit stored: it holds the watermark there, not at nothing, and the
        // watermark never falls back behind what was already folded.
        self.clock.assign(assigned, now, |source, partition| {
            store.event_time(source, partition).ok().flatten()
        });
        let owned: BTreeSet<i32> = assigned.iter().map(|(_, p)| *p).collect();
        let given_up = !self.owned.is_subset(&owned);
        let gained_since_a_recount = self.rfm_recounted && !owned.is_subset(&self.owned);
        if self.rfm_stale || given_up || gained_since_a_recount {
            let started = std::time::Instant::now();
            match self.recount_rfm(&owned) {
                Ok(customers) => {
                    tracing::info!(
                        partitions = ?owned,
                        customers,
                        seconds = started.elapsed().as_secs_f64(),
                        "Recounted the RFM histograms from the customers of the partitions owned."
                    );
                    self.rfm_recounted = true;
                    self.rfm_stale = false;
                }
                Err(e) => {
                    self.rfm_stale = true;
                    tracing::warn!(error = %e, "Recounting the RFM histograms failed; the next assignment check retries.");
                }
            }
        }
        self.owned = owned;
    }

    /// Tells the processor that `sources` (files a replay reads together, each next line the
    /// earliest left in any of them) are one stream in event time: the watermark trails the
    /// newest event of all of them, as it trails one file's, not the slowest of them.
    pub fn read_as_one(&mut self, sources: &[&str]) {
        if let Some((first, _)) = sources.split_first() {
            for source in sources {
                self.clock.alias(source, first);
            }
        }
    }

    /// Counts the RFM histograms again from the stored customers of `partitions`, the ones this
    /// instance owns: a restored partition's customers were never counted here (and taking an
    /// old point out when one orders would leave a cell short), and a partition given up is no
    /// longer this instance's to count. The scales stay until the next day closes; the changed
    /// cells go into the next commit. Its cost grows with the customers held, and it runs only
    /// when the assignment changed or a restore replaced a partition.
    /// Returns how many customers with orders it counted.
    fn recount_rfm(&mut self, partitions: &BTreeSet<i32>) -> Result<usize, StoreError> {
        let mut points = Vec::new();
        for &partition in partitions {
            self.store.for_each_customer(partition, |customer| {
                points.extend(crate::rfm::point(&customer.state));
                Ok::<_, StoreError>(())
            })?;
        }
        let mut aggregates = self.take_aggregates()?;
        let counted = points.len();
        aggregates.rfm.recount(points);
        self.aggregates = Some(aggregates);
        Ok(counted)
    }

    /// The aggregates held between batches, or the last commit's from the store.
    fn take_aggregates(&mut self) -> Result<Aggregates, StoreError> {
        match self.aggregates.take() {
            Some(aggregates) => Ok(aggregates),
            None => {
                let mut aggregates = Aggregates::load(&self.store)?;
                // Stored under another category list: taken to this one, and stored so.
                if Arc::make_mut(&mut aggregates.trends).adopt(&self.settings.trends) {
                    aggregates.trends_dirty = true;
                }
                Ok(aggregates)
            }
        }
    }

    /// Forgets what the processor holds of state partition `partition` (its cached customers,
    /// its timer floor, its input partitions' clocks) after the store's copy was replaced by a
    /// restore from the changelog: it is read from the store again.
    pub fn forget_partition(&mut self, partition: i32) {
        self.rfm_stale = true;
        self.cache.forget(partition);
        self.timer_floor.remove(&partition);
        self.timer_next.remove(&partition);
        self.reported.remove(&partition);
        // Taken again at the next assignment, from the restored event times.
        self.clock.forget(partition);
    }

    /// The input partitions read more than `lead_ms` ahead in event time of the slowest one
    /// still delivering (or that delivered while another has delivered nothing yet), as
    /// `(source, partition)`, in order: what a reader aligned in event time pauses until the
    /// others come within the lead (`processing.max_event_time_lead_seconds`). A partition that
    /// stopped delivering holds the others for `idle_partition_seconds` at most, as it holds
    /// the watermark.
    pub fn partitions_ahead(&self, now: Millis, lead_ms: Millis) -> Vec<(String, i32)> {
        self.clock
            .ahead(now, self.settings.idle_partition_ms, lead_ms)
            .into_iter()
            .map(|(source, partition)| (source.to_owned(), partition))
            .collect()
    }

    /// Moves the watermark on without input, when input partitions have gone idle: a
    /// partition that stopped delivering no longer holds it back, so the windows and timers it
    /// held close and fire. Commits only when the watermark moved (`None` otherwise).
    pub fn advance(&mut self, now: Millis) -> Result<Option<BatchReport>, StoreError> {
        self.clock.elapse(now);
        let frontier = self.clock.frontier(now, self.settings.idle_partition_ms);
        let moved = match (&self.aggregates, frontier) {
            (Some(a), Some(f)) => a.trends.newest.is_none_or(|n| n < f),
            // Not loaded yet (a restart with nothing left to read): load them and see.
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if moved {
            self.process(&[], now).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The event time the watermark trails: how far the input has got, never going back (it
    /// is stored, so a restarted processor starts where the last one stopped).
    fn frontier(&self, aggregates: &Aggregates) -> Option<Millis> {
        let seen = self
            .clock
            .frontier(self.now, self.settings.idle_partition_ms);
        match (seen, aggregates.trends.newest) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// The instance's watermark: how far the slowest input partition still delivering has got
    /// in event time (DOMAIN.md: a watermark per input partition), minus the allowed lateness.
    fn watermark(&self, aggregates: &Aggregates) -> Option<Millis> {
        self.frontier(aggregates)
            .map(|n| n.saturating_sub(self.settings.allowed_lateness_ms))
    }

    /// The watermark up to which state partition `partition`'s timers fire, given the
    /// instance's. One instance fires every partition's at its own. With the aggregator
    /// elsewhere, a partition is not let past its own input (unless that went idle): a
    /// partition just taken over may be behind the instance, and neither its customers' timers
    /// nor the aggregator's windows may pass events of it not folded yet. `None`: it holds.
    fn partition_watermark(&self, partition: i32, instance: Millis) -> Option<Millis> {
        if !self.settings.keeps_facts() {
            return Some(instance);
        }
        let idle = self.settings.idle_partition_ms;
        match self.clock.partition_frontier(partition, self.now, idle) {
            Holding::Idle => Some(instance),
            Holding::Silent => None,
            Holding::At(frontier) => {
                let own = frontier.saturating_sub(self.settings.allowed_lateness_ms);
                Some(own.min(instance))
            }
        }
    }

    /// Closes the complaint windows the watermark has passed and puts their records into
    /// `commit`, which stores the trends with them closed.
    fn close_trends(
        &self,
        watermark: Millis,
        aggregates: &mut Aggregates,
        commit: &mut Commit,
        report: &mut BatchReport,
    ) {
        let trends = Arc::make_mut(&mut aggregates.trends);
        if self.settings.aggregation == Aggregation::Elsewhere {
            // Passed here only to be forgotten: the aggregator closes them, over all partitions.
            aggregates.trends_dirty |= trends.pass_until(watermark, &self.settings.trends);
            return;
        }
        let mut windows = trends.close_until(watermark, &self.settings.trends);
        if windows.is_empty() {
            return;
        }
        aggregates.trends_dirty = true;
        let active = aggregates.segments.active_at_close;
        for window in &mut windows {
            window.active_customers = active;
            let id = window.record_id();
            commit.outbox.push(Output::Record(OutboxRecord {
                topic: self.settings.topics.complaint_trends.clone(),
                key: Some(window.category.clone().into_bytes()),
                value: Some(window.record(&id)),
                headers: vec![("record_id".into(), id.into_bytes())],
                partition: None,
            }));
        }
        report.closed_windows.extend(windows);
    }

    /// Where the batch's event time passed a segment day's end, and at its end: fires the
    /// timers due by the watermark and closes the windows and days it passed, into `commit`;
    /// timers first, so that a customer lost at a timer counts in the day the timer is in.
    /// Nothing is committed before the batch's end: the timers the batch armed are written
    /// ahead so that the scans find them (`StateCache::timers_ahead`), so each customer is
    /// written once a batch however many days its timers fired on (a backlog that moves the
    /// watermark a month at once wrote a customer once a day, 63 commits in one batch).
    fn cut(
        &mut self,
        commit: &mut Commit,
        aggregates: &mut Aggregates,
        report: &mut BatchReport,
    ) -> Result<(), StoreError> {
        if let Some(frontier) = self.frontier(aggregates) {
            if aggregates.trends.newest.is_none_or(|n| n < frontier) {
                Arc::make_mut(&mut aggregates.trends).newest = Some(frontier);
                aggregates.trends_dirty = true;
            }
        }
        self.fire_due_timers(commit, aggregates, report)?;
        self.close_windows(commit, aggregates, report)?;
        Ok(())
    }

    /// The batch's last cut, then its one commit: the customers, their timers, the outbox, the
    /// aggregates and how far each input partition was read.
    fn finish(
        &mut self,
        mut commit: Commit,
        offsets: &mut hashbrown::HashMap<(&str, i32), i64>,
        aggregates: &mut Aggregates,
        report: &mut BatchReport,
    ) -> Result<(), StoreError> {
        self.cut(&mut commit, aggregates, report)?;
        commit.offsets = offsets
            .drain()
            .map(|((source, partition), next)| (source.to_owned(), partition, next))
            .collect();
        for (source, partition, _) in &commit.offsets {
            if let Some(newest) = self.clock.newest(source, *partition) {
                commit
                    .event_times
                    .push((source.clone(), *partition, newest));
            }
        }
        for (source, partition, next) in &commit.offsets {
            match report
                .offsets
                .iter_mut()
                .find(|(s, p, _)| s == source && p == partition)
            {
                Some(entry) => entry.2 = entry.2.max(*next),
                None => report.offsets.push((source.clone(), *partition, *next)),
            }
        }
        aggregates.stage(&mut commit, report, &self.settings);
        self.commit(commit, report)
    }

    /// Closes the complaint windows and segment days that the newest event time minus the
    /// allowed lateness has passed, and commits their records. The watermark is the instance's,
    /// over all its partitions: one record per category or segment and window.
    fn close_windows(
        &mut self,
        commit: &mut Commit,
        aggregates: &mut Aggregates,
        report: &mut BatchReport,
    ) -> Result<(), StoreError> {
        let Some(newest) = aggregates.trends.newest else {
            return Ok(());
        };
        let watermark = newest.saturating_sub(self.settings.allowed_lateness_ms);
        self.close_windows_at(watermark, commit, aggregates, report)?;
        Ok(())
    }

    /// Closes the complaint windows and segment days that end at or before `watermark` and puts
    /// their records into `commit`; with the aggregator elsewhere, also the watermark of each
    /// owned partition, once its timers up to there have fired. Whether it put anything there.
    fn close_windows_at(
        &mut self,
        watermark: Millis,
        commit: &mut Commit,
        aggregates: &mut Aggregates,
        report: &mut BatchReport,
    ) -> Result<bool, StoreError> {
        let mut reporting = false;
        if self.settings.keeps_facts() {
            for &partition in &self.clock.state_partitions {
                let Some(watermark) = self.partition_watermark(partition, watermark) else {
                    continue;
                };
                let reported = match self.reported.get(&partition) {
                    Some(at) => Some(*at),
                    None => self.store.event_time(WATERMARK_SOURCE, partition)?,
                };
                if reported.is_none_or(|at| at < watermark) {
                    // One a partition a commit: an earlier cut's is moved up.
                    let earlier = commit
                        .event_times
                        .iter_mut()
                        .find(|(source, p, _)| source == WATERMARK_SOURCE && *p == partition);
                    match earlier {
                        Some(entry) => entry.2 = entry.2.max(watermark),
                        None => {
                            let source = WATERMARK_SOURCE.to_owned();
                            commit.event_times.push((source, partition, watermark));
                        }
                    }
                    reporting = true;
                }
            }
        }
        let trends_closed = aggregates.trends.closed_before;
        let segment_names: Vec<String> = self
            .settings
            .risk
            .tiers
            .iter()
            .map(|t| t.name.clone())
            .collect();
        // Windows and days close in event-time order, a window before the day that ends with
        // it: a window's active customers are those at the end of the last day closed before
        // it, however far the watermark moved at once.
        let mut days = Vec::new();
        loop {
            let s = &self.settings.trends;
            let window_end = aggregates.trends.next_close(s).filter(|t| *t <= watermark);
            let day_end = aggregates.segments.next_close().filter(|d| *d <= watermark);
            match (window_end, day_end) {
                (_, Some(day)) if window_end.is_none_or(|window| day < window) => {
                    days.extend(aggregates.segments.close_until(day, &segment_names));
                }
                (Some(window), _) => self.close_trends(window, aggregates, commit, report),
                (None, _) => break,
            }
        }
        let closed = aggregates.trends.closed_before != trends_closed || !days.is_empty();
        if !closed && !reporting {
            return Ok(false);
        }
        if !days.is_empty() {
            // The RFM scales move on with the days (DOMAIN.md: breakpoints on a timer).
            aggregates.rfm.rescale();
            aggregates.rfm_rescaled = true;
            if self.settings.aggregation == Aggregation::Here {
                let counts = aggregates.rfm.segment_counts(&self.settings.rfm_rules);
                report.rfm_segments = Some(counts);
            }
        }
        let topics = &self.settings.topics;
        let emitted = match self.settings.aggregation {
            Aggregation::Here => days.as_slice(),
            Aggregation::Elsewhere => &[],
        };
        for day in emitted {
            let id = day.record_id();
            commit.outbox.push(Output::Record(OutboxRecord {
                topic: topics.segment_metrics.clone(),
                key: Some(day.segment.clone().into_bytes()),
                value: Some(day.record(&id)),
                headers: vec![("record_id".into(), id.into_bytes())],
                partition: None,
            }));
        }
        aggregates.trends_dirty |= aggregates.trends.closed_before != trends_closed;
        aggregates.segments_dirty |= !days.is_empty();
        report.closed_days += emitted.len();
        Ok(true)
    }

    /// Commits the cache's dirty customers, their timer changes and `commit`'s other contents.
    fn commit(&mut self, mut commit: Commit, report: &mut BatchReport) -> Result<(), StoreError> {
        self.cache.drain_dirty(&mut commit);
        self.lower_timer_bounds(&commit.timers_set);
        let watermarks: Vec<(i32, Millis)> = commit
            .event_times
            .iter()
            .filter(|(source, _, _)| source == WATERMARK_SOURCE)
            .map(|(_, partition, at)| (*partition, *at))
            .collect();
        report.customers_written += commit.customers.len();
        report.outbox_records += commit.outbox.len();
        // Lookups since the commit before count with this one, as its customers do.
        report.cache_lookups.add(self.cache.take_lookups());
        report.risk_records += commit
            .outbox
            .iter()
            .filter(|output| matches!(output, Output::ChurnRisk { .. }))
            .count();
        self.store.commit(commit)?;
        self.cache.committed();
        self.passed.clear();
        self.reported.extend(watermarks);
        Ok(())
    }

    /// Lowers the scans' floors and next times to the timers armed since.
    fn lower_timer_bounds(&mut self, armed: &[Timer]) {
        for timer in armed {
            if let Some(floor) = self.timer_floor.get_mut(&timer.partition) {
                *floor = (*floor).min(timer.at);
            }
            if let Some(next) = self.timer_next.get_mut(&timer.partition) {
                *next = (*next).min(timer.at);
            }
        }
    }

    /// Writes the timers the batch armed so far that are due by `up_to` ahead of its commit
    /// (`StateCache::timers_ahead`), so that its scans for due timers find them.
    fn write_timers_ahead(&mut self, up_to: Millis) -> Result<(), StoreError> {
        let passed = &mut self.passed;
        let ahead = self.cache.timers_ahead(up_to, |timer| passed.remove(timer));
        if ahead.is_empty() {
            return Ok(());
        }
        self.lower_timer_bounds(&ahead);
        self.store.put_timers(&ahead)
    }

    /// Fires every timer at or before the watermark, each partition's up to its own, into
    /// `commit`: the batch's one commit writes them all, and one copy of the changed aggregates
    /// (a commit per partition stored the trends once for each; a commit per round wrote a
    /// customer again at each of its timers). Each round fires what every partition has due.
    fn fire_due_timers(
        &mut self,
        commit: &mut Commit,
        aggregates: &mut Aggregates,
        report: &mut BatchReport,
    ) -> Result<(), StoreError> {
        let Some(instance) = self.watermark(aggregates) else {
            return Ok(());
        };
        self.write_timers_ahead(instance)?;
        // The partitions that may still hold due timers, with their watermarks.
        let mut pending: Vec<(i32, Millis)> = self
            .clock
            .state_partitions
            .iter()
            .filter_map(|&partition| {
                Some((partition, self.partition_watermark(partition, instance)?))
            })
            .collect();
        // Those whose next stored timer lies past their watermark have none due: not scanned,
        // their floor moved up as a scan that found none would have moved it (so that the
        // next scan does not step over the timers deleted meanwhile).
        pending.retain(|&(partition, watermark)| {
            let Some(&next) = self.timer_next.get(&partition) else {
                return true;
            };
            if next <= watermark {
                return true;
            }
            let floor = self.timer_floor.entry(partition).or_insert(Millis::MIN);
            *floor = (*floor).max(watermark.saturating_add(1));
            false
        });
        // The stored timers are the truth, with those written ahead of the batch's commit: a
        // scan that finds none due costs one seek. A fired timer re-arms strictly later, so the
        // rounds end.
        while !pending.is_empty() {
            let mut fired = Vec::with_capacity(pending.len());
            for (partition, watermark) in pending {
                let from = self.timer_floor.get(&partition).copied();
                // The keys this batch passed stay until its commit: the scan reads past them.
                let limit = 1_000 + self.passed.len();
                let scanned = self.store.due_timers(partition, (from, watermark), limit)?;
                // The next scan starts where this one ended: past the watermark when nothing was
                // due, else at the last timer due, since every one before it fires in this round
                // (one that re-arms lower lowers the floor again as it is written). Started
                // lower, it would step over the key of every timer deleted since.
                let floor = self.timer_floor.entry(partition).or_insert(Millis::MIN);
                *floor = (*floor).max(scanned.last().map_or(watermark.saturating_add(1), |t| t.at));
                let due: Vec<Timer> = scanned
                    .into_iter()
                    .filter(|timer| !self.passed.contains(timer))
                    .collect();
                if due.is_empty() {
                    // None below the floor, none due: every stored timer not passed lies past
                    // the watermark.
                    let next = self.store.next_timer(partition, watermark)?;
                    self.timer_next
                        .insert(partition, next.unwrap_or(Millis::MAX));
                    continue;
                }
                self.timer_next.remove(&partition);
                for timer in due {
                    if self.fire(&timer, aggregates, commit)? {
                        report.timers_fired += 1;
                    }
                    self.passed.insert(timer);
                }
                fired.push((partition, watermark));
            }
            // Scanned again once what fired is written ahead: it re-armed.
            self.write_timers_ahead(instance)?;
            pending = fired;
        }
        Ok(())
    }

    /// Looks at a silent customer again at its timer's event time; whether the customer still
    /// held that timer (a stale key is only deleted).
    fn fire(
        &mut self,
        timer: &Timer,
        aggregates: &mut Aggregates,
        commit: &mut Commit,
    ) -> Result<bool, StoreError> {
        let entry = self
            .cache
            .entry(&self.store, timer.partition, &timer.customer_id)?;
        match entry.record.as_mut() {
            Some(customer) if customer.risk.timer_at == Some(timer.at) => {
                let record_id = || timer_record_id(timer.partition, timer.at, &timer.customer_id);
                let effects = Effects {
                    commit,
                    aggregates,
                    kept: self.settings.keeps_facts().then_some(&mut entry.facts),
                };
                reassess(customer, timer.at, record_id, None, &self.settings, effects);
                entry.dirty = true;
                return Ok(true);
            }
            // A timer the customer no longer points at (re-armed or erased): only the key goes,
            // at the commit; unless the customer comes back to it by then.
            Some(_) if entry.dirty => entry.timers_ahead.push(timer.at),
            _ => commit.timers_cleared.push(timer.clone()),
        }
        Ok(false)
    }

    /// The segment a customer is in at `at`, whether or not this instance holds it (a customer
    /// it does not know has no revenue yet).
    fn segment_of_customer(&mut self, customer_id: &str, at: Millis) -> Result<String, StoreError> {
        let partition = partition_for(customer_id.as_bytes(), self.settings.partitions);
        let entry = self.cache.entry(&self.store, partition, customer_id)?;
        let none = crate::segments::Trailing::default();
        let trailing = entry.record.as_ref().map_or(&none, |c| &c.trailing);
        Ok(segment_at(trailing, at, &self.settings.risk).to_owned())
    }

    /// Folds one record into its customer: a rejected one goes to the dead-letter topic; an
    /// event fires the customer's due timers, applies, counts in the aggregates (with
    /// [`Before`] and [`counted_facts`]), then reassesses the customer, or [`erase`]s it.
    fn process_one(
        &mut self,
        record: &InputRecord,
        decoded: &Result<Event, Rejection>,
        now: Millis,
        aggregates: &mut Aggregates,
        commit: &mut Commit,
        report: &mut BatchReport,
    ) -> Result<(), StoreError> {
        // Worked out when an output needs it: most events publish nothing.
        let record_id = || record.record_id();
        let event = match decoded {
            Ok(event) => event,
            Err(rejection) => {
                report.count_event(&record.source, "invalid", "rejected");
                *report
                    .dead_letters
                    .entry(rejection.reason.code())
                    .or_default() += 1;
                commit
                    .outbox
                    .push(self.dead_letter(record, &record_id(), rejection).into());
                return Ok(());
            }
        };
        let home = partition_for(event.customer_id.as_bytes(), self.settings.partitions);
        let partition = match record.state_partition {
            Some(partition) if partition != home => {
                // Its publisher partitions otherwise. Folded where it was read, as the
                // partition's owner must hold its customers; counted for the operator, since a
                // customer published by two partitioners has two states.
                let source = (record.source.clone(), record.source_partition);
                *report.off_partition.entry(source).or_default() += 1;
                partition
            }
            _ => home,
        };
        self.clock
            .observe(record, partition, event.occurred_at, now);
        // A referral counts for the referrer's segment.
        let referrer_segment = match &event.kind {
            EventKind::Registered {
                referred_by: Some(referrer),
                ..
            } if *referrer != event.customer_id => {
                Some(self.segment_of_customer(referrer, event.occurred_at)?)
            }
            _ => None,
        };
        let entry = self
            .cache
            .entry(&self.store, partition, &event.customer_id)?;
        // An event of an erased customer from before its erasure, read after it (its topic
        // behind the erasure's, or sent again), would bring the customer back: it is dropped.
        if entry
            .erased_until
            .is_some_and(|until| event.occurred_at <= until)
        {
            report.count_event(&record.source, event.kind.type_name(), "erased");
            return Ok(());
        }
        let customer = entry
            .record
            .get_or_insert_with(|| Box::new(CustomerState::new(&event.customer_id).into()));
        let settings = &self.settings;
        // The timers due before this event fire first, so a customer's records do not depend
        // on whether the watermark passed them before the event arrived. Each fired timer
        // re-arms strictly later, so the loop ends.
        while let Some(at) = customer.risk.timer_at.filter(|at| *at < event.occurred_at) {
            let id = || timer_record_id(partition, at, &event.customer_id);
            let effects = Effects {
                commit,
                aggregates,
                kept: settings.keeps_facts().then_some(&mut entry.facts),
            };
            reassess(customer, at, id, None, settings, effects);
            entry.dirty = true;
        }
        let before = Before::of(&customer.state, event, &settings.limits);
        if settings.panic_on_event_id.as_deref() == Some(event.event_id.as_str()) {
            panic!("injected fault: event {}", event.event_id);
        }
        let outcome = customer.state.apply(event, &settings.limits);
        if let Outcome::Applied(Some(limit)) | Outcome::Republished(Some(limit)) = outcome {
            *report.limits_reached.entry(limit.code()).or_default() += 1;
        }
        if let Outcome::Duplicate | Outcome::Republished(_) = outcome {
            // A republished event's id was remembered, which the store keeps.
            entry.dirty |= outcome != Outcome::Duplicate;
            report.count_event(&record.source, event.kind.type_name(), "duplicate");
            return Ok(());
        }
        let sums = (before.sums, ServiceSums::of(&customer.state));
        let resolved = match &event.kind {
            EventKind::ComplaintOpened { category, .. } => Some(category.as_str()),
            _ => before.open.first().map(|(category, _)| category.as_str()),
        };
        report.service.note(&event.kind, sums, resolved);
        if let EventKind::ComplaintOpened {
            category, severity, ..
        } = &event.kind
        {
            *report
                .complaints_opened
                .entry((category.clone(), severity.name()))
                .or_default() += 1;
        }
        entry.dirty = true;
        let s = &settings.trends;
        let keep = settings.keeps_facts();
        let t = event.occurred_at;
        // Only an order moves a customer in the RFM histograms (erasure takes it out).
        let rfm_after = match &event.kind {
            EventKind::OrderPlaced {
                amount_minor,
                margin_minor,
                ..
            } => {
                let months = settings.risk.tier_months;
                customer
                    .trailing
                    .add(t, *amount_minor, *margin_minor, months);
                Some(crate::rfm::point(&customer.state))
            }
            EventKind::Erased => Some(None),
            _ => None,
        };
        if let Some(new) = rfm_after.filter(|new| *new != before.rfm) {
            let moved = Fact::Relocate {
                old: before.rfm,
                new,
            };
            aggregates.note(moved, s, keep.then_some(&mut entry.facts));
        }
        let segment = segment_at(&customer.trailing, t, &settings.risk);
        // The event is late when any of its counts missed its window.
        let mut counted = Counted::InWindow;
        for fact in counted_facts(event, &before, outcome, segment, referrer_segment) {
            if aggregates.note(fact, s, keep.then_some(&mut entry.facts)) == Counted::Late {
                counted = Counted::Late;
            }
        }
        if outcome == Outcome::Erased {
            erase(
                entry,
                &before.open,
                t,
                record_id(),
                settings,
                commit,
                aggregates,
            );
        } else {
            let as_of = customer.risk.as_of(&customer.state);
            let effects = Effects {
                commit,
                aggregates,
                kept: keep.then_some(&mut entry.facts),
            };
            reassess(customer, as_of, record_id, Some(event), settings, effects);
        }
        // Late for a window already emitted, applied to the customer all the same.
        let label = match counted {
            Counted::Late => "late",
            Counted::InWindow => "applied",
        };
        report.count_event(&record.source, event.kind.type_name(), label);
        Ok(())
    }

    fn dead_letter(
        &self,
        record: &InputRecord,
        record_id: &str,
        rejection: &Rejection,
    ) -> OutboxRecord {
        OutboxRecord {
            topic: self.settings.topics.dead_letter.clone(),
            key: record.key.clone(),
            value: Some(record.payload.clone()),
            headers: vec![
                ("reason".into(), rejection.reason.code().into()),
                ("message".into(), rejection.message.clone().into_bytes()),
                ("source_topic".into(), record.source.as_bytes().to_vec()),
                (
                    "source_partition".into(),
                    record.source_partition.to_string().into_bytes(),
                ),
                (
                    "source_offset".into(),
                    record.offset.to_string().into_bytes(),
                ),
                ("record_id".into(), record_id.as_bytes().to_vec()),
            ],
            partition: None,
        }
    }
}

/// Where reassessing a customer puts its effects.
struct Effects<'a> {
    commit: &'a mut Commit,
    aggregates: &'a mut Aggregates,
    /// The customer's facts for the aggregator, when it is elsewhere.
    kept: Option<&'a mut Vec<Fact>>,
}

/// What the aggregates need from a customer's state before an event applies to it.
struct Before {
    /// The complaints the event takes out of the open backlog, by category and open time: the
    /// one a resolution closes, or every one an erasure removes.
    open: Vec<(String, Millis)>,
    /// When a resolution read before this complaint's opening, which waits for it, resolves
    /// the complaint (at once).
    resolved_early: Option<Millis>,
    first_order: bool,
    first_referral: bool,
    /// The customer's RFM point, before an order or an erasure moves it.
    rfm: Option<crate::rfm::Point>,
    sums: ServiceSums,
}

impl Before {
    fn of(state: &CustomerState, event: &Event, limits: &FoldLimits) -> Before {
        let open = match &event.kind {
            EventKind::ComplaintResolved { complaint_id, .. } => state
                .complaint_closed_by(complaint_id, event.occurred_at, limits)
                .map(|i| &state.open_complaints[i])
                .map(|c| (c.category.clone(), c.opened_at))
                .into_iter()
                .collect(),
            EventKind::Erased => state
                .open_complaints
                .iter()
                .map(|c| (c.category.clone(), c.opened_at))
                .collect(),
            _ => Vec::new(),
        };
        let resolved_early = match &event.kind {
            EventKind::ComplaintOpened { complaint_id, .. } => state
                .early_resolution(complaint_id, event.occurred_at, limits)
                .map(|close| close.at),
            _ => None,
        };
        let moves_rfm = matches!(
            event.kind,
            EventKind::OrderPlaced { .. } | EventKind::Erased
        );
        Before {
            open,
            resolved_early,
            first_order: state.orders == 0,
            first_referral: state.referred_by.is_none(),
            rfm: moves_rfm.then(|| crate::rfm::point(state)).flatten(),
            sums: ServiceSums::of(state),
        }
    }
}

/// What an applied event counts in the complaint windows and segment days: a complaint opened
/// (resolved at once when its resolution waited for it; out of the backlog at once past the
/// customer's bound of open complaints, as nothing will resolve it), a complaint resolved, an
/// order (and a new customer with the first), a renewal, a referral (in the referrer's
/// segment, once).
fn counted_facts(
    event: &Event,
    before: &Before,
    outcome: Outcome,
    segment: &str,
    referrer_segment: Option<String>,
) -> Vec<Fact> {
    let t = event.occurred_at;
    let count = |flow: Flow| Fact::Count {
        segment: segment.to_owned(),
        at: t,
        flow: OwnedFlow::of(flow),
    };
    // A resolution dated a little before its complaint's opening (two systems' clocks apart,
    // `FoldLimits::clock_skew_ms`) resolves it at the opening, as the state's resolution time
    // of zero says: no window counts a resolution before its complaint, nor a backlog below
    // zero. Whichever of the two was read first.
    let resolved = |category: &String, opened_at: Millis, at: Millis| Fact::Resolved {
        category: category.clone(),
        opened_at,
        at: at.max(opened_at),
    };
    match &event.kind {
        EventKind::ComplaintOpened {
            category, severity, ..
        } => {
            let opened = Fact::Opened {
                category: category.clone(),
                severity: *severity,
                at: t,
            };
            if let Some(resolved_at) = before.resolved_early {
                vec![opened, resolved(category, t, resolved_at)]
            } else if outcome == Outcome::Applied(Some(Limit::OpenComplaints)) {
                let untracked = Fact::LeftOpen {
                    category: category.clone(),
                    at: t,
                };
                vec![opened, untracked]
            } else {
                vec![opened]
            }
        }
        EventKind::ComplaintResolved { .. } => before
            .open
            .iter()
            .map(|(category, opened_at)| resolved(category, *opened_at, t))
            .collect(),
        EventKind::OrderPlaced {
            amount_minor,
            margin_minor,
            ..
        } => {
            let order = count(Flow::Order {
                amount_minor: *amount_minor,
                margin_minor: *margin_minor,
            });
            if before.first_order {
                let new = Fact::CountChange {
                    segment: segment.to_owned(),
                    at: t,
                    flow: OwnedFlow::New {
                        value_minor: *amount_minor,
                    },
                };
                vec![new, order]
            } else {
                vec![order]
            }
        }
        EventKind::SubscriptionRenewed { reason, .. } => {
            vec![count(Flow::Renewal { reason })]
        }
        EventKind::Registered { .. } => match referrer_segment {
            Some(referrer) if before.first_referral => vec![Fact::Count {
                segment: referrer,
                at: t,
                flow: OwnedFlow::Referral,
            }],
            _ => Vec::new(),
        },
        _ => Vec::new(),
    }
}

/// Takes an erased customer out of the aggregates (its open complaints out of the backlog, its
/// standing out of the population), drops its state, keeps its events up to the erasure and up
/// to the newest it had erased, and publishes its churn-risk tombstone.
fn erase(
    entry: &mut cache::CacheEntry,
    open: &[(String, Millis)],
    at: Millis,
    record_id: String,
    settings: &ProcessorSettings,
    commit: &mut Commit,
    aggregates: &mut Aggregates,
) {
    // The erasure was applied to the customer, so it is there.
    let Some(customer) = entry.record.take() else {
        return;
    };
    let trends = &settings.trends;
    let mut kept = settings.keeps_facts().then_some(&mut entry.facts);
    for (category, opened_at) in open {
        // Dated no earlier than its opening (read before the erasure, dated after it), as a
        // resolution is: no window counts a complaint gone before it opened.
        let left = Fact::LeftOpen {
            category: category.clone(),
            at: at.max(*opened_at),
        };
        aggregates.note(left, trends, kept.as_deref_mut());
    }
    let gone = Fact::Restand {
        old: customer.standing,
        new: None,
        at,
    };
    aggregates.note(gone, trends, kept);
    entry.erased_until = Some(at.max(customer.state.last_event_at));
    entry.erased_now = true;
    commit.outbox.push(Output::Record(OutboxRecord {
        topic: settings.topics.churn_risk.clone(),
        key: Some(customer.state.customer_id.into_bytes()),
        value: None,
        headers: vec![("record_id".into(), record_id.into_bytes())],
        partition: None,
    }));
}

/// When a customer assessed at `as_of` turned `to` (lost, or won back): when the event that
/// turned it was dated, though read after the customer's newer events (another topic, a
/// backfill): a cancellation that lost it (the latest, with no order or renewal since), an
/// order or a renewal that won it back; otherwise at `as_of` (a timer, or the risk at the
/// customer's newest event: silence, which has no event of its own).
fn changed_at(
    cause: Option<&Event>,
    state: &CustomerState,
    to: Lifecycle,
    as_of: Millis,
) -> Millis {
    let Some(event) = cause else {
        return as_of;
    };
    let t = event.occurred_at;
    let dated = match (&event.kind, to) {
        (EventKind::SubscriptionCancelled { .. }, Lifecycle::Lost) => {
            state.cancelled_at == Some(t)
                && state.last_order_at.max(state.last_renewal_at) < Some(t)
        }
        (
            EventKind::OrderPlaced { .. } | EventKind::SubscriptionRenewed { .. },
            Lifecycle::WonBack,
        ) => true,
        _ => false,
    };
    if dated {
        t.min(as_of)
    } else {
        as_of
    }
}

/// A cancellation read after the order or renewal that came back from it (another topic, a
/// backfill's files): the customer, never counted lost, was lost at the cancellation and won
/// back at the return (the earliest the state can date, `CustomerState::came_back_after`),
/// though no churn-risk record said so. `None` for anything else, and for a customer counted
/// lost before (which of its losses the cancellation belongs to is not known).
fn lost_and_back(
    cause: Option<&Event>,
    customer: &Customer,
    as_of: Millis,
) -> Option<(Millis, Millis)> {
    let event = cause?;
    let EventKind::SubscriptionCancelled { .. } = event.kind else {
        return None;
    };
    if !customer.losses.is_empty() || customer.state.lifecycle != Lifecycle::WonBack {
        return None;
    }
    let t = event.occurred_at;
    let back = customer.state.came_back_after(t)?;
    Some((t.min(as_of), back.min(as_of)))
}

/// Assesses `customer` at `as_of`, re-arms its timer, and when its risk or its standing
/// changed (CONTRACT section 2), publishes a churn-risk record, moves it in the segment
/// population and counts it lost or won back (at [`changed_at`]). `cause` is the event just
/// applied, `None` for a timer; `record_id` gives the published record's id, asked only when
/// one is published.
fn reassess(
    customer: &mut Customer,
    as_of: Millis,
    record_id: impl FnOnce() -> String,
    cause: Option<&Event>,
    settings: &ProcessorSettings,
    effects: Effects,
) {
    let caused_by = cause.map(|e| e.event_id.as_str());
    let Effects {
        commit,
        aggregates,
        mut kept,
    } = effects;
    let trends = &settings.trends;
    let risk = &settings.risk;
    let assessment = assess_risk(&customer.state, as_of, risk);
    let segment = segment_at(&customer.trailing, as_of, risk);
    let moved = customer
        .standing
        .as_ref()
        .is_none_or(|s| s.segment != segment);
    let publish =
        moved || assessment.worth_publishing(customer.risk.last.as_ref(), risk.min_score_change);
    // The score the timer measures the next move from: this one's when it is published.
    let published = if publish {
        Some(assessment.score)
    } else {
        customer.risk.last.as_ref().map(|l| l.score)
    };
    // Also look again when revenue ages out of the trailing months and the tier may drop.
    let ages_out = customer.trailing.next_change(as_of, risk.tier_months);
    customer.risk.timer_at = next_check(&customer.state, &assessment, published, risk)
        .into_iter()
        .chain(ages_out)
        .min();
    if assessment.lifecycle == Lifecycle::Lost {
        // Lost stays lost until an order or a renewal wins the customer back (the fold).
        customer.state.lifecycle = Lifecycle::Lost;
    }
    if !publish {
        return;
    }
    customer.risk.last = Some(assessment.published());
    let complete = assessment.completed(&customer.state, segment, risk);
    let standing = Standing {
        segment: complete.segment.clone(),
        lifecycle: complete.lifecycle,
        level: complete.level,
        ltv_minor: complete.ltv_minor,
    };
    let was_lost = customer
        .standing
        .as_ref()
        .is_some_and(|s| s.lifecycle == Lifecycle::Lost);
    let is_lost = standing.lifecycle == Lifecycle::Lost;
    // A lost customer's value is the revenue it kept (until 2026-12-05, its orders' alone).
    let value_minor = customer.state.kept_revenue_minor();
    let segment = &standing.segment;
    let mut count = |at: Millis, flow: OwnedFlow| {
        let fact = Fact::CountChange {
            segment: segment.clone(),
            at,
            flow,
        };
        aggregates.note(fact, trends, kept.as_deref_mut());
    };
    let loss = |at: Millis, reason: ReasonCode, won_back_at: Option<Millis>| Loss {
        at,
        segment: segment.clone(),
        reason,
        value_minor,
        won_back_at,
    };
    // The loss to count: the one this record states, or, for a cancellation read after the
    // return from it, one won back at once.
    let lost = if is_lost && !was_lost {
        let at = changed_at(cause, &customer.state, Lifecycle::Lost, as_of);
        Some(loss(at, strongest_reason(complete.codes, risk), None))
    } else if was_lost && !is_lost {
        // Not before the loss it ends: an order dated before a loss by silence, read after it,
        // counts as won back at the loss.
        let lost_at = customer.losses.last().map_or(Millis::MIN, |l| l.at);
        let at = changed_at(cause, &customer.state, Lifecycle::WonBack, as_of).max(lost_at);
        note_won_back(&mut customer.losses, at);
        count(at, OwnedFlow::WonBack);
        None
    } else {
        lost_and_back(cause, customer, as_of)
            .map(|(at, back_at)| loss(at, ReasonCode::Cancelled, Some(back_at)))
    };
    if let Some(lost) = lost {
        let reason = lost.reason.code().to_owned();
        count(
            lost.at,
            OwnedFlow::Lost {
                value_minor,
                reason,
            },
        );
        if let Some(back_at) = lost.won_back_at {
            count(back_at, OwnedFlow::WonBack);
        }
        note_loss(&mut customer.losses, lost);
    }
    let moved = Fact::Restand {
        old: customer.standing.take(),
        new: Some(standing.clone()),
        at: as_of,
    };
    aggregates.note(moved, trends, kept);
    customer.standing = Some(standing);
    let point = crate::rfm::point(&customer.state);
    let rfm = aggregates.rfm.score(point, &settings.rfm_rules);
    let id = &customer.state.customer_id;
    commit.outbox.push(Output::ChurnRisk {
        topic: settings.topics.churn_risk.clone(),
        record: Box::new(complete.into_record(id, record_id(), caused_by, rfm, risk)),
    });
}

#[cfg(test)]
impl InputRecord {
    /// For tests: an empty, unkeyed record at `offset` of partition `source_partition` of
    /// `source`, kept in the same state partition.
    pub(crate) fn at(source: &str, source_partition: i32, offset: i64) -> InputRecord {
        InputRecord {
            source: source.into(),
            source_partition,
            offset,
            stream: None,
            state_partition: Some(source_partition),
            key: None,
            payload: Vec::new(),
            cut_from: None,
            append_time_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record at `offset` of partition `source_partition` of `source`, unkeyed.
    fn input(source: &str, source_partition: i32, offset: i64, payload: Vec<u8>) -> InputRecord {
        InputRecord {
            state_partition: None,
            payload,
            ..InputRecord::at(source, source_partition, offset)
        }
    }

    #[test]
    fn a_change_of_standing_is_dated_by_the_event_that_made_it_and_only_by_it() {
        let event = |at: Millis, kind: EventKind| Event {
            event_id: "e".into(),
            customer_id: "c".into(),
            occurred_at: at,
            kind,
        };
        let cancel = event(
            100,
            EventKind::SubscriptionCancelled {
                reason: "price".into(),
            },
        );
        let mut state = CustomerState::new("c");
        state.cancelled_at = Some(100);
        state.last_order_at = Some(50);
        assert_eq!(changed_at(Some(&cancel), &state, Lifecycle::Lost, 900), 100);
        // Never later than the assessment.
        assert_eq!(changed_at(Some(&cancel), &state, Lifecycle::Lost, 80), 80);
        // An order since: the cancellation did not lose the customer, silence did.
        state.last_order_at = Some(150);
        assert_eq!(changed_at(Some(&cancel), &state, Lifecycle::Lost, 900), 900);
        // A later cancellation holds: this one did not lose it.
        state.last_order_at = Some(50);
        state.cancelled_at = Some(200);
        assert_eq!(changed_at(Some(&cancel), &state, Lifecycle::Lost, 900), 900);
        // An order or a renewal wins back when dated; nothing else dates a change; nor a timer.
        let order = event(
            300,
            EventKind::OrderPlaced {
                order_id: "o".into(),
                amount_minor: 1,
                margin_minor: 0,
            },
        );
        assert_eq!(
            changed_at(Some(&order), &state, Lifecycle::WonBack, 900),
            300
        );
        assert_eq!(changed_at(Some(&order), &state, Lifecycle::Lost, 900), 900);
        let survey = event(300, EventKind::Survey { score: 1 });
        assert_eq!(changed_at(Some(&survey), &state, Lifecycle::Lost, 900), 900);
        assert_eq!(changed_at(None, &state, Lifecycle::WonBack, 900), 900);
    }

    #[test]
    fn the_aggregator_counts_a_fact_for_a_day_it_already_emitted_as_late() {
        let minimal = "[kafka]\nbrokers = \"x\"\n[state]\npath = \"/tmp/unused\"\n";
        let config = crate::config::Config::parse(minimal, Vec::new()).unwrap();
        let mut settings = crate::pipeline::processor_settings(&config);
        settings.partitions = 1;
        settings.aggregation = Aggregation::Here;
        let mut aggregator = Processor::new(Store::in_memory(), settings);
        const DAY: Millis = 86_400_000;
        const HOUR: Millis = 3_600_000;
        // One renewal at `at` read from the changelog, the partition's watermark at `watermark`.
        let mut renewal = |at: Millis, watermark: Millis, next: i64| {
            let fact = Fact::Count {
                segment: "standard".into(),
                at,
                flow: OwnedFlow::Renewal {
                    reason: "auto".into(),
                },
            };
            let read = PartitionFacts {
                partition: 0,
                facts: vec![fact],
                watermark: Some(watermark),
                next,
                ..PartitionFacts::default()
            };
            aggregator.aggregate("changelog", vec![read]).unwrap()
        };
        let day = 20_500 * DAY;
        // The watermark passes the end of the renewal's day: the day is emitted.
        let first = renewal(day + 10 * HOUR, day + DAY + HOUR, 1);
        assert_eq!(first.late_facts, 0);
        assert!(first.closed_days > 0, "the day closed");
        // A renewal of that day comes after: applied, late.
        assert_eq!(renewal(day + 11 * HOUR, day + DAY + HOUR, 2).late_facts, 1);
        // One of the next day is not.
        assert_eq!(
            renewal(day + DAY + 2 * HOUR, day + DAY + 2 * HOUR, 3).late_facts,
            0
        );
    }

    /// A backlog that moves the watermark weeks at once (a partition delivered whole after
    /// the others) cuts its batch at every day's end: each cut fires the timers due by then and
    /// closes the day. One batch writes each customer once, its timers written ahead so that
    /// the cuts' scans find them, and fires and emits what a batch a record does, each
    /// customer's records in the same order, leaving the same timers stored.
    #[test]
    fn a_batch_that_passes_many_days_writes_each_customer_once_and_fires_as_small_batches_do() {
        let minimal = "[kafka]\nbrokers = \"x\"\n[state]\npath = \"/tmp/unused\"\n";
        let config = crate::config::Config::parse(minimal, Vec::new()).unwrap();
        let settings = crate::pipeline::processor_settings(&config);
        let mut payloads = Vec::new();
        for c in 0..6 {
            for (n, day) in [(0, 1), (1, 4), (2, 9)] {
                payloads.push(format!(
                    r#"{{"event_id":"o{c}-{n}","customer_id":"quiet{c}","type":"order.placed","occurred_at":"2026-03-{day:02}T1{c}:00:00Z","order_id":"o{c}-{n}","amount_minor":{},"margin_minor":100}}"#,
                    1_000 * (c + 1)
                ));
            }
        }
        // The ticker's events move the watermark a day at a time, for nine weeks.
        const DAY: Millis = 86_400_000;
        let march = crate::event::parse_millis("2026-03-01T12:00:00Z").unwrap();
        for day in 0..63 {
            let at = crate::event::format_millis(march + day * DAY);
            payloads.push(format!(
                r#"{{"event_id":"t{day}","customer_id":"ticker","type":"interaction.survey","occurred_at":"{at}","score":9}}"#
            ));
        }
        payloads.sort_by_key(|p| p[p.find("occurred_at").unwrap()..].to_owned());
        let records: Vec<InputRecord> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| input("test", 0, i as i64, payload.into_bytes()))
            .collect();
        let now = 1_777_777_777_000;
        let run = |batch: usize| {
            let store = Store::in_memory();
            let mut processor = Processor::new(store.clone(), settings.clone());
            let mut report = BatchReport::default();
            for chunk in records.chunks(batch) {
                report.absorb(processor.process(chunk, now).unwrap());
            }
            let mut by_key: std::collections::BTreeMap<(String, Vec<u8>), Vec<Vec<u8>>> =
                std::collections::BTreeMap::new();
            for (_, record) in store.outbox(usize::MAX).unwrap() {
                let key = (record.topic.clone(), record.key.clone().unwrap_or_default());
                by_key
                    .entry(key)
                    .or_default()
                    .push(record.value.clone().unwrap_or_default());
            }
            let timers: Vec<Timer> = (0..settings.partitions)
                .flat_map(|p| {
                    store
                        .due_timers(p, (None, Millis::MAX), usize::MAX)
                        .unwrap()
                })
                .collect();
            (report, by_key, timers)
        };
        let (whole, whole_records, whole_timers) = run(records.len());
        let (small, small_records, small_timers) = run(1);
        assert!(
            whole.timers_fired > 12,
            "the quiet customers' timers fired: {}",
            whole.timers_fired
        );
        assert_eq!(whole.timers_fired, small.timers_fired);
        assert_eq!(whole.closed_days, small.closed_days);
        assert_eq!(whole_records, small_records);
        assert_eq!(whole_timers, small_timers);
        // Seven customers, each written once.
        assert_eq!(whole.customers_written, 7);
        assert!(small.customers_written > 7 + whole.timers_fired / 2);
    }

    #[test]
    fn a_panic_while_decoding_on_its_own_thread_is_a_poison_pill() {
        let minimal = "[kafka]\nbrokers = \"x\"\n[state]\npath = \"/tmp/unused\"\n";
        let config = crate::config::Config::parse(minimal, Vec::new()).unwrap();
        let store = Store::in_memory();
        let mut processor =
            Processor::new(store.clone(), crate::pipeline::processor_settings(&config));
        // Enough records for the decoding thread; the pill in the middle of a chunk.
        let records: Vec<InputRecord> = (0..DECODE_AHEAD_FROM as i64 + 100)
            .map(|i| {
                let payload = if i == 100 {
                    PANICS_IN_DECODING.to_vec()
                } else {
                    format!(
                        r#"{{"event_id":"e{i}","customer_id":"c{}","type":"interaction.survey","occurred_at":"2026-05-01T10:00:00Z","score":9}}"#,
                        i % 7
                    )
                    .into_bytes()
                };
                input("test", 0, i, payload)
            })
            .collect();
        let report = processor.process(&records, 1_777_777_777_000).unwrap();
        let n = records.len() as u64;
        assert_eq!(report.count("applied"), n - 1);
        assert_eq!(report.dead_letters.get("processing_error"), Some(&1));
        assert_eq!(store.offset("test", 0).unwrap(), Some(n as i64));
        let dead: Vec<String> = store
            .outbox(usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|(_, r)| r.topic == config.topics.dead_letter)
            .map(|(_, r)| {
                let header = |name: &str| {
                    let (_, value) = r.headers.iter().find(|(k, _)| k == name).unwrap();
                    String::from_utf8(value.clone()).unwrap()
                };
                format!("{} {}", header("record_id"), header("reason"))
            })
            .collect();
        assert_eq!(dead, ["test-0-100 processing_error"]);
    }

    #[test]
    fn a_record_id_is_source_partition_and_offset() {
        let record = |source: &str, source_partition, offset| {
            input(source, source_partition, offset, Vec::new())
        };
        assert_eq!(
            record("customer.orders", 3, 1_234_567).record_id(),
            "customer.orders-3-1234567"
        );
        assert_eq!(
            record("replay:a-b.ndjson", 0, i64::MAX).record_id(),
            format!("replay:a-b.ndjson-0-{}", i64::MAX)
        );
    }
}
