"""Placing and paying through the web, with the events checked on the real broker."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.conf import settings
from django.test import Client

from contract.events import CONTENT_TYPE_AVRO, CONTENT_TYPE_JSON, OrderPlaced, PaymentFailed, PaymentSucceeded
from eventing.projection import decode_message
from harness.factories import DishFactory
from harness.kafka_support import murmur2_partition
from harness.web import GOOD_CARD
from orders.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def place(client: Client, quantities: dict):
    data = {"customer_name": "Ada", "address": "Via Roma 1, Milano"}
    data.update({f"qty-{dish.pk}": str(q) for dish, q in quantities.items()})
    return client.post("/", data)


def order_id_from(response) -> str:
    return re.fullmatch(r"/orders/([0-9a-f-]+)/", response["Location"]).group(1)


def test_menu_lists_dishes_with_server_prices(client):
    DishFactory(name="Margherita", price=Decimal("8.50"))
    page = client.get("/").content.decode()
    assert "Margherita" in page
    assert "€ 8.50" in page


@pytest.mark.db_write
def test_placed_order_is_an_event_keyed_by_order_id_on_its_murmur2_partition(client, kafka):
    pizza = DishFactory(name="Margherita", price=Decimal("8.50"), food_cost=Decimal("2.40"))
    water = DishFactory(name="Acqua", price=Decimal("2.00"), food_cost=Decimal("0.40"))

    response = place(client, {pizza: 2, water: 1})

    assert response.status_code == 302
    order_id = order_id_from(response)
    [message] = kafka.read_topic("orders")
    assert message.key() == order_id.encode()
    assert message.partition() == murmur2_partition(order_id.encode(), kafka.partitions)
    expected_type = {"json": CONTENT_TYPE_JSON, "avro": CONTENT_TYPE_AVRO}[settings.EVENT_FORMAT]
    assert dict(message.headers())["content-type"].decode().startswith(expected_type)
    event = decode_message(message)
    assert isinstance(event.payload, OrderPlaced)
    assert event.payload.order_id == order_id
    assert event.payload.total == Decimal("19.00")
    assert [(ln.name, ln.quantity, ln.unit_price, ln.unit_cost) for ln in event.payload.lines] == [
        ("Margherita", 2, Decimal("8.50"), Decimal("2.40")),
        ("Acqua", 1, Decimal("2.00"), Decimal("0.40")),
    ]


def test_orders_spread_over_partitions_as_the_java_client_would(client, kafka):
    dish = DishFactory()
    order_ids = [order_id_from(place(client, {dish: 1})) for _ in range(12)]

    messages = kafka.read_topic("orders")

    placed = {m.key().decode(): m.partition() for m in messages}
    assert sorted(placed) == sorted(order_ids)
    assert placed == {oid: murmur2_partition(oid.encode(), kafka.partitions) for oid in order_ids}
    assert len(set(placed.values())) > 1


def test_payment_event_is_co_partitioned_with_its_order(client, kafka):
    dish = DishFactory(price=Decimal("12.00"))
    order_id = order_id_from(place(client, {dish: 3}))

    response = client.post(f"/orders/{order_id}/pay/", GOOD_CARD)

    assert response.status_code == 302
    assert Order.objects.get(pk=order_id).status == Order.Status.PAID
    [order_message] = kafka.read_topic("orders")
    [payment_message] = kafka.read_topic("payments")
    assert payment_message.key() == order_id.encode()
    assert payment_message.partition() == order_message.partition()
    payment = decode_message(payment_message).payload
    assert isinstance(payment, PaymentSucceeded)
    assert payment.amount == Decimal("36.00")
    assert payment.card_last4 == "4242"
    assert "Paid" in client.get(f"/orders/{order_id}/").content.decode()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ({"qty-999999": "1"}, "Unknown dish"),
        ({"qty-{dish}": "0"}, "must be between 1 and 50"),
        ({"qty-{dish}": "-2"}, "must be between 1 and 50"),
        ({"qty-{dish}": "51"}, "must be between 1 and 50"),
        ({"qty-{dish}": "10000000000000000000000"}, "must be between 1 and 50"),
        ({"qty-{dish}": "two"}, "must be a whole number"),
        ({}, "Your cart is empty"),
        ({"qty-{dish}": "1", "address": ""}, "This field is required"),
        ({"qty-{dish}": "1", "customer_name": ""}, "This field is required"),
        ({"qty-{dish}": "1", "price": "0.01"}, "Prices come from our menu"),
        ({"qty-{dish}": "1", "total": "1"}, "Prices come from our menu"),
    ],
    ids=[
        "unknown-dish",
        "zero",
        "negative",
        "over-50",
        "huge",
        "not-a-number",
        "empty-cart",
        "no-address",
        "no-name",
        "price-sent",
        "total-sent",
    ],
)
def test_bad_orders_are_refused_with_a_message_and_never_reach_kafka(client, kafka, case, expected):
    dish = DishFactory()
    data = {"customer_name": "Ada", "address": "Via Roma 1"}
    data.update({key.format(dish=dish.pk): value for key, value in case.items()})

    response = client.post("/", data)

    assert response.status_code == 400
    assert expected in response.content.decode()
    assert Order.objects.count() == 0
    assert kafka.read_topic("orders") == []


def test_a_refused_form_keeps_the_cart(client, kafka):
    dish = DishFactory()
    response = client.post("/", {"customer_name": "Ada", "address": "", f"qty-{dish.pk}": "3"})
    assert re.search(rf'name="qty-{dish.pk}"[^>]*value="3"', response.content.decode())


def test_unavailable_dish_cannot_be_ordered(client, kafka):
    dish = DishFactory(is_available=False)
    response = place(client, {dish: 1})
    assert response.status_code == 400
    assert "Unknown dish" in response.content.decode()


@pytest.mark.db_write
def test_paying_twice_is_refused_and_publishes_one_payment(client, kafka):
    dish = DishFactory()
    order_id = order_id_from(place(client, {dish: 1}))

    first = client.post(f"/orders/{order_id}/pay/", GOOD_CARD)
    second = client.post(f"/orders/{order_id}/pay/", GOOD_CARD)

    assert first.status_code == 302
    assert second.status_code == 409
    assert "already paid" in second.content.decode()
    assert len(kafka.read_topic("payments")) == 1


def test_someone_elses_order_can_be_neither_seen_nor_paid(client, kafka):
    dish = DishFactory()
    order_id = order_id_from(place(client, {dish: 1}))
    stranger = Client()

    assert stranger.get(f"/orders/{order_id}/").status_code == 403
    response = stranger.post(f"/orders/{order_id}/pay/", GOOD_CARD)

    assert response.status_code == 403
    assert "another browser" in response.content.decode()
    assert Order.objects.get(pk=order_id).status == Order.Status.PLACED
    assert kafka.read_topic("payments") == []


def test_a_forged_orders_cookie_owns_nothing(client, kafka):
    order_id = order_id_from(place(client, {DishFactory(): 1}))
    forger = Client()
    forger.cookies["orders"] = order_id  # the id without our signature
    assert forger.get(f"/orders/{order_id}/").status_code == 403
    forger.cookies["orders"] = client.cookies["orders"].value.replace(order_id[:8], "00000000")
    assert forger.get(f"/orders/{order_id}/").status_code == 403
    assert client.get(f"/orders/{order_id}/").status_code == 200


def test_unknown_order_is_a_404(client):
    assert client.get("/orders/00000000-0000-0000-0000-000000000000/").status_code == 404


@pytest.mark.parametrize(
    ("card", "expected"),
    [
        ({"number": "4242 4242 4242 4241"}, "not a valid card number"),
        ({"expiry": "13/30"}, "MM/YY"),
        ({"expiry": "01/20"}, "expired"),
        ({"cvc": "12a"}, "3 or 4 digits"),
        # Digits to str.isdigit(), and no card's: they were taken (a CVC "²²²", a month "٣").
        ({"cvc": "²²²"}, "3 or 4 digits"),
        ({"expiry": "٣/39"}, "MM/YY"),
        ({"expiry": "+3/39"}, "MM/YY"),
    ],
    ids=["luhn", "bad-month", "expired", "cvc", "cvc-superscript", "month-arabic-indic", "month-signed"],
)
def test_bad_card_details_are_refused_on_the_form(client, kafka, card, expected):
    order_id = order_id_from(place(client, {DishFactory(): 1}))
    response = client.post(f"/orders/{order_id}/pay/", {**GOOD_CARD, **card})
    assert response.status_code == 400
    assert expected in response.content.decode()
    assert kafka.read_topic("payments") == []


@pytest.mark.db_write
def test_a_declined_card_publishes_payment_failed_and_leaves_the_order_payable(client, kafka):
    order_id = order_id_from(place(client, {DishFactory(): 1}))

    response = client.post(f"/orders/{order_id}/pay/", {**GOOD_CARD, "number": "4000 0000 0000 0002"})

    assert response.status_code == 402
    assert "Card declined" in response.content.decode()
    [message] = kafka.read_topic("payments")
    assert isinstance(decode_message(message).payload, PaymentFailed)
    assert client.post(f"/orders/{order_id}/pay/", GOOD_CARD).status_code == 302


def test_forms_need_the_csrf_token(kafka):
    dish = DishFactory()
    client = Client(enforce_csrf_checks=True)
    response = client.post("/", {"customer_name": "Ada", "address": "x", f"qty-{dish.pk}": "1"})
    assert response.status_code == 403
    assert Order.objects.count() == 0
