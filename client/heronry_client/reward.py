"""A Heronry reward model outside the platform: safetensors weights + JSON metadata -> per-step rewards.

The same arithmetic as the platform's loop (``RewardEnsemble.reward`` / ``normalized_reward`` in
trainer/core/reward/network.py, features as in trainer/core/policy/reward_wrapper.py):

* features x_t = ``[obs_t (flattened), action_t]`` float32, a Discrete action one-hot with N columns;
* standardised with the checkpoint's feature statistics, (x - mean) / std;
* each ensemble member is an MLP (Linear, activation, ..., Linear -> 1); the reward is the members' mean;
* normalised (the default, what the loop gives a policy): (r - reward_mean) / reward_std.

Needs torch and safetensors (``pip install 'heronry-client[reward]'``); nothing from the Heronry repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

try:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import load as load_safetensors
except ImportError as error:  # the API client works without them; only this module needs them
    raise ImportError(
        f"heronry_client.reward needs torch and safetensors ({error}): pip install 'heronry-client[reward]'"
    ) from error

if TYPE_CHECKING:
    from .client import Client

CHECKPOINT_FORMAT = "heronry-reward-model"
CHECKPOINT_FORMAT_VERSION = 1
_STEPS_PER_CHUNK = 65_536
_WEIGHT_KEY = re.compile(r"^members\.(\d+)\.layers\.(\d+)\.(weight|bias)$")


class RewardModelError(ValueError):
    """The files are not a reward model this client can read, or inputs do not fit it."""


def _activation(name: str) -> Any:
    functions = {"relu": F.relu, "tanh": torch.tanh, "leaky_relu": F.leaky_relu, "gelu": F.gelu}
    if name not in functions:
        raise RewardModelError(f"unknown activation {name!r}")
    return functions[name]


@dataclass(frozen=True)
class Layout:
    feature_dim: int
    obs_dim: int | None
    action_dim: int | None


class RewardModel:
    """An ensemble reward model loaded from a Heronry checkpoint (CPU, float32, no gradients)."""

    def __init__(self, weights: bytes, metadata: Mapping[str, Any] | bytes | str, *, verify: bool = True) -> None:
        meta = dict(json.loads(metadata) if isinstance(metadata, bytes | str) else metadata)
        if meta.get("format") != CHECKPOINT_FORMAT:
            raise RewardModelError(f"not a reward-model checkpoint: metadata 'format' must be {CHECKPOINT_FORMAT!r}")
        if meta.get("format_version") != CHECKPOINT_FORMAT_VERSION:
            raise RewardModelError(f"unsupported checkpoint format version {meta.get('format_version')!r}")
        expected = meta.get("weights_sha256")
        if verify and expected and hashlib.sha256(weights).hexdigest() != expected:
            raise RewardModelError("the weights do not match the metadata (SHA-256 differs)")
        self.metadata = meta
        config = meta.get("config") or {}
        layout = meta["feature_layout"]
        self.layout = Layout(int(layout["feature_dim"]), layout.get("obs_dim"), layout.get("action_dim"))
        self._activation = _activation(str(config.get("activation", "relu")))
        stats = meta["feature_normalization"]
        self.feature_mean = torch.as_tensor(np.asarray(stats["mean"], dtype=np.float32).reshape(-1))
        self.feature_std = torch.as_tensor(np.asarray(stats["std"], dtype=np.float32).reshape(-1))
        dim = (self.layout.feature_dim,)
        if tuple(self.feature_mean.shape) != dim or tuple(self.feature_std.shape) != dim:
            raise RewardModelError(f"feature statistics must have shape ({self.layout.feature_dim},)")
        self.reward_mean = np.asarray(meta["reward_normalization"]["mean"], dtype=np.float32)
        self.reward_std = np.asarray(meta["reward_normalization"]["std"], dtype=np.float32)
        self.members = self._members(load_safetensors(weights))

    def _members(self, state: Mapping[str, torch.Tensor]) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
        found: dict[int, dict[int, dict[str, torch.Tensor]]] = {}
        for key, tensor in state.items():
            match = _WEIGHT_KEY.match(key)
            if match is None:
                raise RewardModelError(f"unexpected tensor {key!r} in the weights")
            member, layer, kind = int(match[1]), int(match[2]), match[3]
            found.setdefault(member, {}).setdefault(layer, {})[kind] = tensor.to(torch.float32)
        if not found or sorted(found) != list(range(len(found))):
            raise RewardModelError("the weights hold no (or non-consecutive) ensemble members")
        members = []
        for index in range(len(found)):
            layers = found[index]
            linears = [(layers[i]["weight"], layers[i]["bias"]) for i in sorted(layers)]
            if linears[0][0].shape[1] != self.layout.feature_dim or linears[-1][0].shape[0] != 1:
                raise RewardModelError("the weights do not fit the feature layout described by the metadata")
            members.append(linears)
        size = (self.metadata.get("config") or {}).get("ensemble_size")
        if size is not None and int(size) != len(members):
            raise RewardModelError(f"metadata says {size} members, the weights hold {len(members)}")
        return members

    # --- loading ---------------------------------------------------------------------------------------------
    @classmethod
    def from_files(
        cls, weights_path: str | os.PathLike[str], metadata_path: str | os.PathLike[str] | None = None
    ) -> RewardModel:
        """From ``reward_model.safetensors`` + ``reward_model.json`` (or a directory holding both)."""
        weights = Path(weights_path)
        if weights.is_dir():
            metadata_path = weights / "reward_model.json"
            weights = weights / "reward_model.safetensors"
        if metadata_path is None:
            raise ValueError("give the metadata path, or a directory")
        return cls(weights.read_bytes(), Path(metadata_path).read_bytes())

    @classmethod
    def from_client(cls, client: Client, model: int | Mapping[str, Any]) -> RewardModel:
        """Download a reward model through the API client."""
        weights, metadata = client.reward_model_files(model)
        return cls(weights, metadata)

    # --- features --------------------------------------------------------------------------------------------
    @property
    def ensemble_size(self) -> int:
        return len(self.members)

    def features(self, observations: Any, actions: Any, *, n_discrete: int | None = None) -> np.ndarray:
        """Batched features (N, D) from observations (N, ...) and actions (N, ...). ``n_discrete`` (the N of a
        Discrete action space) one-hots the action indices; by default integer actions of shape (N,) are taken
        as discrete when the layout's action_dim says there is more than one action column."""
        obs = np.asarray(observations)
        acts = np.asarray(actions)
        n = obs.shape[0]
        obs = obs.reshape(n, -1).astype(np.float32)
        integer_indices = np.issubdtype(acts.dtype, np.integer) and acts.reshape(n, -1).shape[1] == 1
        if n_discrete is None and integer_indices and self.layout.action_dim and self.layout.action_dim > 1:
            n_discrete = self.layout.action_dim
        if n_discrete is not None:
            indices = acts.reshape(n, -1)[:, 0].astype(np.int64)
            if np.any(indices < 0) or np.any(indices >= n_discrete):
                raise RewardModelError(f"discrete actions must be in [0, {n_discrete})")
            act = np.eye(n_discrete, dtype=np.float32)[indices]
        else:
            act = acts.reshape(n, -1).astype(np.float32)
        features = np.concatenate((obs, act), axis=1, dtype=np.float32)
        if features.shape[1] != self.layout.feature_dim:
            raise RewardModelError(
                f"observations and actions give {features.shape[1]} features; the model takes {self.layout.feature_dim}"
            )
        return features

    # --- rewards ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def reward_from_features(self, features: Any, *, normalized: bool = True) -> np.ndarray:
        """Ensemble-mean per-step reward for features (..., D) -> (...), normalised like the loop's by default."""
        tensor = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        if tensor.shape[-1:] != (self.layout.feature_dim,):
            raise RewardModelError(
                f"features must end in dimension {self.layout.feature_dim}, got {tuple(tensor.shape)}"
            )
        steps = tensor.reshape(-1, self.layout.feature_dim)
        parts = []
        for chunk in torch.split(steps, _STEPS_PER_CHUNK):
            normalized_input = (chunk - self.feature_mean) / self.feature_std
            per_member = torch.stack([self._forward(member, normalized_input) for member in self.members])
            parts.append(per_member.mean(dim=0))
        raw = (
            torch.cat(parts).reshape(tensor.shape[:-1]).numpy()
            if parts
            else np.zeros(tuple(tensor.shape[:-1]), dtype=np.float32)
        )
        if not normalized:
            return raw
        return ((raw - self.reward_mean) / self.reward_std).astype(np.float32)

    def _forward(self, member: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        for weight, bias in member[:-1]:
            x = self._activation(F.linear(x, weight, bias))
        weight, bias = member[-1]
        return F.linear(x, weight, bias).squeeze(-1)

    def reward(
        self, observations: Any, actions: Any, *, normalized: bool = True, n_discrete: int | None = None
    ) -> np.ndarray:
        """Per-step rewards (N,) for N (observation before the step, action) pairs."""
        return self.reward_from_features(
            self.features(observations, actions, n_discrete=n_discrete), normalized=normalized
        )

    __call__ = reward
