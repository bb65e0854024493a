"""The loop's state machine: create, start, pause, resume and cancel iterations, and run their steps.

An iteration moves queued → building preferences → training reward → training policy → rolling out →
rendering → publishing → done (or failed / cancelled). Each step is one Celery task on its queue
(``default``, ``train`` or ``render``); a finished step hands the iteration to the next step's task after
its transaction commits, so the tasks form a chain across queues, and pausing just means not sending the
next link.

Delivery is at least once (``acks_late`` + ``reject_on_worker_lost``; a task whose worker died comes back).
So a step *claims* its iteration with a conditional update (state matches, not paused, nobody holding a
fresh heartbeat); the holder heartbeats while it works; a second delivery of a step someone is still
working on retries later instead of running it again; and a step whose worker died (stale heartbeat)
is claimed again, by the redelivered task or by the beat sweep, and starts over, first deleting what
the dead attempt left behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from enum import Enum
from typing import Any

from celery import current_app
from django.conf import settings as django_settings
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Max, Q
from django.utils import timezone

from accounts.models import User
from labeling import events
from labeling.errors import Conflict, ValidationFailed
from labeling.models import Judgment, Project, QuerySource
from labeling.services import send_task_by_name

from .core import envs
from .core.loop_settings import LoopSettings
from .models import FINISHED_STATES, ITERATION_STEPS, Iteration, IterationState

logger = logging.getLogger(__name__)

# One task per step, each routed to its queue in settings.CELERY_TASK_ROUTES.
STEP_TASKS: Mapping[str, str] = {
    IterationState.BUILDING_PREFERENCES: events.ITERATION_BUILD_PREFERENCES,
    IterationState.TRAINING_REWARD: events.ITERATION_TRAIN_REWARD,
    IterationState.TRAINING_POLICY: events.ITERATION_TRAIN_POLICY,
    IterationState.ROLLING_OUT: events.ITERATION_ROLL_OUT,
    IterationState.RENDERING: events.ITERATION_RENDER,
    IterationState.PUBLISHING: events.ITERATION_PUBLISH,
}
MAX_ATTEMPTS = 3  # claims of one step (its worker died each time) before the iteration fails
# The database connection broke under a step (a server restart, a failover, a killed backend). That is not the
# step's fault: the step is released and retried instead of failing the iteration.
DB_CONNECTION_ERRORS = (OperationalError, InterfaceError)


def stale_after() -> timedelta:
    seconds = django_settings.HERONRY["ITERATION_STALE_SECONDS"]
    assert isinstance(seconds, int)  # parsed strictly in settings
    return timedelta(seconds=seconds)


def pairwise_labels(project: Project) -> int:
    """Pairwise labels that count towards label budgets (gold and repeat answers don't)."""
    return Judgment.objects.filter(
        query__project=project, query__source__in=[QuerySource.RANDOM, QuerySource.ACTIVE]
    ).count()


def iteration_in_progress(project: Project) -> bool:
    """An iteration is between its start and its end (paused included): new questions are coming."""
    return Iteration.objects.filter(project=project, state__in=ITERATION_STEPS).exists()


def _send_step(iteration_id: int, state: str) -> None:
    def send() -> None:
        try:
            send_task_by_name(STEP_TASKS[state], iteration_id, state)
        except Exception:
            if current_app.conf.task_always_eager:
                raise  # the step itself failed in-process: not a broker problem
            # The broker is down or restarting (kombu then raises OperationalError, or worse: AttributeError from
            # a half-reset channel). The state change is committed; the beat sweep sends the step once it has
            # waited past the stale limit, so nothing is lost, only delayed.
            logger.warning(
                "iteration %s: could not send %s to the broker; the sweep will resend it",
                iteration_id,
                state,
                exc_info=True,
            )

    transaction.on_commit(send)


# --- researcher actions (services) ------------------------------------------------------------------------


@transaction.atomic
def iteration_create(
    *,
    project: Project,
    created_by: User | None,
    overrides: Mapping[str, Any] | None = None,
    count: int = 1,
) -> Iteration:
    """Queue the next iteration (and ``count - 1`` follow-ups, each queued when the previous one is done).

    Ranking mode starts it now; pairwise mode starts it once the project holds ``number × label_budget``
    pairwise labels (at once if it already does).
    """
    if project.env_id not in envs.PRESETS:
        raise ValidationFailed(
            f"the loop trains policies in a simulator; {project.env_id!r} has none (uploaded rollouts only)"
        )
    if not 1 <= count <= 100:
        raise ValidationFailed("count must be between 1 and 100", fields={"count": ["between 1 and 100"]})
    try:
        loop_settings = LoopSettings.from_dict(project.loop_settings).merged(overrides)
    except ValueError as error:
        raise ValidationFailed(f"invalid loop settings: {error}", fields={"settings": [str(error)]}) from None
    # One unfinished iteration per project at a time: each continues from the previous one's policy.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    if project.iterations.exclude(state__in=FINISHED_STATES).exists():
        raise Conflict("this project already has an unfinished iteration; pause, cancel or wait for it")
    iteration = _iteration_new(
        project=project, loop_settings=loop_settings, follow_ups=count - 1, created_by=created_by
    )
    iteration_maybe_start(iteration)
    return iteration


def _iteration_new(
    *, project: Project, loop_settings: LoopSettings, follow_ups: int, created_by: User | None
) -> Iteration:
    number = (project.iterations.aggregate(n=Max("number"))["n"] or 0) + 1
    previous = project.iterations.filter(state=IterationState.DONE, policy__isnull=False).order_by("-number").first()
    waits = project.has_pairwise and loop_settings.label_budget > 0 and loop_settings.policy_reward == "learned"
    try:
        with transaction.atomic():
            return Iteration.objects.create(
                project=project,
                number=number,
                settings=loop_settings.to_dict(),
                previous=previous,
                follow_ups=follow_ups,
                start_after_labels=_label_target(previous, loop_settings) if waits else None,
                created_by=created_by,
                message="Waiting for labels" if waits else "Queued",
            )
    except IntegrityError:
        raise Conflict("another iteration was created at the same moment; try again") from None


def _label_target(previous: Iteration | None, loop_settings: LoopSettings) -> int:
    """The pairwise label count at which a new iteration starts: the first waits for ``label_budget`` labels
    (the questions of the initial clip pool); a later one until the questions the previous iteration asked
    are answered, up to the budget (it may have found fewer pairs worth asking than the budget)."""
    if previous is None or "publishing" not in previous.results:
        return loop_settings.label_budget
    published = previous.results["publishing"]
    asked = int(published.get("queries", 0)) * int(published.get("overlap", 1))
    return int(published.get("labels_before", 0)) + min(loop_settings.label_budget, asked)


def iteration_maybe_start(iteration: Iteration, *, force: bool = False) -> bool:
    """Start a queued, unpaused iteration whose label budget is met (or any queued one with ``force``)."""
    if iteration.state != IterationState.QUEUED or iteration.paused:
        return False
    budget = iteration.start_after_labels
    if not force and budget is not None and pairwise_labels(iteration.project) < budget:
        return False
    now = timezone.now()
    first = ITERATION_STEPS[0]
    started = Iteration.objects.filter(pk=iteration.pk, state=IterationState.QUEUED, paused=False).update(
        state=first, started_at=now, step_since=now, heartbeat_at=None, progress=0.0, message="Starting"
    )
    if started:
        iteration.refresh_from_db()
        _send_step(iteration.pk, first)
    return bool(started)


def iteration_pause(iteration: Iteration) -> None:
    """The current step finishes; the next one waits for resume."""
    if iteration.is_finished:
        raise Conflict(f"iteration {iteration.number} is already {iteration.state}")
    Iteration.objects.filter(pk=iteration.pk).exclude(state__in=FINISHED_STATES).update(paused=True, message="Paused")
    iteration.refresh_from_db()


@transaction.atomic
def iteration_resume(iteration: Iteration, *, force: bool = False) -> None:
    """Unpause; a waiting pairwise iteration with ``force`` starts now even if its label budget isn't met."""
    if iteration.is_finished:
        raise Conflict(f"iteration {iteration.number} is already {iteration.state}")
    Iteration.objects.filter(pk=iteration.pk).update(paused=False, message="Resumed")
    iteration.refresh_from_db()
    if iteration.state == IterationState.QUEUED:
        iteration_maybe_start(iteration, force=force)
    elif iteration.heartbeat_at is None:  # between steps: send the step that was held back
        _send_step(iteration.pk, iteration.state)


def iteration_cancel(iteration: Iteration) -> None:
    """Stop for good; a worker busy on it notices at its next heartbeat and stops."""
    cancelled = (
        Iteration.objects.filter(pk=iteration.pk)
        .exclude(state__in=FINISHED_STATES)
        .update(state=IterationState.CANCELLED, message="Cancelled", finished_at=timezone.now(), heartbeat_at=None)
    )
    iteration.refresh_from_db()
    if not cancelled:
        raise Conflict(f"iteration {iteration.number} is already {iteration.state}")


def iteration_start_now(iteration: Iteration) -> None:
    """Unpause and, if it is waiting for its label budget, start it anyway."""
    iteration_resume(iteration, force=True)


def failed_step(iteration: Iteration) -> str:
    """The step a failed iteration stopped at: the first one without a result."""
    return next((step for step in ITERATION_STEPS if step not in iteration.results), ITERATION_STEPS[0])


@transaction.atomic
def iteration_retry(iteration: Iteration) -> None:
    """Run a failed iteration again from the step that failed; what its earlier steps made is kept.

    For failures that go away (a full disk, an unwritable media folder, a database or broker that was down for
    longer than the step's retries). Only the project's newest iteration, and only when nothing else is running.
    """
    if iteration.state != IterationState.FAILED:
        raise Conflict(f"iteration {iteration.number} is {iteration.state}; only a failed iteration can be retried")
    Project.objects.select_for_update().filter(pk=iteration.project_id).first()
    others = Iteration.objects.filter(project_id=iteration.project_id).exclude(pk=iteration.pk)
    if others.filter(number__gt=iteration.number).exists() or others.exclude(state__in=FINISHED_STATES).exists():
        raise Conflict("a newer or unfinished iteration exists; start a new iteration instead")
    step = failed_step(iteration)
    now = timezone.now()
    retried = Iteration.objects.filter(pk=iteration.pk, state=IterationState.FAILED).update(
        state=step,
        error="",
        paused=False,
        finished_at=None,
        step_since=now,
        heartbeat_at=None,
        attempts=0,
        progress=0.0,
        message=f"{IterationState(step).label}: queued again",
    )
    iteration.refresh_from_db()
    if retried:
        _send_step(iteration.pk, step)


# What a researcher can do to an iteration (the API, the dashboard and the admin all go through this).
ITERATION_ACTIONS: Mapping[str, Callable[[Iteration], None]] = {
    "pause": iteration_pause,
    "resume": iteration_resume,
    "start": iteration_start_now,
    "cancel": iteration_cancel,
    "retry": iteration_retry,
}


def iterations_start_waiting(project_id: int | None = None) -> int:
    """Start waiting iterations whose label budget is now met (one project's after a judgment, or all)."""
    waiting = Iteration.objects.filter(
        state=IterationState.QUEUED, paused=False, start_after_labels__isnull=False
    ).select_related("project")
    if project_id is not None:
        waiting = waiting.filter(project_id=project_id)
    return sum(iteration_maybe_start(iteration) for iteration in waiting)


# --- steps ------------------------------------------------------------------------------------------------


class IterationStopped(Exception):
    """The iteration was cancelled or taken over while this worker was on it: stop quietly."""


class StepInterrupted(Exception):
    """The step lost its database connection; its claim was released (if the database allowed) for a retry."""


class StepOutcome(Enum):
    DONE = "done"  # ran the step (successfully or not) and recorded the result
    BUSY = "busy"  # another worker holds a fresh claim on it: try again later
    GONE = "gone"  # nothing to do: the iteration moved on, is paused, finished or missing


class StepReporter:
    """Progress of the current step, written at most every ``interval`` seconds; doubles as the heartbeat."""

    def __init__(self, iteration: Iteration, state: str, interval: float = 1.0, *, claimed_at=None) -> None:
        self.iteration, self.state, self.interval = iteration, state, interval
        self._last = 0.0
        # The heartbeat values this worker may have written last (the newest write may or may not have landed
        # when the connection broke): releasing the claim matches them, so it never releases someone else's.
        self.beats = [claimed_at]

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self.interval and fraction < 1.0:
            return
        self._last = now
        fraction = min(max(float(fraction), 0.0), 1.0)
        beat = timezone.now()
        self.beats = [*self.beats[-1:], beat]
        alive = Iteration.objects.filter(pk=self.iteration.pk, state=self.state).update(
            progress=fraction, message=message[:300], heartbeat_at=beat
        )
        if not alive:
            raise IterationStopped(f"iteration {self.iteration.pk} left state {self.state}")
        self.iteration.progress, self.iteration.message = fraction, message[:300]


StepWork = Callable[[Iteration, LoopSettings, StepReporter], dict[str, Any]]


def step_run(iteration_id: int, state: str, work: StepWork) -> StepOutcome:
    """Claim ``state`` of the iteration, run ``work``, then hand over to the next step (or fail it)."""
    now = timezone.now()
    claimable = Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - stale_after())
    claimed = Iteration.objects.filter(claimable, pk=iteration_id, state=state, paused=False).update(
        heartbeat_at=now, attempts=F("attempts") + 1, progress=0.0, message="Started"
    )
    if not claimed:
        current = Iteration.objects.filter(pk=iteration_id).first()
        if current is not None and current.state == state and not current.paused:
            return StepOutcome.BUSY
        return StepOutcome.GONE
    iteration = Iteration.objects.select_related("project").get(pk=iteration_id)
    if iteration.attempts > MAX_ATTEMPTS:
        _fail(iteration, state, f"{iteration.get_state_display()} was started {MAX_ATTEMPTS} times and never finished")
        return StepOutcome.DONE
    reporter = StepReporter(iteration, state, claimed_at=now)
    try:
        loop_settings = LoopSettings.from_dict(iteration.settings)
        result = work(iteration, loop_settings, reporter)
    except IterationStopped:
        logger.info("iteration %s: stopped during %s", iteration_id, state)
        return StepOutcome.GONE
    except DB_CONNECTION_ERRORS as error:
        raise _interrupted(iteration, state, reporter, error) from error
    except Exception as error:
        logger.exception("iteration %s: %s failed", iteration_id, state)
        _fail(iteration, state, f"{type(error).__name__}: {error}")
        return StepOutcome.DONE
    try:
        _advance(iteration, state, result)
    except DB_CONNECTION_ERRORS as error:  # the transition was rolled back: the step runs again, and starts clean
        raise _interrupted(iteration, state, reporter, error) from error
    return StepOutcome.DONE


def _interrupted(iteration: Iteration, state: str, reporter: StepReporter, error: Exception) -> StepInterrupted:
    """Release the claim of a step whose database connection broke, so that a retry can claim it at once.

    Django reconnects only a *closed* connection, so the broken one is closed first. If the database is still
    away the claim stays, and the step is claimable again once its heartbeat is stale (the beat sweep resends it).
    """
    logger.warning("iteration %s: lost the database during %s (%s); releasing the step", iteration.pk, state, error)
    if not connection.in_atomic_block:
        connection.close()
        try:
            Iteration.objects.filter(pk=iteration.pk, state=state, heartbeat_at__in=reporter.beats).update(
                heartbeat_at=None, message="Database connection lost; retrying"
            )
        except DatabaseError:
            connection.close()
    return StepInterrupted(f"{IterationState(state).label}: lost the database connection: {error}")


@transaction.atomic
def _advance(iteration: Iteration, state: str, result: dict[str, Any]) -> None:
    index = ITERATION_STEPS.index(state)
    last = index == len(ITERATION_STEPS) - 1
    next_state = IterationState.DONE if last else ITERATION_STEPS[index + 1]
    now = timezone.now()
    # How many claims the step took (more than one: a worker died and the step was redelivered).
    results = {**iteration.results, state: {**result, "attempts": iteration.attempts}}
    changes: dict[str, Any] = {
        "state": next_state,
        "results": results,
        "heartbeat_at": None,
        "step_since": now,
        "attempts": 0,
        "progress": 0.0,
        "message": "Done" if last else f"{IterationState(next_state).label}: queued",
    }
    if last:
        changes["finished_at"] = now
    # Every artefact link the step made travels with the transition (set on the instance by the step).
    changes.update(
        preference_set=iteration.preference_set,
        reward_model=iteration.reward_model,
        labels_used=iteration.labels_used,
    )
    moved = Iteration.objects.filter(pk=iteration.pk, state=state).update(**changes)
    if not moved:  # cancelled meanwhile: keep the cancellation
        return
    iteration.refresh_from_db()
    if last:
        _queue_follow_up(iteration)
    elif not iteration.paused:
        _send_step(iteration.pk, next_state)


def _fail(iteration: Iteration, state: str, error: str) -> None:
    Iteration.objects.filter(pk=iteration.pk, state=state).update(
        state=IterationState.FAILED,
        error=f"{IterationState(state).label}: {error}"[:5000],
        message="Failed",
        heartbeat_at=None,
        finished_at=timezone.now(),
    )
    iteration.refresh_from_db()


def _queue_follow_up(iteration: Iteration) -> None:
    if iteration.follow_ups < 1:
        return
    follow_up = _iteration_new(
        project=iteration.project,
        loop_settings=LoopSettings.from_dict(iteration.settings),
        follow_ups=iteration.follow_ups - 1,
        created_by=iteration.created_by,
    )
    iteration_maybe_start(follow_up)


# --- the beat sweep -----------------------------------------------------------------------------------------


def iterations_sweep() -> dict[str, int]:
    """Resume steps whose worker died or whose task was lost, and start waiting iterations whose budget is met.

    Runs from the beat schedule; the broker's redelivery usually gets there first, but with Redis that can
    take up to its visibility timeout, and a message lost between commit and send only this finds.
    """
    limit = timezone.now() - stale_after()
    dead = Iteration.objects.filter(state__in=ITERATION_STEPS, paused=False).filter(
        Q(heartbeat_at__lt=limit) | Q(heartbeat_at__isnull=True, step_since__lt=limit)
    )
    resent = 0
    for iteration in dead:
        send_task_by_name(STEP_TASKS[iteration.state], iteration.pk, iteration.state)
        resent += 1
    started = iterations_start_waiting()
    return {"resent": resent, "started": started}
