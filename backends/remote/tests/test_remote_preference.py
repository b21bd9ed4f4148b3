"""Preference (DPO) jobs on the remote backend: the hf trainer's rules apply at create time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ftkit
from ftkit.errors import ConfigError


def _spec(tmp_path: Path) -> ftkit.JobSpec:
    row = {"input": {"messages": [{"role": "user", "content": "Hi"}]},
           "preferred_output": [{"role": "assistant", "content": "Hello!"}],
           "non_preferred_output": [{"role": "assistant", "content": "Go away."}]}
    train = tmp_path / "train.jsonl"
    train.write_text(json.dumps(row) + "\n", encoding="utf-8")
    return ftkit.JobSpec(task="preference", train=train)


def test_preference_is_a_remote_task_with_the_hf_trainers_rules(tmp_path: Path) -> None:
    pytest.importorskip("ftkit_hf.config")
    from ftkit_remote.backend import RemoteBackend

    backend = RemoteBackend()
    assert "preference" in backend.capabilities.tasks
    spec = _spec(tmp_path)
    ssh = {"provider": "ssh", "provider_options": {"host": "127.0.0.1"}}
    with pytest.raises(ConfigError, match=r"\[remote\.hf\] preference \(DPO\) training needs method='lora'"):
        backend.check(spec, backend.parse_config({**ssh, "hf": {"method": "full"}}))
    backend.check(spec, backend.parse_config({**ssh, "hf": {"dpo_beta": 0.2}}))
