"""The one thing the assignment engine does differently per database: how a row is locked.

``labeling.assignment`` writes its rules once (which query is next, when a lease may be taken, when an answer is
accepted) as ORM querysets and hands them here to be locked:

- PostgreSQL has row locks. The next candidate is taken with ``SELECT … FOR UPDATE OF <query> SKIP LOCKED LIMIT 1``,
  so concurrent annotators pass over a query another transaction is leasing instead of queueing behind it; a
  query that an answer is being recorded for is locked with ``SELECT … FOR UPDATE``, which orders concurrent
  answers to it. Statements run under READ COMMITTED, so whatever the engine reads after taking a lock is fresh.
- SQLite has none. Every transaction takes the database's write lock at BEGIN (``transaction_mode=IMMEDIATE`` in
  settings), so transactions that write are serialised and a plain read inside one is as good as a lock.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import QuerySet

from .models import Query


def _row_locks() -> bool:
    return bool(connection.features.has_select_for_update)


def lockable_first(candidates: QuerySet[Query]) -> QuerySet[Query]:
    """The first of ``candidates`` (in their order) that no other transaction holds, to be locked until commit
    when it is read (a one-row queryset; the assignment engine compiles it once and runs its SQL)."""
    if _row_locks():
        candidates = candidates.select_for_update(skip_locked=True, of=("self",))
    return candidates[:1]


def lock_query(query_id: int) -> Query | None:
    """The query (with its project) locked until commit, waiting for a transaction that holds it; None if none."""
    queries = Query.objects.select_related("project").filter(pk=query_id)
    if _row_locks():
        queries = queries.select_for_update(of=("self",))
    return queries.first()
