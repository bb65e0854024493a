"""Throwaway servers for fault tests: a redis-server and a PostgreSQL cluster that a test may kill or cut off;
and moto's S3-compatible server for tests of processes that share only an object store.

Fault tests never touch the machine's shared PostgreSQL and Redis: they start their own on a free port, in a
temporary folder, and remove them afterwards. Missing binaries skip the test with the reason, except under
HERONRY_REQUIRE_SERVERS=1 (CI), where they fail it.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest


def unavailable(reason: str) -> NoReturn:
    """Skip (locally) or fail (CI sets HERONRY_REQUIRE_SERVERS=1) a test that cannot get the servers it needs."""
    if os.environ.get("HERONRY_REQUIRE_SERVERS"):
        pytest.fail(f"HERONRY_REQUIRE_SERVERS is set but {reason}", pytrace=False)
    pytest.skip(reason)


def find_binary(name: str) -> str | None:
    """``name`` on PATH, else in the newest /usr/lib/postgresql/<version>/bin (Debian keeps them there)."""
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(Path(p).parts[4]))
    if versions:
        return versions[-1]
    return shutil.which(name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(predicate, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# --- Redis ---------------------------------------------------------------------------------------------------


class RedisServer:
    """A redis-server without persistence: killing it loses everything it held, as a crashed cache would."""

    def __init__(self, binary: str, folder: Path, port: int) -> None:
        self.binary, self.folder, self.port = binary, folder, port
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        command = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", str(self.folder), "--daemonize", "no", "--loglevel", "warning"]
        log = (self.folder / "redis.log").open("a")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        wait_until(self.ping, timeout=20, what=f"redis-server on port {self.port}")

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as connection:
                connection.sendall(b"PING\r\n")
                return connection.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; clients see their connections reset."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()


@contextlib.contextmanager
def redis_server() -> Iterator[RedisServer]:
    binary = find_binary("redis-server")
    if binary is None:
        unavailable("redis-server is not installed")
    folder = Path(tempfile.mkdtemp(prefix="heronry-redis-"))
    server = RedisServer(binary, folder, free_port())
    try:
        server.start()
        yield server
    finally:
        server.kill()
        shutil.rmtree(folder, ignore_errors=True)


# --- PostgreSQL ----------------------------------------------------------------------------------------------


class PostgresCluster:
    """A cluster made by initdb in a temporary folder, listening on 127.0.0.1:<free port> with trust auth."""

    user = "postgres"

    def __init__(self, bin_dir: Path, folder: Path, port: int, run_as: list[str]) -> None:
        self.bin_dir, self.folder, self.port, self.run_as = bin_dir, folder, port, run_as
        self.data = folder / "data"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        command = [*self.run_as, str(self.bin_dir / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stdout}{result.stderr}")

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", self.user, "-A", "trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        # Durability is not what these tests are about: fsync off keeps them fast on a busy machine.
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += " -c synchronous_commit=off -c full_page_writes=off -c max_connections=60"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.folder / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self) -> None:
        """Stop at once (every connection is cut, open transactions are lost) and start again."""
        self.stop("immediate")
        self.start()

    def url(self, name: str, **options: str) -> str:
        query = "&".join(f"{key}={value}" for key, value in options.items())
        return f"postgres://{self.user}@127.0.0.1:{self.port}/{name}" + (f"?{query}" if query else "")

    def admin(self):
        """A psycopg connection (autocommit) to the cluster's maintenance database."""
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres", autocommit=True)

    def execute(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self.admin() as connection:
            cursor = connection.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str, *, template: str | None = None) -> None:
        template_sql = f' TEMPLATE "{template}"' if template else ""
        self.execute(f'CREATE DATABASE "{name}"{template_sql}')

    def restore(self, name: str, dump: Path) -> None:
        self._run_here("pg_restore", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, "-d", name, str(dump))

    def _run_here(self, tool: str, *args: str) -> None:
        result = subprocess.run([str(self.bin_dir / tool), *args], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{tool} failed ({result.returncode}): {result.stdout}{result.stderr}")

    def terminate(self, database: str, *, application_name: str | None = None, exclude: tuple[int, ...] = ()) -> int:
        """``pg_terminate_backend`` every client backend on ``database`` (of one application, if given)."""
        sql = (
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid() AND NOT (pid = ANY(%s))"
        )
        params: tuple = (database, list(exclude))
        if application_name is not None:
            sql += " AND application_name = %s"
            params = (*params, application_name)
        return int(self.execute(sql, params)[0][0])


def dump_database(settings_dict: dict, target: Path) -> None:
    """pg_dump (custom format) of the database Django is connected to: the migrated test schema."""
    binary = find_binary("pg_dump")
    assert binary is not None
    command = [binary, "-Fc", "-f", str(target), "-h", settings_dict["HOST"] or "127.0.0.1"]
    command += ["-p", str(settings_dict["PORT"] or 5432), "-U", settings_dict["USER"] or "postgres"]
    command.append(settings_dict["NAME"])
    env = {**os.environ, "PGPASSWORD": settings_dict.get("PASSWORD") or ""}
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"pg_dump failed: {result.stderr}")


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    tools = {name: find_binary(name) for name in ("initdb", "pg_ctl", "pg_dump", "pg_restore")}
    initdb = tools["initdb"]
    if initdb is None or not all(tools.values()):
        unavailable("PostgreSQL server binaries (initdb, pg_ctl, pg_dump, pg_restore) are not installed")
    assert initdb is not None
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the server as the postgres system user
        runuser = shutil.which("runuser")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            runuser = None
        if runuser is None:
            unavailable("running as root, and there is no runuser + postgres user to run a throwaway cluster as")
        run_as = [runuser, "-u", "postgres", "--"]
    folder = Path(tempfile.mkdtemp(prefix="heronry-pg-"))
    if run_as:
        shutil.chown(folder, "postgres", "postgres")
    cluster = PostgresCluster(Path(initdb).parent, folder, free_port(), run_as)
    started = False
    try:
        cluster.init()
        cluster.start()
        started = True
        yield cluster
    finally:
        if started:
            with contextlib.suppress(Exception):
                cluster.stop("immediate")
        shutil.rmtree(folder, ignore_errors=True)


# --- S3 (moto) -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def moto_s3_server(folder: Path) -> Iterator[str]:
    """moto's server mode (an S3-compatible HTTP server, state in memory) in its own process on a free port;
    yields its endpoint URL. Its log goes to ``folder``."""
    if importlib.util.find_spec("moto.server") is None:
        unavailable("moto[server] is not installed (pip install -e '.[dev]')")
    port = free_port()
    log = (folder / "moto.log").open("a")
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()

    def listening() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return process.poll() is not None  # died: stop waiting, fail below

    try:
        wait_until(listening, timeout=30, what=f"moto server on port {port}")
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited ({process.returncode}); see {folder / 'moto.log'}")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
