"""The shop's live order events: checkout sends one JSON event per order to the bus.

`order_events` makes a reproducible stream (numpy `default_rng(seed)`): orders spread over
a span of event time, slightly out of order as a real checkout fleet delivers them, with a
few events that arrive far too late for their minute and a few that are not JSON at all.
`produce_live` sends events stamped with the current time at a steady rate, for watching
`lakebed stream` work (`lakebed demo-events DIR`).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from lakebed.bus import Bus, Record

TOPIC = "order_events"
COUNTRIES = ["DE", "FR", "NL", "US", "GB", "ES", "IT", "SE"]
_SHIPPING = ["standard", "express"]


def _event(rng: np.random.Generator, number: int, at: datetime) -> dict[str, object]:
    return {
        "event_id": f"ev-{number:08d}",
        "order_id": 5_000_000 + number,
        "customer_id": int(rng.integers(1, 10_001)),
        "country": COUNTRIES[int(rng.integers(len(COUNTRIES)))],
        "amount": round(float(rng.gamma(2.0, 25.0)) + 1.0, 2),
        "shipping": _SHIPPING[int(rng.random() < 0.2)],
        "ordered_at": at.isoformat(timespec="milliseconds"),
    }


def order_events(count: int, *, start: datetime, minutes: int = 15, seed: int = 7) -> list[Record]:
    """`count` checkout events over `minutes` of event time starting at `start`, keyed by
    customer; about 0.2% arrive minutes late and 0.1% are garbled (not JSON)."""
    rng = np.random.default_rng(seed)
    offsets = np.sort(rng.uniform(0, minutes * 60, count))
    # Delivery jitter of a few seconds: events reach the bus slightly out of order.
    offsets = offsets + rng.normal(0, 2.0, count)
    late = rng.random(count) < 0.002
    offsets[late] -= rng.uniform(120, 300, int(late.sum()))
    garbled = rng.random(count) < 0.001
    records = []
    for number in range(count):
        at = start + timedelta(seconds=float(max(offsets[number], 0.0)))
        event = _event(rng, number, at)
        value = json.dumps(event).encode()
        if garbled[number]:
            value = value[: len(value) // 2]  # a checkout node crashed mid-send
        records.append(Record(value, key=str(event["customer_id"]).encode()))
    return records


def produce_live(
    bus: Bus,
    *,
    rate: float = 50.0,
    stop: threading.Event | None = None,
    limit: int | None = None,
    seed: int = 11,
) -> int:
    """Send events stamped now, `rate` per second, until `stop` is set or `limit` are sent."""
    rng = np.random.default_rng(seed)
    stop = stop or threading.Event()
    producer = bus.producer()
    sent = 0
    started = time.monotonic()
    try:
        while not stop.is_set() and (limit is None or sent < limit):
            due = int((time.monotonic() - started) * rate) + 1 - sent
            if limit is not None:
                due = min(due, limit - sent)
            now = datetime.now(UTC)
            events = [_event(rng, 9_000_000 + sent + i, now) for i in range(max(due, 0))]
            batch = [
                Record(json.dumps(e).encode(), key=str(e["customer_id"]).encode()) for e in events
            ]
            if batch:
                producer.produce(TOPIC, batch)
                producer.flush()
                sent += len(batch)
            stop.wait(0.05)
    finally:
        producer.close()
    return sent
