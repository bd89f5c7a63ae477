from django.db import models


class ConsumerOffset(models.Model):
    """Where a consumer group stands in one partition: the next offset to read.

    Written in the same database transaction as the projection it belongs to, so a crash
    can never separate "event applied" from "event consumed" (see eventing.runner).
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


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change it describes, sent to Kafka
    after the commit. An order the customer was told about can therefore not be lost, even
    while Kafka is down: the relay sends whatever is still unsent (eventing.outbox)."""

    id = models.UUIDField(primary_key=True)  # the event's id: consumers de-duplicate by it
    topic = models.CharField(max_length=200)  # logical name
    key = models.CharField(max_length=200)
    event_type = models.CharField(max_length=100)
    value = models.BinaryField()
    # How `value` is encoded (the message's content-type header): the format is chosen when
    # the event is stored, and rows stored before Avro existed are JSON.
    content_type = models.CharField(max_length=100, default="application/json")
    # The W3C traceparent of the request that caused the event (eventing.tracing), sent as a
    # Kafka header by whoever sends the row: the request's producer or, later, the relay.
    traceparent = models.CharField(max_length=55, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    sent_at = models.DateTimeField(null=True, db_index=True)
    # The relay pass sending the row, until when (eventing.outbox.relay_pending): another
    # pass leaves it alone meanwhile, and takes it over once the lease has run out (the
    # pass died). Taken in a short transaction of its own, never held while Kafka answers.
    claimed_by = models.UUIDField(null=True)
    claimed_until = models.DateTimeField(null=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.topic} {self.key} {'sent' if self.sent_at else 'pending'}"

