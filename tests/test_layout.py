"""The project's layout promises: platform/ is a plain folder, the stdlib's `platform` is never shadowed, and
imports point the way ARCHITECTURE.md says (import-linter contracts in pyproject.toml)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stdlib_platform_is_the_one_imported():
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    assert Path(platform.__file__).resolve().parent == stdlib
    assert callable(platform.python_version)


def test_platform_folder_is_not_a_package():
    assert (ROOT / "platform").is_dir()
    assert not (ROOT / "platform" / "__init__.py").exists()
    ours = [ROOT / name for name in ("platform", "labeling", "trainer", "frontend", "tests", "bench")]
    assert not [path for folder in ours for path in folder.glob("**/platform.py")]


def test_libraries_that_import_platform_still_work_with_the_project_on_sys_path():
    code = (
        "import sys; sys.path[:0] = ['platform', '.']; import platform, uuid, torch, celery, kombu, billiard; "
        "assert platform.system(); print(platform.__file__)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "site-packages" not in out.stdout and "/platform/" not in out.stdout.replace(str(ROOT), "")


def test_import_contracts_hold():
    """The layers (config → frontend → trainer → labeling → accounts) and a Django-free trainer.core.

    CI runs only `make test`, so the contracts that `make lint` checks are enforced here too."""
    lint_imports = Path(sys.executable).with_name("lint-imports")
    assert lint_imports.exists(), f"import-linter is a dev dependency; {lint_imports} is missing"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(["platform", "."])}
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_trainer_core_contract_names_the_django_free_core():
    """The core contract forbids `trainer.*`, i.e. everything in trainer/ beside core/ itself."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    core = [c for c in config["contracts"] if c.get("source_modules") == ["trainer.core"]]
    assert core and "trainer.*" in core[0]["forbidden_modules"] and "django" in core[0]["forbidden_modules"]
    assert config["include_external_packages"] is True
    assert (ROOT / "trainer" / "core" / "__init__.py").exists()


def test_trainer_core_imports_without_django():
    """At run time too: importing every core module loads neither Django, Celery nor the apps."""
    code = (
        "import sys, pkgutil, importlib; sys.path[:0] = ['platform', '.']; import trainer.core as core; "
        "[importlib.import_module(m.name) for m in pkgutil.walk_packages(core.__path__, 'trainer.core.')]; "
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in "
        "{'django', 'rest_framework', 'celery', 'config', 'accounts', 'labeling', 'frontend'} "
        "or (n.startswith('trainer.') and not n.startswith('trainer.core'))); print(bad); assert not bad, bad"
    )
    env = {key: value for key, value in os.environ.items() if key != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


LABELING_MODELS = ("Rollout", "Clip", "Query", "Lease", "Judgment")


def test_trainer_writes_labeling_tables_only_through_labeling_services():
    """Each app writes its own tables: trainer (beside its Django-free core) never creates, saves, bulk-creates,
    updates or deletes rows of labeling's Rollout, Clip, Query, Lease or Judgment itself; it calls labeling's
    services (labeling.clips, labeling.services)."""
    import re

    models = "|".join(LABELING_MODELS)
    writes = [
        re.compile(rf"\b({models})\.objects\b[^\n]*\.(create|bulk_create|get_or_create|update_or_create)\("),
        re.compile(rf"\b({models})\.objects\b[^\n]*\.(update|delete)\("),
        re.compile(rf"\b({models})\("),  # building an instance to save it
        re.compile(r"\b(clip|rollout|query|lease|judgment)s?\.save\("),
        re.compile(r"\b(clip|rollout|query|lease|judgment)s?\.(video|poster|data)\.save\("),
    ]
    offenders = []
    for path in sorted((ROOT / "trainer").rglob("*.py")):
        relative = path.relative_to(ROOT)
        if relative.parts[1] in {"core", "tests", "migrations"}:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if any(pattern.search(code) for pattern in writes):
                offenders.append(f"{relative}:{number}: {line.strip()}")
    assert not offenders, "trainer writes labeling's tables directly:\n" + "\n".join(offenders)
