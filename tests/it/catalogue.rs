//! The catalogue of malformed events: each with the reason code it must get. Used directly against
//! the decoder here, and through the whole pipeline (file and broker) elsewhere.

use customer_pulse::decode::{decode, Reason, Rules};
use customer_pulse::event::{format_millis, Stream};

pub const NOW: &str = "2026-06-01T12:00:00Z";
pub const NOW_MS: i64 = 1_780_315_200_000;

pub struct Bad {
    pub name: &'static str,
    pub stream: Stream,
    /// `None`: the message has no key.
    pub key: Option<&'static str>,
    pub payload: Vec<u8>,
    pub reason: Reason,
}

pub fn rules() -> Rules {
    Rules {
        max_event_bytes: 4096,
        max_future_skew_ms: 300_000,
        max_event_age_ms: 20 * 365 * 86_400_000,
        max_id_chars: 128,
        max_text_chars: 1024,
        max_amount_minor: 1_000_000_000_000,
        currency: "EUR".into(),
        complaint_categories: vec!["billing".into(), "delivery".into()],
        cancellation_reasons: vec!["price".into()],
        renewal_reasons: vec!["loyalty".into()],
    }
}

/// An hour before `now`, as the contract writes time.
fn hour_ago(now_ms: i64) -> String {
    format_millis(now_ms - 3_600_000)
}

fn order(now_ms: i64, extra: &str) -> Vec<u8> {
    let at = hour_ago(now_ms);
    format!(
        r#"{{"event_id":"bad-1","customer_id":"c-9","type":"order.placed","occurred_at":"{at}","order_id":"o","amount_minor":100,"margin_minor":10{extra}}}"#
    )
    .into_bytes()
}

fn replace(now_ms: i64, field: &str, value: &str) -> Vec<u8> {
    let base: serde_json::Value = serde_json::from_slice(&order(now_ms, "")).unwrap();
    let mut obj = base.as_object().unwrap().clone();
    if value.is_empty() {
        obj.remove(field);
    } else {
        obj.insert(field.into(), serde_json::from_str(value).unwrap());
    }
    serde_json::to_vec(&obj).unwrap()
}

/// The catalogue for a processor whose clock reads `now_ms`.
pub fn catalogue(now_ms: i64) -> Vec<Bad> {
    use Reason::*;
    use Stream::*;
    let key = Some("c-9");
    let order = |extra: &str| order(now_ms, extra);
    let replace = |field: &str, value: &str| replace(now_ms, field, value);
    let at = hour_ago(now_ms);
    let future = format!("\"{}\"", format_millis(now_ms + 600_000));
    // Found by the fuzz target: an order a thousand years old made the next event's watermark
    // close every segment day since, and ran out of memory.
    let ancient = "\"1013-05-01T10:00:00Z\"";
    let naive = format!("\"{}\"", &at[..19]);
    // A whole event for another type; "AT" stands for an hour ago.
    let typed = |stream: Stream, json: &str| (stream, json.replace("AT", &at).into_bytes());
    let mut bad = vec![
        ("empty payload", Orders, key, Vec::new(), NotJson),
        ("not json", Orders, key, b"hello".to_vec(), NotJson),
        (
            "truncated json",
            Orders,
            key,
            order("")[..40].to_vec(),
            NotJson,
        ),
        (
            "invalid utf-8",
            Orders,
            key,
            vec![b'"', 0xff, 0xfe, b'"'],
            NotJson,
        ),
        ("json array", Orders, key, b"[1,2]".to_vec(), NotObject),
        ("json string", Orders, key, b"\"x\"".to_vec(), NotObject),
        (
            "too large",
            Orders,
            key,
            order(&format!(r#","pad":"{}""#, "x".repeat(5000))),
            TooLarge,
        ),
        (
            "no event_id",
            Orders,
            key,
            replace("event_id", ""),
            MissingField,
        ),
        (
            "empty event_id",
            Orders,
            key,
            replace("event_id", "\"\""),
            BadField,
        ),
        (
            "event_id too long",
            Orders,
            key,
            replace("event_id", &format!("\"{}\"", "e".repeat(129))),
            BadField,
        ),
        (
            "blank order_id",
            Orders,
            key,
            replace("order_id", "\" \\t \""),
            BadField,
        ),
        (
            "event_id with a control character",
            Orders,
            key,
            replace("event_id", "\"e-\\u0000-1\""),
            BadField,
        ),
        (
            "numeric customer_id",
            Orders,
            key,
            replace("customer_id", "42"),
            BadField,
        ),
        (
            "no customer_id",
            Orders,
            key,
            replace("customer_id", ""),
            MissingField,
        ),
        ("no type", Orders, key, replace("type", ""), MissingField),
        (
            "unknown type",
            Orders,
            key,
            replace("type", "\"order.teleported\""),
            UnknownType,
        ),
        (
            "no occurred_at",
            Orders,
            key,
            replace("occurred_at", ""),
            MissingField,
        ),
        (
            "occurred_at without offset",
            Orders,
            key,
            replace("occurred_at", &naive),
            BadField,
        ),
        (
            "occurred_at not a date",
            Orders,
            key,
            replace("occurred_at", "\"yesterday\""),
            BadField,
        ),
        (
            "from the future",
            Orders,
            key,
            replace("occurred_at", &future),
            FutureTimestamp,
        ),
        (
            "a thousand years old",
            Orders,
            key,
            replace("occurred_at", ancient),
            AncientTimestamp,
        ),
        (
            "key differs",
            Orders,
            Some("c-other"),
            order(""),
            KeyMismatch,
        ),
        (
            "schema version 2",
            Orders,
            key,
            replace("schema_version", "2"),
            UnsupportedSchemaVersion,
        ),
        (
            "schema version text",
            Orders,
            key,
            replace("schema_version", "\"1\""),
            BadField,
        ),
        (
            "other currency",
            Orders,
            key,
            replace("currency", "\"USD\""),
            CurrencyMismatch,
        ),
        (
            "negative amount",
            Orders,
            key,
            replace("amount_minor", "-5"),
            BadField,
        ),
        (
            "fractional amount",
            Orders,
            key,
            replace("amount_minor", "1.5"),
            BadField,
        ),
        (
            "amount as text",
            Orders,
            key,
            replace("amount_minor", "\"100\""),
            BadField,
        ),
        (
            "no order_id",
            Orders,
            key,
            replace("order_id", ""),
            MissingField,
        ),
        (
            "no margin",
            Orders,
            key,
            replace("margin_minor", ""),
            MissingField,
        ),
    ];
    let more = [
        (
            "order on the complaints topic",
            typed(Complaints, std::str::from_utf8(&order("")).unwrap()),
            WrongTopic,
        ),
        (
            "survey score 11",
            typed(
                Interactions,
                r#"{"event_id":"s","customer_id":"c-9","type":"interaction.survey","occurred_at":"AT","score":11}"#,
            ),
            BadField,
        ),
        (
            "contact with unknown channel",
            typed(
                Interactions,
                r#"{"event_id":"s","customer_id":"c-9","type":"interaction.contact","occurred_at":"AT","channel":"pigeon","direction":"inbound"}"#,
            ),
            BadField,
        ),
        (
            "contact without direction",
            typed(
                Interactions,
                r#"{"event_id":"s","customer_id":"c-9","type":"interaction.contact","occurred_at":"AT","channel":"web"}"#,
            ),
            MissingField,
        ),
        (
            "complaint with unknown severity",
            typed(
                Complaints,
                r#"{"event_id":"s","customer_id":"c-9","type":"complaint.opened","occurred_at":"AT","complaint_id":"k","category":"billing","severity":"apocalyptic"}"#,
            ),
            BadField,
        ),
        (
            "resolution with text satisfied",
            typed(
                Complaints,
                r#"{"event_id":"s","customer_id":"c-9","type":"complaint.resolved","occurred_at":"AT","complaint_id":"k","satisfied":"yes"}"#,
            ),
            BadField,
        ),
        (
            "cancellation without reason",
            typed(
                Interactions,
                r#"{"event_id":"s","customer_id":"c-9","type":"subscription.cancelled","occurred_at":"2026-06-01T11:00:00Z"}"#,
            ),
            MissingField,
        ),
    ];
    for (name, (stream, payload), reason) in more {
        bad.push((name, stream, key, payload, reason));
    }
    bad.into_iter()
        .map(|(name, stream, key, payload, reason)| Bad {
            name,
            stream,
            key,
            payload,
            reason,
        })
        .collect()
}

#[test]
fn the_base_event_is_valid() {
    // Otherwise every mutation below would be rejected for the wrong reason.
    let event = decode(
        Some(Stream::Orders),
        Some(b"c-9"),
        &order(NOW_MS, ""),
        NOW_MS,
        &rules(),
    );
    assert!(event.is_ok(), "{event:?}");
}

#[test]
fn now_constant_matches_its_text() {
    let parsed =
        time::OffsetDateTime::parse(NOW, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(parsed.unix_timestamp() * 1000, NOW_MS);
}

#[test]
fn every_malformed_event_gets_its_reason_code() {
    let catalogue = catalogue(NOW_MS);
    assert!(
        catalogue.len() >= 25,
        "the catalogue holds at least 25 cases"
    );
    for bad in &catalogue {
        let got = decode(
            Some(bad.stream),
            bad.key.map(str::as_bytes),
            &bad.payload,
            NOW_MS,
            &rules(),
        );
        match got {
            Err(rejection) => assert_eq!(
                rejection.reason, bad.reason,
                "{}: got {:?} ({})",
                bad.name, rejection.reason, rejection.message
            ),
            Ok(event) => panic!("{}: accepted as {event:?}", bad.name),
        }
    }
}

#[test]
fn free_text_categories_are_normalised_to_the_closed_set() {
    let complaint = |category: &str| {
        format!(
            r#"{{"event_id":"s","customer_id":"c","type":"complaint.opened","occurred_at":"2026-06-01T11:00:00+02:00","complaint_id":"k","category":"{category}","severity":"low"}}"#
        )
    };
    for (written, expected) in [
        ("Billing", "billing"),
        (" delivery ", "delivery"),
        ("aliens", "other"),
    ] {
        let event = decode(
            Some(Stream::Complaints),
            None,
            complaint(written).as_bytes(),
            NOW_MS,
            &rules(),
        )
        .unwrap();
        match event.kind {
            customer_pulse::event::EventKind::ComplaintOpened { category, .. } => {
                assert_eq!(category, expected, "{written}")
            }
            other => panic!("{other:?}"),
        }
        // The offset is honoured: 11:00+02:00 is 09:00Z.
        assert_eq!(event.occurred_at, NOW_MS - 3 * 3_600_000);
    }
}

#[test]
fn unknown_extra_fields_and_a_missing_key_are_accepted() {
    let event = decode(
        Some(Stream::Orders),
        None,
        &order(NOW_MS, r#","color":"blue","nested":{"a":1}"#),
        NOW_MS,
        &rules(),
    );
    assert!(event.is_ok(), "{event:?}");
}
