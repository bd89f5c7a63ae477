"""The courier pages and steps, fuzzed (harness/fuzz.py). The pages answer couriers (and staff,
who hold every permission), send anonymous visitors to log in and give anyone else a 403; a
step answers a redirect with the step sent, a 409 with the reason, a 404 for no such step.
Nobody's request moves another courier's delivery: on the real broker, no event for it."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from deliveries.models import Delivery
from deliveries.services import COURIER_STEPS
from eventing.projection import decode_message
from harness import fuzz
from harness.factories import DeliveryFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.db_write]


def projection_rows() -> list[tuple]:
    """The delivery service's table: the web only reads it (steps are events it consumes)."""
    return list(Delivery.objects.order_by("order_id").values_list("order_id", "status", "courier", "claimed_at"))


def test_the_courier_pages_answer_couriers_only_whatever_the_query(kafka):
    for _ in range(3):
        DeliveryFactory()
    visitors = fuzz.Visitors()
    before = projection_rows()

    @settings(max_examples=fuzz.examples(50))
    @given(
        who=st.sampled_from(fuzz.ACCOUNTS),
        path=st.sampled_from(["/courier/", "/courier/open/"]),
        method=fuzz.mostly(st.just("GET"), st.sampled_from(["POST", "PUT", "DELETE", "HEAD", "OPTIONS"])),
        params=fuzz.query({"page": fuzz.numbers("1", "2", "0", "-1", "last")}),
    )
    # Found by this test: the courier pages answered any method (a POST: 302 to log in, or the
    # page itself); they take GET and HEAD, and a 405 names them.
    @example(who="anonymous", path="/courier/", method="POST", params=[])
    @example(who="courier", path="/courier/open/", method="DELETE", params=[])
    def attempt(who: str, path: str, method: str, params: list) -> None:
        response = fuzz.send(visitors(who), fuzz.Shape(method, "urlencoded", "missing"), path, params=params)

        assert projection_rows() == before
        if method not in ("GET", "HEAD"):
            fuzz.refused_with_a_reason(response)
        elif who == "anonymous":
            fuzz.sent_to_log_in(response)
        elif who == "user":
            assert response.status_code == 403
        else:
            assert response.status_code == 200
            if method == "GET" and path == "/courier/open/":
                assert "3 open, oldest payment first" in fuzz.text_of(response)

    attempt()


def test_a_courier_step_moves_only_what_its_courier_may_move(kafka):
    open_delivery = DeliveryFactory()
    mine = DeliveryFactory(status=Delivery.Status.CLAIMED, courier="courier")
    brunos = DeliveryFactory(status=Delivery.Status.CLAIMED, courier="bruno")
    brunos_on_the_road = DeliveryFactory(status=Delivery.Status.OUT_FOR_DELIVERY, courier="bruno")
    unpaid = DeliveryFactory(paid_at=None)
    orders = {
        "open": open_delivery.order_id,
        "mine": mine.order_id,
        "brunos": brunos.order_id,
        "brunos-on-the-road": brunos_on_the_road.order_id,
        "unpaid": unpaid.order_id,
        "unknown": uuid.uuid4(),
    }
    visitors = fuzz.Visitors()
    before = projection_rows()
    steps = fuzz.mostly(st.sampled_from(sorted(COURIER_STEPS)), fuzz.values("fly", "CLAIM", "claim ").map(quote))

    @settings(max_examples=fuzz.examples(60))
    @given(
        who=st.sampled_from(fuzz.ACCOUNTS),
        order=st.sampled_from(sorted(orders)),
        step=steps,
        shape=fuzz.shapes(("POST",)),
        enforce_csrf=st.booleans(),
        data=fuzz.form({"courier": fuzz.values("bruno"), "order_id": fuzz.values(str(brunos.order_id))}),
    )
    # Another courier's delivery, the next step named in the form as theirs: refused, no event.
    @example(
        who="courier",
        order="brunos",
        step="pick-up",
        shape=fuzz.Shape("POST", "urlencoded", "valid"),
        enforce_csrf=True,
        data={"courier": ["bruno"]},
    )
    def attempt(who: str, order: str, step: str, shape: fuzz.Shape, enforce_csrf: bool, data: dict) -> None:
        client = visitors(who, enforce_csrf)
        path = f"/courier/{orders[order]}/{step}/"

        response = fuzz.send(client, shape, path, data)

        assert projection_rows() == before  # the web never writes the delivery service's table
        if response.status_code == 302 and who == "anonymous":
            assert response["Location"].startswith("/accounts/login/")
            return
        if response.status_code == 302:
            assert (shape.method, who, step) in {("POST", w, s) for w in ("courier", "staff") for s in COURIER_STEPS}
            # A claim of an open delivery, or the next step of the courier's own.
            assert (order, step) in {("open", "claim"), ("mine", "pick-up")}
            assert who == "courier" or order == "open"
            return
        fuzz.refused_with_a_reason(response)
        if response.status_code == 409:
            assert step in COURIER_STEPS
            assert order != "open" or step != "claim"

    attempt()

    # Bruno's deliveries got no event; every step on the topic is one its courier could send.
    events = [decode_message(m).payload for m in kafka.read_topic("delivery-status")]
    assert {str(brunos.order_id), str(brunos_on_the_road.order_id)}.isdisjoint(e.order_id for e in events)
    allowed = {
        ("DeliveryClaimed", str(open_delivery.order_id), "courier"),
        ("DeliveryClaimed", str(open_delivery.order_id), "staff"),
        ("DeliveryPickedUp", str(mine.order_id), "courier"),
    }
    assert {(type(e).__name__, e.order_id, e.courier) for e in events} <= allowed
