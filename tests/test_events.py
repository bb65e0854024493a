"""Every name that crosses an app boundary lives in labeling.events and names something real."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.conf import settings

from labeling import events
from trainer.models import STEP_STATES

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def celery_app():
    from config.celery import app

    app.loader.import_default_modules()  # autodiscovery of every app's tasks.py
    return app


@pytest.mark.parametrize("name", events.TASKS)
def test_each_task_name_is_a_registered_task_on_its_queue(celery_app, name):
    assert name in celery_app.tasks, f"{name} is not a registered Celery task"
    route = celery_app.amqp.router.route({}, name, (), {})
    queue = route["queue"]
    assert getattr(queue, "name", queue) == events.TASK_QUEUES[name]


def test_every_registered_task_of_ours_has_its_name_here(celery_app):
    ours = {name for name in celery_app.tasks if name.split(".")[0] in {"labeling", "trainer", "frontend", "config"}}
    assert ours == set(events.TASKS)


def test_every_run_step_has_a_task_and_the_settings_use_the_names():
    assert set(events.STEP_TASKS) == set(STEP_STATES)
    assert set(events.STEP_TASKS.values()) <= set(events.TASKS)
    assert events.celery_routes() == settings.CELERY_TASK_ROUTES
    assert {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()} <= set(events.TASKS)


@pytest.mark.parametrize("name", sorted(events.SIGNALS))
def test_each_signal_has_a_receiver(name):
    assert events.SIGNALS[name].has_listeners(), f"nobody listens to {name}"


def test_task_names_are_written_only_in_the_events_module():
    """No other module spells a task name as a string literal (use the constants)."""
    names = set(events.TASKS)
    offenders = []
    for folder in ("labeling", "trainer", "frontend", "platform/config"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == ROOT / "labeling" / "events.py" or "migrations" in path.parts:
                continue
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                literal = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
                if literal and (literal in names or literal.startswith(("trainer.train_", "trainer.iteration_"))):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {literal!r}")
                if isinstance(node, ast.JoinedStr) and any(
                    isinstance(part, ast.Constant) and str(part.value).startswith(("trainer.", "labeling."))
                    for part in node.values
                ):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: an f-string task name")
    assert not offenders, offenders


def test_no_app_patches_another_apps_admin():
    """trainer offers its project actions through labeling.admin.project_action_register, not by assignment."""
    from django.contrib import admin

    from labeling.models import Project

    project_admin = admin.site._registry[Project]
    names = {action if isinstance(action, str) else action.__name__ for action in project_admin.actions}
    assert {"generate_clips", "create_gold_questions", "train_reward_model", "start_iteration"} <= names
    source = (ROOT / "trainer" / "admin.py").read_text()
    assert "ProjectAdmin" not in source
