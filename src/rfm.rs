//! RFM: recency, frequency and monetary value scored 1..5 against the population's quintiles,
//! and a named segment by first-matching rule (DOMAIN.md, Segments). Pure: must not know about
//! Kafka, RocksDB, Prometheus or the wall clock.
//!
//! Recency and frequency are small integers (the last purchase day, the order count), so they are
//! kept in one exact joint histogram: it gives both marginals, and the named segments (rules over
//! R and F together) can be counted exactly. Monetary value (average order value) is heavy
//! tailed, so it is kept in log buckets (DDSketch's layout, bucket = ceil(log_g(v)), within 1%).
//! Counts are signed, so a customer's old point is removed exactly when it moves. The scales
//! (mid-rank scores: equal values always share a score) are recomputed when a day closes, not on
//! every order, so a score is stable within a day and does not depend on event order within it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::fold::CustomerState;

/// Relative accuracy of the monetary buckets: 1%.
const GAMMA: f64 = 1.01 / 0.99;
/// The bucket of an average order value of 0.
const ZERO_BUCKET: i32 = i32::MIN;

/// Where a customer with orders sits: its last purchase day (days since the epoch), its order
/// count and the bucket of its average order value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub last_day: i32,
    pub orders: u32,
    pub monetary_bucket: i32,
}

/// A customer's point, `None` before its first order.
pub fn point(state: &CustomerState) -> Option<Point> {
    let last_day = *state.purchase_days.last()?;
    if state.orders == 0 {
        return None;
    }
    let average = state.revenue_minor.max(0) as f64 / f64::from(state.orders);
    Some(Point {
        last_day,
        orders: state.orders,
        monetary_bucket: monetary_bucket(average),
    })
}

fn monetary_bucket(value: f64) -> i32 {
    if value < 1.0 {
        ZERO_BUCKET
    } else {
        (value.ln() / GAMMA.ln()).ceil() as i32
    }
}

/// A named segment: the first rule whose score ranges (inclusive) hold the customer's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub r: (u8, u8),
    pub f: (u8, u8),
    pub m: (u8, u8),
}

impl Rule {
    fn new(name: &str, r: (u8, u8), f: (u8, u8)) -> Rule {
        Rule {
            name: name.to_owned(),
            r,
            f,
            m: (1, 5),
        }
    }

    fn matches(&self, r: u8, f: u8, m: u8) -> bool {
        let within = |(lo, hi): (u8, u8), v: u8| lo <= v && v <= hi;
        within(self.r, r) && within(self.f, f) && within(self.m, m)
    }
}

/// The documented default rules; a customer no rule matches is `other`.
pub fn default_rules() -> Vec<Rule> {
    vec![
        Rule::new("champions", (4, 5), (4, 5)),
        Rule::new("loyal", (3, 5), (3, 5)),
        Rule::new("promising", (4, 5), (1, 2)),
        Rule::new("cant_lose", (1, 2), (5, 5)),
        Rule::new("at_risk", (1, 2), (3, 4)),
        Rule::new("hibernating", (1, 2), (1, 2)),
        Rule::new("need_attention", (1, 5), (1, 5)),
    ]
}

/// A customer's scores and named segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    // Alphabetical, as in every record that carries it.
    pub f: u8,
    pub m: u8,
    pub r: u8,
    pub segment: String,
}

/// One histogram's scale: for each value present when it was computed, the count of smaller
/// values and its own count, ascending.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scale {
    pub total: i64,
    pub values: Vec<(i64, i64, i64)>,
}

impl Scale {
    fn of(counts: impl Iterator<Item = (i64, i64)>) -> Scale {
        let mut scale = Scale::default();
        for (value, count) in counts.filter(|(_, n)| *n > 0) {
            scale.values.push((value, scale.total, count));
            scale.total += count;
        }
        scale
    }

    /// The mid-rank score 1..5: the share of the population below the value plus half the share
    /// equal to it, in fifths. A value unseen when the scale was made has no equals.
    pub fn score(&self, value: i64) -> u8 {
        if self.total <= 0 {
            return 3;
        }
        let (below, equal) = match self.values.binary_search_by_key(&value, |v| v.0) {
            Ok(i) => (self.values[i].1, self.values[i].2),
            Err(i) => (self.values.get(i).map_or(self.total, |v| v.1), 0),
        };
        let p = (below as f64 + equal as f64 / 2.0) / self.total as f64;
        (1.0 + (5.0 * p).floor()).clamp(1.0, 5.0) as u8
    }
}

/// The scales of R, F and M as of the last day that closed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Scales {
    pub recency: Scale,
    pub frequency: Scale,
    pub monetary: Scale,
}

/// A histogram cell, as stored: which histogram, which value, how many customers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Cell {
    /// `(last purchase day, orders)`.
    Joint(i32, u32, i64),
    Monetary(i32, i64),
}

impl Cell {
    /// The same cell counting no customer: written, it deletes the cell.
    pub fn emptied(self) -> Cell {
        match self {
            Cell::Joint(day, orders, _) => Cell::Joint(day, orders, 0),
            Cell::Monetary(bucket, _) => Cell::Monetary(bucket, 0),
        }
    }
}

/// The population's RFM histograms and scales.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rfm {
    joint: Histogram<(i32, u32)>,
    monetary: Histogram<i32>,
    pub scales: Scales,
}

/// One histogram: its cells' counts, and the cells changed since they were last taken
/// ([`Histogram::take_changed`]), each listed once. An order moves a customer out of two cells
/// and into two: with the changed cells kept in B-tree sets, that took about 380 instructions
/// in [`Rfm::relocate`], with the list and a mark on each cell about 200 (callgrind, the broker
/// benchmark's fold with the changelog 1.4% fewer; `benches/HISTORY.md`, 2026-12-06, 19:42-).
#[derive(Debug, Clone, PartialEq)]
struct Histogram<K> {
    counts: BTreeMap<K, Count>,
    changed: Vec<K>,
}

/// A cell's count, and whether it is in [`Histogram::changed`].
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Count {
    n: i64,
    changed: bool,
}

impl<K> Default for Histogram<K> {
    fn default() -> Self {
        Histogram {
            counts: BTreeMap::new(),
            changed: Vec::new(),
        }
    }
}

impl<K: Ord + Copy> Histogram<K> {
    fn add(&mut self, key: K, n: i64) {
        let count = self.counts.entry(key).or_default();
        count.n += n;
        if !count.changed {
            count.changed = true;
            self.changed.push(key);
        }
    }

    /// Every cell counted empty and marked changed, so that a cell not counted again is
    /// written empty (deleted).
    fn empty(&mut self) {
        for (key, count) in &mut self.counts {
            count.n = 0;
            if !count.changed {
                count.changed = true;
                self.changed.push(*key);
            }
        }
    }

    /// The changed cells with their counts, in the order they first changed; an empty one is
    /// dropped.
    fn take_changed(&mut self, mut take: impl FnMut(K, i64)) {
        for key in self.changed.drain(..) {
            let n = match self.counts.get_mut(&key) {
                Some(count) => {
                    count.changed = false;
                    count.n
                }
                None => 0,
            };
            if n == 0 {
                self.counts.remove(&key);
            }
            take(key, n);
        }
    }

    /// Every cell's count, empty ones included, by key.
    fn iter(&self) -> impl Iterator<Item = (K, i64)> + '_ {
        self.counts.iter().map(|(key, count)| (*key, count.n))
    }
}

impl Rfm {
    /// The histograms from their stored cells and the stored scales.
    pub fn from_cells(cells: impl IntoIterator<Item = Cell>, scales: Scales) -> Rfm {
        let mut rfm = Rfm {
            scales,
            ..Rfm::default()
        };
        for cell in cells {
            // Stored cells are as written: none waits to be written again.
            let unchanged = |n| Count { n, changed: false };
            match cell {
                Cell::Joint(day, orders, n) => {
                    rfm.joint.counts.insert((day, orders), unchanged(n));
                }
                Cell::Monetary(bucket, n) => {
                    rfm.monetary.counts.insert(bucket, unchanged(n));
                }
            }
        }
        rfm
    }

    /// Every non-empty cell of the histograms.
    pub fn cells(&self) -> Vec<Cell> {
        let joint = self.joint.iter().map(|((d, o), n)| Cell::Joint(d, o, n));
        let monetary = self.monetary.iter().map(|(b, n)| Cell::Monetary(b, n));
        joint
            .chain(monetary)
            .filter(|c| !matches!(c, Cell::Joint(_, _, 0) | Cell::Monetary(_, 0)))
            .collect()
    }

    /// Moves a customer from its old point to its new one (`None`: no orders, or erased).
    pub fn relocate(&mut self, old: Option<Point>, new: Option<Point>) {
        if old == new {
            return;
        }
        for (point, sign) in [(old, -1), (new, 1)] {
            if let Some(p) = point {
                self.joint.add((p.last_day, p.orders), sign);
                self.monetary.add(p.monetary_bucket, sign);
            }
        }
    }

    /// Replaces the histograms with exactly `points`, every cell that changes marked for the
    /// next commit. The scales stay.
    pub fn recount(&mut self, points: impl IntoIterator<Item = Point>) {
        self.joint.empty();
        self.monetary.empty();
        for point in points {
            self.relocate(None, Some(point));
        }
    }

    /// The cells changed since the last call, each once, with their counts (0: delete the
    /// cell).
    pub fn take_dirty(&mut self) -> Vec<Cell> {
        let mut cells = Vec::with_capacity(self.joint.changed.len() + self.monetary.changed.len());
        self.joint
            .take_changed(|(day, orders), n| cells.push(Cell::Joint(day, orders, n)));
        self.monetary
            .take_changed(|bucket, n| cells.push(Cell::Monetary(bucket, n)));
        cells
    }

    /// Recomputes the scales from the histograms.
    pub fn rescale(&mut self) {
        let mut recency: BTreeMap<i32, i64> = BTreeMap::new();
        let mut frequency: BTreeMap<u32, i64> = BTreeMap::new();
        for ((day, orders), n) in self.joint.iter() {
            *recency.entry(day).or_default() += n;
            *frequency.entry(orders).or_default() += n;
        }
        self.scales = Scales {
            recency: Scale::of(recency.into_iter().map(|(d, n)| (i64::from(d), n))),
            frequency: Scale::of(frequency.into_iter().map(|(f, n)| (i64::from(f), n))),
            monetary: Scale::of(self.monetary.iter().map(|(b, n)| (i64::from(b), n))),
        };
    }

    /// A customer's scores and segment on the current scales; `None` before its first order or
    /// before the first scale.
    pub fn score(&self, point: Option<Point>, rules: &[Rule]) -> Option<Score> {
        let p = point?;
        if self.scales.recency.total <= 0 {
            return None;
        }
        let r = self.scales.recency.score(i64::from(p.last_day));
        let f = self.scales.frequency.score(i64::from(p.orders));
        let m = self.scales.monetary.score(i64::from(p.monetary_bucket));
        Some(Score {
            r,
            f,
            m,
            segment: segment(r, f, m, rules).to_owned(),
        })
    }

    /// Customers per named segment on the current scales; none before the first scale, as
    /// [`Rfm::score`] gives none a segment then. A customer's M score needs its own cell, which
    /// the joint histogram does not keep, so the rules' M ranges are not applied here (the
    /// default rules have none).
    pub fn segment_counts(&self, rules: &[Rule]) -> BTreeMap<String, i64> {
        let mut counts: BTreeMap<String, i64> = rules
            .iter()
            .map(|r| (r.name.clone(), 0))
            .chain([("other".to_owned(), 0)])
            .collect();
        if self.scales.recency.total <= 0 {
            return counts;
        }
        for ((day, orders), n) in self.joint.iter() {
            let r = self.scales.recency.score(i64::from(day));
            let f = self.scales.frequency.score(i64::from(orders));
            let name = rules
                .iter()
                .find(|rule| rule.matches(r, f, rule.m.0))
                .map_or("other", |rule| rule.name.as_str());
            *counts.entry(name.to_owned()).or_default() += n;
        }
        counts
    }
}

fn segment(r: u8, f: u8, m: u8, rules: &[Rule]) -> &str {
    rules
        .iter()
        .find(|rule| rule.matches(r, f, m))
        .map_or("other", |rule| rule.name.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(last_day: i32, orders: u32, average: f64) -> Point {
        Point {
            last_day,
            orders,
            monetary_bucket: monetary_bucket(average),
        }
    }

    #[test]
    fn mid_rank_scores_give_ties_one_score_whatever_the_order() {
        // Half the population bought once (as in CDNOW): they all share F = 2 (mid-rank 0.25),
        // never 1 for some and 3 for others.
        let mut rfm = Rfm::default();
        for i in 0..10 {
            rfm.relocate(
                None,
                Some(p(100 + i, if i < 5 { 1 } else { i as u32 }, 50.0)),
            );
        }
        rfm.rescale();
        let f = &rfm.scales.frequency;
        assert_eq!(f.score(1), 2, "(0 + 5/2) / 10 = 0.25");
        assert_eq!(f.score(5), 3, "(5 + 1/2) / 10 = 0.55");
        assert_eq!(f.score(9), 5, "(9 + 1/2) / 10 = 0.95");
        assert_eq!(f.score(7), 4, "(7 + 1/2) / 10 = 0.75");
        assert_eq!(f.score(100), 5, "above everyone");
        assert_eq!(f.score(0), 1, "below everyone");
        // Recency: the most recent day scores 5, the oldest 1.
        assert_eq!(rfm.scales.recency.score(109), 5);
        assert_eq!(rfm.scales.recency.score(100), 1);
        // Equal monetary values (one bucket) share a score: the middle one.
        assert_eq!(
            rfm.scales.monetary.score(i64::from(monetary_bucket(50.0))),
            3
        );
    }

    #[test]
    fn a_moved_point_leaves_its_old_cell_exactly() {
        let mut rfm = Rfm::default();
        let a = p(10, 1, 20.0);
        let b = p(12, 2, 35.0);
        rfm.relocate(None, Some(a));
        rfm.relocate(Some(a), Some(b));
        let cells = rfm.take_dirty();
        // a's cells changed twice, b's once: each is written once, with its count now.
        assert_eq!(cells.len(), 4, "{cells:?}");
        assert!(cells.contains(&Cell::Joint(10, 1, 0)), "{cells:?}");
        assert!(cells.contains(&Cell::Joint(12, 2, 1)), "{cells:?}");
        assert_eq!(rfm.joint.counts.len(), 1);
        assert!(rfm.take_dirty().is_empty());
        rfm.relocate(Some(b), None);
        assert_eq!(rfm.take_dirty().len(), 2);
        assert_eq!(rfm, Rfm::default(), "nothing left, not even empty cells");
    }

    #[test]
    fn a_recount_writes_each_changed_cell_once_and_empties_those_not_counted_again() {
        let mut rfm = Rfm::default();
        let (a, b, c) = (p(10, 1, 20.0), p(12, 2, 35.0), p(14, 3, 35.0));
        rfm.relocate(None, Some(a));
        rfm.relocate(None, Some(b));
        rfm.take_dirty();
        // Changed and not yet written when the recount comes.
        rfm.relocate(Some(b), Some(c));
        rfm.recount([b, c]);
        let cells = rfm.take_dirty();
        let (m20, m35) = (monetary_bucket(20.0), monetary_bucket(35.0));
        let want = [
            Cell::Joint(10, 1, 0),
            Cell::Joint(12, 2, 1),
            Cell::Joint(14, 3, 1),
            Cell::Monetary(m20, 0),
            Cell::Monetary(m35, 2),
        ];
        assert_eq!(cells.len(), want.len(), "{cells:?}");
        for cell in &want {
            assert!(cells.contains(cell), "{cell:?} in {cells:?}");
        }
        let kept = [
            Cell::Joint(12, 2, 1),
            Cell::Joint(14, 3, 1),
            Cell::Monetary(m35, 2),
        ];
        assert_eq!(rfm.cells(), kept);
        assert!(rfm.take_dirty().is_empty());
    }

    #[test]
    fn monetary_buckets_are_within_one_percent() {
        for v in [1.0, 9.99, 100.0, 12_345.0, 1e9] {
            let b = monetary_bucket(v);
            let upper = GAMMA.powi(b);
            let lower = GAMMA.powi(b - 1);
            assert!(
                lower < v * (1.0 + 1e-12) && v <= upper * (1.0 + 1e-12),
                "{v}"
            );
            assert!(upper / lower < 1.0203);
        }
        assert_eq!(monetary_bucket(0.0), ZERO_BUCKET);
    }

    #[test]
    fn named_segments_follow_the_first_matching_rule_and_count_everyone() {
        let rules = default_rules();
        assert_eq!(segment(5, 5, 1, &rules), "champions");
        assert_eq!(segment(3, 4, 1, &rules), "loyal");
        assert_eq!(segment(5, 1, 5, &rules), "promising");
        assert_eq!(segment(1, 5, 3, &rules), "cant_lose");
        assert_eq!(segment(2, 3, 3, &rules), "at_risk");
        assert_eq!(segment(1, 1, 3, &rules), "hibernating");
        assert_eq!(segment(3, 1, 3, &rules), "need_attention");
        let mut rfm = Rfm::default();
        for i in 0..20 {
            rfm.relocate(None, Some(p(i, 1 + (i as u32 % 7), 10.0)));
        }
        // Before the first scale no customer has a segment, as none has scores.
        let before = rfm.segment_counts(&rules);
        assert_eq!(before.len(), rules.len() + 1, "every segment and other");
        assert_eq!(before.values().sum::<i64>(), 0, "{before:?}");
        assert_eq!(rfm.score(Some(p(3, 2, 10.0)), &rules), None);
        rfm.rescale();
        let counts = rfm.segment_counts(&rules);
        assert_eq!(counts.values().sum::<i64>(), 20);
        let scored: i64 = (0..20)
            .filter(|i| {
                rfm.score(Some(p(*i, 1 + (*i as u32 % 7), 10.0)), &rules)
                    .unwrap()
                    .segment
                    == "champions"
            })
            .count() as i64;
        assert_eq!(counts["champions"], scored);
    }
}
