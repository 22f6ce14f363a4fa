//! Configuration in two stages: [`RawConfig`] is what the user wrote (TOML, unknown fields
//! rejected, every option overridable by an environment variable), [`Config`] is the validated
//! result with typed durations, passed explicitly to whoever needs it. Must not know about Kafka
//! clients, RocksDB handles or the pipeline: it only describes them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::decode::Rules;
use crate::fold::FoldLimits;

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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTopics {
    pub interactions: String,
    pub orders: String,
    pub complaints: String,
    pub churn_risk: String,
    pub dead_letter: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawInput {
    /// Partition count of the input topics (all three must have it).
    pub partitions: i32,
    pub max_event_bytes: usize,
    pub max_future_skew_seconds: u64,
    pub currency: String,
    pub dedup_horizon_days: u64,
    pub max_dedup_ids_per_customer: usize,
    pub max_open_items_per_customer: usize,
    pub complaint_categories: Vec<String>,
    pub cancellation_reasons: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawState {
    pub path: PathBuf,
    #[serde(default = "default_cache_customers")]
    pub cache_customers: usize,
    #[serde(default = "default_block_cache_bytes")]
    pub block_cache_bytes: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProcessing {
    pub max_batch_events: usize,
    pub max_batch_wait_milliseconds: u64,
    pub shutdown_flush_seconds: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawHttp {
    pub listen_address: String,
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
            dead_letter: "customer.events.dlq".into(),
        }
    }
}

impl Default for RawInput {
    fn default() -> Self {
        RawInput {
            partitions: 6,
            max_event_bytes: 64 * 1024,
            max_future_skew_seconds: 300,
            currency: "EUR".into(),
            dedup_horizon_days: 30,
            max_dedup_ids_per_customer: 10_000,
            max_open_items_per_customer: 1_000,
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
        }
    }
}

impl Default for RawProcessing {
    fn default() -> Self {
        RawProcessing {
            max_batch_events: 5_000,
            max_batch_wait_milliseconds: 50,
            shutdown_flush_seconds: 30,
        }
    }
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp {
            listen_address: "127.0.0.1:9464".into(),
        }
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
    pub group_id: String,
    pub offset_reset: OffsetReset,
    pub session_timeout: std::time::Duration,
    pub topics: Topics,
    pub partitions: i32,
    pub rules: Rules,
    pub limits: FoldLimits,
    pub state_path: PathBuf,
    pub cache_customers: usize,
    pub block_cache_bytes: usize,
    pub max_batch_events: usize,
    pub max_batch_wait: std::time::Duration,
    pub shutdown_flush: std::time::Duration,
    pub listen_address: std::net::SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Topics {
    pub interactions: String,
    pub orders: String,
    pub complaints: String,
    pub churn_risk: String,
    pub dead_letter: String,
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
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                apply_override(&mut doc, path, &value)
                    .with_context(|| format!("environment variable {name}"))?;
            }
        }
        let raw: RawConfig = toml::Value::Table(doc).try_into()?;
        raw.validate()
    }
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
        let t = &self.topics;
        for (field, name) in [
            ("topics.interactions", &t.interactions),
            ("topics.orders", &t.orders),
            ("topics.complaints", &t.complaints),
            ("topics.churn_risk", &t.churn_risk),
            ("topics.dead_letter", &t.dead_letter),
        ] {
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
            i.max_dedup_ids_per_customer >= 1,
            "input.max_dedup_ids_per_customer",
            "must be at least 1",
        )?;
        check(
            i.max_open_items_per_customer >= 1,
            "input.max_open_items_per_customer",
            "must be at least 1",
        )?;
        for (field, set) in [
            ("input.complaint_categories", &i.complaint_categories),
            ("input.cancellation_reasons", &i.cancellation_reasons),
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
        check(
            (1..=1_000_000).contains(&p.max_batch_events),
            "processing.max_batch_events",
            "must be between 1 and 1000000",
        )?;
        check(
            (1..=60_000).contains(&p.max_batch_wait_milliseconds),
            "processing.max_batch_wait_milliseconds",
            "must be between 1 and 60000",
        )?;
        let listen_address = self.http.listen_address.parse().map_err(|_| {
            anyhow::anyhow!(
                "config field `http.listen_address` must be an address such as 127.0.0.1:9464, not {:?}",
                self.http.listen_address
            )
        })?;
        Ok(Config {
            brokers: self.kafka.brokers,
            group_id: self.kafka.group_id,
            offset_reset,
            session_timeout: std::time::Duration::from_millis(
                self.kafka.session_timeout_milliseconds,
            ),
            partitions: i.partitions,
            rules: Rules {
                max_event_bytes: i.max_event_bytes,
                max_future_skew_ms: (i.max_future_skew_seconds * 1000) as i64,
                currency: i.currency.clone(),
                complaint_categories: i.complaint_categories.clone(),
                cancellation_reasons: i.cancellation_reasons.clone(),
            },
            limits: FoldLimits {
                dedup_horizon_ms: (i.dedup_horizon_days * 86_400_000) as i64,
                max_dedup_ids: i.max_dedup_ids_per_customer,
                max_open_items: i.max_open_items_per_customer,
            },
            topics: Topics {
                interactions: self.topics.interactions,
                orders: self.topics.orders,
                complaints: self.topics.complaints,
                churn_risk: self.topics.churn_risk,
                dead_letter: self.topics.dead_letter,
            },
            state_path: self.state.path,
            cache_customers: self.state.cache_customers,
            block_cache_bytes: self.state.block_cache_bytes,
            max_batch_events: p.max_batch_events,
            max_batch_wait: std::time::Duration::from_millis(p.max_batch_wait_milliseconds),
            shutdown_flush: std::time::Duration::from_secs(p.shutdown_flush_seconds),
            listen_address,
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
            ("[kafka]\nbrokers = \"b\"\nbrokerz = 1\n[state]\npath = \"x\"\n", "brokerz"),
            ("[kafka]\nbrokers = \"b\"\n", "state"),
        ];
        for (text, field) in cases {
            let err = format!("{:#}", Config::parse(text, no_env()).unwrap_err());
            assert!(err.contains(field), "{field} not named in: {err}");
        }
    }
}
