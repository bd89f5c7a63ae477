"""`register_schemas` against a stand-in schema registry: a small HTTP server answering the
two calls of Confluent Schema Registry's REST API the command makes (no registry runs here;
docker-compose's `registry` profile has the real one)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command

from contract import avro
from devstack.kafka_node import free_port


class StandInRegistry(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, dict]]
    refuse: set[str]  # subjects whose new versions are refused as incompatible

    def do_PUT(self) -> None:
        self._answer({"compatibility": self._record()["compatibility"]})

    def do_POST(self) -> None:
        self._record()
        subject = self.path.split("/")[2]
        if subject in self.refuse:
            self._answer({"error_code": 409, "message": "Schema being registered is incompatible"}, 409)
            return
        self._answer({"id": 100 + len(self.calls)})

    def _record(self) -> dict:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.calls.append((self.command, self.path, body))
        return body

    def _answer(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[tuple[str, type[StandInRegistry]]]:
    handler = type("Handler", (StandInRegistry,), {"calls": [], "refuse": set()})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", handler
    server.shutdown()
    server.server_close()


def test_every_schema_and_its_history_is_registered_oldest_first_under_backward_compatibility(registry):
    url, handler = registry

    call_command("register_schemas", url=url)

    known = avro.schemas()
    subjects = {s.parsed["name"] for s in known.current.values()}
    assert "foodsite.events.v1.OrderPlacedEvent" in subjects
    configs = {path.split("/")[2]: body for method, path, body in handler.calls if method == "PUT"}
    assert configs == {subject: {"compatibility": "BACKWARD"} for subject in subjects}
    posted = [
        (path.split("/")[2], json.loads(body["schema"])) for method, path, body in handler.calls if method == "POST"
    ]
    assert len(posted) == len(known.current) + sum(len(r) for r in known.history.values())
    assert all(body["schemaType"] == "AVRO" for method, _, body in handler.calls if method == "POST")
    orders = [schema for subject, schema in posted if subject == "foodsite.events.v1.OrderPlacedEvent"]
    [first] = known.history[("order.placed", 1)]
    assert orders == [
        json.loads(first.path.read_text()),
        json.loads(known.current[("order.placed", 1)].path.read_text()),
    ]


def test_a_schema_the_registry_refuses_stops_the_command_with_its_reason(registry):
    url, handler = registry
    handler.refuse = {"foodsite.events.v1.PaymentSucceededEvent"}

    with pytest.raises(CommandError, match=r"HTTP 409: .*incompatible"):
        call_command("register_schemas", url=url)


def test_an_unreachable_registry_is_a_clear_error():
    with pytest.raises(CommandError, match="registry unreachable"):
        call_command("register_schemas", url=f"http://127.0.0.1:{free_port()}", timeout=2)
