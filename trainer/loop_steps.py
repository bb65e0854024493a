"""The work of each run step (the Django side; numerics live in trainer.core.policy, trainer.core.reward, heron).

Each function gets the claimed run, its resolved loop settings and a reporter (progress + heartbeat), starts by
removing whatever a dead earlier attempt of the same step left behind (so running a step twice leaves one
result), sets the artefact links it made on the run, and returns a JSON-friendly summary that ``trainer.loop``
stores under ``run.results[state]``. A loop iteration's steps take their parameters from the loop settings; the
same steps in another kind of run (a retrain, a preference build, a training, a render) from ``run.params``,
checked when the run is queued (``PARAMS_CHECKS``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.db import transaction

from labeling import events
from labeling.clips import render_stale_after, rollouts_delete
from labeling.files import store_file
from labeling.models import Clip, Query, QuerySource, RenderStatus
from labeling.selectors import factor_extremes
from labeling.services import queries_publish, send_task_or_warn

from .artefacts import env_factory, policy_snapshot, reward_ensemble
from .clip_pipeline import GenerateClipsParams, factor_columns, generate_clips, render_clip, store_rollout
from .core import rollouts
from .core.jsonsafe import json_safe
from .core.loop_settings import LoopSettings
from .core.policy import (
    RewardFn,
    SB3Policy,
    ensemble_reward_fn,
    evaluate_policy,
    load_model,
    train_policy,
)
from .core.query_selection import select_pairs
from .external_data import import_params, ingest, upload_params
from .loop import StepReporter, pairwise_labels
from .models import PolicyCheckpoint, PreferenceSet, RewardModel, Run, RunKind
from .policy_video import policy_video_queue
from .preference_building import PreferenceParams, preference_set_build
from .project_task import project_task
from .review import review_scores_after_training
from .reward_training import clip_features, resolve_reward_config, reward_model_train


def _number(iteration: Run) -> int:
    """A loop iteration's number (the steps that need it run in iterations only, which always have one)."""
    assert iteration.number is not None, f"run {iteration.pk} is not a loop iteration"
    return iteration.number


def _rng(loop_settings: LoopSettings, iteration: Run, purpose: int) -> np.random.Generator:
    """Independent, reproducible streams per (loop seed, iteration, purpose)."""
    return np.random.default_rng([loop_settings.seed, _number(iteration), purpose])


def _seed(loop_settings: LoopSettings, iteration: Run, purpose: int) -> int:
    return int(_rng(loop_settings, iteration, purpose).integers(0, 2**31 - 1))


def _skipped(loop_settings: LoopSettings) -> dict[str, Any] | None:
    if loop_settings.policy_reward == "true":
        return {"skipped": "the policy trains on the environment's true reward"}
    return None


# --- 1. labels → preference set -----------------------------------------------------------------------------


def build_preferences(iteration: Run, loop_settings: LoopSettings, report: StepReporter) -> dict[str, Any]:
    if iteration.is_iteration and (skipped := _skipped(loop_settings)):
        return skipped
    project = iteration.project
    RewardModel.objects.filter(run=iteration).delete()
    PreferenceSet.objects.filter(run=iteration).delete()
    if iteration.is_iteration:
        params = PreferenceParams(
            sources=loop_settings.preference_sources,
            cap=loop_settings.preference_cap,
            seed=_seed(loop_settings, iteration, 1),
        )
    else:
        params = PreferenceParams.from_dict(iteration.params)
    with transaction.atomic():
        preference_set = preference_set_build(project=project, params=params, report=report, run=iteration)
    iteration.preference_set = preference_set
    iteration.labels_used = int(preference_set.counts.get("human", 0))
    return {"preference_set": preference_set.pk, "pairs": preference_set.n_pairs, **preference_set.counts}


# --- 2. preference set → reward model -----------------------------------------------------------------------


def train_reward(iteration: Run, loop_settings: LoopSettings, report: StepReporter) -> dict[str, Any]:
    if iteration.is_iteration and (skipped := _skipped(loop_settings)):
        return skipped
    RewardModel.objects.filter(run=iteration).delete()
    holdout = 0.1
    if iteration.is_iteration:
        config = resolve_reward_config({**loop_settings.reward_config, "seed": _seed(loop_settings, iteration, 2)})
    else:
        params = iteration.params
        overrides = params.get("reward_config") or params.get("config") or {}
        config = resolve_reward_config({**overrides, **({"seed": params["seed"]} if "seed" in params else {})})
        holdout = float(params.get("holdout_clip_fraction", holdout))
        if iteration.preference_set is None:  # a training alone: the named set, else the newest
            sets = PreferenceSet.objects.filter(project=iteration.project).order_by("-created_at", "-id")
            if params.get("preference_set"):
                sets = sets.filter(pk=int(params["preference_set"]))
            iteration.preference_set = sets.first()
    if iteration.preference_set is None:
        raise ValueError("no preference set to train on: build preferences first")
    reward_model = reward_model_train(
        project=iteration.project,
        preference_set=iteration.preference_set,
        config=config,
        report=report,
        holdout_clip_fraction=holdout,
        seed=config.seed,
        run=iteration,
    )
    iteration.reward_model = reward_model
    report(0.97, "Scoring judged pairs for the disagreement review")
    review_scores_after_training(reward_model=reward_model)
    metrics = reward_model.metrics
    keys = ("val_accuracy", "spearman", "holdout_spearman", "holdout_accuracy", "epochs_run")
    return {"reward_model": reward_model.pk, "version": reward_model.version, **{k: metrics.get(k) for k in keys}}


# --- 3. reward model → policy -------------------------------------------------------------------------------


def train_policy_step(iteration: Run, loop_settings: LoopSettings, report: StepReporter) -> dict[str, Any]:
    project = iteration.project
    PolicyCheckpoint.objects.filter(run=iteration).delete()
    config = loop_settings.policy_config(seed=_seed(loop_settings, iteration, 3))
    reward_fn: RewardFn | None = None
    raw_reward_fn: RewardFn | None = None
    if loop_settings.policy_reward == "learned":
        if iteration.reward_model is None:
            raise ValueError("the iteration has no reward model")
        ensemble = reward_ensemble(iteration.reward_model)
        reward_fn = ensemble_reward_fn(ensemble, normalized=config.normalize_reward)
        raw_reward_fn = ensemble_reward_fn(ensemble, normalized=False)
    previous_checkpoint = PolicyCheckpoint.objects.filter(run=iteration.previous).first()
    previous = policy_snapshot(previous_checkpoint) if previous_checkpoint is not None else None
    make_env = env_factory(project)

    started = time.monotonic()
    snapshot = train_policy(
        env_factory=make_env,
        config=config,
        timesteps=loop_settings.policy_timesteps,
        reward_fn=reward_fn,
        previous=previous,
        progress=lambda fraction, message: report(0.9 * fraction, message),
    )
    train_seconds = time.monotonic() - started
    report(0.9, f"Evaluating on {config.eval_episodes} episodes")
    env = make_env()
    try:
        model = load_model(snapshot, env)
        evaluation = evaluate_policy(
            model,
            env_factory=make_env,
            episodes=config.eval_episodes,
            rng=_rng(loop_settings, iteration, 4),
            reward_fn=raw_reward_fn,
        )
    finally:
        env.close()
    checkpoint = PolicyCheckpoint(
        project=project,
        run=iteration,
        reward_model=iteration.reward_model if loop_settings.policy_reward == "learned" else None,
        previous=previous_checkpoint,
        algorithm=snapshot.algorithm,
        timesteps=snapshot.num_timesteps,
        config=json_safe(snapshot.config),
        evaluation=json_safe(evaluation.to_dict()),
        train_seconds=train_seconds,
    )
    name = f"{project.slug}-i{_number(iteration)}"
    store_file(checkpoint.model_file, f"{name}.zip", ContentFile(snapshot.model_zip))
    if snapshot.replay_buffer is not None:
        store_file(checkpoint.replay_buffer, f"{name}-replay.npz", ContentFile(snapshot.replay_buffer))
    checkpoint.save()
    # Rendered on the render queue while the loop goes on (trainer.policy_video).
    policy_video_queue(checkpoint=checkpoint, seed=_seed(loop_settings, iteration, 8))
    return {
        "policy": checkpoint.pk,
        "video": "queued",
        "algorithm": checkpoint.algorithm,
        "timesteps": checkpoint.timesteps,
        "train_seconds": round(train_seconds, 2),
        **checkpoint.evaluation,
    }


# --- 4. policy → rollouts → clips ---------------------------------------------------------------------------


def roll_out(iteration: Run, loop_settings: LoopSettings, report: StepReporter) -> dict[str, Any]:
    project = iteration.project
    # The iteration number names its clips; a dead attempt's rollouts (and their clips) go first.
    rollouts_delete(project=project, run=iteration.pk)
    checkpoint = PolicyCheckpoint.objects.get(run=iteration)
    task = project_task(project)
    keys = list(project.factors.order_by("position", "id").values_list("key", flat=True))
    columns = factor_columns(project, task)
    rng = _rng(loop_settings, iteration, 5)
    env = env_factory(project)()
    try:
        model = load_model(policy_snapshot(checkpoint, replay_buffer=False), env)
    finally:
        env.close()
    returns = []
    n_clips = 0
    for index in range(loop_settings.rollouts):
        noise = loop_settings.rollout_noise[index % len(loop_settings.rollout_noise)]
        data = rollouts.run_rollout(
            project.env_id,
            policy=SB3Policy(model, name=f"policy:{checkpoint.pk}:{noise:g}", noise=noise),
            seed=int(rng.integers(0, 2**31 - 1)),
            steps=task.episode_steps,
            rng=rng,
            env_kwargs=project.env_kwargs,
            task=task,
        )
        n_clips += len(
            store_rollout(
                project=project, run=iteration.pk, data=data, keys=keys, columns=columns, iteration=_number(iteration)
            )
        )
        returns.append(data.true_return)
        report((index + 1) / loop_settings.rollouts, f"Rolled out {index + 1} of {loop_settings.rollouts} episodes")
    return {
        "rollouts": loop_settings.rollouts,
        "clips": n_clips,
        "rollout_true_return_mean": float(np.mean(returns)),
    }


# --- 5. choose the pairs to ask, render what people will see --------------------------------------------------


def _choose_pairs(iteration: Run, loop_settings: LoopSettings, clips: list[Clip]) -> tuple[list[list[Any]], str]:
    project = iteration.project
    if not project.has_pairwise or loop_settings.label_budget == 0 or len(clips) < 2:
        return [], "none"
    wanted = math.ceil(loop_settings.label_budget / max(project.overlap, 1))
    rng = _rng(loop_settings, iteration, 6)
    scores = None
    method = "random"
    if loop_settings.query_selection == "active" and iteration.reward_model is not None:
        ensemble = reward_ensemble(iteration.reward_model)
        if ensemble.ensemble_size > 1:
            features, _, _ = clip_features(clips)

            def scores(pairs: np.ndarray) -> np.ndarray:
                return ensemble.disagreement(features, pairs)

            method = "active"
    pairs, pair_scores = select_pairs(
        len(clips),
        wanted,
        rng,
        scores=scores,
        oversample=loop_settings.oversample,
        max_per_clip=loop_settings.max_queries_per_clip,
    )
    chosen = []
    for index, (i, j) in enumerate(pairs):
        a, b = sorted((clips[i].pk, clips[j].pk))
        chosen.append([a, b, None if pair_scores is None else float(pair_scores[index])])
    return chosen, method


def _render_all(clips: list[Clip], report: StepReporter) -> None:
    """Render each clip once, here or elsewhere: a clip another worker is rendering (a render_clip task, or a
    dead attempt of this step whose claim has not gone stale yet) is waited for, heartbeating, and taken over
    once its claim is stale (``labeling.clips.clip_render_claim``)."""
    pending = {clip.pk: clip for clip in clips}
    done = 0
    poll = min(1.0, render_stale_after().total_seconds() / 4)
    while pending:
        for clip_id in sorted(pending):
            if render_clip(pending[clip_id]):
                del pending[clip_id]
                done += 1
                report(done / len(clips), f"Rendered {done} of {len(clips)} clips")
        # What this caller could not claim: finished or failed by the other renderer, or still being rendered.
        statuses = dict(Clip.objects.filter(pk__in=list(pending)).values_list("pk", "render_status"))
        for clip_id in list(pending):
            if statuses.get(clip_id) not in (RenderStatus.RENDERING, RenderStatus.PENDING):
                del pending[clip_id]
                done += 1
        if pending:
            report(done / len(clips), f"Waiting for {len(pending)} clips being rendered elsewhere")
            time.sleep(poll)


def _render_later(clip_ids: list[int]) -> None:
    """Send each clip to the render queue; a broker that is down only delays them (pages send them again)."""
    for clip_id in clip_ids:
        if not send_task_or_warn(events.RENDER_CLIP, clip_id, recovery="the ranking page sends it again"):
            return


def render(iteration: Run, loop_settings: LoopSettings, report: StepReporter) -> dict[str, Any]:
    project = iteration.project
    if not iteration.is_iteration:  # a render run: the clips it names (of its project)
        clips = list(
            Clip.objects.filter(project=project, pk__in=iteration.params.get("clips", []))
            .select_related("project", "rollout")
            .order_by("id")
        )
        _render_all(clips, report)
        n_failed = Clip.objects.filter(pk__in=[c.pk for c in clips], render_status=RenderStatus.FAILED).count()
        return {"rendered": len(clips) - n_failed, "failed": n_failed}
    clips = list(
        Clip.objects.filter(project=project, iteration=_number(iteration)).select_related("rollout").order_by("id")
    )
    pairs, method = _choose_pairs(iteration, loop_settings, clips)
    # Only clips a person will look at get video: those in the new queries, rendered here since their questions
    # are published next, and the factor extremes the ranking page shows, rendered on the render queue while
    # the loop goes on (the page sends any still missing when it is opened). Rendering is idempotent per clip.
    wanted = {a for a, _, _ in pairs} | {b for _, b, _ in pairs}
    examples = set()
    for extremes in factor_extremes(project).values():
        examples |= {clip.pk for clip in extremes.values() if clip is not None}
    to_render = list(
        Clip.objects.filter(pk__in=wanted)
        .exclude(render_status=RenderStatus.READY)
        .select_related("project", "rollout")
        .order_by("id")
    )
    _render_all(to_render, report)
    # A clip that could not be rendered (media folder unwritable, disk full, …) would be published in a query
    # nobody can ever be shown: fail the step instead, saying why. Retrying the iteration renders only the
    # clips that are not ready yet.
    failed = list(
        Clip.objects.filter(pk__in=[clip.pk for clip in to_render], render_status=RenderStatus.FAILED)
        .order_by("id")
        .values_list("pk", "render_error")
    )
    if failed:
        first_pk, first_error = failed[0]
        raise RuntimeError(
            f"{len(failed)} of {len(to_render)} clips could not be rendered (clip {first_pk}: {first_error}); "
            "fix the cause, then retry the iteration"
        )
    later = list(
        Clip.objects.filter(pk__in=examples - wanted, render_status=RenderStatus.PENDING)
        .order_by("id")
        .values_list("pk", flat=True)
    )
    transaction.on_commit(lambda: _render_later(later))
    return {"selection": method, "pairs": pairs, "rendered": len(to_render), "rendering_later": later}


# --- 6. publish the queries -----------------------------------------------------------------------------------


def publish(iteration: Run, loop_settings: LoopSettings, report: StepReporter) -> dict[str, Any]:
    project = iteration.project
    selection = iteration.results.get("rendering", {})
    pairs = selection.get("pairs", [])
    source = QuerySource.ACTIVE if selection.get("selection") == "active" else QuerySource.RANDOM
    # Safe to run twice: pairs already asked are skipped, so the questions are created once.
    queries_publish(
        project=project,
        pairs=[(a, b) for a, b, _ in pairs],
        uncertainties=[score for _, _, score in pairs],
        source=source,
        iteration=_number(iteration),
        # Newer iterations' questions first: they are about the behaviour the policy has now.
        priority=_number(iteration),
        rng=_rng(loop_settings, iteration, 7),
    )
    created = Query.objects.filter(project=project, iteration=_number(iteration), source=source).count()
    report(1.0, f"Published {created} queries")
    return {
        "queries": created,
        "source": source,
        "overlap": project.overlap,
        "labels_before": pairwise_labels(project),  # the next iteration waits for these questions' answers
    }


# --- clip generation (a run of its own) ------------------------------------------------------------------------


def generate(run: Run, loop_settings: LoopSettings, report: StepReporter) -> dict[str, Any]:
    return generate_clips(run, report)


STEP_WORK = {
    "generating_clips": generate,
    "building_preferences": build_preferences,
    "training_reward": train_reward,
    "training_policy": train_policy_step,
    "rolling_out": roll_out,
    "rendering": render,
    "publishing": publish,
    "ingesting": ingest,  # uploads and dataset imports (trainer.external_data)
}


# --- parameters of runs other than loop iterations, checked when they are queued ------------------------------


def _preference_params(raw: dict[str, Any]) -> dict[str, Any]:
    raw.pop("train", None)  # from before a retrain was its own kind of run
    if raw.get("reward_config") is not None:
        resolve_reward_config(dict(raw["reward_config"]))
    return dataclasses.asdict(PreferenceParams.from_dict(raw))


def _training_params(raw: dict[str, Any]) -> dict[str, Any]:
    unknown = set(raw) - {"preference_set", "config", "holdout_clip_fraction", "seed"}
    if unknown:
        raise ValueError(f"unknown train_reward_model parameters: {sorted(unknown)}")
    resolve_reward_config(dict(raw.get("config") or {}))
    return raw


def _generate_params(raw: dict[str, Any]) -> dict[str, Any]:
    return dataclasses.asdict(GenerateClipsParams.from_dict(raw)) | {"policies": list(raw.get("policies", []))}


def _render_params(raw: dict[str, Any]) -> dict[str, Any]:
    clips = raw.get("clips")
    if set(raw) != {"clips"} or not isinstance(clips, list) or not all(isinstance(c, int) for c in clips):
        raise ValueError("a render run takes {'clips': [clip ids]}")
    return {"clips": clips}


# Each kind's check returns the parameters as stored (defaults filled in); it raises ValueError on bad ones.
PARAMS_CHECKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    RunKind.RETRAIN: _preference_params,
    RunKind.BUILD_PREFERENCES: _preference_params,
    RunKind.TRAIN_REWARD_MODEL: _training_params,
    RunKind.GENERATE_CLIPS: _generate_params,
    RunKind.RENDER_CLIPS: _render_params,
    RunKind.UPLOAD: upload_params,
    RunKind.IMPORT_DATASET: import_params,
}
