"""What the host project plugs into the machinery: metrics, and what runs after a consumer's
commit. Both default to doing nothing; the project names its own in settings
(EVENTING_METRICS, EVENTING_AFTER_COMMIT: dotted paths), the way Sentry's arroyo lets its
host `configure_metrics`. So the machinery imports no metrics library and no web transport.

Metric names and tags the machinery reports (a backend maps them to its own):

    consumer.events      increment  group, outcome (applied / skipped / dead_lettered)
    consumer.retries     increment  group
    consumer.batch       timing     group          (decode, apply and commit one batch)
    producer.delivery_failures  increment  topic, error
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from django.utils.module_loading import import_string

from eventing.conf import settings

if TYPE_CHECKING:
    from confluent_kafka import Producer

    from eventing.projection import ConsumedEvent, Projection

Tags = dict[str, str]


class Metrics(Protocol):
    def increment(self, name: str, value: int = 1, tags: Tags | None = None) -> None: ...

    def timing(self, name: str, seconds: float, tags: Tags | None = None) -> None: ...


class NoMetrics:
    def increment(self, name: str, value: int = 1, tags: Tags | None = None) -> None:
        pass

    def timing(self, name: str, seconds: float, tags: Tags | None = None) -> None:
        pass


# Called with a projection, the events of a batch it applied, and the runner's producer
# (polled by its loop: for fire-and-forget messages such as notices), after the commit, so
# that a page re-read then sees the change. Must not raise and must not wait: it runs in
# the consume loop.
AfterCommit = Callable[["Projection", list["ConsumedEvent"], "Producer"], None]


def metrics() -> Metrics:
    return _load_metrics(settings.EVENTING_METRICS)


def after_commit() -> AfterCommit | None:
    path = settings.EVENTING_AFTER_COMMIT
    return import_string(path) if path else None


@functools.cache
def _load_metrics(path: str | None) -> Metrics:
    return import_string(path)() if path else NoMetrics()
