"""A throwaway PostgreSQL cluster for tests: the real server from the Debian package.

    server = start_postgres()               # initdb + start on a free loopback port
    url = server.create_database("orders")  # postgresql://postgres@127.0.0.1:PORT/orders
    server.kill(); server.start()           # crash and recover on the same data folder
    server.remove()                         # stop and delete the cluster folder

The cluster runs with `wal_level=logical` so CDC tests can create replication slots. When
the tests run as root the cluster runs as the `postgres` system user (initdb refuses root),
so its folder must be reachable by that user: by default a new folder in the system temp
dir. pytest's `tmp_path` is not suitable: pytest keeps it private to root and re-applies
that (and prunes old sessions' folders) whenever any pytest run starts.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psycopg2

from services.ports import free_port

__all__ = ["PostgresNotInstalledError", "PostgresServer", "find_postgres_bin", "start_postgres"]

SUPERUSER = "postgres"
INSTALL_HINT = "install it with `make services` (Debian package `postgresql`)"
_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "wal_level": "logical",
    "max_replication_slots": "10",
    "max_wal_senders": "10",
    "max_connections": "200",
    # No flushes to disk: only an OS crash could lose data, and the cluster is thrown away.
    "fsync": "off",
    "full_page_writes": "off",
    # Stays on: with fsync off it costs nothing, and "off" loses commits to kill().
    "synchronous_commit": "on",
}
_HBA = """\
local all         all                trust
host  all         all  127.0.0.1/32  trust
local replication all                trust
host  replication all  127.0.0.1/32  trust
"""
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux, with room for ".s.PGSQL.NNNNN"
_DB_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PostgresNotInstalledError(RuntimeError):
    """The PostgreSQL server binaries are not on this machine."""


def find_postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin that holds initdb, or None."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")]
    numeric = [p for p in found if p.parent.name.isdigit()]
    return max(numeric, key=lambda p: int(p.parent.name), default=None)


def start_postgres(
    base_dir: Path | None = None, settings: dict[str, str] | None = None
) -> PostgresServer:
    """Initialise a cluster in `base_dir` (default: a new temp folder) and start it."""
    server = PostgresServer(base_dir, settings=settings)
    server.start()
    return server


def _system_user() -> str | None:
    """The unprivileged user to run the cluster as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in (SUPERUSER, "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise PostgresNotInstalledError("running as root and neither `postgres` nor `nobody` exists")


class PostgresServer:
    """One cluster in `base_dir` (data/, sock/, postgres.log) on a loopback TCP port."""

    def __init__(
        self,
        base_dir: Path | None = None,
        *,
        bin_dir: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        """`settings` (postgresql.conf syntax) override the defaults when the cluster is made."""
        found = bin_dir or find_postgres_bin()
        if found is None:
            raise PostgresNotInstalledError(f"PostgreSQL server binaries not found; {INSTALL_HINT}")
        self.bin_dir = found
        if base_dir is None:
            base_dir = Path(tempfile.mkdtemp(prefix="lakebed-postgres-"))
        self.base_dir = base_dir.resolve()
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_file = self.base_dir / "postgres.log"
        self.run_as = _system_user()
        self.settings = {**_SETTINGS, **(settings or {})}
        self.port = self._configured_port() or free_port()
        self._process: subprocess.Popen[bytes] | None = None
        if len(str(self.socket_dir)) > _SOCKET_PATH_MAX:
            raise ValueError(f"{self.socket_dir} is too long for a unix socket path")

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (initialising the cluster the first time) and wait until it serves."""
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        if self.is_running():
            return
        # Run the postmaster as our child (not daemonised by pg_ctl) so that we reap it:
        # an unreaped postmaster looks alive to the next start after kill().
        command = self._as_user(self.bin_dir / "postgres", "-D", str(self.data_dir))
        with self.log_file.open("ab") as log:
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.base_dir,
                start_new_session=True,  # Ctrl-C in the terminal goes to pytest, not here
            )
        self._wait_ready(timeout)

    def remove(self) -> None:
        """Stop the server and delete its folder (data, socket, log)."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown: disconnect clients, checkpoint, exit. No-op when not running."""
        if self.is_running():
            self._run(self.bin_dir / "pg_ctl", "-D", str(self.data_dir), "stop", "-m", "fast")
        self._reap(timeout)

    def kill(self) -> None:
        """SIGKILL the postmaster and its backends, as a machine crash would."""
        pid = self.postmaster_pid()
        if pid is None or not _alive(pid):
            return
        victims = [pid, *_children(pid)]
        for victim in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        self._reap(10)
        deadline = time.monotonic() + 10
        while any(_alive(victim) for victim in victims):
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres processes {victims} survived SIGKILL")
            time.sleep(0.02)

    def is_running(self) -> bool:
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def postmaster_pid(self) -> int | None:
        """The pid recorded in postmaster.pid (it may be stale after a kill)."""
        try:
            first_line = (self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        except (FileNotFoundError, PermissionError):
            return None
        return int(first_line) if first_line.strip().isdigit() else None

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- clients ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """SQLAlchemy URL of the `postgres` database as the superuser."""
        return self.url_for("postgres")

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string, for psycopg2 and replication clients."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> None:
        """Run one statement in autocommit mode (CREATE DATABASE cannot run in a transaction)."""
        conn = psycopg2.connect(self.dsn(dbname))
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(sql)
        finally:
            conn.close()

    def create_database(self, name: str) -> str:
        """Create database `name` and return its SQLAlchemy URL."""
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        if not _DB_NAME.match(name):
            raise ValueError(f"database name {name!r} must match {_DB_NAME.pattern}")
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- internals -------------------------------------------------------------------------

    def _initdb(self) -> None:
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-finished initdb from an earlier failure
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.touch()
        self._hand_over(self.base_dir)
        self._run(
            self.bin_dir / "initdb",
            *("-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust"),
            *("--encoding", "UTF8", "--locale", "C", "--no-sync"),
        )
        settings = {
            **self.settings,
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
        }
        conf = "".join(f"{key} = {value}\n" for key, value in settings.items())
        with (self.data_dir / "postgresql.conf").open("a") as handle:
            handle.write("\n# lakebed test harness\n" + conf)
        (self.data_dir / "pg_hba.conf").write_text(_HBA)

    def _configured_port(self) -> int | None:
        """The port of an existing cluster, so a restart keeps the URLs valid."""
        try:
            conf = (self.data_dir / "postgresql.conf").read_text()
        except FileNotFoundError:
            return None
        ports = re.findall(r"^port = (\d+)$", conf, flags=re.MULTILINE)
        return int(ports[-1]) if ports else None

    def _hand_over(self, path: Path) -> None:
        """Give the cluster folder to the unprivileged server user."""
        if self.run_as is None:
            return
        entry = pwd.getpwnam(self.run_as)
        for root, dirs, files in os.walk(path):
            for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
                os.chown(name, entry.pw_uid, entry.pw_gid)
        probe = subprocess.run(self._as_user(Path("/usr/bin/test"), "-w", str(path)), check=False)
        if probe.returncode != 0:
            raise PermissionError(
                f"user {self.run_as} cannot reach {path}: a parent folder is private; "
                "leave base_dir out to use a new folder in the system temp dir"
            )

    def _as_user(self, program: Path, *args: str) -> list[str]:
        command = [str(program), *args]
        if self.run_as is None:
            return command
        return ["runuser", "-u", self.run_as, "--", *command]

    def _reap(self, timeout: float) -> None:
        if self._process is not None:
            self._process.wait(timeout)
            self._process = None

    def _run(self, program: Path, *args: str) -> None:
        command = self._as_user(program, *args)
        done = subprocess.run(
            command, capture_output=True, text=True, check=False, cwd=self.base_dir
        )
        if done.returncode != 0:
            log = self.log_file.read_text()[-4000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}\n"
                f"{done.stdout}{done.stderr}\n--- {self.log_file} ---\n{log}"
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg2.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg2.OperationalError:
                exited = self._process is not None and self._process.poll() is not None
                if exited or time.monotonic() > deadline:
                    log = self.log_file.read_text()[-4000:]
                    raise RuntimeError(f"postgres did not start; {self.log_file}:\n{log}") from None
                time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has exited; only its parent has not reaped it


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        if fields[1] == str(pid):
            kids.append(int(stat.parent.name))
    return kids
