"""The dead-letters page in Chromium: staff find it from /stats/, read a poison event and
re-drive it with the page's own form (CSRF and all). A screenshot goes to test-artifacts/."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from deadletters.models import DeadLetter
from deadletters.projection import DeadLetterRecorder
from eventing.topics import ORDERS
from harness.browser import launch_chromium
from harness.factories import PASSWORD, DishFactory, StaffFactory
from harness.processes import BASE_DIR
from harness.web import pay_order, place_order
from stats.models import SalesTotals
from stats.projection import SalesProjection
from tests.deadletters.test_dead_letters import BuggySalesProjection

pytestmark = pytest.mark.django_db(transaction=True)
SCREENSHOT = BASE_DIR / "test-artifacts" / "screenshots" / "dead-letters.png"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    # Playwright's sync API keeps an asyncio loop on this thread: the test's own ORM calls
    # are plain synchronous calls, allowed here.
    mp = pytest.MonkeyPatch()
    mp.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()
    mp.undo()


def test_staff_read_a_poison_event_and_redrive_it_from_the_page(client, kafka, live_server, browser):
    pizza = DishFactory(name="Margherita", price=Decimal("8.50"))
    pay_order(client, place_order(client, {pizza: 1}, name="Seán O'Brien"))
    kafka.produce_raw(ORDERS, b"junk", b"<b>not</b> an event \xff")
    kafka.drain(BuggySalesProjection())
    kafka.drain(DeadLetterRecorder())
    poison = DeadLetter.objects.get(error__startswith="ValueError")
    StaffFactory()
    errors: list[str] = []
    page = browser.new_context().new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    page.goto(f"{live_server.url}/accounts/login/?next=/stats/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Dead letters").click()
    row = page.locator(f"#dead-letter-{poison.pk}")
    expect(row).to_contain_text("ValueError: unescaped quote in customer name")
    expect(row).to_contain_text("Seán O'Brien")
    expect(page.locator("#dead-letters")).to_contain_text(r"b'<b>not</b> an event \xff'")  # as text, not markup
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)

    row.get_by_role("button", name="Re-drive").click()

    expect(page.locator(".messages")).to_contain_text("stats: 1 dead letter re-driven")
    expect(page.locator(f"#dead-letter-{poison.pk} .redrive-status")).to_have_text("waiting for its group")
    kafka.drain(SalesProjection())  # the fixed service
    page.reload()
    expect(page.locator(f"#dead-letter-{poison.pk} .redrive-status")).to_have_text("applied")
    assert SalesTotals.objects.get().orders == 1
    assert errors == []
