"""Presigned URLs for the media view: when the media storage can make them, and with which response headers."""

from __future__ import annotations

import hashlib
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.files.storage import FileSystemStorage, Storage


def signs_urls(storage: Storage) -> bool:
    """True if ``storage.url()`` gives short-lived presigned URLs that open private objects."""
    if isinstance(storage, FileSystemStorage):
        return False
    from storages.backends.s3 import S3Storage  # only here: file-system deployments never import boto3

    return (
        isinstance(storage, S3Storage)
        and bool(storage.querystring_auth)
        and not storage.custom_domain  # a custom domain's URLs are unsigned (unless CloudFront keys are set)
    )


def presigned_url(storage: Storage, name: str, *, content_type: str) -> str | None:
    """A presigned GET URL for one object that makes the store answer with ``content_type``, inline; None when
    the storage cannot sign URLs (the caller then streams the file itself).

    The type is forced on the store's response, whatever the object was stored with, so a video is always
    ``video/mp4`` and a poster the image type its bytes show. Lifetime: ``MEDIA_URL_MAX_AGE``.

    The same URL is handed out again for half its lifetime (so it always has at least that half left): a fresh
    signature per request would give every visit a new URL, and the browser's cache, which the player's
    preloading of the next pair relies on, would never hit.
    """
    if not signs_urls(storage):
        return None
    max_age = int(settings.MEDIA_URL_MAX_AGE)
    signer: Any = storage  # an S3Storage (django-storages ships no type hints): its url() takes these arguments
    identity = "\0".join(map(str, (signer.bucket_name, signer.location, name, content_type, max_age)))
    key = "heronry:presigned:" + hashlib.sha256(identity.encode()).hexdigest()
    url = cache.get(key)
    if url is None:
        parameters = {
            "ResponseContentType": content_type,
            "ResponseContentDisposition": "inline",
            "ResponseCacheControl": f"private, max-age={max_age // 2}",
        }
        url = signer.url(name, parameters=parameters, expire=max_age)
        cache.set(key, url, timeout=max_age // 2)
    return str(url)
