from django.apps import AppConfig


class LiveConfig(AppConfig):
    """Live pages' transport: notices, the bridge, the sockets' base class, live.js."""

    name = "live"
