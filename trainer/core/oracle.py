"""Synthetic teachers: answer pairwise queries from the environment's true reward, with human-like flaws.

The teacher follows B-Pref (Lee et al., 2021, "B-Pref: Benchmarking Preference-Based Reinforcement Learning"):
a perfectly rational oracle is a poor stand-in for people, so it can be made stochastic (Bradley–Terry with
rationality β), myopic (earlier steps discounted by γ), error-prone (a mistake with probability ε flips the
answer), and it can skip pairs where both clips are bad or call near-equal pairs equal.

One deliberate difference from the reference code: B-Pref decides *skip* and *equal* on undiscounted returns
and only the preference itself on discounted ones; here every decision uses the discounted return R, the
return the myopic teacher actually perceives. With γ = 1 (the default) the two agree.

Pure numpy, no Django: the ``simulate_annotators`` command feeds it rewards it reads from rollouts.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal, TypeAlias

import numpy as np

Answer: TypeAlias = Literal["a", "b", "equal", "skip"]
RankingSpec: TypeAlias = list[list[str]]
"""Levels of factor keys, most important first; a level of several keys is a tie group."""


@dataclass(frozen=True)
class BPrefTeacher:
    """A simulated annotator that compares two clips by their (discounted) true returns."""

    beta: float = math.inf
    """Rationality β. ``math.inf``: perfectly rational, always picks the higher return. Finite β > 0:
    P(a ≻ b) = sigmoid(β · (R_a − R_b)), so near-equal clips are a coin flip and clear cases rarely wrong.
    0: every preference is a fair coin flip."""

    gamma: float = 1.0
    """Myopia γ in [0, 1]. Step t of H counts with weight γ^(H−1−t): the last step fully, earlier ones less,
    as a person remembers the end of a clip best. 1 = no myopia."""

    epsilon: float = 0.0
    """Mistake probability ε in [0, 1]: after deciding, the teacher flips a/b with this probability
    (an accidental key press). Skip and equal answers are never flipped."""

    skip_threshold: float | None = None
    """Skip the query when both clips' returns are below this value (neither clip shows anything worth
    judging). None = never skip."""

    equal_threshold: float = 0.0
    """Answer "equal" when |R_a − R_b| ≤ this value. 0 = never answer equal."""

    def __post_init__(self) -> None:
        if math.isnan(self.beta) or self.beta < 0:
            raise ValueError(f"beta must be ≥ 0 or math.inf, got {self.beta}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.skip_threshold is not None and not math.isfinite(self.skip_threshold):
            raise ValueError(f"skip_threshold must be a finite number or None, got {self.skip_threshold}")
        if not (math.isfinite(self.equal_threshold) and self.equal_threshold >= 0.0):
            raise ValueError(f"equal_threshold must be a finite number ≥ 0, got {self.equal_threshold}")

    def perceived_return(self, rewards: np.ndarray) -> float:
        """The clip's return as this teacher perceives it: Σ_t γ^(H−1−t) r_t."""
        rewards = _check_rewards(rewards)
        if self.gamma == 1.0:
            return float(rewards.sum())
        weights = self.gamma ** np.arange(len(rewards) - 1, -1, -1, dtype=np.float64)
        return float(weights @ rewards)

    def answer(self, rewards_a: np.ndarray, rewards_b: np.ndarray, rng: np.random.Generator) -> Answer:
        """Compare clip a and clip b from their per-step true rewards: "a", "b", "equal" or "skip".

        Draws from ``rng`` only when the answer is random (finite β, an exact tie, or ε > 0), so a seeded
        generator reproduces a run.
        """
        return_a, return_b = self.perceived_return(rewards_a), self.perceived_return(rewards_b)
        if self.skip_threshold is not None and max(return_a, return_b) < self.skip_threshold:
            return "skip"
        difference = return_a - return_b
        if self.equal_threshold > 0.0 and abs(difference) <= self.equal_threshold:
            return "equal"
        preferred = self._prefer(difference, rng)
        if self.epsilon > 0.0 and rng.random() < self.epsilon:
            return "b" if preferred == "a" else "a"
        return preferred

    def prob_a(self, difference: float) -> float:
        """P(a ≻ b) for a return difference R_a − R_b; an exact tie is always 0.5, whatever β."""
        if difference == 0.0:
            return 0.5
        if math.isinf(self.beta):
            return 1.0 if difference > 0 else 0.0
        # tanh form of the sigmoid: no overflow for large |β·d|.
        return 0.5 * (1.0 + math.tanh(0.5 * self.beta * difference))

    def _prefer(self, difference: float, rng: np.random.Generator) -> Literal["a", "b"]:
        p = self.prob_a(difference)
        if p in (0.0, 1.0):  # a rational teacher with a clear winner: no draw, so the rng stream is untouched
            return "a" if p == 1.0 else "b"
        return "a" if rng.random() < p else "b"


def _check_rewards(rewards: np.ndarray) -> np.ndarray:
    array = np.asarray(rewards, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"rewards must be a non-empty 1-D array, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("rewards must be finite (is the true reward known for this clip?)")
    return array


_FACTOR_KEY = re.compile(r"^[a-z][a-z0-9_]{0,63}$")  # the same rule as labeling's RewardFactor.key


def parse_ranking(text: str) -> RankingSpec:
    """Parse ``"angle_sq > angular_velocity_sq = torque_sq"`` into ``[["angle_sq"], ["angular_velocity_sq",
    "torque_sq"]]``: ``>`` separates levels (most important first), ``=`` ties factors within a level.

    Only the syntax is checked here; whether the keys are the project's factors is the server's call.
    """
    if not text.strip():
        raise ValueError('the ranking is empty; write e.g. "angle_sq > angular_velocity_sq = torque_sq"')
    levels: RankingSpec = []
    seen: set[str] = set()
    for position, level_text in enumerate(text.split(">"), start=1):
        if not level_text.strip():
            raise ValueError(f"level {position} of {text!r} is empty (a stray or doubled '>')")
        level = []
        for key in (part.strip() for part in level_text.split("=")):
            if not key:
                raise ValueError(f"level {position} of {text!r} has an empty factor (a stray or doubled '=')")
            if not _FACTOR_KEY.match(key):
                raise ValueError(
                    f"{key!r} is not a factor key (lower-case letters, digits and _, starting with a letter; "
                    "separate levels with '>' and ties with '=')"
                )
            if key in seen:
                raise ValueError(f"factor {key!r} appears more than once in {text!r}")
            seen.add(key)
            level.append(key)
        levels.append(level)
    return levels
