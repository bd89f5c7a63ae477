"""What librdkafka says, through Python logging, without the noise.

A Kafka client retries a broker it cannot reach a few times a second, and librdkafka logs
every attempt at ERROR: a 15-second outage used to write ~500 identical ERROR lines, for a
condition the services survive by design (the outbox keeps the events, consumers resume
from their stored offsets). Each client gets a `KafkaClientLog` as its `logger` and
`stats_cb` instead (`client_log_config`):

- an outage reads as ONE WARNING when the client first fails to reach a broker, and ONE
  INFO when a broker answers again (seen in librdkafka's periodic statistics), with how long
  it lasted and how many failed attempts were not logged;
- any other line repeated within `REPEAT_WINDOW_S` is written once, then once more with a
  count when the window is over (or when something else is said);
- everything else goes through unchanged, at librdkafka's own level.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from typing import Any

REPEAT_WINDOW_S = 10.0
# How often librdkafka reports its brokers' states, which tells us an outage ended.
STATS_INTERVAL_MS = 2000

# librdkafka's words for "this broker cannot be reached right now" (facility, then text).
_OUTAGE_FACILITIES = {"FAIL", "ERROR", "BRKDOWN"}
_OUTAGE_TEXT = re.compile(
    r"Connect to .* failed|Connection refused|Disconnected|brokers are down|timed out|Connection reset|"
    r"No route to host|Name or service not known|failed to resolve"
)
# "[thrd:127.0.0.1:9092/1]: 127.0.0.1:9092/1: Connect to ..." -> the broker and the reason.
_THREAD_PREFIX = re.compile(r"^\[thrd:[^\]]*\]:\s*")
_BOOTSTRAP_HANDLE = re.compile(r"^\S+/bootstrap:")
_BROKER_ADDRESS = re.compile(r"(\[[0-9a-fA-F:]+\]:\d+|[\w.-]+:\d+)")


class KafkaClientLog:
    """Pass as a client's `logger` (and its `on_stats` as `stats_cb`); thread-safe."""

    def __init__(self, logger: logging.Logger, *, repeat_window: float = REPEAT_WINDOW_S) -> None:
        self.logger = logger
        self.repeat_window = repeat_window
        self._lock = threading.Lock()
        # Per broker address ("127.0.0.1:9092"; "*" when librdkafka names none): since when it
        # is unreachable and how many failed attempts were held back. One broker of a cluster
        # can be down while the others serve: each has its own WARNING and INFO.
        self._outages: dict[str, list[float | int]] = {}
        # Addresses whose broker connection was UP in the latest statistics.
        self._up: set[str] = set()
        self._repeats: dict[tuple[int, str], list[float | int]] = {}  # line -> [first seen, repeats]

    # librdkafka calls logger.log(level, "%s [%s] %s", facility, client name, text).
    def log(self, level: int, msg: str, *args: Any, **kwargs: Any) -> None:
        facility, text = (args[0], args[2]) if len(args) == 3 else ("", msg % args if args else msg)
        text = _THREAD_PREFIX.sub("", str(text))
        if facility in _OUTAGE_FACILITIES and _OUTAGE_TEXT.search(text):
            self._failed(text)
            return
        self._say(level, f"{facility}: {text}" if facility else text)

    def on_stats(self, stats_json: str) -> None:
        """librdkafka's periodic statistics: held-back repeats are written when their window is
        over, and a broker's outage ends when librdkafka has it UP again."""
        self._flush_repeats(time.monotonic() - self.repeat_window)
        try:
            brokers = json.loads(stats_json).get("brokers", {})
        except ValueError:
            return
        up = {_address(name) for name, b in brokers.items() if b.get("state") == "UP" and b.get("nodeid", -1) >= 0}
        self._up = up  # one reference swap: read without the lock
        for address in list(self._outages):
            if address in up or (address == "*" and up):
                self._reachable(address)

    @property
    def unreachable(self) -> set[str]:
        """The broker addresses this client currently cannot reach."""
        return set(self._outages)

    def _failed(self, text: str) -> None:
        address = _address(text)
        if address in self._up and _BOOTSTRAP_HANDLE.match(text):
            # librdkafka keeps a second connection per address, the bootstrap one, beside the
            # broker's own; its last attempt of an outage can fail just after the broker's
            # connection is UP again (seen: the WARNING in the same millisecond as the INFO).
            # Stale, not a new outage: a real one fails the broker's own connection too.
            self.logger.debug("Kafka broker %s: a bootstrap connection's attempt failed: %s", address, text)
            return
        with self._lock:
            if address == "*" and self._outages:  # "1/1 brokers are down": the outage under way
                address = next(iter(self._outages))
            elif address not in self._outages and "*" in self._outages:  # now we know which broker
                self._outages[address] = self._outages.pop("*")
            outage = self._outages.get(address)
            if outage is not None:
                outage[1] += 1
                return
            self._outages[address] = [time.monotonic(), 0]
        self.logger.warning("Kafka broker %s unreachable: %s (retrying; logged again when it is back)", address, text)

    def _reachable(self, address: str) -> None:
        with self._lock:
            outage = self._outages.pop(address, None)
        if outage is not None:
            self.logger.info(
                "Kafka broker %s reachable again after %.1f s (%d failed attempts not logged)",
                address,
                time.monotonic() - outage[0],
                outage[1],
            )

    def _say(self, level: int, line: str) -> None:
        now = time.monotonic()
        with self._lock:
            seen = self._repeats.get((level, line))
            if seen is not None and now - seen[0] < self.repeat_window:
                seen[1] += 1
                return
        # Something new, or the window is over: first the counts of what was held back past its window.
        self._flush_repeats(now - self.repeat_window)
        with self._lock:
            self._repeats[(level, line)] = [now, 0]
        self.logger.log(level, "%s", line)

    def _flush_repeats(self, seen_before: float) -> None:
        """Write the held-back count of every line first seen before `seen_before`."""
        with self._lock:
            due = [(key, int(count)) for key, (first, count) in self._repeats.items() if first <= seen_before]
            for key, _ in due:
                del self._repeats[key]
        for (level, line), count in due:
            if count:
                self.logger.log(level, "%s (repeated %d more times)", line, count)


def _address(text: str) -> str:
    """The broker a line is about, "127.0.0.1:9092" (from "127.0.0.1:9092/1: ..." or
    "GroupCoordinator: 127.0.0.1:9092: ..."); "*" when it names none ("1/1 brokers are down")."""
    found = _BROKER_ADDRESS.search(text.split(": Connect to", 1)[0])
    return found.group(1) if found else "*"


def client_log_config(name: str) -> dict[str, Any]:
    """The logging part of a client's configuration: `{**client_log_config("x"), ...}`."""
    log = KafkaClientLog(logging.getLogger(f"librdkafka.{name}"))
    return {"logger": log, "stats_cb": log.on_stats, "statistics.interval.ms": STATS_INTERVAL_MS}
