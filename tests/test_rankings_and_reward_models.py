"""Factor rankings → HERON preference sets → reward models, through the API and retrain runs."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest

from labeling import assignment
from labeling.models import FactorRanking
from tests.conftest import api_client_for, run_in_process
from trainer.core.reward import from_bytes
from trainer.models import PreferenceSet, RewardModel, Run, RunKind

SMALL_MODEL = {"hidden_sizes": [32, 32], "ensemble_size": 2, "max_epochs": 15, "patience": 4}
RANKING = [["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]]


def make_clips(project, researcher, rollouts=6, **params):
    params = {"rollouts": rollouts, "steps": 200, "queries": 0, "render": "none", **params}
    run = run_in_process(project, researcher, RunKind.GENERATE_CLIPS, **params)
    assert run.state == "done", run.error


@pytest.mark.parametrize(
    "body, field, words",
    [
        (
            {"groups": [["angle_sq"], ["angular_velocity_sq"], ["torque_sq"], ["speed"]]},
            "groups",
            "unknown factors: speed",
        ),
        ({"groups": [["angle_sq"], ["torque_sq"]]}, "groups", "factors missing: angular_velocity_sq"),
        (
            {"groups": [["angle_sq", "torque_sq"], ["torque_sq"], ["angular_velocity_sq"]]},
            "groups",
            "more than once: torque_sq",
        ),
        ({"groups": [[], ["angle_sq"]]}, "groups[0]", "non-empty"),
        ({"groups": "angle_sq"}, "groups", "non-empty list"),
        ({"groups": RANKING, "sigmas": {"angle_sq": -1}}, "sigmas.angle_sq", "between 0 and 10"),
        ({"groups": RANKING, "sigmas": {"angle_sq": "wide"}}, "sigmas.angle_sq", "must be a number"),
        ({"groups": RANKING, "sigmas": {"nope": 1}}, "sigmas.nope", "not a factor"),
        ({"sigmas": {}}, "groups", "required"),
    ],
)
def test_bad_rankings_get_a_400_that_says_what_is_wrong(project, annotator, body, field, words):
    response = api_client_for(annotator).post(f"/api/v1/projects/{project.slug}/rankings/", body, format="json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"], error
    assert words in " ".join(error["fields"][field]) or words in error["message"]
    assert not FactorRanking.objects.exists()


def test_rankings_are_kept_as_history_and_the_latest_is_current(project, annotator, django_capture_on_commit_callbacks):
    client = api_client_for(annotator)
    url = f"/api/v1/projects/{project.slug}/rankings/"
    first = client.post(url, {"groups": RANKING}, format="json")
    second = client.post(
        url,
        {
            "groups": [["torque_sq", "angle_sq"], ["angular_velocity_sq"]],
            "sigmas": {"angle_sq": 0.5, "torque_sq": 1.0},
            "comment": "torque matters",
        },
        format="json",
    )
    assert first.status_code == second.status_code == 201
    assert second.json()["sigmas"] == {"angle_sq": 0.5}  # only what differs from the factor's default
    from labeling.rankings import current_rankings

    assert [r.pk for r in current_rankings(project)] == [second.json()["id"]]
    assert FactorRanking.objects.count() == 2
    assert [r["id"] for r in client.get(url).json()] == [second.json()["id"], first.json()["id"]]


def test_submitting_a_ranking_builds_preferences_and_trains_a_reward_model(
    project, researcher, annotator, django_capture_on_commit_callbacks
):
    make_clips(project, researcher, rollouts=4)
    project.loop_settings = {}
    project.save()
    # The retrain run's steps run in-process here (eager); the real worker runs the same tasks.
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(annotator).post(
            f"/api/v1/projects/{project.slug}/rankings/", {"groups": RANKING}, format="json"
        )
    assert response.status_code == 201
    retrain = Run.objects.get(kind=RunKind.RETRAIN)
    assert retrain.state == "done", retrain.error
    assert retrain.steps == ["building_preferences", "training_reward"]
    preference_set = PreferenceSet.objects.get()
    table = pq.read_table(io.BytesIO(preference_set.file.read()))
    assert set(table.column("origin").to_pylist()) == {"heron"}
    assert preference_set.n_pairs == len(table) > 0 and preference_set.rankings[0]["groups"] == RANKING
    model = RewardModel.objects.get()
    assert retrain.reward_model == model and retrain.preference_set == preference_set
    assert model.status == "ready" and model.version == 1 and model.preference_set == preference_set
    assert model.history and model.metrics["epochs_run"] == len(model.history)


def test_reward_models_from_judgments_alone_and_from_both(
    project_with_queries, researcher, annotator, django_capture_on_commit_callbacks
):
    project = project_with_queries
    for _ in range(6):
        lease = assignment.lease_next_query(project=project, annotator=annotator).lease
        assignment.judgment_submit(
            query_id=lease.query_id, annotator=annotator, choice="left", lease_token=lease.token, client_id=uuid.uuid4()
        )
    client = api_client_for(researcher)
    with django_capture_on_commit_callbacks(execute=True):
        started = client.post(
            f"/api/v1/projects/{project.slug}/reward-models/",
            {"sources": "judgments", "config": SMALL_MODEL},
            format="json",
        )
    assert started.status_code == 202
    preference_set = PreferenceSet.objects.get()
    assert preference_set.counts == {"human": 6}
    rows = client.get(f"/api/v1/projects/{project.slug}/export/preferences?format=jsonl")
    lines = [json.loads(x) for x in b"".join(rows.streaming_content).decode().splitlines()]
    assert {r["origin"] for r in lines} == {"human"} and {r["annotator"] for r in lines} == {annotator.username}
    # The fake clips of this fixture have no rollout arrays, so training fails — and says so.
    retrain = Run.objects.get(kind=RunKind.RETRAIN)
    assert retrain.state == "failed" and retrain.error.startswith("Training reward")
    assert RewardModel.objects.get().status == "failed"


def test_training_requests_are_validated(project, researcher):
    client = api_client_for(researcher)
    url = f"/api/v1/projects/{project.slug}/reward-models/"
    assert client.post(url, {"config": {"hidden_sizes": "big"}}, format="json").status_code == 400
    assert client.post(url, {"config": {"no_such": 1}}, format="json").status_code == 400
    assert client.post(url, {"sources": "dreams"}, format="json").status_code == 400
    assert client.post(url, {"margin_scope": "batch"}, format="json").status_code == 400
    assert not Run.objects.exists()


@pytest.mark.slow
def test_heron_ranking_learns_pendulums_reward(project, researcher, annotator, django_capture_on_commit_callbacks):
    """Issue 3's bar: ≥300 clips from varied policies; angle > angular velocity > torque (σ = 1) gives a reward
    model with held-out HERON accuracy ≥ 0.9 and Spearman ≥ 0.8 against Pendulum's true return on held-out clips."""
    make_clips(project, researcher, rollouts=80, seed=11)  # random + noisy swing-up controllers, 4 clips each
    assert project.clips.count() >= 300
    project.loop_settings = {"retrain_on_ranking": False}
    project.save()
    api_client_for(annotator).post(f"/api/v1/projects/{project.slug}/rankings/", {"groups": RANKING}, format="json")
    with django_capture_on_commit_callbacks(execute=True):
        started = api_client_for(researcher).post(
            f"/api/v1/projects/{project.slug}/reward-models/",
            {
                "sources": "rankings",
                "cap": 20_000,
                "seed": 3,
                "config": {"hidden_sizes": [64, 64], "ensemble_size": 2, "max_epochs": 40, "patience": 5},
            },
            format="json",
        )
    assert started.status_code == 202
    model = RewardModel.objects.get()
    assert model.status == "ready", model.error
    metrics = model.metrics
    print(
        {
            k: metrics[k]
            for k in (
                "val_accuracy",
                "holdout_accuracy",
                "holdout_spearman",
                "holdout_clips",
                "n_pairs",
                "epochs_run",
                "wall_time_s",
            )
        }
    )
    assert metrics["val_accuracy"] >= 0.9, metrics  # held-out HERON pairs
    assert metrics["holdout_accuracy"] >= 0.9, metrics  # HERON pairs between clips never trained on
    assert metrics["holdout_clips"] >= 30
    assert metrics["holdout_spearman"] >= 0.8, metrics  # true return of clips never trained on
    # The stored checkpoint loads (no pickle) and reproduces the clip scores.
    weights = api_client_for(researcher).get(f"/api/v1/reward-models/{model.pk}/weights")
    assert weights.status_code == 200
    loaded = from_bytes(b"".join(weights.streaming_content), model.metadata.read())
    assert np.isfinite(loaded.model.predict_returns(np.zeros((2, 50, 4), dtype=np.float32))).all()


def test_reward_models_train_from_real_judgments_alone_and_from_both(
    project, researcher, annotator, django_capture_on_commit_callbacks
):
    """Judgments alone train a model; with a ranking too, the set holds both origins, each pair keeping its own."""
    make_clips(project, researcher, rollouts=4, queries=20, render="none")
    from labeling.models import Clip, Query

    Clip.objects.update(render_status="ready")  # this test needs no video; the page would
    for _ in range(20):
        lease = assignment.lease_next_query(project=project, annotator=annotator).lease
        query = Query.objects.select_related("clip_a", "clip_b").get(pk=lease.query_id)
        a_better = query.clip_a.true_return > query.clip_b.true_return
        left_is_a = not lease.swapped
        choice = "left" if a_better == left_is_a else "right"
        assignment.judgment_submit(
            query_id=query.pk, annotator=annotator, choice=choice, lease_token=lease.token, client_id=uuid.uuid4()
        )
    client = api_client_for(researcher)
    url = f"/api/v1/projects/{project.slug}/reward-models/"
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, {"sources": "judgments", "config": SMALL_MODEL}, format="json").status_code == 202
    human_only = RewardModel.objects.get(version=1)
    assert human_only.status == "ready", human_only.error
    assert human_only.preference_set.counts == {"human": 20}
    # Issue 13: no clip a person labelled is held out for the metric, so every label is used (train + validation).
    assert human_only.metrics["n_train_pairs"] + human_only.metrics["n_val_pairs"] == 20
    assert human_only.metrics["holdout_clips"] == 0

    FactorRanking.objects.create(project=project, annotator=annotator, groups=RANKING)
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, {"sources": "both", "config": SMALL_MODEL}, format="json").status_code == 202
    both = RewardModel.objects.get(version=2)
    assert both.status == "ready", both.error
    counts = both.preference_set.counts
    assert counts["human"] == 20 and counts["heron"] > 0
    table = pq.read_table(io.BytesIO(both.preference_set.file.read()))
    human_rows = [r for r in table.to_pylist() if r["origin"] == "human"]
    assert {r["annotator"] for r in human_rows} == {annotator.username} and {r["level"] for r in human_rows} == {-1}
