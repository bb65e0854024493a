"""Taking an answer back (undo, for a short window) and revising earlier answers (history, revisions kept)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from accounts.models import User

from . import selectors
from .errors import Conflict, NotFound, ValidationFailed
from .models import Choice, Judgment, JudgmentRevision, Lease, Query, QueryStatus

UNDO_WINDOW = timedelta(seconds=30)


class UndoExpired(Conflict):
    code = "undo_expired"


def undoable_judgment(*, annotator: User, project_id: int) -> Judgment | None:
    """The annotator's last judgment in the project, if it is still young enough to take back."""
    last = (
        Judgment.objects.filter(annotator=annotator, query__project_id=project_id)
        .order_by("-created_at", "-id")
        .first()
    )
    if last is None or timezone.now() - last.created_at > UNDO_WINDOW:
        return None
    return last


@transaction.atomic
def judgment_undo(*, judgment_id: int, annotator: User) -> Lease:
    """Take back a just-given answer: the judgment goes, and the same pair comes back to its author, leased.

    Only the author's own latest judgment, within UNDO_WINDOW; later changes go through the history page.
    """
    judgment = Judgment.objects.select_related("query__project").filter(pk=judgment_id, annotator=annotator).first()
    if judgment is None:
        raise NotFound("no such judgment of yours")
    query = Query.objects.select_for_update().get(pk=judgment.query_id)
    latest = undoable_judgment(annotator=annotator, project_id=query.project_id)
    if latest is None or latest.pk != judgment.pk:
        raise UndoExpired("only your last answer can be undone, within 30 seconds; use your history instead")
    swapped = judgment.swapped
    judgment.delete()
    # The quality report's cache stamp sees new ids only; a deleted judgment must forget it.
    transaction.on_commit(lambda: selectors.quality_report_forget(query.project_id))
    transaction.on_commit(lambda: selectors.label_counts_forget(query.project_id))
    query.answers_given = max(query.answers_given - 1, 0)
    query.status = QueryStatus.OPEN
    query.save(update_fields=["answers_given", "status"])
    now = timezone.now()
    lease, _ = Lease.objects.update_or_create(
        query=query,
        annotator=annotator,
        defaults={
            "token": uuid.uuid4(),
            "swapped": swapped,  # the pair comes back exactly as it was shown
            "created_at": now - timedelta(days=1),  # served first when the page asks for its next pair
            "heartbeat_at": now,
            "expires_at": now + timedelta(seconds=query.project.lease_ttl_seconds),
        },
    )
    return lease


@transaction.atomic
def judgment_revise(*, judgment_id: int, annotator: User, choice: str) -> Judgment:
    """Change an earlier answer; the previous choice is kept as a revision."""
    if choice not in Choice.values:
        raise ValidationFailed(f"unknown choice {choice!r}", fields={"choice": [f"one of {Choice.values}"]})
    judgment = Judgment.objects.select_for_update().filter(pk=judgment_id, annotator=annotator).first()
    if judgment is None:
        raise NotFound("no such judgment of yours")
    if judgment.choice == choice:
        return judgment
    JudgmentRevision.objects.create(judgment=judgment, previous_choice=judgment.choice, new_choice=choice)
    judgment.choice = choice
    judgment.save(update_fields=["choice"])
    return judgment
