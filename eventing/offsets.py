"""Where each consumer group stands, kept in the database (ConsumerOffset) beside its
projection's rows and written in the same transaction, so that a crash never separates
"event applied" from "event consumed". Kafka's committed offsets only mirror it, for tools.

Two members of a group can briefly both own a partition (a rebalance under way, a member
that lost its session but not yet its work): each write checks that the partition is still
where this member left it, and a member that finds it moved drops its batch (PartitionFenced).
"""

from __future__ import annotations

from django.db import IntegrityError, close_old_connections, transaction

from eventing.models import ConsumerOffset

Position = tuple[str, int]  # (logical topic, partition)


class PartitionFenced(Exception):
    """Another member of the group moved a partition's offset while we were working."""


class OffsetStore:
    def __init__(self, group: str) -> None:
        self.group = group  # real name

    def stored(self, topics: set[str]) -> dict[Position, int]:
        """The next offset to read of each partition of these (logical) topics that has one."""
        close_old_connections()
        rows = ConsumerOffset.objects.filter(group=self.group, topic__in=topics)
        return {(row.topic, row.partition): row.next_offset for row in rows}

    def save(self, next_offsets: dict[Position, int], expected: dict[Position, int | None]) -> None:
        """Move each partition to its next offset, if it is still at `expected` (None: no row
        yet). Call inside the batch's transaction; raises PartitionFenced otherwise."""
        for (topic, partition), next_offset in next_offsets.items():
            was = expected[(topic, partition)]
            if was is None:
                try:
                    with transaction.atomic():
                        ConsumerOffset.objects.create(
                            group=self.group, topic=topic, partition=partition, next_offset=next_offset
                        )
                except IntegrityError as exc:
                    raise PartitionFenced(f"{topic}[{partition}] was started by another member") from exc
                continue
            moved = ConsumerOffset.objects.filter(
                group=self.group, topic=topic, partition=partition, next_offset=was
            ).update(next_offset=next_offset)
            if moved != 1:
                raise PartitionFenced(f"{topic}[{partition}] moved past {was} under us")

    def forget(self) -> None:
        """Drop the group's positions (a replay starts from the earliest retained event)."""
        ConsumerOffset.objects.filter(group=self.group).delete()
