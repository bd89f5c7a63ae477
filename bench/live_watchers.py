"""Many watchers: a thousand live pages open on one web process while orders flow.

    .venv/bin/python bench/live_watchers.py [--orders 1000] [--couriers 50] [--staff 5]
        [--rate 100] [--seconds 30] [--json results.json]

Starts the run command's stack (`python -m devstack.launcher`: its own broker, SQLite, one
daphne, every consumer, the worker), places and pays `--orders` orders through the web's own
services (so the courier page has that many open deliveries), then opens, from one asyncio
client of its own (the `websockets` library), one socket per order page (`/ws/orders/<id>/`
with that browser's signed orders cookie), `--couriers` courier pages and `--staff` staff
pages, each logged in as its own user. Then, for `--seconds`: `--rate` new orders a second
straight into Kafka (as live_latency.py's load: placed, paid, and claimed, picked up and
delivered by another courier 1 s later) while the watched orders are claimed in payment
order by the watching couriers, picked up 1 s and delivered 2 s later (about 100 steps a
second at the defaults), so every kind of page gets frames.

Reports, per page kind: from the consumer's commit (the frame's `at`, the notice's time) to
the frame at this client, p50/p95/max; frames and bytes a second per socket; sockets
dropped. And the web process's CPU (share of one core, from /proc) with the sockets open and
idle, and under the load, and its resident memory before, with the sockets open, and at the
end. The client shares the machine: its own CPU is printed too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import resource
import statistics
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BASE_DIR))
sys.path.insert(0, str(BASE_DIR / "bench"))

from live_latency import BackgroundLoad, EventWriter, Stack  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def web_pid(port: int) -> int:
    """The daphne serving `port` (a child of the launcher)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"daphne" in a for a in argv) and str(port).encode() in argv:
            return int(entry.name)
    raise RuntimeError(f"no daphne on port {port}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_shares(pids: list[int], seconds: float) -> list[float]:
    """Each process's CPU over the next `seconds`, as a share of one core."""
    before, started = [cpu_seconds(pid) for pid in pids], time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - started
    return [(cpu_seconds(pid) - b) / elapsed for pid, b in zip(pids, before, strict=True)]


def prepare(orders: int, couriers: int, staff: int) -> dict:
    """Users, sessions and paid orders, through the project's own code (django set up by
    the caller on the stack's database and broker)."""
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from deliveries.permissions import COURIERS_GROUP
    from orders import selectors, services
    from orders.models import Dish

    def session_of(user: User) -> str:
        client = Client()
        client.force_login(user)
        return client.cookies["sessionid"].value

    group = Group.objects.get(name=COURIERS_GROUP)
    courier_sessions = {}
    for n in range(couriers):
        user, _ = User.objects.get_or_create(username=f"watcher-courier-{n}")
        user.groups.add(group)
        courier_sessions[user.username] = session_of(user)
    staff_sessions = []
    for n in range(staff):
        user, _ = User.objects.get_or_create(username=f"watcher-staff-{n}", defaults={"is_staff": True})
        staff_sessions.append(session_of(user))
    dish = Dish.objects.first()
    order_cookies = {}
    for n in range(orders):
        order = services.place_order(
            customer_name=f"Watcher {n}",
            address="Via Osservatorio 1",
            items=[services.CartItem(dish_id=dish.pk, quantity=1)],
        )
        services.pay_order(order=order, card=services.Card(number="4242424242424242", holder="Watcher"))
        order_cookies[str(order.pk)] = selectors.orders_cookie_value([str(order.pk)])
    return {"couriers": courier_sessions, "staff": staff_sessions, "orders": order_cookies}


def wait_for_open_deliveries(order_ids: list[str], timeout: float = 120) -> None:
    from deliveries.models import Delivery

    deadline = time.monotonic() + timeout
    while Delivery.objects.filter(order_id__in=order_ids, paid_at__isnull=False, placed_at__isnull=False).count() < len(
        order_ids
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("the deliveries projection did not get the watched orders")
        time.sleep(0.5)


class WatchedSteps(EventWriter):
    """The watched orders claimed in payment order by the watching couriers, `rate` a second,
    each picked up 1 s and delivered 2 s after its claim: straight into Kafka, as the web's
    outbox would publish the couriers' steps."""

    def __init__(self, bootstrap: str, order_ids: list[str], couriers: list[str], rate: float) -> None:
        super().__init__(bootstrap)
        self.order_ids, self.couriers, self.rate = order_ids, couriers, rate
        self.claimed = 0

    def _run(self) -> None:
        from contract.events import DeliveryClaimed, DeliveryDelivered, DeliveryPickedUp

        due: list[tuple[float, type, str, str]] = []
        started = time.monotonic()
        while not self._stopping.is_set():
            now = time.monotonic()
            while self.claimed < len(self.order_ids) and started + self.claimed / self.rate <= now:
                order_id = self.order_ids[self.claimed]
                courier = self.couriers[self.claimed % len(self.couriers)]
                self._publish(DeliveryClaimed(order_id=order_id, courier=courier))
                due += [(now + 1, DeliveryPickedUp, order_id, courier), (now + 2, DeliveryDelivered, order_id, courier)]
                self.claimed += 1
            for step in [d for d in due if d[0] <= now]:
                due.remove(step)
                self._publish(step[1](order_id=step[2], courier=step[3]))
            self._producer.poll(0)
            time.sleep(0.005)


class Watchers:
    """Every socket in one asyncio loop (its own thread): latency of each frame from its
    `at`, frames and bytes per kind, sockets dropped."""

    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.frames: dict[str, int] = defaultdict(int)
        self.bytes: dict[str, int] = defaultdict(int)
        self.sockets: dict[str, int] = defaultdict(int)
        self.opened: dict[str, int] = defaultdict(int)
        self.dropped: dict[str, int] = defaultdict(int)
        self.refused: dict[str, int] = defaultdict(int)
        self.measuring = False
        self.loop = asyncio.new_event_loop()
        self._stopping: asyncio.Event | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def open_all(self, pages: list[tuple[str, str, str]], at_once: int = 50) -> None:
        asyncio.run_coroutine_threadsafe(self._open_all(pages, at_once), self.loop).result()

    async def _open_all(self, pages: list[tuple[str, str, str]], at_once: int) -> None:
        self._stopping = asyncio.Event()
        gate = asyncio.Semaphore(at_once)
        opened = [asyncio.get_running_loop().create_future() for _ in pages]
        for (kind, url, cookie), ready in zip(pages, opened, strict=True):
            self.sockets[kind] += 1
            asyncio.get_running_loop().create_task(self._watch(kind, url, cookie, gate, ready))
        await asyncio.gather(*opened)

    async def _watch(self, kind: str, url: str, cookie: str, gate: asyncio.Semaphore, ready: asyncio.Future) -> None:
        from websockets.asyncio.client import connect
        from websockets.exceptions import ConnectionClosed, InvalidStatus

        try:
            async with gate:
                socket = await connect(
                    url.replace("http://", "ws://"),
                    origin=url.split("/ws/")[0],
                    additional_headers={"Cookie": cookie},
                    open_timeout=120,
                    max_size=2**24,
                    ping_interval=None,
                )
                await socket.recv()  # its whole page, first
        except (InvalidStatus, OSError, TimeoutError, ConnectionClosed) as exc:
            self.refused[kind] += 1
            print(f"{kind} socket not opened: {exc!r}", file=sys.stderr)
            ready.set_result(False)
            return
        self.opened[kind] += 1
        ready.set_result(True)
        try:
            async for message in socket:
                received = time.time()
                if not self.measuring:
                    continue
                frame = json.loads(message)
                self.frames[kind] += 1
                self.bytes[kind] += len(message)
                if "at" in frame:
                    self.latency[kind].append(received - frame["at"])
        except ConnectionClosed:
            pass
        if not self._stopping.is_set():
            self.dropped[kind] += 1
        await socket.close()

    def close_all(self) -> None:
        async def stop() -> None:
            self._stopping.set()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)


def percentiles(values: list[float]) -> dict:
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return {"n": 0}
    p95 = statistics.quantiles(ms, n=20, method="inclusive")[18] if len(ms) > 1 else ms[0]
    return {"n": len(ms), "p50": round(statistics.median(ms), 1), "p95": round(p95, 1), "max": round(ms[-1], 1)}


def bench(
    orders: int,
    couriers: int,
    staff: int,
    rate: int,
    seconds: float,
    production: bool = False,
    profile: str = "embedded",
) -> dict:
    stack = Stack(production, profile)
    stack.start()
    bootstrap = stack.bootstrap
    os.environ.update(
        {**stack.env, "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "DJANGO_SETTINGS_MODULE": "foodsite.settings"}
    )
    import django

    django.setup()
    logging.disable(logging.INFO)  # the project's per-order log lines, a thousand of them in prepare()
    report: dict = {
        "orders": orders, "couriers": couriers, "staff": staff, "rate": rate, "seconds": seconds,
        "production": production, "profile": profile,
    }  # fmt: skip
    watchers = None
    try:
        pids = [web_pid(int(url.rsplit(":", 1)[1])) for url in stack.urls]
        began = time.monotonic()
        sessions = prepare(orders, couriers, staff)
        order_ids = list(sessions["orders"])
        wait_for_open_deliveries(order_ids)
        report["prepared_s"] = round(time.monotonic() - began, 1)
        report["web_rss_mb_before"] = [round(rss_mb(pid), 1) for pid in pids]
        pages = [("order", f"/ws/orders/{o}/", f"orders={cookie}") for o, cookie in sessions["orders"].items()]
        pages += [("courier", "/ws/courier/", f"sessionid={s}") for s in sessions["couriers"].values()]
        pages += [("staff", "/ws/stats/", f"sessionid={s}") for s in sessions["staff"]]
        random.Random(1).shuffle(pages)
        # Spread over the web processes, as a load balancer would.
        pages = [(kind, stack.urls[n % len(stack.urls)] + path, c) for n, (kind, path, c) in enumerate(pages)]
        watchers = Watchers()
        began = time.monotonic()
        watchers.open_all(pages)
        report["open_s"] = round(time.monotonic() - began, 1)
        report["web_rss_mb_open"] = [round(rss_mb(pid), 1) for pid in pids]
        report["web_cpu_idle_open"] = [round(c, 3) for c in cpu_shares(pids, 5)]

        load = BackgroundLoad(bootstrap, rate)
        steps = WatchedSteps(bootstrap, order_ids, list(sessions["couriers"]), rate=orders / seconds)
        client_cpu = resource.getrusage(resource.RUSAGE_SELF)
        watchers.measuring = True
        started = time.monotonic()
        load.start()
        steps.start()
        web_cpu = cpu_shares(pids, seconds)
        watchers.measuring = False
        elapsed = time.monotonic() - started
        load.stop()
        steps.stop()
        after = resource.getrusage(resource.RUSAGE_SELF)
        report["client_cpu_under_load"] = round(
            (after.ru_utime + after.ru_stime - client_cpu.ru_utime - client_cpu.ru_stime) / elapsed, 3
        )
        report["web_cpu_under_load"] = [round(c, 3) for c in web_cpu]
        report["web_rss_mb_end"] = [round(rss_mb(pid), 1) for pid in pids]
        report["background_rate"] = round(load.sent / elapsed, 1)
        report["watched_claimed"] = steps.claimed
        report["pages"] = {
            kind: {
                "sockets": watchers.sockets[kind],
                "opened": watchers.opened[kind],
                "refused": watchers.refused[kind],
                "dropped": watchers.dropped[kind],
                "commit_to_frame_ms": percentiles(watchers.latency[kind]),
                "frames_per_s_per_socket": round(watchers.frames[kind] / elapsed / max(watchers.opened[kind], 1), 2),
                "bytes_per_s_per_socket": round(watchers.bytes[kind] / elapsed / max(watchers.opened[kind], 1)),
            }
            for kind in ("order", "courier", "staff")
        }
    finally:
        if watchers is not None:
            watchers.close_all()
        stack.stop()
        report["load_average"] = os.getloadavg()
    return report


def print_report(report: dict) -> None:
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print("settings: " + ("production (DEBUG off)" if report.get("production") else "make run's (DEBUG on)"))
    sockets = sum(p["opened"] for p in report["pages"].values())
    processes = len(report["web_rss_mb_before"])
    print(
        f"{sockets} sockets on {processes} web process{'es' if processes > 1 else ''} ({report['profile']} profile), "
        f"+{report['background_rate']} orders/s and "
        f"{report['watched_claimed']} watched orders stepped in {report['seconds']} s"
    )
    print(f"{'page':<10}{'sockets':>8}{'dropped':>8}{'p50 ms':>8}{'p95 ms':>8}{'max ms':>8}{'frames/s':>9}{'B/s':>8}")
    for kind, page in report["pages"].items():
        lat = page["commit_to_frame_ms"]
        print(
            f"{kind:<10}{page['opened']:>8}{page['dropped'] + page['refused']:>8}{lat.get('p50', 0):>8.0f}"
            f"{lat.get('p95', 0):>8.0f}{lat.get('max', 0):>8.0f}{page['frames_per_s_per_socket']:>9.2f}"
            f"{page['bytes_per_s_per_socket']:>8}"
        )
    each = sockets / processes
    for n in range(processes):
        before, opened = report["web_rss_mb_before"][n], report["web_rss_mb_open"][n]
        idle, loaded = report["web_cpu_idle_open"][n], report["web_cpu_under_load"][n]
        print(
            f"web process {n + 1} (~{each:.0f} sockets): RSS {before} MB before, {opened} with the sockets open "
            f"({(opened - before) / max(each / 100, 1):.1f} MB per 100 sockets), {report['web_rss_mb_end'][n]} at "
            f"the end; CPU {idle * 100:.0f}% of a core idle with them open, {loaded * 100:.0f}% under the load "
            f"({loaded * 100 / max(each / 100, 1):.1f}% per 100 sockets)"
        )
    print(
        f"this client: {report['client_cpu_under_load'] * 100:.0f}% of a core; load average at the end: "
        f"{', '.join(f'{x:.1f}' for x in report['load_average'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=1000, help="order pages watched (one socket each)")
    parser.add_argument("--couriers", type=int, default=50, help="courier pages, one courier each")
    parser.add_argument("--staff", type=int, default=5, help="staff pages")
    parser.add_argument("--rate", type=int, default=100, help="background orders a second")
    parser.add_argument("--seconds", type=float, default=30, help="how long the load runs")
    parser.add_argument("--production", action="store_true", help="DEBUG off (default: make run's settings)")
    parser.add_argument(
        "--profile", choices=("embedded", "cluster"), default="embedded", help="cluster: two web processes, 3 brokers"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    report = bench(args.orders, args.couriers, args.staff, args.rate, args.seconds, args.production, args.profile)
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
