"""The courier page's websocket (live.sockets): couriers only, like the page."""

from __future__ import annotations

from django.urls import reverse

from deliveries.permissions import is_courier
from live.notices import courier_stream
from live.sockets import LiveStreamSocket


class CourierSocket(LiveStreamSocket):
    def allowed_stream(self) -> str | None:
        return courier_stream() if is_courier(self.scope["user"]) else None

    def page_path(self) -> str:
        return reverse("courier")
