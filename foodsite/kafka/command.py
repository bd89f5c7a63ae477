"""Base class of the `consume_*` management commands: one process, one projection."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from foodsite.kafka.runner import ConsumerRunner, Projection


class ConsumerCommand(BaseCommand):
    projection_class: type[Projection]

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument(
            "--until-caught-up",
            action="store_true",
            help="Exit once every assigned partition has been read to its end (for scripts).",
        )

    def handle(self, *args: object, batch_size: int, until_caught_up: bool, **options: object) -> None:
        runner = ConsumerRunner(self.projection_class(), batch_size=batch_size)
        runner.install_signal_handlers()
        stats = runner.run(until_caught_up=until_caught_up)
        self.stdout.write(
            f"{runner.group}: applied {stats.applied}, skipped {stats.skipped}, "
            f"dead-lettered {stats.dead_lettered} in {stats.batches} batches"
        )
