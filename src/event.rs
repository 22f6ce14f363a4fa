//! Typed domain events: what an input event means once it has been validated.
//! Must not know about bytes, JSON, Kafka or storage; `decode` builds these.

/// Event time in milliseconds since the Unix epoch (UTC).
pub type Millis = i64;

/// The envelope fields every event carries (CONTRACT section 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub customer_id: String,
    pub occurred_at: Millis,
    pub kind: EventKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Web,
    Phone,
    Email,
    Store,
    Chat,
    Mobile,
    Other,
}

impl Channel {
    /// The contract's name (CONTRACT section 1), a bounded label value.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Web => "web",
            Channel::Phone => "phone",
            Channel::Email => "email",
            Channel::Store => "store",
            Channel::Chat => "chat",
            Channel::Mobile => "mobile",
            Channel::Other => "other",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Registered {
        referred_by: Option<String>,
        segment_hint: Option<String>,
    },
    Contact {
        channel: Channel,
        inbound: bool,
        first_response_seconds: Option<u32>,
        handle_seconds: Option<u32>,
    },
    Survey {
        score: u8,
    },
    SubscriptionRenewed {
        amount_minor: i64,
        /// Normalised to the configured closed set; `unspecified` when the event gave none.
        reason: String,
    },
    SubscriptionCancelled {
        /// Normalised to the configured closed set, else `other`.
        reason: String,
    },
    Erased,
    OrderPlaced {
        order_id: String,
        amount_minor: i64,
        margin_minor: i64,
    },
    OrderDelivered {
        order_id: String,
    },
    OrderReturned {
        order_id: String,
        amount_minor: i64,
    },
    OrderCancelled {
        order_id: String,
    },
    ComplaintOpened {
        complaint_id: String,
        /// Normalised to the configured closed set, else `other`.
        category: String,
        severity: Severity,
    },
    ComplaintResolved {
        complaint_id: String,
        satisfied: Option<bool>,
    },
}

impl EventKind {
    /// The contract's name of the event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::Registered { .. } => "customer.registered",
            EventKind::Contact { .. } => "interaction.contact",
            EventKind::Survey { .. } => "interaction.survey",
            EventKind::SubscriptionRenewed { .. } => "subscription.renewed",
            EventKind::SubscriptionCancelled { .. } => "subscription.cancelled",
            EventKind::Erased => "customer.erased",
            EventKind::OrderPlaced { .. } => "order.placed",
            EventKind::OrderDelivered { .. } => "order.delivered",
            EventKind::OrderReturned { .. } => "order.returned",
            EventKind::OrderCancelled { .. } => "order.cancelled",
            EventKind::ComplaintOpened { .. } => "complaint.opened",
            EventKind::ComplaintResolved { .. } => "complaint.resolved",
        }
    }
}

/// Which input stream an event type belongs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    Interactions,
    Orders,
    Complaints,
}

impl Stream {
    pub const ALL: [Stream; 3] = [Stream::Interactions, Stream::Orders, Stream::Complaints];

    /// The stream a contract event type name belongs to, or `None` for an unknown type.
    pub fn of_type(type_name: &str) -> Option<Stream> {
        match type_name {
            "customer.registered"
            | "interaction.contact"
            | "interaction.survey"
            | "subscription.renewed"
            | "subscription.cancelled"
            | "customer.erased" => Some(Stream::Interactions),
            "order.placed" | "order.delivered" | "order.returned" | "order.cancelled" => {
                Some(Stream::Orders)
            }
            "complaint.opened" | "complaint.resolved" => Some(Stream::Complaints),
            _ => None,
        }
    }
}

/// Parses an RFC 3339 timestamp with offset into event time.
pub fn parse_millis(text: &str) -> Option<Millis> {
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A part of a record id (see [`dashed_id`]).
pub enum IdPart<'a> {
    Text(&'a str),
    Number(i64),
}

/// The parts joined with `-`, as record ids are (`customer.orders-0-7`,
/// `timer-2-1700000000000-c-1`): numbers written digit by digit (`itoa`), as `format!` took
/// about a thousand instructions an id, and every event has one.
pub fn dashed_id(parts: &[IdPart<'_>]) -> String {
    let mut digits = itoa::Buffer::new();
    let mut id = String::with_capacity(48);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            id.push('-');
        }
        match part {
            IdPart::Text(text) => id.push_str(text),
            IdPart::Number(n) => id.push_str(digits.format(*n)),
        }
    }
    id
}

/// Formats event time as RFC 3339 in UTC with millisecond precision.
pub fn format_millis(ms: Millis) -> String {
    // Whole seconds and milliseconds apart, in i64: `time`'s nanoseconds are an i128, whose
    // division cost more than the rest of the formatting.
    let millis = ms.rem_euclid(1000) as u32;
    match time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) {
        // Every record carries a time or two: digits written in place cost a tenth of `format!`.
        Ok(t) if (0..=9999).contains(&t.year()) => {
            let (year, month, day) = t.to_calendar_date();
            let (hour, minute, second) = t.to_hms();
            let mut text = *b"0000-00-00T00:00:00.000Z";
            let mut put = |at: usize, width: usize, mut value: u32| {
                for i in (at..at + width).rev() {
                    text[i] = b'0' + (value % 10) as u8;
                    value /= 10;
                }
            };
            put(0, 4, year as u32);
            put(5, 2, u32::from(u8::from(month)));
            put(8, 2, u32::from(day));
            put(11, 2, u32::from(hour));
            put(14, 2, u32::from(minute));
            put(17, 2, u32::from(second));
            put(20, 3, millis);
            String::from_utf8(text.to_vec()).expect("digits and separators are ASCII")
        }
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{millis:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
        ),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dashed_id_is_what_format_writes() {
        use IdPart::{Number, Text};
        assert_eq!(
            dashed_id(&[Text("timer"), Number(2), Number(-1_700), Text("c-1")]),
            format!("timer-{}-{}-{}", 2, -1_700, "c-1")
        );
        assert_eq!(
            dashed_id(&[Text("customer.orders"), Number(0), Number(i64::MAX)]),
            format!("customer.orders-0-{}", i64::MAX)
        );
        assert_eq!(dashed_id(&[Number(i64::MIN)]), i64::MIN.to_string());
        assert_eq!(dashed_id(&[]), "");
    }

    #[test]
    fn formatted_times_are_rfc_3339_and_read_back() {
        let reference = |ms: Millis| {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap();
            let (date, clock) = (t.date(), t.time());
            format!(
                "{}T{:02}:{:02}:{:02}.{:03}Z",
                date,
                clock.hour(),
                clock.minute(),
                clock.second(),
                clock.millisecond()
            )
        };
        assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(format_millis(951_782_400_123), "2000-02-29T00:00:00.123Z");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        // From year 0 to the end of year 9999.
        let (low, high) = (-62_167_219_200_000i64, 253_402_300_799_999i64);
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let ms = low + ((x >> 11) % (high - low) as u64) as i64;
            assert_eq!(format_millis(ms), reference(ms), "{ms}");
            assert_eq!(parse_millis(&format_millis(ms)), Some(ms), "{ms}");
        }
        for ms in [low, high] {
            assert_eq!(format_millis(ms), reference(ms));
        }
    }
}
