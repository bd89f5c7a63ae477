"""The dead letters page (?group, ?topic, ?before) and its re-drive form (letter, group),
fuzzed (harness/fuzz.py). Staff get the letters the filters name, newest first, or a 400 with
the reason; a re-drive sends what it names to that group's re-drive topic (the real broker)
and says so, or answers a 400 with the reason. Anyone else is sent to log in or refused, and
changes no dead letter."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from deadletters.models import DeadLetter
from eventing.registry import redrivable_groups
from harness import fuzz

# db_write: `make test` runs these on PostgreSQL too, where a NUL in a query is an error.
pytestmark = pytest.mark.db_write

GROUPS_AND_TOPICS = [
    ("stats", "orders"),
    ("stats", "payments"),
    ("deliveries", "orders"),
    ("deliveries", "delivery-status"),
]


def make_letters(per_pair: int = 3) -> list[DeadLetter]:
    letters = []
    for n in range(per_pair):
        for group, topic in GROUPS_AND_TOPICS:
            letters.append(
                DeadLetter.objects.create(
                    group=group,
                    topic=topic,
                    partition=0,
                    offset=n,
                    origin_topic=topic,
                    origin_partition=0,
                    origin_offset=n,
                    error="ValueError: boom",
                    failed_at=datetime(2026, 1, 1, tzinfo=UTC),
                    value=b"{}",
                )
            )
    return letters


def letters_state() -> list[tuple]:
    return list(
        DeadLetter.objects.order_by("pk").values_list("pk", "redriven_at", "redrive_partition", "redrive_offset")
    )


def as_the_page_writes_it(value: str) -> int | None:
    """A letter's number as the page's links and forms write it: ASCII digits that fit the
    database's integer. Any other value names no letter."""
    return int(value) if re.fullmatch(r"[0-9]{1,18}", value) else None


@pytest.mark.django_db
def test_the_dead_letters_page_lists_what_its_filters_name_or_says_why_not():
    letters = make_letters()
    ids = [letter.pk for letter in letters]
    groups = [group for group, _ in GROUPS_AND_TOPICS]
    topics = [topic for _, topic in GROUPS_AND_TOPICS]
    visitors = fuzz.Visitors()
    before = letters_state()

    @settings(max_examples=fuzz.examples(60))
    @given(
        who=fuzz.mostly(st.just("staff"), st.sampled_from(fuzz.ACCOUNTS), odds=2),
        method=fuzz.mostly(st.just("GET"), st.sampled_from(["POST", "PUT", "DELETE", "HEAD"])),
        params=fuzz.query(
            {
                "group": fuzz.values(*groups),
                "topic": fuzz.values(*topics),
                "before": fuzz.numbers(*map(str, ids), str(max(ids) + 1), "0"),
            }
        ),
    )
    # Found by this test: ?before=² (a digit to str.isdigit(), not to int()) was a 500 (ValueError).
    @example(who="staff", method="GET", params=[("before", "²")])
    # Found by this test on PostgreSQL (`--db postgres`): a NUL in ?group= was a 500 (DataError:
    # PostgreSQL text fields cannot contain NUL); on SQLite an empty page. Now a 400, ?topic= too.
    @example(who="staff", method="GET", params=[("group", "\x00")])
    @example(who="staff", method="GET", params=[("topic", "orders\x00")])
    # Found by this test: a POST to the page was a 200, the page shown as to a GET.
    @example(who="staff", method="POST", params=[])
    # Found by this test: an address too long to send back to after logging in (200,000 characters)
    # was Django's 400 page with no reason (DisallowedRedirect); templates/400.html gives one.
    @example(who="anonymous", method="GET", params=[("before", "a" * 200_000)])
    # Suspected (SQLite's INTEGER overflows): Django 5.2 answered an empty page; it is no letter's
    # number, so a 400 like any other.
    @example(who="staff", method="GET", params=[("before", "9" * 30)])
    def attempt(who: str, method: str, params: list) -> None:
        response = fuzz.send(
            visitors(who), fuzz.Shape(method, "urlencoded", "missing"), "/stats/dead-letters/", params=params
        )

        assert letters_state() == before
        if method not in ("GET", "HEAD"):
            fuzz.refused_with_a_reason(response)
            return
        if who == "anonymous":
            fuzz.sent_to_log_in(response)
            return
        if who != "staff":
            assert response.status_code == 403
            return
        query = response.wsgi_request.GET
        group, topic, older_than = query.get("group", ""), query.get("topic", ""), query.get("before")
        if (older_than is not None and as_the_page_writes_it(older_than) is None) or "\x00" in group + topic:
            assert response.status_code == 400
            assert method == "HEAD" or fuzz.text_of(response).strip()
            return
        assert response.status_code == 200
        if method == "HEAD":
            return
        shown = [int(i) for i in re.findall(r'<tr id="dead-letter-(\d+)"', fuzz.text_of(response))]
        expected = [
            letter.pk
            for letter in sorted(letters, key=lambda letter: -letter.pk)
            if (not group or letter.group == group)
            and (not topic or letter.origin_topic == topic)
            and (older_than is None or letter.pk < as_the_page_writes_it(older_than))
        ]
        assert shown == expected[:50]

    attempt()


@pytest.mark.django_db(transaction=True)  # the view re-drives in a thread of its own, with its own connection
def test_a_redrive_sends_what_it_names_to_that_group_only_or_says_why_not(kafka):
    letters = make_letters(per_pair=2)
    ids = [str(letter.pk) for letter in letters]
    visitors = fuzz.Visitors()
    sent = {group: 0 for group in redrivable_groups()}

    @settings(max_examples=fuzz.examples(50))
    @given(
        who=fuzz.mostly(st.just("staff"), st.sampled_from(fuzz.ACCOUNTS), odds=2),
        shape=fuzz.shapes(("POST",)),
        enforce_csrf=st.booleans(),
        data=fuzz.form(
            {
                "letter": fuzz.numbers(*ids, "", str(10**6)),
                "group": fuzz.values("stats", "deliveries", "", "dead-letters", "all"),
            }
        ),
    )
    # The case (a 500 before 58c63cb): a letter that is not a number, with a group.
    @example(
        who="staff",
        shape=fuzz.Shape("POST", "urlencoded", "valid"),
        enforce_csrf=True,
        data={"letter": ["all"], "group": ["stats"]},
    )
    def attempt(who: str, shape: fuzz.Shape, enforce_csrf: bool, data: dict) -> None:
        before = letters_state()
        open_before = {group: DeadLetter.objects.filter(group=group, redriven_at=None).count() for group in sent}

        response = fuzz.send(visitors(who, enforce_csrf), shape, "/stats/dead-letters/redrive/", data)

        post = response.wsgi_request.POST
        if fuzz.csrf_refuses(shape, enforce_csrf) or who != "staff" or shape.method != "POST":
            assert letters_state() == before
            if who == "anonymous" and response.status_code in (302, 400):
                fuzz.sent_to_log_in(response)
            else:
                fuzz.refused_with_a_reason(response)
            return
        letter, group = post.get("letter", ""), post.get("group", "")
        if letter:
            number = as_the_page_writes_it(letter)
            if number is None:
                assert response.status_code == 400
                assert "letter must be a dead letter's number" in fuzz.text_of(response)
                assert letters_state() == before
                return
            assert response.status_code == 302
            named = DeadLetter.objects.filter(pk=number).first()
            changed = [row for row, was in zip(letters_state(), before, strict=True) if row != was]
            assert [row[0] for row in changed] == ([named.pk] if named else [])
            if named:
                sent[named.group] += 1
            return
        if group not in sent:
            fuzz.refused_with_a_reason(response)
            assert letters_state() == before
            return
        assert response.status_code == 302
        assert DeadLetter.objects.filter(group=group, redriven_at=None).count() == 0
        sent[group] += open_before[group]
        others = [row for row, was in zip(letters_state(), before, strict=True) if row != was]
        assert {DeadLetter.objects.get(pk=row[0]).group for row in others} <= {group}

    attempt()

    # Each group's re-drive topic holds exactly what was sent to it, and nothing reached the others.
    for group, count in sent.items():
        assert len(kafka.read_topic(f"{group}.redrive")) == count, group
