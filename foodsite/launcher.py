"""`make run`: the whole system on one machine, in one terminal.

Starts a local Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS names one), migrates SQLite,
creates the topics, seeds the demo data, then starts every process of the Procfile. Logs
of all of them are interleaved, each line tagged with its process name. Ctrl-C stops the
app processes first (so consumers finish their batch and leave their group) and Kafka last.

Usage: python -m foodsite.launcher   (env: PORT=8000, KAFKA_PORT=9092, FOODSITE_HOME=.local)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from foodsite.localkafka import LocalKafka

BASE_DIR = Path(__file__).resolve().parent.parent
SETUP_STEPS = [
    ("migrate", ["manage.py", "migrate", "--noinput"]),
    ("init-kafka", ["manage.py", "init_kafka"]),
    ("seed", ["manage.py", "seed_demo"]),
]
COLORS = ["36", "33", "32", "35", "34", "31", "96", "93"]


class Output:
    """Prints lines of several processes, tagged with their name, one line at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._colors: dict[str, str] = {}
        self._tty = sys.stdout.isatty()

    def line(self, name: str, text: str) -> None:
        tag = f"{time.strftime('%H:%M:%S')} {name:<16}|"
        if self._tty:
            color = self._colors.setdefault(name, COLORS[len(self._colors) % len(COLORS)])
            tag = f"\033[{color}m{tag}\033[0m"
        with self._lock:
            sys.stdout.write(f"{tag} {text.rstrip()}\n")
            sys.stdout.flush()

    def follow(self, name: str, process: subprocess.Popen) -> threading.Thread:
        def pump() -> None:
            for raw in process.stdout:
                self.line(name, raw.decode(errors="replace"))

        thread = threading.Thread(target=pump, name=f"log-{name}", daemon=True)
        thread.start()
        return thread


def read_procfile(path: Path) -> list[tuple[str, str]]:
    entries = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            name, _, command = line.partition(":")
            entries.append((name.strip(), command.strip()))
    return entries


def _die_with_parent() -> None:
    # If the launcher is killed outright (kill -9), its children get SIGTERM instead of
    # living on as orphans holding the ports.
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def spawn(command: list[str] | str, env: dict[str, str]) -> subprocess.Popen:
    if isinstance(command, str):
        command = f"exec {command}"  # the process itself, not a shell around it, gets our signals
    return subprocess.Popen(
        command,
        shell=isinstance(command, str),
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the launcher only; it stops the others in order
        preexec_fn=_die_with_parent,
    )


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def _group_alive(process: subprocess.Popen) -> bool:
    process.poll()  # reap the leader, or it stays a zombie member of its group
    try:
        os.killpg(process.pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.3)


def main() -> int:
    out = Output()
    home = Path(os.environ.get("FOODSITE_HOME", BASE_DIR / ".local")).resolve()
    port = os.environ.get("PORT", "8000")
    env = {
        **os.environ,
        "FOODSITE_HOME": str(home),
        "PORT": port,
        "PYTHONUNBUFFERED": "1",
        # Procfile commands (daphne, python) resolve to this virtualenv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    kafka = None
    processes: dict[str, subprocess.Popen] = {}
    started = time.monotonic()
    try:
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            kafka = LocalKafka(home / "kafka" / "data", port=int(os.environ.get("KAFKA_PORT", "9092")))
            broker = kafka.start(
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent
            )
            out.follow("kafka", broker)
            kafka.wait_ready(timeout=90)
            env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
        out.line("launcher", f"Kafka at {env['KAFKA_BOOTSTRAP_SERVERS']}")

        for name, args in SETUP_STEPS:
            step = spawn([sys.executable, *args], env)
            out.follow(name, step).join()
            if step.wait() != 0:
                out.line("launcher", f"{name} failed (exit {step.returncode}); stopping")
                return 1

        for name, command in read_procfile(BASE_DIR / "Procfile"):
            processes[name] = spawn(command, env)
            out.follow(name, processes[name])
        wait_http(f"http://127.0.0.1:{port}/healthz", timeout=60)
        out.line(
            "launcher",
            f"ready in {time.monotonic() - started:.1f} s: menu http://127.0.0.1:{port}/ · "
            f"courier http://127.0.0.1:{port}/courier/ · stats http://127.0.0.1:{port}/stats/ · Ctrl-C stops all",
        )

        while not stopping.wait(0.5):
            for name, process in processes.items():
                if process.poll() is not None:
                    out.line("launcher", f"{name} exited with {process.returncode}; stopping everything")
                    return 1
        return 0
    except (TimeoutError, RuntimeError, FileNotFoundError) as exc:
        out.line("launcher", f"error: {exc}")
        return 1
    finally:
        out.line("launcher", "stopping")
        stop_started = time.monotonic()
        for process in processes.values():
            # The process itself, not its group: Celery's main process stops its pool children
            # in order; a SIGTERM of its own makes a child die mid-task (and log an ERROR).
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for name, process in processes.items():
            # Wait for the whole group: Kafka must outlive every consumer's goodbye.
            while _group_alive(process) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _group_alive(process):
                out.line("launcher", f"{name} did not stop in 15 s; killing it")
                _signal_group(process, signal.SIGKILL)
            process.wait()
        if kafka is not None:
            kafka.stop()
        out.line("launcher", f"stopped in {time.monotonic() - stop_started:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
