"""Preference labels in the layout offline preference-learning code reads: Preference Transformer's and Uni-RLHF's.

Those loaders take a flat dataset (the episodes' transitions concatenated, as D4RL's ``qlearning_dataset`` gives
them) and, per labelled query, the start index of each side's segment in it (``start_indices``,
``start_indices_2``), one segment length (``query_length``) and a label per query: ``0`` (the first segment is
better), ``1`` (the second) or ``-1`` (equal), which they turn into one-hot rows, ``[0.5, 0.5]`` for a tie. Here
``labels`` is that one-hot form already, ``[P(first ≻ second), P(second ≻ first)]``, exact for soft targets
(several annotators, HERON); ``human_label`` is the raw form (``-1`` for a target of exactly 0.5).

The flat dataset is the concatenation, in the order of the ``episode_*`` arrays, of the project's episodes that
came from a dataset (uploads and Minari imports), each ``episode_lengths[i]`` transitions long: index
``episode_starts[i] + t`` is step ``t`` of episode ``i``. For a Minari dataset imported whole, that is the
dataset's own episodes in id order. Plain numpy arrays only: the file is an ``.npz`` that loads with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

LAYOUT = "uni-rlhf"
LAYOUT_VERSION = 1


@dataclass(frozen=True)
class Episode:
    rollout: int  # Heronry's rollout id
    source: str  # "upload" or "minari:<dataset id>"
    episode_id: int  # the episode's id in its source dataset (Minari); the rollout id for an upload; -1 unknown
    length: int  # transitions (actions)


@dataclass(frozen=True)
class ClipSpan:
    rollout: int
    start: int
    length: int


def episode_order(episodes: Sequence[Episode]) -> list[Episode]:
    """The concatenation order: by source, then episode id, then rollout (so a whole Minari import lines up with
    the dataset's own order)."""
    return sorted(episodes, key=lambda e: (e.source, e.episode_id, e.rollout))


def uni_rlhf_arrays(
    *,
    clip_1: np.ndarray,
    clip_2: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    clips: Mapping[int, ClipSpan],
    episodes: Sequence[Episode],
    metadata: Mapping[str, Any],
) -> dict[str, np.ndarray]:
    """The layout's arrays for labelled pairs (``target`` = P(clip_1 ≻ clip_2)). Pairs with a clip outside
    ``episodes`` (a simulator's rollout) are left out and counted in the metadata; ValueError when none is left
    or the kept clips differ in length (the loaders take one ``query_length``)."""
    ordered = episode_order(episodes)
    lengths = np.array([e.length for e in ordered], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64) if len(ordered) else lengths
    position = {e.rollout: i for i, e in enumerate(ordered)}

    def side(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        spans = [clips.get(int(c)) for c in ids]
        known = np.array([s is not None and s.rollout in position for s in spans], dtype=bool)
        index = np.array([position[s.rollout] if k and s else -1 for s, k in zip(spans, known, strict=True)])
        offset = np.array([s.start if k and s else -1 for s, k in zip(spans, known, strict=True)])
        length = np.array([s.length if k and s else -1 for s, k in zip(spans, known, strict=True)])
        return known, index.astype(np.int64), offset.astype(np.int64), length.astype(np.int64)

    known_1, index_1, offset_1, length_1 = side(clip_1)
    known_2, index_2, offset_2, length_2 = side(clip_2)
    keep = known_1 & known_2
    if not keep.any():
        raise ValueError("no labelled pair has both clips from an uploaded or imported episode")
    lengths_kept = np.unique(np.concatenate([length_1[keep], length_2[keep]]))
    if len(lengths_kept) != 1:
        raise ValueError(f"the pairs' clips differ in length ({lengths_kept.tolist()}); the layout needs one")
    t = np.asarray(target, dtype=np.float64)[keep]
    human = np.where(t > 0.5, 0, np.where(t < 0.5, 1, -1)).astype(np.int64)
    return {
        "start_indices": starts[index_1[keep]] + offset_1[keep],
        "start_indices_2": starts[index_2[keep]] + offset_2[keep],
        "query_length": np.array(int(lengths_kept[0]), dtype=np.int64),
        "labels": np.stack([t, 1.0 - t], axis=1).astype(np.float32),
        "human_label": human,
        "weights": np.asarray(weight, dtype=np.float32)[keep],
        "clip_ids": np.asarray(clip_1, dtype=np.int64)[keep],
        "clip_ids_2": np.asarray(clip_2, dtype=np.int64)[keep],
        "episode_index": index_1[keep],
        "episode_index_2": index_2[keep],
        "start_offsets": offset_1[keep],
        "start_offsets_2": offset_2[keep],
        "episode_rollouts": np.array([e.rollout for e in ordered], dtype=np.int64),
        "episode_sources": np.array([e.source for e in ordered], dtype=np.str_),
        "episode_ids": np.array([e.episode_id for e in ordered], dtype=np.int64),
        "episode_lengths": lengths,
        "episode_starts": starts,
        "metadata": np.array(
            json.dumps(
                {
                    **metadata,
                    "layout": LAYOUT,
                    "layout_version": LAYOUT_VERSION,
                    "pairs": int(keep.sum()),
                    "skipped_pairs": int((~keep).sum()),
                },
                sort_keys=True,
            )
        ),
    }
