"""The assignment engine: which query an annotator sees next, and how their answer is recorded.

The rules are written once, as ORM querysets, for every database; only how a row is locked differs, and that
lives in :mod:`labeling.locking` (PostgreSQL: ``SELECT … FOR UPDATE SKIP LOCKED``; SQLite: every transaction
holds the database's write lock from BEGIN). One short transaction per request: the next query is the first,
in serving order (priority, then an indexed random key), of the open queries this annotator has neither
answered nor skipped whose answers + others' live leases are below the overlap; the lease is inserted in the
same transaction, after the room is checked again with a fresh read.

The hard guarantee — a query never receives more judgments than its overlap, and an annotator answers a
query at most once — is enforced where judgments are written: under the query's lock, with unique
constraints as the last line of defence.
"""

from __future__ import annotations

import contextlib
import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import IntegrityError, InterfaceError, OperationalError, connection, connections, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User

from . import locking, pending_work, quality_control
from .errors import (
    AlreadyJudged,
    ClientIdReused,
    DatabaseUnavailable,
    LeaseExpired,
    LeaseInvalid,
    NotFound,
    QueryFull,
)
from .models import (
    Choice,
    Judgment,
    Lease,
    Project,
    Query,
    QuerySource,
    QueryStatus,
)
from .selectors import servable_pair, servable_queries
from .signals import judgment_recorded

_swap_coin = random.SystemRandom()
logger = logging.getLogger(__name__)


_CONNECTION_ERRORS = (OperationalError, InterfaceError)


@contextlib.contextmanager
def _connection_loss_is_retryable(what: str) -> Iterator[None]:
    """A broken database connection becomes a clear, retryable 503 instead of a 500; the connection is closed,
    so the rest of the request (and the next one) reconnects — Django reconnects a closed connection, never a
    broken one."""
    try:
        yield
    except _CONNECTION_ERRORS as error:
        logger.warning("database connection lost while %s: %s", what, error)
        if not connection.in_atomic_block:
            connection.close()
        raise DatabaseUnavailable(f"the database connection was lost while {what}; please try again") from error


class NothingToDo:
    """Why there is no next query, in words the annotator page and API clients can show."""

    DONE = "done"
    LEASED_BY_OTHERS = "leased_by_others"
    WAITING = "waiting_for_next_iteration"
    PAIRWISE_OFF = "pairwise_feedback_off"
    PROJECT_PAUSED = "project_paused"
    NOT_QUALIFIED = "not_qualified"

    MESSAGES = {
        DONE: "You have answered every question in this project. Thank you!",
        LEASED_BY_OTHERS: "The remaining questions are being answered by others right now. Try again in a minute.",
        WAITING: "New clips are being prepared for the next round. Check back soon.",
        PAIRWISE_OFF: "This project collects factor rankings only.",
        PROJECT_PAUSED: "This project is paused.",
        NOT_QUALIFIED: "Thank you for trying the qualification questions. Your answers did not reach the accuracy "
        "this project needs, so there is no more work for you here.",
    }


@dataclass(frozen=True)
class NextQuery:
    lease: Lease | None
    reason: str | None

    @property
    def message(self) -> str | None:
        return NothingToDo.MESSAGES.get(self.reason) if self.reason else None


def _live_leases_by_others(annotator: User, now) -> Subquery:
    return Subquery(
        Lease.objects.filter(query=OuterRef("pk"), expires_at__gt=now)
        .exclude(annotator=annotator)
        .order_by()
        .values("query")
        .annotate(n=Count("id"))
        .values("n"),
        output_field=IntegerField(),
    )


def lease_next_query(*, project: Project, annotator: User) -> NextQuery:
    """Lease the annotator's next query, or say why there is none. One short transaction."""
    with _connection_loss_is_retryable("choosing your next query"):
        return _lease_next_query(project=project, annotator=annotator)


def _lease_next_query(*, project: Project, annotator: User) -> NextQuery:
    if not project.has_pairwise:
        return NextQuery(None, NothingToDo.PAIRWISE_OFF)
    if project.status == "paused":
        return NextQuery(None, NothingToDo.PROJECT_PAUSED)
    now = timezone.now()
    ttl = timedelta(seconds=project.lease_ttl_seconds)
    with transaction.atomic():
        # Resume: a live lease this annotator already holds (a reload, a second tab) is served again.
        held, repeat_open = _held_lease(project=project, annotator=annotator, now=now)
        if held is not None:
            held.extend(project.lease_ttl_seconds)
            return NextQuery(held, None)

        # Quality control first: qualification, due repeats (sides reversed), gold questions at their rate.
        # Skipped when it can only answer "nothing special" (no qualification, no open repeat, gold off): it
        # costs a query per request otherwise.
        if project.qualification_size > 0 or project.gold_rate > 0 or repeat_open:
            special = quality_control.special_query_for(project=project, annotator=annotator)
        else:
            special = quality_control.Special()
        if special.not_qualified:
            return NextQuery(None, NothingToDo.NOT_QUALIFIED)
        if special.query is not None:
            swapped = special.swapped if special.swapped is not None else _swap_coin.random() < 0.5
            return NextQuery(_lease(special.query, annotator, now=now, ttl=ttl, swapped=swapped), None)

        # Ordinary work, in serving order. The lease is inserted only if the query still has room when read
        # again (on PostgreSQL a lease that another annotator committed after the candidate's statement began is
        # invisible to that statement, and the row lock alone does not make it re-check the lease count);
        # otherwise the next candidate is tried.
        for _attempt in range(_LEASE_ATTEMPTS):
            query = _next_candidate(project=project, annotator=annotator, now=now)
            if query is None:
                return NextQuery(None, _why_nothing(project=project, annotator=annotator))
            lease = _lease_if_room(query, annotator, now=now, ttl=ttl, swapped=_swap_coin.random() < 0.5)
            if lease is not None:
                return NextQuery(lease, None)
        return NextQuery(None, NothingToDo.LEASED_BY_OTHERS)


_LEASE_ATTEMPTS = 5


def _held_lease(*, project: Project, annotator: User, now) -> tuple[Lease | None, bool]:
    """The annotator's oldest live lease on an open query of the project, with its query, and whether an open
    repeat is assigned to them (so the quality step can be skipped when it has nothing to do)."""
    held = (
        Lease.objects.select_related("query")
        .filter(annotator=annotator, query__project=project, query__status=QueryStatus.OPEN, expires_at__gt=now)
        .order_by("created_at")
        .first()
    )
    repeat_open = Query.objects.filter(
        project=project, assigned_to=annotator, source=QuerySource.REPEAT, status=QueryStatus.OPEN
    ).exists()
    return held, repeat_open


def _candidates(*, project: Project, annotator: User, now) -> QuerySet[Query]:
    """Open ordinary (random/active) queries of the project with both clips ready, not answered nor skipped by
    this annotator, answers + others' live leases below the overlap, in serving order (the partial serving index
    covers it). The rule, written once for every database."""
    answered = Judgment.objects.filter(query=OuterRef("pk"), annotator=annotator)
    skipped = Lease.objects.filter(query=OuterRef("pk"), annotator=annotator, skipped=True)
    return (
        servable_queries(project)
        .exclude(Exists(answered))
        .exclude(Exists(skipped))
        .annotate(live=Coalesce(_live_leases_by_others(annotator, now), Value(0)))
        .filter(answers_wanted__gt=F("answers_given") + F("live"))
        .order_by("-priority", "random_key")
    )


@dataclass(frozen=True)
class _CompiledCandidates:
    sql: str
    params: tuple[Any, ...]
    roles: tuple[str | None, ...]  # per parameter: "project", "annotator", "now", or None (a constant)


# The candidate query's SQL depends on its shape only, never on the project, the annotator or the time, so it is
# compiled once per process and database from ``_candidates`` with stand-in values, and each call runs it with its
# own values. Compiling it cost several milliseconds of every next-query request (bench/README.md, serving).
_STAND_IN_PROJECT, _STAND_IN_ANNOTATOR = -(2**40) - 11, -(2**40) - 13
_STAND_IN_NOW = datetime(1999, 12, 31, 23, 59, 58, 123457, tzinfo=UTC)
_compiled_candidates: dict[str, _CompiledCandidates] = {}


def _compiled(using: str) -> _CompiledCandidates:
    compiled = _compiled_candidates.get(using)
    if compiled is None:
        stand_ins = _candidates(
            project=Project(pk=_STAND_IN_PROJECT), annotator=User(pk=_STAND_IN_ANNOTATOR), now=_STAND_IN_NOW
        )
        sql, params = locking.lockable_first(stand_ins).query.sql_with_params()
        adapted_now = connections[using].ops.adapt_datetimefield_value(_STAND_IN_NOW)
        by_value = {_STAND_IN_PROJECT: "project", _STAND_IN_ANNOTATOR: "annotator"}
        roles = tuple(
            "now" if param == adapted_now else by_value.get(param) if isinstance(param, int) else None
            for param in params
        )
        if {"project", "annotator", "now"} - set(roles):
            raise RuntimeError("the candidate query's parameters could not be told apart; compile it per call")
        compiled = _compiled_candidates[using] = _CompiledCandidates(sql, tuple(params), roles)
    return compiled


def _next_candidate(*, project: Project, annotator: User, now) -> Query | None:
    """The next ordinary query for this annotator in serving order (``_candidates``), locked until commit."""
    compiled = _compiled(connection.alias)
    values = {
        "project": project.pk,
        "annotator": annotator.pk,
        "now": connection.ops.adapt_datetimefield_value(now),
    }
    params = [values[role] if role else param for param, role in zip(compiled.params, compiled.roles, strict=True)]
    return next(iter(Query.objects.raw(compiled.sql, params)), None)


def _lease_if_room(query: Query, annotator: User, *, now, ttl: timedelta, swapped: bool) -> Lease | None:
    """``_lease``, done only if others' live leases (read now, under the query's lock) leave room on ``query``."""
    others = Lease.objects.filter(query=query, expires_at__gt=now).exclude(annotator=annotator).count()
    if query.answers_given + others >= query.answers_wanted:
        return None
    return _lease(query, annotator, now=now, ttl=ttl, swapped=swapped)


def _lease(query: Query, annotator: User, *, now, ttl: timedelta, swapped: bool) -> Lease:
    """A fresh lease of ``query`` for ``annotator``: their old (expired) row renewed, else a new row.

    Callers hold the query's lock (or SQLite's write lock), so no other transaction leases this pair meanwhile;
    the UPDATE-then-INSERT costs two statements where ``update_or_create`` costs six (a locking read and two
    savepoints), on the path every annotator takes for every pair.
    """
    fields = {
        "token": uuid.uuid4(),
        "swapped": swapped,
        "created_at": now,
        "heartbeat_at": now,
        "expires_at": now + ttl,
    }
    renewed = Lease.objects.filter(query=query, annotator=annotator).update(**fields)
    if renewed:
        lease = Lease.objects.get(query=query, annotator=annotator)
    else:
        lease = Lease.objects.create(query=query, annotator=annotator, **fields)
    lease.query = query
    return lease


def _why_nothing(*, project: Project, annotator: User) -> str:
    unanswered = Query.objects.filter(
        project=project, status=QueryStatus.OPEN, source__in=[QuerySource.RANDOM, QuerySource.ACTIVE]
    ).exclude(Exists(Judgment.objects.filter(query=OuterRef("pk"), annotator=annotator)))
    unanswered = unanswered.exclude(
        Exists(Lease.objects.filter(query=OuterRef("pk"), annotator=annotator, skipped=True))
    )
    ready = unanswered.filter(servable_pair())
    if ready.exists():
        return NothingToDo.LEASED_BY_OTHERS
    if unanswered.exists() or pending_work.work_pending(project):
        return NothingToDo.WAITING
    return NothingToDo.DONE


def lease_heartbeat(*, token: uuid.UUID, annotator: User) -> Lease:
    """Extend a live lease while the page is open. An expired lease cannot be revived: fetch the next query."""
    lease = Lease.objects.select_related("query__project").filter(token=token, annotator=annotator).first()
    if lease is None:
        raise LeaseInvalid("this lease does not exist or is not yours")
    if not lease.is_live:
        raise LeaseExpired("this lease has expired; ask for the next query")
    lease.extend(lease.query.project.lease_ttl_seconds)
    return lease


def lease_skip(*, token: uuid.UUID, annotator: User) -> bool:
    """Skip a leased pair: it goes back to the others and is never offered to this annotator again."""
    updated = Lease.objects.filter(token=token, annotator=annotator, skipped=False).update(
        skipped=True, expires_at=timezone.now()
    )
    return updated > 0


def lease_release(*, token: uuid.UUID, annotator: User) -> bool:
    """Give a query back (the annotator left the page). Returns whether a lease was released."""
    deleted, _ = Lease.objects.filter(token=token, annotator=annotator).delete()
    return deleted > 0


def leases_sweep_expired() -> int:
    """Delete expired leases; they no longer count against a query's overlap anyway, this keeps the table small."""
    deleted, _ = Lease.objects.filter(expires_at__lte=timezone.now(), skipped=False).delete()
    return deleted


@dataclass(frozen=True)
class JudgmentResult:
    judgment: Judgment
    created: bool


def judgment_submit(
    *,
    query_id: int,
    annotator: User,
    choice: str,
    lease_token: uuid.UUID,
    client_id: uuid.UUID,
    time_spent_ms: int | None = None,
) -> JudgmentResult:
    """Record an annotator's answer. Idempotent on ``client_id``: a retry returns the first judgment.

    Refuses (409) a second, different answer to the same query, an answer without its author's live lease,
    and any answer beyond the query's overlap.
    """
    if choice not in Choice.values:
        raise ValueError(f"unknown choice {choice!r}")
    with _connection_loss_is_retryable("recording your answer (send it again with the same client_id)"):
        result = _judgment_record(
            query_id=query_id,
            annotator=annotator,
            choice=choice,
            lease_token=lease_token,
            client_id=client_id,
            time_spent_ms=time_spent_ms,
        )
    if result.created:
        # Listeners (the trainer starts an iteration waiting for its label budget) hear of it after commit.
        judgment = result.judgment
        transaction.on_commit(lambda: _announce_judgment(judgment))
    return result


def _announce_judgment(judgment: Judgment) -> None:
    """Tell listeners; the judgment is committed by now, so losing the database here must not turn the answer
    into an error (the client would be told it failed). What the listeners would have done, the trainer's beat
    sweep catches up on (it starts iterations whose label budget is met)."""
    try:
        judgment_recorded.send(sender=Judgment, judgment=judgment)
    except _CONNECTION_ERRORS as error:
        logger.warning("judgment %s is recorded, but its listeners lost the database: %s", judgment.pk, error)
        if not connection.in_atomic_block:
            connection.close()


def _judgment_record(
    *,
    query_id: int,
    annotator: User,
    choice: str,
    lease_token: uuid.UUID,
    client_id: uuid.UUID,
    time_spent_ms: int | None,
) -> JudgmentResult:
    try:
        with transaction.atomic():
            # The query's lock orders concurrent submissions for it; everything below reads fresh state.
            # (The project comes along for the quality step at the end, which reads it.)
            query = locking.lock_query(query_id)
            if query is None:
                raise NotFound("no such query")
            replay = Judgment.objects.filter(annotator=annotator, client_id=client_id).first()
            if replay is not None:
                if replay.query_id == query.pk and replay.choice == choice:
                    return JudgmentResult(replay, created=False)
                raise ClientIdReused("this client_id was already used for a different judgment")
            if Judgment.objects.filter(query=query, annotator=annotator).exists():
                raise AlreadyJudged("you have already answered this query")
            lease = Lease.objects.filter(query=query, annotator=annotator, token=lease_token).first()
            if lease is None:
                raise LeaseInvalid("no lease of yours matches this query; ask for the next query")
            if not lease.is_live:
                raise LeaseExpired("your lease on this query has expired; ask for the next query")
            if query.status != QueryStatus.OPEN or query.answers_given >= query.answers_wanted:
                raise QueryFull("this query has all the answers it needs")
            judgment = Judgment.objects.create(
                query=query,
                annotator=annotator,
                choice=choice,
                swapped=lease.swapped,
                time_spent_ms=time_spent_ms,
                client_id=client_id,
            )
            query.answers_given += 1
            if query.answers_given >= query.answers_wanted:
                query.status = QueryStatus.COMPLETE
            query.save(update_fields=["answers_given", "status"])
            lease.delete()
            judgment.query = query
            quality_control.repeat_maybe_schedule(judgment=judgment)
            return JudgmentResult(judgment, created=True)
    except IntegrityError:
        # A concurrent duplicate slipped past the checks (only possible without row locks); the unique
        # constraints refused it, so answer as the winner would have.
        replay = Judgment.objects.filter(annotator=annotator, client_id=client_id).first()
        if replay is not None and replay.query_id == query_id and replay.choice == choice:
            return JudgmentResult(replay, created=False)
        raise AlreadyJudged("you have already answered this query") from None
