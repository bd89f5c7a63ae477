"""Django's sync code runs on the web process's fixed threads (foodsite.asgi): the same thread
from one request to the next (so its database connection is kept), a request waiting on
one thread does not hold up another when there are two, and a sync view's request is one
piece of work for its thread."""

from __future__ import annotations

import asyncio
import threading
import time

from asgiref.testing import ApplicationCommunicator
from django.core.signals import request_finished, request_started

from foodsite.asgi import OneThreadASGIHandler
from harness.load import SERVER_TIMING

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


async def get(handler: OneThreadASGIHandler, path: str = "/healthz") -> int:
    communicator = ApplicationCommunicator(handler, {**SCOPE, "path": path, "raw_path": path.encode()})
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


def test_a_request_to_a_sync_view_is_one_switch_to_its_thread(settings):
    """Signals, every middleware, the view and the request's end in one piece of work for the
    thread: Django's own async path hands it about fifteen, one per sync middleware method."""
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    handler = OneThreadASGIHandler(threads=1)
    lane = handler._threads[0]
    submitted: list[object] = []
    submit = lane.submit

    def counted_submit(fn, *args, **kwargs):
        submitted.append(fn)
        return submit(fn, *args, **kwargs)

    lane.submit = counted_submit
    started: list[int] = []
    finished: list[int] = []

    def note_started(**_: object) -> None:
        started.append(threading.get_ident())

    def note_finished(**_: object) -> None:
        finished.append(threading.get_ident())

    request_started.connect(note_started)
    request_finished.connect(note_finished)
    try:

        async def two() -> list[int]:
            return [await get(handler), await get(handler, path="/no-such-page")]

        assert asyncio.run(two()) == [200, 404]
    finally:
        request_started.disconnect(note_started)
        request_finished.disconnect(note_finished)
    assert len(submitted) == 2  # one per request
    assert len(set(started + finished)) == 1  # all on the lane's thread
    assert len(started) == len(finished) == 2


def test_a_post_body_reaches_the_view_through_the_one_switch(settings):
    """The body is read on the loop and parsed by the middleware on the thread: a POST
    without a CSRF cookie is refused by CsrfViewMiddleware with its reason, not a 500."""
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    handler = OneThreadASGIHandler(threads=1)

    async def post() -> tuple[int, bytes]:
        scope = {**SCOPE, "method": "POST", "path": "/", "raw_path": b"/"}
        scope["headers"] = [*SCOPE["headers"], (b"content-type", b"application/x-www-form-urlencoded")]
        communicator = ApplicationCommunicator(handler, scope)
        await communicator.send_input({"type": "http.request", "body": b"customer_name=A", "more_body": False})
        start = await communicator.receive_output(timeout=20)
        body = await communicator.receive_output(timeout=20)
        return start["status"], body["body"]

    status, body = asyncio.run(post())
    assert status == 403
    assert b"CSRF" in body


async def timing_of(handler: OneThreadASGIHandler, path: str) -> dict[str, float]:
    communicator = ApplicationCommunicator(handler, {**SCOPE, "path": path, "raw_path": path.encode()})
    await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await communicator.receive_output(timeout=20)
    await communicator.receive_output(timeout=20)
    values = b", ".join(value for name, value in start["headers"] if name.lower() == b"server-timing").decode()
    return {name: float(duration) for name, duration, _ in SERVER_TIMING.findall(values)}


def test_with_server_timing_on_an_answer_says_its_time_in_the_view_and_in_the_handler(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.SERVER_TIMING = True
    release = threading.Event()

    def hold_the_first(**_: object) -> None:
        if not release.is_set():
            release.set()
            threading.Event().wait(0.3)  # this request's thread is busy: the next one queues

    request_started.connect(hold_the_first)
    try:
        handler = OneThreadASGIHandler(threads=1)

        async def two() -> list[dict[str, float]]:
            return await asyncio.gather(timing_of(handler, "/healthz"), timing_of(handler, "/healthz"))

        first, second = asyncio.run(two())
    finally:
        request_started.disconnect(hold_the_first)
    for timing in (first, second):
        assert set(timing) == {"app", "handler"}
        assert timing["handler"] >= timing["app"]
    # The second waited for the one thread: in the handler, not in its view.
    waited = max(first["handler"] - first["app"], second["handler"] - second["app"])
    assert waited >= 250


def test_the_handler_says_when_it_started_on_the_wall_clock(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    settings.SERVER_TIMING = True

    async def one() -> bytes:
        communicator = ApplicationCommunicator(OneThreadASGIHandler(threads=1), SCOPE)
        await communicator.send_input({"type": "http.request", "body": b"", "more_body": False})
        start = await communicator.receive_output(timeout=20)
        await communicator.receive_output(timeout=20)
        return b", ".join(value for name, value in start["headers"] if name.lower() == b"server-timing")

    before = time.time()
    values = asyncio.run(one()).decode()
    after = time.time()
    [(_, _, started)] = [found for found in SERVER_TIMING.findall(values) if found[0] == "handler"]
    assert before <= float(started) <= after


def test_server_timing_is_off_by_default(settings):
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    assert asyncio.run(timing_of(OneThreadASGIHandler(threads=1), "/healthz")) == {}


def test_a_request_cancelled_while_it_waits_for_its_thread_still_ends_inside_its_context(settings, caplog):
    """Daphne cancels the requests still under way when it stops (and one whose client left
    long ago). Django's async path (static files, async views) runs a request in tasks of its
    own that the cancel does not reach: had the request's context ended with the cancel, they
    would call its thread afterwards, which asgiref refuses ("ThreadSensitiveContext has
    exited"), logged as a 500 for a plain CSS file (CI, test_ctrl_c_stops_every_process_cleanly)."""
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    handler = OneThreadASGIHandler(threads=1)
    release = threading.Event()

    def hold_the_thread_next(**_: object) -> None:
        # Queued behind this receiver: the thread is held once the request's tasks exist and
        # the first of them (SecurityMiddleware's process_request) waits for it.
        handler._threads[0].submit(release.wait, 20)

    request_started.connect(hold_the_thread_next)
    try:

        async def cancel_a_static_request() -> int:
            static = ApplicationCommunicator(
                handler, {**SCOPE, "path": "/static/foodsite/site.css", "raw_path": b"/static/foodsite/site.css"}
            )
            await static.send_input({"type": "http.request", "body": b"", "more_body": False})
            await asyncio.sleep(0.3)  # now waiting for the thread
            static.future.cancel()  # as daphne's kill_all_applications does
            await asyncio.sleep(0.1)
            release.set()
            answer = await static.receive_output(timeout=20)
            await asyncio.sleep(0.2)
            return answer["status"]

        with caplog.at_level("ERROR", logger="django.request"):
            assert asyncio.run(cancel_a_static_request()) == 200
    finally:
        release.set()
        request_started.disconnect(hold_the_thread_next)
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == []
