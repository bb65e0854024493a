"""Every route in one permission matrix (DESIGN.md §12).

The routes come from the URL configuration itself (``get_resolver()``, walked recursively), so a route added
without an entry in ``EXPECTED`` fails here, and so does an entry whose route was removed or renamed. Each
route is requested, with each method it is meant to answer, by five personas:

- ``anonymous``: no session, no token;
- ``outsider``: signed in, member of no project;
- ``annotator``: an annotator of project A (the project every path parameter points into);
- ``other_researcher``: the researcher who owns project B and has nothing to do with A;
- ``researcher``: project A's researcher.

API routes (``api/…``) are called with DRF's APIClient and the persona's token; pages with Django's test
client after ``force_login``. The rules from the design:

- anonymous API callers get 401 (403 is accepted too: which one DRF picks depends on the first authenticator);
  anonymous page visits get a 302 to the login page;
- outsiders and other projects' researchers get 404 for anything inside project A: no existence oracle;
- annotators get 403 on researcher-only API routes and 404 on researcher-only pages
  (``frontend.views._researcher_project``);
- a method a route is not listed with must be refused with 405.

Not in the matrix: everything under ``admin/`` (the admin has its own tests, ``tests/test_admin*.py``).
Static files are not in the URL configuration (WhiteNoise serves them from middleware), so there is nothing
else to leave out; the schema and the API docs are public and are in the matrix.

Every request runs in a savepoint that is rolled back afterwards, so each persona meets the same world (the
annotator's undo does not take the judgment away from the researcher's request). Nothing heavy runs: task
sending is stubbed, and ``transaction.on_commit`` callbacks never fire inside a test transaction anyway.
"""

from __future__ import annotations

import hashlib
import io
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from django.db import transaction
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import ApiToken, Role, User
from accounts.services import user_create
from accounts.tokens import token_create
from labeling import assignment
from labeling.invites import invite_token
from labeling.models import (
    ExportJob,
    FactorRanking,
    Invite,
    Judgment,
    Lease,
    Membership,
    Project,
    ProjectRole,
    Query,
    WebhookEndpoint,
)
from labeling.services import invite_create, membership_add, queries_create_random
from tests.conftest import PASSWORD, add_fake_clips, make_project

PERSONAS = ("anonymous", "outsider", "annotator", "other_researcher", "researcher")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
SKIPPED_NAMESPACES = {"admin"}  # tested by the admin's own tests
SKIPPED_PREFIXES = ("admin/",)  # the same, for admin routes outside the namespace (the scoped view-on-site)
FAST_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # seeding four users in ms, not seconds

# Status sets, named for how they read in the table.
UNAUTHENTICATED = {401, 403}  # DRF: 401 with TokenAuthentication first; 403 if a session authenticator answers
TO_LOGIN = 302  # pages: login_required redirects to settings.LOGIN_URL
HIDDEN = 404  # the project (or object) is none of the caller's business: answers as if it did not exist
FORBIDDEN = 403  # API: a member of the project, but not its researcher


def api_researcher_only(ok: int) -> dict[str, int | set[int]]:
    return {
        "anonymous": UNAUTHENTICATED,
        "outsider": HIDDEN,
        "annotator": FORBIDDEN,
        "other_researcher": HIDDEN,
        "researcher": ok,
    }


def api_members(annotator: int, researcher: int | None = None) -> dict[str, int | set[int]]:
    return {
        "anonymous": UNAUTHENTICATED,
        "outsider": HIDDEN,
        "annotator": annotator,
        "other_researcher": HIDDEN,
        "researcher": annotator if researcher is None else researcher,
    }


def page_researcher_only(ok: int) -> dict[str, int | set[int]]:
    return {
        "anonymous": TO_LOGIN,
        "outsider": HIDDEN,
        "annotator": HIDDEN,
        "other_researcher": HIDDEN,
        "researcher": ok,
    }


def page_members(annotator: int, researcher: int | None = None) -> dict[str, int | set[int]]:
    return {
        "anonymous": TO_LOGIN,
        "outsider": HIDDEN,
        "annotator": annotator,
        "other_researcher": HIDDEN,
        "researcher": annotator if researcher is None else researcher,
    }


def everyone(status: int, anonymous: int | set[int] | None = None) -> dict[str, int | set[int]]:
    return {p: status for p in PERSONAS} | ({"anonymous": anonymous} if anonymous is not None else {})


# (route name, method) → expected status per persona. Read a line as: "GET api-clips: anonymous gets 401 or 403,
# outsiders 404, the annotator 200, …". Objects named in a path are project A's (see ``World``).
EXPECTED: dict[tuple[str, str], dict[str, int | set[int]]] = {
    # --- accounts and public API documents ---
    ("login", "GET"): everyone(302, anonymous=200),  # signed-in users are sent home
    ("login", "POST"): everyone(302, anonymous=200),  # anonymous: an empty form is shown again with its errors
    ("login", "PUT"): everyone(302, anonymous=200),  # Django's ProcessFormView answers PUT like POST
    ("logout", "POST"): everyone(302),
    ("api-token", "POST"): everyone(200, anonymous=400),  # personas send their password; anonymous sends nothing
    # Named API tokens: each persona sees and makes their own; the world's token is the researcher's, so anyone
    # else revoking it is told there is no such token.
    ("api-tokens", "GET"): everyone(200, anonymous=UNAUTHENTICATED),
    ("api-tokens", "POST"): everyone(201, anonymous=UNAUTHENTICATED),
    ("api-token-detail", "DELETE"): everyone(404, anonymous=UNAUTHENTICATED) | {"researcher": 204},
    ("account-tokens", "GET"): everyone(200, anonymous=TO_LOGIN),
    ("account-tokens", "POST"): everyone(200, anonymous=TO_LOGIN),
    ("account-token-revoke", "POST"): everyone(404, anonymous=TO_LOGIN) | {"researcher": 302},
    ("api-schema", "GET"): everyone(200),
    ("api-docs", "GET"): everyone(200),
    # --- API: projects, clips, queries, judgments, leases ---
    ("api-projects", "GET"): everyone(200, anonymous=UNAUTHENTICATED),  # each sees only their own projects
    # Any researcher may create a project; annotators (the outsider is one) may not.
    ("api-projects", "POST"): everyone(201, anonymous=UNAUTHENTICATED)
    | {"outsider": FORBIDDEN, "annotator": FORBIDDEN},
    ("api-project-detail", "GET"): api_members(200),
    ("api-project-spec", "GET"): api_researcher_only(200),  # the spec holds the loop settings: researchers only
    ("api-clips", "GET"): api_members(200),
    ("api-query-next", "POST"): api_members(200),
    # Pairs a program asks for and their answers (imitation's gatherer): the answers are everyone's, so researchers.
    ("api-queries", "GET"): api_researcher_only(200),
    ("api-queries", "POST"): api_researcher_only(200),  # the world's pair is asked already: its query comes back
    ("api-judgments", "POST"): api_members(201, researcher=409),  # the lease is the annotator's: lease_invalid
    ("api-judgment-detail", "PATCH"): api_members(200, researcher=404),  # only the author revises
    ("api-judgment-undo", "POST"): api_members(200, researcher=404),  # only the author undoes
    # Leases are the annotator's own; for anybody else a token answers like an unknown one.
    ("api-lease-heartbeat", "POST"): everyone(409, anonymous=UNAUTHENTICATED) | {"annotator": 200},
    ("api-lease-skip", "POST"): everyone(404, anonymous=UNAUTHENTICATED) | {"annotator": 204},
    ("api-lease-release", "POST"): everyone(204, anonymous=UNAUTHENTICATED),  # idempotent: releasing nothing is fine
    # --- API: rankings, exports ---
    ("api-rankings", "GET"): api_members(200),  # annotators see their own rankings only
    ("api-rankings", "POST"): api_members(201),
    ("api-export-judgments", "GET"): api_researcher_only(200),
    ("api-export-preferences", "GET"): api_researcher_only(200),
    ("api-export-clips", "GET"): api_researcher_only(200),
    ("api-export-rankings", "GET"): api_researcher_only(200),
    ("api-export-jobs", "GET"): api_researcher_only(200),
    ("api-export-jobs", "POST"): api_researcher_only(202),
    ("api-export-job", "GET"): api_researcher_only(200),
    ("api-export-download", "GET"): api_researcher_only(200),
    # --- API: members, invites and the audit log (researchers only); taking an invite (anyone signed in) ---
    ("api-members", "GET"): api_researcher_only(200),
    ("api-members", "POST"): api_researcher_only(201),
    ("api-member", "PATCH"): api_researcher_only(200),
    ("api-member", "DELETE"): api_researcher_only(204),
    ("api-invites", "GET"): api_researcher_only(200),
    ("api-invites", "POST"): api_researcher_only(201),
    ("api-invite", "DELETE"): api_researcher_only(204),
    ("api-invite-accept", "POST"): everyone(200, anonymous=UNAUTHENTICATED),  # members keep their role
    ("api-audit", "GET"): api_researcher_only(200),
    # --- API: webhooks (researchers only) ---
    ("api-webhooks", "GET"): api_researcher_only(200),
    ("api-webhooks", "POST"): api_researcher_only(201),
    ("api-webhook", "GET"): api_researcher_only(200),
    ("api-webhook", "PATCH"): api_researcher_only(200),
    ("api-webhook", "DELETE"): api_researcher_only(204),
    ("api-webhook-deliveries", "GET"): api_researcher_only(200),
    # --- API: reward models, the loop, policies ---
    ("api-reward-models", "GET"): api_researcher_only(200),
    ("api-reward-models", "POST"): api_researcher_only(202),
    ("api-reward-weights", "GET"): api_researcher_only(200),
    ("api-runs", "GET"): api_researcher_only(200),
    ("api-runs", "POST"): api_researcher_only(201),
    ("api-run", "GET"): api_researcher_only(200),
    ("api-run", "POST"): api_researcher_only(409),  # reaches the action: pausing a finished iteration
    ("api-policy", "GET"): api_researcher_only(200),
    ("api-policy-video", "GET"): api_researcher_only(200),  # tests/test_policy_video_api.py: bytes, no video
    # --- API: the disagreement review (researchers only) ---
    ("api-review", "GET"): api_researcher_only(200),
    ("api-review-exclude", "POST"): api_researcher_only(200),
    ("api-review-send-back", "POST"): api_researcher_only(200),  # the annotator's leased pair wants one more answer
    ("api-review-flag", "POST"): api_researcher_only(200),  # user_id is the annotator's
    # --- API: external data in (tests/test_external_data.py has the good and bad uploads) ---
    ("api-rollouts", "POST"): api_researcher_only(400),  # no file sent: "file" is required
    ("api-import-minari", "POST"): api_researcher_only(400),  # the world has no Minari dataset of that name
    # --- media ---
    ("clip-media", "GET"): page_members(200),
    ("policy-media", "GET"): page_members(200),  # a policy's evaluation video, watched like clips
    # --- pages for everybody signed in ---
    ("home", "GET"): everyone(200, anonymous=TO_LOGIN),
    ("lease-heartbeat", "POST"): everyone(409, anonymous=TO_LOGIN) | {"annotator": 200},
    ("lease-release", "POST"): everyone(204, anonymous=TO_LOGIN),
    # --- pages for the project's members ---
    ("project-detail", "GET"): page_members(302, researcher=200),  # annotators are sent to the labelling page
    ("label", "GET"): page_members(200),
    ("label-judge", "POST"): page_members(302),  # the researcher's answer is refused with a notice, then redirected
    ("label-skip", "POST"): page_members(302),
    ("label-undo", "POST"): page_members(302),
    ("rank", "GET"): page_members(200),
    ("rank", "POST"): page_members(302),
    ("history", "GET"): page_members(200),
    ("history", "POST"): page_members(302, researcher=404),  # only the author revises
    # --- pages for the project's researchers ---
    ("project-data", "GET"): page_researcher_only(200),
    ("project-models", "GET"): page_researcher_only(200),
    ("project-loop", "GET"): page_researcher_only(200),
    ("project-quality", "GET"): page_researcher_only(200),
    ("project-clips", "GET"): page_researcher_only(200),
    ("project-policy", "GET"): page_researcher_only(200),
    ("project-run-lineage", "GET"): page_researcher_only(200),
    ("project-reward-model", "GET"): page_researcher_only(200),
    ("project-train", "POST"): page_researcher_only(302),
    ("project-runs", "GET"): page_researcher_only(200),
    ("project-iteration-start", "POST"): page_researcher_only(302),
    ("project-run-action", "POST"): page_researcher_only(302),
    ("project-generate", "POST"): page_researcher_only(302),
    # Members, invites and the audit log: the project's researchers only (a no-JS form post redirects back).
    ("project-members", "GET"): page_researcher_only(200),
    ("project-members", "POST"): page_researcher_only(302),  # adds the outsider by username
    ("project-member", "POST"): page_researcher_only(302),  # makes the annotator a researcher
    ("project-invites", "POST"): page_researcher_only(302),
    ("project-invite-revoke", "POST"): page_researcher_only(302),
    # An invite link is for whoever holds it: signed in, anyone sees it (members are told they are members) and
    # joining redirects to the project; signed out, the login page comes first.
    ("invite", "GET"): everyone(200, anonymous=TO_LOGIN),
    ("invite", "POST"): everyone(302, anonymous=TO_LOGIN),
    ("project-review", "GET"): page_researcher_only(200),
    ("project-review-action", "POST"): page_researcher_only(400),  # nothing posted: "unknown review action"
    ("project-review-score", "POST"): page_researcher_only(302),
    # --- pages for every researcher: a new project from a spec (an empty spec is refused, 400) ---
    ("project-new", "GET"): page_researcher_only(200) | {"other_researcher": 200},
    ("project-new", "POST"): page_researcher_only(400) | {"other_researcher": 400},
}


# --- the world every path parameter points into ---------------------------------------------------------


@dataclass
class World:
    users: dict[str, User]
    project: Project
    other_project: Project
    clip_id: int
    query: Query  # leased to the annotator, not yet answered
    lease: Lease
    judgment: Judgment  # the annotator's, just given (so it can still be undone)
    job: Any  # a finished clip-generation run
    ranking: FactorRanking
    reward_model: Any
    preference_set: Any
    iteration: Any  # finished, so a new one may start
    policy: Any
    webhook: WebhookEndpoint
    api_token: ApiToken  # the researcher's
    export_job: ExportJob  # finished, with its file
    membership: Membership  # the annotator's
    invite: Invite  # open, made by the researcher

    def path_kwargs(self) -> dict[str, Any]:
        """Values for every path parameter name the URL configuration uses."""
        return {
            "slug": self.project.slug,
            "clip_id": self.clip_id,
            "kind": "video",
            "query_id": self.query.pk,
            "judgment_id": self.judgment.pk,
            "token": self.lease.token,
            "model_id": self.reward_model.pk,
            "run_id": self.iteration.pk,
            "policy_id": self.policy.pk,
            "webhook_id": self.webhook.pk,
            "token_id": self.api_token.pk,
            "job_id": self.export_job.pk,
            "member_id": self.membership.pk,
            "invite_id": self.invite.pk,
            "invite_token": invite_token(self.invite),
            "user_id": self.users["annotator"].pk,
        }


def _parquet_preferences(clip_ids: list[int]) -> bytes:
    table = pa.table(
        {
            "clip_a": pa.array(clip_ids[:-1], pa.int64()),
            "clip_b": pa.array(clip_ids[1:], pa.int64()),
            "target": pa.array([1.0] * (len(clip_ids) - 1), pa.float32()),
            "weight": pa.array([1.0] * (len(clip_ids) - 1), pa.float32()),
            "origin": pa.array(["ranking"] * (len(clip_ids) - 1)),
            "level": pa.array([0] * (len(clip_ids) - 1), pa.int32()),
            "annotator": pa.array(["anna"] * (len(clip_ids) - 1)),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def seed_world() -> World:
    """Project A with one of everything a path can name; project B owned by another researcher. No training."""
    from trainer.models import ITERATION_STEPS, PolicyCheckpoint, PreferenceSet, RewardModel, Run, RunKind, RunState

    researcher = user_create(username="rita", password=PASSWORD, role=Role.RESEARCHER)
    annotator = user_create(username="anna", password=PASSWORD, role=Role.ANNOTATOR)
    outsider = user_create(username="otto", password=PASSWORD, role=Role.ANNOTATOR)
    other_researcher = user_create(username="olga", password=PASSWORD, role=Role.RESEARCHER)
    project = make_project(researcher, slug="alpha", overlap=2)
    membership_add(project=project, user=annotator, role=ProjectRole.ANNOTATOR)
    other_project = make_project(other_researcher, slug="bravo")

    clips = add_fake_clips(project, 6)
    queries_create_random(project=project, count=10, rng=np.random.default_rng(1), clips=clips)
    first = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert first is not None
    judgment = assignment.judgment_submit(
        query_id=first.query_id,
        annotator=annotator,
        choice="left",
        lease_token=first.token,
        client_id=uuid.uuid4(),
    ).judgment
    lease = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert lease is not None
    ranking = FactorRanking.objects.create(
        project=project, annotator=annotator, groups=[["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]]
    )
    job = Run.objects.create(
        project=project,
        kind=RunKind.GENERATE_CLIPS,
        steps=["generating_clips"],
        state=RunState.DONE,
        progress=1.0,
        created_by=researcher,
    )
    raw = _parquet_preferences([c.pk for c in clips])
    preference_set = PreferenceSet(
        project=project, sources="rankings", n_pairs=len(clips) - 1, checksum=hashlib.sha256(raw).hexdigest()
    )
    preference_set.file.save("prefs.parquet", ContentFile(raw), save=False)
    preference_set.save()
    reward_model = RewardModel(project=project, version=1, preference_set=preference_set, status="ready")
    reward_model.weights.save("rm.safetensors", ContentFile(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "), save=False)
    reward_model.metadata.save("rm.json", ContentFile(json.dumps({"version": 1}).encode()), save=False)
    reward_model.save()
    iteration = Run.objects.create(
        project=project,
        number=1,
        steps=list(ITERATION_STEPS),
        state=RunState.DONE,
        reward_model=reward_model,
        preference_set=preference_set,
    )
    policy = PolicyCheckpoint(project=project, run=iteration, reward_model=reward_model, algorithm="sac", timesteps=100)
    policy.model_file.save("policy.zip", ContentFile(b"PK\x05\x06" + bytes(18)), save=False)
    policy.video.save("policy.mp4", ContentFile(b"\x00\x00\x00\x18ftypisom" + bytes(16)), save=False)
    policy.save()
    webhook = WebhookEndpoint.objects.create(
        project=project, url="https://93.184.215.14/hook", events=["ranking.submitted"], secret="whsec_AAAA"
    )
    export_job = ExportJob(project=project, what="judgments", format="csv", status="done", rows=1, total_rows=1)
    export_job.file.save("judgments.csv", ContentFile(b"id\n1\n"), save=False)
    export_job.save()
    for user in (researcher, annotator, outsider, other_researcher):
        Token.objects.get_or_create(user=user)
    api_token, _secret = token_create(user=researcher, name="matrix")
    invite = invite_create(project=project, role=ProjectRole.ANNOTATOR, actor=researcher)
    return World(
        users={
            "researcher": researcher,
            "annotator": annotator,
            "outsider": outsider,
            "other_researcher": other_researcher,
        },
        project=project,
        other_project=other_project,
        clip_id=clips[0].pk,
        query=Query.objects.get(pk=lease.query_id),
        lease=lease,
        judgment=judgment,
        job=job,
        ranking=ranking,
        reward_model=reward_model,
        preference_set=preference_set,
        iteration=iteration,
        policy=policy,
        webhook=webhook,
        api_token=api_token,
        export_job=export_job,
        membership=Membership.objects.get(project=project, user=annotator),
        invite=invite,
    )


def stub_task_sending(monkeypatch) -> None:
    """No task runs, even where a view sends one directly (the rank page asks for renders)."""

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr("labeling.services.send_task_by_name", nothing, raising=False)
    monkeypatch.setattr("trainer.loop.send_task_by_name", nothing, raising=False)
    monkeypatch.setattr("trainer.loop._send_step", nothing, raising=False)
    monkeypatch.setattr("frontend.views.services.send_task_by_name", nothing, raising=False)


# --- request bodies ----------------------------------------------------------------------------------------

RANKING_GROUPS = [["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]]

# (route name, method) → body for (world, persona). Routes not listed send no body. API bodies are JSON;
# page bodies are form fields.
Body = Callable[[World, str], dict[str, Any]]
BODIES: dict[tuple[str, str], Body] = {
    ("api-tokens", "POST"): lambda w, who: {"name": f"{who}'s script"},
    ("account-tokens", "POST"): lambda w, who: {"name": f"{who}'s script"},
    ("api-token", "POST"): lambda w, who: (
        {} if who == "anonymous" else {"username": w.users[who].username, "password": PASSWORD}
    ),
    ("api-projects", "POST"): lambda w, who: {"name": "Matrix", "slug": "matrix-made", "env_id": "Pendulum-v1"},
    ("api-judgments", "POST"): lambda w, who: {
        "choice": "left",
        "lease": str(w.lease.token),
        "client_id": str(uuid.uuid4()),
    },
    ("api-judgment-detail", "PATCH"): lambda w, who: {"choice": "right"},
    ("api-queries", "GET"): lambda w, who: {"ids": f"{w.query.pk},{w.judgment.query_id}"},
    ("api-queries", "POST"): lambda w, who: {"pairs": [[w.query.clip_b_id, w.query.clip_a_id]]},
    ("api-rankings", "POST"): lambda w, who: {"groups": RANKING_GROUPS},
    # A public address literal: no DNS lookup, and not refused as private.
    ("api-webhooks", "POST"): lambda w, who: {"url": "https://93.184.215.14/hooks", "events": ["ranking.submitted"]},
    ("api-webhook", "PATCH"): lambda w, who: {"description": "matrix", "is_active": False},
    ("api-export-jobs", "POST"): lambda w, who: {"what": "judgments", "format": "csv"},
    ("api-reward-models", "POST"): lambda w, who: {},
    ("api-runs", "POST"): lambda w, who: {},
    ("api-run", "POST"): lambda w, who: {"action": "pause"},
    ("api-import-minari", "POST"): lambda w, who: {"dataset": "pendulum/none-v0"},
    ("label-judge", "POST"): lambda w, who: {
        "query": w.query.pk,
        "lease": str(w.lease.token),
        "client_id": str(uuid.uuid4()),
        "choice": "left",
    },
    ("label-skip", "POST"): lambda w, who: {"lease": str(w.lease.token)},
    ("label-undo", "POST"): lambda w, who: {"judgment": w.judgment.pk},
    ("history", "POST"): lambda w, who: {"judgment": w.judgment.pk, "choice": "right"},
    ("rank", "POST"): lambda w, who: {"groups": json.dumps(RANKING_GROUPS)},
    ("project-iteration-start", "POST"): lambda w, who: {"count": 1},
    ("project-run-action", "POST"): lambda w, who: {"action": "pause"},
    ("project-generate", "POST"): lambda w, who: {"rollouts": 1, "queries": 0, "seed": 0},
    ("project-members", "POST"): lambda w, who: {"username": "otto", "role": "annotator"},
    ("project-member", "POST"): lambda w, who: {"action": "role", "role": "researcher"},
    ("project-invites", "POST"): lambda w, who: {"role": "annotator", "days": 7},
    ("api-members", "POST"): lambda w, who: {"username": "otto", "role": "annotator"},
    ("api-member", "PATCH"): lambda w, who: {"role": "researcher"},
    ("api-invites", "POST"): lambda w, who: {"role": "annotator", "days": 7},
    ("api-invite-accept", "POST"): lambda w, who: {"token": invite_token(w.invite)},
}


# --- routes from the URL configuration ---------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    name: str
    pattern: str
    namespace: str | None

    @property
    def is_api(self) -> bool:
        return self.pattern.startswith("api/")


def _walk(patterns: list, prefix: str = "", namespace: str | None = None) -> Iterator[Route]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = ":".join(n for n in (namespace, entry.namespace) if n) or None
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            name = entry.name or f"<unnamed {prefix}{entry.pattern}>"
            yield Route(
                name=f"{namespace}:{name}" if namespace else name,
                pattern=prefix + str(entry.pattern),
                namespace=namespace,
            )


def url_routes() -> dict[str, Route]:
    """Every route in the URL configuration, by name, except the admin's."""
    routes: dict[str, Route] = {}
    for route in _walk(get_resolver().url_patterns):
        if route.namespace and route.namespace.split(":")[0] in SKIPPED_NAMESPACES:
            continue
        if route.pattern.startswith(SKIPPED_PREFIXES):
            continue
        routes.setdefault(route.name, route)
    return routes


ROUTES = url_routes()
TABLE_ROUTES = {name for name, _ in EXPECTED}


def test_every_route_in_the_url_configuration_is_in_the_matrix_and_nothing_else_is():
    missing = sorted(set(ROUTES) - TABLE_ROUTES)
    stale = sorted(TABLE_ROUTES - set(ROUTES))
    unnamed = sorted(name for name in ROUTES if name.startswith("<unnamed"))
    assert not unnamed, f"routes without a name cannot be put in the matrix: {unnamed}"
    assert not missing, "routes missing from EXPECTED in tests/test_permission_matrix.py: " + ", ".join(
        f"{name} ({ROUTES[name].pattern})" for name in missing
    )
    assert not stale, f"EXPECTED lists routes the URL configuration no longer has: {stale}"
    for key, statuses in EXPECTED.items():
        assert set(statuses) == set(PERSONAS), f"{key}: every persona needs an expected status"


# --- sending requests --------------------------------------------------------------------------------------


def _client(route: Route, world: World, persona: str) -> Client:
    if route.is_api:
        api_client = APIClient()
        if persona != "anonymous":
            token = Token.objects.get(user=world.users[persona])
            api_client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return api_client
    client = Client()
    if persona != "anonymous":
        client.force_login(world.users[persona])
    return client


def _path(route: Route, world: World) -> str:
    from django.urls import get_resolver as resolver

    wanted: set[str] = set()
    for possibility, _pattern, _defaults, _converters in resolver().reverse_dict.getlist(route.name):
        for _result, params in possibility:
            wanted.update(params)
    kwargs = world.path_kwargs()
    unknown = wanted - set(kwargs)
    assert not unknown, f"{route.name}: no value for path parameters {sorted(unknown)}; add them to World.path_kwargs"
    return reverse(route.name, kwargs={k: kwargs[k] for k in wanted})


def send(route: Route, method: str, world: World, persona: str) -> tuple[int, str, str]:
    """Status, Location header and a short excerpt of the body; the request's writes are rolled back."""
    cache.clear()  # throttles count per test, not across personas
    client = _client(route, world, persona)
    body_for = BODIES.get((route.name, method))
    body = body_for(world, persona) if body_for else {}
    path = _path(route, world)
    with transaction.atomic():
        if route.is_api:
            response = getattr(client, method.lower())(path, body or None, format="json")
        elif method in ("GET", "DELETE"):
            response = getattr(client, method.lower())(path, body)
        elif method == "POST":
            response = client.post(path, body)
        else:
            response = getattr(client, method.lower())(path, "", content_type="application/x-www-form-urlencoded")
        if getattr(response, "streaming", False):
            content = b"".join(response.streaming_content)  # errors inside a stream count too
        else:
            content = response.content
        transaction.set_rollback(True)
    excerpt = content[:300].decode("utf-8", "replace") if content else ""
    return response.status_code, response.get("Location", ""), excerpt


def _matches(status: int, expected: int | set[int]) -> bool:
    return status in expected if isinstance(expected, set) else status == expected


@pytest.mark.parametrize("name", sorted(set(ROUTES) | TABLE_ROUTES))
def test_route_answers_each_persona_as_the_matrix_says(name, db, monkeypatch, settings):
    """One route, every method it answers × every persona; methods it is not listed with must be refused."""
    if name not in ROUTES:
        pytest.fail(f"EXPECTED lists {name!r}, which the URL configuration no longer has")
    if name not in TABLE_ROUTES:
        pytest.fail(f"route {name!r} ({ROUTES[name].pattern}) is not in EXPECTED in tests/test_permission_matrix.py")
    settings.MEDIA_SERVING = "django"
    settings.PASSWORD_HASHERS = FAST_HASHERS
    stub_task_sending(monkeypatch)
    route = ROUTES[name]
    world = seed_world()
    login_url = reverse("login")
    problems: list[str] = []
    for method in METHODS:
        expected = EXPECTED.get((name, method))
        if expected is None:
            # Not meant to be answered: whoever gets furthest into the view (the researcher on private routes,
            # an anonymous caller on public ones) must be told 405.
            seen = {persona: send(route, method, world, persona)[0] for persona in ("researcher", "anonymous")}
            if 405 not in seen.values():
                problems.append(
                    f"{method} {route.pattern}: answered {seen} but ({name!r}, {method!r}) is not in EXPECTED; "
                    "refuse the method (405) or add it to the matrix"
                )
            continue
        for persona in PERSONAS:
            status, location, excerpt = send(route, method, world, persona)
            if not _matches(status, expected[persona]):
                problems.append(
                    f"{method} {route.pattern} as {persona}: got {status}, expected {expected[persona]}"
                    f"{' → ' + location if location else ''} {excerpt[:160]!r}"
                )
            elif (
                status == TO_LOGIN
                and persona == "anonymous"
                and not route.is_api
                and not location.startswith(login_url)
            ):
                problems.append(f"{method} {route.pattern} as anonymous: redirected to {location}, not the login")
    assert not problems, "\n".join(problems)
