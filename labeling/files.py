"""Writing artefacts to storage so that no partly written file is ever visible under its name."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from django.core.files import File
from django.core.files.storage import FileSystemStorage
from django.db.models.fields.files import FieldFile


def store_file(field_file: FieldFile, name: str, content: File) -> None:
    """``field_file.save(name, content, save=False)``, except that no partly written file is ever visible.

    Django's FileSystemStorage writes in place, chunk by chunk: a worker killed or a disk filled mid-write
    would leave a truncated file under the artefact's name. Here the bytes go to a hidden temporary file in the
    destination folder and are linked under the final (unused) name only once complete. Other storages
    (object stores) write an object whole anyway.
    """
    storage = field_file.storage
    if not isinstance(storage, FileSystemStorage):
        field_file.save(name, content, save=False)
        return
    max_length = field_file.field.max_length
    name = storage.get_available_name(field_file.field.generate_filename(field_file.instance, name), max_length)
    target = Path(storage.path(name))
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FileExistsError(f"{target.parent} exists and is not a directory") from None
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as out:
            for chunk in content.chunks():
                out.write(chunk)
        os.chmod(temporary, storage.file_permissions_mode or 0o644)  # mkstemp makes it private
        while True:
            try:
                os.link(temporary, target)  # atomic, and never replaces a file someone else stored
                break
            except FileExistsError:
                name = storage.get_available_name(name, max_length)
                target = Path(storage.path(name))
            except OSError:  # no hard links on this file system: a rename is atomic too
                os.replace(temporary, target)
                break
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    name = Path(os.path.relpath(target, storage.location)).as_posix()
    field_file.name = name
    setattr(field_file.instance, field_file.field.attname, name)
    field_file._committed = True  # type: ignore[attr-defined]  # as FieldFile.save does
