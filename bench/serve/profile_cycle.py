"""In-process cost of one next→submit cycle (Django test client, no HTTP), optionally under cProfile.

Needs a seeded bench database (``bench.serve.seed``). Each cycle leases a query and answers it, so it uses
up queries of the bench project.

    .venv/bin/python -m bench.serve.profile_cycle            # mean ms per cycle over 200 cycles
    .venv/bin/python -m bench.serve.profile_cycle --profile  # plus the top of a cProfile by cumulative time
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="postgres://postgres@127.0.0.1:5432/heronry_bench")
    ap.add_argument("--cycles", type=int, default=200)
    ap.add_argument("--user", default="bench-annotator-131")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
    os.environ.update(
        DATABASE_URL=args.db, DEBUG="false", SECRET_KEY="bench-not-a-secret-0123456789abcdef",
        ALLOWED_HOSTS="testserver", SECURE_SSL_REDIRECT="false", SECURE_HSTS_SECONDS="0",
    )  # fmt: skip
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.test import Client
    from rest_framework.authtoken.models import Token

    client = Client(HTTP_AUTHORIZATION=f"Token {Token.objects.get(user__username=args.user).key}")

    def cycle() -> None:
        query = client.post("/api/v1/projects/bench/queries/next/", content_type="application/json").json()["query"]
        body = {"choice": "left", "lease": query["lease"], "client_id": str(uuid.uuid4())}
        response = client.post(f"/api/v1/queries/{query['id']}/judgments/", json.dumps(body), "application/json")
        assert response.status_code == 201, response.content

    for _ in range(20):  # warm-up
        cycle()
    profiler = cProfile.Profile()
    t0 = time.perf_counter()
    if args.profile:
        profiler.enable()
    for _ in range(args.cycles):
        cycle()
    profiler.disable()
    print(f"{(time.perf_counter() - t0) / args.cycles * 1000:.1f} ms per cycle over {args.cycles} cycles")
    if args.profile:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    return 0


if __name__ == "__main__":
    sys.exit(main())
