"""An S3-compatible server for tests (moto), and the settings that point Heronry's media storage at it."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator

import boto3

from config.media_storage import media_storage_from_env

REGION = "us-east-1"
# moto accepts any keys; real ones must never appear in tests.
ACCESS_KEY, SECRET_KEY = "heronry-test", "heronry-test-secret"


def s3_env(endpoint: str, bucket: str, *, location: str = "") -> dict[str, str]:
    """The environment variables of a process whose media live in ``bucket`` (as .env.example documents them)."""
    return {
        "MEDIA_STORAGE": "s3",
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": endpoint,
        "S3_REGION": REGION,
        "S3_ACCESS_KEY_ID": ACCESS_KEY,
        "S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "S3_LOCATION": location,
    }


def client(endpoint: str):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY
    )


def create_bucket(endpoint: str, name: str | None = None) -> str:
    name = name or f"heronry-{uuid.uuid4().hex[:12]}"
    client(endpoint).create_bucket(Bucket=name)
    return name


def object_keys(endpoint: str, bucket: str, prefix: str = "") -> list[str]:
    paginator = client(endpoint).get_paginator("list_objects_v2")
    return [
        item["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix) for item in page.get("Contents", ())
    ]


def use_s3_media(settings, monkeypatch, endpoint: str, bucket: str, *, location: str = "") -> None:
    """Point this test process's default storage at the bucket, through the same parsing settings.py uses."""
    for name, value in s3_env(endpoint, bucket, location=location).items():
        monkeypatch.setenv(name, value)
    media = media_storage_from_env(url_max_age=settings.MEDIA_URL_MAX_AGE)
    settings.STORAGES = {**settings.STORAGES, "default": media.storage}  # Django resets default_storage


@contextlib.contextmanager
def threaded_moto_server() -> Iterator[str]:
    """moto's S3 in a thread of this process, on a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    from tests.integration.servers import free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
