"""Small file builders shared by the core tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write rows as JSONL (each row a JSON value) and return the path."""
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def chat(user: str = "Hi", answer: str = "Hello", **extra: Any) -> dict[str, Any]:
    """A valid chat example."""
    return {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}], **extra}


def spam_rows(n: int = 40) -> list[dict[str, Any]]:
    """A small, learnable classification set (two labels, distinct vocabularies)."""
    rows = []
    for i in range(n):
        if i % 2:
            rows.append({"text": f"win a free prize now call {i} claim cash", "label": "spam"})
        else:
            rows.append({"text": f"see you at lunch tomorrow {i} with the team", "label": "ham"})
    return rows
