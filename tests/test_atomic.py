"""Atomic writes leave files with the permissions the user's umask asks for."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from ftkit.atomic import atomic_write_bytes, atomic_write_text, current_umask, write_files_atomically
from ftkit.data import convert_file, split_file
from tests.helpers import spam_rows, write_jsonl


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask after a test that sets its own."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_new_file_mode_follows_the_umask(tmp_path: Path, umask: None, mask: int) -> None:
    os.umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "a.txt", "hello")
    assert mode(tmp_path / "a.txt") == 0o666 & ~mask
    write_files_atomically({tmp_path / "b.txt": b"1", tmp_path / "c.txt": b"2"})
    assert {mode(tmp_path / n) for n in ("b.txt", "c.txt")} == {0o666 & ~mask}


def test_replaced_file_keeps_its_mode(tmp_path: Path, umask: None) -> None:
    target = tmp_path / "report.json"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o640


def test_private_file_is_0600_whatever_the_umask(tmp_path: Path, umask: None) -> None:
    os.umask(0)
    atomic_write_bytes(tmp_path / "key", b"secret", private=True)
    assert mode(tmp_path / "key") == 0o600
    (tmp_path / "old-key").write_bytes(b"x")
    (tmp_path / "old-key").chmod(0o644)
    atomic_write_bytes(tmp_path / "old-key", b"secret", private=True)  # a secret is never left readable
    assert mode(tmp_path / "old-key") == 0o600


def test_command_outputs_follow_the_umask(tmp_path: Path, umask: None) -> None:
    """What ``convert`` and ``split`` write is 0644 under the usual umask (it was 0600 before)."""
    os.umask(0o022)
    src = write_jsonl(tmp_path / "all.jsonl", spam_rows(40))
    convert_file(src, tmp_path / "chat.jsonl")
    parts = split_file(src, tmp_path / "parts", seed=0)
    assert mode(tmp_path / "chat.jsonl") == 0o644
    assert {mode(p) for p in parts.values()} == {0o644}
