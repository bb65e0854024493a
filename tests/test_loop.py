"""The loop: iterations' state machine, their steps, pairwise waiting, and the researcher's controls.

Tasks run in-process here (eager), so starting an iteration runs its whole chain; tests with a real worker
process are in tests/integration/test_loop_worker.py.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import numpy as np
import pytest
from django.utils import timezone

from labeling.models import Clip, FeedbackMode, Query, QuerySource, RenderStatus, Rollout
from labeling.rankings import ranking_submit
from trainer import loop
from trainer.core import rollouts
from trainer.core.loop_settings import LoopSettings
from trainer.models import ITERATION_STEPS, PolicyCheckpoint, RewardModel, Run, RunKind, RunState

from .conftest import api_client_for
from .test_rankings_and_reward_models import RANKING, make_clips

# Small enough to run the whole chain in seconds on a CPU.
TINY = {
    "retrain_on_ranking": False,
    "reward_config": {"hidden_sizes": [16, 16], "ensemble_size": 2, "max_epochs": 3, "patience": 2},
    "policy": {"learning_starts": 50, "batch_size": 32, "eval_episodes": 2, "net_arch": [16, 16]},
    "policy_timesteps": 120,
    "rollouts": 2,
    "label_budget": 6,
}


@pytest.fixture
def ranked_project(project, researcher, annotator, django_capture_on_commit_callbacks):
    project.feedback_mode = FeedbackMode.RANKING
    project.loop_settings = TINY
    project.save()
    make_clips(project, researcher, rollouts=4)
    with django_capture_on_commit_callbacks(execute=True):
        ranking_submit(project=project, annotator=annotator, groups=RANKING, sigmas={})
    return project


def run_iteration(project, researcher, django_capture_on_commit_callbacks, **kwargs) -> Run:
    with django_capture_on_commit_callbacks(execute=True):
        iteration = loop.iteration_create(project=project, created_by=researcher, **kwargs)
    iteration.refresh_from_db()
    return iteration


def test_a_ranking_mode_iteration_runs_every_step_and_links_its_artefacts(
    ranked_project, researcher, django_capture_on_commit_callbacks
):
    iteration = run_iteration(ranked_project, researcher, django_capture_on_commit_callbacks)
    assert iteration.state == RunState.DONE, iteration.error
    assert set(iteration.results) == set(ITERATION_STEPS)  # (PostgreSQL's jsonb doesn't keep key order)
    # The lineage: preference set → reward model → policy → clips (ranking mode asks no pairwise questions).
    assert iteration.preference_set.run == iteration
    assert iteration.reward_model.run == iteration
    assert iteration.reward_model.preference_set == iteration.preference_set
    policy = PolicyCheckpoint.objects.get(run=iteration)
    assert policy.reward_model == iteration.reward_model
    assert policy.timesteps == TINY["policy_timesteps"]
    assert len(policy.evaluation["true_returns"]) == 2
    assert len(policy.evaluation["learned_returns"]) == 2
    # One evaluation episode is rendered so researchers can watch the policy.
    assert policy.video and policy.poster, policy.video_episode
    assert policy.video_episode["steps"] > 0 and "learned_return" in policy.video_episode
    with policy.video.open("rb") as handle:
        assert handle.read(12)[4:8] == b"ftyp"
    clips = Clip.objects.filter(project=ranked_project, iteration=1)
    assert clips.count() == 2 * 4  # 2 rollouts of 200 steps, 50-step clips
    assert set(Rollout.objects.filter(iteration=1).values_list("policy", flat=True)) == {
        f"policy:{policy.pk}:0",
        f"policy:{policy.pk}:0.1",
    }
    assert not Query.objects.filter(iteration=1).exists()
    assert iteration.overall_progress == 1.0 and iteration.finished_at is not None


def test_new_clips_resimulate_exactly_from_seed_and_actions(
    ranked_project, researcher, django_capture_on_commit_callbacks
):
    run_iteration(ranked_project, researcher, django_capture_on_commit_callbacks)
    rollout = Rollout.objects.filter(project=ranked_project, iteration=1).first()
    with rollout.data.open("rb") as handle:
        data = rollouts.load_npz(handle.read())
    replayed = rollouts.resimulate(data.env_id, seed=data.seed, actions=data.actions, env_kwargs=data.env_kwargs)
    np.testing.assert_array_equal(replayed, data.observations)


def test_videos_are_rendered_on_the_render_queue_beside_the_loop_not_inside_it(
    ranked_project, researcher, django_capture_on_commit_callbacks, monkeypatch
):
    """The policy's evaluation episode and the ranking page's example clips are sent to the render queue (here:
    recorded, as a broker would hold them) and the iteration finishes without them; the render tasks then make
    them, once each, and a video whose message was lost is sent again from the policy's page once it is stale."""
    from labeling import events
    from trainer import loop_steps, policy_video
    from trainer.clip_pipeline import render_clip

    sent: list[tuple] = []

    def hold(name, *args, recovery):
        sent.append((name, *args))
        return True

    monkeypatch.setattr(policy_video, "send_task_or_warn", hold)
    monkeypatch.setattr(loop_steps, "send_task_or_warn", hold)
    iteration = run_iteration(ranked_project, researcher, django_capture_on_commit_callbacks)
    assert iteration.state == RunState.DONE, iteration.error
    policy = PolicyCheckpoint.objects.get(run=iteration)
    assert not policy.video and policy.video_episode["queued"] and iteration.results["training_policy"]["video"]
    later = iteration.results["rendering"]["rendering_later"]
    assert later and (events.RENDER_POLICY_VIDEO, policy.pk) in sent
    assert {args[0] for name, *args in sent if name == events.RENDER_CLIP} == set(later)
    assert set(Clip.objects.filter(pk__in=later).values_list("render_status", flat=True)) == {RenderStatus.PENDING}

    episode = policy_video.policy_video_render_queued(policy.pk)
    policy.refresh_from_db()
    assert policy.video and policy.poster and episode == policy.video_episode and "queued" not in episode
    assert episode["steps"] > 0 and "learned_return" in episode
    assert policy_video.policy_video_render_queued(policy.pk) is None  # a second delivery renders nothing
    for clip in Clip.objects.filter(pk__in=later).select_related("project", "rollout"):
        render_clip(clip)
    assert set(Clip.objects.filter(pk__in=later).values_list("render_status", flat=True)) == {RenderStatus.READY}

    # A lost message: nothing is re-sent while a render may still be under way, then once.
    policy.video.delete(save=False)
    policy.video_episode = {"seed": 3, "queued": True, "queued_at": timezone.now().isoformat()}
    policy.save()
    sent.clear()
    assert not policy_video.policy_video_resend(policy)
    policy.video_episode["queued_at"] = (timezone.now() - timedelta(hours=1)).isoformat()
    assert policy_video.policy_video_resend(policy) and sent == [(events.RENDER_POLICY_VIDEO, policy.pk)]
    policy.refresh_from_db()
    assert not policy_video.policy_video_resend(policy)  # its clock restarted

    # The beat's run sweep does the same for every overdue video, whether or not anyone opens its page.
    from trainer.tasks import sweep_runs

    sent.clear()
    assert sweep_runs()["videos_resent"] == 0
    overdue = {**policy.video_episode, "queued_at": (timezone.now() - timedelta(hours=1)).isoformat()}
    PolicyCheckpoint.objects.filter(pk=policy.pk).update(video_episode=overdue)
    assert sweep_runs()["videos_resent"] == 1 and sent == [(events.RENDER_POLICY_VIDEO, policy.pk)]
    assert sweep_runs()["videos_resent"] == 0


def test_the_next_iteration_continues_from_the_previous_policy(
    ranked_project, researcher, django_capture_on_commit_callbacks
):
    first = run_iteration(ranked_project, researcher, django_capture_on_commit_callbacks, count=2)
    second = Run.objects.get(project=ranked_project, number=2)
    assert first.state == second.state == RunState.DONE, (first.error, second.error)
    assert second.previous == first
    policy = PolicyCheckpoint.objects.get(run=second)
    assert policy.previous == PolicyCheckpoint.objects.get(run=first)
    assert policy.timesteps == 2 * TINY["policy_timesteps"]
    # The second preference set includes the first iteration's clips.
    assert second.preference_set.n_pairs > first.preference_set.n_pairs


def test_true_reward_iterations_skip_the_reward_steps(ranked_project, researcher, django_capture_on_commit_callbacks):
    iteration = run_iteration(
        ranked_project, researcher, django_capture_on_commit_callbacks, overrides={"policy_reward": "true"}
    )
    assert iteration.state == RunState.DONE, iteration.error
    assert "skipped" in iteration.results["building_preferences"]
    assert iteration.reward_model is None
    policy = PolicyCheckpoint.objects.get(run=iteration)
    assert policy.reward_model is None and policy.evaluation["learned_returns"] is None


def _label_everything(project, annotators, django_capture_on_commit_callbacks, limit: int = 10**6) -> int:
    """Answer open queries (up to ``limit``) by the true return (an oracle), through the API."""
    answered = 0
    for annotator in annotators:
        client = api_client_for(annotator)
        while answered < limit:
            with django_capture_on_commit_callbacks(execute=True):
                served = client.post(f"/api/v1/projects/{project.slug}/queries/next/", {}, format="json").json()
                if served["query"] is None:
                    break
                query = served["query"]
                left = Clip.objects.get(pk=query["left"]["id"])
                right = Clip.objects.get(pk=query["right"]["id"])
                choice = "left" if left.true_return >= right.true_return else "right"
                response = client.post(
                    f"/api/v1/queries/{query['id']}/judgments/",
                    {"choice": choice, "lease": query["lease"], "client_id": str(uuid.uuid4())},
                    format="json",
                )
                assert response.status_code == 201, response.content
                answered += 1
    return answered


@pytest.fixture
def pairwise_project(project, researcher, django_capture_on_commit_callbacks):
    project.feedback_mode = FeedbackMode.PAIRWISE
    project.overlap = 1
    project.loop_settings = TINY
    project.save()
    make_clips(project, researcher, rollouts=3, queries=6, render="queried")
    return project


def test_a_pairwise_iteration_waits_for_its_budget_then_starts_by_itself_and_asks_active_questions(
    pairwise_project, researcher, annotator, django_capture_on_commit_callbacks
):
    project = pairwise_project
    iteration = run_iteration(project, researcher, django_capture_on_commit_callbacks)
    assert iteration.state == RunState.QUEUED and iteration.start_after_labels == 6
    assert _label_everything(project, [annotator], django_capture_on_commit_callbacks, limit=5) == 5
    iteration.refresh_from_db()
    assert iteration.state == RunState.QUEUED
    assert _label_everything(project, [annotator], django_capture_on_commit_callbacks, limit=1) == 1
    iteration.refresh_from_db()
    assert iteration.state == RunState.DONE, iteration.error
    assert iteration.labels_used == 6
    queries = Query.objects.filter(project=project, iteration=1)
    assert queries.count() == 6
    assert set(queries.values_list("source", flat=True)) == {QuerySource.ACTIVE}
    assert all(q.uncertainty is not None for q in queries)
    # Only the clips someone will see were rendered: the new queries' clips (and factor extremes).
    new_clips = Clip.objects.filter(project=project, iteration=1)
    shown = set(queries.values_list("clip_a_id", flat=True)) | set(queries.values_list("clip_b_id", flat=True))
    for clip in new_clips:
        if clip.pk in shown:
            assert clip.render_status == RenderStatus.READY
    assert new_clips.filter(render_status=RenderStatus.PENDING).exists()
    # No clip in more than max_queries_per_clip of them.
    counts = np.bincount([c for pair in queries.values_list("clip_a_id", "clip_b_id") for c in pair])
    assert counts.max() <= LoopSettings().max_queries_per_clip


def test_researchers_pause_resume_and_cancel(
    pairwise_project, researcher, annotator, django_capture_on_commit_callbacks
):
    project = pairwise_project
    iteration = run_iteration(project, researcher, django_capture_on_commit_callbacks)
    client = api_client_for(researcher)
    url = f"/api/v1/runs/{iteration.pk}/"
    assert client.post(url, {"action": "pause"}, format="json").json()["paused"] is True
    _label_everything(project, [annotator], django_capture_on_commit_callbacks)
    iteration.refresh_from_db()
    assert iteration.state == RunState.QUEUED  # budget met, but paused
    with django_capture_on_commit_callbacks(execute=True):
        client.post(url, {"action": "resume"}, format="json")
    body = client.get(url).json()
    assert body["state"] == "done", body["error"]
    response = client.post(url, {"action": "cancel"}, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"

    second = run_iteration(project, researcher, django_capture_on_commit_callbacks)
    assert second.state == RunState.QUEUED
    body = client.post(f"/api/v1/runs/{second.pk}/", {"action": "cancel"}, format="json").json()
    assert body["state"] == "cancelled"


def test_force_start_ignores_the_label_budget(pairwise_project, researcher, django_capture_on_commit_callbacks):
    iteration = run_iteration(pairwise_project, researcher, django_capture_on_commit_callbacks)
    client = api_client_for(researcher)
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/api/v1/runs/{iteration.pk}/", {"action": "start"}, format="json")
    body = client.get(f"/api/v1/runs/{iteration.pk}/").json()
    # No labels yet: building preferences fails and says why.
    assert body["state"] == "failed"
    assert "no preferences to build from" in body["error"]


def test_the_api_lists_and_starts_iterations_and_checks_input(
    ranked_project, researcher, annotator, outsider, django_capture_on_commit_callbacks
):
    client = api_client_for(researcher)
    url = f"/api/v1/projects/{ranked_project.slug}/runs/"
    for body, field in [
        ({"count": 0}, "count"),
        ({"settings": {"policy_timesteps": -5}}, "settings"),
        ({"settings": {"nonsense": 1}}, "settings"),
        ({"settings": {"policy": {"algorithm": "dqn"}}}, "settings"),
        ({"settings": "fast"}, "settings"),
    ]:
        response = client.post(url, body, format="json")
        assert response.status_code == 400, body
        assert field in response.json()["error"]["fields"], response.json()
    assert not Run.objects.filter(kind=RunKind.ITERATION).exists()
    assert api_client_for(annotator).post(url, {}, format="json").status_code == 403
    assert api_client_for(outsider).get(url).status_code == 404

    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url, {"count": 1}, format="json")
    assert response.status_code == 201
    listed = client.get(url).json()
    assert [(row["kind"], row["number"]) for row in listed] == [("iteration", 1), ("generate_clips", None)]
    assert client.get(url + "?kind=iteration").json() == listed[:1]
    assert client.get(url + "?kind=nonsense").status_code == 400
    row = listed[0]
    assert row["state"] == "done" and row["overall_progress"] == 1.0
    assert row["policy"]["evaluation"]["true_mean"] is not None
    download = client.get(row["policy"]["download_url"])
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    assert api_client_for(annotator).get(row["policy"]["download_url"]).status_code == 403


def test_one_unfinished_iteration_at_a_time(pairwise_project, researcher, django_capture_on_commit_callbacks):
    run_iteration(pairwise_project, researcher, django_capture_on_commit_callbacks)
    response = api_client_for(researcher).post(f"/api/v1/projects/{pairwise_project.slug}/runs/", {}, format="json")
    assert response.status_code == 409


# --- the state machine's claims, without running real steps ------------------------------------------------


@pytest.fixture
def started(ranked_project, researcher, monkeypatch) -> Run:
    """An iteration in its first step, whose task was never sent."""
    monkeypatch.setattr(loop, "_send_step", lambda *args: None)
    return loop.iteration_create(project=ranked_project, created_by=researcher)


def test_a_step_runs_once_however_often_it_is_delivered(started, monkeypatch):
    monkeypatch.setattr(loop, "_send_step", lambda *args: None)
    calls = []

    def work(iteration, loop_settings, report):
        calls.append(iteration.pk)
        # A duplicate delivery while this one works finds it busy and does nothing.
        assert loop.step_run(iteration.pk, iteration.state, work) is loop.StepOutcome.BUSY
        return {"ok": True}

    state = started.state
    assert loop.step_run(started.pk, state, work) is loop.StepOutcome.DONE
    assert loop.step_run(started.pk, state, work) is loop.StepOutcome.GONE  # redelivered after it finished
    assert calls == [started.pk]
    started.refresh_from_db()
    result = started.results[state]
    assert started.state == RunState.TRAINING_REWARD
    # The step's own result, how many claims it took, and its timings (wall, CPU, time queued before the claim).
    assert result.pop("seconds") >= 0 and result.pop("cpu_seconds") >= 0 and result.pop("waited_seconds") >= 0
    assert result == {"ok": True, "attempts": 1}
    assert started.heartbeat_at is None and started.attempts == 0


def test_a_step_whose_worker_died_is_claimed_again_and_gives_up_after_three_tries(started, settings):
    state = started.state
    stale = timezone.now() - timedelta(seconds=settings.HERONRY["RUN_STALE_SECONDS"] + 1)

    def dies(iteration, loop_settings, report):
        Run.objects.filter(pk=iteration.pk).update(heartbeat_at=stale)  # the worker vanished mid-step
        raise loop.RunStopped  # (how a vanished worker looks from here: nothing recorded)

    for _ in range(loop.MAX_ATTEMPTS):
        assert loop.step_run(started.pk, state, dies) is loop.StepOutcome.GONE
    assert loop.step_run(started.pk, state, dies) is loop.StepOutcome.DONE
    started.refresh_from_db()
    assert started.state == RunState.FAILED and "3 times" in started.error


def test_the_sweep_resends_dead_steps(started, settings, monkeypatch):
    sent = []
    monkeypatch.setattr(loop, "send_task_by_name", lambda name, *args: sent.append((name, args)))
    assert loop.runs_sweep()["resent"] == 0  # entered its step just now
    Run.objects.filter(pk=started.pk).update(step_since=timezone.now() - timedelta(hours=1))
    assert loop.runs_sweep()["resent"] == 1
    assert sent == [(loop.STEP_TASKS[started.state], (started.pk, started.state))]


def test_a_failing_step_fails_the_iteration_with_the_reason(started):
    def broken(iteration, loop_settings, report):
        raise ValueError("the reward model exploded")

    assert loop.step_run(started.pk, started.state, broken) is loop.StepOutcome.DONE
    started.refresh_from_db()
    assert started.state == RunState.FAILED
    assert "the reward model exploded" in started.error and "Building preferences" in started.error


def test_cancelling_stops_a_busy_worker_at_its_next_report(started):
    def cancelled_meanwhile(iteration, loop_settings, report):
        loop.run_cancel(Run.objects.get(pk=iteration.pk))
        report(0.5, "still going")  # raises RunStopped
        raise AssertionError("not reached")

    assert loop.step_run(started.pk, started.state, cancelled_meanwhile) is loop.StepOutcome.GONE
    started.refresh_from_db()
    assert started.state == RunState.CANCELLED
    assert not RewardModel.objects.exists()


def test_annotators_are_told_to_wait_while_an_iteration_makes_new_questions(
    pairwise_project, researcher, annotator, monkeypatch
):
    from labeling.assignment import NothingToDo, lease_next_query

    Query.objects.filter(project=pairwise_project).delete()
    monkeypatch.setattr(loop, "_send_step", lambda *args: None)
    iteration = loop.iteration_create(project=pairwise_project, created_by=researcher)
    assert lease_next_query(project=pairwise_project, annotator=annotator).reason == NothingToDo.DONE
    Run.objects.filter(pk=iteration.pk).update(state=RunState.ROLLING_OUT)
    assert lease_next_query(project=pairwise_project, annotator=annotator).reason == NothingToDo.WAITING
    loop.run_cancel(iteration)
    assert lease_next_query(project=pairwise_project, annotator=annotator).reason == NothingToDo.DONE


# --- the dashboard ------------------------------------------------------------------------------------------


def test_the_dashboard_starts_iterations_shows_their_progress_and_controls_them(
    client, ranked_project, researcher, annotator, django_capture_on_commit_callbacks
):
    from django.urls import reverse

    from .test_pages import login

    login(client, researcher)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("project-iteration-start", args=[ranked_project.slug]), {"count": "1"})
    assert response.status_code == 302
    iteration = Run.objects.get(project=ranked_project, kind=RunKind.ITERATION)
    assert iteration.state == RunState.DONE, iteration.error
    page = client.get(reverse("project-loop", args=[ranked_project.slug])).content.decode()
    assert "The loop" in page and "Policy return per iteration" in page and 'data-chart="' in page
    fragment = client.get(reverse("project-runs", args=[ranked_project.slug]), HTTP_HX_REQUEST="true")
    assert fragment.status_code == 286  # nothing unfinished: htmx stops polling

    # A running iteration: progress shows, polling goes on, and the researcher can pause and cancel it.
    running = Run.objects.create(
        project=ranked_project,
        number=2,
        steps=list(ITERATION_STEPS),
        state=RunState.TRAINING_POLICY,
        progress=0.5,
        message="Step 5000",
    )
    fragment = client.get(reverse("project-runs", args=[ranked_project.slug]), HTTP_HX_REQUEST="true")
    assert fragment.status_code == 200
    html = fragment.content.decode()
    assert "Step 5000" in html and f'value="{running.percent}"' in html and "Training policy" in html
    action = reverse("project-run-action", args=[ranked_project.slug, running.pk])
    client.post(action, {"action": "pause"})
    running.refresh_from_db()
    assert running.paused
    client.post(action, {"action": "cancel"})
    running.refresh_from_db()
    assert running.state == RunState.CANCELLED
    # Annotators can't see or control the loop.
    client.logout()
    login(client, annotator)
    assert client.post(action, {"action": "resume"}).status_code == 404
    assert client.get(reverse("project-runs", args=[ranked_project.slug])).status_code == 404


def test_the_admin_starts_pauses_resumes_and_cancels_iterations(client, pairwise_project, researcher, monkeypatch):
    monkeypatch.setattr(loop, "_send_step", lambda *args: None)
    client.force_login(researcher)
    response = client.post(
        "/admin/labeling/project/", {"action": "start_iteration", "_selected_action": [pairwise_project.pk]}
    )
    assert response.status_code == 302
    iteration = Run.objects.get(project=pairwise_project, kind=RunKind.ITERATION)
    assert iteration.state == RunState.QUEUED and iteration.start_after_labels == TINY["label_budget"]
    listing = client.get("/admin/trainer/run/")
    assert listing.status_code == 200 and "Waiting for labels" in listing.content.decode()

    def act(action: str) -> Run:
        client.post("/admin/trainer/run/", {"action": action, "_selected_action": [iteration.pk]})
        iteration.refresh_from_db()
        return iteration

    assert act("pause").paused
    assert not act("resume").paused
    assert act("start_now").state == RunState.BUILDING_PREFERENCES
    assert act("cancel").state == RunState.CANCELLED
    assert client.get("/admin/trainer/run/add/").status_code == 403
    assert client.get("/admin/trainer/policycheckpoint/").status_code == 200


def test_projects_without_a_simulator_cannot_start_the_loop(researcher):
    from .conftest import make_project

    project = make_project(researcher, slug="uploads")
    project.env_id = "external"
    project.save()
    response = api_client_for(researcher).post(f"/api/v1/projects/{project.slug}/runs/", {}, format="json")
    assert response.status_code == 400 and "simulator" in response.json()["error"]["message"]
    assert not Run.objects.filter(kind=RunKind.ITERATION).exists()


@pytest.mark.slow
def test_the_loop_runs_on_mujoco_too(researcher, annotator, django_capture_on_commit_callbacks):
    """HalfCheetah-v5 (MuJoCo, 6-D actions): a HERON ranking turns into a policy and rendered example clips."""
    from labeling.services import project_create

    project = project_create(
        created_by=researcher, name="Cheetah", slug="cheetah", env_id="HalfCheetah-v5", feedback_mode="ranking"
    )
    project.loop_settings = TINY
    project.save()
    make_clips(project, researcher, rollouts=3)
    with django_capture_on_commit_callbacks(execute=True):
        ranking_submit(project=project, annotator=annotator, groups=[["forward_velocity"], ["control_cost"]], sigmas={})
    iteration = run_iteration(project, researcher, django_capture_on_commit_callbacks)
    assert iteration.state == RunState.DONE, iteration.error
    policy = PolicyCheckpoint.objects.get(run=iteration)
    assert policy.algorithm == "sac" and policy.timesteps == TINY["policy_timesteps"]
    assert Clip.objects.filter(project=project, iteration=1).count() == 2 * 4
    assert Clip.objects.filter(project=project, render_status=RenderStatus.READY).exists()  # the factor extremes
