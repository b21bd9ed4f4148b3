"""JobSpec files: TOML and YAML, one section per backend, clear errors for typos."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftkit import ConfigError, JobSpec, get_backend, register_backend
from ftkit.testing import FakeBackend

TOML = """
task = "classification"
train = "train.jsonl"
labels = ["ham", "spam"]
backend = "hf"

[hyperparameters]
epochs = 2
seed = 7

[hf]
model = "smollm2-135m"
lora_r = 8

[openai]
model = "gpt-4.1-mini-2025-04-14"
hyperparameters = { epochs = 3 }
"""


def test_toml_sections_switch_backends(tmp_path: Path) -> None:
    cfg = tmp_path / "ftkit.toml"
    cfg.write_text(TOML)
    spec = JobSpec.from_file(cfg)
    assert spec.backend == "hf" and spec.train == tmp_path / "train.jsonl"
    hf, hf_opts = spec.for_backend("hf")
    assert hf.model == "smollm2-135m" and hf_opts == {"lora_r": 8} and hf.hyperparameters.epochs == 2
    oa, oa_opts = JobSpec.from_file(cfg, backend="openai").for_backend("openai")
    assert oa.backend == "openai" and oa.model == "gpt-4.1-mini-2025-04-14" and oa_opts == {}
    assert oa.hyperparameters.epochs == 3 and oa.hyperparameters.seed == 7


def test_yaml_equivalent(tmp_path: Path) -> None:
    cfg = tmp_path / "ftkit.yaml"
    cfg.write_text("task: chat\ntrain: data/t.jsonl\nhyperparameters:\n  learning_rate: 0.0002\nhf:\n  lora_r: 4\n")
    spec = JobSpec.from_file(cfg)
    assert spec.task == "chat" and spec.hyperparameters.learning_rate == 2e-4
    assert spec.backend_options == {"hf": {"lora_r": 4}}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('task = "classification"\ntrain = "t.jsonl"\nepochs = 3\n', "unknown key 'epochs'"),
        ('task = "summarise"\ntrain = "t.jsonl"\n', "task"),
        ('task = "chat"\ntrain = "t.jsonl"\n[hyperparameters]\nepoch = 3\n', "hyperparameters.epoch"),
        ('task = "chat"\ntrain = "t.jsonl"\nlabels = ["a", "a"]\n', "duplicates"),
        ("task = [\n", "cannot parse"),
    ],
)
def test_bad_config_names_the_problem(tmp_path: Path, text: str, needle: str) -> None:
    cfg = tmp_path / "ftkit.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=r".*") as e:
        JobSpec.from_file(cfg)
    assert needle in str(e.value) and str(cfg) in str(e.value)


def test_backend_option_typo_names_key_and_backend(tmp_path: Path) -> None:
    register_backend(FakeBackend)
    with pytest.raises(ConfigError) as e:
        get_backend("fake").parse_config({"stpes": 3})
    assert "[fake]" in str(e.value) and "stpes" in str(e.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        JobSpec.from_file(tmp_path / "nope.toml")
