"""Avro encoding of event envelopes, with the schemas kept in the repo (contract/schemas/).

`contract.events` stays the one place producers and consumers import; it uses this module
for the `application/avro` content type. Each event type and version has a schema file
`schemas/<type>.v<version>.avsc`: an envelope record {id, type, version, occurred_at, data}
whose `data` is the payload record. Every revision of a schema published before the
current one is kept, never edited, in `schemas/history/<type>.v<version>.r<N>.avsc`.

Wire format: Avro's single-object encoding (Avro specification, "Single object encoding"):

    C3 01 | CRC-64-AVRO fingerprint of the writer's schema (8 bytes) | Avro binary body

The fingerprint names the exact schema the producer wrote with, so a message is readable
without a schema registry and without its headers (e.g. from a dead-letter topic): the
reader finds the writer's schema among the repo's current and historical schemas and
resolves it to its own current schema of that type and version (Avro schema resolution:
a field the writer did not know gets the reader's default).

Where a schema registry is in the path, producers write its wire format instead (the one
every Confluent-compatible reader knows; Apicurio cannot look a schema up by fingerprint):

    00 | the registry's schema id (4 bytes, big-endian) | Avro binary body

The first byte tells the two framings apart, so both travel as `application/avro` and a
topic can move from one to the other. To read the second, the process configures a
`SchemaLookup` (`configure_registry`, done by `eventing.schema_registry`): the writer's
schema text for an id, asked once per id; the reader takes the fingerprint of that text and
goes on as above, so a schema the repo does not hold is refused the same way.

Money is Avro's `decimal` logical type (bytes, precision 12, scale 2): a typed exact number
for every Avro reader (Java gets a BigDecimal), where JSON carries a decimal string. This
reader turns a decimal's bytes into a Decimal itself, after checking that they are no more
than its precision needs: fastavro's own conversion takes time quadratic in their length (a
decimal of 100 kB, which a 1 MB message can hold, took 2.2 s to decode, and one of 1 MB had
not finished after 2 minutes: a consumer stalled on one message).
"""

from __future__ import annotations

import functools
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException, fingerprint, parse_schema, to_parsing_canonical_form

CONTENT_TYPE_AVRO = "application/avro"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
MARKER = b"\xc3\x01"  # single-object encoding, format version 1
_HEADER_SIZE = len(MARKER) + 8
REGISTRY_MAGIC = b"\x00"  # a schema registry's wire format (Confluent's), then a 4-byte id
_REGISTRY_HEADER_SIZE = len(REGISTRY_MAGIC) + 4
_FILE_NAME = re.compile(r"^(?P<type>[a-z][a-z_.]*)\.v(?P<version>\d+)(?:\.r(?P<revision>\d+))?\.avsc$")


class AvroError(ValueError):
    """A value that is not a decodable Avro event (the caller turns it into InvalidEvent)."""


# The writer's schema text for a registry schema id, None when the registry knows no such id.
# It raises what it likes when the registry cannot be asked: decode lets that through, for
# the caller to retry rather than call the event bad.
SchemaLookup = Callable[[int], str | None]
_registry_lookup: SchemaLookup | None = None
_by_registry_id: dict[int, Schema] = {}


def configure_registry(lookup: SchemaLookup | None) -> None:
    """How registry-framed messages find their writer's schema (None: they are refused)."""
    global _registry_lookup
    _registry_lookup = lookup
    _by_registry_id.clear()


@dataclass(frozen=True)
class Schema:
    event_type: str
    version: int
    revision: int | None  # None: the current schema; N: schemas/history/...rN.avsc
    path: Path
    parsed: dict
    fingerprint: bytes  # CRC-64-AVRO of the Parsing Canonical Form, as the wire carries it
    # What decode reads with: the schema with its decimals as plain bytes, and what then turns
    # those into Decimals (None: it has none).
    read_as: dict
    decimals: Callable[[Any], Any] | None

    @property
    def name(self) -> str:
        """e.g. order.placed.v1 (current) or order.placed.v1.r1 (a historical revision)."""
        base = f"{self.event_type}.v{self.version}"
        return base if self.revision is None else f"{base}.r{self.revision}"


def load_schema(path: Path) -> Schema:
    match = _FILE_NAME.match(path.name)
    if match is None:
        raise ValueError(f"{path}: schema files are named <type>.v<version>[.r<revision>].avsc")
    raw = json.loads(path.read_text())
    parsed = parse_schema(raw)
    revision = match["revision"]
    return Schema(
        event_type=match["type"],
        version=int(match["version"]),
        revision=None if revision is None else int(revision),
        path=path,
        parsed=parsed,
        fingerprint=schema_fingerprint(parsed),
        read_as=parse_schema(_decimals_as_bytes(raw)),
        decimals=_decimal_reader(raw, {}),
    )


def _decimals_as_bytes(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_decimals_as_bytes(s) for s in schema]
    if isinstance(schema, dict):
        if schema.get("logicalType") == "decimal" and schema.get("type") == "bytes":
            return "bytes"
        return {key: _decimals_as_bytes(value) for key, value in schema.items()}
    return schema


def _decimal_reader(schema: Any, named: dict[str, Any]) -> Callable[[Any], Any] | None:
    """What turns a datum of `schema`, read with its decimals as bytes, into one with Decimals
    in their place (in place, for records); None when the schema holds no decimal."""
    if isinstance(schema, str):
        return _decimal_reader(named[schema], named) if schema in named else None
    if isinstance(schema, list):
        if any(_decimal_reader(branch, dict(named)) for branch in schema):
            raise TypeError(f"a decimal inside a union is not supported: {schema}")  # a schema bug
        return None
    kind = schema["type"]
    if schema.get("logicalType") == "decimal" and kind == "bytes":
        return functools.partial(_decimal, precision=schema["precision"], scale=schema.get("scale", 0))
    if kind == "record":
        named[schema["name"]] = schema
        fields = [(f["name"], _decimal_reader(f["type"], named)) for f in schema["fields"]]
        converted = [(name, reader) for name, reader in fields if reader is not None]
        if not converted:
            return None

        def record(datum: dict) -> dict:
            for name, reader in converted:
                datum[name] = reader(datum[name])
            return datum

        return record
    if kind == "array":
        item = _decimal_reader(schema["items"], named)
        return None if item is None else lambda datum: [item(element) for element in datum]
    if isinstance(kind, (dict, list)):  # {"type": {"type": "record", ...}}
        return _decimal_reader(kind, named)
    return None


def _decimal(raw: bytes, precision: int, scale: int) -> Decimal:
    # The two's-complement bytes of the unscaled number (Avro's decimal), no more than a
    # number of `precision` digits needs (writers write the fewest: fastavro, Java's
    # BigDecimal.unscaledValue().toByteArray()).
    if len(raw) > _bytes_for(precision):
        raise AvroError(f"a decimal of {len(raw)} bytes, more than decimal({precision}, {scale}) needs")
    return Decimal(int.from_bytes(raw, "big", signed=True)).scaleb(-scale)


@functools.cache
def _bytes_for(precision: int) -> int:
    return ((10**precision - 1).bit_length() + 1 + 7) // 8  # and the sign bit


def schema_fingerprint(parsed: dict) -> bytes:
    # fastavro's hex string is already the 8 little-endian bytes the specification puts on the wire.
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


@dataclass(frozen=True)
class SchemaSet:
    current: dict[tuple[str, int], Schema]  # (event type, version) -> schema producers write
    history: dict[tuple[str, int], list[Schema]]  # earlier revisions, oldest first
    by_fingerprint: dict[bytes, Schema]  # every schema a message may have been written with


def load_schemas(directory: Path = SCHEMA_DIR) -> SchemaSet:
    current = {}
    for path in sorted(directory.glob("*.avsc")):
        schema = load_schema(path)
        if schema.revision is not None:
            raise ValueError(f"{path}: revisions belong in {directory / 'history'}")
        current[(schema.event_type, schema.version)] = schema
    history: dict[tuple[str, int], list[Schema]] = {}
    for path in sorted((directory / "history").glob("*.avsc")):
        schema = load_schema(path)
        if schema.revision is None:
            raise ValueError(f"{path}: a historical schema needs its revision (.r<N>.avsc)")
        history.setdefault((schema.event_type, schema.version), []).append(schema)
    for revisions in history.values():
        revisions.sort(key=lambda s: s.revision)
    by_fingerprint: dict[bytes, Schema] = {}
    for schema in [*current.values(), *(s for revisions in history.values() for s in revisions)]:
        # Parsing Canonical Form drops docs and defaults: two files differing only there
        # share a fingerprint. Keep the current one (it is the reader's schema anyway).
        by_fingerprint.setdefault(schema.fingerprint, schema)
    return SchemaSet(current, history, by_fingerprint)


@functools.cache
def schemas() -> SchemaSet:
    """The repo's schemas, loaded once per process."""
    return load_schemas()


def encode(event_type: str, version: int, envelope: dict) -> bytes:
    """Encode an envelope (Decimal for money, datetime for occurred_at) with the current
    schema of its type and version. A value the schema cannot hold (e.g. a third decimal
    place in a price) is a ValueError: a bug in the producer, not bad input."""
    schema = schemas().current.get((event_type, version))
    if schema is None:
        raise ValueError(f"no Avro schema for {event_type} v{version} in {SCHEMA_DIR}")
    out = io.BytesIO()
    out.write(MARKER)
    out.write(schema.fingerprint)
    schemaless_writer(out, schema.parsed, envelope)
    return out.getvalue()


def decode(value: bytes) -> dict:
    """Decode an envelope, single-object encoded or registry-framed, into the reader's current
    schema; AvroError with the reason when it cannot be."""
    known = schemas()
    if value.startswith(MARKER) and len(value) >= _HEADER_SIZE:
        writer = known.by_fingerprint.get(value[2:_HEADER_SIZE])
        if writer is None:
            raise AvroError(f"unknown Avro schema fingerprint {value[2:_HEADER_SIZE].hex()}")
        start = _HEADER_SIZE
    elif value.startswith(REGISTRY_MAGIC) and len(value) >= _REGISTRY_HEADER_SIZE:
        writer = _registry_writer(int.from_bytes(value[1:_REGISTRY_HEADER_SIZE], "big"), known)
        start = _REGISTRY_HEADER_SIZE
    else:
        raise AvroError("not Avro single-object encoding (C3 01 and a fingerprint) nor a registry's (00 and an id)")
    reader = known.current.get((writer.event_type, writer.version))
    if reader is None:
        raise AvroError(f"no current schema for {writer.event_type} v{writer.version}")
    body = io.BytesIO(value)
    body.seek(start)
    try:
        envelope = schemaless_reader(body, writer.read_as, None if reader is writer else reader.read_as)
    except (EOFError, ValueError, TypeError, IndexError, OverflowError, MemoryError, SchemaResolutionError) as exc:
        # fastavro reports a truncated or garbled body in many ways (EOF, bad UTF-8, a
        # length or union index out of range...): all mean the same to a consumer.
        raise AvroError(f"bad Avro body for {writer.name}: {type(exc).__name__}: {exc}") from exc
    if body.tell() != len(value):
        raise AvroError(f"bad Avro body for {writer.name}: {len(value) - body.tell()} trailing bytes")
    if reader.decimals is not None:
        try:
            envelope = reader.decimals(envelope)
        except AvroError as exc:
            raise AvroError(f"bad Avro body for {writer.name}: {exc}") from None
    if (envelope["type"], envelope["version"]) != (writer.event_type, writer.version):
        raise AvroError(
            f"envelope says {envelope['type']} v{envelope['version']} but was written with {writer.name}'s schema"
        )
    return envelope


def _registry_writer(schema_id: int, known: SchemaSet) -> Schema:
    writer = _by_registry_id.get(schema_id)
    if writer is not None:
        return writer
    if _registry_lookup is None:
        raise AvroError(f"registry-framed Avro (schema id {schema_id}) and no schema registry configured")
    text = _registry_lookup(schema_id)  # may raise: the registry unreachable is not a bad event
    if text is None:
        raise AvroError(f"schema id {schema_id} unknown to the schema registry")
    try:
        fingerprint_ = schema_fingerprint(parse_schema(json.loads(text)))
    except (ValueError, TypeError, KeyError, SchemaParseException) as exc:
        raise AvroError(f"schema id {schema_id}: the registry's schema does not parse: {exc}") from exc
    writer = known.by_fingerprint.get(fingerprint_)
    if writer is None:
        raise AvroError(f"schema id {schema_id} is not one of this code's schemas (fingerprint {fingerprint_.hex()})")
    _by_registry_id[schema_id] = writer
    return writer


def registry_framed(schema_id: int, single_object: bytes) -> bytes:
    """The same event in a registry's framing: its id in place of the marker and fingerprint."""
    return REGISTRY_MAGIC + schema_id.to_bytes(4, "big") + single_object[_HEADER_SIZE:]


# -- backward compatibility -------------------------------------------------------------


def check_backward_compatible(reader: dict, writer: dict) -> list[str]:
    """Problems a consumer with the `reader` schema has reading data written with the
    `writer` schema (empty: compatible). The check is the real thing: sample data covering
    every union branch and enum symbol of the writer's schema is written with it and read
    back through fastavro's schema resolution into the reader's schema."""
    reader, writer = parse_schema(reader), parse_schema(writer)
    problems = []
    for variant in range(_variants(writer)):
        datum = _sample(writer, variant, {})
        out = io.BytesIO()
        schemaless_writer(out, writer, datum)
        out.seek(0)
        try:
            schemaless_reader(out, writer, reader)
        except SchemaResolutionError as exc:
            problem = str(exc)
            if problem not in problems:
                problems.append(problem)
    return problems


def _variants(schema: Any, seen: set | None = None) -> int:
    """How many samples it takes to visit every union branch and enum symbol."""
    seen = set() if seen is None else seen
    if isinstance(schema, list):
        return max([len(schema), *(_variants(s, seen) for s in schema)])
    if not isinstance(schema, dict) or schema.get("name") in seen:
        return 1
    if "name" in schema:
        seen.add(schema["name"])
    kind = schema["type"]
    if kind == "record":
        return max([1, *(_variants(f["type"], seen) for f in schema["fields"])])
    if kind == "enum":
        return len(schema["symbols"])
    if kind == "array":
        return _variants(schema["items"], seen)
    if kind == "map":
        return _variants(schema["values"], seen)
    return 1


def _sample(schema: Any, variant: int, named: dict) -> Any:
    if isinstance(schema, list):  # a union: one branch per variant
        return _sample(schema[variant % len(schema)], variant, named)
    if isinstance(schema, str):
        if schema in named:
            return _sample(named[schema], variant, named)
        return _PRIMITIVE_SAMPLES[schema](variant)
    kind, logical = schema["type"], schema.get("logicalType")
    if "name" in schema:
        named[schema["name"]] = schema
    if logical == "decimal":
        return Decimal(variant + 1).scaleb(-schema.get("scale", 0))
    if logical in {"timestamp-millis", "timestamp-micros"}:
        return datetime(2026, 1, 1, tzinfo=UTC)
    if kind == "record":
        return {f["name"]: _sample(f["type"], variant, named) for f in schema["fields"]}
    if kind == "enum":
        return schema["symbols"][variant % len(schema["symbols"])]
    if kind == "array":
        return [_sample(schema["items"], variant, named)]
    if kind == "map":
        return {"k": _sample(schema["values"], variant, named)}
    if kind == "fixed":
        return bytes(schema["size"])
    return _sample(kind, variant, named)  # {"type": "string"} and other annotated primitives


_PRIMITIVE_SAMPLES = {
    "null": lambda v: None,
    "boolean": lambda v: v % 2 == 0,
    "int": lambda v: v + 1,
    "long": lambda v: v + 1,
    "float": lambda v: v + 0.5,
    "double": lambda v: v + 0.5,
    "bytes": lambda v: b"b%d" % v,
    "string": lambda v: f"s{v}",
}
