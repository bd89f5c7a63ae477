"""The event envelope and its validation: pure logic, no broker."""

import dataclasses
import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from contract.events import Event, InvalidEvent, OrderLine, OrderPlaced, PaymentSucceeded, decode

ORDER_ID = "5f0c1d9e-0000-4000-8000-000000000001"


def order_placed() -> Event:
    return Event(
        OrderPlaced(
            ORDER_ID,
            "Ada",
            "Via Roma 1",
            [OrderLine(1, "Pizza", 2, Decimal("8.50"), Decimal("2.40"))],
            Decimal("17.00"),
        )
    )


def test_an_event_round_trips_through_json_with_exact_money():
    event = order_placed()
    envelope = json.loads(event.to_json())
    assert envelope["type"] == "order.placed"
    assert envelope["version"] == 1
    assert envelope["data"]["total"] == "17.00"
    assert decode(event.to_json()) == event


def test_payment_is_keyed_by_its_order():
    assert Event(PaymentSucceeded(ORDER_ID, Decimal("1"), "4242")).key == ORDER_ID


def envelope_with(**changes) -> bytes:
    envelope = json.loads(order_placed().to_json())
    for path, value in changes.items():
        target = envelope
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[int(parent)] if isinstance(target, list) else target[parent]
        if value is ...:
            del target[leaf]
        else:
            target[leaf] = value
    return json.dumps(envelope).encode()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (None, "empty"),
        (envelope_with(type="order.eaten"), "unknown event type"),
        (envelope_with(version=99), "unknown event type"),
        (envelope_with(id=...), "envelope misses id"),
        (envelope_with(data__address=...), "data.address is missing"),
        (envelope_with(data__total=12.5), "data.total must be a decimal string"),
        (envelope_with(data__total="NaN"), "data.total is not a number: 'NaN'"),
        (envelope_with(data__lines__0__quantity="2"), "data.lines[0].quantity must be an integer"),
        (envelope_with(occurred_at="yesterday"), "bad occurred_at"),
        # What both formats can carry (Avro's types), so what JSON takes too.
        (envelope_with(type=["order.placed"]), "unknown event type"),
        (envelope_with(version=True), "unknown event type 'order.placed' version True"),
        (envelope_with(id="e-1"), "id is not a uuid: 'e-1'"),
        (envelope_with(data__order_id="o-1"), "data.order_id is not a uuid"),
        (envelope_with(data__total="17.001"), "data.total has more than 2 decimal places"),
        (envelope_with(data__total="1e12"), "data.total has more than 10 digits before the point"),
        (envelope_with(data__total="1_700"), "data.total is not a number"),
        (envelope_with(data__lines__0__quantity=2**63), "data.lines[0].quantity is out of range"),
        (envelope_with(data__address="Via\x00Roma"), "data.address contains NUL"),
        (envelope_with(occurred_at="0001-01-01T00:00:00+14:00"), "bad occurred_at: .* out of range in UTC"),
        (b"[" * 100_000, "not JSON"),
        (b"1" * 5000, "not JSON"),
    ],
    # Named by what they hold, not by their bytes: an id with a random event id would differ
    # between pytest-xdist's workers, which must collect the same tests.
    ids=lambda value: value if isinstance(value, str) else "value",
)
def test_malformed_events_are_refused_with_the_reason(value, reason):
    with pytest.raises(InvalidEvent, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode(value)


def test_ids_are_handed_on_in_their_canonical_form_and_times_in_utc():
    # Every consumer then names an order alike (a live page's stream, a row), and a time
    # without an offset is what our producers mean by it: UTC.
    event = decode(envelope_with(data__order_id=ORDER_ID.upper(), occurred_at="2026-11-24T18:00:00"))
    assert event.payload.order_id == ORDER_ID
    assert event.occurred_at == datetime(2026, 11, 24, 18, tzinfo=UTC)
    assert decode(envelope_with(occurred_at="2026-11-24T19:00:00+01:00")).occurred_at.tzinfo is UTC


def test_an_order_without_email_decodes_with_none_and_older_events_lacking_the_field_still_decode():
    assert decode(order_placed().to_json()).payload.email is None
    older = envelope_with(data__email=...)  # produced before the field existed
    assert "email" not in json.loads(older)["data"]
    assert decode(older).payload.email is None


def test_an_order_email_round_trips():
    event = Event(dataclasses.replace(order_placed().payload, email="ada@example.com"))
    assert json.loads(event.to_json())["data"]["email"] == "ada@example.com"
    assert decode(event.to_json()) == event


def test_an_optional_field_still_refuses_the_wrong_type():
    with pytest.raises(InvalidEvent, match=r"data\.email must be a string"):
        decode(envelope_with(data__email=42))


def test_a_decoded_payload_is_the_same_frozen_value_its_class_builds():
    """Decoding fills the dataclasses' __dict__ instead of calling their __init__ (for speed):
    the objects must be indistinguishable, defaults and frozenness included."""
    older = decode(envelope_with(data__email=...)).payload  # the optional field from its default
    lines = [OrderLine(**vars(line)) for line in older.lines]  # through the classes' __init__
    built = OrderPlaced(**{**vars(older), "lines": lines})
    assert vars(older) == vars(built)
    assert [vars(line) for line in older.lines] == [vars(line) for line in lines]
    assert hash(older.lines[0]) == hash(lines[0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        older.total = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        older.lines[0].quantity = 0
