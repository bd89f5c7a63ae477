"""Failover scenarios shared by tests/test_failover.py and bench/failover_bench.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from devstack.kafka_cluster import LocalCluster
from harness.load import LoadResult, OrderLoad
from harness.stack import Stack, wait_for


@dataclass
class LeaderKill:
    result: LoadResult
    victim: int  # the broker killed
    led: int  # how many partitions of orders and payments it led
    partitions: int  # of orders and payments together
    paid_before_kill: int
    killed_at: str  # wall clock, UTC, to place the slow requests
    elected: float  # seconds from the kill until every partition had a leader on a live broker
    registered: float  # seconds from the kill until it was back in the cluster (started after the load)
    in_sync: float  # seconds from the kill until every partition had its 3 replicas in sync
    settled: float  # seconds waited before the load for the worker to start and the cores to calm

    def describe(self) -> str:
        return (
            f"load started after {self.settled:.0f} s for the machine to settle; "
            f"broker {self.victim} led {self.led} of the {self.partitions} partitions of orders and payments; "
            f"killed (kill -9) at {self.killed_at} after {self.paid_before_kill} orders; new leaders elected "
            f"{self.elected:.1f} s after the kill; started again after the load, registered {self.registered:.1f} s "
            f"after the kill; every partition's ISR back to 3 {self.in_sync:.1f} s after the kill"
        )


def kill_the_leader_under_load(
    stack: Stack,
    cluster: LocalCluster,
    orders: int,
    customers: int,
    rate: float | None = None,
    progress: Callable[[OrderLoad], None] | None = None,
) -> LeaderKill:
    """kill -9 the broker leading most partitions of orders and payments once a fifth of the
    orders are paid; the load goes on against the two others; the broker is started again
    after the load (on one machine its JVM's start-up would take the web processes' CPU, which
    a broker on its own machine does not) and the ISR must come back to 3 everywhere.
    `rate` paces the orders (per second; None: as fast as the customers go).
    `progress` is called every 30 s while the load runs."""
    settled = stack.wait_settled()
    # Untimed warm-up: the first requests of new customers on web processes idle since the
    # last test (a database connection to open again, cold caches, every thread arriving at
    # once) took up to 0.65 s on a quiet machine, before any broker was touched. The bound
    # below is about Kafka never holding a request; these orders are counted like the others.
    OrderLoad(stack.urls, orders=customers * 10, threads=customers).start().wait(timeout=120)
    leaders = stack.leaders("orders", "payments")
    victim, led = leaders.most_common(1)[0]
    load = OrderLoad(stack.urls, orders=orders, threads=customers, rate=rate).start()
    try:
        wait_for(lambda: load.paid_count >= orders // 5, max(300, orders / 10), "the load is too slow")
        paid_before_kill = load.paid_count
        cluster.kill(victim)
        killed, killed_at = time.monotonic(), time.strftime("%H:%M:%S", time.gmtime())

        def moved() -> bool:
            now = stack.leaders("orders", "payments")
            return victim not in now and -1 not in now

        elected = wait_for(moved, 60, f"broker {victim}'s partitions never got a new leader", every=0.2)
        while progress is not None and not load.done(timeout=30):
            progress(load)
        result = load.wait(timeout=max(600, orders / 5))
    finally:
        load.stop()
    cluster.start_node(victim)
    cluster.wait_node_ready(victim, timeout=180)
    registered = time.monotonic() - killed
    wait_for(lambda: not stack.under_replicated(), 180, "in-sync replicas never back to 3")
    return LeaderKill(
        result=result,
        victim=victim,
        led=led,
        partitions=sum(leaders.values()),
        paid_before_kill=paid_before_kill,
        killed_at=killed_at,
        elected=elected,
        registered=registered,
        in_sync=time.monotonic() - killed,
        settled=settled,
    )
