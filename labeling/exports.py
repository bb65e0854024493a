"""Streamed exports researchers load directly: JSON lines, CSV and Parquet with constant memory.

Rows leave the database as plain tuples (``values_list``, only the columns an export needs) through a server-side
cursor opened inside a transaction, so PostgreSQL streams them instead of materialising a WITH HOLD cursor first.
They are encoded a batch at a time, column by column, and leave as ~64 KiB HTTP chunks (text formats) or as one
Parquet row group per ``PARQUET_ROWS`` rows (the footer comes last). Parquet files carry Hugging Face ``datasets``
features in their schema metadata, so ``datasets.load_dataset("parquet", data_files=...)`` keeps the types.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from django.db import transaction
from django.db.models import DateTimeField, F, Func, QuerySet, UUIDField

from .models import Choice, Clip, FactorRanking, Judgment, Project

Kind = Literal["int", "float", "bool", "str", "uuid", "time", "json"]
FORMATS = ("jsonl", "csv", "parquet")
CONTENT_TYPES = {"jsonl": "application/x-ndjson", "csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
DB_CHUNK = 5000  # rows per fetch from the server-side cursor
TEXT_BATCH = 256  # rows encoded together: ~64 KiB of JSON lines per HTTP chunk
CSV_BATCH = 512  # ~64 KiB of CSV
PARQUET_ROWS = 50_000  # rows per Parquet row group


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind


@dataclass(frozen=True)
class Export:
    """What to stream: the columns, and the rows as tuples in column order (produced lazily)."""

    columns: Sequence[Column]
    rows: Iterable[tuple[Any, ...]]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]


def stream(export: Export, fmt: str) -> Iterator[bytes]:
    if fmt == "jsonl":
        return as_jsonl(export)
    if fmt == "csv":
        return as_csv(export)
    if fmt == "parquet":
        return as_parquet(export)
    raise ValueError(f"unknown export format {fmt!r}")


class IsoUtc(Func):
    """A timestamp as ISO 8601 text in UTC, made by PostgreSQL (``to_char``): its datetime parsing is in Python and
    was two thirds of the cost of reading judgments. Elsewhere the datetime itself; "time" columns take either."""

    template = "%(expressions)s"
    output_field = DateTimeField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        from django.db.models import TextField

        return self.as_sql(
            compiler,
            connection,
            template="to_char(%(expressions)s AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"')",
            output_field=TextField(),
            **extra,
        )


class UuidText(Func):
    """A UUID as text, made by PostgreSQL (psycopg would build a ``uuid.UUID`` per row); elsewhere the UUID."""

    template = "%(expressions)s"
    output_field = UUIDField()

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        from django.db.models import TextField

        return self.as_sql(compiler, connection, template="(%(expressions)s)::text", output_field=TextField(), **extra)


def iso_utc(field: str) -> IsoUtc:
    return IsoUtc(F(field))


def _iso(value: Any) -> str:
    return value if isinstance(value, str) else value.isoformat()


def db_rows(queryset: QuerySet[Any], *fields: str | Func) -> Iterator[tuple[Any, ...]]:
    """``queryset.values_list(*fields)`` streamed in chunks: a server-side cursor inside a transaction (no WITH HOLD
    on PostgreSQL, so the first rows leave before the last are read). Never builds a list of the whole result."""
    with transaction.atomic(using=queryset.db):
        yield from queryset.values_list(*fields).iterator(chunk_size=DB_CHUNK)


def _batches(rows: Iterable[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    it = iter(rows)
    while batch := list(itertools.islice(it, size)):
        yield batch


# --- JSON lines ----------------------------------------------------------------------------------------------


_json_str = functools.lru_cache(maxsize=4096)(json.dumps)  # low-cardinality strings (usernames, choices) repeat


def _json_float(v: float | None) -> str:
    return "null" if v is None or not math.isfinite(v) else repr(v)


_BOOL = {True: "true", False: "false", None: "null"}


def _json_column(kind: Kind, values: Sequence[Any]) -> Iterable[str]:
    if kind == "int":
        return map(str, values) if None not in values else ["null" if v is None else str(v) for v in values]
    if kind == "float":
        return map(_json_float, values)
    if kind == "bool":
        return map(_BOOL.__getitem__, values)
    if kind == "str":
        return map(_json_str, values)
    if kind in ("uuid", "time"):
        return ["null" if v is None else f'"{v if kind == "uuid" else _iso(v)}"' for v in values]
    return [json.dumps(v, separators=(",", ":")) for v in values]


def as_jsonl(export: Export) -> Iterator[bytes]:
    template = "{" + ",".join(f"{json.dumps(c.name)}:%s" for c in export.columns) + "}\n"
    line = template.__mod__
    kinds = [c.kind for c in export.columns]
    for batch in _batches(export.rows, TEXT_BATCH):
        encoded = [_json_column(kind, col) for kind, col in zip(kinds, zip(*batch, strict=True), strict=True)]
        yield "".join(map(line, zip(*encoded, strict=True))).encode()


# --- CSV -----------------------------------------------------------------------------------------------------


def _csv_column(kind: Kind, values: Sequence[Any]) -> Sequence[Any] | Iterable[Any]:
    if kind == "uuid":
        return [None if v is None else str(v) for v in values]
    if kind == "time":
        return [None if v is None else _iso(v) for v in values]
    if kind == "json":
        return [json.dumps(v, separators=(",", ":")) for v in values]
    return values


def as_csv(export: Export) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(export.names)
    kinds = [c.kind for c in export.columns]
    plain = all(k in ("int", "float", "bool", "str") for k in kinds)
    for batch in _batches(export.rows, CSV_BATCH):
        if plain:
            writer.writerows(batch)
        else:
            writer.writerows(
                zip(*(_csv_column(k, col) for k, col in zip(kinds, zip(*batch, strict=True), strict=True)), strict=True)
            )
        yield buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


# --- Parquet -------------------------------------------------------------------------------------------------


class _Drain:
    """A write-only file for pyarrow that hands written bytes to the caller instead of keeping them."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.position = 0
        self.closed = False

    def write(self, data: bytes) -> int:
        chunk = bytes(data)
        self.parts.append(chunk)
        self.position += len(chunk)
        return len(chunk)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def writable(self) -> bool:
        return True

    def take(self) -> bytes:
        data = b"".join(self.parts)
        self.parts.clear()
        return data


def _arrow_type(kind: Kind) -> Any:
    import pyarrow as pa

    return {
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "str": pa.string(),
        "uuid": pa.string(),
        "time": pa.timestamp("us", tz="UTC"),
        "json": pa.string(),
    }[kind]


_HF_DTYPES = {
    "int": "int64",
    "float": "float64",
    "bool": "bool",
    "str": "string",
    "uuid": "string",
    "time": "timestamp[us, tz=UTC]",
    "json": "string",
}


def hf_features(columns: Sequence[Column]) -> dict[str, Any]:
    """The Hugging Face ``datasets`` features of an export (stored in the Parquet schema metadata)."""
    return {c.name: {"dtype": _HF_DTYPES[c.kind], "_type": "Value"} for c in columns}


def arrow_schema(columns: Sequence[Column]) -> Any:
    import pyarrow as pa

    metadata = {"huggingface": json.dumps({"info": {"features": hf_features(columns)}})}
    return pa.schema([pa.field(c.name, _arrow_type(c.kind)) for c in columns], metadata=metadata)


def as_parquet(export: Export) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(export.columns)
    kinds = [c.kind for c in export.columns]
    converters: list[Callable[[Sequence[Any]], Sequence[Any]]] = [
        (lambda col: [None if v is None else str(v) for v in col])
        if k == "uuid"
        else (lambda col: [json.dumps(v, separators=(",", ":")) for v in col])
        if k == "json"
        else (lambda col: col)
        for k in kinds
    ]
    time_type = pa.timestamp("us", tz="UTC")
    sink = _Drain()
    writer = pq.ParquetWriter(sink, schema, compression="zstd")
    try:
        pending: list[Any] = []
        pending_rows = 0
        for batch in _batches(export.rows, DB_CHUNK):
            arrays = [
                # "time" values are ISO text (PostgreSQL) or aware datetimes: Arrow parses either.
                pa.array(col).cast(time_type) if field.type == time_type else pa.array(convert(col), type=field.type)
                for convert, col, field in zip(converters, zip(*batch, strict=True), schema, strict=True)
            ]
            pending.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
            pending_rows += len(batch)
            if pending_rows >= PARQUET_ROWS:
                writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=pending_rows)
                pending, pending_rows = [], 0
                yield sink.take()
        if pending:
            writer.write_table(pa.Table.from_batches(pending, schema=schema), row_group_size=pending_rows)
    finally:
        writer.close()
    yield sink.take()


def from_arrow(table: Any) -> Export:
    """An Arrow table (a stored preference set) as an export, streamed a record batch at a time."""
    import pyarrow as pa

    def kind(t: Any) -> Kind:
        if pa.types.is_integer(t):
            return "int"
        if pa.types.is_floating(t):
            return "float"
        if pa.types.is_boolean(t):
            return "bool"
        if pa.types.is_timestamp(t):
            return "time"
        if pa.types.is_string(t) or pa.types.is_large_string(t):
            return "str"
        return "json"

    def rows() -> Iterator[tuple[Any, ...]]:
        for batch in table.to_batches(max_chunksize=10_000):
            yield from zip(*(column.to_pylist() for column in batch.columns), strict=True)

    return Export([Column(f.name, kind(f.type)) for f in table.schema], rows())


# --- What each export contains -------------------------------------------------------------------------------

JUDGMENT_COLUMNS = [
    Column("id", "int"),
    Column("query", "int"),
    Column("source", "str"),
    Column("clip_a", "int"),
    Column("clip_b", "int"),
    Column("annotator", "str"),
    Column("choice", "str"),
    Column("swapped", "bool"),
    Column("preferred_clip", "int"),
    Column("target_a", "float"),
    Column("time_spent_ms", "int"),
    Column("client_id", "uuid"),
    Column("created_at", "time"),
    # Marked wrong in the disagreement review: kept in this raw export, left out of preference sets.
    Column("excluded_at", "time"),
    Column("exclusion_reason", "str"),
]


def _judgment_rows(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
    left, right, equal = Choice.LEFT.value, Choice.RIGHT.value, Choice.EQUAL.value
    for pk, query, source, clip_a, clip_b, annotator, choice, swapped, spent, client_id, created, *excluded in rows:
        # displayed_pair: clip_b is on the left when swapped; preferred/target_a as Judgment's properties.
        if choice == left:
            preferred = clip_b if swapped else clip_a
        elif choice == right:
            preferred = clip_a if swapped else clip_b
        else:
            preferred = None
        target = 0.5 if choice == equal else None if preferred is None else 1.0 if preferred == clip_a else 0.0
        yield (pk, query, source, clip_a, clip_b, annotator, choice, swapped, preferred, target, spent, client_id,
               created, *excluded)  # fmt: skip


def judgments(project: Project) -> Export:
    queryset = Judgment.objects.filter(query__project=project).order_by("id")
    fields = ("id", "query_id", "query__source", "query__clip_a_id", "query__clip_b_id", "annotator__username",
              "choice", "swapped", "time_spent_ms", UuidText(F("client_id")), iso_utc("created_at"),
              iso_utc("excluded_at"), "exclusion_reason")  # fmt: skip
    return Export(JUDGMENT_COLUMNS, _judgment_rows(db_rows(queryset, *fields)))


def clips(project: Project) -> Export:
    """Clips with their lineage (rollout, its policy, run and iteration), true return and factor totals."""
    keys = list(project.factors.order_by("position", "id").values_list("key", flat=True))
    columns = [
        Column("id", "int"),
        Column("rollout", "int"),
        Column("run", "int"),
        Column("policy", "str"),
        Column("iteration", "int"),
        Column("start", "int"),
        Column("length", "int"),
        Column("true_return", "float"),
        *(Column(f"factor_{key}", "float") for key in keys),
        Column("created_at", "time"),
    ]
    queryset = Clip.objects.filter(project=project).order_by("id")
    fields = ("id", "rollout_id", "rollout__run", "rollout__policy", "iteration", "start", "length", "true_return",
              "factor_totals", iso_utc("created_at"))  # fmt: skip

    def rows() -> Iterator[tuple[Any, ...]]:
        for *head, totals, created in db_rows(queryset, *fields):
            totals = totals or {}
            yield (*head, *(_float_or_none(totals.get(k)) for k in keys), created)

    return Export(columns, rows())


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


RANKING_COLUMNS = [
    Column("id", "int"),
    Column("annotator", "str"),
    Column("groups", "json"),
    Column("sigmas", "json"),
    Column("comment", "str"),
    Column("created_at", "time"),
]


def rankings(project: Project) -> Export:
    queryset = FactorRanking.objects.filter(project=project).order_by("id")
    fields = ("id", "annotator__username", "groups", "sigmas", "comment", iso_utc("created_at"))
    return Export(RANKING_COLUMNS, db_rows(queryset, *fields))
