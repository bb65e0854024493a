"""Hosts that share only the database, the broker and an object store: an iteration end to end.

The web process and two Celery workers run as separate processes, each in a working folder of its own with its
own MEDIA_ROOT, all with MEDIA_STORAGE=s3 against a real S3-compatible server (moto's server mode, in its own
process). One worker takes the default and render queues, the other the train queue, so every artefact a step
hands to the next (rollouts, preference sets, reward models, policies) crosses from one "host" to the other and
could only have travelled through the bucket. The researcher works through the web process's HTTP API.

Needs DATABASE_URL=postgres://… and CELERY_BROKER_URL=redis://… (CI sets them); skipped otherwise.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request

import pytest

from labeling.models import Clip, FeedbackMode, RenderStatus
from labeling.rankings import ranking_submit
from labeling.services import membership_add
from labeling.uploads import check_video
from tests.conftest import PASSWORD, make_project
from tests.integration.servers import free_port, moto_s3_server, wait_until
from tests.integration.workers import needs_servers, start_web, start_worker, wait_for
from tests.s3 import create_bucket, object_keys, s3_env, use_s3_media
from tests.test_loop import TINY
from tests.test_rankings_and_reward_models import RANKING, make_clips

pytestmark = [pytest.mark.integration, needs_servers]

# What a media file looks like on a disk where none should be.
MEDIA_SUFFIXES = {".npz", ".mp4", ".jpg", ".png", ".parquet", ".safetensors", ".json", ".zip"}


@pytest.fixture
def real_broker(transactional_db):
    from config.celery import app

    app.conf.task_always_eager = False
    app.control.purge()
    yield app
    app.control.purge()


# --- HTTP -----------------------------------------------------------------------------------------------------


def call(url: str, *, token: str | None = None, body: dict | None = None) -> tuple[int, object]:
    """A JSON request to the web process; (status, decoded body)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Token {token}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # our own test server on 127.0.0.1
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(errors="replace")


def responds(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


# --- the loop, through the API (the one place to adapt when the iteration API changes) -------------------------


def run_iteration_over_http(web: str, token: str, slug: str) -> dict:
    """Start one iteration now and wait until it has finished; its final JSON."""
    status, created = call(f"{web}/api/v1/projects/{slug}/runs/", token=token, body={"kind": "iteration", "count": 1})
    assert status == 201, created
    iteration_url = created["url"] if created["url"].startswith("http") else f"{web}{created['url']}"
    # Pairwise questions wait for their label budget; start anyway (the rankings are the feedback here).
    status, started = call(iteration_url, token=token, body={"action": "start"})
    assert status == 200, started

    def finished():
        status, body = call(iteration_url, token=token)
        assert status == 200, body
        return body if body["state"] in ("done", "failed", "cancelled") else None

    return wait_for(finished, timeout=240, what="the iteration to finish on the two workers")


# --- the test -------------------------------------------------------------------------------------------------


def test_an_iteration_runs_across_hosts_that_share_only_the_database_the_broker_and_an_object_store(
    real_broker, settings, monkeypatch, tmp_path, researcher, annotator
):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    # Logins through the web process check the password with its own (default) hashers.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    researcher.set_password(PASSWORD)
    researcher.save()

    hosts = {name: tmp_path / name for name in ("web", "render-host", "train-host")}
    for folder in hosts.values():
        (folder / "media").mkdir(parents=True)
    with moto_s3_server(tmp_path) as endpoint:
        bucket = create_bucket(endpoint)
        use_s3_media(settings, monkeypatch, endpoint, bucket)  # this process sets the project up in the bucket too
        env = s3_env(endpoint, bucket)

        project = make_project(researcher, slug="across-hosts", feedback_mode=FeedbackMode.BOTH, overlap=1)
        project.loop_settings = TINY
        project.save()
        membership_add(project=project, user=annotator)
        make_clips(project, researcher, rollouts=4)  # rollouts, no video
        ranking_submit(project=project, annotator=annotator, groups=RANKING, sigmas={})
        initial_keys = set(object_keys(endpoint, bucket))

        port = free_port()
        web_url = f"http://127.0.0.1:{port}"

        def start(name: str, **kwargs):
            folder = hosts[name]
            own = {**env, "HERONRY_VAR_DIR": str(folder / "var")}
            if name == "web":
                return start_web(folder / "media", port, cwd=folder, **own)
            return start_worker(folder / "media", cwd=folder, **kwargs, **own)

        processes = [
            start("web"),
            start("render-host", queues="default,render"),
            start("train-host", queues="train"),
        ]
        try:
            wait_until(lambda: responds(f"{web_url}/api/v1/"), timeout=60, what="the web process")
            status, login = call(
                f"{web_url}/api/v1/auth/token/", body={"username": researcher.username, "password": PASSWORD}
            )
            assert status == 200, login
            token = login["token"]

            done = run_iteration_over_http(web_url, token, project.slug)
            assert done["state"] == "done", done.get("error")

            # The artefacts of every step are objects in the bucket.
            keys = set(object_keys(endpoint, bucket))
            new_keys = keys - initial_keys
            for prefix in ("rollouts/", "preferences/", "reward_models/", "policies/", "clips/"):
                assert any(key.startswith(prefix) for key in new_keys), (prefix, sorted(new_keys))
            assert any(key.endswith(".safetensors") for key in new_keys)
            assert any(key.startswith("policies/") and key.endswith(".zip") for key in new_keys)

            # ... and none is on a disk: not in any MEDIA_ROOT, not anywhere in the hosts' working folders.
            for name, folder in hosts.items():
                stray = [path for path in folder.rglob("*") if path.is_file() and path.suffix in MEDIA_SUFFIXES]
                assert not stray, (name, stray)
                assert not any((folder / "media").iterdir()), name

            # A clip the iteration made and rendered, fetched as a token client does: the API's signed URL, the
            # web process's redirect, the store's bytes.
            status, page = call(f"{web_url}/api/v1/projects/{project.slug}/clips/?iteration=1", token=token)
            assert status == 200, page
            rendered = [clip for clip in page["results"] if clip["render_status"] == RenderStatus.READY]
            assert rendered, page
            video_url = rendered[0]["video_url"]
            assert video_url.startswith(web_url)
            with urllib.request.urlopen(video_url, timeout=30) as response:  # follows the 302 to the store
                assert response.url.startswith(f"{endpoint}/{bucket}/")
                assert response.headers["Content-Type"] == "video/mp4"
                video = response.read()
            check_video(io.BytesIO(video))  # an H.264 MP4, by ffmpeg's reading
            clip = Clip.objects.get(pk=rendered[0]["id"])
            assert clip.video.name in keys
        finally:
            for process in processes:
                process.stop()
