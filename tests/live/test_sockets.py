"""The live pages' websockets: who may follow which stream; a socket's whole page first, as
its browser would GET it; then a notice announced on the real broker reaching the right
sockets through this process's bridge and feed as the rows it names, only those its user
may see; changes coalesced; nothing once that browser may no longer read the page."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from confluent_kafka import Producer
from django.conf import settings

from deliveries.models import Delivery
from foodsite.asgi import application
from harness.factories import CourierFactory, DeliveryFactory, DishFactory, StaffFactory, UserFactory
from harness.web import logged_in, place_order
from live.bridge import stop_bridge
from live.notices import announce
from orders.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _stop_bridge():
    yield
    stop_bridge()  # it reads the broker and topics of this test only


def headers(client=None, origin: str = "http://127.0.0.1:8000") -> list[tuple[bytes, bytes]]:
    cookies = "; ".join(f"{name}={morsel.value}" for name, morsel in (client.cookies if client else {}).items())
    return [(b"origin", origin.encode()), (b"host", b"127.0.0.1:8000"), (b"cookie", cookies.encode())]


def may_connect(path: str, client=None, origin: str = "http://127.0.0.1:8000") -> bool:
    async def attempt() -> bool:
        communicator = WebsocketCommunicator(application, path, headers(client, origin))
        connected, _ = await communicator.connect(timeout=5)
        await communicator.disconnect()
        return connected

    return async_to_sync(attempt)()


def test_only_couriers_get_the_courier_stream(client):
    assert not may_connect("/ws/courier/")
    assert not may_connect("/ws/courier/", logged_in(UserFactory()))
    assert may_connect("/ws/courier/", logged_in(CourierFactory()))


def test_only_staff_get_the_stats_stream():
    assert not may_connect("/ws/stats/")
    assert not may_connect("/ws/stats/", logged_in(CourierFactory()))
    assert may_connect("/ws/stats/", logged_in(StaffFactory()))


def test_a_customer_gets_only_their_own_order(client, kafka):
    order_id = place_order(client, {DishFactory(): 1})
    stranger = logged_in(UserFactory())
    stranger.get("/")  # a session of its own

    assert may_connect(f"/ws/orders/{order_id}/", client)
    assert not may_connect(f"/ws/orders/{order_id}/")
    assert not may_connect(f"/ws/orders/{order_id}/", stranger)
    assert may_connect(f"/ws/orders/{order_id}/", logged_in(StaffFactory()))


def test_a_socket_from_another_site_is_refused():
    assert not may_connect("/ws/courier/", logged_in(CourierFactory()), origin="https://evil.example")


async def connected(path: str, client) -> WebsocketCommunicator:
    """An open socket whose first frame, its whole page, has been read."""
    communicator = WebsocketCommunicator(application, path, headers(client))
    assert (await communicator.connect(timeout=5))[0]
    first = await communicator.receive_json_from(timeout=10)
    assert set(first) == {"page"}
    return communicator


async def announce_until_received(communicator: WebsocketCommunicator, changes: dict) -> dict:
    """Announce `changes` on the broker until the socket gets a frame: the bridge starts
    reading at the topic's end when the first socket opens."""
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
    deadline = time.monotonic() + 20
    while True:
        announce(producer, changes)
        producer.flush(5)
        # (receive_nothing, not a receive with a timeout: that one kills the socket)
        if not await communicator.receive_nothing(timeout=0.5):
            return await communicator.receive_json_from()
        assert time.monotonic() < deadline, f"no frame for {changes}"


def test_a_socket_first_gets_its_whole_page_as_its_browser_would(client):
    courier = logged_in(CourierFactory())
    delivery = DeliveryFactory(customer_name="Ada of the first page")

    async def scenario() -> dict:
        communicator = WebsocketCommunicator(application, "/ws/courier/", headers(courier))
        assert (await communicator.connect(timeout=5))[0]
        first = await communicator.receive_json_from(timeout=10)
        await communicator.disconnect()
        return first

    page = async_to_sync(scenario)()["page"]
    assert 'data-live-list="open-deliveries"' in page
    assert f'data-live-id="{delivery.order_id}"' in page
    assert "Ada of the first page" in page


def test_a_notice_on_kafka_brings_the_rows_it_names_to_the_streams_sockets_only(kafka):
    courier, staff = logged_in(CourierFactory()), logged_in(StaffFactory())
    shown = DeliveryFactory(customer_name="Ada before")
    DeliveryFactory(customer_name="Bob unchanged")  # listed too, not named by the notice

    async def scenario() -> tuple[dict, bool]:
        on_courier = await connected("/ws/courier/", courier)
        on_stats = await connected("/ws/stats/", staff)
        await database_sync_to_async(Delivery.objects.filter(pk=shown.pk).update)(customer_name="Ada after")
        received = await announce_until_received(on_courier, {"courier": {str(shown.order_id)}})
        stats_got_one = not await on_stats.receive_nothing(timeout=1)
        await on_courier.disconnect()
        await on_stats.disconnect()
        return received, stats_got_one

    received, stats_got_one = async_to_sync(scenario)()
    # The row it names, in its new state, and nothing of the row it does not name.
    assert list(received["rows"]) == [str(shown.order_id)]
    assert "Ada after" in received["rows"][str(shown.order_id)]
    assert "Bob unchanged" not in str(received)
    assert not stats_got_one


def test_a_courier_gets_their_own_deliveries_and_never_another_couriers(kafka):
    ada, bob = CourierFactory(username="ada"), CourierFactory(username="bob")
    as_ada, as_bob = logged_in(ada), logged_in(bob)
    open_one = DeliveryFactory()
    adas = DeliveryFactory(customer_name="Customer of Ada")

    async def scenario() -> tuple[dict, dict]:
        on_ada = await connected("/ws/courier/", as_ada)
        on_bob = await connected("/ws/courier/", as_bob)
        await database_sync_to_async(Delivery.objects.filter(pk=adas.pk).update)(
            status=Delivery.Status.CLAIMED, courier=ada.username
        )
        changes = {"courier": {str(adas.order_id)}}
        to_ada = await announce_until_received(on_ada, changes)
        to_bob = await announce_until_received(on_bob, changes)
        await on_ada.disconnect()
        await on_bob.disconnect()
        return to_ada, to_bob

    to_ada, to_bob = async_to_sync(scenario)()
    assert to_ada["lists"] == {"open-deliveries": [str(open_one.order_id)], "my-deliveries": [str(adas.order_id)]}
    assert "Picked up" in to_ada["rows"][str(adas.order_id)]
    # Bob's page drops the row from the open ones, and gets nothing of it.
    assert to_bob["lists"] == {"open-deliveries": [str(open_one.order_id)], "my-deliveries": []}
    assert str(adas.order_id) not in str(to_bob.get("rows", {}))
    assert "Customer of Ada" not in str(to_bob)


def test_changes_faster_than_the_interval_are_sent_once_in_their_latest_state(kafka):
    courier = logged_in(CourierFactory())
    delivery = DeliveryFactory(customer_name="Version 0")
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})

    async def scenario() -> list[dict]:
        communicator = await connected("/ws/courier/", courier)
        await announce_until_received(communicator, {"courier": {str(delivery.order_id)}})  # the bridge reads
        for version in range(1, 31):
            await database_sync_to_async(Delivery.objects.filter(pk=delivery.pk).update)(
                customer_name=f"Version {version}"
            )
            announce(producer, {"courier": {str(delivery.order_id)}})
            producer.flush(5)
        frames = []
        while not await communicator.receive_nothing(timeout=1):
            frames.append(await communicator.receive_json_from())
        await communicator.disconnect()
        return frames

    frames = async_to_sync(scenario)()
    assert frames, "no frame for thirty changes"
    assert "Version 30" in frames[-1]["rows"][str(delivery.order_id)]
    assert len(frames) < 30  # coalesced: never a frame per notice


def test_an_order_page_gets_the_region_a_notice_names(client, kafka):
    order_id = place_order(client, {DishFactory(): 1})

    async def scenario() -> dict:
        communicator = await connected(f"/ws/orders/{order_id}/", client)
        await database_sync_to_async(Order.objects.filter(pk=order_id).update)(status=Order.Status.PAID)
        received = await announce_until_received(communicator, {f"order.{order_id}": {"order-status"}})
        await communicator.disconnect()
        return received

    received = async_to_sync(scenario)()
    assert list(received["regions"]) == ["order-status"]
    assert 'id="order-status">Paid<' in received["regions"]["order-status"]
    assert received["at"] > 0  # when the consumer committed: the benchmarks' start


def test_a_socket_whose_browser_logged_out_is_closed_before_it_sends(kafka, settings):
    settings.LIVE_RECHECK_SECONDS = 0  # re-read the session before every frame
    courier = logged_in(CourierFactory())
    delivery = DeliveryFactory(customer_name="Not for the logged out")

    async def scenario() -> dict:
        communicator = await connected("/ws/courier/", courier)
        await database_sync_to_async(courier.logout)()  # the socket stays open, its session is gone
        producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
        deadline = time.monotonic() + 20
        while await communicator.receive_nothing(timeout=0.5):
            announce(producer, {"courier": {str(delivery.order_id)}})
            producer.flush(5)
            assert time.monotonic() < deadline, "the socket neither sent nor closed"
        received = await communicator.receive_output()
        await communicator.wait()
        return received

    assert async_to_sync(scenario)() == {"type": "websocket.close", "code": 4403}
