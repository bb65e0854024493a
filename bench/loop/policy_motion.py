"""bench/loop/policy_motion: how the curve's HERON policies move (mean |θ̇| and |θ|), read from a curve database.

The measurement behind bench/README.md's "first iteration spins": loads each HERON project's iteration-1 and -2
policies from a ``bench/loop/curve.py`` SQLite database (``var/bench-loop-curve-<pid>.sqlite3``, kept after a run)
and plays 5 deterministic episodes each.

    .venv/bin/python -m bench.loop.policy_motion var/bench-loop-curve-<pid>.sqlite3
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    sys.path[:0] = [str(ROOT / "platform"), str(ROOT)]
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ["DATABASE_URL"] = f"sqlite:///{Path(sys.argv[1]).resolve()}"
    os.environ.setdefault("MEDIA_ROOT", str(ROOT / "var" / "bench-loop-curve-media"))
    import django

    django.setup()
    from trainer.artefacts import env_factory, policy_snapshot
    from trainer.core.policy import load_model
    from trainer.models import PolicyCheckpoint

    checkpoints = PolicyCheckpoint.objects.filter(run__project__slug__contains="heron", run__number__in=[1, 2])
    for checkpoint in checkpoints.select_related("run", "run__project").order_by("run__project_id", "run__number"):
        env = env_factory(checkpoint.run.project)()
        model = load_model(policy_snapshot(checkpoint, replay_buffer=False), env)
        rng = np.random.default_rng(0)
        speeds, angles, returns = [], [], []
        for _ in range(5):
            obs, _ = env.reset(seed=int(rng.integers(0, 2**31)))
            total, done = 0.0, False
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                speeds.append(abs(float(obs[2])))
                angles.append(abs(float(np.arctan2(obs[1], obs[0]))))
                done = terminated or truncated
            returns.append(total)
        env.close()
        print(
            f"{checkpoint.run.project.slug} iteration {checkpoint.run.number}: return {np.mean(returns):.0f}, "
            f"mean |θ̇| {np.mean(speeds):.2f} rad/s, mean |θ| {np.mean(angles):.2f} rad"
        )


if __name__ == "__main__":
    main()
