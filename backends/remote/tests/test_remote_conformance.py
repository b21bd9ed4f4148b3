"""The remote backend passes ftkit's BackendConformance: the real ftkit-hf worker on an emulated rented machine.

The provider is the vast.ai emulator, the machine an SSH sandbox on loopback, the model the tiny random
Llama of test_remote_e2e (so a run takes seconds); every run must also leave no machine behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ftkit_remote.emulators.common import EmulatorServer
from remote_testkit import remote_options
from test_remote_e2e import tiny_llama  # noqa: F401 - the fixture

from ftkit.spec import JobSpec
from ftkit.testing import BackendConformance

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


class TestRemoteConformance(BackendConformance):
    backend = "remote"
    wait_timeout = 300.0

    @pytest.fixture(autouse=True)
    def _machine(self, vast: EmulatorServer, data_file: Path, tiny_llama: Path) -> Iterator[None]:  # noqa: F811
        self.options: dict[str, Any] = remote_options(  # type: ignore[misc]
            vast, worker_command=None, poll_interval=0.5,
            hf={"threads": 1, "max_steps": 3, "precision": "fp32", "carve_validation": False},
        )  # fmt: skip
        self.model, self.train = tiny_llama, data_file
        yield
        assert not vast.state.live(), "the conformance run left a machine running"

    def make_spec(self, tmp_path: Path) -> JobSpec:
        return JobSpec(task="classification", model=str(self.model), train=self.train, labels=["ham", "spam"],
                       hyperparameters={"epochs": 1, "batch_size": 8})  # fmt: skip
