"""Event schemas: the one place both producers and consumers import.

Every message value is an envelope::

    {"id": "<uuid>", "type": "order.placed", "version": 1,
     "occurred_at": "2026-11-24T18:00:00+00:00", "data": {...}}

`id` lets consumers de-duplicate, `type` + `version` select the payload class below.
Money travels as decimal strings (Avro: its decimal type), never floats. A change that removes or retypes a field
is a new version; adding an optional field is not.

What a field may hold is what both formats can carry, checked when decoding either: text
without NUL (PostgreSQL cannot store it) and valid Unicode, integers that fit Avro's long,
money with at most two decimal places and twelve digits (Avro's decimal(12, 2)), the event id
and order ids as UUIDs (handed on in their canonical form, lowercase), and `occurred_at` as
an aware time (one without an offset is UTC, as our producers write it), handed on in UTC.

The same envelope can travel as Avro instead of JSON (`encode(event, "avro")`, chosen per
deployment by settings.EVENT_FORMAT): the codec and the repo's .avsc files are in
contract.avro and contract/schemas/, which must follow the payload classes below (a test
compares them). The message's `content-type` header says which; none means JSON.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import types
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Union, get_args, get_origin, get_type_hints

from contract import avro

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_AVRO = avro.CONTENT_TYPE_AVRO
FORMATS = {"json": CONTENT_TYPE_JSON, "avro": CONTENT_TYPE_AVRO}  # settings.EVENT_FORMAT -> content type


# The topics events are published to (logical names: a deployment may prefix them). Each
# event is keyed by its order id, and these topics share one partition count, so that one
# order's events land on the same partition number everywhere.
ORDERS = "orders"
PAYMENTS = "payments"
DELIVERY_STATUS = "delivery-status"  # couriers' claimed / picked up / delivered
TOPICS = (ORDERS, PAYMENTS, DELIVERY_STATUS)


class InvalidEvent(ValueError):
    """A message that cannot be decoded into a known event (bad JSON, unknown type, bad field)."""


# A str field that holds a UUID: `order_id: OrderId`. The decoder checks it and hands on its
# canonical form, so that every consumer names an order the same way (a live page's stream,
# a row's id) whatever case or form its producer wrote.
UUID_TEXT = "uuid"
OrderId = Annotated[str, UUID_TEXT]

# What Avro's types in contract/schemas/ can carry: money is decimal(12, 2), integers long.
MONEY_PLACES = 2
MONEY_DIGITS = 12
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class OrderLine:
    dish_id: int
    name: str
    quantity: int
    unit_price: Decimal
    unit_cost: Decimal

    @property
    def price(self) -> Decimal:
        return self.unit_price * self.quantity

    @property
    def cost(self) -> Decimal:
        return self.unit_cost * self.quantity


@dataclass(frozen=True)
class OrderPlaced:
    TYPE: ClassVar[str] = "order.placed"
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = ORDERS

    order_id: OrderId
    customer_name: str
    address: str
    lines: list[OrderLine]
    total: Decimal
    # Optional, added in version 1: events produced before it decode with None.
    email: str | None = None

    @property
    def food_cost(self) -> Decimal:
        return sum((line.cost for line in self.lines), Decimal("0"))


@dataclass(frozen=True)
class PaymentSucceeded:
    TYPE: ClassVar[str] = "payment.succeeded"
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = PAYMENTS

    order_id: OrderId
    amount: Decimal
    card_last4: str


@dataclass(frozen=True)
class PaymentFailed:
    TYPE: ClassVar[str] = "payment.failed"
    VERSION: ClassVar[int] = 1
    TOPIC: ClassVar[str] = PAYMENTS

    order_id: OrderId
    amount: Decimal
    reason: str


@dataclass(frozen=True)
class _CourierStep:
    """A courier moved a delivery on; the subclasses say which step."""

    TOPIC: ClassVar[str] = DELIVERY_STATUS

    order_id: OrderId
    courier: str  # the courier's username


@dataclass(frozen=True)
class DeliveryClaimed(_CourierStep):
    """A courier took the delivery of a paid order."""

    TYPE: ClassVar[str] = "delivery.claimed"
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True)
class DeliveryPickedUp(_CourierStep):
    """The courier has the food: the order is out for delivery."""

    TYPE: ClassVar[str] = "delivery.picked_up"
    VERSION: ClassVar[int] = 1


@dataclass(frozen=True)
class DeliveryDelivered(_CourierStep):
    TYPE: ClassVar[str] = "delivery.delivered"
    VERSION: ClassVar[int] = 1


DeliveryStatusChanged = DeliveryClaimed | DeliveryPickedUp | DeliveryDelivered
Payload = OrderPlaced | PaymentSucceeded | PaymentFailed | DeliveryStatusChanged
PAYLOAD_TYPES: dict[tuple[str, int], type] = {
    (cls.TYPE, cls.VERSION): cls
    for cls in (OrderPlaced, PaymentSucceeded, PaymentFailed, DeliveryClaimed, DeliveryPickedUp, DeliveryDelivered)
}


@dataclass(frozen=True)
class Event:
    payload: Any
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    occurred_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def type(self) -> str:
        return self.payload.TYPE

    @property
    def version(self) -> int:
        return self.payload.VERSION

    @property
    def key(self) -> str:
        # Every event we publish is about one order: keying by it keeps an order's events
        # in order, and co-partitions orders with payments.
        return self.payload.order_id

    def to_json(self) -> bytes:
        envelope = {
            "id": self.id,
            "type": self.type,
            "version": self.version,
            "occurred_at": self.occurred_at.isoformat(),
            "data": _to_plain(_to_dicts(self.payload)),  # asdict's deep copies: a third of the time, for nothing
        }
        return json.dumps(envelope, separators=(",", ":")).encode()

    def to_avro(self) -> bytes:
        envelope = {
            "id": self.id,
            "type": self.type,
            "version": self.version,
            "occurred_at": self.occurred_at,
            "data": _to_dicts(self.payload),  # Decimals stay Decimals: Avro's decimal type
        }
        return avro.encode(self.type, self.version, envelope)


def encode(event: Event, fmt: str = "json") -> tuple[bytes, str]:
    """The message value and its content type in the format `fmt` ("json" or "avro")."""
    if fmt == "json":
        return event.to_json(), CONTENT_TYPE_JSON
    if fmt == "avro":
        return event.to_avro(), CONTENT_TYPE_AVRO
    raise ValueError(f"unknown event format {fmt!r}: expected one of {', '.join(FORMATS)}")


def decode(value: bytes | None, content_type: str | bytes | None = None) -> Event:
    """Parse a message value into an Event; raise InvalidEvent with the reason otherwise.

    `content_type` is the message's `content-type` header; without one the value is JSON
    (every event from before Avro, and producers that never set it)."""
    if value is None:
        raise InvalidEvent("empty message value")
    media_type = _media_type(content_type)
    if media_type == CONTENT_TYPE_AVRO:
        try:
            envelope = avro.decode(value)
        except avro.AvroError as exc:
            raise InvalidEvent(str(exc)) from exc
    elif media_type in ("", CONTENT_TYPE_JSON):
        envelope = _json_envelope(value)
    else:
        raise InvalidEvent(f"unknown content type {_shown(media_type)}")
    event_type, version = envelope["type"], envelope["version"]
    # Checked before the look-up: a list is unhashable, and True and 1.0 equal 1.
    if not isinstance(event_type, str) or isinstance(version, bool) or not isinstance(version, int):
        raise InvalidEvent(f"unknown event type {_shown(event_type)} version {_shown(version)}")
    payload_cls = PAYLOAD_TYPES.get((event_type, version))
    if payload_cls is None:
        raise InvalidEvent(f"unknown event type {_shown(event_type)} version {_shown(version)}")
    try:
        event_id = _uuid_text(envelope["id"])
    except _Bad as bad:
        raise InvalidEvent(f"id {bad.what}") from None
    return Event(
        payload=_from_plain(payload_cls, envelope["data"], "data"),
        id=event_id,
        occurred_at=_moment(envelope["occurred_at"]),
    )


def _moment(value: Any) -> datetime:
    """`occurred_at` as an aware time in UTC: Avro's timestamp type arrives as one already,
    JSON as ISO 8601 text, where a time without an offset is UTC."""
    if not isinstance(value, datetime):
        if not isinstance(value, str):
            raise InvalidEvent(f"bad occurred_at: {_shown(value)}")
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(f"bad occurred_at: {_shown(value)}") from None
    if value.tzinfo is UTC:  # what our producers write, and Avro's timestamp type gives
        return value
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00, before the first day in UTC
        raise InvalidEvent(f"bad occurred_at: {_shown(value.isoformat())} is out of range in UTC") from None


def _shown(value: Any, limit: int = 60) -> str:
    """A bad value as a reason shows it: its repr, cut short (a reason travels in a header)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _to_dicts(value: Any) -> Any:
    # dataclasses.asdict without its deep copies (half of Avro's encoding time otherwise).
    if isinstance(value, list):
        return [_to_dicts(item) for item in value]
    if dataclasses.is_dataclass(value):
        return {name: _to_dicts(getattr(value, name)) for name in _field_names(type(value))}
    return value


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


@functools.lru_cache(maxsize=64)  # a deployment has a handful of content types, every event one
def _media_type(content_type: str | bytes | None) -> str:
    """'application/json; charset=utf-8' -> 'application/json'; '' when there is none."""
    if isinstance(content_type, bytes):
        content_type = content_type.decode("latin-1")
    return (content_type or "").split(";", 1)[0].strip().lower()


def _json_envelope(value: bytes) -> dict:
    try:
        envelope = json.loads(value)
    except (ValueError, RecursionError) as exc:
        # ValueError: bad JSON, bad UTF-8, or an integer past Python's 4300 digits;
        # RecursionError: arrays or objects nested thousands deep.
        raise InvalidEvent(f"not JSON: {_shown(str(exc), 200)}") from exc
    if not isinstance(envelope, dict):
        raise InvalidEvent("envelope is not a JSON object")
    missing = {"id", "type", "version", "occurred_at", "data"} - envelope.keys()
    if missing:
        raise InvalidEvent(f"envelope misses {', '.join(sorted(missing))}")
    return envelope


def _to_plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=True)  # with OrderId's mark


def _from_plain(cls: type, data: Any, path: str) -> Any:
    """The payload dataclass from its plain form (JSON or Avro), checked field by field."""
    try:
        return _decoder(cls)(data)
    except _Bad as bad:
        raise InvalidEvent(f"{path}{bad.where} {bad.what}") from None


class _Bad(Exception):
    """Bad input below a payload: where (".lines[0].quantity") and what is wrong. The path is
    built only on the way out of a failure: every consumer decodes every event through here."""

    def __init__(self, where: str, what: str) -> None:
        self.where, self.what = where, what

    def under(self, parent: str) -> _Bad:
        self.where = parent + self.where
        return self


Coercer = Callable[[Any], Any]


@functools.cache
def _decoder(cls: type) -> Coercer:
    """A function from a plain dict to `cls`, built once per payload class from its type hints."""
    hints = _type_hints(cls)
    fields = [
        (
            f.name,
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING,
            _coercer(hints[f.name], f"{cls.__name__}.{f.name}"),
        )
        for f in dataclasses.fields(cls)
    ]

    build = _builder(cls)

    def decode_object(data: Any) -> Any:
        if not isinstance(data, dict):
            raise _Bad("", "is not an object")
        kwargs = {}
        for name, optional, coerce in fields:
            if name in data:
                try:
                    kwargs[name] = coerce(data[name])
                except _Bad as bad:
                    raise bad.under(f".{name}") from None
            elif not optional:  # an optional field added later has a default: older events lack it
                raise _Bad(f".{name}", "is missing")
        return build(kwargs)

    return decode_object


def _builder(cls: type) -> Callable[[dict], Any]:
    """cls(**kwargs) for checked values. A frozen dataclass's __init__ sets each field through
    object.__setattr__: 0.7 us an OrderLine, a fifth of decoding an order.placed. Filling its
    __dict__ (defaults first) makes the same object (equal, same hash) in a quarter of that;
    a class with a __post_init__ or a default_factory keeps its __init__."""
    all_fields = dataclasses.fields(cls)
    if hasattr(cls, "__post_init__") or any(f.default_factory is not dataclasses.MISSING for f in all_fields):
        return lambda kwargs: cls(**kwargs)
    defaults = {f.name: f.default for f in all_fields if f.default is not dataclasses.MISSING}
    new = object.__new__

    def build(kwargs: dict) -> Any:
        instance = new(cls)
        instance.__dict__.update(defaults)
        instance.__dict__.update(kwargs)
        return instance

    return build


def _coercer(hint: Any, where: str) -> Coercer:
    if get_origin(hint) is Annotated:
        base, *marks = get_args(hint)
        if base is str and marks == [UUID_TEXT]:
            return _uuid_text
        raise TypeError(f"unsupported field type {hint!r} at {where}")  # a schema bug
    if get_origin(hint) in (types.UnionType, Union):
        # Only `X | None` is supported: an optional field, null or an X.
        options = [arg for arg in get_args(hint) if arg is not type(None)]
        if len(options) != 1 or len(get_args(hint)) != 2:
            raise TypeError(f"unsupported field type {hint!r} at {where}")  # a schema bug
        inner = _coercer(options[0], where)
        return lambda value: None if value is None else inner(value)
    if hint is Decimal:
        return _decimal
    if hint is int:
        return _integer
    if hint is str:
        return _string
    if getattr(hint, "__origin__", None) is list:
        (item_hint,) = hint.__args__
        item = _coercer(item_hint, where)

        def items(value: Any) -> list:
            if not isinstance(value, list):
                raise _Bad("", "must be a list")
            out = []
            for i, element in enumerate(value):
                try:
                    out.append(item(element))
                except _Bad as bad:
                    raise bad.under(f"[{i}]") from None
            return out

        return items
    if dataclasses.is_dataclass(hint):
        return _decoder(hint)
    raise TypeError(f"unsupported field type {hint!r} at {where}")  # a schema bug, not bad input


# Money in JSON: plain ASCII decimal notation. Decimal() itself also takes spaces around,
# underscores between and non-ASCII digits ("١٢"), none of which any producer means as money.
_DECIMAL_TEXT = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?")
# What our producers write, decimal(12, 2) as it is: no check needed past this (every event,
# seven amounts for an order of three dishes).
_MONEY_TEXT = re.compile(r"-?[0-9]{1,10}(?:\.[0-9]{1,2})?")
_UUID_TEXT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_CANONICAL_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


_CENT = Decimal("0.01")
_MONEY_LIMIT = MONEY_DIGITS - MONEY_PLACES  # digits before the point: adjusted() below it


def _decimal(value: Any) -> Decimal:
    # The usual cases first, cheaply: JSON as our producers write it; Avro's decimal type.
    if type(value) is str and _MONEY_TEXT.fullmatch(value):
        return Decimal(value)
    if type(value) is Decimal and value.same_quantum(_CENT) and value.adjusted() < _MONEY_LIMIT:
        return value
    # A Decimal comes from Avro's decimal type; JSON gives a string (or int), never one.
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise _Bad("", "must be a decimal string")
    if isinstance(value, str) and not _DECIMAL_TEXT.fullmatch(value):
        raise _Bad("", f"is not a number: {_shown(value)}")
    try:
        number = Decimal(value)  # finite: neither the pattern nor Avro's decimal type has NaN or Infinity
    except InvalidOperation:
        raise _Bad("", f"is not a number: {_shown(value)}") from None
    # Avro's decimal(12, 2) in both formats: an amount one format takes and the other cannot
    # hold would fail only once a deployment switched.
    if number.as_tuple().exponent < -MONEY_PLACES:
        raise _Bad("", f"has more than {MONEY_PLACES} decimal places: {_shown(value)}")
    if number and number.adjusted() >= _MONEY_LIMIT:
        raise _Bad("", f"has more than {_MONEY_LIMIT} digits before the point: {_shown(value)}")
    return number


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Bad("", "must be an integer")
    if not LONG_MIN <= value <= LONG_MAX:
        raise _Bad("", "is out of range (a 64-bit integer)")
    return value


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise _Bad("", "must be a string")
    if "\x00" in value:
        raise _Bad("", "contains NUL")
    if not value.isascii():
        try:
            value.encode()
        except UnicodeEncodeError:  # a lone surrogate, from a JSON escape such as "\ud800"
            raise _Bad("", "is not valid Unicode") from None
    return value


def _uuid_text(value: Any) -> str:
    if type(value) is str and _CANONICAL_UUID_TEXT.fullmatch(value):
        return value
    if not isinstance(value, str) or not _UUID_TEXT.fullmatch(value):
        raise _Bad("", f"is not a uuid: {_shown(value)}")
    return value.lower()
