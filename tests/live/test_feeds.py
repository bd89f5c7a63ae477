"""A stream's feed (live.feeds), pure logic: notices gathered into rounds, at most one frame
per socket per interval under a stream of notices, every part named reaching the next read,
a new socket's page read after the round's read, a failed read tried again."""

from __future__ import annotations

import asyncio

from live.feeds import Feed


class Follower:
    """Records what a feed hands it; its read returns the parts it was asked for."""

    def __init__(self, interval: float = 0.05, fail_reads: int = 0) -> None:
        self.push_interval = interval
        self.needs_page = False
        self.reads: list[frozenset[str] | None] = []
        self.frames: list[dict] = []
        self.pages: list[object] = []
        self.fail_reads = fail_reads

    async def read(self, stream, changed, followers):
        if self.fail_reads:
            self.fail_reads -= 1
            raise RuntimeError("database away")
        self.reads.append(changed)
        return changed

    async def still_allowed(self) -> bool:
        return True

    async def send_page(self, snapshot) -> None:
        self.pages.append(snapshot)
        self.needs_page = False

    def frame(self, snapshot) -> dict | None:
        return {"parts": sorted(snapshot)} if snapshot else None

    async def send_frame(self, frame: dict) -> None:
        self.frames.append(frame)

    async def refuse(self) -> None:
        raise AssertionError("never refused here")


async def settle(feed: Feed) -> None:
    while feed._task is not None and not feed._task.done():
        await asyncio.sleep(0.01)


def test_a_stream_of_notices_gets_at_most_one_frame_per_interval_and_every_part():
    async def scenario() -> tuple[Follower, float, set[str]]:
        follower = Follower(interval=0.05)
        feed = Feed("courier", follower.push_interval)
        feed.join(follower)
        await settle(feed)  # its page first
        loop = asyncio.get_running_loop()
        started = loop.time()
        named = set()
        for n in range(200):  # a notice every ~2 ms for ~0.4 s
            feed.notify(frozenset({f"row-{n}"}), at=n)
            named.add(f"row-{n}")
            await asyncio.sleep(0.002)
        await settle(feed)
        return follower, loop.time() - started, named

    follower, seconds, named = asyncio.run(scenario())
    assert follower.pages == [frozenset()]  # the page, then the rounds
    assert set().union(*(f["parts"] for f in follower.frames)) == named  # every part read, none lost
    # Coalesced: at most one frame per interval once the interval has grown (it starts at
    # 10 ms and doubles: 10 + 20 + 40 ms before it is 50), never one per notice.
    assert len(follower.frames) <= seconds / 0.05 + 4
    assert len(follower.frames) < 50
    assert follower.frames[0]["at"] == 0  # each frame carries its oldest change's time


def test_a_socket_that_joins_gets_its_page_after_the_rounds_read():
    async def scenario() -> tuple[Follower, Follower]:
        first, second = Follower(), Follower()
        feed = Feed("courier", first.push_interval)
        feed.join(first)
        await settle(feed)
        feed.notify(frozenset({"a"}), at=1.0)
        feed.join(second)
        await settle(feed)
        return first, second

    first, second = asyncio.run(scenario())
    assert first.frames == [{"parts": ["a"], "at": 1.0}]
    assert second.pages == [frozenset({"a"})]  # read in the same round, before its page
    assert second.frames == []


def test_a_failed_read_is_tried_again_with_its_changes():
    async def scenario() -> Follower:
        follower = Follower(fail_reads=1)
        feed = Feed("courier", follower.push_interval)
        follower.needs_page = False
        feed.followers.add(follower)
        feed.notify(frozenset({"a"}), at=1.0)
        await settle(feed)
        return follower

    follower = asyncio.run(scenario())
    assert follower.frames == [{"parts": ["a"], "at": 1.0}]
