"""The client's tests use the installed heronry_client (``make install`` installs ./client); a checkout whose
virtualenv predates that still finds the package in client/."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

CLIENT_DIR = Path(__file__).resolve().parents[2] / "client"

if importlib.util.find_spec("heronry_client") is None:
    sys.path.insert(0, str(CLIENT_DIR))
