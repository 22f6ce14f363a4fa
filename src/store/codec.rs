//! The on-disk encoding: a version byte, then a postcard body. What is on disk outlives the code,
//! so a change to a stored type's layout must add a new version and keep decoding the old ones;
//! the golden-bytes tests below fail the build when a layout changes by accident.

use crate::event::Millis;
use crate::facts::Fact;
use crate::fold::{CustomerState, EarlyClose, Lifecycle};
use crate::rfm::Scales;
use crate::risk::{ChurnRiskRecord, Level, Reason, ReasonCode, RiskMemo, Said};
use crate::segments::{Loss, Segments, Standing, Trailing};
use crate::trends::Trends;

use super::{AggregatorSnapshot, Claim, Customer, OutboxRecord, Output, Ownership, Position};

/// Version 1: the folded state alone.
const CUSTOMER_V1: u8 = 1;
/// Version 2: the folded state, then the risk memo (what was last published, the pending timer).
/// Postcard writes a tuple field after field, so a V2 body starts with a V1 body.
const CUSTOMER_V2: u8 = 2;
/// Version 3: a V2 body, then the customer's standing in the segment population. A customer
/// read from V1 or V2 has no standing until its next churn-risk record.
const CUSTOMER_V3: u8 = 3;
/// Version 4: a V3 body, then the revenue and margin per recent month (value tiers by trailing
/// revenue). A customer read from an earlier version has none until its next order.
const CUSTOMER_V4: u8 = 4;
/// Version 5: the pending timer ahead of a V4 body — a byte 0 (none), or a byte 1 and the event
/// time as 8 big-endian bytes — so that a restore learns a customer's timer without decoding it.
const CUSTOMER_V5: u8 = 5;
/// Version 6: a V5 encoding with the remembered events as fingerprints after the body
/// (`body::SeenEntries`) and none in the body's own place for them, where V1 to V5 kept the
/// event ids; those are fingerprinted as they are read.
const CUSTOMER_V6: u8 = 6;
/// Version 7: a V6 encoding whose remembered events are a `body::SeenSection`: the seal, how
/// many are sealed, the events after the sealed ones, and the sealed ones or a byte 0 when the
/// store keeps them apart (under their own key, `SEALED_V1`).
const CUSTOMER_V7: u8 = 7;
/// Version 8: a V7 encoding with the customer's losses (`segments::Loss`) after its trailing
/// months. A customer read from an earlier version has none: what it lost before is not known.
const CUSTOMER_V8: u8 = 8;
/// Version 9: a V8 encoding with the state's early closes (`fold::EarlyClose`) after the
/// losses. A customer read from an earlier version has none.
const CUSTOMER_V9: u8 = 9;
/// Version 10: a V9 encoding with the state's latest renewal time (`last_renewal_at`) after
/// the early closes. A customer read from an earlier version has none until its next renewal.
const CUSTOMER_V10: u8 = 10;
/// A customer's sealed remembered events kept apart: `body::Sealed`.
const SEALED_V1: u8 = 1;
const OUTBOX_V1: u8 = 1;
/// Version 2: a V1 body, then the partition the record must go to (the changelog's), if any.
const OUTBOX_V2: u8 = 2;
/// Version 3: a churn-risk record as data (`risk::ChurnRiskRecord`), after its topic; records
/// of every other kind are still written as version 2.
const OUTBOX_V3: u8 = 3;
/// Version 5: a churn-risk record as version 3 writes it, but each reason's detail as the
/// values it names (`risk::Said`) rather than its text, which is written out when the record is
/// sent. Version 3 is still read, its details as text.
const OUTBOX_V5: u8 = 5;
/// A commit's outbox records under one key (since 2026-12-06; before, a key each): for each,
/// its number (u64 big-endian), its length (u32 big-endian), then the record as version 2, 3
/// or 5 writes it. A value of another version is one record, numbered by its key.
const OUTBOX_CHUNK_V1: u8 = 4;
const TRENDS_V1: u8 = 1;
/// Version 2: a V1 body, then `began` (where the complaints began). A V1 body read back has
/// none, so its first windows, closed long ago or not, are never warm-ups.
const TRENDS_V2: u8 = 2;
/// Version 3: a V2 body, then each category's last closed window's verdict. A V2 body read
/// back has none: the spike flags wait for the next window, as they did.
const TRENDS_V3: u8 = 3;
/// Version 4: a V3 body, then the complaints that left the backlog unresolved, by open window
/// (`Trends::left`). A V3 body read back has none: its open windows took them out where read.
const TRENDS_V4: u8 = 4;
const POSITION_V1: u8 = 1;
const CLAIM_V1: u8 = 1;
const OWNERSHIP_V1: u8 = 1;
/// Version 2 adds the last numbered record counted (`Ownership::is_new`); version 1 is still
/// read, with none.
const OWNERSHIP_V2: u8 = 2;
/// The facts a customer's changelog record carries (`facts::Fact`, postcard).
const FACTS_V1: u8 = 1;
/// Version 2 adds `Fact::LeftOpen` (its variant after the others, so version 1 is read as it
/// is). Facts without one are still written as version 1, which an earlier aggregator reads
/// during a rolling upgrade; it skips those with one, saying so.
const FACTS_V2: u8 = 2;
/// Version 2 carries trends version 2. A version-1 snapshot is not read (the aggregator then
/// reads the changelog from its start): its trends, and its segments before segments version
/// 3, had other layouts, which the snapshot did not record.
const SNAPSHOT_V2: u8 = 2;
/// Version 3 carries ownerships version 2; version 2 is still read, its ownerships with no
/// numbered record counted.
const SNAPSHOT_V3: u8 = 3;
/// Version 4 carries trends version 3; versions 2 and 3 are still read, their trends with no
/// verdicts.
const SNAPSHOT_V4: u8 = 4;
/// Version 5 adds the complaint windows' length; versions 2 to 4 are still read, with none.
const SNAPSHOT_V5: u8 = 5;
/// Version 6 carries trends version 4; version 5 is still read, its trends with nothing left.
const SNAPSHOT_V6: u8 = 6;
/// Version 7 adds each partition's counted input position; version 6 is still read, with none.
const SNAPSHOT_V7: u8 = 7;
/// Version 2 adds `active_at_close`; version 1 (without it) is still read.
const SEGMENTS_V1: u8 = 1;
const SEGMENTS_V2: u8 = 2;
const SEGMENTS_V3: u8 = 3;
const SCALES_V1: u8 = 1;

/// The customer whole, its remembered events all in its body.
pub fn encode_customer(customer: &Customer) -> Vec<u8> {
    let mut out = customer_prefix(customer);
    super::body::write_customer_body(customer, &mut out);
    out
}

/// The customer with its sealed remembered events left out, which the store keeps apart
/// ([`encode_sealed`]).
pub fn encode_customer_apart(customer: &Customer) -> Vec<u8> {
    let mut out = customer_prefix(customer);
    super::body::write_customer_body_apart(customer, &mut out);
    out
}

/// The customer's sealed remembered events, as the store keeps them apart.
pub fn encode_sealed(state: &CustomerState) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 13 * state.seen_sealed as usize);
    out.push(SEALED_V1);
    super::body::write_sealed(state, &mut out);
    out
}

/// The version byte and the timer prefix.
fn customer_prefix(customer: &Customer) -> Vec<u8> {
    // Room for a typical customer up front: growing from one byte copied it eight times.
    let mut out = Vec::with_capacity(512);
    out.push(CUSTOMER_V10);
    match customer.risk.timer_at {
        None => out.push(0),
        Some(at) => {
            out.push(1);
            out.extend_from_slice(&at.to_be_bytes());
        }
    }
    out
}

/// A customer as read from its stored encoding.
#[derive(Debug, PartialEq)]
pub enum Stored {
    /// The whole customer.
    Whole(Customer),
    /// A customer whose `seal`ed remembered events, `sealed` of them, are kept apart: its
    /// `seen` holds the events after them until [`join_sealed`] puts them in front.
    Apart {
        customer: Customer,
        seal: u32,
        sealed: u32,
    },
}

/// Puts the sealed remembered events kept apart (`bytes`, from [`encode_sealed`]) in front of
/// the customer's others, checking that they are the `sealed` events of its `seal`.
pub fn join_sealed(
    customer: &mut Customer,
    (seal, sealed): (u32, u32),
    bytes: &[u8],
) -> Result<(), String> {
    let body = match bytes.split_first() {
        Some((&SEALED_V1, body)) => body,
        Some((v, _)) => return Err(format!("unknown sealed events version {v}")),
        None => return Err("empty sealed events".into()),
    };
    let (kept_seal, newest, entries) =
        postcard::from_bytes::<super::body::Sealed>(body).map_err(|e| format!("sealed: {e}"))?;
    if kept_seal != seal || entries.len() != sealed as usize {
        return Err(format!(
            "sealed events are {} of seal {kept_seal}, the customer's are {sealed} of seal {seal}",
            entries.len()
        ));
    }
    let state = &mut customer.state;
    let mut seen = super::body::seen_entries(entries, newest);
    seen.append(&mut state.seen);
    state.seen = seen;
    state.seen_sealed = sealed;
    state.seal = seal;
    Ok(())
}

/// A version-5 (or later) encoding split after its timer prefix: the version, the timer, the rest.
type Prefixed<'a> = (u8, Option<crate::event::Millis>, &'a [u8]);

/// A version-5 (or later) encoding's timer and the rest: `None` for an earlier version.
fn timer_prefix(bytes: &[u8]) -> Option<Result<Prefixed<'_>, String>> {
    let (&version, rest) = bytes.split_first()?;
    if !(CUSTOMER_V5..=CUSTOMER_V10).contains(&version) {
        return None;
    }
    Some(match rest.split_first() {
        Some((0, body)) => Ok((version, None, body)),
        Some((1, rest)) if rest.len() >= 8 => {
            let (at, body) = rest.split_at(8);
            let at = i64::from_be_bytes(at.try_into().expect("eight bytes"));
            Ok((version, Some(at), body))
        }
        _ => Err(format!("version {version} timer prefix is malformed")),
    })
}

/// The customer's pending timer, read from the prefix of a version-5 (or later) encoding without
/// decoding the rest (which decoding the whole customer checks against it); earlier versions are
/// decoded.
pub fn customer_timer(bytes: &[u8]) -> Result<Option<crate::event::Millis>, String> {
    match timer_prefix(bytes) {
        Some(prefix) => prefix.map(|(_, timer, _)| timer),
        None => decode_legacy(bytes).map(|c| c.risk.timer_at),
    }
}

/// A whole customer: an error when its sealed remembered events are kept apart.
#[cfg(test)]
pub fn decode_customer(bytes: &[u8]) -> Result<Customer, String> {
    match decode_stored(bytes)? {
        Stored::Whole(customer)
        | Stored::Apart {
            customer,
            sealed: 0,
            ..
        } => Ok(customer),
        Stored::Apart { sealed, .. } => Err(format!(
            "{sealed} sealed remembered events are kept apart from this encoding"
        )),
    }
}

/// What postcard reads of a customer's body from version 4 on, before its remembered events.
type V4 = (CustomerState, RiskMemo, Option<Standing>, Trailing);

fn from_v4((state, risk, standing, trailing): V4) -> Customer {
    Customer {
        state,
        risk,
        standing,
        trailing,
        losses: Vec::new(),
    }
}

/// A customer from its stored encoding, whole unless its sealed remembered events are kept
/// apart (and there are some).
pub fn decode_stored(bytes: &[u8]) -> Result<Stored, String> {
    if let Some(prefix) = timer_prefix(bytes) {
        let (version, timer, body) = prefix?;
        let malformed = |e: postcard::Error| format!("version {version} body: {e}");
        let (customer, apart) = if version >= CUSTOMER_V6 {
            let (mut customer, mut seen) = postcard::take_from_bytes::<V4>(body)
                .map(|(v4, seen)| (from_v4(v4), seen))
                .map_err(malformed)?;
            if version >= CUSTOMER_V8 {
                let (losses, rest) =
                    postcard::take_from_bytes::<Vec<Loss>>(seen).map_err(malformed)?;
                customer.losses = losses;
                seen = rest;
            }
            if version >= CUSTOMER_V9 {
                let (closes, rest) =
                    postcard::take_from_bytes::<Vec<EarlyClose>>(seen).map_err(malformed)?;
                customer.state.early_closes = closes;
                seen = rest;
            }
            if version >= CUSTOMER_V10 {
                let (at, rest) = postcard::take_from_bytes::<Option<crate::event::Millis>>(seen)
                    .map_err(malformed)?;
                customer.state.last_renewal_at = at;
                seen = rest;
            }
            if !customer.state.seen.is_empty() {
                return Err(format!(
                    "version {version} body holds event ids in version 5's place"
                ));
            }
            let newest = customer.state.last_event_at;
            let (apart, rest) = if version < CUSTOMER_V7 {
                let (entries, rest) = postcard::take_from_bytes::<super::body::SeenEntries>(seen)
                    .map_err(malformed)?;
                customer.state.seen = super::body::seen_entries(entries, newest);
                (None, rest)
            } else {
                let ((seal, sealed, after, inline), rest) =
                    postcard::take_from_bytes::<super::body::SeenSection>(seen)
                        .map_err(malformed)?;
                let state = &mut customer.state;
                state.seen = super::body::seen_entries(after, newest);
                state.seal = seal;
                state.seen_sealed = sealed;
                let apart = match inline {
                    Some(entries) if entries.len() == sealed as usize => {
                        let mut seen = super::body::seen_entries(entries, newest);
                        seen.append(&mut state.seen);
                        state.seen = seen;
                        None
                    }
                    Some(entries) => {
                        return Err(format!(
                            "version {version} body holds {} sealed remembered events, and says {sealed}",
                            entries.len()
                        ))
                    }
                    None => (sealed > 0).then_some((seal, sealed)),
                };
                (apart, rest)
            };
            if !rest.is_empty() {
                return Err(format!(
                    "version {version} body has bytes past its remembered events"
                ));
            }
            (customer, apart)
        } else {
            let customer = postcard::from_bytes::<V4>(body)
                .map(from_v4)
                .map_err(malformed)?;
            (customer, None)
        };
        if customer.risk.timer_at != timer {
            return Err(format!(
                "version {version} timer prefix disagrees with the body"
            ));
        }
        return Ok(match apart {
            None => Stored::Whole(customer),
            Some((seal, sealed)) => Stored::Apart {
                customer,
                seal,
                sealed,
            },
        });
    }
    Ok(Stored::Whole(decode_legacy(bytes)?))
}

/// A customer of a version before 5, which had no timer prefix.
fn decode_legacy(bytes: &[u8]) -> Result<Customer, String> {
    match bytes.first() {
        Some(&CUSTOMER_V1) => decode::<CustomerState>(CUSTOMER_V1, bytes).map(Customer::from),
        Some(&CUSTOMER_V2) => {
            decode::<(CustomerState, RiskMemo)>(CUSTOMER_V2, bytes).map(|(state, risk)| Customer {
                state,
                risk,
                ..Customer::default()
            })
        }
        Some(&CUSTOMER_V3) => {
            decode::<(CustomerState, RiskMemo, Option<Standing>)>(CUSTOMER_V3, bytes).map(
                |(state, risk, standing)| Customer {
                    state,
                    risk,
                    standing,
                    ..Customer::default()
                },
            )
        }
        Some(&CUSTOMER_V4) => decode::<V4>(CUSTOMER_V4, bytes).map(from_v4),
        Some(v) => Err(format!(
            "unknown encoding version {v} (this build reads up to {CUSTOMER_V10})"
        )),
        None => Err("empty value".into()),
    }
}

pub fn encode_scales(scales: &Scales) -> Vec<u8> {
    encode(SCALES_V1, scales)
}

pub fn decode_scales(bytes: &[u8]) -> Result<Scales, String> {
    decode(SCALES_V1, bytes)
}

pub fn encode_segments(segments: &Segments) -> Vec<u8> {
    encode(SEGMENTS_V3, segments)
}

pub fn decode_segments(bytes: &[u8]) -> Result<Segments, String> {
    // Version 2 is version 1 and then `active_at_close`; version 3 adds the population's
    // changes per open day (read as none: the days open then close with the population as it is).
    let older = |(v1, active_at_close): (SegmentsV1, Option<i64>)| {
        let mut segments = Segments::default();
        segments.population = v1.population;
        segments.margin_to_date_minor = v1.margin_to_date_minor;
        segments.days = v1.days;
        segments.closed_before = v1.closed_before;
        segments.active_at_close = active_at_close;
        segments
    };
    match bytes.first() {
        Some(&SEGMENTS_V1) => decode::<SegmentsV1>(SEGMENTS_V1, bytes).map(|v1| older((v1, None))),
        Some(&SEGMENTS_V2) => decode(SEGMENTS_V2, bytes).map(older),
        _ => decode(SEGMENTS_V3, bytes),
    }
}

/// The layout of segment metrics version 1, and the start of version 2's.
#[derive(serde::Deserialize)]
struct SegmentsV1 {
    population: std::collections::BTreeMap<String, crate::segments::Population>,
    margin_to_date_minor: std::collections::BTreeMap<String, i64>,
    days: std::collections::BTreeMap<
        crate::event::Millis,
        std::collections::BTreeMap<String, crate::segments::Flows>,
    >,
    closed_before: Option<crate::event::Millis>,
}

pub fn encode_trends(trends: &Trends) -> Vec<u8> {
    // Room up front for the windows (a key and counts, a few dozen bytes each) and the
    // categories (baselines and two months of days, a few hundred).
    let room = 1 + 48 * trends.windows.len() + 320 * trends.categories.len();
    let mut out = Vec::with_capacity(room);
    out.push(TRENDS_V4);
    // The bytes `postcard` writes for the trends, written by hand.
    super::body::write_trends(trends, &mut out);
    out
}

pub fn decode_trends(bytes: &[u8]) -> Result<Trends, String> {
    match bytes.first() {
        Some(&TRENDS_V1) => decode::<TrendsV1>(TRENDS_V1, bytes).map(|v1| {
            Trends::from(TrendsV2 {
                categories: v1.categories,
                windows: v1.windows,
                closed_before: v1.closed_before,
                newest: v1.newest,
                began: None,
            })
        }),
        Some(&TRENDS_V2) => decode::<TrendsV2>(TRENDS_V2, bytes).map(Trends::from),
        Some(&TRENDS_V3) => decode::<TrendsV3>(TRENDS_V3, bytes).map(Trends::from),
        _ => decode(TRENDS_V4, bytes),
    }
}

/// The layout of trends version 3: version 4 without the complaints left open.
#[derive(serde::Deserialize)]
struct TrendsV3 {
    categories: std::collections::BTreeMap<String, crate::trends::CategoryTrend>,
    windows: std::collections::BTreeMap<(crate::event::Millis, String), crate::trends::Window>,
    closed_before: Option<crate::event::Millis>,
    newest: Option<crate::event::Millis>,
    began: Option<crate::event::Millis>,
    verdicts: std::collections::BTreeMap<String, crate::trends::Verdict>,
}

impl From<TrendsV3> for Trends {
    fn from(v3: TrendsV3) -> Trends {
        let mut trends = Trends::from(TrendsV2 {
            categories: v3.categories,
            windows: v3.windows,
            closed_before: v3.closed_before,
            newest: v3.newest,
            began: v3.began,
        });
        trends.verdicts = v3.verdicts;
        trends
    }
}

/// The layout of trends version 2: version 3 without the verdicts.
#[derive(serde::Deserialize)]
struct TrendsV2 {
    categories: std::collections::BTreeMap<String, crate::trends::CategoryTrend>,
    windows: std::collections::BTreeMap<(crate::event::Millis, String), crate::trends::Window>,
    closed_before: Option<crate::event::Millis>,
    newest: Option<crate::event::Millis>,
    began: Option<crate::event::Millis>,
}

impl From<TrendsV2> for Trends {
    fn from(v2: TrendsV2) -> Trends {
        let mut trends = Trends::default();
        trends.categories = v2.categories;
        trends.windows = v2.windows;
        trends.closed_before = v2.closed_before;
        trends.newest = v2.newest;
        trends.began = v2.began;
        trends
    }
}

/// The layout of trends version 1.
#[derive(serde::Deserialize)]
struct TrendsV1 {
    categories: std::collections::BTreeMap<String, crate::trends::CategoryTrend>,
    windows: std::collections::BTreeMap<(crate::event::Millis, String), crate::trends::Window>,
    closed_before: Option<crate::event::Millis>,
    newest: Option<crate::event::Millis>,
}

/// The layout of outbox records version 1.
#[derive(serde::Deserialize)]
struct OutboxV1 {
    topic: String,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

/// The layout of churn-risk records in outbox version 3: each reason's detail as its text.
#[derive(serde::Deserialize)]
struct ChurnRiskV3 {
    customer_id: String,
    record_id: String,
    caused_by: Option<String>,
    as_of: Millis,
    expected_orders_90d: f64,
    level: Level,
    lifecycle: Lifecycle,
    ltv_minor: i64,
    p_alive: f64,
    reasons: Vec<(ReasonCode, String)>,
    rfm: Option<crate::rfm::Score>,
    score: f64,
    segment: String,
}

impl From<ChurnRiskV3> for ChurnRiskRecord {
    fn from(v3: ChurnRiskV3) -> ChurnRiskRecord {
        let ChurnRiskV3 {
            customer_id,
            record_id,
            caused_by,
            as_of,
            expected_orders_90d,
            level,
            lifecycle,
            ltv_minor,
            p_alive,
            reasons,
            rfm,
            score,
            segment,
        } = v3;
        ChurnRiskRecord {
            customer_id,
            record_id,
            caused_by,
            as_of,
            expected_orders_90d,
            level,
            lifecycle,
            ltv_minor,
            p_alive,
            reasons: reasons
                .into_iter()
                .map(|(code, text)| Reason {
                    code,
                    detail: Said::Text(text).into(),
                })
                .collect(),
            rfm,
            score,
            segment,
        }
    }
}

/// One record as a value of its own, as stores wrote each before chunks (2026-12-06), and
/// as a chunk holds each (`encode_outbox_chunk`).
#[cfg(test)]
pub fn encode_outbox(output: &Output) -> Vec<u8> {
    let mut out = Vec::with_capacity(outbox_room(output));
    encode_outbox_into(&mut out, output);
    out
}

/// About what `output` takes encoded: room for it up front (a typical output record is larger
/// than `encode`'s guess), and what the store reckons a chunk's size in.
pub(super) fn outbox_room(output: &Output) -> usize {
    match output {
        Output::Record(record) => {
            let size = |bytes: &Option<Vec<u8>>| bytes.as_ref().map_or(0, Vec::len);
            let headers: usize = record
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 8)
                .sum();
            32 + record.topic.len() + size(&record.key) + size(&record.value) + headers
        }
        Output::ChurnRisk { .. } => 256,
    }
}

/// `output` encoded as a value of its own (its version byte, then postcard's bytes, written by
/// hand: `body`), after what `out` holds.
fn encode_outbox_into(out: &mut Vec<u8>, output: &Output) {
    match output {
        Output::Record(record) => {
            out.push(OUTBOX_V2);
            super::body::write_outbox_record(record, out);
        }
        Output::ChurnRisk { topic, record } => {
            out.push(OUTBOX_V5);
            super::body::write_churn_risk(topic, record, out);
        }
    }
}

/// Outbox records of one commit, numbered from `first` on, as one value (`OUTBOX_CHUNK_V1`).
pub fn encode_outbox_chunk(first: u64, outputs: &[Output]) -> Vec<u8> {
    let room = 1 + outputs.iter().map(|o| 12 + outbox_room(o)).sum::<usize>();
    let mut out = Vec::with_capacity(room);
    out.push(OUTBOX_CHUNK_V1);
    for (seq, output) in (first..).zip(outputs) {
        out.extend_from_slice(&seq.to_be_bytes());
        let length_at = out.len();
        out.extend_from_slice(&[0; 4]);
        encode_outbox_into(&mut out, output);
        let length = out.len() - length_at - 4;
        // A record of 4 GiB would not get here: the producer refuses records past
        // `message.max.bytes`, and a commit holds at most a batch's records.
        let length = u32::try_from(length).expect("an outbox record under 4 GiB");
        out[length_at..length_at + 4].copy_from_slice(&length.to_be_bytes());
    }
    out
}

/// Encoded records, each with its number, as one value (`OUTBOX_CHUNK_V1`): what is left of a
/// chunk once some of its records were dropped.
pub fn encode_outbox_parts<'a>(parts: impl IntoIterator<Item = (u64, &'a [u8])>) -> Vec<u8> {
    let mut out = vec![OUTBOX_CHUNK_V1];
    for (seq, bytes) in parts {
        out.extend_from_slice(&seq.to_be_bytes());
        let length = u32::try_from(bytes.len()).expect("an outbox record under 4 GiB");
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

/// The records an outbox value stored under the key numbered `seq` holds, each with its
/// number and its encoding (for [`decode_outbox`]): a chunk's, or the one record of a value
/// written before chunks were.
pub fn outbox_parts(seq: u64, bytes: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let Some((&OUTBOX_CHUNK_V1, mut rest)) = bytes.split_first() else {
        return Ok(vec![(seq, bytes)]);
    };
    let mut parts = Vec::new();
    while !rest.is_empty() {
        let (head, body) = rest
            .split_at_checked(12)
            .ok_or("an outbox chunk cut short in a record's number or length")?;
        let (number, length) = head.split_at(8);
        let number = u64::from_be_bytes(number.try_into().expect("8 bytes"));
        let length = u32::from_be_bytes(length.try_into().expect("4 bytes")) as usize;
        let (record, after) = body
            .split_at_checked(length)
            .ok_or_else(|| format!("an outbox chunk cut short in record {number}"))?;
        if parts.last().is_some_and(|&(before, _)| before >= number) {
            return Err(format!("an outbox chunk's record {number} out of order"));
        }
        parts.push((number, record));
        rest = after;
    }
    Ok(parts)
}

pub fn decode_outbox(bytes: &[u8]) -> Result<Output, String> {
    match bytes.first() {
        Some(&OUTBOX_V1) => decode::<OutboxV1>(OUTBOX_V1, bytes).map(|r| {
            Output::Record(OutboxRecord {
                topic: r.topic,
                key: r.key,
                value: r.value,
                headers: r.headers.into_iter().map(|(n, v)| (n.into(), v)).collect(),
                partition: None,
            })
        }),
        Some(&OUTBOX_V3) => {
            decode::<(String, ChurnRiskV3)>(OUTBOX_V3, bytes).map(|(topic, record)| {
                Output::ChurnRisk {
                    topic,
                    record: Box::new(record.into()),
                }
            })
        }
        Some(&OUTBOX_V5) => {
            decode(OUTBOX_V5, bytes).map(|(topic, record)| Output::ChurnRisk { topic, record })
        }
        _ => decode(OUTBOX_V2, bytes).map(Output::Record),
    }
}

pub fn encode_position(position: &Position) -> Vec<u8> {
    encode(POSITION_V1, position)
}

pub fn decode_position(bytes: &[u8]) -> Result<Position, String> {
    decode(POSITION_V1, bytes)
}

pub fn encode_claim(claim: &Claim) -> Vec<u8> {
    encode(CLAIM_V1, claim)
}

pub fn decode_claim(bytes: &[u8]) -> Result<Claim, String> {
    decode(CLAIM_V1, bytes)
}

pub fn encode_facts(facts: &[Fact]) -> Vec<u8> {
    let left_open = facts.iter().any(|f| matches!(f, Fact::LeftOpen { .. }));
    let mut out = Vec::with_capacity(256);
    out.push(if left_open { FACTS_V2 } else { FACTS_V1 });
    super::body::write_facts(facts, &mut out);
    out
}

pub fn decode_facts(bytes: &[u8]) -> Result<Vec<Fact>, String> {
    match bytes.first() {
        Some(&FACTS_V1) => decode(FACTS_V1, bytes),
        _ => decode(FACTS_V2, bytes),
    }
}

/// The layout of ownerships version 1.
#[derive(serde::Deserialize)]
struct OwnershipV1 {
    owner: Option<(u64, Vec<i64>)>,
}

impl From<OwnershipV1> for Ownership {
    fn from(v1: OwnershipV1) -> Ownership {
        Ownership {
            owner: v1.owner,
            last: None,
        }
    }
}

/// The layout of snapshots version 2.
#[derive(serde::Deserialize)]
struct SnapshotV2 {
    trends: Option<TrendsV2>,
    segments: Option<Segments>,
    rfm_cells: Vec<crate::rfm::Cell>,
    rfm_scales: Scales,
    partitions: Vec<(i32, i64, Option<crate::event::Millis>, OwnershipV1)>,
}

/// The layout of snapshots version 3: version 4's, its trends version 2.
#[derive(serde::Deserialize)]
struct SnapshotV3 {
    trends: Option<TrendsV2>,
    segments: Option<Segments>,
    rfm_cells: Vec<crate::rfm::Cell>,
    rfm_scales: Scales,
    partitions: Vec<(i32, i64, Option<crate::event::Millis>, Ownership)>,
}

/// The layout of snapshots version 4: version 5's without the windows' length.
#[derive(serde::Deserialize)]
struct SnapshotV4 {
    trends: Option<TrendsV3>,
    segments: Option<Segments>,
    rfm_cells: Vec<crate::rfm::Cell>,
    rfm_scales: Scales,
    partitions: Vec<(i32, i64, Option<crate::event::Millis>, Ownership)>,
}

/// The layout of snapshots version 5: version 6's, its trends version 3.
#[derive(serde::Deserialize)]
struct SnapshotV5 {
    trends: Option<TrendsV3>,
    segments: Option<Segments>,
    rfm_cells: Vec<crate::rfm::Cell>,
    rfm_scales: Scales,
    partitions: Vec<(i32, i64, Option<crate::event::Millis>, Ownership)>,
    window_ms: Option<crate::event::Millis>,
}

/// The layout of snapshots version 6: version 7's without the counted input positions.
#[derive(serde::Deserialize)]
struct SnapshotV6 {
    trends: Option<Trends>,
    segments: Option<Segments>,
    rfm_cells: Vec<crate::rfm::Cell>,
    rfm_scales: Scales,
    partitions: Vec<(i32, i64, Option<crate::event::Millis>, Ownership)>,
    window_ms: Option<crate::event::Millis>,
}

pub fn encode_snapshot(snapshot: &AggregatorSnapshot) -> Vec<u8> {
    encode(SNAPSHOT_V7, snapshot)
}

pub fn decode_snapshot(bytes: &[u8]) -> Result<AggregatorSnapshot, String> {
    match bytes.first() {
        Some(&SNAPSHOT_V2) => decode::<SnapshotV2>(SNAPSHOT_V2, bytes).map(|v2| {
            let partitions = v2.partitions.into_iter();
            AggregatorSnapshot {
                trends: v2.trends.map(Trends::from),
                segments: v2.segments,
                rfm_cells: v2.rfm_cells,
                rfm_scales: v2.rfm_scales,
                partitions: partitions.map(|(p, n, w, o)| (p, n, w, o.into())).collect(),
                window_ms: None,
                inputs: Vec::new(),
            }
        }),
        Some(&SNAPSHOT_V3) => {
            decode::<SnapshotV3>(SNAPSHOT_V3, bytes).map(|v3| AggregatorSnapshot {
                trends: v3.trends.map(Trends::from),
                segments: v3.segments,
                rfm_cells: v3.rfm_cells,
                rfm_scales: v3.rfm_scales,
                partitions: v3.partitions,
                window_ms: None,
                inputs: Vec::new(),
            })
        }
        Some(&SNAPSHOT_V4) => {
            decode::<SnapshotV4>(SNAPSHOT_V4, bytes).map(|v4| AggregatorSnapshot {
                trends: v4.trends.map(Trends::from),
                segments: v4.segments,
                rfm_cells: v4.rfm_cells,
                rfm_scales: v4.rfm_scales,
                partitions: v4.partitions,
                window_ms: None,
                inputs: Vec::new(),
            })
        }
        Some(&SNAPSHOT_V5) => {
            decode::<SnapshotV5>(SNAPSHOT_V5, bytes).map(|v5| AggregatorSnapshot {
                trends: v5.trends.map(Trends::from),
                segments: v5.segments,
                rfm_cells: v5.rfm_cells,
                rfm_scales: v5.rfm_scales,
                partitions: v5.partitions,
                window_ms: v5.window_ms,
                inputs: Vec::new(),
            })
        }
        Some(&SNAPSHOT_V6) => {
            decode::<SnapshotV6>(SNAPSHOT_V6, bytes).map(|v6| AggregatorSnapshot {
                trends: v6.trends,
                segments: v6.segments,
                rfm_cells: v6.rfm_cells,
                rfm_scales: v6.rfm_scales,
                partitions: v6.partitions,
                window_ms: v6.window_ms,
                inputs: Vec::new(),
            })
        }
        _ => decode(SNAPSHOT_V7, bytes),
    }
}

pub fn encode_ownership(ownership: &Ownership) -> Vec<u8> {
    encode(OWNERSHIP_V2, ownership)
}

pub fn decode_ownership(bytes: &[u8]) -> Result<Ownership, String> {
    match bytes.first() {
        Some(&OWNERSHIP_V1) => decode::<OwnershipV1>(OWNERSHIP_V1, bytes).map(Ownership::from),
        _ => decode(OWNERSHIP_V2, bytes),
    }
}

fn encode<T: serde::Serialize>(version: u8, value: &T) -> Vec<u8> {
    // Room for a typical record up front, rather than growing from one byte.
    encode_in(version, value, 256)
}

/// `value` encoded after its `version`, into a buffer with `room` bytes to start with.
fn encode_in<T: serde::Serialize>(version: u8, value: &T, room: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(room);
    out.push(version);
    // Serialising these plain structs into a Vec cannot fail: no maps with non-string keys,
    // no sequences of unknown length.
    postcard::to_io(value, &mut out).expect("postcard encodes plain structs");
    out
}

fn decode<T: serde::de::DeserializeOwned>(version: u8, bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((v, body)) if *v == version => {
            postcard::from_bytes(body).map_err(|e| format!("version {v} body: {e}"))
        }
        Some((v, _)) => Err(format!(
            "unknown encoding version {v} (this build reads up to {version})"
        )),
        None => Err("empty value".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;
    use crate::fold::{EventFingerprint, OpenComplaint, SeenEvent, Subscription};
    use crate::risk::Published;

    fn sample() -> CustomerState {
        CustomerState {
            customer_id: "c-1".into(),
            registered_at: Some(1_000),
            lifecycle: Lifecycle::Active,
            first_event_at: 1_000,
            last_event_at: 90_000_000,
            purchase_days: vec![0, 1],
            orders: 2,
            revenue_minor: 1_500,
            margin_minor: -20,
            open_complaints: vec![OpenComplaint {
                complaint_id: "k".into(),
                category: "billing".into(),
                severity: Severity::High,
                opened_at: 5,
            }],
            subscription: Subscription::Cancelled,
            seen: vec![SeenEvent {
                fingerprint: EventFingerprint::of("e"),
                occurred_at: 1_000,
            }],
            ..CustomerState::default()
        }
    }

    /// The bytes of a golden file; `Some(bytes)` rewrites it first when UPDATE_GOLDEN is set.
    fn golden(name: &str, encoded: Option<&[u8]>) -> Vec<u8> {
        let path =
            std::path::PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
                .join("tests/golden")
                .join(name);
        if let (Some(encoded), Some(_)) = (encoded, std::env::var_os("UPDATE_GOLDEN")) {
            let hex: String = encoded.iter().map(|b| format!("{b:02x}")).collect();
            std::fs::write(&path, hex).expect("golden file is writable");
        }
        let text = std::fs::read_to_string(&path).expect("golden file exists");
        let text = text.trim();
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn sample_customer() -> Customer {
        Customer {
            state: sample(),
            risk: RiskMemo {
                last: Some(Published {
                    as_of: 90_000_000,
                    score: 0.5,
                    level: Level::Medium,
                    reasons: vec![ReasonCode::Detractor],
                    lifecycle: Lifecycle::Active,
                }),
                timer_at: Some(100_000_000),
            },
            standing: Some(Standing {
                segment: "gold".into(),
                lifecycle: Lifecycle::Active,
                level: Level::Medium,
                ltv_minor: 1_234,
            }),
            trailing: Trailing {
                months: vec![(24_300, 1_500, -20)],
            },
            losses: Vec::new(),
        }
    }

    #[test]
    fn customer_round_trips() {
        let customer = sample_customer();
        assert_eq!(decode_customer(&encode_customer(&customer)), Ok(customer));
    }

    #[test]
    fn version_one_is_still_read() {
        // Written by the version-1 encoder (the state alone) and its head checked by hand against
        // the postcard spec: 01 (version), 03 63 2d 31 ("c-1", length-prefixed), 01 d0 0f
        // (Some(1000): zigzag 2000 as a varint), 00 00 (two Nones), 01 (Active).
        let bytes = golden("customer_v1.hex", None);
        assert_eq!(&bytes[..5], &[1, 3, 0x63, 0x2d, 0x31]);
        let customer = decode_customer(&bytes).expect("version 1 decodes");
        assert_eq!(customer.state, sample());
        assert_eq!(customer.risk, RiskMemo::default());
        assert_eq!(customer.standing, None);
    }

    #[test]
    fn version_two_is_still_read() {
        // Written by the version-2 encoder; its memo tail was checked by hand against the
        // postcard spec: 01 (Some), 80 aa ea 55 (as_of: zigzag 180,000,000), 00 00 00 00 00 00
        // e0 3f (0.5 as f64 LE), 01 (Medium), 01 03 (one reason: Detractor), 01 (Active),
        // 01 80 84 af 5f (Some(timer): zigzag 200,000,000).
        let bytes = golden("customer_v2.hex", None);
        assert_eq!(bytes[0], 2);
        let customer = decode_customer(&bytes).expect("version 2 decodes");
        let expected = sample_customer();
        assert_eq!(customer.state, expected.state);
        assert_eq!(customer.risk, expected.risk);
        assert_eq!(customer.standing, None, "V2 knew no standing");
    }

    #[test]
    fn version_three_is_still_read() {
        // A V3 body is the V2 body followed by the standing, checked by hand against the
        // postcard spec: 01 (Some), 04 67 6f 6c 64 ("gold"), 01 (Active), 01 (Medium), a4 13
        // (ltv: zigzag 2,468 as a varint).
        let bytes = golden("customer_v3.hex", None);
        let v2 = golden("customer_v2.hex", None);
        assert_eq!(bytes[0], 3);
        assert_eq!(&bytes[1..v2.len()], &v2[1..]);
        assert_eq!(
            &bytes[v2.len()..],
            &[0x01, 0x04, b'g', b'o', b'l', b'd', 0x01, 0x01, 0xa4, 0x13]
        );
        let customer = decode_customer(&bytes).expect("version 3 decodes");
        let expected = sample_customer();
        assert_eq!(customer.state, expected.state);
        assert_eq!(customer.standing, expected.standing);
        assert_eq!(customer.trailing, Trailing::default(), "V3 kept no months");
    }

    #[test]
    fn version_four_is_still_read() {
        // Written by the version-4 encoder. A V4 body is the V3 body followed by the months,
        // checked by hand against the postcard spec: 01 (one month), d8 fb 02 (month 24,300:
        // zigzag 48,600 as a varint), b8 17 (revenue 1,500: zigzag 3,000), 27 (margin -20:
        // zigzag 39).
        let bytes = golden("customer_v4.hex", None);
        let v3 = golden("customer_v3.hex", None);
        assert_eq!(bytes[0], 4);
        assert_eq!(&bytes[1..v3.len()], &v3[1..]);
        assert_eq!(
            &bytes[v3.len()..],
            &[0x01, 0xd8, 0xfb, 0x02, 0xb8, 0x17, 0x27]
        );
        assert_eq!(decode_customer(&bytes), Ok(sample_customer()));
        assert_eq!(customer_timer(&bytes), Ok(Some(100_000_000)));
    }

    #[test]
    fn version_five_is_still_read() {
        // Written by the version-5 encoder: the version, the timer prefix (01, then 100,000,000
        // as 8 big-endian bytes: 00 00 00 00 05 f5 e1 00), then the V4 body unchanged.
        let bytes = golden("customer_v5.hex", None);
        let v4 = golden("customer_v4.hex", None);
        assert_eq!(&bytes[..10], &[5, 1, 0, 0, 0, 0, 0x05, 0xf5, 0xe1, 0x00]);
        assert_eq!(&bytes[10..], &v4[1..]);
        assert_eq!(decode_customer(&bytes), Ok(sample_customer()));
        assert_eq!(customer_timer(&bytes), Ok(Some(100_000_000)));
    }

    #[test]
    fn version_six_is_still_read() {
        // Written by the version-6 encoder: the V5 encoding with its event ids (01: one; 01 65:
        // "e"; d0 0f: occurred at 1,000) left out of their place (00: none) and the
        // fingerprints after the body: 01 (one), XXH3-64 of "e" as 8 little-endian bytes
        // (0xe5e72e5e3bec4a78, from Python's `xxhash` package), b0 9a ea 55 (zigzag
        // 89,999,000: 90,000,000, the newest event, less 1,000).
        let v6 = golden("customer_v6.hex", None);
        let v5 = golden("customer_v5.hex", None);
        let ids = [0x01, 0x01, b'e', 0xd0, 0x0f];
        let at = v5
            .windows(5)
            .position(|w| w == ids)
            .expect("V5 holds the id");
        let mut expected = vec![CUSTOMER_V6];
        expected.extend_from_slice(&v5[1..at]);
        expected.push(0x00);
        expected.extend_from_slice(&v5[at + ids.len()..]);
        expected.extend_from_slice(&SAMPLE_SEEN);
        assert_eq!(v6, expected);
        assert_eq!(customer_timer(&v6), Ok(Some(100_000_000)));
        assert_eq!(decode_customer(&v6), Ok(sample_customer()));
    }

    /// The sample's one remembered event as versions 6 and 7 write it: one entry, the
    /// fingerprint, and how long before the newest event it occurred.
    const SAMPLE_SEEN: [u8; 13] = [
        0x01, 0x78, 0x4a, 0xec, 0x3b, 0x5e, 0x2e, 0xe7, 0xe5, 0xb0, 0x9a, 0xea, 0x55,
    ];

    #[test]
    fn version_seven_is_still_read() {
        // Written by the version-7 encoder: the V6 encoding with, in place of the fingerprints,
        // 00 (seal 0), 00 (none sealed), the fingerprints, then 01 00 (the sealed ones in the
        // body: none). It knew no losses.
        let v7 = golden("customer_v7.hex", None);
        let v6 = golden("customer_v6.hex", None);
        let head = v6.len() - SAMPLE_SEEN.len();
        let mut expected = vec![CUSTOMER_V7];
        expected.extend_from_slice(&v6[1..head]);
        expected.extend_from_slice(&[0x00, 0x00]);
        expected.extend_from_slice(&SAMPLE_SEEN);
        expected.extend_from_slice(&[0x01, 0x00]);
        assert_eq!(v7, expected);
        assert_eq!(customer_timer(&v7), Ok(Some(100_000_000)));
        assert_eq!(decode_customer(&v7), Ok(sample_customer()));
    }

    /// The sample with one loss, not won back.
    fn sample_lost() -> Customer {
        let mut customer = sample_customer();
        customer.losses.push(Loss {
            at: 95_000_000,
            segment: "gold".into(),
            reason: ReasonCode::Cancelled,
            value_minor: 1_500,
            won_back_at: None,
        });
        customer
    }

    /// The loss of [`sample_lost`] as versions 8 and 9 write it: 01 (one), 80 d7 cc 5a (at:
    /// zigzag 190,000,000), 04 67 6f 6c 64 ("gold"), 07 (Cancelled), b8 17 (value: zigzag
    /// 3,000), 00 (not won back).
    const SAMPLE_LOSS: [u8; 14] = [
        0x01, 0x80, 0xd7, 0xcc, 0x5a, 0x04, b'g', b'o', b'l', b'd', 0x07, 0xb8, 0x17, 0x00,
    ];

    #[test]
    fn version_eight_is_still_read() {
        // Written by the version-8 encoder: the V7 encoding with the losses after the trailing
        // months. It knew no early closes.
        let v8 = golden("customer_v8.hex", None);
        let v7 = golden("customer_v7.hex", None);
        let v6 = golden("customer_v6.hex", None);
        let head = v6.len() - SAMPLE_SEEN.len();
        let mut expected = vec![CUSTOMER_V8];
        expected.extend_from_slice(&v7[1..head]);
        expected.extend_from_slice(&SAMPLE_LOSS);
        expected.extend_from_slice(&v7[head..]);
        assert_eq!(v8, expected);
        assert_eq!(customer_timer(&v8), Ok(Some(100_000_000)));
        assert_eq!(decode_customer(&v8), Ok(sample_lost()));
    }

    /// [`sample_lost`] waiting for two orders or complaints: a delivery of order "o1" at
    /// 97,000,000, and an unsatisfied resolution of complaint "k1" at 98,000,000.
    fn sample_early() -> Customer {
        let mut customer = sample_lost();
        customer.state.early_closes = vec![
            EarlyClose {
                id: "o1".into(),
                at: 97_000_000,
                close: crate::fold::Close::Delivered,
            },
            EarlyClose {
                id: "k1".into(),
                at: 98_000_000,
                close: crate::fold::Close::Resolved {
                    satisfied: Some(false),
                },
            },
        ];
        customer
    }

    /// The early closes of [`sample_early`] as versions 9 and 10 write them: 02 (two); 02 6f
    /// 31 ("o1"), 80 e9 c0 5c (at: zigzag 194,000,000), 00 (Delivered); 02 6b 31 ("k1"), 80 f2
    /// ba 5d (zigzag 196,000,000), 02 (Resolved), 01 00 (satisfied: Some(false)).
    const SAMPLE_CLOSES: [u8; 19] = [
        0x02, 0x02, b'o', b'1', 0x80, 0xe9, 0xc0, 0x5c, 0x00, 0x02, b'k', b'1', 0x80, 0xf2, 0xba,
        0x5d, 0x02, 0x01, 0x00,
    ];

    #[test]
    fn version_nine_is_still_read() {
        // Written by the version-9 encoder: the V8 encoding with the early closes after the
        // losses. It kept no renewal time.
        let v9 = golden("customer_v9.hex", None);
        let v8 = golden("customer_v8.hex", None);
        let v6 = golden("customer_v6.hex", None);
        let head = v6.len() - SAMPLE_SEEN.len() + SAMPLE_LOSS.len();
        let mut expected = vec![CUSTOMER_V9];
        expected.extend_from_slice(&v8[1..head]);
        expected.extend_from_slice(&SAMPLE_CLOSES);
        expected.extend_from_slice(&v8[head..]);
        assert_eq!(v9, expected);
        assert_eq!(customer_timer(&v9), Ok(Some(100_000_000)));
        assert_eq!(decode_customer(&v9), Ok(sample_early()));
    }

    /// [`sample_early`] renewed last at 99,000,000.
    fn sample_renewed() -> Customer {
        let mut customer = sample_early();
        customer.state.last_renewal_at = Some(99_000_000);
        customer
    }

    #[test]
    fn version_ten_layout_is_pinned() {
        // Written once (UPDATE_GOLDEN=1). If this fails, the stored layout changed: add
        // CUSTOMER_V11 and keep reading V1 to V10. A V10 encoding is the V9 one with the latest
        // renewal's time after the early closes: 01 80 fb b4 5e (Some: zigzag 198,000,000).
        let encoded = encode_customer(&sample_renewed());
        assert_eq!(encoded, golden("customer_v10.hex", Some(&encoded)));
        let v9 = golden("customer_v9.hex", None);
        let v6 = golden("customer_v6.hex", None);
        let head = v6.len() - SAMPLE_SEEN.len() + SAMPLE_LOSS.len();
        let renewed = head + SAMPLE_CLOSES.len();
        let mut expected = vec![CUSTOMER_V10];
        expected.extend_from_slice(&v9[1..renewed]);
        expected.extend_from_slice(&[0x01, 0x80, 0xfb, 0xb4, 0x5e]);
        expected.extend_from_slice(&v9[renewed..]);
        assert_eq!(encoded, expected);
        assert_eq!(customer_timer(&encoded), Ok(Some(100_000_000)));
        assert_eq!(decode_customer(&encoded), Ok(sample_renewed()));
        // None waiting, never renewed: 00 00.
        let encoded = encode_customer(&sample_lost());
        assert_eq!(&encoded[head..head + 2], &[0x00, 0x00]);
        assert_eq!(decode_customer(&encoded), Ok(sample_lost()));
        // Won back at 96,000,000: 01 80 e0 c6 5b in place of the loss's last 00.
        let mut won = sample_lost();
        won.losses[0].won_back_at = Some(96_000_000);
        let encoded = encode_customer(&won);
        let at = head - 1;
        assert_eq!(&encoded[at..at + 5], &[0x01, 0x80, 0xe0, 0xc6, 0x5b]);
        assert_eq!(decode_customer(&encoded), Ok(won));
        let head = head + 2;
        let expected = encode_customer(&sample_lost());

        let mut untimed = sample_lost();
        untimed.risk.timer_at = None;
        let encoded = encode_customer(&untimed);
        assert_eq!(&encoded[..2], &[10, 0]);
        assert_eq!(customer_timer(&encoded), Ok(None));
        assert_eq!(decode_customer(&encoded), Ok(untimed));

        // Sealed (seal 3), and kept apart: 03 01 (seal 3, one sealed), 00 (none after it),
        // 00 (the sealed one apart); apart, 01 (version), 03 (seal), 80 aa ea 55 (newest
        // event: zigzag 180,000,000), then the event as above.
        let mut sealed = sample_lost();
        sealed.state.seen_sealed = 1;
        sealed.state.seal = 3;
        let apart = encode_customer_apart(&sealed);
        assert_eq!(&apart[..head], &expected[..head]);
        assert_eq!(&apart[head..], &[0x03, 0x01, 0x00, 0x00]);
        let kept = encode_sealed(&sealed.state);
        let mut expected_kept = vec![SEALED_V1, 0x03, 0x80, 0xaa, 0xea, 0x55];
        expected_kept.extend_from_slice(&SAMPLE_SEEN);
        assert_eq!(kept, expected_kept);
        let Ok(Stored::Apart {
            mut customer,
            seal: 3,
            sealed: 1,
        }) = decode_stored(&apart)
        else {
            panic!("kept apart: {:?}", decode_stored(&apart));
        };
        assert!(customer.state.seen.is_empty());
        join_sealed(&mut customer, (3, 1), &kept).expect("the sealed events join");
        assert_eq!(customer, sealed);
        assert_eq!(
            decode_customer(&encode_customer(&sealed)),
            Ok(sealed.clone())
        );
        // Sealed events of another seal, or of another count, are refused.
        let mut other = sealed.clone();
        other.state.seen.clear();
        assert!(join_sealed(&mut other, (4, 1), &kept).is_err());
        assert!(join_sealed(&mut other, (3, 2), &kept).is_err());
        assert!(decode_customer(&apart).is_err(), "not whole");
    }

    #[test]
    fn an_event_remembered_in_version_five_is_still_a_duplicate() {
        // Version 5 stored the id itself; read back, it is fingerprinted, so the event's
        // redelivery after an upgrade changes nothing.
        let mut state = decode_customer(&golden("customer_v5.hex", None))
            .expect("version 5 decodes")
            .state;
        let limits = crate::fold::FoldLimits {
            dedup_horizon_ms: 30 * 86_400_000,
            max_dedup_ids: 100,
            max_open_items: 100,
            clock_skew_ms: 300_000,
        };
        let mut event = crate::event::Event {
            event_id: "e".into(),
            customer_id: "c-1".into(),
            occurred_at: 1_000,
            kind: crate::event::EventKind::Survey { score: 2 },
        };
        let before = state.clone();
        assert_eq!(
            state.apply(&event, &limits),
            crate::fold::Outcome::Duplicate
        );
        assert_eq!(state, before);
        event.event_id = "f".into();
        assert_ne!(
            state.apply(&event, &limits),
            crate::fold::Outcome::Duplicate
        );
        assert_eq!(state.seen.len(), 2);
    }

    #[test]
    fn json_shows_remembered_events_as_hexadecimal_fingerprints() {
        // What GET /customers/{id} serves; XXH3-64 of "e" from Python's `xxhash` package.
        let state = sample();
        let json = serde_json::to_value(&state).expect("plain struct");
        assert_eq!(
            json["seen"],
            serde_json::json!([{"fingerprint": "e5e72e5e3bec4a78", "occurred_at": 1000}])
        );
        assert_eq!(
            serde_json::from_value::<CustomerState>(json).ok(),
            Some(state)
        );
    }

    #[test]
    fn a_version_six_body_with_ids_in_their_old_place_or_bytes_after_is_an_error() {
        let encoded = encode_customer(&sample_customer());
        let mut longer = encoded.clone();
        longer.push(0);
        assert!(decode_customer(&longer).is_err());
        let v5 = golden("customer_v5.hex", None);
        let mut both = v5.clone();
        both[0] = CUSTOMER_V6;
        both.extend_from_slice(&encoded[encoded.len() - 13..]);
        assert!(decode_customer(&both).is_err());
        both.truncate(v5.len());
        assert!(decode_customer(&both).is_err(), "no fingerprints at all");
    }

    #[test]
    fn a_timer_prefix_that_disagrees_with_the_body_is_an_error() {
        let mut encoded = encode_customer(&sample_customer());
        encoded[9] ^= 1;
        assert!(decode_customer(&encoded).unwrap_err().contains("disagrees"));
        assert!(customer_timer(&[CUSTOMER_V5, 1, 0, 0]).is_err());
        assert!(customer_timer(&[CUSTOMER_V5]).is_err());
    }

    #[test]
    fn segments_versions_one_and_two_are_still_read() {
        // Version 1 is version 2 without `active_at_close`: the same fields in the same order.
        let mut segments = Segments::default();
        segments.population.insert(
            "gold".into(),
            crate::segments::Population {
                by_lifecycle: [1, 2, 0, 3, 0],
                by_level: [3, 2, 1],
                active_ltv_minor: 900,
            },
        );
        segments.margin_to_date_minor.insert("gold".into(), -5);
        segments.closed_before = Some(86_400_000);
        let v1 = encode(
            SEGMENTS_V1,
            &(
                &segments.population,
                &segments.margin_to_date_minor,
                &segments.days,
                &segments.closed_before,
            ),
        );
        assert_eq!(decode_segments(&v1), Ok(segments.clone()));
        segments.active_at_close = Some(3);
        // Version 2 is version 3 without the population's changes per open day.
        let v2 = encode(
            SEGMENTS_V2,
            &(
                &segments.population,
                &segments.margin_to_date_minor,
                &segments.days,
                &segments.closed_before,
                &segments.active_at_close,
            ),
        );
        assert_eq!(decode_segments(&v2), Ok(segments.clone()));
        let mut change = crate::segments::Population::default();
        change.by_lifecycle[1] = -1;
        segments
            .population_changes
            .insert(2 * 86_400_000, [("gold".to_owned(), change)].into());
        let v3 = encode_segments(&segments);
        assert_eq!(v3[0], SEGMENTS_V3);
        assert_eq!(decode_segments(&v3), Ok(segments));
    }

    #[test]
    fn trends_versions_one_and_two_are_still_read_and_two_adds_where_complaints_began() {
        let mut trends = Trends::default();
        let s = crate::trends::TrendSettings::defaults(&["billing"]);
        trends.opened("billing", crate::event::Severity::High, 5_000, &s);
        trends.closed_before = Some(3_600_000);
        trends.newest = Some(7_200_000);
        // Version 1 is version 2 without `began`: the same fields in the same order.
        let v1 = encode(
            TRENDS_V1,
            &(
                &trends.categories,
                &trends.windows,
                &trends.closed_before,
                &trends.newest,
            ),
        );
        let read = decode_trends(&v1).expect("version 1 decodes");
        assert_eq!(read.began, None, "V1 knew not where complaints began");
        let mut without_began = trends.clone();
        without_began.began = None;
        assert_eq!(without_began, read);
        assert_eq!(trends.began, Some(5_000));
        // Version 2 is version 1, then Some(5,000): 01, then zigzag 10,000 as a varint (90 4e).
        let mut v2 = v1.clone();
        v2[0] = TRENDS_V2;
        v2.extend_from_slice(&[0x01, 0x90, 0x4e]);
        assert_eq!(decode_trends(&v2), Ok(trends.clone()));
        assert!(trends.verdicts.is_empty(), "no window closed");
        // Version 3 is version 2, then an empty map of verdicts: a length of 0.
        let v3 = [&[TRENDS_V3][..], &v2[1..], &[0x00]].concat();
        assert_eq!(decode_trends(&v3), Ok(trends.clone()));
        // Version 4 is version 3, then an empty map of complaints left open: a length of 0.
        let v4 = encode_trends(&trends);
        assert_eq!(v4[0], TRENDS_V4);
        assert_eq!(&v4[1..], [&v3[1..], &[0x00]].concat());
        assert_eq!(decode_trends(&v4), Ok(trends));
    }

    #[test]
    fn trends_version_three_adds_each_categorys_last_verdict() {
        let s = crate::trends::TrendSettings::defaults(&["billing"]);
        let mut trends = Trends::default();
        for i in 0..3 {
            trends.opened("billing", crate::event::Severity::High, i * 60_000, &s);
        }
        trends.close_until(3_600_000, &s);
        let billing = crate::trends::Verdict {
            z_score: 0.0,
            spike: false,
        };
        assert_eq!(trends.verdicts.get("billing"), Some(&billing));
        // Version 3: version 4 without its last byte, its empty map of complaints left open.
        let v4 = encode_trends(&trends);
        assert_eq!(v4.last(), Some(&0));
        let mut v2 = v4[..v4.len() - 1].to_vec();
        // The verdicts come last: their count, then billing's and other's, each a name (its
        // length, then its bytes), the z-score's 8 bytes and the flag's byte.
        let tail = 1 + (1 + 7 + 8 + 1) + (1 + 5 + 8 + 1);
        assert_eq!(v2[v2.len() - tail], 2, "two verdicts");
        v2.truncate(v2.len() - tail);
        v2[0] = TRENDS_V2;
        let read = decode_trends(&v2).expect("the same trends as version 2");
        assert!(read.verdicts.is_empty());
        let mut without = trends.clone();
        without.verdicts.clear();
        assert_eq!(read, without);
        assert_eq!(decode_trends(&encode_trends(&trends)), Ok(trends));
    }

    #[test]
    fn trends_version_four_adds_the_complaints_left_open_by_window() {
        let s = crate::trends::TrendSettings::defaults(&["billing"]);
        let mut trends = Trends::default();
        trends.opened("billing", crate::event::Severity::High, 5_000, &s);
        let with_nothing_left = trends.clone();
        trends.left_open("billing", Some(3_599_999), &s);
        let v4 = encode_trends(&trends);
        assert_eq!(v4[0], TRENDS_V4);
        // They come last: one, at window 0 (00), "billing" (07 and its bytes), once (01).
        let tail = [&[1, 0, 7][..], b"billing", &[1]].concat();
        assert!(v4.ends_with(&tail), "{v4:?}");
        assert_eq!(decode_trends(&v4), Ok(trends.clone()));
        // Version 3 has none: its body without them is the trends with nothing left, their
        // backlog as it stands.
        let v3 = [&[TRENDS_V3][..], &v4[1..v4.len() - tail.len()]].concat();
        let read = decode_trends(&v3).expect("version 3 reads");
        assert!(read.left.is_empty());
        assert_eq!(read.categories, trends.categories);
        assert_ne!(
            read.categories, with_nothing_left.categories,
            "the backlog moved"
        );
    }

    #[test]
    fn outbox_version_one_is_still_read_and_version_two_adds_the_partition() {
        // By hand from the postcard spec: version, "t" (length-prefixed), Some([1]), None, no
        // headers; version 2 appends Some(3), an i32 as a zigzag varint (6).
        let v1 = [1, 1, b't', 1, 1, 1, 0, 0];
        let mut record = OutboxRecord {
            topic: "t".into(),
            key: Some(vec![1]),
            value: None,
            headers: Vec::new(),
            partition: None,
        };
        assert_eq!(decode_outbox(&v1), Ok(Output::Record(record.clone())));
        record.partition = Some(3);
        let v2 = [2, 1, b't', 1, 1, 1, 0, 0, 1, 6];
        let record = Output::Record(record);
        assert_eq!(encode_outbox(&record), v2);
        assert_eq!(decode_outbox(&v2), Ok(record));
    }

    #[test]
    fn a_commits_outbox_records_are_stored_as_one_chunk_each_with_its_number() {
        let record = |topic: &str| {
            Output::Record(OutboxRecord {
                topic: topic.into(),
                key: Some(vec![1]),
                value: Some(vec![2; 300]),
                headers: vec![("h".into(), vec![3])],
                partition: Some(1),
            })
        };
        let outputs = [record("a"), record("b"), record("c")];
        let chunk = encode_outbox_chunk(41, &outputs);
        // By hand: the chunk's version, then each record's number (8 bytes), its length (4)
        // and its encoding as a value of its own.
        let mut want = vec![OUTBOX_CHUNK_V1];
        for (seq, output) in (41u64..).zip(&outputs) {
            let one = encode_outbox(output);
            want.extend(seq.to_be_bytes());
            want.extend((one.len() as u32).to_be_bytes());
            want.extend(one);
        }
        assert_eq!(chunk, want);
        let parts = outbox_parts(41, &chunk).expect("reads");
        let numbers: Vec<u64> = parts.iter().map(|&(seq, _)| seq).collect();
        assert_eq!(numbers, [41, 42, 43]);
        for ((_, bytes), output) in parts.iter().zip(&outputs) {
            assert_eq!(decode_outbox(bytes).as_ref(), Ok(output));
        }
        // What is left once a record is dropped, numbered as before.
        let left = encode_outbox_parts([parts[0], parts[2]]);
        let read = outbox_parts(41, &left).expect("reads");
        assert_eq!(read, [parts[0], parts[2]]);
        // A value written before chunks is one record, numbered by its key.
        let single = encode_outbox(&outputs[1]);
        assert_eq!(outbox_parts(7, &single), Ok(vec![(7, &single[..])]));
        // Cut anywhere inside a record's number, length or bytes, or out of order: an error.
        for cut in [5, 13, 20, chunk.len() - 1] {
            assert!(outbox_parts(41, &chunk[..cut]).is_err(), "cut at {cut}");
        }
        let backwards = encode_outbox_parts([parts[2], parts[0]]);
        assert!(outbox_parts(41, &backwards).is_err());
    }

    /// A churn-risk record whose reasons' details are `details`.
    fn churn_risk_output(details: Vec<crate::risk::Detail>) -> Output {
        use crate::risk::{ChurnRiskRecord, Reason};
        Output::ChurnRisk {
            topic: "t".into(),
            record: Box::new(ChurnRiskRecord {
                customer_id: "c".into(),
                record_id: "r".into(),
                caused_by: Some("e".into()),
                as_of: 1,
                expected_orders_90d: 0.5,
                level: Level::High,
                lifecycle: Lifecycle::AtRisk,
                ltv_minor: -3,
                p_alive: 1.0,
                reasons: details
                    .into_iter()
                    .map(|detail| Reason {
                        code: ReasonCode::Detractor,
                        detail,
                    })
                    .collect(),
                rfm: Some(crate::rfm::Score {
                    f: 1,
                    m: 2,
                    r: 3,
                    segment: "s".into(),
                }),
                score: 0.25,
                segment: "g".into(),
            }),
        }
    }

    /// By hand from the postcard spec: `version`, then the topic and the record's fields in
    /// order — strings length-prefixed, `Some` as 1, integers as (zigzag) varints, floats as 8
    /// little-endian bytes, enums as their variant's index (`High` 2, `AtRisk` 2, `Detractor`
    /// 3), `u8` as itself — with `reasons`, the reasons' bytes after their count.
    fn churn_risk_bytes(version: u8, reasons: &[u8]) -> Vec<u8> {
        let mut bytes = vec![version, 1, b't', 1, b'c', 1, b'r', 1, 1, b'e', 2];
        bytes.extend(0.5f64.to_le_bytes());
        bytes.extend([2, 2, 5]);
        bytes.extend(1.0f64.to_le_bytes());
        bytes.extend(reasons);
        bytes.extend([1, 1, 2, 3, 1, b's']);
        bytes.extend(0.25f64.to_le_bytes());
        bytes.extend([1, b'g']);
        bytes
    }

    #[test]
    fn a_churn_risk_record_is_stored_as_version_five_its_details_as_values() {
        use crate::risk::Said;
        let output = churn_risk_output(vec![
            Said::SurveyScore(2).into(),
            Said::Cancelled(Some("d".into())).into(),
        ]);
        // Two reasons, each the code 3 then the detail's variant (`SurveyScore` 5,
        // `Cancelled` 10) and its values.
        let v5 = churn_risk_bytes(5, &[2, 3, 5, 2, 3, 10, 1, 1, b'd']);
        assert_eq!(encode_outbox(&output), v5);
        assert_eq!(decode_outbox(&v5), Ok(output));
        assert!(decode_outbox(&v5[..v5.len() - 1]).is_err(), "cut short");
    }

    #[test]
    fn a_churn_risk_record_an_earlier_build_stored_is_read_with_its_details_as_text() {
        // Version 3: one reason, the code 3, then its detail's text after its length.
        let mut reasons = vec![1, 3, 19];
        reasons.extend(b"last survey score 2");
        let v3 = churn_risk_bytes(3, &reasons);
        let read = decode_outbox(&v3).expect("version 3 is read");
        assert_eq!(read, churn_risk_output(vec!["last survey score 2".into()]));
        assert!(decode_outbox(&v3[..v3.len() - 1]).is_err(), "cut short");
        // Its JSON is that of the same record stored with the values.
        let json = |output: &Output| match output {
            Output::ChurnRisk { record, .. } => record.to_json(),
            Output::Record(_) => unreachable!("a churn-risk record"),
        };
        let values = churn_risk_output(vec![crate::risk::Said::SurveyScore(2).into()]);
        assert_eq!(json(&read), json(&values));
    }

    #[test]
    fn unknown_version_and_garbage_are_errors_not_panics() {
        assert!(decode_customer(&[]).is_err());
        assert!(decode_customer(&[9, 1, 2])
            .unwrap_err()
            .contains("version 9"));
        assert!(decode_customer(&[CUSTOMER_V1, 0xff, 0xff]).is_err());
        assert!(decode_customer(&[CUSTOMER_V2, 0xff, 0xff]).is_err());
        assert!(decode_customer(&[CUSTOMER_V3, 0xff, 0xff]).is_err());
        assert!(decode_customer(&[CUSTOMER_V4, 0xff, 0xff]).is_err());
        assert!(decode_customer(&[CUSTOMER_V5, 0, 0xff, 0xff]).is_err());
        assert!(decode_customer(&[CUSTOMER_V6, 0, 0xff, 0xff]).is_err());
    }

    #[test]
    fn outbox_records_keep_the_layout_they_had_before_bytes_were_written_whole() {
        // The version-2 layout as first written: keys, values and header values as sequences
        // of `u8`.
        #[derive(serde::Serialize)]
        struct SequenceLayout<'a> {
            topic: &'a str,
            key: Option<&'a [u8]>,
            value: Option<&'a [u8]>,
            headers: &'a [crate::store::Header],
            partition: Option<i32>,
        }
        let long: Vec<u8> = (0..=255u8).cycle().take(700).collect();
        for (key, value, headers) in [
            (
                Some(b"c-1".to_vec()),
                Some(long.clone()),
                vec![("record_id".into(), b"orders-1-7".to_vec())],
            ),
            (None, None, Vec::new()),
            (
                Some(Vec::new()),
                Some(vec![0x80, 0xff, 0]),
                vec![
                    ("record_id".into(), Vec::new()),
                    ("facts".into(), long.clone()),
                ],
            ),
        ] {
            let record = OutboxRecord {
                topic: "customer.churn-risk".into(),
                key: key.clone(),
                value: value.clone(),
                headers,
                partition: Some(3),
            };
            let before = encode(
                OUTBOX_V2,
                &SequenceLayout {
                    topic: &record.topic,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    headers: &record.headers,
                    partition: record.partition,
                },
            );
            let record = Output::Record(record);
            assert_eq!(encode_outbox(&record), before);
            assert_eq!(decode_outbox(&before).unwrap(), record);
        }
    }

    fn owned_by_7() -> Ownership {
        Ownership {
            owner: Some((7, vec![3, 10])),
            last: None,
        }
    }

    #[test]
    fn ownership_version_one_is_still_read_with_no_number_counted() {
        // By hand from the postcard spec: 01 (version), 01 (Some), 07 (writer 7), 02 (two
        // claims), 06 14 (3 and 10, zigzag varints).
        let v1 = [1, 1, 7, 2, 6, 0x14];
        assert_eq!(decode_ownership(&v1), Ok(owned_by_7()));
        let counted = Ownership {
            last: Some(super::super::changelog::Counted {
                writer: 7,
                claim: Some(10),
                number: 300,
            }),
            ..owned_by_7()
        };
        assert_eq!(decode_ownership(&encode_ownership(&counted)), Ok(counted));
    }

    #[test]
    fn snapshot_version_two_is_still_read_with_no_number_counted() {
        // By hand from the postcard spec: 02 (version), 00 00 (no trends, no segments), 00 (no
        // cells), 00 00 00 00 00 00 (three empty scales: total 0, no values), 01 (one
        // partition): 04 (partition 2), f0 01 (next offset 120), 01 90 4e (watermark 5,000),
        // then a version-1 ownership's body: 01 07 01 06 (writer 7, one claim: 3).
        let v2 = [
            2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 4, 0xf0, 1, 1, 0x90, 0x4e, 1, 7, 1, 6,
        ];
        let ownership = Ownership {
            owner: Some((7, vec![3])),
            last: None,
        };
        let snapshot = AggregatorSnapshot {
            partitions: vec![(2, 120, Some(5_000), ownership)],
            ..AggregatorSnapshot::default()
        };
        assert_eq!(decode_snapshot(&v2), Ok(snapshot.clone()));
        let mut counted = snapshot;
        counted.partitions[0].3.last = Some(super::super::changelog::Counted {
            writer: 7,
            claim: None,
            number: 12,
        });
        assert_eq!(decode_snapshot(&encode_snapshot(&counted)), Ok(counted));
    }

    #[test]
    fn snapshot_version_three_is_still_read_its_trends_with_no_verdicts() {
        let s = crate::trends::TrendSettings::defaults(&["billing"]);
        let mut trends = Trends::default();
        trends.opened("billing", crate::event::Severity::High, 5_000, &s);
        // A version-2 trends body: version 4's without its version byte and its last two bytes
        // (the counts of its verdicts and of its complaints left open, none).
        let v4_trends = encode_trends(&trends);
        assert!(v4_trends.ends_with(&[0, 0]));
        let v2_body = &v4_trends[1..v4_trends.len() - 2];
        // 03 (version), 01 (trends) and their body, 00 (no segments), 00 (no cells), six 00
        // (three empty scales), 00 (no partitions).
        let v3 = [&[3, 1][..], v2_body, &[0; 9]].concat();
        let snapshot = AggregatorSnapshot {
            trends: Some(trends),
            ..AggregatorSnapshot::default()
        };
        assert_eq!(decode_snapshot(&v3), Ok(snapshot.clone()));
        let mut closed = snapshot;
        let trends = closed.trends.as_mut().unwrap();
        trends.close_until(3_600_000, &s);
        assert_eq!(trends.verdicts.len(), 2, "billing and other");
        let v7 = encode_snapshot(&closed);
        assert_eq!(v7[0], SNAPSHOT_V7);
        assert_eq!(decode_snapshot(&v7), Ok(closed));
    }

    #[test]
    fn snapshot_versions_four_to_six_are_still_read_with_nothing_left_no_window_length_or_inputs() {
        let s = crate::trends::TrendSettings::defaults(&["billing"]);
        let mut trends = Trends::default();
        trends.opened("billing", crate::event::Severity::High, 5_000, &s);
        let trends_body = encode_trends(&trends)[1..].to_vec();
        let snapshot = AggregatorSnapshot {
            trends: Some(trends),
            ..AggregatorSnapshot::default()
        };
        // Version 7: 01 (trends) and their version-4 body first, the rest after, the last
        // byte 00 (no counted inputs); version 6 is the same without that byte.
        let v7 = encode_snapshot(&snapshot);
        assert_eq!(&v7[..2], [SNAPSHOT_V7, 1]);
        assert_eq!(v7.last(), Some(&0));
        let v6 = [&[SNAPSHOT_V6][..], &v7[1..v7.len() - 1]].concat();
        assert_eq!(decode_snapshot(&v6), Ok(snapshot.clone()));
        assert_eq!(&v6[2..2 + trends_body.len()], trends_body);
        let rest = &v6[2 + trends_body.len()..];
        // A version-5 snapshot: its trends version 3, without the last byte (00: nothing left).
        assert_eq!(trends_body.last(), Some(&0));
        let v3_body = &trends_body[..trends_body.len() - 1];
        let v5 = [&[SNAPSHOT_V5, 1][..], v3_body, rest].concat();
        assert_eq!(decode_snapshot(&v5), Ok(snapshot.clone()));
        // A version-4 snapshot: version 5's body without its last byte (postcard's 00 for no
        // window length).
        assert_eq!(v5.last(), Some(&0));
        let v4 = [&[SNAPSHOT_V4][..], &v5[1..v5.len() - 1]].concat();
        assert_eq!(decode_snapshot(&v4), Ok(snapshot.clone()));
        let hourly = AggregatorSnapshot {
            window_ms: Some(3_600_000),
            inputs: vec![(
                2,
                Position {
                    writer: 7,
                    offsets: vec![("orders".into(), 12)],
                    event_times: Vec::new(),
                },
            )],
            ..snapshot
        };
        assert_eq!(decode_snapshot(&encode_snapshot(&hourly)), Ok(hourly));
    }
}
