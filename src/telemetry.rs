//! Telemetry: the only module that registers Prometheus metrics. Everything else hands it
//! per-batch reports; nothing on the hot path touches a metric per event. Also the log's
//! throttle of repeated warnings ([`repeated`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::decode::Reason;
use crate::event::Millis;
use crate::outbox::Outbox;
use crate::processor::{BatchReport, CacheLookups};
use crate::segments::{LEVELS, LIFECYCLES};
use crate::trends::Period;

const NAMESPACE: &str = "customer_pulse";

pub struct Telemetry {
    registry: Registry,
    /// The full name of every metric family registered.
    names: Vec<String>,
    events: IntCounterVec,
    dead_letters: IntCounterVec,
    limits_reached: IntCounterVec,
    off_partition: IntCounterVec,
    /// The input partitions whose off-partition events were warned of.
    off_partition_warned: Mutex<HashSet<(Arc<str>, i32)>>,
    processing_latency: Histogram,
    commit_duration: Histogram,
    commits_failed: IntCounter,
    kafka_errors: IntCounterVec,
    delivery_failures: IntCounter,
    customers_written: IntCounter,
    cache_lookups: IntCounterVec,
    timers_fired: IntCounter,
    complaints_opened: IntCounterVec,
    first_response: HistogramVec,
    delivery: Histogram,
    resolution: HistogramVec,
    complaints_open: IntGaugeVec,
    complaint_spike: IntGaugeVec,
    complaint_z_score: GaugeVec,
    complaint_windows: IntCounterVec,
    churn_risk_records: IntCounter,
    customers: IntGaugeVec,
    risk_levels: IntGaugeVec,
    orders: IntCounterVec,
    revenue: IntCounterVec,
    margin: IntGaugeVec,
    new_customers: IntCounterVec,
    new_value: IntCounterVec,
    lost_customers: IntCounterVec,
    lost_value: IntCounterVec,
    won_back: IntCounterVec,
    renewals: IntCounterVec,
    referrals: IntCounterVec,
    segment_metrics_records: IntCounter,
    rfm_customers: IntGaugeVec,
    state_size: IntGauge,
    aggregator_watermark: IntGauge,
    aggregator_late_facts: IntCounter,
    aggregator_unreadable_records: IntCounter,
    outbox_backlog: IntGaugeVec,
    outbox_delivered: IntCounter,
    consumer_lag: IntGaugeVec,
    rebalances: IntCounterVec,
    assigned_partitions: IntGauge,
    input_partitions: IntGauge,
    paused_partitions: IntGauge,
    partition_pauses: IntCounter,
    offsets_skipped: IntCounterVec,
    offset_gaps: IntCounterVec,
    ready: IntGauge,
    restores: IntCounterVec,
    restored_records: IntCounter,
    claimed_back: IntCounter,
    claimed_away: IntGauge,
    rejoins: IntCounter,
    rejoining: IntGauge,
    let_go: IntCounter,
    restore_remaining: IntGaugeVec,
}

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help).namespace(NAMESPACE)
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let registry = Registry::new();
        // Finer from 50 ms to 500 ms, where a broker's delivery and a batch's fold put it.
        let latency_buckets = vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5,
            0.75, 1.0, 2.5, 5.0, 10.0,
        ];
        // Service times, from a minute to a month.
        let service_buckets = vec![
            60.0,
            300.0,
            900.0,
            1_800.0,
            3_600.0,
            7_200.0,
            14_400.0,
            28_800.0,
            86_400.0,
            172_800.0,
            259_200.0,
            604_800.0,
            1_209_600.0,
            2_592_000.0,
        ];
        let service = |name: &str, help: &str| {
            HistogramOpts::new(name, help)
                .namespace(NAMESPACE)
                .buckets(service_buckets.clone())
        };
        let t = Telemetry {
            first_response: HistogramVec::new(
                service("first_response_seconds", "A contact's first response time, as its interaction.contact event gives it, by channel."),
                &["channel"],
            )
            .expect("valid metric"),
            delivery: Histogram::with_opts(service(
                "delivery_seconds",
                "An order's time from order.placed to order.delivered, in event time.",
            ))
            .expect("valid metric"),
            resolution: HistogramVec::new(
                service("complaint_resolution_seconds", "A complaint's time from complaint.opened to complaint.resolved, in event time, by category."),
                &["category"],
            )
            .expect("valid metric"),
            events: IntCounterVec::new(
                opts("events_total", "Input events by source topic, type and outcome (applied, duplicate, rejected, late, or erased: of an erased customer, from before its erasure, not applied)."),
                &["topic", "type", "outcome"],
            )
            .expect("valid metric"),
            dead_letters: IntCounterVec::new(
                opts("dead_letters_total", "Input events sent to the dead-letter topic, by reason code."),
                &["reason"],
            )
            .expect("valid metric"),
            limits_reached: IntCounterVec::new(
                opts("limits_reached_total", "Events applied at a per-customer bound (open_orders, open_complaints, dedup_ids): they count, but what they would add past the bound is not kept."),
                &["limit"],
            )
            .expect("valid metric"),
            off_partition: IntCounterVec::new(
                opts("events_off_partition_total", "Events read from an input partition other than the one Kafka's Java client puts their customer_id in (murmur2): their publisher partitions otherwise, and a customer published by two partitioners has two states."),
                &["topic"],
            )
            .expect("valid metric"),
            off_partition_warned: Mutex::new(HashSet::new()),
            processing_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "processing_latency_seconds",
                    "Time from broker append to the commit of the event's state.",
                )
                .namespace(NAMESPACE)
                .buckets(latency_buckets.clone()),
            )
            .expect("valid metric"),
            commit_duration: Histogram::with_opts(
                HistogramOpts::new("commit_duration_seconds", "Duration of one atomic state commit.")
                    .namespace(NAMESPACE)
                    .buckets(latency_buckets),
            )
            .expect("valid metric"),
            kafka_errors: IntCounterVec::new(
                opts("kafka_errors_total", "Client-level Kafka errors (a broker down, a failed connection), by client (consumer, producer); librdkafka retries them."),
                &["client"],
            )
            .expect("valid metric"),
            delivery_failures: IntCounter::with_opts(opts(
                "output_delivery_failures_total",
                "Output records the brokers did not acknowledge; they stay in the outbox and are sent again.",
            ))
            .expect("valid metric"),
            commits_failed: IntCounter::with_opts(opts(
                "commit_failures_total",
                "State commits that failed; consumption pauses until one succeeds.",
            ))
            .expect("valid metric"),
            customers_written: IntCounter::with_opts(opts(
                "customers_written_total",
                "Customer states written by commits.",
            ))
            .expect("valid metric"),
            cache_lookups: IntCounterVec::new(
                opts(
                    "customer_cache_lookups_total",
                    "Lookups of customers (each event's, each due timer's, each referrer's) by where they were found: hit (the cache, in memory), stored (read from RocksDB: what a larger state.cache_customers would save), absent (in neither: a customer new to this instance).",
                ),
                &["result"],
            )
            .expect("valid metric"),
            complaints_opened: IntCounterVec::new(
                opts("complaints_opened_total", "Complaints opened, by category and severity."),
                &["category", "severity"],
            )
            .expect("valid metric"),
            complaints_open: IntGaugeVec::new(
                opts("complaints_open", "Open complaints, by category."),
                &["category"],
            )
            .expect("valid metric"),
            complaint_spike: IntGaugeVec::new(
                opts(
                    "complaint_spike",
                    "1 when the category's last closed window was a spike (z-score above the threshold and at least the minimum count), else 0.",
                ),
                &["category"],
            )
            .expect("valid metric"),
            complaint_z_score: GaugeVec::new(
                opts("complaint_z_score", "Poisson z-score of the category's last closed window against its baseline."),
                &["category"],
            )
            .expect("valid metric"),
            complaint_windows: IntCounterVec::new(
                opts("complaint_windows_total", "Closed complaint windows, by category and whether they were a spike."),
                &["category", "spike"],
            )
            .expect("valid metric"),
            timers_fired: IntCounter::with_opts(opts(
                "timers_fired_total",
                "Event-time timers fired to look at silent customers again.",
            ))
            .expect("valid metric"),
            churn_risk_records: IntCounter::with_opts(opts(
                "churn_risk_records_total",
                "Records published to customer.churn-risk (tombstones excluded).",
            ))
            .expect("valid metric"),
            customers: IntGaugeVec::new(
                opts("customers", "Customers in state with a churn-risk record, by segment and lifecycle."),
                &["segment", "lifecycle"],
            )
            .expect("valid metric"),
            risk_levels: IntGaugeVec::new(
                opts("churn_risk_customers", "Customers by the level of their latest churn-risk record."),
                &["level"],
            )
            .expect("valid metric"),
            orders: IntCounterVec::new(
                opts("orders_total", "Orders placed, by the customer's segment."),
                &["segment"],
            )
            .expect("valid metric"),
            revenue: IntCounterVec::new(
                opts("revenue_minor_total", "Order revenue in minor currency units, by segment."),
                &["segment"],
            )
            .expect("valid metric"),
            margin: IntGaugeVec::new(
                opts("margin_minor", "Net margin of all orders counted so far, in minor units, by segment (a gauge: margins may be negative)."),
                &["segment"],
            )
            .expect("valid metric"),
            new_customers: IntCounterVec::new(
                opts("new_customers_total", "Customers who placed their first order, by segment."),
                &["segment"],
            )
            .expect("valid metric"),
            new_value: IntCounterVec::new(
                opts("new_customer_value_minor_total", "Value of new customers' first orders, by segment."),
                &["segment"],
            )
            .expect("valid metric"),
            lost_customers: IntCounterVec::new(
                opts("lost_customers_total", "Customers lost (cancelled, or P(alive) below the threshold), by segment and strongest reason."),
                &["segment", "reason"],
            )
            .expect("valid metric"),
            lost_value: IntCounterVec::new(
                opts("lost_customer_value_minor_total", "Revenue to date of the customers lost, by segment."),
                &["segment"],
            )
            .expect("valid metric"),
            won_back: IntCounterVec::new(
                opts("won_back_customers_total", "Lost customers who ordered or renewed again, by segment."),
                &["segment"],
            )
            .expect("valid metric"),
            renewals: IntCounterVec::new(
                opts("renewals_total", "Subscription renewals, by segment and reason."),
                &["segment", "reason"],
            )
            .expect("valid metric"),
            referrals: IntCounterVec::new(
                opts("referrals_total", "New customers referred, by the referrer's segment."),
                &["segment"],
            )
            .expect("valid metric"),
            segment_metrics_records: IntCounter::with_opts(opts(
                "segment_metrics_records_total",
                "Segment-day records closed and published to customer.segment-metrics.",
            ))
            .expect("valid metric"),
            rfm_customers: IntGaugeVec::new(
                opts("rfm_customers", "Customers with orders per named RFM segment, on the scales of the last closed day."),
                &["rfm_segment"],
            )
            .expect("valid metric"),
            state_size: IntGauge::with_opts(opts(
                "state_size_bytes",
                "Bytes of state on disk (SST files and memtables).",
            ))
            .expect("valid metric"),
            aggregator_watermark: IntGauge::with_opts(opts(
                "aggregator_watermark_seconds",
                "The aggregator's watermark (the lowest of the partitions'), Unix seconds of event time; 0 where no aggregator runs.",
            ))
            .expect("valid metric"),
            aggregator_late_facts: IntCounter::with_opts(opts(
                "aggregator_late_facts_total",
                "Facts (complaints, orders, renewals, changes of standing, ...) the aggregator applied after the complaint window or segment-day they belong to was emitted: changes the emitted records do not show.",
            ))
            .expect("valid metric"),
            aggregator_unreadable_records: IntCounter::with_opts(opts(
                "aggregator_unreadable_records_total",
                "Changelog records the aggregator could not read (a claim, a position, a customer record's facts), each logged and skipped: their changes are missing from the aggregates.",
            ))
            .expect("valid metric"),
            outbox_backlog: IntGaugeVec::new(
                opts(
                    "outbox_backlog_records",
                    "Output records committed but not yet acknowledged by the sink, by outbox (the job's; with the changelog, the aggregator's).",
                ),
                &["outbox"],
            )
            .expect("valid metric"),
            outbox_delivered: IntCounter::with_opts(opts(
                "outbox_delivered_total",
                "Output records acknowledged by the sink.",
            ))
            .expect("valid metric"),
            consumer_lag: IntGaugeVec::new(
                opts("consumer_lag_records", "Records between the partition's high watermark and the next offset to process."),
                &["topic", "partition"],
            )
            .expect("valid metric"),
            rebalances: IntCounterVec::new(
                opts("rebalances_total", "Consumer group rebalances, by kind (assign, revoke)."),
                &["kind"],
            )
            .expect("valid metric"),
            assigned_partitions: IntGauge::with_opts(opts(
                "assigned_partitions",
                "Input partitions this instance owns.",
            ))
            .expect("valid metric"),
            input_partitions: IntGauge::with_opts(opts(
                "input_partitions",
                "Input partitions of the input topics together (input.partitions times the distinct input topics): what the instances' assigned_partitions add up to when each is owned once.",
            ))
            .expect("valid metric"),
            paused_partitions: IntGauge::with_opts(opts(
                "paused_partitions",
                "Owned input partitions paused for running more than processing.max_event_time_lead_seconds ahead in event time of the slowest one still delivering.",
            ))
            .expect("valid metric"),
            partition_pauses: IntCounter::with_opts(opts(
                "partition_pauses_total",
                "Input partitions paused for running ahead in event time (processing.max_event_time_lead_seconds), each pause counted.",
            ))
            .expect("valid metric"),
            offsets_skipped: IntCounterVec::new(
                opts("input_offsets_skipped_total", "Offsets of an input partition at which the brokers delivered no record, by topic: retention deleted the records before they were read, the topic is compacted, a transactional publisher's markers and aborted records, or Tansu 0.6.0's skip of a fetch started inside a record batch."),
                &["topic"],
            )
            .expect("valid metric"),
            offset_gaps: IntCounterVec::new(
                opts("input_offset_gaps_total", "Runs of offsets skipped (customer_pulse_input_offsets_skipped_total), by topic: a transactional publisher's commit marker is a run of one offset, so more offsets skipped than runs means records were not delivered."),
                &["topic"],
            )
            .expect("valid metric"),
            ready: IntGauge::with_opts(opts(
                "ready",
                "1 when state is restored and partitions are assigned, else 0.",
            ))
            .expect("valid metric"),
            restores: IntCounterVec::new(
                opts("restores_total", "Partition assignments by what the changelog restore did (up_to_date, own, tail, from_scratch, lost_writes, failed)."),
                &["outcome"],
            )
            .expect("valid metric"),
            restored_records: IntCounter::with_opts(opts(
                "restored_records_total",
                "Changelog records applied to the local state by restores.",
            ))
            .expect("valid metric"),
            claimed_back: IntCounter::with_opts(opts(
                "partitions_claimed_back_total",
                "Owned partitions claimed again after another instance had claimed them in the changelog: one that released them since while the group left them here, or, with kafka.assigned_partitions, any a session timeout later.",
            ))
            .expect("valid metric"),
            claimed_away: IntGauge::with_opts(opts(
                "partitions_claimed_away",
                "Owned partitions another instance has claimed in the changelog, waiting for the group to move them, or for this instance to claim them back or let them go.",
            ))
            .expect("valid metric"),
            rejoins: IntCounter::with_opts(opts(
                "group_rejoins_total",
                "Times this instance left the consumer group and joined it again after letting go of partitions another instance held too.",
            ))
            .expect("valid metric"),
            rejoining: IntGauge::with_opts(opts(
                "group_rejoining",
                "1 while this instance has left the consumer group to join it again and has not subscribed again yet (it holds no partition meanwhile), else 0.",
            ))
            .expect("valid metric"),
            let_go: IntCounter::with_opts(opts(
                "partitions_let_go_total",
                "Owned partitions let go because another instance had claimed them in the changelog and still held them a session timeout later (a broker that hands a partition on without telling its old owner).",
            ))
            .expect("valid metric"),
            restore_remaining: IntGaugeVec::new(
                opts("restore_remaining_records", "Changelog records a running restore has still to apply, by partition."),
                &["partition"],
            )
            .expect("valid metric"),
            registry,
            names: Vec::new(),
        };
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(t.events.clone()),
            Box::new(t.restores.clone()),
            Box::new(t.restored_records.clone()),
            Box::new(t.claimed_back.clone()),
            Box::new(t.claimed_away.clone()),
            Box::new(t.rejoins.clone()),
            Box::new(t.rejoining.clone()),
            Box::new(t.let_go.clone()),
            Box::new(t.restore_remaining.clone()),
            Box::new(t.dead_letters.clone()),
            Box::new(t.limits_reached.clone()),
            Box::new(t.off_partition.clone()),
            Box::new(t.processing_latency.clone()),
            Box::new(t.commit_duration.clone()),
            Box::new(t.commits_failed.clone()),
            Box::new(t.kafka_errors.clone()),
            Box::new(t.delivery_failures.clone()),
            Box::new(t.customers_written.clone()),
            Box::new(t.cache_lookups.clone()),
            Box::new(t.timers_fired.clone()),
            Box::new(t.complaints_opened.clone()),
            Box::new(t.first_response.clone()),
            Box::new(t.delivery.clone()),
            Box::new(t.resolution.clone()),
            Box::new(t.complaints_open.clone()),
            Box::new(t.complaint_spike.clone()),
            Box::new(t.complaint_z_score.clone()),
            Box::new(t.complaint_windows.clone()),
            Box::new(t.churn_risk_records.clone()),
            Box::new(t.customers.clone()),
            Box::new(t.risk_levels.clone()),
            Box::new(t.orders.clone()),
            Box::new(t.revenue.clone()),
            Box::new(t.margin.clone()),
            Box::new(t.new_customers.clone()),
            Box::new(t.new_value.clone()),
            Box::new(t.lost_customers.clone()),
            Box::new(t.lost_value.clone()),
            Box::new(t.won_back.clone()),
            Box::new(t.renewals.clone()),
            Box::new(t.referrals.clone()),
            Box::new(t.segment_metrics_records.clone()),
            Box::new(t.rfm_customers.clone()),
            Box::new(t.state_size.clone()),
            Box::new(t.aggregator_watermark.clone()),
            Box::new(t.aggregator_late_facts.clone()),
            Box::new(t.aggregator_unreadable_records.clone()),
            Box::new(t.outbox_backlog.clone()),
            Box::new(t.outbox_delivered.clone()),
            Box::new(t.consumer_lag.clone()),
            Box::new(t.rebalances.clone()),
            Box::new(t.assigned_partitions.clone()),
            Box::new(t.input_partitions.clone()),
            Box::new(t.paused_partitions.clone()),
            Box::new(t.partition_pauses.clone()),
            Box::new(t.offsets_skipped.clone()),
            Box::new(t.offset_gaps.clone()),
            Box::new(t.ready.clone()),
        ];
        let mut t = t;
        for c in collectors {
            t.names.extend(c.desc().iter().map(|d| d.fq_name.clone()));
            t.registry.register(c).expect("metric names are unique");
        }
        // Every reason exists from the start, so a dead-letter rate rule sees 0, not nothing.
        for reason in Reason::ALL {
            t.dead_letters.with_label_values(&[reason.code()]);
        }
        for client in ["consumer", "producer"] {
            t.kafka_errors.with_label_values(&[client]);
        }
        for limit in crate::fold::Limit::ALL {
            t.limits_reached.with_label_values(&[limit.code()]);
        }
        for (result, _) in CacheLookups::default().by_result() {
            t.cache_lookups.with_label_values(&[result]);
        }
        t
    }

    /// Records one committed batch.
    pub fn record_batch(&self, report: &BatchReport, commit_seconds: f64, committed_at: Millis) {
        for ((topic, kind, outcome), n) in &report.events {
            self.events
                .with_label_values(&[topic.as_str(), kind, outcome])
                .inc_by(*n);
        }
        for (reason, n) in &report.dead_letters {
            self.dead_letters.with_label_values(&[reason]).inc_by(*n);
        }
        for (limit, n) in &report.limits_reached {
            self.limits_reached.with_label_values(&[limit]).inc_by(*n);
        }
        for ((topic, partition), n) in &report.off_partition {
            self.off_partition.with_label_values(&[&**topic]).inc_by(*n);
            let mut warned = self
                .off_partition_warned
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if warned.insert((topic.clone(), *partition)) {
                tracing::warn!(
                    topic = &**topic,
                    partition,
                    events = n,
                    "Events read from this input partition belong, by their customer_id, in other partitions, where Kafka's Java client puts their keys (murmur2): their publisher partitions otherwise (librdkafka's default is CRC32; its partitioner=murmur2_random places keys as Java does). A customer's state is kept in the partition its events are read from, so one published by two partitioners has two. Counted in customer_pulse_events_off_partition_total; warned once per partition."
                );
            }
        }
        for t in &report.append_times_ms {
            self.processing_latency
                .observe((committed_at - t).max(0) as f64 / 1000.0);
        }
        self.commit_duration.observe(commit_seconds);
        self.customers_written
            .inc_by(report.customers_written as u64);
        for (result, n) in report.cache_lookups.by_result() {
            self.cache_lookups.with_label_values(&[result]).inc_by(n);
        }
        self.timers_fired.inc_by(report.timers_fired as u64);
        // Categories and severities come from closed sets (decode normalises them), so these
        // labels are bounded.
        for ((category, severity), n) in &report.complaints_opened {
            self.complaints_opened
                .with_label_values(&[category.as_str(), severity])
                .inc_by(*n);
        }
        // Channels and categories come from closed sets too.
        let service = &report.service;
        for (channel, seconds) in &service.first_response {
            self.first_response
                .with_label_values(&[channel])
                .observe(*seconds as f64);
        }
        for seconds in &service.delivery {
            self.delivery.observe(*seconds as f64);
        }
        for (category, seconds) in &service.resolution {
            self.resolution
                .with_label_values(&[category.as_str()])
                .observe(*seconds as f64);
        }
        self.churn_risk_records.inc_by(report.risk_records as u64);
        self.record_aggregates(report);
    }

    /// What a batch, or an aggregator's step, did to the aggregates: open complaints, closed
    /// windows and spikes, segment flows, population and days, RFM segments.
    pub fn record_aggregates(&self, report: &BatchReport) {
        for (category, open) in &report.open_complaints {
            self.complaints_open
                .with_label_values(&[category.as_str()])
                .set(*open);
        }
        // The spike flag and the z-score are the last window's, which the alert pages on, as
        // the trends keep it (so also after a restart); a daily or monthly roll-up goes to the
        // trends topic only.
        for (category, verdict) in &report.verdicts {
            self.complaint_spike
                .with_label_values(&[category.as_str()])
                .set(i64::from(verdict.spike));
            self.complaint_z_score
                .with_label_values(&[category.as_str()])
                .set(verdict.z_score);
        }
        let windows = report.closed_windows.iter();
        for window in windows.filter(|w| w.period == Period::Window) {
            let spike = if window.spike { "true" } else { "false" };
            self.complaint_windows
                .with_label_values(&[window.category.as_str(), spike])
                .inc();
        }
        self.record_segments(report);
        self.aggregator_late_facts.inc_by(report.late_facts);
        self.aggregator_unreadable_records
            .inc_by(report.unreadable_changelog_records);
    }

    /// Segments come from the configured tiers, reasons from closed sets: bounded labels.
    fn record_segments(&self, report: &BatchReport) {
        for (segment, f) in &report.segment_flows {
            let s = segment.as_str();
            let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
            self.orders.with_label_values(&[s]).inc_by(f.orders);
            self.revenue
                .with_label_values(&[s])
                .inc_by(non_negative(f.revenue_minor));
            self.new_customers
                .with_label_values(&[s])
                .inc_by(f.new_customers);
            self.new_value
                .with_label_values(&[s])
                .inc_by(non_negative(f.new_value_minor));
            for (reason, n) in &f.lost_reasons {
                self.lost_customers
                    .with_label_values(&[s, reason.as_str()])
                    .inc_by(*n);
            }
            self.lost_value
                .with_label_values(&[s])
                .inc_by(non_negative(f.lost_value_minor));
            self.won_back.with_label_values(&[s]).inc_by(f.won_back);
            for (reason, n) in &f.renewal_reasons {
                self.renewals
                    .with_label_values(&[s, reason.as_str()])
                    .inc_by(*n);
            }
            self.referrals.with_label_values(&[s]).inc_by(f.referrals);
        }
        if let Some((population, margins)) = &report.population {
            let mut levels = [0i64; 3];
            for (segment, p) in population {
                for (lifecycle, n) in LIFECYCLES.iter().zip(p.by_lifecycle) {
                    self.customers
                        .with_label_values(&[segment.as_str(), lifecycle.name()])
                        .set(n);
                }
                for (total, n) in levels.iter_mut().zip(p.by_level) {
                    *total += n;
                }
            }
            for (level, n) in LEVELS.iter().zip(levels) {
                self.risk_levels.with_label_values(&[level.name()]).set(n);
            }
            for (segment, margin) in margins {
                self.margin
                    .with_label_values(&[segment.as_str()])
                    .set(*margin);
            }
        }
        self.segment_metrics_records
            .inc_by(report.closed_days as u64);
        // Rule names come from configuration (at most 16) plus `other`: bounded.
        for (segment, n) in report.rfm_segments.iter().flatten() {
            self.rfm_customers
                .with_label_values(&[segment.as_str()])
                .set(*n);
        }
    }

    pub fn commit_failed(&self) {
        self.commits_failed.inc();
    }

    /// A client-level Kafka error reported by librdkafka.
    pub fn kafka_error(&self, client: &'static str) {
        self.kafka_errors.with_label_values(&[client]).inc();
    }

    /// An output record the brokers did not acknowledge.
    pub fn delivery_failed(&self) {
        self.delivery_failures.inc();
    }

    /// Forgets the gauges of the aggregates (the open complaints, the spike flags and z-scores,
    /// the population by segment and lifecycle and by risk level, the margin to date, the RFM
    /// segments, the aggregator's watermark) when this instance stops running the aggregator:
    /// they are the new aggregator's to export, and an old value kept here would be summed with
    /// its, or page on a spike it no longer sees. The counters stay: they count what this
    /// instance did.
    pub fn forget_aggregates(&self) {
        for gauges in [
            &self.complaints_open,
            &self.complaint_spike,
            &self.customers,
            &self.risk_levels,
            &self.margin,
            &self.rfm_customers,
        ] {
            gauges.reset();
        }
        self.complaint_z_score.reset();
        self.aggregator_watermark.set(0);
    }

    /// The aggregator's watermark, event time in milliseconds.
    pub fn set_aggregator_watermark(&self, at: Millis) {
        self.aggregator_watermark.set(at.div_euclid(1000));
    }

    pub fn set_state_size(&self, bytes: u64) {
        self.state_size.set(bytes as i64);
    }

    /// What waits in `outbox` (its series labelled `job` or `aggregator`).
    pub fn set_outbox_backlog(&self, outbox: Outbox, records: u64) {
        self.outbox_backlog
            .with_label_values(&[outbox.label()])
            .set(i64::try_from(records).unwrap_or(i64::MAX));
    }

    pub fn delivered(&self, records: usize) {
        self.outbox_delivered.inc_by(records as u64);
    }

    pub fn set_lag(&self, topic: &str, partition: i32, lag: i64) {
        self.consumer_lag
            .with_label_values(&[topic, &partition.to_string()])
            .set(lag.max(0));
    }

    pub fn forget_partition(&self, topic: &str, partition: i32) {
        let _ = self
            .consumer_lag
            .remove_label_values(&[topic, &partition.to_string()]);
    }

    /// A rebalance of `kind`, after which this instance owns `partitions`.
    pub fn rebalanced(&self, kind: &str, partitions: usize) {
        self.rebalances.with_label_values(&[kind]).inc();
        self.set_assigned_partitions(partitions);
    }

    /// The owned input partitions, after a rebalance or another change (a partition restored on
    /// a later try, or claimed back).
    pub fn set_assigned_partitions(&self, partitions: usize) {
        self.assigned_partitions.set(partitions as i64);
    }

    pub fn set_input_partitions(&self, partitions: usize) {
        self.input_partitions.set(partitions as i64);
    }

    /// How many owned input partitions wait for the others to come within the lead in event
    /// time (`processing.max_event_time_lead_seconds`), `newly` of them paused just now.
    pub fn set_paused_partitions(&self, partitions: usize, newly: usize) {
        self.paused_partitions.set(partitions as i64);
        self.partition_pauses.inc_by(newly as u64);
    }

    /// A run of `offsets` of an input partition of `topic` at which the brokers delivered no
    /// record.
    pub fn offsets_skipped(&self, topic: &str, offsets: u64) {
        self.offsets_skipped
            .with_label_values(&[topic])
            .inc_by(offsets);
        self.offset_gaps.with_label_values(&[topic]).inc();
    }

    /// A restore of `partition` has applied `done` of `total` records.
    pub fn restore_progress(&self, partition: i32, done: u64, total: u64) {
        self.restore_remaining
            .with_label_values(&[&partition.to_string()])
            .set(total.saturating_sub(done) as i64);
    }

    /// A restore finished (or failed) with `outcome`, having applied `records`.
    pub fn restore_finished(&self, partition: i32, outcome: &str, records: u64) {
        self.restores.with_label_values(&[outcome]).inc();
        self.restored_records.inc_by(records);
        let _ = self
            .restore_remaining
            .remove_label_values(&[&partition.to_string()]);
    }

    pub fn claimed_back(&self, partitions: usize) {
        self.claimed_back.inc_by(partitions as u64);
    }

    pub fn let_go(&self, partitions: usize) {
        self.let_go.inc_by(partitions as u64);
    }

    pub fn rejoined(&self) {
        self.rejoins.inc();
        self.rejoining.set(1);
    }

    /// The instance subscribed again after leaving the group (see [`Telemetry::rejoined`]).
    pub fn subscribed_again(&self) {
        self.rejoining.set(0);
    }

    pub fn set_claimed_away(&self, partitions: usize) {
        self.claimed_away.set(partitions as i64);
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    pub fn is_ready(&self) -> bool {
        self.ready.get() == 1
    }

    /// The text exposition format for `GET /metrics`.
    /// The full name of every metric family this process exports (histograms add `_bucket`,
    /// `_sum` and `_count` to theirs), for checks that dashboards and alerts use only these.
    pub fn metric_names(&self) -> &[String] {
        &self.names
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "Metrics could not be encoded.");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

/// How often the same warning is logged. With its brokers down, a job's Kafka clients
/// reported the same errors some 60 times a second: 880 log lines in its first ten seconds.
const REPEAT_PERIOD: Duration = Duration::from_secs(30);

/// The warnings logged lately, by their text: when each was last logged, and how many times
/// it came since and was held back.
#[derive(Default)]
struct Repeats(HashMap<String, (Instant, u64)>);

impl Repeats {
    /// Whether to log the warning `key` that came `now`: `Some(held back since it was last
    /// logged)` the first time and once a [`REPEAT_PERIOD`] after, otherwise `None`.
    fn admit(&mut self, key: &str, now: Instant) -> Option<u64> {
        if let Some((logged, held_back)) = self.0.get_mut(key) {
            if now.saturating_duration_since(*logged) < REPEAT_PERIOD {
                *held_back += 1;
                return None;
            }
            *logged = now;
            return Some(std::mem::take(held_back));
        }
        // Error texts name brokers and partitions: a bounded set, but bounded here too.
        if self.0.len() >= 1_024 {
            self.0.clear();
        }
        self.0.insert(key.to_owned(), (now, 0));
        Some(0)
    }
}

/// Whether to log now a warning that comes again and again while something stays broken (a
/// broker down): `Some(how many times it came since it was last logged)` the first time and
/// once every 30 s after, otherwise `None`. `key` tells warnings apart: the message's
/// subject and its error's text. Over the whole process.
pub fn repeated(key: &str) -> Option<u64> {
    static REPEATS: LazyLock<Mutex<Repeats>> = LazyLock::new(Mutex::default);
    REPEATS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .admit(key, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_logged_once_a_period_with_how_many_were_held_back() {
        let mut repeats = Repeats::default();
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert_eq!(repeats.admit("consumer down", at(0)), Some(0));
        for second in 1..30 {
            assert_eq!(repeats.admit("consumer down", at(second)), None);
        }
        // Another warning is its own.
        assert_eq!(repeats.admit("producer down", at(29)), Some(0));
        assert_eq!(repeats.admit("consumer down", at(30)), Some(29));
        assert_eq!(repeats.admit("consumer down", at(31)), None);
        assert_eq!(repeats.admit("consumer down", at(600)), Some(1));
        assert_eq!(repeats.admit("producer down", at(600)), Some(0));
    }
}
