"""imitation's preference gatherer against a real HTTP server, without imitation: its core, ``PairGatherer``
(upload fragments, ask their pairs, wait for the answers, ties as 0.5, partial results at a timeout), and the
pair-query endpoints it uses. The example that runs imitation itself is ``test_imitation_example`` below."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from heronry_client import Client, ValidationError
from heronry_client.imitation import GatherTimeout, PairGatherer

from labeling.models import Clip, Project, Query, QuerySource
from labeling.services import project_create
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

LENGTH = 5
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Frag:
    """What the gatherer reads of imitation's TrajectoryWithRew."""

    obs: np.ndarray
    acts: np.ndarray
    rews: np.ndarray
    infos: list[dict[str, Any]] = field(default_factory=list)


def fragment(rng: np.random.Generator, *, quality: float, frames: bool = True, steps: int = LENGTH) -> Frag:
    infos = [{"rendered_img": rng.integers(0, 255, size=(24, 32, 3), dtype=np.uint8)} for _ in range(steps)]
    return Frag(
        obs=rng.normal(size=(steps + 1, 3)),
        acts=rng.uniform(-1, 1, size=(steps, 1)).astype(np.float32),
        rews=np.full(steps, quality),
        infos=infos if frames else [{} for _ in range(steps)],
    )


def speed(frag: Frag) -> dict[str, np.ndarray]:
    return {"speed": frag.obs[:-1, 0]}


@pytest.fixture
def sim(researcher, annotator) -> Project:
    from labeling.services import membership_add

    project = project_create(
        created_by=researcher,
        name="Imitation",
        slug="imitation",
        env_id="external",
        segment_steps=LENGTH,
        render_width=32,
        render_height=24,
        factors=[{"key": "speed", "label": "Speed", "source": "obs:0"}],
    )
    Project.objects.filter(pk=project.pk).update(
        observation_space={"shape": [3]}, action_space={"kind": "box", "shape": [1]}
    )
    membership_add(project=project, user=annotator)
    return project


@pytest.fixture
def rita(live_server, researcher) -> Client:
    with Client.login(live_server.url, researcher.username, PASSWORD, retries=0) as client:
        yield client


@pytest.fixture
def anna(live_server, annotator) -> Client:
    with Client.login(live_server.url, annotator.username, PASSWORD, retries=0) as client:
        yield client


def answer_all(anna: Client, quality: dict[int, float], *, limit: int | None = None) -> int:
    """The annotator answers open pairs by the clips' quality: the better one, or equal."""
    answered = 0
    while limit is None or answered < limit:
        query = anna.next_query("imitation")
        if query is None:
            return answered
        left, right = quality[int(query["left"]["id"])], quality[int(query["right"]["id"])]
        choice = "equal" if left == right else "left" if left > right else "right"
        anna.submit_judgment(query, choice)
        answered += 1
    return answered


def test_fragments_become_one_clip_each_with_video_and_no_random_queries(rita, sim):
    rng = np.random.default_rng(0)
    frags = [fragment(rng, quality=float(i)) for i in range(4)]
    gatherer = PairGatherer(rita, "imitation", factors=speed)
    clip_ids = gatherer.upload_fragments([frags[0], frags[1], frags[0], frags[2], frags[3]])
    assert clip_ids[0] == clip_ids[2]  # the same fragment twice is one clip
    assert len(set(clip_ids)) == 4
    clips = {clip.pk: clip for clip in Clip.objects.filter(project=sim)}
    assert set(clips) == set(clip_ids)
    for frag, clip_id in zip(
        [frags[0], frags[1], frags[2], frags[3]], [clip_ids[0], clip_ids[1], *clip_ids[3:]], strict=True
    ):
        clip = clips[clip_id]
        assert clip.length == LENGTH and clip.render_status == "ready"
        assert clip.factor_totals["speed"] == pytest.approx(frag.obs[:-1, 0].sum())
        assert clip.true_return == pytest.approx(frag.rews.sum())
    assert not Query.objects.filter(project=sim).exists()  # the gatherer asks its own pairs only


def test_gather_returns_preferences_in_the_callers_order_with_ties_as_one_half(rita, anna, sim):
    rng = np.random.default_rng(1)
    good, bad, same_a, same_b = (fragment(rng, quality=q) for q in (3.0, 1.0, 2.0, 2.0))
    quality: dict[int, float] = {}

    def annotate(done: int, total: int) -> None:
        # Called on every poll: the annotator answers what is open, through the API, like a person would.
        for clip in rita.clips("imitation"):
            quality[int(clip["id"])] = float(clip["true_return"])
        answer_all(anna, quality)

    gatherer = PairGatherer(rita, "imitation", factors=speed, timeout=30, poll_interval=0.05, progress=annotate)
    result = gatherer.gather([(good, bad), (bad, good), (same_a, same_b)])
    np.testing.assert_array_equal(result.preferences, np.array([1.0, 0.0, 0.5], dtype=np.float32))
    assert result.preferences.dtype == np.float32
    assert result.ties == 1 and result.answered.all()
    # (good, bad) and (bad, good) are one question: the pair is asked once and read both ways.
    assert result.query_ids[0] == result.query_ids[1]
    assert Query.objects.filter(project=sim, source=QuerySource.ACTIVE).count() == 2


def test_timeout_gives_partial_results_or_raises(rita, anna, sim):
    rng = np.random.default_rng(2)
    frags = [fragment(rng, quality=float(q)) for q in (1, 2, 3, 4)]
    gatherer = PairGatherer(rita, "imitation", factors=speed, timeout=0.2, poll_interval=0.05)
    clips = gatherer.upload_fragments(frags)
    pairs = [(clips[0], clips[1]), (clips[2], clips[3])]
    ids = gatherer.ask(pairs)
    assert gatherer.ask(pairs) == ids  # asking again makes nothing new
    quality = {clip: float(q) for clip, q in zip(clips, (1, 2, 3, 4), strict=True)}
    assert answer_all(anna, quality, limit=1) == 1
    result = gatherer.wait(pairs, ids)
    assert int(result.answered.sum()) == 1
    assert np.isnan(result.preferences).sum() == 1
    assert set(result.preferences[result.answered].tolist()) == {0.0}  # the lower-quality clip came first
    gatherer.on_timeout = "raise"
    with pytest.raises(GatherTimeout) as timed_out:
        gatherer.wait(pairs, ids)
    assert int(timed_out.value.result.answered.sum()) == 1


def test_cant_tell_is_no_answer_and_answers_read_in_canonical_terms(rita, anna, sim):
    rng = np.random.default_rng(3)
    gatherer = PairGatherer(rita, "imitation", factors=speed, timeout=0, poll_interval=0.05)
    a, b = gatherer.upload_fragments([fragment(rng, quality=1), fragment(rng, quality=2)])
    (query_id,) = gatherer.ask([(b, a)])
    query = anna.next_query("imitation")
    anna.submit_judgment(query, "cant_tell")
    (row,) = rita.query_answers("imitation", [query_id, 10**9])  # an unknown id is left out
    assert (row["clip_a"], row["clip_b"]) == (min(a, b), max(a, b))
    assert row["answers"] == {"a": 0, "b": 0, "equal": 0, "cant_tell": 1}
    assert row["status"] == "complete" and row["target_a"] is None and row["majority"] is None
    assert np.isnan(gatherer.wait([(b, a)], [query_id]).preferences).all()


def test_bad_pairs_and_fragments_are_refused(rita, anna, sim, researcher):
    rng = np.random.default_rng(4)
    gatherer = PairGatherer(rita, "imitation", factors=speed)
    a, b = gatherer.upload_fragments([fragment(rng, quality=1), fragment(rng, quality=2)])
    other = project_create(created_by=researcher, name="Other", slug="other", env_id="Pendulum-v1")
    from tests.conftest import add_fake_clips

    (foreign,) = add_fake_clips(other, 1)
    for pairs, field_name in (
        ([(a, a)], None),
        ([(a, foreign.pk)], None),
        ([(a, b)] * 501, "pairs"),
    ):
        with pytest.raises(ValidationError) as refused:
            rita.ask_pairs("imitation", pairs) if len(pairs) <= 500 else rita._request(
                "POST", "/projects/imitation/queries/", json={"pairs": [list(p) for p in pairs]}
            )
        assert refused.value.status == 400
        if field_name:
            assert field_name in refused.value.fields
    for bad in ("", "1,x", "-1", ",".join(["1"] * 501)):
        with pytest.raises(ValidationError) as refused:
            rita.get("/projects/imitation/queries/", ids=bad)
        assert "ids" in refused.value.fields
    with pytest.raises(ValueError, match="never mixed"):
        gatherer.upload_fragments([fragment(rng, quality=1), fragment(rng, quality=2, frames=False)])
    factorless = project_create(
        created_by=researcher, name="Bare", slug="bare", env_id="Pendulum-v1", segment_steps=LENGTH
    )
    factorless.factors.all().delete()  # nothing to compare clips without video by
    with pytest.raises(ValueError, match="rendered_img"):
        PairGatherer(rita, "bare", factors=speed).upload_fragments([fragment(rng, quality=1, frames=False)])
    with pytest.raises(ValueError, match="clips have 5"):
        gatherer.upload_fragments([fragment(rng, quality=1, steps=7)])
    # The answers are everyone's: annotators may not read them, nor ask pairs.
    with pytest.raises(Exception) as forbidden:
        anna.query_answers("imitation", [1])
    assert getattr(forbidden.value, "status", None) == 403


def test_fragments_without_frames_are_compared_factors_only(rita, anna, sim):
    """Fragments without frames become clips without video; the annotator gets the pairs through the API with
    their factor totals (no video) and answers them; the gatherer returns the preferences as for video."""
    rng = np.random.default_rng(5)
    good, bad, other = (fragment(rng, quality=q, frames=False) for q in (3.0, 1.0, 2.0))
    quality: dict[int, float] = {}
    served: list[dict[str, Any]] = []

    def annotate(done: int, total: int) -> None:
        for clip in rita.clips("imitation"):
            quality[int(clip["id"])] = float(clip["true_return"])
        while (query := anna.next_query("imitation")) is not None:
            served.append(query)
            left, right = quality[int(query["left"]["id"])], quality[int(query["right"]["id"])]
            anna.submit_judgment(query, "equal" if left == right else "left" if left > right else "right")

    gatherer = PairGatherer(rita, "imitation", factors=speed, timeout=30, poll_interval=0.05, progress=annotate)
    assert gatherer.factors_only_allowed
    result = gatherer.gather([(good, bad), (other, good)])
    np.testing.assert_array_equal(result.preferences, np.array([1.0, 0.0], dtype=np.float32))
    assert set(Clip.objects.filter(project=sim).values_list("render_status", flat=True)) == {"none"}
    assert len(served) == 2
    for query in served:
        assert query["factors_only"] is True and [f["key"] for f in query["factors"]] == ["speed"]
        for side in ("left", "right"):
            clip = Clip.objects.get(pk=query[side]["id"])
            assert query[side]["has_video"] is False and query[side]["video_url"] is None
            assert query[side]["factor_totals"]["speed"] == pytest.approx(clip.factor_totals["speed"])


@pytest.mark.slow
@pytest.mark.integration
def test_imitation_example_end_to_end():
    """imitation's preference comparisons on Pendulum-v1, answered through a live server: what
    ``make imitation-example`` runs (its own virtualenv, a throwaway database, the server, simulate_annotators),
    without make's ``install`` step (this suite already runs in the installed project)."""
    if os.environ.get("HERONRY_IMITATION_EXAMPLE") != "1":
        pytest.skip("set HERONRY_IMITATION_EXAMPLE=1 to run the imitation example (it builds var/imitation-venv)")
    done = subprocess.run(
        ["bash", "examples/run_imitation_example.sh"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "preferences gathered" in done.stdout
    assert "reward accuracy" in done.stdout
