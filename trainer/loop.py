"""The run state machine: create, start, pause, resume, cancel and retry runs, and run their steps.

A run (``trainer.models.Run``) is a list of steps: a loop iteration is building preferences → training reward →
training policy → rolling out → rendering → publishing; a retrain is the first two; clip generation and a render
are one step each. A run moves queued → its steps in order → done (or failed / cancelled). Each step is one
Celery task on its queue (``default``, ``render`` or ``train``; names in ``labeling.events.STEP_TASKS``); a
finished step hands the run to the next step's task after its transaction commits, so the tasks form a chain
across queues, and pausing just means not sending the next link.

One run of a project is inside a step at a time (a database constraint, so it holds between processes too): the
others wait, queued, and the oldest that may start starts when the active one ends. So a ranking submitted while
an iteration trains queues one retrain behind it instead of a second, racing training; and requests for a retrain
while one waits replace the waiting one's parameters (``run_start``) instead of queueing more.

Delivery is at least once (``acks_late`` + ``reject_on_worker_lost``; a task whose worker died comes back).
So a step *claims* its run with a conditional update (state matches, not paused, nobody holding a fresh
heartbeat); the holder heartbeats while it works; a second delivery of a step someone is still working on
retries later instead of running it again; and a step whose worker died (heartbeat older than
``RUN_STALE_SECONDS``) is claimed again, by the redelivered task or by the beat sweep, and starts over, first
deleting what the dead attempt left behind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from enum import Enum
from typing import Any

from django.conf import settings as django_settings
from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError, connection, transaction
from django.db.models import F, Max, Q, Sum
from django.utils import timezone

from accounts.models import User
from labeling import events
from labeling.errors import Conflict, ValidationFailed
from labeling.models import Project, Query, QuerySource
from labeling.services import send_task_by_name, send_task_or_warn
from labeling.signals import label_budget_reached, run_state_changed

from .core.loop_settings import LoopSettings
from .models import COALESCING_KINDS, FINISHED_STATES, ITERATION_STEPS, KIND_STEPS, STEP_STATES, Run, RunKind, RunState
from .project_task import has_simulator

logger = logging.getLogger(__name__)

# One task per step, each routed to its queue in settings.CELERY_TASK_ROUTES.
STEP_TASKS: Mapping[str, str] = events.STEP_TASKS
MAX_ATTEMPTS = 3  # claims of one step (its worker died each time) before the iteration fails
# The database connection broke under a step (a server restart, a failover, a killed backend). That is not the
# step's fault: the step is released and retried instead of failing the iteration.
DB_CONNECTION_ERRORS = (OperationalError, InterfaceError)


def stale_after() -> timedelta:
    seconds = django_settings.HERONRY["RUN_STALE_SECONDS"]
    assert isinstance(seconds, int)  # parsed strictly in settings
    return timedelta(seconds=seconds)


def pairwise_labels(project: Project) -> int:
    """Pairwise labels that count towards label budgets (gold and repeat answers don't).

    The sum of the ordinary queries' answer counters, which the only paths that add or take back a judgment keep
    (labeling.assignment.judgment_submit, labeling.revisions.judgment_undo): the same number as counting the
    judgments, without joining a million of them to their queries on every dashboard poll."""
    total = Query.objects.filter(project=project, source__in=[QuerySource.RANDOM, QuerySource.ACTIVE]).aggregate(
        n=Sum("answers_given")
    )["n"]
    return total or 0


# Runs whose end brings annotators new questions.
_QUESTION_MAKING_KINDS = (
    RunKind.ITERATION,
    RunKind.GENERATE_CLIPS,
    RunKind.RENDER_CLIPS,
    RunKind.UPLOAD,
    RunKind.IMPORT_DATASET,
)


def new_questions_coming(project: Project) -> bool:
    """A run that makes questions is unfinished (queued, paused or in a step): annotators should wait."""
    return (
        Run.objects.filter(project=project, kind__in=_QUESTION_MAKING_KINDS)
        .filter(Q(state__in=STEP_STATES) | Q(state=RunState.QUEUED, start_after_labels__isnull=True))
        .exists()
    )


def _send_step(run_id: int, state: str) -> None:
    # A broker that is down or restarting only delays the step: the state change is committed, and the beat sweep
    # sends the step once it has waited past the stale limit. ``send_task_by_name`` is this module's name, looked
    # up when the transaction commits (tests patch it here).
    transaction.on_commit(
        lambda: send_task_or_warn(
            STEP_TASKS[state],
            run_id,
            state,
            recovery=f"run {run_id}: the sweep will resend it",
            send=send_task_by_name,
            what=state,
        )
    )


# --- researcher actions (services) ------------------------------------------------------------------------


@transaction.atomic
def iteration_create(
    *,
    project: Project,
    created_by: User | None,
    overrides: Mapping[str, Any] | None = None,
    count: int = 1,
) -> Run:
    """Queue the next loop iteration (and ``count - 1`` follow-ups, each queued when the previous one is done).

    Ranking mode starts it now (or once the project's active run ends); pairwise mode starts it once the project
    holds ``number × label_budget`` pairwise labels (at once if it already does).
    """
    if not has_simulator(project.env_id):
        raise ValidationFailed(
            f"the loop trains policies in a simulator; {project.env_id!r} has none (uploaded rollouts or a dataset)",
            fields={"env_id": ["no simulator: the loop needs a Gymnasium environment"]},
        )
    if not 1 <= count <= 100:
        raise ValidationFailed("count must be between 1 and 100", fields={"count": ["between 1 and 100"]})
    try:
        loop_settings = LoopSettings.from_dict(project.loop_settings).merged(overrides)
    except ValueError as error:
        raise ValidationFailed(f"invalid loop settings: {error}", fields={"settings": [str(error)]}) from None
    # One unfinished iteration per project at a time: each continues from the previous one's policy.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    if project.runs.filter(kind=RunKind.ITERATION).exclude(state__in=FINISHED_STATES).exists():
        raise Conflict("this project already has an unfinished iteration; pause, cancel or wait for it")
    iteration = _iteration_new(
        project=project, loop_settings=loop_settings, follow_ups=count - 1, created_by=created_by
    )
    run_maybe_start(iteration)
    return iteration


def _iteration_new(*, project: Project, loop_settings: LoopSettings, follow_ups: int, created_by: User | None) -> Run:
    iterations = project.runs.filter(kind=RunKind.ITERATION)
    number = (iterations.aggregate(n=Max("number"))["n"] or 0) + 1
    previous = iterations.filter(state=RunState.DONE, policy__isnull=False).order_by("-number").first()
    waits = project.has_pairwise and loop_settings.label_budget > 0 and loop_settings.policy_reward == "learned"
    try:
        with transaction.atomic():
            return Run.objects.create(
                project=project,
                kind=RunKind.ITERATION,
                steps=list(ITERATION_STEPS),
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


def _label_target(previous: Run | None, loop_settings: LoopSettings) -> int:
    """The pairwise label count at which a new iteration starts: the first waits for ``label_budget`` labels
    (the questions of the initial clip pool); a later one until the questions the previous iteration asked
    are answered, up to the budget (it may have found fewer pairs worth asking than the budget)."""
    if previous is None or "publishing" not in previous.results:
        return loop_settings.label_budget
    published = previous.results["publishing"]
    asked = int(published.get("queries", 0)) * int(published.get("overlap", 1))
    return int(published.get("labels_before", 0)) + min(loop_settings.label_budget, asked)


@transaction.atomic
def run_start(*, project: Project, kind: str, params: Mapping[str, Any] | None = None, created_by: User | None) -> Run:
    """Queue a run of ``kind`` (anything but a loop iteration: see ``iteration_create``) and start it if the
    project has no active run.

    A retrain, preference build or reward training (COALESCING_KINDS) asked for while one of its kind waits
    replaces the waiting one's parameters, requester and time instead of queueing another: a burst of requests
    costs one run now and at most one after it, on the data as it is then. Race-free: the database allows one
    queued run of a coalescing kind per project, and of two simultaneous creations one fails and takes over the
    other's.
    """
    if kind not in KIND_STEPS or kind == RunKind.ITERATION:
        raise ValidationFailed(f"unknown run kind {kind!r}", fields={"kind": ["not a kind of run you can start"]})
    if kind == RunKind.GENERATE_CLIPS and not has_simulator(project.env_id):
        raise ValidationFailed(
            f"clips are generated in a simulator; {project.env_id!r} has none (uploaded rollouts or a dataset)",
            fields={"kind": ["no simulator to generate clips in"]},
        )
    from .loop_steps import PARAMS_CHECKS  # the steps import this module

    # Checked now: a worker would only fail later.
    try:
        checked = PARAMS_CHECKS[kind](dict(params or {}))
    except (TypeError, ValueError) as error:
        raise ValidationFailed(f"invalid parameters: {error}", fields={"params": [str(error)]}) from None
    values = {"params": checked, "created_by": created_by, "created_at": timezone.now()}
    run = None
    replaced = False
    for _ in range(5):
        if kind in COALESCING_KINDS:
            waiting = Run.objects.filter(project=project, kind=kind, state=RunState.QUEUED).first()
            if waiting is not None:
                if Run.objects.filter(pk=waiting.pk, state=RunState.QUEUED).update(**values):
                    run, replaced = Run.objects.select_related("project").get(pk=waiting.pk), True
                    break
                continue  # it started a moment ago
        try:
            with transaction.atomic():
                run = Run.objects.create(
                    project=project, kind=kind, steps=list(KIND_STEPS[kind]), message="Queued", **values
                )
            break
        except IntegrityError:
            continue  # another request queued one at the same moment
    if run is None:
        raise Conflict("the run queue is too busy to take this request; try again")
    if not run_maybe_start(run) and replaced:
        message = f"{run.message} (replaced an earlier request)"[:300]
        Run.objects.filter(pk=run.pk, state=RunState.QUEUED).update(message=message)
        run.refresh_from_db()
    return run


def run_maybe_start(run: Run, *, force: bool = False) -> bool:
    """Start a queued, unpaused run whose label budget is met (or any queued one with ``force``), if no other
    run of its project is active; otherwise it waits, and starts when that one ends."""
    if run.state != RunState.QUEUED or run.paused:
        return False
    budget = run.start_after_labels
    if not force and budget is not None and pairwise_labels(run.project) < budget:
        return False
    now = timezone.now()
    first = run.steps[0]
    try:
        with transaction.atomic():
            started = Run.objects.filter(pk=run.pk, state=RunState.QUEUED, paused=False).update(
                state=first, started_at=now, step_since=now, heartbeat_at=None, progress=0.0, message="Starting"
            )
    except IntegrityError:  # another run of the project is active (run_one_active_per_project)
        active = Run.objects.filter(project_id=run.project_id, state__in=STEP_STATES).first()
        waiting_for = f"Waiting for {active.title} to finish" if active else "Waiting for another run to finish"
        Run.objects.filter(pk=run.pk, state=RunState.QUEUED).update(message=waiting_for)
        run.refresh_from_db()
        return False
    if started:
        run.refresh_from_db()
        if budget is not None:
            labels = pairwise_labels(run.project)
            if labels >= budget:
                _after_commit(label_budget_reached, project_id=run.project_id, run_id=run.pk, labels=labels)
        _announce_state(run, RunState.QUEUED)
        _send_step(run.pk, first)
    return bool(started)


def runs_start_next(project_id: int) -> bool:
    """After a project's active run ended: start the oldest queued run that may start now."""
    queued = Run.objects.filter(project_id=project_id, state=RunState.QUEUED, paused=False).select_related("project")
    return any(run_maybe_start(run) for run in queued.order_by("created_at", "id"))


def run_pause(run: Run) -> None:
    """The current step finishes; the next one waits for resume."""
    if run.is_finished:
        raise Conflict(f"{run.title} is already {run.state}")
    Run.objects.filter(pk=run.pk).exclude(state__in=FINISHED_STATES).update(paused=True, message="Paused")
    run.refresh_from_db()


@transaction.atomic
def run_resume(run: Run, *, force: bool = False) -> None:
    """Unpause; a waiting pairwise iteration with ``force`` starts now even if its label budget isn't met."""
    if run.is_finished:
        raise Conflict(f"{run.title} is already {run.state}")
    Run.objects.filter(pk=run.pk).update(paused=False, message="Resumed")
    run.refresh_from_db()
    if run.state == RunState.QUEUED:
        run_maybe_start(run, force=force)
    elif run.heartbeat_at is None:  # between steps: send the step that was held back
        _send_step(run.pk, run.state)


def run_cancel(run: Run) -> None:
    """Stop for good; a worker busy on it notices at its next heartbeat and stops."""
    cancelled = (
        Run.objects.filter(pk=run.pk)
        .exclude(state__in=FINISHED_STATES)
        .update(state=RunState.CANCELLED, message="Cancelled", finished_at=timezone.now(), heartbeat_at=None)
    )
    previous = run.state
    run.refresh_from_db()
    if not cancelled:
        raise Conflict(f"{run.title} is already {run.state}")
    _announce_state(run, previous)
    runs_start_next(run.project_id)


def run_start_now(run: Run) -> None:
    """Unpause and, if it is waiting for its label budget, start it anyway (once the project's lane is free)."""
    run_resume(run, force=True)


def failed_step(run: Run) -> str:
    """The step a failed run stopped at: the first one without a result."""
    return next((step for step in run.steps if step not in run.results), run.steps[0])


@transaction.atomic
def run_retry(run: Run) -> None:
    """Run a failed run again from the step that failed; what its earlier steps made is kept.

    For failures that go away (a full disk, an unwritable media folder, a database or broker that was down for
    longer than the step's retries). An iteration only if it is the project's newest; any run only when no other
    run of the project is active.
    """
    if run.state != RunState.FAILED:
        raise Conflict(f"{run.title} is {run.state}; only a failed run can be retried")
    Project.objects.select_for_update().filter(pk=run.project_id).first()
    if run.is_iteration:
        others = Run.objects.filter(project_id=run.project_id, kind=RunKind.ITERATION).exclude(pk=run.pk)
        if others.filter(number__gt=run.number).exists() or others.exclude(state__in=FINISHED_STATES).exists():
            raise Conflict("a newer or unfinished iteration exists; start a new iteration instead")
    step = failed_step(run)
    now = timezone.now()
    try:
        with transaction.atomic():
            retried = Run.objects.filter(pk=run.pk, state=RunState.FAILED).update(
                state=step,
                error="",
                paused=False,
                finished_at=None,
                step_since=now,
                heartbeat_at=None,
                attempts=0,
                progress=0.0,
                message=f"{RunState(step).label}: queued again",
            )
    except IntegrityError:
        raise Conflict("another run of this project is active; retry once it has finished") from None
    run.refresh_from_db()
    if retried:
        _announce_state(run, RunState.FAILED)
        _send_step(run.pk, step)


# What a researcher can do to a run (the API, the dashboard and the admin all go through this).
RUN_ACTIONS: Mapping[str, Callable[[Run], None]] = {
    "pause": run_pause,
    "resume": run_resume,
    "start": run_start_now,
    "cancel": run_cancel,
    "retry": run_retry,
}


def runs_start_waiting(project_id: int | None = None) -> int:
    """Start queued runs that may start now: pairwise iterations whose label budget is met, and runs that waited
    for their project's active run (one project's after a judgment, or every project's)."""
    projects = Run.objects.filter(state=RunState.QUEUED, paused=False)
    if project_id is not None:
        projects = projects.filter(project_id=project_id)
    return sum(runs_start_next(pid) for pid in set(projects.values_list("project_id", flat=True)))


# --- steps ------------------------------------------------------------------------------------------------


class RunStopped(Exception):
    """The run was cancelled or taken over while this worker was on it: stop quietly."""


class StepInterrupted(Exception):
    """The step lost its database connection; its claim was released (if the database allowed) for a retry."""


class StepOutcome(Enum):
    DONE = "done"  # ran the step (successfully or not) and recorded the result
    BUSY = "busy"  # another worker holds a fresh claim on it: try again later
    GONE = "gone"  # nothing to do: the run moved on, is paused, finished or missing


class StepReporter:
    """Progress of the current step, written at most every ``interval`` seconds; doubles as the heartbeat."""

    def __init__(self, run: Run, state: str, interval: float = 1.0, *, claimed_at=None) -> None:
        self.run, self.state, self.interval = run, state, interval
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
        alive = Run.objects.filter(pk=self.run.pk, state=self.state).update(
            progress=fraction, message=message[:300], heartbeat_at=beat
        )
        if not alive:
            raise RunStopped(f"run {self.run.pk} left state {self.state}")
        self.run.progress, self.run.message = fraction, message[:300]


StepWork = Callable[[Run, LoopSettings, StepReporter], dict[str, Any]]


def step_run(run_id: int, state: str, work: StepWork) -> StepOutcome:
    """Claim ``state`` of the run, run ``work``, then hand over to the next step (or fail it)."""
    now = timezone.now()
    claimable = Q(heartbeat_at__isnull=True) | Q(heartbeat_at__lt=now - stale_after())
    claimed = Run.objects.filter(claimable, pk=run_id, state=state, paused=False).update(
        heartbeat_at=now, attempts=F("attempts") + 1, progress=0.0, message="Started"
    )
    if not claimed:
        current = Run.objects.filter(pk=run_id).first()
        if current is not None and current.state == state and not current.paused:
            return StepOutcome.BUSY
        return StepOutcome.GONE
    run = Run.objects.select_related("project").get(pk=run_id)
    if run.attempts > MAX_ATTEMPTS:
        _fail(run, state, f"{run.get_state_display()} was started {MAX_ATTEMPTS} times and never finished")
        return StepOutcome.DONE
    reporter = StepReporter(run, state, claimed_at=now)
    # Queue and worker latency (Celery, the claim) before this step began: the platform's own overhead.
    waited = (now - run.step_since).total_seconds() if run.step_since is not None else None
    started, started_cpu = time.monotonic(), time.process_time()
    try:
        loop_settings = LoopSettings.from_dict(run.settings)
        result = work(run, loop_settings, reporter)
    except RunStopped:
        logger.info("run %s: stopped during %s", run_id, state)
        return StepOutcome.GONE
    except DB_CONNECTION_ERRORS as error:
        raise _interrupted(run, state, reporter, error) from error
    except Exception as error:
        logger.exception("run %s: %s failed", run_id, state)
        _fail(run, state, f"{type(error).__name__}: {error}")
        return StepOutcome.DONE
    # Wall and CPU time of the step in this worker (its process: every thread, not ffmpeg's subprocesses).
    result = {
        **result,
        "seconds": round(time.monotonic() - started, 3),
        "cpu_seconds": round(time.process_time() - started_cpu, 3),
        "waited_seconds": None if waited is None else round(waited, 3),
    }
    try:
        _advance(run, state, result)
    except DB_CONNECTION_ERRORS as error:  # the transition was rolled back: the step runs again, and starts clean
        raise _interrupted(run, state, reporter, error) from error
    return StepOutcome.DONE


def _interrupted(run: Run, state: str, reporter: StepReporter, error: Exception) -> StepInterrupted:
    """Release the claim of a step whose database connection broke, so that a retry can claim it at once.

    Django reconnects only a *closed* connection, so the broken one is closed first. If the database is still
    away the claim stays, and the step is claimable again once its heartbeat is stale (the beat sweep resends it).
    """
    logger.warning("run %s: lost the database during %s (%s); releasing the step", run.pk, state, error)
    if not connection.in_atomic_block:
        connection.close()
        try:
            Run.objects.filter(pk=run.pk, state=state, heartbeat_at__in=reporter.beats).update(
                heartbeat_at=None, message="Database connection lost; retrying"
            )
        except DatabaseError:
            connection.close()
    return StepInterrupted(f"{RunState(state).label}: lost the database connection: {error}")


@transaction.atomic
def _advance(run: Run, state: str, result: dict[str, Any]) -> None:
    index = run.steps.index(state)
    last = index == len(run.steps) - 1
    next_state = RunState.DONE if last else run.steps[index + 1]
    now = timezone.now()
    # How many claims the step took (more than one: a worker died and the step was redelivered).
    results = {**run.results, state: {**result, "attempts": run.attempts}}
    changes: dict[str, Any] = {
        "state": next_state,
        "results": results,
        "heartbeat_at": None,
        "step_since": now,
        "attempts": 0,
        "progress": 0.0,
        "message": "Done" if last else f"{RunState(next_state).label}: queued",
    }
    if last:
        changes["finished_at"] = now
    # Every artefact link the step made travels with the transition (set on the instance by the step).
    changes.update(preference_set=run.preference_set, reward_model=run.reward_model, labels_used=run.labels_used)
    moved = Run.objects.filter(pk=run.pk, state=state).update(**changes)
    if not moved:  # cancelled meanwhile: keep the cancellation
        return
    run.refresh_from_db()
    _announce_state(run, state)
    if last:
        _queue_follow_up(run)
        runs_start_next(run.project_id)
    elif not run.paused:
        _send_step(run.pk, next_state)


def _fail(run: Run, state: str, error: str) -> None:
    failed = Run.objects.filter(pk=run.pk, state=state).update(
        state=RunState.FAILED,
        error=f"{RunState(state).label}: {error}"[:5000],
        message="Failed",
        heartbeat_at=None,
        finished_at=timezone.now(),
    )
    run.refresh_from_db()
    if failed:
        _announce_state(run, state)
    runs_start_next(run.project_id)


def _after_commit(signal: Any, **kwargs: Any) -> None:
    """Send one of labeling's signals once the current transaction commits (labeling turns it into webhooks)."""

    def send() -> None:
        try:
            signal.send(sender=Run, **kwargs)
        except Exception:  # a listener's failure must not fail the run
            logger.exception("run %s: a listener of %s failed", kwargs.get("run_id"), signal)

    transaction.on_commit(send)


def _announce_state(run: Run, previous: str) -> None:
    """The run moved from ``previous`` to its current state: tell labeling's listeners (webhooks) after commit."""
    _after_commit(
        run_state_changed,
        project_id=run.project_id,
        run_id=run.pk,
        kind=str(run.kind),
        state=str(run.state),
        previous=str(previous),
    )


def _queue_follow_up(run: Run) -> None:
    if not run.is_iteration or run.follow_ups < 1:
        return
    _iteration_new(
        project=run.project,
        loop_settings=LoopSettings.from_dict(run.settings),
        follow_ups=run.follow_ups - 1,
        created_by=run.created_by,
    )  # started by runs_start_next, after this run's end


# --- the beat sweep -----------------------------------------------------------------------------------------


def runs_sweep() -> dict[str, int]:
    """Resume steps whose worker died or whose task was lost, and start queued runs that may start.

    Runs from the beat schedule; the broker's redelivery usually gets there first, but with Redis that can
    take up to its visibility timeout, and a message lost between commit and send only this finds.
    """
    limit = timezone.now() - stale_after()
    dead = Run.objects.filter(state__in=STEP_STATES, paused=False).filter(
        Q(heartbeat_at__lt=limit) | Q(heartbeat_at__isnull=True, step_since__lt=limit)
    )
    resent = 0
    for run in dead:
        send_task_by_name(STEP_TASKS[run.state], run.pk, run.state)
        resent += 1
    started = runs_start_waiting()
    return {"resent": resent, "started": started}
