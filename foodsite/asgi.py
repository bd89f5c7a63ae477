"""ASGI entry point (daphne): Django's views over HTTP, the live pages' websockets."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")
django_asgi_app = get_asgi_application()  # first: it sets Django up before the imports below

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.urls import path  # noqa: E402

from foodsite.sockets import CourierSocket, OrderSocket, StatsSocket  # noqa: E402

websocket_urlpatterns = [
    path("ws/courier/", CourierSocket.as_asgi()),
    path("ws/stats/", StatsSocket.as_asgi()),
    path("ws/orders/<uuid:order_id>/", OrderSocket.as_asgi()),
]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # Origin checked against ALLOWED_HOSTS: another site's page cannot open a socket
        # with our visitor's cookies (websockets have no CSRF token).
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
