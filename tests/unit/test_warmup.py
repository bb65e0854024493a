"""The worker's start-up warm-up (trainer/core/warmup.py) changes no seeded result."""

from __future__ import annotations

import random
import subprocess
import sys

import numpy as np
import torch

from trainer.core.warmup import warm_up


def test_warm_up_draws_no_random_numbers():
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    warm_up()
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]


def test_warm_up_imports_what_first_use_would():
    """In a fresh interpreter: after it, a meta-device layer and an optimiser import nothing more."""
    code = (
        "import sys, torch\n"
        "from trainer.core.warmup import warm_up\n"
        "warm_up()\n"
        "before = set(sys.modules)\n"
        "layer = torch.nn.utils.skip_init(torch.nn.Linear, 4, 4)\n"
        "torch.optim.AdamW(layer.parameters())\n"
        "import pyarrow.dataset\n"
        "new = sorted(set(sys.modules) - before)\n"
        "print(new)\n"
        "assert not any(m.split('.')[0] in ('sympy', 'pandas') or m.startswith('torch._dynamo') for m in new), new\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
