//! The changelog topic: reading a partition of it outside any group (restores, claims and
//! releases), tailing it for the aggregator, recording what the sink delivered to it, and the
//! claim check that finds another instance's claim on an owned partition. Must not know what
//! the records mean beyond their keys: the store and `restore` decide.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::polled::{Polled, Release, Released};
use super::{client_config, lock, ready_idempotent, Assignment, LogErrors, FIRST_RECORD};
use crate::config::KafkaSecurity;
use crate::restore::ChangelogSource;
use crate::store::{
    is_customer_key, ChangelogRecord, Claim, Epoch, Store, StoreError, CLAIM_KEY, RELEASE_KEY,
};
use crate::telemetry::{repeated, Telemetry};

/// Reads the changelog topic partition by partition, outside any consumer group, and writes
/// claims to it. Each read has a consumer of its own, so that nothing fetched for one read
/// reaches another.
pub struct ChangelogReader {
    client: ClientConfig,
    topic: String,
    claims: Polled<ClaimsContext>,
    /// The claims producer's warm-up ([`ready_idempotent`]), run beside what the instance does
    /// next (the group join), not before it; a claim or release waits for it first.
    warming: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// How long librdkafka tries to write a claim or release before it reports a failure.
const CLAIM_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a claim or release waits for its delivery report: the sender of the call that wrote
/// it, and the record's place in that call.
type Waiter = Box<(
    usize,
    std::sync::mpsc::Sender<(usize, Result<i64, KafkaError>)>,
)>;

/// The claims producer's callbacks: each delivery report goes to the call that waits for it.
#[derive(Default)]
struct ClaimsContext {
    release: Release,
}

impl ClientContext for ClaimsContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.release.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if !self.release.after("claims producer", &error, reason) {
            LogErrors("claims producer").error(error, reason);
        }
    }
}

impl Released for ClaimsContext {
    fn release(&self) -> &Release {
        &self.release
    }
}

impl ProducerContext for ClaimsContext {
    type DeliveryOpaque = Waiter;

    fn delivery(&self, result: &DeliveryResult<'_>, waiter: Waiter) {
        let (place, to) = *waiter;
        let result = match result {
            Ok(message) => Ok(message.offset()),
            Err((e, _)) => Err(e.clone()),
        };
        // The call gave up waiting (see `append`): nobody to tell.
        let _ = to.send((place, result));
    }
}

/// The changelog reader's callbacks: reaching a partition's end is how a read ends, not an
/// error to log (librdkafka reports it as one); nor is what a closing consumer reports (see
/// [`close`]).
#[derive(Default)]
struct ReaderContext {
    release: Release,
}

impl ClientContext for ReaderContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.release.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end && !self.release.after("changelog reader", &error, reason) {
            LogErrors("changelog reader").error(error, reason);
        }
    }
}

impl ConsumerContext for ReaderContext {}

/// Closes a reader's consumer on a thread of its own, so that nobody waits for librdkafka to
/// close it: the consumer that checks the configuration at start took a tenth of a second to
/// close (against Tansu, 2026-12-02), on the path to the group join. Without a thread, here.
///
/// Its context is told first. The consumer is in a group (librdkafka's assignments need one),
/// so it connects to the group's coordinator as it starts, and a read may end before that
/// connection is up. Closing cuts it, and librdkafka reports the cut as a failure: with SASL,
/// at starts of an instance with the changelog (4 of 4 by hand, against Tansu with SCRAM,
/// 2026-12-05), an error "GroupCoordinator: SASL authentication error" and a warning, for a
/// handshake the close interrupted.
fn close(consumer: BaseConsumer<ReaderContext>) {
    consumer.context().release.set();
    // Should no thread start, the closure, and the consumer with it, is dropped here.
    let _ = std::thread::Builder::new()
        .name("changelog-close".into())
        .spawn(move || drop(consumer));
}

/// How long a changelog read waits for the next record before it gives up.
const CHANGELOG_WAIT: Duration = Duration::from_secs(10);

/// A changelog message as the store reads it back.
fn changelog_record<M: Message>(message: &M) -> ChangelogRecord {
    read_record(message, true)
}

/// A changelog message, with a customer record's value only if `customer_values`.
fn read_record<M: Message>(message: &M, customer_values: bool) -> ChangelogRecord {
    let header = |name: &str| {
        let headers = message.headers()?;
        headers.iter().find(|h| h.key == name)?.value
    };
    let key = message.key().unwrap_or_default();
    let value = if customer_values || !is_customer_key(key) {
        message.payload().map(<[u8]>::to_vec)
    } else {
        None
    };
    ChangelogRecord::read(key.to_vec(), value, header)
}

/// The settings of a consumer that reads the changelog by assignment.
fn changelog_consumer_config(brokers: &str, security: &KafkaSecurity) -> ClientConfig {
    let mut client = client_config(brokers, security);
    client
        // Required by librdkafka; the reader only assigns, never joins or commits.
        .set("group.id", "customer-pulse-changelog-reader")
        .set("enable.auto.commit", "false")
        // The end of a partition is where a fetch reports it.
        .set("enable.partition.eof", "true")
        // A start that retention already removed falls back to the first record.
        .set("auto.offset.reset", "earliest")
        .set("fetch.max.bytes", "52428800")
        // A fetch at the end returns at once rather than waiting for records to arrive.
        .set("fetch.wait.max.ms", "10")
        // A queue past librdkafka's threshold (100,000 records) pauses fetching this long, not
        // its default of a second, which a restore would wait out after applying the queue.
        .set("fetch.queue.backoff.ms", "10");
    client
}

/// The aggregator's reader of the changelog: one consumer assigned to every partition for as
/// long as the aggregator runs, moved only when the aggregator asks for other offsets than
/// those it delivered up to (a step whose commit failed).
pub struct ChangelogTail {
    consumer: BaseConsumer<ReaderContext>,
    topic: String,
    partitions: i32,
    /// The offsets the consumer reads on from; `None` before the first read.
    at: Option<std::collections::BTreeMap<i32, i64>>,
}

/// How long a read of the tail waits for the first record.
const TAIL_WAIT: Duration = Duration::from_millis(200);

impl ChangelogTail {
    pub fn connect(
        brokers: &str,
        security: &KafkaSecurity,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<ChangelogTail> {
        let consumer = changelog_consumer_config(brokers, security)
            // Waiting at the end is what a tail does; a short wait keeps steps short.
            .set("fetch.wait.max.ms", "100")
            .create_with_context(ReaderContext::default())?;
        Ok(ChangelogTail {
            consumer,
            topic: topic.to_owned(),
            partitions,
            at: None,
        })
    }
}

impl Drop for ChangelogTail {
    /// The consumer closes as the tail is dropped: its context is told first, as `close` tells
    /// a reader's.
    fn drop(&mut self) {
        self.consumer.context().release.set();
    }
}

/// `wait` rounded up to whole milliseconds.
fn whole_millis(wait: Duration) -> Duration {
    Duration::from_millis(wait.as_micros().div_ceil(1000) as u64)
}

impl crate::aggregator::ChangelogFeed for ChangelogTail {
    fn next(
        &mut self,
        from: &std::collections::BTreeMap<i32, i64>,
        max: usize,
    ) -> anyhow::Result<Vec<(i32, i64, ChangelogRecord)>> {
        if self.at.as_ref() != Some(from) {
            let mut tpl = TopicPartitionList::new();
            for partition in 0..self.partitions {
                let start = from
                    .get(&partition)
                    .map_or(FIRST_RECORD, |next| Offset::Offset(*next));
                tpl.add_partition_offset(&self.topic, partition, start)?;
            }
            self.consumer.assign(&tpl)?;
            self.at = Some(from.clone());
        }
        let at = self.at.get_or_insert_with(Default::default);
        let mut records = Vec::new();
        let deadline = Instant::now() + TAIL_WAIT;
        while records.len() < max {
            // The first record may be waited for; after it, only what has arrived. In whole
            // milliseconds, rounded up: rdkafka hands librdkafka the wait rounded down, then
            // polls without waiting until the fraction left is gone (see `polled`).
            let wait = match records.is_empty() {
                true => whole_millis(deadline.saturating_duration_since(Instant::now())),
                false => Duration::ZERO,
            };
            let message = match self.consumer.poll(wait) {
                None => break,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(message) => message?,
            };
            at.insert(message.partition(), message.offset() + 1);
            // The aggregator counts a customer record's facts, never its customer: the value,
            // most of the record's bytes, is not copied (a fifth of the aggregator's samples).
            records.push((
                message.partition(),
                message.offset(),
                read_record(&message, false),
            ));
        }
        Ok(records)
    }

    fn ends(&mut self) -> anyhow::Result<std::collections::BTreeMap<i32, i64>> {
        let mut ends = std::collections::BTreeMap::new();
        for partition in 0..self.partitions {
            let (low, high) =
                self.consumer
                    .fetch_watermarks(&self.topic, partition, Duration::from_secs(5))?;
            if high > low {
                ends.insert(partition, high);
            }
        }
        Ok(ends)
    }
}

impl ChangelogReader {
    pub fn connect(
        brokers: &str,
        security: &KafkaSecurity,
        topic: &str,
    ) -> anyhow::Result<ChangelogReader> {
        let client = changelog_consumer_config(brokers, security);
        // Fails here, at start, on a configuration librdkafka refuses.
        let validated: BaseConsumer<ReaderContext> =
            client.create_with_context(ReaderContext::default())?;
        close(validated);
        let claims: BaseProducer<ClaimsContext> = client_config(brokers, security)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "0")
            .set("message.timeout.ms", CLAIM_TIMEOUT.as_millis().to_string())
            .create_with_context(ClaimsContext::default())?;
        let claims = Polled::start(claims, "claims-poll")?;
        // Connected, told the topic's leaders and given a producer id before the first claim,
        // which an assignment waits for: while the consumer joins its group (two metadata
        // round trips, 50 ms against Tansu while librdkafka connected sparsely (`client_config`),
        // that the start waited for in turn until 2026-12-02).
        let warming = {
            let (producer, topic) = (claims.shared(), topic.to_owned());
            std::thread::Builder::new()
                .name("changelog-ready".into())
                .spawn(move || ready_idempotent(producer.client(), &topic))?
        };
        Ok(ChangelogReader {
            client,
            topic: topic.to_owned(),
            claims,
            warming: Mutex::new(Some(warming)),
        })
    }

    /// Waits for the claims producer's warm-up, once.
    fn warmed(&self) {
        if let Some(warming) = lock(&self.warming).take() {
            // A panic there only means the first record finds its own way to the broker.
            let _ = warming.join();
        }
    }

    /// Appends each `(partition, key, value)` and waits for the brokers to acknowledge them:
    /// each one's offset, or why it was not written (librdkafka gives up after
    /// [`CLAIM_TIMEOUT`]).
    fn append(&self, records: &[(i32, &[u8], Vec<u8>)]) -> Vec<Result<i64, KafkaError>> {
        let (to, reports) = std::sync::mpsc::channel();
        let mut results: Vec<Option<Result<i64, KafkaError>>> = vec![None; records.len()];
        let mut waiting = 0;
        for (place, (partition, key, value)) in records.iter().enumerate() {
            let record = BaseRecord::with_opaque_to(&self.topic, Box::new((place, to.clone())))
                .partition(*partition)
                .key(*key)
                .payload(value.as_slice());
            match self.claims.send(record) {
                Ok(()) => waiting += 1,
                Err((e, _)) => results[place] = Some(Err(e)),
            }
        }
        // A report always comes within the producer's timeout; the margin covers the rest.
        let deadline = Instant::now() + CLAIM_TIMEOUT + Duration::from_secs(5);
        while waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok((place, result)) = reports.recv_timeout(left) else {
                break;
            };
            results[place] = Some(result);
            waiting -= 1;
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or(Err(KafkaError::Canceled)))
            .collect()
    }
}

impl ChangelogSource for ChangelogReader {
    fn read(
        &self,
        partition: i32,
        from: Option<i64>,
        to: i64,
        each: &mut dyn FnMut(i64, ChangelogRecord) -> Result<(), StoreError>,
    ) -> anyhow::Result<Option<i64>> {
        if to <= 0 || from.is_some_and(|from| from >= to) {
            return Ok(None);
        }
        let consumer: BaseConsumer<ReaderContext> =
            self.client.create_with_context(ReaderContext::default())?;
        let read = read_range(&consumer, &self.topic, partition, from, to, each);
        close(consumer);
        read
    }

    fn claim(&self, partition: i32, claim: &Claim) -> anyhow::Result<i64> {
        self.warmed();
        // One record, one result.
        self.append(&[(partition, CLAIM_KEY, claim.to_bytes())])
            .into_iter()
            .next()
            .unwrap_or(Err(KafkaError::Canceled))
            .map_err(|e| {
                let hint = match e.rdkafka_error_code() {
                    Some(
                        RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic,
                    ) => ": create the topic, compacted, with input.partitions partitions",
                    _ => "",
                };
                let topic = &self.topic;
                anyhow::anyhow!(
                    "claiming partition {partition} of the changelog {topic}: {e}{hint}"
                )
            })
    }

    fn release(&self, releases: &[(i32, Epoch)]) -> anyhow::Result<()> {
        self.warmed();
        let records: Vec<(i32, &[u8], Vec<u8>)> = releases
            .iter()
            .map(|(partition, epoch)| (*partition, RELEASE_KEY, epoch.to_header()))
            .collect();
        for (sent, (partition, _)) in self.append(&records).into_iter().zip(releases) {
            if let Err(e) = sent {
                anyhow::bail!("releasing partition {partition} of the changelog: {e}");
            }
        }
        Ok(())
    }

    fn end(&self, partition: i32) -> anyhow::Result<i64> {
        let (_, high) = self.claims.client().fetch_watermarks(
            &self.topic,
            partition,
            Duration::from_secs(5),
        )?;
        Ok(high)
    }
}

/// Reads `partition` of `topic` with `consumer` from `from` (its first record when `None`) up
/// to `to`, handing each record to `each`; the offset after the last one read, `None` if none.
fn read_range(
    consumer: &BaseConsumer<ReaderContext>,
    topic: &str,
    partition: i32,
    from: Option<i64>,
    to: i64,
    each: &mut dyn FnMut(i64, ChangelogRecord) -> Result<(), StoreError>,
) -> anyhow::Result<Option<i64>> {
    let mut tpl = TopicPartitionList::new();
    let start = from.map_or(FIRST_RECORD, Offset::Offset);
    tpl.add_partition_offset(topic, partition, start)?;
    consumer.assign(&tpl)?;
    let mut end = None;
    loop {
        let message = match consumer.poll(CHANGELOG_WAIT) {
            None => anyhow::bail!(
                "the changelog's partition {partition} delivered nothing within {} s (after offset {end:?}, reading up to {to})",
                CHANGELOG_WAIT.as_secs()
            ),
            // The end before `to`: what lies between was removed by compaction.
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(end),
            Some(message) => message?,
        };
        if message.offset() >= to {
            return Ok(end);
        }
        end = Some(message.offset() + 1);
        each(message.offset(), changelog_record(&message))?;
        if message.offset() + 1 >= to {
            return Ok(end);
        }
    }
}

/// What the sink does with the changelog's delivery reports: for a partition this member owns,
/// the store moves its read mark over its own records (see [`Store::advance_changelog_read`]),
/// so that a later assignment reads only what follows.
pub struct ChangelogProgress {
    pub topic: String,
    pub store: Store,
    pub owned: Assignment,
    /// Where records delivered after a gap are sent to be checked.
    pub claims: Option<ClaimCheck>,
}

impl ChangelogProgress {
    pub(super) fn delivered(&self, offsets: &mut std::collections::BTreeMap<i32, Vec<i64>>) {
        let owned = lock(&self.owned);
        for (partition, offsets) in offsets {
            if !owned.iter().any(|(_, p)| p == partition) {
                continue;
            }
            match self.store.advance_changelog_read(*partition, offsets) {
                Ok(None) => {}
                Ok(Some(_)) => {
                    if let Some(claims) = &self.claims {
                        claims.check(*partition, std::mem::take(offsets));
                    }
                }
                Err(e) => {
                    tracing::warn!(partition, error = %e, "Recording changelog progress failed; the next assignment reads more of the changelog.")
                }
            }
        }
    }
}

/// Owned partitions that another instance claimed in the changelog.
pub(super) type ClaimedAway = Arc<Mutex<HashMap<i32, Away>>>;

/// Another instance's claim on an owned partition, as last read.
#[derive(Debug, Clone, Copy)]
pub(super) struct Away {
    /// When this claim was first found.
    pub(super) found: Instant,
    pub(super) claim: crate::restore::ForeignClaim,
}

/// Looks, on a thread of its own, for another instance's claim in a changelog partition this
/// one owns (see [`crate::restore::check_claims`]): such a claim means that what this one
/// writes no longer counts, and the partition is noted for
/// [`crate::kafka::input::Input::resolve_claims`]. It reads what lies in each gap between this
/// instance's records, as the delivery reports show them (most hold the aggregator's snapshot,
/// or nothing new), and every `sweep` what the changelog got past them, so that an owner with
/// no events to write finds a claim too.
#[derive(Clone)]
pub struct ClaimCheck {
    gaps: std::sync::mpsc::Sender<(i32, Vec<i64>)>,
}

/// What the claim check reads from and reports to.
pub(super) struct ClaimWatch {
    pub(super) store: Store,
    pub(super) reader: Arc<ChangelogReader>,
    pub(super) owned: Assignment,
    pub(super) claimed_away: ClaimedAway,
    pub(super) telemetry: Arc<Telemetry>,
    /// Each owned partition's read mark at the last sweep.
    pub(super) marks: HashMap<i32, Option<i64>>,
}

impl ClaimCheck {
    pub(super) fn start(mut watch: ClaimWatch, sweep: Duration) -> anyhow::Result<ClaimCheck> {
        let (gaps, checks) = std::sync::mpsc::channel::<(i32, Vec<i64>)>();
        // Ends when the last sender goes.
        std::thread::Builder::new()
            .name("claim-check".into())
            .spawn(move || {
                let mut next_sweep = Instant::now() + sweep;
                loop {
                    let wait = next_sweep.saturating_duration_since(Instant::now());
                    match checks.recv_timeout(wait) {
                        Ok(first) => {
                            // What queued up meanwhile is checked in one read per partition.
                            let mut pending: HashMap<i32, Vec<i64>> = HashMap::new();
                            for (partition, delivered) in
                                std::iter::once(first).chain(checks.try_iter())
                            {
                                pending.entry(partition).or_default().extend(delivered);
                            }
                            for (partition, delivered) in pending {
                                watch.check_gap(partition, delivered);
                            }
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                    if Instant::now() >= next_sweep {
                        watch.sweep();
                        next_sweep = Instant::now() + sweep;
                    }
                }
            })?;
        Ok(ClaimCheck { gaps })
    }

    /// Asks for the gap before `delivered`, this instance's records just delivered to
    /// `partition`, to be checked.
    fn check(&self, partition: i32, delivered: Vec<i64>) {
        // Refused only once the thread has gone, at shutdown.
        let _ = self.gaps.send((partition, delivered));
    }
}

impl ClaimWatch {
    /// Checks the gaps before `delivered` in `partition` (see
    /// [`crate::restore::check_claims`]), unless the partition is already known to be claimed
    /// away.
    fn check_gap(&self, partition: i32, mut delivered: Vec<i64>) {
        if lock(&self.claimed_away).contains_key(&partition) {
            return;
        }
        let found =
            crate::restore::check_claims(&self.store, &*self.reader, partition, &mut delivered);
        self.note(partition, found);
    }

    /// Reads what each owned partition's changelog got past what this instance accounted for
    /// (see [`crate::restore::check_claims_to_end`]): a claim, or, after one found, its release
    /// or a later claim. A partition whose read mark moved since the last sweep is left out
    /// unless a claim was found in it: this instance's own records are being delivered there,
    /// and the gaps between them are checked as they are.
    fn sweep(&mut self) {
        let mut partitions: Vec<i32> = lock(&self.owned).iter().map(|(_, p)| *p).collect();
        partitions.sort_unstable();
        partitions.dedup();
        self.marks.retain(|p, _| partitions.contains(p));
        for partition in partitions {
            let mark = self.store.changelog_read(partition).ok().flatten();
            let moved = self.marks.insert(partition, mark) != Some(mark);
            if moved && !lock(&self.claimed_away).contains_key(&partition) {
                continue;
            }
            let found = crate::restore::check_claims_to_end(&self.store, &*self.reader, partition);
            self.note(partition, found);
        }
    }

    /// Notes `partition` as claimed away when another instance's claim was `found`, or the
    /// claim's release; forgets it when none is found any more (this instance claimed it again).
    fn note(&self, partition: i32, found: anyhow::Result<Option<crate::restore::ForeignClaim>>) {
        match found {
            Ok(Some(claim)) => {
                let mut away = lock(&self.claimed_away);
                let known = away.get(&partition).copied();
                match known {
                    Some(known) if known.claim == claim => {}
                    Some(known) if known.claim.offset == claim.offset => {
                        tracing::info!(
                            partition,
                            claim = claim.offset,
                            "The instance that claimed a partition this one owns has released it."
                        );
                        away.insert(partition, Away { claim, ..known });
                    }
                    _ => {
                        tracing::warn!(partition, claim = claim.offset, released = claim.released, "Another instance claimed a partition this one owns. Unless the group moves the partition away, this one claims it back once the other has released it, or lets it go if the other still holds it a session timeout later.");
                        away.insert(
                            partition,
                            Away {
                                found: Instant::now(),
                                claim,
                            },
                        );
                    }
                }
                self.telemetry.set_claimed_away(away.len());
            }
            Ok(None) => {
                let mut away = lock(&self.claimed_away);
                if away.remove(&partition).is_some() {
                    self.telemetry.set_claimed_away(away.len());
                }
            }
            Err(e) => {
                if let Some(held_back) = repeated(&format!("claim check {partition} {e}")) {
                    tracing::warn!(partition, error = %e, held_back, "Checking the changelog for another instance's claim failed; it is checked again.")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tail_wait_is_rounded_up_to_whole_milliseconds() {
        let ms = Duration::from_millis;
        assert_eq!(whole_millis(Duration::from_micros(199_970)), ms(200));
        assert_eq!(whole_millis(Duration::from_micros(1)), ms(1));
        assert_eq!(whole_millis(ms(200)), ms(200));
        assert_eq!(whole_millis(Duration::ZERO), Duration::ZERO);
    }
}
