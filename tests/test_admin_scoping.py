"""The Django admin holds against a hostile researcher of another project (issue 9).

Project A belongs to rita (annotators anna and ben; otto is in no project). Project B and B2 belong to olga
(annotator bella). Logged in as olga, the test walks every model registered with the admin site: its change list,
add form and A's change, history and delete pages; then it posts every add form with A's ids in each relation,
every change form of B's rows with A's ids, A's change and delete forms, and every action on A's rows, and checks
that nothing of A changed and nothing new refers to A. A model registered later is walked automatically; one the
walk can't cover (no rows of A to look for) fails the test until ``populate`` makes one.
"""

from __future__ import annotations

import io
import json
import re
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest
from django import forms
from django.contrib import admin
from django.contrib.admin.utils import get_fields_from_path
from django.core.exceptions import ValidationError
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import models
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone
from PIL import Image

from accounts.models import Role, User
from accounts.services import user_create
from labeling import uploads
from labeling.admin import project_path
from labeling.models import (
    Clip,
    Judgment,
    Lease,
    Membership,
    Project,
    ProjectRole,
    Query,
    QuerySource,
    RenderStatus,
    WebhookDelivery,
    WebhookEndpoint,
)
from labeling.services import membership_add, queries_create_random
from trainer.models import ITERATION_STEPS, PolicyCheckpoint, PreferenceSet, RewardModel, Run, RunKind

from .conftest import PASSWORD, add_fake_clips, make_project

A_NAME, A_SLUG = "Aardvark Secret", "aardvark-secret"


# --- The two worlds ----------------------------------------------------------------------------------------------


def populate(project: Project, owner: User, annotators: list[User], *, n_clips: int = 6) -> None:
    """A row of every kind the admin shows, in ``project``."""
    for user in annotators:
        membership_add(project=project, user=user, role=ProjectRole.ANNOTATOR)
    clips = add_fake_clips(project, n_clips)
    queries_create_random(project=project, count=4, rng=np.random.default_rng(0), clips=clips)
    first, second = project.queries.order_by("pk")[:2]
    Judgment.objects.create(query=first, annotator=annotators[0], choice="left", client_id=uuid.uuid4())
    Lease.objects.create(query=second, annotator=annotators[-1], expires_at=timezone.now() + timedelta(hours=1))
    Query.objects.create(
        project=project,
        clip_a=first.clip_a,
        clip_b=first.clip_b,
        source=QuerySource.REPEAT,
        repeat_of=first,
        assigned_to=annotators[0],
    )
    clips_run = Run.objects.create(
        project=project, kind=RunKind.GENERATE_CLIPS, steps=["generating_clips"], state="done", created_by=owner
    )
    project.rollouts.update(run=clips_run.pk)
    preference_set = PreferenceSet.objects.create(
        project=project, run=clips_run, file="preferences/x.parquet", sources="judgments", checksum="0" * 64
    )
    reward_model = RewardModel.objects.create(project=project, version=1, preference_set=preference_set, run=clips_run)
    iteration = Run.objects.create(
        project=project,
        number=1,
        steps=list(ITERATION_STEPS),
        preference_set=preference_set,
        reward_model=reward_model,
        created_by=owner,
    )
    PolicyCheckpoint.objects.create(
        project=project,
        run=iteration,
        reward_model=reward_model,
        algorithm="sac",
        timesteps=10,
        model_file="policies/x.zip",
    )
    endpoint = WebhookEndpoint.objects.create(
        project=project, url=f"https://93.184.215.14/{project.pk}", events=["ranking.submitted"], secret="whsec_AAAA"
    )
    WebhookDelivery.objects.create(
        endpoint=endpoint, msg_id=f"msg_{uuid.uuid4().hex}", event="ranking.submitted", payload={}
    )


class World:
    def __init__(self, rita: User, anna: User, ben: User, otto: User) -> None:
        self.rita, self.anna, self.ben, self.otto = rita, anna, ben, otto
        self.a = make_project(rita, slug=A_SLUG)
        self.a.name = A_NAME
        self.a.save()
        populate(self.a, rita, [anna, ben])
        self.olga = user_create(username="olga", password=PASSWORD, role=Role.RESEARCHER)
        self.bella = user_create(username="bella", password=PASSWORD, role=Role.ANNOTATOR)
        self.b = make_project(self.olga, slug="blue-heron")
        populate(self.b, self.olga, [self.bella])
        self.b2 = make_project(self.olga, slug="second-blue")
        add_fake_clips(self.b2, 2)
        self.root = User.objects.create_superuser(username="root", password=PASSWORD)
        # What olga must never see: A's names and every user outside her projects.
        self.secret_words = [A_NAME, A_SLUG, "rita", "anna", "ben", "otto", "root"]

    def rows(self, model: type[models.Model], project: Project) -> models.QuerySet[Any]:
        path = project_path(model)
        assert path is not None, f"{model.__name__} has no path to a project"
        return model._default_manager.filter(**({"pk": project.pk} if path == "" else {path: project}))

    def olgas_ids(self, model: type[models.Model]) -> set[int]:
        ids: set[int] = set()
        for project in Project.objects.filter(memberships__user=self.olga):
            ids |= set(self.rows(model, project).values_list("pk", flat=True))
        return ids

    def a_ids(self, model: type[models.Model]) -> set[int]:
        if model is User:
            return {self.rita.pk, self.anna.pk, self.ben.pk, self.otto.pk, self.root.pk}
        if project_path(model) is None:
            return set()
        return set(self.rows(model, self.a).values_list("pk", flat=True))

    def a_object(self, model: type[models.Model]) -> models.Model | None:
        if model is User:
            return self.anna
        return self.rows(model, self.a).order_by("pk").first() if project_path(model) is not None else None


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    """Seven users per test: hash their passwords cheaply (the strength of the hash is not under test here)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def world(researcher, annotator, annotator2, outsider) -> World:
    return World(researcher, annotator, annotator2, outsider)


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def snapshot(world: World) -> dict[str, Any]:
    """Every row of A in every registered model, the count of every registered table, and the users."""
    state: dict[str, Any] = {}
    for model in admin.site._registry:
        label = model._meta.label
        state[f"count:{label}"] = model._default_manager.count()
        if model is User:
            state[label] = list(User.objects.order_by("pk").values("pk", "username", "is_staff", "is_superuser"))
        elif project_path(model) is not None:
            state[label] = list(world.rows(model, world.a).order_by("pk").values())
    return state


def url(model: type[models.Model], view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def admin_request(user: User, path: str = "/admin/") -> Any:
    request = RequestFactory().get(path)
    request.user = user
    return request


def researcher_may_use(user: User, model: type[models.Model]) -> bool:
    opts = model._meta
    return any(user.has_perm(f"{opts.app_label}.{a}_{opts.model_name}") for a in ("view", "change", "add", "delete"))


# --- Reading pages -------------------------------------------------------------------------------------------------

_SELECT = re.compile(r'<select name="(?P<name>[^"]+)"[^>]*>(?P<body>.*?)</select>', re.DOTALL)
_OPTION = re.compile(r'<option value="(?P<value>[^"]*)"')
_FILTER_ID = re.compile(r"[?&;](?P<path>[a-z_]+?)__(?:id|pk)__exact=(?P<id>\d+)")


def visible_text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", html)


def assert_no_secret_words(world: World, html: str, where: str) -> None:
    text = visible_text(html)
    for word in world.secret_words:
        assert not re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text), f"{word!r} shown in {where}"


def assert_select_options_scoped(world: World, html: str, form_class: Any, where: str) -> None:
    for match in _SELECT.finditer(html):
        name = match.group("name").rsplit("-", 1)[-1]
        field = form_class.base_fields.get(name) if form_class else None
        related = getattr(getattr(field, "queryset", None), "model", None)
        if related is None:
            continue
        values = {int(v) for v in _OPTION.findall(match.group("body")) if v.isdigit()}
        assert not values & world.a_ids(related), f"{where}: {name} offers rows of A"


def assert_filters_scoped(world: World, model: type[models.Model], html: str, where: str) -> None:
    for match in _FILTER_ID.finditer(html.replace("&amp;", "&")):
        field = get_fields_from_path(model, match.group("path"))[-1]
        assert int(match.group("id")) not in world.a_ids(field.related_model), f"{where}: filter lists A's rows"


# --- Building posts ----------------------------------------------------------------------------------------------

_counter = iter(range(10**6))


def field_value(form_field: Any, model_field: Any, pick: Callable[[type[models.Model]], Any]) -> Any:
    """A plausible posted value for one form field; relations come from ``pick(related model)``."""
    if isinstance(form_field, forms.ModelMultipleChoiceField):
        obj = pick(form_field.queryset.model)
        return [obj.pk] if obj is not None else []
    if isinstance(form_field, forms.ModelChoiceField):
        obj = pick(form_field.queryset.model)
        return obj.pk if obj is not None else ""
    if isinstance(form_field, forms.FileField | forms.BooleanField):
        return None
    default = model_field.get_default() if model_field is not None and model_field.has_default() else None
    if isinstance(form_field, forms.ChoiceField):
        values = [str(v) for v, _ in form_field.choices if v not in ("", None)]  # type: ignore[misc]
        return str(default) if default not in (None, "") else values[0]
    if isinstance(form_field, forms.JSONField):
        return json.dumps(default if default is not None else {})
    if isinstance(form_field, forms.IntegerField | forms.FloatField):
        return default if default is not None else 1
    if isinstance(form_field, forms.SplitDateTimeField):
        return None
    if isinstance(form_field, forms.CharField):
        return f"auto_{next(_counter)}"
    return default


def model_field_of(model: type[models.Model], name: str) -> Any:
    try:
        return model._meta.get_field(name)
    except Exception:
        return None


def unbound_data(form: forms.BaseForm) -> dict[str, Any]:
    """What the browser would post back for an unchanged form (its initial values)."""
    data: dict[str, Any] = {}
    for name, field in form.fields.items():
        key = form.add_prefix(name)
        value = form[name].value()
        widget = field.widget
        if isinstance(field, forms.FileField):
            continue
        if isinstance(widget, forms.MultiWidget):
            for i, part in enumerate(widget.decompress(value)):
                data[f"{key}_{i}"] = "" if part is None else str(part)
        elif isinstance(field, forms.BooleanField):
            if value:
                data[key] = "on"
        elif value is not None:
            data[key] = value
    return data


def formsets_data(model_admin: Any, request: Any, obj: Any) -> list[tuple[str, dict[str, Any], Any]]:
    """(prefix, data, formset class) for each inline, with the management form and the existing rows."""
    result = []
    prefixes: dict[str, int] = {}
    for formset_class, _inline in model_admin.get_formsets_with_inlines(request, obj):
        prefix = formset_class.get_default_prefix()
        prefixes[prefix] = prefixes.get(prefix, 0) + 1
        if prefixes[prefix] != 1:
            prefix = f"{prefix}-{prefixes[prefix]}"
        formset = formset_class(instance=obj if obj is not None else formset_class.fk.related_model(), prefix=prefix)
        data = {formset.management_form.add_prefix(k): v for k, v in formset.management_form.initial.items()}
        data[f"{prefix}-TOTAL_FORMS"] = len(formset.initial_forms)
        for form in formset.initial_forms:
            data.update(unbound_data(form))
        result.append((prefix, data, formset_class))
    return result


def add_inline_row(prefix: str, data: dict[str, Any], formset_class: Any, pick: Callable[[Any], Any]) -> None:
    index = int(data[f"{prefix}-TOTAL_FORMS"])
    model = formset_class.model
    for name, form_field in formset_class.form.base_fields.items():
        if name in (formset_class.fk.name, "id", "DELETE"):
            continue
        value = field_value(form_field, model_field_of(model, name), pick)
        if value is not None:
            data[f"{prefix}-{index}-{name}"] = value
    data[f"{prefix}-TOTAL_FORMS"] = index + 1


def baseline_overrides(world: World, model: type[models.Model]) -> dict[str, Any]:
    """Values that make olga's add form valid where the generic ones are not."""
    if model is Project:
        return {"name": "Brand New", "slug": f"brand-new-{next(_counter)}", "env_id": "Pendulum-v1"}
    if model is Membership:
        return {"project": world.b2.pk, "user": world.bella.pk}
    if model is Clip:
        return {"project": world.b.pk, "rollout": world.b.rollouts.first().pk, "start": 1, "length": 3}
    if model is Query:
        asked = set(world.b.queries.values_list("clip_a", "clip_b"))
        ids = sorted(world.b.clips.values_list("pk", flat=True))
        a, b = next((x, y) for x in ids for y in ids if x < y and (x, y) not in asked)
        return {"project": world.b.pk, "clip_a": a, "clip_b": b}
    if model is WebhookEndpoint:  # a public address literal: no DNS lookup, not refused as private
        return {"url": "https://93.184.215.14/new", "events": ["ranking.submitted"]}
    return {}


def b_pick(world: World) -> Callable[[type[models.Model]], Any]:
    def pick(model: type[models.Model]) -> Any:
        if model is User:
            return world.bella
        if model is Project:
            return world.b
        return world.rows(model, world.b).order_by("pk").first()

    return pick


# --- The walk ----------------------------------------------------------------------------------------------------


def test_every_registered_admin_is_scoped_for_a_researcher_of_another_project(world):
    olga = world.olga
    client = login(olga)
    before = snapshot(world)
    walked = []
    for model, model_admin in list(admin.site._registry.items()):
        name = model._meta.label
        request = admin_request(olga)
        if not researcher_may_use(olga, model):
            # Closed to researchers altogether (users, groups, tokens, login records).
            assert client.get(url(model, "changelist")).status_code == 403, name
            assert client.get(url(model, "add")).status_code == 403, name
            assert client.post(url(model, "add"), {}).status_code == 403, name
            for pk in list(world.a_ids(model))[:2]:
                assert client.get(url(model, "change", pk)).status_code == 403, name
            walked.append(model)
            continue

        a_ids = world.a_ids(model)
        assert a_ids, f"populate() must give project A a row of {name} so the walk covers it"
        b_ids = world.olgas_ids(model)

        # The change list: none of A's rows, names or filter values.
        page = client.get(url(model, "changelist"))
        assert page.status_code == 200, name
        html = page.content.decode()
        listed = {
            int(pk) for pk in re.findall(rf"/admin/{model._meta.app_label}/{model._meta.model_name}/(\d+)/", html)
        }
        assert listed and listed <= b_ids, name
        assert not listed & a_ids, name
        assert_no_secret_words(world, html, f"{name} change list")
        assert_filters_scoped(world, model, html, f"{name} change list")
        for a_pk in a_ids:
            filtered = client.get(url(model, "changelist"), {"q": str(a_pk)}).content.decode()
            assert f"/{model._meta.model_name}/{a_pk}/change/" not in filtered, name

        # A's rows answer like rows that don't exist.
        for pk in a_ids:
            for view in ("change", "history", "delete"):
                response = client.get(url(model, view, pk))
                if view == "delete" and not model_admin.has_delete_permission(request):
                    assert response.status_code == 403, name  # the same for rows that exist and rows that don't
                    continue
                assert response.status_code == 302 and response["Location"] == reverse("admin:index"), (name, view)

        # The add form offers nothing of A.
        can_add = model_admin.has_add_permission(request)
        add_page = client.get(url(model, "add"))
        assert add_page.status_code == (200 if can_add else 403), name
        form_class = model_admin.get_form(request, None, change=False) if can_add else None
        if can_add:
            assert_no_secret_words(world, add_page.content.decode(), f"{name} add form")
            assert_select_options_scoped(world, add_page.content.decode(), form_class, f"{name} add form")
            for _formset_class, inline in model_admin.get_formsets_with_inlines(request, None):
                assert_select_options_scoped(world, add_page.content.decode(), _formset_class.form, name)
                assert inline  # inlines rendered on the same page
            check_add_posts(world, client, model, model_admin, form_class)
        else:
            assert client.post(url(model, "add"), {}).status_code == 403, name

        check_change_posts_of_b(world, client, model, model_admin)
        check_posts_on_a(world, client, model, model_admin)
        assert snapshot(world)[name] == before[name], f"{name}: A's rows changed"
        walked.append(model)

    assert set(walked) == set(admin.site._registry)
    after = snapshot(world)
    for key, value in before.items():
        if not key.startswith("count:"):
            assert after[key] == value, f"{key}: A changed"


def check_add_posts(world: World, client: Client, model: Any, model_admin: Any, form_class: Any) -> None:
    name = model._meta.label
    request = admin_request(world.olga)
    pick_b = b_pick(world)

    def payload(pick: Callable[[Any], Any], overrides: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for field_name, form_field in form_class.base_fields.items():
            value = field_value(form_field, model_field_of(model, field_name), pick_b)
            if value is not None:
                data[field_name] = value
        data.update(baseline_overrides(world, model))
        data.update(overrides)
        for prefix, inline_data, formset_class in formsets_data(model_admin, request, None):
            data.update(inline_data)
            if pick is not pick_b:
                add_inline_row(prefix, data, formset_class, pick)
        return data

    # A valid post with B's rows is accepted, so a refusal below is the scoping, not a bad payload.
    count = model._default_manager.count()
    response = client.post(url(model, "add"), payload(pick_b, {}))
    assert response.status_code == 302, f"{name}: the baseline add failed: {form_errors(response)}"
    assert model._default_manager.count() == count + 1, name

    relations = {
        field_name: form_field.queryset.model
        for field_name, form_field in form_class.base_fields.items()
        if isinstance(form_field, forms.ModelChoiceField)
    }
    attacks: list[dict[str, Any]] = []
    for field_name, related in relations.items():
        for foreign in {world.a_object(related), world.otto if related is User else None} - {None}:
            attacks.append({field_name: foreign.pk})
    if relations:
        attacks.append({field_name: world.a_object(related).pk for field_name, related in relations.items()})

    def pick_a(related: Any) -> Any:
        return world.a_object(related)

    for attack in attacks:
        before = snapshot(world)
        response = client.post(url(model, "add"), payload(pick_b, attack))
        assert response.status_code == 200 and "errorlist" in response.content.decode(), (name, attack)
        assert_no_secret_words(world, response.content.decode(), f"{name} add errors")
        assert snapshot(world) == before, (name, attack)
    # Inline rows that point into A (a user of A's in the project's memberships, …).
    if any(True for _ in model_admin.get_formsets_with_inlines(request, None)):
        before = snapshot(world)
        response = client.post(url(model, "add"), payload(pick_a, {}))
        assert response.status_code == 200 and "errorlist" in response.content.decode(), name
        assert snapshot(world) == before, name


def form_errors(response: Any) -> str:
    context = getattr(response, "context", None)
    if not context or "adminform" not in context:
        return f"status {response.status_code}"
    errors = dict(context["adminform"].form.errors)
    for formset in context.get("inline_admin_formsets", []):
        errors[formset.formset.prefix] = formset.formset.errors
    return str(errors)


def check_change_posts_of_b(world: World, client: Client, model: Any, model_admin: Any) -> None:
    """Olga posts her own row's change form with A's ids in every relation (editable or not): none sticks."""
    name = model._meta.label
    request = admin_request(world.olga)
    obj = world.rows(model, world.b).order_by("pk").first()
    relation_fields = [f for f in model._meta.get_fields() if f.concrete and f.is_relation and f.related_model]
    before_relations = {f.attname: getattr(obj, f.attname) for f in relation_fields if hasattr(f, "attname")}
    form_class = model_admin.get_form(request, obj, change=True)
    data = unbound_data(form_class(instance=obj))
    for prefix, inline_data, formset_class in formsets_data(model_admin, request, obj):
        data.update(inline_data)
        add_inline_row(prefix, data, formset_class, world.a_object)
    for field in relation_fields:
        foreign = world.a_object(field.related_model)
        if foreign is not None:
            data[field.name] = foreign.pk
    before = snapshot(world)
    response = client.post(url(model, "change", obj.pk), data)
    assert response.status_code in (200, 302, 403), name
    obj.refresh_from_db()
    assert {a: getattr(obj, a) for a in before_relations} == before_relations, f"{name}: a relation moved"
    assert snapshot(world) == before, name


def check_posts_on_a(world: World, client: Client, model: Any, model_admin: Any) -> None:
    """Olga posts A's own change form (as rita would), A's delete form, and every action on A's rows."""
    name = model._meta.label
    a_obj = world.a_object(model)
    rita_request = admin_request(world.rita)
    before = snapshot(world)
    if model_admin.has_change_permission(rita_request, a_obj):
        data = unbound_data(model_admin.get_form(rita_request, a_obj, change=True)(instance=a_obj))
        for _prefix, inline_data, _formset_class in formsets_data(model_admin, rita_request, a_obj):
            data.update(inline_data)
        response = client.post(url(model, "change", a_obj.pk), data)
        assert response.status_code == 302 and response["Location"] == reverse("admin:index"), name
    response = client.post(url(model, "delete", a_obj.pk), {"post": "yes"})
    assert response.status_code in (302, 403), name
    for action in model_admin.get_actions(admin_request(world.olga)):
        client.post(
            url(model, "changelist"),
            {"action": action, "_selected_action": sorted(world.a_ids(model)), "post": "yes", "index": 0},
        )
    assert snapshot(world) == before, f"{name}: olga changed A"


# --- Pickers, consistency and ownership -----------------------------------------------------------------------------


def autocomplete(client: Client, model_name: str = "membership", field_name: str = "user", term: str = "") -> Any:
    return client.get(
        "/admin/autocomplete/",
        {"app_label": "labeling", "model_name": model_name, "field_name": field_name, "term": term},
    )


def test_user_autocomplete_lists_only_members_of_the_researchers_projects(world):
    response = autocomplete(login(world.olga))
    assert response.status_code == 200
    names = {row["text"] for row in response.json()["results"]}
    assert names == {"olga", "bella"}
    assert autocomplete(login(world.olga), term="ann").json()["results"] == []
    assert {row["text"] for row in autocomplete(login(world.rita)).json()["results"]} == {"rita", "anna", "ben"}
    judged_by = autocomplete(login(world.olga), model_name="judgment", field_name="annotator")
    assert {row["text"] for row in judged_by.json()["results"]} <= {"olga", "bella"}
    # A user field of a model the researcher has no right to (API tokens) doesn't open the picker.
    tokens = {"app_label": "authtoken", "model_name": "token", "field_name": "user", "term": ""}
    assert login(world.olga).get("/admin/autocomplete/", tokens).status_code == 403
    # Superusers see everyone; annotators and anonymous visitors get nothing.
    assert {"rita", "otto", "olga"} <= {row["text"] for row in autocomplete(login(world.root)).json()["results"]}
    assert autocomplete(login(world.anna)).status_code == 302
    assert autocomplete(Client()).status_code == 302
    # The user pages stay closed to researchers.
    assert login(world.olga).get(url(User, "changelist")).status_code == 403
    assert login(world.olga).get(url(User, "change", world.olga.pk)).status_code == 403


def test_same_project_rules_hold_between_a_researchers_own_projects(world):
    client = login(world.olga)
    b_clips = list(world.b.clips.order_by("pk"))
    b2_clip = world.b2.clips.order_by("pk").first()
    count = Query.objects.count()
    response = client.post(
        url(Query, "add"), {"project": world.b.pk, "clip_a": b_clips[0].pk, "clip_b": b2_clip.pk, "priority": 0}
    )
    assert response.status_code == 200 and "This belongs to another project." in response.content.decode()
    assert Query.objects.count() == count
    count = Clip.objects.count()
    response = client.post(
        url(Clip, "add"), {"project": world.b2.pk, "rollout": world.b.rollouts.first().pk, "start": 2, "length": 3}
    )
    assert response.status_code == 200 and "This belongs to another project." in response.content.decode()
    assert Clip.objects.count() == count
    # A query's pair is stored in canonical order, whichever way round it was typed.
    asked = set(world.b.queries.values_list("clip_a", "clip_b"))
    high, low = next((y, x) for x in b_clips for y in b_clips if x.pk < y.pk and (x.pk, y.pk) not in asked)
    response = client.post(
        url(Query, "add"), {"project": world.b.pk, "clip_a": high.pk, "clip_b": low.pk, "priority": 3}
    )
    assert response.status_code == 302
    query = Query.objects.latest("pk")
    assert (query.clip_a_id, query.clip_b_id, query.answers_wanted) == (low.pk, high.pk, world.b.overlap)


def test_platform_owned_rows_and_fields_are_read_only(world):
    client = login(world.olga)
    judgment = Judgment.objects.get(query__project=world.b)
    assert client.get(url(Judgment, "add")).status_code == 403
    assert client.get(url(Lease, "add")).status_code == 403
    page = client.get(url(Judgment, "change", judgment.pk))
    assert page.status_code == 200 and 'name="choice"' not in page.content.decode()
    client.post(url(Judgment, "change", judgment.pk), {"choice": "right", "swapped": "on"})
    judgment.refresh_from_db()
    assert judgment.choice == "left" and not judgment.swapped
    assert client.post(url(Judgment, "delete", judgment.pk), {"post": "yes"}).status_code == 403
    # A lease may be deleted to free its query.
    lease = Lease.objects.get(query__project=world.b)
    assert client.post(url(Lease, "delete", lease.pk), {"post": "yes"}).status_code == 302
    assert not Lease.objects.filter(pk=lease.pk).exists()
    # Queries: priority and status stay editable, the counters don't.
    query = world.b.queries.order_by("pk").first()
    form = client.get(url(Query, "change", query.pk)).content.decode()
    assert 'name="priority"' in form and 'name="answers_given"' not in form and 'name="clip_a"' not in form
    client.post(url(Query, "change", query.pk), {"priority": 7, "status": "retired", "answers_given": 99})
    query.refresh_from_db()
    assert (query.priority, query.status, query.answers_given) == (7, "retired", 0)
    # Clips: render state and factor totals are the platform's.
    clip = world.b.clips.order_by("pk").first()
    form = client.get(url(Clip, "change", clip.pk)).content.decode()
    for field in ("render_status", "render_error", "factor_totals", "true_return", "start", "rollout"):
        assert f'name="{field}"' not in form, field
    for model in (PreferenceSet, RewardModel, PolicyCheckpoint):
        obj = world.rows(model, world.b).first()
        assert client.get(url(model, "add")).status_code == 403
        assert "<input" not in re.sub(r'<input type="hidden"[^>]*>', "", page_form(client, model, obj.pk))


def page_form(client: Client, model: Any, pk: int) -> str:
    html = client.get(url(model, "change", pk)).content.decode()
    form = re.search(r'<form [^>]*id="\w+_form".*?</form>', html, re.DOTALL)
    assert form is not None
    return re.sub(r'<input type="(?:submit|hidden)"[^>]*>', "", form.group(0))


def test_a_project_created_in_the_admin_belongs_to_its_creator(world):
    client = login(world.olga)
    response = client.post(
        url(Project, "add"),
        {
            "name": "Made In Admin",
            "slug": "made-in-admin",
            "env_id": "Pendulum-v1",
            "segment_steps": 50,
            "render_width": 320,
            "render_height": 240,
            "feedback_mode": "both",
            "overlap": 1,
            "lease_ttl_seconds": 300,
            "loop_settings": "{}",
            "env_kwargs": "{}",
            "gold_rate": 0,
            "repeat_rate": 0,
            "qualification_size": 0,
            "qualification_threshold": 0.8,
            "status": "active",
            **{f"{prefix}-{k}": v for prefix in ("factors", "memberships") for k, v in MANAGEMENT.items()},
        },
    )
    assert response.status_code == 302, form_errors(response)
    project = Project.objects.get(slug="made-in-admin")
    assert project.created_by == world.olga
    assert Membership.objects.get(project=project, user=world.olga).role == ProjectRole.RESEARCHER
    assert "Made In Admin" in client.get(reverse("home")).content.decode()
    assert client.get(url(Project, "change", project.pk)).status_code == 200
    # An unknown environment is refused.
    response = client.post(url(Project, "add"), {"name": "X", "slug": "x", "env_id": "Nope-v0"})
    assert response.status_code == 200 and not Project.objects.filter(slug="x").exists()


MANAGEMENT = {"TOTAL_FORMS": 0, "INITIAL_FORMS": 0, "MIN_NUM_FORMS": 0, "MAX_NUM_FORMS": 1000}


def test_superusers_still_see_everything(world):
    client = login(world.root)
    for model in admin.site._registry:
        assert client.get(url(model, "changelist")).status_code == 200, model
        if project_path(model) is None:
            continue
        html = client.get(url(model, "changelist")).content.decode()
        for project in (world.a, world.b):
            pk = world.rows(model, project).order_by("pk").first().pk
            assert f"/{model._meta.model_name}/{pk}/change/" in html, model
    assert client.get(url(Clip, "change", world.a.clips.first().pk)).status_code == 200


# --- Uploads ---------------------------------------------------------------------------------------------------


def h264_mp4(tmp_path) -> bytes:
    path = tmp_path / "real.mp4"
    writer = imageio_ffmpeg.write_frames(
        str(path), (64, 64), codec="libx264", pix_fmt_out="yuv420p", fps=10, macro_block_size=1
    )
    writer.send(None)
    for i in range(8):
        writer.send(np.full((64, 64, 3), 30 * i, dtype=np.uint8).tobytes())
    writer.close()
    return path.read_bytes()


def png_bytes(image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 40, 40)).save(buffer, image_format)
    return buffer.getvalue()


EVIL_HTML = b"<html><body><script>alert(document.cookie)</script></body></html>"
EVIL_SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(document.cookie)"><rect width="9"/></svg>'


def test_clip_uploads_are_checked_by_content(project, researcher, tmp_path):
    clip = add_fake_clips(project, 1, ready=False)[0]
    client = login(researcher)
    change = url(Clip, "change", clip.pk)

    for field, name, content in (("video", "clip.mp4", EVIL_HTML), ("poster", "poster.png", EVIL_SVG)):
        response = client.post(change, {field: SimpleUploadedFile(name, content, content_type="video/mp4")})
        assert response.status_code == 200 and "errorlist" in response.content.decode(), field
        clip.refresh_from_db()
        assert not clip.video and not clip.poster and clip.render_status == RenderStatus.PENDING

    response = client.post(
        change,
        {
            "video": SimpleUploadedFile("evil.html", h264_mp4(tmp_path), content_type="text/html"),
            "poster": SimpleUploadedFile("poster.svg", png_bytes(), content_type="image/svg+xml"),
        },
    )
    assert response.status_code == 302, form_errors(response)
    clip.refresh_from_db()
    assert clip.video.name.endswith(".mp4") and clip.poster.name.endswith(".png")
    assert clip.render_status == RenderStatus.READY
    assert clip.video.read()[4:8] == b"ftyp"


def test_upload_checks_take_paths_and_file_objects(tmp_path):
    video = h264_mp4(tmp_path)
    uploads.check_video(tmp_path / "real.mp4")
    stream = io.BytesIO(video)
    stream.seek(5)
    uploads.check_video(stream)
    assert stream.tell() == 5
    assert uploads.check_image(io.BytesIO(png_bytes())) == "PNG"
    assert uploads.check_image(io.BytesIO(png_bytes("JPEG"))) == "JPEG"

    mpeg4 = tmp_path / "mpeg4.mp4"
    writer = imageio_ffmpeg.write_frames(str(mpeg4), (64, 64), codec="mpeg4", fps=10, macro_block_size=1)
    writer.send(None)
    writer.send(np.zeros((64, 64, 3), dtype=np.uint8).tobytes())
    writer.close()
    refused = [
        (uploads.check_video, EVIL_HTML),
        (uploads.check_video, b"\x00\x00\x00\x18ftypmp42" + bytes(200)),  # an MP4 header and nothing behind it
        (uploads.check_video, mpeg4.read_bytes()),  # MP4, but not H.264
        (uploads.check_image, EVIL_SVG),
        (uploads.check_image, png_bytes("GIF")),
        (uploads.check_image, png_bytes()[:40]),  # truncated
    ]
    for check, content in refused:
        with pytest.raises(ValidationError):
            check(io.BytesIO(content))


def test_view_on_site_redirects_only_to_the_researchers_own_objects(world):
    from django.contrib.contenttypes.models import ContentType

    project_type = ContentType.objects.get_for_model(Project).pk
    client = login(world.olga)
    mine = client.get(f"/admin/r/{project_type}/{world.b.pk}/")
    assert mine.status_code == 302 and mine["Location"].endswith(f"/projects/{world.b.slug}/")
    theirs = client.get(f"/admin/r/{project_type}/{world.a.pk}/")
    missing = client.get(f"/admin/r/{project_type}/999999/")
    assert theirs.status_code == missing.status_code == 404
    assert A_SLUG not in theirs.content.decode()
    assert client.get(f"/admin/r/{project_type}/not-an-id/").status_code == 404
    assert client.get(f"/admin/r/{'9' * 5000}/1/").status_code == 404
