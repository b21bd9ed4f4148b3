"""Every failure that reaches the command line is one clear line with a documented exit code."""

from __future__ import annotations

import errno
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner, Result

from ftkit import FineTuneJob, JobSpec, register_backend
from ftkit.errors import (
    AuthenticationError,
    BackendNotFoundError,
    ConfigError,
    DatasetError,
    EvaluationError,
    JobFailedError,
    JobNotFoundError,
    RateLimitError,
)
from ftkit.testing import FakeBackend
from tests.helpers import spam_rows, write_jsonl

CHAT_TOML = 'task = "chat"\ntrain = "t.jsonl"\n'


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    from ftkit.cli import app

    return CliRunner().invoke(app, list(args), env=env)


def one_line(r: Result) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def test_a_config_that_is_not_utf8(tmp_path: Path) -> None:
    cfg = tmp_path / "ftkit.toml"
    cfg.write_bytes(b'task = "chat"\n# caf\xe9 in Latin-1\n')
    r = run("train", str(cfg))
    assert r.exit_code == 2
    assert one_line(r) == f"error: {cfg}:2: not UTF-8 (byte 0xe9 at offset 19)"


@pytest.mark.parametrize(
    ("name", "text"),
    [("deep.toml", "a = " + "[" * 5000 + "]" * 5000), ("deep.yaml", "a: " + "[" * 5000 + "]" * 5000)],
)
def test_a_config_nested_too_deeply(tmp_path: Path, name: str, text: str) -> None:
    cfg = tmp_path / name
    cfg.write_text(text)
    r = run("estimate", "--config", str(cfg))
    assert r.exit_code == 2 and one_line(r) == f"error: {cfg}: cannot parse: nested too deeply"


def test_deeply_nested_json_in_a_data_file(tmp_path: Path) -> None:
    # Deeper than orjson reads (1024 levels): the line is reported, not a RecursionError.
    data = tmp_path / "deep.jsonl"
    data.write_text('{"text": ' + "[" * 5000 + "]" * 5000 + ', "label": "a"}\n')
    r = run("split", str(data), "--out", str(tmp_path / "out"))
    assert r.exit_code == 1 and f"{data}:1: invalid_json" in one_line(r) and "depth" in r.stderr
    r = run("convert", str(data), "--out", str(tmp_path / "chat.jsonl"))
    assert r.exit_code == 1 and f"{data}:1: invalid_json" in one_line(r)


def test_a_folder_where_a_file_is_expected(tmp_path: Path) -> None:
    for args in (["validate", str(tmp_path)], ["train", str(tmp_path)], ["estimate", "--data", str(tmp_path)]):
        r = run(*args)
        assert r.exit_code == 2, args
        assert one_line(r) == f"error: {tmp_path}: is a folder, not a file"
    r = run("split", str(write_jsonl(tmp_path / "t.jsonl", spam_rows())), "--out", str(tmp_path / "t.jsonl"))
    assert r.exit_code == 2 and "is a file; --out takes a folder" in one_line(r)


def test_a_section_that_names_no_backend_suggests_one(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "t.jsonl", spam_rows())
    cfg = tmp_path / "ftkit.toml"
    cfg.write_text(CHAT_TOML + "[hff]\nlora_r = 4\n")
    for args in (["train", str(cfg)], ["estimate", "--config", str(cfg)]):
        r = run(*args)
        assert r.exit_code == 2, args
        assert "[hff] names no installed backend and no known table; did you mean [hf]?" in one_line(r)
    with pytest.raises(ConfigError, match=r"did you mean \[hf\]"):
        FineTuneJob.create(cfg)
    register_backend(FakeBackend)
    built = JobSpec(task="classification", train=tmp_path / "t.jsonl", backend_options={"fkae": {"steps": 2}})
    with pytest.raises(ConfigError, match=r"^\[fkae\] names no installed backend.*did you mean \[fake\]\?"):
        FineTuneJob.create(built, backend="fake")  # a spec built in Python is checked at create time
    cfg.write_text(CHAT_TOML + "[hyperparameter]\nepochs = 2\n")
    assert "did you mean [hyperparameters]?" in one_line(run("train", str(cfg)))
    # Known backends (installed or not) and the [costs] table are fine; the typo check is not a guess.
    cfg.write_text(CHAT_TOML + "[hf]\nlora_r = 4\n[openai]\n[remote]\n[costs]\nusd_per_kwh = 0.3\n")
    assert JobSpec.from_file(cfg).backend_options.keys() == {"hf", "openai", "remote", "costs"}


def test_a_registry_that_is_not_a_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "jobs.sqlite").write_bytes(b"this is not an SQLite file" * 100)
    r = run("jobs", env={"FTKIT_HOME": str(home)})
    assert r.exit_code == 4
    assert one_line(r) == f"error: the job registry in {home} failed: file is not a database"


def test_a_home_that_cannot_be_written() -> None:
    # sysfs refuses new folders (EPERM, or EROFS where it is mounted read-only): a real refusal, no root tricks.
    home = "/sys/ftkit-home"
    if not os.path.isdir("/sys") or os.path.exists(home):
        pytest.skip("no sysfs here")
    r = run("jobs", env={"FTKIT_HOME": home})
    assert r.exit_code == 4
    assert one_line(r).startswith(f"error: {home}: ")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.jsonl")
    for r in (run("--debug", "validate", missing), run("validate", missing, env={"FTKIT_DEBUG": "1"})):
        assert r.exit_code == 2
        assert "Traceback (most recent call last)" in r.stderr and "DatasetError" in r.stderr
        assert r.stderr.strip().splitlines()[-1] == f"error: {missing}: no such file"
    assert "Traceback" not in run("validate", missing, env={"FTKIT_DEBUG": "0"}).stderr


def test_usage_errors_stay_typers_and_exit_2() -> None:
    r = run("validate", "--no-such-option")
    assert r.exit_code == 2 and "No such option" in r.stderr


def test_the_handler_covers_commands_mounted_later() -> None:
    # The handler is the app's group, so a plugin's command (mounted through the ftkit.cli entry
    # points) gets it too: here a bug (exit 70) and a backend failure (exit 3).
    from ftkit.cli_errors import FtkitGroup

    app = typer.Typer(cls=FtkitGroup)
    sub = typer.Typer()

    @sub.command()
    def boom() -> None:
        raise RuntimeError("unexpected\nstate")

    @sub.command()
    def refused() -> None:
        raise AuthenticationError("the provider refused the key")

    app.add_typer(sub, name="plugin")
    r = CliRunner().invoke(app, ["plugin", "boom"])
    assert r.exit_code == 70
    assert one_line(r) == (
        "error: internal error: RuntimeError: unexpected state "
        "(a bug in ftkit; run with FTKIT_DEBUG=1 for the traceback and report it)"
    )
    r = CliRunner().invoke(app, ["plugin", "refused"])
    assert r.exit_code == 3 and one_line(r) == "error: the provider refused the key"


def _unicode_error() -> UnicodeDecodeError:
    try:
        b"ok \xff".decode("utf-8")
    except UnicodeDecodeError as e:
        return e
    raise AssertionError


def _caused(exc: Exception, cause: BaseException) -> Exception:
    exc.__cause__ = cause
    return exc


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (DatasetError("t.jsonl:3: invalid_json"), 1),
        (EvaluationError("p.jsonl:2: invalid JSON"), 1),
        (_unicode_error(), 1),
        (RecursionError("maximum recursion depth exceeded"), 1),
        (ConfigError("ftkit.toml: unknown key"), 2),
        (BackendNotFoundError("no backend named 'hff'"), 2),
        (JobNotFoundError("no job 'ftk-x'"), 2),
        (_caused(DatasetError("t.jsonl: no such file"), FileNotFoundError(errno.ENOENT, "No such file")), 2),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "x.jsonl"), 2),
        (AuthenticationError("key refused"), 3),
        (RateLimitError("429"), 3),
        (JobFailedError("job failed"), 3),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connection refused"), 3),
        (OSError(errno.ENOSPC, "No space left on device", "/data/out.jsonl"), 4),
        (OSError(errno.EROFS, "Read-only file system", "/home/u/.ftkit"), 4),
        (PermissionError(errno.EACCES, "Permission denied", "/home/u/.ftkit"), 4),
        (_caused(DatasetError("t.jsonl: cannot open"), PermissionError(errno.EACCES, "Permission denied")), 4),
        (sqlite3.OperationalError("database is locked"), 4),
        (MemoryError(), 4),
        (KeyError("x"), 70),
        (KeyboardInterrupt(), 130),
    ],
)
def test_exit_codes(exc: BaseException, code: int) -> None:
    from ftkit.cli_errors import classify

    got, line = classify(exc)
    assert got == code and "\n" not in line and line


def test_ctrl_c_is_exit_130_in_one_line(tmp_path: Path) -> None:
    register_backend(FakeBackend)
    spec = JobSpec(task="classification", train=write_jsonl(tmp_path / "t.jsonl", spam_rows()))
    job = FineTuneJob.create(spec, backend="fake", options={"steps": 1000, "seconds_per_step": 1})
    job.start()
    run_cli = (
        "import ftkit, ftkit.cli as c; from ftkit.testing import FakeBackend; "
        "ftkit.register_backend(FakeBackend); c.main()"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", run_cli, "events", job.id, "--follow"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )  # fmt: skip
    assert p.stdout is not None
    assert "created" in p.stdout.readline()  # following: the first event is out
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and err.strip() == "interrupted", err
    job.cancel()
