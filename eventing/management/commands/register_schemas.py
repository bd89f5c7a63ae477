"""Post the repo's Avro schemas to a schema registry (Confluent Schema Registry's REST API,
which Apicurio also serves under /apis/ccompat/v7).

The repo stays the source of truth and the app's consumers never ask the registry: this
publishes the schemas for other readers (a Java service, kafka-ui, data tools) and lets the
registry guard compatibility too. Each event type and version is one subject, named after
its envelope record (RecordNameStrategy: a topic carries several event types), set to
BACKWARD compatibility; its earlier revisions are registered first, oldest first, so the
registry's version history matches schemas/history/.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request

from django.core.management.base import BaseCommand, CommandError, CommandParser

from contract import avro
from eventing.schema_registry import subject_of

REGISTRY_JSON = "application/vnd.schemaregistry.v1+json"


class Command(BaseCommand):
    help = "Register the Avro schemas of contract/schemas (and their history) in a schema registry."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", required=True, help="the registry, e.g. http://schema-registry:8081")
        parser.add_argument("--timeout", type=float, default=10)

    def handle(self, *args: object, url: str, timeout: float, **options: object) -> None:
        known = avro.schemas()
        for key, current in sorted(known.current.items()):
            revisions = [*known.history.get(key, []), current]
            for earlier in revisions[:-1]:
                # The same rule as the test suite: never publish what the consumers cannot read.
                problems = avro.check_backward_compatible(reader=_raw(current), writer=_raw(earlier))
                if problems:
                    raise CommandError(f"{current.name} cannot read {earlier.name}: {'; '.join(problems)}")
            subject = subject_of(current)  # e.g. foodsite.events.v1.OrderPlacedEvent
            quoted = urllib.parse.quote(subject, safe="")
            _call(f"{url}/config/{quoted}", "PUT", {"compatibility": "BACKWARD"}, timeout)
            for schema in revisions:
                answer = _call(
                    f"{url}/subjects/{quoted}/versions",
                    "POST",
                    {"schemaType": "AVRO", "schema": schema.path.read_text()},
                    timeout,
                )
                self.stdout.write(f"{subject:<45} {schema.name:<28} id {answer.get('id')}")


def _raw(schema: avro.Schema) -> dict:
    return json.loads(schema.path.read_text())


def _call(url: str, method: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": REGISTRY_JSON, "Accept": REGISTRY_JSON},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        # The registry says why (e.g. 409: incompatible with the subject's latest version).
        raise CommandError(f"{method} {url}: HTTP {exc.code}: {exc.read().decode(errors='replace')}") from exc
    except (urllib.error.URLError, TimeoutError) as exc:
        raise CommandError(f"{method} {url}: registry unreachable: {exc}") from exc
