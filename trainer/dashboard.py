"""Reads for the researcher dashboard's sections, the policy pages and the lineage views.

Every read here is a handful of aggregates or a bounded list: nothing loads a project's judgments or clips into
Python (the quality numbers come from ``labeling.selectors.quality_report``, which has its own owner).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q

from labeling import selectors as labeling_selectors
from labeling.models import Clip, Project, Query
from labeling.rankings import current_rankings

from . import review, selectors
from .models import FINISHED_STATES, PolicyCheckpoint, PreferenceSet, RewardModel, Run, RunKind, RunState

SECTIONS = (
    ("overview", "Overview"),
    ("data", "Data"),
    ("models", "Models"),
    ("loop", "Loop"),
    ("quality", "Quality"),
)


def overview(project: Project) -> dict[str, Any]:
    """The overview: the numbers each section details, the loop's current iteration, the newest artefacts."""
    iterations = Run.objects.filter(project=project, kind=RunKind.ITERATION)
    current = iterations.exclude(state__in=FINISHED_STATES).order_by("number").first()
    latest = current or iterations.order_by("-number").first()
    return {
        "labels": labeling_selectors.label_counts(project=project),
        "review_count": review.review_count(project),
        "queries": labeling_selectors.project_progress(project),
        "clips": labeling_selectors.clip_counts(project),
        "iteration": latest,
        "iterations_done": iterations.filter(state=RunState.DONE).count(),
        "iterations_queued": iterations.filter(state=RunState.QUEUED).count(),
        "reward_model": RewardModel.objects.filter(project=project, status="ready").order_by("-version").first(),
        "policy": PolicyCheckpoint.objects.filter(project=project)
        .select_related("run")
        .order_by("-created_at")[:1]
        .first(),
        "n_rankings": current_rankings(project).count(),
    }


def data_section(project: Project) -> dict[str, Any]:
    return {
        "factors": project.factors.order_by("position", "id"),
        "clips": labeling_selectors.clip_counts(project),
        "queries": labeling_selectors.query_counts(project),
        "labels": labeling_selectors.label_counts(project=project),
        "ranking_summary": selectors.ranking_summary(project),
    }


def models_section(project: Project) -> dict[str, Any]:
    models = list(
        RewardModel.objects.filter(project=project)
        .select_related("preference_set", "run")
        .annotate(n_policies=Count("policies"))
        .order_by("-version")[:20]
    )
    latest_ready = next((m for m in models if m.status == "ready"), None)
    return {
        "reward_models": models,
        "training_chart": selectors.training_chart(latest_ready),
        "chart_model": latest_ready,
        "preference_sets": list(
            PreferenceSet.objects.filter(project=project).select_related("run").order_by("-created_at", "-id")[:10]
        ),
        "policies": list(
            PolicyCheckpoint.objects.filter(project=project)
            .select_related("run", "reward_model")
            .order_by("-created_at")[:20]
        ),
    }


def quality_section(project: Project) -> dict[str, Any]:
    report = labeling_selectors.quality_report(project)
    by_annotator = labeling_selectors.label_counts_by_annotator(project)
    # None: a big project's label counts are being counted by a task (each row says "counting…" meanwhile).
    counting = labeling_selectors.LabelCounts(counting=True)
    counts = by_annotator if by_annotator is not None else {}
    if report.get("computing"):  # no report yet (a big project's is computed by a task): the counts alone
        return {
            "quality": report,
            "quality_rows": [{"annotator": name, "counts": counts[name], "scores": []} for name in sorted(counts)],
            "labels": labeling_selectors.label_counts(project=project),
            "ranking_summary": selectors.ranking_summary(project),
        }
    rows = [
        {
            "annotator": row["row"].annotator,
            "counts": counts.get(row["row"].annotator) if by_annotator is not None else counting,
            "scores": row["scores"],
            "flag": row.get("flag"),  # flagged in the disagreement review
        }
        for row in report["rows"]
    ]
    return {
        "quality": report,
        "quality_rows": rows,
        "labels": labeling_selectors.label_counts(project=project),
        "ranking_summary": selectors.ranking_summary(project),
    }


# --- policies: watch one next to the one before ---------------------------------------------------------------


def policy_for_project(*, project: Project, policy_id: int) -> PolicyCheckpoint | None:
    return (
        PolicyCheckpoint.objects.filter(project=project, pk=policy_id)
        .select_related("run", "reward_model", "reward_model__preference_set", "previous", "previous__run")
        .first()
    )


def policy_compare(policy: PolicyCheckpoint) -> dict[str, Any]:
    """The policy and the one it continued from (else the project's previous one), with the clips it made."""
    previous = policy.previous
    if previous is None:
        previous = (
            PolicyCheckpoint.objects.filter(project=policy.project, created_at__lt=policy.created_at)
            .select_related("run")
            .order_by("-created_at")
            .first()
        )
    following = PolicyCheckpoint.objects.filter(project=policy.project, previous=policy).select_related("run").first()
    return {"policy": policy, "previous": previous, "next": following, "outputs": policy_outputs(policy)}


def policy_outputs(policy: PolicyCheckpoint) -> dict[str, int]:
    """What the policy's rollouts became: clips (named by the policy in the rollout) and questions about them."""
    clips = Clip.objects.filter(project=policy.project, rollout__policy__startswith=f"policy:{policy.pk}:")
    return {
        "clips": clips.count(),
        "queries": Query.objects.filter(project=policy.project, iteration=policy.run.number or -1).count(),
    }


# --- lineage: labels → preference set → reward model → policy → clips -------------------------------------------


@dataclass(frozen=True)
class Lineage:
    """A run's inputs and outputs, each linkable."""

    run: Run
    preference_set: PreferenceSet | None
    reward_model: RewardModel | None
    policy: PolicyCheckpoint | None
    previous_policy: PolicyCheckpoint | None
    clips: int
    rendered: int
    queries: int
    labels_used: int


def run_for_project(*, project: Project, run_id: int) -> Run | None:
    return (
        Run.objects.filter(project=project, pk=run_id)
        .select_related("preference_set", "reward_model", "reward_model__preference_set", "previous")
        .first()
    )


def run_lineage(run: Run) -> Lineage:
    policy = PolicyCheckpoint.objects.filter(run=run).select_related("previous", "previous__run").first()
    clips = Clip.objects.filter(project=run.project, rollout__run=run.pk).aggregate(
        n=Count("id"), rendered=Count("id", filter=Q(render_status="ready"))
    )
    queries = (
        Query.objects.filter(project=run.project, iteration=run.number).count()
        if run.is_iteration and run.number is not None
        else 0
    )
    return Lineage(
        run=run,
        preference_set=run.preference_set,
        reward_model=run.reward_model,
        policy=policy,
        previous_policy=policy.previous if policy else None,
        clips=clips["n"],
        rendered=clips["rendered"],
        queries=queries,
        labels_used=run.labels_used,
    )


def reward_model_for_project(*, project: Project, model_id: int) -> RewardModel | None:
    return RewardModel.objects.filter(project=project, pk=model_id).select_related("preference_set", "run").first()


def reward_model_lineage(model: RewardModel) -> dict[str, Any]:
    """Its inputs (the preference set, the rankings and labels in it, the run) and outputs (policies)."""
    return {
        "model": model,
        "preference_set": model.preference_set,
        "policies": list(model.policies.select_related("run").order_by("created_at")[:50]),
        "training_chart": selectors.training_chart(model),
    }
