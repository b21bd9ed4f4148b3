"""The hf backend passes ftkit's BackendConformance: a real run and a cancel on the tiny Llama, and its capabilities."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from ftkit.spec import JobSpec
from ftkit.testing import BackendConformance

pytestmark = pytest.mark.slow


class TestHFConformance(BackendConformance):
    backend = "hf"
    options: ClassVar[dict[str, Any]] = {"device": "cpu", "precision": "fp32", "threads": 1, "max_steps": 3,
                                         "batch_tokens": 512}  # fmt: skip
    wait_timeout = 300.0

    @pytest.fixture(autouse=True)
    def _tiny_model(self, tiny_llama_dir: Path, spam_files: dict[str, Path]) -> None:
        self.model, self.train = tiny_llama_dir, spam_files["train"]

    def make_spec(self, tmp_path: Path) -> JobSpec:
        return JobSpec(task="classification", model=str(self.model), train=self.train, labels=["ham", "spam"],
                       hyperparameters={"epochs": 1, "learning_rate": 1e-3})  # fmt: skip
