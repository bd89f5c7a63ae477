"""What the local servers (LocalKafka, LocalPostgres, LocalRedis) share: one process started
in the background, its output kept, a wait until it answers, a stop, and what to do when the
port it was started on turns out taken.

A port given by the caller stays: if it is taken the server does not start and the error names
it (and the setting it came from, e.g. REDIS_PORT). A port the server picked itself (none
given) may move: when the process ends before it answered and its output says "Address already
in use" (or, saying nothing, one of its ports is held by someone else now), it starts again on
another free port and says so in its output. See devstack.ports for why a free port can be
taken by the time a server binds it.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Self

from devstack.ports import free_port, held, port_taken_in

logger = logging.getLogger("devstack")

# Starts on another port before giving up: each try loses a second or two (a JVM's start).
MOVES = 5
OUTPUT_KEPT = 300  # lines of the current run kept for error messages


class ServerExited(TimeoutError, RuntimeError):
    """The server ended before it answered (a TimeoutError too: it will never be ready)."""


class PortTaken(ServerExited):
    """The server could not listen on a port it may not move from: another program holds it."""

    def __init__(self, server: str, port: int, setting: str | None) -> None:
        self.server, self.port, self.setting = server, port, setting
        named = f"port {port} ({setting})" if setting else f"port {port}"
        change = f"set {setting} to a free port" if setting else "choose another port"
        taken = f"{named} is taken by another program"
        super().__init__(f"{server} cannot listen on 127.0.0.1:{port}: {taken}; stop it or {change}")


class PortClash(Exception):
    """Ports of a cluster's node were taken, which the node cannot move alone (its controller's
    port is in every node's quorum): LocalCluster starts the whole cluster again."""

    def __init__(self, node_id: int, ports: set[int]) -> None:
        self.node_id, self.ports = node_id, ports
        super().__init__(f"node {node_id}: ports {sorted(ports)} taken")


def _without_stack_frames(lines: list[str]) -> list[str]:
    # Without Java's stack frames the reason ("Failed to acquire lock", "Address already in use")
    # stays within a short tail.
    return [line for line in lines if not line.startswith(("\tat ", "\t... "))]


class LocalServer:
    """One server process on 127.0.0.1. Subclasses say how to start it (`_spawn`), how to ask
    it whether it answers (`_answers`), and which signal stops it cleanly."""

    label = "server"  # in messages: "Kafka", "PostgreSQL", "Redis"
    log_name = "server.log"
    exited: type[ServerExited] = ServerExited
    stop_signal = 15  # SIGTERM

    def __init__(self, home: Path, port: int | None, *, port_setting: str | None = None) -> None:
        """`port`: None picks a free one, which moves if it turns out taken at the first start
        (not on a restart: clients know it by then); a given one never moves. `port_setting`:
        where a given port came from (e.g. "REDIS_PORT"), for the error."""
        self.home = Path(home).resolve()
        self.port_movable = port is None
        self.port = free_port() if port is None else port
        self.port_setting = port_setting
        self.process: subprocess.Popen | None = None
        self._output: Callable[[str], None] | None = None
        self._popen: dict[str, Any] = {}
        self._log: IO[bytes] | None = None
        self._log_offset = 0
        self._recent: deque[str] = deque(maxlen=OUTPUT_KEPT)
        self._pump: threading.Thread | None = None

    @property
    def log_file(self) -> Path:
        """Where the server's output goes when the caller does not take it (start's `output`)."""
        return self.home / self.log_name

    # -- what subclasses provide -----------------------------------------------------------

    def _spawn(self, stdout: Any, popen: dict[str, Any]) -> subprocess.Popen:
        """Prepare (format, initdb...) and start the process; stderr goes with stdout."""
        raise NotImplementedError

    def _answers(self) -> bool:
        """One quick question to the server: True once it answers."""
        raise NotImplementedError

    def _fixed_ports(self) -> dict[int, str | None]:
        """The ports it listens on that may not move, each with the setting it came from."""
        return {} if self.port_movable else {self.port: self.port_setting}

    def _ports(self) -> list[int]:
        return [self.port]

    def _settle(self) -> None:
        """Once it answered, its clients know its port: a restart must not move it."""
        self.port_movable = False

    def _move(self, taken: set[int]) -> str:
        """Pick other ports for the taken ones (all movable); returns what moved, for the note."""
        old, self.port = self.port, free_port()
        return f"port {old} was taken; starting again on port {self.port}"

    # -- start, wait, stop -----------------------------------------------------------------

    def start(self, output: Callable[[str], None] | None = None, **popen: Any) -> subprocess.Popen:
        """Start the server in the background and return its process (not yet ready: wait_ready).

        Output goes to `output` line by line if given (the launcher tags and prints it), else
        to home/<log_name>; `popen` goes to Popen as is (the launcher passes start_new_session,
        preexec_fn). Both are used again if it has to start on another port."""
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.label} is already running (pid {self.process.pid})")
        self._output, self._popen = output, popen
        return self._launch()

    def _launch(self) -> subprocess.Popen:
        self._recent.clear()
        if self._output is None:
            self.home.mkdir(parents=True, exist_ok=True)
            if self._log is None:
                self._log = self.log_file.open("ab")
            self._log_offset = self._log.seek(0, 2)
            self.process = self._spawn(self._log, self._popen)
            return self.process
        self.process = self._spawn(subprocess.PIPE, self._popen)
        self._pump = threading.Thread(
            target=self._forward, args=(self.process, self._output), name=f"output-{self.label}", daemon=True
        )
        self._pump.start()
        return self.process

    def _forward(self, process: subprocess.Popen, output: Callable[[str], None]) -> None:
        for raw in process.stdout:
            line = raw.decode(errors="replace").rstrip("\n")
            self._recent.append(line)
            output(line)

    def say(self, text: str) -> None:
        """A line of our own in the server's output (where its own lines go), and in the log."""
        logger.warning("%s: %s", self.label, text)
        line = f"devstack: {text}"
        if self._output is not None:
            self._output(line)
        elif self._log is not None:
            self._log.write(f"{line}\n".encode())
            self._log.flush()

    def recent_output(self) -> list[str]:
        """The lines of the current run (since the last start), the last OUTPUT_KEPT of them."""
        if self._output is not None:
            if self._pump is not None and self.process is not None and self.process.poll() is not None:
                self._pump.join(timeout=5)  # an exited process's last lines may still be in the pipe
            return list(self._recent)
        if self._log is None:
            return []
        self._log.flush()
        with self.log_file.open("rb") as log:
            log.seek(max(self._log_offset, log.seek(0, 2) - 64 * 1024))
            return log.read().decode(errors="replace").splitlines()[-OUTPUT_KEPT:]

    def _tail(self, lines: int = 30) -> str:
        where = "its output" if self._output is not None else str(self.log_file)
        return f"; the end of {where}:\n" + "\n".join(_without_stack_frames(self.recent_output())[-lines:])

    def taken_ports(self) -> set[int]:
        """After an exit: which of its ports were taken, by what it said or, if it said nothing
        about it, by whether someone else holds them now."""
        ports = self._ports()
        return port_taken_in("\n".join(self.recent_output()), ports) or {port for port in ports if held(port)}

    def wait_ready(self, timeout: float = 60, while_waiting: Callable[[], None] | None = None) -> None:
        """Return once the server answers; raise TimeoutError otherwise, ServerExited (its own
        subclass) if it ended, PortTaken if it ended because a port it may not move was taken.
        A taken port it picked itself: started again on another one (up to MOVES times).
        `while_waiting` is called between tries (a cluster checks its other nodes there)."""
        deadline = time.monotonic() + timeout
        moves = 0
        while True:
            if while_waiting is not None:
                while_waiting()
            if self.process is not None and self.process.poll() is not None:
                taken = self.taken_ports()
                if taken:
                    for port, setting in self._fixed_ports().items():
                        if port in taken:
                            raise PortTaken(self.label, port, setting)
                    if moves < MOVES:
                        moves += 1
                        self.say(self._move(taken))
                        self._launch()
                        continue
                raise self.exited(
                    f"{self.label} exited with {self.process.returncode} before it was ready{self._tail()}"
                )
            if self._answers():
                self._settle()
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.label} on 127.0.0.1:{self.port} did not answer within {timeout:g} s{self._tail()}"
                )
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: a crash (no clean shutdown; the next start recovers)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.stop()

    def stop(self, timeout: float = 20) -> None:
        """The clean stop (`stop_signal`), then SIGKILL if it has not exited after `timeout` seconds."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._pump is not None:
            self._pump.join(timeout=5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
