"""Events in a schema registry's wire format, when the deployment has a registry
(SCHEMA_REGISTRY_URL, with EVENT_FORMAT=avro).

The repo's schemas stay the source of truth (contract/schemas; `register_schemas` puts them in
the registry, BACKWARD per subject, subjects named after their envelope record as
confluent-kafka's `record_subject_name_strategy` names them). What the registry adds is the
framing every Confluent-compatible reader knows: `00 | schema id | Avro body`, where the id is
the registry's. So a stock consumer that knows only the registry (confluent-kafka's
`AvroDeserializer`, a Java service, kafka-ui) reads every event the project writes.

Writing: the body is the one `contract.avro` writes (fastavro, the same parsed schema
confluent-kafka's `AvroSerializer` would use), its single-object header replaced by the id.
The ids are asked of the registry once per process and schema (confluent-kafka's
`SchemaRegistryClient`, which caches them too), never per event. A process that cannot reach
the registry when it first needs an id logs an ERROR naming it and writes single-object Avro
meanwhile, which this project's consumers read as well (an order is never refused because
the registry is down); it asks again after RETRY_AFTER_S.

Reading: `contract.avro` asks `schema_text` for an id it has not seen (once per id and
process); the registry unreachable then is a TransientError (the batch is retried, not
dead-lettered), an id it does not know makes the event a dead letter.
"""

from __future__ import annotations

import logging
import threading
import time

from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from contract import avro
from contract.events import CONTENT_TYPE_AVRO, PAYLOAD_TYPES, Event, encode
from eventing.conf import settings
from eventing.projection import TransientError

log = logging.getLogger("foodsite.schema_registry")

RETRY_AFTER_S = 30.0
TIMEOUT_S = 5  # each request to the registry
LATEST_TTL_S = 30  # how long the staff page's "latest version" of a subject is kept

_lock = threading.Lock()
_client: SchemaRegistryClient | None = None
_client_url = ""
_ids: dict[tuple[str, int], int] = {}  # (event type, version) -> the registry's id of its current schema
_unreachable_until = 0.0
_latest_failure: tuple[float, str] | None = None  # (until, reason): the staff page's last failed ask


def configured() -> bool:
    return bool(settings.SCHEMA_REGISTRY_URL)


def client() -> SchemaRegistryClient:
    """The process's registry client (made again if the setting changed: tests)."""
    global _client, _client_url
    url = settings.SCHEMA_REGISTRY_URL
    with _lock:
        if _client is None or _client_url != url:
            # No retries of its own: a web request may be the one asking, and the consumer
            # retries its batch anyway.
            _client = SchemaRegistryClient(
                {"url": url, "timeout": TIMEOUT_S, "max.retries": 0, "cache.latest.ttl.sec": LATEST_TTL_S}
            )
            _client_url = url
            _ids.clear()
        return _client


def subject_of(schema: avro.Schema) -> str:
    """The subject a schema is registered under: its envelope record's full name
    (e.g. foodsite.events.v1.OrderPlacedEvent), as record_subject_name_strategy gives."""
    return schema.parsed["name"]


def encode_event(event: Event, fmt: str) -> tuple[bytes, str]:
    """The message value and content type: contract.events.encode's, registry-framed when
    the format is Avro and a registry is configured and has answered."""
    value, content_type = encode(event, fmt)
    if content_type != CONTENT_TYPE_AVRO or not configured():
        return value, content_type
    schema_id = _id_of(event.type, event.version)
    return (value if schema_id is None else avro.registry_framed(schema_id, value)), content_type


def _id_of(event_type: str, version: int) -> int | None:
    global _unreachable_until
    registry = client()
    known = _ids.get((event_type, version))
    if known is not None:
        return known
    if time.monotonic() < _unreachable_until:
        return None
    schema = avro.schemas().current[(event_type, version)]
    try:
        registered = registry.lookup_schema(subject_of(schema), Schema(schema.path.read_text(), "AVRO"))
    except SchemaRegistryError as exc:
        # 404: the subject or this schema is not registered (register_schemas was not run
        # against this registry): the same fallback, with what to do.
        _unreachable_until = time.monotonic() + RETRY_AFTER_S
        log.error(
            "schema registry %s has no %s for %s (HTTP %s: %s); run `manage.py register_schemas --url %s`. "
            "Events go out as single-object Avro until it has",
            settings.SCHEMA_REGISTRY_URL, subject_of(schema), schema.name, exc.http_status_code, exc.error_message,
            settings.SCHEMA_REGISTRY_URL,
        )  # fmt: skip
        return None
    except Exception as exc:  # httpx's connection errors, timeouts: the registry is not there
        _unreachable_until = time.monotonic() + RETRY_AFTER_S
        log.error(
            "schema registry %s unreachable (%s: %s); events go out as single-object Avro until it answers",
            settings.SCHEMA_REGISTRY_URL, type(exc).__name__, exc,
        )  # fmt: skip
        return None
    _ids[(event_type, version)] = registered.schema_id
    return registered.schema_id


def schema_text(schema_id: int) -> str | None:
    """The writer's schema for an id (contract.avro's SchemaLookup): None if the registry
    has no such id; TransientError if it cannot be asked."""
    try:
        return client().get_schema(schema_id).schema_str
    except SchemaRegistryError as exc:
        if exc.http_status_code == 404:
            return None
        url = settings.SCHEMA_REGISTRY_URL
        raise TransientError(f"schema registry {url}: HTTP {exc.http_status_code}: {exc}") from exc
    except Exception as exc:
        raise TransientError(
            f"schema registry {settings.SCHEMA_REGISTRY_URL} unreachable ({type(exc).__name__}: {exc})"
        ) from exc


def latest_versions_by_topic() -> dict[str, list[tuple[str, int]]]:
    """Logical topic -> (subject, the registry's latest version) of each event type it carries,
    for the staff page. Asked at most every LATEST_TTL_S per subject; the first failure ends
    it (RuntimeError with the reason), which is then given again for RETRY_AFTER_S without
    asking: a registry that does not answer costs the page one timeout, not one per read."""
    global _latest_failure
    if _latest_failure is not None and time.monotonic() < _latest_failure[0]:
        raise RuntimeError(_latest_failure[1])
    url = settings.SCHEMA_REGISTRY_URL
    found: dict[str, list[tuple[str, int]]] = {}
    for (event_type, version), schema in sorted(avro.schemas().current.items()):
        subject = subject_of(schema)
        try:
            latest = client().get_latest_version(subject)
        except Exception as exc:
            if isinstance(exc, SchemaRegistryError):
                reason = f"schema registry {url}: {subject}: {exc.error_message}"
            else:
                reason = f"schema registry {url} unreachable ({type(exc).__name__}: {exc})"
            _latest_failure = (time.monotonic() + RETRY_AFTER_S, reason)
            raise RuntimeError(reason) from exc
        found.setdefault(PAYLOAD_TYPES[(event_type, version)].TOPIC, []).append((subject, latest.version))
    _latest_failure = None
    return found


def reset() -> None:
    """Forget the client, the ids and a failure (tests)."""
    global _client, _unreachable_until, _latest_failure
    with _lock:
        _client = None
        _ids.clear()
        _unreachable_until = 0.0
        _latest_failure = None
    avro.configure_registry(schema_text if configured() else None)
