"""Which pairs of new clips to ask humans about (pure numpy; design §5, active selection).

Active selection draws ``oversample ×`` the needed number of distinct candidate pairs uniformly, scores
them (the reward ensemble's disagreement about P(a≻b)), and keeps the highest-scoring ones while no clip
appears in more than ``max_per_clip`` chosen pairs, so one odd clip cannot swallow the whole budget.
Without a score function the same draw, taken in random order, is the uniform fallback.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

_ENUMERATE_UP_TO = 500_000

PairScores = Callable[[np.ndarray], np.ndarray]
"""(n, 2) pairs of clip indices → (n,) scores, higher = more worth asking."""


def candidate_pairs(n_clips: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``count`` distinct unordered pairs (i < j) of ``range(n_clips)``, uniformly, shape (m, 2)."""
    total = n_clips * (n_clips - 1) // 2
    if n_clips < 2 or count <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    if total <= _ENUMERATE_UP_TO:
        i, j = np.triu_indices(n_clips, k=1)
        picked = rng.permutation(total)[: min(count, total)]
        return np.stack([i[picked], j[picked]], axis=1).astype(np.int64)
    # A large pool: draw pairs and drop repeats; with count << total almost every draw is new.
    chosen: dict[tuple[int, int], None] = {}
    while len(chosen) < count:
        draws = rng.integers(0, n_clips, size=(2 * (count - len(chosen)) + 8, 2))
        for a, b in draws:
            if a != b:
                chosen.setdefault((int(min(a, b)), int(max(a, b))), None)
                if len(chosen) == count:
                    break
    return np.array(list(chosen), dtype=np.int64).reshape(-1, 2)


def select_pairs(
    n_clips: int,
    count: int,
    rng: np.random.Generator,
    *,
    scores: PairScores | None = None,
    oversample: int = 10,
    max_per_clip: int = 3,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Choose up to ``count`` pairs; returns (pairs (m, 2), their scores or None for uniform selection)."""
    if oversample < 1 or max_per_clip < 1:
        raise ValueError("oversample and max_per_clip must be at least 1")
    candidates = candidate_pairs(n_clips, count * (oversample if scores is not None else 4), rng)
    if len(candidates) == 0:
        return candidates, None
    candidate_scores = None
    order = np.arange(len(candidates))  # already in random order
    if scores is not None:
        candidate_scores = np.asarray(scores(candidates), dtype=np.float64)
        if candidate_scores.shape != (len(candidates),):
            raise ValueError(f"scores must return shape ({len(candidates)},), got {candidate_scores.shape}")
        # Stable sort on the negated score: ties keep the random order, so equal scores don't favour low ids.
        order = np.argsort(-candidate_scores, kind="stable")
    uses = np.zeros(n_clips, dtype=np.int64)
    chosen: list[int] = []
    for index in order:
        a, b = candidates[index]
        if uses[a] >= max_per_clip or uses[b] >= max_per_clip:
            continue
        uses[a] += 1
        uses[b] += 1
        chosen.append(int(index))
        if len(chosen) == count:
            break
    picked = candidates[chosen]
    return picked, None if candidate_scores is None else candidate_scores[chosen]
