//! The store's changelog: every customer write is mirrored, through the outbox, to a compacted
//! topic partitioned like the input, with a position record per partition and commit; and the
//! changelog read back into the store. What goes to the changelog and what a restore applies is
//! decided here; reading the topic is the caller's.
//!
//! A changelog partition holds, in commit order, customer records (key: the customer id; value:
//! the stored encoding, or a tombstone when the customer was erased) and position records (key:
//! [`POSITION_KEY`], which is not UTF-8 and so no customer id; value: [`Position`]), one per
//! partition a commit touched; claims (key: [`CLAIM_KEY`]; value: [`Claim`]); and releases
//! (key: [`RELEASE_KEY`]; value: the [`Epoch`] released), which an owner writes when a
//! partition is revoked from it.
//!
//! **Ownership.** Two instances can write one partition at once: an old owner that has not yet
//! heard of a rebalance (a broker that hands the partition on before the old owner revoked it,
//! as Tansu does, or a member expelled for missing heartbeats). An instance therefore *claims*
//! a partition on each assignment, before it reads the changelog, and tags each record it
//! writes with its [`Epoch`]: its writer id and the offset of its claim. Readers count a record
//! only if it carries an epoch of the latest claim ([`Ownership`]); a claim may continue the
//! claimant's previous epoch when nobody claimed in between (an instance that restarted), so
//! that its records committed before the restart still count when they arrive after.
//!
//! **Repeats.** The outbox sends a record again when it cannot know the broker took it: the
//! instance was killed between the broker's acknowledgement and the outbox's. A changelog
//! record therefore carries its [`Sequence`]: its writer and the number the writer's outbox gave
//! it, which rises with every record and is never given twice. A reader that counts facts (the
//! aggregator) counts a record only if it stands above the last one it counted from that
//! writer, by its epoch's claim, then by its number ([`Ownership::is_new`]); a restore need
//! not, as applying a customer's value again changes nothing.

use std::collections::{BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::*;

/// The key of a position record: not UTF-8, so never a customer id, and not empty, which some
/// clients send as no key at all (a compacted topic refuses records without a key).
pub const POSITION_KEY: &[u8] = b"\xffposition";
/// The key of the aggregator's snapshot ([`AggregatorSnapshot`]), in partition 0.
pub const AGGREGATOR_KEY: &[u8] = b"\xffaggregator";
/// The key of a claim record (see the module's documentation).
pub const CLAIM_KEY: &[u8] = b"\xffclaim";
/// The key of a release record: the writer of the [`Epoch`] its value names let the partition
/// go. It changes nothing of who counts ([`Ownership`]): it tells an instance that finds that
/// writer's claim on a partition it still holds that the claimant no longer does.
pub const RELEASE_KEY: &[u8] = b"\xffrelease";
/// The first byte of the key of a customer's sealed remembered events, then the seal (4 bytes,
/// big-endian) and the customer id; the value: the events (`codec::encode_sealed`), or a
/// tombstone once they are replaced or the customer erased.
const SEALED_KEY: u8 = 0xfe;
/// Whether a changelog record's key is a customer's (an id, UTF-8) rather than one of the
/// records above or a customer's sealed remembered events, whose keys all start with a byte
/// UTF-8 never has.
pub fn is_customer_key(key: &[u8]) -> bool {
    !matches!(key.first(), Some(0xfd..=0xff))
}

/// Where the instance keeps the start of its aggregator, when a state kept without the
/// changelog went to it whole (`aggregator::keep_seed`), until the aggregator takes it.
const AGGREGATOR_SEED: &[u8] = b"g/aggregator-seed";

/// The flag of a partition being sent to the changelog whole ([`Store::set_publishing`]).
fn publishing_key(partition: i32) -> Vec<u8> {
    [
        b"g/publishing/".as_slice(),
        &(partition as u32).to_be_bytes(),
    ]
    .concat()
}

/// Records per commit when a partition's state is published ([`Store::publish_partition`]):
/// about a megabyte of customers.
pub(super) const PUBLISH_PAGE: usize = if cfg!(test) { 4 } else { 2_000 };

/// The changelog key of `customer_id`'s sealed remembered events of `seal`.
pub(super) fn sealed_changelog_key(seal: u32, customer_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + customer_id.len());
    key.push(SEALED_KEY);
    key.extend_from_slice(&seal.to_be_bytes());
    key.extend_from_slice(customer_id.as_bytes());
    key
}

/// The changelog key of the sealed remembered events stored under `rest`, a sealed key past
/// its family and partition (customer id, then seal); `None` when too short or not UTF-8.
fn sealed_changelog_key_of(rest: &[u8]) -> Option<Vec<u8>> {
    let (id, seal) = rest.split_last_chunk::<4>()?;
    Some(sealed_changelog_key(
        u32::from_be_bytes(*seal),
        std::str::from_utf8(id).ok()?,
    ))
}

/// The seal and the customer id of a key from [`sealed_changelog_key`].
fn sealed_of(key: &[u8]) -> Option<(u32, &str)> {
    let rest = key.strip_prefix(&[SEALED_KEY])?;
    let (seal, id) = rest.split_first_chunk::<4>()?;
    Some((u32::from_be_bytes(*seal), std::str::from_utf8(id).ok()?))
}

/// The header naming the [`Epoch`] a record was written in: writer id, then claim offset, both
/// 8 bytes big-endian.
pub const EPOCH_HEADER: &str = "customer-pulse-epoch";
/// The header of a customer record that carries what its change did to the aggregates (the
/// `facts` module's encoding), for the aggregator.
pub const FACTS_HEADER: &str = "customer-pulse-facts";
/// The header naming a record's [`Sequence`]: writer id, then number, both 8 bytes big-endian.
pub const SEQUENCE_HEADER: &str = "customer-pulse-sequence";
/// The `event_times` entry of a position under this name (no topic is named so) is the
/// partition's watermark: every timer of the partition up to it has fired, and every window
/// the aggregator closes up to it holds all the partition's facts.
pub const WATERMARK_SOURCE: &str = "";
/// The writer id of this state directory.
const WRITER: &[u8] = b"g/changelog-writer";
/// `l` + partition: the next changelog offset whose record this store has not accounted for.
pub(super) const CHANGELOG_READ: u8 = b'l';
/// `e` + partition: the offset of this store's latest claim of the partition.
pub(super) const EPOCH: u8 = b'e';

/// Who wrote a record, and under which claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    pub writer: u64,
    /// The changelog offset of the writer's claim.
    pub claim: i64,
}

/// A header's value of two 8-byte big-endian numbers (an [`Epoch`], a [`Sequence`]).
fn pair_header(first: [u8; 8], second: [u8; 8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(16);
    bytes.extend_from_slice(&first);
    bytes.extend_from_slice(&second);
    bytes
}

/// The two numbers of a [`pair_header`]; `None` unless it is 16 bytes.
fn pair_of(bytes: &[u8]) -> Option<([u8; 8], [u8; 8])> {
    let (first, second) = bytes.split_first_chunk::<8>()?;
    Some((*first, second.try_into().ok()?))
}

impl Epoch {
    pub fn to_header(self) -> Vec<u8> {
        pair_header(self.writer.to_be_bytes(), self.claim.to_be_bytes())
    }

    pub fn from_header(bytes: &[u8]) -> Option<Epoch> {
        let (writer, claim) = pair_of(bytes)?;
        Some(Epoch {
            writer: u64::from_be_bytes(writer),
            claim: i64::from_be_bytes(claim),
        })
    }
}

/// Which record of its writer's a changelog record is: the number the writer's outbox gave it.
/// A writer's numbers rise with every record it commits and are never given twice, even across
/// restarts; with the claim a record was written under, they tell a repeat
/// ([`Ownership::is_new`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    pub writer: u64,
    pub number: u64,
}

impl Sequence {
    pub fn to_header(self) -> Vec<u8> {
        pair_header(self.writer.to_be_bytes(), self.number.to_be_bytes())
    }

    pub fn from_header(bytes: &[u8]) -> Option<Sequence> {
        let (writer, number) = pair_of(bytes)?;
        Some(Sequence {
            writer: u64::from_be_bytes(writer),
            number: u64::from_be_bytes(number),
        })
    }
}

/// A claim: from this record on, only `writer`'s records count in the partition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub writer: u64,
    /// The claimant's previous claim, whose records go on counting if the partition was not
    /// claimed by another writer since.
    pub continues: Option<i64>,
}

impl Claim {
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode_claim(self)
    }
}

/// Which records of a changelog partition count, read in log order.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ownership {
    /// The latest claimant and the claims of its that count; `None` before any claim is seen
    /// (a log written without claims, or a prefix whose claims compaction removed): then every
    /// record counts.
    pub(super) owner: Option<(u64, Vec<i64>)>,
    /// The last numbered record counted ([`Ownership::is_new`]).
    pub(super) last: Option<Counted>,
}

/// Where the last numbered record counted stands in its writer's records: the claim it was
/// written under (`None` in a log without claims), then its number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Counted {
    pub writer: u64,
    pub claim: Option<i64>,
    pub number: u64,
}

impl Ownership {
    /// Takes in the claim at `offset`.
    pub fn claimed(&mut self, offset: i64, claim: &Claim) {
        match &mut self.owner {
            Some((writer, claims))
                if *writer == claim.writer
                    && claim.continues.is_some_and(|c| claims.contains(&c)) =>
            {
                claims.push(offset)
            }
            _ => self.owner = Some((claim.writer, vec![offset])),
        }
    }

    /// Whether a record written in `epoch` counts.
    pub fn counts(&self, epoch: Option<Epoch>) -> bool {
        match (&self.owner, epoch) {
            (None, _) => true,
            (Some((writer, claims)), Some(epoch)) => {
                *writer == epoch.writer && claims.contains(&epoch.claim)
            }
            (Some(_), None) => false,
        }
    }

    /// Whether a record that counts, written in `epoch`, is new rather than a repeat, sent
    /// again by its writer's outbox after a crash. A record with no number (written before
    /// records were numbered) is new. Otherwise it is new when it stands above the last one
    /// counted from its writer, by the claim it was written under, then by its number: a
    /// restarted writer claims anew, so what it writes after a restart is new even if its
    /// numbers went back (a state directory restored from a backup), while what its outbox
    /// sends again still carries the claim it was first written under. Takes note of a new
    /// record. Remembers the last writer only: one writer's records count at a time, and a
    /// writer's repeats come before anything it writes after them; only in a log without
    /// claims could another writer's records come between a record and its repeat.
    pub fn is_new(&mut self, epoch: Option<Epoch>, sequence: Option<Sequence>) -> bool {
        let Some(sequence) = sequence else {
            return true;
        };
        let counted = Counted {
            writer: sequence.writer,
            claim: epoch.map(|e| e.claim),
            number: sequence.number,
        };
        let repeat = self.last.is_some_and(|last| {
            last.writer == counted.writer
                && (counted.claim, counted.number) <= (last.claim, last.number)
        });
        if !repeat {
            self.last = Some(counted);
        }
        !repeat
    }
}

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

/// The aggregator's state after one of its commits, which it writes to partition 0 now and
/// then, so that an aggregator on another instance starts from it instead of from the start
/// of a changelog that compaction may have thinned. Any snapshot is a valid start: it is the
/// fold of the changelog up to its offsets, whoever wrote it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AggregatorSnapshot {
    pub trends: Option<crate::trends::Trends>,
    pub segments: Option<crate::segments::Segments>,
    pub rfm_cells: Vec<crate::rfm::Cell>,
    pub rfm_scales: crate::rfm::Scales,
    /// Per changelog partition read: the next offset to read, the partition's watermark and
    /// which of its records count.
    pub partitions: Vec<(i32, i64, Option<Millis>, Ownership)>,
    /// The length of the complaint windows in `trends` (`trends.window_minutes`, in ms);
    /// `None` in a snapshot of a build that did not record it.
    pub window_ms: Option<Millis>,
    /// Per changelog partition, the input position its aggregates count up to: the last
    /// counted position record's (`Store::counted_input`); empty in a snapshot of a build that
    /// did not record them.
    pub inputs: Vec<(i32, Position)>,
}

impl AggregatorSnapshot {
    pub fn to_bytes(&self) -> Vec<u8> {
        codec::encode_snapshot(self)
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<AggregatorSnapshot, StoreError> {
        codec::decode_snapshot(bytes).map_err(|reason| StoreError::Corrupt {
            key: "aggregator snapshot".into(),
            reason,
        })
    }
}

/// A changelog record as read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangelogRecord {
    pub key: Vec<u8>,
    /// `None`: a tombstone.
    pub value: Option<Vec<u8>>,
    /// From the record's [`EPOCH_HEADER`]; `None` when it has none.
    pub epoch: Option<Epoch>,
    /// The record's [`FACTS_HEADER`], if it has one.
    pub facts: Option<Vec<u8>>,
    /// From the record's [`SEQUENCE_HEADER`]; `None` when it has none.
    pub sequence: Option<Sequence>,
}

impl ChangelogRecord {
    /// A record as read back from its key, value and headers (`header` finds one by name).
    pub fn read<'h>(
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> ChangelogRecord {
        ChangelogRecord {
            key,
            value,
            epoch: header(EPOCH_HEADER).and_then(Epoch::from_header),
            facts: header(FACTS_HEADER).map(<[u8]>::to_vec),
            sequence: header(SEQUENCE_HEADER).and_then(Sequence::from_header),
        }
    }

    /// What a changelog outbox record reads back as once delivered.
    pub fn delivered(record: &OutboxRecord) -> ChangelogRecord {
        let header = |name: &str| {
            let found = record.headers.iter().find(|(n, _)| n == name);
            found.map(|(_, bytes)| bytes.as_slice())
        };
        let key = record.key.clone().unwrap_or_default();
        ChangelogRecord::read(key, record.value.clone(), header)
    }

    /// The epoch this record releases, if it is a release (an unreadable one is none).
    pub fn release(&self) -> Option<Epoch> {
        match (&self.value, self.key.as_slice() == RELEASE_KEY) {
            (Some(bytes), true) => Epoch::from_header(bytes),
            _ => None,
        }
    }

    /// The claim this record is, if it is one.
    pub fn claim(&self) -> Result<Option<Claim>, StoreError> {
        match (&self.value, self.key.as_slice() == CLAIM_KEY) {
            (Some(bytes), true) => {
                codec::decode_claim(bytes)
                    .map(Some)
                    .map_err(|reason| StoreError::Corrupt {
                        key: "changelog claim".into(),
                        reason,
                    })
            }
            _ => Ok(None),
        }
    }
}

/// Where customer writes are mirrored.
#[derive(Debug)]
pub(super) struct Changelog {
    pub topic: String,
    pub writer: u64,
    /// The offset of this store's latest claim, per partition.
    pub epochs: Mutex<HashMap<i32, i64>>,
    /// The offset of the first claim of each partition since the store opened: the records
    /// of an earlier run were written under claims before it.
    pub first_claims: Mutex<HashMap<i32, i64>>,
    /// Each partition's input offsets and event times as stored, once read: every position
    /// record carries them, and a scan of them per partition and commit was a twentieth of the
    /// fold thread's time in live traffic (each commit leaves another version of those keys in
    /// the memtable for the next scan to step over). Only the store's commits and restores
    /// write them: a commit updates what is kept here, a restore and a clear drop it.
    pub positions: Mutex<HashMap<i32, (Entries, Entries)>>,
}

/// `tag` + partition: a per-partition key, or the prefix of a partition's keys under `tag`.
fn partition_prefix(tag: u8, partition: i32) -> Vec<u8> {
    partition_key(tag, "", partition)
}

impl Changelog {
    /// The changelog records of `commit`, to go out ahead of its other outputs: one per customer
    /// written, then one position record per partition the commit touched; `stored` gives a partition's
    /// input offsets and event times as stored before this commit. A position record carries
    /// the partition's whole position, not only what this commit moved: compaction keeps only
    /// the latest one. Their [`SEQUENCE_HEADER`] is added by [`Changelog::number`], once the
    /// commit has numbered them.
    pub(super) fn records(
        &self,
        commit: &Commit,
        stored: &dyn Fn(i32) -> Result<(Entries, Entries), StoreError>,
    ) -> Result<Vec<OutboxRecord>, StoreError> {
        let epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        let headers = |partition: i32| -> Vec<Header> {
            // Room for the epoch, the facts and the sequence, which the commit adds.
            let mut headers = Vec::with_capacity(3);
            if let Some(claim) = epochs.get(&partition) {
                let epoch = Epoch {
                    writer: self.writer,
                    claim: *claim,
                };
                headers.push((EPOCH_HEADER.into(), epoch.to_header()));
            }
            headers
        };
        // Every record counted before any is built: a vector sized for one a customer grew
        // once a commit, copying its thousands of records (0.26% of the broker run's fold).
        let mut partitions: BTreeSet<i32> = commit.customers.iter().map(|w| w.partition).collect();
        partitions.extend(commit.offsets.iter().map(|(_, p, _)| *p));
        partitions.extend(commit.event_times.iter().map(|(_, p, _)| *p));
        partitions.extend(commit.republished.iter().map(|(p, _, _)| *p));
        let customer_records: usize = commit.customers.iter().map(CustomerWrite::entries).sum();
        let customer_records = customer_records + commit.republished.len();
        let mut records = Vec::with_capacity(customer_records + partitions.len());
        for (partition, key, value) in &commit.republished {
            records.push(OutboxRecord {
                topic: self.topic.clone(),
                key: Some(key.clone()),
                value: Some(value.clone()),
                headers: headers(*partition),
                partition: Some(*partition),
            });
        }
        for write in &commit.customers {
            let record = |key: Vec<u8>, value: Option<Vec<u8>>, headers| OutboxRecord {
                topic: self.topic.clone(),
                key: Some(key),
                value,
                headers,
                partition: Some(write.partition),
            };
            // The sealed events ahead of the customer that names them, and the ones replaced
            // only after it: a log read up to any record finds those its customers name.
            if let Some((seal, bytes)) = &write.sealed {
                let key = sealed_changelog_key(*seal, &write.id);
                records.push(record(key, Some(bytes.clone()), headers(write.partition)));
            }
            let mut customer_headers = headers(write.partition);
            if !write.facts.is_empty() {
                customer_headers.push((FACTS_HEADER.into(), write.facts.clone()));
            }
            let key = write.id.clone().into_bytes();
            records.push(record(key, write.value.clone(), customer_headers));
            if let Some(until) = write.erased_until {
                let key = erased::changelog_key(erased::fingerprint(&write.id));
                records.push(record(
                    key,
                    Some(erased::encode(until)),
                    headers(write.partition),
                ));
            }
            if let Some(seal) = write.unsealed {
                let key = sealed_changelog_key(seal, &write.id);
                records.push(record(key, None, headers(write.partition)));
            }
        }
        debug_assert_eq!(records.len(), customer_records);
        for partition in partitions {
            let (mut offsets, mut event_times) = stored(partition)?;
            merge(&mut offsets, &commit.offsets, partition);
            merge(&mut event_times, &commit.event_times, partition);
            let position = Position {
                writer: self.writer,
                offsets,
                event_times,
            };
            records.push(OutboxRecord {
                topic: self.topic.clone(),
                key: Some(POSITION_KEY.to_vec()),
                value: Some(codec::encode_position(&position)),
                headers: headers(partition),
                partition: Some(partition),
            });
        }
        Ok(records)
    }

    /// Gives `records`, numbered from `first` on by the outbox, their [`SEQUENCE_HEADER`].
    pub(super) fn number(&self, records: &mut [OutboxRecord], first: u64) {
        for (number, record) in (first..).zip(records) {
            let sequence = Sequence {
                writer: self.writer,
                number,
            };
            let header = (SEQUENCE_HEADER.into(), sequence.to_header());
            record.headers.push(header);
        }
    }

    /// Brings the positions kept in memory up to a commit just written (its input offsets and
    /// event times); a partition not kept is read from the store when next needed.
    pub(super) fn committed(
        &self,
        offsets: &[(String, i32, i64)],
        event_times: &[(String, i32, i64)],
    ) {
        let mut positions = self.positions.lock().unwrap_or_else(|p| p.into_inner());
        for (partition, (kept_offsets, kept_times)) in positions.iter_mut() {
            merge(kept_offsets, offsets, *partition);
            merge(kept_times, event_times, *partition);
        }
    }

    /// Forgets the positions kept of `partition`, after a write other than a commit's.
    fn forget_position(&self, partition: i32) {
        self.positions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&partition);
    }
}

/// Puts the `(topic, partition, value)` entries of `partition` over `base`, in topic order as
/// the store lists them.
fn merge(base: &mut Entries, entries: &[(String, i32, i64)], partition: i32) {
    let mut changed = false;
    for (topic, _, value) in entries.iter().filter(|(_, p, _)| *p == partition) {
        changed = true;
        match base.iter_mut().find(|(t, _)| t == topic) {
            Some(entry) => entry.1 = *value,
            None => base.push((topic.clone(), *value)),
        }
    }
    if changed {
        base.sort();
    }
}

/// `(source topic, value)` entries of one partition.
pub type Entries = Vec<(String, i64)>;

impl Store {
    /// Mirrors every customer write to `topic` from now on. The store's writer id is created on
    /// first use and kept with the state, so that a restarted instance knows its own records.
    pub fn with_changelog(mut self, topic: &str) -> Result<Store, StoreError> {
        let writer = match stored_u64(self.backend.as_ref(), WRITER, "changelog writer")? {
            Some(writer) => writer,
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
        let mut epochs = HashMap::new();
        for (key, value) in self.backend.scan(&[EPOCH], &[EPOCH], None, usize::MAX)? {
            let partition = key.get(1..5).and_then(|b| b.try_into().ok());
            let claim = value.as_slice().try_into().ok();
            if let (Some(partition), Some(claim)) = (partition, claim) {
                epochs.insert(
                    u32::from_be_bytes(partition) as i32,
                    i64::from_be_bytes(claim),
                );
            }
        }
        self.changelog = Some(Arc::new(Changelog {
            topic: topic.to_owned(),
            writer,
            epochs: Mutex::new(epochs),
            first_claims: Mutex::new(HashMap::new()),
            positions: Mutex::new(HashMap::new()),
        }));
        Ok(self)
    }

    /// The offset of this store's latest claim of `partition`.
    pub fn epoch(&self, partition: i32) -> Option<i64> {
        let changelog = self.changelog.as_ref()?;
        let epochs = changelog.epochs.lock().unwrap_or_else(|p| p.into_inner());
        epochs.get(&partition).copied()
    }

    /// Records that this store claimed `partition` at changelog offset `claim`: its records of
    /// the partition are written in that epoch from now on.
    pub fn set_epoch(&self, partition: i32, claim: i64) -> Result<(), StoreError> {
        let Some(changelog) = &self.changelog else {
            return Ok(());
        };
        self.backend.write(vec![Op::Put(
            partition_prefix(EPOCH, partition),
            claim.to_be_bytes().to_vec(),
        )])?;
        changelog
            .epochs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition, claim);
        changelog
            .first_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(partition)
            .or_insert(claim);
        Ok(())
    }

    /// Whether a record of this store's, read back from `partition` of the changelog, written
    /// in `epoch` and numbered `sequence`, is one the store delivered and then lost: written by
    /// an earlier run (under a claim before this run's first of the partition) and numbered at
    /// or past the outbox's next number when the store opened. A store loses its latest writes
    /// when the machine stops before the write-ahead log reached the disk (it is not synced at
    /// each commit), or when its directory is put back from a backup.
    pub fn lost_own(&self, partition: i32, epoch: Option<Epoch>, sequence: Sequence) -> bool {
        let Some(changelog) = &self.changelog else {
            return false;
        };
        // Checked first, without the lock: a restore asks for every record it reads.
        if sequence.writer != changelog.writer || sequence.number < self.outbox_at_open {
            return false;
        }
        let first_claim = changelog
            .first_claims
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&partition)
            .copied();
        // Written by an earlier run: before this run's first claim of the partition.
        match (epoch, first_claim) {
            (Some(epoch), Some(first)) => epoch.claim < first,
            _ => true,
        }
    }

    /// The input offsets and event times stored for `partition`: kept by `changelog` once read.
    pub(super) fn position_entries(
        &self,
        changelog: &Changelog,
        partition: i32,
    ) -> Result<(Entries, Entries), StoreError> {
        // Held while the store is read, so that a restore's write, which drops what is kept
        // only once it is stored, cannot fall between the read and the keeping.
        let mut positions = changelog
            .positions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(kept) = positions.get(&partition) {
            return Ok(kept.clone());
        }
        let stored = (
            self.partition_entries(OFFSET, partition)?,
            self.partition_entries(EVENT_TIME, partition)?,
        );
        positions.insert(partition, stored.clone());
        Ok(stored)
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
            .get(&partition_prefix(CHANGELOG_READ, partition))?
            .and_then(|b| Some(i64::from_be_bytes(b.as_slice().try_into().ok()?))))
    }

    /// Records that every changelog record of `partition` below `next` is accounted for.
    pub fn set_changelog_read(&self, partition: i32, next: i64) -> Result<(), StoreError> {
        self.backend.write(vec![Op::Put(
            partition_prefix(CHANGELOG_READ, partition),
            next.to_be_bytes().to_vec(),
        )])
    }

    /// Moves what is accounted for of `partition` over this store's own records just delivered
    /// at `offsets`, as far as they follow on without a gap: a gap may hold another writer's
    /// claim, which only a read of the changelog can tell. Returns the offset past the gap, the
    /// first of `offsets` it did not reach, if there is one.
    pub fn advance_changelog_read(
        &self,
        partition: i32,
        offsets: &mut [i64],
    ) -> Result<Option<i64>, StoreError> {
        let Some(read) = self.changelog_read(partition)? else {
            return Ok(None);
        };
        offsets.sort_unstable();
        let mut next = read;
        let mut gap = None;
        for offset in offsets.iter() {
            match (*offset).cmp(&next) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => next += 1,
                std::cmp::Ordering::Greater => {
                    gap = Some(*offset);
                    break;
                }
            }
        }
        if next > read {
            self.set_changelog_read(partition, next)?;
        }
        Ok(gap)
    }

    /// Applies changelog records of `partition`, in their log order, in one atomic write:
    /// customers replaced or deleted with their timers, and the input positions the records
    /// carry. Which records count is the caller's to decide ([`Ownership`]); claims and releases
    /// are skipped.
    /// A record that cannot be read is an error and nothing is applied.
    pub fn restore(&self, partition: i32, records: Vec<ChangelogRecord>) -> Result<(), StoreError> {
        let mut ops = Vec::with_capacity(records.len() * 2);
        // The timer each customer has as of the records applied so far in this call.
        let mut timers: HashMap<Vec<u8>, Option<Millis>> = HashMap::new();
        let mut marked = Vec::new();
        for ChangelogRecord { key, value, .. } in records {
            if let Some(fingerprint) = erased::of_changelog_key(&key) {
                let until = match value {
                    Some(bytes) => {
                        Some(
                            erased::decode(&bytes).map_err(|reason| StoreError::Corrupt {
                                key: format!("changelog erasure marker {key:?}"),
                                reason,
                            })?,
                        )
                    }
                    None => None,
                };
                ops.push(match until {
                    Some(until) => erased::put(partition, fingerprint, until),
                    None => Op::Delete(erased::key(partition, fingerprint)),
                });
                marked.push((fingerprint, until));
                continue;
            }
            if [CLAIM_KEY, AGGREGATOR_KEY, RELEASE_KEY].contains(&key.as_slice()) {
                continue;
            }
            if key.as_slice() == POSITION_KEY {
                let Some(bytes) = value else { continue };
                let position = decode_position(&bytes)?;
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
            if let Some((seal, id)) = sealed_of(&key) {
                let key = sealed_key(partition, id, seal);
                ops.push(match value {
                    Some(bytes) => Op::Put(key, bytes),
                    None => Op::Delete(key),
                });
                continue;
            }
            let id = std::str::from_utf8(&key).map_err(|_| StoreError::Corrupt {
                key: format!("changelog key {key:?}"),
                reason: "not UTF-8".into(),
            })?;
            let old_timer = match timers.get(key.as_slice()) {
                Some(timer) => *timer,
                None => self.stored_timer(partition, id)?,
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
                    // The timer from the encoding's prefix: the customer itself is decoded
                    // (and its body checked against that prefix) when the processor reads it.
                    let timer =
                        codec::customer_timer(&bytes).map_err(|reason| StoreError::Corrupt {
                            key: format!("changelog record of {id}"),
                            reason,
                        })?;
                    ops.push(Op::Put(customer_key(partition, id), bytes));
                    timer
                }
                None => {
                    ops.push(Op::Delete(customer_key(partition, id)));
                    None
                }
            };
            ops.extend(new_timer.map(|at| Op::Put(timer(at), Vec::new())));
            timers.insert(key, new_timer);
        }
        self.backend.write(ops)?;
        self.forget_position(partition);
        let mut erasures = self.erasures.lock().unwrap_or_else(|p| p.into_inner());
        for (fingerprint, until) in marked {
            erasures.set(partition, fingerprint, until);
        }
        Ok(())
    }

    /// Drops the positions the changelog keeps of `partition` (see [`Changelog::positions`]).
    fn forget_position(&self, partition: i32) {
        if let Some(changelog) = &self.changelog {
            changelog.forget_position(partition);
        }
    }

    /// The pending timer of a stored customer, from its encoding's prefix where it has one.
    fn stored_timer(&self, partition: i32, id: &str) -> Result<Option<Millis>, StoreError> {
        let key = customer_key(partition, id);
        match self.backend.get(&key)? {
            None => Ok(None),
            Some(bytes) => codec::customer_timer(&bytes).map_err(|reason| StoreError::Corrupt {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason,
            }),
        }
    }

    /// Whether the store holds anything of `partition`: a customer or an input offset.
    pub fn holds_partition(&self, partition: i32) -> Result<bool, StoreError> {
        for tag in [CUSTOMER, OFFSET] {
            let prefix = partition_prefix(tag, partition);
            if !self.backend.scan(&prefix, &prefix, None, 1)?.is_empty() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes everything the store holds for `partition`: its customers (and their sealed
    /// remembered events), timers, input offsets and event times, ahead of restoring it from
    /// scratch.
    pub fn clear_partition(&self, partition: i32) -> Result<(), StoreError> {
        let cleared = [CUSTOMER, SEALED, TIMER, OFFSET, EVENT_TIME, erased::TAG]
            .into_iter()
            .try_for_each(|tag| {
                let prefix = partition_prefix(tag, partition);
                // Each page starts past the last, not over the tombstones just written.
                let mut from = prefix.clone();
                loop {
                    let page = self.backend.scan(&prefix, &from, None, 10_000)?;
                    let Some((last, _)) = page.last() else {
                        return Ok(());
                    };
                    from = last.clone();
                    from.push(0);
                    self.backend
                        .write(page.into_iter().map(|(key, _)| Op::Delete(key)).collect())?;
                }
            });
        // Also when it failed part of the way.
        self.forget_position(partition);
        self.erasures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear(partition);
        cleared
    }

    /// Sends everything the store holds of `partition` to the changelog, through the outbox,
    /// without writing it again: its customers' sealed remembered events, its customers, its
    /// erasure markers, each under the changelog key a restore reads it back from, in commits
    /// of at most `PUBLISH_PAGE` (2,000) records, each with the partition's position. For a state
    /// kept without the changelog that the changelog is turned on over: another instance given
    /// the partition then restores every customer, not only those changed since. The sealed
    /// events go first, so that a log read up to any record holds those its customers name.
    /// Returns how many records it sent.
    pub fn publish_partition(&self, partition: i32) -> Result<u64, StoreError> {
        if self.changelog.is_none() {
            return Ok(0);
        }
        let mut published = 0;
        for tag in [SEALED, CUSTOMER, erased::TAG] {
            let prefix = partition_prefix(tag, partition);
            let mut from = prefix.clone();
            loop {
                let page = self.backend.scan(&prefix, &from, None, PUBLISH_PAGE)?;
                let Some((last, _)) = page.last() else { break };
                from = last.clone();
                from.push(0);
                let full = page.len() == PUBLISH_PAGE;
                let mut commit = Commit::default();
                commit.republished.reserve_exact(page.len());
                for (key, value) in page {
                    let rest = &key[prefix.len()..];
                    let changelog_key = match tag {
                        SEALED => sealed_changelog_key_of(rest),
                        CUSTOMER => Some(rest.to_vec()),
                        _ => rest.try_into().ok().map(|fingerprint| {
                            erased::changelog_key(u64::from_be_bytes(fingerprint))
                        }),
                    };
                    let changelog_key = changelog_key.ok_or_else(|| StoreError::Corrupt {
                        key: format!("{key:?}"),
                        reason: "not a key of its family".into(),
                    })?;
                    commit.republished.push((partition, changelog_key, value));
                }
                published += commit.republished.len() as u64;
                self.commit(commit)?;
                if !full {
                    break;
                }
            }
        }
        Ok(published)
    }

    /// Forgets, for every partition, up to where the store had accounted for the changelog:
    /// for a store about to be written without it (`run` with the changelog off, `replay`),
    /// whose changes the changelog will not hold. Turned on again, the instance then sends
    /// each partition's state whole as it claims it ([`Store::publish_partition`]), as over a
    /// state that never had a changelog. Returns how many partitions it had accounted for.
    pub fn forget_changelog_read(&self) -> Result<usize, StoreError> {
        let marks = self
            .backend
            .scan(&[CHANGELOG_READ], &[CHANGELOG_READ], None, usize::MAX)?;
        let forgotten = marks.len();
        if forgotten > 0 {
            self.backend
                .write(marks.into_iter().map(|(key, _)| Op::Delete(key)).collect())?;
        }
        Ok(forgotten)
    }

    /// Flags (or unflags) `partition` as being sent to the changelog whole
    /// ([`Store::publish_partition`]): while flagged, a restore takes the partition as never
    /// accounted for in the changelog, and publishes it again.
    pub fn set_publishing(&self, partition: i32, publishing: bool) -> Result<(), StoreError> {
        let key = publishing_key(partition);
        self.backend.write(vec![match publishing {
            true => Op::Put(key, Vec::new()),
            false => Op::Delete(key),
        }])
    }

    /// Whether `partition` is flagged as being sent to the changelog whole.
    pub fn publishing(&self, partition: i32) -> Result<bool, StoreError> {
        Ok(self.backend.get(&publishing_key(partition))?.is_some())
    }

    /// Keeps `seed` (an [`AggregatorSnapshot`]'s bytes) for this instance's aggregator to
    /// start from (`aggregator::keep_seed`).
    pub fn keep_aggregator_seed(&self, seed: Vec<u8>) -> Result<(), StoreError> {
        self.backend
            .write(vec![Op::Put(AGGREGATOR_SEED.to_vec(), seed)])
    }

    /// The seed kept for this instance's aggregator, if one is waiting.
    pub fn aggregator_seed(&self) -> Result<Option<AggregatorSnapshot>, StoreError> {
        self.backend
            .get(AGGREGATOR_SEED)?
            .map(|bytes| AggregatorSnapshot::from_bytes(&bytes))
            .transpose()
    }

    /// Drops the seed once the aggregator took it.
    pub fn drop_aggregator_seed(&self) -> Result<(), StoreError> {
        self.backend
            .write(vec![Op::Delete(AGGREGATOR_SEED.to_vec())])
    }

    /// The length of the complaint windows the store holds ([`Store::hold_window`]), if
    /// stored.
    pub fn window_ms(&self) -> Result<Option<Millis>, StoreError> {
        Ok(stored_u64(self.backend.as_ref(), WINDOW, "window-ms")?
            .and_then(|ms| Millis::try_from(ms).ok()))
    }

    /// Deletes the pending outbox records bound for `topic` and `partition`: changelog records
    /// that another writer's newer ones have made stale. Returns how many went.
    pub fn drop_pending(&self, topic: &str, partition: i32) -> Result<usize, StoreError> {
        let mut ops = Vec::new();
        let mut dropped = Vec::new();
        self.each_outbox_chunk(0, |key, _, parts| {
            let mut kept = Vec::with_capacity(parts.len());
            let mut stale = Vec::new();
            for (seq, bytes) in parts {
                let overtaken = matches!(decode_outbox(seq, bytes)?, Output::Record(record)
                    if record.topic == topic && record.partition == Some(partition));
                if overtaken {
                    stale.push(seq);
                } else {
                    kept.push((seq, bytes));
                }
            }
            if !stale.is_empty() {
                ops.push(if kept.is_empty() {
                    Op::Delete(key.to_vec())
                } else {
                    Op::Put(key.to_vec(), codec::encode_outbox_parts(kept))
                });
                dropped.extend(stale);
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })?;
        let n = dropped.len();
        self.backend.write(ops)?;
        // A chunk left empty was deleted above; the others keep their pending records.
        self.chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acknowledged(dropped);
        self.forget_recent_outbox();
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// A writer's log as its outbox sends it: records numbered 0, 1, 2, ...; at each crash,
        /// the records from the last one acknowledged up to the crash are sent again, under the
        /// claim they were written under, and what follows goes under a new claim. Whatever the
        /// crashes, the records counted as new are each record once, in order.
        #[test]
        fn whatever_the_crashes_each_record_counts_once(
            written in 1u64..300,
            crashes in proptest::collection::vec((0.0f64..1.0, 0.0f64..1.0), 0..8),
        ) {
            let mut crashes: Vec<(u64, u64)> = crashes
                .iter()
                .map(|(at, unacknowledged)| {
                    let at = (at * written as f64) as u64;
                    (at, at - (unacknowledged * at as f64) as u64)
                })
                .collect();
            crashes.sort();
            let epoch = |claim| Some(Epoch { writer: 9, claim });
            let numbered = |number| Some(Sequence { writer: 9, number });
            // (claim, number) per record in log order; a record's claim is the one it was
            // written under.
            let mut claims = Vec::new();
            let mut log = Vec::new();
            let mut claim = 0;
            let mut pending = crashes.iter().peekable();
            for number in 0..written {
                while let Some((_, acknowledged)) = pending.next_if(|(at, _)| *at == number) {
                    for again in *acknowledged..number {
                        log.push((claims[again as usize], again));
                    }
                    claim += 100;
                }
                claims.push(claim);
                log.push((claim, number));
            }
            let mut ownership = Ownership::default();
            let counted: Vec<u64> = log
                .into_iter()
                .filter(|(claim, number)| ownership.is_new(epoch(*claim), numbered(*number)))
                .map(|(_, number)| number)
                .collect();
            proptest::prop_assert_eq!(counted, (0..written).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_repeat_of_the_last_writer_s_records_is_not_new() {
        let numbered = |writer, number| Some(Sequence { writer, number });
        let under = |writer, claim| Some(Epoch { writer, claim });
        let mut ownership = Ownership::default();
        assert!(ownership.is_new(under(1, 0), numbered(1, 5)));
        assert!(ownership.is_new(under(1, 0), numbered(1, 6)));
        // Sent again after a crash: 5 and 6 again, then what came after.
        assert!(!ownership.is_new(under(1, 0), numbered(1, 5)));
        assert!(!ownership.is_new(under(1, 0), numbered(1, 6)));
        assert!(ownership.is_new(under(1, 0), numbered(1, 9)));
        // Restarted, it claimed anew: what it writes under the new claim is new, even with
        // numbers that went back (its state restored from a backup); its repeats are not.
        assert!(ownership.is_new(under(1, 40), numbered(1, 7)));
        assert!(!ownership.is_new(under(1, 0), numbered(1, 9)));
        assert!(!ownership.is_new(under(1, 40), numbered(1, 7)));
        assert!(ownership.is_new(under(1, 40), numbered(1, 8)));
        // Numbers are the writer's own: another writer's lower ones are new.
        assert!(ownership.is_new(under(2, 50), numbered(2, 1)));
        assert!(!ownership.is_new(under(2, 50), numbered(2, 1)));
        // In a log without claims, by the numbers alone.
        let mut unclaimed = Ownership::default();
        assert!(unclaimed.is_new(None, numbered(3, 2)));
        assert!(!unclaimed.is_new(None, numbered(3, 2)));
        assert!(unclaimed.is_new(None, numbered(3, 3)));
        // Records written before records were numbered all count.
        assert!(ownership.is_new(under(2, 50), None));
        assert!(ownership.is_new(under(2, 50), None));
        let last = Counted {
            writer: 2,
            claim: Some(50),
            number: 1,
        };
        assert_eq!(ownership.last, Some(last));
        let header = Sequence {
            writer: 7,
            number: 1 << 40,
        }
        .to_header();
        assert_eq!(Sequence::from_header(&header), numbered(7, 1 << 40));
        assert_eq!(Sequence::from_header(&header[..15]), None);
    }

    #[test]
    fn every_key_family_has_a_first_byte_of_its_own() {
        // The erasure markers first took the epochs' `e`, and clearing a partition's markers
        // deleted its epoch.
        let tags = [
            CUSTOMER,
            SEALED,
            OWNERSHIP,
            OFFSET,
            EVENT_TIME,
            OUTBOX,
            TIMER,
            HISTOGRAM,
            CHANGELOG_READ,
            EPOCH,
            super::super::erased::TAG,
            TRENDS[0],
        ];
        let distinct: BTreeSet<u8> = tags.iter().copied().collect();
        assert_eq!(distinct.len(), tags.len(), "{tags:?}");
        for global in [OUTBOX_NEXT, SEGMENTS, RFM_SCALES] {
            assert_eq!(global[0], TRENDS[0], "the global keys share `g/`");
        }
    }

    #[test]
    fn only_customer_ids_are_customer_keys() {
        for key in [POSITION_KEY, AGGREGATOR_KEY, CLAIM_KEY, RELEASE_KEY] {
            assert!(!is_customer_key(key), "{key:?}");
        }
        let sealed = sealed_changelog_key(7, "c-1");
        assert!(!is_customer_key(&sealed));
        assert_eq!(sealed_of(&sealed), Some((7, "c-1")));
        assert_eq!(sealed_of(b"c-1"), None);
        for id in ["c-0000001", "", "ÿ", "\u{7f}x"] {
            assert!(is_customer_key(id.as_bytes()), "{id:?}");
        }
    }
}
