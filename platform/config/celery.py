"""The Celery application. Workers start with ``celery -A config worker`` with platform/ on sys.path."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_PLATFORM_DIR = str(Path(__file__).resolve().parent.parent)
if _PLATFORM_DIR not in sys.path:  # entry points other than manage.py (celery CLI, gunicorn)
    sys.path.insert(0, _PLATFORM_DIR)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from celery import Celery, signals  # noqa: E402

app = Celery("heronry")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


def ensure_broker_folders() -> None:
    """The file-system broker needs its folders before the first message is sent or read."""
    from django.conf import settings

    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        folder = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get(key)
        if folder:
            Path(str(folder)).mkdir(parents=True, exist_ok=True)


@signals.worker_init.connect
@signals.worker_process_init.connect
def _torch_threads(**kwargs: object) -> None:
    """Torch's intra-op threads per worker process (``TORCH_NUM_THREADS``, default 1).

    torch defaults to one thread per core. With more runnable processes than cores (several workers, a
    busy host) its OpenMP threads spin waiting for each other: on this project's 2-core machine under load,
    reward training took 89 CPU seconds with 2 threads and 3.8 with 1 (bench/README.md, the loop section).
    Scale a deployment with worker processes instead. Configs that name their own thread count (the policy's
    ``num_threads``, a reward config's ``num_threads``) still apply theirs for their duration.
    """
    import torch
    from django.conf import settings

    torch.set_num_threads(int(str(settings.HERONRY["TORCH_NUM_THREADS"])))


@signals.worker_init.connect
def _preload_step_modules(**kwargs: object) -> None:
    """Import what the run steps use (torch, Stable-Baselines3, gymnasium, the renderers) when the worker starts.

    The steps import them lazily, so a fresh worker's first step paid ~1–2 s of imports inside a loop iteration,
    and with the prefork pool every child paid it again; imported here, in the main process before the pool forks,
    the children inherit them (bench/README.md, the loop's end-to-end section)."""
    import django

    django.setup()  # idempotent: Celery's Django fixup may have run it already
    import trainer.loop_steps  # noqa: F401
    from trainer.core.warmup import warm_up

    warm_up()  # and the imports torch and pyarrow make on first use
