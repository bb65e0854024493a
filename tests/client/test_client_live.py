"""heronry_client against a real HTTP server (pytest-django's live_server, tasks run in-process)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from django.core.files.base import ContentFile
from heronry_client import (
    AuthenticationError,
    Client,
    Conflict,
    HeronryError,
    NotFound,
    PermissionDenied,
    RateLimited,
    RunFailed,
    ServerError,
    TransportError,
    ValidationError,
    WaitTimeout,
)
from heronry_client.reward import RewardModel

from labeling.models import Judgment, Project
from labeling.services import project_create, queries_create_random
from tests.client.conftest import CLIENT_DIR
from tests.conftest import PASSWORD, add_fake_clips, npz_bytes

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def rita(live_server, researcher) -> Client:
    with Client.login(live_server.url, researcher.username, PASSWORD, retries=0) as client:
        yield client


@pytest.fixture
def anna(live_server, annotator) -> Client:
    with Client.login(live_server.url, annotator.username, PASSWORD, retries=0) as client:
        yield client


def stored_reward_model(project: Project, *, seed: int = 0, version: int = 1):
    """A ready reward model whose files are a platform checkpoint with non-trivial statistics."""
    from trainer.core.reward import MeanStd, RewardEnsemble, RewardModelConfig, to_bytes
    from trainer.core.reward.data import FeatureLayout
    from trainer.models import PreferenceSet
    from trainer.models import RewardModel as RewardModelRow

    rng = np.random.default_rng(seed)
    ensemble = RewardEnsemble(
        RewardModelConfig(hidden_sizes=(32, 32), ensemble_size=3, seed=seed),
        FeatureLayout(feature_dim=4, obs_dim=3, action_dim=1),
        feature_stats=MeanStd(rng.normal(size=4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)),
        reward_stats=MeanStd(np.float32(-0.4), np.float32(2.5)),
    ).eval()
    documents = to_bytes(ensemble)
    preference_set = PreferenceSet.objects.create(project=project, sources="rankings", n_pairs=10, checksum="x")
    row = RewardModelRow.objects.create(project=project, version=version, preference_set=preference_set, status="ready")
    row.weights.save("w.safetensors", ContentFile(documents.weights), save=False)
    row.metadata.save("m.json", ContentFile(documents.metadata), save=False)
    row.save()
    return row, ensemble


# --- auth and errors ---------------------------------------------------------------------------------------------
def test_login_token_and_error_codes(live_server, researcher, annotator, project):
    with pytest.raises(ValidationError) as caught:
        Client.login(live_server.url, researcher.username, "wrong", retries=0)
    assert caught.value.status == 400 and caught.value.code == "invalid" and caught.value.fields

    with Client(live_server.url, token="not-a-token", retries=0) as stranger, pytest.raises(AuthenticationError) as no:
        stranger.projects()
    assert no.value.status == 401 and isinstance(no.value, HeronryError)

    with Client.login(live_server.url + "/api/v1/", annotator.username, PASSWORD) as anna:
        assert [p["slug"] for p in anna.projects()] == ["pendulum"]
        with pytest.raises(NotFound) as missing:
            anna.project("no-such-project")
        assert missing.value.code == "not_found" and missing.value.status == 404
        with pytest.raises(PermissionDenied) as denied:
            anna.create_project({"spec_version": 1, "name": "X", "slug": "x", "environment": {"id": "Pendulum-v1"}})
        assert denied.value.status == 403 and denied.value.code == "permission_denied"
        # A token, once obtained, works on its own.
        with Client(live_server.url, token=anna.token) as again:
            assert again.project("pendulum")["slug"] == "pendulum"


def test_projects_from_a_spec_dict_and_yaml_text(rita, project):
    spec = rita.project_spec("pendulum")
    assert spec["spec_version"] == 1
    created = rita.create_project({**spec, "slug": "pendulum-copy", "name": "Pendulum copy"})
    assert created["slug"] == "pendulum-copy"
    assert {k: v for k, v in rita.project_spec("pendulum-copy").items() if k not in ("slug", "name")} == {
        k: v for k, v in spec.items() if k not in ("slug", "name")
    }
    import yaml

    text = yaml.safe_dump({**spec, "slug": "pendulum-yaml", "name": "From YAML"})
    assert rita.create_project(text)["slug"] == "pendulum-yaml"
    with pytest.raises(ValidationError) as bad:
        rita.create_project({**spec, "slug": "pendulum-bad", "segment_steps": -5})
    assert bad.value.code == "invalid"
    assert {p["slug"] for p in rita.projects()} >= {"pendulum", "pendulum-copy", "pendulum-yaml"}


# --- clips, queries, judgments, rankings, exports ----------------------------------------------------------------
def test_clips_iterate_across_cursor_pages(rita, project):
    clips = add_fake_clips(project, 7)
    seen = list(rita.clips("pendulum", page_size=3))
    assert [c["id"] for c in seen] == [c.pk for c in clips]
    assert list(rita.clips("pendulum", iteration=12345)) == []


def test_next_query_judgment_idempotent_rankings_and_exports(live_server, anna, rita, project, tmp_path):
    clips = add_fake_clips(project, 6)
    queries_create_random(project=project, count=4, rng=np.random.default_rng(0), clips=clips)
    query = anna.next_query("pendulum")
    assert query is not None and {"id", "left", "right", "lease"} <= set(query)
    client_id = uuid.uuid4()
    first = anna.submit_judgment(query, "left", client_id=client_id, time_spent_ms=1200)
    again = anna.submit_judgment(query, "left", client_id=client_id)  # a repeat (e.g. a retry) is the same answer
    assert first["id"] == again["id"] and Judgment.objects.count() == 1
    with pytest.raises(ValidationError):
        anna.submit_judgment(query["id"], "sideways", lease=query["lease"])
    second = anna.next_query("pendulum")
    assert anna.heartbeat(second["lease"])["lease"] == second["lease"]
    anna.release(second["lease"])
    anna.release(second["lease"])  # releasing is idempotent
    third = anna.next_query("pendulum")
    anna.skip(third["lease"])
    with pytest.raises(NotFound):
        anna.skip(third["lease"])

    ranking = anna.submit_ranking("pendulum", [["angle_sq"], ["angular_velocity_sq", "torque_sq"]])
    assert ranking["groups"] == [["angle_sq"], ["angular_velocity_sq", "torque_sq"]]
    assert len(rita.rankings("pendulum")) == 1

    written = rita.export_judgments("pendulum", tmp_path / "judgments.jsonl")
    lines = (tmp_path / "judgments.jsonl").read_text().splitlines()
    assert written > 0 and len(lines) == 1 and json.loads(lines[0])["choice"] == "left"
    assert not (tmp_path / "judgments.jsonl.part").exists()
    assert [row["choice"] for row in rita.iter_judgments("pendulum")] == ["left"]
    buffer = io.BytesIO()
    rita.export_judgments("pendulum", buffer, format="csv")
    assert len(buffer.getvalue().decode().strip().splitlines()) == 2  # header + one judgment
    with pytest.raises(PermissionDenied):
        anna.export_judgments("pendulum", tmp_path / "nope.jsonl")


# --- data in, runs ----------------------------------------------------------------------------------------------
@pytest.fixture
def own_sim(researcher) -> Project:
    project = project_create(
        created_by=researcher,
        name="Own sim",
        slug="own-sim",
        env_id="external",
        segment_steps=10,
        factors=[{"key": "speed", "label": "Speed", "source": "obs:0"}],
    )
    Project.objects.filter(pk=project.pk).update(
        observation_space={"shape": [3]}, action_space={"kind": "box", "shape": [1]}
    )
    return project


def test_rollout_upload_and_wait_for_its_run(rita, own_sim, tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "episode.npz"
    path.write_bytes(
        npz_bytes(
            observations=rng.normal(size=(41, 3)),
            actions=rng.uniform(-1, 1, size=(40, 1)).astype(np.float32),
            factor_speed=rng.normal(size=40),
        )
    )
    run = rita.upload_rollout("own-sim", path)
    seen: list[str] = []
    finished = rita.wait_for(run, timeout=60, poll_interval=0.1, progress=lambda r: seen.append(r["state"]))
    assert finished["state"] == "done" and seen[-1] == "done"
    assert len(list(rita.clips("own-sim"))) == 4
    assert any(r["id"] == run["id"] for r in rita.runs("own-sim"))
    with pytest.raises(ValidationError) as bad:
        rita.upload_rollout("own-sim", b"not an npz")
    assert bad.value.status == 400


def test_runs_start_actions_and_wait_for_failure(rita, anna, project):
    project.feedback_mode = "pairwise"
    project.save()
    assert anna.next_query("pendulum") is None and anna.last_no_query_reason
    run = rita.start_iteration("pendulum", settings={})  # pairwise: waits for its label budget
    assert run["kind"] == "iteration" and run["state"] == "queued"
    assert rita.run(run)["id"] == run["id"]
    assert [r["id"] for r in rita.runs("pendulum", kind="iteration")] == [run["id"]]
    with pytest.raises(Conflict) as busy:
        rita.start_iteration("pendulum")
    assert busy.value.status == 409 and busy.value.code
    assert rita.pause(run)["paused"] is True
    assert rita.resume(run)["paused"] is False
    progress: list[dict] = []
    with pytest.raises(WaitTimeout) as waited:
        rita.wait_for(run, timeout=0.3, poll_interval=0.05, progress=progress.append)
    assert waited.value.run["state"] == "queued" and len(progress) >= 2
    cancelled = rita.cancel(run)
    assert cancelled["state"] == "cancelled"
    with pytest.raises(RunFailed) as failed:
        rita.wait_for(run, timeout=5, poll_interval=0.05)
    assert failed.value.run["state"] == "cancelled"
    assert rita.wait_for(run, raise_on_failure=False)["state"] == "cancelled"
    with pytest.raises(ValidationError) as bad_kind:
        rita.runs("pendulum", kind="nonsense")
    assert "kind" in bad_kind.value.fields
    with pytest.raises(NotFound):
        rita.run(987654)
    with pytest.raises(ValueError):
        rita.run_action(run, "explode")


def test_minari_import_through_the_client(rita, project, tmp_path, settings, monkeypatch):
    from tests.test_external_data import write_minari_dataset

    root = tmp_path / "minari"
    root.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    settings.MINARI_DATASETS_PATH = root
    write_minari_dataset(root, "pendulum/client-v0", episodes=2, steps=100)
    run = rita.import_minari("pendulum", "pendulum/client-v0", max_episodes=2, queries=0)
    assert rita.wait_for(run, timeout=120, poll_interval=0.1)["state"] == "done"
    assert len(list(rita.clips("pendulum", page_size=1))) == 4  # 2 episodes of 100 steps, 50-step clips
    with pytest.raises(HeronryError) as missing:
        rita.wait_for(rita.import_minari("pendulum", "pendulum/no-such-v0"), timeout=60, poll_interval=0.1)
    assert missing.value.status in (0, 400, 404)


# --- reward models ----------------------------------------------------------------------------------------------
def test_reward_models_list_and_download(rita, project, tmp_path):
    row, ensemble = stored_reward_model(project)
    listed = rita.reward_models("pendulum")
    assert [m["id"] for m in listed] == [row.pk] and rita.latest_reward_model("pendulum")["id"] == row.pk
    weights_path, _ = rita.download_reward_model(listed[0], tmp_path / "rm")
    assert weights_path.read_bytes() == row.weights.open("rb").read()
    model = RewardModel.from_files(tmp_path / "rm")
    same = RewardModel.from_client(rita, row.pk)
    features = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    expected = ensemble.normalized_reward(features)
    np.testing.assert_allclose(model.reward(features[:, :3], features[:, 3:]), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(same.reward_from_features(features), expected, rtol=1e-5, atol=1e-6)


# --- the learned reward in a plain script: SB3 trains on a model downloaded through the client -------------------
TRAIN_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from heronry_client import Client
    from heronry_client.reward import RewardModel
    from heronry_client.sb3 import VecLearnedReward

    url, token, model_id, out = sys.argv[1:5]
    with Client(url, token=token) as client:
        reward = RewardModel.from_client(client, int(model_id))
    venv = VecLearnedReward(make_vec_env("Pendulum-v1", n_envs=2, seed=0), reward)
    agent = PPO("MlpPolicy", venv, n_steps=64, batch_size=64, n_epochs=1, seed=0, device="cpu")
    agent.learn(total_timesteps=256)
    observations, actions, rewards = [], [], []
    obs = venv.reset()
    for _ in range(50):
        action, _ = agent.predict(obs, deterministic=False)
        observations.append(obs.copy())
        actions.append(action.copy())  # exactly what the VecEnv is given, as the wrapper scores it
        obs, reward_values, dones, infos = venv.step(action)
        rewards.append(reward_values)
    repo = "django" in sys.modules or "trainer" in sys.modules
    np.savez(out, observations=np.concatenate(observations), actions=np.concatenate(actions),
             rewards=np.concatenate(rewards), timesteps=agent.num_timesteps, django=repo)
    """
)


def platform_trained_reward_model(rita: Client, anna: Client, project: Project) -> dict:
    """The loop through the client: generate clips, a factor ranking, the retrain it starts -> a ready model."""
    project.loop_settings = {}
    project.save()
    clips_run = rita.generate_clips("pendulum", rollouts=4, steps=200, queries=0, render="none")
    assert rita.wait_for(clips_run, timeout=120, poll_interval=0.2)["state"] == "done"
    anna.submit_ranking("pendulum", [["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]])
    (retrain,) = rita.runs("pendulum", kind="retrain")
    rita.wait_for(retrain, timeout=120, poll_interval=0.2)
    model = rita.latest_reward_model("pendulum")
    assert model["status"] == "ready"
    return model


def test_preference_export_streams_to_a_file(rita, anna, project, tmp_path):
    platform_trained_reward_model(rita, anna, project)
    written = rita.export_preferences("pendulum", tmp_path / "prefs.jsonl")
    rows = [json.loads(line) for line in (tmp_path / "prefs.jsonl").read_text().splitlines()]
    assert written > 0 and rows and {"weight", "origin"} <= set(rows[0])
    assert rita.export_preferences("pendulum", tmp_path / "prefs.parquet", format="parquet") > 0
    with pytest.raises(ValidationError):
        rita.export_preferences("pendulum", tmp_path / "x", format="xml")
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.part").exists()


@pytest.mark.slow
def test_sb3_trains_in_a_plain_script_on_a_downloaded_reward_model(live_server, rita, anna, project, tmp_path):
    from trainer.core.reward import from_bytes
    from trainer.models import RewardModel as RewardModelRow

    model = platform_trained_reward_model(rita, anna, project)
    row = RewardModelRow.objects.get(pk=model["id"])
    ensemble = from_bytes(row.weights.open("rb").read(), row.metadata.open("rb").read()).model  # the platform's
    script = tmp_path / "train.py"
    script.write_text(TRAIN_SCRIPT)
    out = tmp_path / "out.npz"
    # No repository on the path: only the client package (installed, or found in client/).
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE")}
    env["PYTHONPATH"] = str(CLIENT_DIR)
    result = subprocess.run(
        [sys.executable, str(script), live_server.url, rita.token, str(row.pk), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = np.load(out)
    assert int(data["timesteps"]) >= 256 and not bool(data["django"])
    features = np.concatenate([data["observations"], data["actions"]], axis=1).astype(np.float32)
    expected = ensemble.normalized_reward(features)  # what the loop's LearnedRewardWrapper would give
    assert np.std(expected) > 0
    np.testing.assert_allclose(data["rewards"], expected, rtol=1e-5, atol=1e-5)


# --- retries and timeouts (no server needed) ---------------------------------------------------------------------
def _mock_client(responses: list, **kwargs) -> tuple[Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    client = Client("http://heronry.test", token="t", backoff=0.001, transport=httpx.MockTransport(handler), **kwargs)
    return client, seen


def test_idempotent_requests_are_retried_with_backoff(db):
    unavailable = httpx.Response(503, json={"error": {"code": "database_unavailable", "message": "try again"}})
    client, seen = _mock_client([unavailable, httpx.ReadTimeout("slow"), httpx.Response(200, json=[{"slug": "p"}])])
    assert client.projects() == [{"slug": "p"}]
    assert len(seen) == 3 and seen[0].headers["Authorization"] == "Token t"

    client, seen = _mock_client([unavailable] * 3, retries=2)
    with pytest.raises(ServerError) as caught:
        client.projects()
    assert caught.value.code == "database_unavailable" and caught.value.status == 503 and len(seen) == 3


def test_non_idempotent_posts_are_retried_only_when_never_sent(db):
    unavailable = httpx.Response(503, json={"error": {"code": "database_unavailable", "message": "x"}})
    client, seen = _mock_client([unavailable])
    with pytest.raises(ServerError):
        client.start_iteration("p")
    assert len(seen) == 1
    client, seen = _mock_client([httpx.ConnectError("refused"), httpx.Response(201, json={"id": 1, "kind": "x"})])
    assert client.start_iteration("p")["id"] == 1 and len(seen) == 2
    client, seen = _mock_client([httpx.ReadTimeout("slow")])
    with pytest.raises(TransportError) as caught:
        client.start_iteration("p")
    assert caught.value.code == "timeout" and len(seen) == 1


def test_judgments_are_retried_with_the_same_client_id(db):
    lease = str(uuid.uuid4())
    ok = httpx.Response(201, json={"id": 9})
    client, seen = _mock_client([httpx.ReadTimeout("slow"), ok])
    assert client.submit_judgment({"id": 3, "lease": lease}, "right")["id"] == 9
    bodies = [json.loads(request.content) for request in seen]
    assert bodies[0] == bodies[1] and bodies[0]["lease"] == lease


def test_cursor_iteration_is_lazy(db):
    pages = [
        httpx.Response(
            200, json={"next": "http://heronry.test/api/v1/projects/p/clips/?cursor=abc", "results": [{"id": 1}]}
        ),
        httpx.Response(200, json={"next": None, "results": [{"id": 2}]}),
    ]
    client, seen = _mock_client(pages)
    iterator = client.clips("p")
    assert next(iterator) == {"id": 1} and len(seen) == 1
    assert list(iterator) == [{"id": 2}] and seen[1].url.params["cursor"] == "abc"


def test_a_broken_download_leaves_no_file(db, tmp_path):
    class Broken(httpx.SyncByteStream):
        def __iter__(self):
            yield b'{"choice": "left"}\n'
            raise httpx.ReadError("connection reset")

    client, _ = _mock_client([httpx.Response(200, stream=Broken())])
    with pytest.raises(TransportError):
        client.export_judgments("p", tmp_path / "j.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_throttling_honours_retry_after_but_a_lock_out_is_not_retried(db):
    throttled = httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "throttled", "message": "x"}})
    client, seen = _mock_client([throttled, httpx.Response(200, json=[])])
    assert client.projects() == [] and len(seen) == 2
    locked = httpx.Response(429, headers={"Retry-After": "0"}, json={"error": {"code": "locked_out", "message": "x"}})
    client, seen = _mock_client([locked])
    with pytest.raises(RateLimited) as caught:
        client.projects()
    assert caught.value.code == "locked_out" and caught.value.retry_after == 0 and len(seen) == 1


def test_the_client_package_imports_nothing_from_the_repository():
    root = Path(__file__).resolve().parents[2] / "client" / "heronry_client"
    for path in root.glob("*.py"):
        text = path.read_text()
        for name in ("trainer", "labeling", "accounts", "django", "config", "frontend"):
            assert f"import {name}" not in text and f"from {name}" not in text, (path.name, name)


def test_webhooks_and_named_tokens_through_the_client(rita, live_server, project, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True  # the endpoint below is on this machine
    created = rita.create_webhook(project.slug, "http://127.0.0.1:9/hook", ["ranking.submitted"], description="ci")
    assert created["secret"].startswith("whsec_") and created["events"] == ["ranking.submitted"]
    assert [hook["id"] for hook in rita.webhooks(project.slug)] == [created["id"]]
    assert "secret" not in rita.webhooks(project.slug)[0]
    assert rita.update_webhook(created["id"], is_active=False)["is_active"] is False
    assert rita.webhook_deliveries(created["id"]) == []
    rita.delete_webhook(created["id"])
    assert rita.webhooks(project.slug) == []

    token = rita.create_token("read-only", project=project.slug, read_only=True)
    assert token["token"].startswith("hry_") and token["read_only"] is True
    assert [row["name"] for row in rita.tokens()] == ["read-only"] and "token" not in rita.tokens()[0]
    with Client(live_server.url, token=token["token"], retries=0) as reader:
        assert reader.project(project.slug)["slug"] == project.slug
        with pytest.raises(HeronryError) as refused:
            reader.retrain(project.slug)
        assert refused.value.status == 403
    rita.revoke_token(token["id"])
    assert rita.tokens() == []
    with Client(live_server.url, token=token["token"], retries=0) as revoked, pytest.raises(HeronryError) as gone:
        revoked.projects()
    assert gone.value.status == 401


# --- judgments revised and undone, policies, async and Uni-RLHF exports --------------------------------------------


def test_a_judgment_is_revised_and_undone_through_the_client(anna, project):
    clips = add_fake_clips(project, 4)
    queries_create_random(project=project, count=2, rng=np.random.default_rng(0), clips=clips)
    query = anna.next_query("pendulum")
    judgment = anna.submit_judgment(query, "left")
    revised = anna.revise_judgment(judgment, "right")
    assert revised["id"] == judgment["id"] and revised["choice"] == "right"
    assert Judgment.objects.get(pk=judgment["id"]).choice == "right"
    with pytest.raises(ValidationError):
        anna.revise_judgment(judgment["id"], "sideways")
    back = anna.undo_judgment(judgment)
    assert back["id"] == query["id"] and back["lease"]  # the pair is leased to anna again
    assert not Judgment.objects.filter(pk=judgment["id"]).exists()
    with pytest.raises(NotFound):
        anna.undo_judgment(judgment)


def test_policies_are_listed_and_their_checkpoints_downloaded(rita, anna, project, tmp_path):
    from trainer.models import ITERATION_STEPS, PolicyCheckpoint, Run, RunState

    iteration = Run.objects.create(project=project, number=1, steps=list(ITERATION_STEPS), state=RunState.DONE)
    policy = PolicyCheckpoint(project=project, run=iteration, algorithm="sac", timesteps=100)
    zipped = b"PK\x05\x06" + bytes(18)  # an empty zip
    policy.model_file.save("policy.zip", ContentFile(zipped), save=False)
    policy.save()
    [listed] = rita.policies("pendulum")
    assert (listed["id"], listed["run"], listed["algorithm"]) == (policy.pk, iteration.pk, "sac")
    assert rita.download_policy(listed, tmp_path / "policy.zip") == len(zipped)
    assert (tmp_path / "policy.zip").read_bytes() == zipped
    with pytest.raises(PermissionDenied):
        anna.download_policy(policy.pk, io.BytesIO())


def test_a_policys_evaluation_video_is_downloaded_with_a_token(rita, anna, project, tmp_path):
    from trainer.models import ITERATION_STEPS, PolicyCheckpoint, Run, RunState

    iteration = Run.objects.create(project=project, number=1, steps=list(ITERATION_STEPS), state=RunState.DONE)
    policy = PolicyCheckpoint(project=project, run=iteration, algorithm="sac", timesteps=100)
    policy.save()
    [listed] = rita.policies("pendulum")
    assert listed["video_url"] is None
    with pytest.raises(NotFound) as caught:  # not rendered yet: 404 with the API's error, says why
        rita.download_policy_video(listed, io.BytesIO())
    assert "no video yet" in str(caught.value)
    mp4 = b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 40
    policy.video.save("policy.mp4", ContentFile(mp4))
    [listed] = rita.policies("pendulum")
    assert listed["video_url"] == f"/api/v1/policies/{policy.pk}/video"
    assert rita.download_policy_video(listed, tmp_path / "policy.mp4") == len(mp4)
    assert (tmp_path / "policy.mp4").read_bytes() == mp4
    with pytest.raises(PermissionDenied):  # an annotator, like the checkpoint
        anna.download_policy_video(policy.pk, io.BytesIO())


def test_an_async_export_is_started_followed_and_downloaded(rita, anna, project, tmp_path):
    clips = add_fake_clips(project, 4)
    queries_create_random(project=project, count=2, rng=np.random.default_rng(0), clips=clips)
    anna.submit_judgment(anna.next_query("pendulum"), "equal")
    job = rita.start_export("pendulum", "judgments", format="csv")
    assert job["what"] == "judgments" and job["format"] == "csv"
    seen: list[str] = []
    done = rita.wait_for_export(job, timeout=60, poll_interval=0.1, progress=lambda j: seen.append(j["status"]))
    assert done["status"] == "done" and done["rows"] == 1 and seen[-1] == "done"
    assert [j["id"] for j in rita.exports("pendulum")] == [job["id"]]
    rita.download_export(done, tmp_path / "async.csv")
    streamed = io.BytesIO()
    rita.export_judgments("pendulum", streamed, format="csv")
    assert (tmp_path / "async.csv").read_bytes() == streamed.getvalue()
    with pytest.raises(ValidationError):
        rita.start_export("pendulum", "secrets")
    with pytest.raises(PermissionDenied):
        anna.start_export("pendulum", "clips")


def test_uni_rlhf_export_through_the_client(rita, own_sim, project, annotator, tmp_path):
    from labeling import rankings
    from trainer.preference_building import PreferenceParams, preference_set_build

    rng = np.random.default_rng(0)
    for _ in range(2):
        episode = npz_bytes(
            observations=rng.normal(size=(41, 3)),
            actions=rng.uniform(-1, 1, size=(40, 1)).astype(np.float32),
            factor_speed=rng.normal(size=40),
        )
        rita.wait_for(rita.upload_rollout("own-sim", episode), timeout=60, poll_interval=0.1)
    rankings.ranking_submit(project=own_sim, annotator=annotator, groups=[["speed"]])
    params = PreferenceParams(sources="rankings")
    preference_set_build(project=own_sim, params=params, report=lambda *a: None)
    rita.export_uni_rlhf("own-sim", tmp_path / "labels.npz")
    with np.load(tmp_path / "labels.npz", allow_pickle=False) as data:
        assert int(data["query_length"]) == 10 and data["episode_lengths"].tolist() == [40, 40]
        assert data["labels"].shape == (len(data["start_indices"]), 2)
        assert set(data["human_label"].tolist()) <= {0, 1}
    # A simulator project has no dataset episodes to index: a 400 that says so.
    queries_create_random(project=project, count=1, rng=rng, clips=add_fake_clips(project, 2))
    Judgment.objects.create(query=project.queries.first(), annotator=annotator, choice="left", client_id=uuid.uuid4())
    preference_set_build(project=project, params=PreferenceParams(sources="judgments"), report=lambda *a: None)
    with pytest.raises(ValidationError) as refused:
        rita.export_uni_rlhf("pendulum", io.BytesIO())
    assert "uploaded or imported" in str(refused.value)
