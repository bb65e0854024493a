"""Simulated annotators over HTTP: next-query → judgment cycles against a running Heronry server.

Standard library only (``http.client`` keep-alive connection per simulated annotator, one thread each).
Each cycle is ``POST /api/v1/projects/{slug}/queries/next/`` then ``POST /api/v1/queries/{id}/judgments/``
with the returned lease. Every request's latency is taken with ``time.perf_counter`` around the request and
the full read of its response; p50/p99 are computed with numpy.

Modes:

* ``human``: open loop. ``--clients`` annotators (default 100), each starting one cycle every ``--period``
  seconds (default 2 s, jittered ±25 %, random phase) for ``--duration`` seconds. An annotator who falls
  behind starts the next cycle at once (a person can't answer two questions at a time).
* ``closed``: closed loop. ``--clients`` annotators each run cycles back to back for ``--duration`` seconds.

The first ``--warmup`` seconds are run but not counted. Tokens are read from the bench database
(users ``bench-annotator-NNN``, made by ``bench.serve.seed``); human-pace and closed-loop runs can use
disjoint users via ``--user-offset``. Client CPU (this process, user+sys) and whole-machine CPU over the
measured window are reported, since client and server share the machine.

    .venv/bin/python -m bench.serve.loadgen --mode closed --clients 8 --duration 30
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import resource
import sys
import threading
import time
import uuid

import numpy as np

CHOICES = ("left", "right", "equal", "cant_tell")


def load_tokens(db_url: str, offset: int, count: int) -> list[str]:
    import psycopg

    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT t.key FROM authtoken_token t JOIN accounts_user u ON u.id = t.user_id "
            "WHERE u.username LIKE 'bench-annotator-%%' ORDER BY u.username OFFSET %s LIMIT %s",
            (offset, count),
        ).fetchall()
    if len(rows) < count:
        raise SystemExit(f"only {len(rows)} bench annotators from offset {offset}; seed more (--annotators)")
    return [r[0] for r in rows]


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Annotator:
    def __init__(self, host: str, port: int, slug: str, token: str, rng: random.Random):
        self.conn = http.client.HTTPConnection(host, port, timeout=30)
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        self.slug = slug
        self.rng = rng
        # (t_start, latency_s, status) per request kind
        self.next_lat: list[tuple[float, float, int]] = []
        self.submit_lat: list[tuple[float, float, int]] = []
        self.cycles: list[float] = []  # completion times of full cycles (201 on submit)
        self.empty = 0
        self.errors: list[str] = []

    def _post(self, path: str, body: bytes) -> tuple[int, bytes, float, float]:
        t0 = time.perf_counter()
        try:
            self.conn.request("POST", path, body=body, headers=self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
        except (http.client.HTTPException, OSError):
            self.conn.close()  # stale keep-alive connection: reconnect once
            self.conn.request("POST", path, body=body, headers=self.headers)
            resp = self.conn.getresponse()
            data = resp.read()
        return resp.status, data, t0, time.perf_counter() - t0

    def cycle(self) -> None:
        status, data, t0, dt = self._post(f"/api/v1/projects/{self.slug}/queries/next/", b"")
        self.next_lat.append((t0, dt, status))
        if status != 200:
            self.errors.append(f"next {status} {data[:200]!r}")
            return
        query = json.loads(data)["query"]
        if query is None:
            self.empty += 1
            return
        body = json.dumps(
            {"choice": self.rng.choice(CHOICES), "lease": query["lease"], "client_id": str(uuid.uuid4())}
        ).encode()
        status, data, t0, dt = self._post(f"/api/v1/queries/{query['id']}/judgments/", body)
        self.submit_lat.append((t0, dt, status))
        if status == 201:
            self.cycles.append(time.perf_counter())
        else:
            self.errors.append(f"submit {status} {data[:200]!r}")


def run(args: argparse.Namespace) -> dict:
    tokens = load_tokens(args.db, args.user_offset, args.clients)
    master = random.Random(args.seed)
    annotators = [Annotator(args.host, args.port, args.slug, tok, random.Random(master.random())) for tok in tokens]
    start = time.perf_counter() + 0.5
    measure_from = start + args.warmup
    stop = measure_from + args.duration
    barrier = threading.Event()

    def human(a: Annotator) -> None:
        barrier.wait()
        due = start + a.rng.uniform(0, args.period)
        while True:
            now = time.perf_counter()
            if due >= stop:
                return
            if due > now:
                time.sleep(due - now)
            a.cycle()
            due += args.period * a.rng.uniform(0.75, 1.25)
            due = max(due, time.perf_counter())

    def closed(a: Annotator) -> None:
        barrier.wait()
        while time.perf_counter() < start:
            time.sleep(0.001)
        while time.perf_counter() < stop:
            a.cycle()

    target = human if args.mode == "human" else closed
    threads = [threading.Thread(target=target, args=(a,), daemon=True) for a in annotators]
    for t in threads:
        t.start()
    barrier.set()
    time.sleep(max(0.0, measure_from - time.perf_counter()))
    ru0, cpu0, w0 = resource.getrusage(resource.RUSAGE_SELF), machine_cpu(), time.perf_counter()
    time.sleep(max(0.0, stop - time.perf_counter()))
    ru1, cpu1, w1 = resource.getrusage(resource.RUSAGE_SELF), machine_cpu(), time.perf_counter()
    for t in threads:
        t.join(timeout=60)
    for a in annotators:
        a.conn.close()

    def stats(kind: str) -> dict:
        rows = [r for a in annotators for r in getattr(a, kind) if measure_from <= r[0] < stop]
        lat = np.array([r[1] for r in rows]) * 1000
        ok = sum(1 for r in rows if r[2] in (200, 201))
        if not len(lat):
            return {"n": 0}
        return {
            "n": len(lat),
            "ok": ok,
            "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)),
            "mean_ms": float(lat.mean()),
            "max_ms": float(lat.max()),
        }

    cycles = sum(1 for a in annotators for t in a.cycles if measure_from <= t < stop)
    client_cpu = (ru1.ru_utime - ru0.ru_utime + ru1.ru_stime - ru0.ru_stime) / (w1 - w0)
    busy, total = cpu1[0] - cpu0[0], cpu1[1] - cpu0[1]
    errors = [e for a in annotators for e in a.errors]
    if args.raw:  # every request: kind (0 next, 1 submit), start (s from measure start), latency (ms), status
        raw = [
            (kind, r[0] - measure_from, r[1] * 1000, r[2])
            for a in annotators
            for kind, rows in ((0, a.next_lat), (1, a.submit_lat))
            for r in rows
        ]
        np.save(args.raw, np.array(sorted(raw, key=lambda x: x[1]), dtype=np.float64))
    return {
        "mode": args.mode,
        "clients": args.clients,
        "duration_s": args.duration,
        "label": args.label,
        "next": stats("next_lat"),
        "submit": stats("submit_lat"),
        "cycles": cycles,
        "cycles_per_s": cycles / args.duration,
        "empty_next": sum(a.empty for a in annotators),
        "errors": len(errors),
        "error_samples": errors[:5],
        "client_cpu_cores": client_cpu,
        "machine_cpu_pct": 100.0 * busy / total if total else float("nan"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("human", "closed"), required=True)
    ap.add_argument("--clients", type=int, required=True)
    ap.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds run before measuring")
    ap.add_argument("--period", type=float, default=2.0, help="human mode: seconds between cycle starts")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8100)
    ap.add_argument("--slug", default="bench")
    ap.add_argument(
        "--db", default=os.environ.get("BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/heronry_bench")
    )
    ap.add_argument("--user-offset", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", default="")
    ap.add_argument("--json", help="append the result as one JSON line to this file")
    ap.add_argument("--raw", help="save every request (kind, start s, latency ms, status) to this .npy file")
    args = ap.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("loopback only")
    result = run(args)
    n, s = result["next"], result["submit"]
    print(
        f"{args.label or args.mode} clients={args.clients}: next p50 {n.get('p50_ms', 0):.1f} ms p99 "
        f"{n.get('p99_ms', 0):.1f} ms | submit p50 {s.get('p50_ms', 0):.1f} ms p99 {s.get('p99_ms', 0):.1f} ms | "
        f"{result['cycles_per_s']:.1f} cycles/s | empty {result['empty_next']} errors {result['errors']} | "
        f"client CPU {result['client_cpu_cores']:.2f} cores, machine {result['machine_cpu_pct']:.0f} %"
    )
    if result["error_samples"]:
        print("  errors:", *result["error_samples"], sep="\n    ")
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
