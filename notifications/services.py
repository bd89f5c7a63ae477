"""Write paths of the notifications service: sending one notification, at most once."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Collection
from datetime import timedelta

from django.conf import settings
from django.core.mail import EmailMessage
from django.db import transaction
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone

from eventing.producer import get_publisher
from live.notices import ORDER_NOTIFICATIONS, announce, order_stream
from notifications.models import Notification, Recipient

log = logging.getLogger(__name__)


def claim_lease() -> timedelta:
    """How long a sender may hold a notification before another may take it over (its worker
    died mid-send): NOTIFICATIONS_CLAIM_LEASE_S, far above EMAIL_TIMEOUT, so a live sender
    never loses its claim."""
    return timedelta(seconds=settings.NOTIFICATIONS_CLAIM_LEASE_S)


SUBJECTS = {
    Notification.Kind.RECEIVED: "We received your order",
    Notification.Kind.PAID: "Payment confirmed",
    Notification.Kind.OUT_FOR_DELIVERY: "Your order is on its way",
    Notification.Kind.DELIVERED: "Your order was delivered",
}


def schedule_sending(notification_ids: Collection[int]) -> None:
    """Queue the sending of these notifications once the current transaction commits (a task
    queued before the commit could run before the rows exist): one message for them all,
    which the worker fans out into one task each. `robust`: a Celery broker that is down
    must not fail the consumer's batch; the beat sweep sends these later."""
    if not notification_ids:
        return
    from notifications.tasks import send_batch  # the tasks module imports this one

    ids = list(notification_ids)
    transaction.on_commit(lambda: send_batch.delay(ids), robust=True)


def send(notification_id: int) -> str:
    """Email one notification unless it is settled already; returns what happened.

    Two deliveries of the same task (a retry racing the sweep, a redelivered message) are
    told apart by the conditional UPDATE that claims the row: only its winner sends. A send
    that fails releases the claim and raises, for the task to retry with backoff."""
    notification = Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING).first()
    if notification is None:
        return "settled"  # sent already, or nothing to send
    if notification.occurred_at < timezone.now() - timedelta(hours=settings.NOTIFICATIONS_MAX_AGE_H):
        # A new deployment's group starts at the earliest retained event (7 days): its
        # customers must not get a week of "order received" at once. Same for a very late retry.
        Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING).update(
            status=Notification.Status.STALE
        )
        _show_on_order_page(notification)
        return "too old"
    recipient = Recipient.objects.filter(order_id=notification.order_id).first()
    if recipient is None:
        # Its payment (or courier) event was read before the order: `order.placed`
        # schedules the order's pending notifications again when it comes.
        return "waiting for the order"
    if not recipient.email:
        Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING).update(
            status=Notification.Status.NO_EMAIL
        )
        _show_on_order_page(notification)
        return "no email address"

    token, now = uuid.uuid4(), timezone.now()
    claimed = (
        Notification.objects.filter(pk=notification_id, status=Notification.Status.PENDING)
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - claim_lease()))
        .update(claim=token, claimed_at=now)
    )
    if not claimed:
        return "another sender has it"
    try:
        _message(notification, recipient).send()
    except Exception:
        Notification.objects.filter(pk=notification_id, claim=token).update(claim=None, claimed_at=None)
        raise
    Notification.objects.filter(pk=notification_id, claim=token).update(
        status=Notification.Status.SENT, sent_at=timezone.now(), sent_to=recipient.email, claim=None, claimed_at=None
    )
    log.info("emailed %s to %s", notification, recipient.email)
    _show_on_order_page(notification)
    return "sent"


def unsent(older_than: timedelta, limit: int = 500) -> list[int]:
    """Pending notifications whose task should have sent them by now (it never ran: the
    worker or the Celery broker was down, or its retries ran out) and that nobody holds."""
    now = timezone.now()
    return list(
        Notification.objects.filter(
            status=Notification.Status.PENDING,
            created_at__lt=now - older_than,
            order_id__in=Recipient.objects.values("order_id"),
        )
        .filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - claim_lease()))
        .order_by("created_at")
        .values_list("pk", flat=True)[:limit]
    )


def _show_on_order_page(notification: Notification) -> None:
    # The worker changed what the order page lists: tell its open pages (live.notices).
    changes = {order_stream(str(notification.order_id)): {ORDER_NOTIFICATIONS}}
    announce(get_publisher().producer, changes, notification.traceparent)


def _message(notification: Notification, recipient: Recipient) -> EmailMessage:
    subject = SUBJECTS[notification.kind]
    body = render_to_string(
        "notifications/email.txt",
        {"notification": notification, "recipient": recipient, "subject": subject},
    )
    return EmailMessage(
        subject=f"Foodsite: {subject}",
        body=body,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[recipient.email],
        # The same id for every attempt: a mail system can drop a copy resent after a crash.
        headers={"Message-ID": f"<{notification.order_id}.{notification.kind}@foodsite.notifications>"},
    )
