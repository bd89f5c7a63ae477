"""Drive the running site over real HTTP (requests), as a browser without JavaScript does."""

from __future__ import annotations

import re

import requests

CARD = {"holder": "Ada", "number": "4242424242424242", "expiry": "12/39", "cvc": "123"}


def form_fields(html: str) -> dict:
    return {
        "csrfmiddlewaretoken": re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1),
        "idempotency_key": re.search(r'name="idempotency_key" value="([^"]+)"', html).group(1),
    }


def order_and_pay(session: requests.Session, url: str) -> str:
    """Place a one-dish order and pay it; returns the order id. Each step must be answered
    with the redirect a customer gets when it worked."""
    menu = session.get(url).text
    dish = re.search(r'name="qty-(\d+)"', menu).group(1)
    placed = session.post(
        url,
        data={**form_fields(menu), "customer_name": "Ada", "address": "Via Roma 1", f"qty-{dish}": "1"},
        allow_redirects=False,
        timeout=10,
    )
    assert placed.status_code == 302, placed.text[:500]
    order_url = url + placed.headers["Location"]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', session.get(order_url).text).group(1)
    paid = session.post(
        f"{order_url}pay/", data={"csrfmiddlewaretoken": token, **CARD}, allow_redirects=False, timeout=10
    )
    assert paid.status_code == 302, paid.text[:500]
    return re.search(r"/orders/([0-9a-f-]+)/", order_url).group(1)


def logged_in(url: str, username: str, password: str = "foodsite-demo") -> requests.Session:
    session = requests.Session()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', session.get(f"{url}/accounts/login/").text)
    session.post(
        f"{url}/accounts/login/",
        data={"csrfmiddlewaretoken": token.group(1), "username": username, "password": password},
    )
    return session
