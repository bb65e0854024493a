"""REST API v1: token auth, leasing and judging, idempotency, errors as JSON 4xx, streamed export, schema."""

from __future__ import annotations

import json
import uuid

import pytest
from rest_framework.test import APIClient

from labeling.models import Judgment
from tests.conftest import PASSWORD, api_client_for


def test_token_from_username_and_password(annotator):
    client = APIClient()
    response = client.post("/api/v1/auth/token/", {"username": annotator.username, "password": PASSWORD}, format="json")
    assert response.status_code == 200
    token = response.json()["token"]
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    assert client.get("/api/v1/projects/").status_code == 200


def test_wrong_password_is_a_json_400(annotator):
    response = APIClient().post(
        "/api/v1/auth/token/", {"username": annotator.username, "password": "nope"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid"


def next_query(client, project):
    response = client.post(f"/api/v1/projects/{project.slug}/queries/next/")
    assert response.status_code == 200, response.content
    return response.json()


def test_lease_and_judge_through_the_api(project_with_queries, api):
    body = next_query(api, project_with_queries)
    query = body["query"]
    assert body["reason"] is None
    assert {"id", "left", "right", "lease", "lease_expires_at"} <= set(query)
    assert query["left"]["video_url"].startswith("http://testserver/media/clips/")
    assert "true_return" not in query["left"]  # annotators see videos, not the numbers
    payload = {"choice": "left", "lease": query["lease"], "client_id": str(uuid.uuid4()), "time_spent_ms": 4200}
    first = api.post(f"/api/v1/queries/{query['id']}/judgments/", payload, format="json")
    assert first.status_code == 201, first.content
    replay = api.post(f"/api/v1/queries/{query['id']}/judgments/", payload, format="json")
    assert replay.status_code == 200 and replay.json()["id"] == first.json()["id"]
    different = api.post(
        f"/api/v1/queries/{query['id']}/judgments/",
        {**payload, "choice": "right", "client_id": str(uuid.uuid4())},
        format="json",
    )
    assert different.status_code == 409
    assert different.json()["error"]["code"] == "already_judged"
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize(
    "payload, field",
    [
        ({}, "choice"),
        ({"choice": "up", "lease": str(uuid.uuid4()), "client_id": str(uuid.uuid4())}, "choice"),
        ({"choice": "left", "lease": "not-a-uuid", "client_id": str(uuid.uuid4())}, "lease"),
        ({"choice": "left", "lease": str(uuid.uuid4()), "client_id": "xyz"}, "client_id"),
        (
            {"choice": "left", "lease": str(uuid.uuid4()), "client_id": str(uuid.uuid4()), "time_spent_ms": -1},
            "time_spent_ms",
        ),
    ],
)
def test_malformed_judgments_get_a_400_that_names_the_field(project_with_queries, api, payload, field):
    query = next_query(api, project_with_queries)["query"]
    response = api.post(f"/api/v1/queries/{query['id']}/judgments/", payload, format="json")
    assert response.status_code == 400
    assert field in response.json()["error"]["fields"]
    assert Judgment.objects.count() == 0


def test_garbage_bodies_never_500(project_with_queries, api):
    query = next_query(api, project_with_queries)["query"]
    url = f"/api/v1/queries/{query['id']}/judgments/"
    assert api.post(url, "{not json", content_type="application/json").status_code == 400
    assert api.post(url, "[1,2]", content_type="application/json").status_code == 400
    assert api.post(url, "choice=left", content_type="text/plain").status_code == 415
    assert api.post("/api/v1/queries/999999/judgments/", {}, format="json").status_code == 404
    assert api.post("/api/v1/projects/", "\x00\xff", content_type="application/json").status_code in (400, 403)


def test_a_judgment_without_a_lease_is_refused(project_with_queries, api):
    query = next_query(api, project_with_queries)["query"]
    response = api.post(
        f"/api/v1/queries/{query['id']}/judgments/",
        {"choice": "left", "lease": str(uuid.uuid4()), "client_id": str(uuid.uuid4())},
        format="json",
    )
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "lease_invalid"


def test_project_creation_validates_the_spec(researcher):
    client = api_client_for(researcher)
    unknown_env = client.post("/api/v1/projects/", {"name": "X", "env_id": "Nope-v0"}, format="json")
    assert unknown_env.status_code == 400 and "env_id" in unknown_env.json()["error"]["fields"]
    bad_factor = client.post(
        "/api/v1/projects/", {"name": "X", "env_id": "external", "factors": [{"key": "Bad Key"}]}, format="json"
    )
    assert bad_factor.status_code == 400
    assert "factors[0].key" in bad_factor.json()["error"]["fields"]
    repeated = client.post(
        "/api/v1/projects/", {"name": "X", "env_id": "external", "factors": [{"key": "a"}, {"key": "a"}]}, format="json"
    )
    assert repeated.status_code == 400
    taken = client.post("/api/v1/projects/", {"name": "Y", "slug": "y", "env_id": "Pendulum-v1"}, format="json")
    assert taken.status_code == 201
    again = client.post("/api/v1/projects/", {"name": "Y", "slug": "y", "env_id": "Pendulum-v1"}, format="json")
    assert again.status_code == 400 and "slug" in again.json()["error"]["fields"]


def test_export_streams_exactly_the_judgments_as_jsonl(project_with_queries, annotator, researcher):
    client = api_client_for(annotator)
    for choice in ["left", "right", "equal", "cant_tell", "left"]:
        query = next_query(client, project_with_queries)["query"]
        response = client.post(
            f"/api/v1/queries/{query['id']}/judgments/",
            {"choice": choice, "lease": query["lease"], "client_id": str(uuid.uuid4())},
            format="json",
        )
        assert response.status_code == 201
    export = api_client_for(researcher).get(
        f"/api/v1/projects/{project_with_queries.slug}/export/judgments?format=jsonl"
    )
    assert export.status_code == 200 and export.streaming
    assert export["Content-Type"] == "application/x-ndjson"
    rows = [json.loads(line) for line in b"".join(export.streaming_content).decode().splitlines()]
    assert [r["choice"] for r in rows] == ["left", "right", "equal", "cant_tell", "left"]
    assert {r["annotator"] for r in rows} == {annotator.username}
    assert rows[2]["target_a"] == 0.5 and rows[3]["target_a"] is None
    csv_export = api_client_for(researcher).get(
        f"/api/v1/projects/{project_with_queries.slug}/export/judgments?format=csv"
    )
    lines = b"".join(csv_export.streaming_content).decode().splitlines()
    assert lines[0].startswith("id,query,source") and len(lines) == 6
    bad = api_client_for(researcher).get(f"/api/v1/projects/{project_with_queries.slug}/export/judgments?format=xml")
    assert bad.status_code == 400


def test_clips_are_cursor_paginated(project_with_queries, researcher):
    client = api_client_for(researcher)
    page = client.get(f"/api/v1/projects/{project_with_queries.slug}/clips/?page_size=5").json()
    assert len(page["results"]) == 5 and page["next"]
    assert "factor_totals" in page["results"][0]
    rest = client.get(page["next"]).json()
    assert len(rest["results"]) == 3 and rest["next"] is None
    assert client.get(f"/api/v1/projects/{project_with_queries.slug}/clips/?iteration=x").status_code == 400


def test_openapi_schema_and_docs(api):
    schema = api.get("/api/v1/schema/")
    assert schema.status_code == 200
    text = schema.content.decode()
    assert "/api/v1/projects/{slug}/queries/next/" in text and "/api/v1/queries/{query_id}/judgments/" in text
    docs = api.get("/api/v1/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
    assert b"cdn" not in docs.content.lower()


def test_researcher_starts_a_run_and_reads_its_progress(project, researcher, monkeypatch):
    from trainer import loop

    monkeypatch.setattr(loop, "_send_step", lambda *args: None)  # no worker picks it up here
    client = api_client_for(researcher)
    url = f"/api/v1/projects/{project.slug}/runs/"
    bad = client.post(url, {"kind": "generate_clips", "params": {"rollouts": 0}}, format="json")
    assert bad.status_code == 400 and "params.rollouts" in bad.json()["error"]["fields"]
    assert client.post(url, {"kind": "launch_rockets"}, format="json").status_code == 400
    assert client.post(url, {"kind": "render_clips", "params": {"clips": "all"}}, format="json").status_code == 400
    started = client.post(url, {"kind": "generate_clips", "params": {"rollouts": 1, "queries": 1}}, format="json")
    assert started.status_code == 201
    run = client.get(started.json()["url"]).json()
    assert run["kind"] == "generate_clips" and run["steps"] == ["generating_clips"]
    assert run["state"] == "generating_clips" and run["progress"] == 0.0 and run["params"]["rollouts"] == 1
