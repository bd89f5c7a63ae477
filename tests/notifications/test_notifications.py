"""The notifications service on the real broker: events in, one email per (order, kind) out.

Sending runs its Celery task eagerly in the test process (CELERY_TASK_ALWAYS_EAGER), but the
events come through the real broker and the real runner, as in production."""

from __future__ import annotations

import io
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from confluent_kafka import Message
from django.core import mail
from django.core.management import call_command
from django.utils import timezone

from contract.events import DeliveryClaimed, DeliveryDelivered, DeliveryPickedUp, Event, OrderPlaced
from eventing.producer import get_publisher
from eventing.projection import ConsumedEvent, decode_message
from eventing.topics import logical_name
from harness.factories import DishFactory
from harness.web import pay_order, place_order
from live.notices import LIVE_UPDATES
from notifications import services
from notifications.models import Notification, Recipient
from notifications.projection import NotificationProjection
from notifications.tasks import send_unsent
from tests.notifications.flaky_email import FlakyBackend

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]


@pytest.fixture
def eager(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True
    return settings


def courier_steps(order_id: str) -> None:
    for step in (DeliveryClaimed, DeliveryPickedUp, DeliveryDelivered):
        get_publisher().publish(Event(step(order_id, "courier")))


def inbox() -> list[tuple[str, str]]:
    return sorted((message.to[0], message.subject) for message in mail.outbox)


RECEIVED, PAID = "Foodsite: We received your order", "Foodsite: Payment confirmed"
ON_ITS_WAY, DELIVERED = "Foodsite: Your order is on its way", "Foodsite: Your order was delivered"


def test_each_order_is_emailed_exactly_once_per_step_even_after_a_replay(client, kafka, eager):
    pizza = DishFactory(name="Margherita")
    delivered = place_order(client, {pizza: 2}, email="ada@example.com")
    pay_order(client, delivered)
    courier_steps(delivered)
    unpaid = place_order(client, {pizza: 1}, name="Bob", email="bob@example.com")
    no_email = place_order(client, {pizza: 1}, name="Cy")
    pay_order(client, no_email)

    stats = kafka.drain(NotificationProjection())

    expected = sorted(
        [("ada@example.com", s) for s in (RECEIVED, PAID, ON_ITS_WAY, DELIVERED)] + [("bob@example.com", RECEIVED)]
    )
    assert inbox() == expected
    assert stats.skipped == 1  # delivery.claimed tells the customer nothing
    assert all("Hello Ada" in m.body for m in mail.outbox if m.to == ["ada@example.com"])
    assert set(Notification.objects.filter(order_id=no_email).values_list("kind", "status")) == {
        ("received", "no_email"),
        ("paid", "no_email"),
    }
    assert not Notification.objects.exclude(order_id=no_email).exclude(status="sent").exists()
    assert Notification.objects.filter(order_id=unpaid).count() == 1

    progress = io.StringIO()
    call_command("consume_notifications", "--replay", stdout=io.StringIO(), stderr=progress)

    assert "8/8 events" in progress.getvalue()  # 3 orders, 2 payments, 3 courier steps
    assert inbox() == expected  # the replay re-read every event and emailed nobody again
    assert Recipient.objects.count() == 3  # rebuilt
    assert Notification.objects.count() == 7


def test_a_duplicate_event_sends_nothing_more(client, kafka, eager):
    order_id = place_order(client, {DishFactory(): 1}, email="ada@example.com")
    [placed] = kafka.read_topic("orders")
    kafka.drain(NotificationProjection())
    assert inbox() == [("ada@example.com", RECEIVED)]

    # The outbox relay can publish an event twice (delivered, then the process died).
    kafka.produce_raw("orders", placed.key(), placed.value(), placed.headers())
    stats = kafka.drain(NotificationProjection())

    assert stats.applied == 1
    assert inbox() == [("ada@example.com", RECEIVED)]
    assert Notification.objects.get(order_id=order_id).status == "sent"


def test_a_failing_email_server_is_retried_with_backoff_until_it_accepts(client, kafka, eager):
    eager.EMAIL_BACKEND = "tests.notifications.flaky_email.FlakyBackend"
    FlakyBackend.failures, FlakyBackend.attempts = 2, 0
    order_id = place_order(client, {DishFactory(): 1}, email="ada@example.com")

    kafka.drain(NotificationProjection())

    assert FlakyBackend.attempts == 3
    assert inbox() == [("ada@example.com", RECEIVED)]
    notification = Notification.objects.get(order_id=order_id)
    assert (notification.status, notification.sent_to, notification.claim) == ("sent", "ada@example.com", None)


def test_when_retries_run_out_the_beat_sweep_sends_it_later(client, kafka, eager):
    eager.EMAIL_BACKEND = "tests.notifications.flaky_email.FlakyBackend"
    FlakyBackend.failures, FlakyBackend.attempts = 1000, 0  # the server is down for good
    order_id = place_order(client, {DishFactory(): 1}, email="ada@example.com")

    kafka.drain(NotificationProjection())

    assert FlakyBackend.attempts == 10  # the first try and 9 retries
    assert mail.outbox == []
    notification = Notification.objects.get(order_id=order_id)
    assert (notification.status, notification.claim) == ("pending", None)  # not lost: left for the sweep

    FlakyBackend.failures = 0  # the server is back
    assert send_unsent() == 0  # too recent for the sweep: its task may still be running
    eager.NOTIFICATIONS_SEND_AFTER_S = 0
    assert send_unsent() == 1
    assert inbox() == [("ada@example.com", RECEIVED)]
    assert send_unsent() == 0


@pytest.mark.django_db
def test_two_deliveries_of_the_task_send_one_email_and_a_dead_senders_claim_expires(settings):
    order_id = uuid.uuid4()
    Recipient.objects.create(order_id=order_id, customer_name="Ada", email="ada@example.com", total=10)
    notification = Notification.objects.create(order_id=order_id, kind="paid", occurred_at=timezone.now())
    # Another worker claimed it a minute ago and is sending right now.
    Notification.objects.filter(pk=notification.pk).update(
        claim=uuid.uuid4(), claimed_at=timezone.now() - timedelta(minutes=1)
    )
    assert services.send(notification.pk) == "another sender has it"
    assert mail.outbox == []

    # ...or that worker died mid-send: after the lease anyone may take it over.
    Notification.objects.filter(pk=notification.pk).update(
        claimed_at=timezone.now() - services.claim_lease() - timedelta(seconds=1)
    )
    assert services.send(notification.pk) == "sent"
    assert services.send(notification.pk) == "settled"
    assert len(mail.outbox) == 1


def test_a_payment_read_before_its_order_is_emailed_once_the_order_arrives(client, kafka, eager):
    order_id = place_order(client, {DishFactory(): 1}, email="ada@example.com")
    pay_order(client, order_id)
    [placed] = kafka.read_topic("orders")
    [paid] = kafka.read_topic("payments")
    projection = NotificationProjection()
    projection.apply([consumed(paid)])
    assert mail.outbox == []  # no address yet: the order event brings it
    projection.apply([consumed(placed)])
    assert inbox() == [("ada@example.com", PAID), ("ada@example.com", RECEIVED)]


def consumed(message: Message) -> ConsumedEvent:
    return ConsumedEvent(logical_name(message.topic()), message.partition(), message.offset(), decode_message(message))


def test_the_order_page_lists_the_notifications(client, kafka, eager):
    with_email = place_order(client, {DishFactory(): 1}, email="ada@example.com")
    pay_order(client, with_email)
    without = place_order(client, {DishFactory(): 1})
    assert "Notifications" not in client.get(f"/orders/{with_email}/").content.decode()

    kafka.drain(NotificationProjection())

    page = client.get(f"/orders/{with_email}/").content.decode()
    assert "Order received" in page
    assert "Payment confirmed" in page
    assert "emailed to ada@example.com" in page
    page = client.get(f"/orders/{without}/").content.decode()
    assert "Order received" in page
    assert "Not emailed: no address on the order" in page
    assert 'data-live-region="order-notifications"' in page
    # ...and both pages were told to refresh that region (live.notices).
    notices = {m.key().decode() for m in kafka.read_topic(LIVE_UPDATES)}
    assert {f"order.{with_email}", f"order.{without}"} <= notices


def test_a_new_deployment_reading_a_week_of_log_emails_only_what_is_still_news(kafka, eager):
    def order(days_ago: float) -> str:
        order_id = str(uuid.uuid4())
        payload = OrderPlaced(order_id, "Ada", "Via Roma 1", [], Decimal("10"), email="ada@example.com")
        get_publisher().publish(Event(payload, occurred_at=timezone.now() - timedelta(days=days_ago)))
        return order_id

    old, recent = order(days_ago=3), order(days_ago=0.5)

    kafka.drain(NotificationProjection())

    assert inbox() == [("ada@example.com", RECEIVED)]
    assert Notification.objects.get(order_id=old).status == "stale"
    assert Notification.objects.get(order_id=recent).status == "sent"


def test_the_worker_tells_the_order_page_when_an_email_is_sent(kafka, transactional_db):
    order_id = uuid.uuid4()
    Recipient.objects.create(order_id=order_id, customer_name="Ada", email="ada@example.com", total=10)
    notification = Notification.objects.create(order_id=order_id, kind="paid", occurred_at=timezone.now())

    assert services.send(notification.pk) == "sent"  # what the worker's task runs

    notices = [m.key().decode() for m in kafka.read_topic(LIVE_UPDATES)]
    assert notices == [f"order.{order_id}"]  # the page's notifications region re-reads itself
