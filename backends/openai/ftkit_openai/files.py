"""Uploading data files, reusing a file already uploaded with the same content.

OpenAI files carry no user metadata, so the content hash goes into the file name
(``ftkit-<sha256[:16]>-<name>``); before uploading, the files of the same purpose are listed and
one with that prefix and the same size is reused. Re-running a job, or training several models
on one file, uploads it once.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ftkit_openai.client import OpenAIAPI

HASH_CHARS = 16


def content_name(content: bytes, name: str) -> str:
    """The file name that records the content hash."""
    digest = hashlib.sha256(content).hexdigest()[:HASH_CHARS]
    stem = Path(name).name
    if not stem.endswith(".jsonl"):
        stem += ".jsonl"
    return f"ftkit-{digest}-{stem}"


def find_uploaded(api: OpenAIAPI, content: bytes, purpose: str) -> str | None:
    """The id of an uploaded, usable file with this content and purpose, or None."""
    prefix = content_name(content, "x")[: len("ftkit-") + HASH_CHARS + 1]
    page = api.call(api.client.files.list, purpose=purpose)
    while True:  # one request per 10,000 files; every page goes through the retry policy
        for f in page.data:
            if f.filename.startswith(prefix) and f.bytes == len(content) and getattr(f, "status", None) != "error":
                return str(f.id)
        if not page.has_next_page():
            return None
        page = api.call(page.get_next_page)


def upload(
    api: OpenAIAPI, content: bytes, name: str, purpose: str = "fine-tune", reuse: bool = True
) -> tuple[str, bool]:
    """Upload ``content`` (or reuse an identical upload). Returns ``(file_id, reused)``."""
    if reuse:
        found = find_uploaded(api, content, purpose)
        if found is not None:
            return found, True
    f = api.call(api.client.files.create, file=(content_name(content, name), content), purpose=purpose)
    return f.id, False
