"""Train a RewardModel version on a PreferenceSet (the Django side; the torch core is trainer.core.reward)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction
from django.db.models import Max

from labeling.files import store_file
from labeling.models import Clip, Project
from labeling.signals import reward_model_ready

from .core import rollouts
from .core.features import check_same_length, stack_clip_features
from .core.jsonsafe import json_safe
from .core.reward import (
    FeatureLayout,
    PreferenceDataset,
    RewardModelConfig,
    holdout_mask,
    holdout_metrics,
    to_bytes,
    train_reward_model,
)
from .models import PreferenceSet, RewardModel, RewardModelStatus
from .preference_building import read_preference_set


def clip_features(clips: list[Clip]) -> tuple[np.ndarray, np.ndarray, FeatureLayout]:
    """Per-step features [obs_t, action_t] of each clip, re-read from its rollout (each rollout loaded once),
    and each clip's true return (NaN where unknown)."""
    check_same_length([clip.length for clip in clips])
    loaded: dict[int, rollouts.RolloutData] = {}
    for clip in clips:
        if clip.rollout_id not in loaded:
            with clip.rollout.data.open("rb") as handle:
                loaded[clip.rollout_id] = rollouts.load_npz(handle.read())
    stacked, layout = stack_clip_features(
        loaded, [(clip.rollout_id, rollouts.Segment(clip.start, clip.length)) for clip in clips]
    )
    true_returns = np.array([np.nan if c.true_return is None else c.true_return for c in clips], dtype=np.float64)
    return stacked, true_returns, layout


def _next_version(project: Project) -> int:
    return (RewardModel.objects.filter(project=project).aggregate(v=Max("version"))["v"] or 0) + 1


def resolve_reward_config(overrides: dict[str, Any]) -> RewardModelConfig:
    """Defaults + overrides, on the configured torch device unless the overrides name one."""
    overrides = dict(overrides)
    overrides.setdefault(
        "device", "auto" if settings.HERONRY["TORCH_DEVICE"] == "auto" else settings.HERONRY["TORCH_DEVICE"]
    )
    return RewardModelConfig().merged(overrides)


def reward_model_train(
    *,
    project: Project,
    preference_set: PreferenceSet,
    config: RewardModelConfig,
    report: Callable[[float, str], None],
    holdout_clip_fraction: float = 0.1,
    seed: int = 0,
    run: Any = None,
) -> RewardModel:
    """Train a new RewardModel version on ``preference_set`` and store its weights; returns it READY (or raises,
    leaving it FAILED with the error)."""
    # One run of a project is active at a time (trainer.loop), so nobody else takes the next version meanwhile;
    # the unique constraint on (project, version) stays as the guard.
    reward_model = RewardModel.objects.create(
        project=project,
        version=_next_version(project),
        preference_set=preference_set,
        run=run,
        config=json_safe(config.to_dict()),
    )

    try:
        report(0.02, "Loading clips")
        table = read_preference_set(preference_set)
        clip_a = table.column("clip_a").to_numpy()
        clip_b = table.column("clip_b").to_numpy()
        ids = np.unique(np.concatenate([clip_a, clip_b]))
        clips_by_id = Clip.objects.select_related("rollout").in_bulk(ids.tolist())
        missing = [int(i) for i in ids if int(i) not in clips_by_id]
        if missing:
            raise ValueError(f"clips no longer exist: {missing[:10]}")
        clips = [clips_by_id[int(i)] for i in ids]
        features, true_returns, layout = clip_features(clips)
        pairs = np.stack([np.searchsorted(ids, clip_a), np.searchsorted(ids, clip_b)], axis=1)
        # Arrow hands out read-only views; torch wants writable memory.
        targets = np.array(table.column("target").to_numpy())
        weights = np.array(table.column("weight").to_numpy())
        # Held-out clips: never seen in training, so the correlation with the true return measures how the
        # reward generalises to new behaviour, not how well it fits clips it was trained on. Never a clip a person
        # labelled: that would throw ~19 % of the human labels away for a metric (issue 13).
        human = np.asarray(table.column("origin").to_pylist(), dtype=object) == "human"
        labelled_by_people = np.zeros(len(ids), dtype=bool)
        labelled_by_people[pairs[human].reshape(-1)] = True
        holdout = holdout_mask(
            len(ids),
            holdout_clip_fraction,
            np.random.default_rng(seed),
            protected=labelled_by_people,
        )
        touches_holdout = holdout[pairs[:, 0]] | holdout[pairs[:, 1]]
        dataset = PreferenceDataset(
            clip_features=features,
            pairs=pairs[~touches_holdout],
            targets=targets[~touches_holdout],
            weights=weights[~touches_holdout],
            layout=layout,
        )

        def progress(fraction: float, message: str) -> None:
            report(0.05 + 0.9 * fraction, message)

        result = train_reward_model(dataset, config, true_returns=true_returns, progress=progress)
        result.metrics.update(holdout_metrics(result.model, features, true_returns, holdout, pairs, targets))
        checkpoint = to_bytes(
            result,
            extra={
                "project": project.slug,
                "version": reward_model.version,
                "preference_set": preference_set.pk,
                "clip_ids": ids.tolist(),
            },
        )
        # Written whole or not at all: a reader never sees a truncated checkpoint (labeling.files).
        store_file(
            reward_model.weights, f"{project.slug}-v{reward_model.version}.safetensors", ContentFile(checkpoint.weights)
        )
        store_file(
            reward_model.metadata, f"{project.slug}-v{reward_model.version}.json", ContentFile(checkpoint.metadata)
        )
        reward_model.metrics = json_safe(result.metrics)
        reward_model.history = json_safe([dataclasses.asdict(epoch) for epoch in result.history])
        reward_model.status = RewardModelStatus.READY
        reward_model.save()
        ready = {"project_id": project.pk, "reward_model_id": reward_model.pk, "version": reward_model.version}
        transaction.on_commit(lambda: _announce_ready(**ready))
    except Exception as error:
        RewardModel.objects.filter(pk=reward_model.pk).update(status=RewardModelStatus.FAILED, error=str(error)[:5000])
        raise
    return reward_model


def _announce_ready(**ready: Any) -> None:
    """Tell labeling's listeners (webhooks) that a reward model is ready; their failure is not the training's."""
    try:
        reward_model_ready.send(sender=RewardModel, **ready)
    except Exception:
        logging.getLogger(__name__).exception("reward model %s: a listener failed", ready.get("reward_model_id"))
