//! Which records of each stored outbox chunk are still pending. A commit stores its outbox
//! records together, under one key numbered by its first record (`codec::encode_outbox_chunk`;
//! past `OUTBOX_CHUNK_BYTES`, under further keys): a key each made the outbox about half of a
//! broker run's memtable inserts. The sink
//! acknowledges records one by one, so a chunk is deleted once the last of its records is
//! acknowledged, and a chunk read from the store again gives only those still pending.
//!
//! What is kept here is what this process learnt: after a restart, a chunk some of whose
//! records were delivered is read whole again, and those are sent again, as the sink allows
//! (under the same record ids).
//!
//! Must not know what the records hold or where they go.

use std::collections::BTreeMap;

#[derive(Default)]
pub(super) struct Chunks {
    /// By the number of a chunk's first record, which is its key.
    chunks: BTreeMap<u64, Chunk>,
}

struct Chunk {
    /// One past the number of its last record.
    end: u64,
    /// Its records not acknowledged yet.
    pending: usize,
    /// Bit i set: record `first + i` is acknowledged, or not in the chunk.
    done: Vec<u64>,
}

impl Chunk {
    /// A chunk of the records numbered from `first` to `end` (excluded), all pending.
    fn pending(first: u64, end: u64) -> Chunk {
        let span = end - first;
        Chunk {
            end,
            pending: span as usize,
            done: vec![0; span.div_ceil(64) as usize],
        }
    }

    fn is_done(&self, i: u64) -> bool {
        self.done[(i / 64) as usize] & (1 << (i % 64)) != 0
    }

    /// Marks record `first + i` acknowledged; whether it was pending.
    fn acknowledge(&mut self, i: u64) -> bool {
        let (word, bit) = ((i / 64) as usize, 1 << (i % 64));
        let pending = self.done[word] & bit == 0;
        if pending {
            self.done[word] |= bit;
            self.pending -= 1;
        }
        pending
    }
}

impl Chunks {
    /// A chunk of `count` records numbered from `first` on, just stored. A reader of the store
    /// may have found it first (between the write and this call), and the sink acknowledged
    /// records of it since: that stands.
    pub(super) fn stored(&mut self, first: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.chunks
            .entry(first)
            .or_insert_with(|| Chunk::pending(first, first + count));
    }

    /// A chunk read from the store, stored under `first`, with its records' numbers in
    /// ascending order. A chunk known already stays as it is: records of it may have been
    /// acknowledged since.
    pub(super) fn found(&mut self, first: u64, numbers: &[u64]) {
        let Some(&last) = numbers.last() else {
            return;
        };
        if self.chunks.contains_key(&first) {
            return;
        }
        let mut chunk = Chunk::pending(first, last + 1);
        // Every number of the span is pending until shown absent.
        let mut present = numbers.iter().peekable();
        for i in 0..last + 1 - first {
            if present.next_if_eq(&&(first + i)).is_none() {
                chunk.acknowledge(i);
            }
        }
        self.chunks.insert(first, chunk);
    }

    /// The key of the known chunk that holds record `seq`, with the chunk.
    fn holding(&self, seq: u64) -> Option<(u64, &Chunk)> {
        let (&first, chunk) = self.chunks.range(..=seq).next_back()?;
        (seq < chunk.end).then_some((first, chunk))
    }

    /// Whether record `seq` of the chunk stored under `first` is still pending (yes when the
    /// chunk is not known).
    pub(super) fn is_pending(&self, first: u64, seq: u64) -> bool {
        match self.chunks.get(&first) {
            Some(chunk) if (first..chunk.end).contains(&seq) => !chunk.is_done(seq - first),
            Some(_) => false,
            None => true,
        }
    }

    /// Where a scan of the store for records numbered `seq` and on starts: the key of the
    /// known chunk that holds it, else `seq`.
    pub(super) fn start_of(&self, seq: u64) -> u64 {
        self.holding(seq).map_or(seq, |(first, _)| first)
    }

    /// Marks records acknowledged (or dropped). Returns the keys of the chunks none of whose
    /// records is pending any more, forgotten here: the caller deletes them.
    pub(super) fn acknowledged(&mut self, seqs: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut emptied = Vec::new();
        // The sink acknowledges in ascending runs: the chunk of the record before is looked
        // up again only when a record lies past it.
        let mut current: Option<(u64, u64)> = None;
        for seq in seqs {
            let first = match current {
                Some((first, end)) if (first..end).contains(&seq) => first,
                _ => match self.holding(seq) {
                    Some((first, chunk)) => {
                        current = Some((first, chunk.end));
                        first
                    }
                    None => continue,
                },
            };
            let chunk = self.chunks.get_mut(&first).expect("the chunk just found");
            if chunk.acknowledge(seq - first) && chunk.pending == 0 {
                self.chunks.remove(&first);
                emptied.push(first);
                current = None;
            }
        }
        emptied
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_goes_once_its_last_record_is_acknowledged_in_any_order() {
        let mut chunks = Chunks::default();
        chunks.stored(10, 3);
        chunks.stored(13, 70);
        assert_eq!(chunks.acknowledged([12, 10]), Vec::<u64>::new());
        assert!(chunks.is_pending(10, 11) && !chunks.is_pending(10, 12));
        // Acknowledged twice counts once.
        assert_eq!(chunks.acknowledged([12, 10, 13]), Vec::<u64>::new());
        assert_eq!(chunks.acknowledged([11]), vec![10]);
        assert_eq!(chunks.start_of(11), 11, "forgotten");
        assert_eq!(chunks.start_of(80), 13);
        assert_eq!(chunks.acknowledged(14..82), Vec::<u64>::new());
        assert_eq!(
            chunks.acknowledged(82..90),
            vec![13],
            "past the chunk: ignored"
        );
        assert_eq!(chunks.start_of(20), 20);
    }

    #[test]
    fn a_chunk_read_back_holds_only_the_numbers_it_has() {
        let mut chunks = Chunks::default();
        chunks.found(5, &[5, 7, 9]);
        assert!(!chunks.is_pending(5, 6) && chunks.is_pending(5, 7));
        assert_eq!(chunks.acknowledged([5, 9]), Vec::<u64>::new());
        assert_eq!(chunks.acknowledged([7]), vec![5]);
        // A chunk known already keeps what was acknowledged of it, whether it was stored or
        // found first.
        chunks.stored(20, 2);
        chunks.acknowledged([20]);
        chunks.found(20, &[20, 21]);
        assert!(!chunks.is_pending(20, 20));
        assert_eq!(chunks.acknowledged([21]), vec![20]);
        chunks.found(22, &[22, 23]);
        chunks.acknowledged([22]);
        chunks.stored(22, 2);
        assert!(!chunks.is_pending(22, 22));
        assert_eq!(chunks.acknowledged([23]), vec![22]);
        assert!(chunks.is_pending(30, 30), "a chunk not known");
    }
}
