//! The store's changelog: every customer write is mirrored, through the outbox, to a compacted
//! topic partitioned like the input, with a position record per partition and commit; and the
//! changelog read back into the store. What goes to the changelog and what a restore applies is
//! decided here; reading the topic is the caller's.
//!
//! A changelog partition holds, in commit order, customer records (key: the customer id; value:
//! the stored encoding, or a tombstone when the customer was erased) and position records (key:
//! [`POSITION_KEY`], which is not UTF-8 and so no customer id; value: [`Position`]), one per
//! partition a commit touched.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};

use serde::{Deserialize, Serialize};

use super::*;

/// The key of a position record: not UTF-8, so never a customer id, and not empty, which some
/// clients send as no key at all (a compacted topic refuses records without a key).
pub const POSITION_KEY: &[u8] = b"\xffposition";
/// The writer id of this state directory.
const WRITER: &[u8] = b"g/changelog-writer";
/// `l` + partition: the next changelog offset whose record this store has not accounted for.
const CHANGELOG_READ: u8 = b'l';

/// Which store wrote a commit, and the input positions the commit stored for the partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The writing store's id, kept with its state across restarts.
    pub writer: u64,
    /// `(source topic, next offset to read)`.
    pub offsets: Vec<(String, i64)>,
    /// `(source topic, newest event time folded)`.
    pub event_times: Vec<(String, Millis)>,
}

/// A changelog record as read back: key and value (`None`: a tombstone).
pub type ChangelogRecord = (Vec<u8>, Option<Vec<u8>>);

/// Where customer writes are mirrored.
#[derive(Debug)]
pub(super) struct Changelog {
    pub topic: String,
    pub writer: u64,
}

fn read_key(partition: i32) -> Vec<u8> {
    let mut key = vec![CHANGELOG_READ];
    key.extend_from_slice(&(partition as u32).to_be_bytes());
    key
}

impl Changelog {
    /// The changelog records of `commit`, to go out ahead of its other outputs: one per customer
    /// written, then one position record per partition the commit touched. `encoded` holds the
    /// customers' stored encodings, in `commit.customers` order.
    pub(super) fn records(
        &self,
        commit: &Commit,
        encoded: &[Option<Vec<u8>>],
    ) -> Vec<OutboxRecord> {
        let mut records = Vec::with_capacity(commit.customers.len() + 1);
        let mut partitions = BTreeSet::new();
        for ((partition, id, _), value) in commit.customers.iter().zip(encoded) {
            partitions.insert(*partition);
            records.push(OutboxRecord {
                topic: self.topic.clone(),
                key: Some(id.clone().into_bytes()),
                value: value.clone(),
                headers: Vec::new(),
                partition: Some(*partition),
            });
        }
        partitions.extend(commit.offsets.iter().map(|(_, p, _)| *p));
        // `(topic, value)` of the entries of `partition`.
        let of = |entries: &[(String, i32, i64)], partition: i32| -> Vec<(String, i64)> {
            entries
                .iter()
                .filter(|(_, p, _)| *p == partition)
                .map(|(topic, _, value)| (topic.clone(), *value))
                .collect()
        };
        for partition in partitions {
            let position = Position {
                writer: self.writer,
                offsets: of(&commit.offsets, partition),
                event_times: of(&commit.event_times, partition),
            };
            records.push(OutboxRecord {
                topic: self.topic.clone(),
                key: Some(POSITION_KEY.to_vec()),
                value: Some(codec::encode_position(&position)),
                headers: Vec::new(),
                partition: Some(partition),
            });
        }
        records
    }
}

impl Store {
    /// Mirrors every customer write to `topic` from now on. The store's writer id is created on
    /// first use and kept with the state, so that a restarted instance knows its own records.
    pub fn with_changelog(mut self, topic: &str) -> Result<Store, StoreError> {
        let writer = match self.backend.get(WRITER)? {
            Some(bytes) => u64::from_be_bytes(bytes.as_slice().try_into().map_err(|_| {
                StoreError::Corrupt {
                    key: "changelog writer".into(),
                    reason: "not 8 bytes".into(),
                }
            })?),
            None => {
                // Random per state directory; std's hasher keys are seeded from the OS.
                let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
                hasher.write_u128(
                    std::time::UNIX_EPOCH
                        .elapsed()
                        .unwrap_or_default()
                        .as_nanos(),
                );
                let writer = hasher.finish();
                self.backend.write(vec![Op::Put(
                    WRITER.to_vec(),
                    writer.to_be_bytes().to_vec(),
                )])?;
                writer
            }
        };
        self.changelog = Some(Arc::new(Changelog {
            topic: topic.to_owned(),
            writer,
        }));
        Ok(self)
    }

    /// The changelog topic and this store's writer id, when customer writes are mirrored.
    pub fn changelog(&self) -> Option<(&str, u64)> {
        self.changelog
            .as_deref()
            .map(|c| (c.topic.as_str(), c.writer))
    }

    /// The changelog offset of `partition` up to which this store has accounted for every
    /// record (its own, or applied by a restore).
    pub fn changelog_read(&self, partition: i32) -> Result<Option<i64>, StoreError> {
        Ok(self
            .backend
            .get(&read_key(partition))?
            .and_then(|b| Some(i64::from_be_bytes(b.as_slice().try_into().ok()?))))
    }

    /// Records that every changelog record of `partition` below `next` is accounted for.
    pub fn set_changelog_read(&self, partition: i32, next: i64) -> Result<(), StoreError> {
        self.backend.write(vec![Op::Put(
            read_key(partition),
            next.to_be_bytes().to_vec(),
        )])
    }

    /// Applies changelog records of `partition`, in their log order, in one atomic write:
    /// customers replaced or deleted with their timers, and the input positions the records
    /// carry. A record that cannot be read is an error and nothing is applied.
    pub fn restore(&self, partition: i32, records: &[ChangelogRecord]) -> Result<(), StoreError> {
        let mut ops = Vec::with_capacity(records.len() * 2);
        // The timer each customer has as of the records applied so far in this call.
        let mut timers: HashMap<&[u8], Option<Millis>> = HashMap::new();
        for (key, value) in records {
            if key.as_slice() == POSITION_KEY {
                let Some(bytes) = value else { continue };
                let position = decode_position(bytes)?;
                for (topic, next) in &position.offsets {
                    ops.push(Op::Put(
                        offset_key(topic, partition),
                        next.to_be_bytes().to_vec(),
                    ));
                }
                for (topic, at) in &position.event_times {
                    ops.push(Op::Put(
                        event_time_key(topic, partition),
                        at.to_be_bytes().to_vec(),
                    ));
                }
                continue;
            }
            let id = std::str::from_utf8(key).map_err(|_| StoreError::Corrupt {
                key: format!("changelog key {key:?}"),
                reason: "not UTF-8".into(),
            })?;
            let old_timer = match timers.get(key.as_slice()) {
                Some(timer) => *timer,
                None => self
                    .customer_record(partition, id)?
                    .and_then(|c| c.risk.timer_at),
            };
            let timer = |at| {
                timer_key(&Timer {
                    partition,
                    at,
                    customer_id: id.to_owned(),
                })
            };
            ops.extend(old_timer.map(|at| Op::Delete(timer(at))));
            let new_timer = match value {
                Some(bytes) => {
                    let customer =
                        codec::decode_customer(bytes).map_err(|reason| StoreError::Corrupt {
                            key: format!("changelog record of {id}"),
                            reason,
                        })?;
                    ops.push(Op::Put(customer_key(partition, id), bytes.clone()));
                    customer.risk.timer_at
                }
                None => {
                    ops.push(Op::Delete(customer_key(partition, id)));
                    None
                }
            };
            ops.extend(new_timer.map(|at| Op::Put(timer(at), Vec::new())));
            timers.insert(key.as_slice(), new_timer);
        }
        self.backend.write(ops)
    }

    /// Whether the store holds anything of `partition`: a customer or an input offset.
    pub fn holds_partition(&self, partition: i32) -> Result<bool, StoreError> {
        for tag in [CUSTOMER, OFFSET] {
            let mut prefix = vec![tag];
            prefix.extend_from_slice(&(partition as u32).to_be_bytes());
            if !self.backend.scan(&prefix, &prefix, None, 1)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes everything the store holds for `partition`: its customers, timers, input
    /// offsets and event times, ahead of restoring it from scratch.
    pub fn clear_partition(&self, partition: i32) -> Result<(), StoreError> {
        for tag in [CUSTOMER, TIMER, OFFSET, EVENT_TIME] {
            let mut prefix = vec![tag];
            prefix.extend_from_slice(&(partition as u32).to_be_bytes());
            // Each page starts past the last, not over the tombstones just written.
            let mut from = prefix.clone();
            loop {
                let page = self.backend.scan(&prefix, &from, None, 10_000)?;
                let Some((last, _)) = page.last() else { break };
                from = last.clone();
                from.push(0);
                self.backend
                    .write(page.into_iter().map(|(key, _)| Op::Delete(key)).collect())?;
            }
        }
        Ok(())
    }

    /// Deletes the pending outbox records bound for `topic` and `partition`: changelog records
    /// that another writer's newer ones have made stale. Returns how many went.
    pub fn drop_pending(&self, topic: &str, partition: i32) -> Result<usize, StoreError> {
        let mut stale = Vec::new();
        let mut from = 0;
        loop {
            let page = self
                .backend
                .scan(&[OUTBOX], &outbox_key(from), None, 10_000)?;
            for (key, bytes) in &page {
                let record = codec::decode_outbox(bytes).map_err(|reason| StoreError::Corrupt {
                    key: format!("{key:?}"),
                    reason,
                })?;
                if record.topic == topic && record.partition == Some(partition) {
                    stale.push(Op::Delete(key.clone()));
                }
            }
            match page.last().and_then(|(key, _)| outbox_seq(key)) {
                Some(last) if page.len() == 10_000 => from = last + 1,
                _ => break,
            }
        }
        let n = stale.len();
        self.backend.write(stale)?;
        Ok(n)
    }
}

/// Reads a position record's value.
pub fn decode_position(bytes: &[u8]) -> Result<Position, StoreError> {
    codec::decode_position(bytes).map_err(|reason| StoreError::Corrupt {
        key: "changelog position".into(),
        reason,
    })
}
