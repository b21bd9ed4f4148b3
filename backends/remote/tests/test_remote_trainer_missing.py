"""Without ftkit-hf (a broken install: it is a declared dependency) the remote backend says what to install."""

from __future__ import annotations

import os
import subprocess
import sys

# ``sys.modules[name] = None`` makes every import of ftkit_hf fail as if it were not installed.
SCRIPT = """
import sys
sys.modules["ftkit_hf"] = None
from ftkit.backend import get_backend
from ftkit.errors import BackendNotFoundError
try:
    get_backend("remote")
except BackendNotFoundError as e:
    print("ERROR:", e)
"""


def test_missing_trainer_is_a_one_line_error_naming_the_install() -> None:
    env = dict(os.environ, FTKIT_BACKENDS="remote")
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    (line,) = [ln for ln in r.stdout.splitlines() if ln.startswith("ERROR:")]
    assert "pip install ftkit-hf" in line and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr
