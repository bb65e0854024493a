"""``make serve``: the demo's web server and Celery worker side by side, stopped together within seconds.

    python -m config.serve [--host 127.0.0.1] [--port 8000]

Why a supervisor rather than a shell ``trap 'kill 0'``: on SIGTERM Celery's warm shutdown waits for the tasks it
is running (a policy training takes minutes; with the file-system broker it took about 15 s even when idle), and
``kill 0`` signals make itself, which then reports the children's deaths (a worker's pool process dying in torch's
teardown showed up as "segmentation fault"). Here each child runs in its own session, so only this process decides
how they stop. On Ctrl-C or SIGTERM it asks both to stop (SIGTERM), gives them ``--grace`` seconds, then
cold-stops the worker (SIGQUIT: running tasks are abandoned; an abandoned run step is claimed again once its
heartbeat is ``RUN_STALE_SECONDS`` old, or retried from the dashboard), and finally kills whatever is left of
either process group. Stopped by a signal, it exits 0, so make has nothing to report.

The demo runs with ``DEMO=true`` (see config/settings.py): DEBUG off, so unknown addresses get the site's own 404
page and errors its 500 page instead of Django's debug pages, yet plain HTTP works on a laptop. Its secret key is
made once and kept in ``$HERONRY_VAR_DIR/demo-secret-key``. Standard library only: nothing here imports Django.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

ROOT = Path(__file__).resolve().parents[2]  # the repository: manage.py, platform/, …
POLL_SECONDS = 0.1


def demo_environment(base: dict[str, str]) -> dict[str, str]:
    """The children's environment: DEMO on, and a secret key of this installation unless one is given."""
    env = dict(base)
    env.setdefault("DEMO", "true")
    env.setdefault("PYTHONPATH", f"platform{os.pathsep}.")
    if not env.get("SECRET_KEY"):
        var_dir = Path(env.get("HERONRY_VAR_DIR", str(ROOT / "var")))
        var_dir.mkdir(parents=True, exist_ok=True)
        key_file = var_dir / "demo-secret-key"
        if not key_file.exists() or not key_file.read_text().strip():
            key_file.write_text(secrets.token_urlsafe(50) + "\n")
            key_file.chmod(0o600)
        env["SECRET_KEY"] = key_file.read_text().strip()
    return env


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    if process.poll() is None:
        process.send_signal(signum)


def _signal_group(process: subprocess.Popen[bytes], signum: int) -> None:
    """``signum`` to the child's whole process group (the worker's pool processes too); gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _wait_all(processes: list[subprocess.Popen[bytes]], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(p.poll() is not None for p in processes):
            return True
        time.sleep(POLL_SECONDS)
    return all(p.poll() is not None for p in processes)


def stop(web: subprocess.Popen[bytes], worker: subprocess.Popen[bytes], *, grace: float) -> None:
    """Stop both children and everything they started, in at most about ``grace`` + 1.5 seconds."""
    children = [web, worker]
    # The main processes only: Celery's warm shutdown stops its own pool (a pool process signalled directly dies
    # as a "lost worker" and keeps the main process waiting).
    for child in children:
        _signal(child, signal.SIGTERM)
    if not _wait_all(children, grace):
        _signal(worker, signal.SIGQUIT)  # Celery's cold shutdown: don't wait for running tasks
        _wait_all(children, 1.0)
    for child in children:  # whatever is left, main processes or orphaned pool processes
        _signal_group(child, signal.SIGKILL)
    _wait_all(children, 0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--concurrency", type=int, default=2, help="the worker's processes")
    parser.add_argument("--grace", type=float, default=2.0, help="seconds the children get to stop by themselves")
    args = parser.parse_args(argv)

    env = demo_environment(dict(os.environ))
    python = sys.executable
    worker_command = [
        python, "-m", "celery", "-A", "config", "worker", "-Q", "default,render,train",
        "--concurrency", str(args.concurrency), "--loglevel", "INFO",
        "--without-heartbeat", "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    web_command = [python, "manage.py", "runserver", f"{args.host}:{args.port}", "--noreload"]

    stopping: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    worker = subprocess.Popen(worker_command, cwd=ROOT, env=env, start_new_session=True)
    web = subprocess.Popen(web_command, cwd=ROOT, env=env, start_new_session=True)
    address = f"http://{args.host}:{args.port}/"
    password = env.get("DEMO_PASSWORD", "heronry")
    print(
        f"\n  Heronry is running at {address}\n"
        f"  Log in as researcher, annotator1 or annotator2 with password '{password}'.\n"
        f"  Admin: {address}admin/   API docs: {address}api/v1/docs/\n"
        "  Ctrl-C stops the server and the worker.\n",
        flush=True,
    )
    failed = ""
    while not stopping:
        for name, child in (("web server", web), ("worker", worker)):
            if child.poll() is not None:
                failed = f"the {name} stopped (exit status {child.returncode}); stopping the rest"
        if failed:
            break
        time.sleep(POLL_SECONDS)
    stop(web, worker, grace=args.grace)
    if failed:
        print(failed, file=sys.stderr, flush=True)
        return 1
    print("Heronry stopped.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
