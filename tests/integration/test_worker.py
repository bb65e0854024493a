"""A real Celery worker process consumes from Redis and writes to PostgreSQL.

Needs the servers CI provides: DATABASE_URL (postgres://…) and CELERY_BROKER_URL (redis://…). Without them the
test is skipped and says why.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from labeling.models import Clip, Query, RenderStatus
from tests.conftest import make_project
from tests.integration.workers import needs_servers, start_worker, wait_for
from trainer import loop
from trainer.models import Run, RunKind

pytestmark = [pytest.mark.integration]


@pytest.fixture
def worker(transactional_db, settings):
    """Start `celery worker` against the test database and the real broker; stop it afterwards."""
    from config.celery import app

    app.conf.task_always_eager = False
    app.control.purge()  # nothing left over from earlier runs
    worker = start_worker(settings.MEDIA_ROOT)
    yield worker.process
    worker.stop()


@needs_servers
def test_worker_generates_clips_from_redis_into_postgres(worker, researcher):
    assert connection.vendor == "postgresql"
    assert settings.CELERY_BROKER_URL.startswith("redis")
    project = make_project(researcher, slug="worker-test")
    run = loop.run_start(
        project=project,
        kind=RunKind.GENERATE_CLIPS,
        created_by=researcher,
        params={"rollouts": 2, "steps": 100, "queries": 3, "seed": 1},
    )

    progress_seen: set[float] = set()

    def finished():
        current = Run.objects.get(pk=run.pk)
        progress_seen.add(current.progress)
        return current if current.is_finished else None

    run = wait_for(finished, timeout=180, what="the worker to finish the run")
    assert run.state == "done", run.error
    result = run.results["generating_clips"]
    assert result["clips"] == 4 and result["queries"] == 3
    assert Clip.objects.filter(project=project).count() == 4
    assert Query.objects.filter(project=project).count() == 3
    rendered = Clip.objects.filter(project=project, render_status=RenderStatus.READY)
    assert rendered.exists()
    for clip in rendered:
        assert Path(clip.video.path).stat().st_size > 0  # written by the worker into the shared media folder
    assert run.started_at and run.finished_at and run.overall_progress == 1.0


@needs_servers
def test_a_ranking_becomes_a_reward_model_on_the_real_worker(worker, researcher, annotator):
    from labeling.services import membership_add
    from tests.conftest import api_client_for
    from tests.test_rankings_and_reward_models import RANKING, make_clips
    from trainer.models import RewardModel

    project = make_project(researcher, slug="heron-worker")
    membership_add(project=project, user=annotator)
    make_clips(project, researcher, rollouts=4)  # in this process; the chain below runs on the worker
    project.loop_settings = {"retrain_on_ranking": True}
    project.save()
    response = api_client_for(annotator).post(
        f"/api/v1/projects/{project.slug}/rankings/", {"groups": RANKING}, format="json"
    )
    assert response.status_code == 201

    def trained():
        model = RewardModel.objects.filter(project=project).first()
        return model if model is not None and model.status != "training" else None

    model = wait_for(trained, timeout=300, what="the worker to build preferences and train")
    assert model.status == "ready", model.error
    retrain = wait_for(
        lambda: Run.objects.filter(project=project, kind=RunKind.RETRAIN, state="done").first(),
        timeout=30,
        what="the retrain run to finish",
    )
    assert retrain.reward_model == model and retrain.steps == ["building_preferences", "training_reward"]
    # Small preference sets train on every pair (no validation split below RewardModelConfig.min_val_pairs).
    accuracy = model.metrics["val_accuracy"]
    accuracy = model.metrics["train_accuracy"] if accuracy is None else accuracy
    assert accuracy > 0.5 and model.weights.size > 0
