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
    """Check a submitted ranking against the project's factors; say exactly what is wrong."""
    if not isinstance(groups, list) or not groups:
        raise ValidationFailed(
            "groups must be a non-empty list of lists of factor keys",
            fields={"groups": ['expected e.g. [["angle"], ["speed", "torque"]]']},
        )
    known = set(factor_keys)
    seen: list[str] = []
    problems: dict[str, list[str]] = {}
    clean: list[list[str]] = []
    for index, group in enumerate(groups):
        if isinstance(group, str):
            group = [group]
        if not isinstance(group, list) or not group or not all(isinstance(k, str) for k in group):
            problems[f"groups[{index}]"] = ["a level must be a non-empty list of factor keys"]
            continue
        clean.append(list(group))
        seen.extend(group)
    unknown = sorted({k for k in seen if k not in known})
    repeated = sorted({k for k in seen if seen.count(k) > 1})
    missing = [k for k in factor_keys if k not in seen]
    if unknown:
        problems.setdefault("groups", []).append(f"unknown factors: {', '.join(unknown)}")
    if repeated:
        problems.setdefault("groups", []).append(f"factors listed more than once: {', '.join(repeated)}")
    if missing:
        problems.setdefault("groups", []).append(f"factors missing: {', '.join(missing)}")

    clean_sigmas: dict[str, float] = {}
    if sigmas is None:
        sigmas = {}
    if not isinstance(sigmas, Mapping):
        problems["sigmas"] = ["sigmas must be an object mapping factor keys to numbers"]
    else:
        for key, value in sigmas.items():
            if key not in known:
                problems[f"sigmas.{key}"] = ["not a factor of this project"]
            elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                problems[f"sigmas.{key}"] = ["must be a number"]
            elif not 0.0 <= float(value) <= MAX_SIGMA:
                problems[f"sigmas.{key}"] = [f"must be between 0 and {MAX_SIGMA:g}"]
            else:
                clean_sigmas[key] = float(value)
    if problems:
        summary = "; ".join(f"{name}: {' '.join(msgs)}" for name, msgs in problems.items())
        raise ValidationFailed(f"the ranking is not valid: {summary}", fields=problems)
    return clean, clean_sigmas


@transaction.atomic
def ranking_submit(
    *, project: Project, annotator: User, groups: Any, sigmas: Any = None, comment: str = ""
) -> FactorRanking:
    """Store a new current ranking for the annotator and announce it (the trainer builds preferences from it)."""
    factors = list(project.factors.order_by("position", "id").values_list("key", "sigma"))
    clean_groups, clean_sigmas = validate_ranking(factor_keys=[k for k, _ in factors], groups=groups, sigmas=sigmas)
    defaults = dict(factors)
    overrides = {k: v for k, v in clean_sigmas.items() if not math.isclose(v, defaults[k])}
    ranking = FactorRanking.objects.create(
        project=project, annotator=annotator, groups=clean_groups, sigmas=overrides, comment=comment[:5000]
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
