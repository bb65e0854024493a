"""Writes for labeling: keyword-only, typed, atomic (HackSoft's styleguide).

The assignment engine lives in ``assignment.py``; this module holds project set-up, membership (members, roles,
invites, each written with its audit entry in the same transaction) and query creation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

import numpy as np
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import User

from . import environments
from .errors import Conflict, LastResearcher, NotFound, ValidationFailed
from .models import (
    AuditAction,
    AuditEntry,
    Clip,
    FeedbackMode,
    Invite,
    Judgment,
    Lease,
    Membership,
    Project,
    ProjectRole,
    Query,
    QuerySource,
    QueryStatus,
    RenderStatus,
    RewardFactor,
)

logger = logging.getLogger(__name__)

_FACTOR_FIELDS = ("key", "label", "description", "unit", "direction", "source", "sigma")


def _validation_failed(error: ValidationError, prefix: str = "") -> ValidationFailed:
    fields = {f"{prefix}{name}": [str(m) for m in messages] for name, messages in error.message_dict.items()}
    return ValidationFailed("the project spec is not valid", fields=fields)


@transaction.atomic
def project_create(
    *,
    created_by: User,
    name: str,
    env_id: str,
    slug: str = "",
    instructions: str = "",
    factors: Sequence[Mapping[str, Any]] | None = None,
    segment_steps: int | None = None,
    overlap: int = 1,
    feedback_mode: str = FeedbackMode.BOTH,
    env_kwargs: Mapping[str, Any] | None = None,
    render_width: int | None = None,
    render_height: int | None = None,
    render_fps: int | None = None,
    lease_ttl_seconds: int = 300,
    episode_steps: int | None = None,
    observation_space: Mapping[str, Any] | None = None,
    action_space: Mapping[str, Any] | None = None,
    initial_policies: Sequence[str] = (),
    loop_settings: Mapping[str, Any] | None = None,
    require_full_view: bool = False,
    gold_rate: float = 0.0,
    repeat_rate: float = 0.0,
    qualification_size: int = 0,
    qualification_threshold: float = 0.8,
) -> Project:
    """Create a project; its factors default to the environment preset's. The creator becomes a researcher.

    A whole project spec (environment, factors, clips, feedback, leases, quality, loop) arrives here through
    ``labeling.project_specs`` (parsed and checked by trainer), field by field."""
    definition = environments.get(env_id)
    if definition is None and env_id != environments.EXTERNAL:
        raise ValidationFailed(
            f"unknown environment {env_id!r}",
            fields={"env_id": [f"choose one of {[*environments.available(), environments.EXTERNAL]}"]},
        )
    # Environment arguments are data, never paths: each must be on the environment's allow-list.
    kwarg_problems = environments.env_kwargs_problems(env_id, env_kwargs or {})
    if kwarg_problems:
        names = ", ".join(sorted(kwarg_problems))
        raise ValidationFailed(f"environment arguments not allowed: {names}", fields=kwarg_problems)
    if factors is None:
        if definition is None:
            raise ValidationFailed("external projects must list their factors", fields={"factors": ["required"]})
        factors = [{name: getattr(spec, name) for name in _FACTOR_FIELDS} for spec in definition.factors]
    if not factors:
        raise ValidationFailed("a project needs at least one reward factor", fields={"factors": ["empty"]})

    project = Project(
        slug=slug or slugify(name)[:64],
        name=name,
        env_id=env_id,
        env_kwargs=dict(env_kwargs or {}),
        instructions=instructions,
        segment_steps=segment_steps or (definition.segment_steps if definition else 50),
        render_width=render_width or (definition.render_width if definition else 320),
        render_height=render_height or (definition.render_height if definition else 240),
        render_fps=render_fps,
        overlap=overlap,
        feedback_mode=feedback_mode,
        lease_ttl_seconds=lease_ttl_seconds,
        episode_steps=episode_steps,
        observation_space=dict(observation_space or {}),
        action_space=dict(action_space or {}),
        initial_policies=list(initial_policies),
        loop_settings=dict(loop_settings or {}),
        require_full_view=require_full_view,
        gold_rate=gold_rate,
        repeat_rate=repeat_rate,
        qualification_size=qualification_size,
        qualification_threshold=qualification_threshold,
        created_by=created_by,
    )
    try:
        project.full_clean()
    except ValidationError as error:
        raise _validation_failed(error) from None
    project.save()

    seen: set[str] = set()
    for position, spec in enumerate(factors):
        unknown = set(spec) - set(_FACTOR_FIELDS)
        if unknown:
            raise ValidationFailed(
                "unknown factor fields", fields={f"factors[{position}]": [f"unknown: {sorted(unknown)}"]}
            )
        factor = RewardFactor(project=project, position=position, **{k: spec[k] for k in spec})
        if not factor.label:
            factor.label = factor.key
        if not factor.source:
            factor.source = factor.key
        try:
            factor.full_clean(exclude=["project"])
        except ValidationError as error:
            raise _validation_failed(error, prefix=f"factors[{position}].") from None
        if factor.key in seen:
            raise ValidationFailed("factor keys repeat", fields={f"factors[{position}].key": ["repeated"]})
        seen.add(factor.key)
        factor.save()
    Membership.objects.create(project=project, user=created_by, role=ProjectRole.RESEARCHER)
    audit_record(project=project, actor=created_by, action=AuditAction.PROJECT_CREATED, target=project.name)
    return project


# --- Membership: members, roles, invites; every change leaves an audit entry ----------------------------------

INVITE_MAX_DAYS = 90


def audit_record(
    *,
    project: Project,
    actor: User | None,
    action: str,
    target_user: User | None = None,
    target: str = "",
    details: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """One audit entry. Called inside the change's own transaction, so there is never one without the other."""
    return AuditEntry.objects.create(
        project=project,
        actor=actor,
        action=action,
        target_user=target_user,
        target=(target or (target_user.username if target_user is not None else ""))[:200],
        details=dict(details or {}),
    )


def _role_checked(role: str) -> str:
    if role not in ProjectRole.values:
        raise ValidationFailed(f"unknown role {role!r}", fields={"role": [f"one of {list(ProjectRole.values)}"]})
    return role


def _researchers_locked(project_id: int) -> list[int]:
    """The ids of the project's researcher memberships, locked until the transaction ends.

    Every role change and removal takes these locks first, in id order, and only then the member's own row: two
    researchers who demote or remove each other at the same moment are served one after the other (no deadlock),
    and the second sees that the first is no longer a researcher, so the project can't be left with none."""
    return list(
        Membership.objects.select_for_update()
        .filter(project_id=project_id, role=ProjectRole.RESEARCHER)
        .order_by("pk")
        .values_list("pk", flat=True)
    )


def _member_locked(membership_id: int) -> Membership:
    """The membership, locked; removed meanwhile (a second click on Remove): not found."""
    found = Membership.objects.select_for_update().select_related("project", "user").filter(pk=membership_id).first()
    if found is None:
        raise NotFound("no such member")
    return found


def _keep_a_researcher(membership: Membership, researchers: list[int], *, doing: str) -> None:
    if membership.role == ProjectRole.RESEARCHER and researchers == [membership.pk]:
        raise LastResearcher(f"{doing}: a project keeps at least one researcher; make someone else researcher first")


@transaction.atomic
def membership_add(
    *, project: Project, user: User, role: str = ProjectRole.ANNOTATOR, actor: User | None = None
) -> Membership:
    """Make ``user`` a member with ``role`` (a member already: their role becomes ``role``)."""
    _role_checked(role)
    membership = Membership.objects.select_for_update().filter(project=project, user=user).first()
    if membership is None:
        membership = Membership.objects.create(project=project, user=user, role=role)
        audit_record(
            project=project, actor=actor, action=AuditAction.MEMBER_ADDED, target_user=user, details={"role": role}
        )
    elif membership.role != role:
        membership = member_role_change(membership=membership, role=role, actor=actor)
    return membership


@transaction.atomic
def member_add(*, project: Project, username: str, role: str, actor: User) -> Membership:
    """Add the user named ``username`` (an existing, active account) to the project."""
    _role_checked(role)
    user = User.objects.filter(username=username.strip(), is_active=True).first() if username.strip() else None
    if user is None:
        raise ValidationFailed("no user by that name", fields={"username": ["no active user has this username"]})
    if Membership.objects.filter(project=project, user=user).exists():
        raise Conflict(f"{user.username} is already a member", fields={"username": ["already a member"]})
    return membership_add(project=project, user=user, role=role, actor=actor)


@transaction.atomic
def member_role_change(*, membership: Membership, role: str, actor: User | None) -> Membership:
    _role_checked(role)
    researchers = _researchers_locked(membership.project_id)
    membership = _member_locked(membership.pk)
    if membership.role == role:
        return membership
    if role != ProjectRole.RESEARCHER:
        _keep_a_researcher(membership, researchers, doing=f"{membership.user.username} can't become {role}")
    before = membership.role
    membership.role = role
    membership.save(update_fields=["role"])
    audit_record(
        project=membership.project,
        actor=actor,
        action=AuditAction.MEMBER_ROLE_CHANGED,
        target_user=membership.user,
        details={"from": before, "to": role},
    )
    return membership


@transaction.atomic
def member_remove(*, membership: Membership, actor: User | None) -> None:
    """Take a member out of the project. Their answers stay (they are the project's data); what they held on
    lease goes back to the pool at once."""
    researchers = _researchers_locked(membership.project_id)
    membership = _member_locked(membership.pk)
    _keep_a_researcher(membership, researchers, doing=f"{membership.user.username} can't be removed")
    Lease.objects.filter(query__project=membership.project, annotator=membership.user).delete()
    audit_record(
        project=membership.project,
        actor=actor,
        action=AuditAction.MEMBER_REMOVED,
        target_user=membership.user,
        details={"role": membership.role},
    )
    membership.delete()


@transaction.atomic
def invite_create(*, project: Project, role: str, actor: User, days: int = 7) -> Invite:
    """A single-use invitation link that makes whoever opens it (signed in) a member with ``role``."""
    _role_checked(role)
    if not 1 <= days <= INVITE_MAX_DAYS:
        raise ValidationFailed(f"an invite lasts 1 to {INVITE_MAX_DAYS} days", fields={"days": ["out of range"]})
    invite = Invite.objects.create(
        project=project, role=role, created_by=actor, expires_at=timezone.now() + timedelta(days=days)
    )
    audit_record(
        project=project,
        actor=actor,
        action=AuditAction.INVITE_CREATED,
        target=f"invite #{invite.pk}",
        details={"invite": invite.pk, "role": role, "expires_at": invite.expires_at.isoformat()},
    )
    return invite


@transaction.atomic
def invite_revoke(*, invite: Invite, actor: User) -> Invite:
    invite = Invite.objects.select_for_update().select_related("project").get(pk=invite.pk)
    if invite.used_at is not None:
        raise Conflict("this invite was already used; remove the member instead")
    if invite.revoked_at is None:  # revoking twice is fine, and recorded once
        invite.revoked_at = timezone.now()
        invite.save(update_fields=["revoked_at"])
        audit_record(
            project=invite.project,
            actor=actor,
            action=AuditAction.INVITE_REVOKED,
            target=f"invite #{invite.pk}",
            details={"invite": invite.pk, "role": invite.role},
        )
    return invite


@transaction.atomic
def invite_accept(*, invite_id: int, user: User) -> Membership:
    """``user`` takes the invite: they become a member with its role, and the invite is used up.

    A user who is already a member keeps their role and leaves the invite for someone else. Unknown, revoked,
    used and expired invites are refused with the reason (the link was signed by us, so its id is not a guess).
    """
    invite = Invite.objects.select_for_update().select_related("project").filter(pk=invite_id).first()
    if invite is None:
        raise NotFound("this invite no longer exists")
    state = invite.state
    if state != "open":
        raise Conflict(f"this invite was {state}" if state != "expired" else "this invite has expired")
    existing = Membership.objects.filter(project=invite.project, user=user).first()
    if existing is not None:
        return existing
    membership = Membership.objects.create(project=invite.project, user=user, role=invite.role)
    invite.used_at, invite.used_by = timezone.now(), user
    invite.save(update_fields=["used_at", "used_by"])
    audit_record(
        project=invite.project,
        actor=user,
        action=AuditAction.INVITE_ACCEPTED,
        target_user=user,
        details={"invite": invite.pk, "role": invite.role},
    )
    return membership


def queries_create_random(
    *,
    project: Project,
    count: int,
    rng: np.random.Generator,
    clips: Iterable[Clip] | None = None,
    iteration: int = 0,
    priority: int = 0,
) -> int:
    """Create up to ``count`` new random pairwise queries among ``clips`` (default: all the project's clips).

    Pairs already asked are skipped; the result is the number created. Pairs are drawn from ``rng`` so a
    seeded run asks the same questions.
    """
    pool = list(clips) if clips is not None else list(project.clips.all())
    # Clips without video (data-only uploads and imports) can't be compared side by side.
    clip_ids = np.array(sorted(c.pk for c in pool if c.render_status != RenderStatus.NO_VIDEO), dtype=np.int64)
    n = len(clip_ids)
    if n < 2 or count <= 0:
        return 0
    ids = clip_ids.tolist()
    existing = set(
        Query.objects.filter(
            project=project,
            source__in=[QuerySource.RANDOM, QuerySource.ACTIVE],
            clip_a_id__in=ids,
            clip_b_id__in=ids,
        ).values_list("clip_a_id", "clip_b_id")
    )
    wanted = min(count, n * (n - 1) // 2 - len(existing))
    chosen: set[tuple[int, int]] = set()
    # Draw in rounds: duplicates and already-asked pairs are rare unless the pool is nearly exhausted.
    for _ in range(64):
        if len(chosen) >= wanted:
            break
        draws = rng.integers(0, n, size=(2 * (wanted - len(chosen)) + 8, 2))
        for i, j in draws:
            if i == j:
                continue
            pair = (int(clip_ids[min(i, j)]), int(clip_ids[max(i, j)]))
            if pair not in existing and pair not in chosen:
                chosen.add(pair)
                if len(chosen) >= wanted:
                    break
    return queries_publish(
        project=project,
        pairs=sorted(chosen),
        source=QuerySource.RANDOM,
        iteration=iteration,
        priority=priority,
        rng=rng,
    )


@transaction.atomic
def queries_publish(
    *,
    project: Project,
    pairs: Sequence[tuple[int, int]],
    source: str,
    rng: np.random.Generator,
    iteration: int = 0,
    priority: int = 0,
    uncertainties: Sequence[float | None] | None = None,
) -> int:
    """Ask ``pairs`` of the project's clips (random or active queries); the result is the number created.

    Pairs are stored in canonical order; a pair already asked (by anyone, even concurrently) is skipped, so
    publishing twice creates the questions once. ``uncertainties`` (the model's, for active selection) go
    with the pairs; ``rng`` draws the serving order, so a seeded run serves the same order.
    """
    if source not in (QuerySource.RANDOM, QuerySource.ACTIVE):
        raise ValidationFailed(f"queries of source {source!r} are not published here")
    if uncertainties is not None and len(uncertainties) != len(pairs):
        raise ValidationFailed("one uncertainty per pair, or none")
    wanted: dict[tuple[int, int], float | None] = {}
    for index, (first, second) in enumerate(pairs):
        if first == second:
            raise ValidationFailed(f"a query compares two different clips, not clip {first} with itself")
        pair = (int(min(first, second)), int(max(first, second)))
        wanted.setdefault(pair, None if uncertainties is None else uncertainties[index])
    if not wanted:
        return 0
    ids = sorted({clip_id for pair in wanted for clip_id in pair})
    if Clip.objects.filter(project=project, pk__in=ids).count() != len(ids):
        raise ValidationFailed("every clip of a query must belong to the project")
    _check_comparable(project=project, pairs=list(wanted), ids=ids)
    existing = set(
        Query.objects.filter(
            source__in=[QuerySource.RANDOM, QuerySource.ACTIVE], clip_a_id__in=ids, clip_b_id__in=ids
        ).values_list("clip_a_id", "clip_b_id")
    )
    new = [(pair, score) for pair, score in wanted.items() if pair not in existing]
    keys = rng.random(len(new))
    queries = [
        Query(
            project=project,
            clip_a_id=a,
            clip_b_id=b,
            source=source,
            uncertainty=None if score is None else float(score),
            answers_wanted=project.overlap,
            random_key=float(key),
            iteration=iteration,
            priority=priority,
        )
        for ((a, b), score), key in zip(new, keys, strict=True)
    ]
    # A concurrent writer may have asked some of the same pairs since the read: the unique constraint on
    # random/active pairs drops those rows here.
    Query.objects.bulk_create(queries, batch_size=1000, ignore_conflicts=True)
    return len(queries)


def _check_comparable(*, project: Project, pairs: Sequence[tuple[int, int]], ids: Sequence[int]) -> None:
    """Both clips of a pair have video (shown side by side), or neither has (factors only: the page shows each
    side's factor totals). A mixed pair is refused: one side's numbers against the other's video is not a fair
    question. Factors-only pairs need factors to show."""
    data_only = set(Clip.objects.filter(pk__in=ids, render_status=RenderStatus.NO_VIDEO).values_list("pk", flat=True))
    if not data_only:
        return
    mixed = [pair for pair in pairs if (pair[0] in data_only) != (pair[1] in data_only)]
    if mixed:
        a, b = mixed[0]
        message = (
            f"clips {a} and {b} cannot be compared: one has video and the other has none (data only); "
            "a pair is both with video or both factors-only"
        )
        raise ValidationFailed(message, fields={"pairs": [message]})
    if not project.factors.exists():
        message = "clips without video are compared by their factor totals, and this project has no factors"
        raise ValidationFailed(message, fields={"pairs": [message]})


MAX_PAIRS_PER_REQUEST = 500


@transaction.atomic
def queries_for_pairs(
    *,
    project: Project,
    pairs: Sequence[tuple[int, int]],
    rng: np.random.Generator,
    priority: int = 0,
) -> list[Query]:
    """The query asking each pair of the project's clips, made when missing: one per pair, in ``pairs``' order.

    For programs that pick their own pairs (imitation's preference gatherer). Asking again returns the same
    queries, so a retried request creates nothing twice; a pair already asked by a random or active query is
    answered by that query. New ones are ``active`` queries: a program chose them, as the loop's selection
    does. Pairs may be given in either order; the queries store them canonically (clip_a < clip_b)."""
    if len(pairs) > MAX_PAIRS_PER_REQUEST:
        raise ValidationFailed(
            f"at most {MAX_PAIRS_PER_REQUEST} pairs a request", fields={"pairs": [f"at most {MAX_PAIRS_PER_REQUEST}"]}
        )
    canonical = [(min(int(a), int(b)), max(int(a), int(b))) for a, b in pairs]
    queries_publish(project=project, pairs=canonical, source=QuerySource.ACTIVE, rng=rng, priority=priority)
    ids = sorted({clip_id for pair in canonical for clip_id in pair})
    by_pair = {
        (query.clip_a_id, query.clip_b_id): query
        for query in Query.objects.filter(
            project=project,
            source__in=[QuerySource.RANDOM, QuerySource.ACTIVE],
            clip_a_id__in=ids,
            clip_b_id__in=ids,
        )
    }
    return [by_pair[pair] for pair in canonical]


# --- Disagreement review: a researcher's corrections (frontend review page and the review API) -----------------

REASON_MAX_CHARS = 500
SEND_BACK_MAX_EXTRA = 20


def _reason(reason: str) -> str:
    reason = reason.strip()
    if len(reason) > REASON_MAX_CHARS:
        raise ValidationFailed("the reason is too long", fields={"reason": [f"at most {REASON_MAX_CHARS} characters"]})
    return reason


def _review_changed(project_id: int) -> None:
    """A review action changes no judgment id: tell the review's cached order (trainer.review) it is out of date,
    now (this transaction's own reads) and again at commit (a summary computed meanwhile saw the old rows)."""
    from . import selectors

    selectors.review_changed(project_id)
    transaction.on_commit(lambda: selectors.review_changed(project_id))


@transaction.atomic
def judgment_exclude(*, project: Project, judgment_id: int, by: User, reason: str = "") -> Judgment:
    """Mark a judgment wrong: later preference sets leave it out; it stays in the history and raw exports.

    Marking an excluded judgment again keeps the first mark (who and when), so a double click is harmless.
    """
    reason = _reason(reason)
    judgment = Judgment.objects.select_for_update().filter(pk=judgment_id, query__project=project).first()
    if judgment is None:
        raise NotFound("no such judgment")
    if judgment.excluded_at is None:
        judgment.excluded_at = timezone.now()
        judgment.excluded_by = by
        judgment.exclusion_reason = reason
        judgment.save(update_fields=["excluded_at", "excluded_by", "exclusion_reason"])
    _review_changed(project.pk)
    return judgment


@transaction.atomic
def judgment_include(*, project: Project, judgment_id: int) -> Judgment:
    """Take back a "wrong" mark: the judgment counts for training again."""
    judgment = Judgment.objects.select_for_update().filter(pk=judgment_id, query__project=project).first()
    if judgment is None:
        raise NotFound("no such judgment")
    judgment.excluded_at, judgment.excluded_by, judgment.exclusion_reason = None, None, ""
    judgment.save(update_fields=["excluded_at", "excluded_by", "exclusion_reason"])
    _review_changed(project.pk)
    return judgment


@transaction.atomic
def query_send_back(*, project: Project, query_id: int, extra: int = 1) -> Query:
    """Ask a judged pair again: it wants ``extra`` more answers and is open to annotators who haven't answered it.

    The assignment engine already skips annotators who answered; raising answers_wanted (rather than resetting
    answers_given) keeps the overfull check honest and the earlier answers in place.
    """
    if not 1 <= extra <= SEND_BACK_MAX_EXTRA:
        raise ValidationFailed("extra answers out of range", fields={"extra": [f"1 to {SEND_BACK_MAX_EXTRA}"]})
    query = Query.objects.select_for_update().filter(pk=query_id, project=project).first()
    if query is None:
        raise NotFound("no such query")
    if query.source not in (QuerySource.RANDOM, QuerySource.ACTIVE):
        raise Conflict("only random and active pairs can be sent back (gold and repeat pairs have their own rules)")
    Query.objects.filter(pk=query.pk).update(answers_wanted=F("answers_wanted") + extra, status=QueryStatus.OPEN)
    query.refresh_from_db()
    _review_changed(project.pk)
    return query


@transaction.atomic
def membership_flag(*, project: Project, user_id: int, by: User, reason: str = "") -> Membership:
    """Flag an annotator for a researcher's attention (shown on the review page and the quality section)."""
    reason = _reason(reason)
    membership = Membership.objects.select_for_update().filter(project=project, user_id=user_id).first()
    if membership is None:
        raise NotFound("no such member")
    membership.flagged_at = timezone.now()
    membership.flagged_by = by
    membership.flag_reason = reason
    membership.save(update_fields=["flagged_at", "flagged_by", "flag_reason"])
    return membership


@transaction.atomic
def membership_unflag(*, project: Project, user_id: int) -> Membership:
    membership = Membership.objects.select_for_update().filter(project=project, user_id=user_id).first()
    if membership is None:
        raise NotFound("no such member")
    membership.flagged_at, membership.flagged_by, membership.flag_reason = None, None, ""
    membership.save(update_fields=["flagged_at", "flagged_by", "flag_reason"])
    return membership


def send_task_by_name(name: str, *args: Any) -> None:
    """Send a task without importing its module. In eager mode (tests, no broker) it runs in-process."""
    from celery import current_app

    if current_app.conf.task_always_eager:
        current_app.loader.import_default_modules()  # task modules are discovered lazily
        current_app.tasks[name].apply(args=args)
    else:
        current_app.send_task(name, args=args)


def send_task_or_warn(
    name: str, *args: Any, recovery: str, send: Callable[..., None] | None = None, what: str | None = None
) -> bool:
    """``send_task_by_name``, for work that something else sends again (``recovery`` says what): a broker that is
    down or restarting (kombu raises OperationalError, or worse from a half-reset channel) is logged and reported
    with False instead of failing the caller, whose own change is already committed. In eager mode the task ran
    in-process, so its own errors propagate. ``send`` replaces the sender (a caller passes its own module's name,
    looked up at call time, so tests patch it where it is used); ``what`` names the work in the log."""
    from celery import current_app

    try:
        (send or send_task_by_name)(name, *args)
    except Exception:
        if current_app.conf.task_always_eager:
            raise
        logger.warning("could not send %s to the broker (%s%s); %s", what or name, name, args, recovery, exc_info=True)
        return False
    return True
