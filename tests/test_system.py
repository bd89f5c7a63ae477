"""The README's run command, end to end: `python -m foodsite.launcher` starts its own Kafka,
SQLite, the demo data and every process; a real Chromium orders and pays; the courier and
staff pages show what the consumer processes wrote. Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from foodsite.localkafka import free_port

pytestmark = pytest.mark.system

BASE_DIR = Path(__file__).resolve().parent.parent
SCREENSHOTS = BASE_DIR / "test-artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
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
    port = free_port()
    env = {**os.environ, "FOODSITE_HOME": str(home), "PORT": str(port), "KAFKA_PORT": str(free_port())}
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)  # the launcher starts its own broker, as `make run` does
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "foodsite.launcher"], cwd=BASE_DIR, env=env, stdout=sink, stderr=subprocess.STDOUT
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
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
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


def reload_until(page: Page, locator: str, timeout: float = 30) -> None:
    """The skeleton's pages are not live yet: reload as a person would, until it shows."""
    deadline = time.monotonic() + timeout
    while page.locator(locator).count() == 0:
        assert time.monotonic() < deadline, f"{locator} never appeared on {page.url}"
        time.sleep(0.5)
        page.reload()


def test_the_launcher_prints_the_demo_credentials_and_every_process(stack):
    assert "demo users: courier / foodsite-demo   staff / foodsite-demo" in stack.output()
    deadline = time.monotonic() + 30  # the consumers may log their first line just after "ready"
    for name in ("kafka", "migrate", "init-kafka", "seed", "web", "deliveries", "stats", "worker"):
        while not re.search(rf"^\S+ {re.escape(name)}\s+\|", stack.output(), re.MULTILINE):
            assert time.monotonic() < deadline, f"no log line from {name}"
            time.sleep(0.2)


def test_an_order_paid_in_the_browser_reaches_courier_and_stats_pages(stack, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    customer = new_page(browser, errors)

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
    customer.screenshot(path=SCREENSHOTS / "order-paid.png", full_page=True)

    courier = new_page(browser, errors)
    log_in(courier, stack.url, "courier")
    courier.goto(f"{stack.url}/courier/")
    reload_until(courier, f'tr[data-order-id="{order_id}"]')
    row = courier.locator(f'tr[data-order-id="{order_id}"]')
    expect(row).to_contain_text("Via Roma 1, Milano")
    expect(row).to_contain_text("2 × Margherita, 1 × Tiramisù")
    courier.screenshot(path=SCREENSHOTS / "courier.png", full_page=True)

    staff = new_page(browser, errors)
    log_in(staff, stack.url, "staff")
    staff.goto(f"{stack.url}/stats/")
    reload_until(staff, "#dish-sales td:has-text('Margherita')")
    expect(staff.locator("#stat-revenue")).to_have_text("€ 22.50")
    expect(staff.locator("#stat-profit")).to_have_text("€ 16.30")  # 22.50 − (2 × 2.40 + 1.40) food cost
    staff.screenshot(path=SCREENSHOTS / "stats.png", full_page=True)

    assert errors == []


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
    assert stack.output().rstrip().endswith("stopped")
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0, "web still listening after Ctrl-C"
