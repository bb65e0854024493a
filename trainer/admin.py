"""Admin for training artefacts, scoped to the researcher's projects like the labeling admin.

Preference sets, reward models, iterations and policies are made by the workers: the admin views them (and runs the
iteration actions); nothing here adds them or edits what they hold, except an iteration's number of follow-ups.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from labeling.admin import ProjectScopedAdmin
from labeling.errors import ServiceError
from labeling.models import JobKind, Project
from labeling.services import job_start

from . import loop
from .models import Iteration, PolicyCheckpoint, PreferenceSet, RewardModel


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
        job_start(
            project=project,
            kind=JobKind.BUILD_PREFERENCES,
            params={"sources": "auto", "train": True},
            created_by=request.user,  # type: ignore[arg-type]
        )
    modeladmin.message_user(request, f"Started training for {queryset.count()} project(s).", messages.SUCCESS)


def _apply(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Iteration], change, verb: str
) -> None:
    done = 0
    for iteration in queryset.select_related("project"):
        try:
            change(iteration)
            done += 1
        except ServiceError as error:
            modeladmin.message_user(request, f"Iteration {iteration.number}: {error.message}", messages.WARNING)
    if done:
        modeladmin.message_user(request, f"{verb} {done} iteration(s).", messages.SUCCESS)


@admin.register(Iteration)
class IterationAdmin(ProjectScopedAdmin):
    list_display = ("project", "number", "state", "paused", "progress_bar", "message", "true_return", "labels_used")
    list_filter = ("project", "state", "paused")
    list_select_related = ("project", "policy")
    change_fields = ("follow_ups",)
    actions = ["pause", "resume", "start_now", "cancel"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # iterations start from the project's "Start an iteration" action, the dashboard or the API

    @admin.display(description="progress")
    def progress_bar(self, iteration: Iteration) -> str:
        return f"{iteration.percent}%"

    @admin.display(description="true return")
    def true_return(self, iteration: Iteration) -> str:
        policy = getattr(iteration, "policy", None)  # selected with the list (list_select_related)
        value = policy.true_return if policy else None
        return f"{value:.1f}" if isinstance(value, float) else "—"

    @admin.action(description="Pause (after the current step)")
    def pause(self, request: HttpRequest, queryset: QuerySet[Iteration]) -> None:
        _apply(self, request, queryset, loop.iteration_pause, "Paused")

    @admin.action(description="Resume")
    def resume(self, request: HttpRequest, queryset: QuerySet[Iteration]) -> None:
        _apply(self, request, queryset, loop.iteration_resume, "Resumed")

    @admin.action(description="Start now (even before the label budget is met)")
    def start_now(self, request: HttpRequest, queryset: QuerySet[Iteration]) -> None:
        _apply(self, request, queryset, loop.iteration_start_now, "Started")

    @admin.action(description="Cancel")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Iteration]) -> None:
        _apply(self, request, queryset, loop.iteration_cancel, "Cancelled")


@admin.register(PolicyCheckpoint)
class PolicyCheckpointAdmin(ProjectScopedAdmin):
    list_display = ("project", "iteration", "algorithm", "timesteps", "true_return", "learned_return", "created_at")
    list_filter = ("project", "algorithm")

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
PROJECT_ACTIONS = (train_reward_model, start_iteration)
