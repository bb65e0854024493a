"""Hyper-parameters of policy training, as one validated, JSON-friendly dataclass.

The config is stored verbatim in every :class:`~trainer.core.policy.training.PolicySnapshot`, so every
field must be a plain JSON value (``net_arch`` becomes a list in JSON and is turned back into a tuple
by :meth:`PolicyConfig.from_dict`).
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium
import torch

from trainer.core.configbase import Check, ConfigBase, device_problem, is_device, resolve_device
from trainer.core.configbase import is_int as _is_int
from trainer.core.configbase import is_number as _is_number
from trainer.core.configbase import is_positive_number as _is_positive_number

ALGORITHMS = ("auto", "sac", "ppo")

# numpy's global seed (which SB3's set_random_seed sets) must fit in 32 bits.
_MAX_SEED = 2**32

# Maxima: a config comes from researchers over the API; each is stated in its field's docstring too.
MAX_NET_WIDTH = 4096
MAX_NET_LAYERS = 8
MAX_LEARNING_RATE = 10.0
MAX_BATCH_SIZE = 65_536
MAX_BUFFER_SIZE = 2_000_000
MAX_LEARNING_STARTS = 10_000_000
MAX_TRAIN_FREQ = 100_000
MAX_GRADIENT_STEPS = 1_000
MAX_ENT_COEF = 1_000.0
MAX_PPO_N_STEPS = 1_000_000
MAX_PPO_N_EPOCHS = 1_000
MAX_EVAL_EPISODES = 1_000
MAX_NUM_THREADS = 256


@dataclass(frozen=True)
class PolicyConfig(ConfigBase):
    """Everything that decides how a policy is built and trained on a (learned) reward."""

    _problem_prefix = "invalid PolicyConfig: "

    # --- algorithm and network -----------------------------------------------------------------
    algorithm: str = "auto"
    """``sac``, ``ppo``, or ``auto``: SAC for continuous (Box) action spaces, PPO for Discrete ones
    (SB3's SAC cannot act in discrete spaces)."""
    learning_rate: float = 1e-3
    """Adam step size of every network (actor, critics, entropy coefficient): > 0, at most 10."""
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layer widths, shared by the actor and the critic(s)/value function: at most 8 layers, each at
    most 4096 wide."""
    gamma: float = 0.99
    """Discount factor."""

    # --- SAC (off-policy) ----------------------------------------------------------------------
    batch_size: int = 256
    """SAC: transitions per gradient step. 1 to 65 536."""
    buffer_size: int = 100_000
    """SAC: replay buffer capacity in transitions (the oldest are overwritten first). 1 to 2 000 000."""
    learning_starts: int = 1000
    """SAC: steps of uniformly random actions before the first gradient step. Counted in cumulative
    timesteps, so a run continued from a snapshot does not warm up again. 0 to 10 000 000."""
    train_freq: int = 1
    """SAC: environment steps between training phases. 1 to 100 000."""
    gradient_steps: int = 1
    """SAC: gradient steps per training phase. 1 to 1000."""
    tau: float = 0.005
    """SAC: Polyak coefficient of the target critics' soft update."""
    ent_coef: str | float = "auto"
    """Entropy bonus weight. SAC: ``auto`` (learned, starting at 1), ``auto_<init>`` (learned,
    starting at ``init``) or a fixed number > 0. PPO uses a number as given and reads the ``auto``
    forms as 0, its usual setting (PPO has no automatic tuning). Numbers at most 1000."""

    # --- PPO (on-policy) -----------------------------------------------------------------------
    ppo_n_steps: int = 1024
    """PPO: steps collected per update. A run trains whole updates, so it rounds its timesteps up
    to a multiple of this. 2 to 1 000 000."""
    ppo_n_epochs: int = 10
    """PPO: passes over each batch of collected steps. 1 to 1000."""
    ppo_batch_size: int = 64
    """PPO: minibatch size, 2 to 65 536."""

    # --- learned reward ------------------------------------------------------------------------
    normalize_reward: bool = True
    """Train on the reward model's normalised reward (roughly zero-mean, unit-scale) instead of its
    raw output; read by whoever builds the reward function (see
    :func:`~trainer.core.policy.reward_wrapper.ensemble_reward_fn`). Evaluation always reports the raw one."""
    relabel_replay_buffer: bool = True
    """SAC, continuing from a snapshot with a (new) learned reward: recompute the stored rewards of
    the whole replay buffer with it, so old transitions don't teach the stale reward."""

    # --- evaluation, reproducibility and hardware ----------------------------------------------
    eval_episodes: int = 10
    """Episodes of deterministic play per evaluation. 1 to 1000."""
    seed: int = 0
    """Root of all randomness of a training run (network init, exploration, environment resets)."""
    device: str = "cpu"
    """Torch device: ``cpu``, ``cuda``, ``cuda:<index>`` (index < 100) or ``auto``, which picks CUDA when
    available; nothing else. Small MLP
    policies usually train faster on the CPU, where each step's tiny batches don't pay transfer costs."""
    num_threads: int = 1
    """Torch CPU threads while training (restored afterwards). Results are bitwise-reproducible only
    for the same thread count; more threads rarely help networks this small. 1 to 256."""

    def __post_init__(self) -> None:
        # Accept lists (from JSON) for net_arch but always store a hashable tuple.
        if isinstance(self.net_arch, list | tuple):
            object.__setattr__(self, "net_arch", tuple(self.net_arch))
        super().__post_init__()

    # ------------------------------------------------------------------------------------------
    def checks(self, check: Check) -> None:
        check(self.algorithm in ALGORITHMS, f"algorithm must be one of {ALGORITHMS}, got {self.algorithm!r}")

        def within(value: object, low: int, high: int) -> bool:
            return _is_int(value) and low <= value <= high  # type: ignore[operator]

        check(
            _is_positive_number(self.learning_rate) and self.learning_rate <= MAX_LEARNING_RATE,
            f"learning_rate must be a finite number > 0 and <= {MAX_LEARNING_RATE:g}",
        )
        check(
            isinstance(self.net_arch, tuple)
            and len(self.net_arch) <= MAX_NET_LAYERS
            and all(within(width, 1, MAX_NET_WIDTH) for width in self.net_arch),
            f"net_arch must be a list of at most {MAX_NET_LAYERS} integers from 1 to {MAX_NET_WIDTH}, "
            f"got {self.net_arch!r}"[:300],
        )
        check(_is_number(self.gamma) and 0.0 <= self.gamma <= 1.0, "gamma must be in [0, 1]")
        check(within(self.batch_size, 1, MAX_BATCH_SIZE), f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE}")
        check(
            within(self.buffer_size, 1, MAX_BUFFER_SIZE), f"buffer_size must be an integer from 1 to {MAX_BUFFER_SIZE}"
        )
        check(
            within(self.learning_starts, 0, MAX_LEARNING_STARTS),
            f"learning_starts must be an integer from 0 to {MAX_LEARNING_STARTS}",
        )
        check(within(self.train_freq, 1, MAX_TRAIN_FREQ), f"train_freq must be an integer from 1 to {MAX_TRAIN_FREQ}")
        check(
            within(self.gradient_steps, 1, MAX_GRADIENT_STEPS),
            f"gradient_steps must be an integer from 1 to {MAX_GRADIENT_STEPS}",
        )
        check(_is_number(self.tau) and 0.0 < self.tau <= 1.0, "tau must be in (0, 1]")
        check(
            _is_valid_ent_coef(self.ent_coef),
            f"ent_coef must be 'auto', 'auto_<number > 0>' or a number > 0 (at most {MAX_ENT_COEF:g}), "
            f"got {self.ent_coef!r}"[:300],
        )
        check(
            within(self.ppo_n_steps, 2, MAX_PPO_N_STEPS), f"ppo_n_steps must be an integer from 2 to {MAX_PPO_N_STEPS}"
        )
        check(
            within(self.ppo_n_epochs, 1, MAX_PPO_N_EPOCHS),
            f"ppo_n_epochs must be an integer from 1 to {MAX_PPO_N_EPOCHS}",
        )
        check(
            within(self.ppo_batch_size, 2, MAX_BATCH_SIZE),
            f"ppo_batch_size must be an integer from 2 to {MAX_BATCH_SIZE}",
        )
        check(isinstance(self.normalize_reward, bool), "normalize_reward must be a bool")
        check(isinstance(self.relabel_replay_buffer, bool), "relabel_replay_buffer must be a bool")
        check(
            within(self.eval_episodes, 1, MAX_EVAL_EPISODES),
            f"eval_episodes must be an integer from 1 to {MAX_EVAL_EPISODES}",
        )
        check(_is_int(self.seed) and 0 <= self.seed < _MAX_SEED, "seed must be an integer in [0, 2**32)")
        check(
            within(self.num_threads, 1, MAX_NUM_THREADS), f"num_threads must be an integer from 1 to {MAX_NUM_THREADS}"
        )
        check(is_device(self.device), device_problem(self.device))

    def resolved_algorithm(self, action_space: gymnasium.Space) -> str:
        """``sac`` or ``ppo``: what ``algorithm`` means for ``action_space``.

        Raises ValueError for action spaces the features can't describe (only Box and Discrete are
        supported) and for SAC with a discrete action space.
        """
        if not isinstance(action_space, gymnasium.spaces.Box | gymnasium.spaces.Discrete):
            raise ValueError(f"unsupported action space {action_space!r}: only Box and Discrete are supported")
        if self.algorithm == "auto":
            return "sac" if isinstance(action_space, gymnasium.spaces.Box) else "ppo"
        if self.algorithm == "sac" and not isinstance(action_space, gymnasium.spaces.Box):
            raise ValueError(f"SAC needs a continuous (Box) action space, got {action_space!r}; use 'ppo' or 'auto'")
        return self.algorithm

    def resolved_device(self) -> torch.device:
        """The torch device to train on; ``auto`` means CUDA if available, else CPU."""
        return resolve_device(self.device)


def _is_valid_ent_coef(value: object) -> bool:
    if isinstance(value, str):
        if value == "auto":
            return True
        prefix, _, initial = value.partition("_")
        if len(initial) > 32:
            return False
        try:
            number = float(initial)
        except ValueError:
            return False
        return prefix == "auto" and _is_positive_number(number) and number <= MAX_ENT_COEF
    return _is_positive_number(value) and value <= MAX_ENT_COEF  # type: ignore[operator]
