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

/// Formats event time as RFC 3339 in UTC with millisecond precision.
pub fn format_millis(ms: Millis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let (y, mo, d) = (t.year(), u8::from(t.month()), t.day());
            format!(
                "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            )
        }
        Err(_) => ms.to_string(),
    }
}
