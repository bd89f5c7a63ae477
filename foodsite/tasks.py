from datetime import timedelta

from celery import shared_task
from django.conf import settings

from foodsite.outbox import relay_pending


@shared_task(name="foodsite.tasks.relay_outbox")
def relay_outbox() -> int:
    """Send the outbox events still unsent; run by beat, or on demand:
    `celery -A foodsite call foodsite.tasks.relay_outbox`."""
    return relay_pending(older_than=timedelta(seconds=settings.OUTBOX_RELAY_AFTER_S))
