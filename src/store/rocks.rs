//! The RocksDB [`Backend`]. The only module that knows about RocksDB.

use std::path::Path;

use rocksdb::{Cache, Direction, Env, IteratorMode, Options, ReadOptions, WriteBatch, DB};

use super::{Backend, Entries, Op, StoreError};

pub struct RocksBackend {
    db: DB,
}

/// The positions of `ops` in the order of their keys, and of their positions where keys are
/// equal.
fn in_key_order(ops: &[Op]) -> Vec<u32> {
    let mut order: Vec<(u128, u32)> = ops
        .iter()
        .zip(0..)
        .map(|(op, i)| (leading(op.key()), i))
        .collect();
    order.sort_unstable_by(|&(a, i), &(b, j)| {
        a.cmp(&b)
            .then_with(|| ops[i as usize].key().cmp(ops[j as usize].key()))
            .then(i.cmp(&j))
    });
    order.into_iter().map(|(_, i)| i).collect()
}

/// A key's first 16 bytes as a big-endian number, zeros after a shorter key's end: two keys
/// whose numbers differ are in the order of their numbers.
fn leading(key: &[u8]) -> u128 {
    let mut bytes = [0; 16];
    let n = key.len().min(16);
    bytes[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(bytes)
}

fn backend_error(e: rocksdb::Error) -> StoreError {
    StoreError::Backend(e.into_string())
}

/// The options of the one column family, in RocksDB's options-file format. They are read from a
/// file rather than set through `rust-rocksdb`'s setters for the sake of one of them,
/// `memtable_insert_with_hint_prefix_extractor`, which RocksDB's C API (and so `rust-rocksdb`)
/// has no setter for; the others are here so that they are all in one place.
///
/// - Blocks compressed with LZ4.
/// - A Bloom filter over each memtable's whole keys, a two-hundredth of its size (320 KiB of
///   the default 64 MiB): a lookup of a key the memtable does not hold (a customer seen for the
///   first time) skips the skip list's search, whose pointer chasing through a full memtable
///   was most of such a lookup's time. A fiftieth cost hot customers' writes about 4% in cache
///   misses; this size did not measurably (`benches/HISTORY.md`).
/// - Memtable inserts hinted per key family (its first byte: customers, timers, outbox, ...):
///   each insert starts from where the last of its family ended, and a write's operations are
///   in key order (below), so it is a few steps from there. Unhinted, RocksDB reuses the last
///   position only for a key in the very same gap, and otherwise searches the skip list from
///   the top: 2,800 instructions an insert, 12% of a replay's; hinted, about half that (the
///   wall clock moved within the machines' spread; `benches/HISTORY.md`, 2026-12-02).
/// - Bloom filters of 10 bits a key in the files. Index and filter blocks live in the block
///   cache too, so that its cap bounds them: with tens of millions of customers they would
///   otherwise grow with the data. They are partitioned into small blocks under a pinned top
///   level: a whole-file filter is megabytes, larger than a cache shard, and was read from disk
///   and checksummed again on every lookup of an absent key (a new customer): a quarter of the
///   fold's time at 600,000 customers, and growing with the number of files.
const COLUMN_FAMILY_OPTIONS: &str = r#"[Version]
  rocksdb_version=10.4.2
  options_file_version=1.1

[DBOptions]

[CFOptions "default"]
  compression=kLZ4Compression
  memtable_prefix_bloom_size_ratio=0.005
  memtable_whole_key_filtering=true
  memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.1

[TableOptions/BlockBasedTable "default"]
  filter_policy=bloomfilter:10:false
  cache_index_and_filter_blocks=true
  pin_l0_filter_and_index_blocks_in_cache=true
  index_type=kTwoLevelIndexSearch
  partition_filters=true
  metadata_block_size=4096
  pin_top_level_index_and_filter=true
"#;

impl RocksBackend {
    /// Opens (or creates) the database at `path` with a block cache of `block_cache_bytes`.
    /// Whether a RocksDB database is at `path` (RocksDB writes `CURRENT` when it creates one),
    /// for the commands that only read a state and must not create an empty one.
    pub fn holds_state(path: &Path) -> bool {
        path.join("CURRENT").is_file()
    }

    pub fn open(path: &Path, block_cache_bytes: usize) -> Result<RocksBackend, StoreError> {
        let file_error =
            |e: std::io::Error| StoreError::Backend(format!("writing RocksDB's options file: {e}"));
        // The options file goes in a directory of its own inside the database's, gone once read:
        // where the root filesystem is read-only (the Kubernetes manifest's), the state's volume
        // is the one place the job may write. RocksDB passes over names it does not know.
        std::fs::create_dir_all(path).map_err(file_error)?;
        let dir = tempfile::Builder::new()
            .prefix(".options-")
            .tempdir_in(path)
            .map_err(file_error)?;
        std::fs::write(dir.path().join("OPTIONS-000001"), COLUMN_FAMILY_OPTIONS)
            .map_err(file_error)?;
        let (mut options, families) = Options::load_latest(
            dir.path(),
            Env::new().map_err(backend_error)?,
            false,
            Cache::new_lru_cache(block_cache_bytes),
        )
        .map_err(backend_error)?;
        options.create_if_missing(true);
        let db = DB::open_cf_descriptors(&options, path, families).map_err(backend_error)?;
        Ok(RocksBackend { db })
    }
}

impl Backend for RocksBackend {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.db.get(key).map_err(backend_error)
    }

    fn write(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        // In key order, the memtable inserts each key a few steps from the one before of its
        // family (the hint, above) instead of searching from the top; the order's locality in
        // the skip list was also worth more than the sort's instructions (`benches/HISTORY.md`,
        // 2026-12-02, 13:49-). Of two operations on one key the later still lands last (ties
        // go by position); the batch is atomic, so the order of different keys is not
        // observable. The operations are sorted by their keys' first 16 bytes, held beside
        // their positions, and by the whole keys only where those are equal: sorting the
        // operations themselves compared keys behind two pointers each time.
        let order = in_key_order(&ops);
        let bytes: usize = ops
            .iter()
            .map(|op| op.key().len() + op.value_len() + 24)
            .sum();
        let mut batch = WriteBatch::with_capacity_bytes(bytes);
        for i in order {
            match &ops[i as usize] {
                Op::Put(k, v) => batch.put(k, v),
                Op::Delete(k) => batch.delete(k),
            }
        }
        // The write-ahead log is on (the default), so an acknowledged batch survives a process
        // crash; fsync per batch is not asked for, as a machine crash is covered by replaying
        // from the input offsets stored with the state (read on assignment, not the ones
        // committed to Kafka, which may have run ahead of what the disk kept) and, with the
        // changelog on, by the restore, which finds the records the store delivered and lost
        // (`restore`).
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

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// The order a write applies its operations in is a stable sort by key: keys that
        /// share their first 16 bytes or differ only past them, keys that end in zeros, keys
        /// that are prefixes of others, and one key several times, in any order.
        #[test]
        fn operations_are_applied_in_a_stable_sort_by_key(
            keys in proptest::collection::vec(
                (
                    0usize..4,
                    proptest::collection::vec(proptest::sample::select(vec![0u8, 1, 255]), 0..6),
                ),
                0..40,
            )
        ) {
            // A few shared heads of 14 to 17 bytes, so that keys tie on their first 16 bytes.
            let heads = [vec![7u8; 14], vec![7u8; 16], vec![7u8; 17], vec![9u8; 15]];
            let ops: Vec<Op> = keys
                .into_iter()
                .map(|(head, tail)| Op::Delete([&heads[head][..], &tail].concat()))
                .collect();
            let mut want: Vec<u32> = (0..ops.len() as u32).collect();
            want.sort_by(|&i, &j| ops[i as usize].key().cmp(ops[j as usize].key()));
            proptest::prop_assert_eq!(in_key_order(&ops), want);
        }
    }

    /// Every option of [`COLUMN_FAMILY_OPTIONS`] as RocksDB writes it back, and the block cache
    /// asked for: a file RocksDB read and quietly did not apply would leave the store open
    /// with its defaults.
    #[test]
    fn the_database_runs_with_the_options_of_the_file_and_the_block_cache_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let backend = RocksBackend::open(dir.path(), 3 << 20).unwrap();
        drop(backend);
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !files.iter().any(|name| name.starts_with(".options-")),
            "the options file's directory is gone: {files:?}"
        );
        let written = files
            .iter()
            .filter(|name| name.starts_with("OPTIONS-"))
            .max()
            .unwrap();
        let written = std::fs::read_to_string(dir.path().join(written)).unwrap();
        let lines: Vec<&str> = written.lines().map(str::trim).collect();
        for option in [
            "compression=kLZ4Compression",
            "memtable_prefix_bloom_size_ratio=0.005000",
            "memtable_whole_key_filtering=true",
            "memtable_insert_with_hint_prefix_extractor=rocksdb.FixedPrefix.1",
            "filter_policy=bloomfilter:10:false",
            "cache_index_and_filter_blocks=true",
            "pin_l0_filter_and_index_blocks_in_cache=true",
            "index_type=kTwoLevelIndexSearch",
            "partition_filters=true",
            "metadata_block_size=4096",
            "pin_top_level_index_and_filter=true",
        ] {
            assert!(lines.contains(&option), "{option} not in\n{written}");
        }
        let log = std::fs::read_to_string(dir.path().join("LOG")).unwrap();
        assert!(
            log.contains(&format!("capacity : {}", 3 << 20)),
            "no block cache of 3 MiB in\n{log}"
        );
    }
}
