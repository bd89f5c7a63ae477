"""The live pages' websockets: who may follow which stream, and a notice announced on the
real broker reaching the right sockets through this process's bridge."""

from __future__ import annotations

import time

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from confluent_kafka import Producer
from django.conf import settings

from foodsite.asgi import application
from foodsite.live import announce, stop_bridge
from tests.factories import CourierFactory, DishFactory, StaffFactory, UserFactory
from tests.web import logged_in, place_order

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


def test_a_notice_on_kafka_reaches_the_streams_sockets_only(client, kafka):
    courier, staff = logged_in(CourierFactory()), logged_in(StaffFactory())
    producer = Producer({"bootstrap.servers": settings.KAFKA_BOOTSTRAP_SERVERS})

    async def scenario() -> tuple[dict, bool]:
        on_courier = WebsocketCommunicator(application, "/ws/courier/", headers(courier))
        on_stats = WebsocketCommunicator(application, "/ws/stats/", headers(staff))
        assert (await on_courier.connect(timeout=5))[0]
        assert (await on_stats.connect(timeout=5))[0]
        # The bridge starts reading at the topic's end when the first socket opens:
        # announce until it is listening.
        deadline = time.monotonic() + 20
        while True:
            announce(producer, {"courier"})
            producer.flush(5)
            # (receive_nothing, not a receive with a timeout: that one kills the socket)
            if not await on_courier.receive_nothing(timeout=0.5):
                received = await on_courier.receive_json_from()
                break
            assert time.monotonic() < deadline, "the notice never reached the courier socket"
        stats_got_one = not await on_stats.receive_nothing(timeout=1)
        await on_courier.disconnect()
        await on_stats.disconnect()
        return received, stats_got_one

    received, stats_got_one = async_to_sync(scenario)()
    assert received == {"stream": "courier"}
    assert not stats_got_one
