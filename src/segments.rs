//! Segment metrics: per value-tier segment, the population by lifecycle and churn-risk level,
//! and per closed UTC day the flows the business is run on (DOMAIN.md, the five "guerrilla
//! metrics"; CONTRACT section 2, `customer.segment-metrics`). Pure: must not know about Kafka,
//! RocksDB, Prometheus or the wall clock; the caller persists [`Segments`] with each commit and
//! tells it what happened to whom.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{dashed_id, format_millis, IdPart, Millis};
use crate::fold::Lifecycle;
use crate::risk::{Level, ReasonCode};
use crate::trends::Counted;

pub const DAY_MS: Millis = 86_400_000;

/// How the population counts one customer: taken from its latest churn-risk record, so the
/// population and the `customer.churn-risk` topic always agree. Stored with the customer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Standing {
    pub segment: String,
    pub lifecycle: Lifecycle,
    pub level: Level,
    pub ltv_minor: i64,
}

/// One time a customer was counted lost in the segment metrics: when (the time of the
/// cancellation that lost it, else of the churn-risk record that turned it lost), in which
/// segment, for the strongest reason it then had, with its revenue to date less its returns, and when it was won
/// back (the time of the order or renewal that did, else of the churn-risk record). A customer keeps its latest
/// [`LOSSES_KEPT`], for the lost-customer review (`score --lost-since`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Loss {
    pub at: Millis,
    pub segment: String,
    pub reason: ReasonCode,
    pub value_minor: i64,
    pub won_back_at: Option<Millis>,
}

/// How many losses a customer keeps: a customer lost and won back again and again cannot grow
/// its state without bound.
pub const LOSSES_KEPT: usize = 16;

/// Notes that the customer was counted lost at `loss.at`, forgetting the oldest loss past
/// [`LOSSES_KEPT`].
pub fn note_loss(losses: &mut Vec<Loss>, loss: Loss) {
    if losses.len() >= LOSSES_KEPT {
        losses.remove(0);
    }
    losses.push(loss);
}

/// Notes that the customer, lost, was counted won back at `at`.
pub fn note_won_back(losses: &mut [Loss], at: Millis) {
    if let Some(last) = losses.last_mut() {
        last.won_back_at.get_or_insert(at);
    }
}

impl Loss {
    /// Whether the customer was won back from this loss by `as_of`.
    pub fn won_back_by(&self, as_of: Millis) -> bool {
        self.won_back_at.is_some_and(|w| w <= as_of)
    }
}

/// The latest of `losses` counted at or before `as_of`.
pub fn latest_loss(losses: &[Loss], as_of: Millis) -> Option<&Loss> {
    losses.iter().rev().find(|l| l.at <= as_of)
}

/// The lifecycle a customer with `losses` had at `as_of` as far as losing goes: lost when a
/// loss at or before it was not won back by then, won back when one was; `None` when no loss
/// was counted by then (nor, with [`LOSSES_KEPT`] of them kept, possibly forgotten).
pub fn lost_or_won_back_at(losses: &[Loss], as_of: Millis) -> Option<Lifecycle> {
    match latest_loss(losses, as_of) {
        Some(l) if l.won_back_by(as_of) => Some(Lifecycle::WonBack),
        Some(_) => Some(Lifecycle::Lost),
        // Before the oldest loss kept, a forgotten one may have been won back.
        None if losses.len() >= LOSSES_KEPT => Some(Lifecycle::WonBack),
        None => None,
    }
}

/// A customer's revenue and margin per calendar month (UTC), for value tiers by trailing
/// revenue: the month of `as_of` and the `months - 1` before it count. Kept with the customer;
/// months too old to count for any later time are dropped, so it stays small.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trailing {
    /// `(month index: year * 12 + month - 1, revenue, margin)`, ascending.
    pub months: Vec<(i32, i64, i64)>,
}

/// The month index (year * 12 + month - 1) of an event time, in UTC; times outside the years
/// -9999 to 9999 (which `time` represents) count as January 1970, as they did when `time`
/// computed it.
///
/// The month last asked for is remembered with its bounds, per thread: a customer's trailing
/// months ask two or three times an event (its tier, when its revenue ages out, an order),
/// nearly always for the month asked last, and working it out is about 38 instructions a time:
/// remembered, the broker benchmark's fold takes 1.3% fewer (callgrind, `benches/HISTORY.md`,
/// 2026-12-06, 19:42-). A month not remembered costs its bounds too, by integer arithmetic.
pub fn month_index(at: Millis) -> i32 {
    thread_local! {
        /// The last month worked out: its first millisecond, the next month's, its index.
        /// Empty at first (its end not after its start).
        static LAST: std::cell::Cell<(Millis, Millis, i32)> =
            const { std::cell::Cell::new((0, 0, 0)) };
    }
    LAST.with(|last| {
        let (start, end, index) = last.get();
        if start <= at && at < end {
            return index;
        }
        let index = month_index_of(at);
        // Outside `time`'s years (January 1970 for them) the bounds hold no `at` that is not
        // in the month.
        last.set((month_start(index), month_start(index + 1), index));
        index
    })
}

/// The event time at which month `index` starts, in UTC, by integer arithmetic: the inverse of
/// `civil_month`, so that a month [`month_index`] did not remember costs it about as much
/// again, not `time`'s conversions.
pub fn month_start(index: i32) -> Millis {
    let (year, month) = (
        i64::from(index.div_euclid(12)),
        i64::from(index.rem_euclid(12)) + 1,
    );
    // Years from March on, as `civil_month` counts them.
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let march_based = (month + 9) % 12;
    let day_of_year = (153 * march_based + 2) / 5;
    let day_of_era = 365 * year_of_era + year_of_era / 4 - year_of_era / 100 + day_of_year;
    (era * 146_097 + day_of_era - 719_468) * DAY_MS
}

/// [`month_index`], worked out.
fn month_index_of(at: Millis) -> i32 {
    let seconds = at.div_euclid(1000);
    let seconds = if (MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        seconds
    } else {
        0
    };
    let (year, month) = civil_month(seconds.div_euclid(86_400));
    (year * 12 + month - 1) as i32
}

/// The first and last second `time` represents: -9999-01-01 and 9999-12-31 23:59:59, UTC.
const MIN_SECONDS: i64 = -377_705_116_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// The proleptic Gregorian year and month (1 to 12) of the day `days` after 1970-01-01, by
/// integer arithmetic alone (a replay spent 2% of its fold in `time`'s conversion, a
/// customer's trailing months asking for it at every order and every published record).
/// Days are counted from 0000-03-01 within 400-year eras of 146,097 days, so that a year's
/// leap day comes last; within an era, March-based months are 153 days a five.
fn civil_month(days: i64) -> (i64, i64) {
    let shifted = days + 719_468; // 1970-01-01 is day 719,468 from 0000-03-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_based = (5 * day_of_year + 2) / 153;
    let month = if march_based < 10 {
        march_based + 3
    } else {
        march_based - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month)
}

impl Trailing {
    /// Adds an order at `at`, and forgets months older than the newest one kept can use.
    pub fn add(&mut self, at: Millis, revenue_minor: i64, margin_minor: i64, months: u32) {
        let month = month_index(at);
        match self.months.binary_search_by_key(&month, |m| m.0) {
            Ok(i) => {
                self.months[i].1 += revenue_minor;
                self.months[i].2 += margin_minor;
            }
            Err(i) => self.months.insert(i, (month, revenue_minor, margin_minor)),
        }
        if let Some(newest) = self.months.last().map(|m| m.0) {
            let oldest_useful = newest - months as i32 + 1;
            self.months.retain(|m| m.0 >= oldest_useful);
        }
    }

    /// Revenue and margin of the month of `as_of` and the `months - 1` before it.
    pub fn totals(&self, as_of: Millis, months: u32) -> (i64, i64) {
        let last = month_index(as_of);
        let first = last - months as i32 + 1;
        self.months
            .iter()
            .filter(|m| (first..=last).contains(&m.0))
            .fold((0, 0), |(r, g), m| (r + m.1, g + m.2))
    }

    /// The first time after `as_of` at which the totals change without an order: when the
    /// oldest month counted leaves the window.
    pub fn next_change(&self, as_of: Millis, months: u32) -> Option<Millis> {
        let last = month_index(as_of);
        let first = last - months as i32 + 1;
        self.months
            .iter()
            .find(|m| (first..=last).contains(&m.0))
            .map(|m| month_start(m.0 + months as i32))
    }
}

/// The customers of one segment now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Population {
    /// By lifecycle, in [`LIFECYCLES`] order.
    pub by_lifecycle: [i64; 5],
    /// By churn-risk level: low, medium, high.
    pub by_level: [i64; 3],
    /// The lifetime values of the customers not lost, for the average. In 128 bits, so that no
    /// number of customers overflows it (each value is within ±2^53, `risk::MAX_LTV_MINOR`;
    /// postcard writes an i128 as it writes an i64 of the same value, so a stored population
    /// reads the same).
    pub active_ltv_minor: i128,
}

pub const LIFECYCLES: [Lifecycle; 5] = [
    Lifecycle::New,
    Lifecycle::Active,
    Lifecycle::AtRisk,
    Lifecycle::Lost,
    Lifecycle::WonBack,
];

pub const LEVELS: [Level; 3] = [Level::Low, Level::Medium, Level::High];

fn lifecycle_index(lifecycle: Lifecycle) -> usize {
    LIFECYCLES.iter().position(|l| *l == lifecycle).unwrap_or(0)
}

fn level_index(level: Level) -> usize {
    LEVELS.iter().position(|l| *l == level).unwrap_or(0)
}

impl Population {
    /// Adds `sign` times `other`.
    fn merge(&mut self, other: &Population, sign: i64) {
        for (mine, theirs) in self.by_lifecycle.iter_mut().zip(other.by_lifecycle) {
            *mine += sign * theirs;
        }
        for (mine, theirs) in self.by_level.iter_mut().zip(other.by_level) {
            *mine += sign * theirs;
        }
        self.active_ltv_minor += i128::from(sign) * other.active_ltv_minor;
    }

    fn add(&mut self, standing: &Standing, sign: i64) {
        self.by_lifecycle[lifecycle_index(standing.lifecycle)] += sign;
        self.by_level[level_index(standing.level)] += sign;
        if standing.lifecycle != Lifecycle::Lost {
            self.active_ltv_minor += i128::from(sign) * i128::from(standing.ltv_minor);
        }
    }

    /// Customers not lost: new, active, at risk and won back.
    pub fn active(&self) -> i64 {
        self.by_lifecycle.iter().sum::<i64>() - self.lost()
    }

    pub fn lost(&self) -> i64 {
        self.by_lifecycle[lifecycle_index(Lifecycle::Lost)]
    }

    pub fn at_risk(&self) -> i64 {
        self.by_lifecycle[lifecycle_index(Lifecycle::AtRisk)]
    }

    /// The mean lifetime value of the customers not lost, to the nearest minor unit (a half
    /// away from zero).
    pub fn avg_ltv_minor(&self) -> i64 {
        match self.active() {
            n if n > 0 => {
                let n = i128::from(n);
                let (quotient, remainder) = (self.active_ltv_minor / n, self.active_ltv_minor % n);
                let avg = if 2 * remainder.abs() >= n {
                    quotient + self.active_ltv_minor.signum()
                } else {
                    quotient
                };
                i64::try_from(avg).unwrap_or(if avg < 0 { i64::MIN } else { i64::MAX })
            }
            _ => 0,
        }
    }
}

/// What one segment did in one day.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Flows {
    pub new_customers: u64,
    /// What the new customers' first orders were worth.
    pub new_value_minor: i64,
    pub lost_customers: u64,
    /// The lost customers' revenue to date, less their returns.
    pub lost_value_minor: i64,
    /// Lost customers by the strongest reason when they were lost.
    pub lost_reasons: BTreeMap<String, u64>,
    pub won_back: u64,
    pub renewals: u64,
    pub renewal_reasons: BTreeMap<String, u64>,
    pub orders: u64,
    pub revenue_minor: i64,
    pub margin_minor: i64,
    pub referrals: u64,
}

/// One thing that happened to a customer of a segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Flow<'a> {
    Order {
        amount_minor: i64,
        margin_minor: i64,
    },
    /// A customer's first order.
    New {
        value_minor: i64,
    },
    Lost {
        value_minor: i64,
        reason: &'a str,
    },
    WonBack,
    Renewal {
        reason: &'a str,
    },
    /// A customer of this segment referred a new one.
    Referral,
}

impl Flows {
    /// Adds another day's or batch's flows to these.
    pub fn merge(&mut self, other: &Flows) {
        self.new_customers += other.new_customers;
        self.new_value_minor += other.new_value_minor;
        self.lost_customers += other.lost_customers;
        self.lost_value_minor += other.lost_value_minor;
        for (reason, n) in &other.lost_reasons {
            *self.lost_reasons.entry(reason.clone()).or_default() += n;
        }
        self.won_back += other.won_back;
        self.renewals += other.renewals;
        for (reason, n) in &other.renewal_reasons {
            *self.renewal_reasons.entry(reason.clone()).or_default() += n;
        }
        self.orders += other.orders;
        self.revenue_minor += other.revenue_minor;
        self.margin_minor += other.margin_minor;
        self.referrals += other.referrals;
    }

    fn add(&mut self, flow: Flow) {
        match flow {
            Flow::Order {
                amount_minor,
                margin_minor,
            } => {
                self.orders += 1;
                self.revenue_minor += amount_minor;
                self.margin_minor += margin_minor;
            }
            Flow::New { value_minor } => {
                self.new_customers += 1;
                self.new_value_minor += value_minor;
            }
            Flow::Lost {
                value_minor,
                reason,
            } => {
                self.lost_customers += 1;
                self.lost_value_minor += value_minor;
                *self.lost_reasons.entry(reason.to_owned()).or_default() += 1;
            }
            Flow::WonBack => self.won_back += 1,
            Flow::Renewal { reason } => {
                self.renewals += 1;
                *self.renewal_reasons.entry(reason.to_owned()).or_default() += 1;
            }
            Flow::Referral => self.referrals += 1,
        }
    }
}

/// Everything the segment metrics keep: small (segments x days within the allowed lateness),
/// so it is stored as one value, written with the batch that changed it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segments {
    pub population: BTreeMap<String, Population>,
    /// Net margin of every order counted so far, by segment (a gauge: margins may be negative).
    pub margin_to_date_minor: BTreeMap<String, i64>,
    /// Open days: day start, then segment.
    pub days: BTreeMap<Millis, BTreeMap<String, Flows>>,
    /// Days starting before this are closed and emitted; `None` before the first flow.
    pub closed_before: Option<Millis>,
    /// Customers not lost, over all segments, at the end of the last closed day (for
    /// complaints per 1,000 active customers: a reading that does not depend on batching).
    pub active_at_close: Option<i64>,
    /// Per open day (its start), the population's changes with an event time in that day, by
    /// segment: a day's population at its end is the population now less the changes of the
    /// days after it, however far the input had got when the day closed.
    pub population_changes: BTreeMap<Millis, BTreeMap<String, Population>>,
    /// Flows since the last [`Segments::take_counted`], late ones included, for telemetry.
    #[serde(skip)]
    counted: BTreeMap<String, Flows>,
}

/// A closed day of one segment, as `customer.segment-metrics` carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedDay {
    pub window_start: Millis,
    pub segment: String,
    /// The segment's population when the day closed.
    pub population: Population,
    pub flows: Flows,
}

impl Segments {
    /// Moves a customer from its old standing to its new one (`None`: not counted, or erased)
    /// at event time `at`.
    pub fn restand(&mut self, old: Option<&Standing>, new: Option<&Standing>, at: Millis) {
        let day = at.div_euclid(DAY_MS) * DAY_MS;
        // A change in a day already emitted counts from the next day's end on.
        let open = self.closed_before.is_none_or(|c| day >= c);
        shift(&mut self.population, old, new);
        if open {
            shift(self.population_changes.entry(day).or_default(), old, new);
        }
    }

    /// Counts an event's flow in the day of its event time `at`. A day already emitted is not
    /// reopened: the flow is counted as late (in telemetry only).
    pub fn count(&mut self, segment: &str, at: Millis, flow: Flow) -> Counted {
        flows_of(&mut self.counted, segment).add(flow);
        if let Flow::Order { margin_minor, .. } = flow {
            match self.margin_to_date_minor.get_mut(segment) {
                Some(total) => *total += margin_minor,
                None => {
                    self.margin_to_date_minor
                        .insert(segment.to_owned(), margin_minor);
                }
            }
        }
        let day = at.div_euclid(DAY_MS) * DAY_MS;
        if self.closed_before.is_some_and(|c| day < c) {
            return Counted::Late;
        }
        flows_of(self.days.entry(day).or_default(), segment).add(flow);
        Counted::InWindow
    }

    /// Counts a change of a customer's standing (new, lost, won back) in the day of `at`, or in
    /// the first open day when that one has closed: each such change is counted exactly once.
    pub fn count_change(&mut self, segment: &str, at: Millis, flow: Flow) {
        let at = self.closed_before.map_or(at, |c| at.max(c));
        self.count(segment, at, flow);
    }

    /// An event's flow at `at` where the aggregator is elsewhere and counts it in its day:
    /// counted here for telemetry only ([`Segments::take_counted`]), and until the first day
    /// closes the earliest day any flow fell in is kept (empty), as that decides when the
    /// first one ends ([`Segments::next_close`]). Late when its day has closed.
    pub fn time(&mut self, segment: &str, at: Millis, flow: Flow) -> Counted {
        flows_of(&mut self.counted, segment).add(flow);
        let day = at.div_euclid(DAY_MS) * DAY_MS;
        match self.closed_before {
            Some(c) if day < c => Counted::Late,
            Some(_) => Counted::InWindow,
            None => {
                if self.days.keys().next().is_none_or(|first| day < *first) {
                    self.days.insert(day, BTreeMap::new());
                }
                Counted::InWindow
            }
        }
    }

    /// [`Segments::time`] for a change of standing, which [`Segments::count_change`] counts
    /// in the first open day when its own has closed.
    pub fn time_change(&mut self, segment: &str, at: Millis, flow: Flow) {
        let at = self.closed_before.map_or(at, |c| at.max(c));
        self.time(segment, at, flow);
    }

    /// The flows counted since the last call, by segment.
    pub fn take_counted(&mut self) -> BTreeMap<String, Flows> {
        std::mem::take(&mut self.counted)
    }

    /// Customers not lost, over all segments.
    pub fn active_customers(&self) -> i64 {
        self.population.values().map(Population::active).sum()
    }

    /// When the first open day ends; `None` before the first flow.
    pub fn next_close(&self) -> Option<Millis> {
        let first_open = self
            .closed_before
            .or_else(|| self.days.keys().next().copied())?;
        Some(first_open + DAY_MS)
    }

    /// Closes every day that ends at or before `watermark`: one record per day for each of
    /// `segments`, empty days included, and for any other segment with customers at the day's
    /// end or flows in it.
    pub fn close_until(&mut self, watermark: Millis, segments: &[String]) -> Vec<ClosedDay> {
        let first_open = match (self.closed_before, self.days.keys().next()) {
            (Some(c), _) => c,
            (None, Some(start)) => *start,
            (None, None) => return Vec::new(),
        };
        let mut closed = Vec::new();
        let mut start = first_open;
        while start + DAY_MS <= watermark {
            let mut day = self.days.remove(&start).unwrap_or_default();
            let mut names: Vec<String> = segments.to_vec();
            for name in self.population.keys().chain(day.keys()) {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
            let end = start + DAY_MS;
            let mut active = 0;
            for segment in names {
                let flows = day.remove(&segment).unwrap_or_default();
                let mut population = self.population.get(&segment).cloned().unwrap_or_default();
                for changes in self.population_changes.range(end..).map(|(_, c)| c) {
                    if let Some(change) = changes.get(&segment) {
                        population.merge(change, -1);
                    }
                }
                // A segment no longer configured (a value tier taken out of `risk.tiers`)
                // closes its days only while customers stand in it or it has flows.
                let configured = segments.contains(&segment);
                if !configured && population == Population::default() && flows == Flows::default() {
                    continue;
                }
                active += population.active();
                closed.push(ClosedDay {
                    window_start: start,
                    segment,
                    population,
                    flows,
                });
            }
            self.population_changes = self.population_changes.split_off(&end);
            start = end;
            self.closed_before = Some(start);
            self.active_at_close = Some(active);
        }
        closed
    }
}

/// Moves a customer in `population` from standing `old` to `new`. Most often it stays in its
/// segment, its lifetime value moved: then the segment is looked up once for both (the
/// lookups were most of a change's cost, 2.2% of the broker benchmark's fold thread).
fn shift(
    population: &mut BTreeMap<String, Population>,
    old: Option<&Standing>,
    new: Option<&Standing>,
) {
    match (old, new) {
        (Some(old), Some(new)) if old.segment == new.segment => {
            let counted = population_of(population, &new.segment);
            counted.add(old, -1);
            counted.add(new, 1);
        }
        _ => {
            if let Some(old) = old {
                population_of(population, &old.segment).add(old, -1);
            }
            if let Some(new) = new {
                population_of(population, &new.segment).add(new, 1);
            }
        }
    }
}

/// The population of `segment` in `map`, allocating the key only the first time.
fn population_of<'m>(
    map: &'m mut BTreeMap<String, Population>,
    segment: &str,
) -> &'m mut Population {
    if !map.contains_key(segment) {
        map.insert(segment.to_owned(), Population::default());
    }
    map.get_mut(segment).expect("inserted above")
}

/// The flows of `segment` in `map`, allocating the key only the first time.
fn flows_of<'m>(map: &'m mut BTreeMap<String, Flows>, segment: &str) -> &'m mut Flows {
    if !map.contains_key(segment) {
        map.insert(segment.to_owned(), Flows::default());
    }
    map.get_mut(segment).expect("inserted above")
}

impl ClosedDay {
    /// Stable across replays: one record per segment and day.
    pub fn record_id(&self) -> String {
        dashed_id(&[
            IdPart::Text("segment"),
            IdPart::Text(&self.segment),
            IdPart::Number(self.window_start),
        ])
    }

    /// The `customer.segment-metrics` value.
    pub fn record(&self, record_id: &str) -> Vec<u8> {
        let f = &self.flows;
        let p = &self.population;
        let customers: BTreeMap<&str, i64> = LIFECYCLES
            .iter()
            .zip(p.by_lifecycle)
            .map(|(l, n)| (l.name(), n))
            .collect();
        serde_json::json!({
            "record_id": record_id,
            "window_start": format_millis(self.window_start),
            "window_end": format_millis(self.window_start + DAY_MS),
            "segment": self.segment,
            "active_customers": p.active(),
            "new_customers": {"count": f.new_customers, "value_minor": f.new_value_minor},
            "lost_customers": {
                "count": f.lost_customers,
                "value_minor": f.lost_value_minor,
                "reasons": f.lost_reasons,
            },
            "won_back": {"count": f.won_back},
            "renewals": {"count": f.renewals, "reasons": f.renewal_reasons},
            "orders": f.orders,
            "revenue_minor": f.revenue_minor,
            "margin_minor": f.margin_minor,
            "referrals": f.referrals,
            "avg_ltv_minor": p.avg_ltv_minor(),
            "at_risk_customers": p.at_risk(),
            "customers_by_lifecycle": customers,
        })
        .to_string()
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn standing(segment: &str, lifecycle: Lifecycle, ltv_minor: i64) -> Standing {
        Standing {
            segment: segment.into(),
            lifecycle,
            level: Level::Low,
            ltv_minor,
        }
    }

    #[test]
    fn trailing_revenue_counts_the_last_months_and_says_when_it_changes() {
        let at = |y: i32, m: u8, d: u8| {
            time::Date::from_calendar_date(y, time::Month::try_from(m).unwrap(), d)
                .unwrap()
                .midnight()
                .assume_utc()
                .unix_timestamp()
                * 1000
        };
        assert_eq!(month_start(month_index(at(2024, 2, 29))), at(2024, 2, 1));
        assert_eq!(
            month_start(month_index(at(2023, 12, 31)) + 1),
            at(2024, 1, 1)
        );
        let mut t = Trailing::default();
        t.add(at(2025, 1, 15), 100, 10, 12);
        t.add(at(2025, 6, 3), 50, -5, 12);
        t.add(at(2025, 6, 20), 25, 5, 12);
        assert_eq!(t.months.len(), 2, "one bucket per month");
        assert_eq!(t.totals(at(2025, 12, 31), 12), (175, 10));
        // January 2025 leaves the twelve months when January 2026 starts (they are then
        // February 2025 to January 2026), June 2025 when June 2026 does.
        assert_eq!(t.next_change(at(2025, 12, 31), 12), Some(at(2026, 1, 1)));
        assert_eq!(t.totals(at(2025, 12, 31), 12), (175, 10));
        assert_eq!(t.totals(at(2026, 1, 1), 12), (75, 0));
        assert_eq!(t.next_change(at(2026, 1, 1), 12), Some(at(2026, 6, 1)));
        assert_eq!(t.totals(at(2026, 5, 31), 12), (75, 0));
        assert_eq!(t.totals(at(2026, 6, 1), 12), (0, 0));
        assert_eq!(t.next_change(at(2026, 6, 1), 12), None);
        // An order far later drops the months no later time can count.
        t.add(at(2027, 3, 1), 1, 1, 12);
        assert_eq!(t.months, vec![(month_index(at(2027, 3, 1)), 1, 1)]);
    }

    /// The month index as `time` gives it: what `month_index` computed until 2026-12-06.
    fn month_index_by_time(at: Millis) -> i32 {
        let t = time::OffsetDateTime::from_unix_timestamp(at.div_euclid(1000))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        t.year() * 12 + i32::from(u8::from(t.month())) - 1
    }

    #[test]
    fn month_indices_are_time_s_at_the_edges_of_months_years_and_its_range() {
        let day = 86_400_000;
        let mut times = vec![i64::MIN, i64::MAX, 0, -1, 1];
        for seconds in [MIN_SECONDS, MAX_SECONDS] {
            for delta in [-1, 0, 1] {
                times.push((seconds + delta) * 1000);
                times.push((seconds + delta) * 1000 + 999);
            }
        }
        // Every day's first and last millisecond from 1599 to 2401 (leap and century years).
        for d in -135_000..157_000 {
            times.extend([d * day, d * day - 1]);
        }
        for at in times {
            assert_eq!(month_index(at), month_index_by_time(at), "{at}");
        }
    }

    /// The start of month `index` as `time` gives it: what `month_start` computed until
    /// 2026-12-07.
    fn month_start_by_time(index: i32) -> Millis {
        let month =
            time::Month::try_from(index.rem_euclid(12) as u8 + 1).expect("a month of 1 to 12");
        let date = time::Date::from_calendar_date(index.div_euclid(12), month, 1)
            .expect("a year time represents");
        date.midnight().assume_utc().unix_timestamp() * 1000
    }

    #[test]
    fn every_month_starts_on_the_day_time_gives_from_years_minus_9999_to_9999() {
        for index in (-9999 * 12)..(10_000 * 12) {
            assert_eq!(month_start(index), month_start_by_time(index), "{index}");
        }
    }

    proptest::proptest! {
        #[test]
        fn month_indices_are_time_s(at in proptest::num::i64::ANY) {
            proptest::prop_assert_eq!(month_index(at), month_index_by_time(at));
        }

        #[test]
        fn month_indices_are_time_s_in_its_range(
            at in (MIN_SECONDS * 1000 - 5_000)..(MAX_SECONDS * 1000 + 5_000)
        ) {
            proptest::prop_assert_eq!(month_index(at), month_index_by_time(at));
        }
    }

    #[test]
    fn lifetime_values_at_their_bound_add_up_past_64_bits_and_back() {
        use crate::risk::MAX_LTV_MINOR;
        let mut s = Segments::default();
        let rich = standing("gold", Lifecycle::Active, MAX_LTV_MINOR);
        let poor = standing("gold", Lifecycle::Active, -MAX_LTV_MINOR);
        // 2,000 values of 2^53 are more than 2^63.
        for _ in 0..2_000 {
            s.restand(None, Some(&rich), 1);
        }
        let gold = &s.population["gold"];
        assert_eq!(gold.active_ltv_minor, 2_000 * i128::from(MAX_LTV_MINOR));
        assert_eq!(gold.avg_ltv_minor(), MAX_LTV_MINOR);
        for _ in 0..2_000 {
            s.restand(Some(&rich), Some(&poor), 2);
        }
        assert_eq!(s.population["gold"].avg_ltv_minor(), -MAX_LTV_MINOR);
        for _ in 0..2_000 {
            s.restand(Some(&poor), None, 3);
        }
        assert_eq!(s.population["gold"], Population::default());
    }

    #[test]
    fn the_mean_lifetime_value_is_rounded_to_the_nearest_minor_unit() {
        let mean_of = |values: &[i64]| {
            let mut s = Segments::default();
            for &v in values {
                s.restand(None, Some(&standing("gold", Lifecycle::Active, v)), 1);
            }
            s.population["gold"].avg_ltv_minor()
        };
        assert_eq!(mean_of(&[1, 1, 2]), 1, "1.33");
        assert_eq!(mean_of(&[1, 2, 2]), 2, "1.67 (truncated, this was 1)");
        assert_eq!(mean_of(&[1, 2]), 2, "a half goes away from zero");
        assert_eq!(mean_of(&[-1, -2]), -2);
        assert_eq!(mean_of(&[-1, -2, -2]), -2, "-1.67");
        assert_eq!(mean_of(&[-1, -1, -2]), -1, "-1.33");
        assert_eq!(mean_of(&[1_153, 1_154]), 1_154);
    }

    #[test]
    fn a_population_stored_with_a_64_bit_sum_reads_the_same() {
        // The layout before the sum took 128 bits: the same fields, the sum an i64.
        let stored = postcard::to_allocvec(&([1i64, 2, 3, 4, 5], [6i64, 7, 8], -1_234_567_i64))
            .expect("encodes");
        let read: Population = postcard::from_bytes(&stored).expect("decodes");
        assert_eq!(read.by_lifecycle, [1, 2, 3, 4, 5]);
        assert_eq!(read.by_level, [6, 7, 8]);
        assert_eq!(read.active_ltv_minor, -1_234_567);
        assert_eq!(postcard::to_allocvec(&read).expect("encodes"), stored);
    }

    #[test]
    fn a_customer_moving_between_segments_is_counted_once() {
        let mut s = Segments::default();
        let a = standing("standard", Lifecycle::New, 100);
        let b = standing("gold", Lifecycle::Active, 900);
        s.restand(None, Some(&a), 1);
        s.restand(Some(&a), Some(&b), 2);
        assert_eq!(s.population["standard"], Population::default());
        assert_eq!(s.population["gold"].active(), 1);
        assert_eq!(s.population["gold"].avg_ltv_minor(), 900);
        let lost = standing("gold", Lifecycle::Lost, 5);
        s.restand(Some(&b), Some(&lost), 3);
        assert_eq!(s.population["gold"].active(), 0);
        assert_eq!(s.population["gold"].lost(), 1);
        assert_eq!(s.population["gold"].active_ltv_minor, 0, "lost LTV leaves");
        s.restand(Some(&lost), None, 4);
        assert_eq!(s.active_customers(), 0);
        assert_eq!(s.population["gold"], Population::default());
    }

    #[test]
    fn a_day_closes_with_the_population_at_its_end_whatever_was_read_after() {
        let mut s = Segments::default();
        let new = standing("gold", Lifecycle::New, 100);
        let active = standing("gold", Lifecycle::Active, 300);
        let lost = standing("gold", Lifecycle::Lost, 300);
        // Days are open from the first flow on.
        s.count("gold", 5 * DAY_MS, Flow::WonBack);
        s.restand(None, Some(&new), 5 * DAY_MS + 1);
        s.restand(None, Some(&active), 5 * DAY_MS + 2);
        // Read before day 5 closes, with event times in day 6: not day 5's.
        s.restand(Some(&new), None, 6 * DAY_MS + 1);
        s.restand(Some(&active), Some(&lost), 6 * DAY_MS + 2);
        let gold = |closed: &[ClosedDay]| closed.iter().find(|d| d.segment == "gold").cloned();
        let day5 = gold(&s.close_until(6 * DAY_MS, &["gold".into()])).unwrap();
        assert_eq!(day5.population.by_lifecycle, [1, 1, 0, 0, 0]);
        assert_eq!(day5.population.active_ltv_minor, 400);
        assert_eq!(s.active_at_close, Some(2));
        // Now, the population counts everything read.
        assert_eq!(s.population["gold"].by_lifecycle, [0, 0, 0, 1, 0]);
        // A change in a day already closed counts from the next day's end on.
        s.restand(None, Some(&new), 5 * DAY_MS + 3);
        let day6 = gold(&s.close_until(7 * DAY_MS, &["gold".into()])).unwrap();
        assert_eq!(day6.population.by_lifecycle, [1, 0, 0, 1, 0]);
        assert!(s.population_changes.is_empty(), "closed days' changes go");
    }

    #[test]
    fn a_segment_no_longer_configured_closes_its_days_while_it_has_customers_or_flows() {
        let mut s = Segments::default();
        let old = standing("silver", Lifecycle::Active, 100);
        let moved = standing("gold", Lifecycle::Active, 100);
        let silent = standing("silver", Lifecycle::Active, 200);
        let gold = ["gold".to_owned()];
        let names = |closed: &[ClosedDay]| {
            closed
                .iter()
                .map(|d| (d.window_start / DAY_MS, d.segment.clone()))
                .collect::<Vec<_>>()
        };
        // Days are open from the first flow on.
        s.count("gold", 5 * DAY_MS, Flow::WonBack);
        s.restand(None, Some(&old), 5 * DAY_MS);
        s.restand(None, Some(&silent), 5 * DAY_MS);
        // Read before day 5 closes: in day 6 one customer moves to a configured tier, and in
        // day 7 the other one is erased.
        s.restand(Some(&old), Some(&moved), 6 * DAY_MS + 1);
        s.restand(Some(&silent), None, 7 * DAY_MS + 1);
        let closed = s.close_until(8 * DAY_MS, &gold);
        assert_eq!(
            names(&closed),
            [
                (5, "gold".into()),
                (5, "silver".into()),
                (6, "gold".into()),
                (6, "silver".into()),
                (7, "gold".into())
            ],
            "silver is closed while it has customers at a day's end, then no more"
        );
        assert_eq!(closed[1].population.active(), 2);
        assert_eq!(closed[3].population.active(), 1);
        // A flow of a segment with no customers is still emitted.
        s.count("silver", 8 * DAY_MS + 1, Flow::WonBack);
        assert_eq!(
            names(&s.close_until(10 * DAY_MS, &gold)),
            [(8, "gold".into()), (8, "silver".into()), (9, "gold".into())]
        );
    }

    #[test]
    fn days_close_with_empty_segments_and_late_flows_never_reopen_them() {
        let mut s = Segments::default();
        let order = Flow::Order {
            amount_minor: 500,
            margin_minor: 100,
        };
        s.count("gold", 10 * DAY_MS + 5, order);
        s.count("gold", 11 * DAY_MS + 5, order);
        let closed = s.close_until(12 * DAY_MS, &["gold".into(), "standard".into()]);
        assert_eq!(closed.len(), 4, "two days x two segments");
        assert_eq!(closed[0].flows.revenue_minor, 500);
        assert_eq!(closed[1].segment, "standard");
        assert_eq!(closed[1].flows, Flows::default());
        assert_eq!(s.count("gold", 11 * DAY_MS + 7, order), Counted::Late);
        // A change of standing is never lost to lateness: it lands in the first open day.
        s.count_change(
            "gold",
            11 * DAY_MS,
            Flow::Lost {
                value_minor: 1_000,
                reason: "inactive",
            },
        );
        let closed = s.close_until(13 * DAY_MS, &["gold".into()]);
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].window_start, 12 * DAY_MS);
        assert_eq!(closed[0].flows.lost_customers, 1);
        assert_eq!(closed[0].flows.lost_reasons["inactive"], 1);
        assert_eq!(closed[0].flows.revenue_minor, 0);
        let counted = s.take_counted();
        assert_eq!(counted["gold"].orders, 3, "telemetry counts late flows too");
        assert!(s.take_counted().is_empty());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Flows timed where the aggregator is elsewhere close the same days at the same
        /// watermarks as flows counted, are late exactly when those are and are counted for
        /// telemetry alike: in any order of flows and watermarks.
        #[test]
        fn timed_flows_close_the_days_counted_ones_close(
            steps in proptest::collection::vec((0u8..3, 0i64..(10 * 24), 0usize..2), 1..80),
        ) {
            let segments = ["gold".to_owned(), "silver".to_owned()];
            let (mut counted, mut timed) = (Segments::default(), Segments::default());
            let mut watermark = 0;
            for (kind, hour, segment) in steps {
                let at = hour * 3_600_000;
                let segment = segments[segment].as_str();
                match kind {
                    0 => {
                        let flow = Flow::Order { amount_minor: 100, margin_minor: 10 };
                        let want = counted.count(segment, at, flow);
                        proptest::prop_assert_eq!(timed.time(segment, at, flow), want);
                    }
                    1 => {
                        let flow = Flow::New { value_minor: 5 };
                        counted.count_change(segment, at, flow);
                        timed.time_change(segment, at, flow);
                    }
                    _ => {
                        watermark = watermark.max(at);
                        let closed = counted.close_until(watermark, &segments);
                        let passed = timed.close_until(watermark, &segments);
                        proptest::prop_assert_eq!(passed.len(), closed.len());
                        proptest::prop_assert_eq!(timed.closed_before, counted.closed_before);
                    }
                }
                proptest::prop_assert_eq!(timed.next_close(), counted.next_close());
            }
            proptest::prop_assert_eq!(timed.take_counted(), counted.take_counted());
            proptest::prop_assert!(timed.population.is_empty());
        }
    }
}
