"""Drive the site as a customer does, through the Django test client."""

from __future__ import annotations

import re

from django.test import Client

from harness.factories import PASSWORD

GOOD_CARD = {"holder": "Ada Lovelace", "number": "4242 4242 4242 4242", "expiry": "12/39", "cvc": "123"}


def place_order(
    client: Client, quantities: dict, name: str = "Ada", address: str = "Via Roma 1, Milano", email: str = ""
) -> str:
    data = {"customer_name": name, "address": address, "email": email}
    data.update({f"qty-{dish.pk}": str(quantity) for dish, quantity in quantities.items()})
    response = client.post("/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    return re.fullmatch(r"/orders/([0-9a-f-]+)/", response["Location"]).group(1)


def pay_order(client: Client, order_id: str) -> None:
    response = client.post(f"/orders/{order_id}/pay/", GOOD_CARD)
    assert response.status_code == 302, response.content.decode()[:2000]


def logged_in(user) -> Client:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return client
