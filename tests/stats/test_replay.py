from __future__ import annotations

import io
import logging
import re
from decimal import Decimal

import pytest
from confluent_kafka import Consumer
from django.core.management import CommandError, call_command

from eventing.topics import group_name, topic_name
from harness.factories import DishFactory
from harness.web import pay_order, place_order
from stats.models import DishSales, SalesTotals
from stats.projection import SalesProjection

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]


def snapshot() -> tuple:
    totals = SalesTotals.objects.get()
    return (totals.orders, totals.revenue, totals.food_cost), {d.dish_id: d.quantity for d in DishSales.objects.all()}


def test_replay_rebuilds_the_same_numbers_from_the_log(client, kafka):
    pizza = DishFactory(price=Decimal("9.00"), food_cost=Decimal("2.00"))
    salad = DishFactory(price=Decimal("6.50"), food_cost=Decimal("1.50"))
    for quantities in ({pizza: 2}, {salad: 1, pizza: 1}, {salad: 4}):
        pay_order(client, place_order(client, quantities))
    place_order(client, {pizza: 9})  # unpaid
    kafka.drain(SalesProjection())
    live = snapshot()
    SalesTotals.objects.update(orders=999)  # a projection gone wrong

    progress = io.StringIO()
    call_command("consume_stats", "--replay", stdout=io.StringIO(), stderr=progress)

    assert snapshot() == live
    assert live[0] == (3, Decimal("59.50"), Decimal("13.50"))
    assert "7/7 events" in progress.getvalue()  # 4 orders + 3 payments, with a progress bar


def test_after_a_replay_in_the_same_process_consumers_log_each_event_again(client, kafka, caplog):
    call_command("consume_stats", "--replay", stdout=io.StringIO(), stderr=io.StringIO())
    order_id = place_order(client, {DishFactory(): 1})

    with caplog.at_level(logging.INFO):
        kafka.drain(SalesProjection())

    assert re.search(rf"stats applied 1 event of orders\[\d\]: order\.placed {order_id}@\d+", caplog.text)


def test_replay_refuses_while_the_service_runs(kafka):
    member = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": group_name("stats")})
    member.subscribe([topic_name("orders")])
    try:
        for _ in range(50):  # until it has joined the group
            member.poll(0.2)
            if member.assignment():
                break
        with pytest.raises(CommandError, match="running member"):
            call_command("consume_stats", "--replay", stdout=io.StringIO(), stderr=io.StringIO())
    finally:
        member.close()
