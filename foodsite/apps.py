from django.apps import AppConfig


class FoodsiteConfig(AppConfig):
    """The project package is also an app: it owns the shared Kafka plumbing's table and commands."""

    name = "foodsite"

    def ready(self) -> None:
        from foodsite import checks  # noqa: F401  (registers the deploy checks)
