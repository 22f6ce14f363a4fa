"""The peer for `cargo bench --bench peers`: customer-pulse's per-customer fold (src/fold.rs, the
state alone, without the analytics) written with Quix Streams, which keeps it in RocksDB, with a
changelog topic (`--changelog on`, Quix Streams' default) or without one (`--changelog off`), as
customer-pulse runs with `state.changelog` on or off.

Reads the three input topics from the beginning in consumer group `--group`, validates each
event's envelope, drops a redelivered event by its id, and folds the rest into the customer's
state. Prints one line, `processed N`, once `--expected` events have been taken in, then keeps
running (so that the harness can read its CPU time and peak memory) until its stdin closes.

`--fetch-wait-ms` sets its consumer's `fetch.wait.max.ms` (Tansu 0.6.0 holds every fetch that
long, records or not), which the harness sets as it sets the job's and the bare consumer's.

With `--latencies FILE` it also notes, for each event, the record's timestamp and the time from
it to the end of the event's fold (Quix Streams commits its state at its checkpoints, every 5 s
by default, so this is to the state's update in memory, not to a commit), writes them to FILE
before it prints `processed`, and prints `warm` once `--warm` events have been taken in.

Tansu 0.6.0 leaves `retention.ms` out of its DescribeConfigs answers, which Quix Streams needs to
configure its changelog topic; the broker's missing values are filled with Kafka's defaults.
"""

import argparse
import bisect
import sys
import threading
import time
from datetime import datetime

from quixstreams import Application
from quixstreams.models.topics import admin as topic_admin

DAY_MS = 86_400_000
MAX_OPEN_ITEMS = 100
MAX_DEDUP_IDS = 10_000
DEDUP_HORIZON_MS = 30 * DAY_MS
KNOWN_TYPES = {
    "customer.registered", "interaction.contact", "interaction.survey",
    "subscription.renewed", "subscription.cancelled", "order.placed", "order.delivered",
    "order.returned", "order.cancelled", "complaint.opened", "complaint.resolved",
}

_inspect_topics = topic_admin.TopicAdmin.inspect_topics


def _inspect_topics_with_defaults(self, topic_names, timeout=30):
    configs = _inspect_topics(self, topic_names, timeout)
    for config in configs.values():
        if config is not None:
            config.extra_config.setdefault("retention.ms", "604800000")
            config.extra_config.setdefault("retention.bytes", "-1")
    return configs


topic_admin.TopicAdmin.inspect_topics = _inspect_topics_with_defaults


def millis(text):
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def new_state(customer_id):
    return {
        "customer_id": customer_id, "registered_at": None, "referred_by": None,
        "segment_hint": None, "lifecycle": "new", "first_event_at": None, "last_event_at": None,
        "first_order_at": None, "last_order_at": None, "purchase_days": [], "orders": 0,
        "revenue_minor": 0, "margin_minor": 0, "first_day_revenue_minor": 0, "open_orders": [],
        "deliveries": 0, "delivery_seconds_total": 0, "returns": 0, "returned_minor": 0,
        "order_cancellations": 0, "open_complaints": [], "complaints_opened": 0,
        "complaints_resolved": 0, "resolution_seconds_total": 0, "resolutions_unsatisfied": 0,
        "last_complaint_at": None, "last_survey_score": None, "last_survey_at": None,
        "contacts": 0, "inbound_contacts": 0, "first_responses": 0,
        "first_response_seconds_total": 0, "subscription": "none", "renewals": 0,
        "renewal_revenue_minor": 0, "last_renewal_reason": None, "cancellation_reason": None,
        "cancelled_at": None, "seen": [],
    }


def remember(s, event_id, t):
    horizon = s["last_event_at"] - DEDUP_HORIZON_MS
    s["seen"] = [x for x in s["seen"] if x[1] >= horizon]
    if len(s["seen"]) >= MAX_DEDUP_IDS:
        s["seen"].remove(min(s["seen"], key=lambda x: x[1]))
    s["seen"].append([event_id, t])


def place_order(s, t, amount, margin):
    s["orders"] += 1
    s["revenue_minor"] += amount
    s["margin_minor"] += margin
    s["first_order_at"] = t if s["first_order_at"] is None else min(s["first_order_at"], t)
    s["last_order_at"] = t if s["last_order_at"] is None else max(s["last_order_at"], t)
    day = t // DAY_MS
    days = s["purchase_days"]
    i = bisect.bisect_left(days, day)
    if i < len(days) and days[i] == day:
        if i == 0:
            s["first_day_revenue_minor"] += amount
    else:
        if i == 0:
            s["first_day_revenue_minor"] = amount
        days.insert(i, day)
    cancelled = s["cancelled_at"]
    if s["lifecycle"] == "lost" and (cancelled is None or cancelled <= t):
        s["lifecycle"] = "won_back"
    elif s["lifecycle"] == "new" and len(days) > 1:
        s["lifecycle"] = "active"


def apply(s, e, t):
    kind = e["type"]
    if kind == "customer.registered":
        s["registered_at"] = t if s["registered_at"] is None else min(s["registered_at"], t)
        if e.get("referred_by"):
            s["referred_by"] = e["referred_by"]
        if e.get("segment_hint"):
            s["segment_hint"] = e["segment_hint"]
    elif kind == "interaction.contact":
        s["contacts"] += 1
        s["inbound_contacts"] += e.get("direction") == "inbound"
        if e.get("first_response_seconds") is not None:
            s["first_responses"] += 1
            s["first_response_seconds_total"] += int(e["first_response_seconds"])
    elif kind == "interaction.survey":
        if s["last_survey_at"] is None or s["last_survey_at"] <= t:
            s["last_survey_score"] = int(e["score"])
            s["last_survey_at"] = t
    elif kind == "subscription.renewed":
        s["renewals"] += 1
        s["renewal_revenue_minor"] += int(e["amount_minor"])
        s["last_renewal_reason"] = e.get("reason")
        if s["cancelled_at"] is None or s["cancelled_at"] <= t:
            s["subscription"] = "active"
            if s["lifecycle"] == "lost":
                s["lifecycle"] = "won_back"
    elif kind == "subscription.cancelled":
        s["subscription"] = "cancelled"
        s["cancellation_reason"] = e.get("reason")
        s["cancelled_at"] = t
        won = s["last_order_at"] is not None and s["last_order_at"] > t
        s["lifecycle"] = "won_back" if won else "lost"
    elif kind == "order.placed":
        place_order(s, t, int(e["amount_minor"]), int(e.get("margin_minor", 0)))
        if len(s["open_orders"]) < MAX_OPEN_ITEMS:
            s["open_orders"].append([e["order_id"], t])
    elif kind == "order.delivered":
        for i, (order_id, placed_at) in enumerate(s["open_orders"]):
            if order_id == e["order_id"]:
                s["open_orders"].pop(i)
                s["deliveries"] += 1
                s["delivery_seconds_total"] += max(0, (t - placed_at) // 1000)
                break
    elif kind == "order.returned":
        s["returns"] += 1
        s["returned_minor"] += int(e["amount_minor"])
    elif kind == "order.cancelled":
        s["order_cancellations"] += 1
        s["open_orders"] = [o for o in s["open_orders"] if o[0] != e["order_id"]]
    elif kind == "complaint.opened":
        s["complaints_opened"] += 1
        last = s["last_complaint_at"]
        s["last_complaint_at"] = t if last is None else max(last, t)
        if len(s["open_complaints"]) < MAX_OPEN_ITEMS:
            s["open_complaints"].append([e["complaint_id"], e["category"], e["severity"], t])
    elif kind == "complaint.resolved":
        for i, complaint in enumerate(s["open_complaints"]):
            if complaint[0] == e["complaint_id"]:
                s["open_complaints"].pop(i)
                s["complaints_resolved"] += 1
                s["resolution_seconds_total"] += max(0, (t - complaint[3]) // 1000)
                s["resolutions_unsatisfied"] += e.get("satisfied") is False
                break


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--expected", type=int, required=True)
    parser.add_argument("--changelog", choices=["on", "off"], default="on")
    parser.add_argument("--fetch-wait-ms", type=int)
    parser.add_argument("--latencies")
    parser.add_argument("--warm", type=int, default=0)
    parser.add_argument("topics", nargs=3)
    args = parser.parse_args()

    app = Application(
        broker_address=args.brokers,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        use_changelog_topics=args.changelog == "on",
        loglevel="WARNING",
        # Tansu holds every fetch this long, records or not: the harness gives the peer the
        # job's and the bare consumer's setting rather than librdkafka's 500 ms.
        consumer_extra_config=(
            {} if args.fetch_wait_ms is None else {"fetch.wait.max.ms": args.fetch_wait_ms}
        ),
    )
    inputs = [app.dataframe(app.topic(t, value_deserializer="json")) for t in args.topics]
    events = inputs[0].concat(inputs[1]).concat(inputs[2])
    taken = {"n": 0, "applied": 0}

    latencies = []

    def fold(event, state, timestamp=None):
        try:
            fold_one(event, state)
        finally:
            if timestamp is not None:
                latencies.append((timestamp, time.time() * 1000 - timestamp))
            taken["n"] += 1
            if taken["n"] == args.warm:
                print("warm", flush=True)
            if taken["n"] == args.expected:
                if args.latencies:
                    with open(args.latencies, "w") as out:
                        out.writelines(f"{t} {ms:.3f}\n" for t, ms in latencies)
                print(f"processed {taken['n']} applied {taken['applied']}", flush=True)

    def fold_timed(event, _key, timestamp, _headers, state):
        fold(event, state, timestamp)

    def fold_one(event, state):
        try:
            customer_id = event["customer_id"]
            event_id = event["event_id"]
            if event["type"] not in KNOWN_TYPES or not customer_id or not event_id:
                return
            t = millis(event["occurred_at"])
        except (KeyError, TypeError, ValueError):
            return
        s = state.get("customer") or new_state(customer_id)
        if any(x[0] == event_id for x in s["seen"]):
            return
        s["first_event_at"] = t if s["first_event_at"] is None else min(s["first_event_at"], t)
        s["last_event_at"] = t if s["last_event_at"] is None else max(s["last_event_at"], t)
        remember(s, event_id, t)
        apply(s, event, t)
        state.set("customer", s)
        taken["applied"] += 1

    if args.latencies:
        events.update(fold_timed, stateful=True, metadata=True)
    else:
        events.update(fold, stateful=True)
    threading.Thread(target=lambda: (sys.stdin.read(), app.stop()), daemon=True).start()
    app.run()


if __name__ == "__main__":
    main()
