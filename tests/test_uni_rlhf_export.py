"""The Preference Transformer / Uni-RLHF layout of a preference set, for dataset projects.

Each test loads the ``.npz`` as those repositories' loaders do: the episodes' transitions concatenated into one flat
dataset, each query's two segments sliced at ``start_indices`` / ``start_indices_2`` for ``query_length`` steps,
and the raw label (0 first, 1 second, -1 equal) turned into one-hot rows, ``[0.5, 0.5]`` for a tie.
"""

from __future__ import annotations

import io
import json
import uuid
from typing import Any

import numpy as np
import pytest
from django.core.management import call_command

from labeling import rankings
from labeling.models import Clip, Judgment, Query, Rollout
from tests.conftest import api_client_for, npz_bytes
from tests.test_external_data import (  # noqa: F401  (fixtures)
    SEGMENT,
    T,
    episode,
    ext_project,
    minari_root,
    pendulum,
    upload,
    write_minari_dataset,
)
from trainer.preference_building import PreferenceParams, preference_set_build


def build_set(project, **params):
    return preference_set_build(project=project, params=PreferenceParams(**params), report=lambda *a: None)


def fetch(user, project, **query) -> tuple[int, Any]:
    params = "&".join(f"{k}={v}" for k, v in {"format": "uni-rlhf", **query}.items())
    response = api_client_for(user).get(f"/api/v1/projects/{project.slug}/export/preferences?{params}")
    if response.status_code != 200:
        return response.status_code, response.json()
    assert response["Content-Type"] == "application/octet-stream"
    assert response["Content-Disposition"].endswith('-uni-rlhf.npz"')
    return 200, response.content


def one_hot(raw: np.ndarray) -> np.ndarray:
    """The loaders' conversion of raw human labels (Uni-RLHF's ``load_queries_with_indices``)."""
    labels = np.zeros((len(raw), 2))
    labels[raw == 0, 0] = 1.0
    labels[raw == 1, 1] = 1.0
    labels[raw == -1] = 0.5
    return labels


def segments(flat: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    return np.stack([flat[s : s + length] for s in starts])


def load(body: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(body), allow_pickle=False) as archive:  # never a pickle
        return {name: archive[name] for name in archive.files}


def test_uploaded_episodes_with_judgments_load_like_uni_rlhf(
    ext_project,  # noqa: F811  (the fixture imported above)
    researcher,
    annotator,
    django_capture_on_commit_callbacks,
):
    uploaded = {}
    for seed in (3, 4):
        rng = np.random.default_rng(seed)
        arrays = episode(observations=rng.normal(size=(T + 1, 3)), rewards=rng.normal(size=T))
        response = upload(ext_project, researcher, npz_bytes(**arrays), capture=django_capture_on_commit_callbacks)
        assert response.status_code == 202, response.json()
        uploaded[Rollout.objects.filter(project=ext_project).latest("id").pk] = arrays
    clips = list(Clip.objects.filter(project=ext_project).order_by("id"))
    assert len(clips) == 2 * T // SEGMENT
    # One judgment of each kind: left, right, equal (one on a query shown swapped).
    pairs = [
        (clips[0], clips[5], "left", False),
        (clips[1], clips[6], "left", True),
        (clips[2], clips[7], "equal", False),
    ]
    for a, b, choice, swapped in pairs:
        query = Query.objects.create(project=ext_project, clip_a=a, clip_b=b, source="random")
        Judgment.objects.create(
            query=query, annotator=annotator, choice=choice, swapped=swapped, client_id=uuid.uuid4()
        )
    preference_set = build_set(ext_project, sources="judgments")

    status, body = fetch(researcher, ext_project)
    assert status == 200
    data = load(body)
    meta = json.loads(str(data["metadata"]))
    assert meta["layout"] == "uni-rlhf" and meta["preference_set"] == preference_set.pk and meta["skipped_pairs"] == 0
    assert int(data["query_length"]) == SEGMENT
    assert data["episode_rollouts"].tolist() == sorted(uploaded)
    assert data["episode_sources"].tolist() == ["upload", "upload"]
    assert data["episode_lengths"].tolist() == [T, T] and data["episode_starts"].tolist() == [0, T]

    # The loader's flat dataset: the episodes' transitions, concatenated in the file's episode order.
    flat_obs = np.concatenate([uploaded[r]["observations"][:T] for r in data["episode_rollouts"]])
    flat_rew = np.concatenate([uploaded[r]["rewards"] for r in data["episode_rollouts"]])
    n = int(data["query_length"])
    obs_1, obs_2 = segments(flat_obs, data["start_indices"], n), segments(flat_obs, data["start_indices_2"], n)
    by_id = {c.pk: c for c in clips}
    for i, (first, second) in enumerate(zip(data["clip_ids"], data["clip_ids_2"], strict=True)):
        for obs, clip_id in ((obs_1[i], first), (obs_2[i], second)):
            clip = by_id[int(clip_id)]
            np.testing.assert_allclose(obs, uploaded[clip.rollout_id]["observations"][clip.start : clip.start + n])
        rewards = segments(flat_rew, data["start_indices"][i : i + 1], n)
        assert rewards.sum() == pytest.approx(by_id[int(first)].true_return)
    assert [c.pk for c, *_ in pairs] == data["clip_ids"].tolist()
    # left unswapped: the first is better; left shown swapped: the second; equal: a tie.
    assert data["human_label"].tolist() == [0, 1, -1]
    np.testing.assert_array_equal(one_hot(data["human_label"]), data["labels"])
    assert data["labels"].tolist() == [[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]
    # Keyed to the source episodes: which episode each side is, and where in it the segment starts.
    for side in ("", "_2"):
        index, offset = data[f"episode_index{side}"], data[f"start_offsets{side}"]
        ids = data[f"clip_ids{side}"]
        assert [(int(data["episode_rollouts"][e]), int(o)) for e, o in zip(index, offset, strict=True)] == [
            (by_id[int(c)].rollout_id, by_id[int(c)].start) for c in ids
        ]


def test_a_minari_import_ranked_by_heron_is_keyed_to_the_datasets_episodes(
    minari_root,  # noqa: F811
    pendulum,  # noqa: F811
    researcher,
    annotator,
):
    import minari

    write_minari_dataset(minari_root, "pendulum/layout-v0", episodes=3, steps=100, seeded=False)
    call_command("import_minari", "pendulum/layout-v0", "--project", pendulum.slug, "--wait")
    rankings.ranking_submit(
        project=pendulum, annotator=annotator, groups=[["angle_sq"], ["angular_velocity_sq"], ["torque_sq"]]
    )
    preference_set = build_set(pendulum, sources="rankings")
    status, body = fetch(researcher, pendulum, set=preference_set.pk)
    assert status == 200
    data = load(body)
    assert data["episode_ids"].tolist() == [0, 1, 2]
    assert set(data["episode_sources"].tolist()) == {"minari:pendulum/layout-v0"}
    assert len(data["start_indices"]) == preference_set.n_pairs > 0

    # The dataset itself, concatenated as D4RL-style loaders do (the README's snippet): it lines up with the start
    # indices, whether the whole dataset or the file's episodes are concatenated.
    dataset = minari.load_dataset("pendulum/layout-v0")
    assert [e.id for e in dataset.iterate_episodes()] == data["episode_ids"].tolist()
    episodes = list(dataset.iterate_episodes(episode_indices=data["episode_ids"].tolist()))
    flat_rewards = np.concatenate([e.rewards for e in episodes])
    flat_obs = np.concatenate([e.observations[:-1] for e in episodes])  # one per transition
    assert len(flat_rewards) == len(flat_obs) == int(data["episode_lengths"].sum())
    n = int(data["query_length"])
    true_return = dict(Clip.objects.filter(project=pendulum).values_list("pk", "true_return"))
    spans = {c.pk: c for c in Clip.objects.filter(project=pendulum).select_related("rollout")}
    for side in ("", "_2"):
        sums = segments(flat_rewards, data[f"start_indices{side}"], n).sum(axis=1)
        want = [true_return[int(c)] for c in data[f"clip_ids{side}"]]
        np.testing.assert_allclose(sums, want, rtol=1e-6)
        # Each side's observations are the episode's, from its in-episode start offset.
        obs = segments(flat_obs, data[f"start_indices{side}"], n)
        rows, offsets = data[f"episode_index{side}"], data[f"start_offsets{side}"]
        for i, (episode_row, offset) in enumerate(zip(rows, offsets, strict=True)):
            source = episodes[int(episode_row)].observations[int(offset) : int(offset) + n]
            np.testing.assert_array_equal(obs[i], source)
            assert spans[int(data[f"clip_ids{side}"][i])].start == offset
    # HERON targets are hard here (one ranking, ties dropped): one-hot, as the loaders make them.
    np.testing.assert_array_equal(one_hot(data["human_label"]), data["labels"])


def test_a_simulator_project_gets_a_clear_400(project_with_queries, researcher, annotator):
    query = project_with_queries.queries.first()
    Judgment.objects.create(query=query, annotator=annotator, choice="left", client_id=uuid.uuid4())
    build_set(project_with_queries, sources="judgments")
    status, body = fetch(researcher, project_with_queries)
    assert status == 400
    assert body["error"]["code"] == "invalid" and "uploaded or imported" in body["error"]["message"]
    assert body["error"]["fields"]["format"]


def test_other_formats_are_named_in_the_error(project_with_queries, researcher, annotator):
    Judgment.objects.create(
        query=project_with_queries.queries.first(), annotator=annotator, choice="left", client_id=uuid.uuid4()
    )
    build_set(project_with_queries, sources="judgments")
    status, body = fetch(researcher, project_with_queries, format="pickle")
    assert status == 400 and "uni-rlhf" in body["error"]["message"]
