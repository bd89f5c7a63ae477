from django.core.management.base import BaseCommand

from foodsite.kafka.topics import admin_client, declared_topics, ensure_topics


class Command(BaseCommand):
    help = (
        "Create the topics that are missing (orders, payments, delivery-status, dead letters, each group's "
        "re-drive topic); print them all."
    )

    def handle(self, *args: object, **options: object) -> None:
        statuses = ensure_topics(admin_client(), declared_topics())
        self.stdout.write(f"{'topic':<28} {'state':<8} {'partitions':>10} {'retention.ms':>14} {'retention.bytes':>16}")
        for status in statuses:
            self.stdout.write(
                f"{status.spec.name:<28} {'created' if status.created else 'exists':<8} {status.partitions:>10} "
                f"{status.config['retention.ms']:>14} {status.config['retention.bytes']:>16}"
            )
            if status.partitions != status.spec.partitions:
                self.stderr.write(
                    f"warning: {status.spec.name} has {status.partitions} partitions, settings say "
                    f"{status.spec.partitions}; left as is (changing it would move keys to other partitions)"
                )
