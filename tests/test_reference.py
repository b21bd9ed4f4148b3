"""docs/config.md is generated from the config models and must match them."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftkit.backend import installed_backends
from ftkit.reference import render

SHIPPED = {"hf", "openai", "remote"}


def test_config_reference_is_up_to_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FTKIT_BACKENDS", ",".join(sorted(SHIPPED)))
    if set(installed_backends()) != SHIPPED:
        pytest.skip("the reference is generated with all three shipped backends installed")
    doc = Path(__file__).parents[1] / "docs" / "config.md"
    assert doc.read_text() == render(), (
        "docs/config.md is stale: FTKIT_BACKENDS=hf,openai,remote python -m ftkit.reference > docs/config.md")
