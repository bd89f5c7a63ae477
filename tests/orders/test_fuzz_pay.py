"""An order's page and its pay form, fuzzed (harness/fuzz.py). The page answers its customer
(the browser whose signed cookie lists it) and staff, 403 to anyone else, 404 for no such
order; the pay form takes a valid card once (302), declines the test card (402), gives the
form back with each field's error (400); nobody else's request changes the order. On the real
broker: one payment event per payment recorded, none for a refused form."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date
from decimal import Decimal
from urllib.parse import quote

import pytest
from django.test import Client
from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness import fuzz
from harness.factories import DishFactory
from harness.web import GOOD_CARD
from orders import services
from orders.models import Order, Payment
from orders.selectors import ORDERS_COOKIE, orders_cookie_value

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]

# Who asks for an order's page: its customer (the cookie listing it), a customer whose cookie
# lists only their own orders, one with a forged cookie, a courier, staff, nobody.
ASKERS = ("owner", "other-customer", "forged-cookie", "anonymous", "courier", "staff")
DECLINED = "4000000000000002"


def new_order(dish) -> Order:
    return services.place_order(
        customer_name="Victoria", address="Via Verdi 3", items=[services.CartItem(dish_id=dish.pk, quantity=2)]
    )


def browser_of(order: Order, enforce_csrf: bool = False) -> Client:
    """The browser that placed `order`: its signed cookie lists it."""
    client = Client(enforce_csrf_checks=enforce_csrf)
    client.cookies[ORDERS_COOKIE] = orders_cookie_value([str(order.pk)])
    return client


def as_paid(order: Order) -> tuple:
    order.refresh_from_db()
    return order.status, sorted((p.succeeded, p.amount, p.card_last4) for p in order.payments.all())


def card_is_valid(post) -> bool:
    """What the pay form promises to take: a name, a card number of 12-19 ASCII digits (spaces and
    dashes allowed between) that passes Luhn's check, an expiry MM/YY not past, a 3-4 digit CVC."""
    holder, number = post.get("holder", "").strip(), re.sub(r"[ -]", "", post.get("number", "").strip())
    expiry, cvc = post.get("expiry", "").strip(), post.get("cvc", "").strip()
    if not holder or len(holder) > 100 or "\x00" in holder or len(post.get("number", "").strip()) > 23:
        return False
    if not re.fullmatch(r"[0-9]{12,19}", number) or not luhn(number):
        return False
    month_year = re.fullmatch(r"([0-9]{1,2})/([0-9]{2})", expiry)
    if not month_year or not 1 <= int(month_year[1]) <= 12:
        return False
    today = date.today()
    return (2000 + int(month_year[2]), int(month_year[1])) >= (today.year, today.month) and bool(
        re.fullmatch(r"[0-9]{3,4}", cvc)
    )


def luhn(number: str) -> bool:
    digits = [int(d) for d in reversed(number)]
    return sum(d if i % 2 == 0 else (d * 2 - 9 if d > 4 else d * 2) for i, d in enumerate(digits)) % 10 == 0


def test_an_orders_page_answers_its_customer_and_staff_and_refuses_everyone_else(kafka):
    dish = DishFactory(price=Decimal("8.50"))
    order = new_order(dish)
    before = as_paid(order)
    someone_else = browser_of(new_order(dish))
    visitors = fuzz.Visitors()
    clients = {
        "owner": browser_of(order),
        "other-customer": someone_else,
        "forged-cookie": Client(),
        "anonymous": Client(),
        "courier": visitors("courier"),
        "staff": visitors("staff"),
    }
    clients["forged-cookie"].cookies[ORDERS_COOKIE] = str(order.pk)  # the id without our signature

    @settings(max_examples=fuzz.examples(60))
    @given(
        who=st.sampled_from(ASKERS),
        method=fuzz.mostly(st.just("GET"), st.sampled_from(["POST", "PUT", "DELETE", "OPTIONS", "HEAD"])),
        params=fuzz.query({"page": fuzz.values(), "order": fuzz.values()}),
        path=fuzz.mostly(st.just(f"/orders/{order.pk}/"), fuzz.values().map(lambda v: f"/orders/{quote(v)}/"), odds=4),
    )
    # Found by this test (at 200 examples): a POST to an order's page was a 200, the page shown
    # as to a GET; the page now takes GET and HEAD only.
    @example(who="owner", method="POST", params=[], path=f"/orders/{order.pk}/")
    def attempt(who: str, method: str, params: list, path: str) -> None:
        response = fuzz.send(clients[who], fuzz.Shape(method, "urlencoded", "missing"), path, params=params)

        assert as_paid(order) == before
        if path != f"/orders/{order.pk}/":
            assert response.status_code == 404  # not an order's address, or no such order
        elif method not in ("GET", "HEAD"):
            fuzz.refused_with_a_reason(response)
        elif who in ("owner", "staff"):
            assert response.status_code == 200
            assert method == "HEAD" or str(order.pk) in fuzz.text_of(response)
        else:
            assert response.status_code == 403
            assert "Victoria" not in fuzz.text_of(response)

    attempt()


def test_the_pay_form_takes_a_valid_card_once_and_gives_any_other_back_with_the_fields_errors(kafka):
    dish = DishFactory(price=Decimal("8.50"))
    number = fuzz.numbers(
        "4242 4242 4242 4242", "4242424242424242", "4242-4242-4242-4242", DECLINED, "4242424242424241"
    )
    # Each field checked on its own: each field varies on its own.
    cards = fuzz.form(
        {
            "holder": fuzz.values("Ada Lovelace"),
            "number": fuzz.mostly(number, fuzz.digit_strings(12, 19), odds=1),  # a card's length, any digits
            "expiry": fuzz.numbers("12/39", "1/39", "01/20", "13/30", "12/3", "²/39"),
            "cvc": fuzz.numbers("123", "1234", "12", "²²²", "١٢٣"),
        },
    )
    visitors = fuzz.Visitors()

    @settings(max_examples=fuzz.examples(60))
    @given(
        card=cards, shape=fuzz.shapes(("POST",)), who=st.sampled_from(["owner", "staff"]), enforce_csrf=st.booleans()
    )
    # Found by this test: a card number with a Unicode digit that str.isdigit() takes and int() does
    # not ("²") was a 500 (ValueError in the Luhn check).
    @example(
        card={"number": ["00000000000²"]},
        shape=fuzz.Shape("POST", "urlencoded", "valid"),
        who="owner",
        enforce_csrf=False,
    )
    def attempt(card: dict, shape: fuzz.Shape, who: str, enforce_csrf: bool) -> None:
        order = new_order(dish)
        client = browser_of(order, enforce_csrf) if who == "owner" else visitors("staff", enforce_csrf)

        response = fuzz.send(client, shape, f"/orders/{order.pk}/pay/", card)

        status, payments = as_paid(order)
        if fuzz.csrf_refuses(shape, enforce_csrf):
            assert response.status_code == 403
        elif shape.method != "POST":
            assert response.status_code == 405
        post = response.wsgi_request.POST
        if response.status_code == 302:
            assert card_is_valid(post), f"{dict(post)} was taken"
            assert post["number"].replace(" ", "").replace("-", "") != DECLINED
            assert (status, payments) == (
                Order.Status.PAID,
                [(True, order.total, re.sub(r"[ -]", "", post["number"])[-4:])],
            )
            return
        if response.status_code == 402:
            assert card_is_valid(post)
            assert re.sub(r"[ -]", "", post["number"]) == DECLINED
            assert (status, payments) == (Order.Status.PLACED, [(False, order.total, "0002")])
            return
        assert (status, payments) == (Order.Status.PLACED, [])
        if response.status_code == 400:
            fuzz.form_errors_shown(response)
        else:
            fuzz.refused_with_a_reason(response)
        if shape.method == "POST" and not fuzz.csrf_refuses(shape, enforce_csrf):
            assert not card_is_valid(post), f"{dict(post)} is a valid card, refused with {response.status_code}"

    attempt()

    # One payment event per payment recorded (taken or declined), none for a refused form.
    payments = Counter(message.key().decode() for message in kafka.read_topic("payments"))
    assert payments == Counter(str(order_id) for order_id in Payment.objects.values_list("order_id", flat=True))


def test_nobody_but_its_customer_can_pay_an_order(kafka):
    dish = DishFactory(price=Decimal("8.50"))
    order = new_order(dish)
    someone_else = browser_of(new_order(dish))
    forged = Client()
    forged.cookies[ORDERS_COOKIE] = str(order.pk)
    clients = {"other-customer": someone_else, "forged-cookie": forged, "anonymous": Client()}
    clients["courier"] = fuzz.Visitors()("courier")

    @settings(max_examples=fuzz.examples(30))
    @given(
        card=fuzz.mutated(GOOD_CARD),
        shape=fuzz.shapes(("POST",)),
        who=st.sampled_from(sorted(clients)),
    )
    def attempt(card: dict, shape: fuzz.Shape, who: str) -> None:
        response = fuzz.send(clients[who], shape, f"/orders/{order.pk}/pay/", card)

        assert as_paid(order) == (Order.Status.PLACED, [])
        fuzz.refused_with_a_reason(response)
        if shape.method == "POST":
            assert response.status_code == 403
            assert "another browser" in fuzz.text_of(response)

    attempt()
    assert kafka.read_topic("payments") == []
