"""The Kafka headers the machinery writes and reads: one name each, here.

Events carry `content-type` (how the value is encoded), `event-type` (to route without
decoding) and `traceparent` (eventing.tracing). A dead letter carries the event's own
headers plus the `dlq.*` ones (why, which group, where it was read and first published);
an event re-driven to a group carries the `redrive.*` ones (where it was first published).
"""

from __future__ import annotations


class Header:
    CONTENT_TYPE = "content-type"
    EVENT_TYPE = "event-type"
    TRACEPARENT = "traceparent"

    DLQ_ERROR = "dlq.error"
    DLQ_GROUP = "dlq.group"
    # Where the group read it (its re-drive topic, for a re-driven event): with the group,
    # what a dead letter's readers de-duplicate by.
    DLQ_TOPIC = "dlq.topic"
    DLQ_PARTITION = "dlq.partition"
    DLQ_OFFSET = "dlq.offset"
    # Where it was first published, and how many times this group has now failed on it.
    DLQ_ORIGIN_TOPIC = "dlq.origin.topic"
    DLQ_ORIGIN_PARTITION = "dlq.origin.partition"
    DLQ_ORIGIN_OFFSET = "dlq.origin.offset"
    DLQ_ATTEMPT = "dlq.attempt"

    REDRIVE_TOPIC = "redrive.topic"
    REDRIVE_PARTITION = "redrive.partition"
    REDRIVE_OFFSET = "redrive.offset"
    REDRIVE_ATTEMPT = "redrive.attempt"
    REDRIVE_DEAD_LETTER = "redrive.dead-letter"  # the DeadLetter row it was sent from


DLQ_PREFIX = "dlq."
REDRIVE_PREFIX = "redrive."
# Headers a dead letter or a re-drive added: not the event's own.
MACHINERY_PREFIXES = (DLQ_PREFIX, REDRIVE_PREFIX)


def event_headers(headers: list[tuple[str, bytes]] | None) -> list[tuple[str, bytes]]:
    """The event's own headers, without those of an earlier dead letter or re-drive."""
    return [(key, value) for key, value in headers or () if not key.startswith(MACHINERY_PREFIXES)]
