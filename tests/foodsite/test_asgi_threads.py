"""Django's sync code runs on the web process's fixed threads (foodsite.asgi): the same thread
from one request to the next (so its database connection is kept), and a request waiting on
one thread does not hold up another when there are two."""

from __future__ import annotations

import asyncio
import threading

from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_started

from foodsite.asgi import OneThreadASGIHandler

SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/healthz",
    "raw_path": b"/healthz",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1")],
    "client": ("127.0.0.1", 50000),
    "server": ("127.0.0.1", 8000),
}


async def get(handler: OneThreadASGIHandler) -> int:
    communicator = ApplicationCommunicator(handler, dict(SCOPE))
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(timeout=20)
    await communicator.receive_output(timeout=20)  # the body
    return start["status"]


def test_requests_one_after_another_run_on_the_same_thread(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    threads: list[int] = []

    def note_thread(**_: object) -> None:
        threads.append(threading.get_ident())

    request_started.connect(note_thread)
    try:
        handler = OneThreadASGIHandler(threads=1)

        async def three() -> list[int]:
            return [await get(handler) for _ in range(3)]

        assert asyncio.run(three()) == [200, 200, 200]
    finally:
        request_started.disconnect(note_thread)
    assert len(threads) == 3
    assert len(set(threads)) == 1
    assert threads[0] != threading.get_ident()


def test_a_request_held_on_one_thread_does_not_hold_up_the_next_on_another(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    release = threading.Event()
    threads: list[int] = []

    def hold_the_first(**_: object) -> None:
        threads.append(threading.get_ident())
        if len(threads) == 1:
            assert release.wait(20), "never released"

    request_started.connect(hold_the_first)
    try:
        handler = OneThreadASGIHandler(threads=2)

        async def two() -> tuple[int, int]:
            first = asyncio.ensure_future(get(handler))
            await asyncio.sleep(0.2)  # the first is now held in its thread
            second = await get(handler)  # answered while the first still waits
            release.set()
            return await first, second

        assert asyncio.run(two()) == (200, 200)
    finally:
        release.set()
        request_started.disconnect(hold_the_first)
    assert len(set(threads)) == 2
