"""How an order is written: on PostgreSQL in one round trip (one statement), on either database
the order, its lines and its outbox event together or not at all, and always at the menu's
prices in the database, whatever the process's copy of the menu still says."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from django.db import IntegrityError, close_old_connections, connection
from django.test import Client

from eventing.models import OutboxEvent
from eventing.projection import decode_message
from harness.factories import DishFactory
from harness.round_trips import RoundTripRelay
from harness.web import place_order
from orders import services
from orders.models import Dish, Order, OrderLine

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]


@pytest.fixture
def relayed_connection(monkeypatch: pytest.MonkeyPatch) -> Iterator[RoundTripRelay]:
    """The test's database connection, opened again through a relay that counts round trips."""
    if connection.vendor != "postgresql":
        pytest.skip("round trips to a server: PostgreSQL")
    relay = RoundTripRelay((connection.settings_dict["HOST"], int(connection.settings_dict["PORT"])))
    connection.close()
    monkeypatch.setitem(connection.settings_dict, "PORT", str(relay.port))
    try:
        yield relay
    finally:
        connection.close()  # the next query connects straight to the server again
        relay.close()


def test_an_order_is_one_round_trip_to_postgresql(client: Client, kafka, relayed_connection: RoundTripRelay):
    dish = DishFactory()
    place_order(client, {dish: 1})  # the process's copy of the menu now holds the dish
    with connection.cursor() as cursor:  # this thread's connection (the producer's thread has its own)
        cursor.execute("SELECT inet_client_port()")
        [(port,)] = cursor.fetchall()
    close_old_connections()  # what a request's start does: its first query checks the kept connection
    before = relayed_connection.round_trips_of(port)

    order_id = place_order(client, {dish: 2})

    assert relayed_connection.round_trips_of(port) - before == 1
    order = Order.objects.get(pk=order_id)
    assert order.total == 2 * dish.price
    assert [(line.dish_id, line.quantity) for line in order.lines.all()] == [(dish.pk, 2)]
    assert OutboxEvent.objects.filter(key=order_id).count() == 1


def refuse_inserts_into(table: str) -> str:
    """SQL making every INSERT into `table` fail (a constraint on PostgreSQL, a trigger on SQLite)."""
    if connection.vendor == "postgresql":
        return f"ALTER TABLE {table} ADD CONSTRAINT refused_in_test CHECK (false) NOT VALID"
    return f"CREATE TRIGGER refused_in_test BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'refused'); END"


def accept_inserts_into(table: str) -> str:
    if connection.vendor == "postgresql":
        return f"ALTER TABLE {table} DROP CONSTRAINT refused_in_test"
    return "DROP TRIGGER refused_in_test"


@pytest.mark.parametrize("table", [Order._meta.db_table, OrderLine._meta.db_table, OutboxEvent._meta.db_table])
def test_the_order_its_lines_and_its_event_are_written_together_or_not_at_all(kafka, table: str):
    dish = DishFactory()
    with connection.cursor() as cursor:
        cursor.execute(refuse_inserts_into(table))
    try:
        with pytest.raises(IntegrityError):  # not taken for the same form submitted twice
            services.place_order(
                customer_name="Ada",
                address="Via Roma 1",
                items=[services.CartItem(dish_id=dish.pk, quantity=1)],
                idempotency_key="a-key-of-its-own",
            )
    finally:
        with connection.cursor() as cursor:
            cursor.execute(accept_inserts_into(table))

    assert (Order.objects.count(), OrderLine.objects.count(), OutboxEvent.objects.count()) == (0, 0, 0)
    assert kafka.read_topic("orders") == []


def order_form(dish: Dish, quantity: int) -> dict:
    return {"customer_name": "Ada", "address": "Via Roma 1", f"qty-{dish.pk}": str(quantity)}


@pytest.mark.parametrize(
    "change",
    [{"price": Decimal("9.90")}, {"food_cost": Decimal("3.30")}, {"name": "Margherita DOP"}],
    ids=["price", "food-cost", "name"],
)
def test_a_dish_changed_since_the_process_read_it_is_ordered_as_it_is_now(client: Client, kafka, change: dict):
    dish = DishFactory(name="Margherita", price=Decimal("8.50"), food_cost=Decimal("2.40"))
    place_order(client, {dish: 1})  # read into the process's copy of the menu
    Dish.objects.filter(pk=dish.pk).update(**change)  # staff change it, in another process
    now = Dish.objects.get(pk=dish.pk)

    order = Order.objects.get(pk=place_order(client, {dish: 2}))

    [line] = order.lines.all()
    assert (line.name, line.unit_price, line.unit_cost) == (now.name, now.price, now.food_cost)
    assert order.total == 2 * now.price
    [event] = [decode_message(m).payload for m in kafka.read_topic("orders") if m.key() == str(order.pk).encode()]
    [event_line] = event.lines
    assert (event_line.name, event_line.unit_price, event_line.unit_cost) == (now.name, now.price, now.food_cost)
    assert event.total == order.total


def test_a_dish_taken_off_the_menu_since_the_process_read_it_is_refused(client: Client, kafka):
    dish = DishFactory()
    place_order(client, {dish: 1})
    Dish.objects.filter(pk=dish.pk).update(is_available=False)

    response = client.post("/", order_form(dish, 1))

    assert response.status_code == 400
    assert "Unknown dish" in response.content.decode()
    assert Order.objects.count() == OutboxEvent.objects.count() == 1  # the first order only
    assert len(kafka.read_topic("orders")) == 1
