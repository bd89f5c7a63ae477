"""The staff page's websocket (live.sockets): staff only, like the page.

Every figure of the page may move with each batch the statistics service commits: a round
reads the page's regions (stats/regions/) once for every staff socket of this web process,
and each socket sends those whose markup differs from what it last sent. The Kafka view
(offsets, lag) asks the brokers: it is read at most every KAFKA_VIEW_EVERY seconds per
process, and, like the rest of a round, in a thread of its own, so a slow broker or a big
page never holds up the order and courier pages' reads (live.sockets). While a staff socket
is open, the cluster's health is watched too (stats.cluster_watch): a broker that dies or
returns, partitions out of sync or offline, change the Kafka region at once, event or not.
"""

from __future__ import annotations

import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.template.loader import render_to_string
from django.urls import reverse

from eventing.kafka_view import ClusterHealth
from live import feeds
from live.notices import stats_stream
from live.sockets import LiveStreamSocket
from stats.cluster_watch import ClusterWatch
from stats.views import dashboard_context, kafka_view_closing_connections

FIGURES = ("totals", "orders-per-minute", "top-dishes", "dishes")  # regions from the database
KAFKA_VIEW_EVERY = 2.0  # seconds
# The budget of a Kafka view read because the cluster watch saw a change (or the read after one
# fell short): what the metadata says, a broker down, must reach the page within seconds of the
# controller fencing it. The view's own 3 s went mostly to offsets that do not answer while
# leaders move (or while a fresh cluster makes its offsets topic), and a change seen during
# such a read waited for it and then for one more: the 10 s promised to the on-call person was
# missed (tests/stats/test_kafka_health_browser.py, 2 runs in 12).
KAFKA_VIEW_AFTER_CHANGE_S = 1.5


class StatsSocket(LiveStreamSocket):
    push_interval = 0.05
    _kafka: tuple[float, str] | None = None  # this process's last Kafka view's region, and when
    _kafka_short = False  # that view could not read everything: the cluster watch asks again
    _kafka_budget: float | None = None  # the next view's, when the cluster watch asked for it

    def allowed_stream(self) -> str | None:
        user = self.scope["user"]
        return stats_stream() if user.is_authenticated and user.is_staff else None

    def page_path(self) -> str:
        return reverse("stats")

    async def connect(self) -> None:
        await super().connect()
        if self.stream is not None:
            cluster_watch().ensure_running(wanted=lambda: feeds.is_followed(stats_stream()))

    async def disconnect(self, code: int) -> None:
        await super().disconnect(code)
        if not feeds.is_followed(stats_stream()):
            cluster_watch().stop()

    async def read(self, stream: str, changed: frozenset[str] | None, followers: list) -> dict[str, str] | None:
        if changed is not None and not changed:
            return None  # a round for a socket that just opened: its page is read for it
        cls = type(self)
        # Kept here, not re-read from the class after an await: the cluster watch may clear it
        # meanwhile (a change: the next round reads the view again), and this round still
        # sends what it read (it raised TypeError, and the round was lost, until 4 Dec).
        kafka_region = cls._kafka
        if kafka_region is None or time.monotonic() - kafka_region[0] > KAFKA_VIEW_EVERY:
            budget, cls._kafka_budget = cls._kafka_budget, None
            kafka = await sync_to_async(kafka_view_closing_connections, thread_sensitive=False)(budget)
            markup = await sync_to_async(render_to_string, thread_sensitive=False)(
                "stats/regions/kafka.html", {"kafka": kafka}
            )
            kafka_region = (time.monotonic(), markup)
            if cls._kafka_budget is None:  # no change seen during the read: this is the latest
                cls._kafka = kafka_region
                cls._kafka_short = bool(kafka.error or kafka.incomplete)
        return {**await sync_to_async(read_figures, thread_sensitive=False)(), "kafka": kafka_region[1]}

    def frame(self, regions: dict[str, str] | None) -> dict | None:
        return self.changed_regions(regions) if regions is not None else None

    def page_sent(self, regions: dict[str, str] | None) -> None:
        self.forget_regions()


def _health_changed(health: ClusterHealth) -> None:
    StatsSocket._kafka = None  # read the Kafka view afresh, whenever it was last read
    StatsSocket._kafka_budget = KAFKA_VIEW_AFTER_CHANGE_S
    feeds.notify(stats_stream(), frozenset({"kafka"}), time.time())


_watch: ClusterWatch | None = None


def cluster_watch() -> ClusterWatch:
    """This process's one watch (started by the first staff socket, stopped with the last)."""
    global _watch
    if _watch is None:
        _watch = ClusterWatch(
            settings.KAFKA_HEALTH_EVERY_S, on_change=_health_changed, stale=lambda: StatsSocket._kafka_short
        )
    return _watch


def read_figures() -> dict[str, str]:
    try:
        context = dashboard_context(kafka=None)
        return {name: render_to_string(f"stats/regions/{name}.html", context) for name in FIGURES}
    finally:
        connections.close_all()  # a pool thread's own connection
