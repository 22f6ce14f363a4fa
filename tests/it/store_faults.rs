//! A store that refuses writes (a full disk, an I/O error): the batch fails as a whole, nothing
//! of it is stored, offsets do not move, and the same batch applies exactly once when writes
//! work again. The store is the real RocksDB behind a switch that makes `write` fail (and a
//! dial that makes it slow, for a fold that must still be under way when something happens).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use customer_pulse::processor::{partition_for, Processor};
use customer_pulse::store::{Backend, Entries, Op, RocksBackend, Store, StoreError};

use crate::catalogue::NOW_MS;
use crate::support::{file_record, settings};

/// Real RocksDB in `dir` that refuses every write while `refuse` is set, every write but one of
/// timer keys alone while `refuse_commits` is (the processor's timers written ahead of a commit
/// go through, the commit fails), and makes each write wait `delay_ms` first.
pub struct Refusing {
    inner: RocksBackend,
    pub refuse: AtomicBool,
    pub refuse_commits: AtomicBool,
    pub delay_ms: AtomicU64,
}

impl Refusing {
    pub fn open(dir: &std::path::Path) -> Arc<Refusing> {
        Arc::new(Refusing {
            inner: RocksBackend::open(dir, 8 << 20).unwrap(),
            refuse: AtomicBool::new(false),
            refuse_commits: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
        })
    }
}

impl Backend for Refusing {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key)
    }
    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        let timers_alone = || {
            ops.iter()
                .all(|op| matches!(op, Op::Put(key, _) if key.first() == Some(&b't')))
        };
        if self.refuse.load(Ordering::SeqCst)
            || (self.refuse_commits.load(Ordering::SeqCst) && !timers_alone())
        {
            return Err(StoreError::Backend(
                "No space left on device (injected)".into(),
            ));
        }
        self.inner.write(ops)
    }
    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.inner.scan(prefix, start, end, limit)
    }
    fn last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.last_key(prefix)
    }
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }
}

#[test]
fn a_refused_commit_stores_nothing_and_the_retry_applies_once() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Refusing::open(dir.path());
    let store = Store::open(backend.clone()).unwrap();
    let mut processor = Processor::new(store.clone(), settings(100));
    let order = |n: i64| {
        format!(
            r#"{{"event_id":"o{n}","customer_id":"ivy","type":"order.placed","occurred_at":"2026-05-0{n}T10:00:00Z","order_id":"o{n}","amount_minor":100,"margin_minor":10}}"#
        )
    };
    processor
        .process(&[file_record(0, &order(1))], NOW_MS)
        .unwrap();

    let batch = [file_record(1, &order(2)), file_record(2, &order(3))];
    backend.refuse.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        assert!(processor.process(&batch, NOW_MS).is_err());
    }
    let partition = partition_for(b"ivy", 4);
    let ivy = store.customer(partition, "ivy").unwrap().unwrap();
    assert_eq!(ivy.orders, 1, "nothing of the refused batch is stored");
    assert_eq!(
        store.offset("test", 0).unwrap(),
        Some(1),
        "the offset did not move"
    );

    backend.refuse.store(false, Ordering::SeqCst);
    let report = processor.process(&batch, NOW_MS).unwrap();
    assert_eq!(report.count("applied"), 2);
    let ivy = store.customer(partition, "ivy").unwrap().unwrap();
    assert_eq!(ivy.orders, 3, "applied exactly once after the failures");
    assert_eq!(ivy.revenue_minor, 300);
    assert_eq!(store.offset("test", 0).unwrap(), Some(3));
}

/// A batch whose event time passes many days writes the timers it arms ahead of its one commit,
/// so that its cuts' scans find them. When that commit fails, the keys written ahead stay,
/// naming timers no stored customer holds, and the stored customers' own keys were not
/// touched: the retry, and the batches after it, fire and emit exactly what a run without the
/// failure does, and every stored customer's timer has its key.
#[test]
fn a_commit_refused_after_timers_were_written_ahead_loses_no_timer() {
    let quiet: Vec<String> = (0..6)
        .flat_map(|c| {
            [(0, 1), (1, 4), (2, 9)].map(|(n, day)| {
                format!(
                    r#"{{"event_id":"o{c}-{n}","customer_id":"quiet{c}","type":"order.placed","occurred_at":"2026-03-{day:02}T1{c}:00:00Z","order_id":"o{c}-{n}","amount_minor":{},"margin_minor":100}}"#,
                    1_000 * (c + 1)
                )
            })
        })
        .collect();
    let march = customer_pulse::event::parse_millis("2026-03-10T12:00:00Z").unwrap();
    let ticker = |days: std::ops::Range<i64>| -> Vec<String> {
        days.map(|day| {
            let at = customer_pulse::event::format_millis(march + day * 86_400_000);
            format!(
                r#"{{"event_id":"t{day}","customer_id":"ticker","type":"interaction.survey","occurred_at":"{at}","score":9}}"#
            )
        })
        .collect()
    };
    let batches = [quiet, ticker(0..42), ticker(42..70)];
    let records: Vec<Vec<customer_pulse::processor::InputRecord>> = {
        let mut offset = 0;
        batches
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .map(|json| {
                        offset += 1;
                        file_record(offset - 1, json)
                    })
                    .collect()
            })
            .collect()
    };
    let run = |refuse_second: bool| {
        let dir = tempfile::tempdir().unwrap();
        let backend = Refusing::open(dir.path());
        let store = Store::open(backend.clone()).unwrap();
        let mut processor = Processor::new(store.clone(), settings(100));
        let mut fired = 0;
        for (i, batch) in records.iter().enumerate() {
            if i == 1 && refuse_second {
                backend.refuse_commits.store(true, Ordering::SeqCst);
                for _ in 0..2 {
                    assert!(processor.process(batch, NOW_MS).is_err());
                }
                backend.refuse_commits.store(false, Ordering::SeqCst);
            }
            fired += processor.process(batch, NOW_MS).unwrap().timers_fired;
        }
        let mut by_key: std::collections::BTreeMap<(String, Vec<u8>), Vec<Vec<u8>>> =
            std::collections::BTreeMap::new();
        for (_, record) in store.outbox(usize::MAX).unwrap() {
            let key = (record.topic.clone(), record.key.clone().unwrap_or_default());
            by_key
                .entry(key)
                .or_default()
                .push(record.value.clone().unwrap_or_default());
        }
        // Every stored customer's timer, and whether its key is stored.
        let mut held = Vec::new();
        for id in (0..6).map(|c| format!("quiet{c}")).chain(["ticker".into()]) {
            let partition = partition_for(id.as_bytes(), 4);
            let customer = store.customer_record(partition, &id).unwrap().unwrap();
            if let Some(at) = customer.risk.timer_at {
                let keyed = store
                    .due_timers(partition, (Some(at), at), usize::MAX)
                    .unwrap()
                    .iter()
                    .any(|timer| timer.customer_id == id);
                held.push((id, at, keyed));
            }
        }
        (fired, by_key, held)
    };
    let (fired, records_clean, held_clean) = run(false);
    let (fired_again, records_retried, held_retried) = run(true);
    assert!(fired > 12, "the quiet customers' timers fired: {fired}");
    assert_eq!(fired_again, fired);
    assert_eq!(records_retried, records_clean);
    assert_eq!(held_retried, held_clean);
    assert!(
        held_clean.iter().all(|(_, _, keyed)| *keyed),
        "{held_clean:?}"
    );
}
