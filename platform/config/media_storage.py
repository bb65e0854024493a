"""Where media live: ``STORAGES["default"]`` from MEDIA_STORAGE and the S3_* variables (see .env.example).

``filesystem`` (the default) keeps every artefact under MEDIA_ROOT: fine for one host. ``s3`` puts them in a
bucket of an S3-compatible object store (AWS S3, MinIO, Ceph, …) through django-storages, so the web process and
workers on other hosts share them without a shared folder. The bucket stays private: browsers get short-lived
presigned URLs, only after Django's own permission check (labeling/media.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from .env import ImproperlyConfiguredEnv, env_bool, env_choice, env_str

FILESYSTEM_BACKEND = "django.core.files.storage.FileSystemStorage"
S3_BACKEND = "labeling.s3_storage.MediaS3Storage"
# SigV4 presigned URLs live at most seven days.
MAX_PRESIGNED_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class MediaStorage:
    kind: str  # "filesystem" | "s3"
    storage: dict[str, object]  # the STORAGES["default"] entry
    origins: tuple[str, ...]  # where browsers fetch media from besides this site (for the CSP)


def media_storage_from_env(*, url_max_age: int) -> MediaStorage:
    kind = env_choice("MEDIA_STORAGE", "filesystem", {"filesystem", "s3"})
    if kind == "filesystem":
        return MediaStorage(kind, {"BACKEND": FILESYSTEM_BACKEND}, ())
    return _s3(url_max_age)


def _s3(url_max_age: int) -> MediaStorage:
    bucket = env_str("S3_BUCKET", "")
    if not bucket:
        raise ImproperlyConfiguredEnv("MEDIA_STORAGE=s3 needs S3_BUCKET")
    # Empty means "the default" for every S3_* variable, as .env.example lists them empty.
    endpoint = _url("S3_ENDPOINT_URL")
    public_endpoint = _url("S3_PUBLIC_ENDPOINT_URL")
    if public_endpoint and not endpoint:
        raise ImproperlyConfiguredEnv("S3_PUBLIC_ENDPOINT_URL needs S3_ENDPOINT_URL (on AWS, leave both empty)")
    public_endpoint = public_endpoint or endpoint
    region = env_str("S3_REGION", "") or "us-east-1"
    # Path style for self-hosted stores (MinIO serves http://host:9000/bucket/key); AWS prefers virtual hosts.
    addressing = env_str("S3_ADDRESSING_STYLE", "") or ("path" if endpoint else "virtual")
    if addressing not in {"path", "virtual"}:
        raise ImproperlyConfiguredEnv(f"S3_ADDRESSING_STYLE={addressing!r} must be one of ['path', 'virtual']")
    querystring_auth = env_bool("S3_QUERYSTRING_AUTH", True)
    if querystring_auth and url_max_age > MAX_PRESIGNED_SECONDS:
        raise ImproperlyConfiguredEnv(
            f"MEDIA_URL_MAX_AGE={url_max_age} is longer than an S3 presigned URL may live ({MAX_PRESIGNED_SECONDS})"
        )
    access_key, secret_key = env_str("S3_ACCESS_KEY_ID", ""), env_str("S3_SECRET_ACCESS_KEY", "")
    if bool(access_key) != bool(secret_key):
        raise ImproperlyConfiguredEnv("set both S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY, or neither")
    options: dict[str, object] = {
        "bucket_name": bucket,
        "region_name": region,
        "endpoint_url": endpoint or None,
        "public_endpoint_url": public_endpoint or None,
        "addressing_style": addressing,
        "signature_version": "s3v4",
        "location": env_str("S3_LOCATION", "").strip("/"),
        # Artefact names are made unique by Django (a suffix), never by overwriting: two preference sets of one
        # project share a base name, and a retried step must not replace what a reader may be using.
        "file_overwrite": False,
        # Objects stay private (the bucket's policy); readers get presigned URLs, valid this long.
        "default_acl": None,
        "querystring_auth": querystring_auth,
        "querystring_expire": url_max_age,
        # A file opened for reading is downloaded whole; past this size into a temporary file, not memory (the
        # default, 0, keeps every download in memory: replay buffers can be large).
        "max_memory_size": 16 * 1024 * 1024,
    }
    if access_key:  # else boto3's own chain: AWS_* variables, an instance role, ~/.aws
        options.update(access_key=access_key, secret_key=secret_key)
    origins = (_origin(public_endpoint, bucket, region, addressing),) if querystring_auth else ()
    return MediaStorage("s3", {"BACKEND": S3_BACKEND, "OPTIONS": options}, origins)


def _url(name: str) -> str:
    value = env_str(name, "").strip()
    if value and (urlsplit(value).scheme not in {"http", "https"} or not urlsplit(value).netloc):
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not an http(s) URL")
    return value.rstrip("/")


def _origin(endpoint: str, bucket: str, region: str, addressing: str) -> str:
    """The origin of the presigned URLs browsers are redirected to (pages' CSP must allow it for img and video).

    Asked of botocore itself (it signs offline, with dummy keys): which host it names depends on the region, the
    addressing style and whether the endpoint is an IP address, and guessing would drift from what it does.
    """
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint or None,
        aws_access_key_id="settings",
        aws_secret_access_key="settings",
        config=Config(signature_version="s3v4", s3={"addressing_style": addressing}),
    )
    url = urlsplit(client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "x"}, ExpiresIn=1))
    return f"{url.scheme}://{url.netloc}"
