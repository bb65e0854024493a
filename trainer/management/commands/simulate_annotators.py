"""Synthetic annotators: N users who log in through the REST API and label with a B-Pref teacher.

Set-up (users, passwords, project memberships) goes through the ORM; everything an annotator does after that
goes over HTTP exactly as any client would: token login, lease the next query, answer or skip it, or submit
a factor ranking. The teacher's privileged ground truth — each clip's per-step true reward — is read from the
rollout ``.npz`` files through the ORM, so the command must share the server's database and media storage.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import secrets
import threading
import time
import urllib.error
import urllib.request
import uuid
from argparse import BooleanOptionalAction
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections, transaction

from accounts.models import Role, User
from accounts.services import user_create
from labeling.models import Clip, Project, ProjectRole, Rollout
from labeling.services import membership_add
from trainer.core.oracle import BPrefTeacher, RankingSpec, parse_ranking
from trainer.core.rollouts import load_npz

# Reasons (labeling.assignment.NothingToDo) that mean "not yet" rather than "never": worth polling for.
_RETRYABLE_REASONS = frozenset({"waiting_for_next_iteration", "leased_by_others", "project_paused"})
_POLL_SECONDS = 0.5
_LEASED_GRACE_SECONDS = 5.0
_HTTP_TIMEOUT_SECONDS = 30.0
_TRANSPORT_RETRIES = 2  # a dropped connection is retried (every retried request is idempotent)
# The token endpoint is rate-limited per client address (API_TOKEN_RATE, 30/minute by default), so a large
# simulated crowd logging in from one host must wait its turn: two rate windows, then give up.
_THROTTLE_PATIENCE_SECONDS = 130.0
_ANSWER_TO_CHOICE = {"a": "left", "b": "right", "equal": "equal"}  # the teacher compares (left, right)


class SimulationError(Exception):
    """An expected failure (bad input, server unreachable, HTTP error): reported without a traceback."""


class ApiError(SimulationError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code


# --- HTTP ---------------------------------------------------------------------------------------------------


class ApiClient:
    """A minimal JSON client for Heronry's REST API v1 (standard library only)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._token: str | None = None

    def login(self, username: str, password: str) -> None:
        response = self.post("/api/v1/auth/token/", {"username": username, "password": password})
        self._token = str(response["token"])

    def post(self, path: str, body: dict[str, Any] | None = None, *, retry: bool = True) -> Any:
        """POST JSON and return the decoded answer (None for an empty body, e.g. 204)."""
        transport_tries = _TRANSPORT_RETRIES if retry else 0
        throttled_until = time.monotonic() + _THROTTLE_PATIENCE_SECONDS
        while True:
            try:
                return self._send(path, body)
            except urllib.error.HTTPError as error:
                if error.code == 429 and time.monotonic() < throttled_until:
                    # Jitter, so that a crowd of annotators throttled together does not come back together.
                    time.sleep(_retry_after(error) + random.uniform(0.0, 1.0))
                    continue
                raise _api_error(error) from None
            except (urllib.error.URLError, http.client.HTTPException, ConnectionError, TimeoutError) as error:
                if transport_tries > 0:
                    transport_tries -= 1
                    time.sleep(_POLL_SECONDS)
                    continue
                reason = getattr(error, "reason", error)
                raise SimulationError(
                    f"cannot reach the Heronry server at {self.base_url} ({reason}); is it running?"
                ) from None

    def _send(self, path: str, body: dict[str, Any] | None) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Token {self._token}"
        request = urllib.request.Request(
            self.base_url + path, data=json.dumps(body or {}).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT_SECONDS) as response:
            raw = response.read()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise SimulationError(f"{self.base_url}{path} did not answer JSON; is --url a Heronry server?") from None


def _retry_after(error: urllib.error.HTTPError) -> float:
    value = error.headers.get("Retry-After", "")
    return min(float(value), 60.0) if value.replace(".", "", 1).isdigit() else 1.0


def _api_error(error: urllib.error.HTTPError) -> ApiError:
    """The API's error shape {"error": {"code", "message"}}; anything else was not Heronry's API answering."""
    try:
        detail = json.loads(error.read())["error"]
        return ApiError(error.code, str(detail["code"]), str(detail["message"]))
    except (ValueError, KeyError, TypeError):
        hint = f"{error.reason}, and not from Heronry's API: is --url the server's root, e.g. http://127.0.0.1:8000?"
        return ApiError(error.code, "error", hint)


# --- Ground truth -------------------------------------------------------------------------------------------


class TrueRewards:
    """Per-step true rewards of clips, read from their rollouts' .npz files; one read per rollout."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # annotator threads share the caches; reads happen once per rollout
        self._clips: dict[int, tuple[int, int, int]] = {}
        self._rollouts: dict[int, np.ndarray] = {}

    def for_clip(self, clip_id: int) -> np.ndarray:
        with self._lock:
            if clip_id not in self._clips:
                row = Clip.objects.filter(pk=clip_id).values_list("rollout_id", "start", "length").first()
                if row is None:
                    raise SimulationError(f"clip {clip_id} is not in this command's database")
                self._clips[clip_id] = row
            rollout_id, start, length = self._clips[clip_id]
            if rollout_id not in self._rollouts:
                self._rollouts[rollout_id] = _read_rewards(rollout_id)
            rewards = self._rollouts[rollout_id][start : start + length]
        if len(rewards) != length:
            raise SimulationError(f"clip {clip_id} ({start}+{length}) runs past the end of rollout {rollout_id}")
        return rewards


def _read_rewards(rollout_id: int) -> np.ndarray:
    rollout = Rollout.objects.get(pk=rollout_id)
    try:
        with rollout.data.open("rb") as file:
            return load_npz(file.read()).rewards
    except (OSError, ValueError) as error:
        raise SimulationError(f"rollout {rollout_id} has no readable true reward: {error}") from None


# --- Work sharing -------------------------------------------------------------------------------------------


class LabelBudget:
    """The --labels cap shared by all annotators: a slot is reserved before leasing and given back if unused."""

    def __init__(self, total: int | None) -> None:
        self._left = total
        self._lock = threading.Lock()

    def reserve(self) -> bool:
        with self._lock:
            if self._left is None:
                return True
            if self._left <= 0:
                return False
            self._left -= 1
            return True

    def give_back(self) -> None:
        with self._lock:
            if self._left is not None:
                self._left += 1


@dataclass
class AnnotatorReport:
    username: str
    labels: int = 0
    equal: int = 0
    skips: int = 0
    conflicts: int = 0
    stopped: str = "not started"
    ranking_id: int | None = None

    def line(self, *, ranking_mode: bool) -> str:
        if ranking_mode:
            done = f"submitted ranking #{self.ranking_id}" if self.ranking_id is not None else "no ranking submitted"
            return f"{self.username}: {done}; stopped: {self.stopped}"
        return (
            f"{self.username}: {self.labels} labels ({self.equal} equal), {self.skips} skipped, "
            f"{self.conflicts} conflicts; stopped: {self.stopped}"
        )


@dataclass(frozen=True)
class Run:
    """What every annotator shares: where to go, how to answer, and when to stop."""

    url: str
    slug: str
    password: str
    teacher: BPrefTeacher
    rewards: TrueRewards
    budget: LabelBudget
    wait_seconds: float
    stop: threading.Event
    ranking: RankingSpec | None
    sigmas: dict[str, float]
    wait_when_done: bool = False  # a program asks new questions later (imitation's gatherer): "done" is "not yet"


# --- One annotator ------------------------------------------------------------------------------------------


def annotate(run: Run, report: AnnotatorReport, rng: np.random.Generator) -> None:
    """Log in, then submit the ranking, or label until there is no work, the budget is spent, or another
    annotator failed."""
    report.stopped = "working"
    try:
        api = _login(run, report.username)
        if run.ranking is not None:
            _submit_ranking(api, run, report)
        else:
            _label(api, run, report, rng)
    except ApiError as error:
        report.stopped = "failed"
        raise SimulationError(f"{report.username}: {error}") from None
    except Exception:
        report.stopped = "failed"
        raise


def _login(run: Run, username: str) -> ApiClient:
    api = ApiClient(run.url)
    try:
        api.login(username, run.password)
    except ApiError as error:
        # Refused credentials usually mean the server reads another database than the one the users were set in.
        hint = "; does that server use this command's database?" if error.status == 400 else ""
        raise SimulationError(f"{username} could not log in at {run.url}: {error}{hint}") from None
    return api


def _submit_ranking(api: ApiClient, run: Run, report: AnnotatorReport) -> None:
    # Not retried on a dropped connection: a second POST would store a second (identical) ranking.
    body = {"groups": run.ranking, "sigmas": run.sigmas}
    ranking = api.post(f"/api/v1/projects/{run.slug}/rankings/", body, retry=False)
    report.ranking_id = int(ranking["id"])
    report.stopped = "ranking submitted"


def _label(api: ApiClient, run: Run, report: AnnotatorReport, rng: np.random.Generator) -> None:
    idle_since = time.monotonic()
    while not run.stop.is_set():
        if not run.budget.reserve():
            report.stopped = "label budget reached"
            return
        response = _next_query(api, run, report.username)
        query = response["query"]
        if query is None:
            run.budget.give_back()
            reason = str(response.get("reason"))
            if reason == "pairwise_feedback_off":
                raise SimulationError(f"project {run.slug!r} collects factor rankings only; pass --ranking")
            # "leased_by_others" is often a moment's state (another annotator is mid-answer on the last pair,
            # its row locked), so it gets a few seconds' grace even when --wait-seconds is 0.
            patience = max(run.wait_seconds, _LEASED_GRACE_SECONDS if reason == "leased_by_others" else 0.0)
            retryable = reason in _RETRYABLE_REASONS or (run.wait_when_done and reason == "done")
            if retryable and time.monotonic() - idle_since < patience:
                run.stop.wait(_POLL_SECONDS)  # wakes at once if another annotator failed
                continue
            report.stopped = reason
            return
        idle_since = time.monotonic()
        if not _answer(api, run, report, query, rng):
            run.budget.give_back()  # skipped or refused: no judgment was recorded
    report.stopped = "stopped early (another annotator failed, or Ctrl-C)"


def _next_query(api: ApiClient, run: Run, username: str) -> dict[str, Any]:
    try:
        return dict(api.post(f"/api/v1/projects/{run.slug}/queries/next/"))
    except ApiError as error:
        if error.status != 404:
            raise
        raise SimulationError(
            f"the server at {run.url} has no project {run.slug!r} with {username} as a member ({error}); "
            "does it use this command's database?"
        ) from None


def _answer(api: ApiClient, run: Run, report: AnnotatorReport, query: dict[str, Any], rng: np.random.Generator) -> bool:
    """Answer one leased query; returns whether a judgment was recorded."""
    answer = run.teacher.answer(
        run.rewards.for_clip(int(query["left"]["id"])), run.rewards.for_clip(int(query["right"]["id"])), rng
    )
    try:
        if answer == "skip":
            api.post(f"/api/v1/leases/{query['lease']}/skip/")
            report.skips += 1
            return False
        body = {"choice": _ANSWER_TO_CHOICE[answer], "lease": query["lease"], "client_id": str(uuid.uuid4())}
        api.post(f"/api/v1/queries/{query['id']}/judgments/", body)
    except ApiError as error:
        # 409: the lease expired, or the query filled up / was answered meanwhile; 404: lease or query gone.
        # Either way this pair is no longer ours to answer: move on to the next one.
        if error.status in (404, 409):
            report.conflicts += 1
            return False
        raise
    report.labels += 1
    report.equal += answer == "equal"
    return True


# --- The command --------------------------------------------------------------------------------------------


class Command(BaseCommand):
    help = (
        "Simulated annotators who log in through the REST API and answer pairwise queries with a B-Pref "
        "teacher on the true reward (or submit a factor ranking with --ranking)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--project", required=True, help="the project's slug")
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="the Heronry server to talk to")
        parser.add_argument("--annotators", type=int, default=2, help="how many simulated annotators")
        parser.add_argument("--username-prefix", default="sim-annotator", help="usernames are PREFIX-1 … PREFIX-N")
        parser.add_argument("--labels", type=int, default=None, help="stop after N judgments in total")
        teacher = parser.add_argument_group("teacher (B-Pref)")
        teacher.add_argument("--beta", type=float, default=math.inf, help="rationality; inf = always rational")
        teacher.add_argument("--gamma", type=float, default=1.0, help="myopia discount; 1 = none")
        teacher.add_argument("--epsilon", type=float, default=0.0, help="probability of a flipped answer")
        teacher.add_argument("--skip-threshold", type=float, default=None, help="skip if both returns are below")
        teacher.add_argument("--equal-threshold", type=float, default=0.0, help='"equal" if |R_a − R_b| ≤ this')
        parser.add_argument("--ranking", default=None, help='submit this factor ranking, e.g. "a > b = c", and stop')
        parser.add_argument(
            "--sigma", action="append", default=[], metavar="KEY=VALUE", help="a margin multiplier (with --ranking)"
        )
        parser.add_argument(
            "--wait-seconds",
            type=float,
            default=0.0,
            help="keep polling while there is nothing to do *yet*, up to this long without new work (0 = stop)",
        )
        parser.add_argument(
            "--wait-when-done",
            action="store_true",
            help="with --wait-seconds, keep polling when every question is answered too: for programs that ask "
            "new questions later (imitation's preference gatherer)",
        )
        parser.add_argument("--seed", type=int, default=0, help="seeds the teachers' random answers")
        parser.add_argument(
            "--threads", action=BooleanOptionalAction, default=True, help="annotators work concurrently"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            run, usernames = self._prepare(options)
        except (SimulationError, ValueError) as bad_input:
            raise CommandError(str(bad_input)) from None
        reports = [AnnotatorReport(name) for name in usernames]
        rngs = np.random.default_rng(options["seed"]).spawn(len(reports))
        started = time.monotonic()
        jobs = [partial(annotate, run, report, rng) for report, rng in zip(reports, rngs, strict=True)]
        error = _run_all(jobs, threaded=options["threads"], stop=run.stop)
        elapsed = time.monotonic() - started
        for report in reports:
            self.stdout.write(report.line(ranking_mode=run.ranking is not None))
        self.stdout.write(self._total(reports, elapsed, ranking_mode=run.ranking is not None))
        if isinstance(error, SimulationError):
            raise CommandError(str(error))
        if error is not None:
            raise error  # a bug, not an expected failure: keep its traceback

    def _prepare(self, options: dict[str, Any]) -> tuple[Run, list[str]]:
        if options["annotators"] < 1:
            raise SimulationError("--annotators must be at least 1")
        if options["labels"] is not None and options["labels"] < 0:
            raise SimulationError("--labels must be ≥ 0")
        if options["wait_seconds"] < 0:
            raise SimulationError("--wait-seconds must be ≥ 0")
        ranking = parse_ranking(options["ranking"]) if options["ranking"] is not None else None
        if options["sigma"] and ranking is None:
            raise SimulationError("--sigma only makes sense with --ranking")
        teacher = BPrefTeacher(
            beta=options["beta"],
            gamma=options["gamma"],
            epsilon=options["epsilon"],
            skip_threshold=options["skip_threshold"],
            equal_threshold=options["equal_threshold"],
        )
        password = secrets.token_urlsafe(18)
        usernames = ensure_annotators(
            slug=options["project"],
            usernames=[f"{options['username_prefix']}-{i}" for i in range(1, options["annotators"] + 1)],
            password=password,
        )
        run = Run(
            url=options["url"],
            slug=options["project"],
            password=password,
            teacher=teacher,
            rewards=TrueRewards(),
            budget=LabelBudget(options["labels"]),
            wait_seconds=options["wait_seconds"],
            stop=threading.Event(),
            wait_when_done=options["wait_when_done"],
            ranking=ranking,
            sigmas=parse_sigmas(options["sigma"]),
        )
        return run, usernames

    @staticmethod
    def _total(reports: Sequence[AnnotatorReport], elapsed: float, *, ranking_mode: bool) -> str:
        if ranking_mode:
            return f"Total: {sum(r.ranking_id is not None for r in reports)} rankings submitted in {elapsed:.1f} s"
        labels = sum(r.labels for r in reports)
        rate = f" ({labels / elapsed:.1f} labels/s)" if labels and elapsed > 0 else ""
        return (
            f"Total: {labels} labels, {sum(r.equal for r in reports)} equal, {sum(r.skips for r in reports)} skipped, "
            f"{sum(r.conflicts for r in reports)} conflicts in {elapsed:.1f} s{rate}"
        )


def parse_sigmas(items: Sequence[str]) -> dict[str, float]:
    """``["angle_sq=1.5", …]`` → ``{"angle_sq": 1.5}``; the server checks the keys and ranges."""
    sigmas: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not key.strip() or not math.isfinite(number):
            raise SimulationError(f"--sigma {item!r}: expected KEY=NUMBER, e.g. angle_sq=1.5")
        sigmas[key.strip()] = number
    return sigmas


@transaction.atomic
def ensure_annotators(*, slug: str, usernames: Sequence[str], password: str) -> list[str]:
    """Create or update the simulated users (role annotator, this run's password) and their memberships."""
    project = Project.objects.filter(slug=slug).first()
    if project is None:
        raise SimulationError(f"no project with slug {slug!r} in this database")
    existing = {user.username: user for user in User.objects.filter(username__in=usernames)}
    for user in existing.values():
        # Never take over a real account that happens to share the prefix.
        if user.role != Role.ANNOTATOR or user.is_staff or user.is_superuser:
            raise SimulationError(f"user {user.username!r} exists and is not a plain annotator; pick another prefix")
    if existing:
        # One hash for all: password hashing is deliberately slow, and these users share this run's password.
        User.objects.filter(pk__in=[u.pk for u in existing.values()]).update(password=make_password(password))
    for username in usernames:
        user = existing.get(username) or user_create(username=username, password=password, role=Role.ANNOTATOR)
        membership_add(project=project, user=user, role=ProjectRole.ANNOTATOR)
    return list(usernames)


def _run_all(jobs: Sequence[Callable[[], None]], *, threaded: bool, stop: threading.Event) -> Exception | None:
    """Run the annotators (in threads or one after another); the first failure stops the others.

    Ctrl-C stops them too: each finishes the answer in hand, so the summary is complete.
    """
    errors: list[Exception] = []

    def guarded(job: Callable[[], None]) -> None:
        try:
            job()
        except Exception as error:  # reported by the caller, from the main thread
            errors.append(error)
            stop.set()

    def in_thread(job: Callable[[], None]) -> None:
        try:
            guarded(job)
        finally:
            connections.close_all()  # this thread's own database connections (the reward reads)

    threads = [threading.Thread(target=in_thread, args=(job,), daemon=True) for job in jobs] if threaded else []
    try:
        if threaded:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            for job in jobs:
                if stop.is_set():
                    break
                guarded(job)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join()
    return errors[0] if errors else None
