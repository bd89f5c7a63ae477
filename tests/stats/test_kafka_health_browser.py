"""The staff page tells of a broker's death and return by itself: no order flows, nobody
reloads. Real daphne (its cluster watch), the session's three-node cluster, Chromium."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect, sync_playwright

from devstack.launcher import wait_http
from harness.browser import launch_chromium
from harness.processes import Services

pytestmark = pytest.mark.system

WITHIN_S = 10  # what the on-call person is promised: a warning within 10 s of the kill, gone within 10 s of the return


def test_a_broker_killed_and_back_shows_on_an_open_staff_page_with_no_event_flowing(
    kafka_on_cluster, kafka_cluster, tmp_path
):
    services = Services(tmp_path / "home", kafka_cluster.bootstrap_servers)
    down = None  # the node to bring back if the test stops half-way
    try:
        services.manage("seed_demo")
        _, url = services.spawn_web()
        wait_http(f"{url}/healthz", timeout=60)
        with sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            staff = browser.new_page()
            staff.goto(f"{url}/accounts/login/")
            staff.get_by_label("Username").fill("staff")
            staff.get_by_label("Password").fill("foodsite-demo")
            staff.get_by_role("button", name="Log in").click()
            staff.goto(f"{url}/stats/")
            expect(staff.locator("body")).to_have_attribute("data-live", "open")
            warnings = staff.locator("#kafka-warnings")
            expect(staff.locator("[data-broker][data-live='yes']")).to_have_count(3)
            expect(warnings).to_have_count(0)
            staff.evaluate("window.__notReloaded = true")
            victim = int(staff.locator("[data-topic='orders'][data-partition='0']").first.get_attribute("data-leader"))

            kafka_cluster.kill(victim)
            down, killed = victim, time.monotonic()
            warning = staff.locator(f"[data-warning='broker-down'][data-broker='{victim}']")
            expect(warning).to_be_visible(timeout=WITHIN_S * 1000)
            warned_after = time.monotonic() - killed
            expect(warning).to_contain_text(f"Broker {victim} is down")
            expect(warnings.locator("[data-warning='under-replicated']")).to_be_visible()

            kafka_cluster.start_node(victim)
            kafka_cluster.wait_node_ready(victim, timeout=120)
            down, returned = None, time.monotonic()
            expect(warnings).to_have_count(0, timeout=WITHIN_S * 1000)
            cleared_after = time.monotonic() - returned
            expect(staff.locator(f"[data-broker='{victim}'][data-live='yes']")).to_have_count(1)
            assert staff.evaluate("window.__notReloaded === true"), "the page reloaded"
            browser.close()
        print(f"warning {warned_after:.1f} s after the kill; gone {cleared_after:.1f} s after the node's return")
    finally:
        if down is not None:  # leave the cluster whole for the next test
            kafka_cluster.start_node(down)
            kafka_cluster.wait_node_ready(down, timeout=120)
        services.close()
