"""Starting a job from an earlier job's adapter (``start_from``): domain adaptation, then the labels.

The earlier adapter (typically from a ``task="text"`` job: continued pre-training of a decoder, masked-LM
training of an encoder) is **merged into the base weights** before the new job attaches its own fresh LoRA
adapter. Merging rather than continuing the same adapter because:

* the new job may train another model class on the same body: an encoder adapted with an MLM head becomes
  a sequence classifier, a decoder adapted as a causal LM may train a classification head; only the body's
  weights carry over, and a merged body is what both heads need;
* the new adapter keeps its own rank, targets and learning rate (the supervised job's settings), and the
  domain adaptation is not undone or stretched by the supervised updates, as in the usual "adapt, merge,
  then fine-tune" recipe (Gururangan et al. 2020, "Don't Stop Pretraining");
* the result is still one small adapter per job: the saved model holds a copy of the start adapter, and
  loading merges it into the base again before the job's own adapter (no merged base is written).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ftkit.errors import ConfigError

META = "ftkit-hf.json"
SAVED_NAME = "start_adapter"  # the copy inside a model folder trained from it


def find_adapter(start_from: str) -> Path:
    """The model folder of an hf job, from a job id, a job folder or the model folder itself.

    Raises:
        ConfigError: nothing there is an ftkit hf adapter (``adapter_config.json`` and ``ftkit-hf.json``).
    """
    p = Path(start_from).expanduser()
    if not p.exists():
        from ftkit.job import FineTuneJob

        try:
            p = FineTuneJob.get(start_from).workdir
        except Exception:  # an unknown id: the one message below says what was expected
            raise ConfigError(
                f"[hf] start_from={start_from!r} is neither a folder nor a job id in this registry"
            ) from None
    if (p / "model" / META).is_file():
        p = p / "model"
    if not ((p / META).is_file() and (p / "adapter_config.json").is_file()):
        raise ConfigError(f"[hf] start_from: {p} holds no LoRA adapter of an hf job (adapter_config.json and {META})")
    if (p / SAVED_NAME).is_dir():
        raise ConfigError(f"[hf] start_from: the job in {p} was itself started from an adapter; start from the "
                          "domain-adapted job's model instead (chains of start adapters are not supported)")
    return p.resolve()


def check_base(adapter: Path, base: Path) -> dict[str, Any]:
    """The adapter's metadata, after checking it was trained on ``base``."""
    meta: dict[str, Any] = json.loads((adapter / META).read_text(encoding="utf-8"))
    if Path(meta["base_model"]).resolve() != base.resolve():
        raise ConfigError(f"[hf] start_from: the adapter in {adapter} was trained on {meta['base_model']}, "
                          f"not on this job's model {base}; start from an adapter of the same base model")
    return meta


def save_copy(adapter: Path, folder: Path) -> None:
    """Keep the start adapter inside a model folder, so that the folder loads on its own."""
    shutil.copytree(adapter, folder / SAVED_NAME, ignore=shutil.ignore_patterns("merged"))


def apply_start_adapter(model: torch.nn.Module, adapter: Path, base: Path) -> int:
    """Load the base with ``adapter`` merged into ``model``'s matching weights; the number of tensors set.

    ``model`` is the base as the new job loads it (any head); the weights come from the adapter's own model
    class with the adapter merged. A weight the adapter changed that ``model`` has no place for is an error.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    meta = json.loads((adapter / META).read_text(encoding="utf-8"))
    if Path(meta["base_model"]).resolve() != base.resolve():
        raise ConfigError(f"the start adapter in {adapter} was trained on {meta['base_model']}, not on {base}")
    auto = AutoModelForMaskedLM if meta.get("kind") == "masked_lm" else AutoModelForCausalLM
    source = PeftModel.from_pretrained(auto.from_pretrained(str(base), dtype=torch.float32), str(adapter))
    merged = source.merge_and_unload().state_dict()
    own = model.state_dict()
    changed = _adapted_weights(adapter)
    unplaced = sorted(k for k in changed if k not in own or own[k].shape != merged[k].shape)
    if unplaced or not changed:
        raise ConfigError(f"the start adapter in {adapter} adapts weights this model does not have: {unplaced[:3]}")
    shared = {k: v for k, v in merged.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(shared, strict=False)
    return len(shared)


def _adapted_weights(adapter: Path) -> set[str]:
    """The base weights a LoRA adapter changes when merged (its MLM-head copies excluded)."""
    from safetensors import safe_open

    names: set[str] = set()
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            m = re.match(r"base_model\.model\.(.+)\.lora_A\.weight$", key)
            if m:
                names.add(f"{m.group(1)}.weight")
    return names
