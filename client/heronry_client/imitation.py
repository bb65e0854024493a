"""imitation's preference comparisons with human answers from a Heronry project.

``HeronryPreferenceGatherer`` is an ``imitation.algorithms.preference_comparisons.PreferenceGatherer``: given
imitation's fragment pairs it uploads the fragments to a project as episodes (one clip per fragment, video cut
from frames the environment rendered into each step's ``info``; fragments without frames become clips without
video, compared factors-only by their factor totals, when the project has factors), asks the project's
annotators exactly those pairs, polls until they are answered or a timeout passes, and returns P(fragment 1 is
better) per pair: 1, 0, 0.5 for "equal" (the mean over annotators when a project asks several).

**Unanswered pairs.** imitation's ``PreferenceComparisons.train`` pushes every pair it gathered into its
``PreferenceDataset``, whatever came back. A human may not answer in time (or answers only "can't tell"), so the
gatherer returns ``NaN`` for such a pair, and :func:`answered_only` swaps the trainer's dataset for one that
drops NaN pairs on ``push`` (a NaN target would turn the reward model's loss into NaN). Without the swap, use
``on_timeout="raise"``, which raises :class:`GatherTimeout` (carrying the partial result) instead.

imitation is imported only when ``HeronryPreferenceGatherer`` or ``AnsweredPreferenceDataset`` is first used,
so this module — and the core, :class:`PairGatherer`, which needs only the API client and numpy — works
without it. The fragments are duck-typed: anything with ``obs`` (L+1, …), ``acts`` (L, …), optional ``rews``
(L,) and ``infos`` (L dicts) will do, as imitation's ``TrajectoryWithRew`` does.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .client import Client
from .errors import HeronryError

FRAME_KEY = "rendered_img"  # where RenderFrameInfo puts each step's frame (the name later imitation versions use)
MAX_UPLOAD_BYTES = 60 * 1_048_576  # below the server's default MAX_UPLOAD_BYTES (64 MiB), with room for the form


class Fragment(Protocol):
    obs: Any
    acts: Any
    infos: Any


FactorFunction = Callable[[Any], Mapping[str, np.ndarray]]


def reward_factor(key: str = "reward") -> FactorFunction:
    """Factor values from the fragment's rewards alone: ``{key: fragment.rews}``."""

    def factors(fragment: Any) -> Mapping[str, np.ndarray]:
        return {key: np.asarray(fragment.rews, dtype=np.float64)}

    return factors


class GatherTimeout(HeronryError):
    """Not every pair was answered before the timeout (``on_timeout="raise"``); ``.result`` holds what was."""

    def __init__(self, message: str, result: GatherResult) -> None:
        super().__init__(message, status=0, code="timeout")
        self.result = result


@dataclass
class GatherResult:
    """One round of questions: per pair its query, P(first fragment better) (NaN: no answer) and the answers."""

    preferences: np.ndarray  # float32 (n_pairs,), NaN where unanswered
    query_ids: list[int]
    answers: list[dict[str, Any]] = field(default_factory=list)  # the server's rows, in pair order
    waited_seconds: float = 0.0

    @property
    def answered(self) -> np.ndarray:
        return ~np.isnan(self.preferences)

    @property
    def ties(self) -> int:
        return int(np.sum(self.preferences == 0.5))


class PairGatherer:
    """Upload fragments, ask pairs, wait for the answers: the gatherer without imitation.

    ``factors(fragment)`` gives the per-step values of every project factor (``{key: (L,) array}``); the
    fragments' length must be the project's clip length (``segment_steps``), so each fragment becomes one clip.
    Fragments with frames (``infos[i][frame_key]``) get video; fragments without any are uploaded factors-only
    (annotators compare the two clips' factor totals) when the project allows it (pairwise feedback and at least
    one factor), else refused (``ValueError``), as is a mix of the two.
    ``timeout`` bounds the wait for answers (seconds); ``poll_interval`` is the time between two reads;
    ``complete_only``: a pair counts as answered once its query has all the answers the project wants
    (its overlap), else at its first informative answer. At the timeout, pairs with an informative answer are
    returned and the others are NaN (``on_timeout="partial"``), or :class:`GatherTimeout` is raised.
    """

    def __init__(
        self,
        client: Client,
        project: str,
        *,
        factors: FactorFunction,
        timeout: float = 600.0,
        poll_interval: float = 2.0,
        frame_key: str = FRAME_KEY,
        fps: int | None = None,
        priority: int = 0,
        complete_only: bool = True,
        on_timeout: str = "partial",
        upload_timeout: float = 600.0,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        if on_timeout not in ("partial", "raise"):
            raise ValueError('on_timeout is "partial" or "raise"')
        if timeout < 0 or poll_interval <= 0:
            raise ValueError("timeout must be ≥ 0 and poll_interval > 0")
        self.client = client
        self.project = project
        self.factors = factors
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.frame_key = frame_key
        self.fps = fps
        self.priority = priority
        self.complete_only = complete_only
        self.on_timeout = on_timeout
        self.upload_timeout = upload_timeout
        self.progress = progress
        self._segment_steps: int | None = None
        self._factors_only_allowed: bool | None = None

    def _project_info(self) -> None:
        info = self.client.project(self.project)
        self._segment_steps = int(info["segment_steps"])
        # Fragments without frames become clips without video, compared by their factor totals: that needs
        # pairwise feedback and factors to show.
        self._factors_only_allowed = info.get("feedback_mode") in ("pairwise", "both") and bool(info.get("factors"))

    @property
    def segment_steps(self) -> int:
        if self._segment_steps is None:
            self._project_info()
        return int(self._segment_steps)  # type: ignore[arg-type]

    @property
    def factors_only_allowed(self) -> bool:
        """Whether the project compares clips without video by their factor totals (pairwise feedback on and
        at least one factor): then fragments without frames are uploaded factors-only."""
        if self._factors_only_allowed is None:
            self._project_info()
        return bool(self._factors_only_allowed)

    # --- fragments → clips ------------------------------------------------------------------------------------
    def _has_frames(self, fragment: Any) -> bool:
        infos = list(fragment.infos if fragment.infos is not None else [])
        return bool(infos) and all(isinstance(info, Mapping) and info.get(self.frame_key) is not None for info in infos)

    def _with_video(self, fragments: Sequence[Any]) -> bool:
        """Whether these fragments become clips with video (every one has frames) or factors-only clips (none
        has, and the project allows it). A mix is refused: the project compares video with video only."""
        framed = [self._has_frames(fragment) for fragment in fragments]
        if all(framed):
            return True
        if any(framed):
            raise ValueError(
                f"some fragments have frames under {self.frame_key!r} and some have none: a pair is compared "
                "by video (every fragment with frames) or by factor totals (none with frames), never mixed"
            )
        if not self.factors_only_allowed:
            raise ValueError(
                f"every step's info needs a frame under {self.frame_key!r} (wrap the environment in "
                "heronry_client.imitation.RenderFrameInfo): this project has no factors to compare fragments "
                "without video by (or no pairwise feedback)"
            )
        return False

    def _frames(self, fragment: Any) -> np.ndarray:
        stacked = np.stack([np.asarray(info[self.frame_key]) for info in fragment.infos])
        if stacked.dtype != np.uint8 or stacked.ndim != 4 or stacked.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (H, W, 3); got {stacked.dtype} {stacked.shape[1:]}")
        return stacked

    def _episode(self, fragments: Sequence[Any]) -> bytes:
        """Fragments back to back as one episode (.npz): the project cuts it into one clip per fragment.

        A fragment's last observation is dropped except for the episode's last: a clip's steps use the
        observations before each action, so nothing a clip shows or is scored on is lost. Frames are one per
        step (the frame rendered after it)."""
        length = self.segment_steps
        with_video = self._with_video(fragments)
        observations, actions, rewards, frames = [], [], [], []
        factor_columns: dict[str, list[np.ndarray]] = {}
        for index, fragment in enumerate(fragments):
            obs, acts = np.asarray(fragment.obs), np.asarray(fragment.acts)
            if len(acts) != length or len(obs) != length + 1:
                raise ValueError(
                    f"fragment {index} has {len(acts)} steps; the project's clips have {length} "
                    "(use fragment_length = the project's clips.length)"
                )
            observations.append(obs[:-1])
            actions.append(acts)
            rews = getattr(fragment, "rews", None)
            rewards.append(None if rews is None else np.asarray(rews, dtype=np.float64))
            if with_video:
                frames.append(self._frames(fragment))
            for key, values in self.factors(fragment).items():
                column = np.asarray(values, dtype=np.float64).reshape(-1)
                if len(column) != length:
                    raise ValueError(f"factor {key!r} of fragment {index} has {len(column)} values, not {length}")
                factor_columns.setdefault(key, []).append(column)
        observations.append(np.asarray(fragments[-1].obs)[-1:])
        arrays: dict[str, np.ndarray] = {
            "observations": np.concatenate(observations),
            "actions": np.concatenate(actions),
        }
        if with_video:
            arrays["frames"] = np.concatenate(frames)
        if all(r is not None for r in rewards):
            arrays["rewards"] = np.concatenate([r for r in rewards if r is not None])
        for key, columns in factor_columns.items():
            arrays[f"factor_{key}"] = np.concatenate(columns)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
        return buffer.getvalue()

    def _upload(self, fragments: Sequence[Any]) -> list[int]:
        """Clip ids of the fragments, in order; uploads in as many episodes as the size limit needs."""
        data = self._episode(fragments)
        if len(data) > MAX_UPLOAD_BYTES and len(fragments) > 1:
            half = len(fragments) // 2
            return self._upload(fragments[:half]) + self._upload(fragments[half:])
        run = self.client.upload_rollout(self.project, data, queries=0, fps=self.fps, render="all")
        self.client.wait_for(run, timeout=self.upload_timeout, poll_interval=min(self.poll_interval, 1.0))
        clips = sorted(self.client.clips(self.project, run=run), key=lambda clip: int(clip["start"]))
        if len(clips) != len(fragments):
            raise HeronryError(
                f"the upload made {len(clips)} clips for {len(fragments)} fragments", status=0, code="unexpected"
            )
        return [int(clip["id"]) for clip in clips]

    def upload_fragments(self, fragments: Sequence[Any]) -> list[int]:
        """The clip id of each fragment (a fragment given twice, as the same object, is uploaded once)."""
        unique: dict[int, Any] = {}
        for fragment in fragments:
            unique.setdefault(id(fragment), fragment)
        ordered = list(unique.values())
        if not ordered:
            return []
        self._with_video(ordered)  # refuse a mix before anything is uploaded (a large upload is split in parts)
        clip_of = dict(zip(unique, self._upload(ordered), strict=True))
        return [clip_of[id(fragment)] for fragment in fragments]

    # --- pairs → answers --------------------------------------------------------------------------------------
    def _answered(self, row: Mapping[str, Any]) -> bool:
        if row.get("target_a") is None:
            return False
        return not self.complete_only or row["status"] != "open" or row["answers_given"] >= row["answers_wanted"]

    @staticmethod
    def _preference(row: Mapping[str, Any], first_clip: int) -> float:
        target_a = float(row["target_a"])
        return target_a if int(row["clip_a"]) == first_clip else 1.0 - target_a

    def ask(self, clip_pairs: Sequence[tuple[int, int]]) -> list[int]:
        rows = self.client.ask_pairs(self.project, clip_pairs, priority=self.priority)
        return [int(row["id"]) for row in rows]

    def wait(self, clip_pairs: Sequence[tuple[int, int]], query_ids: Sequence[int]) -> GatherResult:
        """Poll the queries until every pair is answered or the timeout passes."""
        started = time.monotonic()
        deadline = started + self.timeout
        unique_ids = sorted(set(query_ids))
        while True:
            rows = {int(row["id"]): row for row in self.client.query_answers(self.project, unique_ids)}
            done = sum(self._answered(rows[pk]) for pk in unique_ids if pk in rows)
            if self.progress is not None:
                self.progress(done, len(unique_ids))
            if done == len(unique_ids) or time.monotonic() >= deadline:
                break
            time.sleep(max(0.0, min(self.poll_interval, deadline - time.monotonic())))
        preferences = np.full(len(query_ids), np.nan, dtype=np.float32)
        answers = []
        for index, (pk, (first, _second)) in enumerate(zip(query_ids, clip_pairs, strict=True)):
            row = rows.get(pk, {})
            answers.append(row)
            # At the timeout an informative answer counts even if the query still waits for more (partial).
            if row.get("target_a") is not None:
                preferences[index] = self._preference(row, first)
        result = GatherResult(
            preferences=preferences,
            query_ids=list(query_ids),
            answers=answers,
            waited_seconds=time.monotonic() - started,
        )
        if done < len(unique_ids) and self.on_timeout == "raise":
            raise GatherTimeout(f"{done} of {len(unique_ids)} pairs answered after {self.timeout} s", result)
        return result

    def gather(self, fragment_pairs: Sequence[tuple[Any, Any]]) -> GatherResult:
        """Upload the fragments, ask the pairs and wait: P(first fragment better) per pair (NaN: unanswered)."""
        if not fragment_pairs:
            return GatherResult(preferences=np.zeros(0, dtype=np.float32), query_ids=[])
        flat = [fragment for pair in fragment_pairs for fragment in pair]
        clip_ids = self.upload_fragments(flat)
        clip_pairs = [(clip_ids[2 * i], clip_ids[2 * i + 1]) for i in range(len(fragment_pairs))]
        return self.wait(clip_pairs, self.ask(clip_pairs))


# --- frames into infos -----------------------------------------------------------------------------------------


def _resize_nearest(frame: np.ndarray, width: int, height: int) -> np.ndarray:
    rows = (np.arange(height) * frame.shape[0] // height).clip(0, frame.shape[0] - 1)
    cols = (np.arange(width) * frame.shape[1] // width).clip(0, frame.shape[1] - 1)
    return np.ascontiguousarray(frame[rows][:, cols, :3])


def RenderFrameInfo(env: Any, *, width: int = 160, height: int = 160, key: str = FRAME_KEY) -> Any:
    """Wrap a Gymnasium environment made with ``render_mode="rgb_array"`` so that each step's ``info`` holds the
    frame rendered after the step, shrunk to ``width`` × ``height`` (nearest pixel; small frames keep imitation's
    trajectories, which hold every info, small). imitation 1.0.1 has no such wrapper."""
    import gymnasium as gym

    class _RenderFrameInfo(gym.Wrapper):
        def step(self, action: Any) -> Any:
            observation, reward, terminated, truncated, info = self.env.step(action)
            frame = np.asarray(self.env.render(), dtype=np.uint8)
            info = dict(info)
            info[key] = _resize_nearest(frame, width, height)
            return observation, reward, terminated, truncated, info

    return _RenderFrameInfo(env)


# --- imitation's classes, built when first asked for -----------------------------------------------------------

_built: dict[str, type] = {}


def _build() -> dict[str, type]:
    if _built:
        return _built
    from imitation.algorithms import preference_comparisons as pc

    class HeronryPreferenceGatherer(pc.PreferenceGatherer):
        """imitation's ``PreferenceGatherer`` answered by a Heronry project's annotators (see the module).

        Arguments as :class:`PairGatherer`'s, plus imitation's ``rng`` and ``custom_logger``. Returns float32
        preferences, NaN for a pair without an answer (use :func:`answered_only`); raises
        :class:`GatherTimeout` when no pair at all was answered in time."""

        def __init__(
            self,
            client: Client,
            project: str,
            *,
            rng: np.random.Generator | None = None,
            custom_logger: Any = None,
            **options: Any,
        ) -> None:
            super().__init__(rng=rng, custom_logger=custom_logger)
            self.core = PairGatherer(client, project, **options)
            self.last_result: GatherResult | None = None

        def __call__(self, fragment_pairs: Sequence[Any]) -> np.ndarray:
            result = self.core.gather(list(fragment_pairs))
            self.last_result = result
            answered = int(result.answered.sum())
            if answered == 0 and len(result.preferences) > 0:
                # imitation would train on an empty dataset and fail with an obscure sampler error.
                raise GatherTimeout(f"no pair of {len(result.preferences)} answered in {self.core.timeout} s", result)
            self.logger.record("heronry/answered", answered)
            self.logger.record("heronry/unanswered", len(result.preferences) - answered)
            self.logger.record("heronry/ties", result.ties)
            self.logger.record("heronry/wait_seconds", result.waited_seconds)
            return result.preferences

    class AnsweredPreferenceDataset(pc.PreferenceDataset):
        """imitation's ``PreferenceDataset`` that keeps only answered pairs (drops NaN preferences on push)."""

        def push(self, fragments: Sequence[Any], preferences: np.ndarray) -> None:
            keep = ~np.isnan(preferences)
            if not keep.any():
                return
            kept = [pair for pair, ok in zip(fragments, keep, strict=True) if ok]
            super().push(kept, np.asarray(preferences[keep], dtype=np.float32))

    _built["HeronryPreferenceGatherer"] = HeronryPreferenceGatherer
    _built["AnsweredPreferenceDataset"] = AnsweredPreferenceDataset
    return _built


def answered_only(comparisons: Any) -> Any:
    """Give a ``PreferenceComparisons`` a dataset that drops unanswered (NaN) pairs; returns it."""
    old = comparisons.dataset
    comparisons.dataset = _build()["AnsweredPreferenceDataset"](max_size=old.max_size)
    return comparisons


def __getattr__(name: str) -> Any:
    if name in ("HeronryPreferenceGatherer", "AnsweredPreferenceDataset"):
        return _build()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
