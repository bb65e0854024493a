"""Media in an S3-compatible object store (moto's server, in a thread): every artefact goes through STORAGES, and
the media view redirects members to presigned URLs that the store answers with the right bytes and type."""

from __future__ import annotations

import io
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client

from config.env import ImproperlyConfiguredEnv
from config.media_storage import media_storage_from_env
from labeling.models import Clip, RenderStatus, Rollout
from labeling.s3_storage import MediaS3Storage
from labeling.signed_media import signed_clip_url
from tests.conftest import add_fake_clips, api_client_for
from tests.s3 import create_bucket, object_keys, s3_env, threaded_moto_server, use_s3_media
from tests.test_admin_scoping import form_errors, h264_mp4, png_bytes
from tests.test_admin_scoping import login as admin_login
from tests.test_admin_scoping import url as admin_url
from tests.test_rankings_and_reward_models import RANKING, make_clips
from tests.test_settings import _manage
from trainer.core import rollouts
from trainer.core.reward import from_bytes
from trainer.models import PreferenceSet, RewardModel

MP4_MAGIC = b"ftyp"
HTML = b"<!doctype html><script>alert(document.cookie)</script>"


@pytest.fixture(scope="module")
def moto():
    with threaded_moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(moto, settings, monkeypatch):
    """A fresh bucket per test, under a key prefix, as this process's default storage."""
    name = create_bucket(moto)
    use_s3_media(settings, monkeypatch, moto, name, location=f"t-{uuid.uuid4().hex[:8]}")
    return name


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # a URL we made, to moto on 127.0.0.1
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def test_every_artefact_is_stored_in_the_bucket_and_read_back(
    bucket, moto, settings, project, researcher, annotator, django_capture_on_commit_callbacks
):
    # Rollouts (npz) and two rendered clips (MP4 + JPEG poster), by the clip pipeline.
    make_clips(project, researcher, rollouts=2, queries=1, render="queried")
    # A ranking → a preference set (Parquet) → a reward model (safetensors + JSON), by a retrain run.
    with django_capture_on_commit_callbacks(execute=True):
        response = api_client_for(annotator).post(
            f"/api/v1/projects/{project.slug}/rankings/", {"groups": RANKING}, format="json"
        )
    assert response.status_code == 201

    rollout = Rollout.objects.filter(project=project).first()
    assert isinstance(rollout.data.storage, MediaS3Storage)
    with rollout.data.open("rb") as handle:
        assert rollouts.load_npz(handle.read()).n_steps == rollout.n_steps
    rendered = list(Clip.objects.filter(project=project, render_status=RenderStatus.READY))
    assert len(rendered) == 2
    for clip in rendered:
        with clip.video.open("rb") as video, clip.poster.open("rb") as poster:
            assert video.read(12)[4:8] == MP4_MAGIC and poster.read(3) == b"\xff\xd8\xff"
    preference_set = PreferenceSet.objects.get(project=project)
    with preference_set.file.open("rb") as handle:
        assert pq.read_table(io.BytesIO(handle.read())).num_rows == preference_set.n_pairs > 0
    model = RewardModel.objects.get(project=project)
    assert model.status == "ready"
    with model.weights.open("rb") as weights, model.metadata.open("rb") as metadata:
        assert (
            from_bytes(weights.read(), metadata.read()).model.ensemble_size >= 1
        )  # the weights match the metadata's hash

    # Each of them is an object under the test's prefix, and nothing was written to MEDIA_ROOT.
    keys = object_keys(moto, bucket)
    for field in (rollout.data, preference_set.file, model.weights, model.metadata, *(c.video for c in rendered)):
        assert f"{default_storage.location}/{field.name}" in keys
    assert {key.split("/")[1] for key in keys} >= {"rollouts", "clips", "preferences", "reward_models"}
    media_root = Path(settings.MEDIA_ROOT)
    assert not media_root.exists() or not any(path.is_file() for path in media_root.rglob("*"))


def test_the_media_view_redirects_members_to_presigned_urls_of_the_right_type(bucket, moto, project, annotator):
    make_clips(project, project.created_by, rollouts=1, queries=1, render="queried")
    clip = Clip.objects.filter(project=project, render_status=RenderStatus.READY).first()
    client = Client()
    client.force_login(annotator)

    for kind, content_type, field in (("video", "video/mp4", clip.video), ("poster", "image/jpeg", clip.poster)):
        response = client.get(getattr(clip, f"{kind}_url"))
        assert response.status_code == 302
        assert response["Cache-Control"] == "private, no-store"
        location = response["Location"]
        assert location.startswith(f"{moto}/{bucket}/") and "X-Amz-Signature=" in location
        status, headers, data = fetch(location)
        assert status == 200
        assert headers["content-type"] == content_type, headers
        assert headers.get("content-disposition") == "inline"
        with field.open("rb") as handle:
            assert data == handle.read()
        # The store serves ranges itself (browsers seek in videos).
        status, headers, part = fetch(location, Range="bytes=0-11")
        assert status == 206 and part == data[:12]
        # Without the signature the private object is refused.
        assert fetch(location.split("?")[0])[0] == 403
        # The next visit gets the same URL (for a while), so the browser's cache of the media can hit.
        assert client.get(getattr(clip, f"{kind}_url"))["Location"] == location


def test_the_redirect_keeps_the_media_views_checks(bucket, moto, project, annotator, outsider):
    make_clips(project, project.created_by, rollouts=1, queries=1, render="queried")
    clip = Clip.objects.filter(project=project, render_status=RenderStatus.READY).first()
    outsider_client = Client()
    outsider_client.force_login(outsider)
    assert outsider_client.get(clip.video_url).status_code == 404  # no redirect, no presigned URL
    anonymous = Client().get(clip.video_url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/")  # to the login page, not the store
    signed = signed_clip_url(clip, "video", user=annotator)
    response = Client().get(signed)
    assert response.status_code == 302 and response["Location"].startswith(f"{moto}/{bucket}/")
    assert Client().get(signed[:-4] + "AAAA").status_code == 404  # tampered


def test_presigned_urls_name_the_public_endpoint_when_one_is_set(moto, monkeypatch, settings):
    for name, value in s3_env(moto, "media").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("S3_PUBLIC_ENDPOINT_URL", "https://media.heronry.example")
    media = media_storage_from_env(url_max_age=600)
    assert media.origins == ("https://media.heronry.example",)
    storage = MediaS3Storage(**media.storage["OPTIONS"])
    url = storage.url("clips/1.mp4")
    assert url.startswith("https://media.heronry.example/media/clips/1.mp4?") and "X-Amz-Expires=600" in url


def test_s3_settings_are_parsed_strictly(monkeypatch):
    monkeypatch.setenv("MEDIA_STORAGE", "s3")
    with pytest.raises(ImproperlyConfiguredEnv, match="S3_BUCKET"):
        media_storage_from_env(url_max_age=60)
    monkeypatch.setenv("S3_BUCKET", "media")
    monkeypatch.setenv("S3_ENDPOINT_URL", "minio:9000")
    with pytest.raises(ImproperlyConfiguredEnv, match="S3_ENDPOINT_URL"):
        media_storage_from_env(url_max_age=60)
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://minio:9000")
    monkeypatch.setenv("S3_ACCESS_KEY_ID", "only-half")
    with pytest.raises(ImproperlyConfiguredEnv, match="S3_SECRET_ACCESS_KEY"):
        media_storage_from_env(url_max_age=60)
    monkeypatch.delenv("S3_ACCESS_KEY_ID")
    with pytest.raises(ImproperlyConfiguredEnv, match="MEDIA_URL_MAX_AGE"):
        media_storage_from_env(url_max_age=8 * 24 * 3600)
    monkeypatch.setenv("S3_ADDRESSING_STYLE", "sideways")
    with pytest.raises(ImproperlyConfiguredEnv, match="S3_ADDRESSING_STYLE"):
        media_storage_from_env(url_max_age=60)
    monkeypatch.setenv("MEDIA_STORAGE", "ftp")
    with pytest.raises(ImproperlyConfiguredEnv, match="MEDIA_STORAGE"):
        media_storage_from_env(url_max_age=60)


def test_empty_s3_variables_mean_their_defaults(monkeypatch):
    """As in a .env copied from .env.example, where the optional ones are listed empty."""
    for name in ("S3_PUBLIC_ENDPOINT_URL", "S3_REGION", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "")
    for name in ("S3_ADDRESSING_STYLE", "S3_LOCATION"):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("MEDIA_STORAGE", "s3")
    monkeypatch.setenv("S3_BUCKET", "media")
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://minio:9000/")
    media = media_storage_from_env(url_max_age=60)
    options = media.storage["OPTIONS"]
    assert (options["region_name"], options["addressing_style"], options["location"]) == ("us-east-1", "path", "")
    assert options["endpoint_url"] == options["public_endpoint_url"] == "http://minio:9000"
    assert "access_key" not in options  # boto3's own credential chain
    assert media.origins == ("http://minio:9000",)


S3_PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": "x" * 20 + "-a-long-random-production-secret-key-value",
    "ALLOWED_HOSTS": "heronry.example",
    "MEDIA_STORAGE": "s3",
    "S3_BUCKET": "heronry-media",
    "S3_ENDPOINT_URL": "http://minio:9000",
    "S3_PUBLIC_ENDPOINT_URL": "https://media.heronry.example",
}


def test_production_settings_with_an_object_store_pass_check_deploy():
    result = _manage("check", "--deploy", "--fail-level", "WARNING", **S3_PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_x_accel_needs_the_file_system_store():
    result = _manage("check", **S3_PRODUCTION, MEDIA_SERVING="x-accel")
    assert result.returncode != 0 and "MEDIA_SERVING=x-accel" in result.stderr


def test_the_store_answers_with_the_type_the_view_decided_not_the_objects_own(bucket, moto, project, annotator):
    clip = add_fake_clips(project, 1)[0]
    clip.video.save("evil.html", ContentFile(HTML))  # stored by S3 as text/html (guessed from the name)
    client = Client()
    client.force_login(annotator)
    status, headers, data = fetch(client.get(clip.video_url)["Location"])
    assert (status, headers["content-type"], data) == (200, "video/mp4", HTML)


def test_admin_uploads_are_checked_by_content_and_stored_in_the_bucket(bucket, moto, project, researcher, tmp_path):
    clip = add_fake_clips(project, 1, ready=False)[0]
    client = admin_login(researcher)
    change = admin_url(Clip, "change", clip.pk)
    refused = client.post(change, {"video": SimpleUploadedFile("clip.mp4", HTML, content_type="video/mp4")})
    assert refused.status_code == 200 and "errorlist" in refused.content.decode()
    response = client.post(
        change,
        {
            "video": SimpleUploadedFile("evil.html", h264_mp4(tmp_path), content_type="text/html"),
            "poster": SimpleUploadedFile("poster.svg", png_bytes(), content_type="image/svg+xml"),
        },
    )
    assert response.status_code == 302, form_errors(response)
    clip.refresh_from_db()
    keys = object_keys(moto, bucket)
    assert f"{default_storage.location}/{clip.video.name}" in keys
    assert f"{default_storage.location}/{clip.poster.name}" in keys
    status, headers, data = fetch(client.get(clip.poster_url)["Location"])
    assert (status, headers["content-type"], data) == (200, "image/png", png_bytes())
