"""The S3 backend settings name for MEDIA_STORAGE=s3 (platform/config/media_storage.py).

Servers and browsers may reach the object store under different names (``http://minio:9000`` inside docker
compose, ``https://media.example.org`` outside). A SigV4 signature covers the host, so a URL for browsers must be
signed for the name browsers use: :class:`MediaS3Storage` signs its URLs for ``public_endpoint_url`` when one is
set, and talks to ``endpoint_url`` for everything else. (django-storages' ``custom_domain`` is no substitute: it
turns signing off, which would hand out permanent public URLs to private media.)

A module of its own so that only S3 deployments import boto3.
"""

from __future__ import annotations

from typing import Any

from storages.backends.s3 import S3Storage


class MediaS3Storage(S3Storage):
    """django-storages' S3Storage, plus ``public_endpoint_url``: the endpoint named in presigned URLs."""

    def get_default_settings(self) -> dict[str, Any]:
        return {**super().get_default_settings(), "public_endpoint_url": None}

    def url(self, name: str, parameters: dict | None = None, expire: int | None = None, http_method: str | None = None):
        if not self.public_endpoint_url or self.public_endpoint_url == self.endpoint_url:
            return super().url(name, parameters=parameters, expire=expire, http_method=http_method)
        return self._public_signer.url(name, parameters=parameters, expire=expire, http_method=http_method)

    @property
    def _public_signer(self) -> S3Storage:
        # Signing is local computation: this twin never sends a request to the public endpoint.
        signer = self.__dict__.get("_public_signer_instance")
        if signer is None:
            options = {key: getattr(self, key) for key in super().get_default_settings()}
            signer = S3Storage(**{**options, "endpoint_url": self.public_endpoint_url})
            self.__dict__["_public_signer_instance"] = signer
        return signer
