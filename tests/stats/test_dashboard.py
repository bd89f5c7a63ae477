from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from contract.events import Event, OrderLine, OrderPlaced, PaymentSucceeded
from eventing.projection import ConsumedEvent
from harness.factories import CourierFactory, DishFactory, StaffFactory
from harness.web import logged_in, pay_order, place_order
from stats.models import DishSales, SalesTotals
from stats.projection import SalesProjection


@pytest.mark.django_db(transaction=True)
@pytest.mark.db_write
def test_stats_page_shows_revenue_profit_and_dishes_sold_from_the_stream(client, kafka):
    pizza = DishFactory(name="Margherita", price=Decimal("8.50"), food_cost=Decimal("2.40"))
    tiramisu = DishFactory(name="Tiramisu", price=Decimal("5.50"), food_cost=Decimal("1.40"))
    first = place_order(client, {pizza: 2, tiramisu: 1})  # 22.50, cost 6.20
    second = place_order(client, {pizza: 1})  # 8.50, cost 2.40
    place_order(client, {tiramisu: 7})  # never paid: not sold
    pay_order(client, first)
    pay_order(client, second)

    kafka.drain(SalesProjection())
    page = logged_in(StaffFactory()).get("/stats/").content.decode()

    totals = SalesTotals.objects.get()
    assert (totals.orders, totals.revenue, totals.food_cost, totals.profit) == (
        2,
        Decimal("31.00"),
        Decimal("8.60"),
        Decimal("22.40"),
    )
    assert {d.name: d.quantity for d in DishSales.objects.all()} == {"Margherita": 3, "Tiramisu": 1}
    assert '<strong id="stat-revenue">€ 31.00</strong>' in page
    assert '<strong id="stat-profit">€ 22.40</strong>' in page
    assert f'data-dish-id="{pizza.pk}"><td>Margherita</td><td class="num">3</td>' in page


@pytest.mark.django_db(transaction=True)
@pytest.mark.db_write
def test_a_second_run_of_the_consumer_does_not_count_again(client, kafka):
    pizza = DishFactory(price=Decimal("10.00"))
    pay_order(client, place_order(client, {pizza: 1}))
    kafka.drain(SalesProjection())

    pay_order(client, place_order(client, {pizza: 2}))
    second_run = kafka.drain(SalesProjection())

    assert second_run.applied == 2  # only the new order and payment
    assert SalesTotals.objects.get().revenue == Decimal("30.00")
    assert DishSales.objects.get().quantity == 3


@pytest.mark.django_db
def test_stats_page_is_for_staff_only(client):
    assert client.get("/stats/")["Location"].startswith("/accounts/login/")
    assert logged_in(CourierFactory()).get("/stats/").status_code == 403
    assert logged_in(StaffFactory()).get("/stats/").status_code == 200


@pytest.mark.django_db
@pytest.mark.db_write
def test_duplicate_events_in_any_order_count_an_order_once():
    order_id = str(uuid.uuid4())
    placed = Event(
        OrderPlaced(
            order_id, "Ada", "x", [OrderLine(4, "Lasagne", 2, Decimal("13.5"), Decimal("4.1"))], Decimal("27.0")
        )
    )
    paid = Event(PaymentSucceeded(order_id, Decimal("27.0"), "4242"))
    projection = SalesProjection()

    for batch in ([paid], [placed, paid], [placed]):
        projection.apply([ConsumedEvent(e.payload.TOPIC, 0, 0, e) for e in batch])

    totals = SalesTotals.objects.get()
    assert (totals.orders, totals.revenue, totals.profit) == (1, Decimal("27.00"), Decimal("18.80"))
    assert DishSales.objects.get(dish_id=4).quantity == 2
