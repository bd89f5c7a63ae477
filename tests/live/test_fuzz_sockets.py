"""Every live websocket fuzzed (Hypothesis), as each kind of user: anonymous, a customer with
and without the order's cookie, a courier, staff. Against the real ASGI application
(foodsite.asgi: the Host and Origin checks, the session, the routing) in-process, with
channels.testing, on the real database.

The properties: a socket its user may not follow (another page's stream, another order, an
order path that is not a uuid, a path that names no stream, a bad Origin or Host) is
refused at the handshake (HTTP 403); one it may follow survives whatever its browser sends
(text that is not JSON, other JSON, binary, empty, huge or NUL frames: ignored) and still
gets its live frames afterwards; no frame ever carries a row its user may not see; nothing
raises out of the application and nothing is logged at ERROR. A notice of any bytes on the
live-updates topic leaves the bridge reading.

The examples of a test share one event loop, in a thread, as daphne's sockets share
daphne's: the process's bridge then starts once, not once per example.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from confluent_kafka import Producer
from django.conf import settings
from hypothesis import event, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from deliveries.models import Delivery
from eventing.topics import topic_name
from foodsite.asgi import application
from harness.factories import CourierFactory, DeliveryFactory, StaffFactory, UserFactory
from harness.web import logged_in
from live import feeds
from live.bridge import stop_bridge
from live.notices import LIVE_UPDATES, announce, courier_stream, order_stream, read_notice, stats_stream
from orders.models import Order
from orders.selectors import ORDERS_COOKIE, orders_cookie_value
from stats.models import SalesTotals

pytestmark = pytest.mark.django_db(transaction=True)

SITE = b"http://127.0.0.1:8000"
HOST = b"127.0.0.1:8000"
COURIER, STATS = "/ws/courier/", "/ws/stats/"


# -- one event loop for a test's examples -------------------------------------------------------


class Loop:
    """An event loop in a thread of its own, for every socket of a test."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="test-sockets-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine, timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def close(self) -> None:
        stop_bridge()  # it reads the broker and topics of this test only
        self.run(_cancel_the_rest())  # as asyncio.run ends: no task is left pending on a closed loop
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


async def _cancel_the_rest() -> None:
    others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in others:
        task.cancel()
    await asyncio.gather(*others, return_exceptions=True)


@pytest.fixture
def loop(kafka) -> Iterator[Loop]:
    running = Loop()
    yield running
    running.close()


# -- who visits ------------------------------------------------------------------------------------


def cookie_header(client) -> str:
    return "; ".join(f"{name}={morsel.value}" for name, morsel in client.cookies.items())


def place_order(name: str = "Ada") -> str:
    return str(Order.objects.create(customer_name=name, address="Via Roma 1", total=Decimal("10.00")).pk)


@dataclass
class Site:
    order: str  # the owner's order
    other_order: str  # the other customer's
    cookies: dict[str, str] = field(default_factory=dict)  # who -> their Cookie header


@pytest.fixture
def site(loop) -> Site:
    order, other = place_order(), place_order("Bob")
    return Site(
        order,
        other,
        {
            "anonymous": "",
            "customer": cookie_header(logged_in(UserFactory())),  # logged in, no order, no role
            "owner": f"{ORDERS_COOKIE}={orders_cookie_value([order])}",
            "other customer": f"{ORDERS_COOKIE}={orders_cookie_value([other])}",
            "courier": cookie_header(logged_in(CourierFactory())),
            "staff": cookie_header(logged_in(StaffFactory())),
        },
    )


def headers(cookies: str, origin: bytes | None = SITE, host: bytes | None = HOST) -> list[tuple[bytes, bytes]]:
    found = [(b"cookie", cookies.encode())]
    if host is not None:
        found.append((b"host", host))
    if origin is not None:
        found.append((b"origin", origin))
    return found


def may_follow(site: Site, who: str, path: str) -> bool:
    """The rule of each page (and of its socket), written out."""
    if path == COURIER:
        return who in ("courier", "staff")  # the factories' staff is a superuser: every permission
    if path == STATS:
        return who == "staff"
    if path == f"/ws/orders/{site.order}/":
        return who in ("owner", "staff")
    if path == f"/ws/orders/{site.other_order}/":
        return who in ("other customer", "staff")
    return False


def no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing at ERROR, and no traceback at any level."""
    errors = [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    caplog.clear()
    assert not errors, errors


async def frames_until(communicator: WebsocketCommunicator, wanted, timeout: float = 20) -> list[dict]:
    """The frames the socket sends until one satisfies `wanted` (every one of them JSON the
    browser can parse); fails if none does within `timeout` (a bound, not a speed)."""
    frames = []
    deadline = time.monotonic() + timeout
    while True:
        assert time.monotonic() < deadline, f"no frame as wanted; got {[list(f) for f in frames]}"
        # (receive_nothing, not a receive with a timeout: that one kills the socket)
        if await communicator.receive_nothing(timeout=0.2):
            continue
        frames.append(browser_json(await communicator.receive_from()))
        if wanted(frames[-1]):
            return frames


def browser_json(text: str) -> dict:
    """A frame as live.js's JSON.parse reads it: no NaN or Infinity."""

    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a frame: JSON.parse refuses it")

    return json.loads(text, parse_constant=refuse)


async def opened(path: str, cookies: str) -> tuple[WebsocketCommunicator, dict]:
    """A socket its user may follow, and its first frame: the whole page."""
    communicator = WebsocketCommunicator(application, path, headers(cookies))
    connected, _ = await communicator.connect(timeout=10)
    assert connected, f"{path} refused"
    [page] = await frames_until(communicator, lambda frame: True)
    assert set(page) == {"page"}
    return communicator, page


# -- the handshake ----------------------------------------------------------------------------

WHO = ["anonymous", "customer", "owner", "other customer", "courier", "staff"]
near_uuids = st.sampled_from(
    [
        "not-a-uuid",
        "5F0C1D9E-0000-4000-8000-000000000001",  # the route takes lowercase only
        "5f0c1d9e000040008000000000000001",
        "{5f0c1d9e-0000-4000-8000-000000000001}",
        "5f0c1d9e-0000-4000-8000-00000000000",
        "..",
        "",
    ]
)
# Each about half the time one that passes, so that every combination comes up.
paths = st.sampled_from([COURIER, STATS, "order", "other order", "unknown order"]) | st.one_of(
    st.sampled_from(["/ws/courier", "/ws/", "/", "/ws/stats/x/", "/ws/orders/"]),
    near_uuids.map(lambda text: f"/ws/orders/{text}/"),
    # ("?", "#" and "%" would make the path the router sees another than the one written here)
    st.text(st.characters(exclude_characters="?#%"), max_size=30).map(lambda text: f"/ws/{text}"),
)
GOOD_ORIGINS = [SITE, b"http://localhost:8000", b"https://127.0.0.1"]
origins = st.sampled_from(GOOD_ORIGINS) | st.one_of(
    st.sampled_from(
        [
            None,
            b"",
            b"null",
            b"https://evil.example",
            b"http://127.0.0.1.evil.example",
            b"http://[",  # ValueError out of Channels' urlparse
            b"http://[::1",
            b"http://127.0.0.1:99999",  # a port that is not one
            b"http://127.0.0.1:abc",
            b"\xff\xfe",
        ]
    ),
    st.binary(max_size=20).map(lambda junk: b"http://evil-" + junk),
)
GOOD_HOSTS = [HOST, b"localhost", b"[::1]:8000"]
hosts = st.sampled_from(GOOD_HOSTS) | st.one_of(
    st.sampled_from([None, b"", b"evil.example", b"127.0.0.1.evil.example", b"\xff"]),
    st.binary(max_size=20).map(lambda junk: b"\xff" + junk),
)


def resolved(site: Site, path: str) -> str:
    return {
        "order": f"/ws/orders/{site.order}/",
        "other order": f"/ws/orders/{site.other_order}/",
        "unknown order": f"/ws/orders/{uuid.UUID(int=7)}/",
    }.get(path, path)


# Who may follow which page: the start of each handshake, which then has none, one or two of
# its parts changed (about a quarter stay allowed, and every kind of refusal comes up).
FOLLOWED = [("courier", COURIER), ("staff", COURIER), ("staff", STATS), ("owner", "order"), ("staff", "order")]
FOLLOWED += [("other customer", "other order")]


@st.composite
def handshakes(draw: st.DrawFn) -> tuple[str, str, bytes | None, bytes | None]:
    who, path = draw(st.sampled_from(FOLLOWED))
    origin, host = SITE, HOST
    for change in draw(st.sets(st.sampled_from(["who", "path", "origin", "host"]), max_size=2)):
        if change == "who":
            who = draw(st.sampled_from(WHO))
        elif change == "path":
            path = draw(paths)
        elif change == "origin":
            origin = draw(origins)
        else:
            host = draw(hosts)
    return who, path, origin, host


@given(handshakes())
@hypothesis_settings(max_examples=80)
# Found: each raised out of the application (daphne logs the traceback and drops the socket),
# or, for the Host, was accepted and then closed with an ERROR logged.
@example(("owner", "/ws/orders/not-a-uuid/", SITE, HOST))  # ValueError: No route found
@example(("staff", "/ws/nothing/", SITE, HOST))  # ValueError: No route found
@example(("courier", COURIER, b"http://[", HOST))  # ValueError: Invalid IPv6 URL
@example(("courier", COURIER, b"http://127.0.0.1:99999", HOST))  # was accepted
@example(("courier", COURIER, SITE, b"evil.example"))  # DisallowedHost logged at ERROR, after the accept
def test_a_socket_its_user_may_not_follow_is_refused_at_the_handshake(site, loop, caplog, handshake):
    who, path, origin, host = handshake
    path = resolved(site, path)
    allowed = origin in GOOD_ORIGINS and host in GOOD_HOSTS and may_follow(site, who, path)
    staff_on_no_order = (who, path) == ("staff", resolved(site, "unknown order"))

    async def shake_hands() -> tuple[bool, dict | None]:
        communicator = WebsocketCommunicator(application, path, headers(site.cookies[who], origin, host))
        connected, _ = await communicator.connect(timeout=10)
        first = await communicator.receive_output(timeout=20) if connected else None
        await communicator.disconnect()  # raises whatever the application raised
        return connected, first

    connected, first = loop.run(shake_hands())

    event("allowed" if allowed else "refused")
    if allowed:
        assert connected
        assert first["type"] == "websocket.send"
        assert "page" in json.loads(first["text"])
    elif staff_on_no_order and origin in GOOD_ORIGINS and host in GOOD_HOSTS:
        # Staff may follow any order's page; an order that does not exist has none: closed.
        assert connected
        assert first == {"type": "websocket.close", "code": 4403}
    else:
        assert not connected  # closed before the accept: the browser sees HTTP 403
    no_errors_logged(caplog)


# -- what a browser sends ---------------------------------------------------------------------


def text_message(text: str) -> dict:
    return {"type": "websocket.receive", "text": text}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
messages = st.one_of(
    st.text(max_size=40).map(text_message),  # mostly not JSON
    st.binary(min_size=1, max_size=40).map(lambda data: {"type": "websocket.receive", "bytes": data}),
    json_values.map(lambda value: text_message(json.dumps(value))),  # JSON, not always an object
    st.fixed_dictionaries({"want": json_values}).map(lambda value: text_message(json.dumps(value))),  # wrong types
    st.fixed_dictionaries({"type": st.text(max_size=10)}).map(lambda value: text_message(json.dumps(value))),
    st.sampled_from(
        [
            text_message("not json"),
            text_message("\x00"),
            text_message(""),
            text_message("[" * 100_000),  # RecursionError
            text_message("1" * 5000),  # past Python's 4300-digit limit
            text_message('{"want": "page"}' + " " * (1 << 20)),  # as large as daphne lets through
            text_message('{"want": "page"}'),  # what live.js sends: its whole page again
            {"type": "websocket.receive", "bytes": b"\x00" * 4096},
            {"type": "websocket.receive"},  # neither text nor bytes (the ASGI spec allows it)
            {"type": "websocket.receive", "text": None, "bytes": None},
        ]
    ),
)

PAGES = [("courier", COURIER), ("staff", STATS), ("owner", "order"), ("staff", "order")]
counter = iter(range(1_000_000))  # a change of its own per example


@dataclass
class LiveChange:
    """A change its page shows, made in the database, and the notice that names it."""

    stream: str
    parts: frozenset[str] | None
    shows: Any  # frame -> whether it carries the change


def make_change(site: Site, path: str, n: int) -> LiveChange:
    if path == COURIER:
        # The oldest payment of all: in the page's cut of the 20 oldest open deliveries.
        delivery = DeliveryFactory(customer_name=f"Change {n}", paid_at=datetime(2000, 1, 1, tzinfo=UTC) - timedelta(n))
        order_id = str(delivery.order_id)
        return LiveChange(
            courier_stream(),
            frozenset({order_id}),
            lambda frame: f"Change {n}" in frame.get("rows", {}).get(order_id, frame.get("page", "")),
        )
    if path == STATS:
        SalesTotals.objects.update_or_create(pk=1, defaults={"orders": 70_000 + n})
        shown = f'<strong id="stat-orders">{70_000 + n}</strong>'
        return LiveChange(stats_stream(), None, lambda frame: shown in str(frame.get("regions", frame.get("page"))))
    Order.objects.filter(pk=site.order).update(status=Order.Status.PAID)
    Delivery.objects.update_or_create(
        order_id=site.order, defaults={"status": Delivery.Status.CLAIMED, "courier": f"courier-{n}"}
    )
    return LiveChange(
        order_stream(site.order),
        frozenset({"order-status"}),
        lambda frame: f"with courier-{n}<" in str(frame.get("regions", frame.get("page"))),
    )


@given(page=st.sampled_from(PAGES), sent=st.lists(messages, min_size=1, max_size=6))
@hypothesis_settings(max_examples=24)
# Found: each raised out of the consumer, which ended the socket with a traceback.
@example(page=PAGES[0], sent=[text_message("not json")])  # JSONDecodeError
@example(page=PAGES[1], sent=[{"type": "websocket.receive", "bytes": b"\x00\x01"}])  # "No text section"
@example(page=PAGES[2], sent=[text_message("")])  # "No text section"
@example(page=PAGES[3], sent=[text_message("[" * 100_000)])  # RecursionError
@example(page=PAGES[0], sent=[text_message("1" * 5000)])  # ValueError: the 4300-digit limit
@example(page=PAGES[1], sent=[{"type": "websocket.receive"}])  # KeyError: 'bytes'
def test_an_allowed_socket_survives_what_its_browser_sends_and_still_gets_its_live_frames(
    site, loop, caplog, page, sent
):
    who, path = page
    path = resolved(site, path)
    n = next(counter)

    async def scenario() -> None:
        communicator, _ = await opened(path, site.cookies[who])
        for message in sent:
            await communicator.send_input(message)
        await communicator.receive_nothing(timeout=0.05)  # raises whatever the consumer raised
        change = await database_sync_to_async(make_change)(site, path, n)
        feeds.notify(change.stream, change.parts, time.time())  # what the bridge calls, on this loop
        await frames_until(communicator, change.shows)
        await communicator.disconnect()  # raises whatever the consumer raised

    loop.run(scenario())
    no_errors_logged(caplog)


def test_a_page_that_lost_track_gets_its_whole_page_again(site, loop, caplog):
    # live.js's one message. The socket called feeds.wake, which did not exist: AttributeError.
    async def scenario() -> dict:
        communicator, _ = await opened(COURIER, site.cookies["courier"])
        await communicator.send_input(text_message('{"want": "page"}'))
        [page] = await frames_until(communicator, lambda frame: True)
        await communicator.disconnect()
        return page

    assert 'data-live-list="open-deliveries"' in loop.run(scenario())["page"]
    no_errors_logged(caplog)


# -- no frame carries a row its user may not see ----------------------------------------------


@dataclass
class Couriers:
    """Two couriers' deliveries: the open ones both may see, each one's own under way."""

    open: list[str] = field(default_factory=list)
    own: dict[str, list[str]] = field(default_factory=lambda: {"ada": [], "bruno": []})
    claimed: dict[str, list[str]] = field(default_factory=lambda: {"ada": [], "bruno": []})  # once open

    def private_to(self, courier: str) -> set[str]:
        """What only `courier` may be shown: their own deliveries under way, with their
        customers' names (each row of its own)."""
        return {marker for order_id in self.own[courier] for marker in (order_id, f"Secret of {order_id}")}


UNDER_WAY = [Delivery.Status.CLAIMED, Delivery.Status.OUT_FOR_DELIVERY]


@pytest.fixture
def two_couriers(loop) -> dict[str, str]:
    """Their Cookie headers, logged in once for every example (a login hashes the password)."""
    return {name: cookie_header(logged_in(CourierFactory(username=name))) for name in ("ada", "bruno")}


def private_delivery(courier: str) -> str:
    order_id = uuid.uuid4()
    DeliveryFactory(
        order_id=order_id, customer_name=f"Secret of {order_id}", status=Delivery.Status.CLAIMED, courier=courier
    )
    return str(order_id)


steps = st.lists(
    st.one_of(
        st.tuples(st.just("open")),  # a new open delivery
        st.tuples(st.just("own"), st.sampled_from(["ada", "bruno"])),  # a courier's new own delivery
        st.tuples(st.just("step"), st.sampled_from(["ada", "bruno"]), st.integers(0, 3)),  # picked up / delivered
        st.tuples(st.just("claim"), st.sampled_from(["ada", "bruno"]), st.integers(0, 3)),  # an open one
        st.tuples(st.just("notice"), st.lists(st.integers(0, 8), max_size=4) | st.none()),  # names rows, or all
        st.tuples(st.just("want page"), st.sampled_from(["ada", "bruno"])),
        st.tuples(st.just("garbage"), st.sampled_from(["ada", "bruno"]), messages),
    ),
    min_size=1,
    max_size=10,
)


def take_step(state: Couriers, step: tuple) -> frozenset[str] | None | bool:
    """Make the step's change in the database; the parts of the notice to send (False: none)."""
    kind = step[0]
    if kind == "open":
        state.open.append(str(DeliveryFactory(customer_name="Open to all").order_id))
        return frozenset(state.open[-1:])
    if kind == "own":
        state.own[step[1]].append(private_delivery(step[1]))
        return frozenset(state.own[step[1]][-1:])
    if kind == "step" and state.own[step[1]]:
        order_id = state.own[step[1]][step[2] % len(state.own[step[1]])]
        delivery = Delivery.objects.get(order_id=order_id)
        delivery.status = (
            Delivery.Status.OUT_FOR_DELIVERY
            if delivery.status == Delivery.Status.CLAIMED
            else Delivery.Status.DELIVERED
        )
        delivery.save()
        return frozenset({order_id})
    if kind == "claim" and state.open:
        # An open delivery claimed: it was open to both, so either may have been shown it
        # until now; from now on it is its courier's (and no longer checked for the other).
        order_id = state.open.pop(step[2] % len(state.open))
        Delivery.objects.filter(order_id=order_id).update(status=Delivery.Status.CLAIMED, courier=step[1])
        state.claimed[step[1]].append(order_id)
        return frozenset({order_id})
    if kind == "notice":
        every = [*state.open, *state.own["ada"], *state.own["bruno"], "not-a-row", ""]
        return None if step[1] is None else frozenset(every[i % len(every)] for i in step[1])
    return False


@given(before=st.lists(st.sampled_from(["open", "ada", "bruno"]), max_size=4), steps=steps)
@hypothesis_settings(max_examples=15)
def test_a_courier_socket_never_carries_another_couriers_deliveries(loop, caplog, two_couriers, before, steps):
    as_courier = two_couriers
    Delivery.objects.all().delete()
    state = Couriers()
    for kind in before:
        if kind == "open":
            state.open.append(str(DeliveryFactory(customer_name="Open to all").order_id))
        else:
            state.own[kind].append(private_delivery(kind))

    async def scenario() -> dict[str, str]:
        sockets = {name: (await opened(COURIER, cookies))[0] for name, cookies in as_courier.items()}
        received: dict[str, list[dict]] = {name: [] for name in sockets}
        for step in steps:
            parts = await database_sync_to_async(take_step)(state, step)
            if parts is not False:
                feeds.notify(courier_stream(), parts, time.time())
            if step[0] == "want page":
                await sockets[step[1]].send_input(text_message('{"want": "page"}'))
            elif step[0] == "garbage":
                await sockets[step[1]].send_input(step[2])
        # The feeds ran their rounds between the steps (at every await): every frame they
        # sent is queued. Private rows are created private, so whenever a frame was read, it
        # must never show the other courier's.
        for name, communicator in sockets.items():
            while not await communicator.receive_nothing(timeout=0.1):
                received[name].append(browser_json(await communicator.receive_from()))
            other = "bruno" if name == "ada" else "ada"
            for frame in received[name]:
                shown = json.dumps(frame)
                leaked = [marker for marker in state.private_to(other) if marker in shown]
                assert not leaked, f"{name}'s socket got {other}'s {leaked}: {frame}"
        # The end, read after every change: the other courier's deliveries under way, those
        # claimed from the open ones too, are on neither the page nor its lists.
        final = {}
        for name, communicator in sockets.items():
            await communicator.send_input(text_message('{"want": "page"}'))
            final[name] = (await frames_until(communicator, lambda frame: "page" in frame))[-1]["page"]
            await communicator.disconnect()
        return final

    final = loop.run(scenario(), timeout=120)
    for name, page in final.items():
        own = Delivery.objects.filter(courier=name, status__in=UNDER_WAY).values_list("order_id", flat=True)
        assert all(str(order_id) in page for order_id in own)  # the check sees rows
        other = "bruno" if name == "ada" else "ada"
        theirs = Delivery.objects.filter(courier=other, status__in=UNDER_WAY).values_list("order_id", flat=True)
        assert not [order_id for order_id in theirs if str(order_id) in page]
        assert all(f'data-live-id="{order_id}"' in page for order_id in state.open)  # the check sees rows
    no_errors_logged(caplog)


@given(rounds=st.lists(st.sets(st.sampled_from(["mine", "theirs"]), min_size=1), min_size=1, max_size=5))
@hypothesis_settings(max_examples=10)
def test_an_order_socket_never_carries_another_orders_progress(site, loop, caplog, rounds):
    """Two customers' order pages: their rounds are read together, in one batch (a thousand
    order pages' reads are), and each socket must get its own order's part of it."""
    mine, theirs = site.order, site.other_order
    Order.objects.filter(pk__in=[mine, theirs]).update(status=Order.Status.PAID)

    async def scenario() -> tuple[list[dict], list[dict]]:
        own, _ = await opened(f"/ws/orders/{mine}/", site.cookies["owner"])
        other, _ = await opened(f"/ws/orders/{theirs}/", site.cookies["other customer"])
        received, theirs_received = [], []
        for n, named in enumerate(rounds):
            for order_id, courier in ((mine, f"mine-{n}"), (theirs, f"theirs-{n}")):
                await database_sync_to_async(Delivery.objects.update_or_create)(
                    order_id=order_id, defaults={"status": Delivery.Status.CLAIMED, "courier": courier}
                )
            for who in named:  # in the same tick: one batch of reads
                feeds.notify(order_stream(mine if who == "mine" else theirs), frozenset({"order-status"}), time.time())
            if "mine" in named:
                received.extend(await frames_until(own, lambda frame, n=n: f"with mine-{n}<" in json.dumps(frame)))
            if "theirs" in named:
                theirs_received.extend(
                    await frames_until(other, lambda frame, n=n: f"with theirs-{n}<" in json.dumps(frame))
                )
        await own.disconnect()
        await other.disconnect()
        return received, theirs_received

    received, theirs_received = loop.run(scenario(), timeout=120)
    assert received or theirs_received
    assert not [frame for frame in received if "theirs-" in json.dumps(frame)]
    assert not [frame for frame in theirs_received if "mine-" in json.dumps(frame)]
    no_errors_logged(caplog)


# -- notices on the live-updates topic -------------------------------------------------------------

notice_values = (
    st.binary(max_size=40)
    | json_values.map(lambda value: json.dumps(value).encode())
    | st.sampled_from(
        [b"[" * 100_000, b"9" * 400, b'{"at": ' + b"9" * 400 + b"}", b"1e400", b'{"at": NaN, "parts": []}', b"NaN"]
    )
)


@given(notice_values)
@example(b"[" * 100_000)  # RecursionError: stopped the bridge
@example(b"9" * 400)  # OverflowError: int too large to convert to float: stopped the bridge
@example(b'{"at": NaN, "parts": []}')  # a frame with "at": NaN, which JSON.parse refuses
def test_any_notice_is_read_or_means_the_whole_page(value):
    at, parts = read_notice(value)
    assert math.isfinite(at)
    assert parts is None or all(isinstance(part, str) for part in parts)


def test_garbage_on_the_live_topic_leaves_the_bridge_reading(kafka, loop, site, caplog):
    """Notices of any key and value, then a real one: the socket still gets its frame."""
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    garbage = [
        (b"\xff\xfe", b"{}"),  # a key that is not UTF-8: UnicodeDecodeError stopped the bridge
        (courier_stream().encode(), b"[" * 100_000),
        (courier_stream().encode(), b"9" * 400),
        (courier_stream().encode(), b'{"at": NaN}'),
        (None, b"no key"),
        (b"courier", None),
    ]

    async def scenario() -> list[dict]:
        communicator, _ = await opened(COURIER, site.cookies["courier"])
        change = await database_sync_to_async(make_change)(site, COURIER, next(counter))
        deadline = time.monotonic() + 30
        while True:  # the bridge reads from the topic's end once it is assigned: until it is
            for key, value in garbage:
                producer.produce(topic_name(LIVE_UPDATES), key=key, value=value)
            announce(producer, {change.stream: change.parts})
            producer.flush(10)
            frames = []
            while not await communicator.receive_nothing(timeout=0.5):
                frames.append(browser_json(await communicator.receive_from()))
            if any(change.shows(frame) for frame in frames):
                break
            assert time.monotonic() < deadline, "the bridge stopped reading: no frame for the notice"
        await communicator.disconnect()
        return frames

    loop.run(scenario(), timeout=60)
    no_errors_logged(caplog)
