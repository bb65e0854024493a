"""Content checks for uploaded media: a clip's video must really be an H.264 MP4 and its poster a PNG or JPEG.

Files are judged by what they contain, never by their name or the type the client claims. Each check takes a path
or a file-like object (a Django ``UploadedFile`` included), leaves a file object's position where it was, and
raises ``django.core.exceptions.ValidationError`` with a message fit to show the uploader. Only Django's
``ValidationError`` is used from the framework, so the API and scripts can share these checks with the admin.

The video probe runs the ffmpeg binary that imageio-ffmpeg ships (there is no ffprobe) and reads the stream
description it prints; it never decodes more than the headers and is killed after ``PROBE_TIMEOUT_SECONDS``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError

PROBE_TIMEOUT_SECONDS = 15.0
IMAGE_FORMATS = frozenset({"PNG", "JPEG"})
MAX_IMAGE_SIDE = 8192

# A path (str or os.PathLike) or a binary file object (an open file, io.BytesIO, a Django UploadedFile or File).
FileInput = Any

# ISO base media files start with a box header: 4 bytes of size, then the box type; MP4 opens with "ftyp".
_MP4_MAGIC_OFFSET = 4
_MP4_MAGIC = b"ftyp"
_INPUT_LINE = re.compile(r"^Input #0, (?P<formats>[^ ]+), from ", re.MULTILINE)
_VIDEO_STREAM = re.compile(r"^\s*Stream #0:\d+.*?: Video: (?P<codec>[A-Za-z0-9_]+)", re.MULTILINE)


def _is_path(file: FileInput) -> bool:
    return isinstance(file, str | os.PathLike)


def _head(file: FileInput, size: int) -> bytes:
    if _is_path(file):
        with open(file, "rb") as handle:
            return handle.read(size)
    with _rewound(file):
        return bytes(file.read(size) or b"")


@contextmanager
def _rewound(file: Any) -> Iterator[None]:
    """Read a file object from its start and put its position back afterwards."""
    position = file.tell() if hasattr(file, "tell") else None
    if hasattr(file, "seek"):
        file.seek(0)
    try:
        yield
    finally:
        if position is not None:
            file.seek(position)


@contextmanager
def _as_path(file: FileInput, suffix: str) -> Iterator[str]:
    """A path on disk holding the file's bytes (a temporary copy unless it already has one)."""
    if _is_path(file):
        yield os.fspath(file)
        return
    temporary_path = getattr(file, "temporary_file_path", None)
    if callable(temporary_path):
        yield temporary_path()
        return
    with tempfile.TemporaryDirectory(prefix="heronry-upload-") as folder:
        path = Path(folder) / f"upload{suffix}"
        with _rewound(file), open(path, "wb") as out:
            if hasattr(file, "chunks"):
                for chunk in file.chunks():
                    out.write(chunk)
            else:
                shutil.copyfileobj(file, out)
        yield os.fspath(path)


def _ffmpeg_exe() -> str:
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def probe_video(file: FileInput) -> dict[str, Any]:
    """What ffmpeg says about a file: ``{"formats": [...], "video_codecs": [...]}``; raises on no media at all."""
    with _as_path(file, ".mp4") as path:
        try:
            completed = subprocess.run(  # a fixed binary, no shell, the path one argument
                [_ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "info", "-i", path],
                capture_output=True,
                timeout=PROBE_TIMEOUT_SECONDS,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ValidationError("The video could not be checked in time.", code="video_probe_timeout") from None
    report = completed.stderr.decode("utf-8", errors="replace")
    match = _INPUT_LINE.search(report)
    if match is None:
        raise ValidationError("The file is not a video that can be read.", code="video_unreadable")
    return {
        "formats": match.group("formats").split(","),
        "video_codecs": [m.group("codec").lower() for m in _VIDEO_STREAM.finditer(report)],
    }


def check_video(file: FileInput) -> None:
    """Accept an MP4 whose video stream is H.264 (what every browser plays); raise ValidationError otherwise."""
    if _head(file, 12)[_MP4_MAGIC_OFFSET : _MP4_MAGIC_OFFSET + 4] != _MP4_MAGIC:
        raise ValidationError("The file is not an MP4 video.", code="video_not_mp4")
    info = probe_video(file)
    if "mp4" not in info["formats"]:
        raise ValidationError("The file is not an MP4 video.", code="video_not_mp4")
    codecs = info["video_codecs"]
    if not codecs:
        raise ValidationError("The MP4 file has no video stream.", code="video_no_stream")
    if any(codec != "h264" for codec in codecs):
        raise ValidationError(
            f"The video must be encoded with H.264, not {', '.join(sorted(set(codecs)))}.", code="video_codec"
        )


def check_image(file: FileInput) -> str:
    """Accept a PNG or JPEG image that Pillow verifies and return its format ("PNG" or "JPEG"); raise
    ValidationError otherwise (SVG, HTML, GIF, …)."""
    from PIL import Image

    def inspect(source: Any) -> tuple[str | None, tuple[int, int]]:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as image:
                image_format, size = image.format, image.size
                image.verify()
        return image_format, size

    try:
        if _is_path(file):
            image_format, size = inspect(os.fspath(file))
        else:
            with _rewound(file):
                image_format, size = inspect(file)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ValidationError("The image is too large.", code="image_too_large") from None
    except Exception:  # Pillow raises many types for malformed input: all mean "not an image"
        raise ValidationError("The file is not a PNG or JPEG image.", code="image_invalid") from None
    if image_format not in IMAGE_FORMATS:
        raise ValidationError("The image must be a PNG or a JPEG.", code="image_format")
    if max(size) > MAX_IMAGE_SIDE:
        raise ValidationError(f"The image is larger than {MAX_IMAGE_SIDE} pixels on a side.", code="image_too_large")
    return str(image_format)
