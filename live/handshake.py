"""What a live socket's handshake must pass before any page's own check (live.sockets): a
Host that Django would serve, an Origin that is a URL of one of the site's hosts, and a path
that names a stream.

Websockets carry no CSRF token: the Origin is what keeps another site's page from opening a
socket with our visitor's cookies (Channels' AllowedHostsOriginValidator matches it against
ALLOWED_HOSTS). What Channels does not do, this does: an Origin it cannot parse ("http://[",
a port that is not one) raised ValueError out of the handshake instead of refusing it; a
Host outside ALLOWED_HOSTS was accepted, then the socket's first page read was Django's 400
(an ERROR line, django.security.DisallowedHost) and a close; a path no route matches (a
/ws/orders/ id that is not a uuid) raised ValueError ("No route found"). Each is now refused
before the handshake completes (the browser sees HTTP 403), with one INFO line.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlparse

from channels.generic.websocket import AsyncWebsocketConsumer
from channels.security.websocket import AllowedHostsOriginValidator, WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.sockets")

ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]


class SiteOnly:
    """The websocket application for the site's own pages only: a handshake with a Host
    Django would refuse, or an Origin that is not a URL of one of ALLOWED_HOSTS, is refused
    (HTTP 403) before `application` sees it."""

    def __init__(self, application: ASGIApp) -> None:
        self.application = AllowedHostsOriginValidator(application)

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        reason = handshake_refusal(scope)
        if reason is not None:
            log.info("live socket to %s refused: %s", _shown(scope.get("path", "")), reason)
            await WebsocketDenier()(scope, receive, send)
            return
        await self.application(scope, receive, send)


def handshake_refusal(scope: dict) -> str | None:
    """Why this handshake's Host or Origin is not the site's (None: they are; whether the
    Origin is one of ALLOWED_HOSTS is Channels' check, after this one)."""
    host = b""
    origins = []
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host = value
        elif name == b"origin":
            origins.append(value)
    text = host.decode("latin-1")
    domain, _ = split_domain_port(text)
    if not domain or not validate_host(domain, _allowed_hosts()):
        return f"Host {_shown(text)} is not one of ALLOWED_HOSTS"
    for origin in origins:
        try:
            parsed = urlparse(origin.decode("latin-1"))
            parsed.port  # noqa: B018 -- raises ValueError for a port that is not one
        except ValueError:
            return f"Origin {_shown(origin.decode('latin-1'))} is not a URL"
    return None


def _allowed_hosts() -> list[str]:
    # As Django's HttpRequest.get_host: with DEBUG and none set, the local names.
    if settings.DEBUG and not settings.ALLOWED_HOSTS:
        return [".localhost", "127.0.0.1", "[::1]"]
    return settings.ALLOWED_HOSTS


class NoStreamSocket(AsyncWebsocketConsumer):
    """Where a path that names no stream ends (the routing's last route): refused."""

    async def connect(self) -> None:
        log.info("live socket to %s refused: no stream there", _shown(self.scope.get("path", "")))
        await self.close()  # before accept(): HTTP 403


def _shown(text: str, limit: int = 80) -> str:
    shown = repr(text)
    return shown if len(shown) <= limit else f"{shown[: limit - 5]}...{shown[-2:]}"
