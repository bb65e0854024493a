"""Reads for labeling: what a user may see, and the rows behind pages, the API and exports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet

from accounts.models import User

from .errors import NotFound
from .models import (
    Choice,
    Clip,
    Judgment,
    Lease,
    Membership,
    Project,
    ProjectRole,
    Query,
    QuerySource,
    QueryStatus,
)


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
    counts = Query.objects.filter(project=project).aggregate(
        total=Count("id"),
        open=Count("id", filter=Q(status=QueryStatus.OPEN)),
        complete=Count("id", filter=Q(status=QueryStatus.COMPLETE)),
    )
    counts["clips"] = Clip.objects.filter(project=project).count()
    counts["judgments"] = Judgment.objects.filter(query__project=project).count()
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

    @property
    def decided(self) -> int:
        return self.answered - self.cant_tell


def _label_aggregates() -> dict[str, Count]:
    return {
        "answered": Count("id"),
        "cant_tell": Count("id", filter=Q(choice=Choice.CANT_TELL)),
        "for_budget": Count("id", filter=Q(query__source__in=[QuerySource.RANDOM, QuerySource.ACTIVE])),
    }


def label_counts(*, project: Project, annotator: User | None = None) -> LabelCounts:
    """The project's (or one annotator's) label counts, aggregated in SQL."""
    judgments = Judgment.objects.filter(query__project=project)
    skips = Lease.objects.filter(query__project=project, skipped=True)
    if annotator is not None:
        judgments, skips = judgments.filter(annotator=annotator), skips.filter(annotator=annotator)
    return LabelCounts(**judgments.aggregate(**_label_aggregates()), skipped=skips.count())


def label_counts_by_annotator(project: Project) -> dict[str, LabelCounts]:
    """Label counts per annotator (by username), one grouped query for answers and one for skips."""
    rows = (
        Judgment.objects.filter(query__project=project)
        .values("annotator__username")
        .annotate(**_label_aggregates())
        .order_by()
    )
    skips = dict(
        Lease.objects.filter(query__project=project, skipped=True)
        .values("annotator__username")
        .annotate(n=Count("id"))
        .order_by()
        .values_list("annotator__username", "n")
    )
    counts = {row.pop("annotator__username"): LabelCounts(**row, skipped=0) for row in rows}
    for username, n in skips.items():
        base = counts.get(username, LabelCounts())
        counts[username] = LabelCounts(base.answered, base.cant_tell, n, base.for_budget)
    return counts


def annotator_progress(*, project: Project, annotator: User) -> dict[str, int]:
    counts = label_counts(project=project, annotator=annotator)
    return {"judgments": counts.answered, "cant_tell": counts.cant_tell, "skipped": counts.skipped}


def clips_for_project(project: Project, *, iteration: int | None = None) -> QuerySet[Clip]:
    clips = Clip.objects.filter(project=project).order_by("id")
    if iteration is not None:
        clips = clips.filter(iteration=iteration)
    return clips


def factor_extremes(project: Project) -> dict[str, dict[str, Clip | None]]:
    """For each factor, the clips where its total is highest and lowest (so people see what a factor means)."""
    from django.db.models import FloatField
    from django.db.models.fields.json import KT
    from django.db.models.functions import Cast

    extremes: dict[str, dict[str, Clip | None]] = {}
    for key in project.factors.values_list("key", flat=True):
        ordered = Clip.objects.filter(project=project).annotate(value=Cast(KT(f"factor_totals__{key}"), FloatField()))
        extremes[key] = {
            "highest": ordered.order_by("-value", "id").first(),
            "lowest": ordered.order_by("value", "id").first(),
        }
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
        .annotate(n_revisions=Count("revisions"))
        .order_by("-created_at", "-id")
    )
    if judgment_ids is not None:
        judgments = judgments.filter(pk__in=judgment_ids)
    rows = []
    for judgment in judgments[:limit]:
        left, right = judgment.shown_clips()
        rows.append({"judgment": judgment, "left": left, "right": right, "revisions": judgment.n_revisions})
    return rows


def quality_report(project: Project) -> dict[str, Any]:
    """Per-annotator reliability (gold accuracy, self-consistency, agreement) and the project's α and κ."""
    from . import quality, quality_control
    from .models import QuerySource

    judgments = list(
        Judgment.objects.filter(query__project=project)
        .select_related("query", "annotator")
        .only(
            "choice",
            "swapped",
            "query__clip_a_id",
            "query__clip_b_id",
            "query__source",
            "query__gold_answer",
            "query__repeat_of_id",
            "annotator__username",
        )
    )
    answers = quality_control.answers_of(judgments)
    gold = {j.query_id: j.query.gold_answer for j in judgments if j.query.source == QuerySource.GOLD}
    repeats = {j.query_id: j.query.repeat_of_id for j in judgments if j.query.repeat_of_id}
    # Agreement statistics are about the ordinary questions: several annotators answering the same pair.
    ordinary = [
        a for a, j in zip(answers, judgments, strict=True) if j.query.source in (QuerySource.RANDOM, QuerySource.ACTIVE)
    ]
    return {
        "rows": [
            {"row": row, "scores": [row.gold, row.self_consistency, row.agreement]}
            for row in quality.annotator_report(answers, gold=gold, repeats=repeats)
        ],
        "alpha": quality.krippendorff_alpha(ordinary),
        "kappa": quality.fleiss_kappa(ordinary),
        "n_answers": len(answers),
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
    """Open ordinary (random or active) queries of the project whose two clips are ready to watch."""
    from .models import QuerySource, RenderStatus

    return Query.objects.filter(
        project=project,
        status=QueryStatus.OPEN,
        source__in=[QuerySource.RANDOM, QuerySource.ACTIVE],
        clip_a__render_status=RenderStatus.READY,
        clip_b__render_status=RenderStatus.READY,
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
