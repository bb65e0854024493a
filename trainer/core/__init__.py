"""The Django-free core of the trainer: importable from a plain script, a notebook or a benchmark.

HERON (``heron``), reward models in torch (``reward``), policy training with SB3 (``policy``), environment
presets and their factor extractors (``envs``), rollouts (``rollouts``), clip video (``video``), synthetic
teachers (``oracle``), active query selection (``query_selection``), scripted policies (``scripted``), the
loop's settings (``loop_settings``) and small pure helpers (``features``, ``jsonsafe``).

Nothing here imports Django, DRF, Celery, ``labeling``, ``accounts`` or the Django side of ``trainer``;
import-linter checks that (``lint-imports``, contracts in pyproject.toml). The Django side (models, Celery
tasks, the loop's state machine and steps, API, admin) sits beside this package in ``trainer/``.
"""
