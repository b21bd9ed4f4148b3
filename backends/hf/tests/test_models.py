"""Model resolution: defaults, local folders, and clear errors instead of tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
from ftkit_hf.models import is_converted, resolve_model

from ftkit.errors import ConfigError


def test_default_models_resolve_to_local_folders(smollm2_dir: Path):
    assert is_converted(smollm2_dir)
    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / "tokenizer.json").is_file()
    assert resolve_model("SmolLM2-135M-Instruct").path == smollm2_dir
    enc = resolve_model("all-minilm-l6-v2")
    assert enc.kind == "encoder" and (enc.path / "config.json").is_file()


def test_missing_model_path_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match="model path not found"):
        resolve_model(str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="model path not found"):
        resolve_model("./missing-folder")


def test_folder_without_config_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"no config\.json"):
        resolve_model(str(tmp_path))


def test_hub_id_offline_and_not_cached_is_refused_with_instructions():
    # HF_HUB_OFFLINE=1 (conftest) and a model no cache holds: the real huggingface_hub lookup fails offline.
    with pytest.raises(ConfigError, match=r"^model 'Qwen/Qwen2\.5-0\.5B-Instruct' is not in the local Hugging Face "
                                          r"cache and HF_HUB_OFFLINE is set: pass a local folder"):
        resolve_model("Qwen/Qwen2.5-0.5B-Instruct")


def test_unknown_bare_name():
    with pytest.raises(ConfigError, match=r"unknown model 'llama-99'"):
        resolve_model("llama-99")


def test_openai_model_name_points_to_migration():
    # An attached OpenAI job's spec passed to the hf backend as it is.
    with pytest.raises(ConfigError, match=r"'gpt-4.1-mini-2025-04-14' is an OpenAI model.*ftkit migrate"):
        resolve_model("gpt-4.1-mini-2025-04-14")
