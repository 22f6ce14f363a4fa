//! The processor's event-time clock: how far each input partition has got, and the watermark
//! that trails the slowest partition still delivering. Must not know about Kafka, storage or
//! what events mean.

use std::cell::Cell;

use hashbrown::HashMap;

use super::InputRecord;
use crate::event::Millis;

/// How far each input partition has got in event time, and when (processor time) it last
/// delivered: the watermark trails the slowest partition still delivering, so a topic read ahead
/// of another (a backlog read from the start) does not make the other's events late. A partition
/// assigned but silent holds the watermark until it delivers or has been idle for a while.
#[derive(Debug, Clone, Default)]
pub(super) struct Clock {
    /// Source (topic or file) -> partition -> (newest event time if any, processor time it was
    /// assigned or last delivered).
    sources: HashMap<String, HashMap<i32, (Option<Millis>, Millis)>>,
    /// The state partitions events have been folded into, whose timers the watermark fires.
    pub(super) state_partitions: std::collections::BTreeSet<i32>,
    /// The input partitions as last assigned.
    pub(super) assigned: Vec<(String, i32)>,
    /// Sources read as one stream (a replay's files, merged in event time) -> the source whose
    /// entry they share.
    aliases: HashMap<String, String>,
    /// The processor time of the processor's last call ([`Clock::elapse`]).
    last_call: Option<Millis>,
    /// The last frontier worked out while some partition was active, kept while nothing that
    /// could move it has changed: the processor asks for it after every event, and an event
    /// of a partition ahead of the slowest one does not move it.
    frontier_memo: Cell<Option<FrontierMemo>>,
}

/// [`Clock::frontier`]'s answer at processor time `now` with idle limit `idle_ms`.
#[derive(Debug, Clone, Copy)]
struct FrontierMemo {
    now: Millis,
    idle_ms: Millis,
    frontier: Option<Millis>,
}

/// The most of one gap between two of the processor's calls that counts as time its input
/// partitions could deliver in. The pipeline calls at least every 200 ms while its input is
/// idle, and once a batch while it folds; a longer gap is the instance's own pause (a commit
/// retried, a revocation waiting for the outbox, a restore, a long batch), in which nothing was
/// read: after it, the first batch takes what the input fetched meanwhile in the order it
/// came, and a partition with records waiting behind the others' would otherwise look idle and
/// stop holding the watermark, making its own events late.
const MOST_OF_A_GAP_MS: Millis = 1_000;

impl Clock {
    /// Takes in the processor time `now` of a call: of the time since the last call, only
    /// [`MOST_OF_A_GAP_MS`] counts towards a partition's idle time.
    pub(super) fn elapse(&mut self, now: Millis) {
        if let Some(last) = self.last_call {
            let paused = now.saturating_sub(last).saturating_sub(MOST_OF_A_GAP_MS);
            if paused > 0 {
                self.frontier_memo.set(None);
                for (_, seen) in self.sources.values_mut().flat_map(HashMap::values_mut) {
                    *seen = seen.saturating_add(paused).min(now);
                }
            }
        }
        self.last_call = Some(self.last_call.map_or(now, |last| last.max(now)));
    }

    pub(super) fn observe(
        &mut self,
        record: &InputRecord,
        state_partition: i32,
        at: Millis,
        now: Millis,
    ) {
        self.state_partitions.insert(state_partition);
        let source = aliased(&self.aliases, &record.source);
        let partitions = match self.sources.get_mut(source) {
            Some(partitions) => partitions,
            None => self.sources.entry(source.to_owned()).or_default(),
        };
        let entry = partitions
            .entry(record.source_partition)
            .or_insert((None, now));
        let (newest, seen) = *entry;
        *entry = (Some(newest.map_or(at, |n| n.max(at))), now);
        // The frontier stays where it was when this partition was active and ahead of it (or
        // a silent partition holds it): the partition only moved further ahead.
        if let Some(memo) = self.frontier_memo.get() {
            let active = memo.now == now && now.saturating_sub(seen) <= memo.idle_ms;
            let ahead = match (newest, memo.frontier) {
                (Some(newest), Some(frontier)) => newest > frontier,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if !(active && ahead) {
                self.frontier_memo.set(None);
            }
        }
    }

    /// Makes `source` share `with`'s entry: read as one stream with it.
    pub(super) fn alias(&mut self, source: &str, with: &str) {
        self.aliases.insert(source.to_owned(), with.to_owned());
        self.frontier_memo.set(None);
    }

    /// Forgets what partition `partition` of every source delivered, and the assignment, which
    /// is taken again at the next one.
    pub(super) fn forget(&mut self, partition: i32) {
        for partitions in self.sources.values_mut() {
            partitions.remove(&partition);
        }
        self.assigned.clear();
        self.frontier_memo.set(None);
    }

    /// The input partitions the instance owns now: new ones hold the watermark until they
    /// deliver or go idle; revoked ones no longer count, and their timers no longer fire here.
    /// A changed assignment (a rebalance, which pauses every partition) starts every partition's
    /// idle time again: one that waited for the group is not idle.
    pub(super) fn assign(
        &mut self,
        assigned: &[(String, i32)],
        now: Millis,
        stored: impl Fn(&str, i32) -> Option<Millis>,
    ) {
        if self.assigned.as_slice() == assigned {
            return;
        }
        self.assigned = assigned.to_vec();
        self.frontier_memo.set(None);
        for (source, partitions) in &mut self.sources {
            partitions.retain(|p, _| assigned.iter().any(|(s, q)| s == source && q == p));
            for (_, seen) in partitions.values_mut() {
                *seen = (*seen).max(now);
            }
        }
        // A Kafka input partition is the state partition of its events.
        self.state_partitions = assigned.iter().map(|(_, p)| *p).collect();
        for (source, partition) in assigned {
            self.sources
                .entry(source.clone())
                .or_default()
                .entry(*partition)
                .or_insert_with(|| (stored(source, *partition), now));
        }
    }

    /// The newest event time `source`/`partition` delivered, as far as this clock knows (of
    /// all the sources read as one with it).
    pub(super) fn newest(&self, source: &str, partition: i32) -> Option<Millis> {
        self.sources
            .get(aliased(&self.aliases, source))?
            .get(&partition)?
            .0
    }

    /// How far the input partitions of state partition `partition` (for Kafka: the partition
    /// of each input topic) have got, as [`Clock::frontier`] reads all of them.
    pub(super) fn partition_frontier(
        &self,
        partition: i32,
        now: Millis,
        idle_ms: Millis,
    ) -> Holding {
        let mut active = self
            .sources
            .values()
            .filter_map(|partitions| partitions.get(&partition))
            .filter(|(_, seen)| now.saturating_sub(*seen) <= idle_ms)
            .peekable();
        if active.peek().is_none() {
            return Holding::Idle;
        }
        match active.map(|(newest, _)| *newest).min().flatten() {
            Some(at) => Holding::At(at),
            None => Holding::Silent,
        }
    }

    /// The newest event time of the slowest partition that delivered (or was assigned) within
    /// `idle_ms` of `now`; `None` while one of those has delivered nothing yet; when all are
    /// idle, the newest of any.
    pub(super) fn frontier(&self, now: Millis, idle_ms: Millis) -> Option<Millis> {
        if let Some(memo) = self.frontier_memo.get() {
            if memo.now == now && memo.idle_ms == idle_ms {
                return memo.frontier;
            }
        }
        let all = self.sources.values().flat_map(HashMap::values);
        let mut active = all
            .clone()
            .filter(|(_, seen)| now.saturating_sub(*seen) <= idle_ms)
            .peekable();
        if active.peek().is_some() {
            // A silent active partition (None) sorts first: it holds the watermark.
            let frontier = active.map(|(newest, _)| *newest).min().flatten();
            self.frontier_memo.set(Some(FrontierMemo {
                now,
                idle_ms,
                frontier,
            }));
            return frontier;
        }
        all.filter_map(|(newest, _)| *newest).max()
    }

    /// The partitions read too far ahead in event time: those whose newest event time is more
    /// than `lead_ms` past the slowest partition still delivering (within `idle_ms` of `now`),
    /// and, while a partition still delivering has delivered nothing yet, every partition that
    /// has. Partitions gone idle are counted ahead but never hold others back, so a paused
    /// partition stays paused however long it waits, and one that stopped delivering holds the
    /// others for `idle_ms` at most, as it holds the watermark. In `(source, partition)` order.
    pub(super) fn ahead(&self, now: Millis, idle_ms: Millis, lead_ms: Millis) -> Vec<(&str, i32)> {
        let delivering = self
            .sources
            .values()
            .flat_map(HashMap::values)
            .filter(|(_, seen)| now.saturating_sub(*seen) <= idle_ms);
        // A silent partition sorts first (`None`): it holds every partition that delivered.
        let Some(slowest) = delivering.map(|(newest, _)| *newest).min() else {
            return Vec::new();
        };
        let mut ahead: Vec<(&str, i32)> = self
            .sources
            .iter()
            .flat_map(|(source, partitions)| {
                partitions
                    .iter()
                    .filter_map(move |(&partition, (newest, _))| {
                        let newest = (*newest)?;
                        let far =
                            slowest.is_none_or(|slowest| newest.saturating_sub(slowest) > lead_ms);
                        far.then_some((source.as_str(), partition))
                    })
            })
            .collect();
        ahead.sort_unstable();
        ahead
    }
}

/// The source whose entry `source`'s records update: its own, unless read as one with others
/// (`aliases`). A function of the aliases alone, so that `observe` can hold it while it
/// updates the sources.
fn aliased<'a>(aliases: &'a HashMap<String, String>, source: &'a str) -> &'a str {
    aliases.get(source).map_or(source, String::as_str)
}

/// How far a state partition's input has got.
pub(super) enum Holding {
    /// Its input partitions went idle (or it has none of its own, as from a file).
    Idle,
    /// One of them has delivered nothing yet: it holds everything back.
    Silent,
    /// The newest event time of the slowest of them.
    At(Millis),
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// What the clock is told: a record of `source` `partition` with event time `at`, at
    /// processor time `now`; time passing; an assignment; a partition forgotten.
    #[derive(Debug, Clone)]
    enum Step {
        Observe {
            source: u8,
            partition: i32,
            at: Millis,
        },
        Elapse(Millis),
        Assign(Vec<(u8, i32)>),
        Forget(i32),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0u8..3, 0i32..3, 0i64..1_000)
                .prop_map(|(source, partition, at)| Step::Observe { source, partition, at }),
            2 => (0i64..3_000).prop_map(Step::Elapse),
            1 => proptest::collection::vec((0u8..3, 0i32..3), 0..5).prop_map(Step::Assign),
            1 => (0i32..3).prop_map(Step::Forget),
        ]
    }

    fn record(source: u8, partition: i32) -> InputRecord {
        InputRecord::at(&format!("topic-{source}"), partition, 0)
    }

    const HOUR: Millis = 3_600_000;

    fn topics(assigned: &[(u8, i32)]) -> Vec<(String, i32)> {
        assigned
            .iter()
            .map(|(s, p)| (format!("topic-{s}"), *p))
            .collect()
    }

    #[test]
    fn a_partition_more_than_the_lead_past_the_slowest_delivering_one_is_ahead() {
        let mut clock = Clock::default();
        let now = 10_000;
        clock.assign(&topics(&[(0, 0), (0, 1), (1, 0)]), now, |_, _| None);
        clock.observe(&record(0, 0), 0, 5 * HOUR, now);
        clock.observe(&record(0, 1), 1, HOUR, now);
        clock.observe(&record(1, 0), 0, 2 * HOUR, now);
        assert_eq!(clock.ahead(now, 5_000, HOUR), vec![("topic-0", 0)]);
        // Exactly the lead ahead is not too far.
        assert_eq!(clock.ahead(now, 5_000, 4 * HOUR), Vec::<(&str, i32)>::new());
        assert_eq!(
            clock.ahead(now, 5_000, 0),
            vec![("topic-0", 0), ("topic-1", 0)]
        );
    }

    #[test]
    fn a_partition_that_delivered_nothing_yet_holds_every_other_until_it_is_idle() {
        let mut clock = Clock::default();
        let mut now = 10_000;
        clock.assign(&topics(&[(0, 0), (0, 1)]), now, |_, _| None);
        clock.observe(&record(0, 0), 0, HOUR, now);
        assert_eq!(clock.ahead(now, 5_000, HOUR), vec![("topic-0", 0)]);
        now += 5_000;
        assert_eq!(clock.ahead(now, 5_000, HOUR), vec![("topic-0", 0)]);
        // The silent partition and the held one are both idle now: nothing holds anything.
        now += 1;
        assert_eq!(clock.ahead(now, 5_000, HOUR), Vec::<(&str, i32)>::new());
        // A stored event time counts as delivered.
        let mut restarted = Clock::default();
        restarted.assign(&topics(&[(0, 0), (0, 1)]), now, |_, p| {
            (p == 1).then_some(HOUR)
        });
        restarted.observe(&record(0, 0), 0, HOUR / 2, now);
        assert_eq!(restarted.ahead(now, 5_000, HOUR), Vec::<(&str, i32)>::new());
    }

    #[test]
    fn a_paused_partition_stays_ahead_until_the_slowest_comes_within_the_lead() {
        let mut clock = Clock::default();
        let mut now = 10_000;
        clock.assign(&topics(&[(0, 0), (0, 1)]), now, |_, _| None);
        clock.observe(&record(0, 0), 0, 30 * HOUR, now);
        clock.observe(&record(0, 1), 1, HOUR, now);
        // Partition 0, paused, delivers nothing and goes idle; partition 1 reads on.
        for hour in 2..=28 {
            now += 1_000;
            clock.elapse(now);
            clock.observe(&record(0, 1), 1, hour * HOUR, now);
            assert_eq!(
                clock.ahead(now, 5_000, HOUR),
                vec![("topic-0", 0)],
                "{hour}"
            );
        }
        now += 1_000;
        clock.observe(&record(0, 1), 1, 29 * HOUR, now);
        assert_eq!(clock.ahead(now, 5_000, HOUR), Vec::<(&str, i32)>::new());
        // Partition 1 stops delivering: once it is idle it no longer holds partition 0, which,
        // resumed, runs on.
        now += 1_000;
        clock.observe(&record(0, 0), 0, 40 * HOUR, now);
        assert_eq!(clock.ahead(now, 5_000, HOUR), vec![("topic-0", 0)]);
        now += 5_001;
        clock.observe(&record(0, 0), 0, 41 * HOUR, now);
        assert_eq!(clock.ahead(now, 5_000, HOUR), Vec::<(&str, i32)>::new());
    }

    proptest! {
        /// The remembered frontier is always the one worked out afresh from the partitions,
        /// asked after every step as the processor asks after every event.
        #[test]
        fn the_remembered_frontier_is_the_one_worked_out_afresh(
            steps in proptest::collection::vec(step(), 1..60),
            idle_ms in prop_oneof![Just(500i64), Just(5_000)],
        ) {
            let mut clock = Clock::default();
            let mut now: Millis = 10_000;
            for step in steps {
                match step {
                    Step::Observe { source, partition, at } => {
                        clock.observe(&record(source, partition), partition, at, now)
                    }
                    Step::Elapse(ms) => {
                        now += ms;
                        clock.elapse(now);
                    }
                    Step::Assign(assigned) => {
                        let assigned: Vec<(String, i32)> = assigned
                            .into_iter()
                            .map(|(s, p)| (format!("topic-{s}"), p))
                            .collect();
                        clock.assign(&assigned, now, |_, _| None);
                    }
                    Step::Forget(partition) => clock.forget(partition),
                }
                let remembered = clock.frontier(now, idle_ms);
                let fresh = Clock { frontier_memo: Cell::new(None), ..clock.clone() };
                prop_assert_eq!(remembered, fresh.frontier(now, idle_ms));
            }
        }
    }
}
