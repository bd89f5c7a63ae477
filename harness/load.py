"""Customers over real HTTP, as fast as a few threads go or at a fixed rate: each places an order and pays it.

An order costs two requests, as for a browser that already has the menu: the order form
(POST /) and the card form (POST /orders/<id>/pay/). The CSRF token of one menu page serves
every form of the session, and the idempotency key is one fresh value per order (the form
accepts any; a browser gets one per rendering of the menu). Requests alternate between the
web processes, so an order placed on one is paid on the other, as behind a load balancer.

    load = OrderLoad(["http://127.0.0.1:8001", "http://127.0.0.1:8002"], orders=5000)
    load.start(); ...; result = load.wait(timeout=300)
"""

from __future__ import annotations

import itertools
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

import requests

from harness.http_client import CARD

ORDER_PATH = re.compile(r"/orders/([0-9a-f-]{36})/")


@dataclass(frozen=True)
class Split:
    """Where one request's time went, in ms: as the client saw it; inside the web process's
    handler (from daphne handing it over to the answer: waiting for a thread, the body, the
    view); inside the view's middleware chain. The rest is outside the handler, split by
    the handler's start on the wall clock (same host) into before it (the client's send,
    the kernel, daphne reading the request) and after it (daphne writing the answer, the
    kernel, the client's thread waking up to read it)."""

    request: str
    at: float  # wall time the client sent it
    client: float
    handler: float | None = None
    app: float | None = None
    before: float | None = None

    @property
    def after(self) -> float | None:
        return None if self.handler is None or self.before is None else self.client - self.before - self.handler

    def __str__(self) -> str:
        return (
            f"{self.request} at {time.strftime('%H:%M:%S', time.localtime(self.at))}: {self.client:.0f} ms "
            f"(before the handler {_ms(self.before)}, handler {_ms(self.handler)} of which view {_ms(self.app)}, "
            f"after it {_ms(self.after)})"
        )


def _ms(value: float | None) -> str:
    return "?" if value is None else f"{value:.0f}"


SLOWEST_KEPT = 5
SERVER_TIMING = re.compile(r'(\w+);dur=([0-9.]+)(?:;desc="([0-9.]+)")?')


def split_of(request: str, response: requests.Response | None, sent_at: float, seconds: float) -> Split:
    timings = {name: (float(dur), start) for name, dur, start in SERVER_TIMING.findall(_server_timing(response))}
    handler, handler_started = timings.get("handler", (None, ""))
    app = timings["app"][0] if "app" in timings else None
    before = (float(handler_started) - sent_at) * 1000 if handler_started else None
    return Split(request, sent_at, seconds * 1000, handler, app, before)


def _server_timing(response: requests.Response | None) -> str:
    return "" if response is None else response.headers.get("Server-Timing", "")


@dataclass
class LoadResult:
    placed: set[str] = field(default_factory=set)  # answered 302 on the order form
    paid: set[str] = field(default_factory=set)  # answered 302 on the card form too
    requests: int = 0
    failures: list[str] = field(default_factory=list)  # "HH:MM:SS POST / -> 500" etc.
    slowest: float = 0.0  # seconds
    slowest_request: str = ""
    over: list[tuple[float, float]] = field(default_factory=list)  # (wall time, seconds) above the limit
    # The slowest requests, each split by the server's Server-Timing header where it sent one.
    slowest_split: list[Split] = field(default_factory=list)
    started: float = 0.0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        """Orders placed and paid per second."""
        return len(self.paid) / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        return (
            f"{len(self.paid)} orders placed and paid ({len(self.placed)} placed) in {self.seconds:.1f} s "
            f"({self.rate:.0f}/s), {self.requests} requests, slowest {self.slowest * 1000:.0f} ms "
            f"({self.slowest_request}), {len(self.over)} over the limit, {len(self.failures)} failed"
            + "".join(f"\n  slow: {split}" for split in self.slowest_split)
        )


class OrderLoad:
    """Threads of customers placing and paying orders until `orders` are paid or stop()."""

    def __init__(
        self,
        urls: list[str],
        *,
        orders: int | None = None,
        threads: int = 4,
        email: str | None = None,
        slow_after: float = 0.5,
        timeout: float = 10,
        rate: float | None = None,
    ) -> None:
        self.urls = urls
        self.orders = orders
        self.threads = threads
        self.email = email  # each order's customer email (None: the customer gave none)
        self.slow_after = slow_after  # a request slower than this is listed in result.over
        self.timeout = timeout
        # Orders per second for all customers together, on a fixed schedule (order n starts
        # n / rate seconds after start(), or at once when the customers are behind); None: as
        # fast as the threads go, a closed loop that saturates whatever it runs on.
        self.rate = rate
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._tickets = itertools.count()
        self._stopping = threading.Event()
        self._workers: list[threading.Thread] = []

    def start(self) -> OrderLoad:
        self.result.started = time.monotonic()
        self._workers = [
            threading.Thread(target=self._customer, args=(i,), name=f"customer-{i}", daemon=True)
            for i in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def stop(self) -> LoadResult:
        self._stopping.set()
        return self.wait()

    def wait(self, timeout: float | None = None) -> LoadResult:
        """Until every worker is done (`orders` reached, or stop()); then the figures."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            worker.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                self._stopping.set()
                raise TimeoutError(f"load not done within {timeout} s: {self.progress()}")
        self.result.seconds = time.monotonic() - self.result.started
        return self.result

    def done(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the load to end; whether it has."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
        return not any(worker.is_alive() for worker in self._workers)

    def progress(self) -> str:
        with self._lock:
            result = self.result
            return (
                f"{len(result.paid)} paid in {time.monotonic() - result.started:.0f} s, slowest "
                f"{result.slowest * 1000:.0f} ms, {len(result.over)} over {self.slow_after:g} s, "
                f"{len(result.failures)} failed"
            )

    @property
    def paid_count(self) -> int:
        with self._lock:
            return len(self.result.paid)

    def _customer(self, index: int) -> None:
        session = requests.Session()
        menu = session.get(self.urls[index % len(self.urls)], timeout=self.timeout).text
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', menu).group(1)
        dishes = re.findall(r'name="qty-(\d+)"', menu)
        order_form = {"csrfmiddlewaretoken": token, "customer_name": f"Customer {index}", "address": "Via Roma 1"}
        if self.email:
            order_form["email"] = self.email
        card_form = {"csrfmiddlewaretoken": token, **CARD}
        urls = itertools.cycle(self.urls[index % len(self.urls) :] + self.urls[: index % len(self.urls)])
        while not self._stopping.is_set():
            ticket = next(self._tickets)
            if self.orders is not None and ticket >= self.orders:
                return
            if self.rate:
                due = self.result.started + ticket / self.rate
                if self._stopping.wait(max(0.0, due - time.monotonic())):
                    return
            # One or two dishes, so that revenue and dish counts vary between orders.
            cart = {f"qty-{dishes[ticket % len(dishes)]}": str(1 + ticket % 3)}
            if ticket % 2:
                cart[f"qty-{dishes[(ticket + 1) % len(dishes)]}"] = "1"
            data = {**order_form, **cart, "idempotency_key": uuid.uuid4().hex}
            placed = self._post(session, next(urls), "/", data)
            if placed is None:
                continue
            order_id = ORDER_PATH.search(placed.headers["Location"]).group(1)
            with self._lock:
                self.result.placed.add(order_id)
            if self._post(session, next(urls), f"/orders/{order_id}/pay/", card_form) is not None:
                with self._lock:
                    self.result.paid.add(order_id)
            # The next order is another customer's: the signed cookie that lets this browser
            # pay its orders would otherwise grow to 50 order ids on every request.
            session.cookies.set("orders", None)

    def _post(self, session: requests.Session, url: str, path: str, data: dict) -> requests.Response | None:
        """The response if it is the 302 a customer gets when it worked; else None, recorded."""
        sent_at, started = time.time(), time.perf_counter()
        try:
            response = session.post(url + path, data=data, allow_redirects=False, timeout=self.timeout)
        except requests.RequestException as exc:
            response, outcome = None, f"{type(exc).__name__}: {exc}"
        else:
            outcome = str(response.status_code)
        elapsed = time.perf_counter() - started
        with self._lock:
            result = self.result
            result.requests += 1
            if elapsed > result.slowest:
                result.slowest, result.slowest_request = elapsed, f"POST {url}{path}"
            if elapsed > self.slow_after:
                result.over.append((time.time(), elapsed))
            if len(result.slowest_split) < SLOWEST_KEPT or elapsed * 1000 > result.slowest_split[-1].client:
                result.slowest_split.append(split_of(f"POST {url}{path}", response, sent_at, elapsed))
                result.slowest_split.sort(key=lambda split: -split.client)
                del result.slowest_split[SLOWEST_KEPT:]
            if response is None or response.status_code != 302:
                result.failures.append(f"{time.strftime('%H:%M:%S')} POST {url}{path} -> {outcome}")
                return None
        return response
