"""The staff page's websocket (live.sockets): staff only, like the page."""

from __future__ import annotations

from django.urls import reverse

from live.notices import stats_stream
from live.sockets import LiveStreamSocket


class StatsSocket(LiveStreamSocket):
    def allowed_stream(self) -> str | None:
        user = self.scope["user"]
        return stats_stream() if user.is_authenticated and user.is_staff else None

    def page_path(self) -> str:
        return reverse("stats")
