//! Scenarios: input events in, expected state and output records out, through the processor
//! and a store. Adding a case is adding data.

use customer_pulse::fold::{CustomerState, EventFingerprint, Lifecycle};
use customer_pulse::processor::{partition_for, BatchReport, Processor};
use customer_pulse::store::{OutboxRecord, Store};
use customer_pulse::telemetry::Telemetry;
use proptest::prelude::*;

use crate::catalogue::NOW_MS;
use crate::support::{
    aggregate_gauges, expected_totals, file_record, run_batches, settings, stored, totals_of,
};

fn ev(id: &str, customer: &str, kind: &str, at: &str, fields: &str) -> String {
    let sep = if fields.is_empty() { "" } else { "," };
    format!(
        r#"{{"event_id":"{id}","customer_id":"{customer}","type":"{kind}","occurred_at":"2026-05-{at}Z"{sep}{fields}}}"#
    )
}

/// Runs `events` through a fresh processor, one batch per inner slice, and returns the customer's
/// state and every output record.
fn check(batches: &[&[String]], customer: &str) -> (Option<CustomerState>, Vec<OutboxRecord>) {
    let (store, _) = run_batches(settings(100), batches);
    let partition = partition_for(customer.as_bytes(), 4);
    let state = store.customer(partition, customer).unwrap();
    let outputs = store
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .collect();
    (state, outputs)
}

fn header<'a>(record: &'a OutboxRecord, name: &str) -> &'a str {
    record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
        .unwrap_or_else(|| panic!("no header {name}"))
}

#[test]
fn orders_on_two_days_make_one_repeat_purchase_and_a_delivery_cycle() {
    let events = [
        ev(
            "1",
            "ann",
            "order.placed",
            "01T10:00:00",
            r#""order_id":"a","amount_minor":1000,"margin_minor":200"#,
        ),
        ev(
            "2",
            "ann",
            "order.placed",
            "01T18:00:00",
            r#""order_id":"b","amount_minor":500,"margin_minor":-50"#,
        ),
        ev(
            "3",
            "ann",
            "order.delivered",
            "03T10:00:00",
            r#""order_id":"a""#,
        ),
        ev(
            "4",
            "ann",
            "order.placed",
            "04T09:00:00",
            r#""order_id":"c","amount_minor":300,"margin_minor":30"#,
        ),
    ];
    let (state, outputs) = check(&[&events], "ann");
    let state = state.unwrap();
    assert_eq!(state.orders, 3);
    assert_eq!(state.revenue_minor, 1800);
    assert_eq!(state.margin_minor, 180);
    assert_eq!(state.repeat_purchases(), 1, "two distinct purchase days");
    assert_eq!(state.first_day_revenue_minor, 1500);
    assert_eq!(state.deliveries, 1);
    assert_eq!(state.delivery_seconds_total, 2 * 86_400);
    assert_eq!(state.open_orders.len(), 2);
    assert_eq!(state.lifecycle, Lifecycle::Active);
    // Days 1 to 3 closed as the watermark passed them: one segment record per day and tier.
    let (risk, days): (Vec<_>, Vec<_>) = outputs
        .into_iter()
        .partition(|r| r.topic == "customer.churn-risk");
    assert_eq!(days.len(), 3 * 2);
    assert!(days.iter().all(|r| r.topic == "customer.segment-metrics"));
    let outputs = risk;
    // The first order publishes; the repeat purchase on day 4 changes the model's x, and with
    // it P(alive) well beyond the minimum score change.
    assert_eq!(header(&outputs[0], "record_id"), "test-0-1");
    assert_eq!(header(outputs.last().unwrap(), "record_id"), "test-0-4");
}

#[test]
fn a_redelivered_event_changes_nothing_in_the_same_or_a_later_batch() {
    let order = ev(
        "1",
        "bob",
        "order.placed",
        "01T10:00:00",
        r#""order_id":"a","amount_minor":1000,"margin_minor":200"#,
    );
    let one = std::slice::from_ref(&order);
    let (once, once_out) = check(&[one], "bob");
    let (twice, twice_out) = check(&[&[order.clone(), order.clone()], one], "bob");
    assert_eq!(once, twice);
    assert_eq!(once_out.len(), 1);
    assert_eq!(twice_out.len(), 1, "duplicates emit nothing");
}

#[test]
fn complaints_resolve_with_their_resolution_time() {
    let events = [
        ev(
            "1",
            "cy",
            "complaint.opened",
            "01T10:00:00",
            r#""complaint_id":"k1","category":"Billing","severity":"high""#,
        ),
        ev(
            "2",
            "cy",
            "complaint.opened",
            "01T11:00:00",
            r#""complaint_id":"k2","category":"weather","severity":"low""#,
        ),
        ev(
            "3",
            "cy",
            "complaint.resolved",
            "01T12:30:00",
            r#""complaint_id":"k1","satisfied":false"#,
        ),
    ];
    let state = check(&[&events], "cy").0.unwrap();
    assert_eq!(state.complaints_opened, 2);
    assert_eq!(state.complaints_resolved, 1);
    assert_eq!(state.resolution_seconds_total, 9_000);
    assert_eq!(state.resolutions_unsatisfied, 1);
    assert_eq!(state.open_complaints.len(), 1);
    assert_eq!(
        state.open_complaints[0].category, "other",
        "outside the closed set"
    );
}

/// The billing complaint windows (hourly and daily) in `store`'s outbox.
fn billing_windows(store: &Store) -> Vec<serde_json::Value> {
    store
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.topic == "customer.complaint-trends" && r.key.as_deref() == Some(b"billing"))
        .map(|r| serde_json::from_slice(&r.value.unwrap()).unwrap())
        .collect()
}

/// The window of `windows` from `start` to `end` (May 2026, `DDTHH:MM:SS`): its opened,
/// resolved and open backlog.
fn window_counts(windows: &[serde_json::Value], start: &str, end: &str) -> (i64, i64, i64) {
    let (start, end) = (
        format!("2026-05-{start}.000Z"),
        format!("2026-05-{end}.000Z"),
    );
    let v = windows
        .iter()
        .find(|v| v["window_start"] == start && v["window_end"] == end)
        .unwrap_or_else(|| panic!("no window from {start} to {end}"));
    let count = |field: &str| v[field].as_i64().unwrap();
    (count("opened"), count("resolved"), count("open_backlog"))
}

/// A complaint or an order published again under a new event id, while it is still open, is
/// the same complaint or order: it counts as a duplicate and changes nothing but the ids
/// remembered, so the same event read again after the complaint closed or the order was
/// delivered is a duplicate too. A complaint opened again after it was resolved counts again,
/// and stays open though its old resolution was published again in between.
/// The complaint windows' backlog follows the state: never two resolutions for one, never
/// below zero when the customer is erased.
#[test]
fn a_complaint_or_order_published_again_under_a_new_event_id_counts_once() {
    let opened = |id: &str, at: &str| {
        ev(
            id,
            "flo",
            "complaint.opened",
            at,
            r#""complaint_id":"k1","category":"billing","severity":"high""#,
        )
    };
    let placed = |id: &str, at: &str| {
        ev(
            id,
            "flo",
            "order.placed",
            at,
            r#""order_id":"o1","amount_minor":1000,"margin_minor":100"#,
        )
    };
    let events = [
        opened("1", "01T10:00:00"),
        opened("2", "01T10:05:00"),
        placed("3", "01T10:10:00"),
        placed("4", "01T10:12:00"),
        ev(
            "5",
            "flo",
            "complaint.resolved",
            "01T12:00:00",
            r#""complaint_id":"k1""#,
        ),
        opened("2", "01T10:05:00"),
        // The resolution published again: it closes nothing, not even the reopening below.
        ev(
            "6",
            "flo",
            "complaint.resolved",
            "01T12:00:00",
            r#""complaint_id":"k1""#,
        ),
        ev(
            "7",
            "flo",
            "order.delivered",
            "02T10:00:00",
            r#""order_id":"o1""#,
        ),
        placed("4", "01T10:12:00"),
        opened("9", "03T10:00:00"),
    ];
    let erased = ev("10", "flo", "customer.erased", "03T13:30:00", "");
    let survey = |id: &str, at: &str| ev(id, "gus", "interaction.survey", at, r#""score":9"#);
    // Moves the watermark past the reopened complaint's window before the erasure.
    let then = survey("11", "03T13:00:00");
    let later = survey("12", "05T10:00:00");
    let (store, reports) = run_batches(settings(100), &[&events[..]]);
    let state = stored(&store, "flo");
    assert_eq!(reports[0].count("duplicate"), 4);
    assert_eq!(
        state.complaints_opened, 2,
        "the first opening and the reopening"
    );
    assert_eq!(state.complaints_resolved, 1);
    assert_eq!(state.resolution_seconds_total, 2 * 3600);
    assert_eq!(state.open_complaints.len(), 1);
    assert_eq!(
        state.open_complaints[0].opened_at,
        state.last_complaint_at.unwrap()
    );
    assert_eq!(
        (state.orders, state.revenue_minor, state.margin_minor),
        (1, 1000, 100)
    );
    assert_eq!(state.deliveries, 1);
    assert!(state.open_orders.is_empty());

    let (store, _) = run_batches(
        settings(100),
        &[[&events[..], &[then]].concat(), vec![erased], vec![later]],
    );
    let billing = billing_windows(&store);
    let hour = |start: &str, end: &str| {
        window_counts(&billing, &format!("{start}:00:00"), &format!("{end}:00:00"))
    };
    assert_eq!(hour("01T10", "01T11"), (1, 0, 1));
    assert_eq!(hour("01T12", "01T13"), (0, 1, 0));
    assert_eq!(hour("03T10", "03T11"), (1, 0, 1));
    assert_eq!(
        hour("03T13", "03T14"),
        (0, 0, 0),
        "erased: its complaint leaves"
    );
    assert!(billing
        .iter()
        .all(|v| v["open_backlog"].as_i64().unwrap() >= 0));
}

/// A complaint leaves the backlog unresolved when its customer is erased, and at once when it
/// opened past the customer's limit of open items. Either way it leaves in the window of the
/// event that took it out (the erasure's, its opening's), however far the input had got when
/// that was read: a window's backlog is what was open at its end in event time.
#[test]
fn complaints_that_leave_unresolved_leave_the_backlog_in_the_window_of_their_event_time() {
    let opened = |id: &str, customer: &str, complaint: &str, at: &str| {
        let fields =
            format!(r#""complaint_id":"{complaint}","category":"billing","severity":"low""#);
        ev(id, customer, "complaint.opened", at, &fields)
    };
    // One batch: the windows from 10:00 close once every event is read.
    let events = [
        opened("1", "flo", "k1", "01T10:00:00"),
        opened("2", "gus", "k2", "01T10:30:00"),
        // Past gus's limit of one open item: counted, not kept open.
        opened("3", "gus", "k3", "01T12:00:00"),
        ev("4", "flo", "customer.erased", "01T15:30:00", ""),
    ];
    let later = ev(
        "5",
        "hal",
        "interaction.survey",
        "03T10:00:00",
        r#""score":9"#,
    );
    let mut settings = settings(100);
    settings.limits.max_open_items = 1;
    let (store, _) = run_batches(settings, &[&events[..], &[later]]);
    let billing = billing_windows(&store);
    let hour = |start: &str, end: &str| {
        window_counts(&billing, &format!("{start}:00:00"), &format!("{end}:00:00"))
    };
    assert_eq!(hour("01T10", "01T11"), (2, 0, 2), "k1 and k2 open");
    assert_eq!(hour("01T11", "01T12"), (0, 0, 2));
    assert_eq!(hour("01T12", "01T13"), (1, 0, 2), "k3 counted, not kept");
    assert_eq!(hour("01T15", "01T16"), (0, 0, 1), "flo erased: k1 leaves");
    assert_eq!(hour("01T16", "01T17"), (0, 0, 1));
    assert_eq!(hour("01T00", "02T00"), (3, 0, 1), "the day");
}

/// An order placed again under a new event id after it was delivered, cancelled or returned
/// (a shop's outbox or a connector's snapshot sending it again) is the same order: a
/// duplicate, counting no order and no revenue, also when the customer's state was read back
/// from the store in between. Its id is remembered as long as event ids are: placed again
/// once the customer's newest event is a dedup horizon past its placing, it is a new order.
#[test]
fn an_order_placed_again_after_it_closed_counts_once() {
    let placed = |id: &str, order: &str, at: &str| {
        ev(
            id,
            "ida",
            "order.placed",
            at,
            &format!(r#""order_id":"{order}","amount_minor":1000,"margin_minor":100"#),
        )
    };
    let closed = |id: &str, kind: &str, order: &str, at: &str| {
        let amount = if kind == "order.returned" {
            r#","amount_minor":1000"#
        } else {
            ""
        };
        ev(
            id,
            "ida",
            kind,
            at,
            &format!(r#""order_id":"{order}"{amount}"#),
        )
    };
    let events = [
        placed("1", "o1", "01T10:00:00"),
        closed("2", "order.delivered", "o1", "02T10:00:00"),
        placed("3", "o1", "03T10:00:00"),
        placed("4", "o2", "04T10:00:00"),
        closed("5", "order.cancelled", "o2", "04T11:00:00"),
        placed("6", "o2", "05T10:00:00"),
        placed("7", "o3", "06T10:00:00"),
        closed("8", "order.returned", "o3", "07T10:00:00"),
        placed("9", "o3", "08T10:00:00"),
        // 30 days and 2 hours after o1 was placed: its id has left the horizon.
        ev(
            "10",
            "ida",
            "interaction.survey",
            "31T12:00:00",
            r#""score":9"#,
        ),
        placed("11", "o1", "31T13:00:00"),
    ];
    let other = |i: usize| {
        ev(
            &format!("x{i}"),
            "ivo",
            "interaction.survey",
            "01T09:00:00",
            r#""score":9"#,
        )
    };
    // One batch; then an event a batch, another customer's between, with a cache of one
    // customer: the state is read back from the store before each.
    let one_by_one: Vec<Vec<String>> = events
        .iter()
        .enumerate()
        .flat_map(|(i, e)| [vec![other(i)], vec![e.clone()]])
        .collect();
    for (cache, batches) in [(100, vec![events.to_vec()]), (1, one_by_one)] {
        let (store, reports) = run_batches(settings(cache), &batches);
        let duplicates: u64 = reports.iter().map(|r| r.count("duplicate")).sum();
        let state = stored(&store, "ida");
        assert_eq!(duplicates, 3, "o1, o2 and o3 placed again (cache {cache})");
        assert_eq!(
            (state.orders, state.revenue_minor, state.margin_minor),
            (4, 4000, 400),
            "o1, o2, o3, and o1 again past the horizon (cache {cache})"
        );
        assert_eq!(
            (state.deliveries, state.order_cancellations, state.returns),
            (1, 1, 1)
        );
        let open: Vec<&str> = state
            .open_orders
            .iter()
            .map(|o| o.order_id.as_str())
            .collect();
        assert_eq!(
            open,
            ["o1"],
            "the order placed again past the horizon (cache {cache})"
        );
    }
}

/// A delivery, a cancellation or a resolution read before its order or complaint (another
/// system publishing into the same partition ahead of it, or a backfill's files in the other
/// order) closes it when it comes: the order is not left waiting for a delivery that came, the
/// complaint not left open, and the service times and complaint windows count them in their
/// own times. One that waits longer than the dedup horizon of the customer's newest event is
/// let go.
#[test]
fn a_delivery_cancellation_or_resolution_read_first_closes_its_order_or_complaint() {
    let events = [
        ev(
            "1",
            "hal",
            "order.delivered",
            "03T10:00:00",
            r#""order_id":"o1""#,
        ),
        ev(
            "2",
            "hal",
            "order.cancelled",
            "02T09:00:00",
            r#""order_id":"o2""#,
        ),
        ev(
            "3",
            "hal",
            "complaint.resolved",
            "02T12:00:00",
            r#""complaint_id":"k1","satisfied":false"#,
        ),
        ev(
            "4",
            "hal",
            "order.placed",
            "01T10:00:00",
            r#""order_id":"o1","amount_minor":1000,"margin_minor":100"#,
        ),
        ev(
            "5",
            "hal",
            "order.placed",
            "01T11:00:00",
            r#""order_id":"o2","amount_minor":500,"margin_minor":50"#,
        ),
        ev(
            "6",
            "hal",
            "complaint.opened",
            "01T12:00:00",
            r#""complaint_id":"k1","category":"billing","severity":"high""#,
        ),
        ev(
            "7",
            "hal",
            "order.delivered",
            "04T10:00:00",
            r#""order_id":"o9""#,
        ),
    ];
    let later = ev(
        "8",
        "ida",
        "interaction.survey",
        "05T10:00:00",
        r#""score":9"#,
    );
    let (store, reports) = run_batches(settings(100), &[&events[..], &[later]]);
    let state = stored(&store, "hal");
    assert_eq!((state.orders, state.revenue_minor), (2, 1500));
    assert_eq!(state.deliveries, 1);
    assert_eq!(state.delivery_seconds_total, 2 * 86_400);
    assert_eq!(state.order_cancellations, 1);
    assert!(state.open_orders.is_empty(), "{:?}", state.open_orders);
    assert_eq!((state.complaints_opened, state.complaints_resolved), (1, 1));
    assert_eq!(state.resolution_seconds_total, 86_400);
    assert_eq!(state.resolutions_unsatisfied, 1);
    assert!(state.open_complaints.is_empty());
    let waiting: Vec<&str> = state.early_closes.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(waiting, ["o9"], "never placed: still waiting");
    assert_eq!(reports[0].service.delivery, [2 * 86_400]);
    assert_eq!(
        reports[0].service.resolution,
        [("billing".to_owned(), 86_400)]
    );

    let billing = billing_windows(&store);
    let window = |start: &str, end: &str| window_counts(&billing, start, end);
    assert_eq!(
        window("01T12:00:00", "01T13:00:00"),
        (1, 0, 1),
        "open until its resolution"
    );
    assert_eq!(window("02T12:00:00", "02T13:00:00"), (0, 1, 0));
    assert_eq!(
        window("01T00:00:00", "02T00:00:00"),
        (1, 0, 1),
        "the daily roll-up"
    );
    assert_eq!(window("02T00:00:00", "03T00:00:00"), (0, 1, 0));

    // With a dedup horizon of a day, the delivery of o9 is let go once the customer's newest
    // event is more than a day after it.
    let mut settings = settings(100);
    settings.limits.dedup_horizon_ms = 86_400_000;
    let survey = |id: &str, at: &str| ev(id, "hal", "interaction.survey", at, r#""score":9"#);
    let (store, _) = run_batches(
        settings.clone(),
        &[&events[..], &[survey("9", "05T10:00:00")]],
    );
    let state = stored(&store, "hal");
    assert_eq!(state.early_closes.len(), 1, "a day after it: still waiting");
    let (store, _) = run_batches(settings, &[&events[..], &[survey("9", "05T10:00:01")]]);
    let state = stored(&store, "hal");
    assert!(state.early_closes.is_empty(), "{:?}", state.early_closes);
}

/// A resolution dated a little before its complaint's opening (the two systems' clocks apart,
/// within `input.max_future_skew_seconds`) resolves it at its opening, as the state's
/// resolution time of zero says, whichever of the two is read first: the windows never count a
/// resolution before the complaint, and the open backlog never goes below zero. One dated well
/// before a reopened complaint's opening resolved it the time before: it leaves it open.
#[test]
fn a_resolution_dated_before_its_complaint_counts_at_the_opening_within_the_clocks_skew() {
    let opened = |id: &str, complaint: &str, at: &str| {
        let fields =
            format!(r#""complaint_id":"{complaint}","category":"billing","severity":"high""#);
        ev(id, "kim", "complaint.opened", at, &fields)
    };
    let resolved = |id: &str, complaint: &str, at: &str| {
        let fields = format!(r#""complaint_id":"{complaint}""#);
        ev(id, "kim", "complaint.resolved", at, &fields)
    };
    let later = ev(
        "9",
        "kim",
        "interaction.survey",
        "01T14:00:00",
        r#""score":9"#,
    );
    // Two minutes apart, across an hour's end.
    let skewed = [
        opened("1", "k1", "01T11:01:00"),
        resolved("2", "k1", "01T10:59:00"),
    ];
    for (case, first, second) in [
        ("opening read first", &skewed[0], &skewed[1]),
        ("resolution read first", &skewed[1], &skewed[0]),
    ] {
        let events = [first.clone(), second.clone(), later.clone()];
        let (store, reports) = run_batches(settings(100), &[&events[..]]);
        let state = stored(&store, "kim");
        assert!(state.open_complaints.is_empty(), "{case}");
        assert!(state.early_closes.is_empty(), "{case}");
        assert_eq!(state.resolution_seconds_total, 0, "{case}");
        assert_eq!(
            reports[0].service.resolution,
            [("billing".to_owned(), 0)],
            "{case}"
        );
        let billing = billing_windows(&store);
        assert_eq!(
            window_counts(&billing, "01T11:00:00", "01T12:00:00"),
            (1, 1, 0),
            "{case}"
        );
        // No hour counts the resolution but the opening's, and no backlog is negative.
        let at = |w: &serde_json::Value, field: &str| {
            customer_pulse::event::parse_millis(w[field].as_str().unwrap()).unwrap()
        };
        let hours_resolving: Vec<&serde_json::Value> = billing
            .iter()
            .filter(|w| at(w, "window_end") - at(w, "window_start") == 3_600_000)
            .filter(|w| w["resolved"].as_i64() > Some(0))
            .map(|w| &w["window_start"])
            .collect();
        assert_eq!(hours_resolving, ["2026-05-01T11:00:00.000Z"], "{case}");
        assert!(
            billing
                .iter()
                .all(|w| w["open_backlog"].as_i64() >= Some(0)),
            "{case}: {billing:#?}"
        );
    }

    // k2 is resolved at 09:00 and reopened at 12:00; its 09:00 resolution, published again
    // under a new event id and read after the reopening, is not the reopened complaint's.
    let events = [
        opened("1", "k2", "01T08:00:00"),
        resolved("2", "k2", "01T09:00:00"),
        opened("3", "k2", "01T12:00:00"),
        resolved("4", "k2", "01T09:00:00"),
        later,
    ];
    let (store, _) = run_batches(settings(100), &[&events[..]]);
    let state = stored(&store, "kim");
    let open: Vec<&str> = state
        .open_complaints
        .iter()
        .map(|c| c.complaint_id.as_str())
        .collect();
    assert_eq!(open, ["k2"]);
    assert_eq!(state.complaints_resolved, 1);
    let billing = billing_windows(&store);
    assert_eq!(
        window_counts(&billing, "01T12:00:00", "01T13:00:00"),
        (1, 0, 1),
        "reopened, and still open"
    );
}

/// A returned order reached its customer, whether or not its delivery was read: it is no longer
/// open (else it would count as late for good), and with no delivery time known none is counted.
#[test]
fn a_returned_order_is_no_longer_open_though_its_delivery_was_never_read() {
    let order = |id: &str, order: &str, at: &str| {
        let fields = format!(r#""order_id":"{order}","amount_minor":1000,"margin_minor":100"#);
        ev(id, "joe", "order.placed", at, &fields)
    };
    let returned = |id: &str, order: &str, at: &str| {
        let fields = format!(r#""order_id":"{order}","amount_minor":400"#);
        ev(id, "joe", "order.returned", at, &fields)
    };
    let events = [
        order("1", "a", "01T10:00:00"),
        order("2", "b", "01T11:00:00"),
        ev(
            "3",
            "joe",
            "order.delivered",
            "02T10:00:00",
            r#""order_id":"b""#,
        ),
        // a's delivery is never read; b's return comes after its delivery; z was never placed.
        returned("4", "a", "05T10:00:00"),
        returned("5", "b", "05T11:00:00"),
        returned("6", "z", "05T12:00:00"),
        // A return from before e was placed is of an earlier order under the same id.
        order("7", "e", "06T10:00:00"),
        returned("8", "e", "05T13:00:00"),
    ];
    let (store, reports) = run_batches(settings(100), &[&events[..]]);
    let state = stored(&store, "joe");
    let open: Vec<&str> = state
        .open_orders
        .iter()
        .map(|o| o.order_id.as_str())
        .collect();
    assert_eq!(open, ["e"]);
    assert_eq!((state.returns, state.returned_minor), (4, 1_600));
    assert_eq!(state.deliveries, 1);
    assert_eq!(reports[0].service.delivery, [86_400 - 3_600]);
    assert!(state.early_closes.is_empty(), "{:?}", state.early_closes);
}

#[test]
fn a_cancelled_customer_is_lost_and_an_order_wins_them_back() {
    let events = [
        ev(
            "1",
            "di",
            "order.placed",
            "01T10:00:00",
            r#""order_id":"a","amount_minor":100,"margin_minor":10"#,
        ),
        ev(
            "2",
            "di",
            "subscription.cancelled",
            "02T10:00:00",
            r#""reason":"Price""#,
        ),
    ];
    let lost = check(&[&events], "di").0.unwrap();
    assert_eq!(lost.lifecycle, Lifecycle::Lost);
    assert_eq!(lost.cancellation_reason.as_deref(), Some("price"));
    let back = ev(
        "3",
        "di",
        "order.placed",
        "09T10:00:00",
        r#""order_id":"b","amount_minor":100,"margin_minor":10"#,
    );
    let won = check(&[&events, std::slice::from_ref(&back)], "di")
        .0
        .unwrap();
    assert_eq!(won.lifecycle, Lifecycle::WonBack);
    // The same events with the later order folded before the cancellation (another topic).
    let reordered = [events[0].clone(), back, events[1].clone()];
    let same = check(&[&reordered], "di").0.unwrap();
    assert_eq!(same.lifecycle, Lifecycle::WonBack);
}

/// Every order of `items`.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, first.clone());
            all.push(tail);
        }
    }
    all
}

/// What a customer's cancellations, renewals and orders leave: the lifecycle, the
/// subscription, and the latest cancellation's and renewal's reasons.
type Standing = (
    Lifecycle,
    customer_pulse::fold::Subscription,
    Option<String>,
    Option<String>,
);

/// The standing `events` leave in each order they can be read in.
fn standings_in_every_order(events: &[String], customer: &str) -> Vec<Standing> {
    permutations(events)
        .iter()
        .map(|order| {
            let state = check(&[order], customer).0.unwrap();
            (
                state.lifecycle,
                state.subscription,
                state.cancellation_reason,
                state.last_renewal_reason,
            )
        })
        .collect()
}

/// Orders come on another topic than cancellations and renewals, and a backfill's files or an
/// event published again come in any order: what holds is what the latest of them in event time
/// says, whichever is read first.
#[test]
fn the_latest_cancellation_renewal_or_order_holds_whichever_is_read_first() {
    use customer_pulse::fold::Subscription;
    let order = |id: &str, at: &str| {
        let fields = format!(r#""order_id":"{id}","amount_minor":100,"margin_minor":10"#);
        ev(id, "ru", "order.placed", at, &fields)
    };
    let cancel = |id: &str, at: &str, reason: &str| {
        let fields = format!(r#""reason":"{reason}""#);
        ev(id, "ru", "subscription.cancelled", at, &fields)
    };
    let renew = |id: &str, at: &str, reason: &str| {
        let fields = format!(r#""amount_minor":500,"reason":"{reason}""#);
        ev(id, "ru", "subscription.renewed", at, &fields)
    };
    let some = |reason: &str| Some(reason.to_owned());
    // Won back after a cancellation for `price`, renewed last for `loyalty`.
    let won_back: Standing = (
        Lifecycle::WonBack,
        Subscription::Active,
        some("price"),
        some("loyalty"),
    );
    let cases = [
        // Cancelled, then renewed: won back, the subscription active again.
        (
            vec![
                order("o1", "01T10:00:00"),
                cancel("c1", "02T10:00:00", "price"),
                renew("r1", "09T10:00:00", "loyalty"),
            ],
            won_back.clone(),
        ),
        // Cancelled, won back by an order, cancelled again: lost, for the later reason (the
        // tests' reasons are `price` for a cancellation and `loyalty` for a renewal; any other
        // is `other`).
        (
            vec![
                order("o1", "01T10:00:00"),
                cancel("c1", "02T10:00:00", "service"),
                order("o2", "05T10:00:00"),
                cancel("c2", "08T10:00:00", "price"),
            ],
            (
                Lifecycle::Lost,
                Subscription::Cancelled,
                some("price"),
                None,
            ),
        ),
        // Renewed twice after a cancellation: the later renewal's reason.
        (
            vec![
                cancel("c1", "02T10:00:00", "price"),
                renew("r1", "03T10:00:00", "service"),
                renew("r2", "04T10:00:00", "loyalty"),
            ],
            won_back.clone(),
        ),
        // A renewal in the same millisecond as the cancellation wins, read first or not.
        (
            vec![
                order("o1", "01T10:00:00"),
                cancel("c1", "02T10:00:00", "price"),
                renew("r1", "02T10:00:00", "loyalty"),
            ],
            won_back.clone(),
        ),
    ];
    for (events, expected) in cases {
        for (i, standing) in standings_in_every_order(&events, "ru").iter().enumerate() {
            assert_eq!(*standing, expected, "reading order {i} of {events:#?}");
        }
    }
}

/// A loss counts when the cancellation that made it was dated, and a win-back when the order
/// or renewal that made it was, though each is read after the customer's newer events (on
/// another topic), or the cancellation after the order: the lost-customer review reads the
/// same losses in each order.
#[test]
fn a_loss_and_a_win_back_are_dated_by_the_events_that_made_them_read_late_or_not() {
    let order = |id: &str, at: &str| {
        let fields = format!(r#""order_id":"{id}","amount_minor":100,"margin_minor":10"#);
        ev(id, "lo", "order.placed", at, &fields)
    };
    let complaint = |id: &str, at: &str| {
        let fields = format!(r#""complaint_id":"{id}","category":"billing","severity":"low""#);
        ev(id, "lo", "complaint.opened", at, &fields)
    };
    let first = order("o1", "01T10:00:00");
    let cancel = ev(
        "c1",
        "lo",
        "subscription.cancelled",
        "02T10:00:00",
        r#""reason":"price""#,
    );
    let newer = complaint("k1", "02T10:30:00");
    let back = order("o2", "09T10:00:00");
    let later = complaint("k2", "10T10:00:00");
    let in_time = [&first, &cancel, &newer, &back, &later];
    // The cancellation read after a complaint half an hour newer, the winning order after one a
    // day newer.
    let interleaved = [&first, &newer, &cancel, &later, &back];
    // Every order and complaint read before the cancellation: no churn-risk record says lost,
    // but the days and the review count the loss and the win-back all the same.
    let cancelled_last = [&first, &newer, &back, &later, &cancel];
    // The loss's value is the revenue to date as read: with the cancellation read last, the
    // winning order's too.
    for (events, value_minor) in [(in_time, 100), (interleaved, 100), (cancelled_last, 200)] {
        let events: Vec<String> = events.into_iter().cloned().collect();
        let (store, _) = run_batches(settings(100), &[&events]);
        let partition = partition_for(b"lo", 4);
        let customer = store.customer_record(partition, "lo").unwrap().unwrap();
        let losses = serde_json::to_value(&customer.losses).unwrap();
        assert_eq!(
            losses,
            serde_json::json!([{
                "at": 1_777_716_000_000_i64,
                "segment": "standard",
                "reason": "cancelled",
                "value_minor": value_minor,
                "won_back_at": 1_778_320_800_000_i64,
            }]),
            "{events:#?}"
        );
    }
}

#[test]
fn erasure_deletes_the_state_and_publishes_a_tombstone() {
    let events = [
        ev(
            "1",
            "eve",
            "order.placed",
            "01T10:00:00",
            r#""order_id":"a","amount_minor":100,"margin_minor":10"#,
        ),
        ev("2", "eve", "customer.erased", "02T10:00:00", ""),
    ];
    let (state, outputs) = check(&[&events[..1], &events[1..]], "eve");
    assert_eq!(state, None);
    let last = outputs
        .iter()
        .rfind(|r| r.topic == "customer.churn-risk")
        .unwrap();
    assert_eq!(last.topic, "customer.churn-risk");
    assert_eq!(last.key.as_deref(), Some(&b"eve"[..]));
    assert_eq!(last.value, None, "a tombstone");
}

/// An erased customer's events from before its erasure, read after it (another topic behind,
/// or sent again), do not bring it back: not in the same batch, not in a later one, not after
/// the store is opened again; they count as `erased`. An event after the erasure starts a new
/// customer, which an old event, or the erasure sent again, leaves alone.
#[test]
fn events_from_before_an_erasure_read_after_it_do_not_bring_the_customer_back() {
    let order = |id: &str, at: &str| {
        ev(
            id,
            "eve",
            "order.placed",
            at,
            &format!(r#""order_id":"{id}","amount_minor":100,"margin_minor":10"#),
        )
    };
    let registered = ev("r", "eve", "customer.registered", "01T09:00:00", "");
    let erased = ev("x", "eve", "customer.erased", "02T10:00:00", "");
    // An order of the day before, on the orders topic, read after the erasure: in the same
    // batch, then in a later one.
    let before = order("o1", "01T10:00:00");
    let also_before = order("o2", "02T09:59:59");
    let backend = std::sync::Arc::new(customer_pulse::store::MemoryBackend::default());
    let store = Store::open(backend.clone()).unwrap();
    let mut processor = Processor::new(store.clone(), settings(100));
    let batch = |events: &[&String], from: i64| -> Vec<customer_pulse::processor::InputRecord> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| file_record(from + i as i64, e))
            .collect()
    };
    let outcomes = |report: &BatchReport| {
        let mut outcomes: Vec<(&str, &str)> = report
            .events
            .iter()
            .map(|((_, kind, outcome), _)| (*kind, *outcome))
            .collect();
        outcomes.sort();
        outcomes
    };
    let partition = partition_for(b"eve", 4);
    processor
        .process(&batch(&[&registered], 0), NOW_MS)
        .unwrap();
    let report = processor
        .process(&batch(&[&erased, &before], 1), NOW_MS)
        .unwrap();
    assert_eq!(
        outcomes(&report),
        [("customer.erased", "applied"), ("order.placed", "erased")]
    );
    assert_eq!(store.customer(partition, "eve").unwrap(), None);
    let report = processor
        .process(&batch(&[&also_before], 3), NOW_MS)
        .unwrap();
    assert_eq!(outcomes(&report), [("order.placed", "erased")]);
    assert_eq!(store.customer(partition, "eve").unwrap(), None);
    assert!(report.segment_flows.is_empty(), "not a new customer");
    let churn_risk = |store: &Store| -> Vec<Option<Vec<u8>>> {
        store
            .outbox(usize::MAX)
            .unwrap()
            .into_iter()
            .filter(|(_, r)| r.topic == "customer.churn-risk")
            .map(|(_, r)| r.value)
            .collect()
    };
    assert_eq!(
        churn_risk(&store).last(),
        Some(&None),
        "the tombstone stays the customer's last record"
    );

    // Opened again, as after a restart: the marker is stored, by the id's fingerprint.
    drop(processor);
    let store = Store::open(backend).unwrap();
    assert_eq!(store.erasure_markers(), 1);
    let mut processor = Processor::new(store.clone(), settings(100));
    let again = order("o3", "01T12:00:00");
    let report = processor.process(&batch(&[&again], 4), NOW_MS).unwrap();
    assert_eq!(outcomes(&report), [("order.placed", "erased")]);
    assert_eq!(store.customer(partition, "eve").unwrap(), None);

    // A new order after the erasure: a new customer, with that order alone. The erasure sent
    // again, or an old order, leaves it as it is.
    let after = order("o4", "03T10:00:00");
    processor.process(&batch(&[&after], 5), NOW_MS).unwrap();
    let report = processor
        .process(&batch(&[&erased, &before], 6), NOW_MS)
        .unwrap();
    assert_eq!(
        outcomes(&report),
        [("customer.erased", "erased"), ("order.placed", "erased")]
    );
    let state = store
        .customer(partition, "eve")
        .unwrap()
        .expect("a new customer");
    assert_eq!((state.orders, state.revenue_minor), (1, 100));
    assert_eq!(
        state.registered_at, None,
        "the erased registration is not back"
    );
}

#[test]
fn a_bad_event_goes_to_the_dead_letter_output_and_its_neighbours_apply() {
    let good = |id: &str| {
        ev(
            id,
            "fay",
            "interaction.survey",
            "01T10:00:00",
            r#""score":3"#,
        )
    };
    let events = [good("1"), "{not json".to_string(), good("3")];
    let (state, outputs) = check(&[&events], "fay");
    let state = state.unwrap();
    assert_eq!(state.seen.len(), 2);
    let dead: Vec<_> = outputs
        .iter()
        .filter(|r| r.topic == "customer.events.dlq")
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].value.as_deref(),
        Some(&b"{not json"[..]),
        "original bytes untouched"
    );
    assert_eq!(header(dead[0], "reason"), "not_json");
    assert_eq!(header(dead[0], "source_topic"), "test");
    assert_eq!(header(dead[0], "source_offset"), "2");
    assert!(header(dead[0], "message").contains("JSON"));
}

#[test]
fn offsets_move_past_every_record_of_a_batch_rejected_or_not() {
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), settings(10));
    let records = vec![file_record(7, "garbage"), file_record(8, "more garbage")];
    processor.process(&records, NOW_MS).unwrap();
    assert_eq!(store.offset("test", 0).unwrap(), Some(9));
}

#[test]
fn an_event_read_from_another_partition_than_its_customers_is_kept_there_and_counted() {
    // A publisher that does not partition as Kafka's Java client does (librdkafka's default is
    // CRC32): the customer's events are read from partition `away`, not `home`.
    let home = partition_for(b"a", 4);
    let away = (home + 1) % 4;
    let record =
        |offset: i64, partition: i32, json: String| customer_pulse::processor::InputRecord {
            source: "customer.interactions".into(),
            source_partition: partition,
            state_partition: Some(partition),
            ..file_record(offset, &json)
        };
    let contact = |id: &str, at: &str| {
        let fields = r#""channel":"email","direction":"inbound""#;
        ev(id, "a", "interaction.contact", at, fields)
    };
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), settings(10));
    let first = processor
        .process(
            &[
                record(0, home, contact("e1", "01T10:00:00")),
                record(0, away, contact("e2", "01T10:05:00")),
            ],
            NOW_MS,
        )
        .unwrap();
    let second = processor
        .process(&[record(1, away, contact("e3", "01T10:10:00"))], NOW_MS)
        .unwrap();
    for report in [&first, &second] {
        assert_eq!(
            report.off_partition,
            [(("customer.interactions".into(), away), 1)].into(),
            "only the events read from the other partition are counted"
        );
    }
    // Each event is folded where it was read: the one from `home` into one state, the two from
    // `away` into another.
    let contacts = |partition| {
        store
            .customer(partition, "a")
            .unwrap()
            .map(|s| s.contacts)
            .unwrap_or_else(|| panic!("a state in partition {partition}"))
    };
    assert_eq!((contacts(home), contacts(away)), (1, 2));
    let telemetry = Telemetry::new();
    telemetry.record_batch(&first, 0.0, NOW_MS);
    telemetry.record_batch(&second, 0.0, NOW_MS);
    let line = "customer_pulse_events_off_partition_total{topic=\"customer.interactions\"} 2\n";
    assert!(
        telemetry.render().contains(line),
        "no {line:?} in the metrics"
    );
}

#[test]
fn the_cache_metric_tells_customers_in_memory_from_those_read_back_and_new_ones() {
    let survey = |id: &str, customer: &str, at: &str| {
        ev(id, customer, "interaction.survey", at, r#""score":9"#)
    };
    // A cache of one customer: `b` pushes `a` out at its batch's commit.
    let batches = [
        vec![
            survey("e1", "a", "01T10:00:00"),
            survey("e2", "a", "01T10:05:00"),
        ],
        vec![survey("e3", "b", "01T10:10:00")],
        vec![survey("e4", "a", "01T10:15:00")],
    ];
    let (_, reports) = run_batches(settings(1), &batches);
    let telemetry = Telemetry::new();
    for report in &reports {
        telemetry.record_batch(report, 0.0, NOW_MS);
    }
    let metrics = telemetry.render();
    for (result, n) in [("hit", 1), ("stored", 1), ("absent", 2)] {
        let line =
            format!("customer_pulse_customer_cache_lookups_total{{result=\"{result}\"}} {n}\n");
        assert!(metrics.contains(&line), "no {line:?} in the metrics");
    }
}

fn generated(customers: u64, events: u64, seed: u64) -> Vec<serde_json::Value> {
    customer_pulse::generate::generate(&customer_pulse::generate::TrafficSpec {
        customers,
        events,
        seed,
        start_ms: NOW_MS - 20 * 86_400_000,
        step_ms: 60_000,
    })
    .into_iter()
    .map(|g| g.value)
    .collect()
}

/// Folds events in batches of `batch` through a cache of `cache` customers; every customer's state.
fn fold_all(events: &[serde_json::Value], batch: usize, cache: usize) -> Vec<CustomerState> {
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), settings(cache));
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| file_record(i as i64, &e.to_string()))
        .collect();
    for chunk in records.chunks(batch.max(1)) {
        processor.process(chunk, NOW_MS).unwrap();
    }
    (0..4)
        .flat_map(|p| store.customers(p, "", usize::MAX).unwrap())
        .map(|mut s| {
            // The order of remembered ids follows arrival; the set is what matters.
            s.seen.sort_by_key(|s| s.fingerprint);
            s
        })
        .collect()
}

#[test]
fn the_fold_agrees_with_totals_computed_from_the_raw_events() {
    let events = generated(50, 3_000, 11);
    let expected = expected_totals(&events);
    let states = fold_all(&events, 100, 1_000);
    assert_eq!(states.len(), expected.len());
    for state in &states {
        assert_eq!(
            totals_of(state),
            expected[&state.customer_id],
            "{}",
            state.customer_id
        );
    }
}

/// What [`fold_with_metrics`] leaves.
struct Folded {
    store: Store,
    telemetry: Telemetry,
    records: Vec<customer_pulse::processor::InputRecord>,
    reports: Vec<BatchReport>,
}

/// Folds `events` as a file's lines in batches of 250 through a fresh processor, each batch's
/// report recorded in telemetry. The processor is gone at the end, as after a stop.
fn fold_with_metrics(
    events: &[serde_json::Value],
    settings: customer_pulse::processor::ProcessorSettings,
) -> Folded {
    let store = Store::in_memory();
    let mut processor = Processor::new(store.clone(), settings);
    let telemetry = Telemetry::new();
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, e)| file_record(i as i64, &e.to_string()))
        .collect();
    let mut reports = Vec::new();
    for chunk in records.chunks(250) {
        let report = processor.process(chunk, NOW_MS).unwrap();
        telemetry.record_batch(&report, 0.0, NOW_MS);
        reports.push(report);
    }
    Folded {
        store,
        telemetry,
        records,
        reports,
    }
}

/// The population gauges of `/metrics` (customers by segment and lifecycle, and by churn-risk
/// level) equal a count of each customer's latest `customer.churn-risk` record, as the README
/// says they are taken from it; an erased customer, whose latest record is a tombstone, counts
/// nowhere.
#[test]
fn the_population_gauges_count_each_customers_latest_churn_risk_record() {
    let mut events = generated(200, 6_000, 5);
    // Ten customers erased after the last event: they leave the population, and their records
    // end with a tombstone.
    let last = events
        .iter()
        .filter_map(|e| customer_pulse::event::parse_millis(e["occurred_at"].as_str()?))
        .max()
        .unwrap();
    let erased: std::collections::BTreeSet<String> = events
        .iter()
        .map(|e| e["customer_id"].as_str().unwrap().to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .step_by(20)
        .collect();
    assert_eq!(erased.len(), 10);
    for (i, customer) in erased.iter().enumerate() {
        events.push(serde_json::json!({
            "event_id": format!("erase-{customer}"),
            "customer_id": customer,
            "type": "customer.erased",
            "occurred_at": customer_pulse::event::format_millis(last + 1_000 * (i as i64 + 1)),
        }));
    }
    let Folded {
        store, telemetry, ..
    } = fold_with_metrics(&events, settings(1_000));
    let mut latest: std::collections::BTreeMap<String, serde_json::Value> = Default::default();
    let mut tombstones = std::collections::BTreeSet::new();
    for (_, record) in store.outbox(usize::MAX).unwrap() {
        if record.topic == "customer.churn-risk" {
            let customer = String::from_utf8(record.key.unwrap()).unwrap();
            match record.value {
                Some(value) => {
                    latest.insert(customer, serde_json::from_slice(&value).unwrap());
                }
                None => {
                    latest.remove(&customer);
                    tombstones.insert(customer);
                }
            }
        }
    }
    assert_eq!(tombstones, erased);
    assert!(
        latest.len() > 150,
        "{} customers with a record",
        latest.len()
    );
    let mut want: std::collections::BTreeMap<String, i64> = Default::default();
    for record in latest.values() {
        let text = |field: &str| record[field].as_str().unwrap().to_owned();
        let by_level = format!(
            "customer_pulse_churn_risk_customers{{level=\"{}\"}}",
            text("level")
        );
        let by_segment = format!(
            "customer_pulse_customers{{lifecycle=\"{}\",segment=\"{}\"}}",
            text("lifecycle"),
            text("segment")
        );
        for series in [by_level, by_segment] {
            *want.entry(series).or_default() += 1;
        }
    }
    assert!(want.len() >= 4, "{want:?}");
    let metrics = telemetry.render();
    let got: std::collections::BTreeMap<String, i64> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("customer_pulse_churn_risk_customers{")
                || l.starts_with("customer_pulse_customers{")
        })
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: i64 = value.parse().ok()?;
            (value != 0).then(|| (series.to_owned(), value))
        })
        .collect();
    assert_eq!(got, want);
}

/// The open-complaints gauge of each category equals the complaints open in the customers'
/// states: opened, not resolved, not erased; also with each customer's open complaints held to
/// one, when a complaint over the limit is not kept and nothing will resolve it.
#[test]
fn the_open_complaints_gauge_equals_the_complaints_open_in_the_customers_states() {
    for limit in [1_000, 1] {
        open_complaints_gauge_equals_the_states(limit);
    }
}

fn open_complaints_gauge_equals_the_states(max_open_items: usize) {
    let events = generated(200, 6_000, 7);
    let mut settings = settings(1_000);
    settings.limits.max_open_items = max_open_items;
    let Folded {
        store,
        telemetry,
        reports,
        ..
    } = fold_with_metrics(&events, settings);
    let over_the_limit: u64 = reports
        .iter()
        .filter_map(|r| r.limits_reached.get("open_complaints"))
        .sum();
    assert_eq!(over_the_limit > 0, max_open_items == 1, "{over_the_limit}");
    let mut open: std::collections::BTreeMap<String, i64> = Default::default();
    for partition in 0..4 {
        for state in store.customers(partition, "", usize::MAX).unwrap() {
            for complaint in &state.open_complaints {
                *open.entry(complaint.category.clone()).or_default() += 1;
            }
        }
    }
    assert!(open.values().sum::<i64>() > 10, "{open:?}");
    let metrics = telemetry.render();
    let gauges: std::collections::BTreeMap<String, i64> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("customer_pulse_complaints_open{category=\""))
        .filter_map(|l| {
            let (category, value) = l.split_once("\"} ")?;
            let value: i64 = value.parse().ok()?;
            (value != 0).then(|| (category.to_owned(), value))
        })
        .collect();
    assert_eq!(gauges, open, "at most {max_open_items} open a customer");
}

/// A restarted processor's first batch, an event folded before and delivered again, shows the
/// aggregates' gauges as they stand in the store: the population, the margin, the open
/// complaints and the last windows' verdicts as before the restart, and the named RFM segments
/// over every customer who ordered. Before, each waited for a change, a window or a day.
#[test]
fn a_restarted_processor_shows_the_aggregates_gauges_from_its_first_batch() {
    let events = generated(200, 6_000, 5);
    let Folded {
        store,
        telemetry,
        records,
        ..
    } = fold_with_metrics(&events, settings(1_000));
    let before = aggregate_gauges(&telemetry.render());

    let mut restarted = Processor::new(store, settings(1_000));
    let report = restarted.process(&records[100..101], NOW_MS).unwrap();
    assert!(report.closed_windows.is_empty() && report.closed_days == 0);
    let after = Telemetry::new();
    after.record_batch(&report, 0.0, NOW_MS);
    let after = aggregate_gauges(&after.render());
    let without_rfm = |gauges: &std::collections::BTreeMap<String, String>| {
        let mut gauges = gauges.clone();
        gauges.retain(|series, _| !series.starts_with("customer_pulse_rfm_customers"));
        gauges
    };
    assert!(before.len() > 20, "{before:?}");
    assert_eq!(without_rfm(&after), without_rfm(&before));
    assert!(
        before
            .keys()
            .any(|s| s.starts_with("customer_pulse_complaint_spike")),
        "windows closed before the restart"
    );
    let ordered: std::collections::BTreeSet<&str> = events
        .iter()
        .filter(|e| e["type"] == "order.placed")
        .map(|e| e["customer_id"].as_str().unwrap())
        .collect();
    let rfm_total: f64 = after
        .iter()
        .filter(|(series, _)| series.starts_with("customer_pulse_rfm_customers"))
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum();
    assert_eq!(rfm_total, ordered.len() as f64);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Any interleaving that keeps each customer's order, any batch size, any cache size, and any
    /// redelivered prefix give the same states.
    #[test]
    fn order_batching_caching_and_redelivery_do_not_change_the_result(
        seed in 0u64..1_000,
        shuffle in any::<u64>(),
        batch in 1usize..300,
        cache in 1usize..60,
        redeliver in 0usize..400,
    ) {
        let events = generated(30, 400, seed);
        let reference = fold_all(&events, 400, 1_000);

        // Merge per-customer queues in a random order: per-customer order is kept.
        let mut queues: std::collections::BTreeMap<String, std::collections::VecDeque<serde_json::Value>> = Default::default();
        for e in &events {
            queues.entry(e["customer_id"].as_str().unwrap().to_owned()).or_default().push_back(e.clone());
        }
        let mut rng = customer_pulse::generate::Rng::new(shuffle);
        let mut merged = Vec::new();
        while !queues.is_empty() {
            let keys: Vec<String> = queues.keys().cloned().collect();
            let key = &keys[rng.below(keys.len() as u64) as usize];
            let queue = queues.get_mut(key).unwrap();
            merged.push(queue.pop_front().unwrap());
            if queue.is_empty() {
                queues.remove(key);
            }
        }
        merged.extend(events[..redeliver.min(events.len())].iter().cloned());
        prop_assert_eq!(fold_all(&merged, batch, cache), reference);
    }
}

/// Processes `events` as one batch of a file's lines through a fresh processor, whose
/// processing of the event `pill` (an event id) panics.
fn process_as_one_batch(events: &[String], pill: Option<&str>) -> (Store, Processor, BatchReport) {
    let store = Store::in_memory();
    let mut settings = settings(100);
    settings.panic_on_event_id = pill.map(str::to_owned);
    let mut processor = Processor::new(store.clone(), settings);
    let records: Vec<_> = events
        .iter()
        .enumerate()
        .map(|(i, json)| file_record(i as i64 + 1, json))
        .collect();
    let report = processor.process(&records, NOW_MS).unwrap();
    (store, processor, report)
}

#[test]
fn a_panic_in_processing_isolates_the_event_and_the_rest_goes_on() {
    let survey = |id: &str, customer: &str| {
        ev(
            id,
            customer,
            "interaction.survey",
            "01T10:00:00",
            r#""score":9"#,
        )
    };
    // The poison pill sits between good events of its own customer and of another one.
    let events = [
        survey("1", "gus"),
        survey("2", "gus"),
        survey("3", "gus"),
        survey("4", "hal"),
    ];
    let (store, mut processor, report) = process_as_one_batch(&events, Some("2"));
    assert_eq!(report.count("applied"), 3);
    assert_eq!(report.count("rejected"), 1);
    assert_eq!(report.dead_letters.get("processing_error"), Some(&1));
    assert_eq!(report.offsets, [("test".to_owned(), 0, 5)]);
    assert_eq!(
        store.offset("test", 0).unwrap(),
        Some(5),
        "past every record"
    );

    let gus = stored(&store, "gus");
    let ids: Vec<EventFingerprint> = gus.seen.iter().map(|s| s.fingerprint).collect();
    let expected = ["1", "3"].map(EventFingerprint::of);
    assert_eq!(ids, expected, "the neighbours apply, the pill does not");
    assert!(store
        .customer(partition_for(b"hal", 4), "hal")
        .unwrap()
        .is_some());
    let dead: Vec<OutboxRecord> = store
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.topic == "customer.events.dlq")
        .collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], "reason"), "processing_error");
    assert_eq!(header(&dead[0], "record_id"), "test-0-2");
    assert_eq!(dead[0].value.as_deref(), Some(events[1].as_bytes()));

    // The next batch runs normally.
    let later = [survey("5", "gus")];
    let report = processor
        .process(&[file_record(5, &later[0])], NOW_MS)
        .unwrap();
    assert_eq!(report.count("applied"), 1);
}

/// Surveys of seven customers, the 50th malformed, processed as one batch large enough to be
/// decoded on a thread beside the fold. Returns the store.
fn surveys_decoded_beside_the_fold(pill: Option<usize>) -> Store {
    let n = customer_pulse::processor::DECODE_AHEAD_FROM + 200;
    let survey = |id: usize| {
        ev(
            &id.to_string(),
            &format!("c{}", id % 7),
            "interaction.survey",
            "01T10:00:00",
            r#""score":9"#,
        )
    };
    let mut events: Vec<String> = (1..=n).map(survey).collect();
    events[49] = "{not json".to_owned();
    let pill_id = pill.map(|id| id.to_string());
    let (store, _, report) = process_as_one_batch(&events, pill_id.as_deref());
    let failed = 1 + usize::from(pill.is_some());
    assert_eq!(report.count("applied"), (n - failed) as u64);
    assert_eq!(report.count("rejected"), failed as u64);
    assert_eq!(report.dead_letters.get("not_json"), Some(&1));
    assert_eq!(store.offset("test", 0).unwrap(), Some(n as i64 + 1));
    // Each customer saw its own events in input order, without those that failed.
    for customer in 0..7 {
        let id = format!("c{customer}");
        let state = store
            .customer(partition_for(id.as_bytes(), 4), &id)
            .unwrap()
            .unwrap();
        let seen: Vec<EventFingerprint> = state.seen.iter().map(|s| s.fingerprint).collect();
        let expected: Vec<EventFingerprint> = (1..=n)
            .filter(|i| i % 7 == customer && *i != 50 && Some(*i) != pill)
            .map(|i| EventFingerprint::of(&i.to_string()))
            .collect();
        assert_eq!(seen, expected, "{id}");
    }
    store
}

fn dead_letter_ids(store: &Store) -> Vec<(String, String)> {
    store
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .filter(|r| r.topic == "customer.events.dlq")
        .map(|r| {
            (
                header(&r, "record_id").to_owned(),
                header(&r, "reason").to_owned(),
            )
        })
        .collect()
}

#[test]
fn a_batch_decoded_on_its_own_thread_keeps_every_record_in_its_place() {
    let store = surveys_decoded_beside_the_fold(None);
    assert_eq!(
        dead_letter_ids(&store),
        [("test-0-50".to_owned(), "not_json".to_owned())]
    );
}

#[test]
fn a_panic_in_the_fold_of_a_batch_decoded_on_its_own_thread_isolates_the_event() {
    // The pill panics in the fold while the decoding thread may still be decoding.
    let store = surveys_decoded_beside_the_fold(Some(120));
    assert_eq!(
        dead_letter_ids(&store),
        [
            ("test-0-50".to_owned(), "not_json".to_owned()),
            ("test-0-120".to_owned(), "processing_error".to_owned())
        ]
    );
}

/// The service-time histograms (DOMAIN.md: measure service speed) equal a recount from the raw
/// events: each contact's first response by channel, each order's time to its first delivery,
/// each complaint's time to its resolution by the category it was opened in, in whole seconds;
/// a second delivery of every event adds nothing.
#[test]
fn the_service_time_histograms_equal_a_recount_from_the_raw_events() {
    use std::collections::{BTreeMap, HashMap};
    let events = generated(200, 20_000, 9);
    let millis = |e: &serde_json::Value| {
        customer_pulse::event::parse_millis(e["occurred_at"].as_str().unwrap()).unwrap()
    };
    let seconds = |from: i64, to: i64| ((to - from) / 1000).max(0) as f64;
    let text = |e: &serde_json::Value, field: &str| e[field].as_str().unwrap().to_owned();
    // Series -> (count, sum), as /metrics names them.
    let mut want: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut observe = |series: String, value: f64| {
        let entry = want.entry(series).or_default();
        entry.0 += 1;
        entry.1 += value;
    };
    let configured = settings(100_000).trends.categories;
    let mut placed: HashMap<(String, String), i64> = HashMap::new();
    let mut opened: HashMap<(String, String), (String, i64)> = HashMap::new();
    for e in &events {
        let customer = text(e, "customer_id");
        match e["type"].as_str().unwrap() {
            "interaction.contact" => {
                if let Some(s) = e["first_response_seconds"].as_u64() {
                    let channel = text(e, "channel");
                    observe(
                        format!("customer_pulse_first_response_seconds{{channel=\"{channel}\"}}"),
                        s as f64,
                    );
                }
            }
            "order.placed" => {
                placed.insert((customer, text(e, "order_id")), millis(e));
            }
            "order.delivered" => {
                if let Some(at) = placed.remove(&(customer, text(e, "order_id"))) {
                    observe(
                        "customer_pulse_delivery_seconds".into(),
                        seconds(at, millis(e)),
                    );
                }
            }
            "complaint.opened" => {
                // Normalised to the configured categories, else `other`.
                let category = Some(text(e, "category"))
                    .filter(|c| configured.contains(c))
                    .unwrap_or_else(|| "other".into());
                opened.insert((customer, text(e, "complaint_id")), (category, millis(e)));
            }
            "complaint.resolved" => {
                if let Some((category, at)) = opened.remove(&(customer, text(e, "complaint_id"))) {
                    observe(
                        format!(
                            "customer_pulse_complaint_resolution_seconds{{category=\"{category}\"}}"
                        ),
                        seconds(at, millis(e)),
                    );
                }
            }
            _ => {}
        }
    }
    assert!(
        want.keys().filter(|s| s.contains("first_response")).count() >= 3
            && want.keys().filter(|s| s.contains("resolution")).count() >= 3
            && want.contains_key("customer_pulse_delivery_seconds"),
        "the traffic measures every kind of service: {want:?}"
    );
    // Each series' count and sum in /metrics, by the series' name and labels.
    let got = |metrics: &str| -> BTreeMap<String, (u64, f64)> {
        let mut got: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        for line in metrics.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = match value.parse() {
                Ok(v) => v,
                Err(_) => continue,
            };
            for (suffix, is_count) in [("_count", true), ("_sum", false)] {
                let (name, labels) = series.split_once('{').unwrap_or((series, ""));
                let Some(name) = name.strip_suffix(suffix) else {
                    continue;
                };
                if !["first_response", "delivery_seconds", "resolution"]
                    .iter()
                    .any(|m| name.contains(m))
                {
                    continue;
                }
                let key = match labels {
                    "" => name.to_owned(),
                    labels => format!("{name}{{{labels}"),
                };
                let entry = got.entry(key).or_default();
                if is_count {
                    entry.0 = value as u64;
                } else {
                    entry.1 = value;
                }
            }
        }
        got
    };
    let once = fold_with_metrics(&events, settings(100_000));
    assert_eq!(got(&once.telemetry.render()), want);
    let twice: Vec<serde_json::Value> = events.iter().chain(&events).cloned().collect();
    let twice = fold_with_metrics(&twice, settings(100_000));
    assert_eq!(got(&twice.telemetry.render()), want, "delivered twice");
}

/// The losses the customers keep for the lost-customer review add up, over every closed day, to
/// the `lost_customers` of the `customer.segment-metrics` records: the same count, value and
/// reasons, since both are taken at the same moments.
#[test]
fn the_customers_losses_add_up_to_the_segment_metrics_lost_customers() {
    use std::collections::BTreeMap;
    let events = generated(300, 20_000, 3);
    let Folded { store, .. } = fold_with_metrics(&events, settings(100_000));
    let days: Vec<serde_json::Value> = store
        .outbox(usize::MAX)
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.topic == "customer.segment-metrics")
        .map(|(_, r)| serde_json::from_slice(&r.value.unwrap()).unwrap())
        .collect();
    let millis =
        |v: &serde_json::Value| customer_pulse::event::parse_millis(v.as_str().unwrap()).unwrap();
    let closed_until = days.iter().map(|d| millis(&d["window_end"])).max().unwrap();
    let mut from_days = (0u64, 0i64, BTreeMap::<String, u64>::new());
    for day in &days {
        let lost = &day["lost_customers"];
        from_days.0 += lost["count"].as_u64().unwrap();
        from_days.1 += lost["value_minor"].as_i64().unwrap();
        for (reason, n) in lost["reasons"].as_object().unwrap() {
            *from_days.2.entry(reason.clone()).or_default() += n.as_u64().unwrap();
        }
    }
    let mut from_losses = (0u64, 0i64, BTreeMap::<String, u64>::new());
    for partition in 0..4 {
        store
            .for_each_customer(partition, |customer| {
                for loss in customer.losses.iter().filter(|l| l.at < closed_until) {
                    from_losses.0 += 1;
                    from_losses.1 += loss.value_minor;
                    *from_losses
                        .2
                        .entry(loss.reason.code().to_owned())
                        .or_default() += 1;
                }
                Ok::<_, customer_pulse::store::StoreError>(())
            })
            .unwrap();
    }
    assert!(
        from_days.0 >= 20,
        "the traffic loses customers: {from_days:?}"
    );
    assert_eq!(from_losses, from_days);
}
