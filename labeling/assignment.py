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

import contextlib
import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Subquery, Value, signals
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import User

from . import pending_work, quality_control
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
    Clip,
    Job,
    JobStatus,
    Judgment,
    Lease,
    Project,
    Query,
    QuerySource,
    QueryStatus,
    RenderStatus,
)
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

        # Ordinary work, in serving order. Raw SQL (the ORM's compile cost was a large share of a request's CPU):
        # the same filter as before — open random/active queries of the project, both clips ready, not answered
        # nor skipped by this annotator, answers + others' live leases below the overlap — on the partial serving index.
        # The lease is inserted only if the query still has room when read with a fresh snapshot (a lease that
        # another annotator committed after this statement began is invisible to it; the row lock alone does not
        # make PostgreSQL re-check the lease count), otherwise the next candidate is tried.
        for _attempt in range(_LEASE_ATTEMPTS):
            query = _next_candidate(project=project, annotator=annotator, now=now)
            if query is None:
                return NextQuery(None, _why_nothing(project=project, annotator=annotator))
            lease = _lease_if_room(query, annotator, now=now, ttl=ttl, swapped=_swap_coin.random() < 0.5)
            if lease is not None:
                return NextQuery(lease, None)
        return NextQuery(None, NothingToDo.LEASED_BY_OTHERS)


_LEASE_ATTEMPTS = 5


def _columns(model, alias: str) -> tuple[list[str], str]:
    fields = model._meta.concrete_fields
    return [f.attname for f in fields], ", ".join(f'{alias}."{f.column}"' for f in fields)


def _next_candidate(*, project: Project, annotator: User, now) -> Query | None:
    if connection.vendor != "postgresql":
        return _next_candidate_portable(project=project, annotator=annotator, now=now)
    names, cols = _columns(Query, "q")
    sql = f"""
        SELECT {cols}
        FROM {Query._meta.db_table} q
        WHERE q.project_id = %(project)s
          AND q.status = %(open)s
          AND q.source IN (%(random)s, %(active)s)
          AND EXISTS (SELECT 1 FROM {Clip._meta.db_table} c WHERE c.id = q.clip_a_id AND c.render_status = %(ready)s)
          AND EXISTS (SELECT 1 FROM {Clip._meta.db_table} c WHERE c.id = q.clip_b_id AND c.render_status = %(ready)s)
          AND NOT EXISTS (SELECT 1 FROM {Judgment._meta.db_table} j
                          WHERE j.query_id = q.id AND j.annotator_id = %(annotator)s)
          AND NOT EXISTS (SELECT 1 FROM {Lease._meta.db_table} s
                          WHERE s.query_id = q.id AND s.annotator_id = %(annotator)s AND s.skipped)
          AND q.answers_wanted > q.answers_given + (
                SELECT count(*) FROM {Lease._meta.db_table} l
                WHERE l.query_id = q.id AND l.expires_at > %(now)s AND l.annotator_id <> %(annotator)s)
        ORDER BY q.priority DESC, q.random_key
        LIMIT 1
        FOR UPDATE OF q SKIP LOCKED
    """
    params = {
        "project": project.pk,
        "open": QueryStatus.OPEN.value,
        "random": QuerySource.RANDOM.value,
        "active": QuerySource.ACTIVE.value,
        "ready": RenderStatus.READY.value,
        "annotator": annotator.pk,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return None if row is None else Query.from_db(connection.alias, names, row)


def _lease_if_room(query: Query, annotator: User, *, now, ttl: timedelta, swapped: bool) -> Lease | None:
    """``_lease`` (update_or_create) in one statement, done only if others' live leases leave room on ``query``."""
    if connection.vendor != "postgresql":
        return _lease_if_room_portable(query, annotator, now=now, ttl=ttl, swapped=swapped)
    lease = Lease(
        query=query, annotator=annotator, token=uuid.uuid4(), swapped=swapped,
        created_at=now, heartbeat_at=now, expires_at=now + ttl,
    )  # fmt: skip
    signals.pre_save.send(sender=Lease, instance=lease, raw=False, using=connection.alias, update_fields=None)
    fields = [f for f in Lease._meta.concrete_fields if not f.primary_key]
    values = [f.get_db_prep_save(f.pre_save(lease, True), connection) for f in fields]
    updated = {"token", "swapped", "created_at", "heartbeat_at", "expires_at"}  # update_or_create's defaults
    names, returning = _columns(Lease, Lease._meta.db_table)
    table = Lease._meta.db_table
    sql = f"""
        INSERT INTO {table} ({", ".join(f'"{f.column}"' for f in fields)})
        SELECT {", ".join(["%s"] * len(fields))}
        WHERE %s > %s + (SELECT count(*) FROM {table} l
                         WHERE l.query_id = %s AND l.expires_at > %s AND l.annotator_id <> %s)
        ON CONFLICT (query_id, annotator_id) DO UPDATE SET
            {", ".join(f'"{f.column}" = EXCLUDED."{f.column}"' for f in fields if f.name in updated)}
        RETURNING {returning}, (xmax = 0)
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, query.answers_wanted, query.answers_given, query.pk, now, annotator.pk])
        row = cursor.fetchone()
    if row is None:
        return None
    saved = Lease.from_db(connection.alias, names, row[:-1])
    saved.query = query
    saved.annotator = annotator
    signals.post_save.send(
        sender=Lease, instance=saved, created=bool(row[-1]), update_fields=None, raw=False, using=connection.alias
    )
    return saved


def _held_lease(*, project: Project, annotator: User, now) -> tuple[Lease | None, bool]:
    """The annotator's oldest live lease on an open query of the project, with its query, and whether an open
    repeat is assigned to them (so the quality step can be skipped when it has nothing to do). One SELECT."""
    if connection.vendor != "postgresql":
        return _held_lease_portable(project=project, annotator=annotator, now=now)
    lease_names, lease_cols = _columns(Lease, "l")
    query_names, query_cols = _columns(Query, "q")
    sql = f"""
        SELECT EXISTS (SELECT 1 FROM {Query._meta.db_table} r
                       WHERE r.assigned_to_id = %(annotator)s AND r.project_id = %(project)s
                         AND r.source = %(repeat)s AND r.status = %(open)s),
               held.*
        FROM (VALUES (1)) AS one (x)
        LEFT JOIN LATERAL (
            SELECT {lease_cols}, {query_cols}
            FROM {Lease._meta.db_table} l JOIN {Query._meta.db_table} q ON q.id = l.query_id
            WHERE l.annotator_id = %(annotator)s AND q.project_id = %(project)s AND q.status = %(open)s
              AND l.expires_at > %(now)s
            ORDER BY l.created_at
            LIMIT 1
        ) AS held ON true
    """
    params = {
        "annotator": annotator.pk,
        "project": project.pk,
        "open": QueryStatus.OPEN.value,
        "repeat": QuerySource.REPEAT.value,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        repeat_due, *row = cursor.fetchone()
    if row[0] is None:
        return None, repeat_due
    held = Lease.from_db(connection.alias, lease_names, row[: len(lease_names)])
    held.query = Query.from_db(connection.alias, query_names, row[len(lease_names) :])
    return held, repeat_due


# --- The same three steps through the ORM, for SQLite (the embedded demo). There every transaction holds the
# database's write lock from BEGIN (transaction_mode=IMMEDIATE), so no row locks are needed for the same guarantees.
def _next_candidate_portable(*, project: Project, annotator: User, now) -> Query | None:
    answered = Judgment.objects.filter(query=OuterRef("pk"), annotator=annotator)
    skipped = Lease.objects.filter(query=OuterRef("pk"), annotator=annotator, skipped=True)
    return (
        Query.objects.filter(
            project=project,
            status=QueryStatus.OPEN,
            source__in=[QuerySource.RANDOM, QuerySource.ACTIVE],
            clip_a__render_status=RenderStatus.READY,
            clip_b__render_status=RenderStatus.READY,
        )
        .exclude(Exists(answered))
        .exclude(Exists(skipped))
        .annotate(live=Coalesce(_live_leases_by_others(annotator, now), Value(0)))
        .filter(answers_wanted__gt=F("answers_given") + F("live"))
        .order_by("-priority", "random_key")
        .first()
    )


def _lease_if_room_portable(query: Query, annotator: User, *, now, ttl: timedelta, swapped: bool) -> Lease | None:
    others = Lease.objects.filter(query=query, expires_at__gt=now).exclude(annotator=annotator).count()
    if query.answers_given + others >= query.answers_wanted:
        return None
    return _lease(query, annotator, now=now, ttl=ttl, swapped=swapped)


def _held_lease_portable(*, project: Project, annotator: User, now) -> tuple[Lease | None, bool]:
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
    unanswered = unanswered.exclude(
        Exists(Lease.objects.filter(query=OuterRef("pk"), annotator=annotator, skipped=True))
    )
    ready = unanswered.filter(clip_a__render_status=RenderStatus.READY, clip_b__render_status=RenderStatus.READY)
    if ready.exists():
        return NothingToDo.LEASED_BY_OTHERS
    if (
        unanswered.exists()
        or Job.objects.filter(project=project, status__in=[JobStatus.QUEUED, JobStatus.RUNNING]).exists()
        or pending_work.work_pending(project)
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
    submit = _judgment_submit_postgres if connection.vendor == "postgresql" else _judgment_submit_portable
    with _connection_loss_is_retryable("recording your answer (send it again with the same client_id)"):
        result = submit(
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


def _judgment_submit_postgres(
    *,
    query_id: int,
    annotator: User,
    choice: str,
    lease_token: uuid.UUID,
    client_id: uuid.UUID,
    time_spent_ms: int | None = None,
) -> JudgmentResult:
    # SQLite uses the ORM version below, serialised by IMMEDIATE transactions.
    if choice not in Choice.values:
        raise ValueError(f"unknown choice {choice!r}")
    try:
        with transaction.atomic():
            # The row lock orders concurrent submissions for one query; everything below reads fresh state.
            # (The project comes along for the quality step below, which reads it.)
            query = Query.objects.select_related("project").select_for_update(of=("self",)).filter(pk=query_id).first()
            if query is None:
                raise NotFound("no such query")
            client_id = Judgment._meta.get_field("client_id").get_db_prep_value(client_id, connection)
            lease_token = Lease._meta.get_field("token").get_db_prep_value(lease_token, connection)
            # One statement for the checks (a fresh snapshot, taken after the lock): replay, already judged, lease.
            lease_names, lease_cols = _columns(Lease, "l")
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    SELECT r.id, r.query_id, r.choice,
                           EXISTS (SELECT 1 FROM {Judgment._meta.db_table} x
                                   WHERE x.query_id = %(query)s AND x.annotator_id = %(annotator)s),
                           {lease_cols}
                    FROM (VALUES (1)) AS one (x)
                    LEFT JOIN {Judgment._meta.db_table} r
                           ON r.annotator_id = %(annotator)s AND r.client_id = %(client_id)s
                    LEFT JOIN {Lease._meta.db_table} l
                           ON l.query_id = %(query)s AND l.annotator_id = %(annotator)s AND l.token = %(token)s
                    """,
                    {"query": query.pk, "annotator": annotator.pk, "client_id": client_id, "token": lease_token},
                )
                replay_id, replay_query_id, replay_choice, judged, *lease_row = cursor.fetchone()
            if replay_id is not None:
                if replay_query_id == query.pk and replay_choice == choice:
                    return JudgmentResult(Judgment.objects.get(pk=replay_id), created=False)
                raise ClientIdReused("this client_id was already used for a different judgment")
            if judged:
                raise AlreadyJudged("you have already answered this query")
            if lease_row[0] is None:
                raise LeaseInvalid("no lease of yours matches this query; ask for the next query")
            lease = Lease.from_db(connection.alias, lease_names, lease_row)
            if not lease.is_live:
                raise LeaseExpired("your lease on this query has expired; ask for the next query")
            if query.status != QueryStatus.OPEN or query.answers_given >= query.answers_wanted:
                raise QueryFull("this query has all the answers it needs")
            judgment = Judgment(
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
            # The three writes (judgment, query, lease) in one statement; model signals are sent as the ORM would.
            db = connection.alias
            query_fields = frozenset(["answers_given", "status"])
            signals.pre_save.send(sender=Judgment, instance=judgment, raw=False, using=db, update_fields=None)
            signals.pre_save.send(sender=Query, instance=query, raw=False, using=db, update_fields=query_fields)
            signals.pre_delete.send(sender=Lease, instance=lease, using=db, origin=lease)
            fields = [f for f in Judgment._meta.concrete_fields if not f.primary_key]
            values = [f.get_db_prep_save(f.pre_save(judgment, True), connection) for f in fields]
            with connection.cursor() as cursor:
                cursor.execute(
                    f"""
                    WITH j AS (INSERT INTO {Judgment._meta.db_table} ({", ".join(f'"{f.column}"' for f in fields)})
                               VALUES ({", ".join(["%s"] * len(fields))}) RETURNING id),
                         u AS (UPDATE {Query._meta.db_table} SET answers_given = %s, status = %s WHERE id = %s),
                         d AS (DELETE FROM {Lease._meta.db_table} WHERE id = %s)
                    SELECT id FROM j
                    """,
                    [*values, query.answers_given, query.status, query.pk, lease.pk],
                )
                judgment.pk = cursor.fetchone()[0]
            judgment._state.adding = False
            judgment._state.db = db
            signals.post_save.send(
                sender=Judgment, instance=judgment, created=True, update_fields=None, raw=False, using=db
            )
            signals.post_save.send(
                sender=Query, instance=query, created=False, update_fields=query_fields, raw=False, using=db
            )
            signals.post_delete.send(sender=Lease, instance=lease, using=db, origin=lease)
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


def _judgment_submit_portable(
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
