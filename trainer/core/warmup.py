"""First-use costs of torch and pyarrow, paid when a worker starts instead of inside its first job.

Importing torch is not all: its first meta-device module (``skip_init``, which the reward networks use) imports
``torch._refs`` and SymPy, its first optimiser imports ``torch._dynamo``, and pyarrow's first parquet read imports
pandas. In a fresh worker that added ~1.3 s to the first reward training, ~0.9 s to the first policy training and
~1 s to the first rollouts of every prefork child (bench/README.md, the loop's end-to-end section). Nothing here
draws random numbers, so seeded work that follows is unchanged.
"""

from __future__ import annotations


def warm_up() -> None:
    """Run the lazily importing code paths once on a 1×1 layer."""
    import pyarrow.dataset  # noqa: F401  (pyarrow.parquet.read_table imports it, and pandas with it)
    import torch

    layer = torch.nn.utils.skip_init(torch.nn.Linear, 1, 1)  # meta-device init, no random draws
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.zero_()
    optimizer = torch.optim.AdamW(layer.parameters())
    layer(torch.zeros(1, 1)).sum().backward()
    optimizer.step()
