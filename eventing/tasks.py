from datetime import timedelta

from celery import shared_task

from eventing.conf import settings
from eventing.debezium import purge_relayed
from eventing.outbox import relay_pending


# The name it had before the event machinery left the project package: beat schedules
# and queued tasks of running deployments use it.
@shared_task(name="foodsite.tasks.relay_outbox")
def relay_outbox() -> int:
    """Send the outbox events still unsent; run by beat, or on demand:
    `celery -A foodsite call foodsite.tasks.relay_outbox`."""
    return relay_pending(older_than=timedelta(seconds=settings.OUTBOX_RELAY_AFTER_S))


@shared_task(name="eventing.tasks.purge_relayed_outbox")
def purge_relayed_outbox() -> int:
    """With the Debezium relay (OUTBOX_RELAY=debezium): delete the outbox rows older than
    OUTBOX_KEEP_S, which Kafka Connect read from the WAL when they were inserted."""
    return purge_relayed()
