"""Websockets of the live pages: one stream per page, each checked like the page itself.

A socket follows its stream's feed in this web process (live.feeds). When a round of
changes has been read, the socket sends its browser what its page shows of them (`frame`):
the rows it lists, in order, with the markup of those that changed or are new to it, and
the regions that changed. live.js applies them by id (replace, insert, move, remove). What
a socket may send is decided per socket, for its user: at the handshake (an anonymous or
wrong user is refused before it completes: the browser sees HTTP 403), then again every
settings.LIVE_RECHECK_SECONDS before it sends anything (the session read afresh: logged out,
or no longer allowed, and the socket is closed with 4403), and by each page's own rule of
which rows its user sees (a courier's own deliveries go to that courier only).

A socket that opens, or whose page asks for it (a row it was told to show and does not
have), gets its whole page once, read in-process through the ordinary view (`read_page`:
every middleware, login and permission check, with the cookies the socket was opened with).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from importlib import import_module
from types import SimpleNamespace

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.auth.models import AnonymousUser
from django.db import close_old_connections
from django.dispatch import Signal

from live import feeds
from live.bridge import ensure_bridge

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.sockets")

# The handshake's own headers: the page's GET is an ordinary request, not an upgrade.
_SOCKET_ONLY_HEADERS = frozenset(
    {
        b"connection",
        b"upgrade",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
    }
)


ASGIApp = Callable[[dict, Callable, Callable], Awaitable[None]]
Round = tuple[str, frozenset[str] | None, list]  # a feed's round: stream, parts changed, sockets

# The longest message a page sends, in characters: '{"want":"page"}' is 15. Longer ones
# are not parsed (daphne lets a client send up to 1 MiB).
MAX_MESSAGE = 1024

# Sent with `page` ("courier", "stats", "order") and `change` (+1 when a socket of that page
# is accepted, -1 when it closes): the project counts them (observability.metrics).
socket_opened_or_closed = Signal()


async def read_page(http_application: ASGIApp, socket_scope: dict, path: str) -> str | None:
    """The page at `path` as this socket's browser would GET it: through the web's own HTTP
    handler `http_application` (so on its threads, with every middleware), with the headers
    and cookies the socket was opened with. Its HTML, or None unless the answer is a 200."""
    headers = [(name, value) for name, value in socket_scope.get("headers", ()) if name not in _SOCKET_ONLY_HEADERS]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https" if socket_scope.get("scheme") == "wss" else "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": socket_scope.get("root_path", ""),
        "headers": [*headers, (b"x-live-refresh", b"1")],
        "client": socket_scope.get("client"),
        "server": socket_scope.get("server"),
    }
    answered = asyncio.Event()
    requested = False
    status = 0
    body: list[bytes] = []

    async def receive() -> dict:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await answered.wait()  # Django listens for a disconnect while it works: none comes
        return {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))
            if not message.get("more_body"):
                answered.set()

    try:
        await http_application(scope, receive, send)
    finally:
        answered.set()
    return b"".join(body).decode() if status == 200 else None


class LiveStreamSocket(AsyncJsonWebsocketConsumer):
    """A live page's websocket. Each app's page has its subclass: its stream, its page, who
    may follow it, how a round of changes is read (`read_changes`, once per round for every
    socket of the stream in this process) and what of it this socket's page gets (`frame`).
    The project's routing gives each one the HTTP application its whole page is read
    through: `CourierSocket.as_asgi(pages=http_application)`."""

    stream: str | None = None
    push_interval = 0.1  # seconds: at most one frame per socket per interval (live.feeds)
    needs_page = True
    _checked_at = 0.0
    _ignored_a_message = False

    def __init__(self, *args: object, pages: ASGIApp, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.pages = pages

    async def connect(self) -> None:
        self.stream = await database_sync_to_async(self.allowed_stream)()
        if self.stream is None:
            await self.close()  # before accept(): the handshake is refused with HTTP 403
            return
        ensure_bridge()
        await self.accept()
        self._checked_at = time.monotonic()
        feeds.follow(self.stream, self)
        socket_opened_or_closed.send(type(self), page=self.page(), change=1)

    async def disconnect(self, code: int) -> None:
        if self.stream is not None:
            feeds.unfollow(self.stream, self)
            socket_opened_or_closed.send(type(self), page=self.page(), change=-1)
            self.stream = None

    async def websocket_receive(self, message: dict) -> None:
        """A frame from the browser. A page sends one thing, {"want": "page"}, when it lost
        track (told to list a row it does not have): its whole page, once. Anything else
        (text that is not JSON, other JSON, a binary or empty frame, more than
        MAX_MESSAGE characters) is ignored, the first of a socket logged: the socket stays
        open and keeps getting its frames. Channels' JSON consumer raised instead
        (JSONDecodeError, "No text section", RecursionError, the 4300-digit limit), which
        ended the socket with a traceback."""
        text = message.get("text")
        content = None
        if isinstance(text, str) and len(text) <= MAX_MESSAGE:
            with contextlib.suppress(ValueError, RecursionError):  # not JSON, or nested too deep
                content = json.loads(text)
        if isinstance(content, dict) and content.get("want") == "page":
            if self.stream is not None:
                self.needs_page = True
                feeds.wake(self.stream)
            return
        if not self._ignored_a_message:
            self._ignored_a_message = True
            log.info(
                "live socket of %s ignored %s; it ignores the next ones silently", self.page(), _described(message)
            )

    @classmethod
    def page(cls) -> str:
        return cls.__name__.removesuffix("Socket").lower()  # courier, stats, order

    # What a feed calls (live.feeds.Follower).

    async def read(self, stream: str, changed: frozenset[str] | None, followers: list) -> object:
        return await _reads_of(type(self)).read((stream, changed, followers))

    async def still_allowed(self) -> bool:
        if time.monotonic() - self._checked_at < settings.LIVE_RECHECK_SECONDS:
            return True
        allowed = await database_sync_to_async(self._allowed_now)()
        self._checked_at = time.monotonic()
        return allowed

    async def refuse(self) -> None:
        log.info("live socket of %s closed: its user may no longer follow %s", self.page(), self.stream)
        if self.stream is not None:
            feeds.unfollow(self.stream, self)
        await self.close(code=4403)

    async def send_page(self, snapshot: object) -> None:
        page = await read_page(self.pages, self.scope, self.page_path())
        if page is None:  # not a 200 any more: logged out, or no longer allowed
            await self.refuse()
            return
        self.needs_page = False
        self.page_sent(snapshot)
        await self.send_json({"page": page})

    async def send_frame(self, frame: dict) -> None:
        await self.send_json(frame)

    def _allowed_now(self) -> bool:
        """The handshake's check again, with the user as the session says now."""
        self.scope["user"] = user_of_session(self.scope.get("session"))
        return self.allowed_stream() == self.stream

    # What each page's socket says.

    def page_path(self) -> str:
        """The page this socket belongs to (what its browser would re-fetch)."""
        raise NotImplementedError

    def allowed_stream(self) -> str | None:
        """The stream this user may follow on this URL, or None to refuse (runs in a thread:
        permission and session checks read the database)."""
        raise NotImplementedError

    @classmethod
    def read_many(cls, rounds: list[Round]) -> list[object]:
        """The reads of several rounds (of different streams) at once, in the live-reads thread:
        one thread hop for all, and a class that overrides it one query for all. A read that
        fails is its exception, in its place."""
        results: list[object] = []
        for stream, changed, followers in rounds:
            try:
                results.append(cls.read_changes(stream, changed, followers))
            except Exception as exc:
                results.append(exc)
        return results

    @classmethod
    def read_changes(cls, stream: str, changed: frozenset[str] | None, followers: list) -> object:
        """A round's changes of `stream` (the parts its notices named; None: all of them), read
        once for all `followers` in this process (runs in a thread: reads the database)."""
        raise NotImplementedError

    def frame(self, snapshot: object) -> dict | None:
        """What this socket's page gets of a round (no database: the read is done), or None
        when nothing it shows changed. Keys: "rows" {id: markup}, "lists" {name: [ids in
        order]}, "regions" {name: inner markup}, or "page" (the whole page, as a GET)."""
        raise NotImplementedError

    def page_sent(self, snapshot: object) -> None:
        """The whole page was just sent, read after `snapshot`: what it shows is the state."""

    def changed_regions(self, regions: dict[str, str]) -> dict | None:
        """A frame of the regions whose markup differs from what this socket last sent."""
        sent = self.__dict__.setdefault("_regions_sent", {})
        changed = {name: html for name, html in regions.items() if sent.get(name) != html}
        sent.update(changed)
        return {"regions": changed} if changed else None

    def forget_regions(self) -> None:
        """The page was just sent whole: whatever the next round reads is sent."""
        self.__dict__["_regions_sent"] = {}


# The rounds' reads, in one thread of their own: not Channels' one thread for sync code
# (the handshakes' checks run there), not the request threads (foodsite.asgi). One thread:
# reads are short and the GIL would not run two at once; it keeps its connection.
_live_reads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="live-reads")


def _with_fresh_connections(read: Callable, *args: object) -> object:
    close_old_connections()  # as for a request: past CONN_MAX_AGE, or broken
    return read(*args)


class _Reads:
    """One socket class's rounds read a batch at a time in the live-reads thread: the
    rounds that come while a batch is read (a thousand order pages' feeds) are read
    together in the next one, in one thread hop."""

    def __init__(self, read_many: Callable[[list[Round]], list[object]]) -> None:
        self._read_many = read_many
        self._waiting: list[tuple[Round, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def read(self, round: Round) -> object:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._waiting.append((round, future))
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            batch, self._waiting = self._waiting, []
            rounds = [round for round, _ in batch]
            try:
                results = await loop.run_in_executor(_live_reads, _with_fresh_connections, self._read_many, rounds)
            except Exception as exc:
                results = [exc] * len(batch)
            for (_, future), result in zip(batch, results, strict=True):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)


_reads: dict[type, _Reads] = {}


def _reads_of(socket_class: type[LiveStreamSocket]) -> _Reads:
    if socket_class not in _reads:
        _reads[socket_class] = _Reads(socket_class.read_many)
    return _reads[socket_class]


def _described(message: dict) -> str:
    """A message a socket ignored, for its log line: its kind and size, and the start of a text."""
    text, data = message.get("text"), message.get("bytes")
    if isinstance(text, str) and text:
        start = repr(text[:40]) + ("..." if len(text) > 40 else "")
        return f"a text message of {len(text)} characters, {start}"
    if isinstance(data, bytes) and data:
        return f"a binary message of {len(data)} bytes"
    return "an empty message"


def user_of_session(session: object) -> object:
    """The user a session names now, read afresh (AnonymousUser if none, or logged out)."""
    if session is None or not getattr(session, "session_key", None):
        return AnonymousUser()
    store = import_module(settings.SESSION_ENGINE).SessionStore(session.session_key)
    return get_user(SimpleNamespace(session=store))
