"""Dead letters on the real broker: recorded from the DLQ topics, listed for staff, re-driven
to the one group that failed, and the limit that stops a consumer on a broken deploy."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from confluent_kafka import Producer
from django.core.management import CommandError, call_command
from django.test import Client

from contract.events import CONTENT_TYPE_AVRO, OrderPlaced
from deadletters.models import DeadLetter
from deadletters.projection import DeadLetterRecorder
from deliveries.models import Delivery
from deliveries.projection import DeliveryProjection
from devstack.kafka_node import free_port
from eventing.bulk import insert_many
from eventing.models import ConsumerOffset
from eventing.projection import ConsumedEvent
from eventing.runner import ConsumerRunner, DeadLetterLimitExceeded
from eventing.topics import ORDERS, group_name, topic_name
from harness.factories import PASSWORD, CourierFactory, DishFactory, StaffFactory
from harness.processes import BASE_DIR
from harness.web import logged_in, pay_order, place_order
from stats.models import SalesTotals
from stats.projection import SalesProjection
from tests.eventing.test_runner import RecordingProjection, publish_order

pytestmark = pytest.mark.django_db(transaction=True)


class BuggySalesProjection(SalesProjection):
    """The stats service with a bug: it chokes on names with an apostrophe. Same group."""

    def apply(self, events: list[ConsumedEvent]) -> None:
        for consumed in events:
            if isinstance(consumed.payload, OrderPlaced) and "'" in consumed.payload.customer_name:
                raise ValueError("unescaped quote in customer name")
        super().apply(events)


def staff_client() -> Client:
    """Logged in as staff, with CSRF enforced as in a browser."""
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=StaffFactory().username, password=PASSWORD)
    return client


def post_with_csrf(client: Client, path: str, data: dict) -> str:
    """Post a form of the dead-letters page as a browser does; return the page it redirects to."""
    page = client.get("/stats/dead-letters/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    response = client.post(path, {**data, "csrfmiddlewaretoken": token})
    assert response.status_code == 302, response.content.decode()[:500]
    return client.get(response["Location"]).content.decode()


def letter_row(page: str, letter: DeadLetter) -> str:
    return re.search(rf'<tr id="dead-letter-{letter.pk}".*?</tr>', page, re.S).group(0)


def test_a_poison_event_is_listed_redriven_to_its_group_only_after_the_fix_and_counted_once(client, kafka):
    pizza = DishFactory(name="Margherita", price=Decimal("8.50"), food_cost=Decimal("2.40"))
    ada = place_order(client, {pizza: 1}, name="Ada")
    obrien = place_order(client, {pizza: 2}, name="Seán O'Brien")
    pay_order(client, ada)
    pay_order(client, obrien)

    buggy = kafka.drain(BuggySalesProjection())
    deliveries = kafka.drain(DeliveryProjection())
    kafka.drain(DeadLetterRecorder())

    assert buggy.dead_lettered == 1
    assert SalesTotals.objects.get().orders == 1  # only Ada's: O'Brien's order.placed is a dead letter
    assert deliveries.dead_lettered == 0
    assert Delivery.objects.count() == 2
    [letter] = DeadLetter.objects.all()
    assert (letter.group, letter.origin_topic, letter.attempt) == ("stats", ORDERS, 1)
    assert letter.error == "ValueError: unescaped quote in customer name"
    staff = staff_client()
    page = staff.get("/stats/dead-letters/").content.decode()
    row = letter_row(page, letter)
    assert obrien in row
    assert "Seán O&#x27;Brien" in row
    assert f"<code>orders[{letter.origin_partition}]@{letter.origin_offset}</code>" in row
    assert "ValueError: unescaped quote in customer name" in row
    assert 'data-status="open"' in row

    # Without the page's CSRF token the re-drive is refused.
    assert staff.post("/stats/dead-letters/redrive/", {"letter": letter.pk}).status_code == 403
    # The fix is deployed; staff re-drive the letter.
    page = post_with_csrf(staff, "/stats/dead-letters/redrive/", {"letter": letter.pk})
    assert "stats: 1 dead letter re-driven" in page
    assert 'data-status="waiting for its group"' in letter_row(page, letter)
    fixed = kafka.drain(SalesProjection())
    again = kafka.drain(DeliveryProjection())

    totals = SalesTotals.objects.get()
    assert (totals.orders, totals.revenue) == (2, Decimal("25.50"))
    assert fixed.applied == 1
    assert (again.applied, again.skipped, again.dead_lettered) == (0, 0, 0)  # deliveries never sees it again
    page = staff.get("/stats/dead-letters/").content.decode()
    assert 'data-status="applied"' in letter_row(page, letter)

    # Re-driving twice (a double click, a script run again) changes nothing.
    post_with_csrf(staff, "/stats/dead-letters/redrive/", {"letter": letter.pk})
    call_command("redrive_dead_letters", "--group", "stats", "--id", str(letter.pk))
    twice = kafka.drain(SalesProjection())
    kafka.drain(DeadLetterRecorder())

    assert twice.applied == 2  # read and applied again...
    totals = SalesTotals.objects.get()
    assert (totals.orders, totals.revenue) == (2, Decimal("25.50"))  # ...and counted once
    assert DeadLetter.objects.count() == 1


def test_a_redriven_event_that_fails_again_comes_back_with_its_attempt_count(client, kafka):
    pizza = DishFactory(price=Decimal("10.00"))
    pay_order(client, place_order(client, {pizza: 1}, name="D'Arcy"))
    kafka.drain(BuggySalesProjection())
    kafka.drain(DeadLetterRecorder())
    [first] = DeadLetter.objects.all()

    call_command("redrive_dead_letters", "--group", "stats", "--all")  # the fix is not deployed yet
    kafka.drain(BuggySalesProjection())
    kafka.drain(DeadLetterRecorder())

    second = DeadLetter.objects.exclude(pk=first.pk).get()
    assert (second.group, second.topic, second.attempt) == ("stats", "stats.redrive", 2)
    assert (second.origin_topic, second.origin_partition, second.origin_offset) == (
        first.origin_topic,
        first.origin_partition,
        first.origin_offset,
    )
    assert second.value == first.value
    assert second.error == first.error
    page = staff_client().get("/stats/dead-letters/").content.decode()
    assert 'data-status="failed again"' in letter_row(page, first)
    assert f'href="#dead-letter-{second.pk}">#{second.pk}</a>, attempt 2' in letter_row(page, first)
    assert 'data-status="open"' in letter_row(page, second)
    assert not SalesTotals.objects.filter(orders__gt=0).exists()  # nothing counted yet

    # --all takes only the letters not re-driven yet: the second attempt.
    call_command("redrive_dead_letters", "--group", "stats", "--all")
    kafka.drain(SalesProjection())  # fixed

    assert SalesTotals.objects.get().orders == 1
    second.refresh_from_db()
    first.refresh_from_db()
    assert second.redriven_at is not None
    assert first.redriven_at < second.redriven_at


def test_an_avro_dead_letter_is_shown_decoded_and_redriven_as_avro(client, kafka, settings):
    settings.EVENT_FORMAT = "avro"
    pizza = DishFactory(price=Decimal("10.00"))
    pay_order(client, place_order(client, {pizza: 1}, name="D'Arcy"))
    kafka.drain(BuggySalesProjection())
    kafka.drain(DeadLetterRecorder())

    [letter] = DeadLetter.objects.all()
    assert letter.header("content-type") == CONTENT_TYPE_AVRO.encode()
    row = letter_row(staff_client().get("/stats/dead-letters/").content.decode(), letter)
    assert "&quot;customer_name&quot;: &quot;D&#x27;Arcy&quot;" in row
    call_command("redrive_dead_letters", "--group", "stats", "--all")
    kafka.drain(SalesProjection())  # fixed: the re-driven copy keeps its content type
    assert SalesTotals.objects.get().orders == 1


def test_undecodable_bytes_are_shown_escaped_and_a_copy_in_the_dlq_is_recorded_once(kafka):
    kafka.produce_raw(
        ORDERS, b"k\x00\xff", b'<script>alert("pwned")</script>\xff\xfe\x00 tail', headers=[("trace", b"\x00\xff")]
    )
    stats = kafka.drain(RecordingProjection())
    [dead] = kafka.read_topic("orders.dlq")
    kafka.produce_raw("orders.dlq", dead.key(), dead.value(), dead.headers())  # the kill -9 duplicate
    kafka.drain(DeadLetterRecorder())

    assert stats.dead_lettered == 1
    [letter] = DeadLetter.objects.all()
    assert letter.event_headers == [("trace", b"\x00\xff")]  # kept exactly, for a re-drive
    assert letter.group == "recorder"
    assert letter.error.startswith("not JSON")
    row = letter_row(staff_client().get("/stats/dead-letters/").content.decode(), letter)
    assert "<script>" not in row
    assert "Cannot be decoded: not JSON" in row
    assert "b&#x27;&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;\\xff\\xfe\\x00 tail&#x27;" in row
    assert "3c 73 63 72 69 70 74 3e" in row  # hex of "<script>"
    assert "b&#x27;k\\x00\\xff&#x27;" in row  # the key, escaped too


@pytest.mark.django_db
def test_dead_letters_page_and_redrive_are_for_staff_only(client):
    assert client.get("/stats/dead-letters/")["Location"].startswith("/accounts/login/")
    assert client.post("/stats/dead-letters/redrive/", {"group": "stats"})["Location"].startswith("/accounts/login/")
    courier = logged_in(CourierFactory())
    assert courier.get("/stats/dead-letters/").status_code == 403
    assert courier.post("/stats/dead-letters/redrive/", {"group": "stats"}).status_code == 403
    staff = logged_in(StaffFactory())
    assert staff.get("/stats/dead-letters/").status_code == 200
    assert staff.get("/stats/dead-letters/redrive/").status_code == 405
    assert 'href="/stats/dead-letters/"' in staff.get("/stats/").content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("form", "reason"),
    [
        ({"letter": "all", "group": "stats"}, "letter must be a dead letter's number"),  # was a 500
        ({"letter": "²"}, "letter must be a dead letter's number"),  # a digit to isdigit(), not to int()
        ({"letter": "9" * 40}, "letter must be a dead letter's number"),  # beyond the database's integer
        ({"group": "<b>no-such-group</b>"}, "no group of that name re-drives dead letters; those that do: "),
        ({}, "say which dead letter"),
    ],
    ids=["letter-all", "letter-superscript", "letter-huge", "unknown-group", "nothing"],
)
def test_a_redrive_form_that_names_no_letter_or_group_is_a_400_with_the_reason(form, reason):
    answer = logged_in(StaffFactory()).post("/stats/dead-letters/redrive/", form)
    assert answer.status_code == 400
    assert reason in answer.content.decode()
    assert "<b>" not in answer.content.decode()  # what was posted is not sent back as HTML


@pytest.mark.django_db  # no broker: a rollback is enough, and much faster than emptying 100,000 rows
def test_the_page_reads_100000_dead_letters_a_page_at_a_time():
    failed_at = datetime(2026, 1, 1, tzinfo=UTC)
    fields = ["group", "topic", "partition", "offset", "origin_topic", "origin_partition", "origin_offset"]
    fields += ["attempt", "error", "failed_at", "value", "headers"]
    insert_many(
        DeadLetter,
        fields,
        [
            (group, ORDERS, n % 3, n, ORDERS, n % 3, n, 1, "ValueError: boom", failed_at, b"{", [])
            for n, group in ((n, "stats" if n % 2 else "deliveries") for n in range(100_000))
        ],
    )
    staff = logged_in(StaffFactory())

    started = time.monotonic()
    first = staff.get("/stats/dead-letters/?group=stats").content.decode()
    first_took = time.monotonic() - started
    older = re.search(r'id="older" href="\?group=stats&amp;before=(\d+)"', first).group(1)
    deep = DeadLetter.objects.filter(group="stats").order_by("id").values_list("id", flat=True)[30]
    started = time.monotonic()
    last = staff.get(f"/stats/dead-letters/?group=stats&before={deep}").content.decode()
    last_took = time.monotonic() - started

    assert '<td class="num">50000</td>' in first  # the summary counts them all
    assert first.count('<tr id="dead-letter-') == 50
    assert last.count('<tr id="dead-letter-') == 30
    assert int(older) == DeadLetter.objects.filter(group="stats").order_by("-id").values_list("id", flat=True)[49]
    assert 'id="older"' not in last
    # Generous bounds for a shared machine; both are tens of milliseconds when it is idle.
    assert first_took < 5, first_took
    assert last_took < 5, last_took
    print(f"100,000 dead letters: first page {first_took * 1000:.0f} ms, last page {last_took * 1000:.0f} ms")


def test_a_few_bad_events_among_good_ones_are_dead_lettered_and_the_consumer_goes_on(kafka, settings):
    settings.DLQ_WINDOW = 50
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    good = []
    for n in range(200):
        good.append(publish_order())
        if n % 20 == 0:  # 10 bad ones, 5% of the events
            producer.produce(topic_name(ORDERS), key=b"bad", value=b"{truncated")
    assert producer.flush(10) == 0
    projection = RecordingProjection()

    stats = kafka.drain(projection)

    assert (stats.applied, stats.dead_lettered) == (200, 10)
    assert sorted(projection.applied) == sorted(good)
    assert len(kafka.read_topic("orders.dlq")) == 10


def test_a_topic_full_of_poison_stops_the_consumer_without_moving_past_it(kafka, settings):
    settings.DLQ_WINDOW = 100
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for n in range(500):
        producer.produce(topic_name(ORDERS), key=str(n).encode(), value=b'{"id": 1, "type": "order.placed"}')
    assert producer.flush(10) == 0

    with pytest.raises(DeadLetterLimitExceeded, match="failed, more than the limit of 50%"):
        ConsumerRunner(RecordingProjection()).run(until_caught_up=True, timeout=60)

    # A first small batch may have been dead-lettered before the window was full; never the topic.
    dead = len(kafka.read_topic("orders.dlq"))
    stored = sum(ConsumerOffset.objects.filter(group=group_name("recorder")).values_list("next_offset", flat=True))
    assert dead < settings.DLQ_WINDOW
    assert stored == dead


def test_the_consumer_process_stops_with_a_clear_line_and_a_non_zero_exit(kafka, tmp_path, settings):
    producer = Producer({"bootstrap.servers": kafka.bootstrap_servers})
    for n in range(300):
        producer.produce(topic_name(ORDERS), key=str(n).encode(), value=b"\x00not an event")
    assert producer.flush(10) == 0
    env = {
        "FOODSITE_HOME": str(tmp_path),
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": settings.KAFKA_TOPIC_PREFIX,
        "KAFKA_GROUP_PREFIX": settings.KAFKA_GROUP_PREFIX,
        "DLQ_MAX_SHARE": "0.5",
        "DLQ_WINDOW": "100",
        "PATH": "/usr/bin:/bin",
    }

    def manage(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120
        )

    assert manage("migrate", "--noinput").returncode == 0
    result = manage("consume_stats")  # no --until-caught-up: it must stop by itself

    assert result.returncode == 1, result.stdout + result.stderr
    stopped = r"ERROR foodsite\.kafka\.runner: \S*stats STOPPED: \d+ of the last \d+ events failed"
    assert re.search(stopped, result.stderr)
    assert "CommandError: " in result.stderr
    assert "stats stopped" in result.stderr
    assert len(kafka.read_topic("orders.dlq")) < 100


def test_a_redrive_while_kafka_is_down_says_so_and_marks_nothing(settings):
    # A transactional test (the module's): the view re-drives in a thread of its own, with
    # its own database connection.
    settings.KAFKA_BOOTSTRAP_SERVERS = f"127.0.0.1:{free_port()}"  # nobody listens there
    letter = DeadLetter.objects.create(
        group="stats",
        topic=ORDERS,
        partition=0,
        offset=7,
        origin_topic=ORDERS,
        origin_partition=0,
        origin_offset=7,
        error="ValueError: boom",
        failed_at=datetime(2026, 1, 1, tzinfo=UTC),
        value=b"{}",
    )

    response = logged_in(StaffFactory()).post("/stats/dead-letters/redrive/", {"letter": letter.pk}, follow=True)

    assert "stats: 0 dead letters re-driven, 1 not sent: " in response.content.decode()
    letter.refresh_from_db()
    assert letter.redriven_at is None
    with pytest.raises(CommandError, match="1 dead letter"):
        call_command("redrive_dead_letters", "--group", "stats", "--all")
