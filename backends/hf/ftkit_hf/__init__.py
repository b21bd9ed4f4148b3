"""ftkit-hf: local fine-tuning with transformers + peft behind ftkit's FineTuneJob interface."""

from __future__ import annotations

__version__ = "0.1.0"
