"""Named API tokens (issue 12, point 6): hashed secrets shown once, project scope, read-only, expiry, revoking."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiToken
from accounts.tokens import LAST_USED_EVERY, token_create
from tests.conftest import api_client_for, make_project

pytestmark = pytest.mark.django_db

TOKENS = "/api/v1/auth/tokens/"


def bearer(secret: str, keyword: str = "Bearer") -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {secret}")
    return client


def test_creation_shows_the_secret_once_and_stores_only_its_hash(researcher):
    api = api_client_for(researcher)  # the account token from /api/v1/auth/token/ keeps working
    created = api.post(TOKENS, {"name": "ci"}, format="json")
    assert created.status_code == 201, created.content
    secret = created.json()["token"]
    assert secret.startswith("hry_") and len(secret) > 40
    assert created.json()["prefix"] == secret[:12]
    stored = ApiToken.objects.get(pk=created.json()["id"])
    assert stored.key_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(stored.__dict__)
    listed = api.get(TOKENS)
    assert listed.status_code == 200
    assert [row["name"] for row in listed.json()] == ["ci"]
    assert "token" not in listed.json()[0] and secret not in listed.content.decode()


@pytest.mark.parametrize("keyword", ["Bearer", "Token"])
def test_a_token_authenticates_with_either_keyword(project, researcher, keyword):
    _, secret = token_create(user=researcher, name="script")
    answer = bearer(secret, keyword).get(f"/api/v1/projects/{project.slug}/")
    assert answer.status_code == 200
    assert answer.json()["slug"] == project.slug


def test_a_read_only_token_reads_but_may_not_write(project, researcher):
    _, secret = token_create(user=researcher, name="dashboard", read_only=True)
    client = bearer(secret)
    assert client.get(f"/api/v1/projects/{project.slug}/").status_code == 200
    refused = client.post("/api/v1/projects/", {"name": "X", "slug": "x", "env_id": "Pendulum-v1"}, format="json")
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "read_only_token"
    assert not project.__class__.objects.filter(slug="x").exists()


def test_a_project_scoped_token_sees_its_project_and_nothing_else(project, researcher):
    other = make_project(researcher, slug="other")
    _, secret = token_create(user=researcher, name="scoped", project_id=project.pk)
    client = bearer(secret)
    assert client.get(f"/api/v1/projects/{project.slug}/").status_code == 200
    assert client.get(f"/api/v1/projects/{project.slug}/spec").status_code == 200  # researcher routes too
    hidden = client.get(f"/api/v1/projects/{other.slug}/")
    missing = client.get("/api/v1/projects/no-such-project/")
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content  # no existence oracle
    assert client.get(f"/api/v1/projects/{other.slug}/spec").content == missing.content
    assert [p["slug"] for p in client.get("/api/v1/projects/").json()] == [project.slug]
    # An unscoped token of the same user sees both.
    _, wide = token_create(user=researcher, name="wide")
    assert bearer(wide).get(f"/api/v1/projects/{other.slug}/").status_code == 200
    # A scoped token cannot make projects, nor tokens (which could be wider than itself).
    made = client.post("/api/v1/projects/", {"name": "Y", "slug": "y", "env_id": "Pendulum-v1"}, format="json")
    assert made.status_code == 403
    assert client.post(TOKENS, {"name": "escape"}, format="json").status_code == 403


def test_scope_is_created_from_a_slug_and_only_for_the_callers_projects(project, researcher, outsider):
    created = api_client_for(researcher).post(TOKENS, {"name": "s", "project": project.slug}, format="json")
    assert created.status_code == 201 and created.json()["project_id"] == project.pk
    refused = api_client_for(outsider).post(TOKENS, {"name": "s", "project": project.slug}, format="json")
    assert refused.status_code == 400
    assert refused.json()["error"]["fields"] == {"project": ["no such project"]}


def test_expired_and_revoked_tokens_answer_401_in_the_apis_error_shape(project, researcher):
    token, secret = token_create(user=researcher, name="soon", expires_at=timezone.now() + timedelta(hours=1))
    client = bearer(secret)
    assert client.get("/api/v1/projects/").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    expired = client.get("/api/v1/projects/")
    assert expired.status_code == 401
    assert expired.json()["error"]["code"] == "authentication_failed"
    assert "expired" in expired.json()["error"]["message"].lower()
    _, live = token_create(user=researcher, name="live")
    token_id = ApiToken.objects.get(name="live").pk
    assert api_client_for(researcher).delete(f"{TOKENS}{token_id}/").status_code == 204
    revoked = bearer(live).get("/api/v1/projects/")
    assert revoked.status_code == 401 and revoked.json()["error"]["code"] == "authentication_failed"
    assert bearer("hry_not-a-real-token").get("/api/v1/projects/").status_code == 401
    assert [row["name"] for row in api_client_for(researcher).get(TOKENS).json()] == ["soon"]


def test_a_token_in_the_past_cannot_be_made(researcher):
    answer = api_client_for(researcher).post(
        TOKENS, {"name": "old", "expires_at": "2000-01-01T00:00:00Z"}, format="json"
    )
    assert answer.status_code == 400


def test_only_the_owner_revokes(researcher, annotator):
    token, _ = token_create(user=researcher, name="mine")
    assert api_client_for(annotator).delete(f"{TOKENS}{token.pk}/").status_code == 404
    token.refresh_from_db()
    assert token.revoked_at is None


def test_last_used_is_written_at_most_once_a_minute(project, researcher):
    token, secret = token_create(user=researcher, name="hot")
    client = bearer(secret)
    client.get("/api/v1/projects/")
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    client.get("/api/v1/projects/")
    token.refresh_from_db()
    assert token.last_used_at == first  # within the minute: not written again
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - LAST_USED_EVERY)
    client.get("/api/v1/projects/")
    token.refresh_from_db()
    assert token.last_used_at is not None and token.last_used_at > first - LAST_USED_EVERY


def test_the_page_needs_a_login(client):
    answer = client.get(reverse("account-tokens"))
    assert answer.status_code == 302 and answer["Location"].startswith(reverse("login"))


def test_the_page_creates_lists_and_revokes(client, researcher, project):
    client.force_login(researcher)
    made = client.post(
        reverse("account-tokens"), {"name": "laptop", "project": project.slug, "read_only": "on", "expires_days": "7"}
    )
    assert made.status_code == 200
    token = ApiToken.objects.get(user=researcher, name="laptop")
    assert token.read_only and token.project_id == project.pk and token.expires_at is not None
    secret = made.context["secret"]
    assert secret.startswith("hry_") and secret in made.content.decode()
    assert made["Cache-Control"] == "no-store"
    page = client.get(reverse("account-tokens"))
    assert page.status_code == 200
    assert "laptop" in page.content.decode() and secret not in page.content.decode()
    assert token.prefix in page.content.decode()
    revoked = client.post(reverse("account-token-revoke", args=[token.pk]))
    assert revoked.status_code == 302
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert "laptop" not in client.get(reverse("account-tokens")).content.decode()


def test_the_page_refuses_another_users_project(client, outsider, project):
    client.force_login(outsider)
    answer = client.post(reverse("account-tokens"), {"name": "x", "project": project.slug})
    assert answer.status_code == 400
    assert not ApiToken.objects.filter(user=outsider).exists()


def test_a_scoped_token_cannot_reach_another_projects_objects_by_id(project_with_queries, researcher, annotator):
    from labeling import assignment
    from labeling.models import ProjectRole, WebhookEndpoint
    from labeling.services import membership_add

    project = project_with_queries
    other = make_project(researcher, slug="other")
    membership_add(project=other, user=annotator, role=ProjectRole.ANNOTATOR)
    webhook = WebhookEndpoint.objects.create(
        project=project, url="https://93.184.215.14/hook", events=["ranking.submitted"], secret="whsec_AAAA"
    )
    _, scoped = token_create(user=researcher, name="other only", project_id=other.pk)
    hidden = bearer(scoped).get(f"/api/v1/webhooks/{webhook.pk}/")
    missing = bearer(scoped).get(f"/api/v1/webhooks/{webhook.pk + 1000}/")
    assert hidden.status_code == missing.status_code == 404 and hidden.content == missing.content
    _, wide = token_create(user=researcher, name="all")
    assert bearer(wide).get(f"/api/v1/webhooks/{webhook.pk}/").status_code == 200

    lease = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert lease is not None
    _, annotator_scoped = token_create(user=annotator, name="other only", project_id=other.pk)
    client = bearer(annotator_scoped)
    refused = client.post(f"/api/v1/leases/{lease.token}/heartbeat/")
    unknown = client.post("/api/v1/leases/00000000-0000-4000-8000-000000000000/heartbeat/")
    assert refused.status_code == unknown.status_code == 409 and refused.content == unknown.content
    _, annotator_wide = token_create(user=annotator, name="all")
    assert bearer(annotator_wide).post(f"/api/v1/leases/{lease.token}/heartbeat/").status_code == 200
