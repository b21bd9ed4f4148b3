"""Training defaults chosen from the data: batch size, epochs, learning rate, early stopping, a held-out split.

A user with a few hundred labelled examples should not need to know that a step of 64 examples leaves
them a dozen optimizer steps. When the spec and the ``[hf]`` options leave a setting open, it is derived
here from the number of training examples (after any validation carve) and their token lengths, the way
hosted services choose "auto"; every choice says where it came from, is printed at create (in the
estimate's assumptions) and stored in the job's manifest. An explicit setting always wins.

The rules, argued from ``benchmarks/sample_efficiency.py`` in docs/backends/hf.md:

* **batch size** (examples per optimizer step): about ``n / 32`` rounded down to a power of two, between
  4 and 64, so a small data set gets at least ~32 steps per epoch; the token budget ``batch_tokens``
  still caps a step (long examples), and packing still removes padding, but it no longer sets the
  number of steps.
* **learning rate**: ``4e-4 * sqrt(batch / 8)`` for LoRA, at most 8e-4 (square-root scaling with the batch:
  2.8e-4 at 4, 4e-4 at 8, 5.7e-4 at 16, 8e-4 from 32 up), a tenth of that for full fine-tuning.
* **epochs**: enough passes for about :data:`TARGET_STEPS` optimizer steps, between 1 and
  :data:`MAX_EPOCHS`; with a validation set, early stopping (patience 1, evaluated per epoch, the best
  weights restored) ends training when the validation loss stops falling, so the upper end costs
  nothing when it is not needed.
* **validation**: when the user gives none, :data:`VALIDATION_SHARE` of the training file (at least
  :data:`MIN_VALIDATION`, at most :data:`MAX_VALIDATION` examples; stratified by label for
  classification, seeded by the job's seed) is set aside for early stopping; its line numbers are
  recorded. Below :data:`MIN_CARVE_FROM` examples nothing is carved: every example is worth more in
  training than in a noisy validation loss.
* **route** (model, head, objective) for a classification job that names no model: the encoder
  (all-MiniLM-L6-v2) with a sequence-classification head, fully fine-tuned, when the texts fit the
  encoder's window (95% of them within :data:`ENCODER_WINDOW` tokens); otherwise the decoder
  (SmolLM2-135M-Instruct) generating the label with LoRA. On TREC (6 question types) the decoder
  generating labels lost to TF-IDF at 100 and 300 examples while the encoder beat it, at a fraction of
  the CPU time. An encoder's full fine-tune gets its own learning rate and more epochs
  (:data:`ENCODER_LR`, :data:`ENCODER_MAX_EPOCHS`, early stopping with patience
  :data:`ENCODER_PATIENCE`): an epoch of a 22M-parameter encoder costs little.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

Source = Literal["auto", "spec", "config"]
Head = Literal["generative", "sequence_classification"]

TARGET_STEPS = 100
MAX_EPOCHS = 3
MIN_BATCH, MAX_BATCH = 4, 64
VALIDATION_SHARE = 0.1
MIN_VALIDATION, MAX_VALIDATION = 12, 200
MIN_CARVE_FROM = 60
LORA_LR_AT_8 = 4e-4
MAX_LORA_LR = 8e-4
AUTO_MODEL = "auto"  # the hf backend's model for a classification job that names none: chosen by choose_route
ENCODER_WINDOW = 256  # tokens: all-MiniLM-L6-v2 was trained on inputs of up to 256 word pieces
ENCODER_LR = 1e-4
ENCODER_MAX_EPOCHS = 15
ENCODER_TARGET_STEPS = 300
ENCODER_PATIENCE = 3


class ValidationCarve(BaseModel):
    """The validation split set aside from the training file (when the user gave none).

    Attributes:
        seed: the seed of the split (the job's seed).
        stratified: split per label (classification) or over all lines.
        lines: 1-based line numbers of the training file that became validation examples.
        train_examples: examples left for training.
        label_counts: validation examples per label (classification).
    """

    seed: int
    stratified: bool
    lines: list[int]
    train_examples: int
    label_counts: dict[str, int] = Field(default_factory=dict)


class Route(BaseModel):
    """Which model, head and objective a job trains, and why.

    Attributes:
        model: the model name (a default name or the user's).
        head: ``generative`` (the decoder writes the label) or ``sequence_classification``.
        method: ``lora``, ``qlora`` or ``full``.
        source: ``auto`` (chosen from the data by :func:`choose_route`), ``spec`` (the spec named the model)
            or ``config`` (the ``[hf]`` head option decided it).
        reason: one line on why.
    """

    model: str
    head: Head
    method: str
    source: Source
    reason: str

    def describe(self) -> str:
        """E.g. ``route: all-minilm-l6-v2, classification head, full fine-tune (auto: ...)``."""
        head = "classification head" if self.head == "sequence_classification" else "label generation"
        method = "full fine-tune" if self.method == "full" else self.method.upper()
        return f"route: {self.model}, {head}, {method} ({self.source}: {self.reason})"


def choose_route(
    *,
    task: str,
    text_tokens: Sequence[int],
    config_head: str,
    config_method: str | None,
    encoder: str,
    decoder: str,
) -> Route:
    """The model, head and objective for a job that names no model.

    Args:
        task: the job's task; only classification has a choice (the others need a decoder).
        text_tokens: each training text's length in the encoder's tokens (classification).
        config_head: the ``[hf]`` option ``head`` (``auto`` leaves the choice here).
        config_method: the ``[hf]`` option ``method`` when the user set it, else None.
        encoder: the default encoder's name.
        decoder: the default decoder's name.
    """
    if task != "classification":
        return Route(model=decoder, head="generative", method=config_method or "lora", source="auto",
                     reason=f"{task} needs a decoder")
    if config_head == "generative":
        return Route(model=decoder, head="generative", method=config_method or "lora", source="config",
                     reason="head = generative")
    if config_head == "sequence_classification":
        return Route(model=encoder, head="sequence_classification", method=config_method or "full", source="config",
                     reason="head = sequence_classification")
    long = sorted(text_tokens)[max(0, math.ceil(0.95 * len(text_tokens)) - 1)] if text_tokens else 0
    if long <= ENCODER_WINDOW:
        return Route(model=encoder, head="sequence_classification", method=config_method or "full", source="auto",
                     reason=f"classification, 95% of texts within {long} tokens (the encoder's window is "
                     f"{ENCODER_WINDOW}); override with model or head = generative")
    return Route(model=decoder, head="generative", method=config_method or "lora", source="auto",
                 reason=f"classification with long texts (95th percentile {long} tokens, over the encoder's "
                 f"{ENCODER_WINDOW}); override with model or head = sequence_classification")


class TrainingPlan(BaseModel):
    """What the hf backend will train with, and where each setting came from.

    Attributes:
        examples: training examples (after a validation carve).
        mean_tokens: mean tokens per training example.
        batch_size: examples per optimizer step (at most; ``batch_tokens`` may make a step smaller).
        epochs: passes over the training data (at most, with early stopping).
        learning_rate: peak learning rate.
        steps_per_epoch: optimizer steps per epoch, about ``examples / batch_size``.
        early_stopping_patience: evaluations without a better validation loss before stopping; None: off.
        validation: the carved validation split, or None (the user's file, or none).
        sources: for each of batch_size, epochs, learning_rate, early_stopping_patience, validation:
            ``auto`` (chosen here), ``spec`` (hyperparameters) or ``config`` (the ``[hf]`` options).
        route: the model, head and objective, when the spec named no model (None: the spec's model).
    """

    examples: int
    mean_tokens: float
    batch_size: int
    epochs: int
    learning_rate: float
    steps_per_epoch: int
    early_stopping_patience: int | None
    validation: ValidationCarve | None = None
    sources: dict[str, Source]
    route: Route | None = None

    def describe(self) -> str:
        """One line for the estimate's assumptions, e.g. ``batch 8 (auto), 3 epochs (auto) ...``."""
        s = self.sources
        parts = [f"batch {self.batch_size} ({s['batch_size']})",
                 f"up to {self.epochs} epoch{'s' if self.epochs != 1 else ''} ({s['epochs']})",
                 f"learning rate {self.learning_rate:.2g} ({s['learning_rate']})",
                 f"~{self.steps_per_epoch} steps/epoch over {self.examples} examples"]
        if self.early_stopping_patience is not None:
            parts.append(f"early stopping, patience {self.early_stopping_patience} ({s['early_stopping_patience']})")
        if self.validation is not None:
            parts.append(f"validation: {len(self.validation.lines)} examples carved from train "
                         f"(seed {self.validation.seed}{', stratified' if self.validation.stratified else ''})")
        settings = "training settings: " + ", ".join(parts)
        return f"{self.route.describe()}; {settings}" if self.route is not None else settings


def auto_batch_size(examples: int) -> int:
    """About ``examples / 32`` rounded down to a power of two, in [4, 64]: >= ~32 steps per epoch when small."""
    if examples < 2 * 32 * MIN_BATCH:
        return MIN_BATCH
    return max(MIN_BATCH, min(MAX_BATCH, 2 ** int(math.log2(examples / 32))))


def auto_learning_rate(batch_size: int, method: str, head: str = "generative") -> float:
    """Square-root scaling with the batch around 4e-4 at 8 examples, at most 8e-4 (LoRA); a tenth for full.

    An encoder with a classification head: :data:`ENCODER_LR` fully fine-tuned (2e-4 made MiniLM collapse
    to the majority class on 100 examples), the LoRA rule with LoRA.
    """
    if head == "sequence_classification" and method == "full":
        return ENCODER_LR
    lr = min(MAX_LORA_LR, LORA_LR_AT_8 * math.sqrt(batch_size / 8))
    return float(f"{lr / 10 if method == 'full' else lr:.2g}")


def auto_epochs(steps_per_epoch: int, head: str = "generative") -> int:
    """Enough epochs for about :data:`TARGET_STEPS` steps, between 1 and :data:`MAX_EPOCHS`.

    A classification head (a small encoder): :data:`ENCODER_TARGET_STEPS`, up to :data:`ENCODER_MAX_EPOCHS`.
    """
    if head == "sequence_classification":
        return max(1, min(ENCODER_MAX_EPOCHS, math.ceil(ENCODER_TARGET_STEPS / max(1, steps_per_epoch))))
    return max(1, min(MAX_EPOCHS, math.ceil(TARGET_STEPS / max(1, steps_per_epoch))))


def validation_size(examples: int) -> int:
    """How many examples to carve from ``examples`` (0: too few to spare any)."""
    if examples < MIN_CARVE_FROM:
        return 0
    return max(MIN_VALIDATION, min(MAX_VALIDATION, round(VALIDATION_SHARE * examples)))


def carve_validation(lines: Sequence[int], labels: Sequence[str] | None, size: int, seed: int) -> list[int]:
    """The line numbers that become validation examples: seeded, stratified by label when labels are given.

    Each label gets its share of ``size`` (largest remainders), but a label keeps at least one training
    example, so a rare class is never carved away entirely.

    Args:
        lines: the training file's line numbers, one per example.
        labels: each example's label (same order), or None to split over all lines.
        size: how many to carve.
        seed: the split's seed.

    Returns:
        The carved line numbers, sorted.
    """
    rng = random.Random(f"ftkit-validation-{seed}")
    if labels is None:
        chosen = rng.sample(list(lines), size)
        return sorted(chosen)
    groups: dict[str, list[int]] = defaultdict(list)
    for line, label in zip(lines, labels, strict=True):
        groups[label].append(line)
    total = len(lines)
    exact = {lab: size * len(members) / total for lab, members in groups.items()}
    want = {lab: min(int(x), len(groups[lab]) - 1) for lab, x in exact.items()}
    # Largest remainders first, labels sorted for a stable order; never the last example of a label.
    for lab in sorted(groups, key=lambda k: (-(exact[k] - int(exact[k])), k)):
        if sum(want.values()) >= size:
            break
        if want[lab] < len(groups[lab]) - 1:
            want[lab] += 1
    chosen = []
    for lab in sorted(groups):
        members = list(groups[lab])
        rng.shuffle(members)
        chosen.extend(members[: want[lab]])
    return sorted(chosen)


def plan_training(
    *,
    lengths: Sequence[int],
    method: str,
    spec_epochs: int | None,
    spec_learning_rate: float | None,
    spec_batch_size: int | None,
    config_batch_size: int | None,
    config_patience: int | None,
    has_validation: bool,
    validation: ValidationCarve | None = None,
    head: str = "generative",
    route: Route | None = None,
) -> TrainingPlan:
    """Choose the settings the user left open, from the training examples' token lengths.

    Args:
        lengths: token count of every training example (after a carve).
        method: ``lora``, ``qlora`` or ``full``.
        spec_epochs: ``hyperparameters.epochs`` (None: auto).
        spec_learning_rate: ``hyperparameters.learning_rate`` (None: auto).
        spec_batch_size: ``hyperparameters.batch_size`` (None: the config's, else auto).
        config_batch_size: the ``[hf]`` option ``max_batch_examples`` (None: auto).
        config_patience: the ``[hf]`` option ``early_stopping_patience`` (None: 1 when there is validation data).
        has_validation: a validation set exists (the user's or carved).
        validation: the carve, to record.
        head: ``generative`` or ``sequence_classification`` (its own learning rate, epochs and patience).
        route: the route chosen for a spec that named no model, to record.
    """
    n = len(lengths)
    sources: dict[str, Source] = {}
    if spec_batch_size is not None:
        batch, sources["batch_size"] = spec_batch_size, "spec"
    elif config_batch_size is not None:
        batch, sources["batch_size"] = config_batch_size, "config"
    else:
        batch, sources["batch_size"] = auto_batch_size(n), "auto"
    steps = max(1, math.ceil(n / batch))
    if spec_epochs is not None:
        epochs, sources["epochs"] = spec_epochs, "spec"
    else:
        epochs, sources["epochs"] = auto_epochs(steps, head), "auto"
    if spec_learning_rate is not None:
        lr, sources["learning_rate"] = spec_learning_rate, "spec"
    else:
        lr, sources["learning_rate"] = auto_learning_rate(batch, method, head), "auto"
    patience: int | None
    if config_patience is not None:
        patience, sources["early_stopping_patience"] = config_patience, "config"
    else:
        # One epoch without a better validation loss ends training (evaluated per epoch, best weights kept);
        # an encoder's epochs are cheap and its validation loss on a dozen examples is noisy: three.
        wait = ENCODER_PATIENCE if head == "sequence_classification" else 1
        patience = wait if has_validation and epochs > 1 else None
        sources["early_stopping_patience"] = "auto"
    sources["validation"] = "auto" if validation is not None else "spec"
    return TrainingPlan(examples=n, mean_tokens=round(sum(lengths) / n, 1) if n else 0.0, batch_size=batch,
                        epochs=epochs, learning_rate=lr, steps_per_epoch=steps, early_stopping_patience=patience,
                        validation=validation, sources=sources, route=route)
