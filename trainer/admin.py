"""Admin for training artefacts, scoped to the researcher's projects like the labeling admin."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from labeling.admin import ProjectAdmin, ProjectScopedAdmin
from labeling.models import JobKind, Project
from labeling.services import job_start

from .models import PreferenceSet, RewardModel


@admin.register(PreferenceSet)
class PreferenceSetAdmin(ProjectScopedAdmin):
    list_display = ("id", "project", "sources", "n_pairs", "counts", "created_at")
    list_filter = ("project", "sources")
    readonly_fields = ("file", "checksum", "counts", "rankings", "settings", "n_pairs", "job")


@admin.register(RewardModel)
class RewardModelAdmin(ProjectScopedAdmin):
    list_display = ("project", "version", "status", "val_accuracy", "holdout_spearman", "preference_set", "created_at")
    list_filter = ("project", "status")
    readonly_fields = ("metrics", "history", "config", "weights", "metadata", "error", "job", "preference_set")

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


# The trainer adds its action to labeling's project admin (labeling doesn't know the trainer exists).
ProjectAdmin.actions = [*ProjectAdmin.actions, train_reward_model]
