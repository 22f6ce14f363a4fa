//! Stored bodies written by hand in postcard's wire format, without serde's calls per field and
//! per byte: a customer's body (state, risk memo, standing, trailing months, then the
//! remembered events), the same bytes `postcard` writes for the tuple of the four and then
//! [`SeenEntries`], the complaint trends, the same bytes it writes for [`Trends`], a
//! changelog record's facts, those it writes for a slice of [`Fact`], and the outbox's records
//! ([`OutboxRecord`], and a churn-risk record with its topic). Each goes into every commit that
//! changed it: a customer took about 5,500 instructions through
//! serde and 3,900 by hand (callgrind, 2026-12-01; `benches/HISTORY.md`). Decoding stays with
//! `postcard`. Must not know about keys, the version byte or the timer prefix (`codec` writes
//! those).
//!
//! Each struct is taken apart by an exhaustive pattern where its fields are public, so a field
//! added to a stored type does not compile here until it is written; the unit tests compare the
//! bytes with `postcard`'s for arbitrary customers and trends.
//!
//! The format (postcard 1.x): unsigned integers as LEB128 varints, signed ones zigzag-mapped
//! first, `u8` as one byte, a `bool` as a byte 0 or 1, `f64` as 8 little-endian bytes, a string or a sequence (a map too)
//! as its length (a varint) then its elements, an `Option` as a byte 0 or a byte 1 then the
//! value, a unit enum variant as its index (a varint), structs, tuples and arrays as their
//! fields in order.

use crate::event::Severity;
use crate::facts::{Fact, OwnedFlow};
use crate::fold::{
    Close, CustomerState, EarlyClose, EventFingerprint, Lifecycle, OpenComplaint, OpenOrder,
    SeenEvent, Subscription,
};
use crate::rfm::Point;
use crate::risk::{ChurnRiskRecord, Level, Published, Reason, ReasonCode, RiskMemo, Said};
use crate::segments::{Loss, Standing, Trailing};
use crate::trends::{Baseline, CategoryTrend, Trends, Verdict, Window};

use super::{Customer, OutboxRecord};

/// Appends the customer's body to `out` (that of encoding version 10), the sealed remembered
/// events in it: the layout of version 4 with no event ids in it, then [`SeenSection`].
pub fn write_customer_body(customer: &Customer, out: &mut Vec<u8>) {
    write_head(customer, out);
    let mut w = Writer(out);
    w.seen_section(&customer.state);
    w.0.push(1);
    w.seen_entries(sealed(&customer.state), customer.state.last_event_at);
}

/// The same body with the sealed remembered events left out, for the store to keep apart
/// ([`write_sealed`]): the same bytes up to the last, a byte 0 where the other has a byte 1
/// and the sealed events.
pub fn write_customer_body_apart(customer: &Customer, out: &mut Vec<u8>) {
    write_head(customer, out);
    let mut w = Writer(out);
    w.seen_section(&customer.state);
    w.0.push(0);
}

/// The sealed remembered events as the store keeps them apart, in `postcard`'s bytes for
/// [`Sealed`]: the seal, the customer's newest event time, and the events before it.
pub fn write_sealed(state: &CustomerState, out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.unsigned(state.seal);
    w.signed(state.last_event_at);
    w.seen_entries(sealed(state), state.last_event_at);
}

fn sealed(state: &CustomerState) -> &[SeenEvent] {
    &state.seen[..(state.seen_sealed as usize).min(state.seen.len())]
}

/// The state, risk memo, standing, trailing months, losses, early closes and latest renewal's
/// time: the bytes `postcard` writes for the tuple of the four, with no event ids in the place
/// of versions 1 to 5's, then for the losses, then for the state's early closes, then for its
/// `last_renewal_at`.
fn write_head(customer: &Customer, out: &mut Vec<u8>) {
    let Customer {
        state,
        risk,
        standing,
        trailing,
        losses,
    } = customer;
    let mut w = Writer(out);
    w.state(state);
    w.risk(risk);
    w.option(standing.as_ref(), Writer::standing);
    w.trailing(trailing);
    w.len(losses.len());
    for loss in losses {
        w.loss(loss);
    }
    w.len(state.early_closes.len());
    for close in &state.early_closes {
        w.early_close(close);
    }
    w.time(state.last_renewal_at.as_ref());
}

/// What a version-6 body stores of each remembered event, as `postcard` reads it back: the
/// fingerprint's bytes and how long before the customer's newest event it occurred.
pub type SeenEntries = Vec<([u8; 8], i64)>;

/// What a version-7 body stores of the remembered events after its head, as `postcard` reads
/// it back: the seal, how many are sealed, the events after the sealed ones, and the sealed
/// ones when they are in the body (`None`: kept apart, [`Sealed`]).
pub type SeenSection = (u32, u32, SeenEntries, Option<SeenEntries>);

/// The sealed remembered events kept apart: the seal, the newest event time of the customer
/// when they were written, and the events by how long before it they occurred.
pub type Sealed = (u32, i64, SeenEntries);

/// The remembered events of a customer whose newest event occurred at `last_event_at`, from
/// what a version-6 or -7 body stored.
pub fn seen_entries(entries: SeenEntries, last_event_at: crate::event::Millis) -> Vec<SeenEvent> {
    entries
        .into_iter()
        .map(|(fingerprint, before)| SeenEvent {
            fingerprint: EventFingerprint(u64::from_le_bytes(fingerprint)),
            occurred_at: last_event_at.wrapping_sub(before),
        })
        .collect()
}

/// Appends the complaint trends' body to `out`: the bytes `postcard` writes for [`Trends`]
/// (its derived `open_change` is not stored). The trends go into every commit that changed
/// them, and with the input's partitions days apart in event time they hold thousands of open
/// windows: through serde that was about 320,000 instructions a commit in the broker benchmark.
pub fn write_trends(trends: &Trends, out: &mut Vec<u8>) {
    // Not exhaustive: `open_change` is private to `trends`. A field added to what is stored
    // still changes `postcard`'s bytes, which the tests compare with these.
    let Trends {
        categories,
        windows,
        closed_before,
        newest,
        began,
        verdicts,
        left,
        ..
    } = trends;
    let mut w = Writer(out);
    w.len(categories.len());
    for (category, trend) in categories {
        w.str(category);
        w.category_trend(trend);
    }
    w.len(windows.len());
    for ((start, category), window) in windows {
        w.signed(*start);
        w.str(category);
        w.window(window);
    }
    w.time(closed_before.as_ref());
    w.time(newest.as_ref());
    w.time(began.as_ref());
    w.len(verdicts.len());
    for (category, verdict) in verdicts {
        let Verdict { z_score, spike } = verdict;
        w.str(category);
        w.float(*z_score);
        w.boolean(*spike);
    }
    w.len(left.len());
    for ((start, category), n) in left {
        w.signed(*start);
        w.str(category);
        w.unsigned(*n);
    }
}

/// Appends the facts a changelog record carries to `out`: the bytes `postcard` writes for the
/// slice. Every changed customer's record carries them, with the changelog on: through serde
/// they were 2.6% of the broker benchmark's fold thread with the changelog (callgrind,
/// 2026-12-06; `benches/HISTORY.md`).
pub fn write_facts(facts: &[Fact], out: &mut Vec<u8>) {
    let mut w = Writer(out);
    w.len(facts.len());
    for fact in facts {
        w.fact(fact);
    }
}

/// Appends an outbox record to `out`: the bytes `postcard` writes for [`OutboxRecord`]. With
/// the changelog on, every changed customer's record is one; through serde a commit's outbox
/// was 4% of the broker benchmark's fold thread (callgrind, 2026-12-06).
pub fn write_outbox_record(record: &OutboxRecord, out: &mut Vec<u8>) {
    let OutboxRecord {
        topic,
        key,
        value,
        headers,
        partition,
    } = record;
    let mut w = Writer(out);
    w.str(topic);
    w.option(key.as_deref(), Writer::bytes);
    w.option(value.as_deref(), Writer::bytes);
    w.len(headers.len());
    for (name, value) in headers {
        w.str(name);
        w.bytes(value);
    }
    w.option(partition.as_ref(), |w, p| w.signed((*p).into()));
}

/// Appends a churn-risk record kept as data, after its topic, to `out`: the bytes `postcard`
/// writes for the pair.
pub fn write_churn_risk(topic: &str, record: &ChurnRiskRecord, out: &mut Vec<u8>) {
    let ChurnRiskRecord {
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
    } = record;
    let mut w = Writer(out);
    w.str(topic);
    w.str(customer_id);
    w.str(record_id);
    w.text(caused_by.as_ref());
    w.signed(*as_of);
    w.float(*expected_orders_90d);
    w.level(*level);
    w.lifecycle(*lifecycle);
    w.signed(*ltv_minor);
    w.float(*p_alive);
    w.len(reasons.len());
    for Reason { code, detail } in reasons {
        w.reason(*code);
        w.said(detail.said());
    }
    w.option(rfm.as_ref(), |w, rfm| {
        let crate::rfm::Score { f, m, r, segment } = rfm;
        w.0.extend_from_slice(&[*f, *m, *r]);
        w.str(segment);
    });
    w.float(*score);
    w.str(segment);
}

struct Writer<'a>(&'a mut Vec<u8>);

impl Writer<'_> {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push(value as u8 | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn signed(&mut self, value: i64) {
        self.varint(((value << 1) ^ (value >> 63)) as u64);
    }

    fn unsigned(&mut self, value: impl Into<u64>) {
        self.varint(value.into());
    }

    fn len(&mut self, len: usize) {
        self.varint(len as u64);
    }

    /// A string, as its UTF-8 bytes.
    fn str(&mut self, value: &str) {
        self.bytes(value.as_bytes());
    }

    fn float(&mut self, value: f64) {
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A byte string: its length, then its bytes.
    fn bytes(&mut self, value: &[u8]) {
        self.len(value.len());
        self.0.extend_from_slice(value);
    }

    /// A byte 0 or a byte 1.
    fn boolean(&mut self, value: bool) {
        self.0.push(u8::from(value));
    }

    fn option<T>(&mut self, value: Option<T>, write: impl FnOnce(&mut Self, T)) {
        match value {
            None => self.0.push(0),
            Some(value) => {
                self.0.push(1);
                write(self, value);
            }
        }
    }

    fn time(&mut self, value: Option<&i64>) {
        self.option(value, |w, v| w.signed(*v));
    }

    fn text(&mut self, value: Option<&String>) {
        self.option(value, |w, v| w.str(v));
    }

    /// A unit variant, by its index in declaration order (serde's `variant_index`).
    fn variant(&mut self, index: u32) {
        self.unsigned(index);
    }

    fn lifecycle(&mut self, value: Lifecycle) {
        self.variant(match value {
            Lifecycle::New => 0,
            Lifecycle::Active => 1,
            Lifecycle::AtRisk => 2,
            Lifecycle::Lost => 3,
            Lifecycle::WonBack => 4,
        });
    }

    fn level(&mut self, value: Level) {
        self.variant(match value {
            Level::Low => 0,
            Level::Medium => 1,
            Level::High => 2,
        });
    }

    fn state(&mut self, state: &CustomerState) {
        let CustomerState {
            customer_id,
            registered_at,
            referred_by,
            segment_hint,
            lifecycle,
            first_event_at,
            last_event_at,
            first_order_at,
            last_order_at,
            purchase_days,
            orders,
            revenue_minor,
            margin_minor,
            first_day_revenue_minor,
            open_orders,
            deliveries,
            delivery_seconds_total,
            returns,
            returned_minor,
            order_cancellations,
            open_complaints,
            complaints_opened,
            complaints_resolved,
            resolution_seconds_total,
            resolutions_unsatisfied,
            last_complaint_at,
            last_survey_score,
            last_survey_at,
            contacts,
            inbound_contacts,
            first_responses,
            first_response_seconds_total,
            subscription,
            renewals,
            renewal_revenue_minor,
            last_renewal_reason,
            cancellation_reason,
            cancelled_at,
            // Written after the losses, by `write_head`.
            early_closes: _,
            last_renewal_at: _,
            // Written after the body, by `seen_section`.
            seen: _,
            seen_sealed: _,
            seal: _,
        } = state;
        self.str(customer_id);
        self.time(registered_at.as_ref());
        self.text(referred_by.as_ref());
        self.text(segment_hint.as_ref());
        self.lifecycle(*lifecycle);
        self.signed(*first_event_at);
        self.signed(*last_event_at);
        self.time(first_order_at.as_ref());
        self.time(last_order_at.as_ref());
        self.len(purchase_days.len());
        for day in purchase_days {
            self.signed(i64::from(*day));
        }
        self.unsigned(*orders);
        self.signed(*revenue_minor);
        self.signed(*margin_minor);
        self.signed(*first_day_revenue_minor);
        self.len(open_orders.len());
        for OpenOrder {
            order_id,
            placed_at,
        } in open_orders
        {
            self.str(order_id);
            self.signed(*placed_at);
        }
        self.unsigned(*deliveries);
        self.unsigned(*delivery_seconds_total);
        self.unsigned(*returns);
        self.signed(*returned_minor);
        self.unsigned(*order_cancellations);
        self.len(open_complaints.len());
        for OpenComplaint {
            complaint_id,
            category,
            severity,
            opened_at,
        } in open_complaints
        {
            self.str(complaint_id);
            self.str(category);
            self.severity(*severity);
            self.signed(*opened_at);
        }
        self.unsigned(*complaints_opened);
        self.unsigned(*complaints_resolved);
        self.unsigned(*resolution_seconds_total);
        self.unsigned(*resolutions_unsatisfied);
        self.time(last_complaint_at.as_ref());
        self.option(last_survey_score.as_ref(), |w, score| w.0.push(*score));
        self.time(last_survey_at.as_ref());
        self.unsigned(*contacts);
        self.unsigned(*inbound_contacts);
        self.unsigned(*first_responses);
        self.unsigned(*first_response_seconds_total);
        self.variant(match subscription {
            Subscription::None => 0,
            Subscription::Active => 1,
            Subscription::Cancelled => 2,
        });
        self.unsigned(*renewals);
        self.signed(*renewal_revenue_minor);
        self.text(last_renewal_reason.as_ref());
        self.text(cancellation_reason.as_ref());
        self.time(cancelled_at.as_ref());
        // The place of versions 1 to 5's event ids, empty since the fingerprints follow the
        // body (`seen`).
        self.len(0);
    }

    /// The start of [`SeenSection`], up to the sealed events: the seal, how many are sealed,
    /// and the events after them.
    fn seen_section(&mut self, state: &CustomerState) {
        let sealed = sealed(state).len();
        self.unsigned(state.seal);
        self.len(sealed);
        self.seen_entries(&state.seen[sealed..], state.last_event_at);
    }

    /// Remembered events: postcard's bytes for a `Vec<([u8; 8], i64)>` of each fingerprint
    /// (little-endian) and how long before `newest` it occurred (a few bytes, where the event
    /// time itself takes six).
    fn seen_entries(&mut self, seen: &[SeenEvent], newest: crate::event::Millis) {
        self.len(seen.len());
        for SeenEvent {
            fingerprint,
            occurred_at,
        } in seen
        {
            self.0.extend_from_slice(&fingerprint.0.to_le_bytes());
            self.signed(newest.wrapping_sub(*occurred_at));
        }
    }

    fn risk(&mut self, risk: &RiskMemo) {
        let RiskMemo { last, timer_at } = risk;
        self.option(last.as_ref(), Writer::published);
        self.time(timer_at.as_ref());
    }

    fn published(&mut self, published: &Published) {
        let Published {
            as_of,
            score,
            level,
            reasons,
            lifecycle,
        } = published;
        self.signed(*as_of);
        self.float(*score);
        self.level(*level);
        self.len(reasons.len());
        for reason in reasons {
            self.reason(*reason);
        }
        self.lifecycle(*lifecycle);
    }

    fn reason(&mut self, reason: ReasonCode) {
        self.variant(match reason {
            ReasonCode::Inactive => 0,
            ReasonCode::UnresolvedComplaint => 1,
            ReasonCode::RecentBadExperience => 2,
            ReasonCode::Detractor => 3,
            ReasonCode::SlowResponse => 4,
            ReasonCode::LateDelivery => 5,
            ReasonCode::FrequentReturns => 6,
            ReasonCode::Cancelled => 7,
        });
    }

    fn loss(&mut self, loss: &Loss) {
        let Loss {
            at,
            segment,
            reason,
            value_minor,
            won_back_at,
        } = loss;
        self.signed(*at);
        self.str(segment);
        self.reason(*reason);
        self.signed(*value_minor);
        self.time(won_back_at.as_ref());
    }

    /// A reason's detail, by its variant's index in declaration order, then its values.
    fn said(&mut self, said: &Said) {
        match said {
            Said::Text(text) => {
                self.variant(0);
                self.str(text);
            }
            Said::Silent { days, p_alive } => {
                self.variant(1);
                self.signed(*days);
                self.float(*p_alive);
            }
            Said::Overdue {
                open,
                category,
                days,
            } => {
                self.variant(2);
                self.unsigned(*open);
                self.str(category);
                self.signed(*days);
            }
            Said::RecentComplaint => self.variant(3),
            Said::RecentDetractorSurvey => self.variant(4),
            Said::SurveyScore(score) => {
                self.variant(5);
                self.0.push(*score);
            }
            Said::FirstResponseSeconds(seconds) => {
                self.variant(6);
                self.unsigned(*seconds);
            }
            Said::Undelivered(orders) => {
                self.variant(7);
                self.unsigned(*orders);
            }
            Said::SlowDeliveries => self.variant(8),
            Said::Returns { returns, orders } => {
                self.variant(9);
                self.unsigned(*returns);
                self.unsigned(*orders);
            }
            Said::Cancelled(reason) => {
                self.variant(10);
                self.text(reason.as_ref());
            }
        }
    }

    fn severity(&mut self, value: Severity) {
        self.variant(match value {
            Severity::Low => 0,
            Severity::Medium => 1,
            Severity::High => 2,
            Severity::Critical => 3,
        });
    }

    /// A fact, by its variant's index in declaration order, then its fields.
    fn fact(&mut self, fact: &Fact) {
        match fact {
            Fact::Opened {
                category,
                severity,
                at,
            } => {
                self.variant(0);
                self.str(category);
                self.severity(*severity);
                self.signed(*at);
            }
            Fact::Resolved {
                category,
                opened_at,
                at,
            } => {
                self.variant(1);
                self.str(category);
                self.signed(*opened_at);
                self.signed(*at);
            }
            Fact::ForgetOpen { category } => {
                self.variant(2);
                self.str(category);
            }
            Fact::Count { segment, at, flow } => {
                self.variant(3);
                self.str(segment);
                self.signed(*at);
                self.flow(flow);
            }
            Fact::CountChange { segment, at, flow } => {
                self.variant(4);
                self.str(segment);
                self.signed(*at);
                self.flow(flow);
            }
            Fact::Restand { old, new, at } => {
                self.variant(5);
                self.option(old.as_ref(), Self::standing);
                self.option(new.as_ref(), Self::standing);
                self.signed(*at);
            }
            Fact::Relocate { old, new } => {
                self.variant(6);
                self.option(old.as_ref(), Self::point);
                self.option(new.as_ref(), Self::point);
            }
            Fact::LeftOpen { category, at } => {
                self.variant(7);
                self.str(category);
                self.signed(*at);
            }
        }
    }

    fn flow(&mut self, flow: &OwnedFlow) {
        match flow {
            OwnedFlow::Order {
                amount_minor,
                margin_minor,
            } => {
                self.variant(0);
                self.signed(*amount_minor);
                self.signed(*margin_minor);
            }
            OwnedFlow::New { value_minor } => {
                self.variant(1);
                self.signed(*value_minor);
            }
            OwnedFlow::Lost {
                value_minor,
                reason,
            } => {
                self.variant(2);
                self.signed(*value_minor);
                self.str(reason);
            }
            OwnedFlow::WonBack => self.variant(3),
            OwnedFlow::Renewal { reason } => {
                self.variant(4);
                self.str(reason);
            }
            OwnedFlow::Referral => self.variant(5),
        }
    }

    fn point(&mut self, point: &Point) {
        let Point {
            last_day,
            orders,
            monetary_bucket,
        } = point;
        self.signed((*last_day).into());
        self.unsigned(*orders);
        self.signed((*monetary_bucket).into());
    }

    fn early_close(&mut self, close: &EarlyClose) {
        let EarlyClose { id, at, close } = close;
        self.str(id);
        self.signed(*at);
        match close {
            Close::Delivered => self.variant(0),
            Close::Cancelled => self.variant(1),
            Close::Resolved { satisfied } => {
                self.variant(2);
                self.option(satisfied.as_ref(), |w, s| w.boolean(*s));
            }
        }
    }

    fn standing(&mut self, standing: &Standing) {
        let Standing {
            segment,
            lifecycle,
            level,
            ltv_minor,
        } = standing;
        self.str(segment);
        self.lifecycle(*lifecycle);
        self.level(*level);
        self.signed(*ltv_minor);
    }

    fn trailing(&mut self, trailing: &Trailing) {
        let Trailing { months } = trailing;
        self.len(months.len());
        for (month, revenue, margin) in months {
            self.signed(i64::from(*month));
            self.signed(*revenue);
            self.signed(*margin);
        }
    }

    fn category_trend(&mut self, trend: &CategoryTrend) {
        let CategoryTrend {
            open_backlog,
            windows,
            days,
            today,
            months,
            this_month,
            month_days,
            previous_month_days,
        } = trend;
        self.signed(*open_backlog);
        self.baseline(windows);
        self.baseline(days);
        self.window(today);
        self.baseline(months);
        self.window(this_month);
        self.counts(month_days);
        self.counts(previous_month_days);
    }

    fn baseline(&mut self, baseline: &Baseline) {
        let Baseline {
            baseline,
            slow_baseline,
            cusum,
        } = baseline;
        self.option(baseline.as_ref(), |w, v| w.float(*v));
        self.option(slow_baseline.as_ref(), |w, v| w.float(*v));
        self.float(*cusum);
    }

    fn window(&mut self, window: &Window) {
        let Window {
            opened,
            resolved,
            by_severity,
            resolution,
        } = window;
        self.unsigned(*opened);
        self.unsigned(*resolved);
        // An array is a tuple to postcard: no length.
        for count in by_severity {
            self.unsigned(*count);
        }
        self.len(resolution.len());
        for (bucket, count) in resolution {
            self.signed(i64::from(*bucket));
            self.unsigned(*count);
        }
    }

    fn counts(&mut self, counts: &[u32]) {
        self.len(counts.len());
        for count in counts {
            self.unsigned(*count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Severity;
    use proptest::prelude::*;

    fn postcard_body(customer: &Customer) -> Vec<u8> {
        let body = (
            &customer.state,
            &customer.risk,
            &customer.standing,
            &customer.trailing,
            &customer.losses,
            &customer.state.early_closes,
            &customer.state.last_renewal_at,
        );
        let mut bytes = postcard::to_allocvec(&body).expect("postcard encodes plain structs");
        let state = &customer.state;
        let entries = |seen: &[SeenEvent], newest: i64| -> SeenEntries {
            seen.iter()
                .map(|s| {
                    (
                        s.fingerprint.0.to_le_bytes(),
                        newest.wrapping_sub(s.occurred_at),
                    )
                })
                .collect()
        };
        let sealed = state.seen_sealed as usize;
        let section: SeenSection = (
            state.seal,
            state.seen_sealed,
            entries(&state.seen[sealed..], state.last_event_at),
            Some(entries(&state.seen[..sealed], state.last_event_at)),
        );
        bytes.extend(postcard::to_allocvec(&section).expect("postcard encodes plain structs"));
        bytes
    }

    /// The body of [`write_customer_body`] from that of [`write_customer_body_apart`]
    /// (`apart`, whose last byte is the 0 this replaces) for the same customer.
    fn with_sealed(apart: &[u8], state: &CustomerState) -> Vec<u8> {
        let mut out = apart[..apart.len() - 1].to_vec();
        out.push(1);
        Writer(&mut out).seen_entries(sealed(state), state.last_event_at);
        out
    }

    fn by_hand(customer: &Customer) -> Vec<u8> {
        let mut out = Vec::new();
        write_customer_body(customer, &mut out);
        out
    }

    fn trends_by_hand(trends: &Trends) -> Vec<u8> {
        let mut out = Vec::new();
        write_trends(trends, &mut out);
        out
    }

    fn lifecycle() -> impl Strategy<Value = Lifecycle> {
        prop_oneof![
            Just(Lifecycle::New),
            Just(Lifecycle::Active),
            Just(Lifecycle::AtRisk),
            Just(Lifecycle::Lost),
            Just(Lifecycle::WonBack),
        ]
    }

    fn level() -> impl Strategy<Value = Level> {
        prop_oneof![Just(Level::Low), Just(Level::Medium), Just(Level::High)]
    }

    fn severity() -> impl Strategy<Value = Severity> {
        prop_oneof![
            Just(Severity::Low),
            Just(Severity::Medium),
            Just(Severity::High),
            Just(Severity::Critical),
        ]
    }

    fn subscription() -> impl Strategy<Value = Subscription> {
        prop_oneof![
            Just(Subscription::None),
            Just(Subscription::Active),
            Just(Subscription::Cancelled),
        ]
    }

    /// Any i64, with the edges and small values (one-byte varints) as likely as the rest.
    fn int() -> impl Strategy<Value = i64> {
        prop_oneof![
            any::<i64>(),
            -200i64..200,
            Just(i64::MIN),
            Just(i64::MAX),
            1_600_000_000_000i64..1_900_000_000_000,
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![".{0,12}", "[a-z-]{100,200}"]
    }

    fn close() -> impl Strategy<Value = Close> {
        prop_oneof![
            Just(Close::Delivered),
            Just(Close::Cancelled),
            proptest::option::of(any::<bool>()).prop_map(|satisfied| Close::Resolved { satisfied }),
        ]
    }

    fn flow() -> impl Strategy<Value = OwnedFlow> {
        prop_oneof![
            (int(), int()).prop_map(|(amount_minor, margin_minor)| OwnedFlow::Order {
                amount_minor,
                margin_minor
            }),
            int().prop_map(|value_minor| OwnedFlow::New { value_minor }),
            (int(), text()).prop_map(|(value_minor, reason)| OwnedFlow::Lost {
                value_minor,
                reason
            }),
            Just(OwnedFlow::WonBack),
            text().prop_map(|reason| OwnedFlow::Renewal { reason }),
            Just(OwnedFlow::Referral),
        ]
    }

    fn standing() -> impl Strategy<Value = Standing> {
        (text(), lifecycle(), level(), int()).prop_map(|(segment, lifecycle, level, ltv_minor)| {
            Standing {
                segment,
                lifecycle,
                level,
                ltv_minor,
            }
        })
    }

    fn point() -> impl Strategy<Value = Point> {
        (any::<i32>(), any::<u32>(), any::<i32>()).prop_map(
            |(last_day, orders, monetary_bucket)| Point {
                last_day,
                orders,
                monetary_bucket,
            },
        )
    }

    fn said() -> impl Strategy<Value = Said> {
        use proptest::option::of;
        prop_oneof![
            text().prop_map(Said::Text),
            (int(), float()).prop_map(|(days, p_alive)| Said::Silent { days, p_alive }),
            (any::<u64>(), text(), int()).prop_map(|(open, category, days)| Said::Overdue {
                open,
                category,
                days
            }),
            Just(Said::RecentComplaint),
            Just(Said::RecentDetractorSurvey),
            any::<u8>().prop_map(Said::SurveyScore),
            any::<u64>().prop_map(Said::FirstResponseSeconds),
            any::<u64>().prop_map(Said::Undelivered),
            Just(Said::SlowDeliveries),
            (any::<u32>(), any::<u32>())
                .prop_map(|(returns, orders)| Said::Returns { returns, orders }),
            of(text()).prop_map(Said::Cancelled),
        ]
    }

    fn reason_code() -> impl Strategy<Value = ReasonCode> {
        proptest::sample::select(crate::risk::REASON_CODES.to_vec())
    }

    prop_compose! {
        fn churn_risk()(
            ids in (text(), text(), proptest::option::of(text()), int()),
            model in (float(), level(), lifecycle(), int(), float(), float()),
            reasons in proptest::collection::vec((reason_code(), said()), 0..5),
            rfm in proptest::option::of((any::<[u8; 3]>(), text())),
            segment in text(),
        ) -> ChurnRiskRecord {
            let (customer_id, record_id, caused_by, as_of) = ids;
            let (expected_orders_90d, level, lifecycle, ltv_minor, p_alive, score) = model;
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
                    .map(|(code, said)| Reason { code, detail: said.into() })
                    .collect(),
                rfm: rfm.map(|([f, m, r], segment)| crate::rfm::Score { f, m, r, segment }),
                score,
                segment,
            }
        }
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::collection::vec(any::<u8>(), 100..400),
        ]
    }

    prop_compose! {
        fn outbox_record()(
            topic in text(),
            key in proptest::option::of(bytes()),
            value in proptest::option::of(bytes()),
            headers in proptest::collection::vec((text(), bytes()), 0..4),
            partition in proptest::option::of(any::<i32>()),
        ) -> OutboxRecord {
            OutboxRecord {
                topic,
                key,
                value,
                headers: headers.into_iter().map(|(name, value)| (name.into(), value)).collect(),
                partition,
            }
        }
    }

    /// Any fact, each variant as likely as the others.
    fn fact() -> impl Strategy<Value = Fact> {
        use proptest::option::of;
        prop_oneof![
            (text(), severity(), int()).prop_map(|(category, severity, at)| Fact::Opened {
                category,
                severity,
                at
            }),
            (text(), int(), int()).prop_map(|(category, opened_at, at)| Fact::Resolved {
                category,
                opened_at,
                at
            }),
            text().prop_map(|category| Fact::ForgetOpen { category }),
            (text(), int(), flow()).prop_map(|(segment, at, flow)| Fact::Count {
                segment,
                at,
                flow
            }),
            (text(), int(), flow()).prop_map(|(segment, at, flow)| Fact::CountChange {
                segment,
                at,
                flow
            }),
            (of(standing()), of(standing()), int()).prop_map(|(old, new, at)| Fact::Restand {
                old,
                new,
                at
            }),
            (of(point()), of(point())).prop_map(|(old, new)| Fact::Relocate { old, new }),
            (text(), int()).prop_map(|(category, at)| Fact::LeftOpen { category, at }),
        ]
    }

    prop_compose! {
        fn state()(
            ids in (text(), proptest::option::of(int()), proptest::option::of(text()),
                proptest::option::of(text()), lifecycle(), int(), int()),
            orders in (proptest::option::of(int()), proptest::option::of(int()),
                proptest::collection::vec(any::<i32>(), 0..4), any::<u32>(), int(), int(), int(),
                proptest::collection::vec((text(), int()), 0..4)),
            deliveries in (any::<u32>(), any::<u64>(), any::<u32>(), int(), any::<u32>()),
            complaints in (proptest::collection::vec((text(), text(), severity(), int()), 0..3),
                any::<u32>(), any::<u32>(), any::<u64>(), any::<u32>(),
                proptest::option::of(int())),
            contacts in (proptest::option::of(any::<u8>()), proptest::option::of(int()),
                any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()),
            subscription in (subscription(), any::<u32>(), int(), proptest::option::of(text()),
                proptest::option::of(text()), proptest::option::of(int())),
            seen in proptest::collection::vec((any::<u64>(), int()), 0..5),
            (sealed, seal) in (0usize..6, any::<u32>()),
            early_closes in proptest::collection::vec((text(), int(), close()), 0..3),
            last_renewal_at in proptest::option::of(int()),
        ) -> CustomerState {
            let (customer_id, registered_at, referred_by, segment_hint, lifecycle, first, last) =
                ids;
            let (first_order_at, last_order_at, purchase_days, count, revenue, margin,
                first_day, open) = orders;
            let (delivered, delivery_seconds, returns, returned, cancellations) = deliveries;
            let (open_complaints, opened, resolved, resolution_seconds, unsatisfied,
                last_complaint_at) = complaints;
            let (score, survey_at, contacts, inbound, first_responses, response_seconds) =
                contacts;
            let (subscription, renewals, renewal_revenue, renewal_reason, cancellation_reason,
                cancelled_at) = subscription;
            let seen_len = seen.len();
            CustomerState {
                customer_id,
                registered_at,
                referred_by,
                segment_hint,
                lifecycle,
                first_event_at: first,
                last_event_at: last,
                first_order_at,
                last_order_at,
                purchase_days,
                orders: count,
                revenue_minor: revenue,
                margin_minor: margin,
                first_day_revenue_minor: first_day,
                open_orders: open
                    .into_iter()
                    .map(|(order_id, placed_at)| OpenOrder { order_id, placed_at })
                    .collect(),
                deliveries: delivered,
                delivery_seconds_total: delivery_seconds,
                returns,
                returned_minor: returned,
                order_cancellations: cancellations,
                open_complaints: open_complaints
                    .into_iter()
                    .map(|(complaint_id, category, severity, opened_at)| OpenComplaint {
                        complaint_id,
                        category,
                        severity,
                        opened_at,
                    })
                    .collect(),
                complaints_opened: opened,
                complaints_resolved: resolved,
                resolution_seconds_total: resolution_seconds,
                resolutions_unsatisfied: unsatisfied,
                last_complaint_at,
                last_survey_score: score,
                last_survey_at: survey_at,
                contacts,
                inbound_contacts: inbound,
                first_responses,
                first_response_seconds_total: response_seconds,
                subscription,
                renewals,
                renewal_revenue_minor: renewal_revenue,
                last_renewal_reason: renewal_reason,
                cancellation_reason,
                cancelled_at,
                early_closes: early_closes
                    .into_iter()
                    .map(|(id, at, close)| EarlyClose { id, at, close })
                    .collect(),
                last_renewal_at,
                seen: seen
                    .into_iter()
                    .map(|(fingerprint, occurred_at)| SeenEvent {
                        fingerprint: EventFingerprint(fingerprint),
                        occurred_at,
                    })
                    .collect(),
                seen_sealed: sealed.min(seen_len) as u32,
                seal,
            }
        }
    }

    prop_compose! {
        fn customer()(
            state in state(),
            last in proptest::option::of((int(), any::<f64>(), level(),
                proptest::collection::vec(proptest::sample::select(crate::risk::REASON_CODES.to_vec()), 0..8),
                lifecycle())),
            timer_at in proptest::option::of(int()),
            standing in proptest::option::of((text(), lifecycle(), level(), int())),
            months in proptest::collection::vec((any::<i32>(), int(), int()), 0..4),
            losses in proptest::collection::vec((int(), text(),
                proptest::sample::select(crate::risk::REASON_CODES.to_vec()), int(),
                proptest::option::of(int())), 0..3),
        ) -> Customer {
            Customer {
                state,
                risk: RiskMemo {
                    last: last.map(|(as_of, score, level, reasons, lifecycle)| Published {
                        as_of,
                        score,
                        level,
                        reasons,
                        lifecycle,
                    }),
                    timer_at,
                },
                standing: standing.map(|(segment, lifecycle, level, ltv_minor)| Standing {
                    segment,
                    lifecycle,
                    level,
                    ltv_minor,
                }),
                trailing: Trailing { months },
                losses: losses
                    .into_iter()
                    .map(|(at, segment, reason, value_minor, won_back_at)| Loss {
                        at,
                        segment,
                        reason,
                        value_minor,
                        won_back_at,
                    })
                    .collect(),
            }
        }
    }

    fn float() -> impl Strategy<Value = f64> {
        prop_oneof![any::<f64>(), -3.0f64..3.0, Just(f64::NAN), Just(-0.0)]
    }

    prop_compose! {
        fn window()(
            opened in any::<u32>(),
            resolved in any::<u32>(),
            by_severity in any::<[u32; 4]>(),
            resolution in proptest::collection::vec((any::<i16>(), any::<u32>()), 0..4),
        ) -> Window {
            Window { opened, resolved, by_severity, resolution }
        }
    }

    prop_compose! {
        fn baseline()(
            baseline in proptest::option::of(float()),
            slow_baseline in proptest::option::of(float()),
            cusum in float(),
        ) -> Baseline {
            Baseline { baseline, slow_baseline, cusum }
        }
    }

    prop_compose! {
        fn category_trend()(
            open_backlog in int(),
            baselines in (baseline(), baseline(), baseline()),
            today in window(),
            this_month in window(),
            month_days in proptest::collection::vec(any::<u32>(), 0..32),
            previous_month_days in proptest::collection::vec(any::<u32>(), 0..32),
        ) -> CategoryTrend {
            let (windows, days, months) = baselines;
            CategoryTrend {
                open_backlog,
                windows,
                days,
                today,
                months,
                this_month,
                month_days,
                previous_month_days,
            }
        }
    }

    prop_compose! {
        fn trends()(
            categories in proptest::collection::btree_map(text(), category_trend(), 0..4),
            windows in proptest::collection::btree_map((int(), text()), window(), 0..8),
            closed_before in proptest::option::of(int()),
            newest in proptest::option::of(int()),
            began in proptest::option::of(int()),
            verdicts in proptest::collection::btree_map(
                text(),
                (any::<f64>(), any::<bool>())
                    .prop_map(|(z_score, spike)| Verdict { z_score, spike }),
                0..4,
            ),
            left in proptest::collection::btree_map((int(), text()), any::<u32>(), 0..4),
        ) -> Trends {
            let mut trends = Trends::default();
            trends.categories = categories;
            trends.windows = windows;
            trends.closed_before = closed_before;
            trends.newest = newest;
            trends.began = began;
            trends.verdicts = verdicts;
            trends.left = left;
            trends
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// The bytes are postcard's, for any customer: decoding (which `postcard` does) reads
        /// back what was written.
        #[test]
        fn writes_the_bytes_postcard_writes(customer in customer()) {
            prop_assert_eq!(by_hand(&customer), postcard_body(&customer));
        }

        /// The body without the sealed events is the same up to its last byte, and the
        /// sealed events kept apart are `postcard`'s bytes for [`Sealed`].
        #[test]
        fn the_sealed_events_go_apart_and_back(customer in customer()) {
            let mut apart = Vec::new();
            write_customer_body_apart(&customer, &mut apart);
            let whole = by_hand(&customer);
            prop_assert_eq!(with_sealed(&apart, &customer.state), whole.clone());
            let sealed_at = apart.len() - 1;
            prop_assert_eq!(&apart[..sealed_at], &whole[..sealed_at]);
            prop_assert_eq!(apart[sealed_at], 0);
            let state = &customer.state;
            let mut kept = Vec::new();
            write_sealed(state, &mut kept);
            let expected: Sealed = (
                state.seal,
                state.last_event_at,
                state.seen[..state.seen_sealed as usize]
                    .iter()
                    .map(|s| {
                        let before = state.last_event_at.wrapping_sub(s.occurred_at);
                        (s.fingerprint.0.to_le_bytes(), before)
                    })
                    .collect(),
            );
            prop_assert_eq!(kept, postcard::to_allocvec(&expected).expect("plain structs"));
        }

        /// The same for any trends.
        #[test]
        fn writes_the_trends_as_postcard_does(trends in trends()) {
            let postcard = postcard::to_allocvec(&trends).expect("postcard encodes plain structs");
            prop_assert_eq!(trends_by_hand(&trends), postcard);
        }

        /// The same for any facts, every variant among them.
        #[test]
        fn writes_the_facts_as_postcard_does(
            facts in proptest::collection::vec(fact(), 0..40)
        ) {
            let mut by_hand = Vec::new();
            write_facts(&facts, &mut by_hand);
            let postcard = postcard::to_allocvec(&facts).expect("postcard encodes plain structs");
            prop_assert_eq!(by_hand, postcard);
        }

        /// The same for any outbox record, and any churn-risk record after its topic.
        #[test]
        fn writes_outbox_records_as_postcard_does(
            record in outbox_record(),
            topic in text(),
            churn_risk in churn_risk(),
        ) {
            let mut by_hand = Vec::new();
            write_outbox_record(&record, &mut by_hand);
            let postcard = postcard::to_allocvec(&record).expect("postcard encodes plain structs");
            prop_assert_eq!(by_hand, postcard);
            let mut by_hand = Vec::new();
            write_churn_risk(&topic, &churn_risk, &mut by_hand);
            let postcard = postcard::to_allocvec(&(&topic, &churn_risk))
                .expect("postcard encodes plain structs");
            prop_assert_eq!(by_hand, postcard);
        }

        /// A customer's stored encoding reads back as the customer, the remembered events'
        /// fingerprints and times included, whatever their distance from the newest event.
        #[test]
        fn a_customer_reads_back_as_written(customer in customer()) {
            let encoded = super::super::codec::encode_customer(&customer);
            prop_assert_eq!(super::super::codec::decode_customer(&encoded), Ok(customer));
        }
    }

    #[test]
    fn every_variant_is_written_at_postcards_index() {
        // One customer per variant of each enum, so that a variant reordered in its declaration
        // (which moves serde's index) fails here even if the random customers missed it.
        let mut customer = Customer::from(CustomerState::default());
        let mut same = |change: &dyn Fn(&mut Customer)| {
            change(&mut customer);
            assert_eq!(by_hand(&customer), postcard_body(&customer));
        };
        for lifecycle in [
            Lifecycle::New,
            Lifecycle::Active,
            Lifecycle::AtRisk,
            Lifecycle::Lost,
            Lifecycle::WonBack,
        ] {
            same(&|c| c.state.lifecycle = lifecycle);
        }
        for subscription in [
            Subscription::None,
            Subscription::Active,
            Subscription::Cancelled,
        ] {
            same(&|c| c.state.subscription = subscription);
        }
        for severity in [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ] {
            same(&|c| {
                c.state.open_complaints = vec![OpenComplaint {
                    complaint_id: "k".into(),
                    category: "billing".into(),
                    severity,
                    opened_at: -1,
                }]
            });
        }
        for level in [Level::Low, Level::Medium, Level::High] {
            same(&|c| {
                c.standing = Some(Standing {
                    segment: "gold".into(),
                    lifecycle: Lifecycle::Lost,
                    level,
                    ltv_minor: 0,
                })
            });
        }
        same(&|c| {
            c.risk.last = Some(Published {
                as_of: 1,
                score: f64::NAN,
                level: Level::High,
                reasons: crate::risk::REASON_CODES.to_vec(),
                lifecycle: Lifecycle::WonBack,
            })
        });
    }
}
