"""bench/loop/anchors: the reference points of the loop's curves, measured beside them with the same protocol.

Issue 13 asks that every ratio in bench/README.md be measured side by side, not quoted from elsewhere. Two
anchors, run in imitation's own virtualenv (``var/imitation-venv``: imitation 1.0.1 pins gymnasium 0.29 and
Stable-Baselines3 2.2, which clash with the project's; ``examples/imitation_venv.sh`` builds it):

  sb3-sac             plain Stable-Baselines3 SAC on Pendulum's true reward with the platform's SAC
                      hyper-parameters (specs/pendulum.yaml → ``PolicyConfig`` defaults), evaluated when its own
                      environment steps reach each of the curve's counted budgets (10 400 … 32 800). It checks that
                      the platform's "true" ceiling loses nothing to its plumbing (initial pool, rollouts, snapshots).
  imitation-tutorial  imitation's preference-comparisons tutorial on Pendulum-v1 as its documentation runs it
                      (PPO, 200 synthetic comparisons, 5 000 steps, then a fresh PPO for 1 000 steps on the learned
                      reward): its cost and return per seed, the comparison issue 13 quoted.
                      Its counted steps are far above its nominal 6 000: eight environments, whole PPO rollouts
                      of 2 048 steps, and 200 pairs of 100-step fragments sampled from the agent's trajectories.

Every environment step each anchor simulates is counted (a wrapper under the vectorised env), evaluation apart.
Evaluation is the curve's: ``EPISODES`` deterministic episodes from the reset seeds drawn from
``np.random.default_rng(EVAL_SEED)``, one per episode, as ``trainer.core.policy.evaluation`` draws them, so every
policy here starts from the same states as the platform's. Gymnasium 0.29's Pendulum-v1 resets and steps as 1.x's.

Resumable like curve.py: each finished (anchor, seed) is appended to ``bench/loop/results/anchors.jsonl``; a rerun
skips it.

    var/imitation-venv/bin/python -m bench.loop.anchors --anchors sb3-sac imitation-tutorial --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.loop.curve import EPISODE_STEPS, EVAL_SEED, INITIAL_ROLLOUTS, recorded

ROOT = Path(__file__).resolve().parents[2]
ANCHORS = ("sb3-sac", "imitation-tutorial")
EPISODES = 50
SEED_BOUND = 2**31  # trainer.core.policy.evaluation._SEED_BOUND
# The curve's counted budget after each iteration: the initial pool, then per iteration 4 000 SAC steps and the
# 8 rollouts of 200 steps that make the next clips (curve.py's defaults, specs/pendulum.yaml's loop.rollouts).
BUDGETS = [INITIAL_ROLLOUTS * EPISODE_STEPS + k * (4_000 + 8 * EPISODE_STEPS) for k in range(1, 6)]
# specs/pendulum.yaml runs SAC with PolicyConfig's defaults.
PLATFORM_SAC: dict[str, Any] = {
    "learning_rate": 1e-3,
    "gamma": 0.99,
    "batch_size": 256,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "train_freq": 1,
    "gradient_steps": 1,
    "tau": 0.005,
    "ent_coef": "auto",
    "policy_kwargs": {"net_arch": [64, 64]},
}


def evaluation_seeds(episodes: int = EPISODES) -> list[int]:
    rng = np.random.default_rng(EVAL_SEED)
    return [int(rng.integers(0, SEED_BOUND)) for _ in range(episodes)]


def evaluate(predict, episodes: int = EPISODES) -> list[float]:
    """True returns of ``predict(obs) -> action`` (deterministic) from the curve's fixed start states."""
    import gymnasium as gym

    env = gym.make("Pendulum-v1")
    returns = []
    try:
        for seed in evaluation_seeds(episodes):
            obs, _ = env.reset(seed=seed)
            total, done = 0.0, False
            while not done:
                obs, reward, terminated, truncated, _ = env.step(predict(obs))
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return returns


def _step_counter():
    import gymnasium as gym

    counted = {"steps": 0}

    class CountSteps(gym.Wrapper):
        def step(self, action):
            counted["steps"] += 1
            return self.env.step(action)

    return counted, CountSteps


def run_sb3_sac(seed: int) -> dict[str, Any]:
    import gymnasium as gym
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    counted, count_steps = _step_counter()
    env = count_steps(gym.make("Pendulum-v1"))
    model = SAC("MlpPolicy", env, seed=seed, device="cpu", verbose=0, **PLATFORM_SAC)
    rows: list[dict[str, Any]] = []

    class EvaluateAtBudgets(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps in BUDGETS:
                returns = evaluate(lambda obs: model.predict(obs, deterministic=True)[0])
                rows.append({"env_steps": self.num_timesteps, "true_mean": float(np.mean(returns)),
                             "true_returns": returns})  # fmt: skip
                print(f"  sb3-sac seed {seed}: {self.num_timesteps} steps → {rows[-1]['true_mean']:.1f}", flush=True)
            return True

    model.learn(total_timesteps=BUDGETS[-1], callback=EvaluateAtBudgets())
    assert counted["steps"] == BUDGETS[-1], counted
    return {"iterations": rows, "env_steps": counted["steps"]}


def run_imitation_tutorial(seed: int) -> dict[str, Any]:
    """imitation's preference-comparisons tutorial (docs/tutorials/5_train_preference_comparisons), its settings."""
    import torch
    from imitation.algorithms import preference_comparisons as pc
    from imitation.policies.base import FeedForward32Policy, NormalizeFeaturesExtractor
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.rewards.reward_wrapper import RewardVecEnvWrapper
    from imitation.util.networks import RunningNorm
    from imitation.util.util import make_vec_env
    from stable_baselines3 import PPO

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    counted, count_steps = _step_counter()
    venv = make_vec_env("Pendulum-v1", rng=rng, post_wrappers=[lambda env, _index: count_steps(env)])

    def ppo(env):
        return PPO(
            policy=FeedForward32Policy,
            policy_kwargs={"features_extractor_class": NormalizeFeaturesExtractor,
                           "features_extractor_kwargs": {"normalize_class": RunningNorm}},
            env=env, seed=seed, n_steps=2048 // env.num_envs, batch_size=64, ent_coef=0.01, learning_rate=2e-3,
            clip_range=0.1, gae_lambda=0.95, gamma=0.97, n_epochs=10, device="cpu",
        )  # fmt: skip

    reward_net = BasicRewardNet(venv.observation_space, venv.action_space, normalize_input_layer=RunningNorm)
    agent = ppo(venv)
    comparisons = pc.PreferenceComparisons(  # the tutorial's settings
        pc.AgentTrainer(algorithm=agent, reward_fn=reward_net, venv=venv, exploration_frac=0.05, rng=rng),
        reward_net,
        num_iterations=5,
        fragmenter=pc.RandomFragmenter(warning_threshold=0, rng=rng),
        preference_gatherer=pc.SyntheticGatherer(rng=rng),
        reward_trainer=pc.BasicRewardTrainer(
            preference_model=pc.PreferenceModel(reward_net), loss=pc.CrossEntropyRewardLoss(), epochs=3, rng=rng
        ),
        fragment_length=100,
        transition_oversampling=1,
        initial_comparison_frac=0.1,
        allow_variable_horizon=False,
        initial_epoch_multiplier=4,
        query_schedule="hyperbolic",
    )
    comparisons.train(total_timesteps=5_000, total_comparisons=200)
    policy = ppo(RewardVecEnvWrapper(venv, reward_net.predict_processed))
    policy.learn(1_000)
    returns = evaluate(lambda obs: policy.predict(obs, deterministic=True)[0])
    venv.close()
    return {
        "iterations": [{"env_steps": counted["steps"], "true_mean": float(np.mean(returns)), "true_returns": returns}],
        "env_steps": counted["steps"],
        "comparisons": 200,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--anchors", nargs="+", choices=ANCHORS, default=list(ANCHORS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "loop" / "results" / "anchors.jsonl")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)  # as the platform's TORCH_NUM_THREADS default: one thread per process on two cores
    done = {(row["anchor"], row["seed"]) for row in recorded(args.out)}
    for anchor in args.anchors:
        for seed in args.seeds:
            if (anchor, seed) in done:
                print(f"{anchor} seed {seed}: recorded, skipped", flush=True)
                continue
            started, cpu_started = time.monotonic(), time.process_time()
            if anchor == "sb3-sac":
                result = run_sb3_sac(seed)
            else:
                result = run_imitation_tutorial(seed)
            row = {
                "anchor": anchor,
                "seed": seed,
                **result,
                "wall_seconds": round(time.monotonic() - started, 1),
                "cpu_seconds": round(time.process_time() - cpu_started, 1),
            }
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(
                f"{anchor} seed {seed}: {row['iterations'][-1]['true_mean']:.1f} after {row['env_steps']} steps, "
                f"{row['wall_seconds']} s wall, {row['cpu_seconds']} CPU-s",
                flush=True,
            )


if __name__ == "__main__":
    main()
