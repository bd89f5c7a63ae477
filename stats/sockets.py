"""The staff page's websocket (live.sockets): staff only, like the page.

Every figure of the page may move with each batch the statistics service commits, and its
Kafka view (offsets, lag) with any consumer's: a round reads the page's regions once for
every staff socket of this web process, at most once a second (the Kafka view asks the
brokers), and sends them whole; live.js swaps the regions that differ.
"""

from __future__ import annotations

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.template.loader import render_to_string
from django.urls import reverse

from live.notices import stats_stream
from live.sockets import LiveStreamSocket
from stats.views import dashboard_context, kafka_view_closing_connections


class StatsSocket(LiveStreamSocket):
    push_interval = 1.0

    def allowed_stream(self) -> str | None:
        user = self.scope["user"]
        return stats_stream() if user.is_authenticated and user.is_staff else None

    def page_path(self) -> str:
        return reverse("stats")

    async def read(self, stream: str, changed: frozenset[str] | None, followers: list) -> str | None:
        if changed is not None and not changed:
            return None  # a round for a socket that just opened: its page is read for it
        # As the page's view: the Kafka view waits on the brokers in a thread of its own.
        kafka = await sync_to_async(kafka_view_closing_connections, thread_sensitive=False)()
        context = await database_sync_to_async(dashboard_context)(kafka)
        return await database_sync_to_async(render_to_string)("stats/dashboard.html", context)

    def frame(self, page: str | None) -> dict | None:
        return {"page": page} if page is not None else None
