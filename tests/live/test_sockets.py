"""The live pages' websockets: who may follow which stream, and a notice announced on the
real broker reaching the right sockets through this process's bridge, with the page as that
socket's browser would GET it, or without it once that browser may no longer read it."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from confluent_kafka import Producer
from django.conf import settings

from foodsite.asgi import application
from harness.factories import CourierFactory, DeliveryFactory, DishFactory, StaffFactory, UserFactory
from harness.web import logged_in, place_order
from live.bridge import stop_bridge
from live.notices import announce

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


def announce_until_received(communicator: WebsocketCommunicator, stream: str) -> dict:
    """Announce `stream` on the broker until the socket gets a message: the bridge starts
    reading at the topic's end when the first socket opens."""

    async def receive() -> dict:
        producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})
        deadline = time.monotonic() + 20
        while True:
            announce(producer, {stream})
            producer.flush(5)
            # (receive_nothing, not a receive with a timeout: that one kills the socket)
            if not await communicator.receive_nothing(timeout=0.5):
                return await communicator.receive_json_from()
            assert time.monotonic() < deadline, f"the notice never reached the {stream} socket"

    return receive()


def test_a_notice_on_kafka_reaches_the_streams_sockets_only(client, kafka):
    courier, staff = logged_in(CourierFactory()), logged_in(StaffFactory())
    delivery = DeliveryFactory(customer_name="Ada of the notice")

    async def scenario() -> tuple[dict, bool]:
        on_courier = WebsocketCommunicator(application, "/ws/courier/", headers(courier))
        on_stats = WebsocketCommunicator(application, "/ws/stats/", headers(staff))
        assert (await on_courier.connect(timeout=5))[0]
        assert (await on_stats.connect(timeout=5))[0]
        received = await announce_until_received(on_courier, "courier")
        stats_got_one = not await on_stats.receive_nothing(timeout=1)
        await on_courier.disconnect()
        await on_stats.disconnect()
        return received, stats_got_one

    received, stats_got_one = async_to_sync(scenario)()
    assert received["stream"] == "courier"
    # The courier's page as the courier's browser would GET it, for live.js to swap in.
    assert 'data-live-region="deliveries"' in received["page"]
    assert f'data-order-id="{delivery.order_id}"' in received["page"]
    assert "Ada of the notice" in received["page"]
    assert not stats_got_one


def test_a_socket_whose_browser_logged_out_gets_no_page(kafka):
    courier = logged_in(CourierFactory())

    async def scenario() -> dict:
        communicator = WebsocketCommunicator(application, "/ws/courier/", headers(courier))
        assert (await communicator.connect(timeout=5))[0]
        await database_sync_to_async(courier.logout)()  # the socket stays open, its session is gone
        received = await announce_until_received(communicator, "courier")
        await communicator.disconnect()
        return received

    # Only the notice: the browser re-fetches and gets what a logged-out visitor gets.
    assert async_to_sync(scenario)() == {"stream": "courier"}
