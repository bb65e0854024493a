"""Disagreement review: judged pairs where the project's reward ensemble confidently disagrees with the humans.

The ensemble's side is computed once per reward model (``review_scores_compute``, called when a model is trained,
or for pairs judged since through ``review_scores_refresh``) and stored as ``ReviewScore`` rows. The humans' side
is read live from the judgments that count (not marked wrong), so the page always reflects the latest review
actions. Ordering, pagination and the dashboard's count are one queryset: ``review_rows``.

Disagreement, in [-1, 1]: ``(p_human − ½)·(½ − p_model)·4 − spread``. It is positive only when the humans'
majority and the model pick different clips, largest when both are sure, and the ensemble's spread (the
members' own disagreement) takes away from it: a pair the model is unsure about is not a confident dispute.
"""

from __future__ import annotations

import logging
import uuid
from array import array
from dataclasses import dataclass
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import Avg, Case, Count, F, FloatField, Q, QuerySet, Value, When
from django.db.models.functions import Abs

from labeling import selectors as labeling_selectors
from labeling.models import Choice, Clip, Judgment, Membership, Project, Query, QueryStatus

from .core.reward import RewardEnsemble
from .models import ReviewScore, RewardModel, RewardModelStatus

logger = logging.getLogger(__name__)

REVIEW_MIN_DISAGREEMENT = 0.25
"""A pair is "to review" when its disagreement reaches this: e.g. unanimous humans and the model at P ≤ 0.3
for their clip with a small spread."""
PAGE_SIZE = 20


def latest_ready_model(project: Project) -> RewardModel | None:
    return RewardModel.objects.filter(project=project, status=RewardModelStatus.READY).order_by("-version").first()


def _load(reward_model: RewardModel) -> RewardEnsemble:
    from .core.reward import from_bytes

    with reward_model.weights.open("rb") as weights, reward_model.metadata.open("rb") as metadata:
        return from_bytes(weights.read(), metadata.read().decode()).model


def _judged_queries(project: Project) -> QuerySet[Query]:
    return Query.objects.filter(project=project, judgments__isnull=False).distinct()


def review_scores_compute(
    *, reward_model: RewardModel, ensemble: RewardEnsemble | None = None, only_missing: bool = False
) -> int:
    """Score the project's judged pairs with ``reward_model`` (P(clip_a ≻ clip_b) and the ensemble spread) and
    store them; returns how many were written. Safe to run twice: existing rows are kept."""
    from .reward_training import clip_features

    queries = _judged_queries(reward_model.project)
    if only_missing:
        queries = queries.exclude(review_scores__reward_model=reward_model)
    pairs = list(queries.values_list("pk", "clip_a_id", "clip_b_id"))
    if not pairs:
        return 0
    ensemble = ensemble if ensemble is not None else _load(reward_model)
    clip_ids = sorted({c for _, a, b in pairs for c in (a, b)})
    by_id = Clip.objects.select_related("rollout").in_bulk(clip_ids)
    clips = [by_id[i] for i in clip_ids]
    features, _, _ = clip_features(clips)
    index = {clip_id: position for position, clip_id in enumerate(clip_ids)}
    pair_index = np.array([[index[a], index[b]] for _, a, b in pairs], dtype=np.int64)
    mean, spread = ensemble.pair_preference_probabilities(features, pair_index)
    rows = [
        ReviewScore(reward_model=reward_model, query_id=pk, p_model=float(p), spread=float(s))
        for (pk, _, _), p, s in zip(pairs, mean, spread, strict=True)
    ]
    with transaction.atomic():
        ReviewScore.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)
    return len(rows)


def review_scores_after_training(*, reward_model: RewardModel, ensemble: RewardEnsemble | None = None) -> None:
    """Called by the reward-training step: the review is a by-product, so its failure never fails the training
    (clips of different lengths, say, can't be stacked; the page then says the pairs are unscored)."""
    try:
        review_scores_compute(reward_model=reward_model, ensemble=ensemble)
    except Exception:
        logger.exception("reward model %s: scoring judged pairs for the review failed", reward_model.pk)


def review_scores_refresh(project: Project) -> int:
    """Score pairs judged since the latest ready model was trained (a researcher's "Score new pairs")."""
    model = latest_ready_model(project)
    if model is None:
        return 0
    return review_scores_compute(reward_model=model, only_missing=True)


# --- Reads -------------------------------------------------------------------------------------------------------


def _target_a() -> Case:
    """A judgment's P(clip_a better) from its choice as shown and whether the pair was swapped (as
    Judgment.target_a, in SQL); NULL for "can't tell", which says nothing."""
    judgments = "query__judgments__"
    return Case(
        When(**{f"{judgments}choice": Choice.EQUAL}, then=Value(0.5)),
        When(**{f"{judgments}choice": Choice.LEFT, f"{judgments}swapped": False}, then=Value(1.0)),
        When(**{f"{judgments}choice": Choice.RIGHT, f"{judgments}swapped": True}, then=Value(1.0)),
        When(**{f"{judgments}choice": Choice.LEFT, f"{judgments}swapped": True}, then=Value(0.0)),
        When(**{f"{judgments}choice": Choice.RIGHT, f"{judgments}swapped": False}, then=Value(0.0)),
        default=None,
        output_field=FloatField(),
    )


def review_rows(project: Project, reward_model: RewardModel | None = None) -> QuerySet[ReviewScore]:
    """The latest ready model's scores of the project's judged pairs, with the humans' live majority
    (``p_human``, ``answers``) and ``disagreement``, most confident disagreement first."""
    reward_model = reward_model or latest_ready_model(project)
    if reward_model is None:
        return ReviewScore.objects.none()
    counted = Q(query__judgments__excluded_at__isnull=True)
    return (
        ReviewScore.objects.filter(reward_model=reward_model)
        .select_related("query", "query__clip_a", "query__clip_b", "reward_model")
        .annotate(
            p_human=Avg(_target_a(), filter=counted),
            answers=Count(_target_a(), filter=counted),
            excluded=Count("query__judgments", filter=Q(query__judgments__excluded_at__isnull=False)),
        )
        .filter(answers__gt=0)
        .annotate(
            disagreement=(F("p_human") - 0.5) * (0.5 - F("p_model")) * 4 - F("spread"),
            margin=Abs(F("p_human") - F("p_model")),
        )
        .order_by("-disagreement", "-margin", "query_id")
    )


def _review_count_compute(project: Project, model: RewardModel) -> int:
    return (
        review_rows(project, model)
        .filter(disagreement__gte=REVIEW_MIN_DISAGREEMENT, excluded=0)  # type: ignore[misc]  # annotations
        .exclude(query__status=QueryStatus.OPEN)
        .count()
    )


def review_count(project: Project) -> int | None:
    """Pairs to review: confident disagreements not yet acted on (no judgment marked wrong, not sent back).
    None while a big project's review is being computed for the first time."""
    model = latest_ready_model(project)
    if model is None:
        return 0
    summary = review_summary(project, model)
    return None if summary is None else summary["to_review"]


def unscored_count(project: Project) -> int:
    model = latest_ready_model(project)
    if model is None:
        return 0
    return _judged_queries(project).exclude(review_scores__reward_model=model).count()


# --- The review's order and counts, cached ---------------------------------------------------------------------

# Ordering every scored pair by disagreement aggregates all the project's judgments (seconds at a million), so the
# order (every pair's query id, packed 8 bytes each, in chunks of REVIEW_ORDER_CHUNK under keys of their own: a
# page reads one or two chunks, the overview's count none) and the counts are cached under a stamp of what they
# depend on: the model and its newest score, the newest judgment and revision, and the review actions (a version
# labeling bumps). The rows on a page are still read live, so a page always shows the current answers and marks.
REVIEW_ORDER_CHUNK = 50_000  # query ids per cache entry (400 KB)
REVIEW_SUMMARY_CACHE_SECONDS = 24 * 3600
REVIEW_INLINE_ANSWERS = 50_000  # up to this many answers a missing summary is computed in the request


def _summary_key(project_id: int) -> str:
    # v2: the whole order in chunks (order_token, order_chunks); a v1 summary (its first 20 000 ids inline) left in
    # a shared cache by the previous release is never read as one.
    return f"review-summary:v2:{project_id}"


def _review_stamp(project: Project, model: RewardModel) -> tuple:
    newest_score = ReviewScore.objects.filter(reward_model=model).order_by("-id").values_list("id", flat=True).first()
    return (
        model.pk,
        newest_score,
        labeling_selectors.judgments_stamp(project),
        labeling_selectors.review_version(project.pk),
    )


def _order_key(project_id: int, token: str, chunk: int) -> str:
    return f"review-order:{project_id}:{token}:{chunk}"


def _order_store(project_id: int, order: array) -> dict[str, Any]:
    """Cache the whole order in chunks under a fresh token; the summary names the token and the chunk count."""
    from django.core.cache import cache

    token = uuid.uuid4().hex
    n_chunks = -(-len(order) // REVIEW_ORDER_CHUNK)
    cache.set_many(
        {
            _order_key(project_id, token, i): order[i * REVIEW_ORDER_CHUNK : (i + 1) * REVIEW_ORDER_CHUNK].tobytes()
            for i in range(n_chunks)
        },
        REVIEW_SUMMARY_CACHE_SECONDS,
    )
    return {"order_token": token, "order_chunks": n_chunks}


def _order_forget(project_id: int, summary: dict[str, Any] | None) -> None:
    """Drop an older summary's order chunks (a refresh replaces them; without this they would linger a day)."""
    from django.core.cache import cache

    if summary and summary.get("order_token"):
        cache.delete_many([_order_key(project_id, summary["order_token"], i) for i in range(summary["order_chunks"])])


def _order_slice(project_id: int, summary: dict[str, Any], start: int, stop: int) -> list[int] | None:
    """Query ids ``start:stop`` of the cached order (one or two chunks read); None when a chunk is gone."""
    from django.core.cache import cache

    stop = min(stop, summary["total"])
    if start >= stop:
        return []
    first, last = start // REVIEW_ORDER_CHUNK, (stop - 1) // REVIEW_ORDER_CHUNK
    keys = [_order_key(project_id, summary["order_token"], i) for i in range(first, last + 1)]
    found = cache.get_many(keys)
    if len(found) != len(keys):
        return None
    ids = array("q")
    for key in keys:
        ids.frombytes(found[key])
    offset = first * REVIEW_ORDER_CHUNK
    return ids[start - offset : stop - offset].tolist()


def _order_slice_again(project_id: int, summary: dict[str, Any], start: int, stop: int) -> list[int] | None:
    """A chunk of ``summary``'s order is missing: a refresh replaced it meanwhile (read the new one), or the cache
    evicted it (drop the summary so that the next view has it computed again, by a task when the project is big)."""
    from django.core.cache import cache

    current = cache.get(_summary_key(project_id))
    if current is not None and current.get("order_token") != summary.get("order_token"):
        return _order_slice(project_id, current, start, stop)
    logger.warning("project %s: the review's cached order is incomplete; recomputing it", project_id)
    cache.delete(_summary_key(project_id))
    return None


def review_summary_compute(project: Project, model: RewardModel) -> dict[str, Any]:
    """The counts and the whole order (query ids, most confident disagreement first) of the project's review."""
    rows = review_rows(project, model)
    order = array("q", rows.values_list("query_id", flat=True).iterator(chunk_size=10_000))
    return {
        "total": len(order),
        "to_review": _review_count_compute(project, model),
        "unscored": _judged_queries(project).exclude(review_scores__reward_model=model).count(),
        "order": order,
        "stale": False,
    }


def _summary_store(project_id: int, summary: dict[str, Any]) -> dict[str, Any]:
    """Cache a computed summary: its order in chunks first, then the summary naming them; the previous summary's
    chunks are dropped."""
    from django.core.cache import cache

    previous = cache.get(_summary_key(project_id))
    order = summary.pop("order")
    summary |= _order_store(project_id, order)
    cache.set(_summary_key(project_id), summary, REVIEW_SUMMARY_CACHE_SECONDS)
    if previous is not None and previous.get("order_token") != summary["order_token"]:
        _order_forget(project_id, previous)
    return summary


def review_summary_refresh(project_id: int) -> dict[str, Any] | None:
    """Compute the project's review summary (for its latest ready model) into the cache."""
    from django.core.cache import cache

    project = Project.objects.get(pk=project_id)
    try:
        model = latest_ready_model(project)
        if model is None:
            return None
        stamp = _review_stamp(project, model)
        summary = _summary_store(project_id, {**review_summary_compute(project, model), "stamp": stamp})
    finally:
        cache.delete(f"{_summary_key(project_id)}:refreshing")
    return summary


def review_summary(project: Project, model: RewardModel) -> dict[str, Any] | None:
    """The review's counts and order: cached and current, else computed here while cheap (or with a per-process
    cache), else the last one (``stale``) while a task recomputes it; None when a big project has none yet."""
    from django.core.cache import cache, caches
    from django.core.cache.backends.dummy import DummyCache
    from django.core.cache.backends.locmem import LocMemCache

    from labeling import events
    from labeling import services as labeling_services

    stamp = _review_stamp(project, model)
    cached = cache.get(_summary_key(project.pk))
    if cached is not None and cached["stamp"] == stamp:
        return cached
    local = isinstance(caches["default"], LocMemCache | DummyCache)
    if (cached is None or local) and not labeling_selectors.has_more_answers_than(project, REVIEW_INLINE_ANSWERS):
        return _summary_store(project.pk, {**review_summary_compute(project, model), "stamp": stamp})
    if cache.add(f"{_summary_key(project.pk)}:refreshing", True, REVIEW_SUMMARY_CACHE_SECONDS):
        try:
            labeling_services.send_task_by_name(events.REFRESH_REVIEW_SUMMARY, project.pk)
        except Exception:  # the broker is down: show the last summary, try again on a later view
            logger.warning("could not queue the review summary of project %s", project.pk, exc_info=True)
            cache.delete(f"{_summary_key(project.pk)}:refreshing")
        refreshed = cache.get(_summary_key(project.pk))
        if refreshed is not None and refreshed["stamp"] == stamp:  # the task ran in-process (eager)
            return refreshed
    return None if cached is None else {**cached, "stale": True}


@dataclass
class ReviewPage:
    reward_model: RewardModel | None
    rows: list[dict[str, Any]]
    page: int
    pages: int
    total: int | None
    to_review: int | None
    unscored: int
    computing: bool = False  # a big project's review is being computed for the first time: no rows yet
    stale: bool = False  # the order and counts are the last computed; a task is bringing them up to date


def _with_judgments(project: Project, scores: list[ReviewScore]) -> list[dict[str, Any]]:
    """Each score with its pair's judgments (who answered what, marked wrong or not) and the annotators' flags."""
    judgments = (
        Judgment.objects.filter(query_id__in=[s.query_id for s in scores])
        .select_related("annotator", "excluded_by", "query")
        .order_by("query_id", "id")
    )
    by_query: dict[int, list[Judgment]] = {}
    for judgment in judgments:
        by_query.setdefault(judgment.query_id, []).append(judgment)
    flagged = {
        m.user_id: m
        for m in Membership.objects.filter(project=project, flagged_at__isnull=False).select_related("flagged_by")
    }
    return [
        {
            "score": score,
            "query": score.query,
            "judgments": [
                {"judgment": j, "label": j.canonical_label, "flag": flagged.get(j.annotator_id)}
                for j in by_query.get(score.query_id, [])
            ],
        }
        for score in scores
    ]


def review_row(project: Project, *, query_id: int) -> dict[str, Any] | None:
    """One pair's row (after a review action), or None when it is no longer in the review."""
    score = review_rows(project).filter(query_id=query_id).first()
    return None if score is None else _with_judgments(project, [score])[0]


def review_page(project: Project, *, page: int = 1, page_size: int = PAGE_SIZE) -> ReviewPage:
    """One page of the review, most confident disagreement first (the cached order; its rows read live)."""
    model = latest_ready_model(project)
    if model is None:
        return ReviewPage(reward_model=None, rows=[], page=1, pages=1, total=0, to_review=0, unscored=0)
    summary = review_summary(project, model)
    if summary is None:
        return ReviewPage(
            reward_model=model, rows=[], page=1, pages=1, total=None, to_review=None, unscored=0, computing=True
        )
    total = summary["total"]
    pages = max(1, -(-total // page_size))
    page = min(max(1, page), pages)
    start, rows_qs = (page - 1) * page_size, review_rows(project, model)
    ids = _order_slice(project.pk, summary, start, start + page_size)
    if ids is None:
        ids = _order_slice_again(project.pk, summary, start, start + page_size)
    if ids is not None:  # any page: its ids from the cached order, its rows live (an index lookup per pair)
        by_query = {score.query_id: score for score in rows_qs.filter(query_id__in=ids)}
        scores = [by_query[pk] for pk in ids if pk in by_query]  # gone since: no judgment counts any more
    else:  # the order is gone from the cache: this page from the whole ordering, live (seconds at a million)
        scores = list(rows_qs[start : start + page_size])
    return ReviewPage(
        reward_model=model,
        rows=_with_judgments(project, scores),
        page=page,
        pages=pages,
        total=total,
        to_review=summary["to_review"],
        unscored=summary["unscored"],
        stale=summary["stale"],
    )
