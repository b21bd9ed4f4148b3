"""benchmarks/gpu_check.sh, the one-command GPU check, run here as its CPU dry run: what it would do on a lent GPU
machine, with every step real but tiny, so that it cannot fail on a typo when the GPU minutes come."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402  (a script folder, not a package)


def test_everything_the_check_imports_is_on_the_gpu_machine_or_carried(monkeypatch):
    assert gpu_check.missing_on_device() == []
    # The closure is really walked: a carried package left out is named (tenacity: a dependency of ftkit).
    monkeypatch.setattr(gpu_check, "CARRY", tuple(n for n in gpu_check.CARRY if n != "tenacity"))
    assert gpu_check.missing_on_device() == ["tenacity"]


def _check(tmp_path: Path) -> gpu_check.Check:
    args = argparse.Namespace(out=tmp_path / "out", device="cpu", dry_run=True, wheels=None, steps="")
    return gpu_check.Check(args)


def test_a_failing_or_hanging_step_is_recorded_and_the_summary_stays_readable(tmp_path: Path):
    check = _check(tmp_path)
    failed = check.run("tests", [sys.executable, "-c", "print('boom'); raise SystemExit(3)"], timeout=60)
    assert (failed["rc"], failed["ok"], failed["timed_out"]) == (3, False, False)
    assert (tmp_path / "out" / "tests.log").read_text().strip() == "boom"
    hung = check.run("profile", [sys.executable, "-c", "import time; time.sleep(60)"], timeout=1)
    assert hung["timed_out"] and not hung["ok"] and hung["seconds"] < 30
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"]["tests"]["rc"] == 3 and summary["steps"]["profile"]["timed_out"]
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_the_cpu_is_only_for_the_dry_run_and_steps_are_checked():
    for argv, message in ((["run", "--device", "cpu"], "--dry-run"), (["run", "--steps", "tests,typo"], "typo")):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), *argv],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and message in proc.stderr


@pytest.mark.slow
def test_dry_run_installs_the_wheels_runs_every_step_and_writes_what_comes_back(tmp_path: Path):
    # ftkit's own wheels, as `make gpu-wheels` builds them (the downloads need the network, so not here).
    built = gpu_check.build_wheels(tmp_path / "wheels", download=False)
    assert sorted(built["wheels"]) == ["ftkit-0.1.0-py3-none-any.whl", "ftkit_hf-0.1.0-py3-none-any.whl"]
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--dry-run",
                           "--wheels", str(tmp_path / "wheels")],
                          env=dict(os.environ, OUT=str(out), PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=1200)
    summary = json.loads((out / "summary.json").read_text())
    assert proc.returncode == 0 and summary["ok"], json.dumps(summary, indent=1)
    steps = summary["steps"]
    assert steps["install"]["wheels"] == sorted(built["wheels"])
    assert summary["env"]["versions"]["ftkit"] == "0.1.0" and summary["env"]["cuda"] is False
    # The backend from the installed wheel (its entry point is how jobs find it). ftkit itself imports from the
    # checkout, the working directory, which Python puts first: the same source as its wheel.
    assert "ftkit-site-" in summary["env"]["ftkit_hf_from"]
    # The GPU-marked tests ran, on the CPU; only the one about the card's memory skips there.
    assert steps["tests"]["tests"] >= 7 and steps["tests"]["skipped"] == 1 and steps["tests"]["failures"] == 0
    # ftkit and both peers trained and were measured.
    runs = {r["recipe"]: r for r in steps["throughput"]["runs"]}
    assert set(runs) == {"ftkit", "hf_dynamic", "trl_packed"}
    assert all(r["tokens_per_s"] > 0 and "error" not in r for r in runs.values())
    # One step profiled: a table and its top kernels.
    assert "Self CPU" in (out / "profile.txt").read_text()
    assert steps["profile"]["top_kernels_ms"] and steps["profile"]["memory_plan"]["predicted_total_bytes"] > 0
    # What the device tool brings back: at most 8 files, named in letters, digits, '.', '_' and '-'.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", p.name) for p in files), files
