from django.apps import AppConfig


class FoodsiteConfig(AppConfig):
    """The project package is also an app: it owns the shared Kafka plumbing's table and commands."""

    name = "foodsite"
