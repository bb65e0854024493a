"""Factor rankings: validation and submission (the HERON feedback mode)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction
from django.db.models import OuterRef, QuerySet, Subquery

from accounts.models import User

from .errors import ValidationFailed
from .models import FactorRanking, Project

MAX_SIGMA = 10.0


def validate_ranking(
    *, factor_keys: Sequence[str], groups: Any, sigmas: Any
) -> tuple[list[list[str]], dict[str, float]]:
    """Check a submitted ranking against the project's factors; say exactly what is wrong.

    Linear in the size of the input (sets, no list scans). A ranking names each factor once, so one with far
    more levels or keys than the project has factors (over ``2 × factors + 8``: a little slack, so that a
    near-miss still gets its precise message) is refused before anything else is looked at.
    """
    if not isinstance(groups, list) or not groups:
        raise ValidationFailed(
            "groups must be a non-empty list of lists of factor keys",
            fields={"groups": ['expected e.g. [["angle"], ["speed", "torque"]]']},
        )
    limit = len(factor_keys)
    cap = _early_refusal_cap(limit)
    total = 0
    if len(groups) <= cap:
        for group in groups:
            total += len(group) if isinstance(group, list) else 1
            if total > cap:
                break
    if len(groups) > cap or total > cap:
        raise ValidationFailed(
            f"the ranking lists far more factors than the project has ({limit})",
            fields={"groups": [f"list each of the project's {limit} factor keys exactly once"]},
        )
    known = set(factor_keys)
    seen: set[str] = set()
    repeated: set[str] = set()
    unknown: set[str] = set()
    problems: dict[str, list[str]] = {}
    clean: list[list[str]] = []
    for index, group in enumerate(groups):
        if isinstance(group, str):
            group = [group]
        if not isinstance(group, list) or not group or not all(isinstance(k, str) for k in group):
            problems[f"groups[{index}]"] = ["a level must be a non-empty list of factor keys"]
            continue
        clean.append(list(group))
        for key in group:
            if key not in known:
                unknown.add(key[:100])
            elif key in seen:
                repeated.add(key)
            seen.add(key)
    missing = [k for k in factor_keys if k not in seen]
    if unknown:
        problems.setdefault("groups", []).append(f"unknown factors: {', '.join(sorted(unknown))}")
    if repeated:
        problems.setdefault("groups", []).append(f"factors listed more than once: {', '.join(sorted(repeated))}")
    if missing:
        problems.setdefault("groups", []).append(f"factors missing: {', '.join(missing)}")

    clean_sigmas: dict[str, float] = {}
    if sigmas is None:
        sigmas = {}
    if not isinstance(sigmas, Mapping):
        problems["sigmas"] = ["sigmas must be an object mapping factor keys to numbers"]
    elif len(sigmas) > cap:
        problems["sigmas"] = [f"at most one margin per factor ({limit})"]
    else:
        for key, value in sigmas.items():
            if key not in known:
                problems[f"sigmas.{str(key)[:100]}"] = ["not a factor of this project"]
            elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                problems[f"sigmas.{key}"] = ["must be a number"]
            elif not 0.0 <= float(value) <= MAX_SIGMA:
                problems[f"sigmas.{key}"] = [f"must be between 0 and {MAX_SIGMA:g}"]
            else:
                clean_sigmas[key] = float(value)
    if problems:
        summary = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in problems.items())
        raise ValidationFailed(f"the ranking is not valid: {summary}"[:2000], fields=problems)
    return clean, clean_sigmas


def _early_refusal_cap(factors: int) -> int:
    return 2 * factors + 8


def ranking_submit(
    *, project: Project, annotator: User, groups: Any, sigmas: Any = None, comment: str = ""
) -> FactorRanking:
    """Store a new current ranking for the annotator and announce it (the trainer builds preferences from it).

    The ranking is validated before the write transaction opens, so a large invalid submission never
    holds the database's write lock (on SQLite, the only one) while it is checked.
    """
    factors = list(project.factors.order_by("position", "id").values_list("key", "sigma"))
    clean_groups, clean_sigmas = validate_ranking(factor_keys=[k for k, _ in factors], groups=groups, sigmas=sigmas)
    defaults = dict(factors)
    overrides = {k: v for k, v in clean_sigmas.items() if not math.isclose(v, defaults[k])}
    return _ranking_store(
        project=project, annotator=annotator, groups=clean_groups, sigmas=overrides, comment=comment[:5000]
    )


@transaction.atomic
def _ranking_store(
    *, project: Project, annotator: User, groups: list[list[str]], sigmas: dict[str, float], comment: str
) -> FactorRanking:
    ranking = FactorRanking.objects.create(
        project=project, annotator=annotator, groups=groups, sigmas=sigmas, comment=comment
    )
    from .signals import ranking_submitted

    transaction.on_commit(lambda: ranking_submitted.send(sender=FactorRanking, ranking=ranking))
    return ranking


def current_rankings(project: Project) -> QuerySet[FactorRanking]:
    """Each annotator's latest ranking in the project."""
    latest = FactorRanking.objects.filter(project=project, annotator=OuterRef("annotator")).order_by(
        "-created_at", "-id"
    )
    return FactorRanking.objects.filter(project=project, pk=Subquery(latest.values("pk")[:1])).order_by("annotator_id")


def current_ranking_for(*, project: Project, annotator: User) -> FactorRanking | None:
    return FactorRanking.objects.filter(project=project, annotator=annotator).order_by("-created_at", "-id").first()
