"""A real PostgreSQL server on this machine, from Debian's `postgresql` package (no Docker).

Its own cluster under `home` (data in home/data, log in home/postgres.log, unix socket in home),
listening on 127.0.0.1 only. Used by the cluster profile and by the test suite's session fixture.
No Django here: it must run before settings or a database exist.

initdb refuses to run as root: as root, initdb and the server run as the package's `postgres`
user (Popen's user/group, so the process we hold is the postmaster itself and our signals
reach it), and home belongs to that user.

    python -m devstack.postgres_server --home .local/postgres --port 5432   # foreground
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import re
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import errors, sql

from devstack.local_server import LocalServer, ServerExited

BASE_DIR = Path(__file__).resolve().parent.parent
PACKAGE_BIN_GLOB = "/usr/lib/postgresql/*/bin"
SERVER_USER = "postgres"  # the Debian package's system user, who owns the data when we are root
ROLE = "foodsite"  # the cluster's superuser, the one every DATABASE_URL names
# Local only: the server listens on 127.0.0.1 and nothing else. Set POSTGRES_PASSWORD anywhere else.
DEFAULT_PASSWORD = "foodsite-local-only"
SOCKET_PATH_MAX = 107  # sockaddr_un.sun_path on Linux, less the final NUL
INSTALL_HINT = "install Debian's postgresql package (`make system-deps` does: apt-get install postgresql)"


class PostgresExited(ServerExited):
    """The server ended before it answered (a TimeoutError too: it will never be ready)."""


def find_bin_dir(pattern: str = PACKAGE_BIN_GLOB) -> Path:
    """The highest installed version's bin directory (Debian keeps them off PATH, one per major)."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates = [Path(p) for p in glob.glob(pattern) if (Path(p) / "postgres").exists()]
    if not candidates:
        raise FileNotFoundError(f"no PostgreSQL server in {pattern}: {INSTALL_HINT}")
    return max(candidates, key=version)


def _unreachable_parent(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory above `path` that `user` may not enter (e.g. pytest's 0700 tmp root)."""
    groups = {user.pw_gid} | {g for g in os.getgrouplist(user.pw_name, user.pw_gid)}
    for parent in reversed(path.parents):
        mode = parent.stat()
        if mode.st_uid == user.pw_uid:
            allowed = mode.st_mode & stat.S_IXUSR
        elif mode.st_gid in groups:
            allowed = mode.st_mode & stat.S_IXGRP
        else:
            allowed = mode.st_mode & stat.S_IXOTH
        if not allowed:
            return parent
    return None


class LocalPostgres(LocalServer):
    label = "PostgreSQL"
    log_name = "postgres.log"
    exited = PostgresExited
    stop_signal = 2  # SIGINT: the fast shutdown (sessions ended, open transactions rolled back, a checkpoint)

    def __init__(
        self, home: Path, port: int | None = None, *, durable: bool = True, port_setting: str | None = None
    ) -> None:
        """`port`: None picks a free one (moved if taken, see devstack.local_server); a given one
        stays, and `port_setting` names where it came from (POSTGRES_PORT) for the error if taken."""
        super().__init__(home, port, port_setting=port_setting)
        # durable=False is for tests: a crash of the machine may lose the cluster, which a
        # test's throwaway cluster does not mind, and commits stop waiting for the disk.
        self.durable = durable
        self.password = os.environ.get("POSTGRES_PASSWORD", DEFAULT_PASSWORD)
        self.bin_dir: Path | None = None  # found on first use, so that building one never fails

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home  # not /var/run/postgresql: that one belongs to Debian's own clusters

    def url(self, name: str = "foodsite") -> str:
        return f"postgres://{ROLE}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/{name}"

    def _binary(self, name: str) -> str:
        if self.bin_dir is None:
            self.bin_dir = find_bin_dir()
        return str(self.bin_dir / name)

    def _run_as(self) -> dict[str, Any]:
        """Popen arguments that drop root to the package's user (initdb and postgres refuse root)."""
        if os.geteuid() != 0:
            return {}
        try:
            user = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise FileNotFoundError(f"no {SERVER_USER!r} user to run PostgreSQL as: {INSTALL_HINT}") from None
        return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _prepare_home(self) -> None:
        socket = self.socket_dir / f".s.PGSQL.{self.port}"
        if len(str(socket).encode()) > SOCKET_PATH_MAX:
            # PostgreSQL would refuse to start with the reason in its log only: say it here, before initdb.
            raise ValueError(
                f"{socket} is longer than a unix socket path may be ({SOCKET_PATH_MAX}): use a shorter home"
            )
        self.home.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0:
            return
        user = pwd.getpwnam(SERVER_USER)
        blocked = _unreachable_parent(self.home, user)
        if blocked is not None:
            raise PermissionError(
                f"the {SERVER_USER!r} user cannot enter {blocked}, so PostgreSQL cannot use {self.home}: "
                f"choose a home under a directory others may traverse (e.g. {tempfile.gettempdir()})"
            )
        # The server writes its socket and lock file here; nobody else needs to come in.
        os.chown(self.home, user.pw_uid, user.pw_gid)
        self.home.chmod(0o700)

    def server_command(self) -> list[str]:
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            # Log lines go to our log file through stderr (no logging collector to start).
            "logging_collector": "off",
            # Logical decoding, for the Debezium outbox relay (eventing.debezium): its
            # replication slot reads the outbox's inserts from the write-ahead log. Costs a few
            # bytes of WAL per row changed; the Celery relay does not need it.
            "wal_level": "logical",
        }
        if not self.durable:
            settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
        return [self._binary("postgres"), "-D", str(self.data_dir), *(f"-c{k}={v}" for k, v in settings.items())]

    def ensure_initialized(self) -> None:
        """initdb once. It writes into a scratch directory renamed into place at the end, so an
        interrupted initdb leaves no half-made cluster behind that a later start would trust."""
        self._prepare_home()
        if (self.data_dir / "PG_VERSION").exists():
            return
        scratch = self.home / "data.initdb"
        if scratch.exists():
            subprocess.run(["rm", "-rf", "--", str(scratch)], check=True)
        with tempfile.NamedTemporaryFile("w", dir=self.home, prefix="pwfile-") as pwfile:
            pwfile.write(self.password + "\n")
            pwfile.flush()
            if os.geteuid() == 0:
                os.chown(pwfile.name, pwd.getpwnam(SERVER_USER).pw_uid, -1)
            command = [
                self._binary("initdb"), "-D", str(scratch), "--username", ROLE, "--pwfile", pwfile.name,
                "--encoding", "UTF8", "--no-locale",
                # The unix socket is in home, which only the server's user (and root) may enter;
                # TCP, even on 127.0.0.1, needs the password.
                "--auth-local", "trust", "--auth-host", "scram-sha-256",
                *([] if self.durable else ["--no-sync"]),
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, cwd=self.home, **self._run_as())
        if done.returncode != 0:
            raise RuntimeError(f"initdb into {scratch} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        scratch.rename(self.data_dir)

    def _spawn(self, stdout: Any, popen: dict[str, Any]) -> subprocess.Popen:
        """initdb once into home, then the server."""
        self.ensure_initialized()
        return subprocess.Popen(
            self.server_command(), stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.home,
            **self._run_as(), **popen,
        )  # fmt: skip

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> psycopg.Connection:
        """An administrative connection through the unix socket (no password needed there)."""
        return psycopg.connect(host=str(self.socket_dir), port=self.port, user=ROLE, dbname=dbname, **kwargs)

    def _answers(self) -> bool:
        """It accepts a connection. Then the role's password is set to this process's
        POSTGRES_PASSWORD, so the URLs we hand out work even if the password changed since initdb."""
        try:
            with self.connect(connect_timeout=2, autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(ROLE), self.password))
        except psycopg.OperationalError:
            return False  # not listening yet, or still starting up / recovering
        return True

    def create_database(self, name: str) -> str:
        """CREATE DATABASE `name` unless it exists; its DATABASE_URL."""
        with self.connect(autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone()
            if not exists:
                # Someone else may create it in between: as good.
                with contextlib.suppress(errors.DuplicateDatabase):
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a local PostgreSQL server in the foreground.")
    parser.add_argument("--home", type=Path, default=BASE_DIR / ".local" / "postgres")
    parser.add_argument("--port", type=int, default=int(os.environ.get("POSTGRES_PORT", "5432")))
    parser.add_argument("--no-durable", dest="durable", action="store_false", help="fsync off (throwaway data)")
    args = parser.parse_args(argv)
    server = LocalPostgres(args.home, port=args.port, durable=args.durable)
    try:
        server.ensure_initialized()
        command = server.server_command()
        run_as = server._run_as()
    except (FileNotFoundError, PermissionError, RuntimeError, ValueError) as exc:
        print(f"localpostgres: {exc}", file=sys.stderr)
        return 1
    print(f"localpostgres: {server.url()}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(server.home)
    if run_as:
        os.setgroups([])
        os.setgid(run_as["group"])
        os.setuid(run_as["user"])
    # Become the postmaster: same pid, Ctrl-C is its fast shutdown, its exit code is ours.
    os.execv(command[0], command)
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
