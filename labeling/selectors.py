"""Reads for labeling: what a user may see, and the rows behind pages, the API and exports."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.db.models import Case, Count, Q, QuerySet, Sum, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User

from .errors import NotFound
from .models import (
    AuditEntry,
    Choice,
    Clip,
    Invite,
    Judgment,
    JudgmentRevision,
    Lease,
    Membership,
    Project,
    ProjectRole,
    Query,
    QuerySource,
    QueryStatus,
)

logger = logging.getLogger(__name__)


def projects_for_user(user: User) -> QuerySet[Project]:
    """Projects the user belongs to. Superusers see every project."""
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def project_for_member(*, slug: str, user: User) -> Project:
    """The project, if the user belongs to it; otherwise NotFound (outsiders don't learn that it exists)."""
    project = projects_for_user(user).filter(slug=slug).first()
    if project is None:
        raise NotFound("no such project")
    return project


def project_id_for_token(user: User, project: str) -> int | None:
    """A project the user belongs to, named by slug or id, for an API token's scope; None if none."""
    projects = projects_for_user(user)
    found = projects.filter(slug=project).values_list("pk", flat=True).first()
    if found is None and project.isdigit() and len(project) <= 18:
        found = projects.filter(pk=int(project)).values_list("pk", flat=True).first()
    return found


def project_role(*, project: Project, user: User) -> str | None:
    if user.is_superuser:
        return ProjectRole.RESEARCHER
    return Membership.objects.filter(project=project, user=user).values_list("role", flat=True).first()


def is_project_researcher(*, project: Project, user: User) -> bool:
    return project_role(project=project, user=user) == ProjectRole.RESEARCHER


def project_progress(project: Project) -> dict[str, Any]:
    # Judgments as the sum of the queries' answer counters (kept by the only paths that add or take back a
    # judgment, assignment.judgment_submit and revisions.judgment_undo), in the same pass over the queries: counting
    # the judgment rows themselves joins a million of them to their queries on every dashboard poll.
    counts = Query.objects.filter(project=project).aggregate(
        total=Count("id"),
        open=Count("id", filter=Q(status=QueryStatus.OPEN)),
        complete=Count("id", filter=Q(status=QueryStatus.COMPLETE)),
        judgments=Coalesce(Sum("answers_given"), 0),
    )
    counts["clips"] = Clip.objects.filter(project=project).count()
    counts["percent"] = round(100 * counts["complete"] / counts["total"]) if counts["total"] else 0
    return counts


@dataclass(frozen=True)
class LabelCounts:
    """The one definition of "how many labels", shown alike on the label page, the dashboard and the home page.

    ``answered`` counts every answer, "can't tell" included (it is an answer: the pair was looked at and the
    annotator said so); ``cant_tell`` is the part of it that could not decide; ``skipped`` counts pairs passed
    over without an answer (not in ``answered``). ``for_budget`` counts the answers to ordinary (random or active)
    questions, the ones a pairwise iteration's label budget waits for (``trainer.loop.pairwise_labels``).
    """

    answered: int = 0
    cant_tell: int = 0
    skipped: int = 0
    for_budget: int = 0
    # A big project's tallies are being counted by a task (a cold cache): no numbers yet, pages say "counting…".
    counting: bool = False

    @property
    def decided(self) -> int:
        return self.answered - self.cant_tell


def _label_aggregates() -> dict[str, Count]:
    return {
        "answered": Count("id"),
        "cant_tell": Count("id", filter=Q(choice=Choice.CANT_TELL)),
        "for_budget": Count("id", filter=Q(query__source__in=[QuerySource.RANDOM, QuerySource.ACTIVE])),
    }


# Per-annotator tallies [answered, cant_tell, for_budget] of a project's judgments, cached under the judgments
# stamp they were counted at and brought up to date by counting only what came since (see _label_tallies).
LABEL_TALLIES_CACHE_SECONDS = 24 * 3600
# Up to this many answers missing tallies are counted in the request (tens of milliseconds); above, by a task
# (counting a million judgments takes seconds), and pages say "counting…" meanwhile.
LABEL_TALLIES_INLINE_ANSWERS = 50_000
# How long a queued count keeps others from queueing another (a lost task is queued again after this).
LABEL_TALLIES_COUNTING_SECONDS = 300


def _label_tallies_key(project_id: int) -> str:
    return f"label-tallies:{project_id}"


def label_counts_forget(project_id: int) -> None:
    """Drop the cached label tallies (after an undo: a deleted judgment leaves no newer id behind to count)."""
    from django.core.cache import cache

    cache.delete(_label_tallies_key(project_id))


def _tally_rows(judgments: QuerySet[Judgment]) -> dict[int, list[int]]:
    rows: Any = judgments.values("annotator_id").annotate(**_label_aggregates()).order_by()  # stubs miss annotate keys
    return {row["annotator_id"]: [row["answered"], row["cant_tell"], row["for_budget"]] for row in rows}


def _label_tallies(project: Project, *, count_all: bool = True, in_request: bool = True) -> dict[int, list[int]] | None:
    """The project's answers per annotator id: [answered, cant_tell, for_budget], the one source of every label count.

    Counting a million judgments takes a second or more, so the tallies are cached under the stamp of the newest
    judgment and revision (two index lookups) and kept current incrementally: new judgments are the ids above the
    cached one (an index range), and each new revision moves one answer in or out of "can't tell". Only a missing
    or forgotten entry (a cold cache, an undo) counts everything again: in the request while the project has at most
    ``LABEL_TALLIES_INLINE_ANSWERS`` answers, else by a task (:func:`label_tallies_refresh`; one at a time per
    project) while this returns None ("counting…"). ``count_all=False``: None instead of counting or queueing;
    ``in_request=False`` (the task itself): count here whatever the size."""
    from django.core.cache import cache

    newest, revised = _judgments_stamp(project)
    key = _label_tallies_key(project.pk)
    cached = cache.get(key)
    if cached is not None and cached[0] == (newest, revised):
        return cached[1]
    judgments = Judgment.objects.filter(query__project=project)
    if cached is None or (cached[0][0] or 0) > (newest or 0):
        if not count_all:
            return None
        if in_request and has_more_answers_than(project, LABEL_TALLIES_INLINE_ANSWERS):
            return _label_tallies_queue(project, stamp=(newest, revised))
        tallies = _tally_rows(judgments.filter(pk__lte=newest or 0))
    else:
        (old_newest, old_revised), tallies = cached
        tallies = {annotator: list(tally) for annotator, tally in tallies.items()}
        for annotator, (answered, cant_tell, for_budget) in _tally_rows(
            judgments.filter(pk__gt=old_newest or 0, pk__lte=newest or 0)
        ).items():
            tally = tallies.setdefault(annotator, [0, 0, 0])
            tally[0], tally[1], tally[2] = tally[0] + answered, tally[1] + cant_tell, tally[2] + for_budget
        # Revisions of answers counted before (newer answers were counted with their latest choice above).
        moved = (
            JudgmentRevision.objects.filter(
                judgment__query__project=project,
                pk__gt=old_revised or 0,
                pk__lte=revised or 0,
                judgment_id__lte=old_newest or 0,
            )
            .values_list("judgment__annotator_id", "previous_choice", "new_choice")
            .iterator()
        )
        for annotator, previous, new in moved:
            tally = tallies.setdefault(annotator, [0, 0, 0])
            tally[1] += (new == Choice.CANT_TELL) - (previous == Choice.CANT_TELL)
    cache.set(key, ((newest, revised), tallies), LABEL_TALLIES_CACHE_SECONDS)
    return tallies


def _label_tallies_queue(project: Project, *, stamp: tuple[int | None, int | None]) -> dict[int, list[int]] | None:
    """Queue the count of a big project's tallies (unless one is queued already); the tallies if it ran in-process
    (eager tasks, as in tests), else None: the pages say "counting…" until the worker has cached them."""
    from django.core.cache import cache

    from . import events, services

    key = _label_tallies_key(project.pk)
    if cache.add(f"{key}:counting", True, LABEL_TALLIES_COUNTING_SECONDS):
        try:
            services.send_task_by_name(events.REFRESH_LABEL_TALLIES, project.pk)
        except Exception:  # the broker is down: "counting…" now, try again on a later view
            logger.warning("could not queue the label count of project %s", project.pk, exc_info=True)
            cache.delete(f"{key}:counting")
    refreshed = cache.get(key)
    if refreshed is not None and refreshed[0] == stamp:
        return refreshed[1]
    return None


def label_tallies_refresh(project_id: int) -> None:
    """Count a project's label tallies into the cache (the task behind "counting…")."""
    from django.core.cache import cache

    try:
        project = Project.objects.filter(pk=project_id).first()
        if project is not None:
            _label_tallies(project, in_request=False)
    finally:
        cache.delete(f"{_label_tallies_key(project_id)}:counting")


def has_more_answers_than(project: Project, n: int) -> bool:
    """Whether the project has more than ``n`` judgments: reads at most n + 1 index entries, never counts them all
    (what decides if a report is cheap enough to compute in the request)."""
    return Judgment.objects.filter(query__project=project).order_by()[n : n + 1].exists()


def _skips(project: Project) -> QuerySet[Lease]:
    return Lease.objects.filter(query__project=project, skipped=True)


def label_counts(*, project: Project, annotator: User | None = None) -> LabelCounts:
    """The project's (or one annotator's) label counts, from the cached per-annotator tallies."""
    if annotator is not None:
        # The label page asks for one annotator's: without the project's tallies at hand, their own answers (an
        # index range) rather than counting everyone's. The same aggregates, so the same numbers.
        tallies = _label_tallies(project, count_all=False)
        if tallies is None:
            tallies = _tally_rows(Judgment.objects.filter(query__project=project, annotator=annotator))
        answered, cant_tell, for_budget = tallies.get(annotator.pk, (0, 0, 0))
        skipped = _skips(project).filter(annotator=annotator).count()
        return LabelCounts(answered=answered, cant_tell=cant_tell, skipped=skipped, for_budget=for_budget)
    tallies = _label_tallies(project)
    if tallies is None:
        return LabelCounts(counting=True)
    return LabelCounts(
        answered=sum(t[0] for t in tallies.values()),
        cant_tell=sum(t[1] for t in tallies.values()),
        skipped=_skips(project).count(),
        for_budget=sum(t[2] for t in tallies.values()),
    )


def label_counts_by_annotator(project: Project) -> dict[str, LabelCounts] | None:
    """Label counts per annotator (by username): the cached tallies, and one grouped query for skips; None while a
    big project's tallies are being counted (see :func:`label_counts`)."""
    tallies = _label_tallies(project)
    if tallies is None:
        return None
    skips = dict(
        _skips(project).values("annotator_id").annotate(n=Count("id")).order_by().values_list("annotator_id", "n")
    )
    names = dict(User.objects.filter(pk__in=set(tallies) | set(skips)).values_list("pk", "username"))
    counts = {}
    for annotator_id, name in names.items():
        answered, cant_tell, for_budget = tallies.get(annotator_id, (0, 0, 0))
        counts[name] = LabelCounts(answered, cant_tell, skips.get(annotator_id, 0), for_budget)
    return counts


def annotator_progress(*, project: Project, annotator: User) -> dict[str, int]:
    """The annotator's answers in the project, and in the current batch: "n of N answered, M remaining".

    The batch is the ordinary (random or active) pairs of the latest iteration that has any — what one turn of
    the loop asks, or the first clips' pairs. Answered: this annotator's answers to them; remaining: the batch's
    open pairs they have neither answered nor skipped (others may still take some, so N can shrink).
    """
    from django.db.models import Exists, F, Max, OuterRef

    from .models import Lease, QuerySource

    ordinary = Query.objects.filter(project=project, source__in=[QuerySource.RANDOM, QuerySource.ACTIVE])
    counts = label_counts(project=project, annotator=annotator)
    total = {"judgments": counts.answered, "cant_tell": counts.cant_tell, "skipped": counts.skipped}
    iteration = ordinary.aggregate(latest=Max("iteration"))["latest"]
    if iteration is None:
        return {**total, "batch_answered": 0, "batch_remaining": 0, "batch_total": 0, "batch_percent": 0}
    batch = ordinary.filter(iteration=iteration)
    answered = Judgment.objects.filter(query__in=batch, annotator=annotator).count()
    remaining = (
        batch.filter(status=QueryStatus.OPEN, answers_given__lt=F("answers_wanted"))
        .exclude(Exists(Judgment.objects.filter(query=OuterRef("pk"), annotator=annotator)))
        .exclude(Exists(Lease.objects.filter(query=OuterRef("pk"), annotator=annotator, skipped=True)))
        .count()
    )
    size = answered + remaining
    return {
        **total,
        "batch_answered": answered,
        "batch_remaining": remaining,
        "batch_total": size,
        "batch_percent": round(100 * answered / size) if size else 100,
    }


def clips_for_project(project: Project, *, iteration: int | None = None, run: int | None = None) -> QuerySet[Clip]:
    """The project's clips by id; ``run``: only those cut from the rollouts that run made (an upload's clips)."""
    clips = Clip.objects.filter(project=project).order_by("id")
    if iteration is not None:
        clips = clips.filter(iteration=iteration)
    if run is not None:
        clips = clips.filter(rollout__run=run)
    return clips


def factor_extremes(project: Project) -> dict[str, dict[str, Clip | None]]:
    """For each factor, the clips where its total is highest and lowest (so people see what a factor means)."""
    from django.db.models import FloatField
    from django.db.models.fields.json import KT
    from django.db.models.functions import Cast

    # Distinct examples: one clip is often the extreme of several factors (the calmest clip is lowest on every
    # cost), and the same video three times explains nothing. Each example takes the most extreme clip not shown
    # yet, from the few most extreme ones, so it still shows the factor at (nearly) its extreme.
    candidates = 8
    shown: set[int] = set()
    extremes: dict[str, dict[str, Clip | None]] = {}
    for key in project.factors.order_by("position", "id").values_list("key", flat=True):
        ordered = (
            Clip.objects.filter(project=project)
            .annotate(value=Cast(KT(f"factor_totals__{key}"), FloatField()))
            .filter(value__isnull=False)
        )
        extremes[key] = {}
        for which, order in (("highest", "-value"), ("lowest", "value")):
            pool = list(ordered.order_by(order, "id")[:candidates])
            pick = next((clip for clip in pool if clip.pk not in shown), pool[0] if pool else None)
            if pick is not None:
                shown.add(pick.pk)
            extremes[key][which] = pick
    return extremes


def factor_summaries(project: Project) -> dict[str, dict[str, float | int]]:
    """For each factor, how its clip totals spread: count, lowest, median and highest.

    What the ranking page shows in place of example videos when the project's clips have none (uploaded or
    imported data without frames): the numbers still say what a factor means."""
    import statistics

    values: dict[str, list[float]] = {key: [] for key in project.factors.values_list("key", flat=True)}
    for totals in Clip.objects.filter(project=project).values_list("factor_totals", flat=True).iterator():
        for key, column in values.items():
            value = (totals or {}).get(key)
            if isinstance(value, int | float):
                column.append(float(value))
    return {
        key: {"n": len(column), "min": min(column), "median": statistics.median(column), "max": max(column)}
        for key, column in values.items()
        if column
    }


def history_rows(
    *, project: Project, annotator: User, judgment_ids: list[int] | None = None, limit: int = 200
) -> list[dict]:
    """The annotator's judgments, newest first, with the clips in the order they were shown."""
    judgments = (
        Judgment.objects.filter(query__project=project, annotator=annotator)
        .select_related("query__clip_a", "query__clip_b")
        .order_by("-created_at", "-id")
    )
    if judgment_ids is not None:
        judgments = judgments.filter(pk__in=judgment_ids)
    page = list(judgments[:limit])
    # Revisions counted for the page's answers only (an annotation would group all of the annotator's answers).
    revisions = dict(
        JudgmentRevision.objects.filter(judgment__in=[j.pk for j in page])
        .values("judgment_id")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("judgment_id", "n")
    )
    rows = []
    for judgment in page:
        left, right = judgment.shown_clips()
        rows.append({"judgment": judgment, "left": left, "right": right, "revisions": revisions.get(judgment.pk, 0)})
    return rows


# A judgment's canonical label in SQL, as Judgment.canonical_label computes it: "a" when clip_a was preferred (left
# and not swapped, or right and swapped), "b" the other way, "equal", and NULL for "can't tell".
_LABEL_SQL = """
    CASE j.choice WHEN 'equal' THEN 'equal'
                  WHEN 'left' THEN (CASE WHEN j.swapped THEN 'b' ELSE 'a' END)
                  WHEN 'right' THEN (CASE WHEN j.swapped THEN 'a' ELSE 'b' END) END
"""

# One pass over the project's judgments: each answer with its query's label counts (a window over the query), then
# grouped, so a million judgments come back as a few thousand rows. Gold answers keep their expected label;
# "ordinary" marks the random/active queries the project-wide agreement coefficients are about.
_ANSWER_COUNTS_SQL = """
    SELECT annotator_id, label, ordinary, gold_answer, na, nb, ne, COUNT(*)
    FROM (
        SELECT annotator_id, label, ordinary, gold_answer,
               SUM(CASE WHEN label = 'a' THEN 1 ELSE 0 END) OVER w AS na,
               SUM(CASE WHEN label = 'b' THEN 1 ELSE 0 END) OVER w AS nb,
               SUM(CASE WHEN label = 'equal' THEN 1 ELSE 0 END) OVER w AS ne
        FROM (
            SELECT j.annotator_id, j.query_id, {label} AS label,
                   CASE WHEN q.source IN ('random', 'active') THEN 1 ELSE 0 END AS ordinary,
                   CASE WHEN q.source = 'gold' THEN q.gold_answer END AS gold_answer
            FROM {judgment} j JOIN {query} q ON q.id = j.query_id
            WHERE q.project_id = %s
        ) answers
        WINDOW w AS (PARTITION BY query_id)
    ) counted
    GROUP BY annotator_id, label, ordinary, gold_answer, na, nb, ne
"""

# Repeat pairs: the annotator's answer to a repeat query next to their answer to the query it repeats.
_REPEAT_PAIRS_SQL = """
    SELECT j.annotator_id, {first} AS first, {label} AS again, COUNT(*)
    FROM {judgment} j JOIN {query} q ON q.id = j.query_id
    JOIN {judgment} o ON o.query_id = q.repeat_of_id AND o.annotator_id = j.annotator_id
    WHERE q.project_id = %s AND q.repeat_of_id IS NOT NULL
    GROUP BY j.annotator_id, first, again
"""

# A report is kept a day (recomputed in the background when out of date) and refreshed at least every ten minutes.
QUALITY_REPORT_CACHE_SECONDS = 24 * 3600
QUALITY_REPORT_REFRESH_SECONDS = 600
# Up to this many answers a missing report is computed in the request (well under a second); above, by a task.
QUALITY_REPORT_INLINE_ANSWERS = 50_000


def _quality_key(project_id: int) -> str:
    return f"quality-report:{project_id}"


def _judgments_stamp(project: Project) -> tuple[int | None, int | None]:
    """What the quality report depends on, read from two indexes in a few milliseconds: the project's newest
    judgment (a new answer) and newest revision (a changed answer). Counting the judgments instead would read a
    million rows; the one other change, an undo, forgets the report (:func:`quality_report_forget`)."""

    newest = Judgment.objects.filter(query__project=project).order_by("-id").values_list("id", flat=True).first()
    revised = (
        JudgmentRevision.objects.filter(judgment__query__project=project)
        .order_by("-id")
        .values_list("id", flat=True)
        .first()
    )
    return newest, revised


def judgments_stamp(project: Project) -> tuple[int | None, int | None]:
    """The newest judgment and revision ids of the project: what caches of judgment aggregates are stamped with."""
    return _judgments_stamp(project)


def _review_version_key(project_id: int) -> str:
    return f"review-version:{project_id}"


def review_version(project_id: int) -> int:
    """A counter of the review actions on the project's answers (marked wrong or not, sent back), for the stamp
    of trainer.review's cached summary: those change no judgment id."""
    from django.core.cache import cache

    return cache.get(_review_version_key(project_id), 0)


def review_changed(project_id: int) -> None:
    from django.core.cache import cache

    cache.set(_review_version_key(project_id), review_version(project_id) + 1, None)


def quality_report_forget(project_id: int) -> None:
    """Mark the cached quality report out of date (after an undo, which deletes a judgment: no newer id to see)."""
    from django.core.cache import cache

    cached = cache.get(_quality_key(project_id))
    if cached is not None:
        cache.set(_quality_key(project_id), (None, *cached[1:]), QUALITY_REPORT_CACHE_SECONDS)


def quality_report(project: Project) -> dict[str, Any]:
    """The cached quality report (:func:`quality_report_cached`) with the review's annotator flags beside each row.

    Flags change without any judgment changing, so they are read fresh (one small query), never cached."""
    report = quality_report_cached(project)
    flags = {
        m.user.username: m
        for m in Membership.objects.filter(project=project, flagged_at__isnull=False).select_related("user")
    }
    return {**report, "rows": [{**row, "flag": flags.get(row["row"].annotator)} for row in report["rows"]]}


def quality_report_cached(project: Project) -> dict[str, Any]:
    """Per-annotator reliability (gold accuracy, self-consistency, agreement) and the project's α and κ.

    At a million judgments the report takes seconds to compute, so it is cached per project with a stamp of the
    judgments it was computed from (:func:`_judgments_stamp`). An up-to-date report is returned as it is. When
    the stamp has moved (new or changed answers) or the report is older than ``QUALITY_REPORT_REFRESH_SECONDS``
    (changes the stamp can't see, such as judgments deleted with their query), the last report is shown while a
    task recomputes it (one at a time per project; in-process where tasks run eagerly, as in tests). A project
    without any report computes it in the request only while it has at most ``QUALITY_REPORT_INLINE_ANSWERS``
    answers (so does every out-of-date one when the cache is per-process memory, no ``CACHE_URL``: the worker
    could not hand its result to the web process); a bigger one gets ``computing`` (no rows) while the task runs.
    ``computed_at``, ``stale`` and ``computing`` say which one is shown.
    """
    import time

    from django.core.cache import cache, caches
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.locmem import LocMemCache

    from . import events, services

    stamp = _judgments_stamp(project)
    cached = cache.get(_quality_key(project.pk))
    if cached is not None:
        cached_stamp, computed_at, report = cached
        if cached_stamp == stamp and time.time() - computed_at < QUALITY_REPORT_REFRESH_SECONDS:
            return report
    # Computing in the request is fine while it is cheap, and the only way with a per-process cache (a worker's
    # result would stay in its own memory); a big project's report is always left to the task.
    local = isinstance(caches["default"], LocMemCache | DummyCache)
    if (cached is None or local) and not has_more_answers_than(project, QUALITY_REPORT_INLINE_ANSWERS):
        return quality_report_refresh(project.pk, stamp=stamp)
    if cache.add(f"{_quality_key(project.pk)}:refreshing", True, QUALITY_REPORT_REFRESH_SECONDS):
        try:
            services.send_task_by_name(events.REFRESH_QUALITY_REPORT, project.pk)
        except Exception:  # the broker is down: show the last report, try again on a later view
            logger.warning("could not queue the quality report of project %s", project.pk, exc_info=True)
            cache.delete(f"{_quality_key(project.pk)}:refreshing")
        refreshed = cache.get(_quality_key(project.pk))
        if refreshed is not None and refreshed[0] == stamp:  # the task ran in-process (eager)
            return refreshed[2]
    if cached is None:
        # Nothing to show yet: the page says "computing" and shows the label counts, which are cheap.
        return {"rows": [], "alpha": None, "kappa": None, "n_answers": None, "computed_at": None, "stale": True,
                "computing": True}  # fmt: skip
    return {**cached[2], "stale": True}


def quality_report_refresh(project_id: int, *, stamp: tuple[int | None, int | None] | None = None) -> dict[str, Any]:
    """Compute a project's quality report and cache it under the stamp read before computing (an answer given
    meanwhile moves the stamp, so the next view refreshes again)."""
    import time

    from django.core.cache import cache

    project = Project.objects.get(pk=project_id)
    stamp = stamp if stamp is not None else _judgments_stamp(project)
    try:
        report = {**quality_report_compute(project), "computed_at": time.time(), "stale": False}
        cache.set(_quality_key(project_id), (stamp, report["computed_at"], report), QUALITY_REPORT_CACHE_SECONDS)
        # The worker fills the label tallies too, so no page view has to count them.
        _label_tallies(project, in_request=False)
    finally:
        cache.delete(f"{_quality_key(project_id)}:refreshing")
    return report


def quality_report_compute(project: Project) -> dict[str, Any]:
    """The quality report from SQL aggregates: the statistics (labeling.quality) get grouped counts, never rows."""
    from collections import Counter

    from django.db import connection

    from . import quality

    tables = {"judgment": Judgment._meta.db_table, "query": Query._meta.db_table, "label": _LABEL_SQL}
    with connection.cursor() as cursor:
        cursor.execute(_ANSWER_COUNTS_SQL.format(**tables), [project.pk])
        rows = cursor.fetchall()
        cursor.execute(_REPEAT_PAIRS_SQL.format(**tables, first=_LABEL_SQL.replace("j.", "o.")), [project.pk])
        repeat_rows = cursor.fetchall()
    names = dict(User.objects.filter(pk__in={row[0] for row in rows}).values_list("pk", "username"))
    tallies: dict[str, list[int]] = {}
    gold, agreement = [], []
    ordinary_answers: Counter[tuple[int, int, int]] = Counter()
    for annotator_id, label, ordinary, gold_answer, na, nb, ne, n in rows:
        name = names[annotator_id]
        tally = tallies.setdefault(name, [0, 0])
        tally[label is None] += n
        label_counts = (int(na), int(nb), int(ne))
        if gold_answer is not None:
            gold.append((name, label or quality.CANT_TELL, gold_answer, n))
        if label is not None:
            agreement.append((name, label, label_counts, n))
            if ordinary:
                ordinary_answers[label_counts] += n
    # Each ordinary query with label counts v was counted once per answer: sum(v) times.
    histogram = [(counts, n // sum(counts)) for counts, n in ordinary_answers.items()]
    table = [counts for counts, _ in histogram] or [(0, 0, 0)]
    weights = [n for _, n in histogram] or [0]
    report_rows = quality.annotator_report_from_counts(
        answers={name: (answered, cant_tell) for name, (answered, cant_tell) in tallies.items()},
        gold=gold,
        repeats=[
            (names[a], first or quality.CANT_TELL, again or quality.CANT_TELL, True, n)
            for a, first, again, n in repeat_rows
        ],
        agreement=agreement,
    )
    return {
        "rows": [{"row": row, "scores": [row.gold, row.self_consistency, row.agreement]} for row in report_rows],
        "alpha": quality.krippendorff_alpha_from_counts(table, weights),
        "kappa": quality.fleiss_kappa_from_counts(table, weights),
        "n_answers": sum(sum(tally) for tally in tallies.values()),
    }


def next_clips_preview(*, project: Project, annotator: User, exclude_query_id: int) -> list[Clip]:
    """The clips of the pair this annotator will most likely see next, so the page can preload their videos.

    A read without locks or leases: if someone else takes that pair first, the preload was merely wasted.
    """
    from django.db.models import Exists, OuterRef

    query = (
        servable_queries(project)
        .exclude(pk=exclude_query_id)
        .exclude(Exists(Judgment.objects.filter(query=OuterRef("pk"), annotator=annotator)))
        .select_related("clip_a", "clip_b")
        .order_by("-priority", "random_key")
        .first()
    )
    return [query.clip_a, query.clip_b] if query is not None else []


def servable_queries(project: Project) -> QuerySet[Query]:
    """Open ordinary (random or active) queries of the project whose two clips are ready to watch, or that
    compare two clips without video by their factor totals (factors-only pairs; never mixed: see
    ``services._check_comparable``)."""
    from .models import QuerySource

    return Query.objects.filter(
        servable_pair(),
        project=project,
        status=QueryStatus.OPEN,
        source__in=[QuerySource.RANDOM, QuerySource.ACTIVE],
    )


def servable_pair(prefix: str = "") -> Q:
    """Both clips ready to watch, or both without video (compared by factor totals). ``prefix`` reaches the
    query from another model (``"query__"``)."""
    from .models import RenderStatus

    def both(status: str) -> Q:
        return Q(**{f"{prefix}clip_a__render_status": status, f"{prefix}clip_b__render_status": status})

    return both(RenderStatus.READY) | both(RenderStatus.NO_VIDEO)


def query_answers(*, project: Project, query_ids: list[int]) -> list[dict[str, Any]]:
    """Each query's state and its human answers in canonical terms (clip_a, clip_b), for programs that asked
    for pairs and wait for them (imitation's preference gatherer).

    ``answers`` counts judgments by canonical outcome (``a``, ``b``, ``equal``, ``cant_tell``); ``target_a`` is
    P(clip_a better than clip_b) as the mean over the judgments that say something (an equal answer is 0.5,
    can't tell is left out), None while there is none; ``majority`` is ``a``, ``b`` or ``tie`` (equal counts,
    or a tie the answers leave open) by the same rule, None without an informative answer. Ids of other
    projects' queries are left out, exactly like ids that don't exist."""
    queries = {q.pk: q for q in Query.objects.filter(project=project, pk__in=query_ids)}
    counts: dict[int, dict[str, int]] = {pk: {"a": 0, "b": 0, "equal": 0, "cant_tell": 0} for pk in queries}
    judgments = Judgment.objects.filter(query_id__in=list(queries)).select_related("query")
    for judgment in judgments.only("choice", "swapped", "query__clip_a_id", "query__clip_b_id"):
        label = judgment.canonical_label if judgment.choice != Choice.CANT_TELL else None
        counts[judgment.query_id][label or "cant_tell"] += 1
    rows = []
    for pk in query_ids:
        query = queries.get(pk)
        if query is None:
            continue
        tally = counts[pk]
        informative = tally["a"] + tally["b"] + tally["equal"]
        target = (tally["a"] + 0.5 * tally["equal"]) / informative if informative else None
        majority = None if target is None else "a" if target > 0.5 else "b" if target < 0.5 else "tie"
        rows.append(
            {
                "id": query.pk,
                "clip_a": query.clip_a_id,
                "clip_b": query.clip_b_id,
                "source": query.source,
                "status": query.status,
                "answers_wanted": query.answers_wanted,
                "answers_given": query.answers_given,
                "answers": tally,
                "target_a": target,
                "majority": majority,
            }
        )
    return rows


# --- Members, invites and the audit log (the members page and the API) ------------------------------------------

AUDIT_SHOWN = 50


def project_members(project: Project) -> QuerySet[Membership]:
    """Researchers first, then by username."""
    return (
        Membership.objects.filter(project=project)
        .select_related("user")
        .order_by(Case(When(role=ProjectRole.RESEARCHER, then=0), default=1), "user__username")
    )


def project_member(*, project: Project, membership_id: int) -> Membership:
    membership = project_members(project).filter(pk=membership_id).first()
    if membership is None:
        raise NotFound("no such member")
    return membership


def project_invites(project: Project, *, open_only: bool = False) -> QuerySet[Invite]:
    invites = Invite.objects.filter(project=project).select_related("created_by", "used_by")
    if open_only:
        invites = invites.filter(revoked_at=None, used_at=None, expires_at__gt=timezone.now())
    return invites


def project_invite(*, project: Project, invite_id: int) -> Invite:
    invite = project_invites(project).filter(pk=invite_id).first()
    if invite is None:
        raise NotFound("no such invite")
    return invite


def audit_entries(project: Project, *, limit: int = AUDIT_SHOWN) -> list[AuditEntry]:
    """The project's latest audit entries, newest first."""
    return list(
        AuditEntry.objects.filter(project=project)
        .select_related("actor", "target_user")
        .order_by("-created_at", "-pk")[:limit]
    )


# --- the clip browser ----------------------------------------------------------------------------------------

# Where a clip's behaviour came from, read off its rollout's policy name (labeling knows no trainer models):
# "policy:<checkpoint>:<noise>" from the loop, "upload" from the rollout upload API, "minari:<id>" from a dataset
# import, anything else ("random", a scripted controller) from clip generation.
CLIP_SOURCES = ("scripted", "policy", "upload", "dataset")
_SOURCE_FILTERS = {
    "policy": Q(rollout__policy__startswith="policy:"),
    "upload": Q(rollout__policy="upload"),
    "dataset": Q(rollout__policy__startswith="minari:"),
}
_SOURCE_FILTERS["scripted"] = ~(_SOURCE_FILTERS["policy"] | _SOURCE_FILTERS["upload"] | _SOURCE_FILTERS["dataset"])


def clip_source(policy_name: str) -> str:
    """The browser's source of a rollout's policy name (the Python twin of ``_SOURCE_FILTERS``)."""
    if policy_name.startswith("policy:"):
        return "policy"
    if policy_name == "upload":
        return "upload"
    if policy_name.startswith("minari:"):
        return "dataset"
    return "scripted"


@dataclass(frozen=True)
class ClipFilters:
    """What the clip browser narrows by; None means "any"."""

    iteration: int | None = None
    source: str | None = None
    rendered: bool | None = None
    judged: bool | None = None


def clips_browse(
    *, project: Project, filters: ClipFilters, before: int | None = None, limit: int = 24
) -> tuple[list[Clip], int | None]:
    """One page of the project's clips, newest first, and the id to continue from (None on the last page).

    Keyset pagination on the primary key: each page is an index range scan, never a count of the whole table,
    so it stays cheap with a million clips. ``judged`` is an EXISTS over the clip's queries' judgments.
    """
    from django.db.models import Exists, OuterRef

    clips = Clip.objects.filter(project=project)
    if filters.iteration is not None:
        clips = clips.filter(iteration=filters.iteration)
    if filters.source is not None:
        clips = clips.filter(_SOURCE_FILTERS[filters.source])
    if filters.rendered is not None:
        from .models import RenderStatus

        ready = Q(render_status=RenderStatus.READY)
        clips = clips.filter(ready if filters.rendered else ~ready)
    if filters.judged is not None:
        # Two EXISTS, one per side, so each can use its clip's index (one EXISTS over an OR could not).
        judged = Q(Exists(Judgment.objects.filter(query__clip_a=OuterRef("pk")))) | Q(
            Exists(Judgment.objects.filter(query__clip_b=OuterRef("pk")))
        )
        clips = clips.filter(judged if filters.judged else ~judged)
    if before is not None:
        clips = clips.filter(pk__lt=before)
    page = list(clips.select_related("rollout").order_by("-pk")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, (page[-1].pk if more and page else None)


def clip_iterations(project: Project) -> list[int]:
    """The iterations that made clips (0: the initial pool), for the browser's filter."""
    return list(
        Clip.objects.filter(project=project).values_list("iteration", flat=True).distinct().order_by("iteration")
    )


def clip_counts(project: Project) -> dict[str, Any]:
    """Clips by render status and by source, aggregated in SQL (the data section's numbers)."""
    from .models import RenderStatus

    aggregates: dict[str, Count] = {"total": Count("id")}
    aggregates |= {f"status_{status}": Count("id", filter=Q(render_status=status)) for status in RenderStatus.values}
    aggregates |= {f"source_{source}": Count("id", filter=_SOURCE_FILTERS[source]) for source in CLIP_SOURCES}
    row = Clip.objects.filter(project=project).aggregate(**aggregates)
    return {
        "total": row["total"],
        "by_status": [(label, row[f"status_{value}"]) for value, label in RenderStatus.choices],
        "by_source": [(source, row[f"source_{source}"]) for source in CLIP_SOURCES],
        "ready": row[f"status_{RenderStatus.READY}"],
    }


def query_counts(project: Project) -> dict[str, Any]:
    """Queries by status and by source, in one aggregate."""
    aggregates: dict[str, Count] = {"total": Count("id")}
    aggregates |= {f"status_{value}": Count("id", filter=Q(status=value)) for value in QueryStatus.values}
    aggregates |= {f"source_{value}": Count("id", filter=Q(source=value)) for value in QuerySource.values}
    row = Query.objects.filter(project=project).aggregate(**aggregates)
    return {
        "total": row["total"],
        "by_status": [(label, row[f"status_{value}"]) for value, label in QueryStatus.choices],
        "by_source": [(label, row[f"source_{value}"]) for value, label in QuerySource.choices],
    }
