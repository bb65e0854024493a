"""A preference set in Preference Transformer's / Uni-RLHF's layout, for projects whose clips come from datasets
(uploaded episodes, Minari imports): segment start indices into the episodes' concatenation, one query length, and
one-hot labels with 0.5 for ties, keyed to the source episodes (``trainer.core.preference_layout``). An ``.npz``
of plain arrays: it loads with ``allow_pickle=False``.
"""

from __future__ import annotations

import io

import numpy as np
from django.db.models import Q

from labeling.errors import ValidationFailed
from labeling.models import Clip, Project, Rollout

from .core import external
from .core.preference_layout import ClipSpan, Episode, uni_rlhf_arrays
from .models import PreferenceSet
from .preference_building import read_preference_set

# The rollouts trainer.external_data makes: an uploaded episode, or an episode of a Minari dataset.
DATASET_ROLLOUTS = Q(policy="upload") | Q(policy__startswith="minari:")


def dataset_episodes(project: Project) -> list[Episode]:
    """The project's episodes that came from a dataset, with their ids there (read from each rollout's metadata:
    Minari imports record the episode's id; an upload is its own episode, keyed by its rollout id)."""
    episodes = []
    for pk, policy, n_steps, data in (
        Rollout.objects.filter(project=project).filter(DATASET_ROLLOUTS).values_list("pk", "policy", "n_steps", "data")
    ):
        episode_id = pk
        if policy.startswith("minari:"):
            with Rollout._meta.get_field("data").storage.open(data, "rb") as handle:
                _, recorded = external.stored_source(handle)
            episode_id = -1 if recorded is None else recorded  # imported before episode ids were recorded
        episodes.append(Episode(rollout=pk, source=policy, episode_id=episode_id, length=n_steps))
    return episodes


def uni_rlhf_npz(preference_set: PreferenceSet) -> bytes:
    """The set as a Uni-RLHF ``.npz``; ValidationFailed (400) for a project without dataset episodes, or when no
    pair of the set has both clips from one."""
    project = preference_set.project
    episodes = dataset_episodes(project)
    if not episodes:
        message = (
            "the uni-rlhf layout indexes dataset episodes: this project has no uploaded or imported episodes "
            "(use jsonl, csv or parquet)"
        )
        raise ValidationFailed(message, fields={"format": [message]})
    table = read_preference_set(preference_set)
    spans = {
        pk: ClipSpan(rollout=rollout, start=start, length=length)
        for pk, rollout, start, length in Clip.objects.filter(
            project=project, rollout__in=Rollout.objects.filter(project=project).filter(DATASET_ROLLOUTS)
        ).values_list("pk", "rollout_id", "start", "length")
    }
    metadata = {
        "project": project.slug,
        "preference_set": preference_set.pk,
        "sources": preference_set.sources,
        "created_at": preference_set.created_at.isoformat(),
    }
    try:
        arrays = uni_rlhf_arrays(
            clip_1=table.column("clip_a").to_numpy(),
            clip_2=table.column("clip_b").to_numpy(),
            target=table.column("target").to_numpy(),
            weight=table.column("weight").to_numpy(),
            clips=spans,
            episodes=episodes,
            metadata=metadata,
        )
    except ValueError as error:
        raise ValidationFailed(str(error), fields={"format": [str(error)]}) from None
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()
