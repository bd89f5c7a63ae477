from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.decorators import login_required, user_passes_test
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe

from deadletters import selectors
from deadletters.models import DeadLetter
from deadletters.services import RedriveOutcome, open_letters, redrive
from eventing.registry import redrivable_groups


def _staff_only(user: AbstractBaseUser) -> bool:
    # A logged-in non-staff user gets a 403, not a login loop.
    if not user.is_staff:
        raise PermissionDenied("The dead letters page is for staff only.")
    return True


def letter_number(value: str) -> int | None:
    """A dead letter's number as the page's links and forms write it, or None: ASCII digits
    ("²" is a digit to str.isdigit(), not to int()) that the database's integer can hold."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None


@require_safe  # a page to read (its forms post to redrive_view): another method is a 405
@login_required
@user_passes_test(_staff_only)
def dead_letters(request: HttpRequest) -> HttpResponse:
    group, topic = request.GET.get("group", ""), request.GET.get("topic", "")
    before = request.GET.get("before")
    if before is not None and letter_number(before) is None:
        return HttpResponseBadRequest("before must be a dead letter's number")
    if "\x00" in group + topic:  # no name holds one, and PostgreSQL refuses it in a query (DataError)
        return HttpResponseBadRequest("group and topic are names: they cannot hold a NUL character")
    page = selectors.letters_page(group, topic, letter_number(before) if before else None)
    summary = selectors.summary()
    open_per_group: dict[str, int] = {}
    for row in summary:
        if row.group and row.open:
            open_per_group[row.group] = open_per_group.get(row.group, 0) + row.open
    return render(
        request,
        "deadletters/dead_letters.html",
        {
            "summary": summary,
            "groups": sorted(open_per_group.items()),
            "page": page,
            "group": group,
            "topic": topic,
            "filters": urlencode({k: v for k, v in (("group", group), ("topic", topic)) if v}),
        },
    )


@login_required
@user_passes_test(_staff_only)
@require_POST
async def redrive_view(request: HttpRequest) -> HttpResponse:
    """Re-drive one letter (`letter`) or all of a group's open letters (`group`)."""
    letter_id, group = request.POST.get("letter", ""), request.POST.get("group", "")
    if not (letter_id or group):
        return HttpResponseBadRequest("say which dead letter (letter) or which group's (group)")
    # A letter is a row's number; a group, one whose letters can be re-driven.
    if letter_id and letter_number(letter_id) is None:
        return HttpResponseBadRequest("letter must be a dead letter's number")  # (not echoed: this is HTML)
    if not letter_id and group not in redrivable_groups():
        groups = ", ".join(redrivable_groups())
        return HttpResponseBadRequest(f"no group of that name re-drives dead letters; those that do: {groups}")
    # Producing and waiting for the broker must not hold the web process's one thread for
    # database work (foodsite.asgi): it runs in a thread of its own, like /stats/'s Kafka view.
    outcome, group = await sync_to_async(_redrive_closing_connections, thread_sensitive=False)(letter_id, group)
    if outcome is None:
        messages.error(request, f"No dead letter #{letter_id}.")
    elif outcome.not_sent:
        messages.error(request, f"{group}: {outcome}.")
    else:
        messages.success(request, f"{group}: {outcome} to {group}.redrive; the list below shows when it is applied.")
    # Back to the group's list; for one letter, the page that starts with it.
    query = {"group": group} if group else {}
    if letter_id and outcome is not None:
        query["before"] = int(letter_id) + 1
    return HttpResponseRedirect(reverse("dead-letters") + (f"?{urlencode(query)}" if query else ""))


def _redrive_closing_connections(letter_id: str, group: str) -> tuple[RedriveOutcome | None, str]:
    try:
        if letter_id:
            letter = DeadLetter.objects.filter(pk=int(letter_id)).first()
            if letter is None:
                return None, group
            return redrive(DeadLetter.objects.filter(pk=letter.pk)), letter.group
        return redrive(open_letters(group).order_by("origin_topic", "origin_partition", "origin_offset")), group
    finally:
        connections.close_all()  # this pool thread's own connection
