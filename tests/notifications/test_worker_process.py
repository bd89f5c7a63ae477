"""Notifications through the real processes: `consume_notifications` queues its tasks on the
embedded Celery transport (SQLite), a real Celery worker sends them with the default
file-based backend into FOODSITE_HOME/emails. No eager mode here."""

from __future__ import annotations

import sys
import time
import uuid
from decimal import Decimal
from email import message_from_string
from pathlib import Path

import pytest

from contract.events import DeliveryPickedUp, Event, OrderLine, OrderPlaced, PaymentSucceeded
from eventing.producer import get_publisher
from harness.processes import Services

pytestmark = [pytest.mark.system, pytest.mark.db_write]


def emails(home: Path) -> list[tuple[str, str]]:
    """(to, subject) of every email the file-based backend wrote (a file per connection)."""
    found = []
    for path in sorted((home / "emails").glob("*.log")):
        for chunk in path.read_text().split("-" * 79):
            if chunk.strip():
                message = message_from_string(chunk.strip())
                found.append((message["To"], " ".join(message["Subject"].split())))
    return sorted(found)


def wait_for_emails(home: Path, count: int, timeout: float = 60) -> list[tuple[str, str]]:
    deadline = time.monotonic() + timeout
    while len(found := emails(home)) < count:
        assert time.monotonic() < deadline, f"{len(found)} of {count} emails after {timeout} s: {found}"
        time.sleep(0.2)
    return found


def test_the_worker_emails_each_step_once_and_a_replay_emails_nobody_again(kafka, tmp_path, process_database_url):
    services = Services(tmp_path, kafka.bootstrap_servers, process_database_url)
    try:
        publisher = get_publisher()
        orders = [str(uuid.uuid4()) for _ in range(4)]
        for i, order_id in enumerate(orders):
            email = f"c{i}@example.com" if i < 3 else None  # the last one gave no address
            line = OrderLine(1, "Pizza", 1, Decimal("9"), Decimal("3"))
            publisher.publish(Event(OrderPlaced(order_id, f"C{i}", "Via Roma 1", [line], Decimal("9"), email=email)))
            if i % 2 == 0:
                publisher.publish(Event(PaymentSucceeded(order_id, Decimal("9"), "4242")))
        assert publisher.flush(10) == 0
        services.spawn(
            "worker", [sys.executable, "-m", "celery", "-A", "foodsite", "worker", "--concurrency", "1", "-l", "INFO"]
        )

        services.manage("consume_notifications", "--until-caught-up")

        received, paid = "Foodsite: We received your order", "Foodsite: Payment confirmed"
        expected = sorted(
            [
                ("c0@example.com", received),
                ("c0@example.com", paid),
                ("c1@example.com", received),
                ("c2@example.com", received),
                ("c2@example.com", paid),
            ]
        )
        assert wait_for_emails(tmp_path, len(expected)) == expected

        services.manage("consume_notifications", "--replay")
        # A marker: one new step, whose email the worker (one process, tasks in order) sends
        # after anything the replay could have queued.
        publisher.publish(Event(DeliveryPickedUp(orders[0], "courier")))
        assert publisher.flush(10) == 0
        services.manage("consume_notifications", "--until-caught-up")

        on_its_way = ("c0@example.com", "Foodsite: Your order is on its way")
        assert wait_for_emails(tmp_path, len(expected) + 1) == sorted([*expected, on_its_way])
    finally:
        services.close()
