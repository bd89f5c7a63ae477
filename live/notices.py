"""Live pages' notices: "these parts of this stream changed", from whoever changed them to
every web process.

    consumer process ──commit──▶ announce_changes (eventing's after-commit hook) ──▶
    [live-updates] ──▶ LiveBridge (live.bridge: one per web process, reads every notice)
    ──▶ Feed of that stream in that process (live.feeds: gathers the changed parts, reads
    them once per interval) ──▶ websockets (live.sockets: each sends its user only what
    that user's page shows) ──▶ live.js applies the rows and regions by id

A notice names the stream ("courier", "stats", "order.<id>") and the parts of its pages
that changed: rows (an order id on the courier page) or regions ("order-status"); no parts
means the whole page. It never carries content: each web process reads the parts itself,
after the commit, and each socket picks what its user may see (live.sockets), so a notice
cannot leak data, and a lost one costs at most one stale row until its next change (or a
reload).

Why a Kafka topic and not a cross-process channel layer: the embedded default has no Redis
to spare, and Kafka is already the one thing every process talks to. Each web process reads
the topic from its end with a plain assignment (no consumer group to join or leave), so
every process gets every notice, and adding web processes needs nothing else.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from confluent_kafka import KafkaException, Producer

from eventing.headers import Header
from eventing.projection import ConsumedEvent, Projection
from eventing.topics import topic_name

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.live")

# The topic of the notices (declared in settings.EVENTING_NOTICE_TOPICS): not events,
# nothing is rebuilt from them, so it keeps them briefly.
LIVE_UPDATES = "live-updates"


def courier_stream() -> str:
    return "courier"


def stats_stream() -> str:
    return "stats"


def order_stream(order_id: str) -> str:
    return f"order.{order_id}"


# The parts of an order's page (orders/order_detail.html), by region name: the delivery
# service changes its status, the notification service its list.
ORDER_STATUS = "order-status"
ORDER_NOTIFICATIONS = "order-notifications"


# stream -> the parts of its pages that changed (row ids, region names); None: the whole page.
Changes = Mapping[str, Iterable[str] | None]


def announce(producer: Producer, changes: Changes, traceparent: str = "") -> None:
    """Tell every web process that these parts of these streams changed. Best effort: a lost
    notice only delays a row until its next change, so it never holds up or fails a
    consumer's batch. `traceparent`: the request that caused the change, if one did
    (eventing.tracing)."""
    topic = topic_name(LIVE_UPDATES)
    at = time.time()
    headers = [(Header.TRACEPARENT, traceparent.encode())] if traceparent else None
    for stream, parts in changes.items():
        notice = {"at": at} if parts is None else {"at": at, "parts": sorted(parts)}
        try:
            producer.produce(topic, key=stream.encode(), value=json.dumps(notice).encode(), headers=headers)
        except (BufferError, KafkaException) as exc:
            log.warning("live notice for %s not sent: %s", stream, exc)
    producer.poll(0)


def read_notice(value: bytes | None) -> tuple[float, frozenset[str] | None]:
    """A notice's (commit time, parts changed or None for the whole page). A notice written
    before parts existed (a bare time) or one that cannot be read means the whole page: a
    page re-read too many is harmless, a change missed is not."""
    try:
        notice = json.loads(value or b"")
    except (ValueError, RecursionError):  # not JSON (or past 4300 digits); nested too deep
        notice = None
    if isinstance(notice, dict):
        parts = notice.get("parts")
        return _commit_time(notice.get("at")), frozenset(str(p) for p in parts) if isinstance(parts, list) else None
    return _commit_time(notice), None


def _commit_time(at: object) -> float:
    """A notice's commit time, or now if it has none that a frame can carry: a frame's `at`
    is JSON for the browser, where NaN and Infinity are not (its whole frame would be lost),
    and an integer past a float's range is an OverflowError (it stopped the bridge)."""
    if isinstance(at, (int, float)) and not isinstance(at, bool):
        try:
            at = float(at)
        except OverflowError:
            return time.time()
        if math.isfinite(at):
            return at
    return time.time()


class LiveProjection(Protocol):
    def live_changes(self, events: list[ConsumedEvent]) -> Changes:
        """The parts of live pages a committed batch of these events changed."""
        ...


def announce_changes(projection: Projection, events: list[ConsumedEvent], producer: Producer) -> None:
    """eventing's after-commit hook (settings.EVENTING_AFTER_COMMIT): the changes a projection
    with `live_changes` says its batch made. After the commit, so a page's read sees them."""
    changes_of = getattr(projection, "live_changes", None)
    if changes_of is not None:
        announce(producer, changes_of(events), _one_trace(events))


def _one_trace(events: list[ConsumedEvent]) -> str:
    """The batch's trace when all its events share one (a live order's step), else "": a
    notice about several orders' events belongs to none of them."""
    traces = {e.traceparent for e in events}
    return traces.pop() if len(traces) == 1 else ""
