//! What a batch did, for telemetry to record once per batch: the [`BatchReport`] the processor
//! returns, with how the customer cache served the batch and how fast its customers were
//! served. Counts and values only: must not know how they are recorded (Prometheus, the
//! replay's summary) or how the processor came by them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::event::{EventKind, Millis};
use crate::fold::CustomerState;
use crate::segments::{Flows, Population};
use crate::trends::{ClosedWindow, Verdict};

/// How the customer cache served its lookups (each event's customer, each due timer's, each
/// referrer's): from memory, read from the store, or in neither (a customer new to the
/// instance). Only the reads are what a larger `state.cache_customers` could save.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheLookups {
    pub hit: u64,
    pub stored: u64,
    pub absent: u64,
}

impl CacheLookups {
    /// Each count under its name as a metric's label gives it.
    pub fn by_result(self) -> [(&'static str, u64); 3] {
        [
            ("hit", self.hit),
            ("stored", self.stored),
            ("absent", self.absent),
        ]
    }

    pub fn add(&mut self, other: CacheLookups) {
        self.hit += other.hit;
        self.stored += other.stored;
        self.absent += other.absent;
    }
}

/// How many outcomes of each kind a batch had, for telemetry to record once per batch.
#[derive(Debug, Default, Clone)]
pub struct BatchReport {
    /// `(source, event type or "invalid", outcome)` to count.
    pub events: hashbrown::HashMap<(String, &'static str, &'static str), u64>,
    pub dead_letters: HashMap<&'static str, u64>,
    /// Events applied at a per-customer bound, by the bound's code.
    pub limits_reached: HashMap<&'static str, u64>,
    /// Events read from an input partition other than the one Kafka's Java client puts their
    /// customer in, by `(source, partition)`: their publisher partitions otherwise.
    pub off_partition: HashMap<(Arc<str>, i32), u64>,
    pub customers_written: usize,
    pub outbox_records: usize,
    /// Broker append times of the records, to measure processing latency at commit.
    pub append_times_ms: Vec<Millis>,
    /// The next offsets the commit stored, `(source, partition, next)`.
    pub offsets: Vec<(String, i32, i64)>,
    /// Churn-risk records published (tombstones excluded), and timers fired.
    pub risk_records: usize,
    pub timers_fired: usize,
    /// How the customer cache served the batch's lookups.
    pub cache_lookups: CacheLookups,
    /// Complaints opened, by `(category, severity)`.
    pub complaints_opened: HashMap<(String, &'static str), u64>,
    /// Complaint windows the batch closed, oldest first.
    pub closed_windows: Vec<ClosedWindow>,
    /// Open complaints per category after the batch, when the batch changed them.
    pub open_complaints: Vec<(String, i64)>,
    /// Each category's last closed window's verdict, with `open_complaints`.
    pub verdicts: Vec<(String, Verdict)>,
    /// What the batch counted per segment (late flows included).
    pub segment_flows: BTreeMap<String, Flows>,
    /// The segment population and net margin to date after the batch, when it changed them.
    pub population: Option<(BTreeMap<String, Population>, BTreeMap<String, i64>)>,
    /// Segment-days the batch closed.
    pub closed_days: usize,
    /// Facts the aggregator applied to a complaint window or segment-day it had already
    /// emitted: changes the emitted records do not show.
    pub late_facts: u64,
    /// Changelog records the aggregator could not read and skipped (`PartitionFacts::unreadable`).
    pub unreadable_changelog_records: u64,
    /// Customers per named RFM segment, when a closed day recomputed the scales.
    pub rfm_segments: Option<BTreeMap<String, i64>>,
    /// How fast the customers were served, per event that measured it.
    pub service: ServiceTimes,
}

/// Service times (DOMAIN.md: measure service speed), one per applied event that gave one, in
/// seconds as the fold counts them.
#[derive(Debug, Default, Clone)]
pub struct ServiceTimes {
    /// A contact's first response, by channel.
    pub first_response: Vec<(&'static str, u64)>,
    /// An order to its delivery.
    pub delivery: Vec<u64>,
    /// A complaint's opening to its resolution, by category.
    pub resolution: Vec<(String, u64)>,
}

impl ServiceTimes {
    pub(super) fn absorb(&mut self, other: ServiceTimes) {
        self.first_response.extend(other.first_response);
        self.delivery.extend(other.delivery);
        self.resolution.extend(other.resolution);
    }

    /// Adds what `event` added to the fold's service-time sums, from `before` to `after`: a
    /// delivery or a resolution by its own event, or by the order or complaint that an early
    /// one waited for. A resolution counts in the category of the complaint it resolved,
    /// `resolved`.
    pub(super) fn note(
        &mut self,
        event: &EventKind,
        (before, after): (ServiceSums, ServiceSums),
        resolved: Option<&str>,
    ) {
        if let EventKind::Contact { channel, .. } = event {
            if after.responses > before.responses {
                let seconds = after.response_seconds - before.response_seconds;
                self.first_response.push((channel.name(), seconds));
            }
        }
        if after.deliveries > before.deliveries {
            self.delivery
                .push(after.delivery_seconds - before.delivery_seconds);
        }
        if after.resolved > before.resolved {
            let seconds = after.resolution_seconds - before.resolution_seconds;
            let category = resolved.unwrap_or("other").to_owned();
            self.resolution.push((category, seconds));
        }
    }
}

/// The fold's service-time sums of one customer, to tell what one event added to them.
#[derive(Debug, Clone, Copy)]
pub(super) struct ServiceSums {
    responses: u32,
    response_seconds: u64,
    deliveries: u32,
    delivery_seconds: u64,
    resolved: u32,
    resolution_seconds: u64,
}

impl ServiceSums {
    pub(super) fn of(state: &CustomerState) -> ServiceSums {
        ServiceSums {
            responses: state.first_responses,
            response_seconds: state.first_response_seconds_total,
            deliveries: state.deliveries,
            delivery_seconds: state.delivery_seconds_total,
            resolved: state.complaints_resolved,
            resolution_seconds: state.resolution_seconds_total,
        }
    }
}

impl BatchReport {
    /// Adds another report's counts to this one.
    pub(super) fn absorb(&mut self, other: BatchReport) {
        for (k, n) in other.events {
            *self.events.entry(k).or_default() += n;
        }
        for (k, n) in other.dead_letters {
            *self.dead_letters.entry(k).or_default() += n;
        }
        for (k, n) in other.limits_reached {
            *self.limits_reached.entry(k).or_default() += n;
        }
        for (k, n) in other.off_partition {
            *self.off_partition.entry(k).or_default() += n;
        }
        for (k, n) in other.complaints_opened {
            *self.complaints_opened.entry(k).or_default() += n;
        }
        self.customers_written += other.customers_written;
        self.outbox_records += other.outbox_records;
        self.append_times_ms.extend(other.append_times_ms);
        for (source, partition, next) in other.offsets {
            match self
                .offsets
                .iter_mut()
                .find(|(s, p, _)| *s == source && *p == partition)
            {
                Some(entry) => entry.2 = entry.2.max(next),
                None => self.offsets.push((source, partition, next)),
            }
        }
        self.risk_records += other.risk_records;
        self.timers_fired += other.timers_fired;
        self.cache_lookups.add(other.cache_lookups);
        self.service.absorb(other.service);
        self.closed_windows.extend(other.closed_windows);
        if !other.open_complaints.is_empty() {
            self.open_complaints = other.open_complaints;
        }
        if !other.verdicts.is_empty() {
            self.verdicts = other.verdicts;
        }
        for (segment, flows) in other.segment_flows {
            self.segment_flows.entry(segment).or_default().merge(&flows);
        }
        if other.population.is_some() {
            self.population = other.population;
        }
        self.closed_days += other.closed_days;
        self.late_facts += other.late_facts;
        self.unreadable_changelog_records += other.unreadable_changelog_records;
        if other.rfm_segments.is_some() {
            self.rfm_segments = other.rfm_segments;
        }
    }

    /// Counts one event of `kind` from `source` with `outcome`; the source is copied only the
    /// first time.
    pub(super) fn count_event(&mut self, source: &str, kind: &'static str, outcome: &'static str) {
        match self.events.get_mut(&EventKey(source, kind, outcome)) {
            Some(n) => *n += 1,
            None => {
                self.events.insert((source.to_owned(), kind, outcome), 1);
            }
        }
    }

    pub fn count(&self, outcome: &str) -> u64 {
        self.events
            .iter()
            .filter(|((_, _, o), _)| *o == outcome)
            .map(|(_, n)| n)
            .sum()
    }
}

/// `BatchReport::events`' key borrowed, hashing as the owned tuple does.
#[derive(Hash)]
struct EventKey<'a>(&'a str, &'static str, &'static str);

impl hashbrown::Equivalent<(String, &'static str, &'static str)> for EventKey<'_> {
    fn equivalent(&self, key: &(String, &'static str, &'static str)) -> bool {
        self.0 == key.0 && self.1 == key.1 && self.2 == key.2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_counts_repeated_outcomes_under_one_key() {
        let mut report = BatchReport::default();
        for _ in 0..3 {
            report.count_event("customer.orders", "order_placed", "applied");
        }
        report.count_event("customer.orders", "order_placed", "duplicate");
        report.count_event("customer.interactions", "order_placed", "applied");
        assert_eq!(report.events.len(), 3);
        let key = |source: &str, outcome| (source.to_owned(), "order_placed", outcome);
        assert_eq!(report.events[&key("customer.orders", "applied")], 3);
        assert_eq!(report.events[&key("customer.orders", "duplicate")], 1);
        assert_eq!(report.events[&key("customer.interactions", "applied")], 1);
    }
}
