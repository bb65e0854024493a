"""Export benchmark over HTTP: 1 000 000 judgments as JSONL, CSV and Parquet from gunicorn (one sync worker).

Needs the database from ``bench.exports.seed``. For each format it starts a fresh gunicorn on this tree's code
(DEBUG off), warms the worker with one small API request, then downloads the export once and records the time to
the first byte, the wall time, the worker's CPU time (``/proc/<pid>/stat``), its resident memory when idle and its
peak (``VmHWM``), the bytes and the rows. Results go to stdout and, as JSON lines, to ``--json``.

    .venv/bin/python -m bench.exports.run --formats jsonl csv parquet --json var/bench-exports.jsonl
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _token(db_url: str) -> str:
    import psycopg

    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO authtoken_token (key, user_id, created) "
            "SELECT %s, id, now() FROM accounts_user WHERE username = 'bench-researcher' "
            "ON CONFLICT (user_id) DO UPDATE SET key = authtoken_token.key RETURNING key",
            (secrets.token_hex(20),),
        ).fetchone()
    assert row is not None, "no bench-researcher: run bench.exports.seed first"
    return str(row[0])


def _start(port: int, db_url: str, app: Path) -> tuple[subprocess.Popen[bytes], int]:
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "bench-not-a-secret-0123456789abcdef",
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SECURE_HSTS_SECONDS": "0",
        "DATABASE_URL": db_url,
        "EXPORT_RATE": "1000/hour",
        "PYTHONPATH": f"{app / 'platform'}:{app}",
    }
    gunicorn = Path(sys.executable).with_name("gunicorn")
    server = subprocess.Popen(
        [str(gunicorn), "config.wsgi:application", "-b", f"127.0.0.1:{port}", "-w", "1", "--timeout", "600",
         "--log-level", "warning"],
        cwd=app, env=env,
    )  # fmt: skip
    for _ in range(300):
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children")
        worker = children.read_text().split() if children.exists() else []
        if worker:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/api/v1/")
                conn.getresponse().read()
                return server, int(worker[0])
            except OSError:
                pass
        time.sleep(0.2)
    server.kill()
    raise RuntimeError("gunicorn did not start")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/heronry_bench_exports")
    ap.add_argument("--port", type=int, default=8131)
    ap.add_argument("--formats", nargs="+", default=["jsonl", "csv", "parquet"])
    ap.add_argument("--what", default="judgments", choices=["judgments", "clips", "rankings"])
    ap.add_argument("--json", help="append results here as JSON lines")
    ap.add_argument("--label", default="run")
    ap.add_argument("--app-dir", type=Path, default=ROOT, help="serve another checkout's code (e.g. the baseline)")
    args = ap.parse_args(argv)
    token = _token(args.db)
    for fmt in args.formats:
        server, worker = _start(args.port, args.db, args.app_dir)
        try:
            conn = http.client.HTTPConnection("127.0.0.1", args.port)
            conn.request("GET", "/api/v1/projects/", headers={"Authorization": f"Token {token}"})
            conn.getresponse().read()
            idle = _proc_status(worker, "VmRSS")
            cpu0 = _cpu_seconds(worker)
            t0 = time.perf_counter()
            conn = http.client.HTTPConnection("127.0.0.1", args.port, timeout=600)
            conn.request("GET", f"/api/v1/projects/bench/export/{args.what}?format={fmt}",
                         headers={"Authorization": f"Token {token}"})  # fmt: skip
            response = conn.getresponse()
            first: float | None = None
            size = lines = 0
            while chunk := response.read1(1 << 18):
                if first is None:
                    first = time.perf_counter() - t0
                size += len(chunk)
                lines += chunk.count(b"\n")
            wall = time.perf_counter() - t0
            cpu = _cpu_seconds(worker) - cpu0
            peak = _proc_status(worker, "VmHWM")
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        result = {
            "label": args.label, "what": args.what, "format": fmt, "status": response.status, "bytes": size,
            "lines": lines if fmt != "parquet" else None, "first_byte_s": round(first or 0.0, 3),
            "wall_s": round(wall, 2), "worker_cpu_s": round(cpu, 2), "idle_rss_mb": round(idle / 2**20, 1),
            "peak_rss_mb": round(peak / 2**20, 1), "above_idle_mb": round((peak - idle) / 2**20, 1),
        }  # fmt: skip
        print(json.dumps(result), flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            with open(args.json, "a") as out:
                out.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
