"""Seed a separate database for the serving benchmark: one project, fake ready clips, N open queries, annotators.

Re-runnable: drops and recreates the database (default ``heronry_bench``), migrates it, then inserts

* one project ``bench`` (overlap 1, pairwise feedback, lease TTL 300 s),
* ``--clips`` fake clips of one fake rollout, all ``render_status=ready`` with dummy video/poster names
  (no files on disk: the API only builds URLs from the names),
* ``--queries`` distinct random pairs (clip_a < clip_b), answers_wanted 1, priority 0, a seeded random_key,
* ``--annotators`` annotator users ``bench-annotator-NNN`` with DRF tokens, all project members.

Clips and queries are inserted with ``INSERT … SELECT`` in SQL after ``setseed`` (deterministic for a given
seed); users, tokens and memberships with ``bulk_create``. Finishes with ``VACUUM ANALYZE``.

    .venv/bin/python -m bench.serve.seed --queries 1000000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADMIN_URL = "postgres://postgres@127.0.0.1:5432"


def _other_columns(model, connection, explicit: set[str]) -> tuple[str, list]:
    """Columns of ``model`` not set explicitly, with their model defaults (keeps the SQL valid as fields are added)."""
    cols, params = [], []
    for field in model._meta.concrete_fields:
        if field.name in explicit:
            continue
        cols.append(field.column)
        value = field.get_default() if field.has_default() or not field.null else None
        params.append(field.get_db_prep_save(value, connection))
    return "".join(f", {c}" for c in cols), params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="heronry_bench")
    ap.add_argument("--server", default=ADMIN_URL, help="postgres://user@host:port (trust auth)")
    ap.add_argument("--queries", type=int, default=1_000_000)
    ap.add_argument("--clips", type=int, default=2_000)
    ap.add_argument("--annotators", type=int, default=132)
    ap.add_argument("--seed", type=float, default=0.42, help="PostgreSQL setseed() value in [-1, 1]")
    ap.add_argument("--keep", action="store_true", help="don't drop/recreate the database (must be migrated)")
    args = ap.parse_args(argv)
    if args.queries > args.clips * (args.clips - 1) // 2:
        ap.error("more queries than distinct pairs of clips")

    import psycopg

    url = f"{args.server}/{args.db}"
    t0 = time.perf_counter()
    if not args.keep:
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (args.db,),
            )
            admin.execute(f'DROP DATABASE IF EXISTS "{args.db}"')
            admin.execute(f'CREATE DATABASE "{args.db}"')
        env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": f"{ROOT / 'platform'}:{ROOT}"}
        subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], check=True, env=env, cwd=ROOT)
    print(f"database {args.db} ready in {time.perf_counter() - t0:.1f} s", flush=True)

    os.environ["DATABASE_URL"] = url
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth.hashers import make_password
    from django.db import connection, transaction
    from rest_framework.authtoken.models import Token

    from accounts.models import Role, User
    from labeling.models import Clip, FeedbackMode, Membership, Project, ProjectRole, Query, Rollout

    t1 = time.perf_counter()
    with transaction.atomic():
        owner = User.objects.create(username="bench-researcher", role=Role.RESEARCHER, password=make_password(None))
        project = Project.objects.create(
            slug="bench", name="Bench", env_id="Pendulum-v1", overlap=1, feedback_mode=FeedbackMode.BOTH,
            lease_ttl_seconds=300, created_by=owner,
        )  # fmt: skip
        Membership.objects.create(project=project, user=owner, role=ProjectRole.RESEARCHER)
        rollout = Rollout.objects.create(
            project=project, policy="random", env_seed=0, n_steps=args.clips * project.segment_steps,
            data="rollouts/bench/fake.npz",
        )  # fmt: skip
        unusable = make_password(None)
        users = User.objects.bulk_create(
            [
                User(username=f"bench-annotator-{i:03d}", role=Role.ANNOTATOR, password=unusable)
                for i in range(args.annotators)
            ]
        )
        Token.objects.bulk_create([Token(key=Token.generate_key(), user=u) for u in users])
        Membership.objects.bulk_create([Membership(project=project, user=u, role=ProjectRole.ANNOTATOR) for u in users])
        clip_rest, clip_rest_params = _other_columns(Clip, connection, {
            "id", "project", "rollout", "start", "length", "factor_totals", "true_return", "video", "poster",
            "render_status", "created_at"})  # fmt: skip
        query_rest, query_rest_params = _other_columns(Query, connection, {
            "id", "project", "clip_a", "clip_b", "source", "priority", "answers_wanted", "answers_given", "status",
            "random_key", "created_at"})  # fmt: skip
        with connection.cursor() as cur:
            cur.execute("SELECT setseed(%s)", [args.seed])
            cur.execute(
                """
                INSERT INTO labeling_clip (project_id, rollout_id, start, length, factor_totals, true_return,
                                           video, poster, render_status, created_at{clip_rest})
                SELECT %s, %s, (i - 1) * %s, %s,
                       jsonb_build_object('angle_sq', random(), 'angular_velocity_sq', 1.0, 'torque_sq', 0.5),
                       -random() * 100, 'clips/bench/' || i || '.mp4', 'clips/bench/' || i || '.jpg',
                       'ready', now(){clip_rest_values}
                FROM generate_series(1, %s) AS i
                """.format(clip_rest=clip_rest, clip_rest_values=", %s" * len(clip_rest_params)),
                [project.pk, rollout.pk, project.segment_steps, project.segment_steps, *clip_rest_params, args.clips],
            )
            # N distinct pairs, drawn uniformly from all clip pairs (seeded), in canonical order.
            cur.execute(
                """
                INSERT INTO labeling_query (project_id, clip_a_id, clip_b_id, source, priority, answers_wanted,
                                            answers_given, status, random_key, created_at{query_rest})
                SELECT %s, a, b, 'random', 0, 1, 0, 'open', random(), now(){query_rest_values}
                FROM (
                    SELECT a.id AS a, b.id AS b
                    FROM labeling_clip a JOIN labeling_clip b ON a.id < b.id
                    WHERE a.project_id = %s AND b.project_id = %s
                    ORDER BY random()
                    LIMIT %s
                ) pairs
                """.format(query_rest=query_rest, query_rest_values=", %s" * len(query_rest_params)),
                [project.pk, *query_rest_params, project.pk, project.pk, args.queries],
            )
    print(
        f"seeded project 'bench': {args.clips} clips, {args.queries} queries (overlap 1), "
        f"{args.annotators} annotators in {time.perf_counter() - t1:.1f} s",
        flush=True,
    )
    connection.close()
    t2 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"VACUUM ANALYZE in {time.perf_counter() - t2:.1f} s; total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
