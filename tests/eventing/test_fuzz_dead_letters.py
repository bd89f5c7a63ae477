"""Generated bad messages mixed with good ones on the real broker, consumed by the real shared
runner (eventing.runner.ConsumerRunner, run as kafka.drain runs it) of the real statistics
projection (stats.projection.SalesProjection), on the real database.

Keys, headers and values are generated: no key, a key that is not an order id, no
content-type, another one, the format's name in other case or with parameters, headers of
any name and value. Bad values: any bytes, near-valid envelopes (harness.event_fuzz), valid
events in the other format than their header says, truncated Avro. The properties: each bad
message ends on <topic>.dlq, once, with its key, value and headers and the dlq.* headers
saying why and where it was read; every good event is applied exactly once (the totals and
each dish's figures move by exactly the generated orders' amounts); the consumer reads to the
end of every partition, and nothing crashes or logs an error but the dead letters' own lines.

DLQ_MAX_SHARE=1 turns the broken-deploy guard off: a generated batch may be mostly bad, and
the guard would then stop the consumer by design (tests/eventing/test_runner_faults.py).
Each example is a broker round trip (a consumer joining its group, a drain): few examples,
each with up to sixty messages.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import pytest
from confluent_kafka import Producer
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from contract.events import (
    CONTENT_TYPE_AVRO,
    CONTENT_TYPE_JSON,
    Event,
    InvalidEvent,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
    PaymentSucceeded,
    decode,
    encode,
)
from eventing.headers import MACHINERY_PREFIXES, Header
from eventing.projection import ConsumedEvent, Projection
from eventing.topics import DEAD_LETTER_MAX_BYTES, ORDERS, PAYMENTS, group_name, topic_name
from harness.event_fuzz import avro_of, near_valid_envelopes, schemas_of
from harness.event_fuzz import events as any_events
from stats.models import DishSales, SalesTotals
from stats.projection import SalesProjection

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]

Headers = list[tuple[str, bytes | None]]

# -- what is produced -------------------------------------------------------------------------

MENU = [(1, "Margherita", Decimal("8.50"), Decimal("2.40")), (2, "Carbonara", Decimal("11.00"), Decimal("3.10"))]
MENU += [(3, "Tiramisù", Decimal("5.00"), Decimal("1.50"))]


@dataclass
class Message:
    topic: str  # logical
    key: bytes | None
    value: bytes | None
    headers: Headers
    bad: bool
    partition: int = -1  # where the broker put it (its delivery report)
    offset: int = -1


@dataclass
class Batch:
    messages: list[Message] = field(default_factory=list)
    paid: list[OrderPlaced] = field(default_factory=list)  # the orders a statistics page must count


def other_headers(draw: st.DrawFn) -> Headers:
    """Headers a producer may add: any name but content-type's (the decoder reads the first
    content-type; the runner must carry every header over to a dead letter as it was)."""
    # No NUL: librdkafka ends a header's name at the first. No dlq.* or redrive.*: those a
    # dead letter does not carry over (they are an earlier letter's or re-drive's).
    text = st.text(st.characters(exclude_characters="\x00"), max_size=12).filter(
        lambda name: name.lower().strip() != Header.CONTENT_TYPE and not name.startswith(MACHINERY_PREFIXES)
    )
    names = st.sampled_from([Header.TRACEPARENT, Header.EVENT_TYPE]) | text
    values = st.none() | st.binary(max_size=12) | st.just(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    return draw(st.lists(st.tuples(names, values), max_size=2))


def keys(order_id: str) -> st.SearchStrategy:
    # The runner does not need the key: partitioning does. None: librdkafka picks a partition.
    return st.sampled_from([order_id.encode(), None, b"not an order id"]) | st.binary(max_size=8)


def content_type_of(fmt: str, draw: st.DrawFn) -> Headers:
    if fmt == "json":
        names = st.sampled_from([None, CONTENT_TYPE_JSON, "application/json; charset=utf-8", "Application/JSON"])
    else:
        names = st.sampled_from([CONTENT_TYPE_AVRO, "APPLICATION/AVRO", "application/avro; v=1"])
    name = draw(names)
    return [] if name is None else [(Header.CONTENT_TYPE, name.encode())]


@st.composite
def good_orders(draw: st.DrawFn) -> tuple[list[Message], OrderPlaced | None]:
    """An order as a real customer's: placed, then paid (mostly), a failed payment first
    sometimes. Each event in JSON or Avro, with its content type named as a producer may."""
    # A new id every time, not drawn: the examples share the database, and Hypothesis draws
    # (and shrinks to) the same uuid again, an order the statistics counted already.
    order_id = str(uuid.uuid4())
    dishes = draw(st.lists(st.sampled_from(MENU), min_size=1, max_size=3, unique_by=lambda dish: dish[0]))
    lines = [OrderLine(d, name, draw(st.integers(1, 5)), price, cost) for d, name, price, cost in dishes]
    total = sum((line.price for line in lines), Decimal("0"))
    placed = OrderPlaced(order_id, "Ada", "Via Roma 1", lines, total)
    payloads = [placed]
    if draw(st.booleans()):
        payloads.append(PaymentFailed(order_id, total, "declined"))  # the statistics skip it
    paid = draw(st.booleans()) or draw(st.booleans())
    if paid:
        payloads.append(PaymentSucceeded(order_id, total, "4242"))
    messages = []
    for payload in payloads:
        fmt = draw(st.sampled_from(["json", "avro"]))
        value, _ = encode(Event(payload), fmt)
        headers = [*content_type_of(fmt, draw), *other_headers(draw)]
        messages.append(Message(payload.TOPIC, draw(keys(order_id)), value, headers, bad=False))
    return messages, placed if paid else None


def refused(value: bytes | None, headers: Headers) -> bool:
    """What the runner should dead-letter: what the decoder refuses (fuzzed by itself in
    tests/contract/test_fuzz_decode.py), with the header the runner reads, the first."""
    content_type = next((v for k, v in headers if k == Header.CONTENT_TYPE), None)
    try:
        decode(value, content_type)
    except InvalidEvent:
        return True
    return False


@st.composite
def bad_messages(draw: st.DrawFn) -> Message:
    kind = draw(st.sampled_from(["bytes", "near-valid", "other format", "truncated avro", "content type"]))
    headers: Headers = []
    if kind == "bytes":
        value = draw(st.none() | st.binary(max_size=60))
        headers = draw(st.sampled_from([[], [(Header.CONTENT_TYPE, CONTENT_TYPE_AVRO.encode())]]))
    elif kind == "near-valid":
        value = draw(near_valid_envelopes())
    elif kind == "other format":  # valid, but the header names the other format, or none
        event = draw(any_events)
        value, content_type = encode(event, draw(st.sampled_from(["json", "avro"])))
        other = CONTENT_TYPE_JSON if content_type == CONTENT_TYPE_AVRO else CONTENT_TYPE_AVRO
        headers = [] if content_type == CONTENT_TYPE_AVRO and draw(st.booleans()) else [(Header.CONTENT_TYPE, other)]
        headers = [(name, v.encode() if isinstance(v, str) else v) for name, v in headers]
    elif kind == "truncated avro":
        event = draw(any_events)
        written = avro_of(event, draw(st.sampled_from(schemas_of(event))))
        value = written[: draw(st.integers(0, len(written) - 1))]
        headers = [(Header.CONTENT_TYPE, CONTENT_TYPE_AVRO.encode())]
    else:
        value = encode(draw(any_events), "json")[0]
        headers = [(Header.CONTENT_TYPE, draw(st.sampled_from([b"text/plain", b"application/x-protobuf", b"\xff"])))]
    headers = [*headers, *other_headers(draw)]
    key = draw(st.none() | st.binary(max_size=16))
    return Message(draw(st.sampled_from([ORDERS, PAYMENTS])), key, value, headers, bad=True)


@st.composite
def batches(draw: st.DrawFn) -> Batch:
    batch = Batch()
    for messages, paid in draw(st.lists(good_orders(), min_size=1, max_size=8)):
        batch.messages.extend(messages)
        if paid is not None:
            batch.paid.append(paid)
    bad = draw(st.lists(bad_messages().filter(lambda m: refused(m.value, m.headers)), min_size=1, max_size=25))
    # Mixed in anywhere, so that a good event comes after a bad one in its partition, and
    # before: the consumer must go on past each.
    for message in bad:
        batch.messages.insert(draw(st.integers(0, len(batch.messages))), message)
    return batch


def produce(kafka, batch: Batch) -> None:
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "partitioner": "murmur2_random"})

    def delivered(error, report, message: Message) -> None:
        assert error is None, error
        message.partition, message.offset = report.partition(), report.offset()

    for message in batch.messages:
        producer.produce(
            topic_name(message.topic),
            key=message.key,
            value=message.value,
            headers=message.headers,
            on_delivery=lambda error, report, message=message: delivered(error, report, message),
        )
    assert producer.flush(30) == 0


# -- what the statistics count ----------------------------------------------------------------


def figures() -> tuple[tuple, dict[int, tuple]]:
    totals = SalesTotals.objects.filter(pk=1).values_list("orders", "revenue", "food_cost").first() or (0, 0, 0)
    rows = DishSales.objects.values_list("dish_id", "quantity", "revenue", "food_cost")
    dishes = {dish: (quantity, revenue, cost) for dish, quantity, revenue, cost in rows}
    return totals, dishes


def moved(before: tuple[tuple, dict], after: tuple[tuple, dict]) -> tuple[tuple, dict[int, tuple]]:
    (orders0, revenue0, cost0), dishes0 = before
    (orders1, revenue1, cost1), dishes1 = after
    dishes = {
        dish: tuple(a - b for a, b in zip(now, dishes0.get(dish, (0, 0, 0)), strict=True))
        for dish, now in dishes1.items()
    }
    return (orders1 - orders0, revenue1 - revenue0, cost1 - cost0), {d: f for d, f in dishes.items() if any(f)}


def expected_move(batch: Batch) -> tuple[tuple, dict[int, tuple]]:
    dishes: dict[int, tuple] = {}
    for order in batch.paid:
        for line in order.lines:
            q, r, c = dishes.get(line.dish_id, (0, Decimal("0"), Decimal("0")))
            dishes[line.dish_id] = (q + line.quantity, r + line.price, c + line.cost)
    revenue = sum((order.total for order in batch.paid), Decimal("0"))
    cost = sum((order.food_cost for order in batch.paid), Decimal("0"))
    return (len(batch.paid), revenue, cost), dishes


def dead_letters(kafka) -> dict[tuple[bytes, int, int], list]:
    """Every dead letter now on orders.dlq and payments.dlq, by where the group read it."""
    found: dict[tuple[bytes, int, int], list] = {}
    for topic in (ORDERS, PAYMENTS):
        for letter in kafka.read_topic(f"{topic}.dlq"):
            headers = dict(letter.headers())
            where = (headers[Header.DLQ_TOPIC], int(headers[Header.DLQ_PARTITION]), int(headers[Header.DLQ_OFFSET]))
            found.setdefault(where, []).append(letter)
    return found


def only_dead_letter_lines_at_error(caplog: pytest.LogCaptureFixture) -> None:
    trouble = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.exc_info
        or (r.levelno >= logging.ERROR and "dead-lettering" not in r.getMessage())
        or "transient error" in r.getMessage()
        or "STOPPED" in r.getMessage()
    ]
    caplog.clear()
    assert not trouble, trouble


# -- the properties ---------------------------------------------------------------------------


@given(batches())
@hypothesis_settings(max_examples=5)
def test_bad_messages_mixed_with_good_ones_end_in_the_dead_letter_topics_and_the_good_ones_count_once(
    kafka, settings, caplog, batch
):
    settings.DLQ_MAX_SHARE = 1  # a generated batch may be mostly bad: the guard would stop (see above)
    before = figures()
    produce(kafka, batch)

    kafka.drain(SalesProjection())  # reads every partition to its end, or fails

    assert moved(before, figures()) == expected_move(batch)
    letters = dead_letters(kafka)
    for message in batch.messages:
        where = (topic_name(message.topic).encode(), message.partition, message.offset)
        if not message.bad:
            assert where not in letters, f"a good event was dead-lettered: {letters[where][0].headers()}"
            continue
        found = letters.get(where, [])
        assert len(found) == 1, f"dead-lettered {len(found)} times: {message}"
        [letter] = found
        assert letter.topic() == topic_name(f"{message.topic}.dlq")
        assert (letter.key(), letter.value()) == (message.key, message.value)
        headers = letter.headers()
        assert headers[: len(message.headers)] == message.headers  # the event's own, as they were
        extra = dict(headers[len(message.headers) :])
        assert extra[Header.DLQ_ERROR]  # the reason
        assert extra[Header.DLQ_GROUP] == group_name("stats").encode()
        # First published where the group read it (not a re-drive), its first failure.
        origin = (
            extra[Header.DLQ_ORIGIN_TOPIC],
            int(extra[Header.DLQ_ORIGIN_PARTITION]),
            int(extra[Header.DLQ_ORIGIN_OFFSET]),
        )
        assert origin == where
        assert extra[Header.DLQ_ATTEMPT] == b"1"
    only_dead_letter_lines_at_error(caplog)


def test_an_event_as_large_as_the_broker_takes_is_dead_lettered_whole(kafka, settings, caplog):
    # 1,040,000 bytes, as a Java producer may send (max.request.size 1 MiB): with the dead
    # letter's headers it was more than the dead-letter topic took, the broker refused the
    # letter, and the consumer retried the batch every 30 s for ever.
    value = b"\xff" * 1_040_000
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers, "message.max.bytes": 1_048_576})
    producer.produce(topic_name(ORDERS), key=b"big", value=value)
    assert producer.flush(30) == 0

    stats = kafka.drain(SalesProjection(), timeout=60)

    assert stats.dead_lettered == 1
    [letter] = kafka.read_topic("orders.dlq")
    assert letter.value() == value
    assert len(letter.value()) + sum(len(k) + len(v or b"") for k, v in letter.headers()) < DEAD_LETTER_MAX_BYTES
    only_dead_letter_lines_at_error(caplog)


class Refusing(Projection):
    """Refuses every order with an error whose message is long and holds a lone surrogate."""

    group = "refusing"
    topics = (ORDERS,)
    handles = (OrderPlaced,)
    redrive = False  # not registered: no re-drive topic of its own

    def reset(self) -> None:
        pass

    def apply(self, events: list[ConsumedEvent]) -> None:
        raise ValueError("customer \ud800 " + "x" * 5000)


def test_a_reason_that_is_not_text_or_too_long_still_makes_a_dead_letter(kafka, settings, caplog):
    # (reason.encode() raised UnicodeEncodeError out of the runner: a crash, not a dead letter.)
    order_id = "5f0c1d9e-0000-4000-8000-000000000004"
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    value, _ = encode(Event(OrderPlaced(order_id, "Ada", "Via Roma 1", [], Decimal("0"))))
    producer.produce(topic_name(ORDERS), key=order_id.encode(), value=value)
    assert producer.flush(30) == 0

    stats = kafka.drain(Refusing())

    assert stats.dead_lettered == 1
    [letter] = kafka.read_topic("orders.dlq")
    reason = dict(letter.headers())[Header.DLQ_ERROR].decode()
    assert reason.startswith("ValueError: customer \\ud800 xxx")
    assert len(reason) <= 1000
    only_dead_letter_lines_at_error(caplog)
