//! The probability models of DOMAIN.md, as plain functions of a customer's sufficient statistics:
//! P(alive) and expected purchases (BG/NBD, MBG/NBD), the time a silent customer crosses a
//! P(alive) threshold, Gamma-Gamma spend and a discounted CLV. Must not know about events, state,
//! storage or time zones: times are in the model's own unit, money in minor units.

use serde::Serialize;

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
        if horizon <= 0.0 {
            return 0.0;
        }
        let (r, alpha, a, b, x) = (self.r, self.alpha, self.a, self.b, h.x);
        let z = horizon / (alpha + h.t + horizon);
        let decay = ((alpha + h.t) / (alpha + h.t + horizon)).powf(r + x);
        let (lead, hyp) = match self.model {
            Model::BgNbd => (
                (a + b + x - 1.0) / (a - 1.0),
                hyp2f1(r + x, b + x, a + b + x - 1.0, z),
            ),
            Model::MbgNbd => (
                (a + b + x) / (a - 1.0),
                hyp2f1(r + x, b + x + 1.0, a + b + x, z),
            ),
        };
        lead * (1.0 - decay * hyp) / (1.0 + self.dead_odds(h))
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
pub fn hyp2f1(a: f64, b: f64, c: f64, z: f64) -> f64 {
    if a + b > c && c - a > -1.0 && c - b > -1.0 && z > 0.0 {
        let transformed = hyp2f1_series(c - a, c - b, c, z);
        if transformed > 1e-3 {
            return (1.0 - z).powf(c - a - b) * transformed;
        }
    }
    hyp2f1_series(a, b, c, z)
}

/// 2F1 by its power series: sums until a term is below 1e-15 of the total, or 100,000 terms.
pub fn hyp2f1_series(a: f64, b: f64, c: f64, z: f64) -> f64 {
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 0..100_000 {
        let n = f64::from(n);
        term *= (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
        sum += term;
        if term.abs() < 1e-15 * sum.abs() {
            break;
        }
    }
    sum
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
    let mut value = 0.0;
    let mut before = 0.0;
    for k in 1..=months {
        let by_k = model.expected_purchases(h, month * f64::from(k));
        value += margin_per_purchase * (by_k - before) / (1.0 + monthly_discount).powi(k as i32);
        before = by_k;
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(got: f64, want: f64, tolerance: f64) -> bool {
        (got - want).abs() <= tolerance
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
