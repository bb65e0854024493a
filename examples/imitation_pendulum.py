"""imitation's preference comparisons on Pendulum-v1, with the preferences answered by a Heronry project.

Runs in its own virtualenv (imitation 1.0.1 pins gymnasium 0.29 and Stable-Baselines3 2.2; see
examples/requirements-imitation.txt); ``make imitation-example`` builds it, starts a throwaway server with
simulated annotators and runs this script against it. By hand, against a server of yours:

    var/imitation-venv/bin/python examples/imitation_pendulum.py --url http://127.0.0.1:8000 \\
        --username researcher --password heronry --project imitation-pendulum

The project's clip length must equal ``--fragment-length`` (examples/imitation_pendulum.yaml: 25 steps).
Small budgets by default, so that it finishes in a few minutes on two CPU cores; it shows the plumbing, not a
trained swing-up.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from heronry_client import Client
from heronry_client.imitation import HeronryPreferenceGatherer, RenderFrameInfo, answered_only

MAX_TORQUE = 2.0


def pendulum_factors(fragment) -> dict[str, np.ndarray]:
    """The project's factors per step, as the platform's Pendulum sources compute them (from the observation
    before each step and the action)."""
    obs = np.asarray(fragment.obs, dtype=np.float64)[:-1]
    angle = np.arctan2(obs[:, 1], obs[:, 0])
    torque = np.clip(np.asarray(fragment.acts, dtype=np.float64).reshape(len(obs), -1)[:, 0], -MAX_TORQUE, MAX_TORQUE)
    return {"angle_sq": angle**2, "angular_velocity_sq": obs[:, 2] ** 2, "torque_sq": torque**2}


def mean_true_return(policy, venv, episodes: int) -> float:
    from imitation.data import rollout

    trajectories = rollout.generate_trajectories(
        policy, venv, rollout.make_sample_until(min_episodes=episodes), rng=np.random.default_rng(1)
    )
    return float(np.mean([traj.rews.sum() for traj in trajectories]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--username", default="researcher")
    parser.add_argument("--password", default="heronry")
    parser.add_argument("--project", default="imitation-pendulum")
    parser.add_argument("--fragment-length", type=int, default=25)
    parser.add_argument("--comparisons", type=int, default=24, help="pairs asked in total")
    parser.add_argument("--iterations", type=int, default=2, help="imitation's num_iterations")
    parser.add_argument("--timesteps", type=int, default=3072, help="policy training steps in total")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for one round's answers")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from imitation.algorithms import preference_comparisons as pc
    from imitation.data.wrappers import RolloutInfoWrapper
    from imitation.policies.base import FeedForward32Policy, NormalizeFeaturesExtractor
    from imitation.rewards.reward_nets import BasicRewardNet
    from imitation.util.networks import RunningNorm
    from imitation.util.util import make_vec_env
    from stable_baselines3 import PPO

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # small networks: one thread is faster than several fighting over two cores
    rng = np.random.default_rng(args.seed)

    def with_frames(env, _index):
        # Each step's frame (64 × 64, the project's clip size) goes into its info: the clips' video. Pendulum
        # draws at screen_dim pixels; drawing small is four times cheaper than shrinking 500 × 500 frames.
        env.unwrapped.screen_dim = 64
        return RolloutInfoWrapper(RenderFrameInfo(env, width=64, height=64))

    venv = make_vec_env(
        "Pendulum-v1", rng=rng, n_envs=2, env_make_kwargs={"render_mode": "rgb_array"}, post_wrappers=[with_frames]
    )
    reward_net = BasicRewardNet(venv.observation_space, venv.action_space, normalize_input_layer=RunningNorm)
    agent = PPO(
        policy=FeedForward32Policy,
        policy_kwargs={"features_extractor_class": NormalizeFeaturesExtractor,
                       "features_extractor_kwargs": {"normalize_class": RunningNorm}},
        env=venv,
        seed=args.seed,
        n_steps=512,
        batch_size=64,
        n_epochs=4,
        learning_rate=2e-3,
        gamma=0.97,
        device="cpu",
    )  # fmt: skip
    trajectory_generator = pc.AgentTrainer(
        algorithm=agent, reward_fn=reward_net, venv=venv, exploration_frac=0.05, rng=rng
    )
    rounds: list[np.ndarray] = []

    class RecordingGatherer(HeronryPreferenceGatherer):
        """Keeps each round's preferences for the summary below."""

        def __call__(self, fragment_pairs):
            preferences = super().__call__(fragment_pairs)
            rounds.append(preferences)
            return preferences

    with Client.login(args.url, args.username, args.password) as api:
        gatherer = RecordingGatherer(
            api,
            args.project,
            factors=pendulum_factors,
            timeout=args.timeout,
            poll_interval=1.0,
            progress=lambda done, total: print(f"  answered {done} of {total}", flush=True),
        )
        comparisons = pc.PreferenceComparisons(
            trajectory_generator,
            reward_net,
            num_iterations=args.iterations,
            fragmenter=pc.RandomFragmenter(warning_threshold=0, rng=rng),
            preference_gatherer=gatherer,
            reward_trainer=pc.BasicRewardTrainer(
                preference_model=pc.PreferenceModel(reward_net),
                loss=pc.CrossEntropyRewardLoss(),
                epochs=3,
                rng=rng,
            ),
            fragment_length=args.fragment_length,
            transition_oversampling=1,
            initial_comparison_frac=0.25,
            allow_variable_horizon=False,
            initial_epoch_multiplier=4,
            query_schedule="hyperbolic",
        )
        answered_only(comparisons)  # unanswered pairs (NaN) stay out of the reward model's data
        result = comparisons.train(total_timesteps=args.timesteps, total_comparisons=args.comparisons)

    gathered = np.concatenate(rounds) if rounds else np.zeros(0, dtype=np.float32)
    answered = gathered[~np.isnan(gathered)]
    print(f"preferences gathered: {len(gathered)} pairs in {len(rounds)} rounds, {len(answered)} answered")
    for index, preferences in enumerate(rounds):
        shown = ["—" if np.isnan(p) else f"{p:g}" for p in preferences]
        print(f"  round {index}: {' '.join(shown)}")
    print(f"  first fragment preferred {int((answered == 1).sum())}, second {int((answered == 0).sum())}, "
          f"ties (0.5) {int((answered == 0.5).sum())}")  # fmt: skip
    print(f"dataset: {len(comparisons.dataset)} comparisons")
    print(
        f"imitation's result: reward loss {result['reward_loss']:.4f}, reward accuracy {result['reward_accuracy']:.3f}"
    )
    plain = make_vec_env("Pendulum-v1", rng=np.random.default_rng(args.seed + 1), n_envs=2)
    print(f"mean true return of the trained policy: {mean_true_return(agent, plain, 4):.1f} (random: about -1200)")
    return 0 if len(answered) > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
