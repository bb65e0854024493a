"""``make serve`` (platform/config/serve.py) stops cleanly and quickly on Ctrl-C or SIGTERM (issue 14, point 7).

The supervisor is started the way the Makefile starts it, on a free port with a throwaway SQLite database, broker
and media folder; once the web server answers and the worker is ready, it gets the signal, and every process it
started (web server, worker, the worker's pool) must be gone. The bound is generous (a loaded CI machine); the
supervisor's own schedule is grace 2 s + 1.5 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STARTUP_LIMIT = 120.0
STOP_LIMIT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (by parent id, whatever their session)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, parent in parents.items():
            if parent == current and child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_serve_stops_with_all_its_processes(tmp_path, signum):
    port = free_port()
    unset = {"DEBUG", "DEMO", "SECRET_KEY", "DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(
        HERONRY_VAR_DIR=str(tmp_path / "var"),
        MEDIA_ROOT=str(tmp_path / "var" / "media"),
        PYTHONPATH=f"platform{os.pathsep}.",
        PYTHONUNBUFFERED="1",
    )
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "config.serve", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(supervisor.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + STARTUP_LIMIT
        page = ""
        while time.monotonic() < deadline and supervisor.poll() is None:
            if not page:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/no/such/page/", timeout=2)
                except urllib.error.HTTPError as answer:
                    page = f"{answer.code} {answer.read().decode()}"
                except OSError:
                    pass
            if page and any(" ready." in line for line in output):
                break
            time.sleep(0.2)
        log = "".join(output)[-3000:]
        assert supervisor.poll() is None, log
        assert page.startswith("404") and "Page not found" in page and "URLconf" not in page, page[:500]
        assert any(" ready." in line for line in output), f"the worker did not start:\n{log}"
        started = descendants(supervisor.pid)
        assert len(started) >= 3, started  # the web server, the worker and its pool

        supervisor.send_signal(signum)
        assert supervisor.wait(timeout=STOP_LIMIT) == 0, "".join(output)[-3000:]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(alive(pid) for pid in started):
            time.sleep(0.1)
        assert not [pid for pid in started if alive(pid)], "processes left after the supervisor stopped"
        assert "Heronry stopped." in "".join(output)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        for pid in descendants(supervisor.pid):
            os.kill(pid, signal.SIGKILL)
