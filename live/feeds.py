"""A stream's feed in one web process: the changes its notices name, gathered, read once per
interval, and handed to each socket that follows the stream here (live.sockets).

Why one read per stream and not one per socket: fifty couriers follow one stream. The feed
reads the changed rows once (the socket class's `read`), and each socket then picks, in
Python and without the database, what its user's page shows of them (`frame`). So a
change costs one read in each web process however many follow it, and a socket's frame
carries only the rows it names.

Coalescing: a feed runs at most one round per interval, and a socket sends at most one
frame per round. Changes that come meanwhile are gathered, so a row that changed three times
is read once, in its latest state; a socket that is behind gets the latest state, never the
ones between. The interval adapts between MIN_INTERVAL and the socket class's
`push_interval`: it doubles while changes come faster than it (a round had to wait for
it), and halves when a change finds the feed idle. So at one order a second the second
notice of a step (the order's status, then its notification, 30 ms apart) is not held for
a whole interval, and at a hundred orders a second each socket gets at most one frame per
`push_interval`. The first change after a quiet spell goes at once. A socket that has just opened (or asks for
it: its page lost track) gets its whole page, read after the feed's read of that round so
that every later frame is newer than the page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

# Named as before the split into packages: deployments filter their logs on it.
log = logging.getLogger("foodsite.live")

RETRY_AFTER = 1.0  # seconds before a feed whose read failed tries again
MIN_INTERVAL = 0.01  # seconds: the shortest interval between two rounds of a feed


class Follower(Protocol):
    """What a feed needs of a socket (live.sockets.LiveStreamSocket is the one)."""

    needs_page: bool
    push_interval: float

    async def read(self, stream: str, changed: frozenset[str] | None, followers: list[Follower]) -> Any: ...

    async def still_allowed(self) -> bool: ...

    async def send_page(self, snapshot: Any) -> None: ...

    def frame(self, snapshot: Any) -> dict | None: ...

    async def send_frame(self, frame: dict) -> None: ...

    async def refuse(self) -> None: ...


class Feed:
    def __init__(self, stream: str, interval: float) -> None:
        self.stream = stream
        self.max_interval = interval
        self.interval = MIN_INTERVAL
        self.followers: set[Follower] = set()
        self._changed: set[str] = set()
        self._whole = False
        self._since: float | None = None  # the oldest commit time among the gathered changes
        self._last_flush = 0.0
        self._task: asyncio.Task | None = None

    def notify(self, parts: frozenset[str] | None, at: float) -> None:
        if parts is None:
            self._whole = True
        else:
            self._changed |= parts
        self._since = at if self._since is None else min(self._since, at)
        self._wake()

    def join(self, follower: Follower) -> None:
        follower.needs_page = True
        self.followers.add(follower)
        self._wake()

    def leave(self, follower: Follower) -> None:
        self.followers.discard(follower)

    def wake(self) -> None:
        """Run a round soon (a follower asks for its page)."""
        self._wake()

    def _has_work(self) -> bool:
        return bool(self.followers) and (
            self._whole or bool(self._changed) or any(f.needs_page for f in self.followers)
        )

    def _wake(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name=f"live feed {self.stream}")

    async def _run(self) -> None:
        # Nothing else runs between the check and the return (one event loop), so a notice
        # either finds this task waiting, and is taken in its next round, or starts a new one.
        while self._has_work():
            wait = self._last_flush + self.interval - time.monotonic()
            if wait > 0:  # changes come faster than the interval: coalesce more
                self.interval = min(self.interval * 2, self.max_interval)
            else:
                self.interval = max(self.interval / 2, MIN_INTERVAL)
            # A zero sleep even when due: notices read in the same poll land in this round.
            await asyncio.sleep(max(wait, 0))
            self._last_flush = time.monotonic()
            if not await self._round():
                await asyncio.sleep(RETRY_AFTER)

    async def _round(self) -> bool:
        changed = None if self._whole else frozenset(self._changed)
        since = self._since
        self._changed, self._whole, self._since = set(), False, None
        followers = list(self.followers)
        try:
            snapshot = await followers[0].read(self.stream, changed, followers)
        except Exception:
            log.exception("live feed %s: the changes could not be read; trying again", self.stream)
            self.notify(changed, since if since is not None else time.time())
            return False
        for follower in followers:
            if follower not in self.followers:
                continue  # closed meanwhile
            try:
                if not await follower.still_allowed():
                    await follower.refuse()
                elif follower.needs_page:
                    await follower.send_page(snapshot)
                else:
                    frame = follower.frame(snapshot)
                    if frame is not None:
                        if since is not None:
                            frame["at"] = since
                        await follower.send_frame(frame)
            except Exception:
                log.exception("live feed %s: a socket's frame was not sent; it gets its page next", self.stream)
                follower.needs_page = True
        return True


# stream -> its feed in this process, while a socket here follows it. One event loop
# (daphne's) owns them all: the bridge hands notices over with call_soon_threadsafe.
_feeds: dict[str, Feed] = {}


def follow(stream: str, follower: Follower) -> Feed:
    feed = _feeds.get(stream)
    if feed is None:
        feed = _feeds[stream] = Feed(stream, follower.push_interval)
    feed.join(follower)
    return feed


def unfollow(stream: str, follower: Follower) -> None:
    feed = _feeds.get(stream)
    if feed is not None:
        feed.leave(follower)
        if not feed.followers:
            del _feeds[stream]


def wake(stream: str) -> None:
    """Run a round of `stream` soon: a socket of it asks for its whole page (live.js, when a
    list names a row the page has not got). Sockets called this, and it did not exist: the
    page's one message raised AttributeError and ended its socket."""
    feed = _feeds.get(stream)
    if feed is not None:
        feed.wake()


def notify(stream: str, parts: frozenset[str] | None, at: float) -> None:
    """A notice for `stream`: nothing to do unless a socket of this process follows it."""
    feed = _feeds.get(stream)
    if feed is not None:
        feed.notify(parts, at)


def is_followed(stream: str) -> bool:
    """Whether a socket of this process follows `stream` now."""
    feed = _feeds.get(stream)
    return feed is not None and bool(feed.followers)


def following() -> dict[str, int]:
    """Sockets per stream in this process (tests, the watchers' benchmark)."""
    return {stream: len(feed.followers) for stream, feed in _feeds.items()}
