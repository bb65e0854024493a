"""The loop on spec'd simulator tasks: CartPole-v1 (discrete actions, PPO) and Hopper-v5 (MuJoCo, SAC), two
iterations each on a tiny budget, in-process (eager) like tests/test_loop.py; and a clear 400 for projects
without a simulator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from labeling.errors import ValidationFailed
from labeling.models import Clip
from labeling.rankings import ranking_submit
from labeling.services import membership_add
from tests.conftest import api_client_for, run_in_process
from trainer import loop
from trainer.core import rollouts
from trainer.models import PolicyCheckpoint, RewardModel, Run, RunKind, RunState
from trainer.project_specs import project_create_from_spec

SPECS = Path(__file__).resolve().parent.parent / "specs"

TINY_LOOP = {
    "retrain_on_ranking": False,
    "reward_config": {"hidden_sizes": [16, 16], "ensemble_size": 2, "max_epochs": 3, "patience": 2},
    "rollouts": 2,
    "label_budget": 0,
}
TINY_PPO = {"ppo_n_steps": 32, "ppo_batch_size": 16, "ppo_n_epochs": 1, "eval_episodes": 2, "net_arch": [16, 16]}
TINY_SAC = {"learning_starts": 20, "batch_size": 16, "eval_episodes": 1, "net_arch": [16, 16]}


def spec_project(name: str, researcher, annotator, *, episode_steps: int, clip_length: int, loop_settings: dict):
    """A ranking-mode project from a shipped spec, shrunk for the test, with an initial clip pool and a ranking."""
    spec = yaml.safe_load((SPECS / name).read_text())
    spec["environment"]["episode_steps"] = episode_steps
    spec["clips"]["length"] = clip_length
    spec["feedback"] = {"modes": ["ranking"]}
    spec["loop"] = loop_settings
    project = project_create_from_spec(created_by=researcher, spec=spec)
    membership_add(project=project, user=annotator)
    run = run_in_process(
        project, researcher, RunKind.GENERATE_CLIPS, rollouts=4, steps=episode_steps, queries=0, render="none"
    )
    assert run.state == "done", run.error
    assert Clip.objects.filter(project=project).count() >= 2
    groups = [[factor["key"]] for factor in spec["factors"]]
    ranking_submit(project=project, annotator=annotator, groups=groups, sigmas={})
    return project


def two_iterations(project, researcher, django_capture_on_commit_callbacks) -> tuple[Run, Run]:
    with django_capture_on_commit_callbacks(execute=True):
        loop.iteration_create(project=project, created_by=researcher, count=2)
    first, second = Run.objects.filter(project=project, kind=RunKind.ITERATION).order_by("number")
    assert first.state == second.state == RunState.DONE, (first.error, second.error)
    assert second.previous == first
    return first, second


def test_two_iterations_on_cartpole_train_ppo_on_one_hot_discrete_features(
    researcher, annotator, django_capture_on_commit_callbacks
):
    project = spec_project(
        "cartpole.yaml",
        researcher,
        annotator,
        episode_steps=40,
        clip_length=10,
        loop_settings={**TINY_LOOP, "policy": TINY_PPO, "policy_timesteps": 32},
    )
    _, second = two_iterations(project, researcher, django_capture_on_commit_callbacks)
    checkpoint = PolicyCheckpoint.objects.get(run=second)
    assert checkpoint.algorithm == "ppo" and checkpoint.timesteps == 64
    assert RewardModel.objects.filter(run=second).exists()
    clip = Clip.objects.filter(project=project, iteration=2).select_related("rollout").first()
    assert clip is not None
    with clip.rollout.data.open("rb") as handle:
        data = rollouts.load_npz(handle.read())
    assert data.actions.dtype == np.int64 and data.actions.shape[1] == 1 and data.discrete_actions == 2
    features = rollouts.segment_features(data, rollouts.Segment(clip.start, clip.length))
    assert features.shape == (clip.length, 6) and set(np.unique(features[:, 4:])) <= {0.0, 1.0}


def test_two_iterations_on_hopper_train_sac(researcher, annotator, django_capture_on_commit_callbacks):
    project = spec_project(
        "hopper.yaml",
        researcher,
        annotator,
        episode_steps=40,
        clip_length=20,
        loop_settings={**TINY_LOOP, "policy": TINY_SAC, "policy_timesteps": 40},
    )
    _, second = two_iterations(project, researcher, django_capture_on_commit_callbacks)
    checkpoint = PolicyCheckpoint.objects.get(run=second)
    assert checkpoint.algorithm == "sac" and checkpoint.timesteps == 80
    assert Clip.objects.filter(project=project, iteration=2).count() == 2 * 2  # 2 rollouts of 40 steps


def test_the_spec_can_choose_the_algorithm(researcher):
    spec = yaml.safe_load((SPECS / "pendulum.yaml").read_text())
    spec["environment"]["algorithm"] = "ppo"
    project = project_create_from_spec(created_by=researcher, spec=spec)
    assert project.loop_settings["policy"]["algorithm"] == "ppo"


def test_a_project_without_a_simulator_gets_a_clear_400(researcher):
    spec = {
        "spec_version": 1,
        "name": "Logs",
        "slug": "logs",
        "environment": {"id": "external", "observation": {"shape": [3]}, "action": {"kind": "box", "shape": [1]}},
        "factors": [{"key": "speed", "direction": "higher", "source": "obs:0"}],
    }
    project = project_create_from_spec(created_by=researcher, spec=spec)
    with pytest.raises(ValidationFailed, match="simulator"):
        loop.iteration_create(project=project, created_by=researcher)
    response = api_client_for(researcher).post(
        f"/api/v1/projects/{project.slug}/runs/", {"kind": "iteration"}, format="json"
    )
    assert response.status_code == 400 and "simulator" in str(response.json())
    assert not Run.objects.filter(project=project).exists()
