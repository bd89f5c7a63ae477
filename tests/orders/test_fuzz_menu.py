"""The menu and its order form, fuzzed (harness/fuzz.py): whatever a browser or a hand-made
client sends, and whoever sends it, the answer is the menu (GET), an order at the menu's
prices (302), the form back with its errors beside the fields (400), a 403 without a valid
CSRF token or a 405 for another method. Never a 500, never another customer's order, and on
the real broker one `order.placed` per order created, none for a refused form."""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal

import pytest
from django.http import QueryDict
from django.test import Client
from hypothesis import example, given, settings
from hypothesis import strategies as st

from harness import fuzz
from harness.factories import DishFactory
from orders.forms import PRICE_FIELDS, QUANTITY_PREFIX
from orders.models import Dish, Order
from orders.selectors import orders_in_cookie

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]

VICTIM = {"customer_name": "Victoria", "address": "Via Verdi 3", "email": "victoria@example.com"}
VICTIM_KEY = "f2b6d1c4a9e84b0f8c7d6e5f4a3b2c1d"


def menu_cart(post: QueryDict, menu: dict[int, Dish]) -> dict[int, int] | None:
    """The cart the page promises for this form (dish id -> quantity), or None where the form
    must be refused for it: a quantity field per dish of the menu (`qty-<its id>`, as the page
    writes it), a whole number from 1 to 50, empty meaning not in the cart; no price sent."""
    if any(key.startswith(PRICE_FIELDS) for key in post):
        return None
    cart = {}
    ids = {str(pk): pk for pk in menu}
    for key in post:
        if not key.startswith(QUANTITY_PREFIX) or not post[key].strip():
            continue
        dish = ids.get(key.removeprefix(QUANTITY_PREFIX))
        quantity = post[key].strip()
        whole = re.fullmatch(r"[+-]?[0-9]{1,9}", quantity)  # [0-9]: ASCII only, unlike \d
        if dish is None or not whole or not 1 <= int(quantity) <= 50:
            return None
        cart[dish] = int(quantity)
    return cart or None


def plainly_valid(post: QueryDict, menu: dict[int, Dish], used_keys: set[str]) -> bool:
    """A form no page could refuse: a cart, a printable name and address that fit, no email
    (an email's validity is Django's to say, not this test's), an idempotency key of no order yet."""
    name, address, key = post.get("customer_name", ""), post.get("address", ""), post.get("idempotency_key", "")
    return (
        menu_cart(post, menu) is not None
        and all(text.strip() and text.isascii() and text.isprintable() for text in (name, address))
        and len(name.strip()) <= 100
        and len(address.strip()) <= 300
        and not post.get("email", "")
        and len(key) <= 64
        and "\x00" not in key
        and key.strip() not in used_keys
    )


def orders_of(client: Client) -> list[str]:
    """The orders the client's signed cookie lists."""
    return orders_in_cookie({name: morsel.value for name, morsel in client.cookies.items()})


def order_as_placed(order: Order) -> tuple:
    """Everything of an order its customer would notice changed."""
    return (
        order.customer_name,
        order.address,
        order.email,
        order.status,
        order.total,
        sorted((line.dish_id, line.quantity, line.unit_price) for line in order.lines.all()),
        order.payments.count(),
    )


def test_whatever_is_posted_to_the_menu_gives_an_order_at_menu_prices_or_the_form_with_its_errors(kafka):
    on_menu = [DishFactory(price=Decimal("8.50")), DishFactory(price=Decimal("2.00"))]
    off_menu = DishFactory(is_available=False)
    menu = {dish.pk: dish for dish in on_menu}
    first = str(on_menu[0].pk)
    victim = Client()
    assert victim.post("/", {**VICTIM, f"qty-{first}": "2", "idempotency_key": VICTIM_KEY}).status_code == 302
    victim_order = Order.objects.get(idempotency_key=VICTIM_KEY)
    victim_before = order_as_placed(victim_order)

    def customer_with_an_order(client: Client) -> None:
        form = {"customer_name": ["Carla"], "address": ["Via Po 2"], f"qty-{on_menu[1].pk}": ["1"]}
        assert fuzz.send(client, fuzz.Shape("POST", "urlencoded", "valid"), "/", form).status_code == 302

    visitors = fuzz.Visitors(customer=customer_with_an_order)

    # A valid order with a few faults. The quantity fields a fault may touch: the menu's own,
    # the unavailable dish's, and the same numbers written otherwise (a leading zero, other
    # scripts' digits, not decimal at all), which name no field of the page.
    quantity = fuzz.numbers("1", "50", "51", "0")
    dish_keys = [str(on_menu[1].pk), str(off_menu.pk), f"0{first}", "²", "٣", "³", "0", "9" * 30]
    forms = fuzz.mutated(
        {"customer_name": "Ada", "address": "Via Roma 1", f"qty-{first}": "2"},
        {
            "customer_name": fuzz.values("Ada", "Zoë"),
            "address": fuzz.values("Via Roma 1"),
            "email": fuzz.values("ada@example.com", ""),
            "idempotency_key": fuzz.values(VICTIM_KEY, "a" * 64, ""),
            "price": fuzz.values("0.01"),
            **{f"qty-{key}": quantity for key in [first, *dish_keys]},
        },
    )

    @settings(max_examples=fuzz.examples(80))
    @given(
        data=forms,
        shape=fuzz.shapes(("POST",)),
        who=st.sampled_from(fuzz.WHO),
        enforce_csrf=st.booleans(),
    )
    # Found by this test: a key "qty-²" (a digit to str.isdigit(), not to int()) was a 500 (ValueError)
    # reading which dishes the cart names.
    @example(data={"qty-²": [""]}, shape=fuzz.Shape("POST", "urlencoded", "valid"), who="anonymous", enforce_csrf=False)
    # Found by this test: a bad hidden idempotency key (NUL, or over 64 characters) was refused
    # with an error the page never showed.
    @example(
        data={"idempotency_key": ["\x00"]},
        shape=fuzz.Shape("POST", "urlencoded", "valid"),
        who="anonymous",
        enforce_csrf=False,
    )
    # Found by this test: another order's idempotency key, sent with other details, gave back that
    # order (its customer's name, address and email) and put it in this browser's cookie, to pay.
    @example(
        data={
            "customer_name": ["Ada"],
            "address": ["Via Roma 1"],
            "qty-{first}": ["2"],
            "idempotency_key": [VICTIM_KEY],
        },
        shape=fuzz.Shape("POST", "urlencoded", "valid"),
        who="anonymous",
        enforce_csrf=False,
    )
    def attempt(data: dict, shape: fuzz.Shape, who: str, enforce_csrf: bool) -> None:
        data = {key.replace("{first}", first): vals for key, vals in data.items()}
        client = Client(enforce_csrf_checks=enforce_csrf) if who == "anonymous" else visitors(who, enforce_csrf)
        before = set(Order.objects.values_list("pk", flat=True))
        used_keys = set(Order.objects.exclude(idempotency_key=None).values_list("idempotency_key", flat=True))

        response = fuzz.send(client, shape, "/", data)

        created = list(Order.objects.exclude(pk__in=before))
        assert order_as_placed(Order.objects.get(pk=victim_order.pk)) == victim_before
        assert str(victim_order.pk) not in orders_of(client)
        csrf_refused = fuzz.csrf_refuses(shape, enforce_csrf)
        if shape.method == "POST" and not csrf_refused and plainly_valid(response.wsgi_request.POST, menu, used_keys):
            assert response.status_code == 302, fuzz.text_of(response)[:2000]
        if csrf_refused:
            assert response.status_code == 403
            assert "CSRF" in fuzz.text_of(response)
        elif shape.method not in ("GET", "POST"):
            assert response.status_code == 405
        elif shape.method == "GET":
            assert response.status_code == 200
            assert 'id="order-form"' in fuzz.text_of(response)
        if response.status_code != 302:
            assert created == []
            if shape.method == "POST" and response.status_code == 400 and response.context is not None:
                fuzz.form_errors_shown(response)
            elif response.status_code >= 400:
                fuzz.refused_with_a_reason(response)
            return

        assert shape.method == "POST"
        post = response.wsgi_request.POST
        order = Order.objects.get(pk=re.fullmatch(r"/orders/([0-9a-f-]+)/", response["Location"]).group(1))
        assert order.pk != victim_order.pk
        if created != [order]:  # the same form sent again (its key, its details): the order it placed
            assert created == []
            assert order.idempotency_key == post["idempotency_key"].strip()
            assert order.email == post.get("email", "").strip()
        cart = menu_cart(post, menu)
        assert cart is not None, f"{dict(post)} is not a cart the page offers, yet it was ordered"
        assert {line.dish_id: line.quantity for line in order.lines.all()} == cart
        assert order.total == sum(menu[dish].price * quantity for dish, quantity in cart.items())
        assert (order.customer_name, order.address) == (post["customer_name"].strip(), post["address"].strip())
        return

    attempt()

    # Every order the site took is on the topic exactly once; no refused form reached it.
    placed = Counter(message.key().decode() for message in kafka.read_topic("orders"))
    assert placed == Counter(str(pk) for pk in Order.objects.values_list("pk", flat=True))


def test_a_cart_holds_what_the_menus_quantity_fields_say_however_the_keys_are_written(kafka):
    """The quantity fields alone, each key written as the page writes it or otherwise, each value
    a number or not: an order holds exactly the dishes of the page's own fields, each 1 to 50,
    or the form comes back with the reason."""
    on_menu = [DishFactory(price=Decimal("8.50")), DishFactory(price=Decimal("2.00"))]
    menu = {dish.pk: dish for dish in on_menu}
    ids = [str(dish.pk) for dish in on_menu]
    written_otherwise = [f"0{ids[0]}", f"+{ids[0]}", f" {ids[0]}", f"{ids[0]}.0", "٣", "²", "0", str(2**63), "9" * 30]
    keys = fuzz.mostly(st.sampled_from(ids), st.sampled_from(written_otherwise), odds=1).map(QUANTITY_PREFIX.__add__)
    carts = st.dictionaries(keys, fuzz.numbers("1", "25", "50").map(lambda q: [q]), min_size=1, max_size=3)

    @settings(max_examples=fuzz.examples(40))
    @given(cart=carts)
    # Found by this test: a quantity "²" was refused, and then the form's page showing it back was a 500.
    @example(cart={"qty-{first}": ["²"]})
    # Found by this test: "qty-01" named dish 1, a field the page does not have; beside "qty-1" a cart
    # held the dish twice, 50 each (the limit is 50).
    @example(cart={"qty-{first}": ["50"], "qty-0{first}": ["50"]})
    def attempt(cart: dict[str, list[str]]) -> None:
        cart = {key.replace("{first}", ids[0]): vals for key, vals in cart.items()}
        before = set(Order.objects.values_list("pk", flat=True))
        form = {"customer_name": ["Ada"], "address": ["Via Roma 1"], **cart}

        response = fuzz.send(Client(), fuzz.Shape("POST", "urlencoded", "valid"), "/", form)

        created = list(Order.objects.exclude(pk__in=before))
        expected = menu_cart(response.wsgi_request.POST, menu)
        if expected is None:
            assert response.status_code == 400
            assert created == []
            fuzz.form_errors_shown(response)
            return
        assert response.status_code == 302
        [order] = created
        assert {line.dish_id: line.quantity for line in order.lines.all()} == expected

    attempt()
