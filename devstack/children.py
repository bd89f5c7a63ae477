"""The launcher's children, watched: every process it started (the setup steps, the app
processes, each Kafka node, PostgreSQL, Redis). One thread polls them all; when one exits, the
launcher says at once which and how ("kafka-2 was killed by SIGKILL"), reaps it (no zombie),
and says what still runs and what that means for the site.

What the launcher does then is the same rule in both profiles: it stops everything only when
the site can no longer take orders (the last web process gone, PostgreSQL gone) or a setup
step failed; any other child that exits is reported and the rest runs on. It restarts nothing:
a dead child stays dead until the operator starts it again (the line says how, where one can)
or stops everything with Ctrl-C. Kafka, Redis, a consumer, the worker or beat going away makes
work wait (in the outbox, in Kafka at the group's committed offset, in the database's unsent
notifications), not get lost: which is what the cluster profile is there to show.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

KAFKA, POSTGRES, REDIS, REGISTRY, CONNECT = "kafka", "postgres", "redis", "registry", "connect"
SETUP, APP = "setup", "app"
KINDS = (KAFKA, POSTGRES, REDIS, REGISTRY, CONNECT, SETUP, APP)  # the order they are listed in

# What stands still while no copy of a Procfile process runs.
CONSUMERS = {
    "deliveries": "the courier page and the orders' delivery progress stand still",
    "stats": "the staff page's figures stand still",
    "notifications": "no notification is recorded or emailed",
    "recommendations": "the menu's hints stand still",
    "deadletters": "new dead letters do not reach the staff page",
}
RESTARTS_NOTHING = "the launcher restarts nothing"
START_ALL_AGAIN = "Ctrl-C, then `make run` again, starts it again"


@dataclass(frozen=True)
class Child:
    name: str  # as its lines are tagged: "web-1", "kafka-2", "postgres", "migrate"
    process: subprocess.Popen = field(compare=False)
    kind: str  # KAFKA, POSTGRES, REDIS, REGISTRY, CONNECT, SETUP or APP
    service: str = ""  # an app process's Procfile name ("stats" for stats-1 and stats-2)
    restart: str = ""  # the command that starts it again by hand, where there is one


@dataclass(frozen=True)
class Verdict:
    meaning: str  # what its exit means for the rest; empty: nothing to add (a setup step done)
    stop: bool  # stop everything


def exit_status(returncode: int) -> str:
    """How a process ended, as Popen.returncode says it: "exited with 1", "was killed by SIGKILL"."""
    if returncode >= 0:
        return f"exited with {returncode}"
    try:
        return f"was killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"was killed by signal {-returncode}"


def verdict(gone: Child, running: list[Child], started: list[Child]) -> Verdict:
    """What `gone`'s exit means, `running` being the children still alive and `started` every
    child watched so far (gone included)."""
    if gone.kind == SETUP:
        if gone.process.returncode == 0:
            return Verdict("", stop=False)
        return Verdict(f"nothing can start without {gone.name}", stop=True)
    if gone.kind == POSTGRES:
        return Verdict("PostgreSQL holds every process's data and has no standby here", stop=True)
    if gone.kind == KAFKA:
        return _kafka(gone, [c for c in running if c.kind == KAFKA], len([c for c in started if c.kind == KAFKA]))
    if gone.kind == REDIS:
        return Verdict(
            "Celery has lost its broker: no email is sent and the outbox relay does not run until Redis is back "
            "(the worker and beat try to reconnect; beat's sweep then queues the unsent notifications again); "
            "the web and the consumers carry on, nothing is lost; " + _restart(gone),
            stop=False,
        )
    if gone.kind == REGISTRY:
        return Verdict(
            "the processes keep the schema ids they have and go on; one that needs an id it has not got writes "
            "single-object Avro meanwhile (every consumer here reads it) and logs it, a consumer that meets an id "
            "it has not seen waits for the registry; nothing is lost; " + _restart(gone),
            stop=False,
        )
    if gone.kind == CONNECT:
        return Verdict(
            "the Debezium outbox relay has stopped: the web goes on taking orders into the outbox, and no event "
            "reaches Kafka until the worker is back; then its replication slot hands it every insert since, "
            "once each (exactly-once source), nothing is lost; PostgreSQL keeps the WAL meanwhile; " + _restart(gone),
            stop=False,
        )
    return _app(gone, [c for c in running if c.kind == APP and c.service == gone.service])


def _kafka(gone: Child, nodes: list[Child], total: int) -> Verdict:
    waits = "the web keeps taking orders into the outbox, the consumers wait, nothing is lost"
    if total == 1:
        return Verdict(
            f"Kafka is down: {waits} (the relay sends the outbox once Kafka is back); {_restart(gone)}", stop=False
        )
    names = ", ".join(node.name for node in nodes)
    if not nodes:
        return Verdict(f"no Kafka node runs: {waits}; {RESTARTS_NOTHING}: {START_ALL_AGAIN}", stop=False)
    if len(nodes) * 2 <= total:  # no majority of the quorum's voters left
        return Verdict(
            f"Kafka has {len(nodes)} of {total} nodes left ({names}): no controller quorum, and fewer replicas "
            f"than min.insync.replicas=2, so no event is acknowledged; {waits}; {RESTARTS_NOTHING}: {START_ALL_AGAIN}",
            stop=False,
        )
    return Verdict(
        f"Kafka runs on with {len(nodes)} of {total} nodes ({names}): the partitions {gone.name} led get new "
        "leaders among their in-sync replicas once it is fenced (5 s), the others keep theirs; every write still "
        f"reaches min.insync.replicas=2, so the site carries on; {RESTARTS_NOTHING}: {START_ALL_AGAIN}",
        stop=False,
    )


def _app(gone: Child, copies: list[Child]) -> Verdict:
    service = gone.service or gone.name
    if copies:
        others = ", ".join(copy.name for copy in copies)
        if service in CONSUMERS:
            takes = f"the group gives {gone.name}'s partitions to {others} within the session timeout"
        elif service == "web":
            takes = f"{others} still serves the site"
        elif service == "worker":
            takes = f"{others} takes the tasks"
        else:
            takes = f"{others} carries on"
        return Verdict(f"{takes}; {RESTARTS_NOTHING}: {START_ALL_AGAIN}", stop=False)
    if service == "web":
        return Verdict("no web process is left to serve the site", stop=True)
    if service in CONSUMERS:
        meaning = (
            f"no copy of {service} runs: {CONSUMERS[service]}; its events wait in Kafka at its group's "
            "committed offset, nothing is lost"
        )
    elif service == "worker":
        meaning = "no worker runs: no email is sent and the outbox relay does not run; their tasks wait in the queue"
    elif service == "beat":
        meaning = (
            "beat is gone: nothing schedules the outbox's periodic task (the Celery relay, or with Debezium the "
            "purge of relayed rows) or the sweep of unsent notifications; what waits stays in the database, "
            "nothing is lost"
        )
    else:
        meaning = f"no copy of {service} runs"
    return Verdict(f"{meaning}; {RESTARTS_NOTHING}: {START_ALL_AGAIN}", stop=False)


def _restart(child: Child) -> str:
    if child.restart:
        return f"{RESTARTS_NOTHING}: `{child.restart}` starts it again"
    return f"{RESTARTS_NOTHING}: {START_ALL_AGAIN}"


def summary(children: list[Child]) -> str:
    """The children, copies counted: "kafka-1, kafka-3, postgres, redis, web ×2, beat"."""
    copies = Counter(child.service for child in children if child.kind == APP)
    shown: list[str] = []
    for child in sorted(children, key=lambda child: KINDS.index(child.kind)):  # stable: copies stay in order
        if child.kind == SETUP:
            continue
        if child.kind != APP or copies[child.service] == 1:
            shown.append(child.name)
        elif f"{child.service} ×{copies[child.service]}" not in shown:
            shown.append(f"{child.service} ×{copies[child.service]}")
    return ", ".join(shown) or "nothing"


class Watcher:
    """Polls every child it was given, from one thread, until quiet()."""

    INTERVAL = 0.2  # seconds: "at once" to a person reading the terminal

    def __init__(self, say: Callable[[str], None], stop_everything: Callable[[str], None]) -> None:
        """`say(line)` prints a line of the launcher's; `stop_everything(reason)` is called once
        an exit means the site cannot go on."""
        self._say = say
        self._stop_everything = stop_everything
        self._lock = threading.Lock()
        self._running: list[Child] = []
        self._started: list[Child] = []
        self._reported: dict[str, threading.Event] = {}
        self._quiet = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def watch(self, child: Child) -> None:
        with self._lock:
            self._running.append(child)
            self._started.append(child)
            self._reported[child.name] = threading.Event()

    def wait(self, child: Child) -> int:
        """Wait until `child` has exited and its exit has been reported; its return code."""
        self._reported[child.name].wait()
        return child.process.returncode

    def running(self) -> list[Child]:
        with self._lock:
            return list(self._running)

    def quiet(self) -> None:
        """Stop watching: the launcher is stopping everything itself (and reaps what it stops)."""
        self._quiet.set()
        self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._quiet.wait(self.INTERVAL):
            with self._lock:
                # poll() reaps: an exited child does not stay a zombie until Ctrl-C.
                gone = [child for child in self._running if child.process.poll() is not None]
                self._running = [child for child in self._running if child not in gone]
                running, started = list(self._running), list(self._started)
            for child in gone:
                self._report(child, running, started)

    def _report(self, child: Child, running: list[Child], started: list[Child]) -> None:
        self._say(f"{child.name} {exit_status(child.process.returncode)}")
        outcome = verdict(child, running, started)
        if outcome.stop:
            self._say(f"{outcome.meaning}: stopping everything")
            self._stop_everything(f"{child.name} {exit_status(child.process.returncode)}")
        elif outcome.meaning:
            self._say(f"{outcome.meaning}. Still running: {summary(running)}")
        self._reported[child.name].set()
