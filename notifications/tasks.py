from __future__ import annotations

import logging
from datetime import timedelta

from celery import shared_task
from django.conf import settings

from eventing import tracing
from notifications import services
from notifications.models import Notification

log = logging.getLogger(__name__)

# 1, 2, 4 ... 256 s between attempts (with jitter): about 8 minutes of an SMTP server being
# down. After that the beat sweep keeps trying, every NOTIFICATIONS_SWEEP_EVERY_S.
MAX_RETRIES = 9


@shared_task(
    name="notifications.tasks.send_notification",
    autoretry_for=(OSError,),  # smtplib's errors and refused connections are OSErrors
    retry_backoff=True,
    retry_backoff_max=300,
    retry_jitter=True,
    max_retries=MAX_RETRIES,
)
def send_notification(notification_id: int) -> str:
    outcome = services.send(notification_id)
    log.info("notification %d: %s", notification_id, outcome)  # under its order's trace id
    return outcome


@shared_task(name="notifications.tasks.send_batch")
def send_batch(notification_ids: list[int]) -> int:
    """One task per notification, each retried on its own. The consumer queues one of these
    per batch: queueing a message costs ~3 ms on the local transport, and a batch of 1000
    orders would otherwise hold the consumer for seconds after its commit."""
    traces = dict(Notification.objects.filter(pk__in=notification_ids).values_list("pk", "traceparent"))
    for notification_id in notification_ids:
        with tracing.use(traces.get(notification_id)):  # the task's headers carry its order's trace
            send_notification.delay(notification_id)
    return len(notification_ids)


@shared_task(name="notifications.tasks.send_unsent")
def send_unsent() -> int:
    """Queue the notifications still unsent NOTIFICATIONS_SEND_AFTER_S after they were
    recorded; run by beat, or by hand: `celery -A foodsite call notifications.tasks.send_unsent`."""
    ids = services.unsent(older_than=timedelta(seconds=settings.NOTIFICATIONS_SEND_AFTER_S))
    return send_batch(ids)
