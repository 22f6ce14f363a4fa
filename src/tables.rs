//! The model's two costliest numbers by table: the CLV of DOMAIN.md and the expected purchases
//! over a fixed horizon (a churn-risk record's `expected_orders_90d`). Both are `lead(x) / (1 +
//! odds)` times a function of the history's repeat purchases x and of one more variable: the
//! odds of being dead and the lead are closed forms, and the rest depends on T only through
//! `month / (alpha + T)` (the CLV: the months' drops in `(1 - z)^(r+x) 2F1(z)`, discounted,
//! month k's z being k tau / (1 + k tau)) or `horizon / (alpha + T)` (one such drop). So one
//! curve per x answers every history with x repeat purchases: a Chebyshev interpolant on a few
//! pieces of that variable, each fitted the first time a history falls in it, evaluated in a
//! few dozen multiplications, where the sum itself takes a dozen 2F1 (the CLV) or one.
//! Must not know about events, state or storage: like `churn`, times are in the model's unit.

use std::sync::{Arc, OnceLock};

use crate::churn::{clv, PurchaseModel, Recency};

/// The CLV's sums and the expected purchases by table, each for the first terms it is asked
/// for (a job scores with one configuration): the model, and the month, the number of months
/// and the discount (the CLV) or the horizon (the expected purchases). Asked for other terms,
/// or for a history the tables do not cover, it computes directly ([`clv`],
/// [`PurchaseModel::expected_purchases`]). A cache of pure functions' values: clones share it
/// (the processor, the aggregator and the HTTP endpoints each clone the settings).
#[derive(Default, Clone)]
pub struct ModelTables {
    clv: Keyed<ClvTerms>,
    purchases: Keyed<HorizonTerms>,
}

/// What the CLV's months' sum depends on besides the history.
#[derive(Debug, Clone, Copy, PartialEq)]
struct ClvTerms {
    model: PurchaseModel,
    month: f64,
    months: u32,
    monthly_discount: f64,
}

/// What the expected purchases' drop depends on besides the history.
#[derive(Debug, Clone, Copy, PartialEq)]
struct HorizonTerms {
    model: PurchaseModel,
    horizon: f64,
}

impl ModelTables {
    /// Customers with this many repeat purchases or more are computed directly: a curve is
    /// kept for each number of repeat purchases seen, its pieces fitted as histories fall in
    /// them (for the published fit, about 0.1 ms and 150 bytes a piece of the 12-month CLV,
    /// 1 ms for 120 months).
    pub const MAX_REPEAT_PURCHASES: usize = 1024;

    /// [`clv`], the same up to rounding (`tests`), from the table where it covers the history.
    pub fn clv(
        &self,
        model: &PurchaseModel,
        h: Recency,
        month: f64,
        months: u32,
        margin_per_purchase: f64,
        monthly_discount: f64,
    ) -> f64 {
        let terms = ClvTerms {
            model: *model,
            month,
            months,
            monthly_discount,
        };
        match self.clv_per_purchase(terms, h) {
            Some(per_purchase) => margin_per_purchase * per_purchase,
            None => clv(
                model,
                h,
                month,
                months,
                margin_per_purchase,
                monthly_discount,
            ),
        }
    }

    /// [`PurchaseModel::expected_purchases`], the same up to rounding (`tests`), from the
    /// table where it covers the history.
    pub fn expected_purchases(&self, model: &PurchaseModel, h: Recency, horizon: f64) -> f64 {
        let terms = HorizonTerms {
            model: *model,
            horizon,
        };
        self.purchases_by_table(terms, h)
            .unwrap_or_else(|| model.expected_purchases(h, horizon))
    }

    /// The CLV of a margin of 1 per purchase from the table, or `None` where it does not serve.
    fn clv_per_purchase(&self, terms: ClvTerms, h: Recency) -> Option<f64> {
        let model = &terms.model;
        let curve = self.clv.curve(terms, h.x, || {
            Curve::new(terms.month / model.alpha, 1.0 / f64::from(terms.months))
        })?;
        let tau = terms.month / (model.alpha + h.t);
        let sum = curve.at(tau, |tau| months_sum(&terms, h.x, tau))?;
        Some(of_the_living(model, h, sum))
    }

    /// The expected purchases from the table, or `None` where it does not serve.
    fn purchases_by_table(&self, terms: HorizonTerms, h: Recency) -> Option<f64> {
        let model = &terms.model;
        if terms.horizon.is_nan() || terms.horizon <= 0.0 {
            return None;
        }
        // One horizon's drop is singular where sigma reaches -1: a first piece of 1.
        let curve = self
            .purchases
            .curve(terms, h.x, || Curve::new(terms.horizon / model.alpha, 1.0))?;
        let sigma = terms.horizon / (model.alpha + h.t);
        let drop = curve.at(sigma, |sigma| horizon_drop(model, h.x, sigma))?;
        Some(of_the_living(model, h, drop))
    }

    /// How many curves are built: one for each number of repeat purchases asked for, of each
    /// kind.
    pub fn curves_built(&self) -> usize {
        self.clv.curves_built() + self.purchases.curves_built()
    }
}

/// `lead(x) / (1 + odds) · share`: what a customer still alive buys of `share`; 0 for one dead
/// for certain (the odds overflowed), as the direct forms give.
fn of_the_living(model: &PurchaseModel, h: Recency, share: f64) -> f64 {
    let odds_plus_one = 1.0 + model.dead_odds(h);
    if !odds_plus_one.is_finite() {
        return 0.0;
    }
    model.lead(h.x) * share / odds_plus_one
}

impl std::fmt::Debug for ModelTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelTables")
            .field("curves_built", &self.curves_built())
            .finish()
    }
}

/// Curves by number of repeat purchases, for the terms first asked.
struct Keyed<T> {
    built: Arc<OnceLock<Built<T>>>,
}

/// The terms a [`Keyed`] serves and a curve for each number of repeat purchases, when asked.
struct Built<T> {
    terms: T,
    curves: Box<[OnceLock<Option<Curve>>]>,
}

impl<T> Default for Keyed<T> {
    fn default() -> Keyed<T> {
        Keyed {
            built: Arc::default(),
        }
    }
}

impl<T> Clone for Keyed<T> {
    fn clone(&self) -> Keyed<T> {
        Keyed {
            built: Arc::clone(&self.built),
        }
    }
}

impl<T: PartialEq + Copy> Keyed<T> {
    /// The curve for `x` repeat purchases, built by `build` the first time it is asked; `None`
    /// for other terms than the first asked, for an x that is not a whole number below
    /// [`ModelTables::MAX_REPEAT_PURCHASES`], or where `build` gave none.
    fn curve(&self, terms: T, x: f64, build: impl FnOnce() -> Option<Curve>) -> Option<&Curve> {
        let built = self.built.get_or_init(|| Built {
            terms,
            curves: (0..ModelTables::MAX_REPEAT_PURCHASES)
                .map(|_| OnceLock::new())
                .collect(),
        });
        if built.terms != terms || !(x >= 0.0 && x.fract() == 0.0) {
            return None;
        }
        built.curves.get(x as usize)?.get_or_init(build).as_ref()
    }

    fn curves_built(&self) -> usize {
        self.built.get().map_or(0, |built| {
            built.curves.iter().filter(|c| c.get().is_some()).count()
        })
    }
}

/// A function of the history over the values its variable can take, (0, end] (T from infinity
/// down to 0), in pieces: [0, first], then each three times as long as the one before, where
/// `first` is the distance from 0 to the function's nearest singular point. The CLV's months'
/// sum S_x(tau) is analytic but where some month's z is 1 or beyond, tau in (-inf, -1/months];
/// one horizon's drop where sigma is in (-inf, -1]. A piece [p, 3p] stays at least 2 + first/p
/// of its half-lengths from there, so its Chebyshev coefficients fall at least like (2 + √3)^-n,
/// to the rounding in under 30 of them.
struct Curve {
    pieces: Vec<Piece>,
}

/// One piece of a [`Curve`]: its coefficients on [lo, hi], fitted the first time a history
/// falls in it; `None` inside where they did not fall to the rounding (the direct form serves
/// there).
struct Piece {
    lo: f64,
    hi: f64,
    coefficients: OnceLock<Option<Box<[f64]>>>,
}

impl Curve {
    /// At most this many pieces: an end of 3^39 times `first`. Beyond, the direct form.
    const MAX_PIECES: usize = 40;

    /// The pieces of (0, end], none fitted yet; `None` where there is no room (no positive,
    /// finite end).
    fn new(end: f64, first: f64) -> Option<Curve> {
        if !(end.is_finite() && end > 0.0) {
            return None;
        }
        let mut pieces = Vec::new();
        let (mut lo, mut next) = (0.0, first);
        while lo < end && pieces.len() < Self::MAX_PIECES {
            let hi = next.min(end);
            pieces.push(Piece {
                lo,
                hi,
                coefficients: OnceLock::new(),
            });
            (lo, next) = (hi, 3.0 * next);
        }
        Some(Curve { pieces })
    }

    /// The function at `v`, its piece fitted to `f` (the curve's function, the same at every
    /// call) the first time; `None` outside the curve or on a piece without coefficients.
    /// Only the pieces histories fall in are fitted: a new customer's (T = 0, the curve's end)
    /// and the few after it, where a far end (an alpha of 10^-12) has dozens, each fitted at
    /// 40 points of a dozen 2F1 near z = 1.
    fn at(&self, v: f64, f: impl Fn(f64) -> f64) -> Option<f64> {
        let piece = self.pieces.iter().find(|p| v <= p.hi)?;
        if !(v > piece.lo || (v >= 0.0 && piece.lo == 0.0)) {
            return None;
        }
        let coefficients = piece
            .coefficients
            .get_or_init(|| chebyshev_fit(&f, piece.lo, piece.hi))
            .as_deref()?;
        let t = (2.0 * v - piece.lo - piece.hi) / (piece.hi - piece.lo);
        Some(clenshaw(coefficients, t))
    }

    /// How many pieces were fitted, or tried.
    #[cfg(test)]
    fn fitted(&self) -> usize {
        self.pieces
            .iter()
            .filter(|p| p.coefficients.get().is_some())
            .count()
    }
}

/// S_x(tau): the months' drops in `decay · 2F1`, discounted, each 2F1 summed at its own z
/// (`Hypergeometric::at`, the reference the walk of [`clv`] is held to).
fn months_sum(terms: &ClvTerms, x: f64, tau: f64) -> f64 {
    let model = &terms.model;
    let series = model.purchase_series(x);
    let (mut sum, mut before) = (0.0, 1.0);
    for k in 1..=terms.months {
        let u = tau * f64::from(k);
        let decayed = model.decayed(x, 1.0 / (1.0 + u), u / (1.0 + u), |z| series.at(z));
        sum += (before - decayed) / (1.0 + terms.monthly_discount).powi(k as i32);
        before = decayed;
    }
    sum
}

/// One horizon's drop in `decay · 2F1` at sigma = horizon / (alpha + T), 1 - (1 + sigma)^-(r+x)
/// 2F1(sigma / (1 + sigma)), the 2F1 summed at its z (`Hypergeometric::at`, as
/// [`PurchaseModel::expected_purchases`] does).
fn horizon_drop(model: &PurchaseModel, x: f64, sigma: f64) -> f64 {
    let series = model.purchase_series(x);
    1.0 - model.decayed(x, 1.0 / (1.0 + sigma), sigma / (1.0 + sigma), |z| {
        series.at(z)
    })
}

/// Chebyshev nodes a piece is fitted at: more than its coefficients need to fall to the
/// rounding of the values fitted (under 30 of them), so that the last ones show it.
const NODES: usize = 40;

/// The last coefficients of a fit, which must have fallen to the rounding: their largest is
/// taken for the size of the values' rounding, its noise floor.
const SETTLED: usize = 8;

/// The largest noise floor taken, as a share of the sum of the coefficients' sizes: the sums
/// of the months are good to about 1e-15 of themselves with few repeat purchases and 1e-13
/// with hundreds (their months' drops cancel), and a fit whose last coefficients are still
/// larger has not settled.
const NOISE_FLOOR: f64 = 1e-12;

/// The Chebyshev coefficients of `f` on [lo, hi] from its values at the [`NODES`] Chebyshev
/// points, without those within four times the noise floor of the last ([`SETTLED`]); `None`
/// when a value is no number or the floor is above [`NOISE_FLOOR`].
fn chebyshev_fit(f: &impl Fn(f64) -> f64, lo: f64, hi: f64) -> Option<Box<[f64]>> {
    let n = NODES as f64;
    let angle = |j: usize| std::f64::consts::PI * (j as f64 + 0.5) / n;
    let (mid, half) = ((hi + lo) / 2.0, (hi - lo) / 2.0);
    let values: Vec<f64> = (0..NODES).map(|j| f(mid + half * angle(j).cos())).collect();
    if values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut coefficients: Vec<f64> = (0..NODES)
        .map(|k| {
            let sum: f64 = values
                .iter()
                .enumerate()
                .map(|(j, v)| v * (k as f64 * angle(j)).cos())
                .sum();
            2.0 * sum / n
        })
        .collect();
    coefficients[0] /= 2.0;
    let whole: f64 = coefficients.iter().map(|c| c.abs()).sum();
    let floor = coefficients[NODES - SETTLED..]
        .iter()
        .fold(0.0f64, |m, c| m.max(c.abs()));
    if floor > NOISE_FLOOR * whole {
        return None;
    }
    let kept = 1 + coefficients
        .iter()
        .rposition(|c| c.abs() > 4.0 * floor)
        .unwrap_or(0);
    coefficients.truncate(kept);
    Some(coefficients.into_boxed_slice())
}

/// The Chebyshev series with these coefficients at t in [-1, 1], by Clenshaw's recurrence.
fn clenshaw(coefficients: &[f64], t: f64) -> f64 {
    let (mut b1, mut b2) = (0.0, 0.0);
    for c in coefficients[1..].iter().rev() {
        (b1, b2) = (c + 2.0 * t * b1 - b2, b1);
    }
    coefficients[0] + t * b1 - b2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::churn::{Clv, Model, MONTH_DAYS};

    /// The published fits' month: a week is their time unit.
    const MONTH: f64 = MONTH_DAYS / 7.0;

    /// The reference: each month's 2F1 summed at its own z.
    fn summed(model: &PurchaseModel, h: Recency, month: f64, months: u32) -> f64 {
        Clv {
            model,
            h,
            month,
            months,
            margin_per_purchase: 1.0,
            monthly_discount: 0.01,
        }
        .summed_at_each_month()
    }

    /// What a CLV of a margin of 1 is compared to: itself, and the size of what its months'
    /// purchases subtract from, lead / (1 + odds) (see `churn`'s walk test).
    fn size(model: &PurchaseModel, h: Recency, want: f64) -> f64 {
        want.abs() + (model.lead(h.x) * model.p_alive(h)).abs()
    }

    #[test]
    fn the_tables_serve_the_published_fits_customers_and_agree_with_the_reference() {
        for model in [Model::MbgNbd, Model::BgNbd] {
            let model = PurchaseModel::cdnow(model);
            for months in [12, 120] {
                let tables = ModelTables::default();
                let terms = ClvTerms {
                    model,
                    month: MONTH,
                    months,
                    monthly_discount: 0.01,
                };
                for x in [0u32, 1, 2, 3, 5, 8, 13, 30, 100, 400] {
                    // From a new customer (T = 0, the curve's end) to ten years on.
                    for t in [0.0, 0.01, 0.3, 1.0, 4.0, 13.0, 52.0, 100.0, 520.0] {
                        let h = Recency {
                            x: f64::from(x),
                            t_x: t * 0.7,
                            t,
                        };
                        let got = tables.clv_per_purchase(terms, h);
                        let want = summed(&model, h, MONTH, months);
                        assert!(got.is_some(), "{model:?} {months} months {h:?}: not served");
                        let got = got.unwrap();
                        assert!(
                            (got - want).abs() <= 1e-11 * size(&model, h, want),
                            "{model:?} {months} months {h:?}: {got} by table, {want} summed"
                        );
                        // The expected orders over 90 days (and, with 120 months, over ten
                        // years: a horizon whose first piece is far shorter than its end).
                        let horizon = if months == 12 { 90.0 / 7.0 } else { 521.8 };
                        let terms = HorizonTerms { model, horizon };
                        let got = tables.purchases_by_table(terms, h);
                        let want = model.expected_purchases(h, horizon);
                        assert!(got.is_some(), "{model:?} {horizon} {h:?}: not served");
                        let got = got.unwrap();
                        assert!(
                            (got - want).abs() <= 1e-11 * size(&model, h, want),
                            "{model:?} over {horizon} {h:?}: {got} by table, {want} summed"
                        );
                    }
                }
                assert_eq!(tables.curves_built(), 20, "two curves for each x asked");
            }
        }
    }

    #[test]
    fn other_terms_a_fraction_of_a_purchase_or_too_many_purchases_are_summed_directly() {
        let model = PurchaseModel::cdnow(Model::MbgNbd);
        let tables = ModelTables::default();
        let h = Recency {
            x: 3.0,
            t_x: 10.0,
            t: 12.0,
        };
        let direct = |model: &PurchaseModel, h: Recency, months: u32, discount: f64| {
            clv(model, h, MONTH, months, 1.0, discount)
        };
        // The first terms asked for are the tables'.
        let first = tables.clv(&model, h, MONTH, 12, 1.0, 0.01);
        assert!((first - summed(&model, h, MONTH, 12)).abs() <= 1e-12 * first);
        let other = PurchaseModel { r: 0.6, ..model };
        let many = Recency {
            x: ModelTables::MAX_REPEAT_PURCHASES as f64,
            ..h
        };
        let part = Recency { x: 3.5, ..h };
        for (model, h, months, discount) in [
            (&model, h, 6, 0.01),
            (&model, h, 12, 0.02),
            (&other, h, 12, 0.01),
            (&model, many, 12, 0.01),
            (&model, part, 12, 0.01),
        ] {
            let got = tables.clv(model, h, MONTH, months, 1.0, discount);
            let want = direct(model, h, months, discount);
            assert_eq!(got.to_bits(), want.to_bits(), "{model:?} {h:?} {months}");
        }
        assert_eq!(tables.curves_built(), 1);
        // Clones share the tables: the processor, the aggregator and the HTTP endpoints each
        // have a clone of the settings.
        let clone = tables.clone();
        assert_eq!(clone.curves_built(), 1);
        clone.clv(&model, Recency { x: 4.0, ..h }, MONTH, 12, 1.0, 0.01);
        assert_eq!(tables.curves_built(), 2);
        // A history past the curve's end (T below 0, which no customer has) is summed too.
        let early = Recency { t: -1.0, ..h };
        assert_eq!(
            tables.clv(&model, early, MONTH, 12, 1.0, 0.01).to_bits(),
            direct(&model, early, 12, 0.01).to_bits()
        );
        // So are the expected purchases: the first horizon asked is the tables', the others,
        // no horizon and the histories above are computed directly.
        let first = tables.expected_purchases(&model, h, 13.0);
        let want = model.expected_purchases(h, 13.0);
        assert!((first - want).abs() <= 1e-12 * want);
        for (model, h, horizon) in [
            (&model, h, 26.0),
            (&model, h, 0.0),
            (&other, h, 13.0),
            (&model, many, 13.0),
            (&model, part, 13.0),
            (&model, early, 13.0),
        ] {
            let got = tables.expected_purchases(model, h, horizon);
            let want = model.expected_purchases(h, horizon);
            assert_eq!(got.to_bits(), want.to_bits(), "{model:?} {h:?} {horizon}");
        }
        assert_eq!(tables.curves_built(), 3);
    }

    #[test]
    fn only_the_pieces_histories_fall_in_are_fitted() {
        let model = PurchaseModel::cdnow(Model::MbgNbd);
        // An alpha of 10^-12 (the least the configuration takes): a new customer's tau is
        // 4·10^12, and the curve has dozens of pieces, each dear to fit near z = 1.
        let far = PurchaseModel {
            alpha: PurchaseModel::MIN_ALPHA,
            ..model
        };
        for model in [model, far] {
            let tables = ModelTables::default();
            let h = Recency {
                x: 2.0,
                t_x: 3.0,
                t: 5.0,
            };
            let got = tables.clv(&model, h, MONTH, 12, 1.0, 0.01);
            let want = summed(&model, h, MONTH, 12);
            assert!((got - want).abs() <= 1e-11 * size(&model, h, want));
            let built = tables.clv.built.get().expect("built");
            let curve = built.curves[2]
                .get()
                .expect("asked")
                .as_ref()
                .expect("a curve");
            assert!(curve.pieces.len() >= 3, "{}", curve.pieces.len());
            assert_eq!(curve.fitted(), 1, "{model:?}: the one piece asked");
            // A history later in the same piece fits nothing more; one in another piece fits it.
            tables.clv(&model, Recency { t: 5.5, ..h }, MONTH, 12, 1.0, 0.01);
            assert_eq!(curve.fitted(), 1);
            tables.clv(&model, Recency { t: 500.0, ..h }, MONTH, 12, 1.0, 0.01);
            assert_eq!(curve.fitted(), 2);
        }
    }

    #[test]
    fn a_piece_whose_coefficients_do_not_settle_is_not_fitted() {
        // |t - 0.3| has a kink inside the piece: its coefficients fall like 1/n^2, far above
        // the rounding after 40 of them.
        assert!(chebyshev_fit(&|t: f64| (t - 0.3).abs(), 0.0, 1.0).is_none());
        assert!(chebyshev_fit(&|t: f64| if t < 0.5 { t } else { f64::NAN }, 0.0, 1.0).is_none());
        // exp settles in a dozen coefficients, and keeps no more.
        let fit = chebyshev_fit(&f64::exp, 0.0, 1.0).expect("exp is fitted");
        assert!(fit.len() < 20, "{} coefficients", fit.len());
        for i in 0..=100 {
            let t = f64::from(i) / 100.0;
            let got = clenshaw(&fit, 2.0 * t - 1.0);
            assert!((got - t.exp()).abs() <= 1e-14 * t.exp(), "{t}: {got}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            cases: 96,
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        /// Over fitted parameters, histories and months far from the published ones, a CLV and
        /// expected purchases by table are the reference's, wherever the table serves them.
        #[test]
        fn the_tables_agree_with_the_reference(
            (model, h, month) in crate::churn::tests::models_histories_and_months(),
        ) {
            let terms = ClvTerms { model, month, months: 12, monthly_discount: 0.01 };
            let want = summed(&model, h, month, 12);
            let tables = ModelTables::default();
            if let Some(got) = tables.clv_per_purchase(terms, h) {
                proptest::prop_assert!(
                    (got - want).abs() <= 1e-11 * size(&model, h, want)
                        || !want.is_finite(),
                    "{} by table, {} summed", got, want
                );
            }
            // The expected purchases over three months.
            let horizon = 3.0 * month;
            let want = model.expected_purchases(h, horizon);
            if let Some(got) = tables.purchases_by_table(HorizonTerms { model, horizon }, h) {
                proptest::prop_assert!(
                    (got - want).abs() <= 1e-11 * size(&model, h, want)
                        || !want.is_finite(),
                    "{} expected by table, {} directly", got, want
                );
            }
        }
    }
}
