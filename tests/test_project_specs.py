"""Project specs: the shipped examples create projects that make clips (and video), bad specs are refused at
their dotted path with nothing stored, and a spec read back from a project creates an equal project."""

from __future__ import annotations

import copy
from io import StringIO
from pathlib import Path

import numpy as np
import pytest
import yaml
from django.core.management import CommandError, call_command

from labeling.errors import ValidationFailed
from labeling.models import Clip, Project, RenderStatus
from tests.conftest import api_client_for, run_in_process
from trainer.core import rollouts, video
from trainer.core.project_spec import SpecError, parse_spec
from trainer.models import RunKind
from trainer.project_specs import project_create_from_spec, project_spec

SPECS = Path(__file__).resolve().parent.parent / "specs"
SPEC_FILES = sorted(SPECS.glob("*.yaml"))
SIMPLE = {
    "spec_version": 1,
    "name": "Cart",
    "environment": {"id": "CartPole-v1"},
    "factors": [{"key": "tilt", "direction": "lower", "source": "obs:2|abs"}],
}


def test_every_example_env_is_shipped():
    ids = {yaml.safe_load(path.read_text())["environment"]["id"] for path in SPEC_FILES}
    assert ids == {
        "Pendulum-v1",
        "MountainCarContinuous-v0",
        "CartPole-v1",
        "Hopper-v5",
        "Walker2d-v5",
        "Ant-v5",
        "HalfCheetah-v5",
    }


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_a_shipped_spec_creates_a_project_that_makes_clips_with_video(path, researcher):
    project = project_create_from_spec(created_by=researcher, spec=path.read_text())
    spec = yaml.safe_load(path.read_text())
    assert project.factors.count() == len(spec["factors"])
    assert project.action_space["kind"] in ("box", "discrete")
    length = project.segment_steps
    # Three short episodes (random play ends CartPole early), one rendered clip each at most.
    run = run_in_process(
        project, researcher, RunKind.GENERATE_CLIPS, rollouts=3, steps=length, queries=0, render="all", seed=1
    )
    assert run.state == "done", run.error
    clip = Clip.objects.select_related("rollout").filter(project=project).first()
    assert clip is not None
    assert clip.render_status == RenderStatus.READY, clip.render_error
    info = video.probe_video(clip.video.path)
    assert (info.width, info.height) == (project.render_width, project.render_height)
    assert set(clip.factor_totals) == {f["key"] for f in spec["factors"]}
    assert all(np.isfinite(list(clip.factor_totals.values())))
    with clip.rollout.data.open("rb") as handle:
        data = rollouts.load_npz(handle.read())
    # Re-simulating from the seed and the stored actions reproduces the rollout (per family).
    observations = rollouts.resimulate(project.env_id, seed=data.seed, actions=data.actions, env_kwargs=data.env_kwargs)
    np.testing.assert_allclose(observations, data.observations)
    if project.action_space["kind"] == "discrete":
        assert data.actions.dtype == np.int64 and data.actions.shape == (length, 1)


def test_a_mujoco_project_renders_through_its_tracking_camera():
    from trainer.core.envs import get_preset

    for env_id in ("Hopper-v5", "Walker2d-v5", "Ant-v5", "HalfCheetah-v5"):
        preset = get_preset(env_id)
        assert preset.render_kwargs.get("camera_name") == "track" and preset.renders_at_requested_size


def test_the_spec_round_trips(researcher):
    project = project_create_from_spec(created_by=researcher, spec=(SPECS / "hopper.yaml").read_text())
    spec = project_spec(project)
    again = project_create_from_spec(created_by=researcher, spec={**spec, "slug": "hopper-2"})
    fields = [f.name for f in Project._meta.fields if f.name not in ("id", "slug", "created_at")]
    assert {f: getattr(again, f) for f in fields} == {f: getattr(project, f) for f in fields}
    factor_fields = ("key", "label", "description", "unit", "direction", "sigma", "source", "position")
    assert list(again.factors.values(*factor_fields)) == list(project.factors.values(*factor_fields))
    assert project_spec(again) == {**spec, "slug": "hopper-2"}
    assert spec["environment"]["algorithm"] == "auto" and spec["environment"]["kwargs"] == {
        "terminate_when_unhealthy": False
    }


@pytest.mark.parametrize(
    "change, path",
    [
        (lambda s: s.update(colour="red"), "colour"),
        (lambda s: s["environment"].update(speed=3), "environment.speed"),
        (lambda s: s["factors"][0].update(source="info:"), "factors.0.source"),
        (lambda s: s["factors"][0].update(source="obs:2|cube"), "factors.0.source"),
        (lambda s: s["factors"][0].update(direction="up"), "factors.0.direction"),
        (lambda s: s["factors"].append({"key": "tilt", "direction": "lower", "source": "reward"}), "factors.1.key"),
        (lambda s: s.update(clips={"length": 1}), "clips.length"),
        (lambda s: s.update(quality={"gold_rate": 0.9}), "quality.gold_rate"),
        (lambda s: s.update(loop={"policy_timesteps": 0}), "loop"),
        (lambda s: s.update(feedback={"modes": ["ranking", "ranking"]}), "feedback.modes"),
        (lambda s: s.pop("name"), "name"),
        (lambda s: s["environment"].update(observation={"shape": [3]}), "environment.observation"),
    ],
)
def test_spec_problems_name_their_dotted_path(change, path):
    spec = copy.deepcopy(SIMPLE)
    change(spec)
    with pytest.raises(SpecError) as caught:
        parse_spec(spec)
    assert path in caught.value.fields, caught.value.fields


@pytest.mark.parametrize(
    "change, path",
    [
        (lambda s: s["environment"].update(id="Humanoid-v4"), "environment.id"),  # not in ALLOWED_ENV_IDS
        (lambda s: s["environment"].update(id="NoSuchEnv-v0"), "environment.id"),
        (lambda s: s["environment"].update(kwargs={"xml_file": "/etc/passwd"}), "environment.kwargs.xml_file"),
        (lambda s: s["environment"].update(initial_policies=["zero:0.1"]), "environment.initial_policies.0"),
        (lambda s: s["environment"].update(algorithm="sac"), "environment.algorithm"),  # SAC can't do Discrete
        (lambda s: s["factors"][0].update(source="info:x_velocity"), "factors.0.source"),  # CartPole's info is {}
        (lambda s: s["factors"][0].update(source="obs:9"), "factors.0.source"),
    ],
)
def test_the_platform_checks_what_the_environment_decides_and_stores_nothing(change, path, researcher):
    spec = copy.deepcopy(SIMPLE)
    change(spec)
    with pytest.raises(ValidationFailed) as caught:
        project_create_from_spec(created_by=researcher, spec=spec)
    assert path in caught.value.fields, caught.value.fields
    assert not Project.objects.exists()


def test_allowed_env_ids_setting_limits_generic_environments(settings, researcher):
    settings.ALLOWED_ENV_IDS = ["Pendulum-*"]
    with pytest.raises(ValidationFailed) as caught:
        project_create_from_spec(created_by=researcher, spec=SIMPLE)
    assert "environment.id" in caught.value.fields
    settings.ALLOWED_ENV_IDS = ["Cart*"]
    assert project_create_from_spec(created_by=researcher, spec=SIMPLE).env_id == "CartPole-v1"


def test_an_external_project_states_its_spaces(researcher):
    spec = {
        "spec_version": 1,
        "name": "Robot logs",
        "environment": {"id": "external", "observation": {"shape": [11]}, "action": {"kind": "discrete", "n": 4}},
        "factors": [{"key": "speed", "direction": "higher", "source": "obs:3"}],
    }
    project = project_create_from_spec(created_by=researcher, spec=spec)
    assert project.observation_space == {"shape": [11]} and project.action_space == {"kind": "discrete", "n": 4}
    assert project_spec(project)["environment"] == spec["environment"]
    without = copy.deepcopy(spec)
    del without["environment"]["action"]
    with pytest.raises(ValidationFailed) as caught:
        project_create_from_spec(created_by=researcher, spec=without)
    assert "environment.action" in caught.value.fields


def test_yaml_is_read_safely_and_bounded():
    with pytest.raises(SpecError) as caught:
        parse_spec("!!python/object/apply:os.system ['true']")
    assert "spec" in caught.value.fields
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n"
        for i in range(8)
    )
    with pytest.raises(SpecError, match=r"too large|nested"):
        parse_spec(bomb)
    with pytest.raises(SpecError) as caught:
        parse_spec("spec_version: 2\nname: x\n")
    assert "spec_version" in caught.value.fields


def test_the_management_command_creates_a_project(researcher):
    out = StringIO()
    call_command("project_create", str(SPECS / "cartpole.yaml"), owner=researcher.username, stdout=out)
    project = Project.objects.get(slug="cartpole")
    assert project.action_space == {"kind": "discrete", "n": 2} and "created project" in out.getvalue()
    with pytest.raises(CommandError, match="slug"):
        call_command("project_create", str(SPECS / "cartpole.yaml"), owner=researcher.username)


def test_the_api_creates_from_a_spec_object_or_text_and_returns_the_spec(researcher, annotator):
    client = api_client_for(researcher)
    text = (SPECS / "cartpole.yaml").read_text()
    response = client.post("/api/v1/projects/", {"spec": text}, format="json")
    assert response.status_code == 201, response.json()
    spec = client.get("/api/v1/projects/cartpole/spec").json()
    assert spec["spec_version"] == 1 and spec["environment"]["id"] == "CartPole-v1"
    response = client.post("/api/v1/projects/", {"spec": {**spec, "slug": "cartpole-2"}}, format="json")
    assert response.status_code == 201, response.json()
    assert client.get("/api/v1/projects/cartpole-2/spec").json() == {**spec, "slug": "cartpole-2"}
    bad = {**spec, "slug": "cartpole-3", "factors": [{**spec["factors"][0], "source": "info:nope"}]}
    response = client.post("/api/v1/projects/", {"spec": bad}, format="json")
    assert response.status_code == 400 and "factors.0.source" in str(response.json())
    assert not Project.objects.filter(slug="cartpole-3").exists()
    response = client.post("/api/v1/projects/", {"spec": spec, "name": "x"}, format="json")
    assert response.status_code == 400
    # The spec is the researchers' (404 for outsiders, 403 for annotators of the project).
    assert api_client_for(annotator).get("/api/v1/projects/cartpole/spec").status_code in (403, 404)


def test_researchers_create_a_project_on_the_upload_page(client, researcher, annotator):
    from django.core.files.uploadedfile import SimpleUploadedFile

    client.force_login(researcher)
    page = client.get("/projects/new/")
    assert page.status_code == 200 and b'name="spec_file"' in page.content and b"<script>" not in page.content
    bad = client.post("/projects/new/", {"spec": "spec_version: 1\nname: x\nenvironment: {id: CartPole-v1}\ncolour: 1"})
    assert bad.status_code == 400 and b"colour" in bad.content and not Project.objects.exists()
    upload = SimpleUploadedFile("cartpole.yaml", (SPECS / "cartpole.yaml").read_bytes(), content_type="text/yaml")
    response = client.post("/projects/new/", {"spec_file": upload})
    assert response.status_code == 302 and Project.objects.filter(slug="cartpole").exists()
    client.force_login(annotator)
    assert client.get("/projects/new/").status_code == 404
