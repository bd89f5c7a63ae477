"""The live bridge: one thread per web process that reads every notice of the live-updates
topic and hands it to this process's feed of that stream (live.feeds), if a socket here
follows it.

Why a Kafka topic and not a cross-process channel layer: see live.notices. Each web process
reads the topic from its end with a plain assignment (no consumer group to join or leave),
so every process gets every notice, and adding web processes needs nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from eventing import tracing
from eventing.clients import consumer_config
from eventing.topics import topic_name
from live import feeds
from live.notices import LIVE_UPDATES, read_notice

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.live")


class LiveBridge:
    """Reads the live-updates topic in a thread and hands each notice to this process's feed
    of its stream, on the event loop that serves the websockets."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="live-bridge", daemon=True)

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)

    def _run(self) -> None:
        # A group id is required by the client, never joined: partitions are assigned by hand.
        consumer = Consumer(consumer_config("live-bridge", "live"))
        try:
            self._assign(consumer)
            while not self._stopping.is_set():
                # Wait for the first notice only, then take the ones already fetched:
                # consume(100, t) would hold a lone notice for the whole t.
                messages = consumer.consume(1, 0.2)
                if messages:
                    messages.extend(consumer.consume(99, 0))
                changes = merged(messages)
                if log.isEnabledFor(logging.DEBUG):
                    for m in messages:
                        trace_id = tracing.trace_id_of(tracing.header_of(m.headers()))
                        log.debug("live notice for %s", m.key(), extra={"trace_id": trace_id})
                for stream, (parts, at) in changes.items():
                    self._loop.call_soon_threadsafe(feeds.notify, stream, parts, at)
        except Exception:
            log.exception("live bridge stopped; pages fall back to reloading")
        finally:
            consumer.close()

    def _assign(self, consumer: Consumer) -> None:
        topic = topic_name(LIVE_UPDATES)
        while not self._stopping.is_set():
            try:
                # A short wait per try: stop() joins for 5 s, and an unreachable broker would
                # otherwise hold this thread past it.
                partitions = consumer.list_topics(topic, timeout=1).topics[topic].partitions
            except KafkaException as exc:
                log.warning("live bridge waiting for Kafka: %s", exc)
                partitions = {}
            if partitions:
                consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in partitions])
                log.info("live bridge reading %s", topic)
                return
            self._stopping.wait(2)  # the topic appears when init_kafka runs


def merged(messages: list) -> dict[str, tuple[frozenset[str] | None, float]]:
    """One change per stream out of a poll's notices: the union of their parts (None, the
    whole page, wins) and the oldest commit time."""
    changes: dict[str, tuple[frozenset[str] | None, float]] = {}
    for message in messages:
        if message.error() is not None or not message.key():
            continue
        try:
            stream = message.key().decode()
        except UnicodeDecodeError:  # names no stream (a UnicodeDecodeError here stopped the bridge)
            continue
        at, parts = read_notice(message.value())
        if stream in changes:
            before, first = changes[stream]
            parts = None if parts is None or before is None else before | parts
            at = min(at, first)
        changes[stream] = (parts, at)
    return changes


_bridge: LiveBridge | None = None
_bridge_lock = threading.Lock()


def ensure_bridge() -> None:
    """Start this process's bridge on the running loop, once (on the first websocket).
    daphne has one loop for its lifetime; a new loop (tests) or a dead bridge gets a new one."""
    global _bridge
    loop = asyncio.get_running_loop()
    with _bridge_lock:
        if _bridge is None or _bridge.loop is not loop or not _bridge.alive:
            if _bridge is not None:
                _bridge.stop()
            _bridge = LiveBridge(loop)
            _bridge.start()


def stop_bridge() -> None:
    """Stop this process's bridge, if any (tests; a process exiting needs nothing: daemon thread)."""
    global _bridge
    with _bridge_lock:
        if _bridge is not None:
            _bridge.stop()
            _bridge = None
