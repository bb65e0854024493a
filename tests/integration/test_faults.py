"""Faults with real services: the broker restarted, database connections cut, the media folder unwritable.

Each test that breaks a server starts its own throwaway one (tests/integration/servers.py): a redis-server on a
free port, and a PostgreSQL cluster made by initdb in a temporary folder, holding a copy of the migrated test
database. Django (this process and the workers it starts) is pointed at them for the test; the machine's shared
PostgreSQL and Redis are never stopped or cut off. Missing binaries skip these tests, or fail them in CI
(HERONRY_REQUIRE_SERVERS=1).

What must hold in every case: the iteration or request ends done, or clearly failed and retryable; no judgment
that was acknowledged is lost and none is recorded twice; no half-written artefact is visible.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
import types
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, make_server

import numpy as np
import pytest
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, connections
from rest_framework.authtoken.models import Token

from labeling.models import Clip, FeedbackMode, Judgment, Lease, Query, RenderStatus, Rollout
from labeling.rankings import ranking_submit
from labeling.services import membership_add, queries_create_random
from tests.conftest import add_fake_clips, api_client_for, make_project
from tests.integration.servers import dump_database, postgres_cluster, redis_server, unavailable
from tests.integration.workers import start_worker, wait_for
from tests.test_loop import TINY
from tests.test_rankings_and_reward_models import RANKING, make_clips
from trainer import loop, policy_video
from trainer.core import video
from trainer.models import PolicyCheckpoint, PreferenceSet, RewardModel, Run, RunState

pytestmark = [pytest.mark.integration]

# A dead step is visible after 3 s; Redis hands an unacknowledged task to another worker after 4 s.
FAST_RECOVERY = {"RUN_STALE_SECONDS": "3", "CELERY_VISIBILITY_TIMEOUT": "4"}
TEMPLATE = "heronry_template"
WORKER_APP = "heronry-worker"  # application_name of the workers' connections, so a test can cut just those


# --- throwaway servers, and Django pointed at them -------------------------------------------------------------


@pytest.fixture(scope="module")
def pg_cluster(django_db_setup, django_db_blocker):
    """A throwaway cluster holding a copy of the migrated test database (pg_dump | pg_restore: faster than
    running the migrations again)."""
    with django_db_blocker.unblock():
        settings_dict = dict(connections["default"].settings_dict)
        vendor = connections["default"].vendor
    if vendor != "postgresql":
        unavailable("fault tests copy the PostgreSQL test database; set DATABASE_URL=postgres://…")
    with postgres_cluster() as cluster:
        dump = cluster.folder / "schema.dump"
        dump_database(settings_dict, dump)
        cluster.create_database(TEMPLATE)
        cluster.restore(TEMPLATE, dump)
        yield cluster


@pytest.fixture
def throwaway_db(transactional_db, pg_cluster):
    """This test's own database on the throwaway cluster; this process and the workers it starts use it."""
    name = f"faults_{uuid.uuid4().hex[:8]}"
    pg_cluster.create_database(name, template=TEMPLATE)
    default = connections["default"]
    saved = {key: default.settings_dict[key] for key in ("NAME", "HOST", "PORT", "USER", "PASSWORD")}
    default.close()
    default.settings_dict.update(NAME=name, HOST="127.0.0.1", PORT=str(pg_cluster.port), USER="postgres", PASSWORD="")
    try:
        yield name
    finally:
        connections.close_all()
        default.settings_dict.update(saved)
        pg_cluster.terminate(name)


@pytest.fixture
def throwaway_redis(settings):
    """A redis-server of this test's own, as the broker of this process and of the workers it starts."""
    from config.celery import app

    keys = ("broker_url", "broker_read_url", "broker_write_url", "broker_transport_options", "task_always_eager")
    with redis_server() as server:
        saved = {key: app.conf[key] for key in keys}
        app.conf.update(
            broker_url=server.url(),
            broker_read_url=server.url(),
            broker_write_url=server.url(),
            broker_transport_options={},
            task_always_eager=False,
        )
        settings.CELERY_TASK_ALWAYS_EAGER = False
        _reset_broker_connections(app)
        try:
            yield server
        finally:
            app.conf.update(saved)
            _reset_broker_connections(app)


def _reset_broker_connections(app) -> None:
    app._pool = None  # the connection and producer pools are made again for the broker URL now configured
    app.amqp._producer_pool = None


@pytest.fixture
def fast_recovery(settings):
    """This process (which plays the beat sweep) uses the workers' stale limit."""
    settings.HERONRY = {**settings.HERONRY, "RUN_STALE_SECONDS": int(FAST_RECOVERY["RUN_STALE_SECONDS"])}


def _ranked_project(researcher, annotator, slug: str, **loop_settings):
    project = make_project(researcher, slug=slug, feedback_mode=FeedbackMode.RANKING)
    project.loop_settings = {**TINY, **loop_settings}
    project.render_width, project.render_height = 64, 48
    project.save()
    membership_add(project=project, user=annotator)
    make_clips(project, researcher, rollouts=4)  # in this process, before any worker starts
    ranking_submit(project=project, annotator=annotator, groups=RANKING, sigmas={})
    return project


def _training_under_way(iteration_id: int):
    def check():
        current = Run.objects.get(pk=iteration_id)
        assert not current.is_finished, current.error
        return current.state == RunState.TRAINING_POLICY and current.progress > 0.05

    return check


def _log_of(worker) -> str:
    worker.log.flush()
    return Path(worker.log.name).read_text()


def _assert_one_artefact_per_step(iteration: Run, *, reward_steps: bool = True) -> None:
    assert PreferenceSet.objects.filter(run=iteration).count() == int(reward_steps)
    assert RewardModel.objects.filter(run=iteration).count() == int(reward_steps)
    checkpoint = PolicyCheckpoint.objects.get(run=iteration)  # exactly one
    assert checkpoint.timesteps == iteration.settings["policy_timesteps"]
    assert Path(checkpoint.model_file.path).stat().st_size > 0
    rollouts = Rollout.objects.filter(project=iteration.project, run=iteration.pk)
    assert rollouts.count() == iteration.settings["rollouts"]


# --- (a) the broker restarted mid-iteration ------------------------------------------------------------------


@pytest.mark.slow
def test_redis_restarted_mid_step_loses_no_step_and_makes_each_artefact_once(
    throwaway_db, throwaway_redis, fast_recovery, settings, researcher, annotator
):
    project = _ranked_project(researcher, annotator, "broker-fault", policy_timesteps=2000)
    worker = start_worker(settings.MEDIA_ROOT, CELERY_BROKER_URL=throwaway_redis.url(), **FAST_RECOVERY)
    try:
        iteration = loop.iteration_create(project=project, created_by=researcher)
        wait_for(_training_under_way(iteration.pk), timeout=180, what="policy training to be under way")
        # The broker dies without saving anything (no persistence): the message of the step being worked on,
        # unacknowledged, is gone with it. The step carries on (it needs only the database) and finishes while
        # the broker is still down, so the message handing over to the next step cannot be sent either.
        print(f"{time.strftime('%X')} killing redis")
        throwaway_redis.kill()
        left = wait_for(
            lambda: (it := Run.objects.get(pk=iteration.pk)).state != RunState.TRAINING_POLICY and it,
            timeout=180,
            what="the step to finish without the broker",
        )
        assert left.state == RunState.ROLLING_OUT and left.heartbeat_at is None, (left.state, left.error)
        # The hand-over is sent after the state change commits: restart only once it has failed (the policy
        # video, queued by the step before, may have spent the broker's retries first).
        lost = "could not send rolling_out to the broker"
        wait_for(lambda: lost in _log_of(worker), timeout=120, what="the hand-over to fail")
        print(f"{time.strftime('%X')} restarting redis")
        throwaway_redis.start()  # an empty broker on the same port: nothing queued, nothing to redeliver

        def finished_with_sweeps():
            # This process plays the beat: the sweep resends a step that nobody holds once it is stale.
            try:
                loop.runs_sweep()
            except Exception as error:  # the broker may still be coming back for this process
                print(f"sweep: {error!r}")
            current = Run.objects.get(pk=iteration.pk)
            return current if current.is_finished else None

        done = wait_for(finished_with_sweeps, timeout=240, what="the iteration to finish after the restart")
        assert done.state == RunState.DONE, done.error
        assert lost in _log_of(worker)  # the hand-over was lost, and
        assert "raised unexpected" not in _log_of(worker)  # the step still ended cleanly
        # Every step ran exactly once: the one interrupted by the broker's death was not redone ...
        assert all(result["attempts"] == 1 for result in done.results.values()), done.results
        # ... and left one result each.
        _assert_one_artefact_per_step(done)
    finally:
        worker.stop()


# --- (c) a worker's database connection cut mid-step --------------------------------------------------------


@pytest.mark.slow
def test_a_cut_database_connection_mid_step_retries_the_step_without_duplicates(
    throwaway_db, pg_cluster, throwaway_redis, fast_recovery, settings, researcher, annotator
):
    # The policy learns from the true reward here (the reward steps are skipped): the cut is in the policy step.
    project = _ranked_project(researcher, annotator, "db-fault", policy_timesteps=2000, policy_reward="true")
    worker = start_worker(
        settings.MEDIA_ROOT,
        CELERY_BROKER_URL=throwaway_redis.url(),
        DATABASE_URL=pg_cluster.url(throwaway_db, application_name=WORKER_APP),
        **FAST_RECOVERY,
    )
    try:
        iteration = loop.iteration_create(project=project, created_by=researcher)
        wait_for(_training_under_way(iteration.pk), timeout=180, what="policy training to be under way")
        # What a failover or an administrator does: every connection of the worker is terminated. Its next
        # heartbeat fails; the step must not fail the iteration for that, nor hang: it releases its claim and
        # is retried (no beat sweep runs in this test).
        assert pg_cluster.terminate(throwaway_db, application_name=WORKER_APP) >= 1

        def finished():
            current = Run.objects.get(pk=iteration.pk)
            return current if current.is_finished else None

        done = wait_for(finished, timeout=240, what="the iteration to finish after the cut")
        assert done.state == RunState.DONE, done.error
        assert done.results["training_policy"]["attempts"] == 2  # the cut step ran again, from the start ...
        assert done.results["rolling_out"]["attempts"] == 1
        assert "lost the database during training_policy" in _log_of(worker)
        assert "raised unexpected" not in _log_of(worker)
        _assert_one_artefact_per_step(done, reward_steps=False)  # ... leaving one policy, not two
    finally:
        worker.stop()


# --- (b) the database connection cut mid-request -------------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class _CutConnection:
    """A database execute wrapper for the server thread: terminates its own backend at a chosen statement."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.pid: int | None = None
        self.plan: tuple[str, str] | None = None  # (when, SQL fragment): "before" / "after" / "after_commit"
        self.armed = False
        self.fired = False

    def cut_at(self, when: str, fragment: str) -> None:
        self.plan, self.armed, self.fired = (when, fragment), False, False

    def __call__(self, execute, sql, params, many, context):
        db = context["connection"]
        self.pid = db.connection.info.backend_pid
        when, fragment = self.plan or ("", "")
        matches = bool(fragment) and fragment in sql
        if when == "before" and matches:
            self._cut()
        result = execute(sql, params, many, context)
        if when == "after" and matches:
            self._cut()
        if when == "after_commit":
            if matches:
                self.armed = True  # cut at the next statement outside the transaction
            elif self.armed and not db.in_atomic_block:
                self._cut()
                return execute(sql, params, many, context)
        return result

    def _cut(self) -> None:
        pid, self.plan, self.armed, self.fired = self.pid, None, False, True
        self.cluster.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 5
        while self.cluster.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
            assert time.monotonic() < deadline, "the backend did not go away"
            time.sleep(0.02)


def test_cut_database_connections_mid_request_lose_no_acknowledged_judgment(
    throwaway_db, pg_cluster, researcher, annotator
):
    default = connections["default"].settings_dict
    assert default["CONN_HEALTH_CHECKS"] and default["CONN_MAX_AGE"], "settings: persistent, health-checked"
    project = make_project(researcher, slug="cut-requests", overlap=1)
    membership_add(project=project, user=annotator)
    clips = add_fake_clips(project, 8)
    queries_create_random(project=project, count=8, rng=np.random.default_rng(0), clips=clips)
    token = Token.objects.create(user=annotator).key

    # A real WSGI server in one thread, so its database connection lives across requests as in production
    # (CONN_MAX_AGE) and Django's per-request connection handling (close_old_connections, health checks) runs;
    # the test client skips both.
    cut = _CutConnection(pg_cluster)
    django_app = WSGIHandler()

    def app(environ, start_response):
        with connection.execute_wrapper(cut):
            return django_app(environ, start_response)

    server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_port}/api/v1"

    def call(path: str, body: dict | None = None) -> tuple[int, dict]:
        data = json.dumps(body or {}).encode()
        headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
        request = urllib.request.Request(base + path, data=data, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            raw = error.read()
            try:
                return error.code, json.loads(raw)
            except ValueError:
                return error.code, {"raw": raw.decode(errors="replace")[:500]}

    def lease() -> dict:
        status, body = call(f"/projects/{project.slug}/queries/next/")
        assert status == 200 and body["query"], (status, body)
        return body["query"]

    acknowledged: set[int] = set()

    def answer(query: dict, client_id: uuid.UUID) -> tuple[int, dict]:
        status, body = call(
            f"/queries/{query['id']}/judgments/",
            {"choice": "left", "lease": query["lease"], "client_id": str(client_id)},
        )
        if status in (200, 201):
            acknowledged.add(body["id"])
        return status, body

    def nothing_written(query: dict) -> None:
        # All three writes of an answer (judgment, answer count, lease removal) happened or none did.
        assert not Judgment.objects.filter(query_id=query["id"]).exists()
        assert Query.objects.get(pk=query["id"]).answers_given == 0
        assert Lease.objects.filter(query_id=query["id"], token=query["lease"]).exists()

    def retry_records_once(query: dict, client_id: uuid.UUID, first_status: int) -> None:
        status, first = answer(query, client_id)
        assert status == first_status, (status, first)
        status, again = answer(query, client_id)  # and once more: the same judgment, not a second one
        assert status == 200 and again["id"] == first["id"], (status, again)
        assert Judgment.objects.filter(query_id=query["id"]).count() == 1

    try:
        # 1. All well.
        query = lease()
        assert answer(query, uuid.uuid4())[0] == 201

        # 2. Cut between requests (a database restart overnight): the persistent connection is dead, the next
        # request's health check notices and reconnects instead of failing.
        dead = cut.pid
        pg_cluster.execute("SELECT pg_terminate_backend(%s)", (dead,))
        query = lease()
        assert cut.pid != dead
        assert answer(query, uuid.uuid4())[0] == 201

        # 3. Cut mid-request, before the answer is written: a clear 503, nothing written, and the retry with
        # the same client_id records it once.
        query, client_id = lease(), uuid.uuid4()
        cut.cut_at("before", f"INSERT INTO {connection.ops.quote_name(Judgment._meta.db_table)}")
        status, body = answer(query, client_id)
        assert cut.fired and status == 503 and body["error"]["code"] == "database_unavailable", (status, body)
        assert "client_id" in body["error"]["message"]
        nothing_written(query)
        retry_records_once(query, client_id, 201)

        # 4. Cut inside the transaction, after the write but before COMMIT: rolled back as a whole.
        query, client_id = lease(), uuid.uuid4()
        cut.cut_at("after", f"INSERT INTO {connection.ops.quote_name(Judgment._meta.db_table)}")
        status, body = answer(query, client_id)
        assert cut.fired and status == 503, (status, body)
        nothing_written(query)
        retry_records_once(query, client_id, 201)

        # 5. Cut right after COMMIT (while listeners hear of the answer): the answer is recorded, so the client is
        # told so (201), and a retry returns it (200), never a second one.
        query, client_id = lease(), uuid.uuid4()
        cut.cut_at("after_commit", f"INSERT INTO {connection.ops.quote_name(Judgment._meta.db_table)}")
        status, body = answer(query, client_id)
        assert cut.fired and status == 201, (status, body)
        status, again = answer(query, client_id)
        assert status == 200 and again["id"] == body["id"]

        # 6. Cut while a query is being leased: a clear 503 and no lease; asking again works.
        leases_before = Lease.objects.filter(annotator=annotator).count()
        cut.cut_at("before", f"INSERT INTO {connection.ops.quote_name(Lease._meta.db_table)}")
        status, body = call(f"/projects/{project.slug}/queries/next/")
        assert cut.fired and status == 503 and body["error"]["code"] == "database_unavailable", (status, body)
        assert Lease.objects.filter(annotator=annotator).count() == leases_before
        assert answer(lease(), uuid.uuid4())[0] == 201
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    # Every acknowledged answer is there, each once; every count matches the judgments it counts.
    judgments = set(Judgment.objects.filter(query__project=project).values_list("pk", flat=True))
    assert judgments == acknowledged and len(judgments) == 6
    for row in Query.objects.filter(project=project):
        assert row.answers_given == Judgment.objects.filter(query=row).count()
    assert not Lease.objects.filter(query__judgments__isnull=False).exists()


# --- (d) the media folder unwritable while clips render ------------------------------------------------------


def test_an_unwritable_media_folder_fails_rendering_cleanly_and_a_retry_renders(
    db, settings, researcher, annotator, django_capture_on_commit_callbacks, monkeypatch
):
    project = _ranked_project(researcher, annotator, "media-fault", policy_reward="true")
    # Questions too (pairwise and ranking): their clips render inside the iteration, before they are published;
    # the ranking page's examples render on the render queue afterwards.
    project.feedback_mode = FeedbackMode.BOTH
    project.save()
    clips_folder = Path(settings.MEDIA_ROOT) / "clips"
    aside = Path(tempfile.mkdtemp(prefix="heronry-clips-aside-")) / "clips"
    encode = video.write_mp4
    calls = []

    def encode_then_break_the_folder(frames, path, *, fps):
        encode(frames, path, fps=fps)
        calls.append(path)
        if len(calls) == 2:
            # Tests run as root, for whom a read-only folder (chmod) is writable all the same, and a read-only
            # mount needs privileges a test does not have. So the clips folder is replaced by a plain file:
            # nothing can be created under it, whoever asks. Clip 1 is stored already; clip 2 is encoded (into
            # a temporary folder) and is about to be stored.
            shutil.move(clips_folder, aside)
            clips_folder.write_text("not a folder")

    monkeypatch.setattr(video, "write_mp4", encode_then_break_the_folder)
    # The policy's evaluation video (the training step) encodes with the real encoder: the calls counted are
    # the clips' alone.
    monkeypatch.setattr(policy_video, "video", types.SimpleNamespace(**{**vars(video), "write_mp4": encode}))
    with django_capture_on_commit_callbacks(execute=True):
        iteration = loop.iteration_create(project=project, created_by=researcher)
    iteration.refresh_from_db()

    # The iteration failed at rendering, saying why and what to do; it did not publish clips nobody can see.
    assert iteration.state == RunState.FAILED, iteration.state
    assert iteration.error.startswith("Rendering:") and "could not be rendered" in iteration.error, iteration.error
    assert "not a directory" in iteration.error.lower() and "retry" in iteration.error
    assert "rendering" not in iteration.results and "publishing" not in iteration.results
    ready = list(Clip.objects.filter(project=project, render_status=RenderStatus.READY))
    failed = list(Clip.objects.filter(project=project, render_status=RenderStatus.FAILED))
    assert len(ready) == 1 and len(calls) >= 3 and len(failed) == len(calls) - 1
    assert all("not a directory" in clip.render_error.lower() and not clip.video for clip in failed)

    clips_folder.unlink()  # writable again
    shutil.move(aside, clips_folder)
    shutil.rmtree(aside.parent)
    stored = {path.name for path in clips_folder.rglob("*") if path.is_file()}
    assert stored == {Path(ready[0].video.name).name, Path(ready[0].poster.name).name}  # no partial or stray file

    # Retried from the API, the iteration renders what is missing and finishes.
    monkeypatch.setattr(video, "write_mp4", encode)
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(researcher).post(f"/api/v1/runs/{iteration.pk}/", {"action": "retry"}, format="json")
    assert response.status_code == 200, response.content
    iteration.refresh_from_db()
    assert iteration.state == RunState.DONE and not iteration.error, iteration.error
    assert iteration.results["training_policy"]["attempts"] == 1  # the earlier steps were not redone
    for clip in failed:
        clip.refresh_from_db()
        assert clip.render_status == RenderStatus.READY and not clip.render_error
        info = video.probe_video(clip.video.path)
        assert info.n_frames == clip.length + 1 and (info.width, info.height) == (64, 48)
    assert not [path for path in clips_folder.rglob(".*") if path.is_file()]  # no temporary file left behind
