"""Live pages' notices: "this stream changed", from whoever changed it to every web process.

    consumer process ──commit──▶ announce_changes (eventing's after-commit hook) ──▶
    [live-updates] ──▶ LiveBridge (live.bridge: one per web process, reads every notice)
    ──▶ Channels group "<stream>" in that process ──▶ websockets (live.sockets: each reads
    its page as its browser would) ──▶ live.js swaps the page's live regions

A notice says only which stream changed ("courier", "stats", "order.<id>"), never what:
each socket then reads its page through the ordinary view, with its browser's cookies and
so its login and permission checks (live.sockets), so a socket cannot leak data, and a
missed notice costs at most one stale view until the next one (or a reload).

Why a Kafka topic and not a cross-process channel layer: the embedded default has no Redis
to spare, and Kafka is already the one thing every process talks to. Each web process reads
the topic from its end with a plain assignment (no consumer group to join or leave), so
every process gets every notice, and adding web processes needs nothing else. The Channels
layer inside one process is the in-memory one: it only fans out to that process's sockets.
"""

from __future__ import annotations

import logging
import time
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


def announce(producer: Producer, streams: set[str], traceparent: str = "") -> None:
    """Tell every web process that these streams changed. Best effort: a lost notice only
    delays a page until the next one, so it never holds up or fails a consumer's batch.
    `traceparent`: the request that caused the change, if one did (eventing.tracing)."""
    topic = topic_name(LIVE_UPDATES)
    at = str(time.time()).encode()
    headers = [(Header.TRACEPARENT, traceparent.encode())] if traceparent else None
    for stream in streams:
        try:
            producer.produce(topic, key=stream.encode(), value=at, headers=headers)
        except (BufferError, KafkaException) as exc:
            log.warning("live notice for %s not sent: %s", stream, exc)
    producer.poll(0)


class LiveProjection(Protocol):
    def live_streams(self, events: list[ConsumedEvent]) -> set[str]:
        """The live pages a committed batch of these events changed."""
        ...


def announce_changes(projection: Projection, events: list[ConsumedEvent], producer: Producer) -> None:
    """eventing's after-commit hook (settings.EVENTING_AFTER_COMMIT): the streams a projection
    with `live_streams` says its batch changed. After the commit, so a page re-read sees it."""
    streams_of = getattr(projection, "live_streams", None)
    if streams_of is not None:
        announce(producer, streams_of(events), _one_trace(events))


def _one_trace(events: list[ConsumedEvent]) -> str:
    """The batch's trace when all its events share one (a live order's step), else "": a
    notice about several orders' events belongs to none of them."""
    traces = {e.traceparent for e in events}
    return traces.pop() if len(traces) == 1 else ""
