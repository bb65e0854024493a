"""No existence oracle: an object the caller can't see answers exactly like one that doesn't exist.

For every detail route with an id (API and pages), the answer to another project's existing id is compared,
byte for byte, with the answer to a missing id: as an outsider (member of nothing) and as the researcher of
another project. Members who aren't researchers may get a 403 on researcher-only routes (they know the project).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.test import Client

from accounts.models import Role
from accounts.services import user_create
from labeling import assignment
from labeling.models import Judgment, ProjectRole
from labeling.services import membership_add, queries_create_random
from tests.conftest import PASSWORD, add_fake_clips, api_client_for, make_project
from trainer.models import ITERATION_STEPS, PolicyCheckpoint, PreferenceSet, RewardModel, Run, RunKind

MISSING_ID = 987_654_321


@dataclass
class World:
    job: int
    reward_model: int
    iteration: int
    policy: int
    query: int
    judgment: int
    lease: str
    clip: int
    slug: str
    other_slug: str


@pytest.fixture
def world(researcher, annotator) -> World:
    project = make_project(researcher, slug="secret")
    membership_add(project=project, user=annotator, role=ProjectRole.ANNOTATOR)
    clips = add_fake_clips(project, 6)
    queries_create_random(project=project, count=4, rng=np.random.default_rng(0), clips=clips)
    first = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert first is not None
    judged = assignment.judgment_submit(
        query_id=first.query_id, annotator=annotator, choice="left", lease_token=first.token, client_id=uuid.uuid4()
    ).judgment
    lease = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert lease is not None
    job = Run.objects.create(
        project=project, kind=RunKind.GENERATE_CLIPS, steps=["generating_clips"], created_by=researcher
    )
    preference_set = PreferenceSet(project=project, sources="rankings", checksum="0" * 64)
    preference_set.file.save("p.parquet", ContentFile(b"PAR1"), save=False)
    preference_set.save()
    reward_model = RewardModel(project=project, version=1, preference_set=preference_set, status="ready")
    reward_model.weights.save("w.safetensors", ContentFile(b"weights"), save=False)
    reward_model.save()
    iteration = Run.objects.create(project=project, number=1, steps=list(ITERATION_STEPS))
    policy = PolicyCheckpoint(project=project, run=iteration, algorithm="sac", timesteps=10)
    policy.model_file.save("policy.zip", ContentFile(b"PK"), save=False)
    policy.save()

    rex = user_create(username="rex", password=PASSWORD, role=Role.RESEARCHER)
    other = make_project(rex, slug="elsewhere")
    add_fake_clips(other, 2)
    return World(
        job=job.pk,
        reward_model=reward_model.pk,
        iteration=iteration.pk,
        policy=policy.pk,
        query=lease.query_id,
        judgment=judged.pk,
        lease=str(lease.token),
        clip=clips[0].pk,
        slug=project.slug,
        other_slug=other.slug,
    )


# (method, path template, body); {id} is filled with the object's id or a missing one.
API_ROUTES = [
    ("get", "/api/v1/runs/{job}/", None),
    ("get", "/api/v1/reward-models/{reward_model}/weights", None),
    ("get", "/api/v1/reward-models/{reward_model}/weights?part=metadata", None),
    ("get", "/api/v1/runs/{iteration}/", None),
    ("post", "/api/v1/runs/{iteration}/", {"action": "pause"}),
    ("get", "/api/v1/policies/{policy}/checkpoint", None),
    (
        "post",
        "/api/v1/queries/{query}/judgments/",
        {"choice": "left", "lease": str(uuid.UUID(int=1)), "client_id": str(uuid.UUID(int=2))},
    ),
    ("patch", "/api/v1/judgments/{judgment}/", {"choice": "right"}),
    ("post", "/api/v1/judgments/{judgment}/undo/", None),
    ("post", "/api/v1/leases/{lease}/heartbeat/", None),
    ("post", "/api/v1/leases/{lease}/skip/", None),
    ("post", "/api/v1/leases/{lease}/release/", None),
]


def _fill(template: str, world: World, *, missing: bool) -> str:
    values = {
        name: (str(uuid.UUID(int=7)) if name == "lease" else MISSING_ID) if missing else getattr(world, name)
        for name in ("job", "reward_model", "iteration", "policy", "query", "judgment", "lease", "clip")
    }
    return template.format(**values, slug=world.slug, other_slug=world.other_slug)


@pytest.mark.parametrize("caller", ["outsider", "other_researcher"])
@pytest.mark.parametrize(("method", "template", "body"), API_ROUTES)
def test_api_detail_routes_answer_alike_for_hidden_and_missing(world, outsider, caller, method, template, body):
    from accounts.models import User

    user = outsider if caller == "outsider" else User.objects.get(username="rex")
    client = api_client_for(user)

    def call(missing: bool):
        return getattr(client, method)(_fill(template, world, missing=missing), body, format="json")

    hidden, absent = call(False), call(True)
    assert hidden.status_code in (204, 404, 409), hidden.content
    assert (hidden.status_code, _unmasked(hidden.content)) == (absent.status_code, _unmasked(absent.content))
    # and nothing happened to the hidden objects
    assert Judgment.objects.filter(pk=world.judgment).exists()
    assert Run.objects.get(pk=world.iteration).paused is False


PAGE_ROUTES = [
    ("post", "/projects/{other_slug}/runs/{iteration}/", {"action": "pause"}),
    ("post", "/projects/{slug}/runs/{iteration}/", {"action": "pause"}),
    ("post", "/projects/{other_slug}/history/", {"judgment": "{judgment}", "choice": "right"}),
    ("post", "/leases/{lease}/heartbeat/", None),
    ("post", "/leases/{lease}/release/", None),
    ("get", "/media/clips/{clip}/video", None),
    ("get", "/media/clips/{clip}/poster", None),
]


def _unmasked(body: bytes) -> bytes:
    """The page without its CSRF tokens: Django masks the token afresh in every response (BREACH), so two
    renders of the same friendly 404 page differ only there."""
    import re

    body = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]*"', b'name="csrfmiddlewaretoken"', body)
    return re.sub(rb'"X-CSRFToken": "[^"]*"', b'"X-CSRFToken"', body)


@pytest.mark.parametrize("caller", ["outsider", "other_researcher"])
@pytest.mark.parametrize(("method", "template", "data"), PAGE_ROUTES)
def test_page_routes_answer_alike_for_hidden_and_missing(world, outsider, caller, method, template, data):
    from accounts.models import User

    user = outsider if caller == "outsider" else User.objects.get(username="rex")
    if caller == "outsider" and "{other_slug}" in template:
        pytest.skip("the outsider belongs to no project")
    client = Client()
    client.force_login(user)

    def call(missing: bool):
        form = {key: _fill(value, world, missing=missing) for key, value in (data or {}).items()}
        return getattr(client, method)(_fill(template, world, missing=missing), form)

    hidden, absent = call(False), call(True)
    assert hidden.status_code in (204, 404, 409), hidden.content
    assert (hidden.status_code, _unmasked(hidden.content)) == (absent.status_code, _unmasked(absent.content))
    assert Run.objects.get(pk=world.iteration).paused is False


def test_members_who_are_not_researchers_may_get_a_403(world, annotator):
    """Inside a project the caller belongs to, researcher-only routes say so (the project is known to them)."""
    client = api_client_for(annotator)
    response = client.get(f"/api/v1/runs/{world.job}/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "permission_denied"
    assert client.get(f"/api/v1/runs/{MISSING_ID}/").status_code == 404


def test_researchers_still_see_their_objects(world, researcher):
    client = api_client_for(researcher)
    assert client.get(f"/api/v1/runs/{world.job}/").status_code == 200
    assert client.get(f"/api/v1/runs/{world.iteration}/").status_code == 200
    assert client.get(f"/api/v1/reward-models/{world.reward_model}/weights").status_code == 200
    assert client.get(f"/api/v1/policies/{world.policy}/checkpoint").status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/v1/reward-models/{n}/weights", "/api/v1/runs/{n}/", "/projects/secret/runs/{n}/"]
)
def test_over_long_ids_are_a_plain_404(world, researcher, path):
    client = api_client_for(researcher)
    client.force_login(researcher)
    for bad in ("9" * 19, "9" * 5000, "²"):
        response = client.get(path.format(n=bad))
        assert response.status_code == 404, (bad[:20], response.status_code)
