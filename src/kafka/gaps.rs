//! The offsets an input partition's records leave out. Kafka numbers a partition's records
//! one after another, so a record delivered past the offset the partition's next record was
//! due at means the offsets between held records this consumer was not given: retention
//! deleted them before they were read (an instance that fell behind; librdkafka then starts at
//! the first record left), the topic is compacted, or a transactional publisher's markers and
//! aborted records hold them (each transaction's marker takes one offset of every partition it
//! wrote). Tansu 0.6.0 also serves a fetch that starts inside a record batch from the next
//! batch on (README, *Deviations from the contract*). Must not know what the records hold.

use std::collections::HashMap;
use std::sync::Arc;

use crate::processor::InputRecord;

/// Offsets `from..to` of an input partition, at which no record was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub topic: Arc<str>,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// The offset each owned input partition's next record is due at.
#[derive(Debug, Default)]
pub struct Positions {
    next: HashMap<(Arc<str>, i32), i64>,
}

impl Positions {
    /// `partition` of `topic` starts at `next`, the offset stored with its state; with `None`
    /// (none stored: it starts where `kafka.auto_offset_reset` puts it) its first record tells.
    pub fn start(&mut self, topic: &str, partition: i32, next: Option<i64>) {
        let key = (Arc::from(topic), partition);
        match next {
            Some(next) => self.next.insert(key, next),
            None => self.next.remove(&key),
        };
    }

    /// `partition` of `topic` is no longer read here.
    pub fn forget(&mut self, topic: &str, partition: i32) {
        self.next.remove(&(Arc::from(topic), partition));
    }

    /// Follows `batch`, records in the order they were read, and adds to `gaps` each run of
    /// offsets they pass over. A record at or before an offset already followed is a record
    /// delivered again and moves nothing: Tansu 0.6.0 delivers records twice after a fetch
    /// that starts inside a record batch, and records gathered before a revocation come
    /// before those read again once the partition is back (started at its stored offset, or
    /// further on where another instance folded it meanwhile). One lookup per run of a
    /// partition's records.
    pub fn follow(&mut self, batch: &[InputRecord], gaps: &mut Vec<Gap>) {
        for run in
            batch.chunk_by(|a, b| a.source_partition == b.source_partition && a.source == b.source)
        {
            let first = &run[0];
            let key = (Arc::clone(&first.source), first.source_partition);
            let mut next = self.next.get(&key).copied();
            for record in run {
                match next {
                    Some(due) if record.offset < due => continue,
                    Some(due) if record.offset > due => gaps.push(Gap {
                        topic: Arc::clone(&record.source),
                        partition: record.source_partition,
                        from: due,
                        to: record.offset,
                    }),
                    _ => {}
                }
                next = Some(record.offset + 1);
            }
            if let Some(next) = next {
                self.next.insert(key, next);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, partition: i32, offset: i64) -> InputRecord {
        InputRecord::at(topic, partition, offset)
    }

    fn gaps(positions: &mut Positions, batch: &[InputRecord]) -> Vec<(String, i32, i64, i64)> {
        let mut gaps = Vec::new();
        positions.follow(batch, &mut gaps);
        gaps.into_iter()
            .map(|g| (g.topic.to_string(), g.partition, g.from, g.to))
            .collect()
    }

    #[test]
    fn a_record_past_its_partitions_next_offset_leaves_the_offsets_between_as_a_gap() {
        let (orders, complaints) = ("orders", "complaints");
        let mut positions = Positions::default();
        positions.start("orders", 0, Some(10));
        positions.start("orders", 1, Some(10));
        positions.start("complaints", 0, Some(3));
        // Partitions interleaved, each read on from its stored offset: no gap.
        let batch = [
            record(orders, 0, 10),
            record(orders, 1, 10),
            record(orders, 0, 11),
            record(complaints, 0, 3),
            record(orders, 0, 12),
        ];
        assert_eq!(gaps(&mut positions, &batch), []);
        // The next batch: orders 0 goes on at 20 (13 to 19 not given), orders 1 within its
        // run at 15 (11 to 14), complaints 0 where it stopped.
        let batch = [
            record(orders, 0, 20),
            record(orders, 0, 21),
            record(complaints, 0, 4),
            record(orders, 1, 11),
            record(orders, 1, 15),
        ];
        assert_eq!(
            gaps(&mut positions, &batch),
            [
                ("orders".to_owned(), 0, 13, 20),
                ("orders".to_owned(), 1, 12, 15)
            ]
        );
        // A partition started past the first record it is given: the offsets before it.
        positions.start("complaints", 1, Some(0));
        assert_eq!(
            gaps(&mut positions, &[record(complaints, 1, 500)]),
            [("complaints".to_owned(), 1, 0, 500)]
        );
    }

    #[test]
    fn a_partition_with_no_stored_offset_or_a_record_delivered_again_has_no_gap() {
        let orders = "orders";
        let mut positions = Positions::default();
        // No offset stored: it starts where the reset policy puts it, which is no gap.
        positions.start("orders", 0, None);
        assert_eq!(gaps(&mut positions, &[record(orders, 0, 7_000)]), []);
        assert_eq!(
            gaps(&mut positions, &[record(orders, 0, 7_002)]),
            [("orders".to_owned(), 0, 7_001, 7_002)]
        );
        // Records delivered again (as Tansu does after a fetch inside a batch) move nothing:
        // the next record after them goes on from the furthest, with no gap.
        let batch = [
            record(orders, 0, 7_003),
            record(orders, 0, 7_004),
            record(orders, 0, 7_003),
        ];
        assert_eq!(gaps(&mut positions, &batch), []);
        assert_eq!(gaps(&mut positions, &[record(orders, 0, 7_003)]), []);
        assert_eq!(gaps(&mut positions, &[record(orders, 0, 7_005)]), []);
        // Records gathered before a revocation, then the partition back from an offset another
        // instance stored further on: the old ones move nothing, the new go on from there.
        positions.forget("orders", 0);
        positions.start("orders", 0, Some(7_100));
        let batch = [
            record(orders, 0, 7_006),
            record(orders, 0, 7_007),
            record(orders, 0, 7_100),
            record(orders, 0, 7_101),
        ];
        assert_eq!(gaps(&mut positions, &batch), []);
        // Started again at an earlier stored offset: from there.
        positions.start("orders", 0, Some(7_050));
        assert_eq!(gaps(&mut positions, &[record(orders, 0, 7_050)]), []);
        assert_eq!(
            gaps(&mut positions, &[record(orders, 0, 7_060)]),
            [("orders".to_owned(), 0, 7_051, 7_060)]
        );
        // Forgotten, then taken on again with none stored: its first record tells.
        positions.forget("orders", 0);
        assert_eq!(gaps(&mut positions, &[record(orders, 0, 9_000)]), []);
    }
}
