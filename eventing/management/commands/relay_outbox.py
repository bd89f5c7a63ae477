import signal
import time
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandParser
from django.db import close_old_connections

from eventing.conf import settings
from eventing.outbox import relay_pending


class Command(BaseCommand):
    help = "Send the outbox's events that are still unsent (Kafka was down, a web process died)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="One pass, then exit.")
        parser.add_argument("--every", type=float, default=5.0, help="Seconds between passes.")
        parser.add_argument(
            "--older-than",
            type=float,
            default=settings.OUTBOX_RELAY_AFTER_S,
            help="Leave younger events to the producer that queued them (default: OUTBOX_RELAY_AFTER_S).",
        )

    def handle(self, *args: object, once: bool, every: float, older_than: float, **options: object) -> None:
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        if not once:
            self.stdout.write(f"relaying outbox events unsent after {older_than:g} s, every {every:g} s")
        while not stopping:
            sent = relay_pending(older_than=timedelta(seconds=older_than))
            if sent or once:
                self.stdout.write(f"relayed {sent} event(s)")
            if once:
                return
            close_old_connections()
            deadline = time.monotonic() + every
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
