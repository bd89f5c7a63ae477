"""What the people who run the site see, on the whole stack started as `make run` starts it
(launcher, its own broker, every process): `/metrics` moving with real traffic, and one
order's trace id in the log of every process it went through."""

from __future__ import annotations

import base64
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from devstack.ports import free_ports
from harness.http_client import logged_in, order_and_pay

pytestmark = pytest.mark.system

BASE_DIR = Path(__file__).resolve().parent.parent
GROUPS = ("deliveries", "stats", "notifications", "recommendations")


@dataclass
class Stack:
    process: subprocess.Popen
    url: str
    port: int
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("foodsite-home")
    log = home / "launcher.log"
    port, kafka_port = free_ports(2)  # two picks of free_port() alone could be the same port
    env = {**os.environ, "FOODSITE_HOME": str(home), "PORT": str(port), "KAFKA_PORT": str(kafka_port)}
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "PROMETHEUS_MULTIPROC_DIR", "LOG_FORMAT"):
        env.pop(name, None)  # the launcher's own broker and metrics directory, as `make run`
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack.launcher"], cwd=BASE_DIR, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    stack = Stack(process, f"http://127.0.0.1:{port}", port, log)
    deadline = time.monotonic() + 180
    while "| ready in" not in stack.output():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"launcher did not get ready:\n{stack.output()[-5000:]}")
        time.sleep(0.5)
    yield stack
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


Samples = dict[tuple[str, frozenset], float]


def scrape(stack: Stack) -> Samples:
    response = requests.get(f"{stack.url}/metrics", timeout=15)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every sample of `name` whose labels include these."""
    wanted = set(labels.items())
    return sum(v for (n, key), v in samples.items() if n == name and wanted <= key)


def wait_for(stack: Stack, check: Callable[[Samples], bool], timeout: float = 60) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(stack)
        if check(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.5)


def applied(samples: Samples, group: str) -> float:
    return value(samples, "foodsite_consumer_events_total", group=group, outcome="applied")


def caught_up(samples: Samples) -> bool:
    lags = [v for (n, _), v in samples.items() if n == "foodsite_consumer_lag"]
    return value(samples, "foodsite_kafka_up") == 1 and len(lags) > 0 and not any(lags)


def test_metrics_move_with_traffic_and_the_lag_goes_back_to_zero(stack):
    before = wait_for(stack, caught_up)  # the demo seed publishes nothing; wait for the groups to exist
    assert caught_up(before), {k: v for k, v in before.items() if k[0] == "foodsite_consumer_lag"}
    orders = 6
    customer = requests.Session()
    for _ in range(orders):
        order_and_pay(customer, stack.url)

    def done(samples: Samples) -> bool:
        return (
            caught_up(samples)
            and applied(samples, "recommendations") - applied(before, "recommendations") >= orders
            and all(applied(samples, g) - applied(before, g) >= 2 * orders for g in GROUPS[:3])
            and value(samples, "foodsite_outbox_unsent") == 0
        )

    after = wait_for(stack, done)
    # Each order is one order.placed and one payment.succeeded; recommendations reads orders only.
    for group in GROUPS[:3]:
        assert applied(after, group) - applied(before, group) == 2 * orders, group
    assert applied(after, "recommendations") - applied(before, "recommendations") == orders
    for group in GROUPS:
        assert value(after, "foodsite_consumer_events_total", group=group, outcome="dead_lettered") == 0
        assert total(after, "foodsite_consumer_batch_duration_seconds_count", group=group) > total(
            before, "foodsite_consumer_batch_duration_seconds_count", group=group
        )
    # Caught up: every group's database position is its partition's end, the lag 0.
    assert caught_up(after)
    for (name, key), position in after.items():
        if name == "foodsite_consumer_position":
            labels = dict(key)
            end = value(
                after, "foodsite_kafka_partition_end_offset", topic=labels["topic"], partition=labels["partition"]
            )
            assert position == end, labels
    assert (
        total(after, "foodsite_kafka_partition_end_offset", topic="orders")
        - total(before, "foodsite_kafka_partition_end_offset", topic="orders")
        == orders
    )
    # The outbox sent everything; the request histogram counted each placement and payment by route.
    assert value(after, "foodsite_outbox_unsent") == 0
    assert value(after, "foodsite_outbox_oldest_unsent_age_seconds") == 0
    for view in ("menu", "order-pay"):
        counted = value(after, "foodsite_http_request_duration_seconds_count", view=view, method="POST", status="302")
        assert (
            counted
            - value(before, "foodsite_http_request_duration_seconds_count", view=view, method="POST", status="302")
            == orders
        ), view
    # The route name, never the raw path: no order id in any label.
    assert not any(re.search(r"[0-9a-f]{8}-", "".join(v for _, v in key)) for (_, key) in after)
    assert total(after, "foodsite_producer_delivery_failures_total") == 0


def open_stats_socket(stack: Stack) -> socket.socket:
    """A real websocket handshake on /ws/stats/ as a logged-in staff member."""
    session = logged_in(stack.url, "staff")
    cookies = "; ".join(f"{c.name}={c.value}" for c in session.cookies)
    sock = socket.create_connection(("127.0.0.1", stack.port), timeout=10)
    key = base64.b64encode(secrets.token_bytes(16)).decode()
    sock.sendall(
        (
            f"GET /ws/stats/ HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {stack.url}\r\nCookie: {cookies}\r\n\r\n"
        ).encode()
    )
    assert sock.recv(4096).startswith(b"HTTP/1.1 101"), "websocket refused"
    return sock


def test_open_websockets_are_counted_while_they_are_open(stack):
    def sockets(samples: Samples) -> float:
        return value(samples, "foodsite_websocket_connections", page="stats")

    before = sockets(scrape(stack))
    first, second = open_stats_socket(stack), open_stats_socket(stack)
    assert sockets(wait_for(stack, lambda s: sockets(s) == before + 2, timeout=10)) == before + 2
    first.close()
    second.close()
    assert sockets(wait_for(stack, lambda s: sockets(s) == before, timeout=10)) == before


def processes_logging(stack: Stack, trace_id: str) -> set[str]:
    """The names of the processes (the launcher's tags) whose log lines mention the trace id."""
    return {
        match.group(1)
        for line in stack.output().splitlines()
        if trace_id in line and (match := re.match(r"^\S+ (\S+)\s*\|", line))
    }


def test_one_orders_trace_id_is_in_the_log_of_every_process_it_went_through(stack):
    """The customer's browser (or a proxy) sends a W3C traceparent with its requests; the
    order's events carry it through Kafka to each consumer, and the notification tasks to
    the worker, each writing it on its lines."""
    trace_id = secrets.token_hex(16)
    customer = requests.Session()
    customer.headers["traceparent"] = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    order_id = order_and_pay(customer, stack.url)
    expected = {"web", *GROUPS, "worker"}
    deadline = time.monotonic() + 60
    while not expected <= processes_logging(stack, trace_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_logging(stack, trace_id) >= expected, [
        line for line in stack.output().splitlines() if trace_id in line
    ]
    lines = [line for line in stack.output().splitlines() if trace_id in line]
    # Both of the order's events, in each consumer that reads their topic, named with the order.
    for group in GROUPS[:3]:
        for event_type in ("order.placed", "payment.succeeded"):
            assert any(f"{group} applied " in line and f"{event_type} {order_id}@" in line for line in lines), group
    assert any(f"stored order.placed for {order_id}" in line for line in lines)
    # Another order's lines do not carry it.
    other = order_and_pay(requests.Session(), stack.url)
    time.sleep(3)
    assert not any(other in line for line in stack.output().splitlines() if trace_id in line)
