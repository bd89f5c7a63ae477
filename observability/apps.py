from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    """Metrics (Prometheus, /metrics) and their deploy checks."""

    name = "observability"

    def ready(self) -> None:
        from live.sockets import socket_opened_or_closed
        from observability import checks  # noqa: F401  (registers the deploy checks)
        from observability.metrics import count_websockets

        socket_opened_or_closed.connect(count_websockets, dispatch_uid="observability.count_websockets")
