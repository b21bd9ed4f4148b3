"""The fine-tuning results file (``result_files[0]``): a per-step CSV, sometimes base64-encoded.

Documented columns are ``step, train_loss, train_accuracy, valid_loss, valid_mean_token_accuracy``;
newer files may add ``full_valid_*`` and Azure writes ``train_mean_token_accuracy``. Columns are
read by header name; extra or missing columns are tolerated and empty cells are left out.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
from typing import Any

# Column names normalised to the names OpenAI's metrics events use.
_ALIASES = {"train_accuracy": "train_mean_token_accuracy", "valid_accuracy": "valid_mean_token_accuracy"}


def decode_results(content: bytes) -> str:
    """The CSV text of a results file, decoding base64 when the content is base64."""
    stripped = content.strip()
    if not stripped.startswith(b"step"):
        try:
            decoded = base64.b64decode(stripped, validate=True)
            if decoded.lstrip().startswith(b"step"):
                return decoded.decode("utf-8")
        except (binascii.Error, ValueError):
            pass
    return content.decode("utf-8", errors="replace")


def parse_results(content: bytes) -> list[dict[str, Any]]:
    """Rows of a results file as dicts of numbers (``step`` an int), oldest step first."""
    rows = []
    for raw in csv.DictReader(io.StringIO(decode_results(content))):
        row: dict[str, Any] = {}
        for key, value in raw.items():
            if key is None or value is None or value.strip() == "":
                continue
            name = _ALIASES.get(key.strip(), key.strip())
            try:
                number = float(value)
            except ValueError:
                continue
            row[name] = int(number) if name == "step" else number
        if "step" in row:
            rows.append(row)
    return sorted(rows, key=lambda r: r["step"])
