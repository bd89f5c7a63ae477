"""The cluster's health, watched for the staff page: pushed when it changes, with no event
flowing.

The staff page's figures move when the statistics service commits a batch, and its Kafka
view was read then too; but a broker can die, and partitions fall out of sync, while no order
comes in. So while a staff page is open on a web process (and only then: nobody else is told),
that process reads the cluster's metadata every settings.KAFKA_HEALTH_EVERY_S seconds (one
metadata request to a live broker, through one long-lived admin client, in a thread of its
own) and compares its health (eventing.kafka_view.ClusterHealth: brokers live and down,
under-replicated and offline partitions, or Kafka unreachable) with the last. A change is
logged (WARNING when something is wrong, INFO when all is well again) and handed to
`on_change`, which makes the staff sockets re-read and send their Kafka region.

How soon: a broker killed outright stays in the metadata until the controller fences it
(broker.session.timeout.ms: 5 s in devstack's nodes, Kafka's default 9 s), then the next read
sees it down, its partitions' new leaders and shrunk in-sync sets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from confluent_kafka.admin import AdminClient

from eventing.clients import admin_client
from eventing.kafka_view import ClusterHealth, cluster_health

log = logging.getLogger("stats.kafka_view")


class ClusterWatch:
    """Reads the health every `every` seconds while `wanted()`, and calls `on_change(health)`
    with each one that differs from the last (the first read too: the page opened just before
    may have been read a moment earlier), and with an unchanged one while `stale()`: the page
    read after the last change fell short (the Kafka view's offsets did not answer in time
    while leaders moved), so what it shows is not yet that health. `read` is what reads it (a
    test gives its own)."""

    def __init__(
        self,
        every: float,
        on_change: Callable[[ClusterHealth], None],
        read: Callable[[], ClusterHealth] | None = None,
        stale: Callable[[], bool] = lambda: False,
    ) -> None:
        self.every = every
        self.on_change = on_change
        self.stale = stale
        self.last: ClusterHealth | None = None
        self._read = read or self._read_metadata
        self._admin: AdminClient | None = None
        self._task: asyncio.Task | None = None
        # Its own thread: a read can wait on an unreachable cluster, and must hold up nothing else.
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kafka-health")

    def ensure_running(self, wanted: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(wanted), name="kafka health watch")

    def stop(self) -> None:
        """Ends the watch now (the last staff socket closed), not at its next read: a task
        left asleep on a loop that then closes was logged at ERROR as "Task was destroyed but
        it is pending" (CI saw it when a test's event loop ended)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None

    async def _run(self, wanted: Callable[[], bool]) -> None:
        loop = asyncio.get_running_loop()
        try:
            while wanted():
                health = await loop.run_in_executor(self._thread, self._read)
                if health != self.last:
                    _log_change(health, self.last)
                    self.last = health
                    self.on_change(health)
                elif self.stale() and not health.error:  # unreachable: no page read would do better
                    self.on_change(health)
                await asyncio.sleep(self.every)
        finally:
            self.last = None  # nobody watches: the next staff page starts afresh

    def _read_metadata(self) -> ClusterHealth:
        if self._admin is None:
            # A dead bootstrap address fails in a second, not librdkafka's 30 s.
            self._admin = admin_client(**{"socket.connection.setup.timeout.ms": 1000})
        return cluster_health(self._admin, timeout=max(1.0, 2 * self.every))


def describe(health: ClusterHealth) -> str:
    """One line for the log: what an operator is told."""
    if health.error:
        return health.error
    parts = [f"{len(health.brokers_live)} broker(s) live"]
    if health.brokers_down:
        parts.append(f"down: {', '.join(map(str, health.brokers_down))}")
    if health.offline:
        parts.append(f"{len(health.offline)} offline partition(s): {', '.join(health.offline)}")
    if health.under_replicated:
        parts.append(f"{len(health.under_replicated)} under-replicated partition(s)")
    return "; ".join(parts)


def _healthy(health: ClusterHealth) -> bool:
    return not (health.error or health.brokers_down or health.offline or health.under_replicated)


def _log_change(health: ClusterHealth, before: ClusterHealth | None) -> None:
    if before is None and _healthy(health):
        return  # a watch starting on a healthy cluster has nothing to report
    level = logging.INFO if _healthy(health) else logging.WARNING
    log.log(level, "Kafka health: %s", describe(health))
