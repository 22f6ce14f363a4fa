//! Configuration in two stages: [`RawConfig`] is what the user wrote (TOML, unknown fields
//! rejected, every option overridable by an environment variable), [`Config`] is the validated
//! result with typed durations, passed explicitly to whoever needs it. Must not know about Kafka
//! clients, RocksDB handles or the pipeline: it only describes them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::churn::{Model, PurchaseModel, SpendModel};
use crate::decode::Rules;
use crate::event::Stream;
use crate::fold::FoldLimits;
use crate::risk::{ReasonCode, RiskSettings, Tier};
use crate::tables::ModelTables;
use crate::trends::TrendSettings;

/// The prefix of environment overrides: `CUSTOMER_PULSE__KAFKA__BROKERS` sets `kafka.brokers`.
pub const ENV_PREFIX: &str = "CUSTOMER_PULSE__";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub kafka: RawKafka,
    #[serde(default)]
    pub topics: RawTopics,
    #[serde(default)]
    pub input: RawInput,
    pub state: RawState,
    #[serde(default)]
    pub processing: RawProcessing,
    #[serde(default)]
    pub http: RawHttp,
    #[serde(default)]
    pub churn: RawChurn,
    #[serde(default)]
    pub risk: RawRisk,
    #[serde(default)]
    pub trends: RawTrends,
    #[serde(default)]
    pub rfm: RawRfm,
}

/// RFM named segments: the first rule whose score ranges hold a customer's scores names it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRfm {
    pub segments: Vec<RawRfmRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRfmRule {
    pub name: String,
    #[serde(default = "all_scores")]
    pub r: [u8; 2],
    #[serde(default = "all_scores")]
    pub f: [u8; 2],
    #[serde(default = "all_scores")]
    pub m: [u8; 2],
}

fn all_scores() -> [u8; 2] {
    [1, 5]
}

impl Default for RawRfm {
    fn default() -> Self {
        RawRfm {
            segments: crate::rfm::default_rules()
                .into_iter()
                .map(|r| RawRfmRule {
                    name: r.name,
                    r: [r.r.0, r.r.1],
                    f: [r.f.0, r.f.1],
                    m: [r.m.0, r.m.1],
                })
                .collect(),
        }
    }
}

impl RawKafka {
    fn security(&self) -> anyhow::Result<KafkaSecurity> {
        let protocol = self.security_protocol.to_ascii_lowercase();
        check(
            ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"].contains(&protocol.as_str()),
            "kafka.security_protocol",
            "must be plaintext, ssl, sasl_plaintext or sasl_ssl",
        )?;
        let sasl = if protocol.starts_with("sasl_") {
            let mechanism = self
                .sasl_mechanism
                .clone()
                .unwrap_or_default()
                .to_ascii_uppercase();
            check(
                ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"].contains(&mechanism.as_str()),
                "kafka.sasl_mechanism",
                "must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 with a sasl_* protocol",
            )?;
            let username = self.sasl_username.clone().unwrap_or_default();
            check(
                !username.is_empty(),
                "kafka.sasl_username",
                "must be set with a sasl_* protocol",
            )?;
            let password = read_secret(
                self.sasl_password.as_ref(),
                self.sasl_password_file.as_ref(),
                "kafka.sasl_password",
            )?
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "config field `kafka.sasl_password` (or `kafka.sasl_password_file`) must be set with a sasl_* protocol"
                )
            })?;
            Some((mechanism, username, password))
        } else {
            check(
                self.sasl_mechanism.is_none()
                    && self.sasl_username.is_none()
                    && self.sasl_password.is_none()
                    && self.sasl_password_file.is_none(),
                "kafka.sasl_mechanism",
                "needs security_protocol sasl_plaintext or sasl_ssl",
            )?;
            None
        };
        for (field, path) in [
            ("kafka.ssl_ca_location", &self.ssl_ca_location),
            (
                "kafka.ssl_certificate_location",
                &self.ssl_certificate_location,
            ),
            ("kafka.ssl_key_location", &self.ssl_key_location),
        ] {
            if let Some(path) = path {
                check(
                    protocol.ends_with("ssl"),
                    field,
                    "needs security_protocol ssl or sasl_ssl",
                )?;
                check(path.is_file(), field, "must name a readable file")?;
            }
        }
        // A client certificate is presented with its key: one without the other is a mistake
        // that the brokers would only show as a failed handshake.
        check(
            self.ssl_certificate_location.is_some() == self.ssl_key_location.is_some(),
            if self.ssl_key_location.is_none() {
                "kafka.ssl_key_location"
            } else {
                "kafka.ssl_certificate_location"
            },
            "must be set with the other of ssl_certificate_location and ssl_key_location (a client certificate and its key)",
        )?;
        check(
            self.ssl_key_password.is_none() || self.ssl_key_location.is_some(),
            "kafka.ssl_key_password",
            "needs kafka.ssl_key_location (the key it opens)",
        )?;
        Ok(KafkaSecurity {
            protocol,
            sasl,
            ssl_ca_location: self.ssl_ca_location.clone(),
            ssl_certificate_location: self.ssl_certificate_location.clone(),
            ssl_key_location: self.ssl_key_location.clone(),
            ssl_key_password: self.ssl_key_password.clone().map(Secret),
        })
    }
}

/// A secret given as a value or as a file whose first line it is; not both, and not empty.
fn read_secret(
    value: Option<&String>,
    file: Option<&PathBuf>,
    field: &str,
) -> anyhow::Result<Option<Secret>> {
    match (value, file) {
        (Some(_), Some(_)) => {
            bail!("config fields `{field}` and `{field}_file` exclude each other")
        }
        (Some(value), None) => {
            check(!value.is_empty(), field, "must not be empty")?;
            Ok(Some(Secret(value.clone())))
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!(
                    "config field `{field}_file`: cannot read {}",
                    path.display()
                )
            })?;
            let first = text.lines().next().unwrap_or_default();
            if first.is_empty() {
                bail!(
                    "config field `{field}_file`: the first line of {} is empty, and it is the secret",
                    path.display()
                );
            }
            Ok(Some(Secret(first.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

impl RawRfm {
    fn validate(&self) -> anyhow::Result<Vec<crate::rfm::Rule>> {
        check(
            !self.segments.is_empty() && self.segments.len() <= 16,
            "rfm.segments",
            "must list between 1 and 16 rules (their names become metric labels)",
        )?;
        check(
            distinct(&self.segments.iter().map(|r| &r.name).collect::<Vec<_>>()),
            "rfm.segments.name",
            "must name each rule once (first match wins: a second rule of a name is a mistake)",
        )?;
        let rules = self
            .segments
            .iter()
            .map(|rule| {
                check(
                    !rule.name.is_empty()
                        && rule.name != "other"
                        && rule
                            .name
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c == '_'),
                    "rfm.segments.name",
                    "must be a lower-case name of [a-z_] other than `other`",
                )?;
                for (field, [lo, hi]) in [
                    ("rfm.segments.r", rule.r),
                    ("rfm.segments.f", rule.f),
                    ("rfm.segments.m", rule.m),
                ] {
                    check(
                        1 <= lo && lo <= hi && hi <= 5,
                        field,
                        "must be [low, high] with 1 <= low <= high <= 5",
                    )?;
                }
                Ok(crate::rfm::Rule {
                    name: rule.name.clone(),
                    r: (rule.r[0], rule.r[1]),
                    f: (rule.f[0], rule.f[1]),
                    m: (rule.m[0], rule.m[1]),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        // First match wins: a rule inside an earlier one's ranges would name no customer.
        for (i, rule) in rules.iter().enumerate() {
            let within = |(lo, hi): (u8, u8), (outer_lo, outer_hi): (u8, u8)| {
                outer_lo <= lo && hi <= outer_hi
            };
            if let Some(earlier) = rules[..i]
                .iter()
                .find(|e| within(rule.r, e.r) && within(rule.f, e.f) && within(rule.m, e.m))
            {
                bail!(
                    "config field `rfm.segments` lists `{}` after `{}`, whose ranges hold all of its: first match wins, so `{}` would name no customer (list the narrower rule first)",
                    rule.name,
                    earlier.name,
                    rule.name
                );
            }
        }
        Ok(rules)
    }
}

/// Complaint trends: windows, baseline, spike rule (DOMAIN.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTrends {
    pub window_minutes: u64,
    pub baseline_weight: f64,
    pub spike_z_score: f64,
    pub spike_min_count: u32,
    pub cusum_baseline_weight: f64,
    pub cusum_slack: f64,
    pub cusum_threshold: f64,
}

impl Default for RawTrends {
    fn default() -> Self {
        let d = TrendSettings::defaults(&[]);
        RawTrends {
            window_minutes: (d.window_ms / 60_000) as u64,
            baseline_weight: d.baseline_weight,
            spike_z_score: d.spike_z,
            spike_min_count: d.spike_min_count,
            cusum_baseline_weight: d.cusum_baseline_weight,
            cusum_slack: d.cusum_slack,
            cusum_threshold: d.cusum_threshold,
        }
    }
}

/// The purchase and spend models (DOMAIN.md); the defaults are the published CDNOW fits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawChurn {
    /// `mbg_nbd` or `bg_nbd`.
    pub model: String,
    pub r: f64,
    /// In the time unit below.
    pub alpha: f64,
    pub a: f64,
    pub b: f64,
    pub time_unit_days: f64,
    pub spend_p: f64,
    pub spend_q: f64,
    pub spend_gamma_minor: f64,
    pub clv_months: u32,
    pub monthly_discount: f64,
    pub default_margin_ratio: f64,
}

/// How the churn score is built from P(alive) and the named reasons.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRisk {
    pub inactive_below_p_alive: f64,
    pub lost_below_p_alive: f64,
    pub complaint_sla_hours: u64,
    pub recent_days: u64,
    pub slow_response_seconds: u64,
    /// 0: the source publishes no deliveries, and no order is ever late.
    pub late_delivery_days: u64,
    pub frequent_returns_min: u32,
    pub frequent_returns_ratio: f64,
    pub medium_from: f64,
    pub high_from: f64,
    pub min_score_change: f64,
    pub weights: RawWeights,
    pub tiers: Vec<RawTier>,
    /// Value tiers are by the revenue and margin of this many calendar months up to now.
    pub tier_trailing_months: u32,
}

/// The effect of each reason: the score is `1 - P(alive) * product(1 - weight)`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawWeights {
    pub inactive: f64,
    pub unresolved_complaint: f64,
    pub recent_bad_experience: f64,
    pub detractor: f64,
    pub slow_response: f64,
    pub late_delivery: f64,
    pub frequent_returns: f64,
    pub cancelled: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub name: String,
    #[serde(default)]
    pub min_revenue_minor: i64,
    #[serde(default = "no_minimum")]
    pub min_margin_minor: i64,
}

fn no_minimum() -> i64 {
    i64::MIN
}

const DAY_MS: f64 = 86_400_000.0;
/// The largest `input.max_amount_minor`: a sum of 9,000 events at it still fits in an `i64`.
const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000_000;

impl Default for RawChurn {
    fn default() -> Self {
        let d = RiskSettings::default();
        RawChurn {
            model: "mbg_nbd".into(),
            r: d.model.r,
            alpha: d.model.alpha,
            a: d.model.a,
            b: d.model.b,
            time_unit_days: d.time_unit_ms as f64 / DAY_MS,
            spend_p: d.spend.p,
            spend_q: d.spend.q,
            spend_gamma_minor: d.spend.gamma,
            clv_months: d.clv_months,
            monthly_discount: d.monthly_discount,
            default_margin_ratio: d.default_margin_ratio,
        }
    }
}

impl Default for RawRisk {
    fn default() -> Self {
        let d = RiskSettings::default();
        let hours = |ms: i64| (ms / 3_600_000) as u64;
        RawRisk {
            inactive_below_p_alive: d.inactive_below_p_alive,
            lost_below_p_alive: d.lost_below_p_alive,
            complaint_sla_hours: hours(d.complaint_sla_ms),
            recent_days: hours(d.recent_ms) / 24,
            slow_response_seconds: d.slow_response_seconds,
            late_delivery_days: hours(d.late_delivery_ms) / 24,
            frequent_returns_min: d.frequent_returns_min,
            frequent_returns_ratio: d.frequent_returns_ratio,
            medium_from: d.medium_from,
            high_from: d.high_from,
            min_score_change: d.min_score_change,
            weights: RawWeights::default(),
            tiers: d
                .tiers
                .iter()
                .map(|t| RawTier {
                    name: t.name.clone(),
                    min_revenue_minor: t.min_revenue_minor,
                    min_margin_minor: t.min_margin_minor,
                })
                .collect(),
            tier_trailing_months: d.tier_months,
        }
    }
}

impl Default for RawWeights {
    fn default() -> Self {
        let d = RiskSettings::default();
        let w = |code| {
            d.weights
                .iter()
                .find(|(c, _)| *c == code)
                .map_or(0.0, |(_, w)| *w)
        };
        RawWeights {
            inactive: w(ReasonCode::Inactive),
            unresolved_complaint: w(ReasonCode::UnresolvedComplaint),
            recent_bad_experience: w(ReasonCode::RecentBadExperience),
            detractor: w(ReasonCode::Detractor),
            slow_response: w(ReasonCode::SlowResponse),
            late_delivery: w(ReasonCode::LateDelivery),
            frequent_returns: w(ReasonCode::FrequentReturns),
            cancelled: w(ReasonCode::Cancelled),
        }
    }
}

impl RawChurn {
    fn validate(&self) -> anyhow::Result<(PurchaseModel, SpendModel)> {
        let model = match self.model.as_str() {
            "mbg_nbd" => Model::MbgNbd,
            "bg_nbd" => Model::BgNbd,
            _ => bail!("config field `churn.model` must be `mbg_nbd` or `bg_nbd`"),
        };
        for (field, v) in [
            ("churn.r", self.r),
            ("churn.alpha", self.alpha),
            ("churn.a", self.a),
            ("churn.b", self.b),
            ("churn.time_unit_days", self.time_unit_days),
            ("churn.spend_p", self.spend_p),
            ("churn.spend_gamma_minor", self.spend_gamma_minor),
        ] {
            check(v.is_finite() && v > 0.0, field, "must be a positive number")?;
        }
        for (field, v) in [
            ("churn.r", self.r),
            ("churn.alpha", self.alpha),
            ("churn.a", self.a),
            ("churn.b", self.b),
        ] {
            check(
                v <= PurchaseModel::MAX_PARAMETER,
                field,
                "must be at most 1000000: past it the expected purchases lose their precision",
            )?;
        }
        check(
            (self.a - 1.0).abs() > 1e-9,
            "churn.a",
            "must not be 1 (expected purchases divide by a - 1)",
        )?;
        check(
            self.spend_q.is_finite() && self.spend_q > 1.0,
            "churn.spend_q",
            "must be a number above 1 (the mean spend divides by q - 1; an infinite q makes every lifetime value 0)",
        )?;
        // Under a minute the unit rounds towards 0 ms, which every recency divides by.
        check(
            (1.0 / 1_440.0..=3_650.0).contains(&self.time_unit_days),
            "churn.time_unit_days",
            "must be at least 1/1440 (a minute) and at most 3650 (ten years)",
        )?;
        check(
            (1..=120).contains(&self.clv_months),
            "churn.clv_months",
            "must be between 1 and 120",
        )?;
        check(
            self.alpha >= PurchaseModel::MIN_ALPHA,
            "churn.alpha",
            "must be at least 1e-12 (below it a new customer's horizon rounds to the model's singular point)",
        )?;
        let horizon = PurchaseModel::longest_horizon(self.clv_months, self.time_unit_days);
        check(
            self.r <= PurchaseModel::largest_r(self.alpha, horizon),
            "churn.r",
            "is too large for churn.alpha: r · ln(1 + H / alpha), with H the longest horizon the model is asked for in time units (churn.clv_months, or 90 days), must be at most 700; past it a new customer's expected purchases are no number",
        )?;
        check(
            (0.0..1.0).contains(&self.monthly_discount),
            "churn.monthly_discount",
            "must be at least 0 and below 1",
        )?;
        check(
            (-1.0..=1.0).contains(&self.default_margin_ratio),
            "churn.default_margin_ratio",
            "must be between -1 and 1",
        )?;
        let purchase = PurchaseModel {
            model,
            r: self.r,
            alpha: self.alpha,
            a: self.a,
            b: self.b,
        };
        let spend = SpendModel {
            p: self.spend_p,
            q: self.spend_q,
            gamma: self.spend_gamma_minor,
        };
        Ok((purchase, spend))
    }
}

impl RawRisk {
    fn validate(&self, churn: &RawChurn) -> anyhow::Result<RiskSettings> {
        let (model, spend) = churn.validate()?;
        let w = &self.weights;
        let weights = vec![
            (ReasonCode::Inactive, w.inactive),
            (ReasonCode::UnresolvedComplaint, w.unresolved_complaint),
            (ReasonCode::RecentBadExperience, w.recent_bad_experience),
            (ReasonCode::Detractor, w.detractor),
            (ReasonCode::SlowResponse, w.slow_response),
            (ReasonCode::LateDelivery, w.late_delivery),
            (ReasonCode::FrequentReturns, w.frequent_returns),
            (ReasonCode::Cancelled, w.cancelled),
        ];
        for (code, weight) in &weights {
            check(
                (0.0..=1.0).contains(weight),
                &format!("risk.weights.{}", code.code()),
                "must be between 0 and 1",
            )?;
        }
        for (field, v) in [
            ("risk.inactive_below_p_alive", self.inactive_below_p_alive),
            ("risk.lost_below_p_alive", self.lost_below_p_alive),
            ("risk.medium_from", self.medium_from),
            ("risk.high_from", self.high_from),
            ("risk.frequent_returns_ratio", self.frequent_returns_ratio),
        ] {
            check(
                v > 0.0 && v < 1.0,
                field,
                "must be between 0 and 1, exclusive",
            )?;
        }
        check(
            self.medium_from < self.high_from,
            "risk.medium_from",
            "must be below risk.high_from",
        )?;
        // Lost through silence means inactive: above, a customer would be lost with the
        // reason `inactive` not named.
        check(
            self.lost_below_p_alive <= self.inactive_below_p_alive,
            "risk.lost_below_p_alive",
            "must not be above risk.inactive_below_p_alive: a customer lost through silence is inactive",
        )?;
        check(
            (0.0..1.0).contains(&self.min_score_change),
            "risk.min_score_change",
            "must be at least 0 and below 1",
        )?;
        check(
            (1..=120).contains(&self.tier_trailing_months),
            "risk.tier_trailing_months",
            "must be between 1 and 120",
        )?;
        check(
            !self.tiers.is_empty() && self.tiers.len() <= 16,
            "risk.tiers",
            "must list between 1 and 16 tiers (they become metric labels)",
        )?;
        check(
            distinct(&self.tiers.iter().map(|t| &t.name).collect::<Vec<_>>()),
            "risk.tiers.name",
            "must name each tier once (first match wins: a second tier of a name is a mistake)",
        )?;
        for (i, tier) in self.tiers.iter().enumerate() {
            // First match wins: a tier whose minimums an earlier one's do not exceed gets only
            // the customers under every tier's minimums (as the last), or none.
            if let Some(earlier) = self.tiers[..i].iter().find(|e| {
                e.min_revenue_minor <= tier.min_revenue_minor
                    && e.min_margin_minor <= tier.min_margin_minor
            }) {
                bail!(
                    "config field `risk.tiers` lists `{}` after `{}`, whose minimums are no higher: first match wins, so `{}` would take every customer `{}` is meant for (list tiers from the highest minimums down, the catch-all last)",
                    tier.name,
                    earlier.name,
                    earlier.name,
                    tier.name
                );
            }
            check(
                !tier.name.is_empty()
                    && tier
                        .name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_'),
                "risk.tiers.name",
                "must be a lower-case name of [a-z_]",
            )?;
        }
        let hours = |h: u64| (h.min(1 << 30) * 3_600_000) as i64;
        Ok(RiskSettings {
            model,
            time_unit_ms: (churn.time_unit_days * DAY_MS).round() as i64,
            spend,
            clv_months: churn.clv_months,
            monthly_discount: churn.monthly_discount,
            default_margin_ratio: churn.default_margin_ratio,
            inactive_below_p_alive: self.inactive_below_p_alive,
            lost_below_p_alive: self.lost_below_p_alive,
            complaint_sla_ms: hours(self.complaint_sla_hours),
            recent_ms: hours(self.recent_days.min(1 << 20) * 24),
            slow_response_seconds: self.slow_response_seconds,
            late_delivery_ms: hours(self.late_delivery_days.min(1 << 20) * 24),
            frequent_returns_min: self.frequent_returns_min,
            frequent_returns_ratio: self.frequent_returns_ratio,
            weights,
            medium_from: self.medium_from,
            high_from: self.high_from,
            min_score_change: self.min_score_change,
            tiers: self
                .tiers
                .iter()
                .map(|t| Tier {
                    name: t.name.clone(),
                    min_revenue_minor: t.min_revenue_minor,
                    min_margin_minor: t.min_margin_minor,
                })
                .collect(),
            tier_months: self.tier_trailing_months,
            tables: ModelTables::default(),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKafka {
    pub brokers: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Where to start a partition with no stored offset: `earliest` or `latest`.
    #[serde(default = "default_reset")]
    pub auto_offset_reset: String,
    /// How long the group waits for a silent member before moving its partitions.
    #[serde(default = "default_session_timeout")]
    pub session_timeout_milliseconds: u64,
    /// How long a fetch may wait at the broker for records (librdkafka's `fetch.wait.max.ms`).
    #[serde(default = "default_fetch_wait")]
    pub fetch_wait_milliseconds: u64,
    /// How the output producer compresses its batches: `lz4`, `snappy`, `gzip` or `none`.
    #[serde(default = "default_compression")]
    pub compression: String,
    /// A stable name for this instance in the group (static membership, e.g. the pod name of a
    /// StatefulSet): a restarted instance takes its partitions back at once instead of
    /// waiting a session timeout for its former self to be dropped.
    pub group_instance_id: Option<String>,
    /// Input partitions this instance reads by itself, without joining the group (e.g. a
    /// StatefulSet's pod `k` of `n` listing the partitions `p` with `p % n == k`): a restart
    /// reads again as soon as the state is open, with no group protocol to wait for; nothing
    /// moves them to another instance while this one is down.
    pub assigned_partitions: Option<Vec<i32>>,
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    #[serde(default = "default_security_protocol")]
    pub security_protocol: String,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`, with a `sasl_*` protocol.
    pub sasl_mechanism: Option<String>,
    pub sasl_username: Option<String>,
    /// Prefer `sasl_password_file` or `CUSTOMER_PULSE__KAFKA__SASL_PASSWORD` to writing it here.
    pub sasl_password: Option<String>,
    pub sasl_password_file: Option<PathBuf>,
    /// The CA certificate(s) that sign the brokers' certificates (PEM), with an `ssl` protocol.
    pub ssl_ca_location: Option<PathBuf>,
    /// A client certificate and key (PEM), when the brokers ask for one.
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub ssl_key_password: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTopics {
    pub interactions: String,
    pub orders: String,
    pub complaints: String,
    pub churn_risk: String,
    pub complaint_trends: String,
    pub segment_metrics: String,
    pub dead_letter: String,
    pub changelog: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInput {
    /// Partition count of the input topics (all three must have it).
    pub partitions: i32,
    pub max_event_bytes: usize,
    pub max_future_skew_seconds: u64,
    /// Events older than this (in days before the processor clock) are refused.
    pub max_event_age_days: u64,
    pub currency: String,
    pub dedup_horizon_days: u64,
    pub max_dedup_ids_per_customer: usize,
    pub max_open_items_per_customer: usize,
    /// Longest identifier (event, customer, order, complaint, referrer), in characters.
    pub max_id_chars: usize,
    /// Longest free-text field (reasons, categories, segment hints), in characters.
    pub max_text_chars: usize,
    /// Largest amount of one event, and largest margin either way, in minor units.
    pub max_amount_minor: i64,
    pub complaint_categories: Vec<String>,
    pub cancellation_reasons: Vec<String>,
    /// Closed set of renewal reasons; anything else becomes `other`, none `unspecified`.
    pub renewal_reasons: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub path: PathBuf,
    #[serde(default = "default_cache_customers")]
    pub cache_customers: usize,
    #[serde(default = "default_block_cache_bytes")]
    pub block_cache_bytes: usize,
    /// Mirror every customer write to `topics.changelog`, so that another instance (or this
    /// one, after losing its disk) can restore the state. Required for more than one instance;
    /// off by default while a stall seen once under broker faults with it on is not understood
    /// (README, Scaling out).
    #[serde(default)]
    pub changelog: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProcessing {
    pub max_batch_events: usize,
    pub max_batch_wait_milliseconds: u64,
    pub shutdown_flush_seconds: u64,
    /// How far behind a partition's newest event time its watermark trails.
    pub allowed_lateness_seconds: u64,
    /// An input partition that delivered nothing for this long no longer holds the watermark.
    pub idle_partition_seconds: u64,
    /// How far in event time an input partition may be read ahead of the slowest one still
    /// delivering before it is paused until the others come within this; 0 (the default)
    /// reads every partition as fast as it comes.
    pub max_event_time_lead_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen_address: String,
    /// Turns on `GET /customers/{id}` (personal data) behind this bearer token. Prefer
    /// `customer_lookup_token_file` or the environment variable to writing it here.
    pub customer_lookup_token: Option<String>,
    /// A file whose first line is the token (e.g. a mounted Kubernetes Secret).
    pub customer_lookup_token_file: Option<PathBuf>,
    /// How other instances and clients reach this instance's HTTP endpoints (e.g.
    /// `http://pulse-0.pulse:9464`): stored with the offsets it commits, and named by the other
    /// instances when they refuse a lookup for a partition it owns.
    pub advertised_url: Option<String>,
}

fn default_security_protocol() -> String {
    "plaintext".into()
}
fn default_group_id() -> String {
    "customer-pulse".into()
}
fn default_reset() -> String {
    "earliest".into()
}
fn default_session_timeout() -> u64 {
    10_000
}
fn default_fetch_wait() -> u64 {
    50
}

fn default_compression() -> String {
    "lz4".into()
}

fn default_cache_customers() -> usize {
    100_000
}
fn default_block_cache_bytes() -> usize {
    64 << 20
}

impl Default for RawTopics {
    fn default() -> Self {
        RawTopics {
            interactions: "customer.interactions".into(),
            orders: "customer.orders".into(),
            complaints: "customer.complaints".into(),
            churn_risk: "customer.churn-risk".into(),
            complaint_trends: "customer.complaint-trends".into(),
            segment_metrics: "customer.segment-metrics".into(),
            dead_letter: "customer.events.dlq".into(),
            changelog: "customer-pulse.customers-changelog".into(),
        }
    }
}

impl Default for RawInput {
    fn default() -> Self {
        RawInput {
            partitions: 6,
            max_event_bytes: 64 * 1024,
            max_future_skew_seconds: 300,
            max_event_age_days: 730,
            currency: "EUR".into(),
            dedup_horizon_days: 30,
            max_dedup_ids_per_customer: 10_000,
            max_open_items_per_customer: 1_000,
            max_id_chars: 128,
            max_text_chars: 1024,
            max_amount_minor: 1_000_000_000_000,
            complaint_categories: [
                "billing",
                "delivery",
                "product_quality",
                "service",
                "website",
                "refund",
                "privacy",
            ]
            .map(String::from)
            .to_vec(),
            cancellation_reasons: [
                "price",
                "competitor",
                "service",
                "product_quality",
                "moved",
                "no_longer_needed",
            ]
            .map(String::from)
            .to_vec(),
            renewal_reasons: ["auto_renew", "price", "service", "loyalty", "promotion"]
                .map(String::from)
                .to_vec(),
        }
    }
}

impl Default for RawProcessing {
    fn default() -> Self {
        RawProcessing {
            max_batch_events: 10_000,
            max_batch_wait_milliseconds: 0,
            shutdown_flush_seconds: 30,
            allowed_lateness_seconds: 3_600,
            idle_partition_seconds: 10,
            max_event_time_lead_seconds: 0,
        }
    }
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen_address: "127.0.0.1:9464".into(),
            customer_lookup_token: None,
            customer_lookup_token_file: None,
            advertised_url: None,
        }
    }
}

/// How the output producer compresses its batches (`kafka.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Lz4,
    Zstd,
    Snappy,
    Gzip,
    None,
}

impl Compression {
    /// Every one librdkafka has (zstd since it is built with libzstd: until 2026-12-04 it was
    /// not, and input that a producer compressed with zstd was not read).
    pub const ALL: [Compression; 5] = [
        Compression::Lz4,
        Compression::Zstd,
        Compression::Snappy,
        Compression::Gzip,
        Compression::None,
    ];

    /// Its name in the config, which is librdkafka's for `compression.type` too.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::Snappy => "snappy",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}

/// How the Kafka clients authenticate and encrypt, passed through to librdkafka. Secrets are
/// never printed (`Debug` shows `Secret(..)`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KafkaSecurity {
    /// librdkafka's `security.protocol`: `plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl`.
    pub protocol: String,
    /// `(mechanism, username, password)` with a `sasl_*` protocol.
    pub sasl: Option<(String, String, Secret)>,
    pub ssl_ca_location: Option<PathBuf>,
    pub ssl_certificate_location: Option<PathBuf>,
    pub ssl_key_location: Option<PathBuf>,
    pub ssl_key_password: Option<Secret>,
}

impl KafkaSecurity {
    /// The librdkafka properties, secrets included: only for handing to the Kafka client.
    pub fn client_properties(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![("security.protocol", self.protocol.clone())];
        if let Some((mechanism, username, password)) = &self.sasl {
            out.push(("sasl.mechanism", mechanism.clone()));
            out.push(("sasl.username", username.clone()));
            out.push(("sasl.password", password.0.clone()));
        }
        let path = |p: &PathBuf| p.display().to_string();
        out.extend(
            self.ssl_ca_location
                .as_ref()
                .map(|p| ("ssl.ca.location", path(p))),
        );
        out.extend(
            self.ssl_certificate_location
                .as_ref()
                .map(|p| ("ssl.certificate.location", path(p))),
        );
        out.extend(
            self.ssl_key_location
                .as_ref()
                .map(|p| ("ssl.key.location", path(p))),
        );
        out.extend(
            self.ssl_key_password
                .as_ref()
                .map(|p| ("ssl.key.password", p.0.clone())),
        );
        out
    }
}

/// A secret from the configuration: never printed, compared in constant time.
#[derive(Clone, PartialEq, Default)]
pub struct Secret(String);

impl Secret {
    /// Whether `offered` equals the secret. Every byte is compared whatever the first
    /// difference, so the time taken does not tell how much of a guess was right.
    pub fn matches(&self, offered: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        if offered.len() != secret.len() {
            return false;
        }
        let difference = secret
            .iter()
            .zip(offered)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(difference) == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Where to start a partition that has no stored offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub brokers: String,
    pub kafka_security: KafkaSecurity,
    pub group_id: String,
    /// `kafka.group_instance_id`: static membership when set.
    pub group_instance_id: Option<String>,
    /// `kafka.assigned_partitions`: read these input partitions without joining the group,
    /// distinct and in order; `None`: the group assigns them.
    pub assigned_partitions: Option<Vec<i32>>,
    pub offset_reset: OffsetReset,
    pub session_timeout: std::time::Duration,
    /// `kafka.fetch_wait_milliseconds`: how long a fetch of the input may wait at the broker.
    pub fetch_wait: std::time::Duration,
    /// `kafka.compression`: how the output producer compresses its batches.
    pub compression: Compression,
    pub topics: Topics,
    pub partitions: i32,
    pub rules: Rules,
    pub limits: FoldLimits,
    pub state_path: PathBuf,
    pub cache_customers: usize,
    pub block_cache_bytes: usize,
    /// Whether customer writes are mirrored to `topics.changelog` (`state.changelog`).
    pub changelog: bool,
    pub max_batch_events: usize,
    pub max_batch_wait: std::time::Duration,
    pub shutdown_flush: std::time::Duration,
    pub listen_address: std::net::SocketAddr,
    /// `None`: `GET /customers/{id}` is off.
    pub customer_lookup_token: Option<Secret>,
    /// This instance's HTTP address as others should use it (`http.advertised_url`).
    pub advertised_url: Option<String>,
    pub risk: RiskSettings,
    pub trends: TrendSettings,
    pub allowed_lateness_ms: i64,
    pub idle_partition_ms: i64,
    /// `processing.max_event_time_lead_seconds`; `None` when 0: partitions are not aligned.
    pub max_event_time_lead_ms: Option<i64>,
    pub rfm_rules: Vec<crate::rfm::Rule>,
}

#[derive(Debug, Clone)]
pub struct Topics {
    pub interactions: String,
    pub orders: String,
    pub complaints: String,
    pub churn_risk: String,
    pub complaint_trends: String,
    pub segment_metrics: String,
    pub dead_letter: String,
    /// The compacted changelog of the customer state, partitioned like the input.
    pub changelog: String,
}

impl Topics {
    /// The input topic that carries `stream`.
    pub fn input(&self, stream: Stream) -> &str {
        match stream {
            Stream::Interactions => &self.interactions,
            Stream::Orders => &self.orders,
            Stream::Complaints => &self.complaints,
        }
    }
}

impl Config {
    /// Reads a TOML file, applies environment overrides, and validates.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Config::parse(&text, std::env::vars())
            .with_context(|| format!("invalid config file {}", path.display()))
    }

    /// Parses TOML text with the given environment (name, value) pairs as overrides.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let mut doc: toml::Table = toml::from_str(text)?;
        let mut overridden = Vec::new();
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                apply_override(&mut doc, path, &value)
                    .with_context(|| format!("environment variable {name}"))?;
                overridden.push(name);
            }
        }
        let config = toml::Value::Table(doc)
            .try_into::<RawConfig>()
            .map_err(anyhow::Error::from)
            .and_then(RawConfig::validate);
        config.map_err(|e| match set_by_environment(&e, &overridden) {
            Some(name) => e.context(format!("the field is set by environment variable {name}")),
            None => e,
        })
    }
}

/// The environment variable, among those `overridden`, that set the field an error names: an
/// operator who finds nothing wrong in the file is told where the value came from.
fn set_by_environment<'a>(error: &anyhow::Error, overridden: &'a [String]) -> Option<&'a str> {
    let message = format!("{error:#}");
    overridden.iter().map(String::as_str).find(|name| {
        let path = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        let dotted = path.replace("__", ".");
        // A misspelt name, of a section or a field, is refused by its own name, with the names
        // it could be after it.
        message.contains(&format!("`{dotted}`"))
            || path
                .split("__")
                .any(|part| message.contains(&format!("unknown field `{part}`")))
    })
}

fn apply_override(doc: &mut toml::Table, path: &str, value: &str) -> anyhow::Result<()> {
    let parts: Vec<String> = path.split("__").map(|p| p.to_ascii_lowercase()).collect();
    let Some((leaf, sections)) = parts.split_last() else {
        bail!("names no field");
    };
    let mut table = doc;
    for section in sections {
        table = table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("`{section}` is not a section"))?;
    }
    // A value that reads as TOML (a number, a boolean, an array) keeps its type; anything else
    // is a string, so `brokers=host:9092` needs no quotes.
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    table.insert(leaf.clone(), parsed);
    Ok(())
}

/// Whether no item of `items` comes twice (the lists it checks hold at most 64).
fn distinct<T: PartialEq>(items: &[T]) -> bool {
    items
        .iter()
        .enumerate()
        .all(|(i, v)| !items[..i].contains(v))
}

fn check(ok: bool, field: &str, rule: &str) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        bail!("config field `{field}` {rule}")
    }
}

impl RawConfig {
    pub fn validate(self) -> anyhow::Result<Config> {
        check(
            !self.kafka.brokers.trim().is_empty(),
            "kafka.brokers",
            "must not be empty",
        )?;
        check(
            !self.kafka.group_id.is_empty(),
            "kafka.group_id",
            "must not be empty",
        )?;
        check(
            !self.state.path.as_os_str().is_empty(),
            "state.path",
            "must not be empty",
        )?;
        let offset_reset = match self.kafka.auto_offset_reset.as_str() {
            "earliest" => OffsetReset::Earliest,
            "latest" => OffsetReset::Latest,
            _ => bail!("config field `kafka.auto_offset_reset` must be `earliest` or `latest`"),
        };
        check(
            (1_000..=300_000).contains(&self.kafka.session_timeout_milliseconds),
            "kafka.session_timeout_milliseconds",
            "must be between 1000 and 300000",
        )?;
        check(
            (1..=10_000).contains(&self.kafka.fetch_wait_milliseconds),
            "kafka.fetch_wait_milliseconds",
            "must be between 1 and 10000",
        )?;
        let compression = Compression::ALL
            .into_iter()
            .find(|c| c.name() == self.kafka.compression)
            .ok_or_else(|| {
                let names: Vec<String> = Compression::ALL
                    .iter()
                    .map(|c| format!("`{}`", c.name()))
                    .collect();
                anyhow::anyhow!(
                    "config field `kafka.compression` must be one of {}, not {:?}",
                    names.join(", "),
                    self.kafka.compression
                )
            })?;
        let t = &self.topics;
        let topics = [
            ("topics.interactions", &t.interactions),
            ("topics.orders", &t.orders),
            ("topics.complaints", &t.complaints),
            ("topics.churn_risk", &t.churn_risk),
            ("topics.complaint_trends", &t.complaint_trends),
            ("topics.segment_metrics", &t.segment_metrics),
            ("topics.dead_letter", &t.dead_letter),
            ("topics.changelog", &t.changelog),
        ];
        for (i, &(field, name)) in topics.iter().enumerate() {
            // One topic for two purposes mixes what they carry: a dead letter written to an
            // input topic is read again and dead-lettered again, for ever; outputs on an input
            // topic are read as events; a restore would read outputs as the changelog.
            if let Some((other, _)) = topics[..i].iter().find(|(_, n)| *n == name) {
                bail!("config field `{field}` must not name the topic of `{other}` ({name:?})");
            }
            check(
                !name.is_empty()
                    && name.len() <= 249
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
                field,
                "must be a Kafka topic name (1 to 249 of [a-zA-Z0-9._-])",
            )?;
        }
        let i = &self.input;
        check(
            (1..=10_000).contains(&i.partitions),
            "input.partitions",
            "must be between 1 and 10000",
        )?;
        check(
            (64..=16 << 20).contains(&i.max_event_bytes),
            "input.max_event_bytes",
            "must be between 64 and 16777216",
        )?;
        check(
            i.currency.len() == 3 && i.currency.chars().all(|c| c.is_ascii_uppercase()),
            "input.currency",
            "must be a three-letter ISO 4217 code such as EUR",
        )?;
        check(
            (1..=3650).contains(&i.dedup_horizon_days),
            "input.dedup_horizon_days",
            "must be between 1 and 3650",
        )?;
        check(
            (1..=1_000_000).contains(&i.max_dedup_ids_per_customer),
            "input.max_dedup_ids_per_customer",
            "must be between 1 and 1000000",
        )?;
        check(
            (1..=100_000).contains(&i.max_open_items_per_customer),
            "input.max_open_items_per_customer",
            "must be between 1 and 100000",
        )?;
        check(
            (1..=1024).contains(&i.max_id_chars),
            "input.max_id_chars",
            "must be between 1 and 1024",
        )?;
        check(
            (1..=65_536).contains(&i.max_text_chars),
            "input.max_text_chars",
            "must be between 1 and 65536",
        )?;
        check(
            (1..=MAX_AMOUNT_MINOR).contains(&i.max_amount_minor),
            "input.max_amount_minor",
            "must be between 1 and 1000000000000000",
        )?;
        check(
            (1..=36_500).contains(&i.max_event_age_days),
            "input.max_event_age_days",
            "must be between 1 and 36500",
        )?;
        check(
            i.max_future_skew_seconds <= 31_536_000,
            "input.max_future_skew_seconds",
            "must be at most 31536000 (a year)",
        )?;
        for (field, set) in [
            ("input.complaint_categories", &i.complaint_categories),
            ("input.cancellation_reasons", &i.cancellation_reasons),
            ("input.renewal_reasons", &i.renewal_reasons),
        ] {
            check(
                set.iter().all(|v| {
                    !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                }),
                field,
                "must hold lower-case names of [a-z_] (they become metric labels)",
            )?;
            check(
                set.len() <= 64,
                field,
                "must hold at most 64 names (bounded labels)",
            )?;
            check(distinct(set), field, "must not name anything twice")?;
        }
        check(
            self.state.cache_customers >= 1,
            "state.cache_customers",
            "must be at least 1",
        )?;
        check(
            self.state.block_cache_bytes >= 1 << 20,
            "state.block_cache_bytes",
            "must be at least 1048576",
        )?;
        let p = &self.processing;
        // Past it, the stop's deadline overflowed the clock and the job panicked at SIGTERM.
        check(
            p.shutdown_flush_seconds <= 3_600,
            "processing.shutdown_flush_seconds",
            "must be at most 3600 (an hour)",
        )?;
        check(
            (1..=1_000_000).contains(&p.max_batch_events),
            "processing.max_batch_events",
            "must be between 1 and 1000000",
        )?;
        check(
            p.max_batch_wait_milliseconds <= 60_000,
            "processing.max_batch_wait_milliseconds",
            "must be between 0 and 60000",
        )?;
        check(
            p.allowed_lateness_seconds <= 30 * 86_400,
            "processing.allowed_lateness_seconds",
            "must be at most 2592000 (30 days)",
        )?;
        check(
            (1..=3_600).contains(&p.idle_partition_seconds),
            "processing.idle_partition_seconds",
            "must be between 1 and 3600",
        )?;
        check(
            p.max_event_time_lead_seconds <= 30 * 86_400,
            "processing.max_event_time_lead_seconds",
            "must be at most 2592000 (30 days); 0 turns the alignment off",
        )?;
        let risk = self.risk.validate(&self.churn)?;
        let rfm_rules = self.rfm.validate()?;
        let tr = &self.trends;
        check(
            (1..=1_440).contains(&tr.window_minutes) && 1_440 % tr.window_minutes == 0,
            "trends.window_minutes",
            "must divide a day (1 to 1440)",
        )?;
        for (field, v) in [
            ("trends.baseline_weight", tr.baseline_weight),
            ("trends.cusum_baseline_weight", tr.cusum_baseline_weight),
        ] {
            check(v > 0.0 && v <= 1.0, field, "must be above 0 and at most 1")?;
        }
        for (field, v) in [
            ("trends.spike_z_score", tr.spike_z_score),
            ("trends.cusum_slack", tr.cusum_slack),
            ("trends.cusum_threshold", tr.cusum_threshold),
        ] {
            check(
                v.is_finite() && v >= 0.0,
                field,
                "must be a number at least 0",
            )?;
        }
        let categories: Vec<&str> = i.complaint_categories.iter().map(String::as_str).collect();
        let trends = TrendSettings {
            window_ms: (tr.window_minutes * 60_000) as i64,
            baseline_weight: tr.baseline_weight,
            spike_z: tr.spike_z_score,
            spike_min_count: tr.spike_min_count,
            cusum_baseline_weight: tr.cusum_baseline_weight,
            cusum_slack: tr.cusum_slack,
            cusum_threshold: tr.cusum_threshold,
            ..TrendSettings::defaults(&categories)
        };
        let kafka_security = self.kafka.security()?;
        let customer_lookup_token = match (
            &self.http.customer_lookup_token,
            &self.http.customer_lookup_token_file,
        ) {
            (Some(_), Some(_)) => bail!(
                "config fields `http.customer_lookup_token` and `http.customer_lookup_token_file` exclude each other"
            ),
            (Some(token), None) => Some(token.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| {
                        format!(
                            "config field `http.customer_lookup_token_file`: cannot read {}",
                            path.display()
                        )
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        if let Some(token) = &customer_lookup_token {
            check(
                token.len() >= 16 && token.bytes().all(|b| b.is_ascii_graphic()),
                "http.customer_lookup_token",
                "must be at least 16 printable ASCII characters without spaces",
            )?;
        }
        if let Some(id) = &self.kafka.group_instance_id {
            check(
                (1..=249).contains(&id.len())
                    && id
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
                "kafka.group_instance_id",
                "must be 1 to 249 characters of letters, digits, '.', '_' and '-'",
            )?;
        }
        if let Some(url) = &self.http.advertised_url {
            check(
                (url.starts_with("http://") || url.starts_with("https://"))
                    && url.len() <= 256
                    && !url.contains(char::is_whitespace),
                "http.advertised_url",
                "must be an http:// or https:// URL of at most 256 characters without spaces",
            )?;
        }
        let assigned_partitions = match self.kafka.assigned_partitions {
            Some(mut list) => {
                check(
                    !list.is_empty() && list.iter().all(|p| (0..i.partitions).contains(p)),
                    "kafka.assigned_partitions",
                    "must list input partitions, each from 0 to input.partitions - 1",
                )?;
                let listed = list.len();
                list.sort_unstable();
                list.dedup();
                check(
                    list.len() == listed,
                    "kafka.assigned_partitions",
                    "must not list a partition twice",
                )?;
                check(
                    self.kafka.group_instance_id.is_none(),
                    "kafka.assigned_partitions",
                    "reads without joining the group, so kafka.group_instance_id must be left out",
                )?;
                Some(list)
            }
            None => None,
        };
        let listen_address = self.http.listen_address.parse().map_err(|_| {
            anyhow::anyhow!(
                "config field `http.listen_address` must be an address such as 127.0.0.1:9464, not {:?}",
                self.http.listen_address
            )
        })?;
        Ok(Config {
            brokers: self.kafka.brokers,
            kafka_security,
            group_id: self.kafka.group_id,
            group_instance_id: self.kafka.group_instance_id,
            assigned_partitions,
            offset_reset,
            session_timeout: std::time::Duration::from_millis(
                self.kafka.session_timeout_milliseconds,
            ),
            fetch_wait: std::time::Duration::from_millis(self.kafka.fetch_wait_milliseconds),
            compression,
            partitions: i.partitions,
            rules: Rules {
                max_event_bytes: i.max_event_bytes,
                max_future_skew_ms: (i.max_future_skew_seconds * 1000) as i64,
                max_event_age_ms: (i.max_event_age_days * 86_400_000) as i64,
                max_id_chars: i.max_id_chars,
                max_text_chars: i.max_text_chars,
                max_amount_minor: i.max_amount_minor,
                currency: i.currency.clone(),
                complaint_categories: i.complaint_categories.clone(),
                cancellation_reasons: i.cancellation_reasons.clone(),
                renewal_reasons: i.renewal_reasons.clone(),
            },
            limits: FoldLimits {
                dedup_horizon_ms: (i.dedup_horizon_days * 86_400_000) as i64,
                max_dedup_ids: i.max_dedup_ids_per_customer,
                max_open_items: i.max_open_items_per_customer,
                clock_skew_ms: (i.max_future_skew_seconds * 1000) as i64,
            },
            topics: Topics {
                interactions: self.topics.interactions,
                orders: self.topics.orders,
                complaints: self.topics.complaints,
                churn_risk: self.topics.churn_risk,
                complaint_trends: self.topics.complaint_trends,
                segment_metrics: self.topics.segment_metrics,
                dead_letter: self.topics.dead_letter,
                changelog: self.topics.changelog,
            },
            changelog: self.state.changelog,
            state_path: self.state.path,
            cache_customers: self.state.cache_customers,
            block_cache_bytes: self.state.block_cache_bytes,
            max_batch_events: p.max_batch_events,
            max_batch_wait: std::time::Duration::from_millis(p.max_batch_wait_milliseconds),
            shutdown_flush: std::time::Duration::from_secs(p.shutdown_flush_seconds),
            listen_address,
            customer_lookup_token: customer_lookup_token.map(Secret),
            advertised_url: self.http.advertised_url,
            risk,
            trends,
            allowed_lateness_ms: (p.allowed_lateness_seconds * 1000) as i64,
            idle_partition_ms: (p.idle_partition_seconds * 1000) as i64,
            max_event_time_lead_ms: (p.max_event_time_lead_seconds > 0)
                .then_some((p.max_event_time_lead_seconds * 1000) as i64),
            rfm_rules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[kafka]\nbrokers = \"127.0.0.1:9092\"\n[state]\npath = \"/tmp/x\"\n";

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn every_file_in_config_loads() {
        let dir = Path::new(&std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo"))
            .join("config");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            Config::parse(&text, no_env()).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
            seen += 1;
        }
        assert!(seen >= 2, "config/ holds the local and demo examples");
    }

    #[test]
    fn environment_overrides_any_field_and_keeps_types() {
        let env = vec![
            ("CUSTOMER_PULSE__KAFKA__BROKERS".into(), "other:9093".into()),
            ("CUSTOMER_PULSE__INPUT__PARTITIONS".into(), "12".into()),
            ("UNRELATED".into(), "x".into()),
        ];
        let config = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(config.brokers, "other:9093");
        assert_eq!(config.partitions, 12);
        assert_eq!(config.fetch_wait, std::time::Duration::from_millis(50));
        let env = vec![(
            "CUSTOMER_PULSE__KAFKA__FETCH_WAIT_MILLISECONDS".into(),
            "10".into(),
        )];
        let config = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(config.fetch_wait, std::time::Duration::from_millis(10));
    }

    #[test]
    fn a_bad_value_from_the_environment_names_its_variable() {
        let bad = |name: &str, value: &str| -> String {
            let env = vec![
                (
                    "CUSTOMER_PULSE__KAFKA__BROKERS".to_owned(),
                    "b:9092".to_owned(),
                ),
                (name.to_owned(), value.to_owned()),
            ];
            format!("{:#}", Config::parse(MINIMAL, env).expect_err("refused"))
        };
        let wrong_type = bad("CUSTOMER_PULSE__STATE__CACHE_CUSTOMERS", "many");
        assert!(
            wrong_type.contains("`state.cache_customers`"),
            "{wrong_type}"
        );
        assert!(
            wrong_type.starts_with(
                "the field is set by environment variable CUSTOMER_PULSE__STATE__CACHE_CUSTOMERS"
            ),
            "{wrong_type}"
        );
        let out_of_range = bad("CUSTOMER_PULSE__TRENDS__WINDOW_MINUTES", "7");
        assert!(
            out_of_range.contains("CUSTOMER_PULSE__TRENDS__WINDOW_MINUTES"),
            "{out_of_range}"
        );
        let misspelt = bad("CUSTOMER_PULSE__STATE__CACHE_CUSTOMER", "5");
        assert!(
            misspelt.contains("CUSTOMER_PULSE__STATE__CACHE_CUSTOMER:")
                || misspelt.contains("CUSTOMER_PULSE__STATE__CACHE_CUSTOMER "),
            "{misspelt}"
        );
        let misspelt_section = bad("CUSTOMER_PULSE__STAT__CACHE_CUSTOMERS", "5");
        assert!(
            misspelt_section.contains("CUSTOMER_PULSE__STAT__CACHE_CUSTOMERS"),
            "{misspelt_section}"
        );
        // A bad value or name in the file names no variable, though variables set others.
        for line in ["cache_customers = \"many\"", "cache_customer = 5"] {
            let in_file = Config::parse(
                &format!("[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n{line}\n"),
                vec![
                    (
                        "CUSTOMER_PULSE__KAFKA__BROKERS".to_owned(),
                        "b:9092".to_owned(),
                    ),
                    (
                        "CUSTOMER_PULSE__STATE__PATH".to_owned(),
                        "/tmp/y".to_owned(),
                    ),
                ],
            )
            .expect_err("refused");
            assert!(
                !format!("{in_file:#}").contains("environment"),
                "{in_file:#}"
            );
        }
    }

    #[test]
    fn kafka_security_is_passed_through_and_its_secrets_never_printed() {
        let dir = tempfile::tempdir().unwrap();
        let password_file = dir.path().join("password");
        std::fs::write(&password_file, "s3cret-Pa55word\n").unwrap();
        let text = format!(
            "[kafka]\nbrokers = \"b:9093\"\nsecurity_protocol = \"SASL_SSL\"\nsasl_mechanism = \"scram-sha-512\"\nsasl_username = \"pulse\"\nsasl_password_file = \"{}\"\n[state]\npath = \"x\"\n",
            password_file.display()
        );
        let config = Config::parse(&text, no_env()).unwrap();
        let properties = config.kafka_security.client_properties();
        for (key, value) in [
            ("security.protocol", "sasl_ssl"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.username", "pulse"),
            ("sasl.password", "s3cret-Pa55word"),
        ] {
            assert!(
                properties.contains(&(key, value.to_owned())),
                "{key} in {:?}",
                properties.iter().map(|(k, _)| k).collect::<Vec<_>>()
            );
        }
        assert!(
            !format!("{config:?}").contains("s3cret"),
            "the password is not printed"
        );
        // The password can come from the environment instead.
        let text = "[kafka]\nbrokers = \"b\"\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\n[state]\npath = \"x\"\n";
        let env = vec![(
            "CUSTOMER_PULSE__KAFKA__SASL_PASSWORD".to_owned(),
            "from-env".to_owned(),
        )];
        let config = Config::parse(text, env).unwrap();
        assert!(config
            .kafka_security
            .client_properties()
            .contains(&("sasl.password", "from-env".to_owned())));
        // An empty password, in the file or given, is refused naming its field: librdkafka
        // said only "sasl.username and sasl.password must be set".
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\nsecond line\n").unwrap();
        let sasl = "[kafka]\nbrokers = \"b\"\nsecurity_protocol = \"sasl_plaintext\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\n";
        for (line, field) in [
            (
                format!("sasl_password_file = \"{}\"\n", empty.display()),
                "`kafka.sasl_password_file`",
            ),
            ("sasl_password = \"\"\n".to_owned(), "`kafka.sasl_password`"),
        ] {
            let text = format!("{sasl}{line}[state]\npath = \"x\"\n");
            let error = format!("{:#}", Config::parse(&text, no_env()).unwrap_err());
            assert!(error.contains(field), "{error}");
        }
        // Plaintext by default, with nothing else passed.
        let plain = Config::parse(MINIMAL, no_env()).unwrap();
        assert_eq!(
            plain.kafka_security.client_properties(),
            vec![("security.protocol", "plaintext".to_owned())]
        );
    }

    #[test]
    fn assigned_partitions_are_kept_distinct_and_in_order() {
        let text =
            "[kafka]\nbrokers = \"b\"\nassigned_partitions = [5, 0, 3]\n[state]\npath = \"x\"\n";
        let config = Config::parse(text, no_env()).unwrap();
        assert_eq!(config.assigned_partitions, Some(vec![0, 3, 5]));
        // From the environment, as a StatefulSet's pod sets its own.
        let env = vec![(
            "CUSTOMER_PULSE__KAFKA__ASSIGNED_PARTITIONS".to_owned(),
            "[2, 4]".to_owned(),
        )];
        let config = Config::parse(MINIMAL, env).unwrap();
        assert_eq!(config.assigned_partitions, Some(vec![2, 4]));
        assert_eq!(
            Config::parse(MINIMAL, no_env())
                .unwrap()
                .assigned_partitions,
            None
        );
    }

    #[test]
    fn compression_is_lz4_unless_another_is_named() {
        let default = Config::parse(MINIMAL, no_env()).unwrap();
        assert_eq!(default.compression, Compression::Lz4);
        for (name, expected) in [
            ("none", Compression::None),
            ("gzip", Compression::Gzip),
            ("snappy", Compression::Snappy),
            ("zstd", Compression::Zstd),
        ] {
            let env = vec![("CUSTOMER_PULSE__KAFKA__COMPRESSION".into(), name.into())];
            assert_eq!(Config::parse(MINIMAL, env).unwrap().compression, expected);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("[kafka]\nbrokers = \"\"\n[state]\npath = \"x\"\n", "kafka.brokers"),
            (
                "[kafka]\nbrokers = \"b\"\nauto_offset_reset = \"middle\"\n[state]\npath = \"x\"\n",
                "kafka.auto_offset_reset",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[input]\ncurrency = \"euro\"\n",
                "input.currency",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[input]\nmax_event_bytes = 1\n",
                "input.max_event_bytes",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[http]\nlisten_address = \"nowhere\"\n",
                "http.listen_address",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[topics]\norders = \"a b\"\n",
                "topics.orders",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[topics]\ndead_letter = \"customer.orders\"\n",
                "topics.dead_letter",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[topics]\nchurn_risk = \"log\"\nchangelog = \"log\"\n",
                "topics.changelog",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[http]\nadvertised_url = \"pulse-0:9464\"\n",
                "http.advertised_url",
            ),
            (
                "[kafka]\nbrokers = \"b\"\ngroup_instance_id = \"pulse 0\"\n[state]\npath = \"x\"\n",
                "kafka.group_instance_id",
            ),
            (
                "[kafka]\nbrokers = \"b\"\nassigned_partitions = [0, 6]\n[state]\npath = \"x\"\n",
                "kafka.assigned_partitions",
            ),
            (
                "[kafka]\nbrokers = \"b\"\nassigned_partitions = []\n[state]\npath = \"x\"\n",
                "kafka.assigned_partitions",
            ),
            (
                "[kafka]\nbrokers = \"b\"\nassigned_partitions = [1, 1]\n[state]\npath = \"x\"\n",
                "kafka.assigned_partitions",
            ),
            (
                "[kafka]\nbrokers = \"b\"\nassigned_partitions = [1]\ngroup_instance_id = \"p-0\"\n[state]\npath = \"x\"\n",
                "kafka.assigned_partitions",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[processing]\nmax_event_time_lead_seconds = 2592001\n",
                "processing.max_event_time_lead_seconds",
            ),
            ("[kafka]\nbrokers = \"b\"\nbrokerz = 1\n[state]\npath = \"x\"\n", "brokerz"),
            (
                "[kafka]\nbrokers = \"b\"\nsecurity_protocol = \"tls\"\n[state]\npath = \"x\"\n",
                "kafka.security_protocol",
            ),
            (
                "[kafka]\nbrokers = \"b\"\nsecurity_protocol = \"sasl_ssl\"\nsasl_mechanism = \"PLAIN\"\nsasl_username = \"u\"\n[state]\npath = \"x\"\n",
                "kafka.sasl_password",
            ),
            (
                "[kafka]\nbrokers = \"b\"\nsasl_username = \"u\"\n[state]\npath = \"x\"\n",
                "kafka.sasl_mechanism",
            ),
            (
                "[kafka]\nbrokers = \"b\"\nsecurity_protocol = \"ssl\"\nssl_ca_location = \"/nonexistent/ca.pem\"\n[state]\npath = \"x\"\n",
                "kafka.ssl_ca_location",
            ),
            // A client certificate without its key (a file that exists: the tests run in the
            // repository), and a key password without a key.
            (
                "[kafka]\nbrokers = \"b\"\nsecurity_protocol = \"ssl\"\nssl_certificate_location = \"Cargo.toml\"\n[state]\npath = \"x\"\n",
                "kafka.ssl_key_location",
            ),
            (
                "[kafka]\nbrokers = \"b\"\nsecurity_protocol = \"ssl\"\nssl_key_password = \"k\"\n[state]\npath = \"x\"\n",
                "kafka.ssl_key_password",
            ),
            ("[kafka]\nbrokers = \"b\"\n", "state"),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[churn]\nmodel = \"pareto\"\n",
                "churn.model",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[churn]\na = 1.0\n",
                "churn.a",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[churn]\nb = 1e9\n",
                "churn.b",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[processing]\nshutdown_flush_seconds = 9223372036854775807\n",
                "processing.shutdown_flush_seconds",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[churn]\nr = 700.0\n",
                "churn.r",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[churn]\nalpha = 1e-300\n",
                "churn.alpha",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[churn]\nspend_q = inf\n",
                "churn.spend_q",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[churn]\ntime_unit_days = 1e-12\n",
                "churn.time_unit_days",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[[risk.tiers]]\nname = \"gold\"\nmin_revenue_minor = 100\n[[risk.tiers]]\nname = \"gold\"\n",
                "risk.tiers.name",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[[rfm.segments]]\nname = \"a\"\nr = [4, 5]\n[[rfm.segments]]\nname = \"a\"\n",
                "rfm.segments.name",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[[rfm.segments]]\nname = \"loyal\"\nr = [3, 5]\nf = [3, 5]\n[[rfm.segments]]\nname = \"champions\"\nr = [4, 5]\nf = [4, 5]\n",
                "rfm.segments",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[input]\nmax_future_skew_seconds = 1000000000000000000\n",
                "input.max_future_skew_seconds",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[risk.weights]\ndetractor = 2\n",
                "risk.weights.detractor",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[risk]\nmedium_from = 0.8\n",
                "risk.medium_from",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[risk]\nlost_below_p_alive = 0.6\n",
                "risk.lost_below_p_alive",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[[risk.tiers]]\nname = \"Gold Tier\"\n",
                "risk.tiers.name",
            ),
            ("[kafka]\nbrokers = \"b\"\n[state]\npath = \"\"\n", "state.path"),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[[risk.tiers]]\nname = \"standard\"\n[[risk.tiers]]\nname = \"gold\"\nmin_revenue_minor = 100000\n",
                "risk.tiers",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[[risk.tiers]]\nname = \"gold\"\nmin_revenue_minor = 100\nmin_margin_minor = 10\n[[risk.tiers]]\nname = \"silver\"\nmin_revenue_minor = 100\nmin_margin_minor = 20\n[[risk.tiers]]\nname = \"standard\"\n",
                "risk.tiers",
            ),
            (
                "[kafka]\nbrokers = \"b\"\nfetch_wait_milliseconds = 0\n[state]\npath = \"x\"\n",
                "kafka.fetch_wait_milliseconds",
            ),
            (
                "[kafka]\nbrokers = \"b\"\ncompression = \"brotli\"\n[state]\npath = \"x\"\n",
                "kafka.compression",
            ),
            (
                "[kafka]\nbrokers = \"b\"\n[input]\ncomplaint_categories = [\"billing\", \"delivery\", \"billing\"]\n[state]\npath = \"x\"\n",
                "input.complaint_categories",
            ),
        ];
        for (text, field) in cases {
            let err = format!("{:#}", Config::parse(text, no_env()).unwrap_err());
            assert!(err.contains(field), "{field} not named in: {err}");
        }
    }
}
