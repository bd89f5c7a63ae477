"""The staff page in Chromium: the charts draw, and a live notice updates them in place.

The websocket is played by the test (Playwright's route_web_socket): it sends a notice the
way the web process would, and the page's own live.js and dashboard.js do the rest against
the real view. The server is Django's live server, the numbers come from the real broker."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect, sync_playwright

from harness.browser import launch_chromium
from harness.factories import PASSWORD, DishFactory, StaffFactory
from harness.web import pay_order, place_order
from stats.projection import SalesProjection

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an asyncio loop on this thread, so Django takes the test's
    # own ORM calls for calls from async code; they are plain synchronous calls, allowed here.
    mp = pytest.MonkeyPatch()
    mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()
    mp.undo()


def chart_data(page: Page, canvas_id: str) -> dict:
    return page.evaluate(
        """id => { const c = Chart.getChart(id); return {labels: c.data.labels, values: c.data.datasets[0].data}; }""",
        canvas_id,
    )


def painted_pixels(page: Page, canvas_id: str) -> int:
    """Pixels of the canvas that are not transparent: 0 for a chart that drew nothing."""
    return page.evaluate(
        """id => {
            const canvas = document.getElementById(id);
            const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let painted = 0;
            for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted++;
            return painted;
        }""",
        canvas_id,
    )


def test_charts_draw_and_a_live_notice_updates_them_in_place(client, kafka, live_server, browser):
    pizza = DishFactory(name="Margherita", price=Decimal("8.50"))
    salad = DishFactory(name="Insalata", price=Decimal("6.00"))
    pay_order(client, place_order(client, {pizza: 2}))
    kafka.drain(SalesProjection())
    StaffFactory()

    errors: list[str] = []
    page = browser.new_context().new_page()
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    sockets: list[WebSocketRoute] = []
    page.route_web_socket("**/ws/stats/", lambda ws: sockets.append(ws))  # accepted, and ours to speak on

    page.goto(f"{live_server.url}/accounts/login/?next=/stats/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#stat-orders")).to_have_text("1")
    # Chart.js is a deferred script: the numbers can be on screen before it has run.
    page.wait_for_function(
        "() => typeof Chart !== 'undefined'"
        " && Chart.getChart('chart-top-dishes') && Chart.getChart('chart-orders-per-minute')"
    )

    assert chart_data(page, "chart-top-dishes") == {"labels": ["Margherita"], "values": [2]}
    per_minute = chart_data(page, "chart-orders-per-minute")
    assert len(per_minute["values"]) == 60
    assert sum(per_minute["values"]) == 1
    assert painted_pixels(page, "chart-top-dishes") > 1000
    assert painted_pixels(page, "chart-orders-per-minute") > 1000
    page.evaluate("() => { window.firstCharts = ['chart-top-dishes', 'chart-orders-per-minute'].map(Chart.getChart); }")

    pay_order(client, place_order(client, {pizza: 1, salad: 3}))
    kafka.drain(SalesProjection())
    assert len(sockets) == 1
    # What the web process sends when stats changed: the page as its socket reads it.
    fresh_page = page.request.get(f"{live_server.url}/stats/").text()  # with the page's staff cookies
    sockets[0].send(json.dumps({"page": fresh_page}))

    expect(page.locator("#stat-orders")).to_have_text("2")
    page.wait_for_function("() => Chart.getChart('chart-top-dishes').data.labels.length === 2")
    assert chart_data(page, "chart-top-dishes") == {"labels": ["Insalata", "Margherita"], "values": [3, 3]}
    assert sum(chart_data(page, "chart-orders-per-minute")["values"]) == 2
    # The same Chart objects, updated: not new ones drawn over the old.
    assert page.evaluate(
        "() => firstCharts[0] === Chart.getChart('chart-top-dishes')"
        " && firstCharts[1] === Chart.getChart('chart-orders-per-minute')"
    )
    assert errors == []
