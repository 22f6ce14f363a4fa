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

/// Real RocksDB in `dir` that refuses every write while `refuse` is set, and makes each write
/// wait `delay_ms` first.
pub struct Refusing {
    inner: RocksBackend,
    pub refuse: AtomicBool,
    pub delay_ms: AtomicU64,
}

impl Refusing {
    pub fn open(dir: &std::path::Path) -> Arc<Refusing> {
        Arc::new(Refusing {
            inner: RocksBackend::open(dir, 8 << 20).unwrap(),
            refuse: AtomicBool::new(false),
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
        if self.refuse.load(Ordering::SeqCst) {
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
