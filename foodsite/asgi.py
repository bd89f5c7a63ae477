"""ASGI entry point (daphne): Django's views over HTTP, the live pages' websockets."""

import gc
import os
from concurrent.futures import ThreadPoolExecutor

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")
django.setup(set_prefix=False)  # first: the imports below need the apps loaded

from asgiref.sync import ThreadSensitiveContext  # noqa: E402
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.urls import path  # noqa: E402

from foodsite.sockets import CourierSocket, OrderSocket, StatsSocket  # noqa: E402


class OneThreadASGIHandler(ASGIHandler):
    """Django's ASGI handler, running every request's sync code in a fixed set of threads
    per process (settings.WEB_SYNC_THREADS: one on SQLite, a few on PostgreSQL).

    Django's own gives each request a thread of its own (a fresh thread, so a fresh database
    connection, per request). On SQLite those threads then fight for the one write lock,
    and a loser sleeps in SQLite's busy handler: under 32 concurrent clients the order
    page's p99 was 1.45 s. One thread keeps one connection and queues requests fairly
    (bench/web_bench.py: trivial view 438 -> 773 req/s, orders 137 -> 238 req/s, p99 of
    orders 1.45 s -> 0.28 s). PostgreSQL has no such lock, but one thread waits out every
    round trip and every commit's flush alone: a few threads, each keeping its connection
    (CONN_MAX_AGE), overlap those waits, and their commits share one flush (see
    bench/README.md). A request goes to the thread with the fewest requests under way.
    The price: a slow sync view holds up the requests queued on its thread, so views that
    wait on something else than the database are async and wait off these threads
    (stats.views.dashboard, whose Kafka view may take seconds when the broker is down).
    Scale a site with more web processes, not threads."""

    def __init__(self, threads: int | None = None) -> None:
        super().__init__()
        count = threads if threads is not None else settings.WEB_SYNC_THREADS
        self._threads = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"django-{n}") for n in range(count)]
        self._busy = [0] * count

    async def __call__(self, scope: dict, receive, send) -> None:
        # As ASGIHandler.__call__, but its per-request ThreadSensitiveContext runs the sync
        # code on one of our long-lived threads instead of a new one.
        lane = min(range(len(self._threads)), key=self._busy.__getitem__)
        self._busy[lane] += 1
        try:
            async with ThreadSensitiveContext(executor=self._threads[lane]):
                await self.handle(scope, receive, send)
        finally:
            self._busy[lane] -= 1


websocket_urlpatterns = [
    path("ws/courier/", CourierSocket.as_asgi()),
    path("ws/stats/", StatsSocket.as_asgi()),
    path("ws/orders/<uuid:order_id>/", OrderSocket.as_asgi()),
]

# Also what a live socket reads its page through (foodsite.sockets.read_page).
http_application = OneThreadASGIHandler()

application = ProtocolTypeRouter(
    {
        "http": http_application,
        # Origin checked against ALLOWED_HOSTS: another site's page cannot open a socket
        # with our visitor's cookies (websockets have no CSRF token).
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Everything loaded so far (Django, the apps, the URL and template machinery) lives as long as
# the process: out of the collector's sight, a full collection walks only what requests
# create, which keeps its pause short under load.
gc.freeze()
