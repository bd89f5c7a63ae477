"""Base class of the `consume_*` management commands: one process, one projection."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException
from django.core.management.base import BaseCommand, CommandError, CommandParser

from eventing.projection import Projection
from eventing.runner import ConsumerRunner, DeadLetterLimitExceeded, RunStats, freeze_startup_objects
from eventing.topics import admin_client

BATCH_SIZE = 1000
# A replay reads a backlog nobody is watching live: bigger transactions, fewer commits and
# fewer queries per event (1,000,000 events: see bench/README.md's replay row).
REPLAY_BATCH_SIZE = 5000

COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


class ConsumerCommand(BaseCommand):
    projection_class: type[Projection]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch-size",
            type=int,
            default=None,
            help=f"Events per transaction (default {BATCH_SIZE}, {REPLAY_BATCH_SIZE} with --replay).",
        )
        parser.add_argument(
            "--until-caught-up",
            action="store_true",
            help="Exit once every assigned partition has been read to its end (for scripts).",
        )
        parser.add_argument(
            "--replay",
            action="store_true",
            help="Rebuild the projection from the log: delete it and the group's position, re-read every "
            "retained event with a progress bar, then exit. Stop the running service first.",
        )

    def handle(
        self, *args: object, batch_size: int | None, until_caught_up: bool, replay: bool, **options: object
    ) -> None:
        if batch_size is None:
            batch_size = REPLAY_BATCH_SIZE if replay else BATCH_SIZE
        runner = ConsumerRunner(self.projection_class(), batch_size=batch_size)
        events_log = logging.getLogger("foodsite.kafka.events")
        events_level = events_log.level
        if replay:
            # A progress bar, not a line per event re-read.
            events_log.setLevel(logging.WARNING)
            self._refuse_if_group_running(runner.group)
            runner.reset()
            runner.on_batch = progress_bar(runner.backlog(), lambda text: self.stderr.write(text, ending=""))
        runner.install_signal_handlers()
        if getattr(self, "_called_from_command_line", False):  # set by run_from_argv: manage.py consume_*
            freeze_startup_objects()  # this process is the consumer from now on; not call_command's caller
        try:
            stats = runner.run(until_caught_up=until_caught_up or replay)
        except DeadLetterLimitExceeded as exc:  # logged by the runner; exit non-zero
            raise CommandError(f"{runner.group} stopped: {exc}") from exc
        finally:
            # Called in-process (tests, call_command), a replay must not silence what follows.
            events_log.setLevel(events_level)
        if replay:
            self.stderr.write("")  # ends the progress bar's line
        self.stdout.write(
            f"{runner.group}: applied {stats.applied}, skipped {stats.skipped}, "
            f"dead-lettered {stats.dead_lettered} in {stats.batches} batches"
        )

    def _refuse_if_group_running(self, group: str) -> None:
        admin = admin_client()  # keep a reference: a collected client never completes its futures
        deadline = time.monotonic() + 60
        while True:
            [future] = admin.describe_consumer_groups([group], request_timeout=10).values()
            try:
                members = future.result(timeout=15).members
                break
            except KafkaException as exc:
                # A broker just started still loads its groups' coordinators (NOT_COORDINATOR,
                # COORDINATOR_LOAD_IN_PROGRESS): seen on a fresh broker, gone within seconds.
                error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
                if error is None or (not error.retriable() and error.code() not in COORDINATOR_MOVING):
                    raise
                if time.monotonic() > deadline:
                    raise CommandError(f"cannot ask Kafka whether group {group} is running: {error}") from exc
                time.sleep(1)
        if members:
            raise CommandError(
                f"group {group} has {len(members)} running member(s): stop that service before replaying, "
                "or they would keep writing the projection while it is rebuilt"
            )


def progress_bar(total: int, write: Callable[[str], None], width: int = 30) -> Callable[[RunStats], None]:
    """A one-line progress report: events done / total, rate, time left."""
    started = time.monotonic()

    def report(stats: RunStats) -> None:
        done = stats.applied + stats.skipped + stats.dead_lettered
        elapsed = max(time.monotonic() - started, 1e-6)
        rate = done / elapsed
        left = (total - done) / rate if rate and total > done else 0
        filled = int(width * min(done / total, 1)) if total else width
        write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} events  {rate:,.0f}/s  {left:,.0f} s left "
        )

    return report
