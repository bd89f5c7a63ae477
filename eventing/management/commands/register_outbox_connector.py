"""Register the Debezium outbox relay's connector with Kafka Connect (OUTBOX_RELAY=debezium) and
wait until it runs. Idempotent: its whole config is PUT, so running it again changes nothing, and
a changed setting (a topic prefix, the database's password) is taken on the next run."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection

from eventing import debezium
from eventing.conf import settings


class Command(BaseCommand):
    help = "Register the Debezium outbox connector with Kafka Connect and wait until it runs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default=settings.CONNECT_URL, help="Kafka Connect's REST API (CONNECT_URL)")
        parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for it to run")

    def handle(self, *args: object, url: str, timeout: float, **options: object) -> None:
        if connection.vendor != "postgresql":
            raise CommandError("the Debezium relay reads PostgreSQL's write-ahead log: DATABASE_URL must be PostgreSQL")
        if not url:
            raise CommandError("no Kafka Connect: set CONNECT_URL or give --url")
        try:
            name = debezium.register(url)
            state = debezium.wait_running(url, name, timeout=timeout)
        except debezium.ConnectError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"outbox connector {name}: {state['connector']}, tasks {', '.join(state['tasks'])}; "
            f"slot {debezium.slot_name()}, publication {debezium.PUBLICATION}"
        )
