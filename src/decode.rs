//! Decoding and validation: raw message bytes to a typed [`Event`], or a [`Rejection`] with a reason
//! code. Pure: the processor's clock is passed in. Must not know about Kafka, storage or metrics.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::event::{Channel, Event, EventKind, Millis, Severity, Stream};

/// Why an input was rejected. The code is stable: it is a dead-letter header and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    TooLarge,
    NotJson,
    NotObject,
    MissingField,
    BadField,
    UnknownType,
    WrongTopic,
    KeyMismatch,
    FutureTimestamp,
    /// Older than `max_event_age`: a timestamp that would drag the watermark back through
    /// centuries of windows to close.
    AncientTimestamp,
    UnsupportedSchemaVersion,
    CurrencyMismatch,
    /// Not a decoding verdict: processing the event panicked (a poison pill); the processor
    /// isolates it so that the rest goes on.
    ProcessingError,
}

impl Reason {
    pub const ALL: [Reason; 13] = [
        Reason::TooLarge,
        Reason::NotJson,
        Reason::NotObject,
        Reason::MissingField,
        Reason::BadField,
        Reason::UnknownType,
        Reason::WrongTopic,
        Reason::KeyMismatch,
        Reason::FutureTimestamp,
        Reason::AncientTimestamp,
        Reason::UnsupportedSchemaVersion,
        Reason::CurrencyMismatch,
        Reason::ProcessingError,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::TooLarge => "too_large",
            Reason::NotJson => "not_json",
            Reason::NotObject => "not_object",
            Reason::MissingField => "missing_field",
            Reason::BadField => "bad_field",
            Reason::UnknownType => "unknown_type",
            Reason::WrongTopic => "wrong_topic",
            Reason::KeyMismatch => "key_mismatch",
            Reason::FutureTimestamp => "future_timestamp",
            Reason::AncientTimestamp => "ancient_timestamp",
            Reason::UnsupportedSchemaVersion => "unsupported_schema_version",
            Reason::CurrencyMismatch => "currency_mismatch",
            Reason::ProcessingError => "processing_error",
        }
    }
}

/// A rejected input: the reason code and a human message naming the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub message: String,
}

fn reject(reason: Reason, message: impl Into<String>) -> Rejection {
    Rejection {
        reason,
        message: message.into(),
    }
}

/// The validation rules that come from configuration.
#[derive(Debug, Clone)]
pub struct Rules {
    pub max_event_bytes: usize,
    pub max_future_skew_ms: Millis,
    /// Oldest accepted event, as an age before the processor clock.
    pub max_event_age_ms: Millis,
    /// Longest identifier, in characters; a longer one is a `bad_field`.
    pub max_id_chars: usize,
    /// Longest free-text field, in characters; a longer one is a `bad_field`.
    pub max_text_chars: usize,
    /// Largest amount, and largest margin either way, of one event in minor units; beyond it a
    /// `bad_field`. It keeps every sum of money far from `i64`'s range.
    pub max_amount_minor: i64,
    pub currency: String,
    /// Closed set of complaint categories; anything else becomes `other`.
    pub complaint_categories: Vec<String>,
    /// Closed set of cancellation reasons; anything else becomes `other`.
    pub cancellation_reasons: Vec<String>,
    /// Closed set of renewal reasons; anything else becomes `other`, a missing one `unspecified`.
    pub renewal_reasons: Vec<String>,
}

/// The highest `schema_version` this build understands.
pub const SCHEMA_VERSION: u64 = 1;

/// The rejection of an event of `length` bytes, more than `max_event_bytes`.
pub fn too_large(length: u64, rules: &Rules) -> Rejection {
    reject(
        Reason::TooLarge,
        format!(
            "event is {length} bytes, more than max_event_bytes = {}",
            rules.max_event_bytes
        ),
    )
}

/// Why a key that is not the customer id was refused, naming the publishers' usual mistakes
/// (an empty key meant as none, a key in another encoding, a padded column) and neither id.
fn key_mismatch(key: &[u8], customer_id: &str) -> &'static str {
    if key.is_empty() {
        return "message key is empty, and differs from customer_id: publish with the customer_id as key, or with no key (an empty key is not none)";
    }
    match std::str::from_utf8(key) {
        Err(_) => "message key is not UTF-8, and differs from customer_id",
        Ok(text) if text.trim() == customer_id => {
            "message key differs from customer_id by the white space around it"
        }
        Ok(_) => "message key differs from customer_id",
    }
}

/// Decodes one message that arrived on the topic of `stream`, keyed by `key`, at processor time
/// `now`. A source that mixes every type (a file) passes `None` for `stream`.
pub fn decode(
    stream: Option<Stream>,
    key: Option<&[u8]>,
    payload: &[u8],
    now: Millis,
    rules: &Rules,
) -> Result<Event, Rejection> {
    if payload.len() > rules.max_event_bytes {
        return Err(too_large(payload.len() as u64, rules));
    }
    if payload.is_empty() {
        // serde_json says "EOF while parsing a value at line 1 column 0".
        return Err(reject(
            Reason::NotJson,
            "no value: the record is empty, or a tombstone (a null value); an event is one JSON object",
        ));
    }
    // JSON is UTF-8 (RFC 8259). Checked once for the whole payload, its strings are then read
    // without a check of each (a sixth fewer instructions in decoding).
    let text = std::str::from_utf8(payload).map_err(|e| {
        let at = e.valid_up_to();
        reject(
            Reason::NotJson,
            format!("not valid JSON: not UTF-8 at byte {at}"),
        )
    })?;
    // A byte order mark, which some writers put before UTF-8 text (a file saved on Windows),
    // is ignored, as RFC 8259 lets a parser do.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parsed: Parsed = serde_json::from_str(text)
        .map_err(|e| reject(Reason::NotJson, format!("not valid JSON: {e}")))?;
    let Parsed::Object(obj) = parsed else {
        return Err(reject(Reason::NotObject, "event is not a JSON object"));
    };
    let fields = Fields {
        obj: &obj,
        max_id_chars: rules.max_id_chars,
        max_text_chars: rules.max_text_chars,
        max_amount_minor: rules.max_amount_minor,
    };

    match fields.get("schema_version") {
        None | Some(Scalar::Null) => {}
        Some(Scalar::Int(n)) => match u64::try_from(*n).ok() {
            Some(v) if (1..=SCHEMA_VERSION).contains(&v) => {}
            Some(v) if v > SCHEMA_VERSION => {
                return Err(reject(
                    Reason::UnsupportedSchemaVersion,
                    format!("schema_version {v} is newer than {SCHEMA_VERSION}, the highest this build reads"),
                ))
            }
            _ => return Err(bad("schema_version", "a positive integer")),
        },
        Some(_) => return Err(bad("schema_version", "a positive integer")),
    }

    let event_id = fields.id("event_id")?;
    let customer_id = fields.id("customer_id")?;
    let type_name = fields.str("type")?;
    let occurred_at = fields.time("occurred_at")?;

    let Some(home) = Stream::of_type(type_name) else {
        return Err(reject(
            Reason::UnknownType,
            format!("unknown event type {type_name:?}"),
        ));
    };
    if let Some(stream) = stream.filter(|s| *s != home) {
        return Err(reject(
            Reason::WrongTopic,
            format!("{type_name} belongs on the {home:?} topic, not {stream:?}"),
        ));
    }
    if let Some(key) = key {
        if key != customer_id.as_bytes() {
            return Err(reject(Reason::KeyMismatch, key_mismatch(key, &customer_id)));
        }
    }
    if occurred_at > now.saturating_add(rules.max_future_skew_ms) {
        return Err(reject(
            Reason::FutureTimestamp,
            format!(
                "occurred_at is {} s ahead of the processor clock, more than max_future_skew",
                (occurred_at - now) / 1000
            ),
        ));
    }
    if occurred_at < now.saturating_sub(rules.max_event_age_ms) {
        return Err(reject(
            Reason::AncientTimestamp,
            format!(
                "occurred_at is {} days before the processor clock, more than max_event_age_days",
                (now - occurred_at) / 86_400_000
            ),
        ));
    }
    if let Some(currency) = fields.opt_str("currency")? {
        if currency != rules.currency {
            return Err(reject(
                Reason::CurrencyMismatch,
                format!(
                    "currency {currency:?} differs from the configured {:?}",
                    rules.currency
                ),
            ));
        }
    }

    let kind = match type_name {
        "customer.registered" => EventKind::Registered {
            referred_by: fields.opt_id("referred_by")?,
            segment_hint: fields.opt_text("segment_hint")?,
        },
        "interaction.contact" => EventKind::Contact {
            channel: fields.channel("channel")?,
            inbound: match fields.str("direction")? {
                "inbound" => true,
                "outbound" => false,
                _ => return Err(bad("direction", "inbound or outbound")),
            },
            first_response_seconds: fields.opt_u32("first_response_seconds")?,
            handle_seconds: fields.opt_u32("handle_seconds")?,
        },
        "interaction.survey" => {
            let score = fields.int("score")?;
            if !(0..=10).contains(&score) {
                return Err(bad("score", "an integer from 0 to 10"));
            }
            EventKind::Survey { score: score as u8 }
        }
        "subscription.renewed" => EventKind::SubscriptionRenewed {
            amount_minor: fields.amount("amount_minor")?,
            reason: match fields.opt_text("reason")? {
                Some(reason) => normalise(&reason, &rules.renewal_reasons),
                None => "unspecified".to_owned(),
            },
        },
        "subscription.cancelled" => EventKind::SubscriptionCancelled {
            reason: normalise(fields.text("reason")?, &rules.cancellation_reasons),
        },
        "customer.erased" => EventKind::Erased,
        "order.placed" => EventKind::OrderPlaced {
            order_id: fields.id("order_id")?,
            amount_minor: fields.amount("amount_minor")?,
            margin_minor: fields.margin("margin_minor")?,
        },
        "order.delivered" => EventKind::OrderDelivered {
            order_id: fields.id("order_id")?,
        },
        "order.returned" => EventKind::OrderReturned {
            order_id: fields.id("order_id")?,
            amount_minor: fields.amount("amount_minor")?,
        },
        "order.cancelled" => EventKind::OrderCancelled {
            order_id: fields.id("order_id")?,
        },
        "complaint.opened" => EventKind::ComplaintOpened {
            complaint_id: fields.id("complaint_id")?,
            category: normalise(fields.text("category")?, &rules.complaint_categories),
            severity: match fields.str("severity")? {
                "low" => Severity::Low,
                "medium" => Severity::Medium,
                "high" => Severity::High,
                "critical" => Severity::Critical,
                _ => return Err(bad("severity", "low, medium, high or critical")),
            },
        },
        "complaint.resolved" => EventKind::ComplaintResolved {
            complaint_id: fields.id("complaint_id")?,
            satisfied: match fields.get("satisfied") {
                None | Some(Scalar::Null) => None,
                Some(Scalar::Bool(b)) => Some(*b),
                Some(_) => return Err(bad("satisfied", "a boolean")),
            },
        },
        other => unreachable!("Stream::of_type accepted {other} but decode has no arm for it"),
    };
    Ok(Event {
        event_id,
        customer_id,
        occurred_at,
        kind,
    })
}

/// Maps free text onto a closed set: case and surrounding blanks are ignored, spaces and dashes
/// read as underscores; anything outside the set is `other`.
pub fn normalise(text: &str, closed_set: &[String]) -> String {
    let folded: String = text
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    if closed_set.contains(&folded) {
        folded
    } else {
        "other".to_owned()
    }
}

fn bad(field: &str, expected: &str) -> Rejection {
    reject(
        Reason::BadField,
        format!("field `{field}` must be {expected}"),
    )
}

fn missing(field: &str) -> Rejection {
    reject(Reason::MissingField, format!("field `{field}` is required"))
}

/// An event as parsed: its top-level fields, each value kept only as far as a field can use it.
/// Strings borrow from the payload unless they hold escapes; nested values are skipped. The
/// `serde_json::Value` this replaces allocated a map node, a key and a value for every field.
enum Parsed<'a> {
    Object(Vec<(Cow<'a, str>, Scalar<'a>)>),
    NotObject,
}

/// One top-level field's value.
#[derive(Debug)]
enum Scalar<'a> {
    Null,
    Bool(bool),
    /// An integer that fits `i64`.
    Int(i64),
    Str(Cow<'a, str>),
    /// Another number, an array or an object: present, but of no type a field reads.
    Other,
}

impl<'de> serde::Deserialize<'de> for Parsed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Top;
        impl<'de> Visitor<'de> for Top {
            type Value = Parsed<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Parsed<'de>, A::Error> {
                let mut fields = Vec::with_capacity(8);
                while let Some(key) = map.next_key::<CowStr<'de>>()? {
                    fields.push((key.0, map.next_value::<Scalar<'de>>()?));
                }
                Ok(Parsed::Object(fields))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Parsed::NotObject)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Parsed<'de>, E> {
                Ok(Parsed::NotObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Parsed<'de>, E> {
                Ok(Parsed::NotObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Parsed<'de>, E> {
                Ok(Parsed::NotObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Parsed<'de>, E> {
                Ok(Parsed::NotObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<Parsed<'de>, E> {
                Ok(Parsed::NotObject)
            }
            fn visit_unit<E>(self) -> Result<Parsed<'de>, E> {
                Ok(Parsed::NotObject)
            }
        }
        deserializer.deserialize_any(Top)
    }
}

/// A string, borrowed when it can be.
struct CowStr<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(StrVisitor).map(CowStr)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

impl<'de> serde::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Value;
        impl<'de> Visitor<'de> for Value {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Scalar<'de>, E> {
                Ok(i64::try_from(v).map_or(Scalar::Other, Scalar::Int))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Other)
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar<'de>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar<'de>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        deserializer.deserialize_any(Value)
    }
}

/// Typed access to the fields of one JSON object, each failure naming its field; identifiers
/// and texts are held to the configured lengths.
struct Fields<'a> {
    obj: &'a [(Cow<'a, str>, Scalar<'a>)],
    max_id_chars: usize,
    max_text_chars: usize,
    max_amount_minor: i64,
}

impl<'a> Fields<'a> {
    /// The field's value; of a repeated field the last, as a JSON map would keep it.
    fn get(&self, field: &str) -> Option<&'a Scalar<'a>> {
        self.obj
            .iter()
            .rev()
            .find(|(key, _)| key == field)
            .map(|(_, value)| value)
    }

    fn present(&self, field: &str) -> Option<&'a Scalar<'a>> {
        match self.get(field) {
            None | Some(Scalar::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn str(&self, field: &str) -> Result<&'a str, Rejection> {
        match self.present(field) {
            None => Err(missing(field)),
            Some(Scalar::Str(s)) => Ok(s),
            Some(_) => Err(bad(field, "a string")),
        }
    }

    fn opt_str(&self, field: &str) -> Result<Option<&'a str>, Rejection> {
        match self.present(field) {
            None => Ok(None),
            Some(_) => self.str(field).map(Some),
        }
    }

    fn bounded(&self, field: &str, max_chars: usize) -> Result<&'a str, Rejection> {
        let s = self.str(field)?;
        let chars = s.chars().count();
        if chars == 0 || chars > max_chars {
            return Err(bad(
                field,
                &format!("a string of 1 to {max_chars} characters"),
            ));
        }
        Ok(s)
    }

    /// An identifier: besides its length, not blank and free of control characters, which
    /// are a publisher's bug (a padded or empty column, a C string's NUL) rather than an id,
    /// and would make one customer (or order, or event) of every such record.
    fn id(&self, field: &str) -> Result<String, Rejection> {
        let s = self.str(field)?;
        let (chars, control, blank) = if s.is_ascii() {
            // Most ids: one pass over the bytes, which are the characters.
            let bytes = s.as_bytes();
            (
                bytes.len(),
                bytes.iter().any(u8::is_ascii_control),
                bytes.iter().all(u8::is_ascii_whitespace),
            )
        } else {
            (
                s.chars().count(),
                s.chars().any(char::is_control),
                s.chars().all(char::is_whitespace),
            )
        };
        if control || blank || chars > self.max_id_chars {
            return Err(bad(
                field,
                &format!(
                    "a string of 1 to {} characters, not blank and without control characters",
                    self.max_id_chars
                ),
            ));
        }
        Ok(s.to_owned())
    }

    fn opt_id(&self, field: &str) -> Result<Option<String>, Rejection> {
        match self.present(field) {
            None => Ok(None),
            Some(_) => self.id(field).map(Some),
        }
    }

    fn text(&self, field: &str) -> Result<&'a str, Rejection> {
        self.bounded(field, self.max_text_chars)
    }

    fn opt_text(&self, field: &str) -> Result<Option<String>, Rejection> {
        match self.present(field) {
            None => Ok(None),
            Some(_) => self.text(field).map(|s| Some(s.to_owned())),
        }
    }

    fn int(&self, field: &str) -> Result<i64, Rejection> {
        match self.present(field) {
            None => Err(missing(field)),
            Some(Scalar::Int(n)) => Ok(*n),
            Some(_) => Err(bad(field, "an integer")),
        }
    }

    /// An amount of money: from 0 to `max_amount_minor`.
    fn amount(&self, field: &str) -> Result<i64, Rejection> {
        let v = self.int(field)?;
        if !(0..=self.max_amount_minor).contains(&v) {
            return Err(bad(
                field,
                &format!(
                    "an integer from 0 to input.max_amount_minor = {}",
                    self.max_amount_minor
                ),
            ));
        }
        Ok(v)
    }

    /// A margin, which may be negative: at most `max_amount_minor` either way.
    fn margin(&self, field: &str) -> Result<i64, Rejection> {
        let v = self.int(field)?;
        if !(-self.max_amount_minor..=self.max_amount_minor).contains(&v) {
            return Err(bad(
                field,
                &format!(
                    "an integer within input.max_amount_minor = {} either way",
                    self.max_amount_minor
                ),
            ));
        }
        Ok(v)
    }

    fn opt_u32(&self, field: &str) -> Result<Option<u32>, Rejection> {
        match self.present(field) {
            None => Ok(None),
            Some(_) => {
                let v = self.int(field)?;
                u32::try_from(v)
                    .map(Some)
                    .map_err(|_| bad(field, "an integer from 0 to 4294967295"))
            }
        }
    }

    fn time(&self, field: &str) -> Result<Millis, Rejection> {
        crate::event::parse_millis(self.str(field)?)
            .ok_or_else(|| bad(field, "an RFC 3339 timestamp with offset, within range"))
    }

    fn channel(&self, field: &str) -> Result<Channel, Rejection> {
        Ok(match self.str(field)? {
            "web" => Channel::Web,
            "phone" => Channel::Phone,
            "email" => Channel::Email,
            "store" => Channel::Store,
            "chat" => Channel::Chat,
            "mobile" => Channel::Mobile,
            "other" => Channel::Other,
            _ => {
                return Err(bad(
                    field,
                    "one of web, phone, email, store, chat, mobile, other",
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default rules, as a minimal configuration file gives them.
    fn rules() -> Rules {
        let minimal = "[kafka]\nbrokers = \"x\"\n[state]\npath = \"/tmp/unused\"\n";
        crate::config::Config::parse(minimal, Vec::new())
            .unwrap()
            .rules
    }

    const NOW: Millis = 1_764_460_800_000; // 2025-11-30T00:00:00Z

    fn order(fields: &str) -> Result<Event, Rejection> {
        let text = format!(
            r#"{{"event_id":"e-1","customer_id":"c-1","type":"order.placed","occurred_at":"2025-11-29T23:00:00Z","order_id":"o-1"{fields}}}"#
        );
        decode(None, None, text.as_bytes(), NOW, &rules())
    }

    fn reason(result: Result<Event, Rejection>) -> Reason {
        result.expect_err("rejected").reason
    }

    #[test]
    fn a_payload_that_is_not_utf8_is_not_json_and_the_message_says_where() {
        let mut payload = br#"{"event_id":"e-1","customer_id":"c-"#.to_vec();
        payload.extend([0xff, b'"', b'}']);
        let rejection = decode(None, None, &payload, NOW, &rules()).expect_err("rejected");
        assert_eq!(rejection.reason, Reason::NotJson);
        assert_eq!(rejection.message, "not valid JSON: not UTF-8 at byte 35");
        // Outside a string too: JSON text is UTF-8 throughout.
        let rejection = decode(None, None, b"{\"a\":1}\xc3", NOW, &rules()).expect_err("rejected");
        assert_eq!(rejection.reason, Reason::NotJson);
    }

    #[test]
    fn an_empty_value_or_a_tombstone_is_not_json_and_the_message_says_it_has_no_value() {
        let rejection = decode(None, Some(b"c-1"), b"", NOW, &rules()).expect_err("rejected");
        assert_eq!(rejection.reason, Reason::NotJson);
        assert_eq!(
            rejection.message,
            "no value: the record is empty, or a tombstone (a null value); an event is one JSON object"
        );
        // Blanks are a value, which is not JSON.
        let rejection = decode(None, None, b" ", NOW, &rules()).expect_err("rejected");
        assert_eq!(rejection.reason, Reason::NotJson);
        assert!(rejection.message.starts_with("not valid JSON: EOF"));
    }

    #[test]
    fn a_key_that_is_not_the_customer_id_is_refused_naming_the_usual_mistake() {
        let event = br#"{"event_id":"e-1","customer_id":"c-1","type":"order.placed","occurred_at":"2025-11-29T23:00:00Z","order_id":"o-1","amount_minor":5,"margin_minor":1}"#;
        let refusal = |key: &[u8]| {
            let rejection = decode(None, Some(key), event, NOW, &rules()).expect_err("refused");
            assert_eq!(rejection.reason, Reason::KeyMismatch);
            rejection.message
        };
        assert!(refusal(b"").starts_with("message key is empty"));
        assert!(refusal(b"\xff\xfe").starts_with("message key is not UTF-8"));
        assert!(refusal(b"c-1 ").ends_with("by the white space around it"));
        assert_eq!(refusal(b"c-2"), "message key differs from customer_id");
        assert!(decode(None, Some(b"c-1"), event, NOW, &rules()).is_ok());
        assert!(decode(None, None, event, NOW, &rules()).is_ok(), "no key");
    }

    #[test]
    fn a_byte_order_mark_before_the_event_is_ignored_and_one_inside_it_is_not() {
        let event = r#"{"event_id":"e-1","customer_id":"c-1","type":"order.placed","occurred_at":"2025-11-29T23:00:00Z","order_id":"o-1","amount_minor":5,"margin_minor":1}"#;
        let plain = decode(None, None, event.as_bytes(), NOW, &rules()).unwrap();
        let marked = format!("\u{feff}{event}");
        assert_eq!(
            decode(None, None, marked.as_bytes(), NOW, &rules()),
            Ok(plain)
        );
        let twice = format!("\u{feff}\u{feff}{event}");
        assert_eq!(
            reason(decode(None, None, twice.as_bytes(), NOW, &rules())),
            Reason::NotJson
        );
    }

    #[test]
    fn fields_are_read_as_json_defines_them() {
        // Escapes decode; a repeated field counts as its last value, as in a JSON map.
        let event = order(
            r#","amount_minor":1,"amount_minor":250,"margin_minor":-5,"customer_id":"c\u002d1""#,
        )
        .unwrap();
        assert_eq!(event.customer_id, "c-1");
        assert_eq!(
            event.kind,
            EventKind::OrderPlaced {
                order_id: "o-1".into(),
                amount_minor: 250,
                margin_minor: -5
            }
        );
        // Nested values and unknown fields are skipped, wherever they are.
        let event =
            order(r#","amount_minor":2,"margin_minor":0,"extra":{"a":[1,{"b":null}],"c":"\n"}"#);
        assert!(event.is_ok(), "{event:?}");
        // A null field is a missing one.
        assert_eq!(
            reason(order(r#","amount_minor":null,"margin_minor":0"#)),
            Reason::MissingField
        );
    }

    #[test]
    fn a_value_of_the_wrong_kind_is_a_bad_field() {
        for amount in [
            "2.0",
            "1e3",
            "18446744073709551615",
            "\"7\"",
            "[7]",
            "{}",
            "true",
        ] {
            let got = order(&format!(r#","amount_minor":{amount},"margin_minor":0"#));
            assert_eq!(reason(got), Reason::BadField, "amount_minor {amount}");
        }
        // Integers take all of i64; what refuses the extremes is the bound on money.
        let extremes = r#","amount_minor":9223372036854775807,"margin_minor":-9223372036854775807"#;
        let got = order(extremes)
            .map(|_| ())
            .map_err(|r| (r.reason, r.message));
        assert!(
            matches!(&got, Err((Reason::BadField, m)) if m.contains("input.max_amount_minor")),
            "{got:?}"
        );
        let unbounded = Rules {
            max_amount_minor: i64::MAX,
            ..rules()
        };
        let text = format!(
            r#"{{"event_id":"e-1","customer_id":"c-1","type":"order.placed","occurred_at":"2025-11-29T23:00:00Z","order_id":"o-1"{extremes}}}"#
        );
        let got = decode(None, None, text.as_bytes(), NOW, &unbounded);
        assert!(got.is_ok(), "{got:?}");
        for version in ["0", "-1", "1.0", "\"1\""] {
            let got = order(&format!(
                r#","amount_minor":1,"margin_minor":0,"schema_version":{version}"#
            ));
            assert_eq!(reason(got), Reason::BadField, "schema_version {version}");
        }
        let got = order(r#","amount_minor":1,"margin_minor":0,"schema_version":2"#);
        assert_eq!(reason(got), Reason::UnsupportedSchemaVersion);
    }

    #[test]
    fn only_an_object_is_an_event() {
        for text in [
            "[]",
            "[{\"a\":1}]",
            "1",
            "-1",
            "2.5",
            "\"x\"",
            "true",
            "null",
        ] {
            let got = decode(None, None, text.as_bytes(), NOW, &rules());
            assert_eq!(reason(got), Reason::NotObject, "{text}");
        }
        for text in ["", "{", "{\"a\":}", "{} x", "{\"a\":1,}", "1e999"] {
            let got = decode(None, None, text.as_bytes(), NOW, &rules());
            assert_eq!(reason(got), Reason::NotJson, "{text}");
        }
    }
}
