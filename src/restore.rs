//! Restoring a partition's customers from the changelog when the instance is given the
//! partition. Must not know Kafka: it reads through a [`ChangelogSource`].
//!
//! The store remembers, per partition, the changelog offset up to which it has accounted for
//! every record (its own delivered ones, or ones it restored). On assignment the records past that
//! point are read once to see who wrote them, unless there is nothing local to keep:
//!
//! - nothing at all locally (no customer, no offset, never read): one pass applies everything;
//! - only this store (the same writer id, kept with the state across restarts): the local state
//!   is at least as new as the changelog, and nothing is applied;
//! - another writer too (the partition was owned elsewhere meanwhile): the local state is
//!   behind. If the local outbox holds no undelivered changelog record of the partition, the local
//!   state equals the changelog up to the remembered offset, and the tail is applied on top of it.
//!   Otherwise the local state has changes the changelog never got, and a newer owner overtook
//!   them: they are dropped with the partition's local state, and the whole changelog is applied.

use crate::store::{decode_position, ChangelogRecord, Store, StoreError, POSITION_KEY};

/// Records applied per atomic store write.
const CHUNK: usize = 10_000;

/// Where changelog records are read from.
pub trait ChangelogSource {
    /// Calls `each` with every record of `partition` from offset `from` (the first record when
    /// `None`, or when `from` is no longer there) up to `to` (exclusive; the end of the
    /// partition when `None`), in log order. Returns the offset past the last record read;
    /// `None` when there was none.
    fn read(
        &self,
        partition: i32,
        from: Option<i64>,
        to: Option<i64>,
        each: &mut dyn FnMut(i64, ChangelogRecord) -> Result<(), StoreError>,
    ) -> anyhow::Result<Option<i64>>;
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// No record past what the store has accounted for.
    UpToDate,
    /// Only this store's own records were past it: nothing applied.
    Own { records: u64 },
    /// Another writer's records were applied.
    Applied {
        records: u64,
        /// Whether the local state was dropped first (it had undelivered changes).
        from_scratch: bool,
    },
}

/// Brings `partition`'s state up to the changelog, calling `progress(done, total)` as records
/// are applied.
pub fn restore(
    store: &Store,
    source: &dyn ChangelogSource,
    partition: i32,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<Restored> {
    let Some((topic, writer)) = store.changelog() else {
        return Ok(Restored::UpToDate);
    };
    let topic = topic.to_owned();
    let read = store.changelog_read(partition)?;
    if read.is_none() && !store.holds_partition(partition)? {
        // Nothing local to keep (a new instance, a lost disk): one pass applies everything.
        let (records, end) = apply(store, source, partition, None, None, progress)?;
        let Some(end) = end else {
            return Ok(Restored::UpToDate);
        };
        store.set_changelog_read(partition, end)?;
        return Ok(Restored::Applied {
            records,
            from_scratch: false,
        });
    }
    // The end is where this first pass stops: the partition's end as the brokers report it in
    // fetches (not as they list offsets, which not every Kafka-compatible broker gets right).
    let mut foreign = false;
    let mut records = 0;
    let end = source.read(partition, read, None, &mut |_, (key, value)| {
        records += 1;
        if key == POSITION_KEY {
            if let Some(value) = value {
                foreign |= decode_position(&value)?.writer != writer;
            }
        }
        Ok(())
    })?;
    let Some(end) = end else {
        return Ok(Restored::UpToDate);
    };
    if !foreign {
        store.set_changelog_read(partition, end)?;
        return Ok(Restored::Own { records });
    }
    let from_scratch = store.drop_pending(&topic, partition)? > 0;
    let from = if from_scratch {
        store.clear_partition(partition)?;
        None
    } else {
        read
    };
    let (records, _) = apply(store, source, partition, from, Some(end), progress)?;
    store.set_changelog_read(partition, end)?;
    Ok(Restored::Applied {
        records,
        from_scratch,
    })
}

/// Applies `partition`'s records from `from` up to `to` (its end when `None`) in atomic chunks;
/// returns how many were applied and the offset past the last one read.
fn apply(
    store: &Store,
    source: &dyn ChangelogSource,
    partition: i32,
    from: Option<i64>,
    to: Option<i64>,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<(u64, Option<i64>)> {
    // Progress in offsets: compaction leaves gaps, so fewer records than offsets may remain.
    // With no known end, remaining work is reported only when done.
    let mut first = None;
    let mut applied = 0;
    let mut chunk = Vec::with_capacity(CHUNK);
    let end = source.read(partition, from, to, &mut |offset, record| {
        let start = *first.get_or_insert(offset);
        chunk.push(record);
        if chunk.len() == CHUNK {
            store.restore(partition, &chunk)?;
            applied += chunk.len() as u64;
            chunk.clear();
            if let Some(to) = to {
                progress((offset + 1 - start) as u64, (to - start) as u64);
            }
        }
        Ok(())
    })?;
    store.restore(partition, &chunk)?;
    applied += chunk.len() as u64;
    progress(1, 1);
    Ok((applied, end))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use super::*;
    use crate::fold::CustomerState;
    use crate::store::{Commit, Customer};

    /// A changelog topic in memory: a log per partition, offsets from 0; counts its reads.
    #[derive(Default)]
    struct Log(Mutex<HashMap<i32, Vec<ChangelogRecord>>>, AtomicUsize);

    impl Log {
        /// Delivers `store`'s pending changelog records, as the outbox drain would, and
        /// remembers (as the sink does for an owner) that they are accounted for.
        fn deliver(&self, store: &Store) {
            let pending = store.outbox(1_000).unwrap();
            let mut log = self.0.lock().unwrap();
            for (_, record) in &pending {
                let partition = record.partition.unwrap();
                let records = log.entry(partition).or_default();
                records.push((record.key.clone().unwrap(), record.value.clone()));
                store
                    .set_changelog_read(partition, records.len() as i64)
                    .unwrap();
            }
            let seqs: Vec<u64> = pending.iter().map(|(s, _)| *s).collect();
            store.acknowledge(&seqs).unwrap();
        }
    }

    impl ChangelogSource for Log {
        fn read(
            &self,
            partition: i32,
            from: Option<i64>,
            to: Option<i64>,
            each: &mut dyn FnMut(i64, ChangelogRecord) -> Result<(), StoreError>,
        ) -> anyhow::Result<Option<i64>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let records = self.0.lock().unwrap().get(&partition).cloned();
            let records = records.unwrap_or_default();
            let (from, to) = (
                from.unwrap_or(0) as usize,
                to.map_or(records.len(), |t| t as usize),
            );
            let mut end = None;
            for (offset, record) in records.iter().enumerate().take(to).skip(from) {
                each(offset as i64, record.clone())?;
                end = Some(offset as i64 + 1);
            }
            Ok(end)
        }
    }

    fn store() -> Store {
        Store::in_memory().with_changelog("log").unwrap()
    }

    /// Commits `id` with `orders` orders in partition 0 and the orders offset `next`.
    fn write(store: &Store, id: &str, orders: u32, next: i64) {
        let customer = Customer::from(CustomerState {
            orders,
            ..CustomerState::new(id)
        });
        store
            .commit(&Commit {
                customers: vec![(0, id.into(), Some(customer))],
                offsets: vec![("orders".into(), 0, next)],
                ..Commit::default()
            })
            .unwrap();
    }

    fn orders(store: &Store, id: &str) -> Option<u32> {
        store.customer(0, id).unwrap().map(|c| c.orders)
    }

    fn restore_0(store: &Store, log: &Log) -> Restored {
        restore(store, log, 0, &mut |_, _| {}).unwrap()
    }

    #[test]
    fn a_new_instance_restores_everything_another_wrote() {
        let (log, first) = (Log::default(), store());
        write(&first, "a", 1, 10);
        write(&first, "b", 1, 11);
        write(&first, "a", 2, 12);
        log.deliver(&first);
        let second = store();
        assert_eq!(
            restore_0(&second, &log),
            Restored::Applied {
                records: 6,
                from_scratch: false
            }
        );
        assert_eq!(
            (orders(&second, "a"), orders(&second, "b")),
            (Some(2), Some(1))
        );
        assert_eq!(second.offset("orders", 0).unwrap(), Some(12));
        assert_eq!(
            log.1.load(Ordering::SeqCst),
            1,
            "nothing local to keep: one pass"
        );
        assert_eq!(restore_0(&second, &log), Restored::UpToDate, "read once");
    }

    #[test]
    fn its_own_records_are_not_applied_again() {
        let (log, first) = (Log::default(), store());
        write(&first, "a", 1, 10);
        log.deliver(&first);
        // Forget that they were accounted for, as after a crash before it was stored.
        first.set_changelog_read(0, 0).unwrap();
        write(&first, "a", 5, 20);
        assert_eq!(restore_0(&first, &log), Restored::Own { records: 2 });
        assert_eq!(orders(&first, "a"), Some(5), "the newer local state stands");
        assert_eq!(first.offset("orders", 0).unwrap(), Some(20));
    }

    #[test]
    fn a_partition_that_comes_back_applies_only_the_tail() {
        let (log, first, second) = (Log::default(), store(), store());
        write(&first, "a", 1, 10);
        write(&first, "b", 1, 11);
        log.deliver(&first);
        // The partition moves to the second instance, which writes on.
        restore_0(&second, &log);
        write(&second, "b", 2, 12);
        log.deliver(&second);
        // And comes back: only the second's two records are read and applied.
        assert_eq!(
            restore_0(&first, &log),
            Restored::Applied {
                records: 2,
                from_scratch: false
            }
        );
        assert_eq!(
            (orders(&first, "a"), orders(&first, "b")),
            (Some(1), Some(2))
        );
        assert_eq!(first.offset("orders", 0).unwrap(), Some(12));
    }

    #[test]
    fn undelivered_local_changes_overtaken_by_another_owner_are_dropped() {
        let (log, first, second) = (Log::default(), store(), store());
        write(&first, "a", 1, 10);
        log.deliver(&first);
        // The first commits more but dies before delivering it ...
        write(&first, "a", 2, 11);
        write(&first, "z", 1, 12);
        // ... the second restores what reached the changelog and goes on from there.
        restore_0(&second, &log);
        write(&second, "a", 3, 13);
        log.deliver(&second);
        // The first comes back: its undelivered records are stale, its state is rebuilt.
        assert_eq!(
            restore_0(&first, &log),
            Restored::Applied {
                records: 4,
                from_scratch: true
            }
        );
        assert_eq!((orders(&first, "a"), orders(&first, "z")), (Some(3), None));
        assert_eq!(first.offset("orders", 0).unwrap(), Some(13));
        assert!(
            first.outbox(10).unwrap().is_empty(),
            "nothing stale goes out"
        );
    }
}
