"""Start and stop real `celery worker` processes against the test database and the real broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]

# CI sets HERONRY_REQUIRE_SERVERS=1 so that a missing server fails the run instead of skipping quietly.
needs_servers = pytest.mark.skipif(
    not os.environ.get("HERONRY_REQUIRE_SERVERS")
    and not (
        os.environ.get("DATABASE_URL", "").startswith("postgres")
        and os.environ.get("CELERY_BROKER_URL", "").startswith("redis")
    ),
    reason="needs PostgreSQL (DATABASE_URL=postgres://…) and Redis (CELERY_BROKER_URL=redis://…)",
)


@dataclass
class Worker:
    process: subprocess.Popen
    log: IO[str]

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task without acknowledging anything."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.seek(0)
        print(self.log.read()[-5000:])  # shown if the test failed
        self.log.close()


def database_url() -> str:
    """The URL of the database this test process uses (the test database), for processes it starts."""
    db = connection.settings_dict
    return f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def _environment(media_root: Path, env_extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": database_url(),
        "MEDIA_ROOT": str(media_root),
        "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
        "PYTHONUNBUFFERED": "1",
        **env_extra,
    }


def start_worker(
    media_root: Path, *, queues: str = "default,render,train", cwd: Path | None = None, **env_extra: str
) -> Worker:
    """A `celery worker` on ``queues``; ``cwd`` (default: the repository) is its working folder, so that tests of
    several hosts can give each worker a folder of its own."""
    env = _environment(media_root, env_extra)
    name = uuid.uuid4().hex[:8]
    log = (Path(media_root).parent / f"worker-{name}.log").open("w+")
    command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues]
    command += ["--pool", "solo", "-n", f"test-{name}@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
    process = subprocess.Popen(command, cwd=cwd or ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Worker(process, log)


def start_web(media_root: Path, port: int, *, cwd: Path | None = None, **env_extra: str) -> Worker:
    """The web process (`manage.py runserver`, no autoreload) on 127.0.0.1:``port``, against the test database."""
    env = _environment(media_root, env_extra)
    log = (Path(media_root).parent / f"web-{port}.log").open("w+")
    command = [sys.executable, str(ROOT / "manage.py"), "runserver", f"127.0.0.1:{port}", "--noreload"]
    process = subprocess.Popen(command, cwd=cwd or ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Worker(process, log)


def wait_for(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")
