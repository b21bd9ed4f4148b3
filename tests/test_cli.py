"""The ftkit command, run as a real subprocess: exit codes, JSON shapes, jobs from another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftkit import FineTuneJob, JobSpec, register_backend
from ftkit.backend import installed_backends
from ftkit.cli import app
from ftkit.events import Event
from ftkit.store import JobStore
from ftkit.testing import FakeBackend
from tests.helpers import chat, spam_rows, write_jsonl


def ftkit(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ftkit.cli", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_validate_ok_exit_0(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "ok.jsonl", [chat(f"q{i}") for i in range(12)])
    r = ftkit("validate", str(p), "--target", "openai:gpt-4.1-mini-2025-04-14")
    assert r.returncode == 0, r.stderr
    assert "12 examples" in r.stdout and "ok" in r.stdout


def test_validate_errors_exit_1_with_json(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"messages": [{"role": "user", "content": "x"}]}\n\n{"messages": 1}\n')
    r = ftkit("validate", str(p), "--json")
    assert r.returncode == 1
    data = json.loads(r.stdout)
    assert set(data) >= {"path", "format", "examples", "errors", "warnings"}
    assert [(e["line"], e["code"]) for e in data["errors"]] == [
        (1, "no_assistant_message"), (2, "blank_line"), (3, "messages_not_list")]
    assert all(set(e) == {"line", "code", "message"} for e in data["errors"])
    assert "Traceback" not in r.stderr


def test_missing_file_exit_2_no_traceback(tmp_path: Path) -> None:
    r = ftkit("validate", str(tmp_path / "nope.jsonl"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


def test_bad_target_exit_2(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "ok.jsonl", [chat()])
    r = ftkit("stats", str(p), "--target", "azure:x")
    assert r.returncode == 2 and "unknown target" in r.stderr


def test_stats_json_with_overlap(tmp_path: Path) -> None:
    rows = spam_rows(20)
    train = write_jsonl(tmp_path / "train.jsonl", [*rows, rows[0]])
    test = write_jsonl(tmp_path / "test.jsonl", [rows[1], {"text": "brand new", "label": "ham"}])
    r = ftkit("stats", str(train), "--test", str(test), "--target", "openai:gpt-4o-mini-2024-07-18", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["examples"] == 21 and s["duplicates"] == 1 and s["label_counts"] == {"ham": 11, "spam": 10}
    assert s["overlap"]["overlapping"] == 1 and s["overlap"]["test_lines"] == [1]
    assert s["tokenizer"] == "openai:gpt-4o-mini-2024-07-18" and s["billed_tokens_per_epoch"] == s["tokens"]["total"]


def test_convert_and_split_never_touch_input(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "cls.jsonl", spam_rows(30))
    before = src.read_bytes()
    r = ftkit("convert", str(src), "--out", str(tmp_path / "chat.jsonl"))
    assert r.returncode == 0, r.stderr
    first = json.loads((tmp_path / "chat.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert "ham, spam" in first["messages"][0]["content"]
    r = ftkit("split", str(src), "--out", str(tmp_path / "parts"), "--seed", "3")
    assert r.returncode == 0, r.stderr
    assert src.read_bytes() == before
    r2 = ftkit("convert", str(src), "--out", str(src))
    assert r2.returncode == 2 and "refusing to overwrite" in r2.stderr


PLUGIN_ENV = {"PYTHONPATH": str(Path(__file__).parents[1])}
RUN = (
    "import ftkit, ftkit.cli as c; from ftkit.testing import FakeBackend; "
    "ftkit.register_backend(FakeBackend); c.main()"
)


def test_jobs_status_events_cancel_from_another_process(tmp_path: Path) -> None:
    register_backend(FakeBackend)
    spec = JobSpec(task="classification", train=write_jsonl(tmp_path / "t.jsonl", spam_rows()))
    done = FineTuneJob.create(spec, backend="fake", options={"steps": 2, "seconds_per_step": 0.01})
    done.start()
    done.wait(timeout=30)
    running = FineTuneJob.create(spec, backend="fake", options={"steps": 1000, "seconds_per_step": 1})
    running.start()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **PLUGIN_ENV})

    r = cli("jobs", "--costs")
    assert r.returncode == 0 and done.id in r.stdout and running.id in r.stdout and "0.0020" in r.stdout
    r = cli("status", done.id, "--json")
    assert json.loads(r.stdout)["status"] == "succeeded"
    r = cli("events", done.id, "--json")
    kinds = [json.loads(line)["kind"] for line in r.stdout.splitlines()]
    assert kinds.count("metrics") == 2 and "cost" in kinds
    r = cli("cancel", running.id)
    assert r.returncode == 0 and "cancelled" in r.stdout
    r = cli("events", running.id, "--follow")
    assert r.returncode == 0 and "cancelled" in r.stdout
    r = cli("status", "ftk-nope")
    assert r.returncode == 2 and "no job" in r.stderr


def test_backends_lists_installed(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", RUN, "backends", "--json"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **PLUGIN_ENV, "FTKIT_BACKENDS": "fake"})
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)
    caps = row.pop("capabilities")
    assert row == {"name": "fake", "version": None, "distribution": None,
                   "status": "in-process test double (naive Bayes)", "can": "classification"}
    assert caps["tasks"] == ["classification"] and caps["supports_pause"] is False


def test_backends_shows_what_each_can_do(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-c", RUN, "backends"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, **PLUGIN_ENV, "FTKIT_BACKENDS": "fake,openai"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    can = {lines[i - 1].split(":")[0]: line.strip() for i, line in enumerate(lines) if line.startswith("  can:")}
    assert can["fake"] == "can: classification", r.stdout
    assert "pause/resume" in can["openai"] and "attach" in can["openai"] and "preference" in can["openai"]


@pytest.mark.parametrize("cmd", [["--help"], ["validate", "--help"], ["jobs", "--help"]])
def test_help(cmd: list[str]) -> None:
    assert ftkit(*cmd).returncode == 0


def test_status_rounds_its_numbers(tmp_path: Path) -> None:
    """Before: ``train_loss 0.36787944117144233``; the loss and the costs are rounded for people."""
    register_backend(FakeBackend)
    spec = JobSpec(task="classification", train=write_jsonl(tmp_path / "t.jsonl", spam_rows()))
    job = FineTuneJob.create(spec, backend="fake", options={"steps": 3, "seconds_per_step": 0.01,
                                                            "usd_per_step": 0.0012345})  # fmt: skip
    job.start()
    job.wait(timeout=30)
    JobStore().add_events(job.id, [Event(kind="metrics", data={"step": 3, "total_steps": 3, "train_loss": 1 / 3,
                                                                "valid_loss": float("nan")})])  # fmt: skip
    res = CliRunner().invoke(app, ["status", job.id])
    assert res.exit_code == 0, res.output
    assert "step 3/3  train_loss 0.3333  valid_loss nan" in res.output
    assert "estimate: $0.0037" in res.output and "actual cost: $0.0037" in res.output
    assert "0.33333" not in res.output


def test_version_lists_ftkit_and_backends() -> None:
    import ftkit

    r = subprocess.run([sys.executable, "-c", RUN, "--version"], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **PLUGIN_ENV})  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == f"ftkit {ftkit.__version__}"
    assert "  fake: registered in-process" in lines
    for name, info in installed_backends().items():
        if info.distribution:
            assert f"  {name}: {info.distribution} {info.version}" in lines
