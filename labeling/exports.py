"""Streamed exports: rows come from a database iterator and leave as text chunks, so memory stays constant."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any

from .models import Judgment

JUDGMENT_COLUMNS = [
    "id",
    "query",
    "source",
    "clip_a",
    "clip_b",
    "annotator",
    "choice",
    "swapped",
    "preferred_clip",
    "target_a",
    "time_spent_ms",
    "client_id",
    "created_at",
]


def judgment_row(judgment: Judgment) -> dict[str, Any]:
    query = judgment.query
    return {
        "id": judgment.pk,
        "query": query.pk,
        "source": query.source,
        "clip_a": query.clip_a_id,
        "clip_b": query.clip_b_id,
        "annotator": judgment.annotator.username,
        "choice": judgment.choice,
        "swapped": judgment.swapped,
        "preferred_clip": judgment.preferred_clip_id,
        "target_a": judgment.target_a,
        "time_spent_ms": judgment.time_spent_ms,
        "client_id": str(judgment.client_id),
        "created_at": judgment.created_at.isoformat(),
    }


def as_jsonl(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    for row in rows:
        yield json.dumps(row, separators=(",", ":")) + "\n"


def as_csv(rows: Iterable[dict[str, Any]], columns: list[str]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()
