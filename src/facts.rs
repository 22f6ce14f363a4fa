//! What a change of one customer did to the aggregates (complaint trends, segment metrics, RFM
//! histograms), as data. A single instance applies each fact to its aggregates as it happens.
//! With several instances (the changelog on), each customer's changelog record also carries the
//! facts its change caused, so that one aggregator, reading every partition's changelog, applies
//! exactly the facts of the changes that count there, once each, whoever made them (see
//! `aggregator`). Pure: must not know about Kafka, RocksDB or the wall clock.

use serde::{Deserialize, Serialize};

use crate::event::{Millis, Severity};
use crate::rfm::{Point, Rfm};
use crate::segments::{Flow, Segments, Standing};
use crate::trends::{Counted, TrendSettings, Trends};

/// One change to the aggregates, with the event time it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Fact {
    /// A complaint opened (CONTRACT: `complaint.opened`).
    Opened {
        category: String,
        severity: Severity,
        at: Millis,
    },
    /// A complaint of `category`, opened at `opened_at`, resolved at `at`.
    Resolved {
        category: String,
        opened_at: Millis,
        at: Millis,
    },
    /// An open complaint leaves the backlog unresolved (its customer erased, or it opened past
    /// the limit of open items) where the fact is read: as facts written before
    /// [`Fact::LeftOpen`] say it, still read.
    ForgetOpen { category: String },
    /// A flow of `segment` in the day of `at` (late when that day was emitted).
    Count {
        segment: String,
        at: Millis,
        flow: OwnedFlow,
    },
    /// A change of standing (new, lost, won back), counted in the first open day if the day of
    /// `at` was emitted.
    CountChange {
        segment: String,
        at: Millis,
        flow: OwnedFlow,
    },
    /// A customer moved from one standing in the population to another at `at`.
    Restand {
        old: Option<Standing>,
        new: Option<Standing>,
        at: Millis,
    },
    /// A customer moved in the RFM histograms.
    Relocate {
        old: Option<Point>,
        new: Option<Point>,
    },
    /// An open complaint of `category` leaves the backlog unresolved in the window of `at`:
    /// its customer was erased at `at`, or it opened at `at` past the customer's limit of open
    /// items. Last, so that the facts written before it keep their encoding.
    LeftOpen { category: String, at: Millis },
}

/// [`Flow`] with its reasons owned, to be stored and sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum OwnedFlow {
    Order {
        amount_minor: i64,
        margin_minor: i64,
    },
    New {
        value_minor: i64,
    },
    Lost {
        value_minor: i64,
        reason: String,
    },
    WonBack,
    Renewal {
        reason: String,
    },
    Referral,
}

impl OwnedFlow {
    pub fn of(flow: Flow) -> OwnedFlow {
        match flow {
            Flow::Order {
                amount_minor,
                margin_minor,
            } => OwnedFlow::Order {
                amount_minor,
                margin_minor,
            },
            Flow::New { value_minor } => OwnedFlow::New { value_minor },
            Flow::Lost {
                value_minor,
                reason,
            } => OwnedFlow::Lost {
                value_minor,
                reason: reason.to_owned(),
            },
            Flow::WonBack => OwnedFlow::WonBack,
            Flow::Renewal { reason } => OwnedFlow::Renewal {
                reason: reason.to_owned(),
            },
            Flow::Referral => OwnedFlow::Referral,
        }
    }

    pub fn as_flow(&self) -> Flow<'_> {
        match self {
            OwnedFlow::Order {
                amount_minor,
                margin_minor,
            } => Flow::Order {
                amount_minor: *amount_minor,
                margin_minor: *margin_minor,
            },
            OwnedFlow::New { value_minor } => Flow::New {
                value_minor: *value_minor,
            },
            OwnedFlow::Lost {
                value_minor,
                reason,
            } => Flow::Lost {
                value_minor: *value_minor,
                reason,
            },
            OwnedFlow::WonBack => Flow::WonBack,
            OwnedFlow::Renewal { reason } => Flow::Renewal { reason },
            OwnedFlow::Referral => Flow::Referral,
        }
    }
}

/// The aggregates a fact changes.
pub struct Target<'a> {
    pub trends: &'a mut Trends,
    pub segments: &'a mut Segments,
    pub rfm: &'a mut Rfm,
    pub settings: &'a TrendSettings,
}

impl Fact {
    /// Applies the fact; whether it reached an open window or day.
    pub fn apply(&self, to: &mut Target) -> Counted {
        let s = to.settings;
        match self {
            Fact::Opened {
                category,
                severity,
                at,
            } => to.trends.opened(category, *severity, *at, s),
            Fact::Resolved {
                category,
                opened_at,
                at,
            } => to.trends.resolved(category, *opened_at, *at, s),
            Fact::ForgetOpen { category } => to.trends.left_open(category, None, s),
            Fact::LeftOpen { category, at } => to.trends.left_open(category, Some(*at), s),
            Fact::Count { segment, at, flow } => to.segments.count(segment, *at, flow.as_flow()),
            Fact::CountChange { segment, at, flow } => {
                to.segments.count_change(segment, *at, flow.as_flow());
                Counted::InWindow
            }
            Fact::Restand { old, new, at } => {
                to.segments.restand(old.as_ref(), new.as_ref(), *at);
                Counted::InWindow
            }
            Fact::Relocate { old, new } => {
                to.rfm.relocate(*old, *new);
                Counted::InWindow
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::Lifecycle;
    use crate::risk::Level;
    use crate::store::{decode_facts as decode, encode_facts as encode};

    fn every_kind() -> Vec<Fact> {
        let standing = Standing {
            segment: "gold".into(),
            lifecycle: Lifecycle::Active,
            level: Level::High,
            ltv_minor: 12_345,
        };
        let flows = [
            OwnedFlow::Order {
                amount_minor: 1_000,
                margin_minor: -20,
            },
            OwnedFlow::New { value_minor: 5 },
            OwnedFlow::Lost {
                value_minor: 7,
                reason: "silence".into(),
            },
            OwnedFlow::WonBack,
            OwnedFlow::Renewal {
                reason: "price".into(),
            },
            OwnedFlow::Referral,
        ];
        let mut facts = vec![
            Fact::Opened {
                category: "billing".into(),
                severity: Severity::High,
                at: 1_700_000_000_000,
            },
            Fact::Resolved {
                category: "billing".into(),
                opened_at: 1_700_000_000_000,
                at: 1_700_000_360_000,
            },
            Fact::ForgetOpen {
                category: "delivery".into(),
            },
            Fact::Opened {
                category: "billing".into(),
                severity: Severity::Low,
                at: 1_700_000_600_000,
            },
            Fact::LeftOpen {
                category: "billing".into(),
                at: 1_700_000_720_000,
            },
            Fact::Restand {
                old: None,
                new: Some(standing),
                at: 7,
            },
            Fact::Relocate {
                old: Some(Point {
                    last_day: 19_000,
                    orders: 3,
                    monetary_bucket: -2,
                }),
                new: None,
            },
        ];
        for flow in flows {
            assert_eq!(
                OwnedFlow::of(flow.as_flow()),
                flow,
                "a flow owned and borrowed"
            );
            facts.push(Fact::Count {
                segment: "silver".into(),
                at: 5,
                flow: flow.clone(),
            });
            facts.push(Fact::CountChange {
                segment: "bronze".into(),
                at: 86_400_000,
                flow,
            });
        }
        facts
    }

    #[test]
    fn every_kind_of_fact_reads_back_as_written() {
        let facts = every_kind();
        assert_eq!(decode(&encode(&facts)), Ok(facts));
        assert_eq!(decode(&encode(&[])), Ok(Vec::new()));
    }

    #[test]
    fn facts_without_a_complaint_left_open_keep_the_version_an_earlier_build_reads() {
        let without: Vec<Fact> = every_kind()
            .into_iter()
            .filter(|f| !matches!(f, Fact::LeftOpen { .. }))
            .collect();
        let bytes = encode(&without);
        assert_eq!(bytes[0], 1);
        assert_eq!(decode(&bytes), Ok(without));
        assert_eq!(encode(&every_kind())[0], 2);
    }

    #[test]
    fn unknown_versions_and_truncated_bodies_are_errors() {
        let mut bytes = encode(&every_kind());
        assert!(decode(&[]).is_err());
        bytes[0] = 3;
        assert!(decode(&bytes).unwrap_err().contains("version 3"));
        bytes[0] = 2;
        bytes.truncate(bytes.len() / 2);
        assert!(decode(&bytes).is_err());
    }

    #[test]
    fn facts_applied_in_two_halves_equal_facts_applied_at_once() {
        let settings = TrendSettings::defaults(&["billing", "delivery"]);
        let facts = every_kind();
        let apply = |chunks: &[&[Fact]]| {
            let (mut trends, mut segments, mut rfm) =
                (Trends::default(), Segments::default(), Rfm::default());
            for chunk in chunks {
                let mut to = Target {
                    trends: &mut trends,
                    segments: &mut segments,
                    rfm: &mut rfm,
                    settings: &settings,
                };
                for fact in *chunk {
                    fact.apply(&mut to);
                }
            }
            (
                trends,
                segments,
                rfm.segment_counts(&crate::rfm::default_rules()),
            )
        };
        let (first, second) = facts.split_at(4);
        let whole = apply(&[&facts]);
        assert_eq!(apply(&[first, second]), whole);
        let (trends, segments, _) = whole;
        assert_eq!(trends.categories["billing"].open_backlog, 0);
        // Each of the six flows once as a count in day 0, once as a change in day 1.
        for (day, segment) in [(0, "silver"), (86_400_000, "bronze")] {
            let f = &segments.days[&day][segment];
            let counts = (f.orders, f.new_customers, f.lost_customers, f.won_back);
            assert_eq!(counts, (1, 1, 1, 1), "{segment}");
            assert_eq!((f.renewals, f.referrals), (1, 1), "{segment}");
            assert_eq!((f.revenue_minor, f.margin_minor), (1_000, -20), "{segment}");
            assert_eq!(f.lost_reasons["silence"], 1, "{segment}");
        }
        assert_eq!(segments.population["gold"].active(), 1);
    }
}
