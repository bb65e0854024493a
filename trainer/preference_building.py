"""Build an immutable PreferenceSet from a project's current factor rankings (HERON) and/or human judgments."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from django.core.files.base import ContentFile

from labeling.files import store_file
from labeling.models import Clip, Judgment, Project
from labeling.rankings import current_rankings

from .core import heron
from .models import PreferenceSet

COLUMNS = ["clip_a", "clip_b", "target", "weight", "origin", "level", "annotator"]


@dataclass(frozen=True)
class PreferenceParams:
    """How a preference set is built. Stored with the set."""

    sources: str = "auto"
    """"rankings", "judgments", "both", or "auto" (whatever the project has)."""
    cap: int = 200_000
    """All pairs of the clip pool while n(n-1)/2 <= cap, else a uniform sample of cap distinct pairs."""
    margin_scope: str = "pool"
    """Standard deviations for margins over the whole pool ("pool") or per sampled batch ("batch")."""
    pair_sampling: str = "all"
    """"all" (capped, above) or "batch": the reference's 16-clip batches, all 120 pairs each."""
    batches: int = 1000
    """Number of batches in batch sampling."""
    keep_ties: bool = False
    """Keep pairs no level decides, as 0.5 targets (the reference drops them)."""
    level_weight_alpha: float = 1.0
    """Loss weight α^(L-1-ℓ) for a pair decided at level ℓ of L; 1 = off."""
    seed: int = 0
    """Seeds pair sampling."""
    reward_config: dict | None = None
    """RewardModelConfig overrides for the training that follows (a retrain run)."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> PreferenceParams:
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown build_preferences parameters: {sorted(unknown)}")
        params = cls(**raw)
        if params.sources not in ("auto", "rankings", "judgments", "both"):
            raise ValueError("sources must be auto, rankings, judgments or both")
        if params.margin_scope not in ("pool", "batch") or params.pair_sampling not in ("all", "batch"):
            raise ValueError("margin_scope must be pool or batch; pair_sampling all or batch")
        if params.margin_scope == "batch" and params.pair_sampling != "batch":
            raise ValueError("margin_scope=batch needs pair_sampling=batch")
        return params


def _heron_rows(project: Project, params: PreferenceParams) -> tuple[dict[str, np.ndarray], list[dict]]:
    factors = list(project.factors.order_by("position", "id"))
    keys = [f.key for f in factors]
    rankings = list(current_rankings(project).select_related("annotator"))
    clips = list(Clip.objects.filter(project=project).order_by("id").values_list("id", "factor_totals"))
    if not rankings or len(clips) < 2:
        return {}, []
    clip_ids = np.array([c[0] for c in clips], dtype=np.int64)
    totals = np.array([[c[1][k] for k in keys] for c in clips], dtype=np.float64)
    default_sigmas = np.array([f.sigma for f in factors], dtype=np.float64)
    heron_rankings = []
    used = []
    for ranking in rankings:
        sigmas = default_sigmas.copy()
        for key, value in ranking.sigmas.items():
            sigmas[keys.index(key)] = value
        levels = [tuple(keys.index(k) for k in group) for group in ranking.groups]
        heron_rankings.append(heron.Ranking.from_levels(levels, sigmas=sigmas))
        used.append(
            {
                "id": ranking.pk,
                "annotator": ranking.annotator.username,
                "groups": ranking.groups,
                "sigmas": {k: float(s) for k, s in zip(keys, sigmas, strict=True)},
            }
        )
    rng = np.random.default_rng(params.seed)
    batch_ids = None
    if params.pair_sampling == "batch":
        pairs, batch_ids = heron.batch_pairs(len(clips), n_batches=params.batches, rng=rng)
    else:
        pairs = heron.sample_pairs(len(clips), cap=params.cap, rng=rng)
    labels = heron.label_pairs(
        totals,
        pairs,
        rankings=heron_rankings,
        signs=np.array([f.direction for f in factors], dtype=np.float64),
        sigmas=default_sigmas,
        margin_scope="batch" if params.margin_scope == "batch" else "pool",
        batch_ids=batch_ids,
        keep_ties=params.keep_ties,
        level_weight_alpha=params.level_weight_alpha,
    )
    n = len(labels.target)
    rows: dict[str, np.ndarray] = {
        "clip_a": clip_ids[labels.pairs[:, 0]],
        "clip_b": clip_ids[labels.pairs[:, 1]],
        "target": labels.target.astype(np.float32),
        "weight": labels.weight.astype(np.float32),
        "origin": np.full(n, "heron", dtype=object),
        "level": labels.level.astype(np.int16),
        "annotator": np.full(n, ",".join(r["annotator"] for r in used), dtype=object),
    }
    return rows, used


def _human_rows(project: Project) -> dict[str, np.ndarray]:
    judgments = [
        j
        # A judgment a researcher marked wrong (disagreement review) never becomes a training label.
        for j in Judgment.objects.filter(query__project=project, excluded_at__isnull=True)
        .select_related("query", "annotator")
        .order_by("id")
        if j.target_a is not None
    ]
    if not judgments:
        return {}
    return {
        "clip_a": np.array([j.query.clip_a_id for j in judgments], dtype=np.int64),
        "clip_b": np.array([j.query.clip_b_id for j in judgments], dtype=np.int64),
        "target": np.array([j.target_a for j in judgments], dtype=np.float32),
        "weight": np.ones(len(judgments), dtype=np.float32),
        "origin": np.full(len(judgments), "human", dtype=object),
        "level": np.full(len(judgments), -1, dtype=np.int16),
        "annotator": np.array([j.annotator.username for j in judgments], dtype=object),
    }


Report = Callable[[float, str], None]


def preference_set_build(
    *, project: Project, params: PreferenceParams, report: Report, run: Any = None
) -> PreferenceSet:
    """Label pairs from the project's current rankings (HERON) and/or judgments into a new, immutable set."""
    sources = params.sources
    if sources == "auto":
        has_rankings = project.rankings.exists()
        has_judgments = Judgment.objects.filter(query__project=project, excluded_at__isnull=True).exists()
        sources = "both" if has_rankings and has_judgments else ("rankings" if has_rankings else "judgments")
    parts: list[dict[str, np.ndarray]] = []
    used: list[dict] = []
    report(0.1, "Labelling pairs")
    if sources in ("rankings", "both"):
        heron_rows, used = _heron_rows(project, params)
        if heron_rows:
            parts.append(heron_rows)
    if sources in ("judgments", "both"):
        human = _human_rows(project)
        if human:
            parts.append(human)
    if not parts or sum(len(p["target"]) for p in parts) == 0:
        raise ValueError(f"no preferences to build from ({sources}): submit a ranking or judge some pairs first")
    columns = {name: np.concatenate([p[name] for p in parts]) for name in COLUMNS}
    table = pa.table(
        {
            "clip_a": pa.array(columns["clip_a"], pa.int64()),
            "clip_b": pa.array(columns["clip_b"], pa.int64()),
            "target": pa.array(columns["target"], pa.float32()),
            "weight": pa.array(columns["weight"], pa.float32()),
            "origin": pa.array(columns["origin"].tolist(), pa.string()),
            "level": pa.array(columns["level"], pa.int16()),
            "annotator": pa.array(columns["annotator"].tolist(), pa.string()),
        }
    )
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    raw = buffer.getvalue()
    origins, counts = np.unique(columns["origin"].astype(str), return_counts=True)
    report(0.8, f"Labelled {len(table)} pairs")
    preference_set = PreferenceSet(
        project=project,
        run=run,
        sources=sources,
        settings=asdict(params),
        rankings=used,
        counts={str(o): int(c) for o, c in zip(origins, counts, strict=True)},
        n_pairs=len(table),
        checksum=hashlib.sha256(raw).hexdigest(),
    )
    store_file(preference_set.file, f"{project.slug}-preferences.parquet", ContentFile(raw))  # whole or not at all
    preference_set.save()
    return preference_set


def read_preference_set(preference_set: PreferenceSet) -> pa.Table:
    with preference_set.file.open("rb") as handle:
        raw = handle.read()
    if hashlib.sha256(raw).hexdigest() != preference_set.checksum:
        raise ValueError(f"preference set {preference_set.pk}: file does not match its checksum")
    return pq.read_table(io.BytesIO(raw))
