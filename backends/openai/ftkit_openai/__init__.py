"""ftkit backend for OpenAI hosted fine-tuning, and a loopback emulator of the API.

``FineTuneJob.create(spec, backend="openai")`` trains on OpenAI (supervised or DPO);
``FineTuneJob.attach("ftjob-...", backend="openai")`` follows a job created elsewhere.
``python -m ftkit_openai.emulator`` serves the API on loopback for tests and dry runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ftkit_openai.backend import OpenAIBackend
    from ftkit_openai.config import OpenAIConfig
    from ftkit_openai.predictor import OpenAIPredictor

__all__ = ["OpenAIBackend", "OpenAIConfig", "OpenAIPredictor"]

# Imported on first use: `ftkit --help` mounts `ftkit openai ...` from this package and must not load `openai`.
_WHERE = {"OpenAIBackend": "backend", "OpenAIConfig": "config", "OpenAIPredictor": "predictor"}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"ftkit_openai.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'ftkit_openai' has no attribute {name!r}")
