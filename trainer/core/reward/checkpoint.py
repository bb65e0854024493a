"""Checkpoints: safetensors weights + a JSON metadata document. Loading never unpickles.

The weights file holds only the members' parameters. The JSON file holds everything needed to
rebuild and use the model - config, feature layout, feature and reward normalisation statistics -
plus metrics, library versions and the SHA-256 of the weights it belongs to (a mismatched pair of
files is refused instead of silently producing a wrong reward).

Files: :func:`save_checkpoint` / :func:`load_checkpoint`. Bytes, for Django storage:
:func:`to_bytes` / :func:`from_bytes` (both documents) and :func:`weights_to_bytes` /
:func:`weights_from_bytes` (weights only).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import safetensors
import safetensors.torch
import scipy
import torch
from safetensors.torch import load as safetensors_load_bytes  # parses a header + raw buffers; never pickle

from trainer.core.jsonsafe import json_safe
from trainer.core.reward.config import RewardModelConfig
from trainer.core.reward.data import FeatureLayout
from trainer.core.reward.network import RewardEnsemble
from trainer.core.reward.normalization import MeanStd
from trainer.core.reward.train import EpochMetrics, TrainingResult

CHECKPOINT_FORMAT = "heronry-reward-model"
CHECKPOINT_FORMAT_VERSION = 1
WEIGHTS_FILENAME = "reward_model.safetensors"
METADATA_FILENAME = "reward_model.json"

PathLike = str | os.PathLike[str]


class CheckpointError(ValueError):
    """A checkpoint that this code cannot (or must not) load."""


@dataclass(frozen=True)
class CheckpointMetadata:
    config: RewardModelConfig
    layout: FeatureLayout
    feature_stats: MeanStd
    reward_stats: MeanStd
    metrics: dict[str, Any] = field(default_factory=dict)
    """Training summary; NaN values are stored (and come back) as None, JSON having no NaN."""
    history: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    """Caller's annotations (e.g. project and dataset ids)."""
    versions: dict[str, str] = field(default_factory=dict)
    """Library versions that wrote the checkpoint (informational)."""
    weights_sha256: str = ""
    format_version: int = CHECKPOINT_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": self.format_version,
            "config": self.config.to_dict(),
            "feature_layout": self.layout.to_dict(),
            "feature_normalization": self.feature_stats.to_dict(),
            "reward_normalization": self.reward_stats.to_dict(),
            "metrics": json_safe(self.metrics),
            "history": json_safe(self.history),
            "extra": json_safe(self.extra),
            "versions": dict(self.versions),
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckpointMetadata:
        if not isinstance(data, Mapping) or data.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"not a reward-model checkpoint: metadata 'format' must be {CHECKPOINT_FORMAT!r}")
        version = data.get("format_version")
        if version != CHECKPOINT_FORMAT_VERSION:
            raise CheckpointError(
                f"unsupported reward-model checkpoint format version {version!r}: this code reads "
                f"version {CHECKPOINT_FORMAT_VERSION} only (was the checkpoint written by a newer Heronry?)"
            )
        try:
            return cls(
                config=RewardModelConfig.from_dict(data["config"]),
                layout=FeatureLayout.from_dict(data["feature_layout"]),
                feature_stats=MeanStd.from_dict(data["feature_normalization"]),
                reward_stats=MeanStd.from_dict(data["reward_normalization"]),
                metrics=dict(data.get("metrics") or {}),
                history=list(data.get("history") or []),
                extra=dict(data.get("extra") or {}),
                versions=dict(data.get("versions") or {}),
                weights_sha256=str(data.get("weights_sha256", "")),
                format_version=int(version),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"invalid reward-model checkpoint metadata: {error}") from error


class CheckpointBytes(NamedTuple):
    weights: bytes
    metadata: bytes


class CheckpointPaths(NamedTuple):
    weights: Path
    metadata: Path


class LoadedCheckpoint(NamedTuple):
    model: RewardEnsemble
    metadata: CheckpointMetadata


# --- weights ---------------------------------------------------------------------------------------
def weights_to_bytes(model: RewardEnsemble) -> bytes:
    """The members' parameters as a safetensors document (CPU, contiguous, float32)."""
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    # A single header entry: safetensors writes its metadata map in hash order, so with several
    # keys identical models could serialise to different bytes (and different SHA-256s).
    return safetensors.torch.save(tensors, metadata={"format": f"{CHECKPOINT_FORMAT}/{CHECKPOINT_FORMAT_VERSION}"})


def weights_from_bytes(data: bytes) -> dict[str, torch.Tensor]:
    """Parse a safetensors document into CPU tensors (no pickle involved)."""
    try:
        return safetensors_load_bytes(data)
    except Exception as error:  # safetensors raises its own SafetensorError type
        raise CheckpointError(f"unreadable safetensors weights: {error}") from error


# --- both documents ------------------------------------------------------------------------------
def build_metadata(
    model: RewardEnsemble,
    weights: bytes,
    *,
    metrics: Mapping[str, Any] | None = None,
    history: Sequence[EpochMetrics | Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> CheckpointMetadata:
    return CheckpointMetadata(
        config=model.config,
        layout=model.layout,
        feature_stats=model.feature_stats(),
        reward_stats=model.reward_stats(),
        metrics=dict(metrics or {}),
        history=[row.to_dict() if isinstance(row, EpochMetrics) else dict(row) for row in history or []],
        extra=dict(extra or {}),
        versions=library_versions(),
        weights_sha256=hashlib.sha256(weights).hexdigest(),
    )


def to_bytes(
    model: RewardEnsemble | TrainingResult,
    *,
    metrics: Mapping[str, Any] | None = None,
    history: Sequence[EpochMetrics | Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> CheckpointBytes:
    """Serialise a model (or a TrainingResult, whose metrics and history are included unless
    given explicitly) to (safetensors weights, UTF-8 JSON metadata)."""
    if isinstance(model, TrainingResult):
        metrics = model.metrics if metrics is None else metrics
        history = model.history if history is None else history
        model = model.model
    weights = weights_to_bytes(model)
    metadata = build_metadata(model, weights, metrics=metrics, history=history, extra=extra)
    text = json.dumps(metadata.to_dict(), indent=2, sort_keys=True, allow_nan=False)
    return CheckpointBytes(weights, (text + "\n").encode("utf-8"))


MetadataSource = bytes | str | Mapping[str, Any] | CheckpointMetadata


def parse_metadata(metadata: MetadataSource) -> CheckpointMetadata:
    """Parse and validate the JSON metadata (format and version are checked first)."""
    if isinstance(metadata, CheckpointMetadata):
        return metadata
    if isinstance(metadata, Mapping):
        return CheckpointMetadata.from_dict(metadata)
    try:
        data = json.loads(metadata)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"reward-model checkpoint metadata is not valid JSON: {error}") from error
    return CheckpointMetadata.from_dict(data)


def from_bytes(weights: bytes, metadata: MetadataSource, *, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model from the two documents; the model comes back in eval mode on ``device``."""
    parsed = parse_metadata(metadata)
    if parsed.weights_sha256 and hashlib.sha256(weights).hexdigest() != parsed.weights_sha256:
        raise CheckpointError("the weights do not match the metadata (SHA-256 differs): mismatched checkpoint files")
    state = weights_from_bytes(weights)
    model = RewardEnsemble(
        parsed.config, parsed.layout, feature_stats=parsed.feature_stats, reward_stats=parsed.reward_stats
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"weights do not fit the architecture described by the metadata: {error}") from error
    model.to(torch.device(device))
    model.eval()
    return LoadedCheckpoint(model, parsed)


# --- files ---------------------------------------------------------------------------------------
def checkpoint_paths(
    directory: PathLike | None = None,
    *,
    weights_path: PathLike | None = None,
    metadata_path: PathLike | None = None,
) -> CheckpointPaths:
    """Either a directory (standard file names inside it) or both explicit paths."""
    if directory is not None:
        if weights_path is not None or metadata_path is not None:
            raise ValueError("give either a directory or weights_path and metadata_path, not both")
        return CheckpointPaths(Path(directory) / WEIGHTS_FILENAME, Path(directory) / METADATA_FILENAME)
    if weights_path is None or metadata_path is None:
        raise ValueError("give a directory, or both weights_path and metadata_path")
    return CheckpointPaths(Path(weights_path), Path(metadata_path))


def save_checkpoint(
    model: RewardEnsemble | TrainingResult,
    directory: PathLike | None = None,
    *,
    weights_path: PathLike | None = None,
    metadata_path: PathLike | None = None,
    metrics: Mapping[str, Any] | None = None,
    history: Sequence[EpochMetrics | Mapping[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> CheckpointPaths:
    """Write ``reward_model.safetensors`` + ``reward_model.json`` into ``directory`` (created if
    needed), or to the two explicit paths. Returns the paths written."""
    paths = checkpoint_paths(directory, weights_path=weights_path, metadata_path=metadata_path)
    documents = to_bytes(model, metrics=metrics, history=history, extra=extra)
    for path, content in zip(paths, documents, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return paths


def load_checkpoint(
    directory: PathLike | None = None,
    *,
    weights_path: PathLike | None = None,
    metadata_path: PathLike | None = None,
    device: str | torch.device = "cpu",
) -> LoadedCheckpoint:
    """Inverse of :func:`save_checkpoint`. The metadata is validated (format version first)
    before the weights file is read."""
    paths = checkpoint_paths(directory, weights_path=weights_path, metadata_path=metadata_path)
    metadata = parse_metadata(paths.metadata.read_bytes())
    return from_bytes(paths.weights.read_bytes(), metadata, device=device)


# --- helpers -------------------------------------------------------------------------------------
def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "safetensors": safetensors.__version__,
    }
