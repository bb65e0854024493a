"""Markdown tables from the load generator's JSON lines: ``python -m bench.serve.report var/bench-serve.jsonl``."""

from __future__ import annotations

import json
import sys


def main(path: str = "var/bench-serve.jsonl") -> int:
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    print(
        "| run | scenario | clients | next p50 | next p99 | submit p50 | submit p99 | cycles/s | 409s "
        "| client CPU | machine CPU |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        n, s = r["next"], r["submit"]
        scenario = "human pace (open loop)" if r["mode"] == "human" else "saturation (closed loop)"
        print(
            f"| {r['label'].rsplit(' ', 1)[0]} | {scenario} | {r['clients']} | "
            f"{n['p50_ms']:.1f} ms | {n['p99_ms']:.1f} ms | "
            f"{s['p50_ms']:.1f} ms | {s['p99_ms']:.1f} ms | {r['cycles_per_s']:.1f} | {r['errors']} | "
            f"{r['client_cpu_cores']:.2f} cores | {r['machine_cpu_pct']:.0f} % |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
