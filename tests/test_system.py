"""The README's run command, end to end: `python -m devstack.launcher` starts its own Kafka,
SQLite, the demo data and every process; a real Chromium orders and pays; the courier and
staff pages show what the consumer processes wrote. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, Page, expect, sync_playwright

from devstack.ports import free_ports
from harness.browser import launch_chromium
from harness.http_client import logged_in, order_and_pay

pytestmark = pytest.mark.system

BASE_DIR = Path(__file__).resolve().parent.parent
SCREENSHOTS = BASE_DIR / "test-artifacts" / "screenshots"
DEMO_PASSWORD = "foodsite-demo"


@dataclass
class Stack:
    process: subprocess.Popen
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("foodsite-home")
    log = home / "launcher.log"
    port, kafka_port = free_ports(2)  # two picks of free_port() alone could be the same port
    env = {**os.environ, "FOODSITE_HOME": str(home), "PORT": str(port), "KAFKA_PORT": str(kafka_port)}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the launcher starts its own broker, as `make run` does
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack.launcher"], cwd=BASE_DIR, env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    stack = Stack(process, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 180
    while "| ready in" not in stack.output():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"launcher did not get ready:\n{stack.output()[-5000:]}")
        time.sleep(0.5)
    yield stack
    if process.poll() is None:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


def new_page(browser: Browser, errors: list[str]) -> Page:
    page = browser.new_context().new_page()
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    return page


def log_in(page: Page, url: str, username: str) -> None:
    page.goto(f"{url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(DEMO_PASSWORD)
    page.get_by_role("button", name="Log in").click()


def mark_loaded(page: Page) -> None:
    """A flag that a reload would wipe: checked at the end to prove nothing reloaded."""
    expect(page.locator("body")).to_have_attribute("data-live", "open")  # its socket is up
    page.evaluate("window.__notReloaded = true")


def not_reloaded(page: Page) -> bool:
    return page.evaluate("window.__notReloaded === true")


def test_the_launcher_prints_the_demo_credentials_and_every_process(stack):
    assert "demo users: courier / foodsite-demo   staff / foodsite-demo" in stack.output()
    deadline = time.monotonic() + 30  # the consumers may log their first line just after "ready"
    processes = ("web", "deliveries", "stats", "notifications", "recommendations", "deadletters", "worker", "beat")
    for name in ("kafka", "migrate", "init-kafka", "seed", *processes):
        while not re.search(rf"^\S+ {re.escape(name)}\s*\|", stack.output(), re.MULTILINE):
            assert time.monotonic() < deadline, f"no log line from {name}"
            time.sleep(0.2)


def test_an_order_paid_in_the_browser_goes_live_to_courier_staff_and_back_to_the_customer(stack, browser):
    """Three people, three browser contexts, no reloads: the courier sees the paid order
    appear and works it, the customer watches it move to "Delivered", staff see the count."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    customer, courier, staff = new_page(browser, errors), new_page(browser, errors), new_page(browser, errors)
    log_in(courier, stack.url, "courier")
    courier.goto(f"{stack.url}/courier/")
    mark_loaded(courier)
    log_in(staff, stack.url, "staff")
    staff.goto(f"{stack.url}/stats/")
    mark_loaded(staff)
    orders_before = int(staff.locator("#stat-orders").inner_text())

    customer.goto(stack.url)
    customer.get_by_label("How many Margherita").fill("2")
    customer.get_by_label("How many Tiramisù").fill("1")
    customer.get_by_label("Your name").fill("Ada Lovelace")
    customer.get_by_label("Delivery address").fill("Via Roma 1, Milano")
    customer.screenshot(path=SCREENSHOTS / "menu.png", full_page=True)
    customer.get_by_role("button", name="Place order").click()
    expect(customer.locator("#order-status")).to_have_text("Placed, waiting for payment")
    order_id = re.search(r"/orders/([0-9a-f-]+)/", customer.url).group(1)
    expect(customer.locator("#order-total")).to_have_text("€ 22.50")  # 2 × 8.50 + 5.50, from the server's menu
    customer.get_by_label("Name on card").fill("Ada Lovelace")
    customer.get_by_label("Card number").fill("4242 4242 4242 4242")
    customer.get_by_label("Expiry (MM/YY)").fill("12/39")
    customer.get_by_label("CVC").fill("123")
    customer.get_by_role("button", name="Pay € 22.50").click()
    expect(customer.locator("#order-status")).to_have_text("Paid")
    mark_loaded(customer)
    customer.screenshot(path=SCREENSHOTS / "order-paid.png", full_page=True)

    row = courier.locator(f'tr[data-order-id="{order_id}"]')
    expect(row).to_contain_text("Via Roma 1, Milano", timeout=10_000)  # appeared by itself
    expect(row).to_contain_text("2 × Margherita, 1 × Tiramisù")
    assert not_reloaded(courier)
    courier.screenshot(path=SCREENSHOTS / "courier.png", full_page=True)

    expect(staff.locator("#stat-orders")).to_have_text(str(orders_before + 1), timeout=10_000)
    expect(staff.locator("#dish-sales tr", has_text="Margherita")).to_be_visible()
    assert not_reloaded(staff)
    staff.screenshot(path=SCREENSHOTS / "stats.png", full_page=True)

    # The courier works the delivery: each click is a form post (the courier's page loads
    # anew); the customer's page follows by itself.
    for button, courier_status, customer_status in (
        ("Claim", "Claimed", "Paid"),
        ("Picked up", "Out for delivery", "Out for delivery"),
    ):
        row.get_by_role("button", name=button).click()
        expect(row.locator(".status")).to_contain_text(courier_status, timeout=10_000)
        expect(customer.locator("#order-status")).to_have_text(customer_status, timeout=10_000)
    expect(customer.locator(".progress li.current")).to_have_text("Out for delivery")
    customer.screenshot(path=SCREENSHOTS / "order-out-for-delivery.png", full_page=True)
    row.get_by_role("button", name="Delivered").click()
    expect(customer.locator("#order-status")).to_have_text("Delivered", timeout=10_000)
    expect(row).to_have_count(0, timeout=10_000)  # off the courier's list
    assert not_reloaded(customer)
    customer.screenshot(path=SCREENSHOTS / "order-delivered.png", full_page=True)

    assert errors == []


def test_fifty_paid_orders_each_appear_on_the_courier_page_by_themselves(stack, browser):
    """Every paid order shows up among the open deliveries of an open courier page without a
    reload, and moves to the courier's own when claimed. Not a speed assertion: it records,
    for the notes, the time from the payment's answer to the row in the courier's page
    (test-artifacts/live-latency.txt)."""
    errors: list[str] = []
    courier = new_page(browser, errors)
    log_in(courier, stack.url, "courier")
    courier.goto(f"{stack.url}/courier/")
    mark_loaded(courier)
    courier.evaluate(
        """() => { window.__seen = {};
        new MutationObserver(() => { for (const row of document.querySelectorAll('tr[data-order-id]'))
            window.__seen[row.dataset.orderId] ??= Date.now(); })
        .observe(document.body, {subtree: true, childList: true}); }"""
    )
    open_rows = "[data-live-list='open-deliveries'] > [data-live-id]"
    courier_http = logged_in(stack.url, "courier")
    # The page lists the oldest open deliveries: earlier tests' must not hide this one's.
    while listed := courier.evaluate(f'[...document.querySelectorAll("{open_rows}")].map(r => r.dataset.liveId)'):
        for order_id in listed:
            claim(courier_http, stack.url, order_id)
        courier.wait_for_function(f"!document.querySelector(\"{open_rows}[data-live-id='{listed[-1]}']\")")
    customer = requests.Session()
    latencies = []
    for _ in range(50):
        order_id = order_and_pay(customer, stack.url)
        paid_at = time.time()
        seen_at = courier.wait_for_function(f"window.__seen['{order_id}']", timeout=10_000).json_value()
        latencies.append(seen_at / 1000 - paid_at)
        expect(courier.locator(f"{open_rows}[data-live-id='{order_id}']")).to_be_visible()
        claim(courier_http, stack.url, order_id)
        mine = courier.locator(f"[data-live-list='my-deliveries'] > [data-live-id='{order_id}']")
        expect(mine).to_contain_text("Claimed")
        expect(mine.get_by_role("button", name="Picked up")).to_be_visible()
    assert courier.locator(open_rows).count() == 0
    assert not_reloaded(courier)
    assert errors == []
    cuts = statistics.quantiles([s * 1000 for s in latencies], n=20)
    report = (
        f"pay answered -> row on the courier page, 50 orders: "
        f"p50 {cuts[9]:.0f} ms, p95 {cuts[18]:.0f} ms, max {max(latencies) * 1000:.0f} ms"
    )
    (BASE_DIR / "test-artifacts").mkdir(exist_ok=True)
    (BASE_DIR / "test-artifacts" / "live-latency.txt").write_text(report + "\n")
    print(report)


def claim(courier: requests.Session, url: str, order_id: str) -> None:
    answer = courier.post(
        f"{url}/courier/{order_id}/claim/",
        data={"csrfmiddlewaretoken": courier.cookies.get("csrftoken")},
        headers={"Referer": f"{url}/courier/"},
        allow_redirects=False,
        timeout=10,
    )
    assert answer.status_code == 302, answer.text[:500]


def test_a_bad_order_in_the_browser_shows_the_reason(stack, browser):
    errors: list[str] = []
    page = new_page(browser, errors)
    page.goto(stack.url)
    page.get_by_label("Your name").fill("Ada")
    page.get_by_label("Delivery address").fill("Via Roma 1")
    page.get_by_role("button", name="Place order").click()
    expect(page.get_by_role("alert")).to_contain_text("Your cart is empty")


def test_ctrl_c_stops_every_process_cleanly(stack):
    port = int(stack.url.rsplit(":", 1)[1])
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(timeout=60) == 0, stack.output()[-3000:]
    stop = stack.output().split("| stopping", 1)[1]
    assert re.search(r"\| stopped in [\d.]+ s$", stop.rstrip()), stop[-3000:]
    # A clean stop is quiet: no process needed killing, none logged an error on its way out
    # (Celery's pool child used to, when it got the SIGTERM meant for its parent).
    assert "killing it" not in stop, stop
    assert not re.search(r"ERROR|CRITICAL|Traceback", stop), stop
    print(stop.rstrip().rsplit("\n", 1)[-1])
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "web still listening after Ctrl-C"
