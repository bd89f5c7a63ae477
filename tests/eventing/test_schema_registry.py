"""A real schema registry (Apicurio Registry 3, devstack.schema_registry) in the path: the
repo's schemas registered BACKWARD, an incompatible change refused, every event the project
writes readable by a stock consumer that knows only the registry, the project's consumers
reading JSON, single-object and registry-framed Avro side by side, and the registry's
absence costing no event."""

from __future__ import annotations

import io
import json
import logging
import signal
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import MessageField, SerializationContext
from django.core.management import call_command
from django.template.loader import render_to_string

from contract import avro
from contract.events import (
    CONTENT_TYPE_AVRO,
    PAYLOAD_TYPES,
    DeliveryClaimed,
    DeliveryDelivered,
    DeliveryPickedUp,
    Event,
    OrderLine,
    OrderPlaced,
    PaymentFailed,
    PaymentSucceeded,
)
from devstack.ports import free_port
from devstack.schema_registry import LocalSchemaRegistry
from eventing import schema_registry
from eventing.kafka_view import kafka_view
from eventing.producer import get_publisher, reset_publisher
from eventing.projection import TransientError, decode_message
from eventing.topics import DELIVERY_STATUS, ORDERS, PAYMENTS
from stats.projection import SalesProjection
from stats.selectors import sales_totals

pytestmark = pytest.mark.django_db(transaction=True)

JSON = "application/vnd.schemaregistry.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalSchemaRegistry]:
    server = LocalSchemaRegistry(tmp_path_factory.mktemp("schema-registry"))
    server.start()
    try:
        server.wait_ready(timeout=120)
        call_command("register_schemas", "--url", server.url, stdout=io.StringIO())
        yield server
    finally:
        server.stop()


@pytest.fixture
def registry_in_use(registry: LocalSchemaRegistry, settings) -> Iterator[LocalSchemaRegistry]:
    """The deployment writes Avro with this registry."""
    settings.EVENT_FORMAT = "avro"
    settings.SCHEMA_REGISTRY_URL = registry.url
    schema_registry.reset()
    reset_publisher()
    yield registry
    settings.SCHEMA_REGISTRY_URL = ""
    schema_registry.reset()
    reset_publisher()


def call(url: str, method: str = "GET", body: dict | None = None) -> tuple[int, dict | list]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": JSON, "Accept": JSON},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def subject_url(registry: LocalSchemaRegistry, subject: str) -> str:
    return f"{registry.url}/subjects/{urllib.parse.quote(subject, safe='')}"


def every_event_type() -> list[Event]:
    order_id = str(uuid.uuid4())
    lines = [OrderLine(9101, "Margherita", 2, Decimal("8.50"), Decimal("2.40"))]
    return [
        Event(OrderPlaced(order_id, "Ada", "Via Roma 1", lines, Decimal("17.00"), email="ada@example.com")),
        Event(PaymentFailed(order_id, Decimal("17.00"), "card declined")),
        Event(PaymentSucceeded(order_id, Decimal("17.00"), "4242")),
        Event(DeliveryClaimed(order_id, "courier1")),
        Event(DeliveryPickedUp(order_id, "courier1")),
        Event(DeliveryDelivered(order_id, "courier1")),
    ]


def published(events: list[Event]) -> None:
    for event in events:
        get_publisher().publish(event)
    assert get_publisher().flush(10) == 0


def test_every_schema_is_registered_under_its_subject_with_backward_compatibility(registry):
    status, subjects = call(f"{registry.url}/subjects")
    assert status == 200
    for schema in avro.schemas().current.values():
        subject = schema_registry.subject_of(schema)
        assert subject in subjects
        status, config = call(f"{registry.url}/config/{urllib.parse.quote(subject, safe='')}")
        assert (status, config["compatibilityLevel"]) == (200, "BACKWARD")
        status, versions = call(f"{subject_url(registry, subject)}/versions")
        assert len(versions) == 1 + len(avro.schemas().history.get((schema.event_type, schema.version), []))


def test_the_registry_refuses_an_incompatible_change_and_takes_a_compatible_one(registry):
    current = avro.schemas().current[("order.placed", 1)]
    subject = schema_registry.subject_of(current)
    status, before = call(f"{subject_url(registry, subject)}/versions")
    raw = json.loads(Path(current.path).read_text())
    required = json.loads(json.dumps(raw))
    next(f for f in required["fields"] if f["name"] == "data")["type"]["fields"].append(
        {"name": "tip", "type": "string"}  # no default: today's events could not be read with it
    )
    status, answer = call(f"{subject_url(registry, subject)}/versions", "POST", {"schema": json.dumps(required)})
    assert status == 409, answer
    assert call(f"{subject_url(registry, subject)}/versions")[1] == before

    # The same field with a default is a compatible change: taken, as a new version, under a
    # copy of the subject (the real one keeps the repo's history).
    copy = f"{subject}.compatibility-test-{uuid.uuid4().hex[:8]}"
    call(f"{registry.url}/config/{urllib.parse.quote(copy, safe='')}", "PUT", {"compatibility": "BACKWARD"})
    assert call(f"{subject_url(registry, copy)}/versions", "POST", {"schema": json.dumps(raw)})[0] == 200
    optional = json.loads(json.dumps(raw))
    next(f for f in optional["fields"] if f["name"] == "data")["type"]["fields"].append(
        {"name": "tip", "type": "string", "default": ""}
    )
    status, answer = call(f"{subject_url(registry, copy)}/versions", "POST", {"schema": json.dumps(optional)})
    assert status == 200, answer
    assert answer["id"] > 0


def test_a_stock_consumer_that_knows_only_the_registry_decodes_every_event_the_project_writes(registry_in_use, kafka):
    events = every_event_type()
    published(events)

    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry_in_use.url}))
    decoded = {}
    for topic in (ORDERS, PAYMENTS, DELIVERY_STATUS):
        for message in kafka.read_topic(topic):
            assert message.value()[:1] == avro.REGISTRY_MAGIC
            assert dict(message.headers())["content-type"] == CONTENT_TYPE_AVRO.encode()
            value = deserializer(message.value(), SerializationContext(message.topic(), MessageField.VALUE))
            decoded[value["id"]] = value
    assert set(decoded) == {event.id for event in events}
    for event in events:
        value = decoded[event.id]
        assert (value["type"], value["version"], value["occurred_at"]) == (event.type, event.version, event.occurred_at)
        assert value["data"]["order_id"] == event.payload.order_id
    placed = decoded[events[0].id]["data"]
    assert (placed["total"], placed["lines"][0]["unit_price"], placed["email"]) == (
        Decimal("17.00"),
        Decimal("8.50"),
        "ada@example.com",
    )


def test_the_consumers_read_json_single_object_and_registry_framed_events_on_one_topic(registry, kafka, settings):
    stories = []
    for fmt, url in (("json", ""), ("avro", ""), ("avro", registry.url)):
        settings.EVENT_FORMAT, settings.SCHEMA_REGISTRY_URL = fmt, url
        schema_registry.reset()
        reset_publisher()
        story = every_event_type()
        published(story)
        stories.append(story)
    # The consumer's process knows the registry (the deployment's setting now).
    firsts = {message.value()[:1] for message in kafka.read_topic(ORDERS)}
    assert firsts == {b"{", avro.MARKER[:1], avro.REGISTRY_MAGIC}

    stats = kafka.drain(SalesProjection())
    assert stats.dead_lettered == 0
    assert (sales_totals().orders, sales_totals().revenue) == (3, Decimal("51.00"))
    settings.SCHEMA_REGISTRY_URL = ""
    schema_registry.reset()


def test_with_the_registry_down_at_start_events_go_out_readable_and_the_log_names_it(kafka, settings, caplog):
    settings.EVENT_FORMAT = "avro"
    settings.SCHEMA_REGISTRY_URL = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    schema_registry.reset()
    reset_publisher()
    events = every_event_type()[:1]
    with caplog.at_level(logging.ERROR, logger="foodsite.schema_registry"):
        published(events)
    assert any(
        settings.SCHEMA_REGISTRY_URL in r.getMessage() and "unreachable" in r.getMessage() for r in caplog.records
    )
    [message] = kafka.read_topic(ORDERS)
    assert message.value().startswith(avro.MARKER)  # single-object: every consumer of ours reads it
    assert decode_message(message) == events[0]
    settings.SCHEMA_REGISTRY_URL = ""
    schema_registry.reset()


def test_the_registry_down_while_running_costs_nothing_once_ids_are_known(registry_in_use, kafka):
    warm = every_event_type()
    published(warm)
    messages = kafka.read_topic(ORDERS)
    assert decode_message(messages[0]) == warm[0]  # this process now knows that id too

    registry_in_use.process.send_signal(signal.SIGSTOP)  # it holds every request unanswered
    try:
        later = every_event_type()
        published(later)
        fresh = [m for m in kafka.read_topic(ORDERS) if m.value() not in {x.value() for x in messages}]
        assert [m.value()[:1] for m in fresh] == [avro.REGISTRY_MAGIC]  # still its framing: no fallback
        assert decode_message(fresh[0]) == later[0]
    finally:
        registry_in_use.process.send_signal(signal.SIGCONT)


def test_an_id_the_registry_does_not_know_is_a_dead_letter(registry_in_use, kafka):
    body = avro.registry_framed(2**31 - 1, every_event_type()[0].to_avro())
    kafka.produce_raw(ORDERS, b"k", body, [("content-type", CONTENT_TYPE_AVRO.encode())])
    stats = kafka.drain(SalesProjection())
    assert stats.dead_lettered == 1


def test_a_new_id_while_the_registry_is_unreachable_is_retried_not_dead_lettered(settings):
    settings.SCHEMA_REGISTRY_URL = f"http://127.0.0.1:{free_port()}/apis/ccompat/v7"
    schema_registry.reset()
    body = avro.registry_framed(7, every_event_type()[0].to_avro())
    with pytest.raises(TransientError, match="unreachable"):
        avro.decode(body)
    settings.SCHEMA_REGISTRY_URL = ""
    schema_registry.reset()


def test_the_staff_page_s_kafka_view_names_each_topic_s_subjects_and_their_latest_versions(registry_in_use, kafka):
    view = kafka_view()
    assert view.error is None
    assert view.schemas_error is None
    schemas = {topic.name: dict(topic.schemas) for topic in view.topics}
    expected_versions = {
        schema_registry.subject_of(schema): 1 + len(avro.schemas().history.get(key, []))
        for key, schema in avro.schemas().current.items()
    }
    for key, schema in avro.schemas().current.items():
        topic = PAYLOAD_TYPES[key].TOPIC
        subject = schema_registry.subject_of(schema)
        assert schemas[topic][subject] == expected_versions[subject]
    html = render_to_string("stats/regions/kafka.html", {"kafka": view})
    order_placed = schema_registry.subject_of(avro.schemas().current[("order.placed", 1)])
    assert f'data-subject="{order_placed}" data-version="{expected_versions[order_placed]}"' in html
