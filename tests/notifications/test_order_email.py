"""The order form's optional email: it travels in `order.placed`, and a bad one is refused."""

from __future__ import annotations

import pytest

from eventing.projection import decode_message
from harness.factories import DishFactory
from harness.web import place_order
from orders.models import Order

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]


def test_the_email_is_stored_and_travels_in_the_order_event(client, kafka):
    with_email = place_order(client, {DishFactory(): 1}, email="ada@example.com")
    without = place_order(client, {DishFactory(): 1})

    events = {decode_message(m).payload.order_id: decode_message(m).payload for m in kafka.read_topic("orders")}

    assert events[with_email].email == "ada@example.com"
    assert events[without].email is None
    assert Order.objects.get(pk=with_email).email == "ada@example.com"
    assert Order.objects.get(pk=without).email == ""


def test_a_malformed_email_is_refused_on_the_form(client):
    dish = DishFactory()
    response = client.post(
        "/", {"customer_name": "Ada", "address": "Via Roma 1", "email": "ada@", f"qty-{dish.pk}": "1"}
    )

    assert response.status_code == 400
    assert "Enter a valid email address." in response.content.decode()
    assert not Order.objects.exists()
