//! Every configured bound on input, at the bound and one past it: what passes, and the reason code
//! of what does not. Decoding bounds dead-letter the event; per-customer bounds apply the event,
//! keep what they hold bounded, and count the event under `limits_reached_total{limit}`.

use customer_pulse::config::Config;
use customer_pulse::decode::{decode, Reason, Rules};
use customer_pulse::fold::{EventFingerprint, FoldLimits};

use crate::catalogue::{rules, NOW_MS};
use crate::support::{run_batches, settings, stored};

const AT: &str = "2026-05-01T10:00:00Z";

/// A contact event padded with a field the decoder ignores, to exactly `bytes` bytes.
fn contact_of_size(bytes: usize) -> Vec<u8> {
    let head = format!(
        r#"{{"event_id":"e-1","customer_id":"c-1","type":"interaction.contact","occurred_at":"{AT}","channel":"web","direction":"inbound","note":""#
    );
    let tail = r#""}"#;
    let pad = bytes - head.len() - tail.len();
    format!("{head}{}{tail}", "x".repeat(pad)).into_bytes()
}

fn decoded(payload: &[u8], rules: &Rules) -> Result<(), (Reason, String)> {
    decode(None, None, payload, NOW_MS, rules)
        .map(|_| ())
        .map_err(|r| (r.reason, r.message))
}

#[test]
fn an_event_of_max_event_bytes_passes_and_one_byte_more_is_too_large() {
    let rules = Rules {
        max_event_bytes: 300,
        ..rules()
    };
    assert_eq!(contact_of_size(300).len(), 300);
    assert_eq!(decoded(&contact_of_size(300), &rules), Ok(()));
    let (reason, message) = decoded(&contact_of_size(301), &rules).unwrap_err();
    assert_eq!(reason, Reason::TooLarge);
    assert!(message.contains("max_event_bytes = 300"), "{message}");
}

#[test]
fn identifiers_and_texts_are_bounded_by_their_configured_lengths() {
    let rules = Rules {
        max_id_chars: 10,
        max_text_chars: 20,
        ..rules()
    };
    let complaint = |id: &str, category: &str| {
        format!(
            r#"{{"event_id":"{id}","customer_id":"c-1","type":"complaint.opened","occurred_at":"{AT}","complaint_id":"k","category":"{category}","severity":"low"}}"#
        )
        .into_bytes()
    };
    // Characters, not bytes: ten two-byte characters are ten.
    assert_eq!(
        decoded(&complaint(&"é".repeat(10), "billing"), &rules),
        Ok(())
    );
    let (reason, message) = decoded(&complaint(&"é".repeat(11), "billing"), &rules).unwrap_err();
    assert_eq!(reason, Reason::BadField);
    assert!(
        message.contains("event_id") && message.contains("1 to 10"),
        "{message}"
    );

    assert_eq!(decoded(&complaint("e-1", &"b".repeat(20)), &rules), Ok(()));
    let (reason, message) = decoded(&complaint("e-1", &"b".repeat(21)), &rules).unwrap_err();
    assert_eq!(reason, Reason::BadField);
    assert!(
        message.contains("category") && message.contains("1 to 20"),
        "{message}"
    );
}

/// Money is bounded: an `amount_minor` above `input.max_amount_minor`, or a `margin_minor`
/// beyond it either way, is a `bad_field` naming the field and the setting. So no sum the state
/// or the aggregates keep can overflow: before, two orders of 9e18 panicked in a debug build
/// (the second dead-lettered as `processing_error`) and in a release build wrapped the
/// customer's revenue into a negative number.
#[test]
fn amounts_and_margins_are_bounded_by_max_amount_minor() {
    let rules = Rules {
        max_amount_minor: 1_000,
        ..rules()
    };
    let event = |kind: &str, fields: &str| {
        format!(
            r#"{{"event_id":"e-1","customer_id":"c-1","type":"{kind}","occurred_at":"{AT}",{fields}}}"#
        )
        .into_bytes()
    };
    let order = |amount: i64, margin: i64| {
        event(
            "order.placed",
            &format!(r#""order_id":"o","amount_minor":{amount},"margin_minor":{margin}"#),
        )
    };
    assert_eq!(decoded(&order(1_000, -1_000), &rules), Ok(()));
    assert_eq!(decoded(&order(0, 1_000), &rules), Ok(()));
    let over = [
        (order(1_001, 0), "amount_minor"),
        (order(0, 1_001), "margin_minor"),
        (order(0, -1_001), "margin_minor"),
        (order(i64::MAX, 0), "amount_minor"),
        (order(0, i64::MIN), "margin_minor"),
        (
            event("order.returned", r#""order_id":"o","amount_minor":1001"#),
            "amount_minor",
        ),
        (
            event("subscription.renewed", r#""amount_minor":1001"#),
            "amount_minor",
        ),
    ];
    for (payload, field) in over {
        let (reason, message) = decoded(&payload, &rules).unwrap_err();
        assert_eq!(reason, Reason::BadField, "{message}");
        assert!(
            message.contains(field) && message.contains("input.max_amount_minor = 1000"),
            "{message}"
        );
    }
    let returned = event("order.returned", r#""order_id":"o","amount_minor":1000"#);
    assert_eq!(decoded(&returned, &rules), Ok(()));
}

/// A margin within the bound can still be far beyond its order's amount. A customer's lifetime
/// value takes the margin as a share of the spend, at most all of it either way: 3,000
/// customers who each lost 10^12 on two orders of 1 minor unit fold without an error, and each
/// lifetime value stays that of losing the whole spend. Before, each was about -4.7·10^15, and
/// their segment's sum overflowed 64 bits (a panic in a debug build, so 1,448 of the events were
/// dead-lettered as `processing_error`; a wrapped sum in a release build).
#[test]
fn margins_far_beyond_their_amounts_keep_lifetime_values_and_their_sums_bounded() {
    let mut events = Vec::new();
    for c in 0..3_000 {
        for (n, day) in [(0, "01"), (1, "03")] {
            events.push(format!(
                r#"{{"event_id":"e-{c}-{n}","customer_id":"c-{c}","type":"order.placed","occurred_at":"2026-05-{day}T10:00:00Z","order_id":"o-{n}","amount_minor":1,"margin_minor":-1000000000000}}"#
            ));
        }
    }
    let (store, reports) = run_batches(settings(100_000), &[events]);
    let dead: u64 = reports.iter().flat_map(|r| r.dead_letters.values()).sum();
    assert_eq!(dead, 0, "{:?}", reports[0].dead_letters);
    let mut values = 0;
    for (_, record) in store.outbox(usize::MAX).unwrap() {
        let Some(value) = record.value else { continue };
        let value: serde_json::Value = serde_json::from_slice(&value).unwrap();
        for field in ["ltv_minor", "avg_ltv_minor"] {
            if let Some(ltv) = value[field].as_i64() {
                assert!(ltv.abs() < 1_000_000, "{field} {ltv}: {value}");
                values += 1;
            }
        }
    }
    assert!(values > 3_000, "{values} lifetime values read");
}

fn ev(id: usize, kind: &str, fields: &str) -> String {
    format!(
        r#"{{"event_id":"e-{id}","customer_id":"c-1","type":"{kind}","occurred_at":"2026-05-01T10:{:02}:{:02}Z",{fields}}}"#,
        id / 60,
        id % 60
    )
}

/// Runs the events through a processor with the given per-customer bounds, one batch each.
fn fold(
    limits: FoldLimits,
    batches: &[Vec<String>],
) -> (
    customer_pulse::fold::CustomerState,
    Vec<customer_pulse::processor::BatchReport>,
) {
    let settings = customer_pulse::processor::ProcessorSettings {
        limits,
        ..settings(100)
    };
    let (store, reports) = run_batches(settings, batches);
    let state = stored(&store, "c-1");
    (state, reports)
}

fn reached(reports: &[customer_pulse::processor::BatchReport], limit: &str) -> u64 {
    reports
        .iter()
        .filter_map(|r| r.limits_reached.get(limit))
        .sum()
}

const LIMITS: FoldLimits = FoldLimits {
    dedup_horizon_ms: 30 * 86_400_000,
    max_dedup_ids: 10_000,
    max_open_items: 3,
    clock_skew_ms: 300_000,
};

#[test]
fn open_complaints_past_the_bound_count_but_are_not_kept_open() {
    let opened: Vec<String> = (0..5)
        .map(|i| {
            ev(
                i,
                "complaint.opened",
                &format!(r#""complaint_id":"k-{i}","category":"billing","severity":"low""#),
            )
        })
        .collect();
    let (state, reports) = fold(LIMITS, std::slice::from_ref(&opened));
    assert_eq!(state.complaints_opened, 5, "every complaint counts");
    assert_eq!(state.open_complaints.len(), 3, "three are kept open");
    assert_eq!(reached(&reports, "open_complaints"), 2);

    // Resolving one frees a place: the next complaint is kept again.
    let more = vec![
        ev(10, "complaint.resolved", r#""complaint_id":"k-0""#),
        ev(
            11,
            "complaint.opened",
            r#""complaint_id":"k-9","category":"billing","severity":"low""#,
        ),
    ];
    let (state, reports) = fold(LIMITS, &[opened, more]);
    assert_eq!(state.open_complaints.len(), 3);
    assert!(state
        .open_complaints
        .iter()
        .any(|c| c.complaint_id == "k-9"));
    assert_eq!(reached(&reports, "open_complaints"), 2);
}

#[test]
fn open_orders_past_the_bound_count_but_are_not_tracked_to_delivery() {
    let placed: Vec<String> = (0..4)
        .map(|i| {
            ev(
                i,
                "order.placed",
                &format!(r#""order_id":"o-{i}","amount_minor":100,"margin_minor":10"#),
            )
        })
        .collect();
    let (state, reports) = fold(LIMITS, &[placed]);
    assert_eq!(state.orders, 4);
    assert_eq!(state.revenue_minor, 400);
    assert_eq!(state.open_orders.len(), 3);
    assert_eq!(reached(&reports, "open_orders"), 1);
}

#[test]
fn remembered_event_ids_are_bounded_and_the_oldest_is_forgotten_first() {
    let limits = FoldLimits {
        max_dedup_ids: 3,
        ..LIMITS
    };
    let contacts: Vec<String> = (0..4)
        .map(|i| {
            ev(
                i,
                "interaction.contact",
                r#""channel":"web","direction":"inbound""#,
            )
        })
        .collect();
    let (state, reports) = fold(limits, std::slice::from_ref(&contacts));
    assert_eq!(state.seen.len(), 3);
    let first = EventFingerprint::of("e-0");
    assert!(state.seen.iter().all(|s| s.fingerprint != first));
    assert_eq!(reached(&reports, "dedup_ids"), 1);

    // What the bound costs, stated: a redelivery of the newest three changes nothing; a redelivery
    // of the forgotten oldest applies again, and is counted at the bound once more.
    let (state, reports) = fold(
        limits,
        &[
            contacts.clone(),
            contacts[1..].to_vec(),
            vec![contacts[0].clone()],
        ],
    );
    assert_eq!(state.contacts, 5);
    assert_eq!(state.seen.len(), 3);
    assert_eq!(reached(&reports, "dedup_ids"), 2);
}

#[test]
fn the_bounds_are_configurable_and_refused_past_their_range() {
    let base = "[kafka]\nbrokers = \"b\"\n[state]\npath = \"x\"\n[input]\n";
    let config = Config::parse(
        &format!("{base}max_id_chars = 64\nmax_text_chars = 256\nmax_open_items_per_customer = 50\nmax_dedup_ids_per_customer = 500\nmax_event_bytes = 2048\nmax_amount_minor = 5000\n"),
        Vec::new(),
    )
    .unwrap();
    assert_eq!(
        (
            config.rules.max_id_chars,
            config.rules.max_text_chars,
            config.rules.max_event_bytes,
            config.limits.max_open_items,
            config.limits.max_dedup_ids,
            config.rules.max_amount_minor
        ),
        (64, 256, 2048, 50, 500, 5_000)
    );
    for (line, field) in [
        ("max_id_chars = 0", "input.max_id_chars"),
        ("max_text_chars = 100000", "input.max_text_chars"),
        (
            "max_open_items_per_customer = 1000000",
            "input.max_open_items_per_customer",
        ),
        (
            "max_dedup_ids_per_customer = 0",
            "input.max_dedup_ids_per_customer",
        ),
        ("max_amount_minor = 0", "input.max_amount_minor"),
        (
            "max_amount_minor = 1000000000000001",
            "input.max_amount_minor",
        ),
    ] {
        let err = Config::parse(&format!("{base}{line}\n"), Vec::new()).unwrap_err();
        assert!(format!("{err:#}").contains(field), "{line}: {err:#}");
    }
    // Label values: each closed set is bounded, so no input can grow a metric's label set.
    let letter = |i: u8| char::from(b'a' + i % 26);
    let categories: Vec<String> = (0..65u8)
        .map(|i| format!("\"{}{}\"", letter(i / 26), letter(i)))
        .collect();
    let err = Config::parse(
        &format!("{base}complaint_categories = [{}]\n", categories.join(",")),
        Vec::new(),
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("input.complaint_categories"),
        "{err:#}"
    );
}
