"""What a consumer service is: a Projection, a small class that turns decoded events into rows.

A projection says which group it is, which topics it reads, which payload types it applies,
and writes a batch of them to the ORM in `apply`. Everything else (polling, batching, the
transaction with the offsets, retries, dead letters, shutdown) is the runner's
(eventing.runner). Register the class with `eventing.registry.register` in its app's
`projection.py` so that the system knows it (topics, the Kafka view, re-drive).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, NamedTuple

from confluent_kafka import KafkaException, Message
from django.db import InterfaceError, OperationalError

from contract.events import Event, InvalidEvent, decode
from eventing.headers import Header

__all__ = ["TRANSIENT_ERRORS", "ConsumedEvent", "InvalidEvent", "Projection", "TransientError", "decode_message"]


class TransientError(Exception):
    """Raised by a projection for a failure worth retrying (the batch is retried, not dead-lettered)."""


# Database busy or gone, broker unreachable: wait and retry the same batch.
TRANSIENT_ERRORS = (TransientError, OperationalError, InterfaceError, KafkaException)


class ConsumedEvent(NamedTuple):  # a tuple: created for every event, it must be cheap
    # Where the event was first published (logical topic name, e.g. "orders"), also for an
    # event re-driven to the group: projections see the same thing either way.
    topic: str
    partition: int
    offset: int
    event: Event
    traceparent: str = ""  # the request that caused it (eventing.tracing), "" if unknown

    @property
    def payload(self):
        return self.event.payload


class Projection(ABC):
    """A read model fed by one consumer group."""

    group: ClassVar[str]
    topics: ClassVar[tuple[str, ...]]
    handles: ClassVar[tuple[type, ...]]  # payload classes to apply; other valid events are skipped
    redrive: ClassVar[bool] = True  # also read `<group>.redrive`, where staff re-drive dead letters

    def decode(self, message: Message) -> Event:
        """The message as an event; InvalidEvent makes it a dead letter."""
        return decode_message(message)

    @abstractmethod
    def apply(self, events: list[ConsumedEvent]) -> None:
        """Write a batch to the database. Runs inside the runner's transaction."""

    @abstractmethod
    def reset(self) -> None:
        """Delete everything the projection wrote (before a replay). Runs in a transaction."""


def decode_message(message: Message) -> Event:
    """Decode a consumed message by its `content-type` header (JSON or Avro; none means JSON:
    every event from before Avro, and bare producers)."""
    content_type = None
    for key, value in message.headers() or ():  # a plain loop: this runs for every event
        if key == Header.CONTENT_TYPE:
            content_type = value
            break
    return decode(message.value(), content_type=content_type)
