"""ASGI entry point (daphne): Django's views over HTTP, the live pages' websockets."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")
django.setup(set_prefix=False)  # first: the imports below need the apps loaded

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.core.handlers.asgi import ASGIHandler  # noqa: E402
from django.urls import path  # noqa: E402

from foodsite.sockets import CourierSocket, OrderSocket, StatsSocket  # noqa: E402


class OneThreadASGIHandler(ASGIHandler):
    """Django's ASGI handler, running every request's sync code in one thread per process.

    Django's own gives each request a thread of its own (a fresh thread, so a fresh database
    connection, per request). On SQLite those threads then fight for the one write lock,
    and a loser sleeps in SQLite's busy handler: under 32 concurrent clients the order
    page's p99 was 1.45 s. One thread keeps one connection and queues requests fairly
    (bench/web_bench.py: trivial view 438 -> 773 req/s, orders 137 -> 238 req/s, p99 of
    orders 1.45 s -> 0.28 s). The price: a slow sync view holds up the others, so views
    that wait on something else than the database are async and wait off this thread
    (stats.views.dashboard, whose Kafka view may take seconds when the broker is down).
    Scale a site with more web processes, not threads."""

    async def __call__(self, scope: dict, receive, send) -> None:
        # As ASGIHandler.__call__, without its per-request ThreadSensitiveContext: sync code
        # then runs in asgiref's one thread-sensitive executor.
        await self.handle(scope, receive, send)


websocket_urlpatterns = [
    path("ws/courier/", CourierSocket.as_asgi()),
    path("ws/stats/", StatsSocket.as_asgi()),
    path("ws/orders/<uuid:order_id>/", OrderSocket.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": OneThreadASGIHandler(),
        # Origin checked against ALLOWED_HOSTS: another site's page cannot open a socket
        # with our visitor's cookies (websockets have no CSRF token).
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
