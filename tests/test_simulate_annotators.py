"""Synthetic annotators: the B-Pref teacher, ranking parsing, and the command end to end over real HTTP."""

from __future__ import annotations

import math
import socket
import threading
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.db import connection
from django.utils import timezone

from accounts.models import Role, User
from accounts.services import user_create
from labeling.models import Clip, Judgment, Lease, Project, RenderStatus, Rollout
from labeling.rankings import current_ranking_for
from labeling.services import queries_create_random, queries_for_pairs
from trainer.core.oracle import BPrefTeacher, parse_ranking
from trainer.core.rollouts import RolloutData, save_npz
from trainer.management.commands.simulate_annotators import (
    AnnotatorReport,
    ApiError,
    LabelBudget,
    Run,
    SimulationError,
    _answer,
    _run_all,
    parse_sigmas,
)

# --- the teacher ----------------------------------------------------------------------------------------------


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_rational_teacher_picks_the_higher_return_without_drawing():
    teacher = BPrefTeacher()
    generator = rng()
    state = generator.bit_generator.state
    assert teacher.answer(np.array([1.0, 2.0]), np.array([0.0, 2.5]), generator) == "a"
    assert teacher.answer(np.array([0.0, 2.5]), np.array([1.0, 2.0]), generator) == "b"
    assert teacher.answer(np.array([-5.0]), np.array([-4.999]), generator) == "b"
    assert generator.bit_generator.state == state  # deterministic: the rng was never consulted


def test_rational_teacher_is_a_coin_on_an_exact_tie():
    answers = [BPrefTeacher().answer(np.ones(3), np.ones(3), rng(seed)) for seed in range(200)]
    assert set(answers) == {"a", "b"}


def test_epsilon_one_always_flips():
    teacher = BPrefTeacher(epsilon=1.0)
    generator = rng()
    for _ in range(50):
        assert teacher.answer(np.array([3.0]), np.array([1.0]), generator) == "b"
        assert teacher.answer(np.array([1.0]), np.array([3.0]), generator) == "a"


def test_mistakes_happen_at_the_epsilon_rate():
    teacher = BPrefTeacher(epsilon=0.2)
    generator = rng(3)
    wrong = sum(teacher.answer(np.array([2.0]), np.array([1.0]), generator) == "b" for _ in range(5000))
    assert wrong / 5000 == pytest.approx(0.2, abs=0.02)


def test_equal_threshold_answers_equal_within_it_and_is_never_flipped():
    teacher = BPrefTeacher(equal_threshold=0.5, epsilon=1.0)
    assert teacher.answer(np.array([1.0, 1.0]), np.array([1.0, 1.5]), rng()) == "equal"  # |diff| = 0.5: inclusive
    assert teacher.answer(np.array([1.0, 1.0]), np.array([1.0, 1.6]), rng()) == "a"  # b better, then flipped
    off = BPrefTeacher()
    assert off.answer(np.array([1.0]), np.array([1.0 + 1e-9]), rng()) == "b"  # 0 = off


def test_skip_threshold_skips_when_both_returns_are_below_it():
    teacher = BPrefTeacher(skip_threshold=-10.0)
    assert teacher.answer(np.array([-6.0, -5.0]), np.array([-20.0, -1.0]), rng()) == "skip"  # -11 and -21
    assert teacher.answer(np.array([-6.0, -3.0]), np.array([-20.0, -1.0]), rng()) == "a"  # one is above: judged
    assert teacher.answer(np.array([-5.0, -5.0]), np.array([-30.0]), rng()) == "a"  # -10 is not below -10


def test_myopia_weights_later_steps_more_and_can_change_the_decision():
    # a is good early and bad late, b the reverse; equal sums, so only the discount decides.
    early, late = np.array([4.0, 0.0, 0.0]), np.array([0.0, 0.0, 3.0])
    assert BPrefTeacher(gamma=1.0).answer(early, late, rng()) == "a"  # 4 > 3
    assert BPrefTeacher(gamma=0.5).answer(early, late, rng()) == "b"  # 4 * 0.25 = 1 < 3
    assert BPrefTeacher(gamma=0.5).perceived_return(np.array([1.0, 1.0, 1.0])) == pytest.approx(1.75)


@pytest.mark.parametrize("beta", [0.5, 2.0])
@pytest.mark.parametrize("difference", [0.3, 1.0, -1.5])
def test_finite_beta_frequencies_follow_the_sigmoid(beta, difference):
    teacher = BPrefTeacher(beta=beta)
    generator = rng(7)
    n = 4000
    picked_a = sum(teacher.answer(np.array([difference]), np.array([0.0]), generator) == "a" for _ in range(n))
    expected = 1.0 / (1.0 + math.exp(-beta * difference))
    assert picked_a / n == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / n))


def test_beta_zero_is_a_fair_coin_and_huge_differences_do_not_overflow():
    assert BPrefTeacher(beta=0.0).prob_a(100.0) == 0.5
    assert BPrefTeacher(beta=1.0).prob_a(1e6) == 1.0
    assert BPrefTeacher(beta=1.0).prob_a(-1e6) == 0.0


def test_same_seed_same_answers():
    teacher = BPrefTeacher(beta=1.0, epsilon=0.1)
    pairs = [(np.array([x]), np.array([0.0])) for x in np.linspace(-2, 2, 50)]
    assert [teacher.answer(a, b, rng(5)) for a, b in pairs] == [teacher.answer(a, b, rng(5)) for a, b in pairs]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"beta": -1.0},
        {"beta": math.nan},
        {"gamma": 1.5},
        {"gamma": -0.1},
        {"epsilon": 1.01},
        {"skip_threshold": math.inf},
        {"equal_threshold": -0.1},
        {"equal_threshold": math.nan},
    ],
)
def test_invalid_parameters_are_refused(kwargs):
    with pytest.raises(ValueError):
        BPrefTeacher(**kwargs)


@pytest.mark.parametrize("rewards", [np.array([]), np.ones((2, 2)), np.array([1.0, np.nan])])
def test_rewards_must_be_a_finite_vector(rewards):
    with pytest.raises(ValueError):
        BPrefTeacher().answer(rewards, np.ones(2), rng())


# --- ranking text ---------------------------------------------------------------------------------------------


def test_parse_ranking_levels_and_ties():
    assert parse_ranking("angle_sq > angular_velocity_sq = torque_sq") == [
        ["angle_sq"],
        ["angular_velocity_sq", "torque_sq"],
    ]
    assert parse_ranking("a>b>c") == [["a"], ["b"], ["c"]]
    assert parse_ranking("  a = b = c ") == [["a", "b", "c"]]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("a > > b", "level 2"),
        ("a > b >", "level 3"),
        ("a = = b", "empty factor"),
        ("a, b > c", "not a factor key"),
        ("Angle > b", "not a factor key"),
        ("a > b = a", "more than once"),
    ],
)
def test_parse_ranking_says_what_is_wrong(text, message):
    with pytest.raises(ValueError, match=message):
        parse_ranking(text)


# --- the command, end to end over HTTP ------------------------------------------------------------------------


def add_clips_with_true_rewards(project: Project, count: int, *, seed: int = 0) -> list[Clip]:
    """Ready clips cut from one rollout whose .npz holds per-step rewards (the teacher's ground truth)."""
    steps = project.segment_steps
    generator = np.random.default_rng(seed)
    n_steps = count * steps
    data = RolloutData(
        env_id=project.env_id,
        env_kwargs={},
        seed=seed,
        policy="random",
        actions=generator.uniform(-2, 2, size=(n_steps, 1)).astype(np.float32),
        observations=generator.normal(size=(n_steps + 1, 3)).astype(np.float32),
        factors=generator.random(size=(n_steps, project.factors.count())),
        rewards=-generator.random(n_steps) * 10.0,
        terminated=False,
        truncated=True,
    )
    rollout = Rollout(project=project, policy="random", env_seed=seed, n_steps=n_steps, true_return=data.true_return)
    rollout.data.save("rollout.npz", ContentFile(save_npz(data)), save=False)
    rollout.save()
    keys = list(project.factors.order_by("position").values_list("key", flat=True))
    clips = []
    for i in range(count):
        clip = Clip(
            project=project,
            rollout=rollout,
            start=i * steps,
            length=steps,
            factor_totals=dict(zip(keys, data.factors[i * steps : (i + 1) * steps].sum(axis=0).tolist(), strict=True)),
            true_return=float(data.rewards[i * steps : (i + 1) * steps].sum()),
            render_status=RenderStatus.READY,
        )
        clip.video.save(f"{i}.mp4", ContentFile(b"\x00\x00\x00\x18ftypmp42" + bytes(200)), save=False)
        clip.poster.save(f"{i}.jpg", ContentFile(b"\xff\xd8\xff\xe0" + bytes(50)), save=False)
        clip.save()
        clips.append(clip)
    return clips


def true_rewards(clip: Clip) -> np.ndarray:
    from trainer.core.rollouts import load_npz

    with clip.rollout.data.open("rb") as file:
        rewards = load_npz(file.read()).rewards
    return rewards[clip.start : clip.start + clip.length]


@pytest.fixture
def labelled_project(transactional_db, project) -> Project:
    """The shared two-annotator project (overlap 2) with 6 clips and 10 open queries."""
    clips = add_clips_with_true_rewards(project, 6)
    queries_create_random(project=project, count=10, rng=np.random.default_rng(1), clips=clips)
    return project


def concurrent_ok() -> bool:
    """Whether annotators may work in threads against ``live_server``.

    Not on in-memory SQLite (the fallback test database): the live server then shares the test's single
    connection among its request threads, so concurrent requests would interleave their transactions, and the
    command's own threads would hit shared-cache table locks. PostgreSQL (CI) runs the threaded default.
    """
    return not (connection.vendor == "sqlite" and connection.is_in_memory_db())


def simulate(live_server, project: Project, **options) -> str:
    from io import StringIO

    options.setdefault("threads", concurrent_ok())
    out = StringIO()
    call_command("simulate_annotators", project=project.slug, url=live_server.url, stdout=out, **options)
    return out.getvalue()


def sim_judgments(project: Project) -> list[Judgment]:
    return list(
        Judgment.objects.filter(query__project=project, annotator__username__startswith="sim-annotator")
        .select_related("query__clip_a__rollout", "query__clip_b__rollout", "annotator")
        .order_by("id")
    )


def oracle_answer(teacher: BPrefTeacher, judgment: Judgment) -> str:
    query = judgment.query
    return teacher.answer(true_rewards(query.clip_a), true_rewards(query.clip_b), rng())


def test_two_annotators_label_every_open_query_as_the_oracle_says(live_server, labelled_project):
    output = simulate(live_server, labelled_project, annotators=2)

    queries = list(labelled_project.queries.all())
    judgments = sim_judgments(labelled_project)
    assert {j.annotator.username for j in judgments} == {"sim-annotator-1", "sim-annotator-2"}
    assert len(judgments) == 2 * len(queries) == 20, output  # overlap 2: each annotator answers every query
    assert all(q.status == "complete" for q in queries)
    assert {j.swapped for j in judgments} == {False, True}  # both screen orders were met (P(not) = 2^-19)
    teacher = BPrefTeacher()
    for judgment in judgments:
        assert judgment.canonical_label == oracle_answer(teacher, judgment), judgment
    assert "sim-annotator-1: 10 labels" in output
    assert "stopped: done" in output
    assert "Total: 20 labels" in output
    sim = User.objects.get(username="sim-annotator-1")
    assert sim.role == Role.ANNOTATOR
    assert sim.memberships.get(project=labelled_project).role == "annotator"


def test_skip_and_equal_answers_go_through_their_endpoints(live_server, labelled_project):
    returns = sorted(c.true_return for c in labelled_project.clips.all())
    # The two worst clips' pair is skipped; pairs whose returns are within 15 of each other are "equal".
    teacher = BPrefTeacher(skip_threshold=returns[2], equal_threshold=15.0)
    output = simulate(live_server, labelled_project, annotators=2, skip_threshold=returns[2], equal_threshold=15.0)

    queries = labelled_project.queries.select_related("clip_a__rollout", "clip_b__rollout")
    expected = {q.pk: teacher.answer(true_rewards(q.clip_a), true_rewards(q.clip_b), rng()) for q in queries}
    judgments = sim_judgments(labelled_project)
    for judgment in judgments:
        assert judgment.canonical_label == expected[judgment.query_id]
    skipped = [pk for pk, answer in expected.items() if answer == "skip"]
    answered = [pk for pk, answer in expected.items() if answer != "skip"]
    assert sorted(j.query_id for j in judgments) == sorted(answered * 2)
    assert Lease.objects.filter(query_id__in=skipped, skipped=True).count() == 2 * len(skipped)
    n_equal = sum(answer == "equal" for answer in expected.values())
    assert f"Total: {2 * len(answered)} labels, {2 * n_equal} equal, {2 * len(skipped)} skipped" in output
    assert skipped or n_equal, "the fixture should exercise at least one of the two paths"


def test_labels_caps_the_total_number_of_judgments(live_server, labelled_project):
    output = simulate(live_server, labelled_project, annotators=2, labels=5)
    assert len(sim_judgments(labelled_project)) == 5
    assert "label budget reached" in output
    assert not Lease.objects.filter(query__project=labelled_project, annotator__username__startswith="sim").exists()


def test_ranking_mode_submits_the_annotators_current_ranking(live_server, labelled_project):
    # The ranking itself is under test; retraining on it (in-process in tests) would only add seconds.
    Project.objects.filter(pk=labelled_project.pk).update(loop_settings={"retrain_on_ranking": False})
    output = simulate(
        live_server,
        labelled_project,
        annotators=2,
        ranking="torque_sq > angle_sq = angular_velocity_sq",
        sigma=["torque_sq=2.5"],
    )
    for username in ("sim-annotator-1", "sim-annotator-2"):
        ranking = current_ranking_for(project=labelled_project, annotator=User.objects.get(username=username))
        assert ranking.groups == [["torque_sq"], ["angle_sq", "angular_velocity_sq"]]
        assert ranking.sigmas == {"torque_sq": 2.5}
        assert f"{username}: submitted ranking #{ranking.pk}; stopped: ranking submitted" in output
    assert "Total: 2 rankings submitted" in output
    assert not sim_judgments(labelled_project)


def test_a_second_run_reuses_the_users(live_server, labelled_project):
    simulate(live_server, labelled_project, annotators=1, labels=2)
    simulate(live_server, labelled_project, annotators=1, labels=2)
    assert User.objects.filter(username__startswith="sim-annotator").count() == 1
    assert len(sim_judgments(labelled_project)) == 4


def test_errors_are_clear_messages(live_server, labelled_project):
    with pytest.raises(CommandError, match="no project with slug 'nope'"):
        call_command("simulate_annotators", project="nope", url=live_server.url)
    with pytest.raises(CommandError, match="not a factor key"):
        simulate(live_server, labelled_project, ranking="angle_sq, torque_sq")
    with pytest.raises(CommandError, match="unknown factors: speed"):
        simulate(live_server, labelled_project, ranking="speed > angle_sq")
    with pytest.raises(CommandError, match="epsilon"):
        simulate(live_server, labelled_project, epsilon=2.0)
    Project.objects.filter(pk=labelled_project.pk).update(feedback_mode="pairwise")
    with pytest.raises(
        CommandError, match=r"sim-annotator-1: HTTP 403 permission_denied: .*not collect factor rankings"
    ):
        simulate(live_server, labelled_project, ranking="angle_sq > angular_velocity_sq > torque_sq", threads=False)
    Project.objects.filter(pk=labelled_project.pk).update(feedback_mode="ranking")
    with pytest.raises(CommandError, match="collects factor rankings only; pass --ranking"):
        simulate(live_server, labelled_project)
    user_create(username="lab-1", password="x-long-enough-password", role=Role.RESEARCHER)
    with pytest.raises(CommandError, match="'lab-1' exists and is not a plain annotator"):
        simulate(live_server, labelled_project, username_prefix="lab")

    with socket.socket() as probe:  # a port that nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(CommandError, match="cannot reach the Heronry server"):
        call_command("simulate_annotators", project=labelled_project.slug, url=f"http://127.0.0.1:{port}")


def test_waits_for_work_that_is_not_there_yet(live_server, labelled_project, annotator):
    """A pair leased by a person: without --wait-seconds the annotator gives up after a short grace; with it, the
    annotator polls until the lease lapses and then answers."""
    Project.objects.filter(pk=labelled_project.pk).update(overlap=1)
    labelled_project.queries.update(answers_wanted=1)
    first, *others = labelled_project.queries.order_by("-priority", "random_key")
    for query in others:
        query.delete()
    lease = Lease.objects.create(query=first, annotator=annotator, expires_at=timezone.now() + timedelta(minutes=5))

    output = simulate(live_server, labelled_project, annotators=1)
    assert "stopped: leased_by_others" in output
    assert not sim_judgments(labelled_project)

    lease.expires_at = timezone.now() + timedelta(seconds=1.5)
    lease.save()
    output = simulate(live_server, labelled_project, annotators=1, wait_seconds=30)
    assert [j.query_id for j in sim_judgments(labelled_project)] == [first.pk]
    assert "sim-annotator-1: 1 labels (0 equal), 0 skipped, 0 conflicts; stopped: done" in output


def test_gives_up_waiting_after_wait_seconds(live_server, labelled_project):
    labelled_project.clips.update(render_status=RenderStatus.PENDING)  # clips not ready: "waiting" for them
    output = simulate(live_server, labelled_project, annotators=1, wait_seconds=1)
    assert "stopped: waiting_for_next_iteration" in output


# --- pieces of the command -----------------------------------------------------------------------------------


class StubApi:
    """Stands in for ApiClient: records requests, answers with a canned error."""

    def __init__(self, error: ApiError | None = None) -> None:
        self.error = error
        self.requests: list[tuple[str, dict | None]] = []

    def post(self, path: str, body: dict | None = None, *, retry: bool = True):
        self.requests.append((path, body))
        if self.error is not None:
            raise self.error


class StubRewards:
    def __init__(self, by_clip: dict[int, np.ndarray]) -> None:
        self.by_clip = by_clip

    def for_clip(self, clip_id: int) -> np.ndarray:
        return self.by_clip[clip_id]


def stub_run(**teacher) -> Run:
    return Run(
        url="http://stub",
        slug="stub",
        password="x",
        teacher=BPrefTeacher(**teacher),
        rewards=StubRewards({1: np.array([1.0]), 2: np.array([5.0])}),
        budget=LabelBudget(None),
        wait_seconds=0,
        stop=threading.Event(),
        ranking=None,
        sigmas={},
    )


LEASED = {"id": 7, "left": {"id": 2}, "right": {"id": 1}, "lease": "lease-token"}


def test_the_answer_is_sent_as_shown_on_screen_with_a_fresh_client_id():
    api, report = StubApi(), AnnotatorReport("sim")
    assert _answer(api, stub_run(), report, LEASED, rng())
    assert _answer(api, stub_run(), report, {**LEASED, "left": {"id": 1}, "right": {"id": 2}}, rng())
    (path, first), (_, second) = api.requests
    assert path == "/api/v1/queries/7/judgments/"
    assert (first["choice"], second["choice"]) == ("left", "right")  # clip 2 (return 5) wherever it is shown
    assert first["lease"] == "lease-token"
    assert first["client_id"] != second["client_id"]
    assert report.labels == 2


def test_a_conflict_moves_on_and_other_http_errors_stop():
    report = AnnotatorReport("sim")
    conflict = StubApi(ApiError(409, "lease_expired", "your lease on this query has expired"))
    assert not _answer(conflict, stub_run(), report, LEASED, rng())
    assert (report.labels, report.conflicts) == (0, 1)
    with pytest.raises(ApiError, match="HTTP 403"):
        _answer(StubApi(ApiError(403, "permission_denied", "no")), stub_run(), report, LEASED, rng())


def test_a_skip_goes_to_the_lease_skip_endpoint():
    api, report = StubApi(), AnnotatorReport("sim")
    assert not _answer(api, stub_run(skip_threshold=10.0), report, LEASED, rng())
    assert api.requests == [("/api/v1/leases/lease-token/skip/", None)]
    assert report.skips == 1


def test_threads_share_the_label_budget_and_the_first_failure_stops_everyone():
    budget, stop, taken = LabelBudget(100), threading.Event(), []

    def worker() -> None:
        while budget.reserve():
            taken.append(1)

    def failing() -> None:
        raise SimulationError("boom")

    def waiting() -> None:
        assert stop.wait(timeout=5)

    assert _run_all([worker] * 4, threaded=True, stop=stop) is None
    assert len(taken) == 100 and not budget.reserve()
    error = _run_all([waiting, failing, waiting], threaded=True, stop=stop)
    assert str(error) == "boom" and stop.is_set()


def test_parse_sigmas():
    assert parse_sigmas(["angle_sq=1.5", " torque_sq = 2 "]) == {"angle_sq": 1.5, "torque_sq": 2.0}
    for bad in ["angle_sq", "=1", "angle_sq=fast", "angle_sq=nan"]:
        with pytest.raises(SimulationError, match="KEY=NUMBER"):
            parse_sigmas([bad])


def test_factors_only_pairs_are_answered_like_video_pairs(live_server, transactional_db, project):
    """Pairs of clips without video (compared by their factor totals) are served and answered through the API;
    the teacher's ground truth is the rollout's rewards, which video or not doesn't change."""
    clips = add_clips_with_true_rewards(project, 4, seed=3)
    Clip.objects.filter(pk__in=[clip.pk for clip in clips]).update(render_status=RenderStatus.NO_VIDEO)
    pairs = [(clips[0].pk, clips[1].pk), (clips[2].pk, clips[3].pk), (clips[0].pk, clips[3].pk)]
    queries_for_pairs(project=project, pairs=pairs, rng=np.random.default_rng(2))
    output = simulate(live_server, project, annotators=1)
    judgments = sim_judgments(project)
    assert len(judgments) == 3, output
    teacher = BPrefTeacher()
    for judgment in judgments:
        assert judgment.canonical_label == oracle_answer(teacher, judgment), judgment
