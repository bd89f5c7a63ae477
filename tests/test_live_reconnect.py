"""A live page whose socket drops says so, stays a page that can be reloaded, reconnects by
itself when the web process is back, and is live again. Real daphne, consumers and broker."""

from __future__ import annotations

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from devstack.launcher import wait_http
from harness.browser import launch_chromium
from harness.http_client import order_and_pay
from harness.processes import Services

pytestmark = pytest.mark.system


def test_a_dropped_socket_says_so_and_reconnects_by_itself(kafka, tmp_path):
    services = Services(tmp_path / "home", kafka.bootstrap_servers)
    try:
        services.manage("seed_demo")
        services.start("consume_deliveries")
        web, url = services.spawn_web()
        wait_http(f"{url}/healthz", timeout=60)

        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            courier = browser.new_page()
            courier.goto(f"{url}/accounts/login/")
            courier.get_by_label("Username").fill("courier")
            courier.get_by_label("Password").fill("foodsite-demo")
            courier.get_by_role("button", name="Log in").click()
            courier.goto(f"{url}/courier/")
            banner = courier.locator("#live-status")
            expect(courier.locator("body")).to_have_attribute("data-live", "open")
            expect(banner).to_be_hidden()
            courier.evaluate("window.__notReloaded = true")

            web.kill()  # the web process dies under the open page
            web.wait()
            expect(banner).to_be_visible()
            expect(banner).to_contain_text("Live updates paused")
            expect(banner.get_by_role("link", name="Reload")).to_be_visible()

            services.spawn_web(port=int(url.rsplit(":", 1)[1]))  # back on the same address
            wait_http(f"{url}/healthz", timeout=60)
            expect(courier.locator("body")).to_have_attribute("data-live", "open", timeout=20_000)
            expect(banner).to_be_hidden()

            order_id = order_and_pay(requests.Session(), url)
            expect(courier.locator(f'tr[data-order-id="{order_id}"]')).to_be_visible(timeout=10_000)
            assert courier.evaluate("window.__notReloaded === true")
            browser.close()
    finally:
        services.close()
