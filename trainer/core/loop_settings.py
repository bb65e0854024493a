"""How one turn of the loop runs: a validated dataclass stored as JSON on the project and on each iteration.

The project's ``loop_settings`` holds the researcher's choices; each iteration keeps the full, resolved
copy it ran with (defaults filled in), so a result can always be traced to the exact settings that made it.
Django-free (``trainer/core/loop_settings.py``, formerly ``trainer/loop_settings.py``); the state machine that
uses it is ``trainer.loop``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .configbase import Check, ConfigBase, is_int, is_number
from .policy import PolicyConfig
from .reward import RewardModelConfig

QUERY_SELECTIONS = ("active", "random")

# Maxima (also in each field's docstring).
MAX_PREFERENCE_CAP = 5_000_000
MAX_QUERIES_PER_CLIP = 1000
MAX_NOISE_LEVELS = 64


# Defaults sized for the CPU: a 64-64 ensemble trains in seconds on a few thousand pairs, and SAC with
# these settings swings Pendulum up within ~10k steps. At most 8 batches per epoch: a HERON set's thousands of pairs
# over a pool of ~100-200 clips train in 8 larger batches instead of ~30 that each score the whole pool (issue 13);
# pairwise label budgets (≤ 1 024 pairs) keep batches of 128. Members train one after another: on nets this small,
# threads cost ~40 % more CPU for ~12 % less wall time, and the render queue's work (policy videos, example clips)
# runs on the other cores meanwhile (bench/README.md).
DEFAULT_REWARD_CONFIG: dict[str, Any] = {
    "hidden_sizes": [64, 64],
    "max_epochs": 60,
    "patience": 5,
    "max_batches_per_epoch": 8,
    "member_threads": 1,
}


@dataclass(frozen=True)
class LoopSettings(ConfigBase):
    """Everything one iteration of labels → preferences → reward → policy → clips → queries needs."""

    retrain_on_ranking: bool = True
    """A new factor ranking starts a preference-set build and reward training (outside iterations)."""
    preference_sources: str = "auto"
    """What the iteration's preference set is built from: "rankings", "judgments", "both", or "auto"
    (whatever the project has)."""
    preference_cap: int = 200_000
    """Pair cap for HERON labelling of the clip pool. 1 to 5 000 000."""
    reward_config: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_REWARD_CONFIG))
    """RewardModelConfig overrides for the iteration's reward model (its maxima apply)."""
    policy: dict[str, Any] = field(default_factory=dict)
    """PolicyConfig overrides (algorithm, learning rate, relabel_replay_buffer, eval_episodes, ...; its maxima
    apply)."""
    policy_reward: str = "learned"
    """What the policy is trained on: "learned" (the iteration's reward model) or "true" (the environment's
    own reward, skipping the preference and reward steps; the ceiling a learned reward is measured against)."""
    policy_timesteps: int = 10_000
    """Environment steps of policy training per iteration; training continues from the previous
    iteration's checkpoint, so the total after n iterations is n times this. 1 to 10 000 000."""
    rollouts: int = 8
    """Episodes of the new policy rolled out per iteration; each is cut into clips. 1 to 1000."""
    rollout_noise: tuple[float, ...] = (0.0, 0.1, 0.3)
    """Gaussian action noise (relative to the action range) used in turn across the rollouts, so the
    new clips span the policy's behaviour and its neighbourhood instead of repeating one trajectory.
    1 to 64 levels, each from 0 to 2."""
    label_budget: int = 50
    """Pairwise labels asked per iteration. In pairwise mode the first iteration starts by itself once the
    project holds this many pairwise labels, each later one once the previous iteration's questions are
    answered (up to this many). 0: no questions and no waiting. At most 100 000."""
    query_selection: str = "active"
    """"active": the pairs the reward ensemble disagrees on most; "random": uniform pairs."""
    oversample: int = 10
    """Active selection scores oversample × the needed number of uniformly drawn candidate pairs. 1 to 1000."""
    max_queries_per_clip: int = 4
    """At most this many of an iteration's queries show the same clip. 1 to 1000."""
    seed: int = 0
    """Root seed of the loop; iteration n derives its seeds from (seed, n). 0 to 2**31 - 1."""

    def __post_init__(self) -> None:
        noise = self.rollout_noise
        if (
            not isinstance(noise, list | tuple)
            or not 1 <= len(noise) <= MAX_NOISE_LEVELS
            or not all(is_number(x) for x in noise)
        ):
            raise ValueError(f"rollout_noise must be a list of 1 to {MAX_NOISE_LEVELS} numbers, each between 0 and 2")
        object.__setattr__(self, "rollout_noise", tuple(float(x) for x in noise))
        super().__post_init__()

    def validate(self) -> None:
        super().validate()
        # The nested configs are validated by their own classes, so a typo fails now, not in a worker.
        self.reward_model_config()
        self.policy_config()

    def checks(self, check: Check) -> None:
        check(
            self.preference_sources in ("auto", "rankings", "judgments", "both"),
            "preference_sources must be auto, rankings, judgments or both",
        )
        check(self.policy_reward in ("learned", "true"), "policy_reward must be learned or true")
        check(isinstance(self.retrain_on_ranking, bool), "retrain_on_ranking must be true or false")
        check(
            isinstance(self.reward_config, dict) and isinstance(self.policy, dict),
            "reward_config and policy must be objects",
        )
        check(
            is_int(self.preference_cap) and 1 <= self.preference_cap <= MAX_PREFERENCE_CAP,
            "preference_cap must be between 1 and 5,000,000",
        )
        check(
            is_int(self.policy_timesteps) and 1 <= self.policy_timesteps <= 10_000_000,
            "policy_timesteps must be between 1 and 10,000,000",
        )
        check(is_int(self.rollouts) and 1 <= self.rollouts <= 1000, "rollouts must be between 1 and 1000")
        check(
            len(self.rollout_noise) >= 1 and all(0.0 <= x <= 2.0 for x in self.rollout_noise),
            "rollout_noise needs at least one level, each between 0 and 2",
        )
        check(
            is_int(self.label_budget) and 0 <= self.label_budget <= 100_000,
            "label_budget must be between 0 and 100,000",
        )
        check(self.query_selection in QUERY_SELECTIONS, f"query_selection must be one of {QUERY_SELECTIONS}")
        check(is_int(self.oversample) and 1 <= self.oversample <= 1000, "oversample must be 1 to 1000")
        check(
            is_int(self.max_queries_per_clip) and 1 <= self.max_queries_per_clip <= MAX_QUERIES_PER_CLIP,
            "max_queries_per_clip must be between 1 and 1000",
        )
        check(is_int(self.seed) and 0 <= self.seed < 2**31, "seed must be in [0, 2**31)")

    def reward_model_config(self, **overrides: Any) -> RewardModelConfig:
        return RewardModelConfig().merged({**self.reward_config, **overrides})

    def policy_config(self, **overrides: Any) -> PolicyConfig:
        return PolicyConfig().merged({**self.policy, **overrides})

    @classmethod
    def _unknown_keys_message(cls, unknown: list[str], known: list[str]) -> str:
        return f"unknown loop setting(s): {', '.join(unknown)}"
