"""The courier page's websocket (live.sockets): couriers only, like the page.

A round of changes (order ids of deliveries) is read once per web process: which rows the
page lists (the oldest open ones, the count, each following courier's own), and the markup
of the rows some socket needs. A row's markup is the same for every courier who may see it
(deliveries/courier_row.html), so each socket only picks: the open rows, and its own
courier's; never another courier's deliveries under way.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.template.loader import render_to_string
from django.urls import reverse

from deliveries import selectors
from deliveries.permissions import is_courier
from live.notices import courier_stream
from live.sockets import LiveStreamSocket

OPEN = "open-deliveries"
MINE = "my-deliveries"
COUNT = "open-count"


@dataclass(frozen=True)
class CourierRound:
    changed: frozenset[str] | None  # order ids; None: every row may have changed
    open_shown: list[str]
    count_html: str
    mine: dict[str, list[str]]  # courier -> their deliveries under way
    rows: dict[str, str]  # order id -> the row's markup, for the rows some socket needs


class CourierSocket(LiveStreamSocket):
    push_interval = 0.05

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.shown: set[str] = set()  # the rows this socket's page has, as last sent
        self._lists: dict[str, list[str]] = {}
        self._count_html = ""

    def allowed_stream(self) -> str | None:
        return courier_stream() if is_courier(self.scope["user"]) else None

    def page_path(self) -> str:
        return reverse("courier")

    @property
    def courier(self) -> str:
        return self.scope["user"].get_username()

    @classmethod
    def read_changes(cls, stream: str, changed: frozenset[str] | None, followers: list[CourierSocket]) -> CourierRound:
        open_shown, count, mine = selectors.courier_page_ids({f.courier for f in followers})
        needed: set[str] = set()
        for follower in followers:
            if not follower.needs_page:  # a page on its way shows every row already
                listed = [*open_shown, *mine[follower.courier]]
                needed.update(i for i in listed if changed is None or i in changed or i not in follower.shown)
        rows = {
            str(d.order_id): render_to_string("deliveries/courier_row.html", {"delivery": d})
            for d in selectors.deliveries_of_orders(needed)
        }
        count_html = render_to_string(
            "deliveries/open_count.html", {"open_count": count, "open_limit": selectors.OPEN_ON_COURIER_PAGE}
        )
        return CourierRound(changed, open_shown, count_html, mine, rows)

    def frame(self, round: CourierRound) -> dict | None:
        lists = {OPEN: round.open_shown, MINE: round.mine.get(self.courier, [])}
        listed = {*lists[OPEN], *lists[MINE]}
        frame: dict = {}
        rows = {
            i: round.rows[i]
            for i in listed
            if i in round.rows and (round.changed is None or i in round.changed or i not in self.shown)
        }
        if rows:
            frame["rows"] = rows
        if lists != self._lists:
            frame["lists"] = lists
        if round.count_html != self._count_html:
            frame["regions"] = {COUNT: round.count_html}
        self.page_sent(round)
        return frame or None

    def page_sent(self, round: CourierRound) -> None:
        self._lists = {OPEN: round.open_shown, MINE: round.mine.get(self.courier, [])}
        self.shown = {*self._lists[OPEN], *self._lists[MINE]}
        self._count_html = round.count_html
