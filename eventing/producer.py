"""The one Kafka producer of a process: long-lived, idempotent, polled by a background thread.

Why a thread: librdkafka only runs delivery callbacks inside poll(), and a web request must
not wait for the broker. `publish` enqueues and returns; the thread drains delivery reports.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from contract.events import CONTENT_TYPE_JSON, Event
from eventing import hooks, schema_registry, tracing
from eventing.clients import producer_config
from eventing.conf import settings
from eventing.headers import Header
from eventing.topics import logical_name, topic_name

__all__ = ["EventPublisher", "get_publisher", "producer_config", "reset_publisher"]

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.kafka.producer")

AFTER_POLL_EVERY_S = 0.25

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class EventPublisher:
    def __init__(self, config: dict) -> None:
        self._producer = Producer(config)
        self._closing = threading.Event()
        self._after_poll: list[Callable[[], None]] = []
        self._poller = threading.Thread(target=self._poll_forever, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    def publish(self, event: Event, on_delivery: DeliveryCallback | None = None) -> None:
        """Queue an event on its topic, keyed by its order id, encoded in the deployment's
        EVENT_FORMAT. Does not wait for the broker."""
        value, content_type = schema_registry.encode_event(event, settings.EVENT_FORMAT)
        self.publish_encoded(
            event.payload.TOPIC,
            event.key,
            value,
            event.type,
            on_delivery,
            content_type=content_type,
            traceparent=tracing.current_traceparent(),
        )

    def publish_encoded(
        self,
        topic: str,
        key: str,
        value: bytes,
        event_type: str,
        on_delivery: DeliveryCallback | None = None,
        *,
        content_type: str = CONTENT_TYPE_JSON,
        traceparent: str = "",
    ) -> None:
        """Queue an already encoded event (the outbox keeps events encoded, with their content
        type and the trace of the request that caused them)."""
        headers = [(Header.CONTENT_TYPE, content_type), (Header.EVENT_TYPE, event_type)]
        if traceparent:
            headers.append((Header.TRACEPARENT, traceparent))
        self._producer.produce(
            topic_name(topic),
            key=key.encode(),
            value=value,
            headers=headers,
            on_delivery=_counting_failures(on_delivery or _log_delivery),
        )

    @property
    def producer(self) -> Producer:
        """The underlying client, for fire-and-forget messages that are not events (the live
        pages' notices), delivered by the same poll thread."""
        return self._producer

    def after_poll(self, hook: Callable[[], None]) -> None:
        """Run `hook` in the poll thread after each poll (e.g. to record deliveries in bulk)."""
        if hook not in self._after_poll:
            self._after_poll.append(hook)

    def flush(self, timeout: float = 10) -> int:
        """Wait for queued events; returns how many are still undelivered."""
        return self._producer.flush(timeout)

    def close(self, timeout: float = 10) -> None:
        self._closing.set()
        remaining = self.flush(timeout)
        if remaining:
            log.error("%d event(s) not delivered to Kafka at shutdown", remaining)

    def _poll_forever(self) -> None:
        hooks_ran = 0.0
        while not self._closing.is_set():
            self._producer.poll(0.5)
            # Under load poll() returns at every delivery report; the hooks (the outbox's one
            # UPDATE marking acknowledged events sent) run at most every AFTER_POLL_EVERY_S, so
            # the web's own writes do not queue behind an UPDATE per handful of events (with
            # SQLite, one writer at a time).
            if time.monotonic() - hooks_ran < AFTER_POLL_EVERY_S:
                continue
            hooks_ran = time.monotonic()
            for hook in self._after_poll:
                try:
                    hook()
                except Exception:
                    log.exception("after-poll hook failed")


def _counting_failures(callback: DeliveryCallback) -> DeliveryCallback:
    """The callback, after counting a failed delivery (eventing.hooks)."""
    metrics = hooks.metrics()

    def report(error: KafkaError | None, message: Message) -> None:
        if error is not None:
            tags = {"topic": logical_name(message.topic()), "error": error.name()}
            metrics.increment("producer.delivery_failures", 1, tags)
        callback(error, message)

    return report


def _log_delivery(error: KafkaError | None, message: Message) -> None:
    if error is not None:
        log.error("event to %s key=%s not delivered: %s", message.topic(), message.key(), error)


_publishers: dict[str, EventPublisher] = {}
_lock = threading.Lock()


def get_publisher(name: str = "producer", **overrides: Any) -> EventPublisher:
    """The process-wide publisher `name`, created on first use from producer_config(name,
    **overrides): the events' one, and the outbox relay's (eventing.outbox), which tries longer."""
    with _lock:
        publisher = _publishers.get(name)
        if publisher is None:
            publisher = _publishers[name] = EventPublisher(producer_config(name, **overrides))
            atexit.register(publisher.close)
        return publisher


def reset_publisher(flush_timeout: float = 10) -> None:
    """Flush and drop the process-wide publishers (tests switch brokers and settings)."""
    with _lock:
        for publisher in _publishers.values():
            publisher.close(flush_timeout)
            atexit.unregister(publisher.close)
        _publishers.clear()
