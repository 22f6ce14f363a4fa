//! The file source: the same fold over NDJSON files of events (one event per line), for
//! backfills and for running without a broker; several files (per-topic exports) are merged in
//! event time. Resumable: each file's position is committed with the state, so a second run
//! over the same file continues where the first stopped and changes nothing for lines already
//! applied, and another file under the same name is refused. Must not know about Kafka.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::event::Millis;
use crate::outbox::{drain, Outbox, Sink};
use crate::processor::{BatchReport, CacheLookups, InputRecord, Processor};
use crate::store::{Held, Store};
use crate::telemetry::Telemetry;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplaySummary {
    pub lines_read: u64,
    pub lines_skipped: u64,
    /// Applied, the late ones included.
    pub applied: u64,
    /// Applied after their complaint window or segment day was emitted.
    pub late: u64,
    pub duplicates: u64,
    /// Of an erased customer, from before its erasure: not applied.
    pub erased: u64,
    pub rejected: u64,
    pub outputs_delivered: u64,
    /// Output records the sink did not take (a full disk under `--out`): they stay in the
    /// state's outbox, and the replay stopped at the batch that left them.
    pub outputs_left: u64,
    /// Where the customers looked up were found: for sizing `state.cache_customers`.
    pub customers: CacheLookups,
}

impl ReplaySummary {
    fn add(&mut self, report: &BatchReport) {
        let late = report.count("late");
        self.applied += report.count("applied") + late;
        self.late += late;
        self.duplicates += report.count("duplicate");
        self.erased += report.count("erased");
        self.rejected += report.count("rejected");
        self.customers.add(report.cache_lookups);
    }
}

/// The milliseconds since the epoch on the wall clock: the processor's "now" for validation.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Replays the events of `paths` through `processor`, draining outputs into `sink` after every
/// batch. One file is read in its order. Several (a backfill from per-topic exports) are read
/// together in event-time order: each next line is the one with the earliest `occurred_at`
/// among the files' next lines (the first file's on a tie; a line with no readable time takes
/// its file's last one), so that no file's events are late for windows another file's later
/// events would close. Each file keeps its own stored position, and the files are one stream
/// for the watermark, as one file in time order is.
pub async fn replay<S: Sink>(
    paths: &[PathBuf],
    processor: &mut Processor,
    sink: &mut S,
    telemetry: &Telemetry,
    batch_events: usize,
    progress: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<ReplaySummary> {
    let mut lanes = Vec::with_capacity(paths.len());
    for path in paths {
        let lane = Lane::open(
            path,
            processor.store(),
            processor.settings().rules.max_event_bytes,
        )?;
        if let Some(other) = lanes.iter().find(|l: &&Lane| l.source == lane.source) {
            anyhow::bail!(
                "{} and {} have the same file name, which names a replay's stored position: rename one",
                other.path.display(),
                path.display()
            );
        }
        lanes.push(lane);
    }
    let merging = lanes.len() > 1;
    if merging {
        let sources: Vec<&str> = lanes.iter().map(|l| &*l.source).collect();
        processor.read_as_one(&sources);
    }
    let size = lanes.iter().map(|l| l.size).sum();
    let bar = if progress {
        let bar = indicatif::ProgressBar::new(size);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {per_sec} {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };

    let mut summary = ReplaySummary::default();
    let mut batch: Vec<InputRecord> = Vec::with_capacity(batch_events);
    for lane in &mut lanes {
        lane.advance(merging, processor.store(), &mut summary, &bar)?;
    }
    // Each time, the earliest next line; the first file's on a tie.
    while let Some((_, next)) = lanes
        .iter()
        .enumerate()
        .filter_map(|(i, lane)| lane.head.as_ref().map(|head| (head.at, i)))
        .min()
    {
        let lane = &mut lanes[next];
        if let Some(head) = lane.head.take() {
            batch.push(InputRecord {
                source: lane.source.clone(),
                source_partition: 0,
                offset: head.offset,
                stream: None,
                state_partition: None,
                key: None,
                payload: head.line,
                cut_from: head.cut_from,
                append_time_ms: None,
            });
        }
        lane.advance(merging, processor.store(), &mut summary, &bar)?;
        if batch.len() >= batch_events {
            commit_batch(processor, &mut batch, telemetry, &mut summary)?;
            if !deliver(processor.store(), sink, telemetry, &mut summary).await? {
                break;
            }
            bar.set_message(format!("{} applied", summary.applied));
            if shutdown.is_cancelled() {
                tracing::info!("Replay interrupted; it resumes here next time.");
                break;
            }
        }
    }
    commit_batch(processor, &mut batch, telemetry, &mut summary)?;
    // Also with nothing new applied: what an earlier replay's sink left goes out now.
    if !deliver(processor.store(), sink, telemetry, &mut summary).await? {
        summary.outputs_left = processor.store().outbox_shared(usize::MAX)?.len() as u64;
    }
    bar.finish_and_clear();
    Ok(summary)
}

/// One file of a replay, read a line ahead.
struct Lane {
    path: PathBuf,
    /// `replay:` and the file's name: the source its stored position is kept under.
    source: Arc<str>,
    size: u64,
    reader: BufReader<std::fs::File>,
    /// Lines before this one were applied by an earlier replay.
    resume_at: i64,
    /// The offset (line number from 0) of the next line read.
    offset: i64,
    /// The next line to apply; `None` once the file has ended.
    head: Option<Head>,
    /// The time the last line read was merged at.
    at: Millis,
    /// The line being read.
    buffer: Vec<u8>,
    /// A line is read no further than this, `max_event_bytes` and two (a line break of two
    /// bytes): a longer one is dead-lettered as `too_large` with these first bytes, so that a
    /// file with no line breaks (a binary file given by mistake) is not read into memory whole.
    line_bytes: u64,
    /// Whether its first line was checked against the file a stored position is of.
    checked: bool,
}

struct Head {
    line: Vec<u8>,
    /// The line's length when `line` is only its first bytes (it is longer than
    /// `max_event_bytes`, read no further).
    cut_from: Option<u64>,
    offset: i64,
    at: Millis,
}

impl Lane {
    fn open(path: &Path, store: &Store, max_event_bytes: usize) -> anyhow::Result<Lane> {
        let file =
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let source = format!(
            "replay:{}",
            path.file_name()
                .map_or_else(|| "-".into(), |n| n.to_string_lossy().into_owned())
        );
        let resume_at = store.offset(&source, 0)?.unwrap_or(0);
        let mut reader = BufReader::new(file);
        let start = reader
            .fill_buf()
            .with_context(|| format!("cannot read {}", path.display()))?;
        if let Some(format) = compressed(start) {
            anyhow::bail!(
                "{} is {format}-compressed, and replay reads NDJSON: decompress it into a file first, and replay that",
                path.display()
            );
        }
        Ok(Lane {
            path: path.to_owned(),
            source: source.into(),
            size,
            reader,
            resume_at,
            offset: 0,
            head: None,
            at: Millis::MIN,
            buffer: Vec::new(),
            line_bytes: max_event_bytes as u64 + 2,
            checked: false,
        })
    }

    /// Reads up to the next line to apply (blank lines and lines applied before are passed
    /// over), its merge time read only when `merging`.
    fn advance(
        &mut self,
        merging: bool,
        store: &Store,
        summary: &mut ReplaySummary,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<()> {
        let line = &mut self.buffer;
        let cannot_read = || format!("cannot read {}", self.path.display());
        loop {
            line.clear();
            let n = (&mut self.reader)
                .take(self.line_bytes)
                .read_until(b'\n', line)
                .with_context(cannot_read)? as u64;
            if n == 0 {
                self.head = None;
                return Ok(());
            }
            let mut cut_from = None;
            if let Some(&last) = line.last().filter(|b| n == self.line_bytes && **b != b'\n') {
                let length = skip_line(&mut self.reader, n, last).with_context(cannot_read)?;
                // Read whole after all when the cut fell before its line break, or the file's
                // end, or between the break's two bytes.
                if length > n {
                    tracing::warn!(file = %self.path.display(), line = self.offset, bytes = length, kept = n, "A line longer than max_event_bytes is dead-lettered as too_large with its first bytes.");
                    cut_from = Some(length);
                }
            }
            bar.inc(cut_from.unwrap_or(n));
            let offset = self.offset;
            self.offset += 1;
            while cut_from.is_none() && line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                line.pop();
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            summary.lines_read += 1;
            if !self.checked {
                self.checked = true;
                refuse_another_file(store, &self.source, &self.path, self.resume_at, line)?;
            }
            if offset < self.resume_at {
                summary.lines_skipped += 1;
                continue;
            }
            if merging {
                if let Some(at) = occurred_at(line) {
                    self.at = at;
                }
            }
            self.head = Some(Head {
                // A copy of its length: the buffer keeps the longest line's capacity.
                line: line.clone(),
                cut_from,
                offset,
                at: self.at,
            });
            return Ok(());
        }
    }
}

/// Reads past the rest of a line whose first `kept` bytes, the last of them `last`, were read,
/// up to the start of the next line, and returns the line's length, its line break (`\n` or
/// `\r\n`) not counted.
fn skip_line(reader: &mut impl BufRead, kept: u64, mut last: u8) -> std::io::Result<u64> {
    let mut skipped = 0;
    loop {
        let buffer = reader.fill_buf()?;
        let Some(&end) = buffer.last() else {
            return Ok(kept + skipped);
        };
        if let Some(at) = buffer.iter().position(|b| *b == b'\n') {
            let before = if at == 0 { last } else { buffer[at - 1] };
            reader.consume(at + 1);
            return Ok(kept + skipped + at as u64 - u64::from(before == b'\r'));
        }
        skipped += buffer.len() as u64;
        last = end;
        let length = buffer.len();
        reader.consume(length);
    }
}

/// Refuses a file whose first line is not the first line of the file whose `resume_at` lines
/// were applied under the same name (`Store::hold_file`): its lines up to there would be
/// skipped as applied, and lost.
fn refuse_another_file(
    store: &Store,
    source: &str,
    path: &Path,
    resume_at: i64,
    first_line: &[u8],
) -> anyhow::Result<()> {
    let fingerprint = xxhash_rust::xxh3::xxh3_64(first_line);
    match store.hold_file(source, fingerprint, resume_at > 0)? {
        Held::Held | Held::Beyond { .. } => Ok(()),
        Held::Other { .. } => anyhow::bail!(
            "{}: the state holds {resume_at} applied lines of a file of the same name that began with another line. This is another file, and its first {resume_at} lines would be skipped as applied: give it a name of its own (a replay's position is kept by the file's name), or replay it into a new state.path",
            path.display()
        ),
    }
}

/// An event line's `occurred_at`, if a readable one is found: where a replay of several files
/// merges it. Found by its key's bytes, not by parsing the line, which cost a line about as
/// much as decoding it (a replay of three files took 12% more instructions than of one). A
/// string cannot hold an unescaped quote, so `"occurred_at"` followed by a colon is a key: the
/// event's own, unless a nested object has one before it or the key is repeated (decoding
/// takes the last, as a JSON map keeps it), which only moves the line in the merge. Decoding
/// proper, and the line's rejection if it is bad, come later.
fn occurred_at(line: &[u8]) -> Option<Millis> {
    const KEY: &[u8] = b"\"occurred_at\"";
    let mut from = 0;
    while let Some(quote) = line[from..].iter().position(|b| *b == b'"') {
        let rest = &line[from + quote..];
        if let Some(after) = rest.strip_prefix(KEY) {
            if let Some(value) = after.trim_ascii_start().strip_prefix(b":") {
                let value = value.trim_ascii_start().strip_prefix(b"\"")?;
                let end = value.iter().position(|b| *b == b'"' || *b == b'\\')?;
                let text = std::str::from_utf8(&value[..end]).ok()?;
                return crate::event::parse_millis(text);
            }
        }
        from += quote + 1;
    }
    None
}

/// The compression a file's first bytes say it has, by the formats' magic numbers: read as
/// NDJSON, its bytes were lines of garbage, each dead-lettered as `not_json`.
fn compressed(start: &[u8]) -> Option<&'static str> {
    const MAGIC: [(&[u8], &str); 5] = [
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (b"BZh", "bzip2"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz"),
        (b"PK\x03\x04", "zip"),
    ];
    MAGIC
        .iter()
        .find(|(magic, _)| start.starts_with(magic))
        .map(|(_, format)| *format)
}

fn commit_batch(
    processor: &mut Processor,
    batch: &mut Vec<InputRecord>,
    telemetry: &Telemetry,
    summary: &mut ReplaySummary,
) -> anyhow::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    let now = wall_clock_ms();
    let report = processor.process(batch, now)?;
    telemetry.record_batch(&report, started.elapsed().as_secs_f64(), now);
    summary.add(&report);
    batch.clear();
    Ok(())
}

/// Drains the outbox into `sink`; returns whether it took everything.
async fn deliver<S: Sink>(
    store: &Store,
    sink: &mut S,
    telemetry: &Telemetry,
    summary: &mut ReplaySummary,
) -> anyhow::Result<bool> {
    summary.outputs_delivered += drain(store, sink, telemetry, Outbox::Job, 10_000).await? as u64;
    Ok(store.outbox(1)?.is_empty())
}

#[cfg(test)]
mod tests {
    use super::{compressed, occurred_at, skip_line};

    #[test]
    fn a_cut_line_is_skipped_to_the_next_and_measured_without_its_line_break() {
        // A small buffer, so that the rest spans several fills.
        let skip = |rest: &[u8], kept: u64, last: u8| {
            let mut reader = std::io::BufReader::with_capacity(3, rest);
            let length = skip_line(&mut reader, kept, last).unwrap();
            let mut next = String::new();
            std::io::BufRead::read_line(&mut reader, &mut next).unwrap();
            (length, next)
        };
        assert_eq!(skip(b"abcdefg\nnext\n", 10, b'x'), (17, "next\n".into()));
        assert_eq!(skip(b"abcdefg\r\nnext", 10, b'x'), (17, "next".into()));
        assert_eq!(
            skip(b"\nnext", 10, b'\r'),
            (9, "next".into()),
            "cut in its break"
        );
        assert_eq!(skip(b"\nnext", 10, b'x'), (10, "next".into()));
        assert_eq!(
            skip(b"abcdefg", 10, b'x'),
            (17, String::new()),
            "the file's end"
        );
        assert_eq!(skip(b"", 10, b'x'), (10, String::new()));
    }

    #[test]
    fn compressed_files_are_told_by_their_first_bytes() {
        assert_eq!(compressed(&[0x1f, 0x8b, 8, 0]), Some("gzip"));
        assert_eq!(compressed(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Some("zstd"));
        assert_eq!(compressed(b"BZh91AY"), Some("bzip2"));
        assert_eq!(compressed(b"\xfd7zXZ\x00\x00"), Some("xz"));
        assert_eq!(compressed(b"PK\x03\x04\x14"), Some("zip"));
        for ndjson in [
            &b"{\"type\":\"order.placed\"}\n"[..],
            b"\xef\xbb\xbf{",
            b"",
            b"\n\n{",
            b"BZ",
        ] {
            assert_eq!(compressed(ndjson), None, "{ndjson:?}");
        }
    }

    #[test]
    fn a_lines_time_is_found_by_its_key() {
        let at = crate::event::parse_millis("2026-12-01T10:00:00Z").expect("a time");
        for line in [
            r#"{"event_id":"e","occurred_at":"2026-12-01T10:00:00Z","type":"order.placed"}"#,
            r#"{ "occurred_at" :  "2026-12-01T11:00:00+01:00" }"#,
            // The word as a value, and quoted inside a string, is not the key.
            r#"{"reason":"occurred_at","comment":"\"occurred_at\": no","occurred_at":"2026-12-01T10:00:00Z"}"#,
        ] {
            assert_eq!(occurred_at(line.as_bytes()), Some(at), "{line}");
        }
        for line in [
            "not json",
            r#"{"event_id":"e"}"#,
            r#"{"occurred_at":1764583200000}"#,
            r#"{"occurred_at":"yesterday"}"#,
            r#"{"occurred_at":"2026-12-01T10:00:00\u005a"}"#,
            r#"{"occurred_at":"2026-12-01T10:00"#,
        ] {
            assert_eq!(occurred_at(line.as_bytes()), None, "{line}");
        }
    }
}
