"""Work can't be flooded: per-user rate limits shared by the API and the pages, and at most one queued retrain (or
preference build, or reward-model training) per project (a new request supersedes the waiting one); one run of a
project works at a time."""

from __future__ import annotations

import json

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.decorators import login_required
from django.db import IntegrityError, transaction
from django.test import Client
from django.urls import include, path
from django.utils import timezone

from frontend import views
from labeling import ratelimits, services
from labeling.api.throttles import SCOPES
from labeling.rankings import ranking_submit
from labeling.ratelimits import rate_limited
from tests.conftest import api_client_for
from trainer import loop
from trainer.models import Run, RunKind, RunState

RANKING = [["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]]

# The page routes that start the same work as the limited API routes, and their scopes. Until their views carry
# @rate_limited themselves, this module's URLconf (used by the page tests) wraps them the same way.
PAGE_SCOPES = {
    "rank": "rankings",
    "project-train": "runs",
    "project-generate": "runs",
    "project-iteration-start": "runs",
}


def _limited(view, scope):
    # As the views will have it: @login_required, then @rate_limited (anonymous visitors are not counted).
    return view if getattr(view, "rate_limit_scope", None) else login_required(rate_limited(scope)(view))


urlpatterns = [
    path("projects/<slug:slug>/rank/", _limited(views.rank, "rankings"), name="rank"),
    path("projects/<slug:slug>/train/", _limited(views.project_train, "runs"), name="project-train"),
    path("projects/<slug:slug>/generate/", _limited(views.project_generate_clips, "runs"), name="project-generate"),
    path(
        "projects/<slug:slug>/iterations/start/",
        _limited(views.project_iteration_start, "runs"),
        name="project-iteration-start",
    ),
    path("", include("config.urls")),
]
pages = pytest.mark.urls(__name__)


@pytest.fixture
def rates(settings):
    """Small rates for the test; returns a setter."""

    def set_rates(**scopes: str) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **scopes},
        }

    return set_rates


@pytest.fixture
def sent(monkeypatch):
    """Tasks are recorded, not run: the runs stay where they are, as they would with busy workers."""
    calls: list[tuple[str, tuple]] = []
    monkeypatch.setattr(services, "send_task_by_name", lambda name, *args: calls.append((name, args)))
    monkeypatch.setattr(loop, "send_task_by_name", lambda name, *args: calls.append((name, args)))
    return calls


def browser(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def assert_throttled(response) -> None:
    assert response.status_code == 429, response.content
    assert response.json() == {
        "error": {"code": "throttled", "message": response.json()["error"]["message"], "fields": {}}
    }
    assert "throttled" in response.json()["error"]["message"].lower()
    assert int(response["Retry-After"]) > 0


# --- rate limits ----------------------------------------------------------------------------------------------


def test_every_scope_in_the_table_has_a_rate(settings):
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    for methods in SCOPES.values():
        for scope in methods.values():
            assert ratelimits.rate_for(scope) is not None, scope
    assert {"rankings", "runs", "exports", "uploads", "token"} <= set(rates)


def test_rankings_through_the_api_are_limited_per_user(project, annotator, annotator2, rates, sent):
    rates(rankings="3/hour")
    url = f"/api/v1/projects/{project.slug}/rankings/"
    client = api_client_for(annotator)
    statuses = [client.post(url, {"groups": RANKING}, format="json").status_code for _ in range(3)]
    assert statuses == [201, 201, 201]
    assert_throttled(client.post(url, {"groups": RANKING}, format="json"))
    assert project.rankings.filter(annotator=annotator).count() == 3
    # Someone else has their own allowance; reads are not limited.
    assert api_client_for(annotator2).post(url, {"groups": RANKING}, format="json").status_code == 201
    assert client.get(url).status_code == 200


@pages
def test_the_ranking_page_and_the_api_share_one_counter(project, annotator, rates, sent):
    rates(rankings="3/hour")
    page = browser(annotator)
    rank_url = f"/projects/{project.slug}/rank/"
    assert page.post(rank_url, {"groups": json.dumps(RANKING)}).status_code == 302
    assert page.post(rank_url, {"groups": json.dumps(RANKING)}).status_code == 302
    api = api_client_for(annotator)
    api_url = f"/api/v1/projects/{project.slug}/rankings/"
    assert api.post(api_url, {"groups": RANKING}, format="json").status_code == 201
    assert_throttled(api.post(api_url, {"groups": RANKING}, format="json"))
    response = page.post(rank_url, {"groups": json.dumps(RANKING)}, HTTP_REFERER=f"http://testserver{rank_url}")
    assert response.status_code == 429
    assert int(response["Retry-After"]) > 0
    text = response.content.decode()
    assert "3 per hour" in text and "try again in" in text
    assert f'href="http://testserver{rank_url}"' in text  # a way back
    assert project.rankings.count() == 3
    assert page.get(rank_url).status_code == 200  # looking at the board is not limited


@pages
def test_clip_generation_training_and_iteration_starts_share_one_counter_across_api_and_pages(
    project, researcher, annotator, rates, sent
):
    rates(runs="7/hour")
    api = api_client_for(researcher)
    page = browser(researcher)
    slug = project.slug
    attempts = [
        lambda: api.post(f"/api/v1/projects/{slug}/runs/", {"kind": "generate_clips", "params": {}}, format="json"),
        lambda: api.post(f"/api/v1/projects/{slug}/reward-models/", {}, format="json"),
        lambda: api.post(f"/api/v1/projects/{slug}/runs/", {}, format="json"),
        lambda: page.post(f"/projects/{slug}/train/"),
        lambda: page.post(f"/projects/{slug}/generate/", {"rollouts": 2, "queries": 0}),
        lambda: page.post(f"/projects/{slug}/iterations/start/", {"count": 1}),
        lambda: api.post(f"/api/v1/projects/{slug}/reward-models/", {}, format="json"),
    ]
    for attempt in attempts:
        assert attempt().status_code != 429
    assert_throttled(api.post(f"/api/v1/projects/{slug}/runs/", {"kind": "generate_clips"}, format="json"))
    assert_throttled(api.post(f"/api/v1/projects/{slug}/runs/", {}, format="json"))
    for url in (f"/projects/{slug}/train/", f"/projects/{slug}/generate/", f"/projects/{slug}/iterations/start/"):
        assert page.post(url).status_code == 429, url
    # Reading the runs is not limited, and the annotator's allowance is untouched.
    assert api.get(f"/api/v1/projects/{slug}/runs/").status_code == 200
    assert (
        api_client_for(annotator)
        .post(f"/api/v1/projects/{slug}/rankings/", {"groups": RANKING}, format="json")
        .status_code
        == 201
    )


def test_exports_are_limited(project_with_queries, researcher, rates):
    rates(exports="2/hour")
    api = api_client_for(researcher)
    url = f"/api/v1/projects/{project_with_queries.slug}/export/judgments"
    assert [api.get(url).status_code for _ in range(2)] == [200, 200]
    assert_throttled(api.get(url))
    assert_throttled(api.get(f"/api/v1/projects/{project_with_queries.slug}/export/preferences"))


def test_judging_is_not_limited(project_with_queries, annotator, rates):
    rates(rankings="1/hour", runs="1/hour", exports="1/hour")
    api = api_client_for(annotator)
    for _ in range(3):
        lease = api.post(f"/api/v1/projects/{project_with_queries.slug}/queries/next/")
        assert lease.status_code in (200, 204), lease.content


@pages
def test_the_page_decorator_sends_anonymous_visitors_to_log_in_uncounted(project, rates):
    rates(runs="1/hour")
    for _ in range(3):
        response = Client().post(f"/projects/{project.slug}/train/")
        assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_sliding_window(monkeypatch, rates):
    rates(exports="3/minute")
    now = [600.0]  # the start of a window
    monkeypatch.setattr(ratelimits, "clock", lambda: now[0])
    assert [ratelimits.hit("exports", "user:1") for _ in range(3)] == [None, None, None]
    assert ratelimits.hit("exports", "user:1") == 80  # a third into the next window, this one's 3 weigh 2
    assert ratelimits.hit("exports", "user:2") is None  # per user
    now[0] += 30
    assert ratelimits.hit("exports", "user:1") == 50  # refusals are not counted
    now[0] += 30  # new window: 3 · (1 - 0) + 1 > 3
    assert ratelimits.hit("exports", "user:1") == 20
    now[0] += 20  # 3 · (1 - 1/3) + 1 = 3
    assert ratelimits.hit("exports", "user:1") is None
    now[0] += 120  # long idle: a full allowance again
    assert [ratelimits.hit("exports", "user:1") for _ in range(3)] == [None, None, None]


def test_a_rate_of_none_means_no_limit_and_an_unknown_scope_is_a_bug(rates):
    rates(exports=None)
    assert all(ratelimits.hit("exports", "user:1") is None for _ in range(100))
    with pytest.raises(Exception, match="no rate for scope"):
        rate_limited("nope")


@pytest.mark.skipif(
    not all(
        getattr(view, "rate_limit_scope", None)
        for view in (views.rank, views.project_train, views.project_generate_clips, views.project_iteration_start)
    ),
    reason="frontend/views.py does not apply @rate_limited yet (the lead adds it)",
)
def test_the_real_page_views_carry_the_same_scopes():
    from django.urls import resolve

    for name, scope in PAGE_SCOPES.items():
        url = {"rank": "/projects/x/rank/", "project-train": "/projects/x/train/"}.get(name) or {
            "project-generate": "/projects/x/generate/",
            "project-iteration-start": "/projects/x/iterations/start/",
        }[name]
        match = resolve(url, urlconf="config.urls")
        assert match.url_name == name
        assert match.func.rate_limit_scope == scope, name


# --- one queued retrain per project; one active run per project ------------------------------------------------


def queued(project, kind=RunKind.RETRAIN):
    return list(Run.objects.filter(project=project, kind=kind, state=RunState.QUEUED))


def submit(project, annotator, capture) -> None:
    """A ranking in its own transaction; at its commit the trainer reacts (tasks recorded by ``sent``)."""
    with capture(execute=True):
        ranking_submit(project=project, annotator=annotator, groups=RANKING)


def start(project, kind=RunKind.RETRAIN, created_by=None, **params) -> Run:
    return loop.run_start(project=project, kind=kind, params=params, created_by=created_by)


def busy(project) -> Run:
    """Another run of the project is working (a worker holds its step): new runs wait behind it."""
    return Run.objects.create(
        project=project,
        kind=RunKind.GENERATE_CLIPS,
        steps=[RunState.GENERATING_CLIPS],
        state=RunState.GENERATING_CLIPS,
        heartbeat_at=timezone.now(),
    )


def test_thirty_rankings_in_a_row_start_one_retrain_and_queue_one_more(
    project, annotator, annotator2, sent, django_capture_on_commit_callbacks
):
    for i in range(30):
        submit(project, (annotator, annotator2)[i % 2], django_capture_on_commit_callbacks)
    retrains = Run.objects.filter(project=project, kind=RunKind.RETRAIN).order_by("id")
    assert retrains.count() == 2
    first, second = retrains
    assert first.state == RunState.BUILDING_PREFERENCES  # started (its task recorded, not run)
    assert second.state == RunState.QUEUED and second.created_by == annotator2  # the latest request
    assert second.message.startswith(f"Waiting for retrain reward model #{first.pk}")
    assert second.params["sources"] == "auto" and "train" not in second.params
    assert set(sent) == {("trainer.run_building_preferences", (first.pk, "building_preferences"))}


def test_a_new_request_supersedes_the_waiting_one(
    project, researcher, annotator, sent, django_capture_on_commit_callbacks
):
    busy(project)
    api = api_client_for(researcher)
    first = api.post(f"/api/v1/projects/{project.slug}/reward-models/", {"cap": 500}, format="json")
    assert first.status_code == 202 and first.json()["kind"] == "retrain"
    submit(project, annotator, django_capture_on_commit_callbacks)
    assert queued(project)[0].created_by == annotator
    second = api.post(f"/api/v1/projects/{project.slug}/reward-models/", {"cap": 800}, format="json")
    assert second.json()["id"] == first.json()["id"]
    (retrain,) = queued(project)
    assert retrain.params["cap"] == 800 and retrain.created_by == researcher
    assert "replaced an earlier request" in retrain.message
    assert sent == []  # nothing starts while the project's other run works


def test_each_rebuilding_kind_coalesces_on_its_own(project, researcher, sent):
    busy(project)
    one = start(project, RunKind.TRAIN_REWARD_MODEL, researcher, preference_set=1)
    two = start(project, RunKind.TRAIN_REWARD_MODEL, None, preference_set=2)
    assert one.pk == two.pk
    (training,) = queued(project, RunKind.TRAIN_REWARD_MODEL)
    assert training.params == {"preference_set": 2} and training.created_by is None
    assert len(queued(project)) == 0  # kinds don't coalesce with each other


def test_other_kinds_and_other_projects_are_not_coalesced(project, researcher, sent):
    from tests.conftest import make_project

    other = make_project(researcher, slug="other")
    busy(project)
    busy(other)
    for target in (project, project, other):
        start(target, RunKind.GENERATE_CLIPS, researcher)
        start(target, RunKind.RETRAIN, researcher)
    assert len(queued(project, RunKind.GENERATE_CLIPS)) == 2
    assert len(queued(project)) == 1 and len(queued(other)) == 1


def test_the_database_refuses_a_second_queued_retrain_and_a_second_active_run(project):
    def new(**fields) -> Run:
        return Run.objects.create(project=project, kind=RunKind.RETRAIN, steps=["building_preferences"], **fields)

    new()
    with pytest.raises(IntegrityError), transaction.atomic():
        new()
    new(state=RunState.BUILDING_PREFERENCES)
    with pytest.raises(IntegrityError), transaction.atomic():
        busy(project)


def test_a_takeover_lost_to_a_start_queues_a_new_run(project, researcher, sent, monkeypatch):
    busy_run = busy(project)
    start(project, created_by=researcher)
    (waiting,) = queued(project)
    real_filter = Run.objects.filter
    started: list[bool] = []

    def filter_then_start(*args, **kwargs):  # the waiting run starts between the look-up and the takeover
        if kwargs.get("pk") == waiting.pk and kwargs.get("state") == RunState.QUEUED and not started:
            started.append(False)
            real_filter(pk=busy_run.pk).update(state=RunState.DONE)
            started[0] = loop.run_maybe_start(Run.objects.get(pk=waiting.pk))
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(Run.objects, "filter", filter_then_start)
    run = start(project, cap=9)
    monkeypatch.undo()
    assert started == [True]
    assert run.pk != waiting.pk and run.state == RunState.QUEUED and run.params["cap"] == 9
    assert Run.objects.get(pk=waiting.pk).params["cap"] == 200_000  # the started one kept what it started with


def test_a_waiting_run_starts_when_the_active_one_ends(project, researcher, sent, django_capture_on_commit_callbacks):
    first = start(project, created_by=researcher)
    assert first.state == RunState.BUILDING_PREFERENCES
    second = start(project, RunKind.GENERATE_CLIPS, researcher)
    assert second.state == RunState.QUEUED and "Waiting for" in second.message
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        loop.step_run(first.pk, first.state, lambda run, settings, report: {})
        first.refresh_from_db()
        assert first.state == RunState.TRAINING_REWARD  # its next step: the project's lane stays taken
        second.refresh_from_db()
        assert second.state == RunState.QUEUED
        loop.step_run(first.pk, first.state, lambda run, settings, report: {})
    first.refresh_from_db()
    second.refresh_from_db()
    assert first.state == RunState.DONE and second.state == RunState.GENERATING_CLIPS
    assert ("trainer.run_generating_clips", (second.pk, "generating_clips")) in sent


def test_a_failed_or_cancelled_run_also_starts_the_waiting_one(project, researcher, sent):
    first = start(project, created_by=researcher)
    second = start(project, RunKind.GENERATE_CLIPS, researcher)

    def fails(run, settings, report):
        raise ValueError("no preferences to build from")

    loop.step_run(first.pk, first.state, fails)
    second.refresh_from_db()
    assert second.state == RunState.GENERATING_CLIPS
    third = start(project, RunKind.GENERATE_CLIPS, researcher)
    loop.run_cancel(second)
    third.refresh_from_db()
    assert third.state == RunState.GENERATING_CLIPS


def test_a_ranking_during_a_running_iteration_trains_after_it_not_beside_it(
    project, researcher, annotator, sent, django_capture_on_commit_callbacks
):
    iteration = Run.objects.create(
        project=project, number=1, steps=["building_preferences", "training_reward"], state="training_reward"
    )
    submit(project, annotator, django_capture_on_commit_callbacks)
    (retrain,) = queued(project)
    assert retrain.message == "Waiting for iteration 1 to finish"
    assert not Run.objects.filter(project=project, state__in=["building_preferences"]).exists()
    loop.run_cancel(iteration)
    retrain.refresh_from_db()
    assert retrain.state == RunState.BUILDING_PREFERENCES


def test_thirty_api_rankings_in_eager_mode_train_at_most_twice(
    project, annotator, annotator2, settings, rates, monkeypatch, django_capture_on_commit_callbacks
):
    """With tasks run in-process at commit, each request's retrain runs at once; coalescing within a transaction
    (the callbacks of one block run after all 30) leaves the retrain the first one started and one more that
    waited for it: each builds and trains once."""
    from trainer import loop_steps

    rates(rankings="100/hour")
    built: list[int] = []
    trained: list[int] = []

    def recorder(seen: list[int]):
        def work(run, loop_settings, report) -> dict:
            seen.append(run.pk)
            return {}

        return work

    monkeypatch.setitem(loop_steps.STEP_WORK, "building_preferences", recorder(built))
    monkeypatch.setitem(loop_steps.STEP_WORK, "training_reward", recorder(trained))
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(30):
            ranking_submit(project=project, annotator=(annotator, annotator2)[i % 2], groups=RANKING)
    assert len(built) == 2 and built == trained
    assert list(Run.objects.filter(project=project).values_list("state", flat=True)) == [RunState.DONE] * 2


@pytest.mark.django_db(transaction=True)
def test_the_migration_turns_jobs_into_runs(researcher):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from tests.conftest import make_project

    project = make_project(researcher)
    before = [("labeling", "0008_rollout_run"), ("trainer", "0002_iterations_and_policies")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        old = executor.loader.project_state(before).apps
        OldJob = old.get_model("labeling", "Job")
        OldIteration = old.get_model("trainer", "Iteration")
        OldRollout = old.get_model("labeling", "Rollout")
        OldPreferenceSet = old.get_model("trainer", "PreferenceSet")
        now = timezone.now()

        def job(kind, status, **fields):
            return OldJob.objects.create(project_id=project.pk, kind=kind, status=status, created_at=now, **fields)

        done_clips = job("generate_clips", "done", result={"clips": 4})
        queued_build = job("build_preferences", "queued", params={"sources": "auto", "train": True})
        running = job("train_reward_model", "running", params={"preference_set": 1})
        built = job("build_preferences", "done", params={"train": False})
        rollout = OldRollout.objects.create(
            project_id=project.pk, policy="random", env_seed=1, n_steps=10, job=done_clips
        )
        preference_set = OldPreferenceSet.objects.create(project_id=project.pk, job=built, sources="rankings")
        iteration = OldIteration.objects.create(project_id=project.pk, number=1, state="done")
        loop_rollout = OldRollout.objects.create(
            project_id=project.pk, policy="sac", env_seed=2, n_steps=10, iteration=1
        )
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    runs = {run.kind + ":" + run.state: run for run in Run.objects.filter(project=project)}
    assert set(runs) == {
        "generate_clips:done",
        "retrain:queued",
        "train_reward_model:failed",
        "build_preferences:done",
        "iteration:done",
    }
    assert runs["generate_clips:done"].results == {"generating_clips": {"clips": 4}}
    assert runs["retrain:queued"].steps == ["building_preferences", "training_reward"]
    assert runs["retrain:queued"].params == {"sources": "auto"}
    assert "upgrade" in runs["train_reward_model:failed"].error
    assert runs["iteration:done"].pk == iteration.pk and runs["iteration:done"].steps[0] == "building_preferences"
    from labeling.models import Rollout
    from trainer.models import PreferenceSet

    assert Rollout.objects.get(pk=rollout.pk).run == runs["generate_clips:done"].pk
    assert Rollout.objects.get(pk=loop_rollout.pk).run == iteration.pk
    assert PreferenceSet.objects.get(pk=preference_set.pk).run_id == runs["build_preferences:done"].pk
    assert runs["build_preferences:done"].preference_set_id == preference_set.pk
    del queued_build, running


@pytest.mark.skipif(
    "postgresql" not in django_settings.DATABASES["default"]["ENGINE"], reason="needs PostgreSQL (concurrent writers)"
)
@pytest.mark.django_db(transaction=True)
def test_simultaneous_requests_leave_one_queued_retrain_and_one_active_run(researcher, monkeypatch):
    import threading

    from django.db import connection

    from tests.conftest import make_project

    monkeypatch.setattr(loop, "send_task_by_name", lambda name, *args: None)
    project = make_project(researcher)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def request(i: int) -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                kind = RunKind.RETRAIN if i % 2 else RunKind.GENERATE_CLIPS
                loop.run_start(project=project, kind=kind, params={"seed": i}, created_by=None)
        except BaseException as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=request, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    runs = Run.objects.filter(project=project)
    assert runs.filter(state__in=loop.STEP_STATES).count() == 1
    assert runs.filter(kind=RunKind.RETRAIN, state=RunState.QUEUED).count() <= 1
    assert runs.filter(kind=RunKind.GENERATE_CLIPS).count() == 4
