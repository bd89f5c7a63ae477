"""A broker that is unreachable, or that accepts connections and never answers, must not
make a customer wait: the web process hands events to its producer without waiting, and
the outbox keeps them. Real daphne, real SQLite; each request held to a budget."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from devstack.kafka_node import free_port
from devstack.launcher import wait_http
from harness import kafka_support
from harness.http_client import order_and_pay
from harness.processes import Services

# Requests held to a time bound: not beside other tests (`make test` runs `alone` ones by themselves).
pytestmark = [pytest.mark.system, pytest.mark.alone]

ORDERS = 30
# A request that waited on the broker would take seconds (librdkafka's timeouts are 10 to
# 60 s); a normal one takes tens of milliseconds on the 2-core CI machine.
REQUEST_BUDGET_S = 0.5


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """Accepts TCP connections and never says a word, like a hung broker."""
    with kafka_support.silent_broker() as address:
        yield address


@pytest.fixture
def unreachable_broker() -> str:
    return f"127.0.0.1:{free_port()}"  # nothing listens there


@pytest.mark.parametrize("broker", ["silent_broker", "unreachable_broker"])
def test_customers_never_wait_for_a_broker_that_does_not_answer(broker, request, tmp_path):
    bootstrap = request.getfixturevalue(broker)
    services = Services(tmp_path / "home", bootstrap)
    try:
        services.manage("seed_demo")
        _, url = services.spawn_web()
        wait_http(f"{url}/healthz", timeout=60)
        customer = requests.Session()
        durations: list[float] = []
        customer.hooks["response"].append(lambda response, *_, **__: durations.append(response.elapsed.total_seconds()))

        for _ in range(ORDERS):
            order_and_pay(customer, url)  # each step answered with its redirect: "received"

        slowest = max(durations)
        print(f"{broker}: {len(durations)} requests, slowest {slowest * 1000:.0f} ms")
        assert slowest < REQUEST_BUDGET_S, f"a request waited {slowest:.2f} s with the broker {broker}"
        pending = services.manage(
            "shell",
            "-c",
            "from eventing.models import OutboxEvent; print(OutboxEvent.objects.filter(sent_at=None).count())",
        )
        assert int(pending.strip().splitlines()[-1]) == 2 * ORDERS  # every order and payment kept for the relay
    finally:
        services.close()
