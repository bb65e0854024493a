"""Bounded input (design §12): body size, JSON depth, strict numbers, config maxima, env kwargs as data,
ranking validation that is linear and runs before the write transaction, writers that wait on SQLite."""

from __future__ import annotations

import io
import json
import threading
import time
import uuid

import numpy as np
import pytest
from django.core.exceptions import RequestDataTooBig
from django.db.utils import ConnectionHandler
from django.test import Client
from django.urls import reverse

from config.env import database_from_url
from labeling import assignment, rankings
from labeling.api.errors import exception_handler
from labeling.api.parsers import BoundedJSONParser, RequestTooLarge
from labeling.errors import ValidationFailed
from labeling.models import FactorRanking, FeedbackMode, Judgment, ProjectRole
from labeling.parsing import json_size_ok, loads_bounded, parse_float, parse_int
from labeling.services import membership_add, project_create, queries_create_random
from tests.conftest import add_fake_clips, api_client_for, make_project
from trainer.core.loop_settings import LoopSettings
from trainer.core.policy import PolicyConfig
from trainer.core.reward import RewardModelConfig

DEEP = "[" * 1000 + "]" * 1000


@pytest.fixture
def project(researcher, annotator):
    project = make_project(researcher, feedback_mode=FeedbackMode.BOTH)
    membership_add(project=project, user=annotator, role=ProjectRole.ANNOTATOR)
    return project


def _error(response) -> dict:
    return response.json()["error"]


# --- the strict parsers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["²", "٣", "1_000", " ", "", "0x10", "1e3", "9" * 19, "9" * 5000, "+", "1.0"])
def test_parse_int_refuses_anything_but_short_ascii_digits(text):
    with pytest.raises(ValidationFailed) as error:
        parse_int(text, name="n")
    assert error.value.fields == {"n": [error.value.fields["n"][0]]}


def test_parse_int_and_parse_float_accept_plain_numbers_within_range():
    assert parse_int("42", name="n") == 42
    assert parse_int(" 7 ", name="n", minimum=1, maximum=10) == 7
    with pytest.raises(ValidationFailed):
        parse_int("11", name="n", minimum=1, maximum=10)
    with pytest.raises(ValidationFailed):
        parse_int(True, name="n")
    assert parse_float("2.5e3", name="x") == 2500.0
    for bad in ("1e400", "-1e400", "nan", "inf", "Infinity", "1e", "²", "1" * 100, float("nan"), 10**400):
        with pytest.raises(ValidationFailed):
            parse_float(bad, name="x")
    with pytest.raises(ValidationFailed):
        parse_float("5", name="x", maximum=4)


def test_loads_bounded_refuses_depth_and_non_finite_numbers():
    assert loads_bounded('{"a": [1, 2.5, "[[[["]}') == {"a": [1, 2.5, "[[[["]}
    for text in (DEEP, '{"g": 1e999}', '{"g": NaN}', "[Infinity]", '"' + "[" * 5000):
        with pytest.raises(ValueError):
            loads_bounded(text)
    assert json_size_ok({"a": [1, 2, 3]}, max_items=10)
    assert not json_size_ok({"a": list(range(100))}, max_items=10)
    assert not json_size_ok({"a": {"b": {"c": 1}}}, max_items=10, max_depth=2)


# --- body size ---------------------------------------------------------------------------------------------


def test_a_declared_body_over_the_cap_is_a_json_413(project, annotator, settings):
    client = api_client_for(annotator)
    body = json.dumps({"groups": [["angle_sq"]], "comment": "x" * (settings.MAX_REQUEST_BYTES + 10)})
    response = client.post(f"/api/v1/projects/{project.slug}/rankings/", body, content_type="application/json")
    assert response.status_code == 413
    assert _error(response)["code"] == "request_too_large"


def test_a_body_found_too_big_while_reading_is_a_413_in_the_api_and_the_pages(project, annotator, settings):
    # The declared length passes the middleware's cap; Django's own read limit is smaller, so Django raises
    # RequestDataTooBig while reading: what happens to bodies without a (truthful) Content-Length.
    settings.MAX_REQUEST_BYTES = 10_000_000
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    client = api_client_for(annotator)
    body = json.dumps({"groups": [["angle_sq"]], "comment": "x" * 10_000})
    response = client.post(f"/api/v1/projects/{project.slug}/rankings/", body, content_type="application/json")
    assert response.status_code == 413 and _error(response)["code"] == "request_too_large"

    page = Client(enforce_csrf_checks=True)
    page.force_login(annotator)
    page_response = page.post(reverse("rank", args=[project.slug]), {"groups": "[]", "comment": "x" * 10_000})
    assert page_response.status_code == 413
    page = Client()
    page.force_login(annotator)
    page_response = page.post(reverse("rank", args=[project.slug]), {"groups": "[]", "comment": "x" * 10_000})
    assert page_response.status_code == 413
    assert not FactorRanking.objects.exists()


def test_the_api_error_handler_and_parser_answer_413(settings):
    response = exception_handler(RequestDataTooBig("too big"), {})
    assert response is not None and response.status_code == 413
    settings.MAX_REQUEST_BYTES = 1024
    with pytest.raises(RequestTooLarge):
        BoundedJSONParser().parse(io.BytesIO(b"[" + b"1," * 2000 + b"1]"), "application/json", {})


# --- JSON depth and numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/projects/", "/api/v1/projects/pendulum/rankings/"])
def test_deeply_nested_json_is_a_400(project, researcher, path):
    client = api_client_for(researcher)
    response = client.post(path, DEEP, content_type="application/json")
    assert response.status_code == 400 and _error(response)["code"] == "parse_error"
    body = '{"groups": [["angle_sq"]], "sigmas": {"angle_sq": 1e999}}'
    response = client.post(path, body, content_type="application/json")
    assert response.status_code == 400


def test_deeply_nested_groups_in_the_rank_form_are_a_400(project, annotator):
    page = Client()
    page.force_login(annotator)
    response = page.post(reverse("rank", args=[project.slug]), {"groups": DEEP})
    assert response.status_code == 400
    response = page.post(reverse("rank", args=[project.slug]), {"groups": '[["angle_sq"]]', "sigma_angle_sq": "1e400"})
    assert response.status_code == 400
    assert not FactorRanking.objects.exists()


@pytest.mark.parametrize("value", ["²", "9" * 5000, "-1", "1.5", "1e3"])
def test_query_string_numbers_are_strict(project, researcher, value):
    client = api_client_for(researcher)
    response = client.get(f"/api/v1/projects/{project.slug}/clips/", {"iteration": value})
    assert response.status_code == 400 and "iteration" in _error(response)["fields"]
    response = client.get(f"/api/v1/projects/{project.slug}/export/preferences", {"set": value})
    assert response.status_code == 400 and "set" in _error(response)["fields"]


def test_form_numbers_are_strict(project, annotator, researcher):
    clips = add_fake_clips(project, 4)
    queries_create_random(project=project, count=2, rng=np.random.default_rng(0), clips=clips)
    lease = assignment.lease_next_query(project=project, annotator=annotator).lease
    assert lease is not None
    page = Client()
    page.force_login(annotator)
    answer = {"lease": str(lease.token), "client_id": str(uuid.uuid4()), "choice": "left"}
    url = reverse("label-judge", args=[project.slug])
    for spent in ("1e400", "nan", "inf", "²"):
        response = page.post(url, {**answer, "query": str(lease.query_id), "time_spent_ms": spent})
        assert response.status_code == 400, spent
    for query in ("²", "9" * 5000):
        assert page.post(url, {**answer, "query": query}).status_code == 400
    for judgment in ("²", "9" * 5000, ""):
        assert page.post(reverse("label-undo", args=[project.slug]), {"judgment": judgment}).status_code == 400
        response = page.post(reverse("history", args=[project.slug]), {"judgment": judgment, "choice": "left"})
        assert response.status_code == 400
    assert not Judgment.objects.exists()
    response = page.post(url, {**answer, "query": str(lease.query_id), "time_spent_ms": "1234.5"})
    assert response.status_code == 302 and Judgment.objects.get().time_spent_ms == 1234

    researcher_page = Client()
    researcher_page.force_login(researcher)
    for rollouts in ("²", "9" * 5000, "0", "1001"):
        response = researcher_page.post(reverse("project-generate", args=[project.slug]), {"rollouts": rollouts})
        assert response.status_code == 302  # refused with a message, no run
    assert not project.runs.exists()
    response = researcher_page.post(reverse("project-iteration-start", args=[project.slug]), {"count": "9" * 5000})
    assert response.status_code == 302 and not project.runs.exists()


# --- environment arguments are data ------------------------------------------------------------------------


def _create(client, **spec):
    return client.post("/api/v1/projects/", {"name": "P", "env_id": "Pendulum-v1", **spec}, format="json")


@pytest.mark.parametrize(
    ("env_kwargs", "key"),
    [
        ({"xml_file": "/etc/passwd"}, "env_kwargs.xml_file"),
        ({"g": "/etc/passwd"}, "env_kwargs.g"),
        ({"g": 1000.0}, "env_kwargs.g"),
        ({"g": True}, "env_kwargs.g"),
        ({"render_mode": "human"}, "env_kwargs.render_mode"),
    ],
)
def test_env_kwargs_outside_the_allow_list_are_a_400_naming_the_key(researcher, env_kwargs, key):
    response = _create(api_client_for(researcher), env_kwargs=env_kwargs)
    assert response.status_code == 400, response.content
    assert key in _error(response)["fields"]
    with pytest.raises(ValidationFailed) as error:  # the service refuses too (admin, CLI)
        project_create(created_by=researcher, name="Q", env_id="Pendulum-v1", env_kwargs=env_kwargs)
    assert key in error.value.fields


def test_non_finite_env_kwargs_are_refused_and_allowed_ones_accepted(researcher):
    client = api_client_for(researcher)
    response = client.post(
        "/api/v1/projects/",
        '{"name": "P", "env_id": "Pendulum-v1", "env_kwargs": {"g": 1e999}}',
        content_type="application/json",
    )
    assert response.status_code == 400
    with pytest.raises(ValidationFailed):
        project_create(created_by=researcher, name="Q", env_id="Pendulum-v1", env_kwargs={"g": float("inf")})
    response = _create(client, env_kwargs={"g": 9.81})
    assert response.status_code == 201 and response.json()["env_kwargs"] == {"g": 9.81}
    response = _create(
        client,
        name="C",
        env_id="HalfCheetah-v5",
        env_kwargs={"forward_reward_weight": 2, "exclude_current_positions_from_observation": True},
    )
    assert response.status_code == 201, response.content
    response = _create(client, name="D", env_id="HalfCheetah-v5", env_kwargs={"xml_file": "half_cheetah.xml"})
    assert response.status_code == 400 and "env_kwargs.xml_file" in _error(response)["fields"]
    response = _create(client, name="E", env_kwargs={f"k{i}": 1 for i in range(1000)})
    assert response.status_code == 400


# --- configuration maxima ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"hidden_sizes": [10**9]},
        {"hidden_sizes": [8] * 9},
        {"ensemble_size": 17},
        {"max_epochs": 10_001},
        {"batch_size": 65_537},
        {"eval_batch_clips": 10**9},
        {"num_threads": 10_000},
        {"device": "meta"},
        {"device": "cuda:12345"},
    ],
)
def test_reward_model_config_maxima(changes):
    with pytest.raises(ValueError, match="invalid RewardModelConfig"):
        RewardModelConfig.from_dict(changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"net_arch": [10**9]},
        {"net_arch": [8] * 9},
        {"buffer_size": 10**9},
        {"eval_episodes": 10**6},
        {"batch_size": 10**6},
        {"ppo_n_steps": 10**9},
        {"num_threads": 10_000},
        {"ent_coef": 1e9},
        {"device": "mps:0"},
    ],
)
def test_policy_config_maxima(changes):
    with pytest.raises(ValueError, match="invalid PolicyConfig"):
        PolicyConfig.from_dict(changes)


@pytest.mark.parametrize(
    "changes",
    [
        {"preference_cap": 5_000_001},
        {"max_queries_per_clip": 1001},
        {"rollout_noise": [0.1] * 65},
        {"rollout_noise": [10**400]},
        {"rollout_noise": "abc"},
        {"reward_config": {"hidden_sizes": [10**9]}},
        {"policy": {"buffer_size": 10**12}},
        {"reward_config": []},
    ],
)
def test_loop_settings_maxima(changes):
    with pytest.raises(ValueError):
        LoopSettings.from_dict(changes)


def test_training_and_loop_requests_enforce_the_maxima(project, researcher):
    client = api_client_for(researcher)
    url = f"/api/v1/projects/{project.slug}/reward-models/"
    response = client.post(url, {"config": {"hidden_sizes": [10**9]}}, format="json")
    assert response.status_code == 400 and "config" in _error(response)["fields"]
    response = client.post(url, {"cap": 5_000_001}, format="json")
    assert response.status_code == 400
    response = client.post(
        f"/api/v1/projects/{project.slug}/runs/", {"settings": {"preference_cap": 10**7}}, format="json"
    )
    assert response.status_code == 400
    response = client.post(
        f"/api/v1/projects/{project.slug}/runs/",
        {"kind": "generate_clips", "params": {"rollouts": 10**6}},
        format="json",
    )
    assert response.status_code == 400 and "params.rollouts" in _error(response)["fields"]
    assert not project.runs.exists()


# --- rankings ----------------------------------------------------------------------------------------------


def test_a_one_megabyte_ranking_is_refused_without_a_write(project, annotator, settings):
    groups = [["angle_sq"]] * 80_000
    body = json.dumps({"groups": groups}, separators=(",", ":"))
    assert 1_000_000 < len(body) <= settings.MAX_REQUEST_BYTES
    response = api_client_for(annotator).post(
        f"/api/v1/projects/{project.slug}/rankings/", body, content_type="application/json"
    )
    assert response.status_code == 400, response.content[:300]
    assert "groups" in _error(response)["fields"]
    assert len(response.content) < 10_000  # the answer doesn't echo the input back
    assert not FactorRanking.objects.exists()


class CountingList(list):
    iterations = 0

    def __iter__(self):
        CountingList.iterations += 1
        return super().__iter__()


def test_ranking_validation_refuses_oversized_input_before_looking_at_it():
    keys = ["a", "b", "c"]
    groups = CountingList([["a"]] * 100_000)
    with pytest.raises(ValidationFailed):
        rankings.validate_ranking(factor_keys=keys, groups=groups, sigmas=None)
    assert CountingList.iterations == 0
    with pytest.raises(ValidationFailed, match="far more"):  # few levels, but far more keys than factors
        rankings.validate_ranking(factor_keys=keys, groups=CountingList([["a"] * 100_000]), sigmas=None)
    with pytest.raises(ValidationFailed, match="more than once: a"):  # a near miss gets its precise message
        rankings.validate_ranking(factor_keys=keys, groups=[["a", "b", "c", "a"]], sigmas=None)
    with pytest.raises(ValidationFailed):
        rankings.validate_ranking(
            factor_keys=keys, groups=[["a"], ["b"], ["c"]], sigmas={f"s{i}": 1 for i in range(99)}
        )
    assert rankings.validate_ranking(factor_keys=keys, groups=[["a"], ["b", "c"]], sigmas={"a": 0.5}) == (
        [["a"], ["b", "c"]],
        {"a": 0.5},
    )


def test_ranking_validation_happens_outside_the_write_transaction(project, annotator, monkeypatch):
    from django.db import connection

    seen: list[bool] = []
    original = rankings.validate_ranking

    def spy(**kwargs):
        seen.append(connection.in_atomic_block)
        return original(**kwargs)

    monkeypatch.setattr(rankings, "validate_ranking", spy)
    in_test_transaction = connection.in_atomic_block  # pytest-django's own wrapper, if any
    rankings.ranking_submit(
        project=project, annotator=annotator, groups=[["angle_sq"], ["angular_velocity_sq", "torque_sq"]]
    )
    assert seen == [in_test_transaction]
    assert FactorRanking.objects.count() == 1


# --- SQLite: a second writer waits for the lock ------------------------------------------------------------


def test_a_second_sqlite_writer_waits_instead_of_failing(tmp_path, django_db_blocker):
    with django_db_blocker.unblock():
        _second_writer_waits(tmp_path)


def _second_writer_waits(tmp_path) -> None:
    settings_dict = database_from_url(f"sqlite:///{tmp_path / 'locks.sqlite3'}", sqlite_fallback_name="")
    handlers = [ConnectionHandler({"default": dict(settings_dict)}) for _ in range(2)]
    first, second = (handler["default"] for handler in handlers)
    try:
        with first.cursor() as cursor:
            cursor.execute("PRAGMA busy_timeout")
            assert cursor.fetchone()[0] >= 5000
            cursor.execute("CREATE TABLE t (x INTEGER)")
        first.ensure_connection()
        raw_first = first.connection
        raw_first.execute("BEGIN IMMEDIATE")
        raw_first.execute("INSERT INTO t VALUES (1)")

        def commit_later() -> None:
            time.sleep(1.0)
            raw_first.execute("COMMIT")

        holder = threading.Thread(target=commit_later)
        holder.start()
        started = time.monotonic()
        with second.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (2)")  # would raise "database is locked" without a busy timeout
            cursor.execute("SELECT COUNT(*) FROM t")
            assert cursor.fetchone()[0] == 2
        holder.join()
        assert time.monotonic() - started >= 0.5  # it waited for the first writer
    finally:
        for handler in handlers:
            handler.close_all()


# --- the OpenAPI schema says what the clip list returns ----------------------------------------------------


def test_schema_describes_the_paginated_clip_list(project, annotator):
    client = api_client_for(annotator)
    # ?format= selects export formats in this API (URL_FORMAT_OVERRIDE is off): ask for JSON by Accept.
    schema = client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert schema.status_code == 200
    document = json.loads(schema.content)
    operation = document["paths"]["/api/v1/projects/{slug}/clips/"]["get"]
    reference = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    component = document["components"]["schemas"][reference.rsplit("/", 1)[1]]
    assert component["type"] == "object"
    assert {"next", "previous", "results"} <= set(component["properties"])
    assert component["properties"]["results"]["type"] == "array"
    assert {p["name"] for p in operation["parameters"]} >= {"cursor", "iteration", "page_size"}
    # and it matches what the view returns
    body = client.get(f"/api/v1/projects/{project.slug}/clips/").json()
    assert set(body) == {"next", "previous", "results"}
    run = document["paths"]["/api/v1/runs/{run_id}/"]["get"]["parameters"][0]
    assert run["schema"] == {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999}
