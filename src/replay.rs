//! The file source: the same fold over an NDJSON file of events (one event per line), for
//! backfills and for running without a broker. Resumable: the position is committed with the
//! state, so a second run over the same file continues where the first stopped and changes nothing
//! for lines already applied. Must not know about Kafka.

use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::outbox::{drain, Sink};
use crate::processor::{BatchReport, CacheLookups, InputRecord, Processor};
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

/// Replays `path` through `processor`, draining outputs into `sink` after every batch.
pub async fn replay<S: Sink>(
    path: &Path,
    processor: &mut Processor,
    sink: &mut S,
    telemetry: &Telemetry,
    batch_events: usize,
    progress: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<ReplaySummary> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let source = format!(
        "replay:{}",
        path.file_name()
            .map_or_else(|| "-".into(), |n| n.to_string_lossy().into_owned())
    );
    let resume_at = processor.store().offset(&source, 0)?.unwrap_or(0);
    let source: std::sync::Arc<str> = source.into();
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
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut offset: i64 = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        bar.inc(n as u64);
        let this = offset;
        offset += 1;
        while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            line.pop();
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.lines_read += 1;
        if this < resume_at {
            summary.lines_skipped += 1;
            continue;
        }
        batch.push(InputRecord {
            source: source.clone(),
            source_partition: 0,
            offset: this,
            stream: None,
            state_partition: None,
            key: None,
            payload: line.clone(),
            append_time_ms: None,
        });
        if batch.len() >= batch_events {
            commit_batch(processor, &mut batch, sink, telemetry, &mut summary).await?;
            bar.set_message(format!("{} applied", summary.applied));
            if shutdown.is_cancelled() {
                tracing::info!(offset, "Replay interrupted; it resumes here next time.");
                break;
            }
        }
    }
    commit_batch(processor, &mut batch, sink, telemetry, &mut summary).await?;
    bar.finish_and_clear();
    Ok(summary)
}

async fn commit_batch<S: Sink>(
    processor: &mut Processor,
    batch: &mut Vec<InputRecord>,
    sink: &mut S,
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
    summary.outputs_delivered += drain(processor.store(), sink, telemetry, 10_000).await? as u64;
    Ok(())
}
