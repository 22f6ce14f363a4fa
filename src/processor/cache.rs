//! The processor's bounded write-back cache of customers. Must not know about Kafka, RocksDB or
//! what the fold does with a customer.

use super::CacheLookups;
use crate::event::Millis;
use crate::facts::Fact;
use crate::store::{Commit, Customer, Store, StoreError, Timer};

/// A customer as the cache holds it: its record, what the store holds of its timer, and whether
/// the next commit writes it.
pub(super) struct CacheEntry {
    /// `None`: known absent (never seen, or erased). Boxed so that the table's slots stay small
    /// (a customer is 568 bytes): inserting a new customer, growing the table and scanning it to
    /// evict then move pointers, not customers.
    pub(super) record: Option<Box<Customer>>,
    /// The timer the store holds for this customer, as of the last commit.
    pub(super) stored_timer: Option<Millis>,
    /// Timer keys of this customer in the store besides `stored_timer` since the last commit:
    /// written ahead of it ([`StateCache::timers_ahead`]), or found stale by a scan. The
    /// commit deletes each but the customer's timer then.
    pub(super) timers_ahead: Vec<Millis>,
    /// The seal of the sealed remembered events the store keeps apart for this customer, as
    /// of the last commit; `None` when it keeps the customer whole and its sealed events are
    /// written at the next commit.
    pub(super) stored_seal: Option<u32>,
    pub(super) dirty: bool,
    /// What its changes since the last commit did to the aggregates, for the aggregator.
    pub(super) facts: Vec<Fact>,
    /// Whether its key is in [`StateCache::touched`].
    pub(super) touched: bool,
    /// Its key's index in [`StateCache::touched`], while `touched`.
    touched_at: u32,
    /// Whether it was handed out since timers were last written ahead ([`StateCache::accessed`]).
    accessed: bool,
    /// Up to which event time its events stay erased, when it was erased (`store::Store::
    /// erased_until`).
    pub(super) erased_until: Option<Millis>,
    /// Whether it was erased since the last commit, which writes `erased_until` then (also
    /// when an event after the erasure started it again in the same batch).
    pub(super) erased_now: bool,
    pub(super) used: u64,
}

/// `(partition, customer id)` borrowed, to look up the cache's owned keys without copying the
/// id. Hashes as the owned tuple does (the fields in order, `&str` as `String`).
#[derive(Hash)]
struct CustomerKey<'a>(i32, &'a str);

impl hashbrown::Equivalent<(i32, String)> for CustomerKey<'_> {
    fn equivalent(&self, key: &(i32, String)) -> bool {
        self.0 == key.0 && self.1 == key.1
    }
}

/// A bounded write-back cache of customers (Kafka Streams' record cache): hot customers are
/// read from memory, and each dirty customer is written once per commit however many events it had.
pub(super) struct StateCache {
    pub(super) entries: hashbrown::HashMap<(i32, String), CacheEntry>,
    /// The keys of the entries handed out since the last commit, in first-use order: only they
    /// can be dirty, so a commit visits them rather than the whole cache.
    pub(super) touched: Vec<(i32, String)>,
    /// The entries handed out since timers were last written ahead, as indices into `touched`:
    /// only they can have moved their timers since.
    accessed: Vec<u32>,
    /// Dirty entries whose timers lay past the watermark when last looked at, by those
    /// timers' times (an entry that moved its timer since is looked at again as accessed, and
    /// its item here then passed over).
    later: std::collections::BinaryHeap<std::cmp::Reverse<(Millis, u32)>>,
    pub(super) capacity: usize,
    pub(super) clock: u64,
    /// Lookups since they were last taken ([`StateCache::take_lookups`]).
    lookups: CacheLookups,
}

impl StateCache {
    pub(super) fn new(capacity: usize) -> StateCache {
        StateCache {
            entries: hashbrown::HashMap::new(),
            touched: Vec::new(),
            accessed: Vec::new(),
            later: std::collections::BinaryHeap::new(),
            capacity: capacity.max(1),
            clock: 0,
            lookups: CacheLookups::default(),
        }
    }

    pub(super) fn entry(
        &mut self,
        store: &Store,
        partition: i32,
        customer_id: &str,
    ) -> Result<&mut CacheEntry, StoreError> {
        self.clock += 1;
        let entry = match self.entries.entry_ref(&CustomerKey(partition, customer_id)) {
            hashbrown::hash_map::EntryRef::Occupied(e) => {
                self.lookups.hit += 1;
                e.into_mut()
            }
            hashbrown::hash_map::EntryRef::Vacant(v) => {
                let (record, stored_seal) = match store.customer_stored(partition, customer_id)? {
                    Some((customer, seal)) => {
                        self.lookups.stored += 1;
                        (Some(Box::new(customer)), seal)
                    }
                    // A new customer's seal, and nothing kept apart.
                    None => {
                        self.lookups.absent += 1;
                        (None, Some(0))
                    }
                };
                let stored_timer = record.as_ref().and_then(|c| c.risk.timer_at);
                let erased_until = store.erased_until(partition, customer_id);
                let entry = CacheEntry {
                    record,
                    stored_timer,
                    timers_ahead: Vec::new(),
                    stored_seal,
                    dirty: false,
                    facts: Vec::new(),
                    touched: false,
                    touched_at: 0,
                    accessed: false,
                    erased_until,
                    erased_now: false,
                    used: 0,
                };
                v.insert_with_key((partition, customer_id.to_owned()), entry)
            }
        };
        entry.used = self.clock;
        if !entry.touched {
            entry.touched = true;
            entry.touched_at = self.touched.len() as u32;
            self.touched.push((partition, customer_id.to_owned()));
        }
        if !entry.accessed {
            entry.accessed = true;
            self.accessed.push(entry.touched_at);
        }
        Ok(entry)
    }

    /// The timers up to `up_to` of the dirty customers that the store does not hold yet, noted
    /// as written ahead: a batch's scans for due timers find them in the store before its
    /// commit, which deletes those the customer no longer has. Timers past `up_to` wait for a
    /// later call whose `up_to` reaches them, or for the commit: only one that can come due
    /// before the commit is written twice. Also a timer that `was_passed_over` (a scan handled
    /// its stored key earlier in the batch and the customer has come back to it), so that the
    /// next scan looks at it again.
    pub(super) fn timers_ahead(
        &mut self,
        up_to: Millis,
        mut was_passed_over: impl FnMut(&Timer) -> bool,
    ) -> Vec<Timer> {
        let mut ahead = Vec::new();
        let accessed = std::mem::take(&mut self.accessed);
        for &index in &accessed {
            self.look_ahead(index, None, up_to, &mut was_passed_over, &mut ahead);
        }
        // Its buffer kept for the next accesses.
        self.accessed = accessed;
        self.accessed.clear();
        while let Some(&std::cmp::Reverse((at, index))) = self.later.peek() {
            if at > up_to {
                break;
            }
            self.later.pop();
            self.look_ahead(index, Some(at), up_to, &mut was_passed_over, &mut ahead);
        }
        ahead
    }

    /// [`StateCache::timers_ahead`] for the entry at `index` of `touched`: accessed since the
    /// last call, or `waiting` in `later` with a timer at that time (passed over when the
    /// entry's timer moved since).
    fn look_ahead(
        &mut self,
        index: u32,
        waiting: Option<Millis>,
        up_to: Millis,
        was_passed_over: &mut impl FnMut(&Timer) -> bool,
        ahead: &mut Vec<Timer>,
    ) {
        let key = &self.touched[index as usize];
        let Some(entry) = self.entries.get_mut(key) else {
            return;
        };
        if waiting.is_none() {
            entry.accessed = false;
        }
        let Some(at) = entry.record.as_ref().and_then(|c| c.risk.timer_at) else {
            return;
        };
        if !entry.dirty || waiting.is_some_and(|w| w != at) {
            return;
        }
        if at > up_to {
            if waiting.is_none() {
                self.later.push(std::cmp::Reverse((at, index)));
            }
            return;
        }
        let timer = Timer {
            partition: key.0,
            at,
            customer_id: key.1.clone(),
        };
        if was_passed_over(&timer) {
            ahead.push(timer);
        } else if entry.stored_timer != Some(at) && !entry.timers_ahead.contains(&at) {
            entry.timers_ahead.push(at);
            ahead.push(timer);
        }
    }

    /// Adds the dirty customers and their timer changes to `commit`, in the order they were
    /// first used.
    pub(super) fn drain_dirty(&mut self, commit: &mut Commit) {
        // At most one write and one timer of each kind per touched customer.
        let touched = self.touched.len();
        commit.customers.reserve(touched);
        commit.timers_cleared.reserve(touched);
        commit.timers_set.reserve(touched);
        for key in &self.touched {
            let Some(entry) = self.entries.get_mut(key).filter(|e| e.dirty) else {
                continue;
            };
            let (partition, id) = key;
            let record = entry.record.as_deref();
            commit.put_customer_apart(*partition, id.clone(), record, entry.stored_seal);
            let write = commit.customers.last_mut().expect("put above");
            if entry.erased_now {
                write.erased_until = entry.erased_until;
            }
            if !entry.facts.is_empty() {
                // Cleared, not taken: the customer's next batch fills the same buffer rather
                // than growing a new one from nothing.
                write.facts = crate::store::encode_facts(&entry.facts);
                entry.facts.clear();
            }
            let timer = entry.record.as_ref().and_then(|c| c.risk.timer_at);
            if timer != entry.stored_timer || !entry.timers_ahead.is_empty() {
                let at = |at| Timer {
                    partition: *partition,
                    at,
                    customer_id: id.clone(),
                };
                let other = |at: &Millis| Some(*at) != timer;
                commit
                    .timers_cleared
                    .extend(entry.stored_timer.filter(other).map(at));
                let ahead = entry.timers_ahead.drain(..);
                commit.timers_cleared.extend(ahead.filter(other).map(at));
                // Set again when it was written ahead or stored: it lands after the deletes of
                // the batch, one of which may have named it while the customer was elsewhere.
                commit.timers_set.extend(timer.map(at));
            }
        }
    }

    /// Marks everything clean after a successful commit and evicts the least recently used
    /// entries down to nine tenths of the capacity, so eviction runs rarely.
    pub(super) fn committed(&mut self) {
        self.accessed.clear();
        self.later.clear();
        for key in self.touched.drain(..) {
            if let Some(entry) = self.entries.get_mut(&key) {
                entry.touched = false;
                entry.accessed = false;
                if entry.dirty {
                    entry.dirty = false;
                    entry.erased_now = false;
                    entry.stored_timer = entry.record.as_ref().and_then(|c| c.risk.timer_at);
                    // An erased customer's are deleted: a new one's seal.
                    entry.stored_seal = Some(entry.record.as_ref().map_or(0, |c| c.state.seal));
                }
            }
        }
        if self.entries.len() > self.capacity {
            // At least one entry stays, so `cut` is always a valid index.
            let keep = (self.capacity * 9 / 10).max(1);
            let mut ages: Vec<u64> = self.entries.values().map(|e| e.used).collect();
            let cut = ages.len() - keep;
            let (_, threshold, _) = ages.select_nth_unstable(cut);
            let threshold = *threshold;
            self.entries.retain(|_, e| e.used >= threshold);
        }
    }

    /// The lookups since the last call, from zero again.
    pub(super) fn take_lookups(&mut self) -> CacheLookups {
        std::mem::take(&mut self.lookups)
    }

    /// Forgets every entry, and the lookups not yet taken: those of a batch that failed.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.touched.clear();
        self.accessed.clear();
        self.later.clear();
        self.lookups = CacheLookups::default();
    }

    /// Forgets the entries of `partition`.
    pub(super) fn forget(&mut self, partition: i32) {
        self.entries.retain(|(p, _), _| *p != partition);
        self.touched.retain(|(p, _)| *p != partition);
        // The indices moved: the others' timers wait for the commit (between batches, where
        // partitions are forgotten, there are none).
        self.accessed.clear();
        self.later.clear();
        for (i, key) in self.touched.iter().enumerate() {
            if let Some(entry) = self.entries.get_mut(key) {
                entry.touched_at = i as u32;
                entry.accessed = false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_hands_out_one_entry_per_customer_and_partition() {
        let store = Store::in_memory();
        let mut cache = StateCache::new(10);
        let entry = cache.entry(&store, 1, "c-1").unwrap();
        assert!(entry.record.is_none(), "never stored");
        entry.record = Some(Box::default());
        entry.dirty = true;
        // The same key finds the changed entry, not a fresh one read from the store.
        let again = cache.entry(&store, 1, "c-1").unwrap();
        assert!(again.dirty && again.record.is_some());
        // Another partition or id is another entry.
        assert!(cache.entry(&store, 2, "c-1").unwrap().record.is_none());
        assert!(cache.entry(&store, 1, "c-2").unwrap().record.is_none());
        assert_eq!(cache.entries.len(), 3);
        assert_eq!(cache.touched.len(), 3);
        // The commit, which looks entries up by their owned keys, finds the changed one.
        let mut commit = Commit::default();
        cache.drain_dirty(&mut commit);
        let written: Vec<_> = commit
            .customers
            .iter()
            .map(|w| (w.partition, &*w.id))
            .collect();
        assert_eq!(written, [(1, "c-1")]);
        // Still found after the table grew and moved its entries.
        for n in 0..200 {
            cache.entry(&store, 3, &format!("c-{n}")).unwrap();
        }
        assert!(cache.entry(&store, 1, "c-1").unwrap().dirty);
        assert_eq!(cache.entries.len(), 203);
    }

    #[test]
    fn each_lookup_counts_as_found_in_memory_read_from_the_store_or_absent() {
        let store = Store::in_memory();
        let mut cache = StateCache::new(1);
        let commit = |cache: &mut StateCache| {
            let mut commit = Commit::default();
            cache.drain_dirty(&mut commit);
            store.commit(commit).unwrap();
            cache.committed();
        };
        let a = cache.entry(&store, 0, "a").unwrap();
        a.record = Some(Box::default());
        a.dirty = true;
        cache.entry(&store, 0, "a").unwrap();
        commit(&mut cache);
        assert_eq!(
            cache.take_lookups(),
            CacheLookups {
                hit: 1,
                stored: 0,
                absent: 1
            }
        );
        assert_eq!(cache.take_lookups(), CacheLookups::default(), "taken");
        // One entry fits: "b" pushes "a" out at the commit, and "a" is read back.
        cache.entry(&store, 0, "b").unwrap();
        commit(&mut cache);
        assert!(cache.entry(&store, 0, "a").unwrap().record.is_some());
        assert_eq!(
            cache.take_lookups(),
            CacheLookups {
                hit: 0,
                stored: 1,
                absent: 1
            }
        );
        // A batch that fails leaves no count behind.
        cache.entry(&store, 0, "c").unwrap();
        cache.clear();
        assert_eq!(cache.take_lookups(), CacheLookups::default());
    }
}
