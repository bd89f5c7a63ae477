"""`make run`: the whole system on one machine, in one terminal.

Starts a local Kafka broker (unless KAFKA_BOOTSTRAP_SERVERS names one), migrates SQLite,
creates the topics, seeds the demo data, then starts every process of the Procfile. Logs
of all of them are interleaved, each line tagged with its process name. Ctrl-C stops the
app processes first (so consumers finish their batch and leave their group) and Kafka last.

FOODSITE_PROFILE=cluster starts the production shape instead: three Kafka nodes
(devstack.kafka_cluster, replication factor 3), PostgreSQL and Redis from Debian's packages,
a schema registry (devstack.schema_registry, Apicurio from Maven Central; the repo's schemas
registered at every start, events written as Avro with its ids), a Kafka Connect worker with
Debezium's outbox connector as the outbox's relay (devstack.kafka_connect, eventing.debezium;
OUTBOX_RELAY=celery keeps the Celery relay), and two copies of every Procfile process (web on
PORT and PORT+1) but Celery beat, which runs once. Its state lives under FOODSITE_HOME/cluster.
Ctrl-C stops the app processes, then Connect, the Kafka nodes, PostgreSQL, Redis, the registry.

Every child is watched (devstack.children): when one exits, a line says which and how, and
what still runs and what that means. Everything stops only when the site can no longer take
orders (no web process left, PostgreSQL gone) or a setup step failed; nothing is restarted.
The ports it is told (or their defaults) never move: taken, a clear error names the setting.

Usage: python -m devstack.launcher   (env: PORT=8000, KAFKA_PORT=9092, FOODSITE_HOME=.local,
FOODSITE_PROFILE=embedded|cluster, and for the cluster POSTGRES_PORT=5432, REDIS_PORT=6379,
SCHEMA_REGISTRY_PORT=8081, CONNECT_PORT=8083; SCHEMA_REGISTRY_URL names another registry, or none
when empty; CONNECT_URL another Connect worker; OUTBOX_RELAY=celery|debezium)
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
from collections.abc import Callable
from pathlib import Path

from devstack.children import APP, CONNECT, KAFKA, POSTGRES, REDIS, REGISTRY, SETUP, Child, Watcher
from devstack.kafka_cluster import LocalCluster
from devstack.kafka_connect import ConnectUnavailable, LocalConnect
from devstack.kafka_node import LocalKafka
from devstack.local_server import PortTaken
from devstack.ports import held, reserve
from devstack.postgres_server import LocalPostgres
from devstack.redis_server import LocalRedis
from devstack.schema_registry import LocalSchemaRegistry, RegistryUnavailable

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


def wait_http(url: str, timeout: float, until: threading.Event | None = None) -> None:
    """Return once `url` answers (or `until` is set); TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while until is None or not until.is_set():
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.3)


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) while starting: stop what was started."""


def check_ports(ports: list[tuple[str, int, str]]) -> None:
    """Ports the launcher will not move (named by the user, or their documented defaults):
    taken now, a clear error before anything starts. (server, port, setting)"""
    for server, port, setting in ports:
        if held(port):
            raise PortTaken(server, port, setting)


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
    # While starting, Ctrl-C interrupts whatever is waiting (a JVM's start, a migration); once
    # ready it only ends the wait below. Either way everything started is stopped in order.
    starting = threading.Event()
    starting.set()
    stopped_by: list[str] = []  # the child whose exit stopped everything

    def on_signal(*_: object) -> None:
        stopping.set()
        if starting.is_set():
            starting.clear()
            raise Interrupted

    def stop_everything(reason: str) -> None:
        stopped_by.append(reason)
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    watcher = Watcher(lambda text: out.line("launcher", text), stop_everything)
    watcher.start()

    # Servers stop in this order after the app processes: Kafka, then PostgreSQL, then Redis.
    servers: list[
        tuple[str, LocalKafka | LocalCluster | LocalPostgres | LocalRedis | LocalSchemaRegistry | LocalConnect]
    ] = []
    processes: dict[str, subprocess.Popen] = {}
    started = time.monotonic()
    # Their own session (Ctrl-C reaches the launcher only, which stops them in order), and
    # dying with the launcher if it is killed outright.
    detached = {"start_new_session": True, "preexec_fn": _die_with_parent}
    kafka_ready = postgres = redis = registry = connect = None
    setup_steps = list(SETUP_STEPS)
    kafka_children: list[Callable[[], Child]] = []
    web_ports = [int(port) + copy for copy in range(COPIES if clustered else 1)]
    try:
        own_kafka = "KAFKA_BOOTSTRAP_SERVERS" not in os.environ
        kafka_port = int(os.environ.get("KAFKA_PORT", "9092"))
        fixed = [("the web", p, "PORT" if i == 0 else f"PORT + {i}") for i, p in enumerate(web_ports)]
        if own_kafka:
            nodes = 3 if clustered else 1
            fixed += [("Kafka", kafka_port + i, "KAFKA_PORT" if i == 0 else f"KAFKA_PORT + {i}") for i in range(nodes)]
        if clustered and "DATABASE_URL" not in os.environ:
            fixed.append(("PostgreSQL", int(os.environ.get("POSTGRES_PORT", "5432")), "POSTGRES_PORT"))
        if clustered and "CELERY_BROKER_URL" not in os.environ:
            fixed.append(("Redis", int(os.environ.get("REDIS_PORT", "6379")), "REDIS_PORT"))
        own_registry = clustered and "SCHEMA_REGISTRY_URL" not in os.environ
        if own_registry:
            registry_port = int(os.environ.get("SCHEMA_REGISTRY_PORT", "8081"))
            fixed.append(("the schema registry", registry_port, "SCHEMA_REGISTRY_PORT"))
        # The cluster's outbox relay is Debezium on a Kafka Connect worker of its own, unless
        # OUTBOX_RELAY=celery or CONNECT_URL names another worker.
        if clustered:
            env.setdefault("OUTBOX_RELAY", "debezium")
        own_connect = clustered and env["OUTBOX_RELAY"] == "debezium" and "CONNECT_URL" not in os.environ
        if own_connect:
            connect_port = int(os.environ.get("CONNECT_PORT", "8083"))
            fixed.append(("Kafka Connect", connect_port, "CONNECT_PORT"))
        check_ports(fixed)
        reserve(port for _, port, _ in fixed)  # the web binds its own last: no server picks it first

        if own_kafka:
            if clustered:
                cluster = LocalCluster(
                    state / "kafka", ports=[kafka_port + i for i in range(3)], port_setting="KAFKA_PORT"
                )
                servers.append(("kafka", cluster))
                cluster.start(lambda node_id, line: out.line(f"kafka-{node_id}", line), **detached)
                kafka_ready = cluster.wait_ready
                env["KAFKA_BOOTSTRAP_SERVERS"] = cluster.bootstrap_servers
                kafka_children = [
                    lambda node=node: Child(f"kafka-{node.node_id}", node.process, KAFKA) for node in cluster.nodes
                ]
            else:
                kafka = LocalKafka(home / "kafka" / "data", port=kafka_port, port_setting="KAFKA_PORT")
                servers.append(("kafka", kafka))
                kafka.start(lambda line: out.line("kafka", line), **detached)
                kafka_ready = kafka.wait_ready
                env["KAFKA_BOOTSTRAP_SERVERS"] = kafka.bootstrap_servers
                again = f"python -m devstack.kafka_node --home {kafka.home} --port {kafka.port}"
                kafka_children = [lambda: Child("kafka", kafka.process, KAFKA, restart=again)]
        if clustered:
            env["KAFKA_REPLICATION_FACTOR"] = "3"
            # Started while the JVMs warm up: both are ready long before Kafka.
            if "DATABASE_URL" not in os.environ:
                postgres_port = int(os.environ.get("POSTGRES_PORT", "5432"))
                postgres = LocalPostgres(state / "postgres", port=postgres_port, port_setting="POSTGRES_PORT")
                servers.append(("postgres", postgres))
                postgres.start(lambda line: out.line("postgres", line), **detached)
            if "CELERY_BROKER_URL" not in os.environ:
                redis_port = int(os.environ.get("REDIS_PORT", "6379"))
                redis = LocalRedis(state / "redis", port=redis_port, port_setting="REDIS_PORT")
                servers.append(("redis", redis))
                redis.start(lambda line: out.line("redis", line), **detached)
            if own_registry:
                registry = LocalSchemaRegistry(
                    state / "schema-registry", port=registry_port, port_setting="SCHEMA_REGISTRY_PORT"
                )
                servers.append(("schema-registry", registry))
                registry.start(lambda line: out.line("schema-registry", line), **detached)
        if postgres is not None:
            postgres.wait_ready(timeout=60)
            watcher.watch(Child("postgres", postgres.process, POSTGRES))
            env["DATABASE_URL"] = postgres.create_database("foodsite")
            out.line("launcher", f"PostgreSQL at 127.0.0.1:{postgres.port}, database foodsite")
        if redis is not None:
            redis.wait_ready(timeout=30)
            watcher.watch(
                Child(
                    "redis",
                    redis.process,
                    REDIS,
                    restart=f"python -m devstack.redis_server --home {redis.home} --port {redis.port}",
                )
            )
            env["CELERY_BROKER_URL"] = redis.url
            out.line("launcher", f"Redis at {redis.url}")
        if registry is not None:
            registry.wait_ready(timeout=120)
            again = f"python -m devstack.schema_registry --home {registry.home} --port {registry.port}"
            # In memory: started again by hand, it needs the schemas again (same ids, same order).
            again += f", then `manage.py register_schemas --url {registry.url}`"
            watcher.watch(Child("schema-registry", registry.process, REGISTRY, restart=again))
            env["SCHEMA_REGISTRY_URL"] = registry.url
            env.setdefault("EVENT_FORMAT", "avro")
            setup_steps.insert(2, ("register-schemas", ["manage.py", "register_schemas", "--url", registry.url]))
            out.line("launcher", f"schema registry at {registry.url}")
        if kafka_ready is not None:
            kafka_ready(timeout=120 if clustered else 90)
            for child in kafka_children:
                watcher.watch(child())  # the process that got ready (a taken port starts one again)
        out.line("launcher", f"Kafka at {env['KAFKA_BOOTSTRAP_SERVERS']}")
        if own_connect:
            # It needs the brokers (its state is in their topics); it starts while the setup
            # steps run, and registering the connector (after migrate: its publication) waits for it.
            connect = LocalConnect(
                state / "connect",
                env["KAFKA_BOOTSTRAP_SERVERS"],
                port=connect_port,
                replication_factor=int(env["KAFKA_REPLICATION_FACTOR"]),
                port_setting="CONNECT_PORT",
            )
            servers.insert(0, ("connect", connect))  # stopped first: before the brokers it writes to
            connect.start(lambda line: out.line("connect", line), **detached)
            env["CONNECT_URL"] = connect.url
        if env.get("OUTBOX_RELAY") == "debezium":
            setup_steps.append(("register-connector", ["manage.py", "register_outbox_connector"]))

        for name, args in setup_steps:
            if stopping.is_set():
                return 1
            if name == "register-connector" and connect is not None:
                connect.wait_ready(timeout=120)
                again = (
                    f"python -m devstack.kafka_connect --home {connect.home} --port {connect.port} "
                    f"--bootstrap {env['KAFKA_BOOTSTRAP_SERVERS']} --replication-factor {connect.replication_factor}"
                )
                watcher.watch(Child("connect", connect.process, CONNECT, restart=again))
                out.line("launcher", f"Kafka Connect at {connect.url}")
            processes[name] = spawn([sys.executable, *args], {**env, "FOODSITE_PROCESS": name})
            output = out.follow(name, processes[name])
            step = Child(name, processes[name], SETUP)
            watcher.watch(step)
            output.join()
            if watcher.wait(step) != 0:
                return 1  # the watcher said which step and that everything stops
            del processes[name]

        entries = read_procfile(BASE_DIR / "Procfile")
        if clustered:
            shape = cluster_processes(entries, int(port))
        else:
            shape = [(name, command, {}) for name, command in entries]
        for name, command, own_env in shape:
            if stopping.is_set():
                break
            processes[name] = spawn(command, {**env, **own_env, "FOODSITE_PROCESS": name})  # its name in the logs
            out.follow(name, processes[name])
            service = name.rpartition("-")[0] if clustered and name.rpartition("-")[2].isdigit() else name
            watcher.watch(Child(name, processes[name], APP, service=service))
        for web_port in web_ports:
            wait_http(f"http://127.0.0.1:{web_port}/healthz", timeout=60, until=stopping)
        if stopping.is_set():
            return 1 if stopped_by else 0
        starting.clear()
        registry_note = ", a schema registry" if registry is not None else ""
        if env.get("OUTBOX_RELAY") == "debezium":
            registry_note += ", Kafka Connect with the Debezium outbox relay"
        shape_note = ""
        if clustered:
            shape_note = f" (cluster: 3 Kafka nodes, PostgreSQL, Redis{registry_note}, 2 copies of each process)"
        also = "".join(f" (also http://127.0.0.1:{p}/)" for p in web_ports[1:])
        out.line(
            "launcher",
            f"ready in {time.monotonic() - started:.1f} s{shape_note}: menu http://127.0.0.1:{port}/{also} · "
            f"courier http://127.0.0.1:{port}/courier/ · stats http://127.0.0.1:{port}/stats/ · Ctrl-C stops all",
        )
        # The watcher reports every exit and says when one stops everything (devstack.children).
        stopping.wait()
        return 1 if stopped_by else 0
    except Interrupted:
        return 0
    except ConnectUnavailable as exc:
        out.line("launcher", f"error: {exc}; or OUTBOX_RELAY=celery to run the cluster with the Celery relay")
        return 1
    except RegistryUnavailable as exc:
        out.line("launcher", f"error: {exc}; or SCHEMA_REGISTRY_URL= (empty) to run the cluster without a registry")
        return 1
    except (TimeoutError, RuntimeError, FileNotFoundError, PermissionError, ValueError) as exc:
        out.line("launcher", f"error: {exc}")
        return 1
    finally:
        starting.clear()  # a second Ctrl-C from here on only asks again
        watcher.quiet()
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
