//! Synthetic customer traffic: a population with habits, orders, deliveries, contacts, surveys,
//! complaints and cancellations, as contract JSON events in per-customer event-time order.
//! Deterministic for a seed, so tests and benchmarks can regenerate the same stream.
//! Must not know where the events go (a file, a broker).

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::event::{format_millis, parse_millis, Millis};

/// A small, fast, seedable generator (SplitMix64); statistical quality is ample for traffic.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

const CATEGORIES: [&str; 7] = [
    "billing",
    "delivery",
    "product_quality",
    "service",
    "website",
    "refund",
    "privacy",
];
const CHANNELS: [&str; 6] = ["web", "phone", "email", "store", "chat", "mobile"];
const CANCEL_REASONS: [&str; 4] = ["price", "competitor", "Service", "moved away"];

/// One generated event: the customer (message key), its topic stream and the JSON value.
#[derive(Debug, Clone)]
pub struct Generated {
    pub customer_id: String,
    pub type_name: &'static str,
    pub value: Value,
}

/// Traffic shape.
#[derive(Debug, Clone)]
pub struct TrafficSpec {
    pub customers: u64,
    pub events: u64,
    /// Picks the stream. Event, order and complaint ids carry it, so streams of two seeds over
    /// the same customers (live traffic after a history) share none: a second stream's order
    /// with the first's id, still open, would be taken for the first published again.
    pub seed: u64,
    /// Event time of the first event.
    pub start_ms: Millis,
    /// Mean event-time step between consecutive events of the whole stream.
    pub step_ms: Millis,
}

struct Customer {
    id: String,
    registered: bool,
    next_order: u64,
    open_orders: Vec<String>,
    /// The order last delivered, which a return takes back.
    delivered: Option<String>,
    next_complaint: u64,
    open_complaints: Vec<String>,
    cancelled: bool,
}

/// [`generate`], with the whole stream moved earlier where needed so that no event lies after
/// `latest_ms`. Each step is random around `spec.step_ms`, so the last event falls about
/// `events × step_ms` after the first, give or take: hours, for a month of traffic. Events
/// ahead of the clock would be refused as `future_timestamp`.
pub fn generate_until(spec: &TrafficSpec, latest_ms: Millis) -> Vec<Generated> {
    let generated = generate(spec);
    let last = generated
        .last()
        .and_then(|g| g.value["occurred_at"].as_str())
        .and_then(parse_millis);
    match last {
        // The steps do not depend on the start: the same stream, moved.
        Some(last) if last > latest_ms => generate(&TrafficSpec {
            start_ms: spec.start_ms - (last - latest_ms),
            ..spec.clone()
        }),
        _ => generated,
    }
}

/// Generates `spec.events` events over `spec.customers` customers.
pub fn generate(spec: &TrafficSpec) -> Vec<Generated> {
    let mut rng = Rng::new(spec.seed);
    let count = spec.customers.max(1);
    // Made at their first event: no more than the events, however many customers are asked
    // for (a billion took the machine's memory before the first event was written).
    let mut customers: HashMap<u64, Customer> = HashMap::new();
    let mut out = Vec::with_capacity(spec.events as usize);
    let mut now = spec.start_ms;
    for n in 0..spec.events {
        now += spec.step_ms / 2 + rng.below(spec.step_ms.max(1) as u64) as Millis;
        // A skewed pick: a fifth of the customers produce most of the traffic.
        let pick = if rng.chance(0.6) {
            rng.below(count.div_ceil(5))
        } else {
            rng.below(count)
        };
        let c = customers.entry(pick).or_insert_with(|| Customer {
            id: format!("c-{pick:07}"),
            registered: false,
            next_order: 0,
            open_orders: Vec::new(),
            delivered: None,
            next_complaint: 0,
            open_complaints: Vec::new(),
            cancelled: false,
        });
        let event_id = format!("e-{}-{n}", spec.seed);
        let mut base = json!({
            "event_id": event_id,
            "customer_id": c.id,
            "occurred_at": format_millis(now),
        });
        let (type_name, fields): (&'static str, Value) = if !c.registered {
            c.registered = true;
            let referred = rng.chance(0.1) && pick > 0;
            let mut f = json!({ "channel": CHANNELS[rng.below(6) as usize] });
            if referred {
                f["referred_by"] = json!(format!("c-{:07}", rng.below(pick)));
            }
            ("customer.registered", f)
        } else {
            let roll = rng.below(100);
            match roll {
                0..=34 => {
                    let order_id = format!("{}-s{}-o{}", c.id, spec.seed, c.next_order);
                    c.next_order += 1;
                    c.open_orders.push(order_id.clone());
                    let amount = 500 + rng.below(20_000) as i64;
                    let margin = amount / 4 - rng.below(600) as i64;
                    (
                        "order.placed",
                        json!({"order_id": order_id, "amount_minor": amount, "margin_minor": margin, "currency": "EUR"}),
                    )
                }
                35..=49 if !c.open_orders.is_empty() => {
                    let order_id = c.open_orders.remove(0);
                    c.delivered = Some(order_id.clone());
                    ("order.delivered", json!({"order_id": order_id}))
                }
                50..=52 if c.delivered.is_some() => (
                    "order.returned",
                    json!({"order_id": c.delivered, "amount_minor": 500 + rng.below(2_000) as i64}),
                ),
                53..=54 if !c.open_orders.is_empty() => {
                    let order_id = c.open_orders.pop().unwrap_or_default();
                    ("order.cancelled", json!({"order_id": order_id}))
                }
                55..=69 => (
                    "interaction.contact",
                    json!({
                        "channel": CHANNELS[rng.below(6) as usize],
                        "direction": if rng.chance(0.7) { "inbound" } else { "outbound" },
                        "first_response_seconds": rng.below(7_200),
                        "handle_seconds": rng.below(1_800),
                    }),
                ),
                70..=77 => ("interaction.survey", json!({"score": rng.below(11)})),
                78..=85 => {
                    let complaint_id = format!("{}-s{}-k{}", c.id, spec.seed, c.next_complaint);
                    c.next_complaint += 1;
                    c.open_complaints.push(complaint_id.clone());
                    let severity = ["low", "medium", "high", "critical"][rng.below(4) as usize];
                    (
                        "complaint.opened",
                        json!({"complaint_id": complaint_id, "category": CATEGORIES[rng.below(7) as usize], "severity": severity}),
                    )
                }
                86..=91 if !c.open_complaints.is_empty() => {
                    let complaint_id = c.open_complaints.remove(0);
                    (
                        "complaint.resolved",
                        json!({"complaint_id": complaint_id, "satisfied": rng.chance(0.7)}),
                    )
                }
                92..=97 if !c.cancelled => (
                    "subscription.renewed",
                    json!({"amount_minor": 999, "plan": "monthly", "reason": "auto"}),
                ),
                98..=99 if !c.cancelled => {
                    c.cancelled = true;
                    (
                        "subscription.cancelled",
                        json!({"reason": CANCEL_REASONS[rng.below(4) as usize]}),
                    )
                }
                _ => (
                    "interaction.contact",
                    json!({"channel": "email", "direction": "outbound"}),
                ),
            }
        };
        base["type"] = json!(type_name);
        if let (Value::Object(b), Value::Object(f)) = (&mut base, fields) {
            b.extend(f);
        }
        out.push(Generated {
            customer_id: c.id.clone(),
            type_name,
            value: base,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Customers are made at their first event: traffic over more customers than the machine
    /// could hold takes memory for the events' customers alone (before, every customer asked
    /// for was made first, and this asked for an allocation the size of the address space).
    #[test]
    fn traffic_over_more_customers_than_fit_in_memory_makes_only_those_it_names() {
        let events = generate(&TrafficSpec {
            customers: u64::MAX,
            events: 1_000,
            seed: 5,
            start_ms: 0,
            step_ms: 1_000,
        });
        assert_eq!(events.len(), 1_000);
        let named: std::collections::BTreeSet<&str> =
            events.iter().map(|e| e.customer_id.as_str()).collect();
        assert!(named.len() > 500, "{}", named.len());
        assert!(
            named.iter().any(|id| id.len() > 15),
            "ids from the whole range"
        );
    }

    fn last_at(events: &[Generated]) -> Millis {
        let last = events.last().expect("events");
        parse_millis(last.value["occurred_at"].as_str().expect("a time")).expect("RFC 3339")
    }

    #[test]
    fn streams_of_two_seeds_share_no_event_order_or_complaint_id() {
        let ids = |seed: u64| -> std::collections::BTreeSet<String> {
            let spec = TrafficSpec {
                customers: 20,
                events: 2_000,
                seed,
                start_ms: 1_764_547_200_000,
                step_ms: 60_000,
            };
            generate(&spec)
                .iter()
                .flat_map(|g| {
                    ["event_id", "order_id", "complaint_id"]
                        .into_iter()
                        .filter_map(|field| g.value[field].as_str())
                        .map(|id| format!("{}:{id}", g.type_name))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let (first, second) = (ids(1), ids(2));
        let opened = |ids: &std::collections::BTreeSet<String>| {
            ids.iter()
                .filter(|id| id.starts_with("order.placed:") || id.starts_with("complaint.opened:"))
                .count()
        };
        assert!(opened(&first) > 100 && opened(&second) > 100);
        let shared: Vec<_> = first.intersection(&second).collect();
        let some: Vec<_> = shared.iter().take(5).collect();
        assert!(
            shared.is_empty(),
            "{} shared, such as {some:?}",
            shared.len()
        );
    }

    #[test]
    fn every_return_takes_back_an_order_delivered_before_it() {
        let spec = TrafficSpec {
            customers: 20,
            events: 5_000,
            seed: 3,
            start_ms: 1_764_547_200_000,
            step_ms: 60_000,
        };
        let mut delivered = std::collections::BTreeSet::new();
        let mut returns = 0;
        for g in generate(&spec) {
            let order = g.value["order_id"].as_str().map(str::to_owned);
            match g.type_name {
                "order.delivered" => {
                    delivered.insert(order.expect("an order id"));
                }
                "order.returned" => {
                    let order = order.expect("an order id");
                    assert!(delivered.contains(&order), "{order} returned undelivered");
                    returns += 1;
                }
                _ => {}
            }
        }
        assert!(returns > 50, "{returns} returns");
    }

    #[test]
    fn a_stream_generated_until_a_time_ends_by_it_and_is_otherwise_the_same() {
        const NOW: Millis = 1_764_547_200_000; // 2025-12-01T00:00:00Z
        let mut overshot = 0;
        for seed in 1..=10 {
            let spec = TrafficSpec {
                customers: 100,
                events: 2_000,
                seed,
                start_ms: NOW - 30 * 86_400_000,
                step_ms: 30 * 86_400_000 / 2_000,
            };
            let plain = generate(&spec);
            let until = generate_until(&spec, NOW);
            assert!(last_at(&until) <= NOW, "seed {seed}");
            let shift = (last_at(&plain) - NOW).max(0);
            overshot += usize::from(shift > 0);
            for (p, u) in plain.iter().zip(&until) {
                let at = |g: &Generated| parse_millis(g.value["occurred_at"].as_str().unwrap());
                assert_eq!(at(u), at(p).map(|t| t - shift), "seed {seed}");
                assert_eq!((&p.customer_id, p.type_name), (&u.customer_id, u.type_name));
            }
        }
        // The case the function is for happens with these seeds.
        assert!(overshot > 0, "no seed ran past the end");
    }
}
