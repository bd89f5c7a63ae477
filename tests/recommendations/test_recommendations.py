"""The recommendations service on the real broker: co-occurrence and "popular now" against
numbers counted by hand on a fixed set of orders, then the menu that shows them."""

from __future__ import annotations

import io
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import connections, transaction

from contract.events import Event, OrderLine, OrderPlaced
from eventing.producer import get_publisher
from eventing.projection import ConsumedEvent
from harness.browser import launch_chromium
from harness.factories import DishFactory
from harness.web import pay_order, place_order
from recommendations.models import DishPair
from recommendations.projection import RecommendationProjection
from recommendations.selectors import Partner, Popular, often_ordered_with, popular_now

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def menu():
    # Created in this order: ties are broken by the lower dish id.
    return {name: DishFactory(name=name) for name in ("Pizza", "Salad", "Beer", "Tiramisu", "Water")}


ORDERS = [  # the fixed set; pairs counted by hand below
    {"Pizza": 2, "Beer": 1},
    {"Pizza": 1, "Salad": 1, "Beer": 2},
    {"Salad": 1, "Water": 1},
    {"Pizza": 1, "Beer": 1, "Tiramisu": 1},
    {"Tiramisu": 2},
    {"Pizza": 1, "Salad": 1},
]
# Orders containing both dishes:
#   Pizza+Beer 1,2,4 = 3   Pizza+Salad 2,6 = 2   Salad+Beer 2 = 1   Salad+Water 3 (+ the old order) = 2
#   Pizza+Tiramisu 4 = 1   Beer+Tiramisu 4 = 1   every other pair 0
# Units in the last hour: Pizza 2+1+1+1 = 5, Beer 1+2+1 = 4, Salad 1+1+1 = 3, Tiramisu 1+2 = 3, Water 1


def place_fixed_orders(client, menu) -> None:
    for i, quantities in enumerate(ORDERS):
        order_id = place_order(client, {menu[name]: q for name, q in quantities.items()})
        if i % 2:
            pay_order(client, order_id)  # paid or not, an order says what goes together
    # An order from two hours ago: it still says Salad goes with Water, but is not "now".
    old = OrderPlaced(
        str(uuid.uuid4()),
        "Old",
        "Via Vecchia 1",
        [OrderLine(menu[n].pk, n, 5, Decimal("10"), Decimal("4")) for n in ("Salad", "Water")],
        Decimal("100"),
    )
    get_publisher().publish(Event(old, occurred_at=datetime.now(UTC) - timedelta(hours=2)))


def hand_counted(menu) -> tuple[dict, list]:
    ids = {name: dish.pk for name, dish in menu.items()}
    pizza, salad, beer, tiramisu, water = (ids[n] for n in ("Pizza", "Salad", "Beer", "Tiramisu", "Water"))
    often = {
        pizza: [Partner(beer, 3), Partner(salad, 2), Partner(tiramisu, 1)],
        salad: [Partner(pizza, 2), Partner(water, 2), Partner(beer, 1)],
        beer: [Partner(pizza, 3), Partner(salad, 1), Partner(tiramisu, 1)],
        tiramisu: [Partner(pizza, 1), Partner(beer, 1)],
        water: [Partner(salad, 2)],
    }
    popular = [Popular(pizza, 5), Popular(beer, 4), Popular(salad, 3), Popular(tiramisu, 3), Popular(water, 1)]
    return often, popular


@pytest.mark.db_write
def test_recommendations_match_co_occurrence_counted_by_hand_also_after_a_replay(client, kafka, menu):
    place_fixed_orders(client, menu)
    often, popular = hand_counted(menu)

    stats = kafka.drain(RecommendationProjection())

    assert stats.applied == 7  # order.placed only; payments are not read
    ids = [dish.pk for dish in menu.values()]
    assert often_ordered_with(ids, limit=3) == often
    assert popular_now(limit=10) == popular
    assert DishPair.objects.count() == 2 * 6  # six pairs, both directions

    progress = io.StringIO()
    call_command("consume_recommendations", "--replay", stdout=io.StringIO(), stderr=progress)

    assert "7/7 events" in progress.getvalue()
    assert often_ordered_with(ids, limit=3) == often
    assert popular_now(limit=10) == popular


@pytest.mark.db_write
def test_a_duplicate_order_event_counts_once(client, kafka, menu):
    place_order(client, {menu["Pizza"]: 1, menu["Beer"]: 1})
    [placed] = kafka.read_topic("orders")
    kafka.drain(RecommendationProjection())
    kafka.produce_raw("orders", placed.key(), placed.value(), placed.headers())  # the outbox relay sent it twice

    kafka.drain(RecommendationProjection())

    assert often_ordered_with([menu["Pizza"].pk]) == {menu["Pizza"].pk: [Partner(menu["Beer"].pk, 1)]}
    assert popular_now() == [Popular(menu["Pizza"].pk, 1), Popular(menu["Beer"].pk, 1)]  # a tie: lower id first


@pytest.mark.db_write
def test_the_menu_shows_popular_now_and_often_ordered_with_for_dishes_in_the_cart(client, kafka, menu):
    place_fixed_orders(client, menu)
    kafka.drain(RecommendationProjection())

    page = client.get("/").content.decode()

    popular = page[page.index('id="popular-now"') : page.index("</section>")]
    positions = [popular.index(f"{name} <span") for name in ("Pizza", "Beer", "Salad", "Tiramisu", "Water")]
    assert positions == sorted(positions)
    assert "5 ordered in the last 60 minutes" in popular
    pizza = menu["Pizza"].pk
    # Rendered for every dish, hidden while the dish is not in the cart (JavaScript shows it).
    assert f'data-often-with="{pizza}" hidden>Often ordered with Beer, Salad, Tiramisu<' in page

    # Without JavaScript: a form sent back (here: no name) shows the hints of the dishes in it.
    page = client.post("/", {"customer_name": "", "address": "x", f"qty-{pizza}": "2"}).content.decode()
    assert f'data-often-with="{pizza}">Often ordered with Beer, Salad, Tiramisu<' in page
    assert f'data-often-with="{menu["Water"].pk}" hidden>' in page


def test_the_menu_without_any_order_yet(client, menu):
    page = client.get("/").content.decode()
    assert "Nothing ordered in the last 60 minutes." in page
    assert "Often ordered with" not in page


def test_the_hint_appears_in_the_browser_when_a_quantity_is_typed(live_server, monkeypatch, menu):
    from playwright.sync_api import expect, sync_playwright

    pizza, beer = menu["Pizza"].pk, menu["Beer"].pk
    DishPair.objects.bulk_create(
        [DishPair(dish_a=pizza, dish_b=beer, orders=4), DishPair(dish_a=beer, dish_b=pizza, orders=4)]
    )
    # Playwright's sync API runs an event loop in this thread; the ORM is done by now.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            page = browser.new_page()
            page.goto(live_server.url)
            hint = page.locator(f'[data-often-with="{pizza}"]')
            expect(hint).to_be_hidden()
            page.get_by_label("How many Pizza").fill("2")
            expect(hint).to_be_visible()
            expect(hint).to_have_text("Often ordered with Beer")
            page.get_by_label("How many Pizza").fill("")
            expect(hint).to_be_hidden()
        finally:
            browser.close()


@pytest.mark.db_write
def test_two_copies_committing_the_same_pairs_at_once_count_them_all(transactional_db):
    """The cluster profile runs two copies of the service: their batches (other partitions,
    other orders) add to the same pair and bucket rows at the same instant, each in its own
    transaction. On PostgreSQL the rows are locked one by one as the upsert reaches them:
    the two must reach them in the same order, or each waits for the other (a deadlock)."""
    everything = list(range(1, 31))  # dish ids: 870 ordered pairs in one order

    def batch(first_dishes: list[int]) -> list[ConsumedEvent]:
        # The first order decides which pairs the batch meets first: opposite ends here.
        events = []
        for offset, dishes in enumerate([first_dishes, everything]):
            lines = [OrderLine(d, f"dish {d}", 1, Decimal("10"), Decimal("4")) for d in dishes]
            order = OrderPlaced(str(uuid.uuid4()), "Ada", "Via Roma 1", lines, Decimal(10 * len(dishes)))
            events.append(ConsumedEvent("orders", 0, offset, Event(order)))
        return events

    rounds = 3
    together = threading.Barrier(2)

    errors: list[Exception] = []

    def copy(first_dishes: list[int]) -> None:
        try:
            for _ in range(rounds):
                events = batch(first_dishes)
                together.wait(timeout=30)
                with transaction.atomic():
                    RecommendationProjection().apply(events)
        except threading.BrokenBarrierError:
            pass  # the other copy failed: its error is the one to see
        except Exception as exc:
            errors.append(exc)
            together.abort()
        finally:
            connections.close_all()  # this thread's connection

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(copy, [[1, 2], [29, 30]]))
    assert errors == []  # on PostgreSQL, a deadlock would be here

    counts = dict(((a, b), n) for a, b, n in DishPair.objects.values_list("dish_a", "dish_b", "orders"))
    assert counts[(1, 2)] == counts[(2, 1)] == counts[(29, 30)] == 3 * rounds  # a first order, both "everything"
    assert counts[(1, 30)] == counts[(15, 16)] == 2 * rounds  # in the two "everything" orders
    assert len(counts) == 30 * 29
