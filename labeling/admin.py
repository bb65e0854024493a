"""Django admin for researchers: every labeling model, scoped to the projects the researcher belongs to.

A researcher (staff, not superuser) is treated as hostile to other projects:

- every list, form and object lookup is limited to projects where they are a researcher (``researcher_projects``);
- every foreign key, raw-id field, autocomplete and user picker offers (and accepts) only rows of those projects and
  users who are members of them (``scoped_queryset``), and ``ScopedModelForm.clean`` refuses a row whose relations
  point into another project or name a user who is not a member of the row's project;
- relation filters in the change list list only values that occur in the researcher's own rows;
- fields the platform owns (render state, counters, arrays, job and lineage fields) are read-only, and rows that
  annotators or workers make (judgments, leases, rollouts, jobs, training artefacts) can't be added or edited here.

Superusers see every project; the read-only rules and the same-project checks apply to them too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, ClassVar

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin.utils import NotRelationField, get_fields_from_path
from django.contrib.auth import get_user_model
from django.core.exceptions import FieldDoesNotExist, ImproperlyConfigured, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.core.paginator import Paginator
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.functional import cached_property
from django.utils.html import format_html

from accounts.admin import UserAdmin as AccountsUserAdmin
from accounts.services import researcher_models_add

from . import environments, events, services, uploads, webhooks
from .errors import ServiceError
from .models import (
    AuditAction,
    AuditEntry,
    Clip,
    Judgment,
    Lease,
    Membership,
    Project,
    ProjectRole,
    Query,
    QuerySource,
    RenderStatus,
    RewardFactor,
    Rollout,
    WebhookDelivery,
    WebhookEndpoint,
)
from .numbers import display_number

User = get_user_model()


# --- Scope -----------------------------------------------------------------------------------------------------


def researcher_projects(request: HttpRequest) -> QuerySet[Project]:
    """Projects the requesting user manages in the admin: all for a superuser, else those they are a researcher of."""
    if request.user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(
        memberships__user_id=int(request.user.pk or 0), memberships__role=ProjectRole.RESEARCHER
    )


# Kept for code that imported the old private name.
_member_projects = researcher_projects


def project_members(request: HttpRequest) -> QuerySet[Any]:
    """Users who are members (any role) of the requesting user's projects; all users for a superuser."""
    if request.user.is_superuser:
        return User._default_manager.all()
    return User._default_manager.filter(memberships__project__in=researcher_projects(request)).distinct()


def project_path(model: type[models.Model]) -> str | None:
    """The lookup from ``model`` to its Project ("project", "query__project", …); "" for Project, None if none.

    Found by following forward foreign keys (a field named ``project`` first), so a newly registered model is
    scoped without being listed anywhere.
    """
    if model is Project:
        return ""
    return _project_path(model, depth=3)


def _project_path(model: type[models.Model], depth: int) -> str | None:
    relations = [
        f
        for f in model._meta.get_fields()
        if f.concrete and f.is_relation and (f.many_to_one or f.one_to_one) and f.related_model is not None
    ]
    for field in relations:
        if field.related_model is Project:
            return field.name
    if depth <= 1:
        return None
    for field in relations:
        related = field.related_model
        if related in (User, model) or not isinstance(related, type):
            continue
        rest = _project_path(related, depth - 1)
        if rest is not None and not getattr(field, "null", False):
            return f"{field.name}__{rest}"
    return None


def scoped_queryset(model: type[models.Model], request: HttpRequest) -> QuerySet[Any]:
    """The rows of ``model`` the requesting user may see or link to."""
    if request.user.is_superuser:
        return model._default_manager.all()
    if model is User:
        return project_members(request)
    if model is Project:
        return researcher_projects(request)
    path = project_path(model)
    if path is None:
        return model._default_manager.none()
    return model._default_manager.filter(**{f"{path}__in": researcher_projects(request)})


def project_id_of(obj: models.Model | None) -> int | None:
    """The id of the project ``obj`` belongs to, following ``project_path``; None when it can't be told."""
    if obj is None:
        return None
    if isinstance(obj, Project):
        return obj.pk
    path = project_path(type(obj))
    if not path:
        return None
    *hops, last = path.split("__")
    current: Any = obj
    try:
        for hop in hops:
            current = getattr(current, hop)
            if current is None:
                return None
        return getattr(current, f"{last}_id")
    except (AttributeError, models.ObjectDoesNotExist):
        return None


class ScopedRelatedFieldListFilter(admin.RelatedOnlyFieldListFilter):
    """Lists only values the researcher may see. Django's "related only" filter finds them with a DISTINCT over the
    change list's rows, a full scan of a million judgments per page view; projects and users are offered from the
    researcher's scope instead (their projects, their projects' members), small sets that hold every value the
    rows can have. Other relations keep the DISTINCT (their tables are small)."""

    def field_choices(self, field: Any, request: HttpRequest, model_admin: Any) -> Any:
        related = field.related_model
        if related is not Project and related is not User:
            return super().field_choices(field, request, model_admin)
        return field.get_choices(
            include_blank=False,
            limit_choices_to={"pk__in": scoped_queryset(related, request).values("pk")},
            ordering=self.field_admin_ordering(field, request, model_admin),
        )


def _relation_filters(model: type[models.Model], list_filter: Sequence[Any]) -> tuple[Any, ...]:
    """Relation filters list every row of the related table; list only the values the researcher may see."""
    scoped: list[Any] = []
    for entry in list_filter:
        if isinstance(entry, str):
            try:
                field = get_fields_from_path(model, entry)[-1]
            except (FieldDoesNotExist, NotRelationField):
                field = None
            if field is not None and field.is_relation:
                entry = (entry, ScopedRelatedFieldListFilter)
        scoped.append(entry)
    return tuple(scoped)


class CappedCountPaginator(Paginator):
    """A change-list paginator that never counts a big table: it counts at most ``cap`` + 1 rows (a LIMIT in a
    subquery, cheap at any size) and, past that, shows PostgreSQL's planner estimate as the total.

    Pages stop at ``cap`` rows: OFFSET costs a scan of every skipped row (the last of a million judgments took
    8 s), so deep pages are reached with the filters, search and the exports instead."""

    cap = 10_000

    @cached_property
    def count(self) -> int:
        rows = self.object_list
        if not isinstance(rows, QuerySet):
            return super().count
        exact = rows.order_by()[: self.cap + 1].count()
        return exact if exact <= self.cap else max(self.cap + 1, _estimated_rows(rows))

    @cached_property
    def num_pages(self) -> int:
        if self.count == 0 and not self.allow_empty_first_page:
            return 0
        hits = max(1, min(self.count, self.cap) - self.orphans)
        return math.ceil(hits / self.per_page)


def _estimated_rows(queryset: QuerySet[Any]) -> int:
    """The planner's row estimate for ``queryset`` (PostgreSQL's EXPLAIN; no rows are read); 0 elsewhere."""
    from django.db import connections

    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return 0
    sql, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


class ScaledChangeListMixin:
    """Change lists that stay fast with a million rows: no full count (``show_full_result_count``, the paginator),
    and ``select_related`` of the foreign keys the list shows only (Django's default joins every non-null one)."""

    show_full_result_count = False
    paginator: type = CappedCountPaginator
    list_display: Any

    def get_list_select_related(self, request: HttpRequest) -> Any:
        chosen = getattr(self, "list_select_related", False)
        if chosen is not False:
            return chosen
        model = self.model  # type: ignore[attr-defined]
        shown = []
        for name in self.list_display:
            try:
                field = model._meta.get_field(name)
            except FieldDoesNotExist:
                continue
            if field.is_relation and (field.many_to_one or field.one_to_one) and field.concrete:
                shown.append(name)
        return tuple(shown)


class ScopedFormfieldsMixin:
    """Every foreign key and many-to-many field (select, raw id or autocomplete) offers and accepts only scoped rows."""

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if not request.user.is_superuser:
            kwargs["queryset"] = scoped_queryset(db_field.related_model, request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if not request.user.is_superuser:
            kwargs["queryset"] = scoped_queryset(db_field.related_model, request)
        return super().formfield_for_manytomany(db_field, request, **kwargs)  # type: ignore[misc]


class ScopedModelForm(forms.ModelForm):
    """Refuses a row whose relations leave its project: each related row must be of the same project, and each user
    a member of it. ``any_user_fields`` name user fields exempt from the membership rule (Membership.user)."""

    any_user_fields: ClassVar[frozenset[str]] = frozenset()

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data
        model = self._meta.model
        path = project_path(model)
        if not path:
            return cleaned
        anchor = path.split("__")[0]
        project_id = self._row_project_id(anchor, cleaned)
        if project_id is None:
            return cleaned
        for name in self.fields:
            value = cleaned.get(name)
            if name == anchor or value is None or name in self.errors:
                continue
            try:
                field = model._meta.get_field(name)
            except FieldDoesNotExist:
                continue
            if not field.is_relation or field.related_model is None:
                continue
            for related in value.all() if isinstance(value, QuerySet) else [value]:
                self._check_related(name, field.related_model, related, project_id)
        return cleaned

    def _row_project_id(self, anchor: str, cleaned: dict[str, Any]) -> int | None:
        if anchor in self.fields:
            value = cleaned.get(anchor)
            return value.pk if isinstance(value, Project) else project_id_of(value)
        return project_id_of(self.instance)

    def _check_related(self, name: str, related_model: Any, related: Any, project_id: int) -> None:
        if related_model is User:
            if (
                name not in self.any_user_fields
                and not Membership.objects.filter(project_id=project_id, user=related).exists()
            ):
                self.add_error(name, "This user is not a member of the project.")
        elif related_model is Project:
            if related.pk != project_id:
                self.add_error(name, "Choose this row's own project.")
        elif project_path(related_model) and project_id_of(related) != project_id:
            self.add_error(name, "This belongs to another project.")


class ScopedModelAdmin(ScaledChangeListMixin, ScopedFormfieldsMixin, admin.ModelAdmin):
    """Scoped relations and relation filters (see ScopedFormfieldsMixin). Its model (and its inlines' models) are
    ones researchers manage: the researchers' group gets their permissions."""

    def __init__(self, model: Any, admin_site: Any) -> None:
        super().__init__(model, admin_site)
        for managed in [model, *(inline.model for inline in self.inlines)]:
            researcher_models_add(managed._meta.app_label, managed._meta.model_name)

    def get_list_filter(self, request: HttpRequest) -> tuple[Any, ...]:
        return _relation_filters(self.model, super().get_list_filter(request))


class ProjectScopedAdmin(ScopedModelAdmin):
    """Researchers see and edit only rows of projects where they are researchers.

    ``add_fields``: the fields of the add form (None: rows are not added in the admin). ``change_fields``: the
    fields that stay editable on an existing row; every other field is read-only (empty: the admin only views and
    deletes these rows). Relations are never editable on an existing row, so nothing moves between projects.
    """

    project_path: str | None = None
    add_fields: tuple[str, ...] | None = None
    change_fields: tuple[str, ...] = ()
    form = ScopedModelForm

    def _path(self) -> str:
        path = self.project_path if self.project_path is not None else project_path(self.model)
        if path is None:
            raise ImproperlyConfigured(f"{self.model.__name__} has no path to a project")
        return path

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(**{f"{self._path()}__in": researcher_projects(request)})

    def _model_fields(self) -> list[str]:
        return [f.name for f in self.model._meta.get_fields() if f.concrete and not f.auto_created]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return tuple(self.add_fields or ())
        return tuple(self._model_fields())

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        if obj is None:
            return tuple(self.readonly_fields)
        editable = set(self.change_fields)
        extra = [name for name in self.readonly_fields if name not in self._model_fields()]
        return (*[name for name in self._model_fields() if name not in editable], *extra)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self.add_fields is not None and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(self.change_fields) and super().has_change_permission(request, obj)


# --- Users -----------------------------------------------------------------------------------------------------


class ProjectScopedUserAdmin(AccountsUserAdmin):
    """The accounts admin, plus: a researcher's user pickers (the admin's autocomplete) list members of their own
    projects only. Researchers have no permission on users, so the user pages themselves stay closed to them."""

    def _may_see_all_users(self, request: HttpRequest) -> bool:
        user = request.user
        return user.is_superuser or user.has_perm("accounts.view_user") or user.has_perm("accounts.change_user")

    def _is_user_autocomplete(self, request: HttpRequest) -> bool:
        """The admin's autocomplete for a user field of a model the requester may view or change."""
        match = getattr(request, "resolver_match", None)
        if match is None or match.url_name != "autocomplete" or not request.user.is_staff:
            return False
        app_label = request.GET.get("app_label", "")
        model_name = request.GET.get("model_name", "")
        try:
            source = apps.get_model(app_label, model_name)
            field = source._meta.get_field(request.GET.get("field_name", ""))
        except (LookupError, ValueError, FieldDoesNotExist):
            return False
        if getattr(field, "related_model", None) is not User or source not in admin.site._registry:
            return False
        opts = source._meta
        return any(
            request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")
            for action in ("view", "change", "add")
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if super().has_view_permission(request, obj):
            return True
        return obj is None and self._is_user_autocomplete(request)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if self._may_see_all_users(request):
            return queryset
        return queryset.filter(pk__in=project_members(request).values("pk"))


# Replace the accounts admin of users with the scoped one (labeling knows memberships; accounts must not).
if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, ProjectScopedUserAdmin)


# --- Projects --------------------------------------------------------------------------------------------------


class RewardFactorInline(ScopedFormfieldsMixin, admin.TabularInline):
    model = RewardFactor
    form = ScopedModelForm
    extra = 0
    fields = ("position", "key", "label", "unit", "direction", "sigma", "source", "description")


class MembershipForm(ScopedModelForm):
    any_user_fields = frozenset({"user"})  # anyone already in the researcher's projects may be added to another


class MembershipInline(ScopedFormfieldsMixin, admin.TabularInline):
    model = Membership
    form = MembershipForm
    extra = 0
    fields = ("user", "role", "qualified_at")
    readonly_fields = ("qualified_at",)
    autocomplete_fields = ("user",)


class ProjectForm(forms.ModelForm):
    def clean_env_id(self) -> str:
        env_id = self.cleaned_data["env_id"]
        if environments.get(env_id) is None and env_id != environments.EXTERNAL:
            raise ValidationError(f"Choose one of {', '.join([*environments.available(), environments.EXTERNAL])}.")
        return env_id


# Project actions that other apps offer (the trainer's "train a reward model", "start an iteration"): they register
# here when Django starts (trainer.apps), so labeling never imports them and nobody patches ProjectAdmin.
_PROJECT_ACTIONS: dict[str, Any] = {}


def project_action_register(action: Any) -> None:
    """Offer an admin action (a function decorated with ``admin.action``) on labeling's project list."""
    _PROJECT_ACTIONS[action.__name__] = action


@admin.register(Project)
class ProjectAdmin(ScopedModelAdmin):
    form = ProjectForm
    list_display = ("name", "slug", "env_id", "feedback_mode", "overlap", "status", "n_clips", "created_at")
    list_filter = ("status", "feedback_mode", "env_id")
    search_fields = ("name", "slug", "env_id")
    prepopulated_fields = {"slug": ("name",)}
    readonly_fields = ("created_by", "created_at")
    inlines = [RewardFactorInline, MembershipInline]
    own_actions = ("create_gold_questions",)

    @property
    def actions(self) -> list[Any]:  # type: ignore[override]  # computed: other apps register theirs at start-up
        """This admin's own actions, then those other apps registered (``project_action_register``)."""
        return [*self.own_actions, *_PROJECT_ACTIONS.values()]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Project]:
        return researcher_projects(request) if not request.user.is_superuser else super().get_queryset(request)

    def save_model(self, request: HttpRequest, obj: Project, form: Any, change: bool) -> None:
        if not change:
            obj.created_by = request.user  # type: ignore[assignment]
        super().save_model(request, obj, form, change)

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        super().save_related(request, form, formsets, change)
        if not change:
            # After the inlines, so a membership row for the creator typed in the inline can't collide with it.
            actor: Any = request.user
            services.audit_record(
                project=form.instance, actor=actor, action=AuditAction.PROJECT_CREATED, target=form.instance.name
            )
            services.membership_add(project=form.instance, user=actor, role=ProjectRole.RESEARCHER, actor=actor)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """Membership rows typed in the inline go through the membership services, so each leaves an audit entry
        and the last researcher can't be demoted or removed here either."""
        if formset.model is not Membership:
            super().save_formset(request, form, formset, change)
            return
        actor: Any = request.user
        memberships = formset.save(commit=False)
        try:
            with transaction.atomic():
                for membership in formset.deleted_objects:
                    services.member_remove(membership=membership, actor=actor)
                for membership in memberships:
                    if membership.pk is None:
                        services.membership_add(
                            project=form.instance, user=membership.user, role=membership.role, actor=actor
                        )
                    else:
                        services.member_role_change(membership=membership, role=membership.role, actor=actor)
        except ServiceError as error:
            self.message_user(request, f"Members not changed: {error.message}", messages.ERROR)

    @admin.display(description="clips")
    def n_clips(self, project: Project) -> int:
        return project.clips.count()

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
    add_fields = ("project", "key", "label", "description", "unit", "direction", "sigma", "source", "position")
    change_fields = ("key", "label", "description", "unit", "direction", "sigma", "source", "position")


@admin.register(Membership)
class MembershipAdmin(ProjectScopedAdmin):
    form = MembershipForm
    list_display = ("user", "project", "role", "flagged_at", "created_at")
    list_filter = ("role", "project")
    search_fields = ("user__username", "project__name")
    autocomplete_fields = ("user",)
    add_fields = ("project", "user", "role")
    change_fields = ("role",)

    # Through the membership services: each change leaves an audit entry, and a project keeps a researcher.
    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        actor: Any = request.user
        try:
            if change:
                services.member_role_change(membership=obj, role=obj.role, actor=actor)
            else:
                saved = services.membership_add(project=obj.project, user=obj.user, role=obj.role, actor=actor)
                obj.pk = saved.pk
        except ServiceError as error:
            self.message_user(request, f"Not changed: {error.message}", messages.ERROR)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        try:
            services.member_remove(membership=obj, actor=request.user)  # type: ignore[arg-type]
        except ServiceError as error:
            self.message_user(request, f"Not removed: {error.message}", messages.ERROR)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Membership]) -> None:
        for membership in queryset:
            self.delete_model(request, membership)


@admin.register(AuditEntry)
class AuditEntryAdmin(ProjectScopedAdmin):
    """The audit log: read here, written only by the services, in the same transaction as each change."""

    list_display = ("created_at", "project", "actor", "action", "target")
    list_filter = ("project", "action")
    search_fields = ("target",)
    date_hierarchy = "created_at"

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Rollout)
class RolloutAdmin(ProjectScopedAdmin):
    """Rollouts come from the workers and the import API; their arrays are the platform's."""

    list_display = ("id", "project", "policy", "env_seed", "n_steps", "true_return", "iteration", "created_at")
    list_filter = ("project", "policy", "iteration")
    search_fields = ("policy",)

    @admin.display(description="true return", ordering="true_return")
    def true_return(self, rollout: Rollout) -> str:
        return display_number(rollout.true_return)  # simulator floats: a few significant digits


# --- Clips and queries -----------------------------------------------------------------------------------------


class ClipForm(ScopedModelForm):
    """A clip's media are checked by content: an H.264 MP4 and a PNG or JPEG poster, whatever their names say."""

    def clean_video(self) -> Any:
        video = self.cleaned_data.get("video")
        if isinstance(video, UploadedFile):
            uploads.check_video(video)
            video.name = "video.mp4"
        return video

    def clean_poster(self) -> Any:
        poster = self.cleaned_data.get("poster")
        if isinstance(poster, UploadedFile):
            image_format = uploads.check_image(poster)
            poster.name = "poster.png" if image_format == "PNG" else "poster.jpg"
        return poster

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        rollout, start, length = cleaned.get("rollout"), cleaned.get("start"), cleaned.get("length")
        if not isinstance(rollout, Rollout) or start is None or length is None:
            return cleaned
        if length < 1 or start + length > rollout.n_steps:
            self.add_error("length", f"The segment must lie within the rollout's {rollout.n_steps} steps.")
        return cleaned


@admin.register(Clip)
class ClipAdmin(ProjectScopedAdmin):
    form = ClipForm
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
    ordering = ("-id",)
    actions = ["render_video"]
    add_fields = ("project", "rollout", "start", "length", "video", "poster")
    change_fields = ("video", "poster")

    def save_model(self, request: HttpRequest, obj: Clip, form: Any, change: bool) -> None:
        if "video" in form.changed_data and obj.video:
            obj.render_status, obj.render_error = RenderStatus.READY, ""
        super().save_model(request, obj, form, change)

    @admin.display(description="true return", ordering="true_return")
    def true_return(self, clip: Clip) -> str:
        return display_number(clip.true_return)

    @admin.display(description="poster")
    def preview(self, clip: Clip) -> str:
        if not clip.poster_url:
            return "—"
        return format_html('<img src="{}" alt="" height="40">', clip.poster_url)

    @admin.action(description="Render video for the selected clips")
    def render_video(self, request: HttpRequest, queryset: QuerySet[Clip]) -> None:
        for clip_id in queryset.values_list("id", flat=True):
            services.send_task_by_name(events.RENDER_CLIP, clip_id)
        self.message_user(request, f"Queued {queryset.count()} clip(s) for rendering.", messages.SUCCESS)


class QueryIterationListFilter(admin.SimpleListFilter):
    """Queries by iteration, offering the iterations of the researcher's clips: Django's own filter finds the values
    with a DISTINCT over every query (half a million rows and more), the clips' are a small, indexed set and the
    iterations that made queries make clips too."""

    title = "iteration"
    parameter_name = "iteration"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        iterations = scoped_queryset(Clip, request).order_by("iteration").values_list("iteration", flat=True)
        return [(str(value), str(value)) for value in iterations.distinct()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(iteration=int(value)) if value and value.isdigit() and len(value) < 10 else queryset


class QueryForm(ScopedModelForm):
    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        clip_a, clip_b = cleaned.get("clip_a"), cleaned.get("clip_b")
        if self.instance.pk is None and isinstance(clip_a, Clip) and isinstance(clip_b, Clip):
            if clip_a.pk == clip_b.pk:
                self.add_error("clip_b", "Choose two different clips.")
                return cleaned
            if clip_a.pk > clip_b.pk:  # stored in canonical order
                cleaned["clip_a"], cleaned["clip_b"] = clip_b, clip_a
            pair = Query.objects.filter(
                clip_a=cleaned["clip_a"], clip_b=cleaned["clip_b"], source__in=[QuerySource.RANDOM, QuerySource.ACTIVE]
            )
            if pair.exists():
                self.add_error("clip_b", "This pair is already asked.")
        return cleaned


@admin.register(Query)
class QueryAdmin(ProjectScopedAdmin):
    form = QueryForm
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
    list_filter = ("project", "status", "source", QueryIterationListFilter)
    search_fields = ("id",)
    raw_id_fields = ("clip_a", "clip_b")
    # Newest first by an index ((project, -id) when filtered by project), not the serving order: that sorts
    # every query of the project (its index covers open queries only).
    ordering = ("-id",)
    add_fields = ("project", "clip_a", "clip_b", "priority")
    change_fields = ("priority", "status")

    def save_model(self, request: HttpRequest, obj: Query, form: Any, change: bool) -> None:
        if not change:
            obj.source = QuerySource.RANDOM
            obj.answers_wanted = obj.project.overlap
        super().save_model(request, obj, form, change)


# --- Annotators' work and background jobs: made by the platform, viewed (and a lease freed) here ----------------


@admin.register(Lease)
class LeaseAdmin(ProjectScopedAdmin):
    """Leases are taken by annotators; a researcher may delete one to free its query."""

    list_display = ("token", "query", "annotator", "swapped", "expires_at", "heartbeat_at")
    list_filter = ("query__project",)
    ordering = ("-id",)
    search_fields = ("annotator__username",)


@admin.register(Judgment)
class JudgmentAdmin(ProjectScopedAdmin):
    """Judgments are annotators' answers: viewed here, never written (counters and quality metrics depend on them)."""

    list_display = ("id", "query", "annotator", "choice", "swapped", "time_spent_ms", "excluded_at", "created_at")
    list_filter = ("query__project", "choice", "annotator")
    search_fields = ("annotator__username", "client_id")
    # Newest first along the primary key; no date hierarchy (its year list is a DISTINCT over every judgment).
    ordering = ("-id",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


# --- Webhooks: endpoints registered (and their secret shown once) here or through the API; deliveries viewed ------


class WebhookEndpointForm(ScopedModelForm):
    url = forms.URLField(max_length=2000, assume_scheme="https")
    events = forms.MultipleChoiceField(
        choices=sorted(events.WEBHOOK_EVENTS.items()), widget=forms.CheckboxSelectMultiple
    )

    def clean_url(self) -> str:
        url = self.cleaned_data.get("url", "")
        try:
            return webhooks.url_check(url)
        except ServiceError as error:
            raise ValidationError(error.message) from None

    def clean_events(self) -> list[str]:
        return sorted(set(self.cleaned_data.get("events") or []))


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(ProjectScopedAdmin):
    """A project's webhook endpoints. The signing secret is shown once, when the endpoint is added."""

    form = WebhookEndpointForm
    list_display = ("id", "project", "url", "is_active", "created_at")
    list_filter = ("project", "is_active")
    search_fields = ("url", "description")
    add_fields = ("project", "url", "description", "events", "is_active")
    change_fields = ("url", "description", "events", "is_active")

    def _model_fields(self) -> list[str]:
        hidden = {"secret", "judgments_sent_through", "judgments_due_at"}
        return [name for name in super()._model_fields() if name not in hidden]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        if not change:
            obj.secret = webhooks.secret_new()
            obj.created_by_id = request.user.pk
            created = webhooks.Judgment.objects.filter(query__project_id=obj.project_id).order_by("-id").first()
            obj.judgments_sent_through = created.pk if created else 0
        super().save_model(request, obj, form, change)
        if not change:
            messages.warning(request, f"The endpoint's signing secret (shown only now): {obj.secret}")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ProjectScopedAdmin):
    """The delivery log: viewed here, never written."""

    project_path = "endpoint__project"
    list_display = ("msg_id", "endpoint", "event", "status", "attempts", "response_code", "created_at")
    list_filter = ("endpoint__project", "event", "status")
    search_fields = ("msg_id",)
    list_select_related = ("endpoint__project",)  # the endpoint's name shows its project's slug
    ordering = ("-id",)


def view_on_site(request: HttpRequest, content_type_id: str, object_id: str) -> HttpResponseBase:
    """The admin's "view on site" redirect, for objects the user's admin can see only.

    Django's own shortcut redirects any staff user to any object's page, which would tell a researcher the
    slugs of other projects; here an object outside the user's admin queryset answers like a missing one.
    """
    from django.contrib.contenttypes.models import ContentType
    from django.contrib.contenttypes.views import shortcut
    from django.http import Http404

    def is_id(text: str) -> bool:
        return text.isascii() and text.isdigit() and len(text) <= 18

    visible = False
    if is_id(content_type_id) and is_id(object_id):
        content_type = ContentType.objects.filter(pk=int(content_type_id)).first()
        model = content_type.model_class() if content_type else None
        model_admin = admin.site._registry.get(model) if model else None
        visible = model_admin is not None and model_admin.get_queryset(request).filter(pk=int(object_id)).exists()
    if not visible:
        raise Http404("no such object")
    return shortcut(request, content_type_id, object_id)
