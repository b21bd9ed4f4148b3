"""Nothing the user owns is overwritten or silently dropped by a command that writes files."""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ftkit import ConfigError
from ftkit.data import convert_file, split_file
from ftkit.evaluate import write_predictions
from ftkit.evaluate.predictions import Prediction
from tests.helpers import spam_rows, write_jsonl


def run(*args: str) -> Result:
    from ftkit.cli import app

    return CliRunner().invoke(app, list(args))


def one_line(r: Result) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def is_device(path: str) -> bool:
    return os.path.exists(path) and stat.S_ISCHR(os.stat(path).st_mode)


def files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def test_split_checks_every_part_before_writing_the_first(tmp_path: Path) -> None:
    # The reported case: the input is DIR/test.jsonl, and DIR/train.jsonl is the user's own file.
    out = tmp_path / "data"
    out.mkdir()
    (out / "train.jsonl").write_bytes(b"my own train file\n")
    write_jsonl(out / "test.jsonl", spam_rows(30))
    before = files(out)
    for extra in ([], ["--force"]):  # --force never replaces the input, so nothing may be written
        r = run("split", str(out / "test.jsonl"), "--out", str(out), *extra)
        assert r.exit_code == 2
        assert files(out) == before, extra
    assert "refusing to overwrite the input file" in one_line(r)


def test_split_and_convert_refuse_existing_outputs_without_force(tmp_path: Path) -> None:
    src = write_jsonl(tmp_path / "all.jsonl", spam_rows(30))
    out = tmp_path / "parts"
    out.mkdir()
    (out / "validation.jsonl").write_bytes(b"keep me\n")
    r = run("split", str(src), "--out", str(out))
    assert r.exit_code == 2 and "validation.jsonl: already exists" in one_line(r) and "--force" in r.stderr
    assert files(out) == {"validation.jsonl": b"keep me\n"}  # train.jsonl was not written either
    r = run("split", str(src), "--out", str(out), "--force")
    assert r.exit_code == 0, r.output
    assert sorted(files(out)) == ["test.jsonl", "train.jsonl", "validation.jsonl"]
    assert files(out)["validation.jsonl"] != b"keep me\n"

    chat = tmp_path / "chat.jsonl"
    chat.write_bytes(b"mine\n")
    r = run("convert", str(src), "--out", str(chat))
    assert r.exit_code == 2 and "already exists" in one_line(r) and chat.read_bytes() == b"mine\n"
    assert run("convert", str(src), "--out", str(chat), "--force").exit_code == 0
    assert len(chat.read_text().splitlines()) == 30
    with pytest.raises(ConfigError, match="already exists"):
        convert_file(src, chat)  # the Python API refuses too, unless force=True
    with pytest.raises(ConfigError, match="already exists"):
        split_file(src, out)


@pytest.mark.parametrize(
    ("bad", "code"),
    [(b"{not json\n", "invalid_json"), (b"[1, 2]\n", "not_an_object"), (b"\xff\xfe{}\n", "invalid_utf8")],
)
def test_split_stops_at_a_line_it_cannot_parse(tmp_path: Path, bad: bytes, code: str) -> None:
    src = tmp_path / "all.jsonl"
    good = [json.dumps(r).encode() + b"\n" for r in spam_rows(30)]
    src.write_bytes(b"".join([*good[:15], bad, *good[15:]]))
    line = 16
    r = run("split", str(src), "--out", str(tmp_path / "out"))
    assert r.exit_code == 1
    assert one_line(r).startswith(f"error: {src}:{line}: {code}")
    assert not (tmp_path / "out").exists()


def test_convert_reports_every_bad_line_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "cls.jsonl"
    rows = [json.dumps(r).encode() for r in spam_rows(20)]
    src.write_bytes(b"\n".join([*rows[:5], b"{oops", *rows[5:], b"[1]"]) + b"\n")
    r = run("convert", str(src), "--out", str(tmp_path / "chat.jsonl"))
    assert r.exit_code == 1
    assert f"{src}:6: invalid_json" in one_line(r) and "and 1 more" in r.stderr
    assert not (tmp_path / "chat.jsonl").exists()


def test_split_copies_every_example_byte_for_byte(tmp_path: Path) -> None:
    # Nested deeper than orjson writes (255 levels), keys out of order, numbers as the user wrote them.
    deep = "[" * 300 + "]" * 300
    lines = [f'{{"text": "t{i}", "score": 1.50, "label": "{"ab"[i % 2]}", "meta": {deep}}}' for i in range(40)]
    src = tmp_path / "all.jsonl"
    src.write_text("\n".join(lines) + "\n")
    r = run("split", str(src), "--out", str(tmp_path / "out"), "--seed", "4")
    assert r.exit_code == 0, r.output
    written = [ln for p in sorted((tmp_path / "out").iterdir()) for ln in p.read_text().splitlines()]
    assert sorted(written) == sorted(lines)


def test_eval_checks_every_output_before_the_model_runs(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "test.jsonl", spam_rows(20))
    preds = tmp_path / "preds.jsonl"
    write_predictions(preds, [Prediction(label=r["label"]) for r in spam_rows(20)], [None] * 20)
    saved = tmp_path / "saved.jsonl"
    saved.write_bytes(b"an earlier run's predictions\n")
    html = tmp_path / "report.html"
    args = ["eval", "--predictions", str(preds), "--data", str(data), "--bootstrap", "0"]
    r = run(*args, "--html", str(html), "--save-predictions", str(saved))
    assert r.exit_code == 2 and "saved.jsonl: already exists" in one_line(r)
    assert saved.read_bytes() == b"an earlier run's predictions\n" and not html.exists()
    r = run(*args, "--html", str(data))
    assert r.exit_code == 2 and "refusing to overwrite the input file" in one_line(r)
    r = run(*args, "--html", str(html), "--save-predictions", str(html))
    assert r.exit_code == 2 and "same file" in one_line(r)
    r = run(*args, "--html", str(html), "--save-predictions", str(saved), "--force")
    assert r.exit_code == 0, r.output
    assert html.read_text().startswith("<!") and saved.read_bytes() != b"an earlier run's predictions\n"
    r = run("compare", str(preds), str(saved), "--data", str(data), "--bootstrap", "0", "--html", str(html))
    assert r.exit_code == 2 and "report.html: already exists" in one_line(r)


def test_a_full_disk_is_one_line_exit_4(tmp_path: Path) -> None:
    # /dev/full answers every write with ENOSPC. A link to it keeps the test harmless even if
    # a regression renamed a temporary file over the target: the link would be replaced, not /dev/full.
    if not is_device("/dev/full"):
        pytest.skip("no /dev/full here")
    src = write_jsonl(tmp_path / "cls.jsonl", spam_rows(20))
    target = tmp_path / "chat.jsonl"
    target.symlink_to("/dev/full")
    r = run("convert", str(src), "--out", str(target))
    assert r.exit_code == 4
    assert one_line(r) == (
        "error: /dev/full: No space left on device (the disk is full; free some space and run it again)"
    )
    assert target.is_symlink() and is_device("/dev/full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.jsonl", "cls.jsonl"]


def test_a_file_size_limit_leaves_no_part_and_no_temporary_file(tmp_path: Path) -> None:
    # A real write failure on a real file: the kernel refuses to grow a file past RLIMIT_FSIZE
    # (EFBIG; Python ignores SIGXFSZ). The split's largest part is far over the limit.
    src = write_jsonl(tmp_path / "all.jsonl", spam_rows(400))
    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    r = subprocess.run(
        [sys.executable, "-m", "ftkit.cli", "split", str(src), "--out", str(out)],
        capture_output=True, text=True, timeout=120, preexec_fn=limit,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert r.returncode == 4, r.stderr
    assert r.stderr.strip() == (
        f"error: {out / 'train.jsonl'}: File too large (the file is larger than this process may write (ulimit -f))"
    )
    assert files(out) == {}
