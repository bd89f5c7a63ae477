from django.db import models


class ConsumerOffset(models.Model):
    """Where a consumer group stands in one partition: the next offset to read.

    Written in the same database transaction as the projection it belongs to, so a crash
    can never separate "event applied" from "event consumed" (see foodsite.kafka.runner).
    """

    group = models.CharField(max_length=200)
    topic = models.CharField(max_length=200)
    partition = models.PositiveIntegerField()
    next_offset = models.BigIntegerField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "topic", "partition"], name="unique_consumer_offset"),
        ]

    def __str__(self) -> str:
        return f"{self.group} {self.topic}[{self.partition}] @ {self.next_offset}"
