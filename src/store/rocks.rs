//! The RocksDB [`Backend`]. The only module that knows about RocksDB.

use std::path::Path;

use rocksdb::{
    BlockBasedIndexType, BlockBasedOptions, Cache, Direction, IteratorMode, Options, ReadOptions,
    WriteBatch, DB,
};

use super::{Backend, Entries, Op, StoreError};

pub struct RocksBackend {
    db: DB,
}

fn backend_error(e: rocksdb::Error) -> StoreError {
    StoreError::Backend(e.into_string())
}

impl RocksBackend {
    /// Opens (or creates) the database at `path` with a block cache of `block_cache_bytes`.
    pub fn open(path: &Path, block_cache_bytes: usize) -> Result<RocksBackend, StoreError> {
        let mut options = Options::default();
        options.create_if_missing(true);
        options.set_compression_type(rocksdb::DBCompressionType::Lz4);
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&Cache::new_lru_cache(block_cache_bytes));
        table.set_bloom_filter(10.0, false);
        // Index and filter blocks live in the block cache too, so that its cap bounds them: with
        // tens of millions of customers they would otherwise grow with the data. They are
        // partitioned into small blocks under a pinned top level: a whole-file filter is
        // megabytes, larger than a cache shard, and was read from disk and checksummed again
        // on every lookup of an absent key (a new customer): a quarter of the fold's time at
        // 600,000 customers, and growing with the number of files.
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        table.set_index_type(BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_pin_top_level_index_and_filter(true);
        options.set_block_based_table_factory(&table);
        // A Bloom filter over each memtable's whole keys, a two-hundredth of its size (320 KiB
        // of the default 64 MiB): a lookup of a key the memtable does not hold (a customer
        // seen for the first time) skips the skip list's search, whose pointer chasing through
        // a full memtable was most of such a lookup's time. A fiftieth cost hot customers' writes
        // about 4% in cache misses; this size did not measurably (README, *File replay*).
        options.set_memtable_prefix_bloom_ratio(0.005);
        options.set_memtable_whole_key_filtering(true);
        let db = DB::open(&options, path).map_err(backend_error)?;
        Ok(RocksBackend { db })
    }
}

impl Backend for RocksBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(key).map_err(backend_error)
    }

    fn write(&self, mut ops: Vec<Op>) -> Result<(), StoreError> {
        // In key order, the memtable inserts each key next to the one before (its skip list
        // keeps the last insert's position) instead of searching from the top. The sort is
        // stable, so of two operations on one key the later still lands last; the batch is
        // atomic, so the order of different keys is not observable.
        ops.sort_by(|a, b| a.key().cmp(b.key()));
        let bytes: usize = ops
            .iter()
            .map(|op| op.key().len() + op.value_len() + 24)
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes);
        for op in ops {
            match op {
                Op::Put(k, v) => batch.put(k, v),
                Op::Delete(k) => batch.delete(k),
                Op::DeleteRange(from, to) => batch.delete_range(from, to),
            }
        }
        // The write-ahead log is on (the default), so an acknowledged batch survives a process
        // crash; fsync per batch is not asked for, as a machine crash is covered by replaying
        // from Kafka's committed offsets, which never run ahead of this batch.
        self.db.write(batch).map_err(backend_error)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        end: Option<&[u8]>,
        limit: usize,
    ) -> Result<Entries, StoreError> {
        let mut out = Vec::new();
        // Bounded in RocksDB itself, not only by the check below: the iterator otherwise steps
        // on over whatever lies past the range to find the key that ends it, which after the
        // event times is the outbox's long run of deleted records. With the changelog on, every
        // commit reads the position of each partition it touched: that step was 13.5% of the
        // samples in a profile of the broker benchmark.
        let mut options = ReadOptions::default();
        let upper = match (successor(prefix), end) {
            (Some(after), Some(end)) => Some(after.min(end.to_vec())),
            (None, Some(end)) => Some(end.to_vec()),
            (after, None) => after,
        };
        if let Some(upper) = upper {
            options.set_iterate_upper_bound(upper);
        }
        for item in self
            .db
            .iterator_opt(IteratorMode::From(start, Direction::Forward), options)
        {
            let (k, v) = item.map_err(backend_error)?;
            if !k.starts_with(prefix) || end.is_some_and(|e| &*k >= e) || out.len() >= limit {
                break;
            }
            out.push((k.into_vec(), v.into_vec()));
        }
        Ok(out)
    }

    fn last_key(&self, prefix: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let upper = successor(prefix).unwrap_or_default();
        let mode = if upper.is_empty() {
            IteratorMode::End
        } else {
            IteratorMode::From(&upper, Direction::Reverse)
        };
        for item in self.db.iterator(mode) {
            let (k, _) = item.map_err(backend_error)?;
            if k.as_ref() >= upper.as_slice() && !upper.is_empty() {
                continue;
            }
            return Ok(k.starts_with(prefix).then(|| k.into_vec()));
        }
        Ok(None)
    }

    fn size_bytes(&self) -> u64 {
        self.db
            .property_int_value("rocksdb.total-sst-files-size")
            .ok()
            .flatten()
            .unwrap_or(0)
            + self
                .db
                .property_int_value("rocksdb.cur-size-all-mem-tables")
                .ok()
                .flatten()
                .unwrap_or(0)
    }
}

/// The first key past every key that starts with `prefix`: the prefix with its last byte
/// below 0xFF raised, and what follows it dropped. `None` when there is none (the prefix is
/// empty or all 0xFF).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut upper = prefix.to_vec();
    while let Some(last) = upper.pop() {
        if last < u8::MAX {
            upper.push(last + 1);
            return Some(upper);
        }
    }
    None
}
