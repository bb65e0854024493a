"""Work can't be flooded: per-user rate limits shared by the API and the pages, and at most one queued preference
build and one queued reward-model training per project (a new request supersedes the waiting one)."""

from __future__ import annotations

import json
from datetime import timedelta

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
from labeling.models import Job, JobKind, JobStatus
from labeling.rankings import ranking_submit
from labeling.ratelimits import rate_limited
from tests.conftest import api_client_for
from trainer import jobs

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
    """Tasks are recorded, not run: the jobs stay queued as they would with busy workers."""
    calls: list[tuple[str, tuple]] = []
    monkeypatch.setattr(services, "send_task_by_name", lambda name, *args: calls.append((name, args)))
    monkeypatch.setattr(jobs, "send_task_by_name", lambda name, *args: calls.append((name, args)))
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
def test_job_training_and_iteration_starts_share_one_counter_across_api_and_pages(
    project, researcher, annotator, rates, sent
):
    rates(runs="7/hour")
    api = api_client_for(researcher)
    page = browser(researcher)
    slug = project.slug
    attempts = [
        lambda: api.post(f"/api/v1/projects/{slug}/jobs/", {"kind": "generate_clips", "params": {}}, format="json"),
        lambda: api.post(f"/api/v1/projects/{slug}/reward-models/", {}, format="json"),
        lambda: api.post(f"/api/v1/projects/{slug}/iterations/", {}, format="json"),
        lambda: page.post(f"/projects/{slug}/train/"),
        lambda: page.post(f"/projects/{slug}/generate/", {"rollouts": 2, "queries": 0}),
        lambda: page.post(f"/projects/{slug}/iterations/start/", {"count": 1}),
        lambda: api.post(f"/api/v1/projects/{slug}/reward-models/", {}, format="json"),
    ]
    for attempt in attempts:
        assert attempt().status_code != 429
    assert_throttled(api.post(f"/api/v1/projects/{slug}/jobs/", {"kind": "generate_clips"}, format="json"))
    assert_throttled(api.post(f"/api/v1/projects/{slug}/iterations/", {}, format="json"))
    for url in (f"/projects/{slug}/train/", f"/projects/{slug}/generate/", f"/projects/{slug}/iterations/start/"):
        assert page.post(url).status_code == 429, url
    # Reading the jobs is not limited, and the annotator's allowance is untouched.
    assert api.get(f"/api/v1/projects/{slug}/jobs/").status_code == 200
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


# --- one queued build, one queued training --------------------------------------------------------------------


def queued(project, kind=JobKind.BUILD_PREFERENCES):
    return list(Job.objects.filter(project=project, kind=kind, status=JobStatus.QUEUED))


def submit(project, annotator, capture) -> None:
    """A ranking in its own transaction; at its commit the trainer reacts (tasks recorded by ``sent``)."""
    with capture(execute=True):
        ranking_submit(project=project, annotator=annotator, groups=RANKING)


def test_thirty_rankings_in_a_row_queue_one_build(
    project, annotator, annotator2, sent, django_capture_on_commit_callbacks
):
    for i in range(30):
        submit(project, (annotator, annotator2)[i % 2], django_capture_on_commit_callbacks)
    builds = Job.objects.filter(project=project, kind=JobKind.BUILD_PREFERENCES)
    assert builds.count() == 1
    (build,) = builds
    assert build.status == JobStatus.QUEUED
    assert build.created_by == annotator2  # the latest request
    assert build.params == {"sources": "auto", "train": True}
    assert set(sent) == {("trainer.build_preferences", (build.pk,))}  # sent again each time: a duplicate is a no-op


def test_a_running_build_does_not_block_the_next_one_but_only_one_waits(
    project, annotator, annotator2, sent, django_capture_on_commit_callbacks
):
    submit(project, annotator, django_capture_on_commit_callbacks)
    (first,) = queued(project)
    assert first.claim()  # a worker took it
    for i in range(30):
        submit(project, (annotator, annotator2)[i % 2], django_capture_on_commit_callbacks)
    builds = Job.objects.filter(project=project, kind=JobKind.BUILD_PREFERENCES)
    assert sorted(builds.values_list("status", flat=True)) == [JobStatus.QUEUED, JobStatus.RUNNING]


def test_a_new_request_supersedes_the_waiting_one(
    project, researcher, annotator, sent, django_capture_on_commit_callbacks
):
    api = api_client_for(researcher)
    first = api.post(f"/api/v1/projects/{project.slug}/reward-models/", {"cap": 500}, format="json")
    assert first.status_code == 202
    submit(project, annotator, django_capture_on_commit_callbacks)
    assert queued(project)[0].created_by == annotator
    second = api.post(f"/api/v1/projects/{project.slug}/reward-models/", {"cap": 800}, format="json")
    assert second.json()["id"] == first.json()["id"]
    (build,) = queued(project)
    assert build.params["cap"] == 800 and build.created_by == researcher
    assert "replaced an earlier request" in build.message


def test_the_chained_training_coalesces_too(project, researcher, sent):
    one = services.job_start(
        project=project, kind=JobKind.TRAIN_REWARD_MODEL, params={"preference_set": 1}, created_by=researcher
    )
    two = services.job_start(
        project=project, kind=JobKind.TRAIN_REWARD_MODEL, params={"preference_set": 2}, created_by=None
    )
    assert one.pk == two.pk
    (training,) = queued(project, JobKind.TRAIN_REWARD_MODEL)
    assert training.params == {"preference_set": 2} and training.created_by is None
    assert len(queued(project)) == 0  # kinds don't coalesce with each other


def test_other_kinds_and_other_projects_are_not_coalesced(project, researcher, sent):
    from tests.conftest import make_project

    other = make_project(researcher, slug="other")
    for target in (project, project, other):
        services.job_start(project=target, kind=JobKind.GENERATE_CLIPS, params={}, created_by=researcher)
        services.job_start(project=target, kind=JobKind.BUILD_PREFERENCES, params={}, created_by=researcher)
    assert len(queued(project, JobKind.GENERATE_CLIPS)) == 2
    assert len(queued(project)) == 1 and len(queued(other)) == 1


def test_the_database_refuses_a_second_queued_build(project):
    Job.objects.create(project=project, kind=JobKind.BUILD_PREFERENCES)
    with pytest.raises(IntegrityError), transaction.atomic():
        Job.objects.create(project=project, kind=JobKind.BUILD_PREFERENCES)
    Job.objects.create(project=project, kind=JobKind.BUILD_PREFERENCES, status=JobStatus.RUNNING)


def test_a_takeover_lost_to_a_worker_queues_a_new_job(project, researcher, sent, monkeypatch):
    services.job_start(project=project, kind=JobKind.BUILD_PREFERENCES, params={}, created_by=researcher)
    (waiting,) = queued(project)
    real_filter = Job.objects.filter
    claimed: list[bool] = []

    def filter_then_claim(*args, **kwargs):  # a worker claims the job between the look-up and the takeover
        if kwargs.get("pk") == waiting.pk and not claimed:
            claimed.append(False)
            claimed[0] = waiting.claim()
        return real_filter(*args, **kwargs)

    monkeypatch.setattr(Job.objects, "filter", filter_then_claim)
    job = services.job_start(project=project, kind=JobKind.BUILD_PREFERENCES, params={"cap": 9}, created_by=None)
    monkeypatch.undo()
    assert claimed == [True]
    assert job.pk != waiting.pk and job.status == JobStatus.QUEUED and job.params == {"cap": 9}
    assert Job.objects.get(pk=waiting.pk).params == {}  # the running one kept what it started with


def test_a_build_waits_for_the_running_one_which_then_sends_it(
    project, researcher, sent, django_capture_on_commit_callbacks
):
    services.job_start(project=project, kind=JobKind.BUILD_PREFERENCES, params={}, created_by=researcher)
    (first,) = queued(project)
    ran: list[int] = []
    later: list[Job] = []

    def work(job):
        ran.append(job.pk)
        if job.pk == first.pk:  # meanwhile: a new request, and a second worker picks up its message at once
            later.append(
                services.job_start(project=project, kind=JobKind.BUILD_PREFERENCES, params={"cap": 7}, created_by=None)
            )
            jobs.job_run(later[0].pk, work)
            assert Job.objects.get(pk=later[0].pk).status == JobStatus.QUEUED
            assert Job.objects.get(pk=later[0].pk).message == f"Waiting for job #{first.pk} to finish"
        return {}

    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_run(first.pk, work)
    assert ran == [first.pk]
    (second,) = later
    assert ("trainer.build_preferences", (second.pk,)) in sent  # the finished one starts the waiting one
    jobs.job_run(second.pk, work)
    assert ran == [first.pk, second.pk]
    assert Job.objects.get(pk=second.pk).status == JobStatus.DONE


def test_a_failed_build_also_sends_the_waiting_one(project, researcher, sent, django_capture_on_commit_callbacks):
    services.job_start(project=project, kind=JobKind.BUILD_PREFERENCES, params={}, created_by=researcher)
    (first,) = queued(project)

    def work(job):
        services.job_start(project=project, kind=JobKind.BUILD_PREFERENCES, params={}, created_by=None)
        raise ValueError("no preferences to build from")

    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        jobs.job_run(first.pk, work)
    (waiting,) = queued(project)
    assert Job.objects.get(pk=first.pk).status == JobStatus.FAILED
    assert sent[-1] == ("trainer.build_preferences", (waiting.pk,))


def test_a_stale_running_build_does_not_hold_up_the_next(project, researcher, sent):
    services.job_start(project=project, kind=JobKind.BUILD_PREFERENCES, params={}, created_by=researcher)
    (dead,) = queued(project)
    assert dead.claim()
    Job.objects.filter(pk=dead.pk).update(heartbeat_at=timezone.now() - Job.STALE_AFTER - timedelta(seconds=1))
    job = services.job_start(project=project, kind=JobKind.BUILD_PREFERENCES, params={}, created_by=None)
    jobs.job_run(job.pk, lambda job: {"ok": True})
    assert Job.objects.get(pk=job.pk).status == JobStatus.DONE


def test_thirty_api_rankings_in_eager_mode_build_and_train_at_most_once_each(
    project, annotator, annotator2, settings, rates, monkeypatch, django_capture_on_commit_callbacks
):
    """With tasks run in-process at commit, each request's chain runs at once; coalescing within a transaction
    (the callbacks of one block run after all 30) leaves one build and one training."""
    from trainer import preference_building, reward_training

    rates(rankings="100/hour")
    built: list[int] = []
    trained: list[int] = []

    def fake_build(job):
        built.append(job.pk)
        services.job_start(project=project, kind=JobKind.TRAIN_REWARD_MODEL, params={}, created_by=job.created_by)
        return {}

    monkeypatch.setattr(preference_building, "build_preferences", fake_build)

    def fake_train(job):
        trained.append(job.pk)
        return {}

    monkeypatch.setattr(reward_training, "train_reward_model_job", fake_train)
    with django_capture_on_commit_callbacks(execute=True):
        for i in range(30):
            ranking_submit(project=project, annotator=(annotator, annotator2)[i % 2], groups=RANKING)
    assert len(built) == 1 and len(trained) == 1
    assert Job.objects.filter(project=project).count() == 2
    assert not Job.objects.filter(status=JobStatus.QUEUED).exists()


@pytest.mark.django_db(transaction=True)
def test_the_migration_merges_queued_duplicates(researcher):
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from tests.conftest import make_project

    project = make_project(researcher)
    before = [("labeling", "0005_skip_and_full_view")]
    after = [("labeling", "0006_job_one_queued_build_or_training_per_project")]
    executor = MigrationExecutor(connection)
    executor.migrate(before)
    try:
        OldJob = executor.loader.project_state(before).apps.get_model("labeling", "Job")
        now = timezone.now()
        ids = [
            OldJob.objects.create(project_id=project.pk, kind=kind, status="queued", created_at=now + timedelta(s)).pk
            for s, kind in enumerate(["build_preferences"] * 3 + ["train_reward_model"] * 2 + ["generate_clips"] * 2)
        ]
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(after)
        # Back to the latest schema, so later migrations (and the tests after this one) find their columns.
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
    statuses = dict(Job.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["failed", "failed", "queued", "failed", "queued", "queued", "queued"]
    assert Job.objects.get(pk=ids[0]).error.startswith(f"Superseded by job #{ids[2]}")


@pytest.mark.skipif(
    "postgresql" not in django_settings.DATABASES["default"]["ENGINE"], reason="needs PostgreSQL (concurrent writers)"
)
@pytest.mark.django_db(transaction=True)
def test_simultaneous_requests_leave_one_queued_build(researcher, monkeypatch):
    import threading

    from django.db import connection

    from tests.conftest import make_project

    monkeypatch.setattr(services, "send_task_by_name", lambda name, *args: None)
    project = make_project(researcher)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def request(i: int) -> None:
        try:
            barrier.wait()
            with transaction.atomic():
                services.job_start(project=project, kind=JobKind.BUILD_PREFERENCES, params={"seed": i}, created_by=None)
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
    assert Job.objects.filter(project=project, kind=JobKind.BUILD_PREFERENCES).count() == 1
