"""Admin for training artefacts, scoped to the researcher's projects like the labeling admin.

Preference sets, reward models, runs and policies are made by the workers: the admin views them (and runs the run
actions); nothing here adds them or edits what they hold, except an iteration's number of follow-ups.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from labeling.admin import ProjectScopedAdmin
from labeling.errors import ServiceError
from labeling.models import Project
from labeling.numbers import display_number

from . import loop
from .models import PolicyCheckpoint, PreferenceSet, RewardModel, Run, RunKind


@admin.register(PreferenceSet)
class PreferenceSetAdmin(ProjectScopedAdmin):
    list_display = ("id", "project", "sources", "n_pairs", "counts", "created_at")
    list_filter = ("project", "sources")


@admin.register(RewardModel)
class RewardModelAdmin(ProjectScopedAdmin):
    list_display = ("project", "version", "status", "val_accuracy", "holdout_spearman", "preference_set", "created_at")
    list_filter = ("project", "status")

    @admin.display(description="val. accuracy")
    def val_accuracy(self, model: RewardModel) -> str:
        value = model.metrics.get("val_accuracy")
        return f"{value:.3f}" if isinstance(value, float) else "—"

    @admin.display(description="Spearman (held-out clips)")
    def holdout_spearman(self, model: RewardModel) -> str:
        value = model.metrics.get("holdout_spearman")
        return f"{value:.3f}" if isinstance(value, float) else "—"


@admin.action(description="Build preferences and train a reward model")
def train_reward_model(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Project]) -> None:
    for project in queryset:
        loop.run_start(
            project=project,
            kind=RunKind.RETRAIN,
            params={"sources": "auto"},
            created_by=request.user,  # type: ignore[arg-type]
        )
    modeladmin.message_user(request, f"Started training for {queryset.count()} project(s).", messages.SUCCESS)


@admin.action(description="Generate clips (8 episodes, 50 random queries)")
def generate_clips(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Project]) -> None:
    for project in queryset:
        loop.run_start(
            project=project,
            kind=RunKind.GENERATE_CLIPS,
            params={"rollouts": 8, "queries": 50, "seed": project.rollouts.count()},
            created_by=request.user,  # type: ignore[arg-type]
        )
    modeladmin.message_user(request, f"Started clip generation for {queryset.count()} project(s).", messages.SUCCESS)


def _apply(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Run], change, verb: str) -> None:
    done = 0
    for run in queryset.select_related("project"):
        try:
            change(run)
            done += 1
        except ServiceError as error:
            modeladmin.message_user(request, f"{run.title}: {error.message}", messages.WARNING)
    if done:
        modeladmin.message_user(request, f"{verb} {done} run(s).", messages.SUCCESS)


@admin.register(Run)
class RunAdmin(ProjectScopedAdmin):
    """Every piece of background work: loop iterations, retrains, clip generation, renders."""

    list_display = ("project", "title", "state", "paused", "progress_bar", "message", "true_return", "created_at")
    list_filter = ("project", "kind", "state", "paused")
    list_select_related = ("project", "policy")
    search_fields = ("message", "error")
    change_fields = ("follow_ups",)
    actions = ["pause", "resume", "start_now", "cancel", "retry"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs start from the project actions, the dashboard or the API

    @admin.display(description="run")
    def title(self, run: Run) -> str:
        return run.title

    @admin.display(description="progress")
    def progress_bar(self, run: Run) -> str:
        return f"{run.percent}%"

    @admin.display(description="true return")
    def true_return(self, run: Run) -> str:
        policy = getattr(run, "policy", None)  # selected with the list (list_select_related)
        return display_number(policy.true_return if policy else None)

    @admin.action(description="Pause (after the current step)")
    def pause(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _apply(self, request, queryset, loop.run_pause, "Paused")

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _apply(self, request, queryset, loop.run_resume, "Resumed")

    @admin.action(description="Start now (even before the label budget is met)")
    def start_now(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _apply(self, request, queryset, loop.run_start_now, "Started")

    @admin.action(description="Cancel")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _apply(self, request, queryset, loop.run_cancel, "Cancelled")

    @admin.action(description="Retry from the failed step")
    def retry(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        _apply(self, request, queryset, loop.run_retry, "Retried")


@admin.register(PolicyCheckpoint)
class PolicyCheckpointAdmin(ProjectScopedAdmin):
    list_display = ("project", "run", "algorithm", "timesteps", "true_return", "learned_return", "created_at")
    list_filter = ("project", "algorithm")

    # Returns are float noise past a few digits (-0.0000000000004815… is zero): one rounding rule everywhere.
    @admin.display(description="true return")
    def true_return(self, policy: PolicyCheckpoint) -> str:
        return display_number(policy.true_return)

    @admin.display(description="learned return")
    def learned_return(self, policy: PolicyCheckpoint) -> str:
        return display_number(policy.learned_return)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.action(description="Start an iteration of the loop")
def start_iteration(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Project]) -> None:
    for project in queryset:
        try:
            iteration = loop.iteration_create(project=project, created_by=request.user)  # type: ignore[arg-type]
        except ServiceError as error:
            modeladmin.message_user(request, f"{project}: {error.message}", messages.WARNING)
        else:
            modeladmin.message_user(request, f"{project}: iteration {iteration.number} {iteration.message.lower()}.")


# Offered on labeling's project list through labeling.admin.project_action_register (from trainer.apps).
PROJECT_ACTIONS = (generate_clips, train_reward_model, start_iteration)
