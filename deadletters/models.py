from django.db import models


class DeadLetter(models.Model):
    """One event a consumer group could not process, as read from a `<topic>.dlq` topic by
    the dead-letter recorder (deadletters.projection). Topics are logical names (no prefix)."""

    group = models.CharField(max_length=200)  # the group that failed on it (logical name)
    # Where that group read it: the source topic, or its re-drive topic for a re-driven event.
    # With the group, the dead letter's identity (the DLQ may hold a copy twice).
    topic = models.CharField(max_length=200)
    partition = models.PositiveIntegerField()
    offset = models.BigIntegerField()
    # Where the event was first published; equal to the above unless re-driven.
    origin_topic = models.CharField(max_length=200)
    origin_partition = models.PositiveIntegerField()
    origin_offset = models.BigIntegerField()
    attempt = models.PositiveIntegerField(default=1)  # 1 + how many times it was re-driven
    error = models.TextField()
    failed_at = models.DateTimeField()  # when it was dead-lettered (the DLQ message's time)
    key = models.BinaryField(null=True)
    value = models.BinaryField(null=True)
    # The event's own headers (content-type, event-type…), without the dlq.* ones:
    # [[name, value in hex]]: any bytes, where JSON text (PostgreSQL's jsonb) refuses some.
    headers = models.JSONField(default=list)
    # Set when staff sent it back to its group: where it went in `<group>.redrive`.
    redriven_at = models.DateTimeField(null=True)
    redrive_partition = models.PositiveIntegerField(null=True)
    redrive_offset = models.BigIntegerField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["group", "topic", "partition", "offset"], name="unique_dead_letter"),
        ]
        indexes = [
            # The page's lists, newest first: all of a group's, or of a group and topic.
            models.Index(fields=["group", "id"], name="dead_letter_group"),
            models.Index(fields=["group", "origin_topic", "id"], name="dead_letter_group_topic"),
            # The summary's counts per group and topic, read from the index alone.
            models.Index(fields=["group", "origin_topic", "redriven_at", "failed_at"], name="dead_letter_summary"),
        ]

    def __str__(self) -> str:
        return f"{self.group}: {self.origin_topic}[{self.origin_partition}]@{self.origin_offset} #{self.attempt}"

    @property
    def event_headers(self) -> list[tuple[str, bytes]]:
        return [(name, bytes.fromhex(value)) for name, value in self.headers]

    def header(self, name: str) -> bytes | None:
        return next((value for key, value in self.event_headers if key == name), None)
