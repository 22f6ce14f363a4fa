//! The fold: one customer's state and the pure step `apply(state, event) -> outcome`.
//! Must not know about Kafka, RocksDB, Prometheus, tokio or the wall clock: everything it needs
//! (the event and its event time, the limits) is passed in, and what should happen is returned.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind, Millis, Severity};

const DAY_MS: Millis = 86_400_000;

/// Lifecycle stage of a customer (DOMAIN.md, Segments).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Lifecycle {
    #[default]
    New,
    Active,
    AtRisk,
    Lost,
    WonBack,
}

impl Lifecycle {
    pub fn name(self) -> &'static str {
        match self {
            Lifecycle::New => "new",
            Lifecycle::Active => "active",
            Lifecycle::AtRisk => "at_risk",
            Lifecycle::Lost => "lost",
            Lifecycle::WonBack => "won_back",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Subscription {
    #[default]
    None,
    Active,
    Cancelled,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenOrder {
    pub order_id: String,
    pub placed_at: Millis,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenComplaint {
    pub complaint_id: String,
    pub category: String,
    pub severity: Severity,
    pub opened_at: Millis,
}

/// A delivery, cancellation or resolution read before the order or complaint it closes:
/// orders and their deliveries come from different systems, and so can arrive in either order
/// in the customer's partition, as can a backfill's files. Kept until the order or complaint
/// comes, which it then closes at once if it was opened at or before the close's time (give or
/// take [`FoldLimits::clock_skew_ms`]), or until it is as far behind the customer's newest
/// event as the dedup horizon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyClose {
    /// The order's or complaint's id.
    pub id: String,
    /// When it was delivered, cancelled or resolved.
    pub at: Millis,
    pub close: Close,
}

/// How an [`EarlyClose`] closes its order or complaint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Close {
    Delivered,
    Cancelled,
    Resolved { satisfied: Option<bool> },
}

impl Close {
    /// Whether it closes an order (else a complaint).
    fn closes_order(self) -> bool {
        !matches!(self, Close::Resolved { .. })
    }
}

/// A processed event id, remembered for deduplication by 64 bits of its XXH3 hash: 8 bytes
/// in memory and on disk whatever the id's length (a UUID's 36 characters were most of an
/// active customer's stored bytes, written again at every commit that changed it). Two ids of
/// one customer's horizon share a fingerprint with a chance of about n / 2^64 per event for n
/// remembered ids, which is when a new event would be taken for a duplicate (README,
/// *Deviations from the contract*). The hash is XXH3's, fixed by its specification, so stored
/// fingerprints stay valid across builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventFingerprint(pub u64);

impl EventFingerprint {
    pub fn of(event_id: &str) -> EventFingerprint {
        EventFingerprint(xxhash_rust::xxh3::xxh3_64(event_id.as_bytes()))
    }

    /// An order id's, remembered beside the event ids once the order is placed: XXH3 under a
    /// seed of its own, so that an order id and an event id that are the same text do not
    /// share a fingerprint (two of one customer's do by chance as two event ids do).
    pub fn of_order(order_id: &str) -> EventFingerprint {
        EventFingerprint(xxhash_rust::xxh3::xxh3_64_with_seed(
            order_id.as_bytes(),
            ORDER_SEED,
        ))
    }
}

/// The seed of [`EventFingerprint::of_order`]: "orders" in ASCII. Fixed, as stored
/// fingerprints must stay valid across builds.
const ORDER_SEED: u64 = 0x6f72_6465_7273;

/// As 16 hexadecimal digits, in JSON (the HTTP endpoint's customer state).
impl Serialize for EventFingerprint {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&format_args!("{:016x}", self.0))
    }
}

impl<'de> Deserialize<'de> for EventFingerprint {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        u64::from_str_radix(&hex, 16)
            .map(EventFingerprint)
            .map_err(|_| serde::de::Error::custom("a fingerprint is 16 hexadecimal digits"))
    }
}

/// A processed event and its event time, kept for deduplication within the horizon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenEvent {
    pub fingerprint: EventFingerprint,
    pub occurred_at: Millis,
}

/// Everything the analytics need to know about one customer, folded from its events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CustomerState {
    pub customer_id: String,
    pub registered_at: Option<Millis>,
    /// The referrer's fingerprint ([`referrer_fingerprint`]), never its id (a state stored by
    /// an earlier build may hold the id).
    pub referred_by: Option<String>,
    pub segment_hint: Option<String>,
    pub lifecycle: Lifecycle,
    pub first_event_at: Millis,
    pub last_event_at: Millis,

    pub first_order_at: Option<Millis>,
    pub last_order_at: Option<Millis>,
    /// Distinct purchase days (days since the epoch, ascending): x = len - 1, t_x from first to last.
    pub purchase_days: Vec<i32>,
    pub orders: u32,
    pub revenue_minor: i64,
    pub margin_minor: i64,
    /// Revenue of the orders on the first purchase day, so that m_x can exclude it.
    pub first_day_revenue_minor: i64,
    pub open_orders: Vec<OpenOrder>,
    pub deliveries: u32,
    pub delivery_seconds_total: u64,
    pub returns: u32,
    pub returned_minor: i64,
    pub order_cancellations: u32,

    pub open_complaints: Vec<OpenComplaint>,
    pub complaints_opened: u32,
    pub complaints_resolved: u32,
    pub resolution_seconds_total: u64,
    pub resolutions_unsatisfied: u32,
    pub last_complaint_at: Option<Millis>,

    pub last_survey_score: Option<u8>,
    pub last_survey_at: Option<Millis>,
    pub contacts: u32,
    pub inbound_contacts: u32,
    pub first_responses: u32,
    pub first_response_seconds_total: u64,

    pub subscription: Subscription,
    pub renewals: u32,
    pub renewal_revenue_minor: i64,
    /// The reason of the latest renewal in event time (of the latest read, for a customer
    /// stored before encoding version 10, which kept no renewal time).
    pub last_renewal_reason: Option<String>,
    /// The reason of the latest cancellation in event time.
    pub cancellation_reason: Option<String>,
    /// The latest cancellation's time.
    pub cancelled_at: Option<Millis>,
    /// The latest renewal's time: a cancellation read after a renewal dated later leaves the
    /// subscription active. Stored after the early closes since encoding version 10
    /// (`store::codec`); a customer read from an earlier version has none until its next
    /// renewal.
    #[serde(skip)]
    pub last_renewal_at: Option<Millis>,

    /// Deliveries, cancellations and resolutions waiting for their order or complaint, oldest
    /// first. Stored after the customer's losses since encoding version 9 (`store::codec`), so
    /// not in the place postcard would give it here.
    #[serde(skip)]
    pub early_closes: Vec<EarlyClose>,

    /// Events remembered for deduplication, in the order they were applied: every event seen
    /// within the dedup horizon, and those that left it since the list was last swept
    /// ([`SEAL_EVERY`]), which no longer count. Stored apart from the rest since encoding
    /// version 6 (`store::codec`); in the place postcard gives the field, versions 1 to 5 wrote
    /// the ids themselves, which `legacy_seen` reads.
    #[serde(with = "legacy_seen")]
    pub seen: Vec<SeenEvent>,
    /// How many of the first entries of `seen` are sealed: they change only when the list is
    /// swept, so the store writes them apart from the customer, only when `seal` moved, and a
    /// commit rewrites the few entries after them rather than all (a busy customer remembers
    /// hundreds of events, three quarters of its bytes).
    #[serde(skip)]
    pub seen_sealed: u32,
    /// Counts the sweeps: the sealed entries are those of this sweep until the next.
    #[serde(skip)]
    pub seal: u32,
}

/// The most entries remembered after the sealed ones: the next event sweeps the list (forgets
/// what left the horizon) and seals all of it.
pub const SEAL_EVERY: usize = 32;

/// Limits of the fold, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct FoldLimits {
    pub dedup_horizon_ms: Millis,
    pub max_dedup_ids: usize,
    pub max_open_items: usize,
    /// How far apart the publishing systems' clocks may be (`input.max_future_skew_seconds`):
    /// a delivery, cancellation, return or resolution dated up to this before its order's or
    /// complaint's opening is still its own; one dated earlier closed an earlier order or
    /// complaint under the same id.
    pub clock_skew_ms: Millis,
}

/// A per-customer bound the fold held to while applying an event: the event still counts, but
/// what it would have added past the bound is not kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Limit {
    /// `max_open_items_per_customer` open orders: the new order counts but is not tracked to
    /// delivery. Or as many [`EarlyClose`]s: a delivery or cancellation read before its order
    /// is not kept, so the order stays open when it comes.
    OpenOrders,
    /// `max_open_items_per_customer` open complaints: the complaint counts but a later resolution
    /// of it finds nothing to close. Or as many [`EarlyClose`]s: a resolution read before its
    /// complaint is not kept.
    OpenComplaints,
    /// `max_dedup_ids_per_customer` event ids remembered: the oldest id was forgotten, so a
    /// redelivery of that event would apply again.
    DedupIds,
}

impl Limit {
    pub const ALL: [Limit; 3] = [Limit::OpenOrders, Limit::OpenComplaints, Limit::DedupIds];

    /// The metric label value.
    pub fn code(self) -> &'static str {
        match self {
            Limit::OpenOrders => "open_orders",
            Limit::OpenComplaints => "open_complaints",
            Limit::DedupIds => "dedup_ids",
        }
    }
}

/// What applying one event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The event changed the customer's state; `Some` names the bound it met.
    Applied(Option<Limit>),
    /// The event id was already seen within the horizon: nothing changed.
    Duplicate,
    /// An order or a complaint opened again, under a new event id, while it is still open, or
    /// an order placed again after it closed (within the dedup horizon of its placing): the
    /// same order or complaint published again. Only its event id is remembered (so that it
    /// stays a duplicate once the order is delivered or the complaint resolved); `Some` names
    /// the bound that remembering met. (A complaint opened again after its resolution is
    /// reopened, and counts again.)
    Republished(Option<Limit>),
    /// The customer asked to be forgotten: the caller deletes all state and publishes tombstones.
    Erased,
}

impl CustomerState {
    pub fn new(customer_id: &str) -> Self {
        CustomerState {
            customer_id: customer_id.to_owned(),
            ..CustomerState::default()
        }
    }

    /// Repeat purchases x (DOMAIN.md): distinct purchase days minus one.
    pub fn repeat_purchases(&self) -> u32 {
        (self.purchase_days.len() as u32).saturating_sub(1)
    }

    /// The revenue the customer kept: its orders less its returns, none when it returned more
    /// than it bought (orders from before the state began).
    pub fn kept_revenue_minor(&self) -> i64 {
        self.revenue_minor
            .saturating_sub(self.returned_minor)
            .max(0)
    }

    /// Whether the state was never touched by an applied event.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.first_event_at == 0 && self.last_event_at == 0
    }

    /// Applies one event. The event's customer must be this state's customer.
    pub fn apply(&mut self, event: &Event, limits: &FoldLimits) -> Outcome {
        debug_assert_eq!(event.customer_id, self.customer_id);
        let fingerprint = EventFingerprint::of(&event.event_id);
        if self.remembers(fingerprint, limits) {
            return Outcome::Duplicate;
        }
        if let EventKind::Erased = event.kind {
            return Outcome::Erased;
        }
        let t = event.occurred_at;
        // An order's id is remembered beside the event ids once placed (see `opens_again`).
        let order = match &event.kind {
            EventKind::OrderPlaced { order_id, .. } => Some(EventFingerprint::of_order(order_id)),
            _ => None,
        };
        if self.opens_again(&event.kind, order, limits) {
            return Outcome::Republished(self.remember(fingerprint, t, limits));
        }
        if self.is_empty() {
            self.first_event_at = t;
            self.last_event_at = t;
        } else {
            self.first_event_at = self.first_event_at.min(t);
            self.last_event_at = self.last_event_at.max(t);
        }
        let mut limit = self.remember(fingerprint, t, limits);
        if !self.early_closes.is_empty() {
            let horizon = self.last_event_at.saturating_sub(limits.dedup_horizon_ms);
            self.early_closes.retain(|c| c.at >= horizon);
        }

        match &event.kind {
            EventKind::Registered {
                referred_by,
                segment_hint,
            } => {
                self.registered_at = Some(self.registered_at.map_or(t, |r| r.min(t)));
                // A customer naming itself was referred by nobody. Whether it was referred
                // counts (a referral is counted once), not by whom: the referrer's id would
                // outlive the referrer's erasure in this state.
                if let Some(referrer) = referred_by.as_ref().filter(|r| **r != event.customer_id) {
                    self.referred_by = Some(referrer_fingerprint(referrer));
                }
                if segment_hint.is_some() {
                    self.segment_hint.clone_from(segment_hint);
                }
            }
            EventKind::Contact {
                inbound,
                first_response_seconds,
                ..
            } => {
                self.contacts += 1;
                self.inbound_contacts += u32::from(*inbound);
                if let Some(s) = first_response_seconds {
                    self.first_responses += 1;
                    self.first_response_seconds_total += u64::from(*s);
                }
            }
            EventKind::Survey { score } => {
                if self.last_survey_at.is_none_or(|at| at <= t) {
                    self.last_survey_score = Some(*score);
                    self.last_survey_at = Some(t);
                }
            }
            EventKind::SubscriptionRenewed {
                amount_minor,
                reason,
            } => {
                self.renewals += 1;
                self.renewal_revenue_minor += amount_minor;
                if self.last_renewal_at.is_none_or(|r| r <= t) {
                    self.last_renewal_reason = Some(reason.clone());
                    self.last_renewal_at = Some(t);
                }
                if self.cancelled_at.is_none_or(|c| c <= t) {
                    self.subscription = Subscription::Active;
                    if self.lifecycle == Lifecycle::Lost {
                        self.lifecycle = Lifecycle::WonBack;
                    }
                }
            }
            EventKind::SubscriptionCancelled { reason } => self.cancel(t, reason),
            EventKind::OrderPlaced {
                order_id,
                amount_minor,
                margin_minor,
            } => {
                self.place_order(t, *amount_minor, *margin_minor);
                if let Some(order) = order {
                    limit = self.remember(order, t, limits).or(limit);
                }
                if let Some(close) = self.take_early_close(order_id, true, t, limits) {
                    if close.close == Close::Delivered {
                        self.deliveries += 1;
                        self.delivery_seconds_total += seconds_between(t, close.at);
                    }
                } else if self.open_orders.len() < limits.max_open_items {
                    self.open_orders.push(OpenOrder {
                        order_id: order_id.clone(),
                        placed_at: t,
                    });
                } else {
                    limit = Some(Limit::OpenOrders);
                }
            }
            EventKind::OrderDelivered { order_id } => {
                if let Some(i) = self.order_closed_by(order_id, t, limits) {
                    let order = self.open_orders.swap_remove(i);
                    self.deliveries += 1;
                    self.delivery_seconds_total += seconds_between(order.placed_at, t);
                } else {
                    limit = self
                        .close_early(order_id, t, Close::Delivered, limits)
                        .or(limit);
                }
            }
            EventKind::OrderReturned {
                order_id,
                amount_minor,
            } => {
                self.returns += 1;
                self.returned_minor += amount_minor;
                // A returned order reached its customer, though its delivery may never be read:
                // it is no longer open (with no delivery time to count).
                if let Some(i) = self.order_closed_by(order_id, t, limits) {
                    self.open_orders.swap_remove(i);
                }
            }
            EventKind::OrderCancelled { order_id } => {
                self.order_cancellations += 1;
                if let Some(i) = self.order_closed_by(order_id, t, limits) {
                    self.open_orders.swap_remove(i);
                } else {
                    limit = self
                        .close_early(order_id, t, Close::Cancelled, limits)
                        .or(limit);
                }
            }
            EventKind::ComplaintOpened {
                complaint_id,
                category,
                severity,
            } => {
                self.complaints_opened += 1;
                self.last_complaint_at = Some(self.last_complaint_at.map_or(t, |c| c.max(t)));
                if let Some(close) = self.take_early_close(complaint_id, false, t, limits) {
                    if let Close::Resolved { satisfied } = close.close {
                        self.resolve(t, close.at, satisfied);
                    }
                } else if self.open_complaints.len() < limits.max_open_items {
                    self.open_complaints.push(OpenComplaint {
                        complaint_id: complaint_id.clone(),
                        category: category.clone(),
                        severity: *severity,
                        opened_at: t,
                    });
                } else {
                    limit = Some(Limit::OpenComplaints);
                }
            }
            EventKind::ComplaintResolved {
                complaint_id,
                satisfied,
            } => {
                if let Some(i) = self.complaint_closed_by(complaint_id, t, limits) {
                    let complaint = self.open_complaints.swap_remove(i);
                    self.resolve(complaint.opened_at, t, *satisfied);
                } else {
                    let close = Close::Resolved {
                        satisfied: *satisfied,
                    };
                    limit = self.close_early(complaint_id, t, close, limits).or(limit);
                }
            }
            EventKind::Erased => unreachable!("handled above"),
        }
        Outcome::Applied(limit)
    }

    /// Where the open order `order_id` is in `open_orders`.
    pub fn open_order(&self, order_id: &str) -> Option<usize> {
        self.open_orders.iter().position(|o| o.order_id == order_id)
    }

    /// Where the open complaint `complaint_id` is in `open_complaints`: the one its resolution
    /// closes.
    pub fn open_complaint(&self, complaint_id: &str) -> Option<usize> {
        self.open_complaints
            .iter()
            .position(|c| c.complaint_id == complaint_id)
    }

    /// Where the open order a delivery, cancellation or return of `order_id` at `at` closes is
    /// in `open_orders`: one placed before it, give or take the clocks' skew.
    fn order_closed_by(&self, order_id: &str, at: Millis, limits: &FoldLimits) -> Option<usize> {
        self.open_order(order_id)
            .filter(|&i| closes(at, self.open_orders[i].placed_at, limits))
    }

    /// Where the open complaint a resolution of `complaint_id` at `at` closes is in
    /// `open_complaints`: one opened before it, give or take the clocks' skew.
    pub fn complaint_closed_by(
        &self,
        complaint_id: &str,
        at: Millis,
        limits: &FoldLimits,
    ) -> Option<usize> {
        self.open_complaint(complaint_id)
            .filter(|&i| closes(at, self.open_complaints[i].opened_at, limits))
    }

    /// The resolution waiting for complaint `complaint_id` opened at `opened_at`, if any.
    pub fn early_resolution(
        &self,
        complaint_id: &str,
        opened_at: Millis,
        limits: &FoldLimits,
    ) -> Option<&EarlyClose> {
        let i = self.early_close(complaint_id, false, opened_at, limits)?;
        Some(&self.early_closes[i])
    }

    /// The closes waiting for order (`order`) or complaint `id`, with where each is in
    /// `early_closes`.
    fn waiting_for<'s>(
        &'s self,
        id: &'s str,
        order: bool,
    ) -> impl Iterator<Item = (usize, &'s EarlyClose)> + 's {
        self.early_closes
            .iter()
            .enumerate()
            .filter(move |(_, c)| c.id == id && c.close.closes_order() == order)
    }

    /// Where the close waiting for order (`order`) or complaint `id`, opened at `opened_at`, is
    /// in `early_closes`.
    fn early_close(
        &self,
        id: &str,
        order: bool,
        opened_at: Millis,
        limits: &FoldLimits,
    ) -> Option<usize> {
        self.waiting_for(id, order)
            .find(|(_, c)| closes(c.at, opened_at, limits))
            .map(|(i, _)| i)
    }

    fn take_early_close(
        &mut self,
        id: &str,
        order: bool,
        opened_at: Millis,
        limits: &FoldLimits,
    ) -> Option<EarlyClose> {
        let i = self.early_close(id, order, opened_at, limits)?;
        Some(self.early_closes.remove(i))
    }

    /// Keeps a close read before its order or complaint, unless one for it waits already (the
    /// first read wins). `Some` names the bound when `max_open_items` wait: the new one is
    /// not kept.
    fn close_early(
        &mut self,
        id: &str,
        at: Millis,
        close: Close,
        limits: &FoldLimits,
    ) -> Option<Limit> {
        let order = close.closes_order();
        if self.waiting_for(id, order).next().is_some() {
            return None;
        }
        if self.early_closes.len() >= limits.max_open_items {
            return Some(if order {
                Limit::OpenOrders
            } else {
                Limit::OpenComplaints
            });
        }
        self.early_closes.push(EarlyClose {
            id: id.to_owned(),
            at,
            close,
        });
        None
    }

    fn resolve(&mut self, opened_at: Millis, at: Millis, satisfied: Option<bool>) {
        self.complaints_resolved += 1;
        self.resolution_seconds_total += seconds_between(opened_at, at);
        self.resolutions_unsatisfied += u32::from(satisfied == Some(false));
    }

    /// Whether the event opens an order or a complaint that is open already, or places an
    /// order placed before within the horizon (delivered, cancelled or returned since: an
    /// order id names one order, and a shop's outbox or a connector's snapshot sending it
    /// again under a new event id counted its revenue twice). `order` is an `order.placed`'s
    /// [`EventFingerprint::of_order`].
    fn opens_again(
        &self,
        kind: &EventKind,
        order: Option<EventFingerprint>,
        limits: &FoldLimits,
    ) -> bool {
        match kind {
            EventKind::OrderPlaced { order_id, .. } => {
                self.open_order(order_id).is_some()
                    || order.is_some_and(|order| self.remembers(order, limits))
            }
            EventKind::ComplaintOpened { complaint_id, .. } => {
                self.open_complaint(complaint_id).is_some()
            }
            _ => false,
        }
    }

    /// A subscription cancelled at `t`, read in any order with the customer's other
    /// cancellations, renewals and orders: what holds is what the latest of them in event time
    /// says. A renewal or an order dated at or after a cancellation wins the customer back (it
    /// may have been read first: orders come on another topic, and a backfill's files or a
    /// renewal published again come in any order); an older cancellation changes neither the
    /// subscription nor its reason, nor a standing reached since.
    fn cancel(&mut self, t: Millis, reason: &str) {
        if self.cancelled_at.is_none_or(|c| c <= t) {
            self.cancelled_at = Some(t);
            self.cancellation_reason = Some(reason.to_owned());
            self.subscription = if self.last_renewal_at.is_some_and(|r| r >= t) {
                Subscription::Active
            } else {
                Subscription::Cancelled
            };
        }
        let came_back = self.last_order_at.max(self.last_renewal_at) >= Some(t);
        if !came_back {
            self.lifecycle = Lifecycle::Lost;
        } else if self.lifecycle != Lifecycle::Lost {
            // Lost since, by silence or a later cancellation, it stays lost.
            self.lifecycle = Lifecycle::WonBack;
        }
    }

    /// When the customer came back after a cancellation at `t`, as far as the state can date
    /// it: the earliest of its latest order and latest renewal at or after `t`, and its first
    /// purchase day after `t`'s (an order that day came after `t`): the latest order's time
    /// when that is the day of the latest order (exact with one order that day), else the day's
    /// start (the state keeps no other order's time). `None` when nothing came at or after `t`.
    pub fn came_back_after(&self, t: Millis) -> Option<Millis> {
        let next_day = t.div_euclid(DAY_MS) + 1;
        let first_day_after = (self.purchase_days.iter())
            .map(|d| i64::from(*d))
            .find(|d| *d >= next_day)
            .map(|d| match self.last_order_at {
                Some(last) if last.div_euclid(DAY_MS) == d => last,
                _ => d * DAY_MS,
            });
        [self.last_order_at, self.last_renewal_at, first_day_after]
            .into_iter()
            .flatten()
            .filter(|at| *at >= t)
            .min()
    }

    fn place_order(&mut self, t: Millis, amount_minor: i64, margin_minor: i64) {
        self.orders += 1;
        self.revenue_minor += amount_minor;
        self.margin_minor += margin_minor;
        self.first_order_at = Some(self.first_order_at.map_or(t, |f| f.min(t)));
        self.last_order_at = Some(self.last_order_at.map_or(t, |l| l.max(t)));
        let day = t.div_euclid(DAY_MS) as i32;
        match self.purchase_days.binary_search(&day) {
            Ok(0) => self.first_day_revenue_minor += amount_minor,
            Ok(_) => {}
            Err(i) => {
                if i == 0 {
                    // A late order moved the first purchase day earlier: the old first day's
                    // revenue is repeat revenue from now on.
                    self.first_day_revenue_minor = amount_minor;
                }
                self.purchase_days.insert(i, day);
            }
        }
        if self.lifecycle == Lifecycle::Lost && self.cancelled_at.is_none_or(|c| c <= t) {
            self.lifecycle = Lifecycle::WonBack;
        } else if self.lifecycle == Lifecycle::New && self.purchase_days.len() > 1 {
            self.lifecycle = Lifecycle::Active;
        }
    }

    /// Whether the event id is remembered: seen within the horizon as of the last event
    /// applied, or that event's own. What left the horizon stays in the list until the next
    /// sweep, but no longer counts, so the events taken for duplicates are the same as if the
    /// list were swept at every event.
    fn remembers(&self, fingerprint: EventFingerprint, limits: &FoldLimits) -> bool {
        let horizon = self.last_event_at.saturating_sub(limits.dedup_horizon_ms);
        let newest = self.seen.len().wrapping_sub(1);
        self.seen
            .iter()
            .enumerate()
            .any(|(i, s)| s.fingerprint == fingerprint && (s.occurred_at >= horizon || i == newest))
    }

    /// Remembers the event id; `Some` when the oldest remembered id had to leave for it.
    /// Sweeps and seals the list when the entries after the sealed ones would pass
    /// [`SEAL_EVERY`], or when an id has to leave.
    fn remember(
        &mut self,
        fingerprint: EventFingerprint,
        occurred_at: Millis,
        limits: &FoldLimits,
    ) -> Option<Limit> {
        let horizon = self.last_event_at.saturating_sub(limits.dedup_horizon_ms);
        // The ids within the horizon are counted only when there are enough ids for them to be
        // that many: a scan of every remembered id at every event was 1.6% of the broker
        // benchmark's fold, where a customer remembers dozens and the limit is thousands.
        let full = self.seen.len() >= limits.max_dedup_ids
            && self
                .seen
                .iter()
                .filter(|s| s.occurred_at >= horizon)
                .count()
                >= limits.max_dedup_ids;
        let unsealed = self.seen.len() - (self.seen_sealed as usize).min(self.seen.len());
        if full || unsealed >= SEAL_EVERY {
            self.seen.retain(|s| s.occurred_at >= horizon);
            if full {
                // Oldest by event time leaves first; the id set stays bounded per customer.
                if let Some(oldest) = self
                    .seen
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.occurred_at)
                    .map(|(i, _)| i)
                {
                    self.seen.remove(oldest);
                }
            }
            self.seen_sealed = self.seen.len() as u32;
            self.seal = self.seal.wrapping_add(1);
        }
        self.seen.push(SeenEvent {
            fingerprint,
            occurred_at,
        });
        full.then_some(Limit::DedupIds)
    }
}

/// What the state keeps of a referrer's id: its XXH3-64 fingerprint, as 16 hexadecimal digits.
pub fn referrer_fingerprint(referrer: &str) -> String {
    format!("{:016x}", EventFingerprint::of(referrer).0)
}

/// Whether a close at `at` is of an order or complaint opened at `opened_at`: one dated before
/// the opening by more than the clocks' skew closed an earlier one under the same id (a
/// complaint resolved, then reopened, and its old resolution published again).
fn closes(at: Millis, opened_at: Millis, limits: &FoldLimits) -> bool {
    at >= opened_at.saturating_sub(limits.clock_skew_ms)
}

fn seconds_between(from: Millis, to: Millis) -> u64 {
    u64::try_from(to.saturating_sub(from) / 1000).unwrap_or(0)
}

/// How `CustomerState::seen` goes through serde. Readable formats (the HTTP endpoint's JSON)
/// get the list as it is. Binary ones (the store's postcard) get, in the field's place, the
/// layout of encoding versions 1 to 5, whose entries were the ids themselves: reading it
/// fingerprints each id, and writing it writes an empty list, as version 6 does there before
/// storing the fingerprints after the body (`store::codec`).
mod legacy_seen {
    use serde::de::{Deserialize, Deserializer};
    use serde::ser::{SerializeSeq, Serializer};

    use super::{EventFingerprint, Millis, SeenEvent};

    pub fn serialize<S: Serializer>(seen: &[SeenEvent], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.collect_seq(seen)
        } else {
            serializer.serialize_seq(Some(0))?.end()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<SeenEvent>, D::Error> {
        if deserializer.is_human_readable() {
            return Vec::<SeenEvent>::deserialize(deserializer);
        }
        let ids = Vec::<(std::borrow::Cow<'de, str>, Millis)>::deserialize(deserializer)?;
        Ok(ids
            .into_iter()
            .map(|(event_id, occurred_at)| SeenEvent {
                fingerprint: EventFingerprint::of(&event_id),
                occurred_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The list as it was kept before sweeps were deferred: swept at every event applied.
    #[derive(Default)]
    struct SweptEveryEvent {
        seen: Vec<SeenEvent>,
        last_event_at: Option<Millis>,
    }

    impl SweptEveryEvent {
        /// `None` for a duplicate, else whether an id had to leave.
        fn apply(&mut self, seen: SeenEvent, limits: &FoldLimits) -> Option<bool> {
            if self.seen.iter().any(|s| s.fingerprint == seen.fingerprint) {
                return None;
            }
            let last = self
                .last_event_at
                .map_or(seen.occurred_at, |l| l.max(seen.occurred_at));
            self.last_event_at = Some(last);
            let horizon = last.saturating_sub(limits.dedup_horizon_ms);
            self.seen.retain(|s| s.occurred_at >= horizon);
            let full = self.seen.len() >= limits.max_dedup_ids;
            if full {
                let oldest = (self.seen.iter().enumerate())
                    .min_by_key(|(_, s)| s.occurred_at)
                    .map(|(i, _)| i);
                self.seen.remove(oldest.expect("full"));
            }
            self.seen.push(seen);
            Some(full)
        }
    }

    #[test]
    fn a_cancellation_older_than_the_last_order_leaves_a_customer_lost_since_lost() {
        // Lost by silence after its last order (the risk sets it), then a cancellation from
        // before that order is read: the order won the customer back after the cancellation, and
        // the silence lost it again since.
        let limits = FoldLimits {
            dedup_horizon_ms: 30 * DAY_MS,
            max_dedup_ids: 100,
            max_open_items: 10,
            clock_skew_ms: 300_000,
        };
        let event = |id: &str, at: Millis, kind: EventKind| Event {
            event_id: id.into(),
            customer_id: "c".into(),
            occurred_at: at,
            kind,
        };
        let order = EventKind::OrderPlaced {
            order_id: "o".into(),
            amount_minor: 100,
            margin_minor: 10,
        };
        let cancel = EventKind::SubscriptionCancelled {
            reason: "price".into(),
        };
        let mut state = CustomerState::new("c");
        state.apply(&event("o", 10 * DAY_MS, order.clone()), &limits);
        state.lifecycle = Lifecycle::Lost;
        state.apply(&event("c", 5 * DAY_MS, cancel.clone()), &limits);
        assert_eq!(state.lifecycle, Lifecycle::Lost);
        assert_eq!(state.subscription, Subscription::Cancelled);
        // Not lost since: the order won it back.
        let mut state = CustomerState::new("c");
        state.apply(&event("o", 10 * DAY_MS, order), &limits);
        state.apply(&event("c", 5 * DAY_MS, cancel), &limits);
        assert_eq!(state.lifecycle, Lifecycle::WonBack);
    }

    #[test]
    fn a_customer_came_back_at_the_earliest_return_the_state_can_date() {
        let mut state = CustomerState::new("c");
        let t = 2 * DAY_MS + 1_000;
        assert_eq!(state.came_back_after(t), None);
        state.last_renewal_at = Some(9 * DAY_MS + 5);
        assert_eq!(state.came_back_after(t), Some(9 * DAY_MS + 5));
        // Orders on the cancellation's day (before or after it: not known), on day 4 and last
        // on day 7: day 4's start.
        state.purchase_days = vec![1, 2, 4, 7];
        state.last_order_at = Some(7 * DAY_MS + 3);
        assert_eq!(state.came_back_after(t), Some(4 * DAY_MS));
        // The first day after it is the latest order's: that order's time.
        state.purchase_days = vec![1, 2, 5];
        state.last_order_at = Some(5 * DAY_MS + 7);
        assert_eq!(state.came_back_after(t), Some(5 * DAY_MS + 7));
        // The latest order, on the cancellation's day after it, is the earliest it can date.
        state.purchase_days = vec![1, 2];
        state.last_order_at = Some(t + 1);
        assert_eq!(state.came_back_after(t), Some(t + 1));
        // Nothing at or after it.
        state.last_order_at = Some(t - 1);
        state.last_renewal_at = None;
        assert_eq!(state.came_back_after(t), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Deferring the sweep changes nothing a customer's events see: the same events are
        /// duplicates, the same ids leave at the bound, and what counts is what the list swept
        /// at every event holds. The sealed entries change only with the seal.
        #[test]
        fn a_list_swept_now_and_then_takes_the_same_events_for_duplicates(
            events in proptest::collection::vec((0u64..120, 0i64..400), 1..400),
            max_dedup_ids in 1usize..60,
        ) {
            let limits = FoldLimits {
                dedup_horizon_ms: 100,
                max_dedup_ids,
                max_open_items: 10,
                clock_skew_ms: 300_000,
            };
            let mut reference = SweptEveryEvent::default();
            let mut state = CustomerState::new("c");
            let mut sealed = (state.seal, Vec::new());
            for (id, occurred_at) in events {
                let fingerprint = EventFingerprint(id);
                let expected = reference.apply(SeenEvent { fingerprint, occurred_at }, &limits);
                let got = if state.remembers(fingerprint, &limits) {
                    None
                } else {
                    state.last_event_at = if state.is_empty() {
                        occurred_at
                    } else {
                        state.last_event_at.max(occurred_at)
                    };
                    Some(state.remember(fingerprint, occurred_at, &limits).is_some())
                };
                prop_assert_eq!(got, expected);
                let horizon = state.last_event_at - limits.dedup_horizon_ms;
                let newest = state.seen.len() - 1;
                let counted: Vec<SeenEvent> = (state.seen.iter().enumerate())
                    .filter(|(i, s)| s.occurred_at >= horizon || *i == newest)
                    .map(|(_, s)| *s)
                    .collect();
                prop_assert_eq!(&counted, &reference.seen);
                let prefix = state.seen[..state.seen_sealed as usize].to_vec();
                if state.seal == sealed.0 {
                    prop_assert_eq!(&prefix, &sealed.1, "sealed entries changed without a seal");
                }
                sealed = (state.seal, prefix);
                prop_assert!(state.seen.len() - state.seen_sealed as usize <= SEAL_EVERY);
            }
        }
    }
}
