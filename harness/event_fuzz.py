"""Hypothesis strategies for events: valid ones of every type and version, and near-valid
JSON envelopes (fields removed, retyped, replaced, added; values JSON cannot even write).
The decoder's fuzz tests (tests/contract/test_fuzz_decode.py) and the dead-letter ones on
the real broker (tests/eventing/test_fuzz_dead_letters.py) draw from the same."""

from __future__ import annotations

import dataclasses
import io
import json
import types
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

from fastavro import schemaless_writer
from hypothesis import strategies as st

from contract import avro
from contract.events import PAYLOAD_TYPES, UUID_TEXT, Event

PAYLOADS = sorted(PAYLOAD_TYPES.values(), key=lambda cls: (cls.TYPE, cls.VERSION))
SCHEMAS = sorted(avro.schemas().by_fingerprint.values(), key=lambda s: s.name)  # current and historical

# -- valid events -----------------------------------------------------------------------------

# What the contract says a field may hold (and Avro's types can carry): text without NUL, an
# Avro long, money as decimal(12, 2), an order id and an event id as UUIDs.
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
longs = st.integers(min_value=-(2**63), max_value=2**63 - 1)
money = st.decimals(min_value=Decimal("-9999999999.99"), max_value=Decimal("9999999999.99"), places=2)
uuids = st.uuids().map(str)
# Any offset of whole minutes (ISO 8601's), not only UTC; years inside the range every offset
# can be converted to UTC in.
moments = st.datetimes(
    min_value=datetime(2, 1, 1),
    max_value=datetime(9998, 12, 31),
    timezones=st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes))),
)


def of_hint(hint: Any) -> st.SearchStrategy:
    if get_origin(hint) is Annotated:
        base, *marks = get_args(hint)
        return uuids if UUID_TEXT in marks else of_hint(base)
    if get_origin(hint) in (types.UnionType, Union):
        (inner,) = [arg for arg in get_args(hint) if arg is not type(None)]
        return st.none() | of_hint(inner)
    if get_origin(hint) is list:
        return st.lists(of_hint(get_args(hint)[0]), max_size=3)
    if dataclasses.is_dataclass(hint):
        return payloads_of(hint)
    return {str: texts, int: longs, Decimal: money}[hint]


def payloads_of(cls: type) -> st.SearchStrategy:
    hints = get_type_hints(cls, include_extras=True)
    return st.builds(cls, **{f.name: of_hint(hints[f.name]) for f in dataclasses.fields(cls)})


events = st.builds(Event, payload=st.sampled_from(PAYLOADS).flatmap(payloads_of), id=uuids, occurred_at=moments)


# -- near-valid JSON envelopes ----------------------------------------------------------------

RAW = "\x01raw:"  # a leaf written into the JSON text as it is: what json.dumps cannot write
raw_tokens = st.sampled_from(
    ["1" * 5000, "[" * 100_000, "-" + "9" * 400, "1e400", "NaN", "-Infinity", '"\\ud800"', '"\\u0000"']
)
near_strings = st.sampled_from(
    [
        # near uuids
        "5F0C1D9E-0000-4000-8000-000000000001",
        "5f0c1d9e000040008000000000000001",
        "{5f0c1d9e-0000-4000-8000-000000000001}",
        "urn:uuid:5f0c1d9e-0000-4000-8000-000000000001",
        "0x0c1d9e-0000-4000-8000-000000000001",
        "5f0c1d9e-0000-4000-8000-00000000000",
        " 5f0c1d9e-0000-4000-8000-000000000001",
        "o-1",
        # near dates
        "2026-11-24",
        "2026-11-24T18:00:00",
        "2026-13-24T18:00:00+00:00",
        "0001-01-01T00:00:00+14:00",
        "9999-12-31T23:59:59-14:00",
        "2026-11-24T18:00:00Z",
        # near decimals
        "1.001",
        "1.000",
        "1e999999999",
        "1e-999999999",
        "99999999999.99",
        " 1",
        "1_000",
        "١٢",
        "-0",
        "1E+2",
        "0E+20",
        "NaN",
        "sNaN",
        "Infinity",
        "",
        # near types
        *(f"{cls.TYPE}" for cls in PAYLOADS),
        "order.placed ",
        "ORDER.PLACED",
    ]
)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**63, -(2**63) - 1, 2**64, 0, 1, -1, 2**31])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | near_strings
    | raw_tokens.map(lambda token: RAW + token)
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


def paths_in(value: Any, here: tuple = ()) -> list[tuple]:
    """Every path to a value inside an envelope (the envelope itself excluded)."""
    found = []
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        found.append((*here, key))
        found.extend(paths_in(child, (*here, key)))
    return found


def mutate(envelope: dict, draw: st.DrawFn) -> dict:
    """One to three changes to an envelope: a value removed, replaced (any JSON, nested too),
    or a key or item added."""
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths_in(envelope)))
        *parents, leaf = path
        target = envelope
        for key in parents:
            target = target[key]
        change = draw(st.sampled_from(["remove", "replace", "add"]))
        if change == "remove":
            del target[leaf]
        elif change == "replace":
            target[leaf] = draw(json_values)
        elif isinstance(target, dict):
            target[draw(st.text(max_size=10))] = draw(json_values)
        else:
            target.append(draw(json_values))
        if not paths_in(envelope):
            break
    return envelope


def json_text(envelope: dict) -> bytes:
    """The envelope as JSON bytes, with each RAW leaf written as it is."""
    tokens: list[str] = []

    def placeholder(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(RAW):
            tokens.append(value.removeprefix(RAW))
            return f"{RAW}{len(tokens) - 1}"
        if isinstance(value, dict):
            return {k: placeholder(v) for k, v in value.items()}
        if isinstance(value, list):
            return [placeholder(v) for v in value]
        return value

    text = json.dumps(placeholder(envelope))
    for n, token in enumerate(tokens):
        text = text.replace(json.dumps(f"{RAW}{n}"), token, 1)
    return text.encode("utf-8", "surrogatepass")


def envelope_of(event: Event) -> dict:
    return json.loads(event.to_json())


@st.composite
def near_valid_envelopes(draw: st.DrawFn) -> bytes:
    """A valid event's JSON envelope with one to three of its fields removed, retyped or
    replaced, or extra ones added."""
    return json_text(mutate(envelope_of(draw(events)), draw))


# -- Avro ------------------------------------------------------------------------------------


def avro_of(event: Event, schema: avro.Schema) -> bytes:
    """The event written with `schema` (a current one, or a revision of history)."""
    envelope = {
        "id": event.id,
        "type": event.type,
        "version": event.version,
        "occurred_at": event.occurred_at,
        "data": dataclasses.asdict(event.payload),
    }
    out = io.BytesIO()
    out.write(avro.MARKER + schema.fingerprint)
    schemaless_writer(out, schema.parsed, envelope)
    return out.getvalue()


def schemas_of(event: Event) -> list[avro.Schema]:
    return [s for s in SCHEMAS if (s.event_type, s.version) == (event.type, event.version)]
