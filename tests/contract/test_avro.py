"""Avro events: the repo's schemas against the payload classes, round trips, bad bodies, and
the backward-compatibility check. Pure logic, no broker (see test_avro_kafka.py for that)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Union, get_args, get_origin, get_type_hints

import pytest
from fastavro import schemaless_writer

from contract import avro
from contract.events import (
    CONTENT_TYPE_AVRO,
    CONTENT_TYPE_JSON,
    PAYLOAD_TYPES,
    DeliveryClaimed,
    DeliveryDelivered,
    DeliveryPickedUp,
    Event,
    InvalidEvent,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
    PaymentSucceeded,
    decode,
    encode,
)

BASE_DIR = Path(__file__).resolve().parents[2]
ORDER_ID = "5f0c1d9e-0000-4000-8000-000000000002"
MONEY = {"type": "bytes", "logicalType": "decimal", "precision": 12, "scale": 2}

EXAMPLES = [
    OrderPlaced(
        "5f0c1d9e-0000-4000-8000-000000000001",
        "Ada",
        "Via Roma 1",
        [
            OrderLine(1, "Pizza", 2, Decimal("8.50"), Decimal("2.40")),
            OrderLine(7, "Tiramisù", 1, Decimal("5"), Decimal("1.05")),
        ],
        Decimal("22.00"),
    ),
    PaymentSucceeded(ORDER_ID, Decimal("22.00"), "4242"),
    PaymentFailed(ORDER_ID, Decimal("22.00"), "card declined"),
    DeliveryClaimed(ORDER_ID, "courier"),
    DeliveryPickedUp(ORDER_ID, "courier"),
    DeliveryDelivered(ORDER_ID, "courier"),
]
if "email" in {f.name for f in dataclasses.fields(OrderPlaced)}:
    EXAMPLES.append(dataclasses.replace(EXAMPLES[0], email="ada@example.com"))


def raw(path: Path) -> dict:
    return json.loads(path.read_text())


# -- the schema files follow events.py --------------------------------------------------


def expected_avro_type(hint) -> object:
    """The Avro type our conventions give a payload field's Python type."""
    if get_origin(hint) in (types.UnionType, Union):
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        return ["null", expected_avro_type(inner)]
    if get_origin(hint) is list:
        return {"type": "array", "items": expected_record(get_args(hint)[0])}
    if dataclasses.is_dataclass(hint):
        return expected_record(hint)
    return {str: "string", int: "long", Decimal: MONEY}[hint]


def expected_record(cls: type) -> dict:
    hints = get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        field = {"name": f.name, "type": expected_avro_type(hints[f.name])}
        if f.default is not dataclasses.MISSING:
            field["default"] = f.default
        fields.append(field)
    return {"type": "record", "name": cls.__name__, "fields": fields}


def without_docs(schema: object) -> object:
    if isinstance(schema, dict):
        return {k: without_docs(v) for k, v in schema.items() if k not in {"doc", "namespace"}}
    if isinstance(schema, list):
        return [without_docs(v) for v in schema]
    return schema


@pytest.mark.parametrize("payload_cls", PAYLOAD_TYPES.values(), ids=lambda cls: cls.__name__)
def test_every_payload_class_has_a_schema_with_exactly_its_fields(payload_cls):
    path = avro.SCHEMA_DIR / f"{payload_cls.TYPE}.v{payload_cls.VERSION}.avsc"
    assert path.exists(), f"{payload_cls.__name__} has no Avro schema: add {path.name}"
    schema = without_docs(raw(path))
    assert [(f["name"], f["type"]) for f in schema["fields"][:4]] == [
        ("id", "string"),
        ("type", "string"),
        ("version", "int"),
        ("occurred_at", {"type": "long", "logicalType": "timestamp-micros"}),
    ]
    [data] = schema["fields"][4:]
    assert data["name"] == "data"
    assert data["type"] == expected_record(payload_cls)


def test_every_schema_file_belongs_to_a_payload_class():
    known = {f"{t}.v{v}" for t, v in PAYLOAD_TYPES}
    current = {s.name for s in avro.schemas().current.values()}
    assert current == known
    for revisions in avro.schemas().history.values():
        for schema in revisions:
            assert f"{schema.event_type}.v{schema.version}" in known, schema.path


def test_the_order_schema_is_the_seeds_order_record_extended():
    # The seed: Order {orderId, price, qty, buyer, seller}. Ours carries the same facts per line.
    data = raw(avro.SCHEMA_DIR / "order.placed.v1.avsc")["fields"][4]["type"]
    fields = {f["name"]: f for f in data["fields"]}
    assert {"order_id", "total", "customer_name", "lines"} <= fields.keys()
    line = {f["name"] for f in fields["lines"]["type"]["items"]["fields"]}
    assert {"quantity", "unit_price"} <= line
    assert fields["email"]["type"] == ["null", "string"]
    assert fields["email"]["default"] is None


# -- encoding and decoding ---------------------------------------------------------------


@pytest.mark.parametrize("payload", EXAMPLES, ids=lambda p: type(p).__name__)
def test_every_event_round_trips_through_avro_and_json(payload):
    event = Event(payload, occurred_at=datetime(2026, 11, 25, 10, 30, 1, 123456, tzinfo=UTC))

    value, content_type = encode(event, "avro")
    assert content_type == CONTENT_TYPE_AVRO
    current = avro.schemas().current[(event.type, event.version)]
    assert value[:10] == avro.MARKER + current.fingerprint  # single-object encoding
    assert decode(value, content_type) == event

    value, content_type = encode(event, "json")
    assert content_type == CONTENT_TYPE_JSON
    assert value == event.to_json()
    assert decode(value, content_type) == event
    assert decode(value) == event  # no header: JSON


def test_money_keeps_its_cents_in_avro():
    event = Event(PaymentSucceeded(ORDER_ID, Decimal("0.10"), "4242"))
    assert decode(*encode(event, "avro")).payload.amount == Decimal("0.10")


def test_a_price_with_more_than_two_decimals_is_refused_when_encoding():
    with pytest.raises(ValueError, match="Scale"):
        encode(Event(PaymentSucceeded(ORDER_ID, Decimal("0.105"), "4242")), "avro")


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="unknown event format 'xml'"):
        encode(Event(DeliveryClaimed(ORDER_ID, "c")), "xml")


def test_content_type_parameters_and_bytes_headers_are_understood():
    event = Event(DeliveryClaimed(ORDER_ID, "c"))
    assert decode(event.to_json(), b"application/json; charset=utf-8") == event
    assert decode(event.to_avro(), b"Application/Avro") == event


def old_order_bytes(fields_to_write: dict) -> bytes:
    """An order.placed written with the first published revision of its schema (no email)."""
    [first, *_] = avro.schemas().history[("order.placed", 1)]
    out = io.BytesIO()
    out.write(avro.MARKER + first.fingerprint)
    schemaless_writer(out, first.parsed, fields_to_write)
    return out.getvalue()


def test_an_order_written_with_the_earlier_schema_decodes_with_no_email():
    value = old_order_bytes(
        {
            "id": "0b9f6c1e-3c5a-4d0e-9a57-2f1f0c8d6e11",
            "type": "order.placed",
            "version": 1,
            "occurred_at": datetime(2026, 11, 24, 18, 0, tzinfo=UTC),
            "data": {
                "order_id": ORDER_ID,
                "customer_name": "Ada",
                "address": "Via Roma 1",
                "lines": [
                    {
                        "dish_id": 3,
                        "name": "Pizza",
                        "quantity": 2,
                        "unit_price": Decimal("8.50"),
                        "unit_cost": Decimal("2"),
                    }
                ],
                "total": Decimal("17.00"),
            },
        }
    )

    event = decode(value, CONTENT_TYPE_AVRO)

    assert event.id == "0b9f6c1e-3c5a-4d0e-9a57-2f1f0c8d6e11"
    assert event.payload.order_id == ORDER_ID
    assert event.payload.lines == [OrderLine(3, "Pizza", 2, Decimal("8.50"), Decimal("2.00"))]
    assert event.payload.total == Decimal("17.00")
    assert getattr(event.payload, "email", None) is None


GOOD = Event(PaymentSucceeded(ORDER_ID, Decimal("9.99"), "4242")).to_avro()


@pytest.mark.parametrize(
    ("value", "content_type", "reason"),
    [
        (GOOD, "text/plain", "unknown content type 'text/plain'"),
        (GOOD, "application/x-protobuf", "unknown content type"),
        (Event(DeliveryClaimed(ORDER_ID, "c")).to_json(), CONTENT_TYPE_AVRO, "not Avro single-object encoding"),
        (GOOD, None, "not JSON"),  # Avro bytes without their header
        (b"\xc3\x01", CONTENT_TYPE_AVRO, "not Avro single-object encoding"),
        (b"\xc3\x01" + b"\x00" * 8 + b"\x02x", CONTENT_TYPE_AVRO, "unknown Avro schema fingerprint 0000000000000000"),
        (GOOD[:-3], CONTENT_TYPE_AVRO, "bad Avro body for payment.succeeded.v1"),
        (GOOD + b"\x00", CONTENT_TYPE_AVRO, "1 trailing bytes"),
        (GOOD[:10] + b"\xff" * 20, CONTENT_TYPE_AVRO, "bad Avro body"),
        (None, CONTENT_TYPE_AVRO, "empty message value"),
    ],
    # Named by what they hold, not by their bytes: an id with a random event id would differ
    # between pytest-xdist's workers, which must collect the same tests.
    ids=lambda value: value if isinstance(value, str) else "value",
)
def test_bad_avro_messages_are_refused_with_the_reason(value, content_type, reason):
    with pytest.raises(InvalidEvent, match=reason):
        decode(value, content_type)


def test_an_envelope_claiming_another_type_than_its_schema_is_refused():
    schema = avro.schemas().current[("payment.succeeded", 1)]
    out = io.BytesIO()
    out.write(avro.MARKER + schema.fingerprint)
    envelope = {"id": "e", "type": "payment.failed", "version": 1, "occurred_at": datetime.now(UTC)}
    schemaless_writer(
        out, schema.parsed, {**envelope, "data": {"order_id": "o", "amount": Decimal(1), "card_last4": "1"}}
    )
    with pytest.raises(InvalidEvent, match=r"envelope says payment\.failed v1 but was written with payment\.succeeded"):
        decode(out.getvalue(), CONTENT_TYPE_AVRO)


def test_a_deployment_with_an_unknown_event_format_refuses_to_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        env={**os.environ, "EVENT_FORMAT": "xml", "FOODSITE_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "EVENT_FORMAT must be json or avro, not 'xml'" in result.stderr


# -- backward compatibility ---------------------------------------------------------------


def history_pairs() -> list[tuple[Path, Path]]:
    known = avro.schemas()
    return [
        (known.current[key].path, old.path)
        for key, revisions in sorted(known.history.items())
        for old in revisions
        if key in known.current
    ]


def test_there_is_a_schema_history_to_check():
    assert history_pairs(), "no earlier schema revisions: the compatibility test below would check nothing"


@pytest.mark.parametrize(("current", "earlier"), history_pairs(), ids=lambda p: p.name)
def test_every_current_schema_reads_data_written_with_every_earlier_revision(current, earlier):
    assert avro.check_backward_compatible(reader=raw(current), writer=raw(earlier)) == []


def order_schema_with(change) -> dict:
    schema = raw(avro.SCHEMA_DIR / "order.placed.v1.avsc")
    change(schema["fields"][4]["type"]["fields"])
    return schema


def test_the_check_accepts_a_new_optional_field_with_a_default():
    current = raw(avro.SCHEMA_DIR / "order.placed.v1.avsc")
    changed = order_schema_with(
        lambda fields: fields.append({"name": "notes", "type": ["null", "string"], "default": None})
    )
    assert avro.check_backward_compatible(reader=changed, writer=current) == []


def test_the_check_catches_a_new_field_without_a_default():
    current = raw(avro.SCHEMA_DIR / "order.placed.v1.avsc")
    changed = order_schema_with(lambda fields: fields.append({"name": "seller", "type": "string"}))
    problems = avro.check_backward_compatible(reader=changed, writer=current)
    assert problems
    assert "No default value for field seller" in problems[0]


def test_the_check_catches_a_changed_type():
    current = raw(avro.SCHEMA_DIR / "order.placed.v1.avsc")

    def total_as_double(fields: list) -> None:
        next(f for f in fields if f["name"] == "total")["type"] = "double"

    problems = avro.check_backward_compatible(reader=order_schema_with(total_as_double), writer=current)
    assert problems
    assert "Schema mismatch" in problems[0]


def test_the_check_catches_a_removed_union_branch():
    # Only data that takes the removed branch shows it: the check writes a sample per branch.
    current = raw(avro.SCHEMA_DIR / "order.placed.v1.avsc")

    def email_required(fields: list) -> None:
        email = next(f for f in fields if f["name"] == "email")
        email["type"], email["default"] = "string", ""

    assert avro.check_backward_compatible(reader=order_schema_with(email_required), writer=current)


# -- a schema registry's framing (00 | id | body) ----------------------------------------


@pytest.fixture
def registry_lookup() -> Iterator[dict[int, str | None]]:
    """A lookup answering from a dict (id -> schema text), counting its calls under "calls"."""
    answers: dict = {"calls": 0}

    def lookup(schema_id: int) -> str | None:
        answers["calls"] += 1
        return answers.get(schema_id)

    avro.configure_registry(lookup)
    yield answers
    avro.configure_registry(None)


def test_a_registry_framed_event_decodes_as_its_single_object_twin_asking_once_per_id(registry_lookup):
    event = Event(OrderPlaced(ORDER_ID, "Ada", "Via Roma 1", [], Decimal("0.00"), email="a@example.com"))
    single = event.to_avro()
    registry_lookup[41] = avro.schemas().current[("order.placed", 1)].path.read_text()
    framed = avro.registry_framed(41, single)
    assert framed[:5] == b"\x00\x00\x00\x00\x29"
    assert framed[5:] == single[10:]
    assert decode(framed, CONTENT_TYPE_AVRO) == decode(single, CONTENT_TYPE_AVRO) == event
    assert decode(framed, CONTENT_TYPE_AVRO) == event
    assert registry_lookup["calls"] == 1


def test_a_registry_id_unknown_or_naming_a_schema_not_in_the_repo_is_a_bad_event(registry_lookup):
    body = Event(DeliveryClaimed(ORDER_ID, "c")).to_avro()
    with pytest.raises(InvalidEvent, match="schema id 7 unknown to the schema registry"):
        decode(avro.registry_framed(7, body), CONTENT_TYPE_AVRO)
    registry_lookup[8] = json.dumps({"type": "record", "name": "Stranger", "fields": []})
    with pytest.raises(InvalidEvent, match="schema id 8 is not one of this code's schemas"):
        decode(avro.registry_framed(8, body), CONTENT_TYPE_AVRO)


def test_registry_framing_without_a_registry_configured_is_a_bad_event_that_says_so():
    body = Event(DeliveryClaimed(ORDER_ID, "c")).to_avro()
    with pytest.raises(InvalidEvent, match="no schema registry configured"):
        decode(avro.registry_framed(3, body), CONTENT_TYPE_AVRO)
