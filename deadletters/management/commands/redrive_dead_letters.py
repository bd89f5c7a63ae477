from django.core.management.base import BaseCommand, CommandError, CommandParser

from deadletters.models import DeadLetter
from deadletters.services import open_letters, redrive


class Command(BaseCommand):
    help = (
        "Send dead letters back to the group that failed on them (its <group>.redrive topic; no other group "
        "sees them). Run after the fix is deployed: a letter that fails again comes back with its attempt count."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--group", required=True, help="The consumer group, e.g. stats (no prefix).")
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--id", type=int, action="append", dest="ids", help="A dead letter's id (repeatable).")
        which.add_argument(
            "--all", action="store_true", dest="redrive_all", help="Every dead letter of the group not re-driven yet."
        )

    def handle(self, *args: object, group: str, ids: list[int] | None, redrive_all: bool, **options: object) -> None:
        if redrive_all:
            letters = open_letters(group).order_by("origin_topic", "origin_partition", "origin_offset")
        else:
            letters = DeadLetter.objects.filter(group=group, pk__in=ids).order_by("pk")
            missing = set(ids) - set(letters.values_list("pk", flat=True))
            if missing:
                raise CommandError(f"no dead letter of group {group} with id {', '.join(map(str, sorted(missing)))}")
        outcome = redrive(letters)
        self.stdout.write(f"{group}: {outcome}")
        if outcome.not_sent:
            raise CommandError(f"{outcome.not_sent} dead letter(s) not re-driven")
