"""Django admin for researchers: every labeling model, scoped to the projects the researcher belongs to."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from . import services
from .models import Clip, Job, JobKind, Judgment, Lease, Membership, Project, Query, RewardFactor, Rollout


def _member_projects(request: HttpRequest) -> QuerySet[Project]:
    if request.user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user_id=int(request.user.pk or 0), memberships__role="researcher")


class ProjectScopedAdmin(admin.ModelAdmin):
    """Researchers see and edit only rows of projects where they are researchers."""

    project_path = "project"

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self.project_path}__in": _member_projects(request)})

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "project" and not request.user.is_superuser:
            kwargs["queryset"] = _member_projects(request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class RewardFactorInline(admin.TabularInline):
    model = RewardFactor
    extra = 0
    fields = ("position", "key", "label", "unit", "direction", "sigma", "source", "description")


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ("user",)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "env_id", "feedback_mode", "overlap", "status", "n_clips", "created_at")
    list_filter = ("status", "feedback_mode", "env_id")
    search_fields = ("name", "slug", "env_id")
    prepopulated_fields = {"slug": ("name",)}
    inlines = [RewardFactorInline, MembershipInline]
    actions = ["generate_clips", "create_gold_questions"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return _member_projects(request) if not request.user.is_superuser else super().get_queryset(request)

    @admin.display(description="clips")
    def n_clips(self, project: Project) -> int:
        return project.clips.count()

    @admin.action(description="Generate clips (8 episodes, 50 random queries)")
    def generate_clips(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        for project in queryset:
            seed = project.rollouts.count()
            services.job_start(
                project=project,
                kind=JobKind.GENERATE_CLIPS,
                params={"rollouts": 8, "queries": 50, "seed": seed},
                created_by=request.user,  # type: ignore[arg-type]
            )
        self.message_user(request, f"Started clip generation for {queryset.count()} project(s).", messages.SUCCESS)

    @admin.action(description="Create 20 gold questions (known answers from the true return)")
    def create_gold_questions(self, request: HttpRequest, queryset: QuerySet[Project]) -> None:
        import numpy as np

        from .quality_control import gold_queries_create

        for project in queryset:
            created = gold_queries_create(project=project, count=20, rng=np.random.default_rng(project.queries.count()))
            self.message_user(request, f"{project}: {created} gold question(s) created.", messages.SUCCESS)


@admin.register(RewardFactor)
class RewardFactorAdmin(ProjectScopedAdmin):
    list_display = ("key", "label", "project", "direction", "sigma", "unit", "source", "position")
    list_filter = ("project", "direction")
    search_fields = ("key", "label", "description")


@admin.register(Membership)
class MembershipAdmin(ProjectScopedAdmin):
    list_display = ("user", "project", "role", "created_at")
    list_filter = ("role", "project")
    search_fields = ("user__username", "project__name")
    autocomplete_fields = ("user",)


@admin.register(Rollout)
class RolloutAdmin(ProjectScopedAdmin):
    list_display = ("id", "project", "policy", "env_seed", "n_steps", "true_return", "iteration", "created_at")
    list_filter = ("project", "policy", "iteration")
    search_fields = ("policy",)
    readonly_fields = ("job",)


@admin.register(Clip)
class ClipAdmin(ProjectScopedAdmin):
    list_display = (
        "id",
        "project",
        "rollout",
        "start",
        "length",
        "true_return",
        "render_status",
        "iteration",
        "preview",
    )
    list_filter = ("project", "render_status", "iteration")
    search_fields = ("id",)
    raw_id_fields = ("rollout",)
    actions = ["render_video"]

    @admin.display(description="poster")
    def preview(self, clip: Clip) -> str:
        if not clip.poster_url:
            return "—"
        return format_html('<img src="{}" alt="" style="height:40px">', clip.poster_url)

    @admin.action(description="Render video for the selected clips")
    def render_video(self, request: HttpRequest, queryset: QuerySet[Clip]) -> None:
        for clip_id in queryset.values_list("id", flat=True):
            services.send_task_by_name("trainer.render_clip", clip_id)
        self.message_user(request, f"Queued {queryset.count()} clip(s) for rendering.", messages.SUCCESS)


@admin.register(Query)
class QueryAdmin(ProjectScopedAdmin):
    list_display = (
        "id",
        "project",
        "clip_a",
        "clip_b",
        "source",
        "priority",
        "answers_given",
        "answers_wanted",
        "status",
        "iteration",
    )
    list_filter = ("project", "status", "source", "iteration")
    search_fields = ("id",)
    raw_id_fields = ("clip_a", "clip_b")


@admin.register(Lease)
class LeaseAdmin(ProjectScopedAdmin):
    project_path = "query__project"
    list_display = ("token", "query", "annotator", "swapped", "expires_at", "heartbeat_at")
    list_filter = ("query__project",)
    search_fields = ("annotator__username",)
    raw_id_fields = ("query",)


@admin.register(Judgment)
class JudgmentAdmin(ProjectScopedAdmin):
    project_path = "query__project"
    list_display = ("id", "query", "annotator", "choice", "swapped", "time_spent_ms", "created_at")
    list_filter = ("query__project", "choice", "annotator")
    search_fields = ("annotator__username", "client_id")
    raw_id_fields = ("query",)
    date_hierarchy = "created_at"


@admin.register(Job)
class JobAdmin(ProjectScopedAdmin):
    list_display = ("id", "project", "kind", "status", "percent_done", "message", "created_at", "finished_at")
    list_filter = ("project", "kind", "status")
    search_fields = ("message", "error")
    readonly_fields = ("progress", "message", "error", "result", "started_at", "heartbeat_at", "finished_at")

    @admin.display(description="progress")
    def percent_done(self, job: Job) -> str:
        return format_html('<progress value="{}" max="100"></progress> {}%', job.percent, job.percent)
