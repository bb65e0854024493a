"""Gold questions, repeated pairs and qualification: how Heronry measures each annotator's reliability.

- Gold questions have a known answer (from the environment's true return, or set by a researcher); they are
  mixed into an annotator's work at the project's ``gold_rate``, and open to every annotator.
- Repeats show a pair an annotator already answered again later, sides reversed (``repeat_rate``); agreeing with
  oneself is self-consistency.
- Qualification: with ``qualification_size`` > 0 a new annotator first answers that many gold questions and goes
  on to real work only with an accuracy of at least ``qualification_threshold``.

Gold accuracy has one rule, owned by :func:`labeling.quality.gold_accuracy` and used here for qualification and
on the dashboard: "can't tell" on a gold question is neither right nor wrong. It is left out of the accuracy
(and does not count towards ``qualification_size``) and is reported separately, as a count.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from accounts.models import User

from .models import Clip, Judgment, Membership, Project, Query, QuerySource, QueryStatus, RenderStatus

if TYPE_CHECKING:
    from .quality import AnnotatorScore, Answer

# Gold questions are answered by everyone: their "answers wanted" is effectively unbounded.
GOLD_ANSWERS_WANTED = 1_000_000
_coin = random.SystemRandom()


@dataclass(frozen=True)
class Special:
    """What the quality step decided for this request: a query to serve, or that the annotator may not go on."""

    query: Query | None = None
    swapped: bool | None = None
    not_qualified: bool = False


def gold_queries_create(*, project: Project, count: int, rng: np.random.Generator, min_quantile: float = 0.75) -> int:
    """Create gold questions from pairs of rendered clips whose true returns differ clearly.

    Only differences in the top quarter (``min_quantile``) are used, so the known answer is not a matter of
    taste. Returns how many were created.
    """
    clips = list(
        Clip.objects.filter(project=project, render_status=RenderStatus.READY, true_return__isnull=False)
        .order_by("id")
        .values_list("id", "true_return")
    )
    if len(clips) < 2 or count <= 0:
        return 0
    ids = np.array([c[0] for c in clips])
    returns = np.array([c[1] for c in clips], dtype=np.float64)
    draws = rng.integers(0, len(clips), size=(max(count * 20, 200), 2))
    draws = draws[draws[:, 0] != draws[:, 1]]
    gaps = np.abs(returns[draws[:, 0]] - returns[draws[:, 1]])
    threshold = np.quantile(gaps, min_quantile)
    existing = set(Query.objects.filter(project=project, source=QuerySource.GOLD).values_list("clip_a_id", "clip_b_id"))
    created = 0
    for (i, j), gap in zip(draws, gaps, strict=True):
        if created >= count or gap < threshold:
            continue
        a, b = (i, j) if ids[i] < ids[j] else (j, i)
        pair = (int(ids[a]), int(ids[b]))
        if pair in existing:
            continue
        existing.add(pair)
        Query.objects.create(
            project=project,
            clip_a_id=pair[0],
            clip_b_id=pair[1],
            source=QuerySource.GOLD,
            gold_answer="a" if returns[a] > returns[b] else "b",
            answers_wanted=GOLD_ANSWERS_WANTED,
            random_key=float(rng.random()),
        )
        created += 1
    return created


def repeat_maybe_schedule(*, judgment: Judgment, rng: random.Random | None = None) -> Query | None:
    """After an answer to an ordinary query, sometimes ask the same annotator the same pair again later."""
    query = judgment.query
    project = query.project
    if query.source not in (QuerySource.RANDOM, QuerySource.ACTIVE) or project.repeat_rate <= 0:
        return None
    if (rng or _coin).random() >= project.repeat_rate:
        return None
    try:
        with transaction.atomic():
            return Query.objects.create(
                project=project,
                clip_a_id=query.clip_a_id,
                clip_b_id=query.clip_b_id,
                source=QuerySource.REPEAT,
                repeat_of=query,
                assigned_to=judgment.annotator,
                answers_wanted=1,
                iteration=query.iteration,
            )
    except IntegrityError:
        return None


def _unanswered(queries, annotator: User):
    return queries.exclude(Exists(Judgment.objects.filter(query=OuterRef("pk"), annotator=annotator)))


def _next_gold(project: Project, annotator: User) -> Query | None:
    gold = Query.objects.filter(project=project, source=QuerySource.GOLD, status=QueryStatus.OPEN)
    return _unanswered(gold, annotator).order_by("random_key").first()


def answers_of(judgments: Iterable[Judgment]) -> list[Answer]:
    """Judgments as :class:`labeling.quality.Answer` rows in canonical terms ("can't tell" kept as such).

    Needs ``query`` (its clip ids) and ``annotator`` (its username) loaded on every judgment."""
    from . import quality  # statsmodels and scipy load in seconds: only where a score is computed

    return [
        quality.Answer(
            query_id=j.query_id, annotator=j.annotator.username, label=j.canonical_label or quality.CANT_TELL
        )
        for j in judgments
    ]


def gold_accuracy(*, project: Project, annotator: User) -> AnnotatorScore:
    """The annotator's gold accuracy, by the one rule of :func:`labeling.quality.gold_accuracy`: "can't tell"
    is neither right nor wrong (left out of ``n``; the dashboard counts it in its own column)."""
    from . import quality

    judgments = list(
        Judgment.objects.filter(query__project=project, query__source=QuerySource.GOLD, annotator=annotator)
        .select_related("query", "annotator")
        .order_by("id")
    )
    gold = {j.query_id: j.query.gold_answer for j in judgments}
    scores = quality.gold_accuracy(answers_of(judgments), gold)
    return scores.get(annotator.username) or quality.AnnotatorScore.of(0, 0)


def special_query_for(*, project: Project, annotator: User, rng: random.Random | None = None) -> Special:
    """The quality step that runs before ordinary assignment: qualification, due repeats, gold at its rate."""
    rng = rng or _coin
    if project.qualification_size > 0:
        membership = Membership.objects.filter(project=project, user=annotator).first()
        if membership is not None and membership.qualified_at is None:
            # "Can't tell" does not count towards the qualification: more gold is served until
            # ``qualification_size`` answers can be graded (or the gold runs out).
            score = gold_accuracy(project=project, annotator=annotator)
            if score.n < project.qualification_size:
                gold = _next_gold(project, annotator)
                if gold is not None:
                    return Special(query=gold)
            if score.n == 0 or score.value < project.qualification_threshold:
                return Special(not_qualified=True)
            Membership.objects.filter(pk=membership.pk).update(qualified_at=timezone.now())
    repeat = (
        _unanswered(
            Query.objects.filter(
                project=project, source=QuerySource.REPEAT, assigned_to=annotator, status=QueryStatus.OPEN
            ),
            annotator,
        )
        .select_related("repeat_of")
        .order_by("created_at")
        .first()
    )
    # Repeats wait a little (half of the requests skip them) so the pair is not recognised as just seen.
    if repeat is not None and rng.random() < 0.5:
        original = Judgment.objects.filter(query=repeat.repeat_of, annotator=annotator).first()
        return Special(query=repeat, swapped=not original.swapped if original else None)
    if project.gold_rate > 0 and rng.random() < project.gold_rate:
        gold = _next_gold(project, annotator)
        if gold is not None:
            return Special(query=gold)
    return Special()
