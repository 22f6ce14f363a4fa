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
//! lives in a store of its own, committed together with its records' outbox. Must not know
//! about Kafka (it reads through a [`ChangelogFeed`]), the input or customers' states.

use std::collections::BTreeMap;

use crate::processor::{BatchReport, PartitionFacts, Processor};
use crate::store::{
    decode_facts, decode_position, ChangelogRecord, POSITION_KEY, WATERMARK_SOURCE,
};

/// At most this many records per step, so a long backlog (an aggregator starting from the
/// beginning) is applied in bounded commits.
const RECORDS_PER_STEP: usize = 20_000;

/// Where the aggregator reads the changelog: every partition, on from where it stopped.
pub trait ChangelogFeed {
    /// Up to `max` records past `from` (per partition, the next offset to read; a partition
    /// not in it from its first record), each partition's in log order, as `(partition,
    /// offset, record)`; waits a moment for the first, none when nothing came.
    fn next(
        &mut self,
        from: &BTreeMap<i32, i64>,
        max: usize,
    ) -> anyhow::Result<Vec<(i32, i64, ChangelogRecord)>>;
}

pub struct Aggregator {
    processor: Processor,
    /// The changelog topic: the name the read offsets and watermarks are stored under.
    topic: String,
    partitions: i32,
}

impl Aggregator {
    /// An aggregator over `processor`, whose store is the aggregator's own and whose settings
    /// emit the aggregates.
    pub fn new(processor: Processor, topic: &str, partitions: i32) -> Aggregator {
        Aggregator {
            processor,
            topic: topic.to_owned(),
            partitions,
        }
    }

    pub fn processor(&self) -> &Processor {
        &self.processor
    }

    /// Reads what the changelog got since the last step (at most [`RECORDS_PER_STEP`]
    /// records), applies it and closes what the watermarks passed, in one commit and the
    /// windows' own. Returns the report and whether there may be more to read at once.
    pub fn step(&mut self, feed: &mut dyn ChangelogFeed) -> anyhow::Result<(BatchReport, bool)> {
        let store = self.processor.store().clone();
        let mut from = BTreeMap::new();
        for partition in 0..self.partitions {
            if let Some(next) = store.offset(&self.topic, partition)? {
                from.insert(partition, next);
            }
        }
        let records = feed.next(&from, RECORDS_PER_STEP)?;
        let more = records.len() >= RECORDS_PER_STEP;
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
        Ok((report, more))
    }
}

/// Takes in the changelog record at `offset`: a claim changes who counts; a counted customer
/// record's facts are applied, a counted position's watermark is the partition's. A record that
/// cannot be read is logged and skipped: it never stops the aggregates.
fn take(into: &mut PartitionFacts, offset: i64, record: &ChangelogRecord) {
    let partition = into.partition;
    let skip = |what: &str, e: &dyn std::fmt::Display| {
        tracing::error!(partition, offset, error = %e, "A changelog {what} could not be read; the aggregator skips it.");
    };
    match record.claim() {
        Ok(Some(claim)) => return into.ownership.claimed(offset, &claim),
        Ok(None) => {}
        Err(e) => return skip("claim", &e),
    }
    if !into.ownership.counts(record.epoch) {
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
            }
            Err(e) => skip("position", &e),
        }
        return;
    }
    if let Some(bytes) = &record.facts {
        match decode_facts(bytes) {
            Ok(facts) => into.facts.extend(facts),
            Err(e) => skip("customer record's facts", &e),
        }
    }
}
