//! The probability models of DOMAIN.md, as plain functions of a customer's sufficient statistics:
//! P(alive) and expected purchases (BG/NBD, MBG/NBD), the time a silent customer crosses a
//! P(alive) threshold, Gamma-Gamma spend and a discounted CLV. Must not know about events, state,
//! storage or time zones: times are in the model's own unit, money in minor units.

use serde::Serialize;

/// A month of the CLV, in days: a year's average, 365.25 / 12.
pub const MONTH_DAYS: f64 = 30.4375;

/// The horizon of a churn-risk record's `expected_orders_90d`, in days.
pub const EXPECTED_ORDERS_DAYS: i64 = 90;

/// Which purchase model scores customers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Model {
    /// Fader, Hardie and Lee (2005), "Counting Your Customers the Easy Way: An Alternative to the
    /// Pareto/NBD Model", Marketing Science 24(2). Gives every one-time buyer P(alive) = 1.
    BgNbd,
    /// Batislam, Denizel and Filiztekin (2007), "Empirical validation and comparison of models
    /// for customer base analysis", IJRM 24(3): drop-out is possible before the first repeat.
    MbgNbd,
}

/// Parameters of the purchase model; `alpha` is in the model's time unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PurchaseModel {
    pub model: Model,
    pub r: f64,
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
}

/// A customer's sufficient statistics in the model's time unit (DOMAIN.md, Churn).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recency {
    /// Repeat purchases: distinct purchase periods minus one.
    pub x: f64,
    /// First to last purchase.
    pub t_x: f64,
    /// First purchase to the scoring time.
    pub t: f64,
}

impl PurchaseModel {
    /// The largest r, alpha, a or b the configuration takes. Expected purchases are a
    /// difference of two terms that grow with b, multiplied back by b / (a - 1): past about
    /// 10^6 the difference loses its digits (with a = 0.5, b = 10^6 moved a generated customer's
    /// expected purchases by 8·10^-5 of themselves against b = 10^5, b = 2·10^6 by 5·10^-4; with
    /// the CDNOW fit's a, b = 10^9 made them negative). A b of 10^6 already describes customers
    /// who almost never drop out.
    pub const MAX_PARAMETER: f64 = 1e6;

    /// The smallest alpha the configuration takes: below it a new customer's horizon rounds to
    /// the 2F1's singular point, z = 1, in f64 (alpha = 1e-300 gave expected orders of none).
    pub const MIN_ALPHA: f64 = 1e-12;

    /// The largest r the configuration takes with `alpha`, for `horizon` the longest horizon
    /// asked of the model in time units ([`Self::longest_horizon`]). A new customer's expected
    /// purchases over H take (alpha / (alpha + H))^r beside a 2F1 that grows as fast: past
    /// e^-700 the power underflows while the 2F1 overflows, and no form of the model keeps the
    /// digits (r = 700 with the CDNOW fit's alpha gave expected orders of ±10^131; r = 10^5,
    /// none).
    pub fn largest_r(alpha: f64, horizon: f64) -> f64 {
        (700.0 / (horizon / alpha).ln_1p()).min(Self::MAX_PARAMETER)
    }

    /// The longest horizon the model is asked for, in time units of `time_unit_days`: the
    /// CLV's `clv_months`, or the 90 days of `expected_orders_90d`.
    pub fn longest_horizon(clv_months: u32, time_unit_days: f64) -> f64 {
        (f64::from(clv_months) * MONTH_DAYS).max(EXPECTED_ORDERS_DAYS as f64) / time_unit_days
    }

    /// The parameters published for the CDNOW sample, per week (DOMAIN.md).
    pub fn cdnow(model: Model) -> PurchaseModel {
        match model {
            Model::BgNbd => PurchaseModel {
                model,
                r: 0.243,
                alpha: 4.414,
                a: 0.793,
                b: 2.426,
            },
            Model::MbgNbd => PurchaseModel {
                model,
                r: 0.525,
                alpha: 6.183,
                a: 0.891,
                b: 1.614,
            },
        }
    }

    /// `b + x - 1` for BG/NBD, `b + x` for MBG/NBD: the Beta term of the odds of being dead.
    fn beta_term(&self, x: f64) -> f64 {
        match self.model {
            Model::BgNbd => self.b + x - 1.0,
            Model::MbgNbd => self.b + x,
        }
    }

    /// Whether the customer can already be dead: BG/NBD needs a repeat purchase first.
    fn can_be_dead(&self, x: f64) -> bool {
        self.model == Model::MbgNbd || x > 0.0
    }

    /// The odds of dead against alive, given the history; P(alive) = 1 / (1 + odds).
    pub fn dead_odds(&self, h: Recency) -> f64 {
        if !self.can_be_dead(h.x) {
            return 0.0;
        }
        let ratio = (self.alpha + h.t) / (self.alpha + h.t_x);
        (self.a / self.beta_term(h.x)) * ratio.powf(self.r + h.x)
    }

    /// P(alive | x, t_x, T).
    pub fn p_alive(&self, h: Recency) -> f64 {
        1.0 / (1.0 + self.dead_odds(h))
    }

    /// Expected purchases in the next `horizon` time units, given the history.
    /// BG/NBD: Fader, Hardie and Lee (2005), equation 10; MBG/NBD: Batislam et al. (2007).
    pub fn expected_purchases(&self, h: Recency, horizon: f64) -> f64 {
        let series = self.purchase_series(h.x);
        self.expected_purchases_by(h, horizon, 1.0 + self.dead_odds(h), |z| series.at(z))
    }

    /// The 2F1 of [`Self::expected_purchases`] for `x` repeat purchases, which several horizons
    /// share.
    pub(crate) fn purchase_series(&self, x: f64) -> Hypergeometric {
        let (r, a, b) = (self.r, self.a, self.b);
        match self.model {
            Model::BgNbd => Hypergeometric::new(r + x, b + x, a + b + x - 1.0),
            Model::MbgNbd => Hypergeometric::new(r + x, b + x + 1.0, a + b + x),
        }
    }

    /// Where the 2F1 of [`Self::expected_purchases`] is taken for `horizon`.
    fn horizon_z(&self, h: Recency, horizon: f64) -> f64 {
        horizon / (self.alpha + h.t + horizon)
    }

    /// With the 2F1 at the horizon's z from `series`, and `odds_plus_one`, 1 +
    /// [`Self::dead_odds`], computed once for all the horizons of a history (a `powf`; the
    /// compiler did not always hoist it out of the CLV's loop).
    fn expected_purchases_by(
        &self,
        h: Recency,
        horizon: f64,
        odds_plus_one: f64,
        series: impl FnOnce(f64) -> f64,
    ) -> f64 {
        // A customer dead for certain (the odds overflowed) buys nothing more; the terms below
        // would overflow too, and give no number.
        if horizon <= 0.0 || !odds_plus_one.is_finite() {
            return 0.0;
        }
        let z = self.horizon_z(h, horizon);
        let kept = (self.alpha + h.t) / (self.alpha + h.t + horizon);
        let decayed = self.decayed(h.x, kept, z, series);
        self.lead(h.x) * (1.0 - decayed) / odds_plus_one
    }

    /// The factor of the expected purchases that grows with the history's purchases `x`:
    /// (a + b + x - 1) / (a - 1) for BG/NBD, (a + b + x) / (a - 1) for MBG/NBD.
    pub(crate) fn lead(&self, x: f64) -> f64 {
        let (a, b) = (self.a, self.b);
        match self.model {
            Model::BgNbd => (a + b + x - 1.0) / (a - 1.0),
            Model::MbgNbd => (a + b + x) / (a - 1.0),
        }
    }

    /// `kept^(r+x) · 2F1(z)` with the 2F1 at z = 1 - `kept` from `series`: the share of
    /// [`Self::lead`] the purchases over a horizon leave out, where `kept` is (alpha + T) /
    /// (alpha + T + horizon). By [`Self::decayed_series`] where the product as written is no
    /// number.
    pub(crate) fn decayed(
        &self,
        x: f64,
        kept: f64,
        z: f64,
        series: impl FnOnce(f64) -> f64,
    ) -> f64 {
        let decay = kept.powf(self.r + x);
        let decayed = decay * series(z);
        if !decayed.is_finite() || decay < f64::MIN_POSITIVE {
            self.decayed_series(x, z)
        } else {
            decayed
        }
    }

    /// `decay · 2F1` of [`Self::expected_purchases_by`], (1 - z)^(r+x) 2F1(r+x, B; C; z), by
    /// Euler's transformation, where the two powers of 1 - z cancel but for (1 - z)^(a-1):
    /// 2F1(A, B; C; z) = (1 - z)^(C-A-B) 2F1(C - A, C - B; C; z) with C - B = a - 1. For where
    /// the product as written loses its digits or is no number: the power underflows while
    /// the 2F1 overflows, once (r + x) ln(1/(1 - z)) passes about 708 (a customer who bought
    /// daily for a year, over a ten-year CLV: its lifetime value came out 0).
    fn decayed_series(&self, x: f64, z: f64) -> f64 {
        let (r, a, b) = (self.r, self.a, self.b);
        let transformed = match self.model {
            Model::BgNbd => hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z),
            Model::MbgNbd => hyp2f1(a + b - r, a - 1.0, a + b + x, z),
        };
        (1.0 - z).powf(a - 1.0) * transformed
    }

    /// The scoring time T at which a silent customer's P(alive) falls to `p`; `None` when it never
    /// does (it is already below, or the customer cannot be dead yet). DOMAIN.md's closed form.
    pub fn crossing_time(&self, h: Recency, p: f64) -> Option<f64> {
        if !(0.0..1.0).contains(&p) || p == 0.0 || !self.can_be_dead(h.x) {
            return None;
        }
        let odds = (1.0 - p) * self.beta_term(h.x) / (p * self.a);
        let t = (self.alpha + h.t_x) * odds.powf(1.0 / (self.r + h.x)) - self.alpha;
        (t > h.t).then_some(t)
    }
}

/// The Gauss hypergeometric function 2F1(a, b; c; z) for 0 <= z < 1 (where the models use it).
///
/// The power series' terms grow like n^(a+b-c-1) z^n before they fall, and the models call it
/// with a + b - c growing with a customer's purchases: a loyal customer's CLV took hundreds of
/// terms per month. There Euler's transformation, 2F1(a, b; c; z) = (1 - z)^(c-a-b)
/// 2F1(c - a, c - b; c; z), sums a series with the same z whose terms fall from the start
/// (c - a and c - b stay small while c grows). With c - a and c - b above -1 its terms after
/// the first all have one sign; should they cancel most of the leading 1 (a sum below 1e-3,
/// which would cost digits), the plain series is summed instead.
///
/// Near z = 1 both series fall only like z^n: a new customer's twelve-month CLV summed about a
/// thousand terms. There (z > 0.7) the function is taken to 1 - z instead, where a few dozen
/// terms do, when [`Hypergeometric`]'s connection formula can.
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    Hypergeometric::new(a, b, c).at(z)
}

/// 2F1(a, b; c; ·) with its parameters fixed, for evaluating at several z (the CLV's monthly
/// horizons) with the Gamma factors of the connection formula computed once.
///
/// For 0.7 < z < 1 it uses the connection formula to 1 - z (Abramowitz and Stegun 15.3.6):
///
/// 2F1(a, b; c; z) = Γ(c)Γ(s) / (Γ(c-a)Γ(c-b)) · 2F1(a, b; 1-s; 1-z)
///                 + (1-z)^s Γ(c)Γ(-s) / (Γ(a)Γ(b)) · 2F1(c-a, c-b; 1+s; 1-z),   s = c - a - b,
///
/// except where it would lose digits or not hold, where the series at z are summed: `s` near a
/// whole number (the two terms' Gamma factors diverge with opposite signs) or below -2 (many
/// purchases, whose Euler series is short anyway), a Gamma in a denominator at a pole,
/// parameters so large that the series at 1 - z would be long again, or sums whose parts
/// cancel to more than four digits (within a series whose terms alternate in sign while a
/// parameter plus n is negative, or between the two products).
pub struct Hypergeometric {
    a: f64,
    b: f64,
    c: f64,
    /// The two terms' Gamma factors, computed at the first z that uses them; `None` inside
    /// when the formula does not apply to these parameters.
    connection: std::cell::OnceCell<Option<[f64; 2]>>,
}

impl Hypergeometric {
    /// Above this z the connection formula's two series at 1 - z are together shorter than
    /// the one at z (about 2 × 29 terms against 97 at 0.7, for a relative 1e-15).
    const NEAR_ONE: f64 = 0.7;

    pub fn new(a: f64, b: f64, c: f64) -> Hypergeometric {
        Hypergeometric {
            a,
            b,
            c,
            connection: std::cell::OnceCell::new(),
        }
    }

    /// 2F1(a, b; c; z) for 0 <= z < 1.
    pub fn at(&self, z: f64) -> f64 {
        if z > Self::NEAR_ONE {
            if let Some(value) = self.near_one(z) {
                return value;
            }
        }
        self.summed::<false>(z).0
    }

    /// 2F1 at z by a series at z: Euler's where the type's conditions allow, else the plain
    /// one; with `SLOPE` its derivative too (0 without, which `at` skips).
    fn summed<const SLOPE: bool>(&self, z: f64) -> (f64, f64) {
        let (a, b, c) = (self.a, self.b, self.c);
        if a + b > c && c - a > -1.0 && c - b > -1.0 && z > 0.0 {
            let (transformed, _, slope) = series::<false, SLOPE>(c - a, c - b, c, z);
            if transformed > 1e-3 {
                let s = c - a - b;
                let factor = (1.0 - z).powf(s);
                // F = (1 - z)^s G, so F' = (1 - z)^s (G' - s G / (1 - z)).
                let derivative = if SLOPE {
                    factor * (slope / z - s * transformed / (1.0 - z))
                } else {
                    0.0
                };
                return (factor * transformed, derivative);
            }
        }
        let (value, _, slope) = series::<false, SLOPE>(a, b, c, z);
        (value, if SLOPE { slope / z } else { 0.0 })
    }

    /// By the connection formula, or `None` where it does not serve (see the type).
    fn near_one(&self, z: f64) -> Option<f64> {
        let (a, b, c) = (self.a, self.b, self.c);
        let s = c - a - b;
        let [up, down] = (*self.connection.get_or_init(|| connection_factors(a, b, c)))?;
        let w = 1.0 - z;
        let (first, first_size, _) = series::<true, false>(a, b, 1.0 - s, w);
        let (second, second_size, _) = series::<true, false>(c - a, c - b, 1.0 + s, w);
        let second_factor = w.powf(s) * down;
        let value = up * first + second_factor * second;
        // Rounding errs by about the machine epsilon times the sizes of what was added up: the
        // terms of each series (which alternate in sign while a parameter plus n is negative)
        // and the two products (which cancel where s is near a whole number).
        let size = (up * first_size).abs() + (second_factor * second_size).abs();
        (value.is_finite() && size < 1e4 * value.abs()).then_some(value)
    }
}

/// 2F1(a, b; c; ·) at a rising sequence of z (the CLV's months), each value where it can be
/// taken from the one before by a Taylor step (`Hypergeometric::step`), else summed at z.
///
/// The months' z crowd towards 1, where the series at z are long (about a hundred terms at
/// 0.7, two series and a power above it), while the step from the month before is short: the
/// 2F1 is analytic between its singular points 0 and 1, and a step of a tenth of the way to the
/// nearer one takes about sixteen terms (a replay's CLVs took 19 a step on average, against
/// 1,640 instructions an evaluation at z). The walk's values agree with the series at z to
/// 1e-12 (the property test below); a replay's output records were the same byte for byte.
pub struct Walk<'a> {
    series: &'a Hypergeometric,
    /// The last z and the function's value and slope there, when the slope is known.
    last: Option<(f64, f64, f64)>,
}

impl<'a> Walk<'a> {
    pub fn new(series: &'a Hypergeometric) -> Walk<'a> {
        Walk { series, last: None }
    }

    /// 2F1 at `z`, given the z it will be asked for next, if any: a step from the last z when
    /// one was judged worth it, and the derivative at `z` too when a step to `next` is.
    pub fn at(&mut self, z: f64, next: Option<f64>) -> f64 {
        let onward = next.is_some_and(|next| worth_stepping(z, next));
        if let Some(from) = self.last.take() {
            if let Some((value, slope)) = self.series.step(from, z) {
                if onward {
                    self.last = Some((z, value, slope));
                }
                return value;
            }
        }
        if onward {
            if let Some((value, slope)) = self.series.with_slope(z) {
                self.last = Some((z, value, slope));
                return value;
            }
        }
        self.series.at(z)
    }
}

/// Whether a Taylor step from `z0` to `z` is likely faster than summing at `z`: where z is
/// above 0.5 (the series at z takes 50 terms and more, above 0.7 the connection formula two
/// series and a power) and the step is allowed ([`Hypergeometric::STEP`]). A step's term costs
/// about three of the series' in time (its recurrence waits on the two terms before it), so
/// below 0.5 steps did not pay: `cargo bench --bench pipeline -- models/clv` (README,
/// *Performance*) for a customer with z from 0.07 to 0.48 over the twelve months.
fn worth_stepping(z0: f64, z: f64) -> bool {
    z > 0.5 && (z - z0) / z0.min(1.0 - z0) <= Hypergeometric::STEP
}

impl Hypergeometric {
    /// The longest step, as a share of the distance from where it starts to the nearer of the
    /// singular points 0 and 1: the step's terms fall at least this fast.
    const STEP: f64 = 0.3;
    /// The natural logarithm of how much a step may let rounding errors grow, tenfold (see
    /// [`Self::step`]).
    const LN_GROWTH: f64 = std::f64::consts::LN_10;

    /// 2F1 and its derivative at z, by the series at z that [`Self::at`] sums (the
    /// derivative's terms alongside); `None` above [`Self::NEAR_ONE`], where `at` takes the
    /// connection formula instead, or at z = 0.
    fn with_slope(&self, z: f64) -> Option<(f64, f64)> {
        (z > 0.0 && z <= Self::NEAR_ONE).then(|| self.summed::<true>(z))
    }

    /// 2F1 and its derivative at `z`, from their values at `z0` (`from`: z0, value, slope), by
    /// the Taylor series at z0 in h = z - z0. 2F1 solves z(1-z)F'' + (c - (a+b+1)z)F' - abF = 0,
    /// which gives each coefficient from the two before it: with e_j the j-th term,
    ///
    /// e_{j+2} = h ((j+a)(j+b) h e_j - (j+1)((1-2z0) j + c - (a+b+1) z0) e_{j+1})
    ///           / (z0 (1-z0) (j+2)(j+1)).
    ///
    /// `None` when the step is longer than [`Self::STEP`] of the way to 0 or to 1 (the radius of
    /// convergence), or the terms do not settle within 400, or the sums are not finite.
    fn step(&self, from: (f64, f64, f64), z: f64) -> Option<(f64, f64)> {
        let (z0, value0, slope0) = from;
        let h = z - z0;
        if !(h > 0.0 && h <= Self::STEP * z0.min(1.0 - z0)) {
            return None;
        }
        let (a, b, c) = (self.a, self.b, self.c);
        // A rounding error in a term grows along the solution singular at 0 (like z^(1-c)),
        // whose coefficients at z0 rise like those of (1 - h/z0)^(1-c) for c > 1: their sum's
        // growth is kept below tenfold. (The solution singular at 1, like (1-z)^(c-a-b), is
        // either 2F1's own dominant part or falls.)
        if (c - 1.0).max(0.0) * -(-h / z0).ln_1p() > Self::LN_GROWTH {
            return None;
        }
        let scale = h / (z0 * (1.0 - z0));
        let (p1, q0) = (1.0 - 2.0 * z0, c - (a + b + 1.0) * z0);
        let (mut before, mut last) = (value0, slope0 * h);
        let mut value = before + last;
        // The sum of j e_j: h times the derivative at z.
        let mut slope = last;
        let mut small = false;
        for (j, over) in STEP_DIVISORS.iter().enumerate() {
            let j = j as f64;
            // The two factors do not depend on the terms: only two products and a difference
            // wait for the term before.
            let over = scale * over;
            let (of_before, of_last) = (
                (j + a) * (j + b) * h * over,
                (j + 1.0) * (p1 * j + q0) * over,
            );
            let next = of_before * before - of_last * last;
            value += next;
            slope += (j + 2.0) * next;
            // Both sums are good to the rounding of the value: the slope's error, times the
            // next step's h (about this one's), is the next value's. Two small terms in a row,
            // as one alone can be small where the two parts of the recurrence cancel.
            let now_small = (j + 2.0) * next.abs() <= 1e-16 * value.abs();
            if now_small && small {
                let slope = slope / h;
                return (value.is_finite() && slope.is_finite()).then_some((value, slope));
            }
            small = now_small;
            (before, last) = (last, next);
        }
        None
    }
}

/// 1 / ((j + 2)(j + 1)) for the terms of a Taylor step (at most 400 of them).
static STEP_DIVISORS: [f64; 400] = {
    let mut divisors = [0.0; 400];
    let mut j = 0;
    while j < 400 {
        divisors[j] = 1.0 / (((j + 2) * (j + 1)) as f64);
        j += 1;
    }
    divisors
};

/// Γ(c)Γ(s) / (Γ(c-a)Γ(c-b)) and Γ(c)Γ(-s) / (Γ(a)Γ(b)) with s = c - a - b, or `None` where
/// the connection formula does not serve these parameters.
fn connection_factors(a: f64, b: f64, c: f64) -> Option<[f64; 2]> {
    let s = c - a - b;
    let near_whole = |v: f64| (v - v.round()).abs() < 1e-4;
    let pole = |v: f64| v <= 0.5 && near_whole(v);
    if near_whole(s) || [a, b, c, c - a, c - b].into_iter().any(pole) {
        return None;
    }
    if s < -2.0 || a.abs().max(b.abs()).max(c.abs()) > 50.0 {
        return None;
    }
    let ratio = |up: [f64; 2], down: [f64; 2]| {
        let (mut ln, mut sign) = (0.0, 1.0);
        for (v, exponent) in up
            .into_iter()
            .map(|v| (v, 1.0))
            .chain(down.map(|v| (v, -1.0)))
        {
            let (l, s) = ln_gamma(v);
            ln += exponent * l;
            sign *= s;
        }
        sign * ln.exp()
    };
    Some([ratio([c, s], [c - a, c - b]), ratio([c, -s], [a, b])])
}

/// ln |Γ(x)| and the sign of Γ(x), for x not a pole: Lanczos' approximation (g = 7, nine
/// coefficients; relative error near 1e-15), and Euler's reflection below 1/2.
pub fn ln_gamma(x: f64) -> (f64, f64) {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Γ(x) Γ(1 - x) = π / sin(πx), and Γ(1 - x) > 0 here.
        let sin = sin_pi(x);
        let (ln, _) = ln_gamma(1.0 - x);
        return (
            std::f64::consts::PI.ln() - sin.abs().ln() - ln,
            sin.signum(),
        );
    }
    let x = x - 1.0;
    let t = x + G + 0.5;
    let sum = COEFFICIENTS[1..]
        .iter()
        .enumerate()
        .fold(COEFFICIENTS[0], |sum, (i, p)| {
            sum + p / (x + i as f64 + 1.0)
        });
    let ln = 0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln();
    (ln, 1.0)
}

/// sin(πx), with x reduced to [-1/2, 1/2] first: that subtraction is exact, where rounding πx
/// itself would cost sin(πx) near a whole x most of its digits (near x = -7, πx rounded by
/// 2e-15 against a sine of 4e-3, so ln Γ and the connection formula lost 1e-9).
fn sin_pi(x: f64) -> f64 {
    let whole = x.round();
    let sin = (std::f64::consts::PI * (x - whole)).sin();
    if whole.rem_euclid(2.0) == 0.0 {
        sin
    } else {
        -sin
    }
}

/// 2F1 by its power series (see `series`), 100,000 terms at most.
pub fn hyp2f1_series(a: f64, b: f64, c: f64, z: f64) -> f64 {
    series::<false, false>(a, b, c, z).0
}

/// The power series of 2F1; with `SIZE` the sum of its terms' absolute values, with `SLOPE`
/// the sum of n times its n-th term, z times the derivative's series (each 0 without, which the
/// hot callers skip). It sums until a term is below 1e-15 of the total (with `SLOPE`, n times
/// it below 1e-15 of that sum too) and smaller than the one before, but not before n has
/// passed -a, -b and -c: while c + n is negative, the terms can fall and then rise again as
/// c + n nears zero and after.
fn series<const SIZE: bool, const SLOPE: bool>(a: f64, b: f64, c: f64, z: f64) -> (f64, f64, f64) {
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut size = if SIZE { 1.0 } else { 0.0 };
    let mut slope = 0.0;
    let mut step = |n: f64| {
        let ratio = (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        term *= ratio;
        sum += term;
        if SIZE {
            size += term.abs();
        }
        if SLOPE {
            slope += (n + 1.0) * term;
        }
        term.abs() < 1e-15 * sum.abs()
            && ratio.abs() < 1.0
            && (!SLOPE || (n + 1.0) * term.abs() <= 1e-15 * slope.abs())
    };
    // Up to n = max(-a, -b, -c) every term is summed, however small (none with the models'
    // own series, whose parameters are positive); then until one is small enough and smaller
    // than the one before: past c + n = 0 the terms can rise again from far below 1e-15 of the
    // sum (2F1(3.6, 1.7; -41.9; 0.3) has a hump near n = 60 worth 1e-8 of its value).
    let settled_after = (-a).max(-b).max(-c).min(100_000.0);
    let mut n = 0.0;
    while n <= settled_after {
        step(n);
        n += 1.0;
    }
    while n < 100_000.0 {
        if step(n) {
            break;
        }
        n += 1.0;
    }
    (sum, size, slope)
}

/// Gamma-Gamma spend per purchase (Fader, Hardie and Lee 2005, "RFM and CLV: Using Iso-Value
/// Curves for Customer Base Analysis", JMR 42(4); Hardie's note 025). `gamma` is in minor units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpendModel {
    pub p: f64,
    pub q: f64,
    pub gamma: f64,
}

impl SpendModel {
    /// Expected value of one purchase given `x` repeat purchases of mean value `m_x`: a weighted
    /// mean of the population mean and the customer's own mean.
    pub fn expected_spend(&self, x: f64, m_x: f64) -> f64 {
        let (p, q, gamma) = (self.p, self.q, self.gamma);
        let population = gamma * p / (q - 1.0);
        if x <= 0.0 {
            return population;
        }
        let weight = (q - 1.0) / (p * x + q - 1.0);
        weight * population + (1.0 - weight) * m_x
    }
}

/// The discounted value of a customer's next `months` months (DOMAIN.md, CLV): each month's
/// expected purchases times the margin per purchase, discounted by `(1 + monthly_discount)^k`.
pub fn clv(
    model: &PurchaseModel,
    h: Recency,
    month: f64,
    months: u32,
    margin_per_purchase: f64,
    monthly_discount: f64,
) -> f64 {
    Clv {
        model,
        h,
        month,
        months,
        margin_per_purchase,
        monthly_discount,
    }
    .walked()
}

/// What a CLV adds up ([`clv`]'s arguments), to sum either way.
pub struct Clv<'a> {
    pub model: &'a PurchaseModel,
    pub h: Recency,
    pub month: f64,
    pub months: u32,
    pub margin_per_purchase: f64,
    pub monthly_discount: f64,
}

impl Clv<'_> {
    /// The months' 2F1 by a [`Walk`]: what [`clv`] gives.
    pub fn walked(&self) -> f64 {
        let series = self.model.purchase_series(self.h.x);
        let mut walk = Walk::new(&series);
        let z_at = |k: u32| self.model.horizon_z(self.h, self.month * f64::from(k));
        self.margin_per_purchase
            * self.per_purchase(|z, k| walk.at(z, (k < self.months).then(|| z_at(k + 1))))
    }

    /// Every month's 2F1 summed at its own z ([`Hypergeometric::at`]), as before the walk: the
    /// reference `cargo bench --bench pipeline -- models` times [`Self::walked`] against.
    pub fn summed_at_each_month(&self) -> f64 {
        let series = self.model.purchase_series(self.h.x);
        self.margin_per_purchase * self.per_purchase(|z, _| series.at(z))
    }

    /// The discounted purchases over the months, with month k's 2F1 at z from
    /// `series_at(z, k)`: the CLV of a margin of 1 per purchase.
    fn per_purchase(&self, mut series_at: impl FnMut(f64, u32) -> f64) -> f64 {
        let odds_plus_one = 1.0 + self.model.dead_odds(self.h);
        let mut value = 0.0;
        let mut before = 0.0;
        for k in 1..=self.months {
            let horizon = self.month * f64::from(k);
            let by_k = self
                .model
                .expected_purchases_by(self.h, horizon, odds_plus_one, |z| series_at(z, k));
            value += (by_k - before) / (1.0 + self.monthly_discount).powi(k as i32);
            before = by_k;
        }
        value
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    /// Fitted parameters, histories and months far from the published ones (a month of a
    /// thousandth of the time unit up to ten units): what the property tests of the CLV's walk
    /// and of its tables (`tables`) range over.
    pub(crate) fn models_histories_and_months(
    ) -> impl Strategy<Value = (PurchaseModel, Recency, f64)> {
        (
            (0.01f64..10.0, 0.1f64..100.0, 0.05f64..20.0, 0.05f64..20.0),
            proptest::bool::ANY,
            (0u32..400, 0.0f64..200.0, 0.0f64..200.0),
            proptest::prop_oneof![0.001f64..0.1, 0.1f64..10.0],
        )
            .prop_map(|((r, alpha, a, b), mbg, (x, t_x, extra), month)| {
                let model = PurchaseModel {
                    model: if mbg { Model::MbgNbd } else { Model::BgNbd },
                    r,
                    alpha,
                    a,
                    b,
                };
                let h = Recency {
                    x: f64::from(x),
                    t_x,
                    t: t_x + extra,
                };
                (model, h, month)
            })
    }

    fn close(got: f64, want: f64, tolerance: f64) -> bool {
        (got - want).abs() <= tolerance
    }

    /// Asserts that the connection formula applies at these parameters and agrees with the
    /// series within `relative`; returns the series' value.
    fn formula_agrees_with_the_series(p: f64, q: f64, s: f64, z: f64, relative: f64) -> f64 {
        let want = hyp2f1_series(p, q, s, z);
        let got = Hypergeometric::new(p, q, s).near_one(z).expect("applies");
        assert!(
            close(got, want, relative * want),
            "2F1({p}, {q}; {s}; {z}): {got} vs the series' {want}"
        );
        want
    }

    #[test]
    fn a_customer_dead_for_certain_expects_no_purchase() {
        // Purchase rates of 10^6 a week: 14 silent weeks make the odds of dead overflow.
        let model = PurchaseModel {
            model: Model::MbgNbd,
            r: 1e6,
            alpha: 1.0,
            a: 0.891,
            b: 1.614,
        };
        let h = Recency {
            x: 1.0,
            t_x: 0.1,
            t: 14.0,
        };
        assert_eq!(model.dead_odds(h), f64::INFINITY);
        assert_eq!(model.p_alive(h), 0.0);
        assert_eq!(model.expected_purchases(h, 13.0), 0.0);
    }

    #[test]
    fn hypergeometric_matches_closed_forms() {
        for z in [0.0f64, 0.1, 0.5, 0.9, 0.99] {
            // 2F1(1, 1; 2; z) = -ln(1 - z) / z.
            let want = if z == 0.0 { 1.0 } else { -(1.0 - z).ln() / z };
            let got = hyp2f1(1.0, 1.0, 2.0, z);
            assert!(close(got, want, 1e-10 * want), "z {z}: {got} vs {want}");
            // 2F1(a, b; b; z) = (1 - z)^-a.
            let want = (1.0 - z).powf(-0.7);
            let got = hyp2f1(0.7, 2.5, 2.5, z);
            assert!(close(got, want, 1e-10 * want), "z {z}: {got} vs {want}");
        }
    }

    #[test]
    fn ln_gamma_matches_known_values() {
        let pi = std::f64::consts::PI;
        for (x, want) in [
            (1.0, 1.0),
            (5.0, 24.0),
            (0.5, pi.sqrt()),
            (1.5, pi.sqrt() / 2.0),
            (10.3, 716_430.689_062_376_5),
            (-0.5, -2.0 * pi.sqrt()),
            (-1.5, 4.0 * pi.sqrt() / 3.0),
            // Python's math.gamma for the last two.
            (-0.109, -9.871_543_592_886_463),
        ] {
            let (ln, sign) = ln_gamma(x);
            let got = sign * ln.exp();
            assert!(
                close(got, want, 1e-12 * want.abs()),
                "Γ({x}): {got} vs {want}"
            );
        }
    }

    #[test]
    fn hypergeometric_near_one_matches_closed_forms() {
        // Parameters for which the connection formula to 1 - z applies (no whole c - a - b, no
        // pole), against closed forms, with z up to 0.999.
        for z in [0.55f64, 0.7, 0.9, 0.99, 0.999] {
            // 2F1(a, 1 - a; 3/2; sin²θ) = sin((2a - 1)θ) / ((2a - 1) sin θ).
            let theta = z.sqrt().asin();
            let a: f64 = 0.8;
            let want = ((2.0 * a - 1.0) * theta).sin() / ((2.0 * a - 1.0) * theta.sin());
            let got = Hypergeometric::new(a, 1.0 - a, 1.5)
                .near_one(z)
                .expect("applies");
            assert!(
                close(got, want, 1e-11 * want.abs()),
                "z {z}: {got} vs {want}"
            );
            // 2F1(a, a + 1/2; 1/2; u²) = ((1 + u)^-2a + (1 - u)^-2a) / 2, here c - b < 0.
            let (a, u) = (0.3f64, z.sqrt());
            let want = ((1.0 + u).powf(-2.0 * a) + (1.0 - u).powf(-2.0 * a)) / 2.0;
            let got = Hypergeometric::new(a, a + 0.5, 0.5)
                .near_one(z)
                .expect("applies");
            assert!(
                close(got, want, 1e-11 * want.abs()),
                "z {z}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn the_connection_formula_agrees_with_the_series_where_the_models_call_it() {
        // As BG/NBD and MBG/NBD pass (a, b, c) for x repeat purchases, over the published and
        // other fitted parameters, and z from 1/2 to a new customer's twelve-month horizon.
        let mut applied = Vec::new();
        for (r, a, b) in [
            (0.243, 0.793, 2.426),
            (0.525, 0.891, 1.614),
            (1.5, 3.0, 8.0),
            (0.05, 1.2, 0.3),
            // Large a: c - a - b well above 1 for few purchases.
            (0.5, 8.0, 3.0),
            (2.0, 12.0, 1.0),
            (0.3, 25.0, 40.0),
        ] {
            for x in [0.0, 1.0, 2.0, 3.0, 5.0, 12.0, 30.0] {
                for (p, q, s) in [
                    (r + x, b + x, a + b + x - 1.0),
                    (r + x, b + x + 1.0, a + b + x),
                ] {
                    for z in [0.51, 0.6, 0.75, 0.9, 0.97, 0.995] {
                        let want = hyp2f1_series(p, q, s, z);
                        let got = hyp2f1(p, q, s, z);
                        assert!(
                            close(got, want, 1e-10 * want),
                            "2F1({p}, {q}; {s}; {z}): {got} vs the series' {want}"
                        );
                        if Hypergeometric::new(p, q, s).near_one(z).is_some() {
                            applied.push((r, x));
                        }
                    }
                }
            }
        }
        // It serves the slow case it is for: customers with no or one repeat purchase (most of
        // them, with the published parameters) at every z.
        for r in [0.243, 0.525] {
            for x in [0.0, 1.0] {
                let times = applied.iter().filter(|&&a| a == (r, x)).count();
                assert_eq!(times, 12, "r {r}, x {x}: applied {times} times of 12");
            }
        }
    }

    #[test]
    fn a_series_whose_terms_fall_and_rise_again_is_summed_past_the_rise() {
        // From the property below: with c - a - b = 35.5, the connection formula's first series
        // has c = -34.5; its terms fell below 1e-15 of the sum by n = 15 and rose again towards
        // n = 34, and stopping at the first small term left 2.6e-9 of the value out.
        let (p, q, s, z) = (
            6.006_624_943_080_018,
            3.05,
            44.519_775_652_414_65,
            0.788_646_501_256_534_1,
        );
        formula_agrees_with_the_series(p, q, s, z, 1e-12);
    }

    #[test]
    fn a_series_whose_terms_rise_again_past_c_plus_n_equal_zero_is_summed_past_the_hump() {
        // From the property below: the connection formula's first series was
        // 2F1(3.58, 1.66; -41.9; 0.296), whose terms were below 1e-15 of the sum at n = 42,
        // where summing stopped, and rose again to a hump worth 1e-8 of the value.
        let (p, q, s, z) = (
            3.577_850_722_144_743,
            1.658_572_137_049_404_2,
            48.135_410_015_906_28,
            0.703_904_789_229_896_4,
        );
        let want = formula_agrees_with_the_series(p, q, s, z, 1e-11);
        // mpmath.hyp2f1 at 40 digits: 1.0951509672752007.
        assert!(
            close(want, 1.095_150_967_275_200_7, 1e-14),
            "the series: {want}"
        );
    }

    #[test]
    fn the_connection_formula_holds_its_digits_where_c_minus_a_minus_b_nears_a_whole_number() {
        // From the property below, in CI: s = c - a - b = 6.9986, where sin(πx) in the
        // reflection of Γ(-s) is small and rounding πx first cost 1.5e-9 of the value.
        let (p, q, s, z) = (
            11.404_282_693_893_418,
            11.730_499_567_310_91,
            30.133_375_809_626_987,
            0.963_735_562_926_879_9,
        );
        formula_agrees_with_the_series(p, q, s, z, 1e-11);
        for x in [-6.9986f64, -0.109, -2.5, 3.25] {
            assert!(
                close(sin_pi(x), (std::f64::consts::PI * x).sin(), 1e-12),
                "sin(π{x})"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Over fitted parameters far from the published ones: wherever the connection formula
        /// answers, it agrees with the series (whose terms here are all positive, so it sums
        /// without cancelling).
        #[test]
        fn the_connection_formula_agrees_with_the_series_wherever_it_answers(
            r in 0.01f64..10.0,
            a in 1.01f64..50.0,
            b in 0.05f64..50.0,
            x in 0u32..60,
            mbg in proptest::bool::ANY,
            z in 0.7f64..0.995,
        ) {
            let x = f64::from(x);
            let (p, q, s) = if mbg {
                (r + x, b + x + 1.0, a + b + x)
            } else {
                (r + x, b + x, a + b + x - 1.0)
            };
            if let Some(got) = Hypergeometric::new(p, q, s).near_one(z) {
                let want = hyp2f1_series(p, q, s, z);
                proptest::prop_assert!(
                    close(got, want, 1e-9 * want),
                    "2F1({}, {}; {}; {}): {} vs the series' {}", p, q, s, z, got, want
                );
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Whatever the fitted parameters and history, expected purchases are finite, not
        /// negative, and do not fall as the horizon grows (each month's CLV term is a number
        /// of purchases, never below zero).
        #[test]
        fn expected_purchases_are_finite_and_grow_with_the_horizon(
            r in 0.01f64..10.0,
            alpha in 0.1f64..100.0,
            a in 0.05f64..20.0,
            b in 0.05f64..20.0,
            mbg in proptest::bool::ANY,
            x in 0u32..100,
            t_x in 0.0f64..200.0,
            extra in 0.0f64..200.0,
        ) {
            let model = PurchaseModel {
                model: if mbg { Model::MbgNbd } else { Model::BgNbd },
                r,
                alpha,
                a,
                b,
            };
            // The lead term divides by a - 1.
            proptest::prop_assume!((a - 1.0).abs() > 1e-3);
            let h = Recency { x: f64::from(x), t_x, t: t_x + extra };
            let mut before = 0.0f64;
            for month in 1..=12 {
                let e = model.expected_purchases(h, 4.35 * f64::from(month));
                proptest::prop_assert!(e.is_finite() && e >= -1e-9, "month {}: {}", month, e);
                proptest::prop_assert!(e >= before - 1e-9 * before.abs().max(1.0), "month {}: {} after {}", month, e, before);
                before = e;
            }
        }
    }

    #[test]
    fn euler_s_transformation_agrees_with_the_series_where_the_models_call_it() {
        // (a, b, c) as BG/NBD and MBG/NBD pass them for x repeat purchases, over a range of
        // fitted parameters, and z over the CLV's horizons.
        let mut checked = 0;
        for (r, a, b) in [(0.24, 0.79, 2.43), (1.5, 3.0, 8.0), (0.05, 1.2, 0.3)] {
            for x in [0.0, 1.0, 2.0, 5.0, 12.0, 40.0, 150.0] {
                for (p, q, s) in [
                    (r + x, b + x, a + b + x - 1.0),
                    (r + x, b + x + 1.0, a + b + x),
                ] {
                    for z in [0.01, 0.3, 0.6, 0.9, 0.97] {
                        let (want, got) = (hyp2f1_series(p, q, s, z), hyp2f1(p, q, s, z));
                        assert!(
                            close(got, want, 1e-11 * want),
                            "2F1({p}, {q}; {s}; {z}): {got} vs the series' {want}"
                        );
                        checked += usize::from(p + q > s);
                    }
                }
            }
        }
        assert!(checked > 100, "the transformation applied {checked} times");
    }

    #[test]
    fn bg_nbd_reproduces_the_published_cdnow_check_value() {
        let model = PurchaseModel::cdnow(Model::BgNbd);
        let h = Recency {
            x: 2.0,
            t_x: 30.43,
            t: 38.86,
        };
        let p = model.p_alive(h);
        assert!(close(p, 0.7266, 5e-5), "P(alive) {p}");
        let e = model.expected_purchases(h, 39.0);
        assert!(close(e, 1.2260, 5e-5), "expected purchases {e}");
    }

    #[test]
    fn one_time_buyers_are_alive_under_bg_nbd_but_not_under_mbg_nbd() {
        let h = Recency {
            x: 0.0,
            t_x: 0.0,
            t: 30.0,
        };
        assert_eq!(PurchaseModel::cdnow(Model::BgNbd).p_alive(h), 1.0);
        let p = PurchaseModel::cdnow(Model::MbgNbd).p_alive(h);
        assert!(p < 0.5, "a one-time buyer silent for 30 weeks: {p}");
    }

    /// P(alive) and expected purchases integrated numerically over the individual-level model:
    /// purchase rate lambda ~ Gamma(r, alpha), drop-out probability p ~ Beta(a, b). A derivation
    /// from first principles that shares no code with the closed forms above.
    fn by_quadrature(model: &PurchaseModel, h: Recency, horizon: f64) -> (f64, f64) {
        let (n_l, n_p) = (1_500, 1_500);
        // Substitutions make the integrable singularities at 0 smooth: lambda = v^(1/r) turns
        // lambda^(r-1) d lambda into dv / r, and p = u^(1/a) turns p^(a-1) dp into du / a.
        let v_max = (60.0 / model.alpha).powf(model.r);
        let (mut alive, mut total, mut purchases) = (0.0, 0.0, 0.0);
        for i in 0..n_l {
            let v = (f64::from(i) + 0.5) / f64::from(n_l) * v_max;
            let lambda = v.powf(1.0 / model.r);
            let prior_l = (-model.alpha * lambda).exp();
            for j in 0..n_p {
                let u = (f64::from(j) + 0.5) / f64::from(n_p);
                let p = u.powf(1.0 / model.a);
                let prior = prior_l * (1.0 - p).powf(model.b - 1.0);
                let poisson = lambda.powf(h.x);
                // Alive through T, having survived each purchase (BG/NBD: the x repeats; MBG/NBD:
                // the first purchase too), or dead right after the last purchase.
                let survived = match model.model {
                    Model::BgNbd => (1.0 - p).powf(h.x),
                    Model::MbgNbd => (1.0 - p).powf(h.x + 1.0),
                };
                let l_alive = survived * poisson * (-lambda * h.t).exp();
                let l_dead = if model.can_be_dead(h.x) {
                    let kept = match model.model {
                        Model::BgNbd => (1.0 - p).powf(h.x - 1.0),
                        Model::MbgNbd => (1.0 - p).powf(h.x),
                    };
                    p * kept * poisson * (-lambda * h.t_x).exp()
                } else {
                    0.0
                };
                alive += prior * l_alive;
                total += prior * (l_alive + l_dead);
                // An alive customer buys (1 - e^(-lambda p t)) / p times in the next t.
                purchases += prior * l_alive * (1.0 - (-lambda * p * horizon).exp()) / p;
            }
        }
        (alive / total, purchases / total)
    }

    #[test]
    fn closed_forms_agree_with_numerical_integration() {
        let histories = [
            (2.0, 30.43, 38.86),
            (0.0, 0.0, 20.0),
            (5.0, 12.0, 35.0),
            (1.0, 3.0, 4.0),
        ];
        for model in [Model::BgNbd, Model::MbgNbd] {
            let model = PurchaseModel::cdnow(model);
            for (x, t_x, t) in histories {
                let h = Recency { x, t_x, t };
                let (p_num, e_num) = by_quadrature(&model, h, 39.0);
                let p = model.p_alive(h);
                let e = model.expected_purchases(h, 39.0);
                assert!(
                    close(p, p_num, 2e-3),
                    "{model:?} {h:?}: P(alive) {p} vs {p_num}"
                );
                assert!(
                    close(e, e_num, 5e-3 * e_num.max(1.0)),
                    "{model:?} {h:?}: E {e} vs {e_num}"
                );
            }
        }
    }

    #[test]
    fn crossing_time_is_where_p_alive_reaches_the_threshold() {
        for model in [Model::BgNbd, Model::MbgNbd] {
            let model = PurchaseModel::cdnow(model);
            let h = Recency {
                x: 26.0,
                t_x: 30.9,
                t: 30.9,
            };
            let t = model
                .crossing_time(h, 0.5)
                .expect("a heavy buyer crosses 0.5");
            let at = model.p_alive(Recency { t, ..h });
            assert!(close(at, 0.5, 1e-9), "{model:?}: P(alive) at T* is {at}");
            // DOMAIN.md: about five silent weeks for this customer.
            assert!((3.0..8.0).contains(&(t - 30.9)), "{model:?}: {t}");
            // Already below: no crossing ahead.
            assert_eq!(model.crossing_time(Recency { t: t + 1.0, ..h }, 0.5), None);
        }
        let bg = PurchaseModel::cdnow(Model::BgNbd);
        let one_timer = Recency {
            x: 0.0,
            t_x: 0.0,
            t: 1.0,
        };
        assert_eq!(bg.crossing_time(one_timer, 0.5), None);
    }

    #[test]
    fn gamma_gamma_matches_the_posterior_mean() {
        // Published CDNOW spend parameters (dollars): p 6.25, q 3.74, gamma 15.44.
        let spend = SpendModel {
            p: 6.25,
            q: 3.74,
            gamma: 15.44,
        };
        assert!(close(spend.expected_spend(0.0, 0.0), 35.22, 0.01));
        // Independently: the transaction-value scale nu has posterior Gamma(p x + q, gamma +
        // x m_x), and E[Z] = p E[1/nu] = p (gamma + x m_x) / (p x + q - 1).
        for (x, m_x) in [(1.0, 10.0), (4.0, 80.0), (20.0, 30.0)] {
            let want = spend.p * (spend.gamma + x * m_x) / (spend.p * x + spend.q - 1.0);
            assert!(close(spend.expected_spend(x, m_x), want, 1e-9));
        }
    }

    /// A step either refuses or is as good as the series at its end, over steps up to the
    /// longest allowed, from near 0, where the solution singular there (like z^(1-c)) makes
    /// each term's rounding grow when c is large (many purchases).
    #[test]
    fn a_step_refuses_where_rounding_would_grow() {
        let mut refused = 0;
        for x in [0.0, 5.0, 50.0, 186.0, 300.0] {
            // BG/NBD's series for x repeat purchases, with r = 0.01 and a = b = 0.05.
            let series = Hypergeometric::new(0.01 + x, 0.05 + x, 0.1 + x - 1.0);
            let (a, b, c) = (series.a, series.b, series.c);
            for z0 in [1e-4, 1e-3, 0.01, 0.1] {
                let (value, slope) = series.with_slope(z0).expect("z0 is below 0.7");
                for share in [0.05, 0.1, 0.2, 0.3] {
                    let z = z0 * (1.0 + share);
                    let want = hyp2f1_series(a, b, c, z);
                    match series.step((z0, value, slope), z) {
                        None => refused += 1,
                        Some((got, _)) => assert!(
                            close(got, want, 1e-12 * want),
                            "x {x}, {z0} to {z}: {got} stepped, {want} summed"
                        ),
                    }
                }
            }
        }
        assert!(refused > 0, "some of these steps are too long to take");
    }

    /// 2F1 at z by the plain power series where its terms are all positive (positive
    /// parameters) and it is not long (z at most 0.95), accurate to about its length times the
    /// rounding; else by [`Hypergeometric::at`], whose connection formula near 1 is trusted to
    /// 1e-9 (the test above). The value and the relative error it is good for.
    fn reference(series: &Hypergeometric, z: f64) -> (f64, f64) {
        let (a, b, c) = (series.a, series.b, series.c);
        if a > 0.0 && b > 0.0 && c > 0.0 && z <= 0.95 {
            (hyp2f1_series(a, b, c, z), 1e-12)
        } else {
            (series.at(z), 1e-9)
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 2048,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// The walk's values are the reference's at each month, and so is the CLV, over fitted
        /// parameters, histories and months far from the published ones.
        #[test]
        fn the_walk_agrees_with_the_series_at_every_month(
            (model, h, month) in models_histories_and_months(),
        ) {
            let series = model.purchase_series(h.x);
            let mut walk = Walk::new(&series);
            let (mut want, mut before, mut worst) = (0.0, 0.0, 0.0f64);
            let z_at = |k: u32| model.horizon_z(h, month * f64::from(k));
            for k in 1..=12 {
                let horizon = month * f64::from(k);
                let z = z_at(k);
                let got = walk.at(z, (k < 12).then(|| z_at(k + 1)));
                let (value, relative) = reference(&series, z);
                if !value.is_finite() {
                    // Hundreds of purchases in a short history: 2F1 is past f64 by any way of
                    // summing it (and the CLV is not finite, which the record gives as 0).
                    proptest::prop_assert!(!got.is_finite(), "month {}: {} walked", k, got);
                    return Ok(());
                }
                // Where the walk neither stepped nor summed the series at z, it answered what
                // `at` does, by the connection formula, good to 1e-9 (the test above).
                let relative = if got == series.at(z) { relative.max(1e-9) } else { relative };
                proptest::prop_assert!(
                    close(got, value, relative * value.abs()),
                    "month {}: z {}: {} walked, {} the reference", k, z, got, value
                );
                let by_k =
                    model.expected_purchases_by(h, horizon, 1.0 + model.dead_odds(h), |_| value);
                want += (by_k - before) / 1.01f64.powi(k as i32);
                before = by_k;
                worst = worst.max(relative);
            }
            // Each month's purchases are lead (1 - decay F) / (1 + odds): where decay F is near
            // 1, that difference loses digits, so the CLVs are compared to the size of what is
            // subtracted, lead / (1 + odds), and not only to their own.
            let size = (model.lead(h.x) * model.p_alive(h)).abs();
            let got = clv(&model, h, month, 12, 1.0, 0.01);
            proptest::prop_assert!(
                close(got, want, worst * (want.abs() + size)),
                "CLV {} walked, {} from the reference (size {})", got, want, size
            );
        }
    }

    #[test]
    fn expected_purchases_stay_a_number_where_the_decay_underflows() {
        for model in [Model::MbgNbd, Model::BgNbd] {
            let m = PurchaseModel::cdnow(model);
            // Where the product as written is a number, the transformed one is the same.
            let h = Recency {
                x: 40.0,
                t_x: 51.0,
                t: 52.0,
            };
            let z = m.horizon_z(h, 13.0);
            let decay = ((m.alpha + h.t) / (m.alpha + h.t + 13.0)).powf(m.r + h.x);
            let direct = decay * m.purchase_series(h.x).at(z);
            assert!(
                close(m.decayed_series(h.x, z), direct, 1e-12 * direct),
                "{model:?}"
            );
            // A purchase a day for a year, over ten years: (r + x) ln(1/(1 - z)) is about
            // 840, the power underflows and the 2F1 overflows. Before, no number (and a
            // lifetime value of 0).
            let daily = Recency {
                x: 364.0,
                t_x: 52.0,
                t: 52.14,
            };
            let decade = m.expected_purchases(daily, 521.8);
            let five_years = m.expected_purchases(daily, 260.9);
            assert!(
                decade.is_finite() && decade > five_years,
                "{model:?}: {decade}"
            );
            // At the rate it has shown (seven a week), not more.
            assert!(decade < 7.0 * 521.8, "{model:?}: {decade}");
        }
    }

    /// P(alive), the expected purchases over 90 days and the CLV of a margin of 1 over 12 and
    /// 120 months (a discount of 1% a month), each as mpmath 1.3 computes DOMAIN.md's formulas
    /// (Batislam et al.'s for MBG/NBD) at 60 digits, for the CDNOW fits: from a new customer to
    /// daily buyers of a year, still buying and silent for years, whose odds of being dead pass
    /// f64's range (there the values are 0). Every path of the 2F1 is taken: the plain series,
    /// Euler's transformation, the connection formula near z = 1, and the walk along the months;
    /// and the expected orders and the CLVs are also asked of the tables the job takes them from.
    #[test]
    fn the_models_agree_with_mpmath_at_sixty_digits() {
        use Model::{BgNbd, MbgNbd};
        #[rustfmt::skip]
        let table = [
            (BgNbd, 0.0, 0.0, 0.0, 1.0, 0.529769245708134, 1.37336427559416, 3.52198310478794),
            (BgNbd, 0.0, 0.0, 20.0, 1.0, 0.119067554331079, 0.388144571760813, 1.37337380346472),
            (BgNbd, 1.0, 3.0, 4.0, 0.723302555427419, 1.0809180714531, 2.84035960161504, 7.04103969438944),
            (BgNbd, 2.0, 30.43, 38.86, 0.726578570080673, 0.452501124763736, 1.47225423342017, 4.92346071407242),
            (BgNbd, 5.0, 12.0, 35.0, 0.0758222484693879, 0.11859192594545, 0.370394132226651, 1.13229774690549),
            (BgNbd, 28.0, 4.1429, 12.5714, 1.4449121563563e-7, 2.46954118726241e-6, 6.46088733860281e-6, 1.55032735153996e-5),
            (BgNbd, 52.0, 51.0, 52.0, 0.963591285367909, 10.5874431039088, 33.5401982979691, 104.668116934026),
            (BgNbd, 364.0, 52.0, 52.0, 0.997834629006141, 76.2610248841787, 240.579146742411, 744.917720060836),
            (BgNbd, 364.0, 52.0, 500.0, 1.32632353318806e-344, 1.21920298085181e-343, 4.51041412554647e-343, 2.26867085685638e-342),
            (BgNbd, 1000.0, 200.0, 210.0, 2.25841116657124e-18, 1.3235263655012e-16, 4.72927878365454e-16, 2.02352318359752e-15),
            (MbgNbd, 0.0, 0.0, 0.0, 0.644311377245509, 0.530702679988164, 1.34916318333994, 3.20191859241506),
            (MbgNbd, 0.0, 0.0, 20.0, 0.459188590228702, 0.108713750395534, 0.344651092167101, 1.11347296530337),
            (MbgNbd, 1.0, 3.0, 4.0, 0.714768942247964, 1.08063848095026, 2.78825073396059, 6.47572005963679),
            (MbgNbd, 2.0, 30.43, 38.86, 0.706202265118487, 0.472055845335133, 1.50925981806551, 4.74080569996318),
            (MbgNbd, 5.0, 12.0, 35.0, 0.0750003543995753, 0.117384765436883, 0.360152208212811, 1.03515326226723),
            (MbgNbd, 28.0, 4.1429, 12.5714, 1.34475912941299e-6, 2.08717507656878e-5, 5.34701933880147e-5, 0.000120039686139933),
            (MbgNbd, 52.0, 51.0, 52.0, 0.960327572880762, 10.2116114613625, 31.8086395839942, 93.4426043959718),
            (MbgNbd, 364.0, 52.0, 52.0, 0.997568928118307, 73.4300055957004, 227.689575774639, 663.250876871995),
            (MbgNbd, 364.0, 52.0, 500.0, 1.37320569579977e-340, 1.25736543195187e-339, 4.63588958868968e-339, 2.27778071958134e-338),
            (MbgNbd, 1000.0, 200.0, 210.0, 2.96032375782977e-18, 1.71662109070513e-16, 6.09030505311367e-16, 2.5068907150084e-15),
        ];
        let month = MONTH_DAYS / 7.0;
        let agrees = |got: f64, want: f64| (got - want).abs() <= 1e-10 * want.abs() + 1e-300;
        for (model, x, t_x, t, p_alive, expected_90d, clv_12, clv_120) in table {
            let model = PurchaseModel::cdnow(model);
            let h = Recency { x, t_x, t };
            // What the job asks: the expected orders and the CLV by table
            // (`tables::ModelTables`), one for each terms.
            let tables = crate::tables::ModelTables::default;
            let by_table = |months| tables().clv(&model, h, month, months, 1.0, 0.01);
            let got = [
                model.p_alive(h),
                model.expected_purchases(h, 90.0 / 7.0),
                clv(&model, h, month, 12, 1.0, 0.01),
                clv(&model, h, month, 120, 1.0, 0.01),
                tables().expected_purchases(&model, h, 90.0 / 7.0),
                by_table(12),
                by_table(120),
            ];
            let want = [
                p_alive,
                expected_90d,
                clv_12,
                clv_120,
                expected_90d,
                clv_12,
                clv_120,
            ];
            let names = [
                "P(alive)",
                "E[90d]",
                "CLV 12",
                "CLV 120",
                "E[90d] by table",
                "CLV 12 by table",
                "CLV 120 by table",
            ];
            for ((what, got), want) in names.into_iter().zip(got).zip(want) {
                assert!(
                    agrees(got, want),
                    "{model:?} {h:?} {what}: {got} vs mpmath's {want}"
                );
            }
        }
    }

    #[test]
    fn clv_adds_discounted_monthly_purchases() {
        let model = PurchaseModel::cdnow(Model::MbgNbd);
        let h = Recency {
            x: 3.0,
            t_x: 10.0,
            t: 12.0,
        };
        let month = 52.0 / 12.0;
        let undiscounted = clv(&model, h, month, 12, 100.0, 0.0);
        let want = 100.0 * model.expected_purchases(h, 52.0);
        assert!(close(undiscounted, want, 1e-9 * want));
        let discounted = clv(&model, h, month, 12, 100.0, 0.01);
        assert!(discounted < undiscounted && discounted > undiscounted / 1.01f64.powi(12));
    }
}
