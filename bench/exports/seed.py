"""Seed ``heronry_bench_exports`` for the export benchmark: the serving seed's project plus 1 000 000 judgments.

Runs ``bench.serve.seed`` (drop, recreate, migrate, one project ``bench``, clips, N queries, annotators), then
inserts one judgment per query in a single ``INSERT … SELECT`` (annotators round-robin, choices cycling through
left/right/equal/cant_tell, every other one swapped), and ``VACUUM ANALYZE``.

    .venv/bin/python -m bench.exports.seed --judgments 1000000
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.serve import seed as serve_seed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="heronry_bench_exports")
    ap.add_argument("--server", default=serve_seed.ADMIN_URL)
    ap.add_argument("--judgments", type=int, default=1_000_000)
    ap.add_argument("--clips", type=int, default=2_000)
    ap.add_argument("--annotators", type=int, default=32)
    args = ap.parse_args(argv)
    serve_seed.main(
        ["--db", args.db, "--server", args.server, "--queries", str(args.judgments), "--clips", str(args.clips),
         "--annotators", str(args.annotators)]
    )  # fmt: skip

    import psycopg

    url = f"{args.server}/{args.db}"
    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.transaction():
            conn.execute(
                """
                WITH annotators AS (
                    SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM accounts_user
                    WHERE username LIKE 'bench-annotator-%'
                ), n AS (SELECT count(*) AS k FROM annotators)
                INSERT INTO labeling_judgment (query_id, annotator_id, choice, swapped, time_spent_ms, client_id,
                                               created_at)
                SELECT q.id, a.id,
                       (ARRAY['left', 'right', 'equal', 'cant_tell'])[1 + q.id % 4],
                       q.id % 2 = 0, 1000 + (q.id * 7919) % 20000, gen_random_uuid(),
                       now() - make_interval(secs => q.id)
                FROM labeling_query q, n
                JOIN annotators a ON true
                WHERE a.n = q.id % n.k
                """
            )
            conn.execute("UPDATE labeling_query SET answers_given = 1, status = 'complete'")
        conn.execute("VACUUM ANALYZE")
        count = conn.execute("SELECT count(*) FROM labeling_judgment").fetchone()
    print(f"{count[0] if count else 0} judgments in {time.perf_counter() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
