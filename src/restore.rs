//! Restoring a partition's customers from the changelog when the instance is given the
//! partition. Must not know Kafka: it reads, claims and releases through a [`ChangelogSource`].
//!
//! On each assignment the instance first *claims* the partition (a claim record, see
//! [`crate::store::Ownership`]), then brings its local state to what the changelog holds below
//! the claim, counting only the records of the owner of the time:
//!
//! - nothing local (a new instance, a lost disk): one pass applies everything;
//! - a local state this store never accounted for in the changelog (kept while the changelog
//!   was off) and no other writer's claim: the local state stands, and goes to the changelog
//!   whole, behind the claim, so that another instance given the partition later restores
//!   every customer, not only those changed since;
//! - nobody else claimed the partition since this store last did (it restarted, or the
//!   partition came back before anyone wrote it): the local state stands, and the claim
//!   continues the previous one, so that undelivered records still count when they arrive;
//! - another writer claimed it since: if this store wrote nothing after that claim and has
//!   nothing of the partition left to deliver, its state equals the changelog up to that claim,
//!   and everything from there is applied on top. Otherwise its state holds changes the
//!   changelog does not count (written while another instance already owned the partition, or
//!   never delivered): they are dropped with the partition's local state, and the whole
//!   changelog is applied;
//! - the changelog holds records of this store's that the store no longer has (numbered at or
//!   past what its outbox numbered next when it opened): it lost its latest writes, as when the
//!   machine stops before the write-ahead log reached the disk (it is not synced at each
//!   commit) or its directory is put back from a backup. Folding those events again would
//!   count their facts a second time in the aggregates, so the local state is dropped and the
//!   whole changelog applied, with the input positions it carries; the outbox numbers its next
//!   records past the ones found, so that no number is given twice.
//!
//! The store remembers, per partition, the offset up to which the changelog holds nothing it has
//! not accounted for: its claim, then its own records as they are delivered without a gap, and
//! past a gap once [`check_claims`] has read it and found no other writer's claim there, or past
//! the partition's end once [`check_claims_to_end`] has.
//!
//! While it owns a partition, the instance looks for another writer's claim there (the broker
//! may have handed the partition on without telling it), and whether that writer has since
//! *released* the partition: the release an instance writes when a partition is revoked from
//! it ([`release`]). Released, the partition is this instance's again; kept, it is the other's.

use crate::store::{ChangelogRecord, Claim, Epoch, Ownership, Store, StoreError};

/// Records applied per atomic store write.
const CHUNK: usize = 10_000;

/// Where changelog records are read from, and claims and releases written to.
pub trait ChangelogSource {
    /// Calls `each` with every record of `partition` from offset `from` (the first record when
    /// `None`, or when `from` is no longer there) up to `to` (exclusive), in log order. Returns
    /// the offset past the last record read; `None` when there was none.
    fn read(
        &self,
        partition: i32,
        from: Option<i64>,
        to: i64,
        each: &mut dyn FnMut(i64, ChangelogRecord) -> Result<(), StoreError>,
    ) -> anyhow::Result<Option<i64>>;

    /// Appends `claim` to `partition` and returns its offset once the brokers acknowledged it.
    fn claim(&self, partition: i32, claim: &Claim) -> anyhow::Result<i64>;

    /// The offset the next record appended to `partition` will have.
    fn end(&self, partition: i32) -> anyhow::Result<i64>;

    /// Appends a release of each epoch to its partition, all at once, and returns once the
    /// brokers acknowledged them (or one failed).
    fn release(&self, releases: &[(i32, Epoch)]) -> anyhow::Result<()>;
}

/// Another writer's claim on a partition this store still writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForeignClaim {
    /// Its offset.
    pub offset: i64,
    /// Whether its writer released the partition after it: the claimant no longer holds it.
    pub released: bool,
}

/// Writes, as `partitions` are revoked from this store's instance, that their latest claims no
/// longer hold them (see [`ForeignClaim`]). A partition without a claim gets nothing.
pub fn release(
    store: &Store,
    source: &dyn ChangelogSource,
    partitions: &[i32],
) -> anyhow::Result<()> {
    let Some((_, writer)) = store.changelog() else {
        return Ok(());
    };
    let releases: Vec<(i32, Epoch)> = partitions
        .iter()
        .filter_map(|&p| {
            Some((
                p,
                Epoch {
                    writer,
                    claim: store.epoch(p)?,
                },
            ))
        })
        .collect();
    source.release(&releases)
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// No record past what the store has accounted for.
    UpToDate,
    /// Only this store's own records (or ones that do not count) were past it: nothing applied.
    Own { records: u64 },
    /// Another writer's records were applied.
    Applied {
        records: u64,
        /// Whether the local state was dropped first.
        from_scratch: bool,
    },
    /// The changelog held records of this store's that the store had lost: its local state
    /// was dropped and the whole changelog applied.
    LostWrites { records: u64 },
    /// The local state was kept without the changelog (the store had never accounted for the
    /// partition's changelog) and no other writer claimed the partition: it stands, and
    /// `records` of it went to the changelog ([`Store::publish_partition`]).
    Published { records: u64 },
}

/// Claims `partition` and brings its state up to the changelog, calling `progress(done, total)`
/// as records are applied.
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
    let claim = source.claim(
        partition,
        &Claim {
            writer,
            continues: store.epoch(partition),
        },
    )?;
    let read = match store.changelog_read(partition)?.filter(|r| *r <= claim) {
        // A publishing that did not finish: as though never accounted for, so it goes again.
        Some(_) if store.publishing(partition)? => None,
        read => read,
    };
    let restored = if read.is_none() && !store.holds_partition(partition)? {
        // Nothing local to keep: one pass applies everything.
        match apply(store, source, partition, None, claim, progress)? {
            0 => Restored::UpToDate,
            records => Restored::Applied {
                records,
                from_scratch: false,
            },
        }
    } else {
        // Who claimed the partition since this store last accounted for it, did this store
        // write after that, and did it lose records of its own that the changelog holds?
        let (mut records, mut foreign, mut written_after, mut lost) = (0, None, false, None);
        source.read(partition, read, claim, &mut |offset, record| {
            records += 1;
            lost = lost.max(lost_number(store, partition, &record));
            match record.claim()? {
                Some(c) if c.writer != writer => {
                    foreign.get_or_insert(offset);
                }
                Some(_) => {}
                None => {
                    written_after |=
                        foreign.is_some() && record.epoch.is_some_and(|e| e.writer == writer)
                }
            }
            Ok(())
        })?;
        if let Some(number) = lost {
            tracing::warn!(
                partition,
                number,
                "The changelog holds records this state directory wrote and no longer has (the \
                 machine stopped before its log reached the disk, or it was put back from a \
                 copy): the partition's state is taken from the changelog."
            );
        }
        match (foreign, lost) {
            // A state kept without the changelog, and nobody else wrote it: it stands, and
            // goes to the changelog whole (below, once its records are in this claim's epoch).
            (None, None) if read.is_none() => Restored::Published { records: 0 },
            (None, None) if records == 0 => Restored::UpToDate,
            (None, None) => Restored::Own { records },
            (foreign, lost) => {
                // Pending records go: overtaken by another writer's, or, in a store that lost
                // later records of its own, delivered before those.
                let undelivered = store.drop_pending(&topic, partition)? > 0;
                // Without a mark, the local state (written without a changelog, or before
                // its claim was stored) is no base for a tail; nor is a state that lost what
                // the changelog counted.
                let from_scratch = lost.is_some() || undelivered || written_after || read.is_none();
                let from = match foreign {
                    Some(foreign) if !from_scratch => Some(foreign),
                    _ => {
                        store.clear_partition(partition)?;
                        None
                    }
                };
                let records = apply(store, source, partition, from, claim, progress)?;
                match lost {
                    Some(_) => Restored::LostWrites { records },
                    None => Restored::Applied {
                        records,
                        from_scratch,
                    },
                }
            }
        }
    };
    store.set_epoch(partition, claim)?;
    let restored = match restored {
        Restored::Published { .. } => {
            // Accounted for from the claim on before anything is sent, so that records the
            // drain delivers while the rest is sent move the mark on (marked after, they would
            // leave a gap for `check_claims` to read back; in the restart benchmark none was
            // delivered that early, so this costs or saves nothing there); flagged until all
            // are in the outbox, so that a start stopped part of the way publishes again.
            store.set_publishing(partition, true)?;
            store.set_changelog_read(partition, claim + 1)?;
            let records = store.publish_partition(partition)?;
            store.set_publishing(partition, false)?;
            Restored::Published { records }
        }
        restored => {
            store.set_changelog_read(partition, claim + 1)?;
            restored
        }
    };
    Ok(restored)
}

/// Whether another writer claimed `partition` while this store still writes it: looks at what
/// lies between what the store has accounted for and its own records just delivered at
/// `delivered` (a gap that [`Store::advance_changelog_read`] could not pass). Returns the latest
/// claim by another writer after this store's latest, in the first gap that holds one; without
/// one, everything up to and over `delivered` is accounted for.
///
/// A broker may hand a partition to a new member and never tell the old owner, or hand it
/// back to the old owner in its next generation, which never heard it had gone (Tansu does
/// both). The new member's claim stands in the changelog, so nothing the old owner writes counts
/// any more, though the group says it owns the partition. Whether the claimant still holds it,
/// its release tells ([`ForeignClaim::released`]).
pub fn check_claims(
    store: &Store,
    source: &dyn ChangelogSource,
    partition: i32,
    delivered: &mut [i64],
) -> anyhow::Result<Option<ForeignClaim>> {
    let (Some((_, writer)), Some(epoch)) = (store.changelog(), store.epoch(partition)) else {
        return Ok(None);
    };
    // The records delivered since may have closed a gap from this side; several gaps (records
    // delivered in several rounds) are read one after the other.
    while let Some(to) = store.advance_changelog_read(partition, delivered)? {
        let Some(read) = store.changelog_read(partition)? else {
            return Ok(None);
        };
        if let Some(claim) = foreign_claim(source, partition, (writer, epoch), read, to)? {
            return Ok(Some(claim));
        }
        store.set_changelog_read(partition, to)?;
    }
    Ok(None)
}

/// Whether another writer claimed `partition` in what the changelog got past what this store
/// has accounted for, up to its end: what [`check_claims`] finds in a gap, for an owner that
/// writes nothing (the group may hand the partition on and never tell it; with no events for
/// it, this owner has no records of its own to find a gap before), and, once a claim was found,
/// what followed it: a release, or a later claim. Returns the latest such claim; without one,
/// everything up to the end is accounted for.
pub fn check_claims_to_end(
    store: &Store,
    source: &dyn ChangelogSource,
    partition: i32,
) -> anyhow::Result<Option<ForeignClaim>> {
    let (Some((_, writer)), Some(epoch)) = (store.changelog(), store.epoch(partition)) else {
        return Ok(None);
    };
    let Some(read) = store.changelog_read(partition)? else {
        return Ok(None);
    };
    let end = source.end(partition)?;
    if end <= read {
        return Ok(None);
    }
    if let Some(claim) = foreign_claim(source, partition, (writer, epoch), read, end)? {
        return Ok(Some(claim));
    }
    store.set_changelog_read(partition, end)?;
    Ok(None)
}

/// The latest claim in `partition` from `from` up to `to` (exclusive) by another writer than
/// `writer` after its claim at `epoch` (one before it was dealt with by the restore of that
/// claim), and whether its writer released it after.
fn foreign_claim(
    source: &dyn ChangelogSource,
    partition: i32,
    (writer, epoch): (u64, i64),
    from: i64,
    to: i64,
) -> anyhow::Result<Option<ForeignClaim>> {
    let mut latest: Option<(u64, ForeignClaim)> = None;
    source.read(partition, Some(from), to, &mut |offset, record| {
        if let Some(released) = record.release() {
            if let Some((claimant, claim)) = &mut latest {
                claim.released |= released.writer == *claimant && released.claim == claim.offset;
            }
            return Ok(());
        }
        match record.claim()? {
            // This store's own later claim (made while this was read) settles what came before.
            Some(claim) if claim.writer == writer => latest = None,
            Some(claim) if offset > epoch => {
                let found = ForeignClaim {
                    offset,
                    released: false,
                };
                latest = Some((claim.writer, found));
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(latest.map(|(_, claim)| claim))
}

/// Applies the records of `partition` that count, from `from` (the start when `None`) up to the
/// claim at `to`, in atomic chunks written on a thread of their own while the next chunk is
/// read, in order; returns how many were applied.
fn apply(
    store: &Store,
    source: &dyn ChangelogSource,
    partition: i32,
    from: Option<i64>,
    to: i64,
    progress: &mut dyn FnMut(u64, u64),
) -> anyhow::Result<u64> {
    // At most two chunks wait for the writer: memory stays bounded if RocksDB is the slower.
    let (chunks, written) = std::sync::mpsc::sync_channel::<Vec<ChangelogRecord>>(2);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || -> Result<u64, StoreError> {
            let mut applied = 0;
            for chunk in written {
                applied += chunk.len() as u64;
                store.restore(partition, chunk)?;
            }
            Ok(applied)
        });
        // Progress in offsets: compaction leaves gaps, so fewer records than offsets may remain.
        let mut first = None;
        let mut ownership = Ownership::default();
        let mut chunk = Vec::with_capacity(CHUNK);
        let mut lost = None;
        let read = source.read(partition, from, to, &mut |offset, record| {
            let start = *first.get_or_insert(offset);
            lost = lost.max(lost_number(store, partition, &record));
            if let Some(claim) = record.claim()? {
                ownership.claimed(offset, &claim);
                return Ok(());
            }
            if !ownership.counts(record.epoch) {
                return Ok(());
            }
            chunk.push(record);
            if chunk.len() == CHUNK {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                // Refused only when the writer stopped on an error, which is reported below.
                chunks
                    .send(full)
                    .map_err(|_| StoreError::Backend("the restore's writer stopped".into()))?;
                progress((offset + 1 - start) as u64, (to - start).max(1) as u64);
            }
            Ok(())
        });
        let _ = chunks.send(chunk);
        drop(chunks);
        let applied = writer
            .join()
            .map_err(|_| anyhow::anyhow!("the restore's writer panicked"))??;
        read?;
        // Numbered on past the records of its own it lost, so that no number is given twice.
        if let Some(number) = lost {
            store.number_outbox_past(number)?;
        }
        progress(1, 1);
        Ok(applied)
    })
}

/// The number of `record`, when it is one of this store's that the store lost (see
/// [`Store::lost_own`]).
fn lost_number(store: &Store, partition: i32, record: &ChangelogRecord) -> Option<u64> {
    let sequence = record.sequence?;
    store
        .lost_own(partition, record.epoch, sequence)
        .then_some(sequence.number)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::fold::CustomerState;
    use crate::store::{Commit, Customer, MemoryBackend, CLAIM_KEY, RELEASE_KEY};

    /// A changelog topic in memory: a log per partition, offsets from 0; counts its reads.
    #[derive(Default)]
    struct Log(Mutex<HashMap<i32, Vec<ChangelogRecord>>>, AtomicUsize);

    impl Log {
        /// Delivers `store`'s pending changelog records, as the outbox drain would, and tells
        /// the store where they landed, as the sink does for an owner.
        fn deliver(&self, store: &Store) {
            let pending = store.outbox(1_000).unwrap();
            for (_, record) in &pending {
                let partition = record.partition.unwrap();
                let offset = self.append(partition, ChangelogRecord::delivered(record));
                store
                    .advance_changelog_read(partition, &mut [offset])
                    .unwrap();
            }
            let seqs: Vec<u64> = pending.iter().map(|(s, _)| *s).collect();
            store.acknowledge(&seqs).unwrap();
        }

        fn append(&self, partition: i32, record: ChangelogRecord) -> i64 {
            let mut log = self.0.lock().unwrap();
            let records = log.entry(partition).or_default();
            records.push(record);
            records.len() as i64 - 1
        }
    }

    impl ChangelogSource for Log {
        fn read(
            &self,
            partition: i32,
            from: Option<i64>,
            to: i64,
            each: &mut dyn FnMut(i64, ChangelogRecord) -> Result<(), StoreError>,
        ) -> anyhow::Result<Option<i64>> {
            self.1.fetch_add(1, Ordering::SeqCst);
            let records = self.0.lock().unwrap().get(&partition).cloned();
            let records = records.unwrap_or_default();
            let mut end = None;
            for (offset, record) in records
                .iter()
                .enumerate()
                .take(to as usize)
                .skip(from.unwrap_or(0) as usize)
            {
                each(offset as i64, record.clone())?;
                end = Some(offset as i64 + 1);
            }
            Ok(end)
        }

        fn claim(&self, partition: i32, claim: &Claim) -> anyhow::Result<i64> {
            Ok(self.append(
                partition,
                ChangelogRecord {
                    key: CLAIM_KEY.to_vec(),
                    value: Some(claim.to_bytes()),
                    epoch: None,
                    facts: None,
                    sequence: None,
                },
            ))
        }

        fn end(&self, partition: i32) -> anyhow::Result<i64> {
            Ok(self.0.lock().unwrap().get(&partition).map_or(0, Vec::len) as i64)
        }

        fn release(&self, releases: &[(i32, Epoch)]) -> anyhow::Result<()> {
            for (partition, epoch) in releases {
                self.append(
                    *partition,
                    ChangelogRecord {
                        key: RELEASE_KEY.to_vec(),
                        value: Some(epoch.to_header()),
                        epoch: None,
                        facts: None,
                        sequence: None,
                    },
                );
            }
            Ok(())
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
        let mut commit = Commit {
            offsets: vec![("orders".into(), 0, next)],
            ..Commit::default()
        };
        commit.put_customer(0, id.into(), Some(&customer));
        store.commit(commit).unwrap();
    }

    fn orders(store: &Store, id: &str) -> Option<u32> {
        store.customer(0, id).unwrap().map(|c| c.orders)
    }

    fn restore_0(store: &Store, log: &Log) -> Restored {
        restore(store, log, 0, &mut |_, _| {}).unwrap()
    }

    /// A store that claims partition 0 of `log`, commits `writes` (customer, orders, orders
    /// offset) and delivers them.
    fn first_owner(log: &Log, writes: &[(&str, u32, i64)]) -> Store {
        let owner = store();
        restore_0(&owner, log);
        for (id, orders, next) in writes {
            write(&owner, id, *orders, *next);
        }
        log.deliver(&owner);
        owner
    }

    /// `(orders of each of ids, the orders offset)` in `store`.
    fn view(store: &Store, ids: &[&str]) -> (Vec<Option<u32>>, Option<i64>) {
        (
            ids.iter().map(|id| orders(store, id)).collect(),
            store.offset("orders", 0).unwrap(),
        )
    }

    /// What a store with no local state restores from `log`, as [`view`] shows it.
    fn fresh_view(log: &Log, ids: &[&str]) -> (Vec<Option<u32>>, Option<i64>) {
        let fresh = store();
        restore_0(&fresh, log);
        view(&fresh, ids)
    }

    #[test]
    fn a_new_instance_restores_everything_another_wrote() {
        let (log, first) = (Log::default(), store());
        assert_eq!(restore_0(&first, &log), Restored::UpToDate);
        write(&first, "a", 1, 10);
        write(&first, "b", 1, 11);
        write(&first, "a", 2, 12);
        log.deliver(&first);
        let second = store();
        log.1.store(0, Ordering::SeqCst);
        assert_eq!(
            restore_0(&second, &log),
            Restored::Applied {
                records: 6,
                from_scratch: false
            }
        );
        assert_eq!(
            view(&second, &["a", "b"]),
            (vec![Some(2), Some(1)], Some(12))
        );
        assert_eq!(
            log.1.load(Ordering::SeqCst),
            1,
            "nothing local to keep: one pass"
        );
        assert_eq!(restore_0(&second, &log), Restored::UpToDate, "read once");
    }

    #[test]
    fn its_own_records_are_not_applied_again() {
        let log = Log::default();
        let first = first_owner(&log, &[("a", 1, 10)]);
        // Forget that they were accounted for, as after a crash before it was stored.
        first.set_changelog_read(0, 0).unwrap();
        write(&first, "a", 5, 20);
        assert_eq!(
            restore_0(&first, &log),
            Restored::Own { records: 3 },
            "its claim, customer and position"
        );
        assert_eq!(orders(&first, "a"), Some(5), "the newer local state stands");
        assert_eq!(first.offset("orders", 0).unwrap(), Some(20));
    }

    /// A store with the changelog on `disk`.
    fn store_on(disk: Arc<MemoryBackend>) -> Store {
        Store::open(disk).unwrap().with_changelog("log").unwrap()
    }

    /// A store whose partition 0 was kept without the changelog on `disk` (customers `ids`
    /// with one order each, the orders offset `next`), opened again with it.
    fn kept_without_changelog(ids: &[&str], next: i64) -> Store {
        let disk = Arc::new(MemoryBackend::default());
        let plain = Store::open(disk.clone()).unwrap();
        for id in ids {
            write(&plain, id, 1, next);
        }
        assert!(plain.outbox(10).unwrap().is_empty(), "no changelog records");
        store_on(disk)
    }

    #[test]
    fn a_state_kept_without_the_changelog_stands_and_goes_to_it_once() {
        let log = Log::default();
        let ids = ["a", "b", "c"];
        let kept = kept_without_changelog(&ids, 10);
        assert_eq!(restore_0(&kept, &log), Restored::Published { records: 3 });
        let expected = (vec![Some(1); 3], Some(10));
        assert_eq!(view(&kept, &ids), expected, "the local state stands");
        log.deliver(&kept);
        // Started again: the partition is accounted for, and nothing goes again.
        assert_eq!(restore_0(&kept, &log), Restored::UpToDate);
        assert!(kept.outbox(10).unwrap().is_empty());
        assert_eq!(
            fresh_view(&log, &ids),
            expected,
            "another store restores every customer"
        );
        let (log, kept) = (Log::default(), kept_without_changelog(&ids, 10));
        restore_0(&kept, &log);
        write(&kept, "a", 2, 11);
        log.deliver(&kept);
        assert_eq!(
            fresh_view(&log, &ids),
            (vec![Some(2), Some(1), Some(1)], Some(11)),
            "its changes follow the state published"
        );
    }

    #[test]
    fn a_publishing_stopped_part_of_the_way_goes_again() {
        let log = Log::default();
        let ids = ["a", "b"];
        let kept = kept_without_changelog(&ids, 10);
        assert_eq!(restore_0(&kept, &log), Restored::Published { records: 2 });
        assert!(!kept.publishing(0).unwrap());
        // Its records, delivered, move the mark on over them.
        log.deliver(&kept);
        assert_eq!(
            kept.changelog_read(0).unwrap(),
            Some(4),
            "claim, 2 customers, position"
        );
        // As though it had stopped before the last of them was in the outbox.
        kept.set_publishing(0, true).unwrap();
        assert_eq!(restore_0(&kept, &log), Restored::Published { records: 2 });
        assert!(!kept.publishing(0).unwrap());
        log.deliver(&kept);
        assert_eq!(fresh_view(&log, &ids), (vec![Some(1); 2], Some(10)));
    }

    #[test]
    fn a_state_written_without_the_changelog_for_a_while_goes_to_it_whole_again() {
        let (log, disk) = (Log::default(), Arc::new(MemoryBackend::default()));
        let with = store_on(disk.clone());
        restore_0(&with, &log);
        write(&with, "a", 1, 10);
        log.deliver(&with);
        // Written without the changelog (a run with it off, or a replay): it forgets what
        // the changelog accounted for.
        let without = Store::open(disk.clone()).unwrap();
        assert_eq!(without.forget_changelog_read().unwrap(), 1);
        write(&without, "b", 1, 11);
        // With the changelog again: the state goes to it whole, behind its own old records.
        let again = store_on(disk);
        assert_eq!(restore_0(&again, &log), Restored::Published { records: 2 });
        log.deliver(&again);
        assert_eq!(
            fresh_view(&log, &["a", "b"]),
            (vec![Some(1), Some(1)], Some(11))
        );
    }

    #[test]
    fn a_state_kept_without_the_changelog_that_another_writer_claimed_gives_way() {
        let log = Log::default();
        let _other = first_owner(&log, &[("a", 5, 20)]);
        let kept = kept_without_changelog(&["a", "b"], 10);
        let restored = restore_0(&kept, &log);
        assert!(
            matches!(
                restored,
                Restored::Applied {
                    from_scratch: true,
                    ..
                }
            ),
            "{restored:?}"
        );
        assert_eq!(view(&kept, &["a", "b"]), (vec![Some(5), None], Some(20)));
        assert!(
            kept.outbox(10).unwrap().is_empty(),
            "nothing of its own goes"
        );
    }

    /// The highest number of a record in partition 0 of `log`.
    fn last_number(log: &Log) -> u64 {
        log.0.lock().unwrap()[&0]
            .iter()
            .filter_map(|r| r.sequence)
            .map(|s| s.number)
            .max()
            .unwrap()
    }

    /// Asserts that what `store` writes next is numbered past `delivered`: no number twice.
    fn numbered_past(store: &Store, delivered: u64) {
        write(store, "c", 1, 13);
        let pending = store.outbox(100).unwrap();
        assert!(!pending.is_empty());
        assert!(
            pending.iter().all(|(number, _)| *number > delivered),
            "numbered past {delivered}, the last delivered: {:?}",
            pending.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_store_that_lost_writes_it_had_delivered_takes_them_from_the_changelog() {
        // The write-ahead log is not synced at each commit: a machine that stops leaves the
        // store as it was a moment before, which the changelog may have passed.
        let disk = Arc::new(MemoryBackend::default());
        let (log, first) = (Log::default(), store_on(Arc::clone(&disk)));
        restore_0(&first, &log);
        write(&first, "a", 1, 10);
        // What the disk keeps: "a" committed, its records not yet delivered.
        let kept = Arc::new(disk.copy());
        log.deliver(&first);
        write(&first, "a", 2, 11);
        write(&first, "b", 1, 12);
        log.deliver(&first);
        // Committed, never delivered: lost with the rest.
        write(&first, "c", 1, 13);
        let delivered = last_number(&log);

        let second = store_on(kept);
        assert_eq!(
            restore_0(&second, &log),
            Restored::LostWrites { records: 6 },
            "its records from its claim on, customers and positions"
        );
        // As delivered: the events of offsets 11 and 12 are not folded (and counted) again.
        assert_eq!(
            view(&second, &["a", "b", "c"]),
            (vec![Some(2), Some(1), None], Some(12))
        );
        assert!(
            second.outbox(100).unwrap().is_empty(),
            "its pending records of the partition were delivered before the ones it lost"
        );
        numbered_past(&second, delivered);
    }

    #[test]
    fn a_store_that_lost_every_write_of_a_partition_numbers_past_what_it_delivered() {
        let disk = Arc::new(MemoryBackend::default());
        let (log, first) = (Log::default(), store_on(Arc::clone(&disk)));
        // What the disk keeps: the store's writer id, nothing of the partition.
        let kept = Arc::new(disk.copy());
        restore_0(&first, &log);
        write(&first, "a", 1, 10);
        write(&first, "b", 1, 11);
        log.deliver(&first);
        let delivered = last_number(&log);

        let second = store_on(kept);
        assert_eq!(
            restore_0(&second, &log),
            Restored::Applied {
                records: 4,
                from_scratch: false
            },
            "nothing local: one pass applies everything"
        );
        assert_eq!(
            view(&second, &["a", "b"]),
            (vec![Some(1), Some(1)], Some(11))
        );
        numbered_past(&second, delivered);
    }

    #[test]
    fn records_committed_before_a_restart_count_when_they_arrive_after_it() {
        let (log, first) = (Log::default(), store());
        restore_0(&first, &log);
        write(&first, "a", 1, 10);
        // Restarted before delivering: the new claim continues the old one ...
        assert_eq!(restore_0(&first, &log), Restored::UpToDate);
        // ... so the record, tagged with the old claim, still counts.
        log.deliver(&first);
        assert_eq!(fresh_view(&log, &["a"]), (vec![Some(1)], Some(10)));
    }

    #[test]
    fn a_partition_that_comes_back_applies_only_the_tail() {
        let log = Log::default();
        let (first, second) = (first_owner(&log, &[("a", 1, 10), ("b", 1, 11)]), store());
        // The partition moves to the second instance, which writes on.
        restore_0(&second, &log);
        write(&second, "b", 2, 12);
        log.deliver(&second);
        // And comes back: only the second's two records are applied.
        assert_eq!(
            restore_0(&first, &log),
            Restored::Applied {
                records: 2,
                from_scratch: false
            }
        );
        assert_eq!(
            view(&first, &["a", "b"]),
            (vec![Some(1), Some(2)], Some(12))
        );
    }

    #[test]
    fn undelivered_local_changes_overtaken_by_another_owner_are_dropped() {
        let log = Log::default();
        let (first, second) = (first_owner(&log, &[("a", 1, 10)]), store());
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
        assert_eq!(view(&first, &["a", "z"]), (vec![Some(3), None], Some(13)));
        assert!(
            first.outbox(10).unwrap().is_empty(),
            "nothing stale goes out"
        );
    }

    #[test]
    fn what_an_owner_writes_after_another_claimed_its_partition_does_not_count() {
        let log = Log::default();
        let (first, second) = (first_owner(&log, &[("a", 1, 10), ("b", 1, 11)]), store());
        // The partition goes to the second before the first hears of it: both write.
        restore_0(&second, &log);
        write(&second, "b", 2, 12);
        write(&first, "a", 7, 99);
        log.deliver(&first);
        log.deliver(&second);
        assert_eq!(
            fresh_view(&log, &["a", "b"]),
            (vec![Some(1), Some(2)], Some(12)),
            "the first's late records do not count"
        );
        // The first gets the partition back: its state holds what does not count, so it is
        // rebuilt rather than topped up.
        assert_eq!(
            restore_0(&first, &log),
            Restored::Applied {
                records: 6,
                from_scratch: true
            }
        );
        assert_eq!(
            view(&first, &["a", "b"]),
            (vec![Some(1), Some(2)], Some(12))
        );
        // And what it writes from now on counts again.
        write(&first, "a", 8, 13);
        log.deliver(&first);
        assert_eq!(
            fresh_view(&log, &["a", "b"]),
            (vec![Some(8), Some(2)], Some(13))
        );
    }

    /// A record of the aggregator's (its snapshot) in a changelog partition: no claim.
    fn snapshot() -> ChangelogRecord {
        ChangelogRecord {
            key: crate::store::AGGREGATOR_KEY.to_vec(),
            value: Some(vec![1]),
            epoch: None,
            facts: None,
            sequence: None,
        }
    }

    /// Delivers `store`'s pending changelog records and returns, per partition, the offsets
    /// that followed a gap, as the sink hands them to the claim check.
    fn deliver_with_gaps(log: &Log, store: &Store) -> Vec<(i32, Vec<i64>)> {
        let pending = store.outbox(1_000).unwrap();
        let mut by_partition: HashMap<i32, Vec<i64>> = HashMap::new();
        for (_, record) in &pending {
            let partition = record.partition.unwrap();
            let offset = log.append(partition, ChangelogRecord::delivered(record));
            by_partition.entry(partition).or_default().push(offset);
        }
        let seqs: Vec<u64> = pending.iter().map(|(s, _)| *s).collect();
        store.acknowledge(&seqs).unwrap();
        by_partition
            .into_iter()
            .filter_map(|(partition, mut offsets)| {
                let gap = store
                    .advance_changelog_read(partition, &mut offsets)
                    .unwrap();
                gap.map(|_| (partition, offsets))
            })
            .collect()
    }

    #[test]
    fn an_owner_finds_the_claim_another_made_while_it_still_wrote_and_claims_back() {
        let log = Log::default();
        let (first, second) = (first_owner(&log, &[("a", 1, 10)]), store());
        // The broker gives the partition to the second, which claims it and writes nothing,
        // then back to the first, which never heard it had gone and writes on.
        restore_0(&second, &log);
        write(&first, "a", 2, 11);
        write(&first, "b", 1, 12);
        let mut gaps = deliver_with_gaps(&log, &first);
        assert_eq!(gaps.len(), 1, "its records came after a gap");
        assert_eq!(
            fresh_view(&log, &["a", "b"]),
            (vec![Some(1), None], Some(10)),
            "what it wrote after the other's claim does not count"
        );
        let (partition, offsets) = &mut gaps[0];
        assert_eq!(
            check_claims(&first, &log, *partition, offsets).unwrap(),
            Some(ForeignClaim {
                offset: 3,
                released: false
            }),
            "the second's claim, after its own records"
        );
        // Claimed back, its state is rebuilt from what counts; it folds the rest again.
        assert_eq!(
            restore_0(&first, &log),
            Restored::Applied {
                records: 2,
                from_scratch: true
            }
        );
        assert_eq!(view(&first, &["a", "b"]), (vec![Some(1), None], Some(10)));
        write(&first, "a", 2, 11);
        write(&first, "b", 1, 12);
        log.deliver(&first);
        assert_eq!(
            fresh_view(&log, &["a", "b"]),
            (vec![Some(2), Some(1)], Some(12))
        );
    }

    #[test]
    fn a_gap_without_another_writers_claim_is_passed() {
        let log = Log::default();
        let first = first_owner(&log, &[("a", 1, 10)]);
        // Something else lands in the partition (the aggregator's snapshot, a late record of an
        // old owner), then more of the owner's own records.
        log.append(0, snapshot());
        write(&first, "a", 2, 11);
        let mut gaps = deliver_with_gaps(&log, &first);
        assert_eq!(
            first.changelog_read(0).unwrap(),
            Some(3),
            "stopped at the gap"
        );
        let (partition, offsets) = &mut gaps[0];
        assert_eq!(
            check_claims(&first, &log, *partition, offsets).unwrap(),
            None
        );
        assert_eq!(
            first.changelog_read(0).unwrap(),
            Some(6),
            "past the gap and its own two records"
        );
        // Its own claims, and another's that its latest claim already dealt with, are no news.
        let second = store();
        restore_0(&second, &log);
        assert!(matches!(restore_0(&first, &log), Restored::Applied { .. }));
        log.append(0, snapshot());
        write(&first, "a", 3, 12);
        let mut gaps = deliver_with_gaps(&log, &first);
        first.set_changelog_read(0, 0).unwrap();
        let (partition, offsets) = &mut gaps[0];
        assert_eq!(
            check_claims(&first, &log, *partition, offsets).unwrap(),
            None
        );
    }

    #[test]
    fn every_gap_of_records_delivered_in_several_rounds_is_read() {
        let log = Log::default();
        let first = first_owner(&log, &[("a", 1, 10)]);
        // Two rounds of the owner's records, each after a gap: a snapshot, then another's claim.
        log.append(0, snapshot());
        write(&first, "a", 2, 11);
        let mut delivered = deliver_with_gaps(&log, &first).remove(0).1;
        let second = store();
        restore_0(&second, &log);
        write(&first, "a", 3, 12);
        delivered.extend(deliver_with_gaps(&log, &first).remove(0).1);
        assert_eq!(
            check_claims(&first, &log, 0, &mut delivered)
                .unwrap()
                .map(|c| c.offset),
            Some(6),
            "the claim in the second gap"
        );
        assert_eq!(
            first.changelog_read(0).unwrap(),
            Some(6),
            "past the first gap and the records after it, up to the claim"
        );
    }

    #[test]
    fn an_owner_with_nothing_to_write_finds_another_claim_at_the_end_of_the_log() {
        let log = Log::default();
        let first = first_owner(&log, &[("a", 1, 10)]);
        // What is no claim, past its records, is read over and accounted for.
        log.append(0, snapshot());
        assert_eq!(check_claims_to_end(&first, &log, 0).unwrap(), None);
        assert_eq!(first.changelog_read(0).unwrap(), Some(4), "up to the end");
        let reads = log.1.load(Ordering::SeqCst);
        assert_eq!(check_claims_to_end(&first, &log, 0).unwrap(), None);
        assert_eq!(
            log.1.load(Ordering::SeqCst),
            reads,
            "nothing new: nothing read"
        );
        // The broker hands the partition to a second member, which claims it; the first has no
        // events to write, so no gap shows it.
        let second = store();
        restore_0(&second, &log);
        let claimed = ForeignClaim {
            offset: 4,
            released: false,
        };
        assert_eq!(check_claims_to_end(&first, &log, 0).unwrap(), Some(claimed));
        assert_eq!(
            first.changelog_read(0).unwrap(),
            Some(4),
            "the read mark stays before the claim"
        );
        // The second is revoked the partition: its release says so, to whoever reads on.
        release(&second, &log, &[0]).unwrap();
        assert_eq!(
            check_claims_to_end(&first, &log, 0).unwrap(),
            Some(ForeignClaim {
                offset: 4,
                released: true
            })
        );
        // A third member claims it next, and holds it.
        let third = store();
        restore_0(&third, &log);
        assert_eq!(
            check_claims_to_end(&first, &log, 0).unwrap(),
            Some(ForeignClaim {
                offset: 6,
                released: false
            }),
            "the latest claim, not released"
        );
        // Given the partition again, the first claims it afresh: no news.
        restore_0(&first, &log);
        assert_eq!(check_claims_to_end(&first, &log, 0).unwrap(), None);
    }

    #[test]
    fn a_release_is_neither_a_claim_nor_a_customer_and_counts_for_nothing() {
        let log = Log::default();
        let first = first_owner(&log, &[("a", 1, 10)]);
        release(&first, &log, &[0]).unwrap();
        // Released, not claimed away: the same writer's records still count ...
        write(&first, "a", 2, 11);
        log.deliver(&first);
        assert_eq!(fresh_view(&log, &["a"]), (vec![Some(2)], Some(11)));
        // ... and a restore reads over it.
        let second = store();
        assert!(matches!(restore_0(&second, &log), Restored::Applied { .. }));
        assert_eq!(view(&second, &["a"]), (vec![Some(2)], Some(11)));
        // A store with no claim to release writes nothing.
        let before = log.end(0).unwrap();
        release(&store(), &log, &[0]).unwrap();
        assert_eq!(log.end(0).unwrap(), before);
    }

    #[test]
    fn a_read_mark_does_not_pass_another_writers_claim() {
        let log = Log::default();
        let (first, second) = (first_owner(&log, &[("a", 1, 10)]), store());
        assert_eq!(
            first.changelog_read(0).unwrap(),
            Some(3),
            "its claim and 2 records"
        );
        restore_0(&second, &log);
        write(&first, "a", 2, 11);
        log.deliver(&first);
        assert_eq!(
            first.changelog_read(0).unwrap(),
            Some(3),
            "the second's claim lies between"
        );
    }
}
