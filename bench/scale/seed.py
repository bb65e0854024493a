"""Seed ``heronry_bench_scale`` for the scale benchmark: a realistic project with about 1 000 000 judgments.

Starts from the serving seed (``bench.serve.seed``, which ``bench.exports.seed`` also builds on: drop, recreate,
migrate, one project ``bench``, clips, queries, annotators, a researcher), then in SQL:

* ordinary queries get 1–3 answers each (about 2 on average) from distinct annotators, so agreement statistics
  have data; each query has a hidden "true" canonical label and every annotator agrees with it with a probability
  of their own (0.6–0.95), says "can't tell" 5 % of the time, and sees the pair swapped half of the time;
* ``--gold`` gold queries (known answer), answered by every annotator;
* a repeat query for 1 % of the ordinary judgments, answered again by the same annotator;
* a few revisions, reward factors, a ranking from 12 annotators, runs, preference sets, reward models and
  policies (ORM rows with dummy file names; nothing is trained);

then ``VACUUM ANALYZE``. Deterministic for a given ``--seed`` (``setseed``).

    .venv/bin/python -m bench.scale.seed --judgments 1000000
"""

from __future__ import annotations

import argparse
import sys
import time

from bench.serve import seed as serve_seed

# canonical label -> (choice when not swapped, choice when swapped): "a" is clip_a, shown left unless swapped.
_CHOICE_SQL = """
    CASE WHEN {u} < 0.05 THEN 'cant_tell'
         WHEN {label} = 'equal' THEN 'equal'
         WHEN ({label} = 'a') = NOT {swapped} THEN 'left'
         ELSE 'right' END
"""


def _judgments_sql(n_annotators: int) -> str:
    # Answer k (0-based) of query q goes to annotator (q + 7k) mod n: distinct for k < 3 when n > 14.
    label = "(CASE WHEN r < acc THEN truth ELSE (ARRAY['a','b','equal'])[1 + floor(r2 * 3)::int] END)"
    return f"""
        WITH annotators AS (
            SELECT id, row_number() OVER (ORDER BY id) - 1 AS n,
                   0.6 + 0.35 * ((row_number() OVER (ORDER BY id) * 37) %% 100) / 100.0 AS acc
            FROM accounts_user WHERE username LIKE 'bench-annotator-%%'
        ), answers AS (
            SELECT q.id AS query_id, q.created_at, k,
                   (ARRAY['a','a','b','b','equal'])[1 + (q.id * 2654435761) %% 5] AS truth
            FROM labeling_query q, generate_series(0, 2) AS k
            WHERE q.project_id = %(project)s AND q.source = 'random' AND k < q.answers_wanted
        ), drawn AS (
            SELECT ans.*, a.id AS annotator_id, a.acc, random() AS r, random() AS r2, random() AS u,
                   random() < 0.5 AS swapped
            FROM answers ans JOIN annotators a ON a.n = (ans.query_id + 7 * ans.k) %% {n_annotators}
        )
        INSERT INTO labeling_judgment (query_id, annotator_id, choice, swapped, time_spent_ms, client_id, created_at,
                                       exclusion_reason)
        SELECT query_id, annotator_id, {_CHOICE_SQL.format(u="u", label=label, swapped="swapped")}, swapped,
               1000 + floor(r2 * 20000)::int, gen_random_uuid(), created_at + make_interval(secs => 60 * (k + 1)), ''
        FROM drawn
    """


# The disagreement review's scores: the latest reward model's P(clip_a better) and ensemble spread for every judged
# pair, as trainer.review.review_scores_compute stores them after training (here random, drawn in SQL).
_REVIEW_SCORES_SQL = """
    INSERT INTO trainer_reviewscore (reward_model_id, query_id, p_model, spread, created_at)
    SELECT %(model)s, q.id, random(), 0.1 * random(), now()
    FROM labeling_query q
    WHERE q.project_id = %(project)s AND q.answers_given > 0
    ON CONFLICT DO NOTHING
"""


def seed_review_scores(*, db: str, server: str, seed: float) -> None:
    """Score every judged pair with the project's latest ready reward model (also on a database seeded before the
    review existed: ``--review-only``)."""
    import psycopg

    with psycopg.connect(f"{server}/{db}", autocommit=True) as conn:
        project, model = conn.execute(
            "SELECT p.id, max(m.id) FROM labeling_project p JOIN trainer_rewardmodel m ON m.project_id = p.id "
            "WHERE p.slug = 'bench' AND m.status = 'ready' GROUP BY p.id"
        ).fetchone()  # fmt: skip
        conn.execute("SELECT setseed(%s)", [seed])
        conn.execute(_REVIEW_SCORES_SQL, {"project": project, "model": model})
        conn.execute("VACUUM ANALYZE trainer_reviewscore")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="heronry_bench_scale")
    ap.add_argument("--server", default=serve_seed.ADMIN_URL)
    ap.add_argument("--judgments", type=int, default=1_000_000, help="about this many judgments in all")
    ap.add_argument("--clips", type=int, default=2_000)
    ap.add_argument("--annotators", type=int, default=32)
    ap.add_argument("--gold", type=int, default=300)
    ap.add_argument("--seed", type=float, default=0.42)
    ap.add_argument("--review-only", action="store_true", help="only add the review's scores to a seeded database")
    args = ap.parse_args(argv)
    if args.review_only:
        seed_review_scores(db=args.db, server=args.server, seed=args.seed)
        return 0
    if args.annotators < 15:
        ap.error("need at least 15 annotators (three distinct answers per query)")
    gold_judgments = args.gold * args.annotators
    # 2 answers per ordinary query on average, and 1 % more as repeats.
    n_queries = max(1, round((args.judgments - gold_judgments) / 2.02))
    serve_seed.main(
        ["--db", args.db, "--server", args.server, "--queries", str(n_queries), "--clips", str(args.clips),
         "--annotators", str(args.annotators), "--seed", str(args.seed)]
    )  # fmt: skip
    # bench.serve.seed has set Django up on the new database.
    from django.db import connection, transaction
    from django.utils import timezone

    from accounts.models import User
    from accounts.services import researchers_group
    from labeling.models import FactorRanking, Project, RewardFactor
    from trainer.models import PolicyCheckpoint, PreferenceSet, RewardModel, Run, RunKind, RunState

    t0 = time.perf_counter()
    project = Project.objects.get(slug="bench")
    with transaction.atomic(), connection.cursor() as cur:
        params = {"project": project.pk}
        cur.execute("SELECT setseed(%s)", [args.seed])
        cur.execute(
            "UPDATE labeling_query SET answers_wanted = 1 + (id * 7919) %% 3 WHERE project_id = %(project)s", params
        )
        cur.execute(_judgments_sql(args.annotators), params)
        # Gold: the first queries become gold questions with a known answer, answered by everyone.
        cur.execute(
            """
            WITH gold AS (
                SELECT id FROM labeling_query WHERE project_id = %(project)s ORDER BY id LIMIT %(gold)s
            )
            UPDATE labeling_query q SET source = 'gold', answers_wanted = 1000000,
                   gold_answer = CASE WHEN q.id %% 2 = 0 THEN 'a' ELSE 'b' END
            FROM gold WHERE q.id = gold.id
            """,
            {**params, "gold": args.gold},
        )
        cur.execute(
            "DELETE FROM labeling_judgment j USING labeling_query q WHERE q.id = j.query_id AND q.source = 'gold'"
        )
        gold_label = "(CASE WHEN r < 0.85 THEN truth ELSE 'equal' END)"
        cur.execute(
            f"""
            WITH drawn AS (
                SELECT q.id AS query_id, q.gold_answer AS truth, u.id AS annotator_id, q.created_at,
                       random() AS r, random() AS u, random() < 0.5 AS swapped
                FROM labeling_query q CROSS JOIN accounts_user u
                WHERE q.project_id = %(project)s AND q.source = 'gold' AND u.username LIKE 'bench-annotator-%%'
            )
            INSERT INTO labeling_judgment (query_id, annotator_id, choice, swapped, time_spent_ms, client_id,
                                           created_at, exclusion_reason)
            SELECT query_id, annotator_id,
                   {_CHOICE_SQL.format(u="u", label=gold_label, swapped="swapped")},
                   swapped, 3000, gen_random_uuid(), created_at + make_interval(secs => 30), ''
            FROM drawn
            """,
            params,
        )
        # Repeats: 1 % of the ordinary judgments are asked again of the same annotator, mostly answered the same.
        cur.execute(
            """
            CREATE TEMP TABLE picked ON COMMIT DROP AS
            SELECT j.id AS judgment_id, j.query_id, j.annotator_id, j.choice, j.swapped, q.clip_a_id, q.clip_b_id,
                   q.created_at
            FROM labeling_judgment j JOIN labeling_query q ON q.id = j.query_id
            WHERE q.project_id = %(project)s AND q.source = 'random' AND random() < 0.01
            """,
            params,
        )
        cur.execute(
            """
            INSERT INTO labeling_query (project_id, clip_a_id, clip_b_id, source, priority, answers_wanted,
                                        answers_given, status, random_key, iteration, gold_answer, repeat_of_id,
                                        assigned_to_id, created_at)
            SELECT %(project)s, clip_a_id, clip_b_id, 'repeat', 0, 1, 1, 'complete', random(), 0, '', query_id,
                   annotator_id, created_at + interval '1 hour'
            FROM picked
            """,
            params,
        )
        cur.execute(
            """
            INSERT INTO labeling_judgment (query_id, annotator_id, choice, swapped, time_spent_ms, client_id,
                                           created_at, exclusion_reason)
            SELECT q.id, p.annotator_id,
                   CASE WHEN random() < 0.8 THEN p.choice
                        ELSE (ARRAY['left', 'right', 'equal'])[1 + floor(random() * 3)::int] END,
                   p.swapped, 2000, gen_random_uuid(), q.created_at, ''
            FROM picked p JOIN labeling_query q ON q.repeat_of_id = p.query_id AND q.assigned_to_id = p.annotator_id
            """
        )
        cur.execute(
            """
            UPDATE labeling_query q SET answers_given = c.n,
                   status = CASE WHEN c.n >= q.answers_wanted THEN 'complete' ELSE 'open' END
            FROM (SELECT query_id, count(*) AS n FROM labeling_judgment GROUP BY query_id) c
            WHERE c.query_id = q.id
            """
        )
        # A few revised answers (the judgment keeps the latest choice, the revision the history).
        cur.execute(
            """
            INSERT INTO labeling_judgmentrevision (judgment_id, previous_choice, new_choice, created_at)
            SELECT id, 'cant_tell', choice, created_at + interval '1 minute'
            FROM labeling_judgment WHERE id % 997 = 0
            """
        )
    keys = ["angle_sq", "angular_velocity_sq", "torque_sq"]
    annotators = list(User.objects.filter(username__startswith="bench-annotator-").order_by("id"))
    owner = User.objects.get(username="bench-researcher")
    # The researcher uses the admin too: staff, in the researchers' group (as accounts.services.user_create does).
    owner.is_staff = True
    owner.save(update_fields=["is_staff"])
    owner.groups.add(researchers_group())
    now = timezone.now()
    with transaction.atomic():
        RewardFactor.objects.bulk_create(
            [RewardFactor(project=project, key=key, label=key, direction=-1, position=i) for i, key in enumerate(keys)]
        )
        orders = [
            [["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]],
            [["angle_sq"], ["angular_velocity_sq", "torque_sq"]],
            [["angular_velocity_sq"], ["angle_sq"], ["torque_sq"]],
        ]
        FactorRanking.objects.bulk_create(
            [FactorRanking(project=project, annotator=a, groups=orders[i % 3]) for i, a in enumerate(annotators[:12])]
        )
        previous_run = previous_policy = None
        for number in range(1, 6):
            run = Run.objects.create(
                project=project, kind=RunKind.ITERATION, number=number, steps=[], state=RunState.DONE,
                created_by=owner, started_at=now, finished_at=now, previous=previous_run, labels_used=number * 1000,
            )  # fmt: skip
            prefs = PreferenceSet.objects.create(
                project=project, run=run, file=f"preferences/bench/{number}.parquet", sources="both",
                n_pairs=number * 10_000, checksum="0" * 64,
            )  # fmt: skip
            history = [
                {"epoch": e, "train_loss": 0.7 / (e + 1), "val_loss": 0.8 / (e + 1), "val_accuracy": 0.5 + e / 40}
                for e in range(16)
            ]
            model = RewardModel.objects.create(
                project=project, version=number, preference_set=prefs, run=run, status="ready", history=history,
                metrics={"val_accuracy": 0.9}, weights=f"reward_models/bench/{number}.safetensors",
            )  # fmt: skip
            previous_policy = PolicyCheckpoint.objects.create(
                project=project, run=run, reward_model=model, previous=previous_policy, algorithm="sac",
                timesteps=number * 20_000, model_file=f"policies/bench/{number}.zip",
                evaluation={"true_mean": -900 + 150 * number, "learned_mean": 10.0 * number},
            )  # fmt: skip
            Run.objects.filter(pk=run.pk).update(reward_model=model, preference_set=prefs)
            previous_run = run
        for i in range(20):
            Run.objects.create(
                project=project, kind=RunKind.RETRAIN if i % 2 else RunKind.RENDER_CLIPS, steps=[],
                state=RunState.DONE if i % 5 else RunState.FAILED, created_by=owner, finished_at=now,
            )  # fmt: skip
    connection.close()
    import psycopg

    seed_review_scores(db=args.db, server=args.server, seed=args.seed)
    with psycopg.connect(f"{args.server}/{args.db}", autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        row = conn.execute(
            "SELECT count(*), count(DISTINCT query_id) FROM labeling_judgment"
        ).fetchone()  # fmt: skip
    print(f"{row[0] if row else 0} judgments on {row[1] if row else 0} queries in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
