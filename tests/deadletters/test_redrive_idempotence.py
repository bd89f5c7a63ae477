"""Re-driving twice changes nothing, for every service: each projection, given an order's
events again through its re-drive topic (twice), writes nothing new and emails nobody."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.apps import apps
from django.core import mail
from django.utils import timezone

from deadletters.models import DeadLetter
from deadletters.services import redrive
from deliveries.projection import DeliveryProjection
from eventing.projection import Projection
from eventing.topics import ORDERS, PAYMENTS, logical_name
from harness.factories import DishFactory
from harness.web import pay_order, place_order
from notifications.projection import NotificationProjection
from recommendations.projection import RecommendationProjection
from stats.projection import SalesProjection

pytestmark = pytest.mark.django_db(transaction=True)


def snapshot(projection: type[Projection]) -> dict[str, list[dict]]:
    """Every row of the projection's app, without the fields Django stamps on each save."""
    tables = {}
    for model in apps.get_app_config(projection.__module__.split(".")[0]).get_models():
        stamped = {f.attname for f in model._meta.fields if getattr(f, "auto_now", False)}
        rows = model.objects.order_by("pk").values()
        tables[model.__name__] = [{k: v for k, v in row.items() if k not in stamped} for row in rows]
    return tables


@pytest.mark.parametrize(
    "projection", [DeliveryProjection, SalesProjection, NotificationProjection, RecommendationProjection]
)
def test_redriving_an_orders_events_twice_changes_no_projection(projection, client, kafka, settings):
    settings.CELERY_TASK_ALWAYS_EAGER = True  # the notifications' emails are sent at once
    pizza, salad = DishFactory(price=Decimal("9.00")), DishFactory(price=Decimal("6.50"))
    order = place_order(client, {pizza: 2, salad: 1}, email="ada@example.com")
    pay_order(client, order)
    kafka.drain(projection())
    before, emails = snapshot(projection), len(mail.outbox)
    assert any(before.values())
    # The order's two events, as if this group had dead-lettered them.
    messages = [*kafka.read_topic(ORDERS), *kafka.read_topic(PAYMENTS)]
    letters = DeadLetter.objects.bulk_create(
        DeadLetter(
            group=projection.group,
            topic=logical_name(m.topic()),
            partition=m.partition(),
            offset=m.offset(),
            origin_topic=logical_name(m.topic()),
            origin_partition=m.partition(),
            origin_offset=m.offset(),
            error="ValueError: a bug since fixed",
            failed_at=timezone.now(),
            key=m.key(),
            value=m.value(),
            headers=[[k, v.hex()] for k, v in m.headers()],
        )
        for m in messages
    )

    for _ in range(2):
        outcome = redrive(DeadLetter.objects.filter(pk__in=[letter.pk for letter in letters]))
        assert (outcome.sent, outcome.not_sent) == (2, 0)
    again = kafka.drain(projection())

    assert again.applied + again.skipped == 4  # both events, twice, read by the projection
    assert again.applied >= 2
    assert again.dead_lettered == 0
    assert snapshot(projection) == before
    assert len(mail.outbox) == emails
