"""Time the researcher's pages at scale: dashboard and its fragments, quality report, admin lists, API lists.

Runs against the database that ``bench.scale.seed`` made (``heronry_bench_scale``), in-process through Django's
test client, logged in as the project's researcher (``bench-researcher``, staff). Each target runs in a child
process forked from a warmed-up parent, so its peak RSS is its own: ``rss+`` is the child's peak resident memory
above the parent's at the fork (what one request adds to an idle worker). Each child makes ``--repeats`` requests
with an empty per-process cache: ``cold`` is the first, ``warm`` the median of the others (equal when nothing is
cached). ``cpu`` is the Python process's CPU time (PostgreSQL's own CPU is not in it).

    .venv/bin/python -m bench.scale.run [--only admin] [--json var/bench-scale.jsonl] [--label before]

Add a dashboard section or page to ``PAGES`` (a URL name, its kwargs as a function of the project, and whether
it is an htmx fragment); every registered admin model and the API list endpoints are discovered/listed below.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Page:
    name: str  # URL name
    htmx: bool = False  # sent with HX-Request, as the dashboard's polling and tabs do
    query: str = ""
    # Further URL kwargs beside the slug, read from the seeded project: "policy", "run", "reward_model".
    ids: tuple[str, ...] = ()
    as_annotator: bool = False  # the annotator's pages (label, history), as an annotator of the project
    # Fill the caches a worker's tasks fill (the quality report, the review's order) before timing: the page as
    # it is once those have run, rather than its "computing…" state.
    tasks_done: bool = False


# Every dashboard section, page and fragment, the review and members pages, and the annotator's pages.
PAGES: list[Page] = [
    Page("project-detail"),
    Page("project-detail", htmx=True),
    Page("project-detail", tasks_done=True),  # the label counts once the worker has counted them
    Page("project-data"),
    Page("project-data", tasks_done=True),
    Page("project-models"),
    Page("project-loop"),
    Page("project-loop", htmx=True),
    Page("project-quality"),
    Page("project-quality", htmx=True),
    Page("project-quality", tasks_done=True),
    Page("project-clips"),
    Page("project-clips", htmx=True, query="?judged=yes"),
    Page("project-clips", htmx=True, query="?judged=no"),
    Page("project-clips", htmx=True, query="?source=policy&rendered=yes&iteration=0"),
    Page("project-policy", ids=("policy",)),
    Page("project-run-lineage", ids=("run",)),
    Page("project-reward-model", ids=("reward_model",)),
    Page("project-review"),
    Page("project-review", tasks_done=True),
    Page("project-review", query="?page=1000", tasks_done=True),
    # Deeper than the first 20 000 pairs the order used to keep (page 1000 of 20): page 5000 and the last page.
    Page("project-review", query="?page=500", tasks_done=True),
    Page("project-review", query="?page=5000", tasks_done=True),
    Page("project-review", query="?page=25005", tasks_done=True),
    Page("project-members"),
    Page("project-runs"),
    Page("project-runs", htmx=True),
    Page("label", as_annotator=True),
    Page("history", as_annotator=True),
]
# API list endpoints that take the project's slug (with a query string), then those that take nothing.
API_PROJECT_LISTS = [
    ("api-project-detail", ""),
    ("api-clips", ""),
    ("api-rankings", ""),
    ("api-webhooks", ""),
    ("api-reward-models", ""),
    ("api-runs", ""),
    ("api-review", ""),
    ("api-members", ""),
    ("api-audit", ""),
    ("api-export-jobs", ""),
    ("api-queries", "?ids={query_ids}"),
]
API_LISTS = ["api-projects", "api-tokens"]


def _setup(db: str, server: str) -> None:
    os.environ["DATABASE_URL"] = f"{server}/{db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.pop("CACHE_URL", None)  # a per-process cache, so each child starts cold
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
    import logging

    import django

    django.setup()
    logging.getLogger("django.request").setLevel(logging.ERROR)  # the 403s of admin lists a researcher can't open


def _status_kib(field: str) -> int:
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in KiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def _measure(name: str, call: Callable[[], object], repeats: int, prepare: Callable[[], object] | None = None) -> dict:
    """Fork, run ``call`` ``repeats`` times in the child, return its timings and peak RSS."""
    from django.db import connections

    connections.close_all()  # the child opens its own connection
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        code = 0
        try:
            from django.core.cache import cache

            cache.clear()
            if prepare is not None:
                prepare()
            base = _status_kib("VmRSS")
            walls, cpus, statuses = [], [], []
            for _ in range(repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                result = call()
                walls.append(time.perf_counter() - t0)
                cpus.append(time.process_time() - c0)
                statuses.append(getattr(result, "status_code", 200))
            peak = _status_kib("VmHWM")
            payload = {"walls": walls, "cpus": cpus, "statuses": statuses, "rss_plus_kib": peak - base}
        except BaseException as error:
            payload, code = {"error": repr(error)}, 1
        with os.fdopen(write, "w") as out:
            out.write(json.dumps(payload))
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as inp:
        payload = json.loads(inp.read() or "{}")
    os.waitpid(pid, 0)
    row: dict = {"target": name}
    if "error" in payload:
        row["error"] = payload["error"]
        return row
    walls, cpus = payload["walls"], payload["cpus"]
    row.update(
        rss_plus_mib=round(payload["rss_plus_kib"] / 1024, 1),
        cold_s=round(walls[0], 3),
        warm_s=round(statistics.median(walls[1:]) if len(walls) > 1 else walls[0], 3),
        cpu_cold_s=round(cpus[0], 3),
        cpu_warm_s=round(statistics.median(cpus[1:]) if len(cpus) > 1 else cpus[0], 3),
        status=sorted(set(payload["statuses"])),
    )
    return row


def _targets(only: str | None) -> list[tuple[str, Callable[[], object]]]:
    from django.contrib import admin
    from django.test import Client
    from django.urls import reverse

    from accounts.models import User
    from labeling import selectors
    from labeling.models import Project

    project = Project.objects.get(slug="bench")
    researcher = User.objects.get(username="bench-researcher")
    if not researcher.is_staff:  # seeds made before the admin was part of the benchmark
        from accounts.services import researchers_group

        User.objects.filter(pk=researcher.pk).update(is_staff=True)
        researcher.groups.add(researchers_group())
    client = Client()
    client.force_login(researcher)
    annotator_client = Client()
    annotator_client.force_login(User.objects.get(username="bench-annotator-000"))

    from labeling.models import Query
    from trainer.models import PolicyCheckpoint, RewardModel, Run, RunKind

    ids = {
        "policy": {"policy_id": PolicyCheckpoint.objects.filter(project=project).latest("created_at").pk},
        "run": {"run_id": Run.objects.filter(project=project, kind=RunKind.ITERATION).latest("number").pk},
        "reward_model": {"model_id": RewardModel.objects.filter(project=project).latest("version").pk},
    }
    # 100 answered queries, as a program waiting for its pairs asks about them.
    query_ids = ",".join(
        str(pk) for pk in Query.objects.filter(project=project, answers_given__gt=0).values_list("pk", flat=True)[:100]
    )

    def get(url: str, htmx: bool = False, as_annotator: bool = False) -> Callable[[], object]:
        headers = {"HX-Request": "true"} if htmx else {}
        client_for = annotator_client if as_annotator else client

        def call() -> object:
            response = client_for.get(url, headers=headers)
            if response.status_code not in (200, 286):  # 286: htmx "stop polling", with the fragment
                raise RuntimeError(f"HTTP {response.status_code}")
            if getattr(response, "streaming", False):
                for _ in response.streaming_content:
                    pass
            else:
                response.content  # noqa: B018  (render it)
            return response

        return call

    targets: list[tuple[str, Callable[[], object]]] = []
    if only in (None, "dashboard"):
        for page in PAGES:
            kwargs = {"slug": project.slug}
            for which in page.ids:
                kwargs |= ids[which]
            url = reverse(page.name, kwargs=kwargs) + page.query
            label = f"page {page.name}{page.query}{' (htmx)' if page.htmx else ''}"
            label += " [tasks done]" if page.tasks_done else ""
            targets.append((label, get(url, page.htmx, page.as_annotator)))
        targets.append(("quality_report()", lambda: selectors.quality_report(project)))
    if only in (None, "admin"):
        from django.test import RequestFactory

        request = RequestFactory().get("/")
        request.user = researcher
        for model, model_admin in admin.site._registry.items():
            opts = model._meta
            url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
            # The last page the change list offers (its own paginator, untimed): what "last" in the UI asks for.
            queryset = model_admin.get_queryset(request)
            rows = queryset.count()
            paginator = model_admin.get_paginator(request, queryset.order_by("-pk"), model_admin.list_per_page)
            last = max(paginator.num_pages - 1, 0)
            targets.append((f"admin {opts.label} p1 ({rows} rows)", get(url)))
            if last > 0:
                targets.append((f"admin {opts.label} last (p={last})", get(f"{url}?p={last}")))
    if only in (None, "api"):
        for name, query in API_PROJECT_LISTS:
            url = reverse(name, kwargs={"slug": project.slug}) + query.format(query_ids=query_ids)
            targets.append((f"api {name}{query[:5]}", get(url)))
        for name in API_LISTS:
            targets.append((f"api {name}", get(reverse(name))))
    return targets


def _tasks_done() -> None:
    """What the refresh tasks leave in the cache, untimed: the quality report (and with it the label tallies) and
    the review's order and counts."""
    from labeling import selectors
    from labeling.models import Project
    from trainer import review

    project = Project.objects.get(slug="bench")
    selectors.quality_report_refresh(project.pk)  # the label tallies with it
    review.review_summary_refresh(project.pk)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", default="heronry_bench_scale")
    ap.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["dashboard", "admin", "api"])
    ap.add_argument("--match", default="", help="only targets whose name contains this")
    ap.add_argument("--label", default="", help="recorded with each row (e.g. before/after)")
    ap.add_argument("--json", type=Path, help="append one JSON line per target")
    args = ap.parse_args(argv)
    _setup(args.db, args.server)
    from django.db import connection

    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM labeling_judgment")
        (n_judgments,) = cur.fetchone()
    targets = [(name, call) for name, call in _targets(args.only) if args.match in name]
    print(f"{n_judgments} judgments; {len(targets)} targets; {args.repeats} requests each", flush=True)
    print("| target | cold s | warm s | cpu cold s | cpu warm s | rss+ MiB |\n|---|---:|---:|---:|---:|---:|")
    for name, call in targets:
        try:  # once in this process, untimed: imports, templates and URL resolving are not what is measured
            call()
        except Exception as error:
            print(f"| {name} | skipped: {error!r} | | | | |", flush=True)
            continue
        row = _measure(name, call, args.repeats, _tasks_done if name.endswith("[tasks done]") else None)
        row.update(label=args.label, judgments=n_judgments)
        if "error" in row:
            print(f"| {name} | error: {row['error'][:120]} | | | | |", flush=True)
        else:
            print(
                f"| {name} | {row['cold_s']:.3f} | {row['warm_s']:.3f} | {row['cpu_cold_s']:.3f} | "
                f"{row['cpu_warm_s']:.3f} | {row['rss_plus_mib']} |",
                flush=True,
            )
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            with args.json.open("a") as out:
                out.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
