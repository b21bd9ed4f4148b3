"""Already-trained classifiers as base models: a sequence-classification checkpoint keeps its own head when the
job's labels are its labels.

A checkpoint such as an SST-2 sentiment model comes with a trained head and its label map (``id2label``, e.g.
``{0: "NEGATIVE", 1: "POSITIVE"}``). When the job's labels are the same names (case aside), the head is kept and
its rows reordered to the job's label order, so fine-tuning starts from what the checkpoint already knows (and
before any step predicts as the checkpoint does). When they differ (other names, another number), the head is
replaced by a new one for the job's labels (``ignore_mismatched_sizes``), and the job log says so. A checkpoint
without a trained head (a plain encoder, or generic ``LABEL_0`` names) gets a new head, as before.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

_GENERIC = re.compile(r"^LABEL_\d+$")


def checkpoint_labels(model_path: Path) -> list[str] | None:
    """The labels of a checkpoint's trained classification head, in its output order (None: no trained head)."""
    try:
        cfg = json.loads((Path(model_path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    archs = cfg.get("architectures") or []
    id2label = cfg.get("id2label") or {}
    if not any(a.endswith("ForSequenceClassification") for a in archs) or not id2label:
        return None
    try:
        labels = [str(id2label[str(i)] if str(i) in id2label else id2label[i]) for i in range(len(id2label))]
    except KeyError:
        return None
    return None if all(_GENERIC.match(label) for label in labels) else labels


def _output_layer(model: torch.nn.Module, n: int) -> torch.nn.Linear | None:
    """The head's last linear layer with ``n`` outputs (``classifier``, ``classifier.out_proj``, ``score``)."""
    found = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == n and \
                any(part in name for part in ("classifier", "score")):
            found = module
    return found


def load_head_model(model_path: Path, labels: list[str], **kwargs: Any) -> tuple[Any, str]:
    """A sequence-classification model for the job's ``labels``, keeping the checkpoint's trained head if it can.

    Args:
        model_path: the checkpoint folder.
        labels: the job's labels, in the job's order (the model's outputs follow it).
        **kwargs: passed to ``from_pretrained`` (dtype, pad_token_id).

    Returns:
        The model and a message for the job log ("" for a checkpoint without a trained head).
    """
    from transformers import AutoModelForSequenceClassification

    own = checkpoint_labels(model_path)
    mapping = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
               "label2id": {lab: i for i, lab in enumerate(labels)}}
    lowered = [label.lower() for label in own] if own else []
    if own and len(own) == len(labels) and sorted(lowered) == sorted(label.lower() for label in labels):
        model = AutoModelForSequenceClassification.from_pretrained(str(model_path), **kwargs)
        layer = _output_layer(model, len(own))
        if layer is not None:
            order = torch.tensor([lowered.index(label.lower()) for label in labels])
            with torch.no_grad():  # output i of the job's head is the checkpoint's output for labels[i]
                layer.weight.copy_(layer.weight[order])
                if layer.bias is not None:
                    layer.bias.copy_(layer.bias[order])
            model.config.update(mapping)
            return model, f"kept the checkpoint's trained classification head (its labels {own}, in the job's order)"
    model = AutoModelForSequenceClassification.from_pretrained(str(model_path), ignore_mismatched_sizes=own is not None,
                                                               **mapping, **kwargs)  # fmt: skip
    note = f"a new classification head: the checkpoint's labels {own} are not the job's {labels}" if own else ""
    return model, note
