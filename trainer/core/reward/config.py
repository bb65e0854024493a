"""Hyper-parameters of the reward model, as one validated, JSON-friendly dataclass.

The config is stored verbatim in every checkpoint, so every field must be a plain JSON value
(tuples become lists in JSON and are turned back into tuples by :meth:`RewardModelConfig.from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.core.configbase import Check, ConfigBase, device_problem, is_device, resolve_device
from trainer.core.configbase import is_int as _is_int
from trainer.core.configbase import is_number as _is_number
from trainer.core.configbase import is_positive_number as _is_positive_number

ACTIVATIONS = ("relu", "tanh", "leaky_relu", "gelu")
PRECISIONS = ("auto", "float32", "bfloat16")

# Maxima: a config comes from researchers over the API, and a worker must not be asked to allocate a
# billion-unit layer or loop for ever. Each is stated in its field's docstring too.
MAX_HIDDEN_SIZE = 4096
MAX_HIDDEN_LAYERS = 8
MAX_ENSEMBLE_SIZE = 16
MAX_LEARNING_RATE = 10.0
MAX_WEIGHT_DECAY = 10.0
MAX_BATCH_SIZE = 65_536
MAX_EPOCHS = 10_000
MAX_MIN_DELTA = 1_000.0
MAX_NUM_THREADS = 256
MAX_EVAL_BATCH_CLIPS = 65_536


@dataclass(frozen=True)
class RewardModelConfig(ConfigBase):
    """Everything that decides how a reward model is built and trained (design §4)."""

    _problem_prefix = "invalid RewardModelConfig: "

    # --- network -------------------------------------------------------------------------------
    hidden_sizes: tuple[int, ...] = (256, 256)
    """Widths of the hidden layers of each member's per-step MLP r(x_t); () gives a linear reward.
    At most 8 layers, each at most 4096 wide."""
    activation: str = "relu"
    """Non-linearity between hidden layers: one of ``relu``, ``tanh``, ``leaky_relu``, ``gelu``."""
    ensemble_size: int = 3
    """Number of independently initialised members M; their spread of P(a≻b) is the uncertainty.
    1 to 16."""
    normalize_features: bool = True
    """Standardise each feature with the mean/std over the training clips' steps (stored in the
    checkpoint and applied at inference), so raw observation scales don't dictate the learning rate."""

    # --- optimisation --------------------------------------------------------------------------
    learning_rate: float = 3e-4
    """Adam(W) step size: > 0, at most 10."""
    weight_decay: float = 0.0
    """Decoupled (AdamW) weight decay; 0 gives plain Adam. At most 10."""
    batch_size: int = 128
    """Preference pairs per gradient step (each step scores both clips of every pair). 1 to 65 536."""
    max_batches_per_epoch: int = 0
    """When > 0, grow the batch so that an epoch takes at most this many gradient steps per member:
    max(``batch_size``, ceil(training pairs / max_batches_per_epoch)) pairs per batch. A batch costs about as much as
    the distinct clips it scores, and on a HERON preference set (thousands of pairs over ~100–200 clips) a batch of 128
    pairs already scores nearly every clip, so 30 small batches cost 30 passes over the pool where 8 larger ones
    do as well (issue 13: half the reward-training CPU, same or better policies; bench/README.md). Sets with fewer
    than ``batch_size`` × this many pairs (every pairwise label budget the loop asks for) train exactly as before.
    0 (off) to 1 000 000."""
    max_epochs: int = 200
    """Upper bound on passes over each member's (bootstrapped) training pairs. 1 to 10 000."""
    min_updates: int = 0
    """At least this many gradient steps per member, however few the pairs (with 10 labels an epoch is one
    mini-batch, so ``max_epochs`` epochs are only a few dozen steps). Epochs are added (up to 10 000 in all) and
    early stopping waits for them. 0 (off) to 1 000 000. Off by default on purpose: 500 updates on 10 pairs
    over-fit them and the policy collapsed (issue 13, bench/README.md); it is a knob for experiments."""
    updates_per_pair: float = 4.0
    """Size-scaled training length, used whenever there is no validation split (``val_fraction`` 0, or a split
    smaller than ``min_val_pairs``): each member takes clamp(ceil(updates_per_pair · training pairs),
    ``min_updates``, ``max_updates``) gradient steps (whole epochs, rounded up) and keeps the last weights, instead
    of ``max_epochs`` epochs. Few labels then get few steps (a fixed 500 on 10 pairs over-fits them) and more
    labels get more (early stopping on a handful of hard validation pairs stopped after 6 epochs and left an
    ensemble member ranking clips backwards; issue 13, bench/README.md). 0 (off: ``max_epochs``) to 10 000."""
    max_updates: int = 400
    """Upper clamp of the ``updates_per_pair`` schedule (gradient steps per member). 1 to 1 000 000."""
    min_val_pairs: int = 50
    """Hold out the ``val_fraction`` validation split, and stop early on it, only when it would hold at least
    this many pairs; below that every pair is trained on and the ``updates_per_pair`` schedule sets the length.
    A validation loss over 1–16 pairs is noise, and stopping on it decided per seed whether the reward model
    converged (issue 13). 0 (always split, the old behaviour) to 1 000 000."""
    patience: int = 10
    """Stop after this many epochs without a validation-loss improvement larger than ``min_delta``,
    then restore the weights of the epoch with the lowest validation loss; 0 disables early
    stopping. At most 10 000."""
    min_delta: float = 1e-3
    """Smallest decrease of the validation loss (in nats per pair) that resets the patience count.
    On easy, well-separated data the loss keeps creeping down by ~1e-4 per epoch long after the
    accuracy has converged; without a threshold training then runs several times longer for
    nothing. Restoring still picks the lowest loss seen, however small its margin. 0 to 1000."""
    val_fraction: float = 0.1
    """Fraction of the pairs held out for validation/early stopping; 0 trains on everything for
    ``max_epochs`` epochs and keeps the last weights."""
    label_noise: float = 0.0
    """ε: fraction of answers assumed random, P' = ε/2 + (1-ε)·sigmoid(R_a - R_b); caps the loss a
    single confidently-wrong label can cause."""
    bootstrap: bool = True
    """Train each member on its own bootstrap resample (with replacement) of the training pairs,
    which decorrelates members beyond their random initialisation."""

    # --- reproducibility and hardware ----------------------------------------------------------
    seed: int = 0
    """Root of all randomness (split, bootstrap, initialisation, shuffling) of a training run."""
    device: str = "cpu"
    """Torch device for training: ``cpu``, ``cuda``, ``cuda:<index>`` (index < 100) or ``auto``, which
    picks CUDA when available; nothing else. Checkpoints are device-independent."""
    num_threads: int | None = None
    """CPU threads for torch while training (restored afterwards); None keeps torch's current
    setting. Results are bitwise-reproducible only for the same thread count. 1 to 256."""
    member_threads: int | None = None
    """Threads that train the ensemble's members side by side, each member on one (torch runs its kernels
    outside Python's lock); None: one per member, at most the CPUs this process may use. Each member's
    computation is the same whatever the count, so the weights are bitwise equal for every value. 1 to 256."""
    deterministic: bool = True
    """Ask torch for deterministic kernels while training (matters on CUDA; CPU ops used here are
    deterministic already)."""
    training_precision: str = "auto"
    """Arithmetic of the training forward/backward pass. ``bfloat16`` runs it under autocast
    (weights, optimiser state, clip sums and the loss stay float32): about 4x faster on CPUs with
    native bfloat16 (AVX512-BF16 or AMX), much slower on CPUs without. ``auto`` picks bfloat16 on
    such CPUs and float32 everywhere else (including CUDA, where these small MLPs are not
    arithmetic-bound). Validation and inference always run in float32."""
    eval_batch_clips: int = 2048
    """Clips scored per forward pass when evaluating (bounds memory; no effect on results). 1 to 65 536."""

    def __post_init__(self) -> None:
        # Accept lists (from JSON) for hidden_sizes but always store a hashable tuple.
        if not isinstance(self.hidden_sizes, list | tuple):
            raise ValueError(f"invalid RewardModelConfig: hidden_sizes must be a list, got {self.hidden_sizes!r}"[:300])
        object.__setattr__(self, "hidden_sizes", tuple(self.hidden_sizes))
        super().__post_init__()

    # ------------------------------------------------------------------------------------------
    def checks(self, check: Check) -> None:
        check(
            len(self.hidden_sizes) <= MAX_HIDDEN_LAYERS
            and all(_is_int(h) and 0 < h <= MAX_HIDDEN_SIZE for h in self.hidden_sizes),
            f"hidden_sizes must be at most {MAX_HIDDEN_LAYERS} integers from 1 to {MAX_HIDDEN_SIZE}, "
            f"got {self.hidden_sizes!r}"[:300],
        )
        check(
            self.activation in ACTIVATIONS,
            f"activation must be one of {ACTIVATIONS}, got {self.activation!r}",
        )
        check(
            _is_int(self.ensemble_size) and 1 <= self.ensemble_size <= MAX_ENSEMBLE_SIZE,
            f"ensemble_size must be an integer from 1 to {MAX_ENSEMBLE_SIZE}",
        )
        check(
            _is_positive_number(self.learning_rate) and self.learning_rate <= MAX_LEARNING_RATE,
            f"learning_rate must be a finite number > 0 and <= {MAX_LEARNING_RATE:g}",
        )
        check(
            _is_number(self.weight_decay) and 0 <= self.weight_decay <= MAX_WEIGHT_DECAY,
            f"weight_decay must be from 0 to {MAX_WEIGHT_DECAY:g}",
        )
        check(
            _is_int(self.batch_size) and 1 <= self.batch_size <= MAX_BATCH_SIZE,
            f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE}",
        )
        check(
            _is_int(self.max_batches_per_epoch) and 0 <= self.max_batches_per_epoch <= 1_000_000,
            "max_batches_per_epoch must be an integer from 0 to 1,000,000",
        )
        check(
            _is_int(self.max_epochs) and 1 <= self.max_epochs <= MAX_EPOCHS,
            f"max_epochs must be an integer from 1 to {MAX_EPOCHS}",
        )
        check(
            _is_int(self.min_updates) and 0 <= self.min_updates <= 1_000_000,
            "min_updates must be an integer from 0 to 1,000,000",
        )
        check(
            _is_number(self.updates_per_pair) and 0 <= self.updates_per_pair <= 10_000,
            "updates_per_pair must be from 0 to 10,000",
        )
        check(
            _is_int(self.max_updates) and 1 <= self.max_updates <= 1_000_000,
            "max_updates must be an integer from 1 to 1,000,000",
        )
        check(
            _is_int(self.min_val_pairs) and 0 <= self.min_val_pairs <= 1_000_000,
            "min_val_pairs must be an integer from 0 to 1,000,000",
        )
        check(
            _is_int(self.patience) and 0 <= self.patience <= MAX_EPOCHS,
            f"patience must be an integer from 0 to {MAX_EPOCHS}",
        )
        check(
            _is_number(self.min_delta) and 0 <= self.min_delta <= MAX_MIN_DELTA,
            f"min_delta must be from 0 to {MAX_MIN_DELTA:g}",
        )
        check(
            _is_number(self.val_fraction) and 0.0 <= self.val_fraction < 1.0,
            f"val_fraction must be in [0, 1), got {self.val_fraction!r}",
        )
        check(
            _is_number(self.label_noise) and 0.0 <= self.label_noise < 1.0,
            f"label_noise must be in [0, 1), got {self.label_noise!r}",
        )
        check(isinstance(self.bootstrap, bool), "bootstrap must be a bool")
        check(isinstance(self.normalize_features, bool), "normalize_features must be a bool")
        check(isinstance(self.deterministic, bool), "deterministic must be a bool")
        check(_is_int(self.seed) and 0 <= self.seed < 2**63, "seed must be an integer in [0, 2**63)")
        check(
            self.num_threads is None or (_is_int(self.num_threads) and 1 <= self.num_threads <= MAX_NUM_THREADS),
            f"num_threads must be None or an integer from 1 to {MAX_NUM_THREADS}",
        )
        check(
            self.member_threads is None
            or (_is_int(self.member_threads) and 1 <= self.member_threads <= MAX_NUM_THREADS),
            f"member_threads must be None or an integer from 1 to {MAX_NUM_THREADS}",
        )
        check(
            self.training_precision in PRECISIONS,
            f"training_precision must be one of {PRECISIONS}, got {self.training_precision!r}",
        )
        check(
            _is_int(self.eval_batch_clips) and 1 <= self.eval_batch_clips <= MAX_EVAL_BATCH_CLIPS,
            f"eval_batch_clips must be an integer from 1 to {MAX_EVAL_BATCH_CLIPS}",
        )
        check(is_device(self.device), device_problem(self.device))

    def resolved_device(self) -> torch.device:
        """The torch device to train on; ``auto`` means CUDA if available, else CPU."""
        return resolve_device(self.device)

    def resolved_training_precision(self, device: torch.device) -> str:
        """``float32`` or ``bfloat16``: what ``training_precision`` means on ``device``."""
        if self.training_precision != "auto":
            return self.training_precision
        return "bfloat16" if device.type == "cpu" and cpu_has_native_bfloat16() else "float32"


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 matrix products natively (AVX512-BF16 or AMX tiles).

    Uses torch's private CPU-feature probes; if they ever disappear the answer is False, i.e.
    ``auto`` falls back to the always-safe float32.
    """
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    try:
        return any(bool(getattr(torch.cpu, probe)()) for probe in probes if hasattr(torch.cpu, probe))
    except Exception:  # a probe that exists but fails must not break training
        return False
