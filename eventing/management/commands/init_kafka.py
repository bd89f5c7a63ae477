from django.core.management.base import BaseCommand

from eventing.topics import admin_client, declared_topics, ensure_topics


class Command(BaseCommand):
    help = (
        "Create the topics that are missing (orders, payments, delivery-status, dead letters, each group's "
        "re-drive topic, live-updates), set their declared settings where they differ; print them all with "
        "their replicas."
    )

    def handle(self, *args: object, **options: object) -> None:
        statuses = ensure_topics(admin_client(), declared_topics())
        self.stdout.write(
            f"{'topic':<28} {'state':<8} {'partitions':>10} {'replicas':>8} {'in-sync':>7} {'min.isr':>7} "
            f"{'retention.ms':>14} {'retention.bytes':>16}"
        )
        for status in statuses:
            self.stdout.write(
                f"{status.spec.name:<28} {status.state:<8} {status.partitions:>10} {status.replicas:>8} "
                f"{status.in_sync:>7} {status.config['min.insync.replicas']:>7} "
                f"{status.config['retention.ms']:>14} {status.config['retention.bytes']:>16}"
            )
            if status.updated:
                self.stdout.write(f"  set {', '.join(f'{k}={status.config[k]}' for k in status.updated)}")
            if status.partitions != status.spec.partitions:
                self.stderr.write(
                    f"warning: {status.spec.name} has {status.partitions} partitions, settings say "
                    f"{status.spec.partitions}; left as is (changing it would move keys to other partitions)"
                )
            if status.replicas != status.spec.replication_factor:
                self.stderr.write(
                    f"warning: {status.spec.name} has {status.replicas} replicas, settings say "
                    f"{status.spec.replication_factor}; left as is (kafka-reassign-partitions changes it)"
                )
            elif status.in_sync < status.replicas:
                self.stderr.write(
                    f"warning: {status.spec.name} is under-replicated: {status.in_sync} of {status.replicas} "
                    "replicas in sync (a broker is down or catching up)"
                )
