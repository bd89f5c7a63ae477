"""What the dead-letters page shows, read from the DeadLetter table only (never from Kafka)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import reduce
from operator import or_

from django.db.models import Count, Max, Q

from contract.events import InvalidEvent, decode
from deadletters.models import DeadLetter
from eventing.models import ConsumerOffset
from eventing.topics import group_name, redrive_topic

PAGE_SIZE = 50
RAW_SHOWN_BYTES = 2000  # an undecodable value is shown up to this many bytes, escaped
HEX_SHOWN_BYTES = 64


@dataclass(frozen=True)
class GroupTopic:
    group: str
    topic: str  # where the events were first published
    total: int
    open: int  # not re-driven yet
    last_failed_at: datetime


@dataclass(frozen=True)
class LetterView:
    letter: DeadLetter
    event: str | None  # the decoded event as indented JSON
    undecodable: str | None  # why it cannot be decoded; then the raw_* fields show the bytes
    raw: str  # Python's repr of the value's first bytes: printable ASCII as is, the rest \xNN
    raw_hex: str
    raw_size: int
    key: str
    status: str
    failed_again: DeadLetter | None = None


@dataclass(frozen=True)
class LetterPage:
    letters: list[LetterView]
    older: int | None  # the `before` of the next page, None on the last one


def summary() -> list[GroupTopic]:
    rows = (
        DeadLetter.objects.values("group", "origin_topic")
        .annotate(total=Count("id"), open=Count("id", filter=Q(redriven_at__isnull=True)), last=Max("failed_at"))
        .order_by("group", "origin_topic")
    )
    return [GroupTopic(r["group"], r["origin_topic"], r["total"], r["open"], r["last"]) for r in rows]


def letters_page(group: str = "", topic: str = "", before: int | None = None) -> LetterPage:
    """Newest first, PAGE_SIZE at a time, paged by id (keyset): page 2,000 costs what page 1 does."""
    letters = DeadLetter.objects.order_by("-id")
    if group:
        letters = letters.filter(group=group)
    if topic:
        letters = letters.filter(origin_topic=topic)
    if before is not None:
        letters = letters.filter(id__lt=before)
    rows = list(letters[: PAGE_SIZE + 1])
    older = rows[PAGE_SIZE - 1].pk if len(rows) > PAGE_SIZE else None
    rows = rows[:PAGE_SIZE]
    status, failed_again = _redrive_status(rows)
    return LetterPage([_view(row, status[row.pk], failed_again.get(row.pk)) for row in rows], older)


def _view(letter: DeadLetter, status: str, failed_again: DeadLetter | None) -> LetterView:
    value = bytes(letter.value) if letter.value is not None else None
    key = bytes(letter.key) if letter.key is not None else b""
    try:
        event = decode(value, letter.header("content-type"))
        shown, reason = json.dumps(json.loads(event.to_json()), indent=2, ensure_ascii=False), None
    except InvalidEvent as exc:
        shown, reason = None, str(exc)
    raw = value or b""
    return LetterView(
        letter=letter,
        event=shown,
        undecodable=reason,
        raw=repr(raw[:RAW_SHOWN_BYTES]),
        raw_hex=raw[:HEX_SHOWN_BYTES].hex(" "),
        raw_size=len(raw),
        key=key.decode() if key.isascii() and key.decode().isprintable() else repr(key),
        status=status,
        failed_again=failed_again,
    )


def _redrive_status(letters: list[DeadLetter]) -> tuple[dict[int, str], dict[int, DeadLetter]]:
    """Each letter's re-drive outcome: its group has read past it in its re-drive topic (the
    offset is stored with the projection, so "read" means applied or dead-lettered again)."""
    status = {letter.pk: "open" for letter in letters}
    redriven = [letter for letter in letters if letter.redriven_at is not None]
    if not redriven:
        return status, {}
    groups = {letter.group for letter in redriven}
    positions = {
        (group, partition): next_offset
        for group, partition, next_offset in ConsumerOffset.objects.filter(
            reduce(or_, (Q(group=group_name(g), topic=redrive_topic(g)) for g in groups))
        ).values_list("group", "partition", "next_offset")
    }
    # A re-driven letter that failed again is recorded where its group read it: the re-drive topic.
    where = [Q(topic=redrive_topic(r.group), partition=r.redrive_partition, offset=r.redrive_offset) for r in redriven]
    retried = {
        (row.group, row.partition, row.offset): row
        for row in DeadLetter.objects.filter(group__in=groups).filter(reduce(or_, where))
    }
    failed_again = {}
    for letter in redriven:
        again = retried.get((letter.group, letter.redrive_partition, letter.redrive_offset))
        if again is not None:
            status[letter.pk] = "failed again"
            failed_again[letter.pk] = again
        elif positions.get((group_name(letter.group), letter.redrive_partition), 0) > letter.redrive_offset:
            status[letter.pk] = "applied"
        else:
            status[letter.pk] = "waiting for its group"
    return status, failed_again
