//! Durable state: per-customer state with its risk memo, event-time timers, the complaint
//! trends, input offsets and the outbox of pending output records, partition-scoped where they
//! belong to customers, changed only by one atomic [`Commit`] at a time.
//!
//! [`Store`] is the typed layer (key layout, encoding); a [`Backend`] is the narrow key-value trait
//! it sits on, implemented in memory and by RocksDB, both checked by one contract test suite.
//! Must not know about Kafka, HTTP or the fold's rules; only `rocks` knows about RocksDB.

mod body;
mod changelog;
mod chunks;
mod codec;
mod erased;
mod memory;
mod recent;
mod rocks;

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::event::Millis;
use crate::fold::CustomerState;
use crate::rfm::{Cell, Rfm, Scales};
use crate::risk::{ChurnRiskRecord, RiskMemo};
use crate::segments::{Loss, Segments, Standing, Trailing};
use crate::trends::Trends;

pub use changelog::{
    decode_position, is_customer_key, AggregatorSnapshot, ChangelogRecord, Claim, Epoch, Ownership,
    Position, Sequence, AGGREGATOR_KEY, CLAIM_KEY, EPOCH_HEADER, FACTS_HEADER, POSITION_KEY,
    RELEASE_KEY, SEQUENCE_HEADER, WATERMARK_SOURCE,
};
pub use codec::{decode_facts, encode_facts};
pub use memory::MemoryBackend;
pub use rocks::RocksBackend;

/// A storage failure. Data is at risk: the caller stops consuming until a commit succeeds.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage backend failed: {0}")]
    Backend(String),
    #[error("stored value under key {key:?} cannot be read: {reason}")]
    Corrupt { key: String, reason: String },
}

/// What [`Store::hold_partitions`] or [`Store::hold_window`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// The store's data is laid out by the value given (stored now if it was not).
    Held,
    /// By another value.
    Other { stored: u64 },
    /// Stored before the partition count was, it holds a customer of a partition the count
    /// given does not have.
    Beyond { partition: u64 },
}

/// One write in an atomic batch.
#[derive(Debug, Clone)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

impl Op {
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put(key, _) | Op::Delete(key) => key,
        }
    }

    /// The bytes it writes beside its key: a value, or none.
    pub fn value_len(&self) -> usize {
        match self {
            Op::Put(_, value) => value.len(),
            Op::Delete(_) => 0,
        }
    }
}

/// Key-value pairs in key order, as a scan returns them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The key-value operations the store needs, and nothing else.
pub trait Backend: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Applies every op or none.
    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError>;
    /// Up to `limit` entries whose key starts with `prefix`, from `start` (inclusive) to `end`
    /// (exclusive, when given), in key order.
    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// The greatest key that starts with `prefix`.
    fn last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Bytes the data occupies (on disk for RocksDB).
    fn size_bytes(&self) -> u64;
}

/// A record waiting in the outbox until the sink acknowledges it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    pub topic: String,
    // As byte strings: postcard writes them as it writes a sequence of `u8` (a length, then
    // the bytes), so stored records read the same, but in one copy instead of a call per byte.
    #[serde(with = "serde_bytes")]
    pub key: Option<Vec<u8>>,
    /// `None` is a tombstone.
    #[serde(with = "serde_bytes")]
    pub value: Option<Vec<u8>>,
    /// Each header's value a byte string too (see `header_bytes`).
    #[serde(with = "header_bytes")]
    pub headers: Vec<Header>,
    /// The partition it must go to; `None` lets the producer partition by key.
    pub partition: Option<i32>,
}

/// What a commit puts in the outbox: a record as it will be sent, or a churn-risk record kept
/// as data and written out as JSON when [`Store::outbox`] reads it (on the drain's thread, not
/// the fold's; a third of the bytes to store, log and copy).
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Record(OutboxRecord),
    ChurnRisk {
        topic: String,
        record: Box<ChurnRiskRecord>,
    },
}

impl Output {
    /// The record as it is sent, from an output read from the store: see [`Output::to_record`].
    pub fn into_record(self) -> OutboxRecord {
        match self {
            Output::Record(record) => record,
            churn_risk => churn_risk.to_record(),
        }
    }

    /// The record as it is sent: a churn-risk record keyed by its customer, with its
    /// `record_id` header.
    pub fn to_record(&self) -> OutboxRecord {
        match self {
            Output::Record(record) => record.clone(),
            Output::ChurnRisk { topic, record } => OutboxRecord {
                topic: topic.clone(),
                key: Some(record.customer_id.clone().into_bytes()),
                value: Some(record.to_json()),
                headers: vec![("record_id".into(), record.record_id.clone().into_bytes())],
                partition: None,
            },
        }
    }
}

impl From<OutboxRecord> for Output {
    fn from(record: OutboxRecord) -> Output {
        Output::Record(record)
    }
}

/// An output record's header: its name, a constant wherever the job names it (no allocation
/// for each record and each copy the drain takes), and its value.
pub type Header = (Cow<'static, str>, Vec<u8>);

/// Headers as `(name, value)` pairs whose values are byte strings: written as a `Vec<u8>` is
/// (a length, then the bytes), so stored records read the same, but each value in one copy
/// instead of a call per byte (a changelog record's facts header is hundreds of bytes).
mod header_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    use super::Header;

    pub fn serialize<S: Serializer>(headers: &[Header], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            headers
                .iter()
                .map(|(name, value)| (name, Bytes::new(value))),
        )
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<Header>, D::Error> {
        let headers = Vec::<(String, ByteBuf)>::deserialize(deserializer)?;
        Ok(headers
            .into_iter()
            .map(|(name, value)| (name.into(), value.into_vec()))
            .collect())
    }
}

/// What is stored per customer: the folded state, the risk memo, and how the segment metrics
/// count it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Customer {
    pub state: CustomerState,
    pub risk: RiskMemo,
    /// How the segment population counts the customer; `None` until its first churn-risk record.
    pub standing: Option<Standing>,
    /// Revenue and margin per recent month, for its value tier.
    pub trailing: Trailing,
    /// The latest times it was counted lost, oldest first.
    pub losses: Vec<Loss>,
}

impl From<CustomerState> for Customer {
    fn from(state: CustomerState) -> Customer {
        Customer {
            state,
            risk: RiskMemo::default(),
            standing: None,
            trailing: Trailing::default(),
            losses: Vec::new(),
        }
    }
}

/// An event-time timer: look at `customer_id` of `partition` again at `at`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timer {
    pub partition: i32,
    pub at: Millis,
    pub customer_id: String,
}

/// Everything one commit changes, written in one atomic batch.
#[derive(Debug, Default)]
pub struct Commit {
    /// The customers written. Filled by [`Commit::put_customer`], which encodes once: the
    /// store and the changelog write the same bytes, and the caller keeps its customer without
    /// a copy.
    pub customers: Vec<CustomerWrite>,
    pub timers_set: Vec<Timer>,
    pub timers_cleared: Vec<Timer>,
    /// The complaint trends, when the batch changed them (shared with the processor, which
    /// keeps them).
    pub trends: Option<Arc<Trends>>,
    /// The segment metrics, when the batch changed them.
    pub segments: Option<Segments>,
    /// RFM histogram cells the batch changed (a count of 0 deletes the cell).
    pub rfm_cells: Vec<Cell>,
    /// The RFM scales, when a closed day recomputed them.
    pub rfm_scales: Option<Scales>,
    /// `(source topic, partition, next offset to read)`.
    pub offsets: Vec<(String, i32, i64)>,
    /// `(source topic, partition, newest event time it delivered)`, so that a restarted
    /// processor knows how far each input partition got and its watermark does not fall back.
    pub event_times: Vec<(String, i32, Millis)>,
    /// The aggregator's: which records of each changelog partition count from where it stopped
    /// reading.
    pub ownerships: Vec<(i32, Ownership)>,
    /// The aggregator's: per changelog partition, the input position its aggregates now count
    /// up to (`None`: not known, forgotten).
    pub counted_inputs: Vec<(i32, Option<Position>)>,
    /// Changelog records of what the store already holds, `(partition, changelog key,
    /// value)`, sent without writing the store: a state kept without the changelog, published
    /// as the changelog is turned on ([`Store::publish_partition`]).
    pub republished: Vec<(i32, Vec<u8>, Vec<u8>)>,
    pub outbox: Vec<Output>,
}

impl Commit {
    /// Writes `customer` of `partition` whole (`None` erases it), with its remembered events
    /// in its body.
    pub fn put_customer(
        &mut self,
        partition: i32,
        customer_id: String,
        customer: Option<&Customer>,
    ) {
        self.customers.push(CustomerWrite {
            partition,
            id: customer_id,
            value: customer.map(codec::encode_customer),
            ..CustomerWrite::default()
        });
    }

    /// Writes `customer` of `partition` (`None` erases it) with its sealed remembered events
    /// kept apart under their seal, written only when the seal is not `stored_seal`, the one
    /// whose events the store holds for the customer (see [`Store::customer_stored`]); those
    /// go then.
    pub fn put_customer_apart(
        &mut self,
        partition: i32,
        customer_id: String,
        customer: Option<&Customer>,
        stored_seal: Option<u32>,
    ) {
        // Seal 0 never has sealed events: a sweep moves the seal before it seals any.
        let stored = stored_seal.filter(|&seal| seal != 0);
        let (value, sealed, unsealed) = match customer {
            None => (None, None, stored),
            Some(customer) => {
                let state = &customer.state;
                let value = Some(codec::encode_customer_apart(customer));
                if stored_seal == Some(state.seal) {
                    (value, None, None)
                } else {
                    let sealed =
                        (state.seen_sealed > 0).then(|| (state.seal, codec::encode_sealed(state)));
                    (value, sealed, stored)
                }
            }
        };
        self.customers.push(CustomerWrite {
            partition,
            id: customer_id,
            value,
            sealed,
            unsealed,
            facts: Vec::new(),
            erased_until: None,
        });
    }
}

#[cfg(test)]
impl From<(i32, String, Option<Vec<u8>>)> for CustomerWrite {
    fn from((partition, id, value): (i32, String, Option<Vec<u8>>)) -> CustomerWrite {
        CustomerWrite {
            partition,
            id,
            value,
            ..CustomerWrite::default()
        }
    }
}

/// One customer written by a commit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CustomerWrite {
    pub partition: i32,
    pub id: String,
    /// The stored encoding; `None` deletes the customer.
    pub value: Option<Vec<u8>>,
    /// Sealed remembered events to keep apart, under their seal (`codec::encode_sealed`).
    pub sealed: Option<(u32, Vec<u8>)>,
    /// The seal whose sealed remembered events kept apart go: replaced, or the customer erased.
    pub unsealed: Option<u32>,
    /// What the change did to the aggregates, encoded by [`encode_facts`], for the changelog
    /// record to carry ([`FACTS_HEADER`]); empty when there is nothing to carry.
    pub facts: Vec<u8>,
    /// For an erased customer, the event time up to which its events stay erased: the
    /// commit writes its erasure marker (see `erased`).
    pub erased_until: Option<Millis>,
}

impl CustomerWrite {
    /// The entries the write puts or deletes: the customer, its sealed remembered events kept
    /// apart (put, and the replaced ones deleted) and its erasure marker. The changelog
    /// carries one record for each.
    pub(crate) fn entries(&self) -> usize {
        1 + usize::from(self.sealed.is_some())
            + usize::from(self.unsealed.is_some())
            + usize::from(self.erased_until.is_some())
    }
}

const CUSTOMER: u8 = b'c';
/// `s` + partition + customer id + seal (4 bytes, big-endian): the customer's sealed
/// remembered events, kept apart.
const SEALED: u8 = b's';
/// `n` + partition: the aggregator's [`Ownership`] of a changelog partition.
const OWNERSHIP: u8 = b'n';
/// `i` + partition: the input position the aggregator's aggregates count up to in a changelog
/// partition (the last counted position record's, [`Store::counted_input`]).
const COUNTED_INPUT: u8 = b'i';
const OFFSET: u8 = b'o';
const EVENT_TIME: u8 = b'w';
const OUTBOX: u8 = b'x';
/// The number the next outbox record takes, as of the last commit that wrote any: numbers are
/// never given twice, even once every record was acknowledged and deleted (the changelog's
/// readers tell repeats by them: `changelog::Sequence`).
const OUTBOX_NEXT: &[u8] = b"g/outbox-next";
const TIMER: u8 = b't';
/// The partition count (`input.partitions`) the customers are placed by, as stored by the first
/// open that was given one ([`Store::hold_partitions`]).
const PARTITIONS: &[u8] = b"g/partitions";
/// The length of the complaint windows (`trends.window_minutes`) in milliseconds, as stored by
/// the first open that was given one ([`Store::hold_window`]).
const WINDOW: &[u8] = b"g/window-ms";
/// `g/file/` + a replay's source name (`replay:` and the file's name): the XXH3-64 of the
/// first line of the file whose lines were applied under that name ([`Store::hold_file`]).
const FILE: &[u8] = b"g/file/";
const TRENDS: &[u8] = b"g/trends";
const SEGMENTS: &[u8] = b"g/segments";
const RFM_SCALES: &[u8] = b"g/rfm-scales";
/// RFM histogram cells: `h` + `j` + day + orders (joint R and F), `h` + `m` + bucket (M).
const HISTOGRAM: u8 = b'h';

/// Every key family of the store, by the first byte of its keys, with its name: what a tool
/// that reads a state directory through (the memory benchmark) reports the state by. The `g`
/// family is every key that starts with `g/`.
pub const KEY_FAMILIES: &[(u8, &str)] = &[
    (CUSTOMER, "customers"),
    (SEALED, "sealed remembered events"),
    (TIMER, "timers"),
    (erased::TAG, "erasure markers"),
    (OUTBOX, "outbox"),
    (OFFSET, "input offsets"),
    (EVENT_TIME, "event times"),
    (HISTOGRAM, "RFM histogram cells"),
    (b'g', "settings and aggregates"),
    (OWNERSHIP, "changelog ownership"),
    (COUNTED_INPUT, "aggregator's counted input"),
    (changelog::CHANGELOG_READ, "changelog read"),
    (changelog::EPOCH, "changelog epochs"),
];

fn cell_key(cell: &Cell) -> (Vec<u8>, i64) {
    let mut key = vec![HISTOGRAM];
    let n = match *cell {
        Cell::Joint(day, orders, n) => {
            key.push(b'j');
            key.extend_from_slice(&((day as u32) ^ (1 << 31)).to_be_bytes());
            key.extend_from_slice(&orders.to_be_bytes());
            n
        }
        Cell::Monetary(bucket, n) => {
            key.push(b'm');
            key.extend_from_slice(&((bucket as u32) ^ (1 << 31)).to_be_bytes());
            n
        }
    };
    (key, n)
}

fn cell_of(key: &[u8], value: &[u8]) -> Option<Cell> {
    let n = i64::from_be_bytes(value.try_into().ok()?);
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_be_bytes(key.get(at..at + 4)?.try_into().ok()?))
    };
    match key.get(1)? {
        b'j' => Some(Cell::Joint((word(2)? ^ (1 << 31)) as i32, word(6)?, n)),
        b'm' => Some(Cell::Monetary((word(2)? ^ (1 << 31)) as i32, n)),
        _ => None,
    }
}

fn timer_key(timer: &Timer) -> Vec<u8> {
    let mut key = timer_prefix(timer.partition);
    key.extend_from_slice(&sortable(timer.at));
    key.extend_from_slice(timer.customer_id.as_bytes());
    key
}

/// The time a timer key names.
fn timer_time(key: &[u8]) -> Result<Millis, StoreError> {
    key.get(5..13)
        .and_then(unsortable)
        .ok_or_else(|| StoreError::Corrupt {
            key: format!("{key:?}"),
            reason: "timer key too short".into(),
        })
}

fn timer_prefix(partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(13 + 16);
    key.push(TIMER);
    key.extend_from_slice(&(partition as u32).to_be_bytes());
    key
}

/// Big-endian with the sign bit flipped, so that byte order is numeric order.
fn sortable(t: Millis) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn unsortable(bytes: &[u8]) -> Option<Millis> {
    Some((u64::from_be_bytes(bytes.try_into().ok()?) ^ (1 << 63)) as Millis)
}

fn customer_key(partition: i32, customer_id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + customer_id.len());
    key.push(CUSTOMER);
    key.extend_from_slice(&(partition as u32).to_be_bytes());
    key.extend_from_slice(customer_id.as_bytes());
    key
}

fn sealed_key(partition: i32, customer_id: &str, seal: u32) -> Vec<u8> {
    sealed_key_of(customer_key(partition, customer_id), seal)
}

/// The key of the sealed remembered events under `seal` of the customer stored at `key`.
fn sealed_key_of(mut key: Vec<u8>, seal: u32) -> Vec<u8> {
    key[0] = SEALED;
    key.extend_from_slice(&seal.to_be_bytes());
    key
}

fn offset_key(topic: &str, partition: i32) -> Vec<u8> {
    partition_key(OFFSET, topic, partition)
}

fn event_time_key(topic: &str, partition: i32) -> Vec<u8> {
    partition_key(EVENT_TIME, topic, partition)
}

fn partition_key(tag: u8, topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(5 + topic.len());
    key.push(tag);
    key.extend_from_slice(&(partition as u32).to_be_bytes());
    key.extend_from_slice(topic.as_bytes());
    key
}

/// The most one stored outbox chunk holds, by its records' estimated encoded sizes; a record
/// larger on its own is a chunk of its own. A commit's records in one value made values of
/// several megabytes (a batch of 10,000 events with the changelog on), and RocksDB keeps such a
/// value in one data block with the keys written before it: a block larger than a shard of the
/// block cache (a sixty-fourth of it) is not kept there, so every read that lands in it reads
/// and decompresses it again. A seek for the timers of a last partition that held none did, at
/// 15 million instructions a seek (`benches/HISTORY.md`, 2026-12-06, 17:18-).
const OUTBOX_CHUNK_BYTES: usize = 256 << 10;

/// `records` cut into runs in order, each of at most [`OUTBOX_CHUNK_BYTES`] (or one record):
/// the chunks a commit stores them in.
fn outbox_chunks(records: &[Output]) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, record) in records.iter().enumerate() {
        let room = codec::outbox_room(record);
        if i > start && bytes + room > OUTBOX_CHUNK_BYTES {
            runs.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += room;
    }
    if start < records.len() {
        runs.push(start..records.len());
    }
    runs
}

fn outbox_key(seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(OUTBOX);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The 8-byte big-endian number stored under `key`, if any; `what` names it in an error.
fn stored_u64(backend: &dyn Backend, key: &[u8], what: &str) -> Result<Option<u64>, StoreError> {
    backend
        .get(key)?
        .map(|bytes| {
            let raw = bytes
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt {
                    key: what.into(),
                    reason: "not 8 bytes".into(),
                })?;
            Ok(u64::from_be_bytes(raw))
        })
        .transpose()
}

fn outbox_seq(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(1..9)?.try_into().ok()?))
}

/// How many outbox chunks a scan of the store reads at a time (see `Store::each_outbox_chunk`).
const CHUNK_PAGE: usize = 2;

/// The number of the outbox key `key`, as read back from the store.
fn stored_outbox_seq(key: &[u8]) -> Result<u64, StoreError> {
    outbox_seq(key).ok_or_else(|| StoreError::Corrupt {
        key: format!("{key:?}"),
        reason: "outbox key too short".into(),
    })
}

/// The number of the last record stored under the outbox key `key`, if it holds any.
fn last_outbox_seq(backend: &dyn Backend, key: &[u8]) -> Result<Option<u64>, StoreError> {
    let Some(seq) = outbox_seq(key) else {
        return Ok(None);
    };
    let Some(bytes) = backend.get(key)? else {
        return Ok(None);
    };
    let parts = outbox_parts(seq, &bytes)?;
    Ok(parts.last().map(|&(last, _)| last))
}

/// The records stored under the outbox key numbered `seq` (see `codec::outbox_parts`).
fn outbox_parts(seq: u64, bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, StoreError> {
    codec::outbox_parts(seq, bytes).map_err(|reason| StoreError::Corrupt {
        key: format!("outbox {seq}"),
        reason,
    })
}

/// A stored outbox record's encoding, decoded.
fn decode_outbox(seq: u64, bytes: &[u8]) -> Result<Output, StoreError> {
    codec::decode_outbox(bytes).map_err(|reason| StoreError::Corrupt {
        key: format!("outbox {seq}"),
        reason,
    })
}

/// The typed store. Cheap to clone; clones share the backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    next_outbox_seq: Arc<AtomicU64>,
    /// `next_outbox_seq` when the store opened: a record of an earlier run numbered at or past
    /// it is one the store no longer holds (see `Store::lost_own`).
    outbox_at_open: u64,
    /// Held while a commit takes outbox sequence numbers and writes them, so that commits land
    /// in sequence order: once a record is stored, every smaller number is stored or was never
    /// written.
    commit_lock: Arc<Mutex<()>>,
    /// No pending outbox record has a smaller sequence number. Outbox scans start here rather
    /// than at the first key, which would step over the tombstone of every record acknowledged
    /// since the last compaction: with a busy outbox, millions of them.
    outbox_floor: Arc<AtomicU64>,
    /// The pending outbox records committed since the store opened, kept in memory too: the
    /// drain reads them from there (see [`recent`]).
    recent: Arc<Mutex<recent::Recent>>,
    /// Which records of the stored outbox chunks are pending (see [`chunks`]).
    chunks: Arc<Mutex<chunks::Chunks>>,
    /// Where customer writes are mirrored, if anywhere.
    changelog: Option<Arc<changelog::Changelog>>,
    /// The erasure markers, as stored.
    erasures: Arc<Mutex<erased::Erasures>>,
}

impl Store {
    pub fn open(backend: Arc<dyn Backend>) -> Result<Store, StoreError> {
        let pending = match backend.last_key(&[OUTBOX])? {
            Some(key) => last_outbox_seq(backend.as_ref(), &key)?.map_or(0, |s| s + 1),
            None => 0,
        };
        let numbered = stored_u64(backend.as_ref(), OUTBOX_NEXT, "outbox next")?;
        let next = pending.max(numbered.unwrap_or(0));
        let erasures = erased::Erasures::load(backend.as_ref())?;
        Ok(Store {
            backend,
            next_outbox_seq: Arc::new(AtomicU64::new(next)),
            outbox_at_open: next,
            commit_lock: Arc::new(Mutex::new(())),
            outbox_floor: Arc::new(AtomicU64::new(0)),
            recent: Arc::new(Mutex::new(recent::Recent::new(next))),
            chunks: Arc::new(Mutex::new(chunks::Chunks::default())),
            changelog: None,
            erasures: Arc::new(Mutex::new(erasures)),
        })
    }

    /// Holds the store to `partitions`, the count its customers are placed by (a customer's
    /// partition is its id's hash modulo the count): the first call stores it, and a later
    /// call with another count is refused, naming the stored one. Under another count each
    /// customer would be looked for in another partition, taken for a new one there and split
    /// in two, and `score` would miss the partitions past the count. A store written before the
    /// count was stored takes the one given, unless it holds a customer in a partition that
    /// count does not have. `keep`: store the count where none is stored (a command that
    /// folds; one that only reads, `score` or `fit`, must not fix a count the job then has to
    /// follow).
    pub fn hold_partitions(&self, partitions: i32, keep: bool) -> Result<Held, StoreError> {
        let given = u64::try_from(partitions).unwrap_or(0);
        if stored_u64(self.backend.as_ref(), PARTITIONS, "partitions")?.is_none() {
            // The partition of the greatest customer key: the highest holding a customer.
            let highest = (self.backend.last_key(&[CUSTOMER])?)
                .and_then(|key| Some(u32::from_be_bytes(key.get(1..5)?.try_into().ok()?)));
            if let Some(partition) = highest.map(u64::from).filter(|h| *h >= given) {
                return Ok(Held::Beyond { partition });
            }
        }
        self.hold(PARTITIONS, given, keep)
    }

    /// Holds the store to `window_ms`, the length of its complaint windows, as
    /// [`Store::hold_partitions`] holds it to a partition count: its open windows are keyed by
    /// their start alone, and every category's baseline is a mean count of windows of that
    /// length, so under another length an open window would close with the counts of the old
    /// one, and the spike test would weigh windows of one length against a baseline of another
    /// (a state of hourly windows continued in quarter hours had every z-score near or below
    /// zero for the rest of the traffic: no spike could page). A store written before the
    /// length was stored takes the one given. `keep` as for [`Store::hold_partitions`].
    pub fn hold_window(&self, window_ms: Millis, keep: bool) -> Result<Held, StoreError> {
        self.hold(WINDOW, u64::try_from(window_ms).unwrap_or(0), keep)
    }

    /// Holds a replay's `source` to the file whose first line has the fingerprint
    /// `first_line`: a replay's position is kept by the file's name, and another file under
    /// the same name (a daily export written over, or `/dev/stdin` again) would have its lines
    /// up to that position skipped as applied. When none of its lines were applied before
    /// (`applied` false) the fingerprint is stored; else it must be the stored one, or be
    /// stored now where a replay before this check kept none.
    pub fn hold_file(
        &self,
        source: &str,
        first_line: u64,
        applied: bool,
    ) -> Result<Held, StoreError> {
        let key = [FILE, source.as_bytes()].concat();
        if !applied {
            self.put_u64(&key, first_line)?;
            return Ok(Held::Held);
        }
        self.hold(&key, first_line, true)
    }

    /// Says whether what is stored under `key` is `given`, storing `given` there if nothing is
    /// and `keep` says so.
    fn hold(&self, key: &[u8], given: u64, keep: bool) -> Result<Held, StoreError> {
        match stored_u64(self.backend.as_ref(), key, &String::from_utf8_lossy(key))? {
            Some(stored) if stored == given => Ok(Held::Held),
            Some(stored) => Ok(Held::Other { stored }),
            None if !keep => Ok(Held::Held),
            None => {
                self.put_u64(key, given)?;
                Ok(Held::Held)
            }
        }
    }

    /// Stores `value` under `key`, big-endian, as `stored_u64` reads it.
    fn put_u64(&self, key: &[u8], value: u64) -> Result<(), StoreError> {
        let op = Op::Put(key.to_vec(), value.to_be_bytes().to_vec());
        self.backend.write(vec![op])
    }

    /// Up to which event time `customer_id`'s events of `partition` stay erased, when it was
    /// erased: older ones are not applied (see `erased`).
    pub fn erased_until(&self, partition: i32, customer_id: &str) -> Option<Millis> {
        self.erasures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .until(partition, customer_id)
    }

    /// Forgets the erasure markers whose time is before `before` and returns how many: with
    /// `before` the processor clock less `input.max_event_age_days`, every event they would
    /// keep out is refused as `ancient_timestamp` before a marker is looked at. Only while
    /// nothing commits (at start): a marker written meanwhile could be deleted with an old one.
    /// The changelog keeps its copies, which a restore brings back until the next start.
    pub fn forget_erasures_before(&self, before: Millis) -> Result<usize, StoreError> {
        let mut erasures = self.erasures.lock().unwrap_or_else(|p| p.into_inner());
        let old = erasures.take_before(before);
        if old.is_empty() {
            return Ok(0);
        }
        let ops = old
            .iter()
            .map(|((partition, fingerprint), _)| Op::Delete(erased::key(*partition, *fingerprint)))
            .collect::<Vec<_>>();
        if let Err(e) = self.backend.write(ops) {
            // Kept in memory as on disk.
            for ((partition, fingerprint), until) in old {
                erasures.set(partition, fingerprint, Some(until));
            }
            return Err(e);
        }
        Ok(old.len())
    }

    /// How many erasure markers the store holds.
    pub fn erasure_markers(&self) -> usize {
        self.erasures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn in_memory() -> Store {
        Store::open(Arc::new(MemoryBackend::default())).expect("an empty memory store opens")
    }

    /// A customer's folded state.
    pub fn customer(
        &self,
        partition: i32,
        customer_id: &str,
    ) -> Result<Option<CustomerState>, StoreError> {
        Ok(self
            .customer_record(partition, customer_id)?
            .map(|c| c.state))
    }

    /// A customer's folded state and risk memo.
    pub fn customer_record(
        &self,
        partition: i32,
        customer_id: &str,
    ) -> Result<Option<Customer>, StoreError> {
        Ok(self
            .customer_stored(partition, customer_id)?
            .map(|(customer, _)| customer))
    }

    /// A customer, and the seal of its sealed remembered events the store keeps apart:
    /// `None` when it keeps the customer whole, as a restore writes it.
    pub fn customer_stored(
        &self,
        partition: i32,
        customer_id: &str,
    ) -> Result<Option<(Customer, Option<u32>)>, StoreError> {
        let key = customer_key(partition, customer_id);
        match self.backend.get(&key)? {
            None => Ok(None),
            Some(bytes) => self.read_customer(&key, &bytes).map(Some),
        }
    }

    /// The customer stored under `key` as `bytes`, with its sealed remembered events if they
    /// are kept apart, and their seal then.
    fn read_customer(
        &self,
        key: &[u8],
        bytes: &[u8],
    ) -> Result<(Customer, Option<u32>), StoreError> {
        let corrupt = |reason| StoreError::Corrupt {
            key: String::from_utf8_lossy(key).into_owned(),
            reason,
        };
        match codec::decode_stored(bytes).map_err(corrupt)? {
            codec::Stored::Whole(customer) => {
                // Nothing is kept apart of a whole customer: right for its seal when it has
                // nothing sealed.
                let state = &customer.state;
                let seal = (state.seen_sealed == 0).then_some(state.seal);
                Ok((customer, seal))
            }
            codec::Stored::Apart {
                mut customer,
                seal,
                sealed,
            } => {
                let Some(kept) = self.backend.get(&sealed_key_of(key.to_vec(), seal))? else {
                    // Only an old owner's changelog record compacted over the new owner's
                    // leaves a customer without its sealed events (README, *Scaling out*):
                    // it goes on without them rather than stop its partition.
                    tracing::warn!(
                        key = %String::from_utf8_lossy(key),
                        seal,
                        sealed,
                        "A customer's sealed remembered events are missing; it is read without them, and a redelivery of those events would apply again."
                    );
                    customer.state.seen_sealed = 0;
                    return Ok((customer, None));
                };
                codec::join_sealed(&mut customer, (seal, sealed), &kept).map_err(corrupt)?;
                Ok((customer, Some(seal)))
            }
        }
    }

    /// Up to `limit` customers of `partition` whose id is at least `from`, in id order.
    pub fn customers(
        &self,
        partition: i32,
        from: &str,
        limit: usize,
    ) -> Result<Vec<CustomerState>, StoreError> {
        Ok(self
            .customer_records(partition, from, limit)?
            .into_iter()
            .map(|c| c.state)
            .collect())
    }

    /// Calls `f` with every stored customer of `partition`, in id order, a page at a time.
    pub fn for_each_customer<E: From<StoreError>>(
        &self,
        partition: i32,
        mut f: impl FnMut(&Customer) -> Result<(), E>,
    ) -> Result<(), E> {
        const PAGE: usize = 1_000;
        let mut from = String::new();
        loop {
            let page = self.customer_records(partition, &from, PAGE)?;
            for customer in &page {
                f(customer)?;
            }
            match page.last() {
                Some(last) if page.len() == PAGE => from = format!("{}\0", last.state.customer_id),
                _ => return Ok(()),
            }
        }
    }

    /// Up to `limit` stored customers of `partition` from id `from` on, in id order.
    pub fn customer_records(
        &self,
        partition: i32,
        from: &str,
        limit: usize,
    ) -> Result<Vec<Customer>, StoreError> {
        let prefix = customer_key(partition, "");
        let start = customer_key(partition, from);
        self.backend
            .scan(&prefix, &start, None, limit)?
            .into_iter()
            .map(|(key, bytes)| Ok(self.read_customer(&key, &bytes)?.0))
            .collect()
    }

    /// The next offset to read from `topic`/`partition`, as of the last commit.
    pub fn offset(&self, topic: &str, partition: i32) -> Result<Option<i64>, StoreError> {
        self.partition_value(offset_key(topic, partition), "offset", topic, partition)
    }

    /// The aggregator's account of which records of changelog `partition` count, as of the
    /// last commit.
    pub fn ownership(&self, partition: i32) -> Result<Ownership, StoreError> {
        let key = partition_key(OWNERSHIP, "", partition);
        match self.backend.get(&key)? {
            None => Ok(Ownership::default()),
            Some(bytes) => codec::decode_ownership(&bytes).map_err(|reason| StoreError::Corrupt {
                key: format!("ownership of changelog partition {partition}"),
                reason,
            }),
        }
    }

    /// The input position the aggregator's aggregates count up to in changelog `partition`, as
    /// of the last commit: that of the last position record it counted there, if known.
    pub fn counted_input(&self, partition: i32) -> Result<Option<Position>, StoreError> {
        let key = partition_key(COUNTED_INPUT, "", partition);
        self.backend
            .get(&key)?
            .map(|bytes| {
                codec::decode_position(&bytes).map_err(|reason| StoreError::Corrupt {
                    key: format!("counted input of changelog partition {partition}"),
                    reason,
                })
            })
            .transpose()
    }

    /// The input offsets stored for `partition`, `(source, next offset to read)` in source
    /// order: where its state stands in its inputs, as a position record says it.
    pub fn input_offsets(&self, partition: i32) -> Result<Vec<(String, i64)>, StoreError> {
        self.partition_entries(OFFSET, partition)
    }

    /// Every `(source, value)` stored under `tag` (offsets or event times) for `partition`, in
    /// source order.
    pub(super) fn partition_entries(
        &self,
        tag: u8,
        partition: i32,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let prefix = partition_key(tag, "", partition);
        let mut out = Vec::new();
        for (key, value) in self.backend.scan(&prefix, &prefix, None, usize::MAX)? {
            let topic = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let value = value
                .as_slice()
                .try_into()
                .map_err(|_| StoreError::Corrupt {
                    key: format!("{key:?}"),
                    reason: "not 8 bytes".into(),
                })?;
            out.push((topic, i64::from_be_bytes(value)));
        }
        Ok(out)
    }

    /// The newest event time `topic`/`partition` delivered, as of the last commit.
    pub fn event_time(&self, topic: &str, partition: i32) -> Result<Option<Millis>, StoreError> {
        self.partition_value(
            event_time_key(topic, partition),
            "event time",
            topic,
            partition,
        )
    }

    fn partition_value(
        &self,
        key: Vec<u8>,
        what: &str,
        topic: &str,
        partition: i32,
    ) -> Result<Option<i64>, StoreError> {
        match self.backend.get(&key)? {
            None => Ok(None),
            Some(bytes) => {
                let raw: [u8; 8] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| StoreError::Corrupt {
                            key: format!("{what} {topic}/{partition}"),
                            reason: format!("{} bytes, expected 8", bytes.len()),
                        })?;
                Ok(Some(i64::from_be_bytes(raw)))
            }
        }
    }

    /// Up to `limit` timers of `partition` due in `from..=up_to` (from the first when `from` is
    /// `None`), earliest first.
    pub fn due_timers(
        &self,
        partition: i32,
        (from, up_to): (Option<Millis>, Millis),
        limit: usize,
    ) -> Result<Vec<Timer>, StoreError> {
        let prefix = timer_prefix(partition);
        // Keys sort by time, so the scan starts at `from` (deleted timers below it, which RocksDB
        // would step over one tombstone at a time, are never visited) and stops at the first
        // timer after `up_to`.
        let mut start = prefix.clone();
        if let Some(from) = from {
            start.extend_from_slice(&sortable(from));
        }
        let mut end = prefix.clone();
        end.extend_from_slice(&sortable(up_to.saturating_add(1)));
        self.backend
            .scan(&prefix, &start, Some(&end), limit)?
            .into_iter()
            .map(|(key, _)| {
                let at = timer_time(&key)?;
                Ok(Timer {
                    partition,
                    at,
                    customer_id: String::from_utf8_lossy(&key[13..]).into_owned(),
                })
            })
            .collect()
    }

    /// Stores timer keys ahead of the commit of the customers that hold them, so that a
    /// batch's scans for due timers find them: the processor's commit at the batch's end deletes
    /// those its customers no longer hold. A key stored so and then left by a crash names a
    /// timer its customer does not hold, which the processor deletes when it comes due, as any
    /// stale key. Nothing is deleted here: a stored customer's own key goes only with the
    /// commit that replaces the customer.
    pub fn put_timers(&self, timers: &[Timer]) -> Result<(), StoreError> {
        let ops = timers
            .iter()
            .map(|timer| Op::Put(timer_key(timer), Vec::new()))
            .collect();
        self.backend.write(ops)
    }

    /// The time of the earliest timer of `partition` stored past `after`.
    pub fn next_timer(&self, partition: i32, after: Millis) -> Result<Option<Millis>, StoreError> {
        let prefix = timer_prefix(partition);
        let mut start = prefix.clone();
        start.extend_from_slice(&sortable(after.saturating_add(1)));
        match self.backend.scan(&prefix, &start, None, 1)?.first() {
            None => Ok(None),
            Some((key, _)) => timer_time(key).map(Some),
        }
    }

    /// The complaint trends as of the last commit.
    pub fn trends(&self) -> Result<Option<Trends>, StoreError> {
        match self.backend.get(TRENDS)? {
            None => Ok(None),
            Some(bytes) => {
                codec::decode_trends(&bytes)
                    .map(Some)
                    .map_err(|reason| StoreError::Corrupt {
                        key: "trends".into(),
                        reason,
                    })
            }
        }
    }

    /// The segment metrics as of the last commit.
    pub fn segments(&self) -> Result<Option<Segments>, StoreError> {
        match self.backend.get(SEGMENTS)? {
            None => Ok(None),
            Some(bytes) => {
                codec::decode_segments(&bytes)
                    .map(Some)
                    .map_err(|reason| StoreError::Corrupt {
                        key: "segments".into(),
                        reason,
                    })
            }
        }
    }

    /// The RFM histograms and scales as of the last commit.
    pub fn rfm(&self) -> Result<Rfm, StoreError> {
        let scales = match self.backend.get(RFM_SCALES)? {
            None => Scales::default(),
            Some(bytes) => codec::decode_scales(&bytes).map_err(|reason| StoreError::Corrupt {
                key: "rfm-scales".into(),
                reason,
            })?,
        };
        let mut cells = Vec::new();
        let mut from = vec![HISTOGRAM];
        loop {
            let page = self.backend.scan(&[HISTOGRAM], &from, None, 10_000)?;
            for (key, value) in &page {
                cells.push(cell_of(key, value).ok_or_else(|| StoreError::Corrupt {
                    key: format!("{key:?}"),
                    reason: "not an RFM histogram cell".into(),
                })?);
            }
            match page.last() {
                Some((last, _)) if page.len() == 10_000 => {
                    from = last.clone();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Rfm::from_cells(cells, scales))
    }

    /// Writes the whole commit atomically: states, timers, trends, offsets and outbox
    /// entries land together.
    pub fn commit(&self, commit: Commit) -> Result<(), StoreError> {
        // The changelog goes out ahead of the commit's other outputs.
        let mut changelog = match &self.changelog {
            Some(changelog) => {
                changelog.records(&commit, &|p| self.position_entries(changelog, p))?
            }
            None => Vec::new(),
        };
        let outbox = changelog.len() + commit.outbox.len();
        // Sized to the last operation: growing it moved every operation already pushed, a
        // percent of a live event's instructions (`benches/HISTORY.md`, 2026-12-03, 18:59-).
        let customer_ops: usize = commit.customers.iter().map(CustomerWrite::entries).sum();
        let sized = customer_ops
            + commit.timers_cleared.len()
            + commit.timers_set.len()
            + usize::from(commit.trends.is_some())
            + usize::from(commit.segments.is_some())
            + commit.rfm_cells.len()
            + usize::from(commit.rfm_scales.is_some())
            + commit.offsets.len()
            + commit.event_times.len()
            + commit.ownerships.len()
            + commit.counted_inputs.len()
            + 2 * usize::from(outbox > 0);
        let mut ops = Vec::with_capacity(sized);
        let mut marked = Vec::new();
        for write in commit.customers {
            if let Some(until) = write.erased_until {
                let fingerprint = erased::fingerprint(&write.id);
                ops.push(erased::put(write.partition, fingerprint, until));
                marked.push((write.partition, fingerprint, until));
            }
            let key = customer_key(write.partition, &write.id);
            ops.push(match write.value {
                Some(bytes) => Op::Put(key, bytes),
                None => Op::Delete(key),
            });
            if let Some(seal) = write.unsealed {
                ops.push(Op::Delete(sealed_key(write.partition, &write.id, seal)));
            }
            if let Some((seal, bytes)) = write.sealed {
                ops.push(Op::Put(sealed_key(write.partition, &write.id, seal), bytes));
            }
        }
        for timer in &commit.timers_cleared {
            ops.push(Op::Delete(timer_key(timer)));
        }
        for timer in &commit.timers_set {
            ops.push(Op::Put(timer_key(timer), Vec::new()));
        }
        if let Some(trends) = &commit.trends {
            ops.push(Op::Put(TRENDS.to_vec(), codec::encode_trends(trends)));
        }
        if let Some(segments) = &commit.segments {
            ops.push(Op::Put(SEGMENTS.to_vec(), codec::encode_segments(segments)));
        }
        for cell in &commit.rfm_cells {
            ops.push(match cell_key(cell) {
                (key, 0) => Op::Delete(key),
                (key, n) => Op::Put(key, n.to_be_bytes().to_vec()),
            });
        }
        if let Some(scales) = &commit.rfm_scales {
            ops.push(Op::Put(RFM_SCALES.to_vec(), codec::encode_scales(scales)));
        }
        for (topic, partition, next) in &commit.offsets {
            ops.push(Op::Put(
                offset_key(topic, *partition),
                next.to_be_bytes().to_vec(),
            ));
        }
        for (topic, partition, newest) in &commit.event_times {
            ops.push(Op::Put(
                event_time_key(topic, *partition),
                newest.to_be_bytes().to_vec(),
            ));
        }
        for (partition, ownership) in &commit.ownerships {
            ops.push(Op::Put(
                partition_key(OWNERSHIP, "", *partition),
                codec::encode_ownership(ownership),
            ));
        }
        for (partition, position) in &commit.counted_inputs {
            let key = partition_key(COUNTED_INPUT, "", *partition);
            ops.push(match position {
                Some(position) => Op::Put(key, codec::encode_position(position)),
                None => Op::Delete(key),
            });
        }
        let _in_order = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let first = self
            .next_outbox_seq
            .fetch_add(outbox as u64, Ordering::SeqCst);
        if outbox > 0 {
            let next = first + outbox as u64;
            ops.push(Op::Put(OUTBOX_NEXT.to_vec(), next.to_be_bytes().to_vec()));
        }
        if let Some(log) = &self.changelog {
            log.number(&mut changelog, first);
        }
        let mut records: Vec<Output> = Vec::with_capacity(outbox);
        records.extend(changelog.into_iter().map(Output::Record));
        records.extend(commit.outbox);
        let chunks = outbox_chunks(&records);
        // Room for every chunk (`sized` counted one): a no-op for a commit of one chunk.
        ops.reserve_exact(chunks.len());
        for run in &chunks {
            let at = first + run.start as u64;
            ops.push(Op::Put(
                outbox_key(at),
                codec::encode_outbox_chunk(at, &records[run.clone()]),
            ));
        }
        // An operation added above without its count would only cost the growth again.
        debug_assert_eq!(
            ops.len(),
            sized + chunks.len().saturating_sub(1),
            "every operation of the commit is counted in `sized`, and every chunk past the first"
        );
        self.backend.write(ops)?;
        if !marked.is_empty() {
            let mut erasures = self.erasures.lock().unwrap_or_else(|p| p.into_inner());
            for (partition, fingerprint, until) in marked {
                erasures.set(partition, fingerprint, Some(until));
            }
        }
        if let Some(changelog) = &self.changelog {
            changelog.committed(&commit.offsets, &commit.event_times);
        }
        let mut stored = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
        for run in chunks {
            stored.stored(first + run.start as u64, run.len() as u64);
        }
        drop(stored);
        // Still in sequence order, and stored: the drain may read them from memory now.
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committed(first, records);
        Ok(())
    }

    /// Numbers the next outbox record past `number` if it would not be already: after the
    /// store lost records it had numbered and delivered (`Store::lost_own`), so that no number
    /// is given twice.
    pub fn number_outbox_past(&self, number: u64) -> Result<(), StoreError> {
        let _in_order = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let next = number.saturating_add(1);
        if next <= self.next_outbox_seq.load(Ordering::SeqCst) {
            return Ok(());
        }
        self.backend.write(vec![Op::Put(
            OUTBOX_NEXT.to_vec(),
            next.to_be_bytes().to_vec(),
        )])?;
        // The records kept in memory stay complete: none is numbered in between.
        self.next_outbox_seq.store(next, Ordering::SeqCst);
        Ok(())
    }

    /// The number the next outbox record committed will have: every record committed so far
    /// is numbered below it.
    pub fn outbox_next(&self) -> u64 {
        self.next_outbox_seq.load(Ordering::SeqCst)
    }

    /// Up to `limit` pending outbox records, oldest first, with their sequence numbers, each a
    /// copy of its own: see [`Store::outbox_shared`], which the drain reads.
    pub fn outbox(&self, limit: usize) -> Result<Vec<(u64, OutboxRecord)>, StoreError> {
        Ok(self
            .outbox_shared(limit)?
            .into_iter()
            .map(|(seq, record)| (seq, Arc::unwrap_or_clone(record)))
            .collect())
    }

    /// Up to `limit` pending outbox records, oldest first, with their sequence numbers. A
    /// record kept in memory since its commit is shared with it, not copied.
    pub fn outbox_shared(&self, limit: usize) -> Result<Vec<(u64, Arc<OutboxRecord>)>, StoreError> {
        // Every number below `settled` is stored or never will be: no commit is in flight.
        let settled = {
            let _in_order = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
            self.next_outbox_seq.load(Ordering::SeqCst)
        };
        let floor = self.outbox_floor.load(Ordering::SeqCst);
        let kept = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending(floor, limit);
        if let Some(pending) = kept {
            let first = pending.first().map(|(seq, _)| *seq);
            self.outbox_floor
                .fetch_max(first.unwrap_or(settled), Ordering::SeqCst);
            return Ok(pending
                .into_iter()
                .map(|(seq, kept)| (seq, kept.to_record()))
                .collect());
        }
        let mut pending = Vec::new();
        let from = self
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .start_of(floor);
        self.each_outbox_chunk(from, |_, first, parts| {
            let chunks = self.chunks.lock().unwrap_or_else(|e| e.into_inner());
            for (seq, bytes) in parts {
                if pending.len() == limit {
                    return Ok(ControlFlow::Break(()));
                }
                // Below the floor, or acknowledged since the chunk was stored.
                if seq >= floor && chunks.is_pending(first, seq) {
                    let record = decode_outbox(seq, bytes)?.into_record();
                    pending.push((seq, Arc::new(record)));
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        // Nothing pending lies below the first record found, or below `settled` when none was.
        let first = pending.first().map(|(seq, _)| *seq);
        self.outbox_floor
            .fetch_max(first.unwrap_or(settled), Ordering::SeqCst);
        Ok(pending)
    }

    /// Calls `visit` with each stored outbox chunk from the one numbered `from` on, in order
    /// (its key, the number of its first record, and its records), until it breaks. Each chunk
    /// read is known to `chunks` from then on. A chunk holds a whole commit's records, with the
    /// changelog megabytes of customers: they are read from the store two at a time.
    fn each_outbox_chunk(
        &self,
        mut from: u64,
        mut visit: impl FnMut(&[u8], u64, Vec<(u64, &[u8])>) -> Result<ControlFlow<()>, StoreError>,
    ) -> Result<(), StoreError> {
        loop {
            let entries = self
                .backend
                .scan(&[OUTBOX], &outbox_key(from), None, CHUNK_PAGE)?;
            for (key, bytes) in &entries {
                let first = stored_outbox_seq(key)?;
                let parts = outbox_parts(first, bytes)?;
                let numbers: Vec<u64> = parts.iter().map(|&(seq, _)| seq).collect();
                self.chunks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .found(first, &numbers);
                if visit(key, first, parts)?.is_break() {
                    return Ok(());
                }
                from = first + 1;
            }
            if entries.len() < CHUNK_PAGE {
                return Ok(());
            }
        }
    }

    /// Removes delivered outbox records: a chunk (a commit's records, or a run of them) once
    /// the last of its records is acknowledged.
    pub fn acknowledge(&self, seqs: &[u64]) -> Result<(), StoreError> {
        let emptied = self
            .chunks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acknowledged(seqs.iter().copied());
        let ops = emptied
            .into_iter()
            .map(|first| Op::Delete(outbox_key(first)))
            .collect();
        self.backend.write(ops)?;
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .acknowledged(seqs);
        Ok(())
    }

    /// Forgets the outbox records kept in memory, after outbox records were deleted otherwise
    /// than by [`Store::acknowledge`]: the drain reads what is pending from the store again.
    fn forget_recent_outbox(&self) {
        let _in_order = self.commit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let next = self.next_outbox_seq.load(Ordering::SeqCst);
        self.recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .reset(next);
    }

    pub fn size_bytes(&self) -> u64 {
        self.backend.size_bytes()
    }
}

#[cfg(test)]
mod contract;
