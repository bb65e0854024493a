"""External data in: episodes uploaded from a researcher's own simulator, and local Minari datasets.

Good uploads (frames, an MP4, factors only) become clips, queries and video through an ``upload`` run; every kind
of bad upload gets a 4xx naming the problem and stores nothing (rows and media folder unchanged). Minari datasets
written here with Minari's own DataCollector are imported through the command and the API; a HERON ranking over
the imported clips trains a reward model (offline RLHF).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client

from labeling import rankings
from labeling.models import Clip, Project, ProjectRole, Query, RenderStatus, Rollout
from labeling.services import membership_add, project_create
from tests.conftest import api_client_for, make_project, npz_bytes, run_in_process

T = 40  # steps per uploaded episode
SEGMENT = 10  # steps per clip: 4 clips an episode


@pytest.fixture
def ext_project(researcher, annotator) -> Project:
    project = project_create(
        created_by=researcher,
        name="Own sim",
        slug="own-sim",
        env_id="external",
        segment_steps=SEGMENT,
        factors=[
            {"key": "speed", "label": "Speed", "source": "obs:0"},
            {"key": "energy", "label": "Energy", "source": "action_sq", "direction": -1},
        ],
    )
    Project.objects.filter(pk=project.pk).update(
        observation_space={"shape": [3]}, action_space={"kind": "box", "shape": [1]}
    )
    project.refresh_from_db()
    membership_add(project=project, user=annotator, role=ProjectRole.ANNOTATOR)
    return project


def episode(**overrides: np.ndarray | None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray | None] = {
        "observations": rng.normal(size=(T + 1, 3)),
        "actions": rng.uniform(-1, 1, size=(T, 1)).astype(np.float32),
        "factor_speed": rng.normal(size=T),
        "factor_energy": rng.uniform(0, 1, size=T),
        "rewards": rng.normal(size=T),
    }
    arrays.update(overrides)
    return {name: value for name, value in arrays.items() if value is not None}


def frames(n: int = T + 1, size: int = 32) -> np.ndarray:
    shade = np.linspace(0, 255, n, dtype=np.uint8)
    return np.broadcast_to(shade[:, None, None, None], (n, size, size, 3)).copy()


def upload(project, user, raw: bytes, *, video: bytes | None = None, capture=None, **extra):
    data = {"file": SimpleUploadedFile("episode.npz", raw, content_type="application/octet-stream"), **extra}
    if video is not None:
        data["video"] = SimpleUploadedFile("episode.mp4", video, content_type="video/mp4")
    client = api_client_for(user)
    url = f"/api/v1/projects/{project.slug}/rollouts/"
    if capture is None:
        return client.post(url, data, format="multipart")
    with capture(execute=True):
        return client.post(url, data, format="multipart")


def media_files(settings) -> list[str]:
    root = Path(settings.MEDIA_ROOT)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


# --- good uploads ---------------------------------------------------------------------------------------------


def test_upload_with_frames_makes_clips_queries_and_video(ext_project, researcher, django_capture_on_commit_callbacks):
    response = upload(
        ext_project, researcher, npz_bytes(**episode(frames=frames())), capture=django_capture_on_commit_callbacks
    )
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["kind"] == "upload" and body["steps"] == ["ingesting"]
    run = api_client_for(researcher).get(f"/api/v1/runs/{body['id']}/").json()
    assert run["state"] == "done", run
    assert run["results"]["ingesting"]["clips"] == T // SEGMENT
    clips = list(Clip.objects.filter(project=ext_project).order_by("start"))
    assert len(clips) == T // SEGMENT
    assert all(clip.render_status == RenderStatus.READY and clip.video for clip in clips)
    assert Query.objects.filter(project=ext_project).count() > 0
    rollout = Rollout.objects.get(project=ext_project)
    assert rollout.policy == "upload" and rollout.n_steps == T
    first = clips[0]
    assert first.factor_totals["speed"] == pytest.approx(float(episode()["factor_speed"][:SEGMENT].sum()))
    assert first.true_return == pytest.approx(float(episode()["rewards"][:SEGMENT].sum()))


def test_upload_with_an_mp4_cuts_clips_from_it(ext_project, researcher, django_capture_on_commit_callbacks, tmp_path):
    from trainer.core import video

    path = tmp_path / "episode.mp4"
    video.write_mp4(frames(T, size=32), path, fps=10)
    response = upload(
        ext_project,
        researcher,
        npz_bytes(**episode()),
        video=path.read_bytes(),
        capture=django_capture_on_commit_callbacks,
    )
    assert response.status_code == 202, response.json()
    clips = Clip.objects.filter(project=ext_project)
    assert clips.count() == T // SEGMENT
    assert set(clips.values_list("render_status", flat=True)) == {RenderStatus.READY}
    info = video.probe_video(clips.first().video.path)
    assert info.n_frames == SEGMENT and info.codec == "h264"


def test_factors_only_upload_makes_data_only_clips_and_no_queries(
    ext_project, researcher, django_capture_on_commit_callbacks
):
    response = upload(
        ext_project, researcher, npz_bytes(**episode(rewards=None)), capture=django_capture_on_commit_callbacks
    )
    assert response.status_code == 202, response.json()
    clips = Clip.objects.filter(project=ext_project)
    assert clips.count() == T // SEGMENT
    assert set(clips.values_list("render_status", flat=True)) == {RenderStatus.NO_VIDEO}
    assert set(clips.values_list("true_return", flat=True)) == {None}
    assert not Query.objects.filter(project=ext_project).exists()
    # Never rendered nor re-simulated: the on-demand render path leaves them alone.
    from trainer.clip_pipeline import render_clip

    assert render_clip(clips.first()) is False
    assert clips.first().render_status == RenderStatus.NO_VIDEO


def test_discrete_actions_are_checked_against_n(researcher, django_capture_on_commit_callbacks):
    project = project_create(
        created_by=researcher, name="Disc", slug="disc", env_id="external", segment_steps=SEGMENT,
        factors=[{"key": "speed", "source": "obs:0"}],
    )  # fmt: skip
    Project.objects.filter(pk=project.pk).update(action_space={"kind": "discrete", "n": 2})
    project.refresh_from_db()
    good = {"observations": np.zeros((T + 1, 4)), "actions": np.arange(T) % 2, "factor_speed": np.ones(T)}
    assert upload(project, researcher, npz_bytes(**good), capture=django_capture_on_commit_callbacks).status_code == 202
    bad = {**good, "actions": np.full(T, 2)}
    response = upload(project, researcher, npz_bytes(**bad))
    assert response.status_code == 400 and "actions" in response.json()["error"]["fields"]


# --- bad uploads ----------------------------------------------------------------------------------------------


def _pickled() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **episode(observations=np.array([{"a": 1}] * (T + 1), dtype=object)))
    return buffer.getvalue()


BAD = {
    "pickle": (_pickled, "observations", "objects"),
    "not_npz": (lambda: b"just some bytes, no archive", "file", "not an .npz"),
    "a_bare_npy": (lambda: b"\x93NUMPY\x01\x00" + bytes(100), "file", "not an .npz"),
    "observations_T_rows": (lambda: npz_bytes(**episode(observations=np.zeros((T, 3)))), "observations", "T+1"),
    "observation_shape": (lambda: npz_bytes(**episode(observations=np.zeros((T + 1, 4)))), "observations", "(T+1, 3)"),
    "action_shape": (lambda: npz_bytes(**episode(actions=np.zeros((T, 2)))), "actions", "(T, 1)"),
    "nan_factor": (
        lambda: npz_bytes(**episode(factor_speed=np.where(np.arange(T) == 5, np.nan, 1.0))),
        "factor_speed",
        "not finite",
    ),
    "inf_observation": (
        lambda: npz_bytes(**episode(observations=np.full((T + 1, 3), np.inf))),
        "observations",
        "not finite",
    ),
    "unknown_factor": (lambda: npz_bytes(**episode(factor_comfort=np.ones(T))), "factor_comfort", "not the project's"),
    "missing_factor": (lambda: npz_bytes(**episode(factor_energy=None)), "factor_energy", "missing"),
    "factor_length": (lambda: npz_bytes(**episode(factor_speed=np.ones(T - 1))), "factor_speed", "one value per step"),
    "string_actions": (lambda: npz_bytes(**episode(actions=np.array(["a"] * T))), "actions", "numeric"),
    "unknown_array": (lambda: npz_bytes(**episode(secret=np.ones(3))), "secret", "unknown arrays"),
    "frames_dtype": (lambda: npz_bytes(**episode(frames=frames().astype(np.float32))), "frames", "uint8"),
    "frames_count": (lambda: npz_bytes(**episode(frames=frames(T - 3))), "frames", "frames for"),
    "frames_too_large": (lambda: npz_bytes(**episode(frames=frames(T + 1, size=2048)[:, :, :2])), "frames", "pixels"),
    "too_many_steps": (
        lambda: npz_bytes(**episode(observations=np.zeros((3001, 3)), actions=np.zeros((3000, 1)))),
        "actions",
        "steps",
    ),
    "shorter_than_a_clip": (
        lambda: npz_bytes(
            observations=np.zeros((6, 3)), actions=np.zeros((5, 1)), factor_speed=np.ones(5), factor_energy=np.ones(5)
        ),
        "actions",
        "fewer than one clip",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_uploads_are_refused_and_store_nothing(case, ext_project, researcher, settings):
    settings.UPLOAD_MAX_STEPS = 2000
    make, field, words = BAD[case]
    before = media_files(settings)
    response = upload(ext_project, researcher, make())
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert field in error["fields"], error
    assert words in error["message"], error
    assert not Rollout.objects.exists() and not Clip.objects.exists()
    from trainer.models import Run

    assert not Run.objects.exists()
    assert media_files(settings) == before


def test_a_bad_mp4_is_refused(ext_project, researcher, settings):
    response = upload(ext_project, researcher, npz_bytes(**episode()), video=b"\x00\x00\x00\x18ftypmp42" + bytes(300))
    assert response.status_code == 400 and "video" in response.json()["error"]["fields"]
    response = upload(ext_project, researcher, npz_bytes(**episode(frames=frames())), video=b"<html>")
    assert response.status_code == 400
    assert not Rollout.objects.exists() and media_files(settings) == []


def test_an_upload_larger_than_the_upload_limit_gets_413(ext_project, researcher, settings):
    settings.MAX_UPLOAD_BYTES = 4096
    response = upload(ext_project, researcher, npz_bytes(**episode(frames=frames())))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert not Rollout.objects.exists() and media_files(settings) == []


def test_upload_route_takes_more_than_max_request_bytes(
    ext_project, researcher, settings, django_capture_on_commit_callbacks
):
    settings.MAX_REQUEST_BYTES = 2048
    raw = npz_bytes(**episode())
    assert len(raw) > 2048
    assert upload(ext_project, researcher, raw, capture=django_capture_on_commit_callbacks).status_code == 202
    # Other routes keep the small limit.
    response = api_client_for(researcher).post(
        f"/api/v1/projects/{ext_project.slug}/runs/", {"params": {"x": "y" * 4000}}, format="json"
    )
    assert response.status_code == 413


def test_a_huge_array_in_a_small_archive_is_refused_before_loading(ext_project, researcher, settings):
    settings.UPLOAD_MAX_ARRAY_BYTES = 100_000
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **episode(frames=np.zeros((T + 1, 200, 200, 3), dtype=np.uint8)))
    response = upload(ext_project, researcher, buffer.getvalue())
    assert response.status_code == 400 and "decompressed" in response.json()["error"]["message"]


@pytest.mark.parametrize(("who", "status"), [("outsider", 404), ("annotator", 403)])
def test_only_the_projects_researchers_may_upload(who, status, ext_project, request, settings):
    response = upload(ext_project, request.getfixturevalue(who), npz_bytes(**episode()))
    assert response.status_code == status
    assert not Rollout.objects.exists() and media_files(settings) == []


def test_upload_is_multipart_only(ext_project, researcher):
    response = api_client_for(researcher).post(f"/api/v1/projects/{ext_project.slug}/rollouts/", {}, format="json")
    assert response.status_code == 415


# --- the ranking page of a factors-only project --------------------------------------------------------------


def test_ranking_page_shows_factor_values_for_data_only_clips(
    ext_project, researcher, annotator, django_capture_on_commit_callbacks
):
    upload(ext_project, researcher, npz_bytes(**episode()), capture=django_capture_on_commit_callbacks)
    client = Client()
    client.force_login(annotator)
    response = client.get(f"/projects/{ext_project.slug}/rank/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-factor-stats="speed"' in html and 'data-factor-stats="energy"' in html
    assert "data only, no video" in html
    totals = [c.factor_totals["speed"] for c in Clip.objects.filter(project=ext_project)]
    assert f"{max(totals):.2f}" in html and f"{min(totals):.2f}" in html
    assert "video being rendered" not in html


# --- Minari ---------------------------------------------------------------------------------------------------


def write_minari_dataset(root: Path, dataset_id: str, *, episodes: int = 3, steps: int = 60, seeded: bool = True):
    """A small Pendulum-v1 dataset written by Minari itself (``create_dataset_from_buffers``, the writer its
    DataCollector uses; the collector's step buffering needs jax, which this project does not install)."""
    import gymnasium
    import minari
    from minari.data_collector import EpisodeBuffer

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    env = gymnasium.make("Pendulum-v1", max_episode_steps=steps)
    buffers = []
    for index in range(episodes):
        seed = 100 + index
        obs, _ = env.reset(seed=seed)
        env.action_space.seed(index)
        observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
        for _ in range(steps):
            action = env.action_space.sample()
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            if terminated or truncated:
                break
        buffers.append(
            EpisodeBuffer(
                seed=seed if seeded else None,
                observations=np.stack(observations),
                actions=np.stack(actions),
                rewards=np.asarray(rewards),
                terminations=np.asarray(terminations),
                truncations=np.asarray(truncations),
                infos={},
            )
        )
    minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=buffers,
        env=env,
        algorithm_name="random",
        author="heronry",
        author_email="dev@heronry.invalid",
    )
    env.close()


@pytest.fixture
def minari_root(tmp_path, settings, monkeypatch):
    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    settings.MINARI_DATASETS_PATH = root
    return root


@pytest.fixture
def pendulum(researcher, annotator) -> Project:
    project = make_project(researcher, slug="pend")
    membership_add(project=project, user=annotator, role=ProjectRole.ANNOTATOR)
    return project


def test_import_minari_command_with_seeds_gives_video_by_resimulation(minari_root, pendulum, researcher):
    write_minari_dataset(minari_root, "pendulum/seeded-v0")
    call_command("import_minari", "pendulum/seeded-v0", "--project", pendulum.slug, "--wait", "--queries", "2")
    clips = Clip.objects.filter(project=pendulum)
    assert clips.count() == 3  # 60 steps, clips of 50
    assert set(Rollout.objects.filter(project=pendulum).values_list("env_seed", flat=True)) == {100, 101, 102}
    assert Query.objects.filter(project=pendulum).count() == 2
    queried = set(Query.objects.values_list("clip_a_id", flat=True)) | set(
        Query.objects.values_list("clip_b_id", flat=True)
    )
    assert all(c.render_status == RenderStatus.READY for c in clips.filter(pk__in=queried))
    assert all(set(c.factor_totals) == {"angle_sq", "angular_velocity_sq", "torque_sq"} for c in clips)

    # The same episodes, re-simulated, give the same factor totals the import computed from the data.
    from trainer.core import envs, rollouts

    rollout = Rollout.objects.filter(project=pendulum).order_by("id").first()
    with rollout.data.open("rb") as handle:
        data = rollouts.load_npz(handle.read())
    replayed = rollouts.resimulate("Pendulum-v1", seed=data.seed, actions=data.actions)
    np.testing.assert_allclose(replayed, data.observations, rtol=1e-5, atol=1e-5)
    assert envs.get_preset("Pendulum-v1")


def test_import_minari_without_seeds_is_factors_only_and_offline_rlhf_trains_a_reward_model(
    minari_root, pendulum, researcher, annotator
):
    write_minari_dataset(minari_root, "pendulum/noseed-v0", episodes=4, steps=100, seeded=False)
    call_command("import_minari", "pendulum/noseed-v0", "--project", pendulum.slug, "--wait", "--max-episodes", "3")
    clips = Clip.objects.filter(project=pendulum)
    assert clips.count() == 6
    assert set(clips.values_list("render_status", flat=True)) == {RenderStatus.NO_VIDEO}
    assert not Query.objects.exists()
    rankings.ranking_submit(
        project=pendulum, annotator=annotator, groups=[["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]]
    )
    run = run_in_process(
        pendulum, researcher, "retrain", reward_config={"max_epochs": 5, "ensemble_size": 1, "hidden_sizes": [32]}
    )
    assert run.state == "done", run.error
    assert run.reward_model is not None and run.reward_model.status == "ready"


def test_import_minari_command_refuses_unknown_datasets(minari_root, pendulum):
    with pytest.raises(CommandError, match="no local Minari dataset"):
        call_command("import_minari", "pendulum/nothing-v0", "--project", pendulum.slug)
    with pytest.raises(CommandError, match="no project"):
        call_command("import_minari", "x", "--project", "nope")


def test_minari_import_api(minari_root, pendulum, researcher, annotator, outsider, django_capture_on_commit_callbacks):
    write_minari_dataset(minari_root, "pendulum/api-v0", episodes=2)
    url = f"/api/v1/projects/{pendulum.slug}/imports/minari"
    client = api_client_for(researcher)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"dataset": "pendulum/api-v0"}, format="json")
    assert response.status_code == 202, response.json()
    run = client.get(f"/api/v1/runs/{response.json()['id']}/").json()
    assert run["kind"] == "import_dataset" and run["state"] == "done", run
    assert Clip.objects.filter(project=pendulum).count() == 2

    before = (Rollout.objects.count(), Clip.objects.count())
    outside = minari_root.parent / "elsewhere"
    (outside / "data").mkdir(parents=True)
    for dataset in ("../elsewhere", str(outside), "/etc", "pendulum/missing-v0", "", "a\x00b"):
        response = client.post(url, {"dataset": dataset}, format="json")
        assert response.status_code == 400, (dataset, response.json())
    assert client.post(url, {"dataset": "pendulum/api-v0", "max_episodes": 10**9}, format="json").status_code == 400
    assert api_client_for(annotator).post(url, {"dataset": "pendulum/api-v0"}, format="json").status_code == 403
    assert api_client_for(outsider).post(url, {"dataset": "pendulum/api-v0"}, format="json").status_code == 404
    assert (Rollout.objects.count(), Clip.objects.count()) == before


def test_minari_dataset_of_another_environment_is_refused(minari_root, ext_project, researcher):
    write_minari_dataset(minari_root, "pendulum/other-v0", episodes=1)  # observations (3,), actions (1,)
    Project.objects.filter(pk=ext_project.pk).update(observation_space={"shape": [5]})
    response = api_client_for(researcher).post(
        f"/api/v1/projects/{ext_project.slug}/imports/minari", {"dataset": "pendulum/other-v0"}, format="json"
    )
    assert response.status_code == 400 and "observations" in response.json()["error"]["message"]


def test_an_upload_step_run_again_keeps_its_clips_and_queries(
    ext_project, researcher, django_capture_on_commit_callbacks
):
    from trainer import loop
    from trainer.external_data import ingest
    from trainer.models import Run

    upload(ext_project, researcher, npz_bytes(**episode(frames=frames())), capture=django_capture_on_commit_callbacks)
    clips, queries = Clip.objects.count(), Query.objects.count()
    run = Run.objects.select_related("project").get()
    ingest(run, None, lambda fraction, message: None)  # a redelivered step
    assert (Clip.objects.count(), Query.objects.count()) == (clips, queries)
    assert loop.failed_step(run) == "ingesting" or run.state == "done"
