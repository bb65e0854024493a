"""The project's layout promises: platform/ is a plain folder, and the stdlib's `platform` is never shadowed."""

from __future__ import annotations

import platform
import subprocess
import sys
import sysconfig
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
