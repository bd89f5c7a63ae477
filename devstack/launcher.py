"""`make run`: the whole system on one machine, in one terminal.

Starts a local Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS names one), migrates SQLite,
creates the topics, seeds the demo data, then starts every process of the Procfile. Logs
of all of them are interleaved, each line tagged with its process name. Ctrl-C stops the
app processes first (so consumers finish their batch and leave their group) and Kafka last.

FOODSITE_PROFILE=cluster starts the production shape instead: three Kafka nodes
(devstack.kafka_cluster, replication factor 3), PostgreSQL and Redis from Debian's packages,
and two copies of every Procfile process (web on PORT and PORT+1) but Celery beat, which
runs once. Its state lives under FOODSITE_HOME/cluster. Ctrl-C stops the app processes, then
the Kafka nodes, PostgreSQL, Redis.

Usage: python -m devstack.launcher   (env: PORT=8000, KAFKA_PORT=9092, FOODSITE_HOME=.local,
FOODSITE_PROFILE=embedded|cluster, and for the cluster POSTGRES_PORT=5432, REDIS_PORT=6379)
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from devstack.kafka_cluster import LocalCluster
from devstack.kafka_node import LocalKafka
from devstack.postgres_server import LocalPostgres
from devstack.redis_server import LocalRedis

BASE_DIR = Path(__file__).resolve().parent.parent
SETUP_STEPS = [
    ("migrate", ["manage.py", "migrate", "--noinput"]),
    ("init-kafka", ["manage.py", "init_kafka"]),
    ("seed", ["manage.py", "seed_demo"]),
]
COLORS = ["36", "33", "32", "35", "34", "31", "96", "93"]
PROFILES = ("embedded", "cluster")
COPIES = 2  # of every app process in the cluster profile


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


def cluster_processes(entries: list[tuple[str, str]], port: int) -> list[tuple[str, str, dict[str, str]]]:
    """The cluster profile's app processes: two copies of each Procfile entry, "web-1" on
    PORT, "web-2" on PORT+1 and so on, except Celery beat, which must run once (two beats
    queue every periodic task twice): the `beat` process runs alone, and a worker started
    with --beat keeps it in its first copy only. Every worker copy gets its own node name
    (two workers of one name confuse Celery's remote control)."""
    processes = []
    for name, command in entries:
        words = command.split()
        if words[:1] == ["celery"] and "beat" in words:
            processes.append((name, command, {}))
            continue
        for copy in range(1, COPIES + 1):
            own = command
            if copy > 1 and "--beat" in words:
                own = " ".join(word for word in words if word != "--beat")
            if words[:1] == ["celery"] and "worker" in words:
                own = f"{own} --hostname {name}-{copy}@%h"
            processes.append((f"{name}-{copy}", own, {"PORT": str(port + copy - 1)}))
    return processes


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
    profile = os.environ.get("FOODSITE_PROFILE", "embedded")
    if profile not in PROFILES:
        out.line("launcher", f"FOODSITE_PROFILE={profile!r}: expected one of {', '.join(PROFILES)}")
        return 2
    clustered = profile == "cluster"
    home = Path(os.environ.get("FOODSITE_HOME", BASE_DIR / ".local")).resolve()
    # The cluster's state (three brokers, PostgreSQL, Redis, emails, beat's schedule) apart from
    # the embedded default's, so switching profiles never mixes their data.
    state = home / "cluster" if clustered else home
    port = os.environ.get("PORT", "8000")
    env = {
        **os.environ,
        "FOODSITE_HOME": str(state),
        "PORT": port,
        "PYTHONUNBUFFERED": "1",
        # Procfile commands (daphne, python) resolve to this virtualenv's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    # Every process writes its metrics here, web's /metrics adds them up (observability.metrics):
    # emptied, or the last run's counters would be added in.
    metrics_dir = Path(env.setdefault("PROMETHEUS_MULTIPROC_DIR", str(state / "metrics")))
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    stopping = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())

    # Servers stop in this order after the app processes: Kafka, then PostgreSQL, then Redis.
    servers: list[tuple[str, LocalKafka | LocalCluster | LocalPostgres | LocalRedis]] = []
    processes: dict[str, subprocess.Popen] = {}
    started = time.monotonic()
    piped = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "start_new_session": True}
    kafka_ready = postgres = redis = None
    try:
        if "KAFKA_BOOTSTRAP_SERVERS" not in os.environ:
            kafka_port = int(os.environ.get("KAFKA_PORT", "9092"))
            if clustered:
                cluster = LocalCluster(state / "kafka", ports=[kafka_port + i for i in range(3)])
                servers.append(("kafka", cluster))
                cluster.start(**piped, preexec_fn=_die_with_parent)
                for node in cluster.nodes:
                    out.follow(f"kafka-{node.node_id}", node.process)
                kafka_ready = cluster.wait_ready
                env["KAFKA_BOOTSTRAP_SERVERS"] = cluster.bootstrap_servers
            else:
                kafka = LocalKafka(home / "kafka" / "data", port=kafka_port)
                servers.append(("kafka", kafka))
                out.follow("kafka", kafka.start(**piped, preexec_fn=_die_with_parent))
                kafka_ready = kafka.wait_ready
                env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
        if clustered:
            env["KAFKA_REPLICATION_FACTOR"] = "3"
            # Started while the JVMs warm up: both are ready long before Kafka.
            if "DATABASE_URL" not in os.environ:
                postgres = LocalPostgres(state / "postgres", port=int(os.environ.get("POSTGRES_PORT", "5432")))
                servers.append(("postgres", postgres))
                out.follow("postgres", postgres.start(**piped, preexec_fn=_die_with_parent))
            if "CELERY_BROKER_URL" not in os.environ:
                redis = LocalRedis(state / "redis", port=int(os.environ.get("REDIS_PORT", "6379")))
                servers.append(("redis", redis))
                out.follow("redis", redis.start(**piped, preexec_fn=_die_with_parent))
        if postgres is not None:
            postgres.wait_ready(timeout=60)
            env["DATABASE_URL"] = postgres.create_database("foodsite")
            out.line("launcher", f"PostgreSQL at 127.0.0.1:{postgres.port}, database foodsite")
        if redis is not None:
            redis.wait_ready(timeout=30)
            env["CELERY_BROKER_URL"] = redis.url
            out.line("launcher", f"Redis at {redis.url}")
        if kafka_ready is not None:
            kafka_ready(timeout=120 if clustered else 90)
        out.line("launcher", f"Kafka at {env['KAFKA_BOOTSTRAP_SERVERS']}")

        for name, args in SETUP_STEPS:
            step = spawn([sys.executable, *args], {**env, "FOODSITE_PROCESS": name})
            out.follow(name, step).join()
            if step.wait() != 0:
                out.line("launcher", f"{name} failed (exit {step.returncode}); stopping")
                return 1

        entries = read_procfile(BASE_DIR / "Procfile")
        if clustered:
            for name, command, own_env in cluster_processes(entries, int(port)):
                processes[name] = spawn(command, {**env, **own_env, "FOODSITE_PROCESS": name})
                out.follow(name, processes[name])
            web_ports = [int(port) + copy for copy in range(COPIES)]
        else:
            for name, command in entries:
                processes[name] = spawn(command, {**env, "FOODSITE_PROCESS": name})  # its name in the logs
                out.follow(name, processes[name])
            web_ports = [int(port)]
        for web_port in web_ports:
            wait_http(f"http://127.0.0.1:{web_port}/healthz", timeout=60)
        shape = " (cluster: 3 Kafka nodes, PostgreSQL, Redis, 2 copies of each process)" if clustered else ""
        also = "".join(f" (also http://127.0.0.1:{p}/)" for p in web_ports[1:])
        out.line(
            "launcher",
            f"ready in {time.monotonic() - started:.1f} s{shape}: menu http://127.0.0.1:{port}/{also} · "
            f"courier http://127.0.0.1:{port}/courier/ · stats http://127.0.0.1:{port}/stats/ · Ctrl-C stops all",
        )

        running = dict(processes)
        while not stopping.wait(0.5):
            for name, process in list(running.items()):
                if process.poll() is None:
                    continue
                del running[name]
                # The cluster profile runs two copies so that one may die: the other carries on.
                service = name.rpartition("-")[0] if clustered else name
                if clustered and any(other.rpartition("-")[0] == service for other in running):
                    out.line("launcher", f"{name} exited with {process.returncode}; its other copy carries on")
                    continue
                out.line("launcher", f"{name} exited with {process.returncode}; stopping everything")
                return 1
        return 0
    except (TimeoutError, RuntimeError, FileNotFoundError, PermissionError) as exc:
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
        for _, server in servers:
            server.stop()
        out.line("launcher", f"stopped in {time.monotonic() - stop_started:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
