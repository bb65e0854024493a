"""Settings come from the environment, strictly; production settings pass `check --deploy`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from config.env import ImproperlyConfiguredEnv, database_from_url, env_bool, env_int, env_list

ROOT = Path(__file__).resolve().parent.parent


def test_env_bool_is_strict(monkeypatch):
    monkeypatch.setenv("FLAG", "yes")
    assert env_bool("FLAG", False) is True
    monkeypatch.setenv("FLAG", "maybe")
    with pytest.raises(ImproperlyConfiguredEnv, match="FLAG"):
        env_bool("FLAG", False)


def test_env_int_and_list(monkeypatch):
    monkeypatch.setenv("N", "12")
    assert env_int("N", 1, minimum=10) == 12
    monkeypatch.setenv("N", "twelve")
    with pytest.raises(ImproperlyConfiguredEnv):
        env_int("N", 1)
    monkeypatch.setenv("N", "3")
    with pytest.raises(ImproperlyConfiguredEnv, match="at least"):
        env_int("N", 1, minimum=10)
    monkeypatch.setenv("HOSTS", "a.example, b.example,")
    assert env_list("HOSTS", []) == ["a.example", "b.example"]


def test_database_urls():
    pg = database_from_url(
        "postgres://heron:s%40cret@db.internal:5433/heronry?sslmode=require", sqlite_fallback_name="x"
    )
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert (pg["NAME"], pg["USER"], pg["PASSWORD"], pg["HOST"], pg["PORT"]) == (
        "heronry",
        "heron",
        "s@cret",
        "db.internal",
        "5433",
    )
    assert pg["OPTIONS"] == {"sslmode": "require"}
    lite = database_from_url("", sqlite_fallback_name="/tmp/h.sqlite3")
    assert lite["ENGINE"] == "django.db.backends.sqlite3"
    assert "journal_mode=WAL" in lite["OPTIONS"]["init_command"]
    with pytest.raises(ImproperlyConfiguredEnv):
        database_from_url("mysql://x/y", sqlite_fallback_name="x")


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    unset = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE"}  # the browser tests set the last
    clean = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_check_deploy():
    result = _manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="false",
        SECRET_KEY="x" * 20 + "-a-long-random-production-secret-key-value",
        ALLOWED_HOSTS="heronry.example",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key():
    result = _manage("check", DEBUG="false", ALLOWED_HOSTS="heronry.example")
    assert result.returncode != 0
    assert "SECRET_KEY" in result.stderr


def test_allowed_env_id_patterns_are_strict(monkeypatch):
    from config.env import env_patterns

    monkeypatch.setenv("ALLOWED_ENV_IDS", "CartPole-v1, *-v5")
    assert env_patterns("ALLOWED_ENV_IDS", []) == ["CartPole-v1", "*-v5"]
    monkeypatch.setenv("ALLOWED_ENV_IDS", "CartPole-v1,Hopper v5")
    with pytest.raises(ImproperlyConfiguredEnv, match="ALLOWED_ENV_IDS"):
        env_patterns("ALLOWED_ENV_IDS", [])


def test_celery_workers_run_torch_with_the_configured_thread_count(settings):
    import torch

    from config import celery

    previous = torch.get_num_threads()
    settings.HERONRY = {**settings.HERONRY, "TORCH_NUM_THREADS": 1}
    try:
        celery._torch_threads()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)
