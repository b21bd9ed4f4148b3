"""transformers' warnings and loading bars stay out of ftkit's output, in a log, unless --verbose."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest


def _eval(tiny: Path, data: Path, home: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FTKIT_HOME": str(home), "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("FTKIT_VERBOSE", None)
    cmd = [sys.executable, "-m", "ftkit.cli", *flags, "eval", "--base", f"hf:{tiny}", "--data", str(data),
           "--bootstrap", "0", "--json"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_eval_of_a_base_model_prints_no_library_output(tmp_path: Path, tiny_llama_dir: Path) -> None:
    """Before: ``Loading weights: 100%|...| 27/27`` bars on stderr of every command that loads a model."""
    data = tmp_path / "test.jsonl"
    data.write_text("".join(json.dumps({"text": f"t {i}", "label": "ab"[i % 2]}) + "\n" for i in range(4)))
    quiet = _eval(tiny_llama_dir, data, tmp_path / "q")
    assert quiet.returncode == 0, quiet.stderr
    assert "Loading weights" not in quiet.stderr and quiet.stderr.strip() == ""
    assert json.loads(quiet.stdout)["metrics"]["n"] == 4
    loud = _eval(tiny_llama_dir, data, tmp_path / "v", "--verbose")
    assert loud.returncode == 0, loud.stderr
    assert "Loading weights" in loud.stderr  # still there for whoever asks


def test_library_warnings_go_to_the_log(ftkit_home: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import transformers
    from ftkit_hf.quiet import _showwarning_to_log, quiet_libraries
    from transformers.utils import logging as hf_logging

    quiet_libraries()
    hf_logging.get_logger("transformers.modeling_utils").warning("probe: some weights were not initialized")
    inside = str(Path(transformers.__file__).parent / "generation" / "utils.py")
    assert getattr(warnings.showwarning, "_ftkit_quiet", False)  # what the warnings machinery calls is ours
    shown: list[str] = []
    show = _showwarning_to_log(lambda message, *rest: shown.append(str(message)))  # stands for stderr
    show("probe: a library warning", UserWarning, inside, 1)
    show("probe: the user's own warning", UserWarning, "mine.py", 1)
    for h in logging.getLogger("transformers").handlers:
        h.flush()
    assert "some weights" not in capfd.readouterr().err
    assert shown == ["probe: the user's own warning"]  # only the libraries' warnings are moved
    log = (ftkit_home / "logs" / "libraries.log").read_text()
    assert "probe: some weights were not initialized" in log and "probe: a library warning" in log
