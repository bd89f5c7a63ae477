"""ASGI entry point (daphne): Django's views over HTTP, the live pages' websockets.

The one place that routes both, so the one that gives each app's socket (live.sockets) the
HTTP application its pages are read through."""

import asyncio
import gc
import os
import time
from concurrent.futures import ThreadPoolExecutor

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")
django.setup(set_prefix=False)  # first: the imports below need the apps loaded

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core import signals  # noqa: E402
from django.core.exceptions import RequestAborted  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.core.handlers.asgi import get_script_prefix as script_prefix_of  # noqa: E402
from django.core.handlers.base import BaseHandler  # noqa: E402
from django.http import HttpResponseBase  # noqa: E402
from django.urls import Resolver404, path, re_path, resolve, set_script_prefix  # noqa: E402

from deliveries.sockets import CourierSocket  # noqa: E402
from live.handshake import NoStreamSocket, SiteOnly  # noqa: E402
from orders.sockets import OrderSocket  # noqa: E402
from stats.sockets import StatsSocket  # noqa: E402


class OneThreadASGIHandler(ASGIHandler):
    """Django's ASGI handler, running every request's sync code in a fixed set of threads
    per process (settings.WEB_SYNC_THREADS: one on SQLite, a few on PostgreSQL), in one
    switch to that thread per request.

    Threads: Django's own handler gives each request a thread of its own (a fresh thread, so
    a fresh database connection, per request). On SQLite those threads then fight for the
    one write lock, and a loser sleeps in SQLite's busy handler: under 32 concurrent clients
    the order page's p99 was 1.45 s. One thread keeps one connection and queues requests
    fairly (bench/web_bench.py: trivial view 438 -> 773 req/s, orders 137 -> 238 req/s, p99
    of orders 1.45 s -> 0.28 s). PostgreSQL has no such lock, but one thread waits out every
    round trip and every commit's flush alone: a few threads, each keeping its connection
    (CONN_MAX_AGE), overlap those waits, and their commits share one flush (see
    bench/README.md). A request goes to the thread with the fewest requests under way.

    One switch: Django's async path runs each sync middleware's process_request and
    process_response, and each process_view, through sync_to_async of its own: about fifteen
    switches between the event loop and the thread for every page, each a wake-up of two
    threads and a hand-over of the GIL. A request for a sync view (all of ours but one) runs
    instead the whole sync chain, as under WSGI, with the request's start and end signals,
    in one switch (bench/README.md, "Web"). Async views (stats.views.dashboard,
    whose Kafka view may wait seconds for a broker that is down) keep Django's async path, so
    they wait on the loop, not on a thread others queue for; so do static files (a dictionary
    look-up on the loop, foodsite.static_files).

    The price: a slow sync view holds up the requests queued on its thread, so views that
    wait on something else than the database are async. Scale a site with more web
    processes, not threads."""

    def __init__(self, threads: int | None = None) -> None:
        super().__init__()  # the async chain: async views and static files
        count = threads if threads is not None else settings.WEB_SYNC_THREADS
        self._threads = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"django-{n}") for n in range(count)]
        self._busy = [0] * count
        self._sync_chain = BaseHandler()  # the same middleware, built as under WSGI
        self._sync_chain.load_middleware(is_async=False)
        self._static_prefix = f"/{settings.STATIC_URL.lstrip('/')}"

    async def __call__(self, scope: dict, receive, send) -> None:
        # As ASGIHandler.__call__, but its per-request ThreadSensitiveContext runs the sync
        # code on one of our long-lived threads instead of a new one.
        if settings.SERVER_TIMING:
            send = _with_handler_timing(send, time.perf_counter())
        lane = min(range(len(self._threads)), key=self._busy.__getitem__)
        self._busy[lane] += 1
        try:
            async with ThreadSensitiveContext(executor=self._threads[lane]):
                await _to_its_end(self.handle(scope, receive, send), grace=CANCELLED_REQUEST_GRACE)
        finally:
            self._busy[lane] -= 1

    async def handle(self, scope: dict, receive, send) -> None:
        script_name = script_prefix_of(scope)
        path_info = scope["path"].removeprefix(script_name) if script_name else scope["path"]
        if path_info.startswith(self._static_prefix) or _is_async_view(path_info):
            await super().handle(scope, receive, send)  # on the loop, as Django does it
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        set_script_prefix(script_name)
        try:
            response = await sync_to_async(self._respond, thread_sensitive=True)(scope, body_file)
            await self.send_response(response, send)
            if response.streaming:  # its iterator ran while sending: its end comes after it
                await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            body_file.close()

    def _respond(self, scope: dict, body_file) -> HttpResponseBase:
        """A request to a sync view, start to end, on the lane's thread: the request_started
        signal, the request, the whole middleware chain and the view and, for a response whose
        body is rendered already, the request's end (response.close(): request_finished, the
        connections' age check). Django ends it after the bytes are sent, in a switch of its
        own; nothing of the request is needed to send them."""
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, error_response = self.create_request(scope, body_file)
        if request is None:
            response = error_response
        else:
            response = self._sync_chain.get_response(request)
            response._handler_class = self.__class__
        if not response.streaming:
            response.close()
        return response


# How long a request daphne cancels (it is stopping, or the client left long ago) may still
# take to end by itself: within the launcher's 15 s for a process to stop.
CANCELLED_REQUEST_GRACE = 5.0


async def _to_its_end(request, grace: float) -> None:
    """Await `request`; when cancelled, give it `grace` seconds to end before cancelling it.

    A cancel reaches the coroutine it is sent to, not the tasks that coroutine started.
    Django's async path (static files, async views) runs each request in two tasks of its
    own; had the request's ThreadSensitiveContext ended with the cancel, they would still
    call its lane afterwards, which asgiref refuses: "ThreadSensitiveContext has exited",
    logged as a 500 for a CSS file when daphne stopped with a page still loading. Ending the
    request inside its context also lets one under way at SIGTERM answer."""
    handling = asyncio.ensure_future(request)
    try:
        await asyncio.shield(handling)
    except asyncio.CancelledError:
        _, pending = await asyncio.wait({handling}, timeout=grace)
        if pending:
            handling.cancel()
            await asyncio.gather(handling, return_exceptions=True)
        raise


def _with_handler_timing(send, started: float):
    """`send`, adding to the response's headers the time from this handler's start to its
    answer (`Server-Timing: handler;dur=<ms>;desc="<its start, epoch seconds>"`): with the view's own (`app`, timed by
    observability.metrics.RequestMetricsMiddleware), a client can tell its wait inside the
    view, inside the web process around it (waiting for a thread, reading the body), and
    outside (daphne, the kernel, the client itself)."""

    # The wall clock too: a client on the same host can then tell its time before the
    # handler started (its send, the kernel, daphne) from its time after it answered.
    started_at = time.time()

    async def timed_send(message: dict) -> None:
        if message["type"] == "http.response.start":
            took = (time.perf_counter() - started) * 1000
            timing = f'handler;dur={took:.1f};desc="{started_at:.6f}"'
            message = {**message, "headers": [*message.get("headers", ()), (b"server-timing", timing.encode())]}
        await send(message)

    return timed_send


def _is_async_view(path_info: str) -> bool:
    try:
        return iscoroutinefunction(resolve(path_info).func)
    except Resolver404:
        return False  # Django's 404, from the sync chain like any page


# Also what a live socket reads its page through (live.sockets.read_page).
http_application = OneThreadASGIHandler()

websocket_urlpatterns = [
    path("ws/courier/", CourierSocket.as_asgi(pages=http_application)),
    path("ws/stats/", StatsSocket.as_asgi(pages=http_application)),
    path("ws/orders/<uuid:order_id>/", OrderSocket.as_asgi(pages=http_application)),
    re_path(r"", NoStreamSocket.as_asgi()),  # refused; without it, Channels raises "No route found"
]

application = ProtocolTypeRouter(
    {
        "http": http_application,
        # Host and Origin checked against ALLOWED_HOSTS: another site's page cannot open a
        # socket with our visitor's cookies (websockets have no CSRF token).
        "websocket": SiteOnly(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Everything loaded so far (Django, the apps, the URL and template machinery) lives as long as
# the process: out of the collector's sight, a full collection walks only what requests
# create, which keeps its pause short under load.
gc.freeze()
