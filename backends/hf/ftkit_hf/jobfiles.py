"""Kept for imports written before :mod:`ftkit_hf.protocol`, which now holds the job folder's contract."""

from __future__ import annotations

from ftkit_hf.protocol import TERMINAL, JobFiles

__all__ = ["TERMINAL", "JobFiles"]
