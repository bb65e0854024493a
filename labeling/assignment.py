"""The assignment engine: which query an annotator sees next, and how their answer is recorded.

PostgreSQL: one short transaction per request. The next query is picked with ``SELECT … FOR UPDATE SKIP
LOCKED LIMIT 1`` over open queries this annotator has not answered and whose answers + live leases are below
the overlap, in serving order (priority, then an indexed random key); the lease is inserted in the same
transaction. SQLite has no row locks, so every transaction there takes the database's write lock at BEGIN
(``transaction_mode=IMMEDIATE`` in settings), which gives the same guarantees by serialising writers.

The hard guarantee — a query never receives more judgments than its overlap, and an annotator answers a
query at most once — is enforced where judgments are written: under the query's row lock, with unique
constraints as the last line of defence.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User

from . import quality_control
from .errors import AlreadyJudged, ClientIdReused, LeaseExpired, LeaseInvalid, NotFound, QueryFull
from .models import Choice, Job, JobStatus, Judgment, Lease, Project, Query, QuerySource, QueryStatus, RenderStatus

_swap_coin = random.SystemRandom()


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
    if not project.has_pairwise:
        return NextQuery(None, NothingToDo.PAIRWISE_OFF)
    if project.status == "paused":
        return NextQuery(None, NothingToDo.PROJECT_PAUSED)
    now = timezone.now()
    ttl = timedelta(seconds=project.lease_ttl_seconds)
    with transaction.atomic():
        # Resume: a live lease this annotator already holds (a reload, a second tab) is served again.
        held = (
            Lease.objects.select_related("query")
            .filter(annotator=annotator, query__project=project, query__status=QueryStatus.OPEN, expires_at__gt=now)
            .order_by("created_at")
            .first()
        )
        if held is not None:
            held.extend(project.lease_ttl_seconds)
            return NextQuery(held, None)

        # Quality control first: qualification, due repeats (sides reversed), gold questions at their rate.
        special = quality_control.special_query_for(project=project, annotator=annotator)
        if special.not_qualified:
            return NextQuery(None, NothingToDo.NOT_QUALIFIED)
        if special.query is not None:
            swapped = special.swapped if special.swapped is not None else _swap_coin.random() < 0.5
            return NextQuery(_lease(special.query, annotator, now=now, ttl=ttl, swapped=swapped), None)

        answered = Judgment.objects.filter(query=OuterRef("pk"), annotator=annotator)
        candidates = (
            Query.objects.filter(
                project=project,
                status=QueryStatus.OPEN,
                # Only pairs whose videos exist can be shown.
                clip_a__render_status=RenderStatus.READY,
                clip_b__render_status=RenderStatus.READY,
                # Gold questions and repeats are served by the quality step above, at their own rates.
                source__in=[QuerySource.RANDOM, QuerySource.ACTIVE],
            )
            .exclude(Exists(answered))
            .annotate(live=Coalesce(_live_leases_by_others(annotator, now), Value(0)))
            .filter(answers_wanted__gt=F("answers_given") + F("live"))
            .order_by("-priority", "random_key")
        )
        query = candidates.select_for_update(skip_locked=True, of=("self",)).first()
        if query is None:
            return NextQuery(None, _why_nothing(project=project, annotator=annotator))
        return NextQuery(_lease(query, annotator, now=now, ttl=ttl, swapped=_swap_coin.random() < 0.5), None)


def _lease(query: Query, annotator: User, *, now, ttl: timedelta, swapped: bool) -> Lease:
    lease, _ = Lease.objects.update_or_create(
        query=query,
        annotator=annotator,
        defaults={
            "token": uuid.uuid4(),
            "swapped": swapped,
            "created_at": now,
            "heartbeat_at": now,
            "expires_at": now + ttl,
        },
    )
    lease.query = query
    return lease


def _why_nothing(*, project: Project, annotator: User) -> str:
    unanswered = Query.objects.filter(
        project=project, status=QueryStatus.OPEN, source__in=[QuerySource.RANDOM, QuerySource.ACTIVE]
    ).exclude(Exists(Judgment.objects.filter(query=OuterRef("pk"), annotator=annotator)))
    ready = unanswered.filter(clip_a__render_status=RenderStatus.READY, clip_b__render_status=RenderStatus.READY)
    if ready.exists():
        return NothingToDo.LEASED_BY_OTHERS
    if (
        unanswered.exists()
        or Job.objects.filter(project=project, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists()
    ):
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


def lease_release(*, token: uuid.UUID, annotator: User) -> bool:
    """Give a query back (the annotator left the page). Returns whether a lease was released."""
    deleted, _ = Lease.objects.filter(token=token, annotator=annotator).delete()
    return deleted > 0


def leases_sweep_expired() -> int:
    """Delete expired leases; they no longer count against a query's overlap anyway, this keeps the table small."""
    deleted, _ = Lease.objects.filter(expires_at__lte=timezone.now()).delete()
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
    try:
        with transaction.atomic():
            # The row lock orders concurrent submissions for one query; everything below reads fresh state.
            query = Query.objects.select_for_update().filter(pk=query_id).first()
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
