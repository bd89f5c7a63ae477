from datetime import timedelta

from celery import shared_task

from eventing.conf import settings
from eventing.outbox import relay_pending


# The name it had before the event machinery left the project package: beat schedules
# and queued tasks of running deployments use it.
@shared_task(name="foodsite.tasks.relay_outbox")
def relay_outbox() -> int:
    """Send the outbox events still unsent; run by beat, or on demand:
    `celery -A foodsite call foodsite.tasks.relay_outbox`."""
    return relay_pending(older_than=timedelta(seconds=settings.OUTBOX_RELAY_AFTER_S))
