//! Erasure markers: what stays of an erased customer so that its older events, read after the
//! erasure, do not bring it back. A marker is the XXH3-64 fingerprint of the customer's id,
//! never the id, and the event time up to which its events stay erased. An erasure deletes the
//! customer's state; without a marker, an order placed before it but read after it (the orders
//! topic running behind the interactions topic, or a producer sending it again) would start a
//! new state and publish the customer's data again.
//!
//! The store keeps the markers under their own key family and in memory (about 40 bytes each
//! with the table's overhead): the processor looks up each customer its cache takes in, and
//! a read from RocksDB for every new customer would cost more than the memory of the few
//! erased.

use std::collections::HashMap;

use crate::event::Millis;
use crate::fold::EventFingerprint;

use super::{Backend, Op, StoreError};

/// `k` + partition (4 bytes, big-endian) + fingerprint (8 bytes, big-endian); the value
/// [`encode`].
pub(super) const TAG: u8 = b'k';
/// The first byte of a changelog key of a marker, then the fingerprint (8 bytes, big-endian);
/// a byte UTF-8 never has, so never a customer id. The value is the store's.
pub const CHANGELOG_KEY: u8 = 0xfd;
const MARKER_V1: u8 = 1;

/// Markers by partition and fingerprint: the event time up to which the customer's events
/// stay erased.
#[derive(Debug, Default)]
pub struct Erasures(HashMap<(i32, u64), Millis>);

/// The fingerprint a marker keeps of `customer_id`.
pub fn fingerprint(customer_id: &str) -> u64 {
    EventFingerprint::of(customer_id).0
}

pub fn key(partition: i32, fingerprint: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(13);
    key.push(TAG);
    key.extend_from_slice(&(partition as u32).to_be_bytes());
    key.extend_from_slice(&fingerprint.to_be_bytes());
    key
}

pub fn encode(until: Millis) -> Vec<u8> {
    let mut value = vec![MARKER_V1];
    value.extend_from_slice(&until.to_be_bytes());
    value
}

pub fn decode(bytes: &[u8]) -> Result<Millis, String> {
    match bytes {
        [MARKER_V1, rest @ ..] => rest
            .try_into()
            .map(Millis::from_be_bytes)
            .map_err(|_| format!("an erasure marker of {} bytes", bytes.len())),
        [v, ..] => Err(format!(
            "unknown erasure marker version {v} (this build reads 1)"
        )),
        [] => Err("an empty erasure marker".into()),
    }
}

/// The changelog key of the marker of `fingerprint`.
pub fn changelog_key(fingerprint: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(CHANGELOG_KEY);
    key.extend_from_slice(&fingerprint.to_be_bytes());
    key
}

/// The fingerprint of a changelog key from [`changelog_key`].
pub fn of_changelog_key(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(&[CHANGELOG_KEY])?;
    rest.try_into().ok().map(u64::from_be_bytes)
}

impl Erasures {
    /// Every marker the backend holds.
    pub fn load(backend: &dyn Backend) -> Result<Erasures, StoreError> {
        let mut markers = HashMap::new();
        let prefix = [TAG];
        let mut from = prefix.to_vec();
        loop {
            let page = backend.scan(&prefix, &from, None, 10_000)?;
            let Some((last, _)) = page.last() else { break };
            from = last.clone();
            from.push(0);
            for (key, value) in page {
                let corrupt = |reason: String| StoreError::Corrupt {
                    key: format!("{key:?}"),
                    reason,
                };
                let (partition, fingerprint) = match key.as_slice() {
                    [TAG, p0, p1, p2, p3, fp @ ..] if fp.len() == 8 => (
                        u32::from_be_bytes([*p0, *p1, *p2, *p3]) as i32,
                        u64::from_be_bytes(fp.try_into().expect("eight bytes")),
                    ),
                    _ => return Err(corrupt("not an erasure marker's key".into())),
                };
                markers.insert((partition, fingerprint), decode(&value).map_err(corrupt)?);
            }
        }
        Ok(Erasures(markers))
    }

    /// Up to when `customer_id`'s events of `partition` stay erased, if it was erased.
    pub fn until(&self, partition: i32, customer_id: &str) -> Option<Millis> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(&(partition, fingerprint(customer_id))).copied()
    }

    /// Notes a marker written (`Some`) or deleted (`None`).
    pub fn set(&mut self, partition: i32, fingerprint: u64, until: Option<Millis>) {
        match until {
            Some(until) => {
                self.0.insert((partition, fingerprint), until);
            }
            None => {
                self.0.remove(&(partition, fingerprint));
            }
        }
    }

    /// Forgets the markers of `partition` (the store cleared it).
    pub fn clear(&mut self, partition: i32) {
        self.0.retain(|(p, _), _| *p != partition);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Takes out the markers whose time is before `before`: (partition, fingerprint) and time.
    pub fn take_before(&mut self, before: Millis) -> Vec<((i32, u64), Millis)> {
        let mut old = Vec::new();
        self.0.retain(|marker, until| {
            let keep = *until >= before;
            if !keep {
                old.push((*marker, *until));
            }
            keep
        });
        old
    }
}

/// The operation that writes a marker.
pub fn put(partition: i32, fingerprint: u64, until: Millis) -> Op {
    Op::Put(key(partition, fingerprint), encode(until))
}
