"""The Celery app: background tasks: the outbox relay (beat, every few seconds), sending notifications."""

import os

from celery import Celery

from eventing import tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "foodsite.settings")

app = Celery("foodsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["eventing", "notifications"])

# Tasks carry the trace of whatever queued them (eventing.tracing).
tracing.propagate_through_celery()
