"""The policy's evaluation video through the REST API: token auth, the policy endpoints' permissions, streamed."""

from __future__ import annotations

import pytest
from django.core.files.base import ContentFile
from rest_framework.test import APIClient

from labeling.services import membership_add
from tests.conftest import api_client_for, make_project
from trainer.models import ITERATION_STEPS, PolicyCheckpoint, Run, RunState

MP4 = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8


def _policy(project, *, video: bool = True) -> PolicyCheckpoint:
    number = Run.objects.filter(project=project).count() + 1
    iteration = Run.objects.create(project=project, number=number, steps=list(ITERATION_STEPS), state=RunState.DONE)
    policy = PolicyCheckpoint(project=project, run=iteration, algorithm="sac", timesteps=100)
    if video:
        policy.video.save("policy.mp4", ContentFile(MP4), save=False)
    policy.save()
    return policy


def _url(policy_id: int) -> str:
    return f"/api/v1/policies/{policy_id}/video"


def _body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_the_owner_gets_the_mp4_streamed_with_the_media_headers(project, researcher):
    policy = _policy(project)
    response = api_client_for(researcher).get(_url(policy.pk))
    assert response.status_code == 200 and response.streaming
    assert response["Content-Type"] == "video/mp4"
    assert response["X-Content-Type-Options"] == "nosniff" and response["Content-Security-Policy"] == "sandbox"
    assert _body(response) == MP4
    # One range, as a player seeking asks.
    partial = api_client_for(researcher).get(_url(policy.pk), HTTP_RANGE="bytes=4-11")
    assert partial.status_code == 206 and _body(partial) == MP4[4:12]
    assert partial["Content-Range"] == f"bytes 4-11/{len(MP4)}"


def test_the_policy_lists_its_video_url_and_null_without_one(project, researcher):
    with_video, without = _policy(project), _policy(project, video=False)
    listed = api_client_for(researcher).get("/api/v1/projects/pendulum/runs/").json()
    runs = {run["id"]: run for run in listed}
    assert runs[with_video.run_id]["policy"]["video_url"] == _url(with_video.pk)
    assert runs[without.run_id]["policy"]["video_url"] is None


def test_no_video_yet_is_a_404_with_a_clear_json_error(project, researcher):
    policy = _policy(project, video=False)
    response = api_client_for(researcher).get(_url(policy.pk))
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "not_found" and "no video yet" in error["message"]


def test_annotators_are_refused_and_outsiders_see_a_missing_policy(project, annotator, outsider, researcher):
    policy = _policy(project)
    assert api_client_for(annotator).get(_url(policy.pk)).status_code == 403
    hidden = api_client_for(outsider).get(_url(policy.pk))
    missing = api_client_for(outsider).get(_url(policy.pk + 1000))
    assert hidden.status_code == missing.status_code == 404
    assert hidden.content == missing.content  # byte for byte: an outsider can't tell
    # A researcher of another project is an outsider here too.
    other = make_project(outsider, slug="other")
    membership_add(project=other, user=researcher, role="researcher")
    assert api_client_for(outsider).get(_url(policy.pk)).status_code == 404


def test_the_token_is_what_authenticates(project, researcher):
    policy = _policy(project)
    assert APIClient().get(_url(policy.pk)).status_code == 401
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert wrong.get(_url(policy.pk)).status_code == 401


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_only_get_is_allowed(project, researcher, method):
    policy = _policy(project)
    assert getattr(api_client_for(researcher), method)(_url(policy.pk)).status_code == 405


def test_the_schema_lists_the_video_route_and_the_video_url(researcher):
    import json

    response = api_client_for(researcher).get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    schema = json.loads(response.content)
    operation = schema["paths"]["/api/v1/policies/{policy_id}/video"]["get"]
    assert "video/mp4" in operation["responses"]["200"]["content"]
    assert "404" in operation["responses"]
    policy = schema["components"]["schemas"]["Policy"]["properties"]["video_url"]
    assert policy.get("nullable") is True or "null" in str(policy)
