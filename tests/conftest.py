"""Shared fixtures: personas (researcher / annotator / outsider), projects with clips, API clients.

Tests run against PostgreSQL and Redis when DATABASE_URL and CELERY_BROKER_URL are set (CI sets them) and
fall back to SQLite and in-process task execution otherwise.
"""

from __future__ import annotations

import io
import os

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np
import pytest
from django.core.cache import cache
from django.core.files.base import ContentFile
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Role, User
from accounts.services import user_create
from labeling.models import Clip, Project, ProjectRole, RenderStatus, Rollout
from labeling.services import membership_add, project_create, queries_create_random

PASSWORD = "correct-horse-battery"


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path):
    """Media in a temporary folder; tasks run in-process unless a test starts a real worker."""
    from config.celery import app

    settings.MEDIA_ROOT = tmp_path / "media"
    # Done iterations write TensorBoard files (trainer.tracking): into the test's folder, never var/.
    settings.HERONRY = {**settings.HERONRY, "TRACKING_DIR": str(tmp_path / "tracking"), "MLFLOW_TRACKING_URI": ""}
    # A full-strength password hash costs about a second per user on this CPU; tests don't need that strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    cache.clear()
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = eager


@pytest.fixture
def researcher(db) -> User:
    return user_create(username="rita", password=PASSWORD, role=Role.RESEARCHER)


@pytest.fixture
def annotator(db) -> User:
    return user_create(username="anna", password=PASSWORD, role=Role.ANNOTATOR)


@pytest.fixture
def annotator2(db) -> User:
    return user_create(username="ben", password=PASSWORD, role=Role.ANNOTATOR)


@pytest.fixture
def outsider(db) -> User:
    return user_create(username="otto", password=PASSWORD, role=Role.ANNOTATOR)


def make_project(owner: User, *, slug: str = "pendulum", overlap: int = 1, **kwargs) -> Project:
    return project_create(
        created_by=owner, name=slug.title(), slug=slug, env_id="Pendulum-v1", overlap=overlap, **kwargs
    )


def add_fake_clips(project: Project, count: int, *, ready: bool = True) -> list[Clip]:
    """Clips without simulation, for tests about assignment and the API (the pipeline has its own tests)."""
    rollout = Rollout(project=project, policy="random", env_seed=0, n_steps=count * project.segment_steps)
    rollout.data.save("fake.npz", ContentFile(b"not used"), save=False)
    rollout.save()
    rng = np.random.default_rng(0)
    clips = []
    for i in range(count):
        clip = Clip(
            project=project,
            rollout=rollout,
            start=i * project.segment_steps,
            length=project.segment_steps,
            factor_totals={"angle_sq": float(rng.random()), "angular_velocity_sq": 1.0, "torque_sq": 0.5},
            true_return=float(-rng.random() * 100),
            render_status=RenderStatus.READY if ready else RenderStatus.PENDING,
        )
        if ready:
            clip.video.save(f"{i}.mp4", ContentFile(b"\x00\x00\x00\x18ftypmp42" + bytes(200)), save=False)
            clip.poster.save(f"{i}.jpg", ContentFile(b"\xff\xd8\xff\xe0" + bytes(50)), save=False)
        clip.save()
        clips.append(clip)
    return clips


@pytest.fixture
def project(researcher, annotator, annotator2) -> Project:
    project = make_project(researcher, overlap=2)
    membership_add(project=project, user=annotator, role=ProjectRole.ANNOTATOR)
    membership_add(project=project, user=annotator2, role=ProjectRole.ANNOTATOR)
    return project


@pytest.fixture
def project_with_queries(project) -> Project:
    clips = add_fake_clips(project, 8)
    queries_create_random(project=project, count=10, rng=np.random.default_rng(1), clips=clips)
    return project


def api_client_for(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def api(annotator) -> APIClient:
    return api_client_for(annotator)


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def run_in_process(project: Project, created_by: User | None, kind: str, **params):
    """Queue a run of ``kind`` and do its steps here and now, as a worker would; returns it, refreshed."""
    from unittest import mock

    from trainer import loop
    from trainer.loop_steps import STEP_WORK
    from trainer.models import Run

    # No task is sent (not even to a real worker that a test started): the steps run here, one after another.
    with mock.patch.object(loop, "_send_step", lambda *args: None):
        run = loop.run_start(project=project, kind=kind, params=params, created_by=created_by)
        for _ in range(len(run.steps)):
            run = Run.objects.get(pk=run.pk)
            if run.state not in run.steps:
                break
            loop.step_run(run.pk, run.state, STEP_WORK[run.state])
    run.refresh_from_db()
    return run
