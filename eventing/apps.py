from django.apps import AppConfig

from eventing import schema_registry


class EventingConfig(AppConfig):
    """The event machinery as a Django app: its tables (consumer offsets, outbox) and commands.

    Label "foodsite": the tables, migrations and their history were the project package's
    before the machinery left it (`foodsite_consumeroffset`, `foodsite_outboxevent`), and a
    deployment's database must keep them. Another project installs it under the same label."""

    name = "eventing"
    label = "foodsite"
    verbose_name = "event machinery"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registry-framed Avro is readable once the process knows where to ask for its
        # schemas; no request is made here (a manage.py command must not need the registry).
        schema_registry.reset()
