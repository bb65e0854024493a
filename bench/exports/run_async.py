"""Asynchronous export benchmark: what a worker spends writing 1 000 000 judgments to storage.

Needs the database from ``bench.exports.seed``. For each format it runs one export job in a fresh process, the
way the Celery task does (``labeling.export_jobs.export_job_run``; the job row is made directly, so no broker is
involved), with media in a temporary folder (``MEDIA_STORAGE=filesystem``), and records the wall time, the
process's CPU time, its peak resident memory above what it held before the job (``VmHWM`` − ``VmRSS``), the
bytes and the rows. Results go to stdout and, as JSON lines, to ``--json``.

    .venv/bin/python -m bench.exports.run_async --formats jsonl csv parquet --json var/bench-exports-async.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def one(fmt: str, what: str) -> dict[str, object]:
    """Run in the child: one job, measured."""
    import time

    import django

    django.setup()
    from labeling import export_jobs
    from labeling.models import ExportJob, Project

    project = Project.objects.get(slug="bench")
    job = ExportJob.objects.create(project=project, what=what, format=fmt)
    before_rss = _status_bytes("VmRSS")
    cpu0, t0 = time.process_time(), time.perf_counter()
    export_jobs.export_job_run(job_id=job.pk)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    job.refresh_from_db()
    assert job.status == "done", job.error
    return {
        "what": what,
        "format": fmt,
        "rows": job.rows,
        "bytes": job.size,
        "wall_s": round(wall, 2),
        "cpu_s": round(cpu, 2),
        "peak_above_start_mb": round((_status_bytes("VmHWM") - before_rss) / 2**20, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/heronry_bench_exports")
    ap.add_argument("--formats", nargs="+", default=["jsonl", "csv", "parquet"])
    ap.add_argument("--what", default="judgments", choices=["judgments", "clips", "rankings"])
    ap.add_argument("--json", default=None, help="append results as JSON lines")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(one(args.child, args.what)))
        return 0
    for fmt in args.formats:
        with tempfile.TemporaryDirectory(prefix="heronry-bench-media-") as media:
            env = {
                **os.environ,
                "DATABASE_URL": args.db,
                "MEDIA_ROOT": media,
                "MEDIA_STORAGE": "filesystem",
                "DEBUG": "false",
                "SECRET_KEY": "bench-not-a-secret-0123456789abcdef",
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}",
            }
            command = [sys.executable, "-m", "bench.exports.run_async", "--child", fmt, "--what", args.what]
            done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(done.stderr[-3000:], file=sys.stderr)
            return done.returncode
        result = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{result['format']:8} {result['rows']:>9} rows {result['bytes'] / 2**20:8.1f} MiB "
            f"wall {result['wall_s']:6.2f} s  cpu {result['cpu_s']:6.2f} s  peak +{result['peak_above_start_mb']} MB",
            flush=True,
        )
        if args.json:
            with open(args.json, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
