"""Exports researchers load directly: judgments, clips and rankings as JSON lines, CSV and Parquet, streamed."""

from __future__ import annotations

import csv
import io
import json
import uuid
from datetime import datetime

import pyarrow.parquet as pq
import pytest
from django.conf import settings as django_settings
from django.db import connection
from django.db.models import QuerySet
from django.http import StreamingHttpResponse

from labeling import exports
from labeling.models import Clip, FactorRanking, Judgment
from tests.conftest import api_client_for

CHOICES = [("left", False), ("left", True), ("right", False), ("right", True), ("equal", False), ("cant_tell", True)]


@pytest.fixture
def judged(project_with_queries, annotator, annotator2):
    queries = list(project_with_queries.queries.order_by("id"))
    for i, (choice, swapped) in enumerate(CHOICES):
        Judgment.objects.create(
            query=queries[i],
            annotator=annotator if i % 2 else annotator2,
            choice=choice,
            swapped=swapped,
            time_spent_ms=None if i == 3 else 1000 + i,
            client_id=uuid.uuid4(),
        )
    return project_with_queries


def expected_judgments(project) -> list[dict]:
    return [
        {
            "id": j.pk,
            "query": j.query_id,
            "source": j.query.source,
            "clip_a": j.query.clip_a_id,
            "clip_b": j.query.clip_b_id,
            "annotator": j.annotator.username,
            "choice": j.choice,
            "swapped": j.swapped,
            "preferred_clip": j.preferred_clip_id,
            "target_a": j.target_a,
            "time_spent_ms": j.time_spent_ms,
            "client_id": str(j.client_id),
            "created_at": j.created_at,
            "excluded_at": j.excluded_at,
            "exclusion_reason": j.exclusion_reason,
        }
        for j in Judgment.objects.filter(query__project=project).order_by("id")
    ]


def download(user, project, what: str, fmt: str):
    response = api_client_for(user).get(f"/api/v1/projects/{project.slug}/export/{what}?format={fmt}")
    assert response.status_code == 200, response.content
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == exports.CONTENT_TYPES[fmt]
    assert response["Content-Disposition"] == f'attachment; filename="{project.slug}-{what}.{fmt}"'
    return b"".join(response.streaming_content)


def load(body: bytes, fmt: str) -> list[dict]:
    if fmt == "jsonl":
        return [json.loads(line) for line in body.decode().splitlines()]
    if fmt == "csv":
        return list(csv.DictReader(io.StringIO(body.decode())))
    return pq.read_table(io.BytesIO(body)).to_pylist()


def as_text(row: dict) -> dict:
    """What CSV gives back: every value as text, None as empty."""
    return {
        k: "" if v is None else v.isoformat() if isinstance(v, datetime) else str(v) if not isinstance(v, str) else v
        for k, v in row.items()
    }


def same_times(a, b) -> bool:
    return datetime.fromisoformat(a) == b if isinstance(a, str) else a == b


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_judgments_load_back_with_their_consumer(judged, researcher, fmt):
    expected = expected_judgments(judged)
    assert {e["preferred_clip"] is None for e in expected} == {True, False}
    assert [e["target_a"] for e in expected][4:] == [0.5, None]
    rows = load(download(researcher, judged, "judgments", fmt), fmt)
    assert len(rows) == len(CHOICES)
    for row, want in zip(rows, expected, strict=True):
        assert list(row) == [c.name for c in exports.JUDGMENT_COLUMNS]
        assert same_times(row.pop("created_at"), want.pop("created_at"))
        assert row == (as_text(want) if fmt == "csv" else want)


def test_judgment_csv_header_and_bad_format(judged, researcher):
    lines = download(researcher, judged, "judgments", "csv").decode().splitlines()
    assert lines[0].startswith("id,query,source") and len(lines) == len(CHOICES) + 1
    bad = api_client_for(researcher).get(f"/api/v1/projects/{judged.slug}/export/judgments?format=xml")
    assert bad.status_code == 400 and bad.json()["error"]["fields"]["format"]


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_clips_carry_lineage_true_return_and_factor_totals(project_with_queries, researcher, fmt):
    rows = load(download(researcher, project_with_queries, "clips", fmt), fmt)
    clips = list(Clip.objects.filter(project=project_with_queries).select_related("rollout").order_by("id"))
    assert len(rows) == len(clips) == 8
    keys = list(project_with_queries.factors.order_by("position", "id").values_list("key", flat=True))
    assert keys, "the fixture project has factors"
    for row, clip in zip(rows, clips, strict=True):
        want = {
            "id": clip.pk,
            "rollout": clip.rollout_id,
            "run": clip.rollout.run,
            "policy": clip.rollout.policy,
            "iteration": clip.iteration,
            "start": clip.start,
            "length": clip.length,
            "true_return": clip.true_return,
            **{f"factor_{k}": clip.factor_totals.get(k) for k in keys},
        }
        assert same_times(row.pop("created_at"), clip.created_at)
        if fmt == "csv":
            assert row == as_text(want)
        else:
            assert row == want


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_rankings_export_every_ranking(project_with_queries, researcher, annotator, annotator2, fmt):
    keys = list(project_with_queries.factors.values_list("key", flat=True))
    made = [
        FactorRanking.objects.create(project=project_with_queries, annotator=a, groups=[keys], sigmas={}, comment=c)
        for a, c in [(annotator, "first"), (annotator2, 'with "quotes", commas\nand a newline'), (annotator, "")]
    ]
    rows = load(download(researcher, project_with_queries, "rankings", fmt), fmt)
    assert [r["id"] for r in rows] == [str(m.pk) if fmt == "csv" else m.pk for m in made]
    assert [r["comment"] for r in rows] == [m.comment for m in made]
    # JSON lines nest the groups; CSV and Parquet carry them as JSON text.
    assert [r["groups"] if fmt == "jsonl" else json.loads(r["groups"]) for r in rows] == [[keys]] * 3
    assert [r["annotator"] for r in rows] == ["anna", "ben", "anna"]


def test_parquet_carries_hugging_face_features(judged, researcher):
    table = pq.read_table(io.BytesIO(download(researcher, judged, "judgments", "parquet")))
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert list(features) == [c.name for c in exports.JUDGMENT_COLUMNS]
    assert features["created_at"] == {"dtype": "timestamp[us, tz=UTC]", "_type": "Value"}
    assert str(table.schema.field("created_at").type) == "timestamp[us, tz=UTC]"


@pytest.mark.parametrize("what", ["judgments", "clips", "rankings", "preferences"])
def test_parquet_loads_with_hugging_face_datasets(judged, researcher, annotator, tmp_path, what):
    """Every Parquet export loads with ``datasets`` (a dev dependency, pinned in pyproject.toml) and keeps its
    types; skipped where it is not installed."""
    datasets = pytest.importorskip("datasets")
    from trainer.preference_building import PreferenceParams, preference_set_build

    keys = list(judged.factors.values_list("key", flat=True))
    FactorRanking.objects.create(project=judged, annotator=annotator, groups=[keys], sigmas={}, comment="")
    params = PreferenceParams(sources="judgments")
    preference_set = preference_set_build(project=judged, params=params, report=lambda *a: None)
    response = api_client_for(researcher).get(f"/api/v1/projects/{judged.slug}/export/{what}?format=parquet")
    assert response.status_code == 200
    path = tmp_path / f"{what}.parquet"
    path.write_bytes(b"".join(response.streaming_content) if response.streaming else response.getvalue())
    ds = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    if what == "judgments":
        assert ds.num_rows == len(CHOICES)
        assert ds.features["created_at"].dtype == "timestamp[us, tz=UTC]"
        assert ds["choice"] == [c for c, _ in CHOICES]
    elif what == "clips":
        assert ds.num_rows == Clip.objects.filter(project=judged).count()
        assert ds.features["true_return"].dtype == "float64" and ds.features["id"].dtype == "int64"
    elif what == "rankings":
        assert ds.num_rows == 1 and json.loads(ds["groups"][0]) == [keys]
    else:
        assert ds.num_rows == preference_set.n_pairs == 5  # every judgment but "can't tell" (equal: 0.5)
        assert ds.features["target"].dtype == "float32" and ds["origin"] == ["human"] * 5


def test_only_researchers_export_clips_and_rankings(project_with_queries, annotator):
    for what in ("clips", "rankings"):
        response = api_client_for(annotator).get(f"/api/v1/projects/{project_with_queries.slug}/export/{what}")
        assert response.status_code in (403, 404)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_exports_iterate_the_queryset_in_chunks_never_all_at_once(judged, researcher, monkeypatch, fmt):
    """Rows come from QuerySet.iterator (a server-side cursor on PostgreSQL), never from a list of the result;
    the body leaves in several chunks."""
    chunk_sizes = []
    real_iterator = QuerySet.iterator

    def iterator(self, chunk_size=None):
        chunk_sizes.append(chunk_size)
        return real_iterator(self, chunk_size=chunk_size)

    def fetch_all(self):
        raise AssertionError("an export evaluated a whole queryset")

    monkeypatch.setattr(exports, "TEXT_BATCH", 2)
    monkeypatch.setattr(exports, "CSV_BATCH", 2)
    monkeypatch.setattr(exports, "DB_CHUNK", 2)
    monkeypatch.setattr(exports, "PARQUET_ROWS", 2)
    monkeypatch.setattr(QuerySet, "iterator", iterator)
    response = api_client_for(researcher).get(f"/api/v1/projects/{judged.slug}/export/judgments?format={fmt}")
    monkeypatch.setattr(QuerySet, "_fetch_all", fetch_all)
    chunks = list(response.streaming_content)
    assert chunk_sizes == [2]
    assert len(chunks) >= 3
    assert len(load(b"".join(chunks), fmt)) == len(CHOICES)


@pytest.mark.skipif(
    "postgresql" not in django_settings.DATABASES["default"]["ENGINE"], reason="needs PostgreSQL (server cursors)"
)
def test_postgresql_streams_from_a_server_side_cursor_without_hold(judged, researcher, monkeypatch):
    monkeypatch.setattr(exports, "TEXT_BATCH", 2)
    response = api_client_for(researcher).get(f"/api/v1/projects/{judged.slug}/export/judgments?format=jsonl")
    stream = iter(response.streaming_content)
    first = next(stream)
    with connection.cursor() as cursor:
        cursor.execute("SELECT is_holdable, statement FROM pg_cursors")
        cursors = cursor.fetchall()
    assert len(cursors) == 1 and cursors[0][0] is False and "labeling_judgment" in cursors[0][1]
    rest = b"".join(stream)
    assert len(load(first + rest, "jsonl")) == len(CHOICES)
