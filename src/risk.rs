//! Churn risk: a customer's state evaluated at an event time into a score with named reasons, a
//! level, a value tier and a lifetime value; when to publish it; and when to look again while the
//! customer is silent. Pure like the fold: must not know about Kafka, RocksDB, Prometheus or the
//! wall clock. The models themselves are in `churn`.

use serde::{Deserialize, Serialize};

use crate::churn::{Model, PurchaseModel, Recency, SpendModel, EXPECTED_ORDERS_DAYS, MONTH_DAYS};
use crate::event::{format_millis, Millis};
use crate::fold::{CustomerState, Lifecycle, Subscription};
use crate::json::Object;
use crate::segments::{latest_loss, lost_or_won_back_at, Loss, Trailing};
use crate::tables::ModelTables;

const DAY_MS: Millis = 86_400_000;
/// An average month, for the CLV horizon.
const MONTH_MS: f64 = MONTH_DAYS * DAY_MS as f64;

/// The largest lifetime value either way, 2^53 minor units (9·10^15, an f64's exact integers):
/// past it the value says more about the model's parameters or the data than about a customer.
/// It keeps a customer's value, and its sign flipped, within 64 bits.
pub const MAX_LTV_MINOR: i64 = 1 << 53;

/// Why a customer's risk rose. The codes are part of the output contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// P(alive) fell below `inactive_below_p_alive`: the customer has gone quiet.
    Inactive,
    /// A complaint open longer than the SLA.
    UnresolvedComplaint,
    /// A complaint or a detractor survey within the last `recent_days`.
    RecentBadExperience,
    /// The last survey score was a detractor's (0..=6).
    Detractor,
    /// Average first response slower than `slow_response_seconds`.
    SlowResponse,
    /// An order undelivered after `late_delivery_days`, or deliveries slower than that on
    /// average; never with `late_delivery_days` 0.
    LateDelivery,
    /// At least `frequent_returns_min` returns and a return ratio of `frequent_returns_ratio`.
    FrequentReturns,
    /// The subscription was cancelled.
    Cancelled,
}

pub const REASON_CODES: [ReasonCode; 8] = [
    ReasonCode::Inactive,
    ReasonCode::UnresolvedComplaint,
    ReasonCode::RecentBadExperience,
    ReasonCode::Detractor,
    ReasonCode::SlowResponse,
    ReasonCode::LateDelivery,
    ReasonCode::FrequentReturns,
    ReasonCode::Cancelled,
];

impl ReasonCode {
    pub fn code(self) -> &'static str {
        match self {
            ReasonCode::Inactive => "inactive",
            ReasonCode::UnresolvedComplaint => "unresolved_complaint",
            ReasonCode::RecentBadExperience => "recent_bad_experience",
            ReasonCode::Detractor => "detractor",
            ReasonCode::SlowResponse => "slow_response",
            ReasonCode::LateDelivery => "late_delivery",
            ReasonCode::FrequentReturns => "frequent_returns",
            ReasonCode::Cancelled => "cancelled",
        }
    }
}

/// A set of reason codes, iterated in code order; a byte, so assessing allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReasonSet(u8);

impl ReasonSet {
    pub fn insert(&mut self, code: ReasonCode) {
        self.0 |= 1 << code as u8;
    }

    pub fn contains(self, code: ReasonCode) -> bool {
        self.0 & (1 << code as u8) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    pub fn iter(self) -> impl Iterator<Item = ReasonCode> {
        REASON_CODES.into_iter().filter(move |c| self.contains(*c))
    }
}

impl FromIterator<ReasonCode> for ReasonSet {
    fn from_iter<I: IntoIterator<Item = ReasonCode>>(codes: I) -> ReasonSet {
        let mut set = ReasonSet::default();
        codes.into_iter().for_each(|c| set.insert(c));
        set
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Low,
    Medium,
    High,
}

impl Level {
    pub fn name(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }
}

/// A value tier: the first tier (in configured order) whose minimums the customer meets.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub name: String,
    pub min_revenue_minor: i64,
    pub min_margin_minor: i64,
}

/// Everything scoring needs, from configuration.
#[derive(Debug, Clone)]
pub struct RiskSettings {
    pub model: PurchaseModel,
    /// Milliseconds per model time unit (a week for the published parameters).
    pub time_unit_ms: Millis,
    pub spend: SpendModel,
    pub clv_months: u32,
    pub monthly_discount: f64,
    /// Margin share of a purchase for a customer without revenue yet.
    pub default_margin_ratio: f64,
    pub inactive_below_p_alive: f64,
    /// Below this P(alive) a customer counts as lost through silence.
    pub lost_below_p_alive: f64,
    pub complaint_sla_ms: Millis,
    pub recent_ms: Millis,
    pub slow_response_seconds: u64,
    /// An order undelivered this long is late; 0: never (a source that publishes no
    /// deliveries, whose orders all stay open).
    pub late_delivery_ms: Millis,
    pub frequent_returns_min: u32,
    pub frequent_returns_ratio: f64,
    /// The effect of each reason: the score is `1 - P(alive) * product(1 - weight)`.
    pub weights: Vec<(ReasonCode, f64)>,
    pub medium_from: f64,
    pub high_from: f64,
    pub min_score_change: f64,
    pub tiers: Vec<Tier>,
    /// Value tiers are by the revenue and margin of the month of the assessment and the
    /// `tier_months - 1` calendar months before it (UTC).
    pub tier_months: u32,
    /// The CLV and the expected purchases by table for the settings above, built as they are
    /// asked for.
    pub tables: ModelTables,
}

impl Default for RiskSettings {
    /// The published CDNOW parameters (MBG/NBD per week, Gamma-Gamma scaled to minor units) and
    /// the reason effects and cut-offs documented in the README.
    fn default() -> RiskSettings {
        RiskSettings {
            model: PurchaseModel::cdnow(Model::MbgNbd),
            time_unit_ms: 7 * DAY_MS,
            spend: SpendModel {
                p: 6.25,
                q: 3.74,
                gamma: 1544.0,
            },
            clv_months: 12,
            monthly_discount: 0.01,
            default_margin_ratio: 0.25,
            inactive_below_p_alive: 0.5,
            lost_below_p_alive: 0.2,
            complaint_sla_ms: 2 * DAY_MS,
            recent_ms: 7 * DAY_MS,
            slow_response_seconds: 3_600,
            late_delivery_ms: 5 * DAY_MS,
            frequent_returns_min: 2,
            frequent_returns_ratio: 0.3,
            weights: vec![
                (ReasonCode::Inactive, 0.0),
                (ReasonCode::UnresolvedComplaint, 0.3),
                (ReasonCode::RecentBadExperience, 0.25),
                (ReasonCode::Detractor, 0.2),
                (ReasonCode::SlowResponse, 0.1),
                (ReasonCode::LateDelivery, 0.15),
                (ReasonCode::FrequentReturns, 0.1),
                (ReasonCode::Cancelled, 0.6),
            ],
            medium_from: 0.4,
            high_from: 0.7,
            min_score_change: 0.05,
            tiers: vec![
                Tier {
                    name: "gold".into(),
                    min_revenue_minor: 100_000,
                    min_margin_minor: 0,
                },
                Tier {
                    name: "standard".into(),
                    min_revenue_minor: 0,
                    min_margin_minor: i64::MIN,
                },
            ],
            tier_months: 12,
            tables: ModelTables::default(),
        }
    }
}

impl RiskSettings {
    fn weight(&self, code: ReasonCode) -> f64 {
        self.weights
            .iter()
            .find(|(c, _)| *c == code)
            .map_or(0.0, |(_, w)| *w)
    }

    /// The share of P(alive) the reasons keep: the product of (1 - weight).
    fn kept(&self, codes: ReasonSet) -> f64 {
        codes
            .iter()
            .map(|c| 1.0 - self.weight(c).clamp(0.0, 1.0))
            .product()
    }

    /// The P(alive) values at which a silent customer's assessment changes, given the weight
    /// its current reasons keep (`kept`): the medium and high level cut-offs, the inactive and
    /// the lost thresholds.
    fn thresholds(&self, kept: f64) -> [f64; 4] {
        [
            (1.0 - self.medium_from) / kept,
            (1.0 - self.high_from) / kept,
            self.inactive_below_p_alive,
            self.lost_below_p_alive,
        ]
    }

    /// A score as a record shows it: to `digits` decimals, never across a level's threshold,
    /// so that the level beside it agrees (0.69996 is shown as 0.6999 where high starts at 0.7,
    /// not as a medium 0.7).
    pub fn shown_score(&self, score: f64, digits: i32) -> f64 {
        shown(score, digits, &[self.medium_from, self.high_from])
    }

    /// P(alive) as a record shows it: to `digits` decimals, never across the inactive or the
    /// lost threshold, so that the reasons and the lifecycle beside it agree.
    pub fn shown_p_alive(&self, p_alive: f64, digits: i32) -> f64 {
        shown(
            p_alive,
            digits,
            &[self.lost_below_p_alive, self.inactive_below_p_alive],
        )
    }

    pub fn level(&self, score: f64) -> Level {
        if score >= self.high_from {
            Level::High
        } else if score >= self.medium_from {
            Level::Medium
        } else {
            Level::Low
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub detail: Detail,
}

/// A reason's `detail` (CONTRACT section 2): the values it names, written out as text only
/// where the text is wanted, when a record's JSON is written (on the outbox drain's thread,
/// not the fold's) or a score is shown. Formatting every published record's details on the
/// fold thread was 2.1% of the broker benchmark's (callgrind, 2026-12-06; `benches/HISTORY.md`).
/// In a human-readable format (JSON) it is that text; stored (postcard, the outbox) it is the
/// values, [`Said`].
#[derive(Debug, Clone, PartialEq)]
pub struct Detail(Said);

/// What a reason's detail says, by reason; its text is [`Detail`]'s `Display`. Stored by its
/// variants' indices (outbox version 5): a variant added goes last, and none is reordered
/// (`store::body` writes the same indices, which its tests hold to postcard's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Said {
    /// The text itself: a detail an earlier build stored as text in the outbox, or one
    /// written by hand.
    Text(String),
    /// No order for `days` days, and P(alive) as shown to two decimals.
    Silent {
        days: i64,
        p_alive: f64,
    },
    /// `open` complaints open beyond the SLA, the oldest of `category`, open `days` days.
    Overdue {
        open: u64,
        category: String,
        days: i64,
    },
    RecentComplaint,
    RecentDetractorSurvey,
    SurveyScore(u8),
    FirstResponseSeconds(u64),
    Undelivered(u64),
    SlowDeliveries,
    Returns {
        returns: u32,
        orders: u32,
    },
    /// Cancelled, for this reason if it is kept.
    Cancelled(Option<String>),
}

impl From<Said> for Detail {
    fn from(said: Said) -> Detail {
        Detail(said)
    }
}

impl Detail {
    /// What it says.
    pub fn said(&self) -> &Said {
        &self.0
    }

    /// The bytes it holds apart from itself: the texts it names.
    pub fn held_bytes(&self) -> usize {
        match &self.0 {
            Said::Text(text)
            | Said::Overdue { category: text, .. }
            | Said::Cancelled(Some(text)) => text.len(),
            _ => 0,
        }
    }
}

impl From<&str> for Detail {
    fn from(text: &str) -> Detail {
        Detail(Said::Text(text.to_owned()))
    }
}

impl std::fmt::Display for Detail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Said::Text(text) => f.write_str(text),
            Said::Silent { days, p_alive } => {
                write!(f, "no order for {days} days; P(alive) {p_alive:.2}")
            }
            Said::Overdue {
                open,
                category,
                days,
            } => write!(
                f,
                "{open} complaint(s) open beyond the SLA, oldest {category} open {days} days"
            ),
            Said::RecentComplaint => f.write_str("complaint in the last days"),
            Said::RecentDetractorSurvey => f.write_str("detractor survey in the last days"),
            Said::SurveyScore(score) => write!(f, "last survey score {score}"),
            Said::FirstResponseSeconds(average) => {
                write!(f, "average first response {average} s")
            }
            Said::Undelivered(waiting) => {
                write!(
                    f,
                    "{waiting} order(s) undelivered beyond the delivery target"
                )
            }
            Said::SlowDeliveries => f.write_str("deliveries slower than the target on average"),
            Said::Returns { returns, orders } => {
                write!(f, "{returns} returns over {orders} orders")
            }
            Said::Cancelled(Some(why)) => write!(f, "subscription cancelled: {why}"),
            Said::Cancelled(None) => f.write_str("subscription cancelled (its reason is not kept)"),
        }
    }
}

impl Serialize for Detail {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_str(self)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Detail {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Detail, D::Error> {
        if deserializer.is_human_readable() {
            String::deserialize(deserializer).map(|text| Detail(Said::Text(text)))
        } else {
            Said::deserialize(deserializer).map(Detail)
        }
    }
}

/// A customer evaluated at one event time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Assessment {
    pub as_of: Millis,
    pub x: u32,
    pub t_x: f64,
    #[serde(rename = "T")]
    pub t: f64,
    pub p_alive: f64,
    pub expected_orders_90d: f64,
    pub score: f64,
    pub level: Level,
    /// What decides the score and publishing.
    #[serde(skip)]
    pub codes: ReasonSet,
    /// The share of P(alive) those reasons keep, the product of (1 - weight) over them, which
    /// the timer's thresholds are measured against.
    #[serde(skip)]
    pub kept: f64,
    /// The reasons with their details, for output; filled by [`Assessment::completed`].
    pub reasons: Vec<Reason>,
    pub segment: String,
    pub lifecycle: Lifecycle,
    pub ltv_minor: i64,
}

/// What was last published for a customer and when to look again; stored with the customer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RiskMemo {
    pub last: Option<Published>,
    /// The event time of the pending timer, if one is armed.
    pub timer_at: Option<Millis>,
}

impl RiskMemo {
    /// The event time to assess a customer at now: its newest event, or a later timer that
    /// already published.
    pub fn as_of(&self, state: &CustomerState) -> Millis {
        self.last
            .as_ref()
            .map_or(state.last_event_at, |p| p.as_of.max(state.last_event_at))
    }
}

/// The part of a published record that decides whether the next one is worth publishing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Published {
    pub as_of: Millis,
    pub score: f64,
    pub level: Level,
    pub reasons: Vec<ReasonCode>,
    pub lifecycle: Lifecycle,
}

impl Assessment {
    pub fn published(&self) -> Published {
        Published {
            as_of: self.as_of,
            score: self.score,
            level: self.level,
            reasons: self.codes.iter().collect(),
            lifecycle: self.lifecycle,
        }
    }

    /// CONTRACT section 2: publish on a level change, a score move of at least the minimum, or a
    /// change in the set of reasons (and, beyond the contract, a lifecycle change).
    pub fn worth_publishing(&self, last: Option<&Published>, min_score_change: f64) -> bool {
        let Some(last) = last else { return true };
        self.level != last.level
            || (self.score - last.score).abs() >= min_score_change
            || self.codes != last.reasons.iter().copied().collect()
            || self.lifecycle != last.lifecycle
    }

    /// The `customer.churn-risk` record of this assessment, still unwritten: its JSON is
    /// [`ChurnRiskRecord::to_json`].
    pub fn into_record(
        self,
        customer_id: &str,
        record_id: String,
        caused_by: Option<&str>,
        rfm: Option<crate::rfm::Score>,
        settings: &RiskSettings,
    ) -> ChurnRiskRecord {
        ChurnRiskRecord {
            customer_id: customer_id.to_owned(),
            record_id,
            caused_by: caused_by.map(str::to_owned),
            as_of: self.as_of,
            expected_orders_90d: self.expected_orders_90d,
            level: self.level,
            lifecycle: self.lifecycle,
            ltv_minor: self.ltv_minor,
            p_alive: settings.shown_p_alive(self.p_alive, RECORD_DIGITS),
            reasons: self.reasons,
            rfm,
            score: settings.shown_score(self.score, RECORD_DIGITS),
            segment: self.segment,
        }
    }
}

/// The decimals of a churn-risk record's score, P(alive) and expected orders.
const RECORD_DIGITS: i32 = 4;

/// A `customer.churn-risk` value as data: what its JSON says, the score and P(alive) as shown
/// ([`RiskSettings::shown_score`]), the expected orders unrounded. The outbox keeps it so
/// (a third of the JSON's bytes) and writes the JSON when the record is read to be sent, on the
/// drain's thread rather than the fold's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnRiskRecord {
    pub customer_id: String,
    pub record_id: String,
    pub caused_by: Option<String>,
    pub as_of: Millis,
    pub expected_orders_90d: f64,
    pub level: Level,
    pub lifecycle: Lifecycle,
    pub ltv_minor: i64,
    pub p_alive: f64,
    pub reasons: Vec<Reason>,
    pub rfm: Option<crate::rfm::Score>,
    pub score: f64,
    pub segment: String,
}

impl ChurnRiskRecord {
    /// The record's JSON (CONTRACT section 2).
    pub fn to_json(&self) -> Vec<u8> {
        // A record is 300-900 bytes: room for it up front, rather than growing from 128 three
        // times. Its fields in alphabetical order, as the `serde_json::Value` maps of the other
        // records had them.
        let mut out = Vec::with_capacity(1024);
        let mut record = Object::new(&mut out);
        record
            .text("as_of", &format_millis(self.as_of))
            .text_or_null("caused_by_event_id", self.caused_by.as_deref())
            .text("customer_id", &self.customer_id)
            .field(
                "expected_orders_90d",
                &round(self.expected_orders_90d, RECORD_DIGITS),
            )
            .text("level", self.level.name())
            .text("lifecycle", self.lifecycle.name())
            .field("ltv_minor", &self.ltv_minor)
            .field("p_alive", &round(self.p_alive, RECORD_DIGITS))
            .objects("reasons", &self.reasons, |reason, r| {
                reason
                    .text("code", r.code.code())
                    .text("detail", &r.detail.to_string());
            })
            .text("record_id", &self.record_id);
        match &self.rfm {
            Some(rfm) => record.object("rfm", |score| {
                score
                    .field("f", &rfm.f)
                    .field("m", &rfm.m)
                    .field("r", &rfm.r)
                    .text("segment", &rfm.segment);
            }),
            None => record.field("rfm", &None::<()>),
        };
        record
            .field("score", &round(self.score, RECORD_DIGITS))
            .text("segment", &self.segment);
        record.end();
        out
    }
}

fn round(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// `v` rounded to `digits` decimals, but on the same side of each of `thresholds` as `v`:
/// where rounding would cross one, the nearest value of `digits` decimals on `v`'s side.
fn shown(v: f64, digits: i32, thresholds: &[f64]) -> f64 {
    let scale = 10f64.powi(digits);
    let mut shown = round(v, digits);
    for &t in thresholds {
        if v < t && shown >= t {
            let mut k = (t * scale).ceil();
            while k / scale >= t {
                k -= 1.0;
            }
            shown = k / scale;
        } else if v >= t && shown < t {
            let mut k = (t * scale).floor();
            while k / scale < t {
                k += 1.0;
            }
            shown = k / scale;
        }
    }
    shown
}

/// The customer's history in the model's time unit at `as_of`. Purchase periods are days; a
/// customer with no purchase yet is scored as a one-time buyer from its first event.
pub fn recency(state: &CustomerState, as_of: Millis, unit_ms: Millis) -> Recency {
    recency_of(&state.purchase_days, state.first_event_at, as_of, unit_ms)
}

/// [`recency`] of distinct purchase days (ascending), from the first of them, or from
/// `first_event_at` when there is none.
pub fn recency_of(days: &[i32], first_event_at: Millis, as_of: Millis, unit_ms: Millis) -> Recency {
    let unit = unit_ms as f64;
    let first = origin_of(days, first_event_at);
    let last = days.last().map_or(first, |d| day_start(*d));
    let t_x = (last - first) as f64 / unit;
    let t = ((as_of - first) as f64 / unit).max(t_x);
    Recency {
        x: days.len().saturating_sub(1) as f64,
        t_x,
        t,
    }
}

/// Where the customer's model time starts: its first purchase day, or its first event.
fn origin(state: &CustomerState) -> Millis {
    origin_of(&state.purchase_days, state.first_event_at)
}

fn origin_of(days: &[i32], first_event_at: Millis) -> Millis {
    days.first().map_or(first_event_at, |d| day_start(*d))
}

/// Where a purchase day (days since the Unix epoch) starts, in event time.
fn day_start(day: i32) -> Millis {
    Millis::from(day) * DAY_MS
}

/// Evaluates a customer at event time `as_of`, completely.
pub fn assess(
    state: &CustomerState,
    trailing: &Trailing,
    as_of: Millis,
    settings: &RiskSettings,
) -> Assessment {
    let segment = segment_at(trailing, as_of, settings);
    assess_risk(state, as_of, settings).completed(state, segment, settings)
}

/// Evaluates a customer's risk at event time `as_of`: score, level, reason codes, lifecycle.
/// What only a published record needs (`expected_orders_90d`, `ltv_minor`, `segment`, the
/// reasons' details) stays empty until [`Assessment::completed`]: the value alone takes a dozen
/// hypergeometric series, and none of it decides publishing, so the hot path allocates nothing.
pub fn assess_risk(state: &CustomerState, as_of: Millis, settings: &RiskSettings) -> Assessment {
    let unit = settings.time_unit_ms;
    let h = recency(state, as_of, unit);
    let p_alive = settings.model.p_alive(h);
    let mut codes = ReasonSet::default();
    find_reasons(state, as_of, p_alive, settings, &mut |code, _| {
        codes.insert(code)
    });
    let kept = settings.kept(codes);
    let score = (1.0 - p_alive * kept).clamp(0.0, 1.0);
    let level = settings.level(score);
    let lifecycle = if state.lifecycle == Lifecycle::Lost || p_alive < settings.lost_below_p_alive {
        Lifecycle::Lost
    } else if level == Level::High {
        Lifecycle::AtRisk
    } else {
        state.lifecycle
    };
    Assessment {
        as_of,
        x: state.repeat_purchases(),
        t_x: h.t_x,
        t: h.t,
        p_alive,
        expected_orders_90d: 0.0,
        score,
        level,
        codes,
        kept,
        reasons: Vec::new(),
        segment: String::new(),
        lifecycle,
        ltv_minor: 0,
    }
}

impl Assessment {
    /// Adds the expected orders over 90 days, the lifetime value, the segment (the caller's
    /// [`segment_at`] of the same time, which it has already asked for) and the reasons'
    /// details.
    pub fn completed(
        mut self,
        state: &CustomerState,
        segment: &str,
        settings: &RiskSettings,
    ) -> Assessment {
        let unit = settings.time_unit_ms as f64;
        let h = Recency {
            x: f64::from(self.x),
            t_x: self.t_x,
            t: self.t,
        };
        self.expected_orders_90d = settings.tables.expected_purchases(
            &settings.model,
            h,
            (EXPECTED_ORDERS_DAYS * DAY_MS) as f64 / unit,
        );
        self.ltv_minor = ltv_minor(state, h, settings);
        self.segment = segment.to_owned();
        // One for each code the assessment found: grown one at a time, it was two fifths of
        // the vectors grown in the broker benchmark's fold (0.2% of its instructions).
        let mut reasons = Vec::with_capacity(self.codes.len());
        find_reasons(
            state,
            self.as_of,
            self.p_alive,
            settings,
            &mut |code, detail| {
                reasons.push(Reason {
                    code,
                    detail: detail().into(),
                })
            },
        );
        self.reasons = reasons;
        self
    }
}

/// The segment (value tier) of a customer at `as_of`, by its trailing revenue and margin.
pub fn segment_at<'a>(trailing: &Trailing, as_of: Millis, settings: &'a RiskSettings) -> &'a str {
    let (revenue, margin) = trailing.totals(as_of, settings.tier_months);
    segment_of(revenue, margin, &settings.tiers)
}

/// The segment (value tier) of a customer with this trailing revenue and margin: the first
/// tier whose minimums it meets, else the last.
pub fn segment_of(revenue_minor: i64, margin_minor: i64, tiers: &[Tier]) -> &str {
    tiers
        .iter()
        .find(|t| revenue_minor >= t.min_revenue_minor && margin_minor >= t.min_margin_minor)
        .or(tiers.last())
        .map_or("all", |t| t.name.as_str())
}

/// The reason a lost customer is counted under: the one with the greatest effect on the score
/// (the first in [`REASON_CODES`] order on a tie), or `inactive` when there is none.
pub fn strongest_reason(codes: ReasonSet, settings: &RiskSettings) -> ReasonCode {
    codes
        .iter()
        .fold(None, |best: Option<ReasonCode>, code| match best {
            Some(b) if settings.weight(b) >= settings.weight(code) => Some(b),
            _ => Some(code),
        })
        .unwrap_or(ReasonCode::Inactive)
}

/// The lifetime value of the purchases `h` expects, each at the value the state's whole
/// history gives a purchase (Gamma-Gamma over its repeat purchases and their mean value).
/// `score --as-of` a time before some purchases passes the history then as `h` and the state
/// now: the state keeps its orders' totals only, so their value can only be that of now.
fn ltv_minor(state: &CustomerState, h: Recency, settings: &RiskSettings) -> i64 {
    let x = f64::from(state.repeat_purchases());
    let m_x = if x > 0.0 {
        (state.revenue_minor - state.first_day_revenue_minor) as f64 / x
    } else {
        0.0
    };
    // A return gives money back: a purchase is worth the share of the customer's revenue it
    // kept. The state keeps totals only, so the share is over all its orders. Until
    // 2026-12-05 returns were not taken off: in UCI Online Retail a customer whose one repeat
    // purchase, an order of £168,470, was returned the same day had the data's third-highest
    // lifetime value, £35,000.
    let kept = if state.revenue_minor > 0 {
        state.kept_revenue_minor() as f64 / state.revenue_minor as f64
    } else {
        1.0
    };
    let spend = settings.spend.expected_spend(x, m_x) * kept;
    // The margin is a share of the spend, within the configured default's range: a margin of
    // -10^12 on orders of 2 minor units would otherwise multiply the expected spend, which
    // leans towards the population's mean, by -5·10^11.
    let ratio = if state.revenue_minor > 0 {
        (state.margin_minor as f64 / state.revenue_minor as f64).clamp(-1.0, 1.0)
    } else {
        settings.default_margin_ratio
    };
    let month = MONTH_MS / settings.time_unit_ms as f64;
    let value = settings.tables.clv(
        &settings.model,
        h,
        month,
        settings.clv_months,
        spend * ratio,
        settings.monthly_discount,
    );
    if value.is_finite() {
        let bound = MAX_LTV_MINOR as f64;
        value.clamp(-bound, bound).round() as i64
    } else {
        0
    }
}

fn days(ms: Millis) -> Millis {
    ms / DAY_MS
}

/// Calls `found` with each reason present at `as_of`, in code order, and a way to describe it:
/// the one place that says when a reason holds, whether the caller wants the codes or the text.
fn find_reasons(
    state: &CustomerState,
    as_of: Millis,
    p_alive: f64,
    s: &RiskSettings,
    found: &mut dyn FnMut(ReasonCode, &dyn Fn() -> Said),
) {
    if p_alive < s.inactive_below_p_alive {
        let silent = state.last_order_at.unwrap_or(state.first_event_at);
        found(ReasonCode::Inactive, &|| Said::Silent {
            days: days(as_of - silent),
            p_alive: s.shown_p_alive(p_alive, 2),
        });
    }
    let overdue = || {
        state
            .open_complaints
            .iter()
            .filter(|c| as_of - c.opened_at > s.complaint_sla_ms)
    };
    if let Some(oldest) = overdue().min_by_key(|c| c.opened_at) {
        found(ReasonCode::UnresolvedComplaint, &|| Said::Overdue {
            open: overdue().count() as u64,
            category: oldest.category.clone(),
            days: days(as_of - oldest.opened_at),
        });
    }
    let recent = |t: Option<Millis>| t.is_some_and(|t| t <= as_of && as_of - t <= s.recent_ms);
    let detractor = state.last_survey_score.is_some_and(|score| score <= 6);
    if recent(state.last_complaint_at) {
        found(ReasonCode::RecentBadExperience, &|| Said::RecentComplaint);
    } else if detractor && recent(state.last_survey_at) {
        found(ReasonCode::RecentBadExperience, &|| {
            Said::RecentDetractorSurvey
        });
    }
    if let Some(score) = state.last_survey_score.filter(|_| detractor) {
        found(ReasonCode::Detractor, &|| Said::SurveyScore(score));
    }
    if state.first_responses > 0 {
        let average = state.first_response_seconds_total / u64::from(state.first_responses);
        if average > s.slow_response_seconds {
            found(ReasonCode::SlowResponse, &|| {
                Said::FirstResponseSeconds(average)
            });
        }
    }
    // 0: the source publishes no deliveries, so no order is ever late.
    let delivering = s.late_delivery_ms > 0;
    let waiting = state
        .open_orders
        .iter()
        .filter(|o| delivering && as_of - o.placed_at > s.late_delivery_ms)
        .count();
    let slow_average = delivering
        && state.deliveries > 0
        && state.delivery_seconds_total / u64::from(state.deliveries) * 1000
            > u64::try_from(s.late_delivery_ms).unwrap_or(u64::MAX);
    if waiting > 0 {
        found(ReasonCode::LateDelivery, &|| {
            Said::Undelivered(waiting as u64)
        });
    } else if slow_average {
        found(ReasonCode::LateDelivery, &|| Said::SlowDeliveries);
    }
    if state.returns >= s.frequent_returns_min
        && f64::from(state.returns) >= s.frequent_returns_ratio * f64::from(state.orders.max(1))
    {
        found(ReasonCode::FrequentReturns, &|| Said::Returns {
            returns: state.returns,
            orders: state.orders,
        });
    }
    if state.subscription == Subscription::Cancelled {
        // No reason: a cancellation before `score --as-of`'s time, the state keeping only the
        // reason of a later one (`as_it_stood`).
        found(ReasonCode::Cancelled, &|| {
            Said::Cancelled(state.cancellation_reason.clone())
        });
    }
}

/// The purchase days (ascending, as the fold keeps them) up to `as_of`: the history as it
/// stood then, which `score` and `fit` read.
pub fn purchases_until(days: &[i32], as_of: Millis) -> &[i32] {
    &days[..days.partition_point(|d| day_start(*d) <= as_of)]
}

/// The state as far as it can be taken back to `as_of`: the purchases up to it, the last
/// order's time that of the last purchase day up to it (the state keeps days, not times, of
/// earlier orders), a cancellation after it not yet made (and one renewed since still in force,
/// by its `losses`), a survey after it not yet answered (the state keeps the latest survey
/// only, so none is known then), and the lifecycle it had then by its `losses` (lost, won
/// back, or before any loss new or active by its purchases). A customer stored before losses
/// were kept has none, so a lost or won-back one keeps its lifecycle of now. The rest (open
/// complaints and orders, whose reasons count only those opened by `as_of`; counts and sums of
/// complaints, deliveries, returns and responses) is the state's now: it keeps no history of
/// them.
pub fn as_it_stood<'s>(
    state: &'s CustomerState,
    losses: &[Loss],
    as_of: Millis,
) -> std::borrow::Cow<'s, CustomerState> {
    let purchases = purchases_until(&state.purchase_days, as_of).len();
    let lifecycle = match lost_or_won_back_at(losses, as_of) {
        Some(lifecycle) => lifecycle,
        None if losses.is_empty()
            && matches!(state.lifecycle, Lifecycle::Lost | Lifecycle::WonBack) =>
        {
            state.lifecycle
        }
        None if purchases > 1 => Lifecycle::Active,
        None => Lifecycle::New,
    };
    // The state keeps its latest cancellation only: one after `as_of` had not been made.
    let cancelled_later = state.cancelled_at.is_some_and(|c| c > as_of);
    // Lost for the reason `cancelled` and not won back by `as_of`: no renewal came between (it
    // would have won the customer back), so the subscription was still cancelled then, even if
    // a renewal since has made it active, or it was cancelled again after `as_of` (that
    // earlier cancellation's reason is not kept).
    let still_cancelled = latest_loss(losses, as_of)
        .is_some_and(|l| l.reason == ReasonCode::Cancelled && !l.won_back_by(as_of));
    let surveyed_later = state.last_survey_at.is_some_and(|at| at > as_of);
    let ordered_later = state.last_order_at.is_some_and(|at| at > as_of);
    if purchases == state.purchase_days.len()
        && lifecycle == state.lifecycle
        && !cancelled_later
        && (!still_cancelled || state.subscription == Subscription::Cancelled)
        && !surveyed_later
        && !ordered_later
    {
        return std::borrow::Cow::Borrowed(state);
    }
    let mut then = state.clone();
    then.purchase_days.truncate(purchases);
    then.lifecycle = lifecycle;
    if ordered_later {
        then.last_order_at = then.purchase_days.last().map(|d| day_start(*d));
    }
    if surveyed_later {
        then.last_survey_score = None;
        then.last_survey_at = None;
    }
    if cancelled_later {
        then.subscription = Subscription::None;
        then.cancellation_reason = None;
        then.cancelled_at = None;
    }
    if still_cancelled {
        then.subscription = Subscription::Cancelled;
    }
    std::borrow::Cow::Owned(then)
}

/// One line of `score --as-of`: the customer's model values at `as_of`, with expected orders
/// over `horizon_days`, and its losses up to `as_of` (each won back by then or not). `state` is
/// the customer's as it stood at `as_of` ([`as_it_stood`]), `now` its state now, which gives
/// the lifetime value its value per purchase.
pub fn score_line(
    state: &CustomerState,
    now: &CustomerState,
    trailing: &Trailing,
    losses: &[Loss],
    as_of: Millis,
    horizon_days: u32,
    settings: &RiskSettings,
) -> serde_json::Value {
    let losses: Vec<serde_json::Value> = losses
        .iter()
        .filter(|l| l.at <= as_of)
        .map(|l| {
            serde_json::json!({
                "at": format_millis(l.at),
                "segment": l.segment,
                "reason": l.reason,
                "value_minor": l.value_minor,
                "won_back_at": l.won_back_at.filter(|_| l.won_back_by(as_of)).map(format_millis),
            })
        })
        .collect();
    let mut a = assess(state, trailing, as_of, settings);
    let h = recency(state, as_of, settings.time_unit_ms);
    a.ltv_minor = ltv_minor(now, h, settings);
    let horizon = f64::from(horizon_days) * DAY_MS as f64 / settings.time_unit_ms as f64;
    serde_json::json!({
        "customer_id": state.customer_id,
        "as_of": format_millis(as_of),
        "x": a.x,
        "t_x": round(a.t_x, 4),
        "T": round(a.t, 4),
        "time_unit_days": settings.time_unit_ms as f64 / DAY_MS as f64,
        "p_alive": settings.shown_p_alive(a.p_alive, 6),
        "expected_orders": round(settings.model.expected_purchases(h, horizon), 6),
        "horizon_days": horizon_days,
        "score": settings.shown_score(a.score, 6),
        "level": a.level,
        "reasons": a.reasons,
        "segment": a.segment,
        "lifecycle": a.lifecycle,
        "ltv_minor": a.ltv_minor,
        "losses": losses,
    })
}

/// The least move of a silent customer's score its timer waits for: with a
/// `min_score_change` of 0 (every move published), a timer a millisecond on would have fired
/// at every millisecond of its silence.
pub const MIN_TIMED_SCORE_MOVE: f64 = 0.01;

/// When to look at a silent customer again: the first event time after `now` at which the
/// assessment can change without a new event, or its score move `min_score_change` from the
/// score last `published`. That is the earliest of the moments P(alive) crosses a threshold
/// that matters (a level cut-off given the current reasons, the inactive and lost thresholds,
/// the score's move; DOMAIN.md's closed form), a complaint passes its SLA, a recent bad
/// experience stops being recent, or an open order becomes late. `None` when nothing can change.
pub fn next_check(
    state: &CustomerState,
    now: &Assessment,
    published: Option<f64>,
    settings: &RiskSettings,
) -> Option<Millis> {
    let as_of = now.as_of;
    let unit = settings.time_unit_ms as f64;
    let kept = now.kept;
    let h = recency(state, as_of, settings.time_unit_ms);
    let origin = origin(state) as f64;
    // P(alive) only falls while the customer stays silent, so its score only rises: it moves
    // the published score's `min_score_change` where P(alive) falls to this (a hair further,
    // so that the score there has moved by no less; NaN, which no P(alive) is above, when it
    // cannot move so far). Until 2026-12-05 no timer looked for it: a silent customer's score
    // rose from 0.70 to 0.83 with no record.
    let step = settings.min_score_change.max(MIN_TIMED_SCORE_MOVE);
    let moved = published
        .map(|score| (1.0 - score - step - 1e-9) / kept)
        .filter(|p| *p > 0.0)
        .unwrap_or(f64::NAN);
    // P(alive) only falls while the customer stays silent, so a higher threshold is crossed
    // no later than a lower one: the first threshold below P(alive), from the highest down,
    // that has a crossing ahead has the earliest, and the others need not be solved for.
    let [medium, high, inactive, lost] = settings.thresholds(kept);
    let mut thresholds = [medium, high, inactive, lost, moved];
    thresholds.sort_unstable_by(|a, b| b.total_cmp(a));
    let crossing = thresholds
        .into_iter()
        .filter(|p| *p < now.p_alive)
        .find_map(|p| {
            let t = settings.model.crossing_time(h, p)?;
            let at = origin + t * unit;
            let at = (at.is_finite() && at < 9.0e15).then(|| at.ceil() as Millis)?;
            (at > as_of).then_some(at)
        });
    let slas = state
        .open_complaints
        .iter()
        .map(|c| c.opened_at + settings.complaint_sla_ms + 1);
    let recents = [state.last_complaint_at, state.last_survey_at]
        .into_iter()
        .flatten()
        .map(|t| t + settings.recent_ms + 1);
    let deliveries = state
        .open_orders
        .iter()
        .map(|o| o.placed_at + settings.late_delivery_ms + 1);
    crossing
        .into_iter()
        .chain(slas)
        .chain(recents)
        .chain(deliveries)
        .filter(|t| *t > as_of)
        .min()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn settings() -> RiskSettings {
        RiskSettings::default()
    }

    fn buyer(days: &[i32]) -> CustomerState {
        let mut state = CustomerState::new("c");
        state.purchase_days = days.to_vec();
        state.orders = days.len() as u32;
        state.revenue_minor = 5_000 * days.len() as i64;
        state.first_day_revenue_minor = 5_000;
        state.margin_minor = 1_000 * days.len() as i64;
        state.first_event_at = Millis::from(days[0]) * DAY_MS;
        state.last_order_at = days.last().map(|d| Millis::from(*d) * DAY_MS);
        state.lifecycle = Lifecycle::Active;
        state
    }

    /// Each detail's text, as the record's JSON and the scores show it (written out here by
    /// hand: these are the texts the details had when they were formatted where found).
    #[test]
    fn each_detail_reads_as_its_text() {
        let texts = [
            (Said::Text("as stored".into()), "as stored"),
            (
                Said::Silent {
                    days: 49,
                    p_alive: 0.125,
                },
                "no order for 49 days; P(alive) 0.12",
            ),
            (
                Said::Overdue {
                    open: 2,
                    category: "billing".into(),
                    days: 9,
                },
                "2 complaint(s) open beyond the SLA, oldest billing open 9 days",
            ),
            (Said::RecentComplaint, "complaint in the last days"),
            (
                Said::RecentDetractorSurvey,
                "detractor survey in the last days",
            ),
            (Said::SurveyScore(3), "last survey score 3"),
            (
                Said::FirstResponseSeconds(7_201),
                "average first response 7201 s",
            ),
            (
                Said::Undelivered(4),
                "4 order(s) undelivered beyond the delivery target",
            ),
            (
                Said::SlowDeliveries,
                "deliveries slower than the target on average",
            ),
            (
                Said::Returns {
                    returns: 5,
                    orders: 6,
                },
                "5 returns over 6 orders",
            ),
            (
                Said::Cancelled(Some("price".into())),
                "subscription cancelled: price",
            ),
            (
                Said::Cancelled(None),
                "subscription cancelled (its reason is not kept)",
            ),
        ];
        for (said, text) in texts {
            let reason = Reason {
                code: ReasonCode::Detractor,
                detail: said.clone().into(),
            };
            assert_eq!(reason.detail.to_string(), text);
            // JSON has the text; the outbox's postcard the values, read back as they were.
            assert_eq!(
                serde_json::to_value(&reason).unwrap(),
                serde_json::json!({"code": "detractor", "detail": text})
            );
            let stored = postcard::to_allocvec(&reason).unwrap();
            assert_eq!(postcard::from_bytes::<Reason>(&stored).unwrap(), reason);
            let read: Reason =
                serde_json::from_value(serde_json::json!({"code": "detractor", "detail": text}))
                    .unwrap();
            assert_eq!(read.detail, Detail::from(text));
        }
    }

    #[test]
    fn score_is_one_minus_p_alive_times_what_the_reasons_keep() {
        let s = settings();
        let mut state = buyer(&[0, 7, 14, 21]);
        let fresh = assess(&state, &Trailing::default(), 21 * DAY_MS, &s);
        assert!(fresh.reasons.is_empty());
        assert!((fresh.score - (1.0 - fresh.p_alive)).abs() < 1e-12);
        state.last_survey_score = Some(3);
        state.last_survey_at = Some(20 * DAY_MS);
        let unhappy = assess(&state, &Trailing::default(), 21 * DAY_MS, &s);
        let codes: Vec<_> = unhappy.reasons.iter().map(|r| r.code).collect();
        assert_eq!(
            codes,
            [ReasonCode::RecentBadExperience, ReasonCode::Detractor]
        );
        let want = 1.0 - unhappy.p_alive * 0.75 * 0.8;
        assert!((unhappy.score - want).abs() < 1e-12);
    }

    /// A record writes its reason codes, level and lifecycle by these names
    /// (`ChurnRiskRecord::to_json`); the stored encodings and the other outputs by serde's.
    #[test]
    fn the_names_records_write_are_serde_s() {
        let serde_name = |value: serde_json::Value| value.as_str().unwrap().to_owned();
        for code in REASON_CODES {
            assert_eq!(code.code(), serde_name(serde_json::json!(code)));
        }
        for level in [Level::Low, Level::Medium, Level::High] {
            assert_eq!(level.name(), serde_name(serde_json::json!(level)));
        }
        for lifecycle in crate::segments::LIFECYCLES {
            assert_eq!(lifecycle.name(), serde_name(serde_json::json!(lifecycle)));
        }
    }

    /// Taken back to a time before its latest survey and order, a customer is not a detractor
    /// by that later survey, and its silence is counted from its last purchase up to then; at
    /// the survey's time it is a detractor.
    #[test]
    fn a_survey_or_an_order_after_the_time_asked_for_is_not_known_then() {
        let s = settings();
        let mut state = buyer(&[0, 7, 14, 21, 80]);
        state.last_order_at = Some(80 * DAY_MS + 3_600_000);
        state.last_survey_score = Some(2);
        state.last_survey_at = Some(79 * DAY_MS);
        let as_of = 70 * DAY_MS;
        let then = as_it_stood(&state, &[], as_of);
        assert_eq!(then.purchase_days, [0, 7, 14, 21]);
        assert_eq!(then.last_order_at, Some(21 * DAY_MS));
        assert_eq!((then.last_survey_score, then.last_survey_at), (None, None));
        let assessed = assess(&then, &Trailing::default(), as_of, &s);
        let reasons: Vec<_> = assessed
            .reasons
            .iter()
            .map(|r| (r.code, r.detail.to_string()))
            .collect();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert_eq!(reasons[0].0, ReasonCode::Inactive);
        assert!(
            reasons[0].1.starts_with("no order for 49 days;"),
            "{reasons:?}"
        );
        let at_survey = as_it_stood(&state, &[], 79 * DAY_MS + 1);
        let surveyed = assess(&at_survey, &Trailing::default(), 79 * DAY_MS + 1, &s);
        assert!(
            surveyed
                .reasons
                .iter()
                .any(|r| r.code == ReasonCode::Detractor),
            "{:?}",
            surveyed.reasons
        );
    }

    /// A purchase is worth what the customer kept of it: half the revenue returned halves the
    /// lifetime value, all of it (or more, for orders placed before the state began) leaves
    /// none.
    #[test]
    fn a_lifetime_value_counts_only_what_the_customer_kept() {
        let s = settings();
        let mut state = buyer(&[0, 7, 14, 21]);
        let h = recency(&state, 22 * DAY_MS, s.time_unit_ms);
        let whole = ltv_minor(&state, h, &s);
        assert!(whole > 1_000, "{whole}");
        state.returns = 2;
        state.returned_minor = state.revenue_minor / 2;
        let half = ltv_minor(&state, h, &s);
        assert!((half - whole / 2).abs() <= 1, "{half} against {whole}");
        for returned in [state.revenue_minor, 2 * state.revenue_minor] {
            state.returned_minor = returned;
            assert_eq!(ltv_minor(&state, h, &s), 0, "{returned} returned");
        }
    }

    #[test]
    fn a_lifetime_value_takes_at_most_the_whole_spend_as_margin_and_stays_bounded() {
        let s = settings();
        let h = Recency {
            x: 1.0,
            t_x: 1.0,
            t: 3.0,
        };
        let mut state = buyer(&[0, 7]);
        state.revenue_minor = 2;
        state.first_day_revenue_minor = 1;
        state.margin_minor = -2;
        let whole_loss = ltv_minor(&state, h, &s);
        assert!(whole_loss < 0, "{whole_loss}");
        // A margin a trillion times the revenue loses no more than the whole spend.
        state.margin_minor = -1_000_000_000_000;
        assert_eq!(ltv_minor(&state, h, &s), whole_loss);
        // Parameters that make the value run off keep it within its bound.
        let mut wild = settings();
        wild.spend.gamma = 1e300;
        state.margin_minor = 2;
        assert_eq!(ltv_minor(&state, h, &wild), MAX_LTV_MINOR);
        state.margin_minor = -2;
        assert_eq!(ltv_minor(&state, h, &wild), -MAX_LTV_MINOR);
    }

    /// `score --as-of` a time before some of the customer's purchases: the purchases expected
    /// are those the history then gives, each at the value the state gives it now. With every
    /// purchase worth the population's mean, that value is the mean whatever the history, so a
    /// customer who bought on after `as_of` is worth, as of then, what one who stopped there is
    /// worth. It was 2.2 times more: the revenue of every later order was spread over the two
    /// repeat purchases of then.
    #[test]
    fn a_past_lifetime_value_spreads_no_later_order_over_the_purchases_then() {
        let mut s = settings();
        // The population's mean spend per purchase, gamma·p/(q - 1), is the buyer's 5,000.
        s.spend.gamma = 5_000.0 * (s.spend.q - 1.0) / s.spend.p;
        let as_of = 15 * DAY_MS;
        let line = |days: &[i32]| {
            let now = buyer(days);
            let then = as_it_stood(&now, &[], as_of);
            score_line(&then, &now, &Trailing::default(), &[], as_of, 90, &s)
        };
        let stopped = line(&[0, 7, 14]);
        let went_on = line(&[0, 7, 14, 21, 28, 35]);
        assert_eq!(went_on["x"], 2);
        let ltv = stopped["ltv_minor"].as_i64().unwrap();
        assert!(ltv > 5_000, "{stopped}");
        assert_eq!(went_on["ltv_minor"], ltv, "{went_on}");
    }

    /// A shop that publishes no deliveries leaves every order open. With `late_delivery_ms` 0
    /// (`risk.late_delivery_days = 0`) no order is late, however old, no delivery average is
    /// slow, and no timer waits for an order to become late (each would be due the moment
    /// after its order, passed already); with the default, the same customer has the reason,
    /// and a timer waits for its newest order.
    #[test]
    fn late_delivery_off_names_no_late_order_and_sets_no_timer_for_one() {
        let mut state = buyer(&[0, 7, 14, 21]);
        state.open_orders = [0, 21]
            .into_iter()
            .map(|day| crate::fold::OpenOrder {
                order_id: format!("o-{day}"),
                placed_at: day * DAY_MS,
            })
            .collect();
        let as_of = 22 * DAY_MS;
        let codes = |s: &RiskSettings, state: &CustomerState| -> Vec<ReasonCode> {
            let now = assess(state, &Trailing::default(), as_of, s);
            now.reasons.iter().map(|r| r.code).collect()
        };
        let default = settings();
        assert!(codes(&default, &state).contains(&ReasonCode::LateDelivery));
        let now = assess(&state, &Trailing::default(), as_of, &default);
        let order_late = 21 * DAY_MS + default.late_delivery_ms + 1;
        assert_eq!(
            next_check(&state, &now, Some(now.score), &default),
            Some(order_late),
            "the newest order's lateness is the next thing to change"
        );

        let off = RiskSettings {
            late_delivery_ms: 0,
            ..settings()
        };
        assert!(!codes(&off, &state).contains(&ReasonCode::LateDelivery));
        // The open orders set no timer: the next check is the one without them.
        let next = |state: &CustomerState| {
            let now = assess(state, &Trailing::default(), as_of, &off);
            next_check(state, &now, Some(now.score), &off)
        };
        let without_orders = CustomerState {
            open_orders: Vec::new(),
            ..state.clone()
        };
        assert_eq!(next(&state), next(&without_orders));
        // Deliveries slower than any target on average are no reason either.
        state.open_orders.clear();
        state.deliveries = 2;
        state.delivery_seconds_total = 2 * 30 * 86_400;
        assert!(codes(&default, &state).contains(&ReasonCode::LateDelivery));
        assert!(!codes(&off, &state).contains(&ReasonCode::LateDelivery));
    }

    #[test]
    fn a_timer_waits_for_the_score_to_move_at_least_a_hundredth() {
        let state = buyer(&[0, 7, 14, 21, 28]);
        for (min_score_change, step) in [(0.0, 0.01), (0.001, 0.01), (0.05, 0.05), (0.2, 0.2)] {
            let s = RiskSettings {
                min_score_change,
                ..settings()
            };
            let now = assess(&state, &Trailing::default(), 30 * DAY_MS, &s);
            let at = next_check(&state, &now, Some(now.score), &s).expect("a timer");
            let then = assess(&state, &Trailing::default(), at, &s);
            let before = assess(&state, &Trailing::default(), at - 1, &s);
            // The timer is where the score has moved the step (or a threshold came first).
            assert!(
                then.score - now.score >= step - 1e-9
                    || then.level != now.level
                    || then.codes != now.codes,
                "{min_score_change}: {} -> {}",
                now.score,
                then.score
            );
            assert!(
                before.score - now.score < step + 1e-6,
                "{min_score_change}: not later than the move"
            );
        }
    }

    #[test]
    fn the_timer_fires_exactly_when_the_level_would_change() {
        let s = settings();
        let state = buyer(&[0, 7, 14, 21, 28]);
        let now = assess(&state, &Trailing::default(), 28 * DAY_MS, &s);
        assert_eq!(now.level, Level::Low);
        let at = next_check(&state, &now, None, &s).expect("a silent buyer gets a timer");
        let just_before = assess(&state, &Trailing::default(), at - 60_000, &s);
        let at_timer = assess(&state, &Trailing::default(), at, &s);
        assert_eq!(just_before.level, Level::Low);
        assert!(
            at_timer.level > Level::Low || !at_timer.reasons.is_empty(),
            "something changes at the timer: {at_timer:?}"
        );
    }

    /// `next_check` solves only for the highest threshold below P(alive) with a crossing
    /// ahead: the same time as solving for every threshold and taking the earliest.
    #[test]
    fn the_timer_is_the_earliest_of_every_thresholds_crossing() {
        for model in [Model::BgNbd, Model::MbgNbd] {
            let s = RiskSettings {
                model: PurchaseModel::cdnow(model),
                ..settings()
            };
            let mut checked = 0;
            for days in [
                &[0][..],
                &[0, 3],
                &[0, 7, 14],
                &[0, 7, 14, 21, 28],
                &[0, 40, 41],
            ] {
                let state = buyer(days);
                let last = *days.last().unwrap();
                for silent in [0, 1, 5, 20, 60, 200] {
                    let as_of = Millis::from(last + silent) * DAY_MS + 1;
                    let now = assess(&state, &Trailing::default(), as_of, &s);
                    let h = recency(&state, as_of, s.time_unit_ms);
                    let kept = s.kept(now.codes);
                    let every = s
                        .thresholds(kept)
                        .into_iter()
                        .filter(|p| *p < now.p_alive)
                        .filter_map(|p| s.model.crossing_time(h, p))
                        .map(|t| {
                            (origin(&state) as f64 + t * s.time_unit_ms as f64).ceil() as Millis
                        })
                        .filter(|at| *at > as_of)
                        .min();
                    // The buyers here have no complaints, surveys or open orders: the crossing
                    // alone sets the timer.
                    assert_eq!(
                        next_check(&state, &now, None, &s),
                        every,
                        "{model:?} {days:?} +{silent}"
                    );
                    checked += usize::from(every.is_some());
                }
            }
            assert!(
                checked > 10,
                "{model:?}: crossings ahead in {checked} cases"
            );
        }
    }

    #[test]
    fn publishing_needs_a_level_score_or_reason_change() {
        let s = settings();
        let state = buyer(&[0, 7, 14]);
        let a = assess(&state, &Trailing::default(), 14 * DAY_MS, &s);
        assert!(a.worth_publishing(None, s.min_score_change));
        let last = a.published();
        let mut b = a.clone();
        b.score += 0.01;
        assert!(!b.worth_publishing(Some(&last), s.min_score_change));
        b.score += 0.05;
        assert!(b.worth_publishing(Some(&last), s.min_score_change));
        let mut c = a.clone();
        c.codes.insert(ReasonCode::SlowResponse);
        assert!(c.worth_publishing(Some(&last), s.min_score_change));
    }

    #[test]
    fn cancellation_makes_a_customer_lost_with_its_reason() {
        let s = settings();
        let mut state = buyer(&[0, 7]);
        state.subscription = Subscription::Cancelled;
        state.cancellation_reason = Some("price".into());
        state.lifecycle = Lifecycle::Lost;
        let a = assess(&state, &Trailing::default(), 8 * DAY_MS, &s);
        assert_eq!(a.lifecycle, Lifecycle::Lost);
        assert_eq!(a.reasons[0].code, ReasonCode::Cancelled);
        assert_eq!(
            a.reasons[0].detail.to_string(),
            "subscription cancelled: price"
        );
    }

    #[test]
    fn a_record_s_score_and_p_alive_never_show_across_the_thresholds_their_level_and_lifecycle_took(
    ) {
        let s = settings();
        let shown = |score: f64, p_alive: f64| {
            let mut a = assess(&buyer(&[0, 7]), &Trailing::default(), 8 * DAY_MS, &s);
            (a.score, a.p_alive) = (score, p_alive);
            let record = a.into_record("c", "r".into(), None, None, &s);
            let json: serde_json::Value = serde_json::from_slice(&record.to_json()).unwrap();
            (
                json["score"].as_f64().unwrap(),
                json["p_alive"].as_f64().unwrap(),
            )
        };
        // Rounded, 0.69996 would be a medium score of 0.7 beside a high one of 0.7 (a timer
        // fires where the score reaches the threshold); P(alive) 0.19996 a lost customer's 0.2.
        assert_eq!(shown(0.69996, 0.19996), (0.6999, 0.1999));
        assert_eq!(shown(0.39999, 0.49999), (0.3999, 0.4999));
        assert_eq!(shown(0.7, 0.2), (0.7, 0.2), "at the threshold: on its side");
        assert_eq!(
            shown(0.69994, 0.50004),
            (0.6999, 0.5),
            "rounding that crosses nothing"
        );
        assert_eq!(shown(0.123456, 0.987654), (0.1235, 0.9877));
        // A threshold of more decimals than shown: the nearest shown value on each side.
        assert_eq!(super::shown(0.70004, 4, &[0.70004]), 0.7001);
        assert_eq!(super::shown(0.70003, 4, &[0.70004]), 0.7);
        // The inactive reason's text shows P(alive) to two decimals, also below its threshold.
        let quiet = s.shown_p_alive(0.4996, 2);
        assert_eq!(format!("{quiet:.2}"), "0.49");
    }

    #[test]
    fn the_record_is_what_a_json_value_of_its_fields_writes() {
        let s = settings();
        let mut state = buyer(&[0, 7, 14]);
        state.last_survey_score = Some(2);
        state.last_survey_at = Some(13 * DAY_MS);
        let a = assess(&state, &Trailing::default(), 30 * DAY_MS + 1, &s);
        assert!(!a.reasons.is_empty());
        let rfm = crate::rfm::Score {
            f: 2,
            m: 3,
            r: 1,
            segment: "at_risk".into(),
        };
        for (rfm, caused_by) in [(Some(&rfm), Some("e-1")), (None, None)] {
            let record =
                a.clone()
                    .into_record("c", "orders-0-7".into(), caused_by, rfm.cloned(), &s);
            let got = String::from_utf8(record.to_json()).unwrap();
            let reasons: Vec<_> = a
                .reasons
                .iter()
                .map(|r| serde_json::json!({"code": r.code, "detail": r.detail}))
                .collect();
            let want = serde_json::json!({
                "record_id": "orders-0-7",
                "customer_id": "c",
                "as_of": "1970-01-31T00:00:00.001Z",
                "score": s.shown_score(a.score, 4),
                "level": a.level,
                "p_alive": s.shown_p_alive(a.p_alive, 4),
                "expected_orders_90d": round(a.expected_orders_90d, 4),
                "reasons": reasons,
                "segment": a.segment,
                "lifecycle": a.lifecycle,
                "ltv_minor": a.ltv_minor,
                "rfm": rfm.map(|r| serde_json::json!({"r": r.r, "f": r.f, "m": r.m, "segment": r.segment})),
                "caused_by_event_id": caused_by,
            });
            // Byte for byte: a `Value`'s keys are written in alphabetical order, as the record's.
            assert_eq!(got, want.to_string());
        }
    }
}
