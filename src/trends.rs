//! Complaint trends: event-time tumbling windows per category, closed as the watermark passes
//! them, each closed window compared with its category's baseline (EWMA), a Poisson z-score and
//! a CUSUM (DOMAIN.md, Complaint trend and spikes). Pure: must not know about Kafka, RocksDB,
//! Prometheus or the wall clock; the caller persists [`Trends`] with each commit.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::{dashed_id, format_millis, IdPart, Millis, Severity};
use crate::json::Object;

/// From configuration.
#[derive(Debug, Clone)]
pub struct TrendSettings {
    pub window_ms: Millis,
    /// EWMA weight of the newest window in the baseline.
    pub baseline_weight: f64,
    pub spike_z: f64,
    pub spike_min_count: u32,
    /// EWMA weight of the CUSUM's own, slow baseline (the in-control level): a baseline that
    /// followed the counts as fast as the z-score's would absorb the rise CUSUM is there to see.
    pub cusum_baseline_weight: f64,
    /// CUSUM reference k = slow baseline + slack * sqrt(slow baseline).
    pub cusum_slack: f64,
    /// CUSUM signals when S > threshold * sqrt(slow baseline).
    pub cusum_threshold: f64,
    /// The closed set of categories, `other` included.
    pub categories: Vec<String>,
}

impl TrendSettings {
    /// The documented defaults (hourly windows, EWMA 0.2, spike at z > 3 with at least 5,
    /// CUSUM 0.02 / 0.5 / 4) over `categories`, to which `other` is added.
    pub fn defaults(categories: &[&str]) -> TrendSettings {
        let mut categories: Vec<String> = categories.iter().map(|c| (*c).to_owned()).collect();
        if !categories.iter().any(|c| c == "other") {
            categories.push("other".into());
        }
        TrendSettings {
            window_ms: 3_600_000,
            baseline_weight: 0.2,
            spike_z: 3.0,
            spike_min_count: 5,
            cusum_baseline_weight: 0.02,
            cusum_slack: 0.5,
            cusum_threshold: 4.0,
            categories,
        }
    }

    /// The weight of a period's count in the CUSUM's slow baseline when the baseline has taken
    /// `taken` periods before it (`None`: not known). The mean of the periods so far until
    /// there are half as many as the EWMA's span (1 / (2 × weight): 25 with the default 0.02),
    /// then the EWMA: seeded by the first period alone and moving 2% a period, a baseline
    /// taken from a quiet first hour stayed low for days, and CUSUM signalled through them.
    fn slow_weight(&self, taken: Option<u64>) -> f64 {
        let w = self.cusum_baseline_weight;
        let averaged = (0.5 / w).round();
        match taken.map(|n| n as f64 + 1.0) {
            Some(n) if n <= averaged => 1.0 / n,
            _ => w,
        }
    }

    /// `category` if it is one of the configured categories, otherwise `other`: a complaint
    /// read under a category list since changed counts where one read now would.
    pub fn category<'a>(&'a self, category: &'a str) -> &'a str {
        if self.categories.iter().any(|c| c == category) {
            category
        } else {
            "other"
        }
    }
}

/// Counts of one category in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub opened: u32,
    pub resolved: u32,
    /// Opened, by severity: low, medium, high, critical.
    pub by_severity: [u32; 4],
    /// Resolution times in log buckets: `(bucket, count)`, bucket = ceil(log_g(seconds)).
    pub resolution: Vec<(i16, u32)>,
}

/// A category's running state between windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CategoryTrend {
    pub open_backlog: i64,
    /// The baselines of the windows, and of the daily roll-up.
    pub windows: Baseline,
    pub days: Baseline,
    /// The closed windows of the current day, merged, for the daily roll-up.
    pub today: Window,
    pub months: Baseline,
    /// The closed days of the current month, merged, for the monthly roll-up.
    pub this_month: Window,
    /// Complaints opened per day of the current and of the previous month (index: day - 1).
    pub month_days: Vec<u32>,
    pub previous_month_days: Vec<u32>,
}

/// What a closed window said: its z-score against the baseline, and whether it was a spike.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub z_score: f64,
    pub spike: bool,
}

/// What a series of closed windows remembers: the EWMA baseline of the z-score, the CUSUM's slow
/// baseline and its sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub baseline: Option<f64>,
    pub slow_baseline: Option<f64>,
    pub cusum: f64,
}

/// Everything the trends keep: small (categories x windows within the allowed lateness), so
/// it is stored as one value, written with the batch that changed it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trends {
    pub categories: BTreeMap<String, CategoryTrend>,
    /// Open windows by `(start, category)`.
    pub windows: BTreeMap<(Millis, String), Window>,
    /// Windows starting before this are closed and emitted; `None` before the first complaint.
    pub closed_before: Option<Millis>,
    /// The event time the watermark trails (how far the slowest input partition still
    /// delivering had got) as of the last commit, so that a restarted processor's watermark
    /// starts where the last one stopped and never goes back.
    pub newest: Option<Millis>,
    /// The event time of the earliest complaint opened before the first window closed: where
    /// the complaints of the input began, as far as the trends can tell. A window, day or
    /// month that started before it may lack the complaints of before the input began, so it
    /// is a warm-up: it neither seeds its baseline nor flags anything. `None` in trends stored
    /// before this was kept, whose first windows closed long ago.
    pub began: Option<Millis>,
    /// Each category's last closed window's verdict, which the spike flag and the z-score of
    /// `/metrics` show until the next window closes, also after a restart or a move of the
    /// aggregator. Empty in trends stored before this was kept.
    pub verdicts: BTreeMap<String, Verdict>,
    /// The complaints that left the backlog unresolved ([`Trends::left_open`]), by the open
    /// window of the event that took them out, as `windows` counts the others. Empty in trends
    /// stored before this was kept, whose open windows took such complaints out where they were
    /// read.
    pub left: BTreeMap<(Millis, String), u32>,
    /// What each category's open windows add to its backlog, for [`Trends::close_until`].
    #[serde(skip)]
    open_change: OpenChange,
}

/// What the open windows of each category add to its backlog ([`Window::backlog_change`]
/// summed), kept up to date as windows count and close, so that a window closing need not sum
/// every window after it: with input partitions days apart in event time, thousands of windows
/// are open, and that sum was a fifth of a backfill's instructions. Derived from
/// [`Trends::windows`], so it is not stored: `None` until the first close works it out.
#[derive(Debug, Clone, Default)]
struct OpenChange(Option<BTreeMap<String, i64>>);

/// Derived data does not tell two trends apart: their windows do.
impl PartialEq for OpenChange {
    fn eq(&self, _: &OpenChange) -> bool {
        true
    }
}

impl OpenChange {
    /// A complaint opened (`+1`) or resolved (`-1`) in an open window of `category`.
    fn counted(&mut self, category: &str, change: i64) {
        if let Some(sums) = &mut self.0 {
            add(sums, category, change);
        }
    }

    /// The sums, worked out from `windows` and `left` when not known yet.
    fn sums(
        &mut self,
        windows: &BTreeMap<(Millis, String), Window>,
        left: &BTreeMap<(Millis, String), u32>,
    ) -> &mut BTreeMap<String, i64> {
        self.0.get_or_insert_with(|| {
            let mut sums = BTreeMap::new();
            for ((_, category), window) in windows {
                add(&mut sums, category, window.backlog_change());
            }
            for ((_, category), n) in left {
                add(&mut sums, category, -i64::from(*n));
            }
            sums
        })
    }
}

/// Adds `change` to `category`'s sum, copying the name only for a category not seen before.
fn add(sums: &mut BTreeMap<String, i64>, category: &str, change: i64) {
    match sums.get_mut(category) {
        Some(sum) => *sum += change,
        None => {
            sums.insert(category.to_owned(), change);
        }
    }
}

/// What a closed window's record covers: one of the configured windows, or a roll-up of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Window,
    Day,
    Month,
}

/// A closed window, as `customer.complaint-trends` carries it (written by [`ClosedWindow::record`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ClosedWindow {
    /// Told by this, not by the length: a configured window may be a whole day too.
    pub period: Period,
    pub window_start: Millis,
    pub window_end: Millis,
    pub category: String,
    pub opened: u32,
    pub resolved: u32,
    pub open_backlog: i64,
    pub by_severity: [u32; 4],
    pub resolution_p50_seconds: Option<f64>,
    pub resolution_p90_seconds: Option<f64>,
    pub baseline: f64,
    pub z_score: f64,
    pub spike: bool,
    pub cusum: f64,
    pub cusum_signal: bool,
    /// Daily roll-ups only: opened in the month to the end of this day, and in the previous
    /// month to the same day of the month (DOMAIN.md: month over month).
    pub month_to_date: Option<MonthToDate>,
    /// Customers not lost, over the instance's segments, when the last segment day closed;
    /// set by the caller, which knows the population.
    pub active_customers: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MonthToDate {
    pub opened: u32,
    pub previous_month_same_days: u32,
}

/// `(year, month, day of month)` of an event time, in UTC.
fn calendar(at: Millis) -> (i32, u8, u8) {
    let t = time::OffsetDateTime::from_unix_timestamp(at.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    (t.year(), u8::from(t.month()), t.day())
}

/// The event time at which the month after `(year, month)` starts, in UTC.
fn next_month_start(year: i32, month: u8) -> Millis {
    let (y, m) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    time::Date::from_calendar_date(
        y,
        time::Month::try_from(m).unwrap_or(time::Month::January),
        1,
    )
    .map(|d| d.midnight().assume_utc().unix_timestamp() * 1000)
    .unwrap_or(Millis::MAX)
}

/// Whether an observation reached an open window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    InWindow,
    /// Its window was already emitted: counted as late, never reopened.
    Late,
}

const DAY_MS: Millis = 86_400_000;

/// Relative accuracy of the resolution-time buckets (DDSketch's layout, 5%).
const GAMMA: f64 = 1.05 / 0.95;

fn bucket(seconds: f64) -> i16 {
    (seconds.max(1.0).ln() / GAMMA.ln()).ceil() as i16
}

fn bucket_value(bucket: i16) -> f64 {
    // The middle of (g^(i-1), g^i], which is within 5% of every value in it.
    2.0 * GAMMA.powi(i32::from(bucket)) / (GAMMA + 1.0)
}

fn severity_index(severity: Severity) -> usize {
    match severity {
        Severity::Low => 0,
        Severity::Medium => 1,
        Severity::High => 2,
        Severity::Critical => 3,
    }
}

impl Window {
    /// What the window adds to its category's backlog: the complaints opened in it less those
    /// resolved in it.
    fn backlog_change(&self) -> i64 {
        i64::from(self.opened) - i64::from(self.resolved)
    }

    fn merge(&mut self, other: &Window) {
        self.opened += other.opened;
        self.resolved += other.resolved;
        for (mine, theirs) in self.by_severity.iter_mut().zip(other.by_severity) {
            *mine += theirs;
        }
        for (bucket, n) in &other.resolution {
            match self.resolution.binary_search_by_key(bucket, |(k, _)| *k) {
                Ok(i) => self.resolution[i].1 += n,
                Err(i) => self.resolution.insert(i, (*bucket, *n)),
            }
        }
    }

    fn add_resolution(&mut self, seconds: f64) {
        let b = bucket(seconds);
        match self.resolution.binary_search_by_key(&b, |(k, _)| *k) {
            Ok(i) => self.resolution[i].1 += 1,
            Err(i) => self.resolution.insert(i, (b, 1)),
        }
    }

    /// The `q` quantile of the resolution times (nearest rank), within 5%.
    pub fn resolution_quantile(&self, q: f64) -> Option<f64> {
        let total: u32 = self.resolution.iter().map(|(_, n)| n).sum();
        if total == 0 {
            return None;
        }
        let rank = ((q * f64::from(total)).ceil() as u32).max(1);
        let mut seen = 0;
        for (b, n) in &self.resolution {
            seen += n;
            if seen >= rank {
                return Some(bucket_value(*b));
            }
        }
        None
    }
}

impl Trends {
    fn window_start(at: Millis, s: &TrendSettings) -> Millis {
        at.div_euclid(s.window_ms) * s.window_ms
    }

    /// The start of `at`'s window while it is open, or `None` when it was closed already. The
    /// caller closes a window as soon as the watermark passes its end, so this is the
    /// watermark's verdict.
    fn open_start(&self, at: Millis, s: &TrendSettings) -> Option<Millis> {
        let start = Self::window_start(at, s);
        self.closed_before
            .is_none_or(|c| start >= c)
            .then_some(start)
    }

    /// The open window of `at` ([`Trends::open_start`]).
    fn window(&mut self, at: Millis, category: &str, s: &TrendSettings) -> Option<&mut Window> {
        let start = self.open_start(at, s)?;
        Some(
            self.windows
                .entry((start, category.to_owned()))
                .or_default(),
        )
    }

    /// Takes trends stored under another category list to `s`'s: a category no longer
    /// configured is `other` now, as its complaints would be if read again. Its open backlog
    /// and its open windows' counts move to `other`; its baselines and verdict go. Returns
    /// whether anything moved. Without it, the resolutions of such a category's complaints
    /// opened windows that no close ever took out.
    pub fn adopt(&mut self, s: &TrendSettings) -> bool {
        let configured = |c: &String| s.category(c) == c.as_str();
        let gone: Vec<String> = self
            .categories
            .keys()
            .chain(self.windows.keys().map(|(_, c)| c))
            .chain(self.left.keys().map(|(_, c)| c))
            .filter(|c| !configured(c))
            .cloned()
            .collect();
        if gone.is_empty() {
            return false;
        }
        for category in &gone {
            if let Some(trend) = self.categories.remove(category) {
                self.categories
                    .entry("other".into())
                    .or_default()
                    .open_backlog += trend.open_backlog;
            }
            self.verdicts.remove(category);
        }
        // Each window again under the category it counts in now.
        for ((start, category), window) in std::mem::take(&mut self.windows) {
            let key = (start, s.category(&category).to_owned());
            self.windows.entry(key).or_default().merge(&window);
        }
        for ((start, category), n) in std::mem::take(&mut self.left) {
            let key = (start, s.category(&category).to_owned());
            *self.left.entry(key).or_default() += n;
        }
        // Derived from the windows, by category: worked out again at the next close.
        self.open_change = OpenChange::default();
        true
    }

    /// A complaint opened at `at`. The backlog counts it whether or not its window is open.
    pub fn opened(
        &mut self,
        category: &str,
        severity: Severity,
        at: Millis,
        s: &TrendSettings,
    ) -> Counted {
        let category = s.category(category);
        self.categories
            .entry(category.to_owned())
            .or_default()
            .open_backlog += 1;
        if self.closed_before.is_none() {
            self.began = Some(self.began.map_or(at, |b| b.min(at)));
        }
        match self.window(at, category, s) {
            Some(w) => {
                w.opened += 1;
                w.by_severity[severity_index(severity)] += 1;
                self.open_change.counted(category, 1);
                Counted::InWindow
            }
            None => Counted::Late,
        }
    }

    /// A complaint of `category` opened at `opened_at` resolved at `at`.
    pub fn resolved(
        &mut self,
        category: &str,
        opened_at: Millis,
        at: Millis,
        s: &TrendSettings,
    ) -> Counted {
        let category = s.category(category);
        self.categories
            .entry(category.to_owned())
            .or_default()
            .open_backlog -= 1;
        match self.window(at, category, s) {
            Some(w) => {
                w.resolved += 1;
                w.add_resolution((at - opened_at).max(0) as f64 / 1000.0);
                self.open_change.counted(category, -1);
                Counted::InWindow
            }
            None => Counted::Late,
        }
    }

    /// An open complaint of `category` leaves the backlog unresolved (its customer was erased,
    /// or it opened past the customer's limit of open items) by an event at `at`: in the
    /// window of `at`, so that the windows before it still count the complaint open at their
    /// end. `None` for a fact written before its time was kept, which leaves the backlog now.
    pub fn left_open(&mut self, category: &str, at: Option<Millis>, s: &TrendSettings) -> Counted {
        let category = s.category(category);
        self.categories
            .entry(category.to_owned())
            .or_default()
            .open_backlog -= 1;
        let Some(at) = at else {
            return Counted::InWindow;
        };
        let Some(start) = self.open_start(at, s) else {
            return Counted::Late;
        };
        *self.left.entry((start, category.to_owned())).or_default() += 1;
        self.open_change.counted(category, -1);
        Counted::InWindow
    }

    /// When the first open window starts: where the last close stopped, or before any, the
    /// earliest window a complaint fell in; `None` before the first complaint.
    fn first_open(&self) -> Option<Millis> {
        self.closed_before
            .or_else(|| self.windows.keys().next().map(|(start, _)| *start))
    }

    /// When the first open window ends; `None` before the first complaint.
    pub fn next_close(&self, s: &TrendSettings) -> Option<Millis> {
        Some(self.first_open()? + s.window_ms)
    }

    /// A complaint's change at `at` (opened, resolved) where the aggregator is elsewhere and
    /// counts it: nothing is counted here, but until the first window closes the earliest
    /// window any change fell in is kept (empty), as that decides when the first one ends
    /// ([`Trends::next_close`]). Late when its window has closed.
    pub fn time(&mut self, category: &str, at: Millis, s: &TrendSettings) -> Counted {
        let Some(start) = self.open_start(at, s) else {
            return Counted::Late;
        };
        let first = self.windows.keys().next().map(|(first, _)| *first);
        if self.closed_before.is_none() && first.is_none_or(|first| start < first) {
            let key = (start, s.category(category).to_owned());
            self.windows.insert(key, Window::default());
        }
        Counted::InWindow
    }

    /// Whether `at`'s window has closed.
    pub fn closed(&self, at: Millis, s: &TrendSettings) -> bool {
        self.open_start(at, s).is_none()
    }

    /// Passes every window that ends at or before `watermark` as [`Trends::close_until`]
    /// closes them, but without their records or baselines: the windows of an instance whose
    /// aggregator is elsewhere, which counts nothing in them ([`Trends::time`]). Whether any
    /// passed.
    pub fn pass_until(&mut self, watermark: Millis, s: &TrendSettings) -> bool {
        let Some(first_open) = self.first_open() else {
            return false;
        };
        if first_open + s.window_ms > watermark {
            return false;
        }
        let open = first_open + (watermark - first_open) / s.window_ms * s.window_ms;
        self.closed_before = Some(open);
        self.windows = self.windows.split_off(&(open, String::new()));
        self.left = self.left.split_off(&(open, String::new()));
        // Derived from the windows dropped.
        self.open_change = OpenChange::default();
        true
    }

    /// Closes every window that ends at or before `watermark`, for every configured category
    /// (an hour without complaints is a window too: it lowers the baseline), oldest first.
    pub fn close_until(&mut self, watermark: Millis, s: &TrendSettings) -> Vec<ClosedWindow> {
        let Some(first_open) = self.first_open() else {
            return Vec::new();
        };
        let mut closed = Vec::new();
        let mut start = first_open;
        let began = self.began;
        // Worked out, when not known, before any window below is taken out.
        let sums = self.open_change.sums(&self.windows, &self.left);
        while start + s.window_ms <= watermark {
            let end = start + s.window_ms;
            let warms_up = warms_up(start, began);
            for category in &s.categories {
                let window = self
                    .windows
                    .remove(&(start, category.clone()))
                    .unwrap_or_default();
                let left = self.left.remove(&(start, category.clone())).unwrap_or(0);
                // What the category's windows after this one add: windows start on multiples
                // of the window's length, and those before this one are closed already.
                let after = match sums.get_mut(category) {
                    Some(sum) => {
                        *sum -= window.backlog_change() - i64::from(left);
                        *sum
                    }
                    None => 0,
                };
                // The backlog at the window's end, in event time: what is open now, less what
                // opened in the windows still open after it, plus what was resolved in them.
                // So it does not depend on how far the input had got when the window closed.
                let trend = self.categories.entry(category.clone()).or_default();
                let backlog = trend.open_backlog - after;
                let closed_window = close(
                    (start, s.window_ms, Period::Window),
                    category,
                    &window,
                    backlog,
                    (
                        &mut trend.windows,
                        warms_up,
                        taken_before(start, s.window_ms, began),
                    ),
                    s,
                );
                let verdict = Verdict {
                    z_score: closed_window.z_score,
                    spike: closed_window.spike,
                };
                match self.verdicts.get_mut(category) {
                    Some(last) => *last = verdict,
                    None => {
                        self.verdicts.insert(category.clone(), verdict);
                    }
                }
                closed.push(closed_window);
                // The daily roll-up closes with the day's last window. A first day that started
                // mid-day rolls up the windows it saw, as a warm-up.
                trend.today.merge(&window);
                if end.rem_euclid(DAY_MS) == 0 {
                    let today = std::mem::take(&mut trend.today);
                    let mut rolled_up =
                        roll_up_day(end - DAY_MS, category, &today, backlog, (trend, began), s);
                    // A configured window of a whole day is the day's record: it takes the
                    // month to date, and a roll-up of its own would repeat it under its id.
                    if s.window_ms == DAY_MS {
                        let day = rolled_up.remove(0);
                        if let Some(window) = closed.last_mut() {
                            window.month_to_date = day.month_to_date;
                        }
                    }
                    closed.extend(rolled_up);
                }
            }
            start += s.window_ms;
            self.closed_before = Some(start);
        }
        closed
    }
}

/// Whether a period starting at `start` is a warm-up: it started before the complaints `began`
/// (`Trends::began`), so it may have seen only part of its complaints.
fn warms_up(start: Millis, began: Option<Millis>) -> bool {
    began.is_some_and(|began| start < began)
}

/// How many periods of `length` (windows start on its multiples) a category's baselines took
/// before the one starting at `start`: those from the first that started at or after the
/// complaints `began`, as every category's windows close, with complaints or without. `None`
/// when `began` is not known (trends stored before it was kept), or for a warm-up.
fn taken_before(start: Millis, length: Millis, began: Option<Millis>) -> Option<u64> {
    let began = began?;
    let first = began.div_euclid(length) + i64::from(began.rem_euclid(length) != 0);
    u64::try_from(start.div_euclid(length) - first).ok()
}

/// [`taken_before`] for calendar months: the month starting at `start`.
fn months_taken_before(start: Millis, began: Option<Millis>) -> Option<u64> {
    let began = began?;
    let index = |at: Millis| {
        let (year, month, _) = calendar(at);
        i64::from(year) * 12 + i64::from(month)
    };
    let (_, _, day) = calendar(began);
    let starts_a_month = day == 1 && began.rem_euclid(DAY_MS) == 0;
    let first = index(began) + i64::from(!starts_a_month);
    u64::try_from(index(start) - first).ok()
}

/// Closes the day starting at `day`: its daily record with month to date, and the monthly
/// record when it was the month's last day.
fn roll_up_day(
    day: Millis,
    category: &str,
    today: &Window,
    backlog: i64,
    (trend, began): (&mut CategoryTrend, Option<Millis>),
    s: &TrendSettings,
) -> Vec<ClosedWindow> {
    let (year, month, day_of_month) = calendar(day);
    if day_of_month == 1 {
        trend.previous_month_days = std::mem::take(&mut trend.month_days);
    }
    let index = usize::from(day_of_month) - 1;
    if trend.month_days.len() <= index {
        trend.month_days.resize(index + 1, 0);
    }
    trend.month_days[index] = today.opened;
    let days = (
        &mut trend.days,
        warms_up(day, began),
        taken_before(day, DAY_MS, began),
    );
    let mut daily = close(
        (day, DAY_MS, Period::Day),
        category,
        today,
        backlog,
        days,
        s,
    );
    daily.month_to_date = Some(MonthToDate {
        opened: trend.month_days.iter().sum(),
        previous_month_same_days: trend.previous_month_days.iter().take(index + 1).sum(),
    });
    trend.this_month.merge(today);
    let mut out = vec![daily];
    let month_end = next_month_start(year, month);
    if day + DAY_MS == month_end {
        let month_start = day - Millis::from(day_of_month - 1) * DAY_MS;
        let window = std::mem::take(&mut trend.this_month);
        out.push(close(
            (month_start, month_end - month_start, Period::Month),
            category,
            &window,
            backlog,
            (
                &mut trend.months,
                warms_up(month_start, began),
                months_taken_before(month_start, began),
            ),
            s,
        ));
    }
    out
}

/// Compares a closed window with its category's baseline and moves the baseline on; a warm-up
/// window (`warms_up`) is compared with nothing and leaves the baseline as it was.
fn close(
    (start, length, period): (Millis, Millis, Period),
    category: &str,
    window: &Window,
    open_backlog: i64,
    (trend, warms_up, taken): (&mut Baseline, bool, Option<u64>),
    s: &TrendSettings,
) -> ClosedWindow {
    let count = f64::from(window.opened);
    // The first full window of a category is its own baseline. A baseline below 0.25
    // complaints per window is taken as 0.25, so that a quiet category's first complaint is
    // not an infinite z.
    let baseline = trend.baseline.unwrap_or(count);
    let sigma = baseline.max(0.25).sqrt();
    let z_score = if warms_up {
        0.0
    } else {
        (count - baseline) / sigma
    };
    let spike = z_score > s.spike_z && window.opened >= s.spike_min_count;
    let slow = trend.slow_baseline.unwrap_or(count);
    let slow_sigma = slow.max(0.25).sqrt();
    if !warms_up {
        trend.cusum = (trend.cusum + count - (slow + s.cusum_slack * slow_sigma)).max(0.0);
        trend.baseline = Some(s.baseline_weight * count + (1.0 - s.baseline_weight) * baseline);
        let weight = s.slow_weight(taken);
        trend.slow_baseline = Some(weight * count + (1.0 - weight) * slow);
    }
    let cusum_signal = trend.cusum > s.cusum_threshold * slow_sigma;
    ClosedWindow {
        period,
        window_start: start,
        window_end: start + length,
        category: category.to_owned(),
        opened: window.opened,
        resolved: window.resolved,
        open_backlog,
        by_severity: window.by_severity,
        resolution_p50_seconds: window.resolution_quantile(0.5),
        resolution_p90_seconds: window.resolution_quantile(0.9),
        baseline,
        z_score,
        spike,
        cusum: trend.cusum,
        cusum_signal,
        month_to_date: None,
        active_customers: None,
    }
}

impl ClosedWindow {
    /// The `customer.complaint-trends` value.
    pub fn record(&self, record_id: &str) -> Vec<u8> {
        let [low, medium, high, critical] = self.by_severity;
        let four = |v: f64| (v * 1e4).round() / 1e4;
        // Room for the record (about 450-550 bytes) up front, as for churn-risk records; its
        // fields in alphabetical order, as the churn-risk record's.
        let mut out = Vec::with_capacity(1024);
        let mut record = Object::new(&mut out);
        record
            .field("active_customers", &self.active_customers)
            .field("baseline", &four(self.baseline))
            .object("by_severity", |by| {
                by.field("critical", &critical)
                    .field("high", &high)
                    .field("low", &low)
                    .field("medium", &medium);
            })
            .field("category", &self.category)
            .field("cusum", &four(self.cusum))
            .field("cusum_signal", &self.cusum_signal);
        match &self.month_to_date {
            Some(month) => record.object("month_to_date", |m| {
                m.field("opened", &month.opened)
                    .field("previous_month_same_days", &month.previous_month_same_days);
            }),
            None => record.field("month_to_date", &None::<()>),
        };
        record
            .field("open_backlog", &self.open_backlog)
            .field("opened", &self.opened)
            .field(
                "opened_per_1000_active",
                &self.opened_per_1000_active().map(four),
            )
            .field("record_id", record_id)
            .object("resolution_seconds", |q| {
                q.field("p50", &self.resolution_p50_seconds.map(f64::round))
                    .field("p90", &self.resolution_p90_seconds.map(f64::round));
            })
            .field("resolved", &self.resolved)
            .field("spike", &self.spike)
            .field("window_end", &format_millis(self.window_end))
            .field("window_start", &format_millis(self.window_start))
            .field("z_score", &four(self.z_score));
        record.end();
        out
    }

    /// Stable across replays: one record per category, window length and start.
    pub fn record_id(&self) -> String {
        dashed_id(&[
            IdPart::Text("trend"),
            IdPart::Text(&self.category),
            IdPart::Number((self.window_end - self.window_start) / 60_000),
            IdPart::Number(self.window_start),
        ])
    }

    /// Complaints opened per 1,000 active customers (DOMAIN.md: so that growth is not read as
    /// worse service); `None` without active customers.
    pub fn opened_per_1000_active(&self) -> Option<f64> {
        self.active_customers
            .filter(|n| *n > 0)
            .map(|n| f64::from(self.opened) * 1000.0 / n as f64)
    }

    /// Whether this is a daily roll-up rather than a window.
    pub fn is_daily(&self) -> bool {
        self.period == Period::Day
    }

    /// Whether this is a monthly roll-up.
    pub fn is_monthly(&self) -> bool {
        self.period == Period::Month
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Millis = 3_600_000;

    fn settings() -> TrendSettings {
        TrendSettings::defaults(&["billing", "delivery"])
    }

    #[test]
    fn a_burst_over_a_steady_baseline_is_a_spike_and_a_quiet_category_is_not() {
        let s = settings();
        let mut t = Trends::default();
        // Two billing complaints an hour for ten hours, then twelve in one hour.
        for h in 0..10 {
            for i in 0..2 {
                t.opened("billing", Severity::Low, h * HOUR + i * 60_000, &s);
            }
        }
        for i in 0..12 {
            t.opened("billing", Severity::High, 10 * HOUR + i * 60_000, &s);
        }
        t.opened("delivery", Severity::Low, 10 * HOUR, &s);
        let closed = t.close_until(11 * HOUR, &s);
        assert_eq!(
            closed.len(),
            33,
            "11 hours x 3 categories (other included), empty hours too"
        );
        let burst = closed
            .iter()
            .find(|w| w.category == "billing" && w.window_start == 10 * HOUR)
            .unwrap();
        assert!((burst.baseline - 2.0).abs() < 1e-9);
        assert!((burst.z_score - 10.0 / 2f64.sqrt()).abs() < 1e-9);
        assert!(burst.spike);
        assert_eq!(burst.by_severity, [0, 0, 12, 0]);
        let quiet = closed
            .iter()
            .find(|w| w.category == "delivery" && w.window_start == 10 * HOUR)
            .unwrap();
        assert!(!quiet.spike, "one complaint is below the minimum count");
        assert!(closed
            .iter()
            .filter(|w| w.window_start < 10 * HOUR)
            .all(|w| !w.spike));
    }

    #[test]
    fn a_first_window_the_input_began_in_is_a_warm_up_and_the_next_is_the_baseline() {
        let s = settings();
        let mut t = Trends::default();
        // The input begins at 00:40: ten billing complaints in the first hour's last 20
        // minutes, then thirty in each full hour, then ninety in hour 6.
        let mut opened = |hour: Millis, count: Millis, from_minute: Millis| {
            for i in 0..count {
                let at = hour * HOUR + from_minute * 60_000 + i * 1_000;
                t.opened("billing", Severity::Low, at, &s);
            }
        };
        opened(0, 10, 40);
        for h in 1..6 {
            opened(h, 30, 0);
        }
        opened(6, 90, 0);
        let closed = t.close_until(7 * HOUR, &s);
        let billing: Vec<&ClosedWindow> =
            closed.iter().filter(|w| w.category == "billing").collect();
        let counts: Vec<u32> = billing.iter().map(|w| w.opened).collect();
        assert_eq!(counts, [10, 30, 30, 30, 30, 30, 90]);
        // Compared with the partial first hour, hour 1 would be z = (30 - 10) / sqrt(10) = 6.3.
        let (warm_up, first_full) = (billing[0], billing[1]);
        assert_eq!((warm_up.z_score, warm_up.spike), (0.0, false));
        assert_eq!(warm_up.cusum, 0.0);
        assert!(
            (first_full.baseline - 30.0).abs() < 1e-9,
            "its own baseline"
        );
        for w in &billing[1..6] {
            assert!((w.baseline - 30.0).abs() < 1e-9);
            assert!(
                w.z_score.abs() < 1e-9 && !w.spike && !w.cusum_signal,
                "{w:?}"
            );
        }
        let burst = billing[6];
        assert!((burst.z_score - 60.0 / 30f64.sqrt()).abs() < 1e-9);
        assert!(burst.spike, "detection is on from the first full hour");
        assert_eq!(t.began, Some(40 * 60_000));
    }

    #[test]
    fn a_configured_window_of_a_whole_day_is_its_own_daily_record() {
        let mut s = settings();
        s.window_ms = DAY_MS;
        let mut t = Trends::default();
        // From midnight on, one delivery complaint an hour for three days.
        for h in 0..72 {
            t.opened("delivery", Severity::Low, h * HOUR, &s);
        }
        let closed = t.close_until(3 * DAY_MS, &s);
        let ids: std::collections::BTreeSet<String> =
            closed.iter().map(ClosedWindow::record_id).collect();
        assert_eq!(ids.len(), closed.len(), "one record per id: {closed:?}");
        let days: Vec<&ClosedWindow> = closed.iter().filter(|w| w.category == "delivery").collect();
        assert_eq!(days.len(), 3, "{days:?}");
        for (i, day) in days.iter().enumerate() {
            assert_eq!(day.period, Period::Window);
            assert_eq!((day.window_start, day.opened), (i as Millis * DAY_MS, 24));
            let to_date = day
                .month_to_date
                .expect("the day's record has the month to date");
            assert_eq!(to_date.opened, 24 * (i as u32 + 1));
        }
    }

    #[test]
    fn a_first_day_the_input_began_in_is_a_warm_up_for_the_daily_roll_up() {
        let s = settings();
        let mut t = Trends::default();
        // Day 0 from 20:00 on: one delivery complaint an hour (4); days 1 and 2: one an hour
        // (24). Against day 0, day 1 would be z = (24 - 4) / 2 = 10.
        for h in 20..72 {
            t.opened("delivery", Severity::Low, h * HOUR, &s);
        }
        let closed = t.close_until(3 * DAY_MS, &s);
        let days: Vec<&ClosedWindow> = closed
            .iter()
            .filter(|w| w.is_daily() && w.category == "delivery")
            .collect();
        let counts: Vec<u32> = days.iter().map(|w| w.opened).collect();
        assert_eq!(counts, [4, 24, 24]);
        assert!(
            days.iter().all(|d| d.z_score.abs() < 1e-9 && !d.spike),
            "{days:?}"
        );
        assert!((days[2].baseline - 24.0).abs() < 1e-9, "day 1 seeded it");
        // The hourly windows began at 20:00 exactly: the first of them is not a warm-up.
        let first_hour = closed
            .iter()
            .find(|w| w.category == "delivery" && !w.is_daily())
            .unwrap();
        assert_eq!(first_hour.window_start, 20 * HOUR);
        let second_hour = closed
            .iter()
            .find(|w| w.category == "delivery" && w.window_start == 21 * HOUR)
            .unwrap();
        assert!(
            (second_hour.baseline - 1.0).abs() < 1e-9,
            "hour 20 seeded it"
        );
    }

    #[test]
    fn a_late_complaint_is_counted_late_and_never_reopens_a_window() {
        let s = settings();
        let mut t = Trends::default();
        t.opened("billing", Severity::Low, 0, &s);
        assert_eq!(
            t.close_until(2 * HOUR, &s).len(),
            6,
            "2 hours x 3 categories"
        );
        assert_eq!(
            t.opened("billing", Severity::Low, 30 * 60_000, &s),
            Counted::Late
        );
        assert_eq!(t.categories["billing"].open_backlog, 2);
        assert!(t.windows.is_empty());
        assert_eq!(
            t.opened("billing", Severity::Low, 2 * HOUR, &s),
            Counted::InWindow
        );
    }

    #[test]
    fn a_category_taken_out_of_the_list_counts_as_other_from_then_on() {
        let before = settings();
        let mut t = Trends::default();
        t.opened("billing", Severity::Low, 0, &before);
        t.opened("delivery", Severity::High, 60_000, &before);
        t.opened("delivery", Severity::High, HOUR + 60_000, &before);
        t.opened("other", Severity::Low, HOUR + 120_000, &before);
        t.close_until(HOUR, &before);
        // The second `delivery` complaint's customer is erased at 01:05.
        t.left_open("delivery", Some(HOUR + 300_000), &before);
        // `delivery` leaves the list: its backlog and its open window go to `other`, and so
        // does what left its open window.
        let after = TrendSettings::defaults(&["billing"]);
        assert!(t.adopt(&after));
        assert!(!t.adopt(&after), "once");
        assert!(!t.categories.contains_key("delivery"));
        assert_eq!(t.categories["other"].open_backlog, 2);
        // A complaint opened as `delivery` and resolved now is resolved in `other`, whose
        // window holds it; no `delivery` window opens.
        t.resolved("delivery", 60_000, HOUR + 180_000, &after);
        t.opened("delivery", Severity::Low, HOUR + 240_000, &after);
        let closed = t.close_until(2 * HOUR, &after);
        let categories: Vec<&str> = closed.iter().map(|w| w.category.as_str()).collect();
        assert_eq!(categories, ["billing", "other"]);
        let other = &closed[1];
        assert_eq!(
            (other.opened, other.resolved, other.open_backlog),
            (3, 1, 2)
        );
        assert_eq!(other.by_severity, [2, 0, 1, 0]);
        assert!(t.windows.is_empty(), "every window closed: {:?}", t.windows);
        assert!(t.left.is_empty(), "every window closed: {:?}", t.left);
        // A fact written before the time was kept takes a `delivery` complaint from `other`.
        t.left_open("delivery", None, &after);
        assert_eq!(t.categories["other"].open_backlog, 1);
    }

    #[test]
    fn a_window_closes_with_the_backlog_at_its_end_whatever_was_read_after() {
        let s = settings();
        let mut t = Trends::default();
        t.opened("billing", Severity::Low, 0, &s);
        // Read before the first hour closes, with event times in the second.
        t.opened("billing", Severity::Low, HOUR + 1, &s);
        t.opened("billing", Severity::Low, HOUR + 2, &s);
        t.resolved("billing", 0, HOUR + 3, &s);
        let closed = t.close_until(HOUR, &s);
        let first = closed.iter().find(|w| w.category == "billing").unwrap();
        assert_eq!(first.open_backlog, 1, "the first complaint, open at 01:00");
        assert_eq!(t.categories["billing"].open_backlog, 2, "now");
        let closed = t.close_until(2 * HOUR, &s);
        let second = closed.iter().find(|w| w.category == "billing").unwrap();
        assert_eq!(second.open_backlog, 2);
    }

    #[test]
    fn backlogs_at_window_ends_hold_however_far_the_input_runs_ahead_and_after_a_reload() {
        // Complaints of three categories read with event times up to a day ahead of the
        // watermark, as input partitions days apart deliver them, never behind it; windows
        // close as the watermark moves. Every closed window's (and day's) backlog is what the
        // complaints read so far say: opened before its end, less resolved or left unresolved
        // (an erasure) before its end.
        // Half way the trends are reloaded, which drops the open windows' sums they keep.
        let s = settings();
        let mut t = Trends::default();
        let mut state = 7u64;
        let mut next = move |n: u64| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) % n
        };
        let mut read: Vec<(String, Millis, i64)> = Vec::new();
        let mut open: Vec<(String, Millis)> = Vec::new();
        let (mut watermark, mut checked) = (0, 0);
        for step in 0..3_000 {
            let at = watermark + next(24 * HOUR as u64) as Millis;
            if next(3) == 0 && !open.is_empty() {
                let (category, opened_at) = open.swap_remove(next(open.len() as u64) as usize);
                let at = at.max(opened_at);
                // One in four leaves unresolved: its customer erased.
                if next(4) == 0 {
                    assert_eq!(t.left_open(&category, Some(at), &s), Counted::InWindow);
                } else {
                    assert_eq!(t.resolved(&category, opened_at, at, &s), Counted::InWindow);
                }
                read.push((category, at, -1));
            } else {
                let category = ["billing", "delivery", "other"][next(3) as usize];
                assert_eq!(t.opened(category, Severity::Low, at, &s), Counted::InWindow);
                open.push((category.to_owned(), at));
                read.push((category.to_owned(), at, 1));
            }
            if step == 1_500 {
                t.open_change = OpenChange::default();
            }
            if step % 40 == 39 {
                watermark += HOUR / 2;
                for w in t.close_until(watermark, &s) {
                    let end = w.window_end;
                    let want: i64 = read
                        .iter()
                        .filter(|(c, at, _)| *c == w.category && *at < end)
                        .map(|(_, _, n)| n)
                        .sum();
                    assert_eq!(w.open_backlog, want, "{} to {end}", w.category);
                    checked += 1;
                }
            }
        }
        assert!(checked > 3 * 24, "{checked} windows checked");
    }

    #[test]
    fn each_day_rolls_up_its_windows_when_its_last_window_closes() {
        let s = settings();
        let mut t = Trends::default();
        // Day 0: one complaint at every hour; day 1: three at 05:00, one resolved.
        for h in 0..24 {
            t.opened("delivery", Severity::Medium, h * HOUR, &s);
        }
        for i in 0..3 {
            t.opened("delivery", Severity::Critical, DAY_MS + 5 * HOUR + i, &s);
        }
        t.resolved("delivery", 0, DAY_MS + 6 * HOUR, &s);
        let closed = t.close_until(2 * DAY_MS, &s);
        let days: Vec<&ClosedWindow> = closed
            .iter()
            .filter(|w| w.is_daily() && w.category == "delivery")
            .collect();
        assert_eq!(days.len(), 2);
        assert_eq!((days[0].window_start, days[0].opened), (0, 24));
        assert_eq!(days[0].by_severity, [0, 24, 0, 0]);
        assert_eq!((days[1].window_start, days[1].opened), (DAY_MS, 3));
        assert_eq!(days[1].resolved, 1);
        assert_eq!(days[1].open_backlog, 26);
        assert!(
            (days[1].baseline - 24.0).abs() < 1e-9,
            "the first day is its own baseline"
        );
        let ids: std::collections::HashSet<String> =
            closed.iter().map(ClosedWindow::record_id).collect();
        assert_eq!(
            ids.len(),
            closed.len(),
            "hourly and daily ids never collide"
        );
        assert_eq!(closed.len(), 2 * 24 * 3 + 2 * 3);
    }

    #[test]
    fn months_roll_up_and_days_carry_month_to_date_against_the_previous_month() {
        let s = settings();
        let mut t = Trends::default();
        // 2026-01-01T00:00:00Z: two a day in January, three a day in February, one a day in March.
        let january = 1_767_225_600_000;
        for d in 0..61 {
            let n = match d {
                0..=30 => 2,
                31..=58 => 3,
                _ => 1,
            };
            for i in 0..n {
                t.opened(
                    "billing",
                    Severity::Low,
                    january + d * DAY_MS + 10 * HOUR + i,
                    &s,
                );
            }
        }
        let closed = t.close_until(january + 61 * DAY_MS, &s);
        let billing = |pick: fn(&&ClosedWindow) -> bool| -> Vec<&ClosedWindow> {
            closed
                .iter()
                .filter(|w| w.category == "billing")
                .filter(pick)
                .collect()
        };
        let months = billing(|w| w.is_monthly());
        assert_eq!(
            months.len(),
            2,
            "January and February closed; March is open"
        );
        assert_eq!((months[0].window_start, months[0].opened), (january, 62));
        assert_eq!(months[0].window_end, january + 31 * DAY_MS);
        assert_eq!(
            (months[1].opened, months[1].window_end),
            (84, january + 59 * DAY_MS)
        );
        let days = billing(|w| w.is_daily());
        assert_eq!(days.len(), 61);
        let february_10 = days[40].month_to_date.unwrap();
        assert_eq!(
            (february_10.opened, february_10.previous_month_same_days),
            (30, 20)
        );
        let march_2 = days[60].month_to_date.unwrap();
        assert_eq!((march_2.opened, march_2.previous_month_same_days), (2, 6));
    }

    #[test]
    fn resolution_quantiles_are_within_five_percent() {
        let s = settings();
        let mut t = Trends::default();
        let at = 3 * HOUR + 20 * 60_000;
        for minutes in 1..=100 {
            t.resolved("billing", at - minutes * 60_000, at, &s);
        }
        let w = &t.windows[&(3 * HOUR, "billing".to_owned())];
        let p50 = w.resolution_quantile(0.5).unwrap();
        let p90 = w.resolution_quantile(0.9).unwrap();
        assert!((p50 / 3_000.0 - 1.0).abs() <= 0.05, "{p50}");
        assert!((p90 / 5_400.0 - 1.0).abs() <= 0.05, "{p90}");
    }

    #[test]
    fn cusum_catches_a_small_persistent_rise() {
        let s = settings();
        let mut t = Trends::default();
        // Four an hour for a day, then six an hour: never a z-score spike, but CUSUM signals.
        let mut at = 0;
        for h in 0..48 {
            let n = if h < 24 { 4 } else { 6 };
            for _ in 0..n {
                t.opened("billing", Severity::Low, h * HOUR + at % HOUR, &s);
                at += 60_000;
            }
        }
        let closed = t.close_until(48 * HOUR, &s);
        let billing: Vec<_> = closed
            .iter()
            .filter(|w| w.category == "billing" && !w.is_daily())
            .collect();
        assert!(billing.iter().all(|w| !w.spike));
        assert!(billing[..24].iter().all(|w| !w.cusum_signal));
        assert!(billing[24..].iter().any(|w| w.cusum_signal));
    }

    #[test]
    fn cusum_s_slow_baseline_starts_as_the_mean_of_the_windows_so_far() {
        // Three an hour, give or take, after a first hour of one: seeded by that hour alone and
        // moving 2% an hour, the slow baseline stayed under 2 for two days, and CUSUM signalled
        // in 70 of these 73 windows.
        let s = settings();
        let mut t = Trends::default();
        let pattern = [3, 4, 3, 2, 4, 3, 4, 3, 2, 4, 3, 1];
        let counts = std::iter::once(1).chain(pattern.iter().copied().cycle().take(72));
        for (h, n) in counts.enumerate() {
            for i in 0..n {
                t.opened("billing", Severity::Low, h as i64 * HOUR + i * 60_000, &s);
            }
        }
        let closed = t.close_until(73 * HOUR, &s);
        let billing: Vec<_> = closed
            .iter()
            .filter(|w| w.category == "billing" && !w.is_daily())
            .collect();
        assert_eq!(billing.len(), 73);
        let signals = billing.iter().filter(|w| w.cusum_signal).count();
        assert_eq!(
            signals,
            0,
            "{:?}",
            billing.iter().map(|w| w.cusum).collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_periods_a_baseline_took_count_from_the_first_full_one() {
        let hour = |h: i64| h * HOUR;
        assert_eq!(taken_before(hour(5), HOUR, Some(hour(5))), Some(0));
        assert_eq!(taken_before(hour(7), HOUR, Some(hour(5))), Some(2));
        // Began mid-hour: that hour is a warm-up, the next one the first.
        assert_eq!(taken_before(hour(5), HOUR, Some(hour(5) + 1)), None);
        assert_eq!(taken_before(hour(6), HOUR, Some(hour(5) + 1)), Some(0));
        assert_eq!(taken_before(hour(6), HOUR, None), None);
        // 2026-01-01 and 2026-03-01 (UTC) in milliseconds.
        let (jan, mar) = (1_767_225_600_000, 1_772_323_200_000);
        assert_eq!(months_taken_before(mar, Some(jan)), Some(2));
        assert_eq!(months_taken_before(mar, Some(jan + 1)), Some(1));
        assert_eq!(months_taken_before(jan, Some(jan + 1)), None);
        let s = settings();
        assert_eq!(s.slow_weight(Some(0)), 1.0);
        assert_eq!(s.slow_weight(Some(3)), 0.25);
        assert_eq!(
            s.slow_weight(Some(24)),
            1.0 / 25.0,
            "25 periods: half the EWMA's span"
        );
        assert_eq!(s.slow_weight(Some(25)), 0.02);
        assert_eq!(s.slow_weight(None), 0.02);
    }

    #[test]
    fn the_record_is_what_a_json_value_of_its_fields_writes() {
        let window = ClosedWindow {
            period: Period::Window,
            window_start: 3_600_000,
            window_end: 2 * 3_600_000,
            category: "billing".into(),
            opened: 7,
            resolved: 3,
            open_backlog: 11,
            by_severity: [1, 2, 3, 1],
            resolution_p50_seconds: Some(1_234.4),
            resolution_p90_seconds: None,
            baseline: 2.345_678,
            z_score: -0.123_456,
            spike: true,
            cusum: 1.0 / 3.0,
            cusum_signal: false,
            month_to_date: Some(MonthToDate {
                opened: 40,
                previous_month_same_days: 31,
            }),
            active_customers: Some(3_000),
        };
        let got = String::from_utf8(window.record("r-1")).unwrap();
        let want = serde_json::json!({
            "record_id": "r-1",
            "window_start": "1970-01-01T01:00:00.000Z",
            "window_end": "1970-01-01T02:00:00.000Z",
            "category": "billing",
            "opened": 7,
            "resolved": 3,
            "open_backlog": 11,
            "by_severity": {"low": 1, "medium": 2, "high": 3, "critical": 1},
            "resolution_seconds": {"p50": 1_234.0, "p90": null},
            "baseline": 2.3457,
            "z_score": -0.1235,
            "spike": true,
            "cusum": 0.3333,
            "cusum_signal": false,
            "month_to_date": {"opened": 40, "previous_month_same_days": 31},
            "active_customers": 3_000,
            "opened_per_1000_active": 2.3333,
        });
        // Byte for byte: a `Value`'s keys are written in alphabetical order, as the record's.
        assert_eq!(got, want.to_string());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Complaints timed where the aggregator is elsewhere, their windows passed, close the
        /// same windows at the same watermarks as complaints counted and their windows closed,
        /// and are late exactly when those are: in any order of complaints and watermarks.
        #[test]
        fn timed_complaints_pass_the_windows_counted_ones_close(
            steps in proptest::collection::vec((0u8..3, 0i64..4_320, 0usize..3), 1..80),
        ) {
            let s = settings();
            let categories = ["billing", "delivery", "unknown"];
            let (mut counted, mut timed) = (Trends::default(), Trends::default());
            let mut watermark = 0;
            for (kind, minute, category) in steps {
                let at = minute * 60_000;
                let category = categories[category];
                match kind {
                    0 => {
                        let want = counted.opened(category, Severity::Low, at, &s);
                        proptest::prop_assert_eq!(timed.time(category, at, &s), want);
                    }
                    1 => {
                        let want = counted.resolved(category, at - 600_000, at, &s);
                        proptest::prop_assert_eq!(timed.time(category, at, &s), want);
                    }
                    _ => {
                        watermark = watermark.max(at);
                        let closed = !counted.close_until(watermark, &s).is_empty();
                        proptest::prop_assert_eq!(timed.pass_until(watermark, &s), closed);
                        proptest::prop_assert_eq!(timed.closed_before, counted.closed_before);
                    }
                }
                proptest::prop_assert_eq!(timed.next_close(&s), counted.next_close(&s));
                proptest::prop_assert_eq!(timed.closed(at, &s), counted.closed(at, &s));
            }
            proptest::prop_assert!(timed.categories.is_empty());
        }
    }
}
