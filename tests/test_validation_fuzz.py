"""No input crashes the validator: arbitrary JSON and arbitrary bytes give issues, never exceptions."""

from __future__ import annotations

import tempfile
from pathlib import Path

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftkit.data import CODES, Dataset

scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=False) | st.text(max_size=8)
keys = st.sampled_from(["messages", "role", "content", "weight", "tool_calls", "tools", "name", "text", "label",
                        "prompt", "completion", "input", "preferred_output", "non_preferred_output", "x"])
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner,
                                                                                                 max_size=5),
                           max_leaves=20)


def _validate(content: bytes, target: str | None = None) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "f.jsonl"
        path.write_bytes(content)
        report = Dataset.load(path).validate(target=target, labels=["a", "b"])
        for issue in [*report.errors, *report.warnings]:
            assert issue.code in CODES and issue.message
        assert sum(report.error_counts.values()) >= len(report.errors)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(json_values, min_size=1, max_size=6))
def test_arbitrary_json_lines(rows: list[object]) -> None:
    _validate(b"".join(orjson.dumps(r) + b"\n" for r in rows), target="openai:gpt-4.1-mini-2025-04-14")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes(data: bytes) -> None:
    _validate(data)
