"""HFPredictor: batched generation and exact label scoring over a local transformers model.

``classify`` on a causal LM never samples: for each text it runs one forward pass over the prompt
followed by every label's answer tokens, side by side, with a 4-D attention mask so that each
label sees the prompt and its own earlier tokens only (positions restart after the prompt). The
sum of the label tokens' log-probabilities is the label's score; a softmax over the labels gives
probabilities that sum to one. Logits are computed only at the label positions.

Scoring packs texts into rows without padding and computes the shared system prompt once
(see :mod:`ftkit_hf.scoring`). On an encoder with a sequence-classification head, ``classify`` is a
softmax over the head.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ftkit.errors import ConfigError
from ftkit.predictor import UNPARSEABLE, Classification, Messages
from ftkit_hf.scoring import LabelScorer
from ftkit_hf.tokenize import LabelPrompter


class HFPredictor:
    """A Predictor over a transformers model (optionally with a LoRA adapter).

    Attributes:
        labels: the label vocabulary of a classifier, None for a generator.
        kind: ``causal`` or ``encoder``.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        kind: str = "causal",
        labels: Sequence[str] | None = None,
        preamble: str | None = None,
        device: str = "cpu",
        precision: str = "fp32",
        max_length: int | None = None,
        batch_tokens: int = 8192,
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.kind = kind
        self.labels = list(labels) if labels is not None else None
        self.preamble = preamble
        self.device = device
        self.precision = precision
        self.max_length = max_length
        self.batch_tokens = batch_tokens
        self.reuse_prefix = True  # benchmarks switch it off to measure what the shared-prefix cache saves
        self._prompters: dict[tuple[str, ...], LabelPrompter] = {}
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        base: str | Path,
        adapter: str | Path | None = None,
        *,
        kind: str = "causal",
        labels: Sequence[str] | None = None,
        preamble: str | None = None,
        device: str = "auto",
        precision: str = "auto",
        merge: bool = True,
    ) -> HFPredictor:
        """Load a base model folder, and a PEFT adapter folder on top when given.

        Args:
            base: a local model folder (``ftkit_hf.models.resolve_model`` gives one).
            adapter: a folder holding ``adapter_config.json``, or a full model folder (then ``base`` is unused).
            kind: ``causal``, ``encoder`` (a sequence classifier) or ``masked_lm`` (an encoder adapted on text).
            labels: the label vocabulary for ``classify``.
            preamble: the classification preamble the model was trained with.
            device: ``auto``, ``cpu``, ``cuda``, ``mps``.
            precision: ``auto``, ``bf16``, ``fp16``, ``fp32`` (bf16 means autocast on CPU; bf16/fp16 weights on GPUs).
            merge: fold LoRA weights into the base for faster inference.
        """
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

        from ftkit_hf.engine.device import plan_device
        from ftkit_hf.quiet import quiet_libraries

        quiet_libraries()  # no "Loading weights" bar or load warnings in ftkit's output (ftkit --verbose shows them)

        plan = plan_device(device, precision)
        adapter_path = Path(adapter) if adapter is not None else None
        is_adapter = adapter_path is not None and (adapter_path / "adapter_config.json").is_file()
        weights = base if adapter_path is None or is_adapter else adapter_path
        has_tok = adapter_path is not None and (adapter_path / "tokenizer_config.json").is_file()
        tok_dir = adapter_path if has_tok else base
        tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
        from transformers import AutoModelForMaskedLM

        auto = {"encoder": AutoModelForSequenceClassification, "masked_lm": AutoModelForMaskedLM}.get(
            kind, AutoModelForCausalLM)
        extra: dict[str, Any] = {}
        if kind == "encoder" and labels is not None:
            pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
            extra = {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                     "label2id": {lab: i for i, lab in enumerate(labels)}, "pad_token_id": pad_id,
                     # A trained classifier with other labels as the base: the adapter brings the job's head.
                     "ignore_mismatched_sizes": is_adapter}
        model = auto.from_pretrained(str(weights), dtype=torch.float32, **extra)
        if is_adapter and adapter_path is not None and (adapter_path / "start_adapter").is_dir():
            from ftkit_hf.start_adapter import apply_start_adapter

            # The job started from another adapter: merged into the base first, as in training.
            apply_start_adapter(model, adapter_path / "start_adapter", Path(base))
        if is_adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_path))
            if merge:
                model = model.merge_and_unload()
        module: torch.nn.Module = model  # transformers types .to() oddly; a Module's .to() is all we use
        if plan.device != "cpu" and plan.autocast_dtype is not None:
            module = module.to(plan.autocast_dtype)  # bf16 or fp16 weights on GPUs
        model = module.to(plan.device)
        return cls(model, tokenizer, kind=kind, labels=labels, preamble=preamble, device=plan.device,
                   precision=plan.precision)

    def text_scores(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """Score unlabelled documents for ``ftkit.evaluate`` on a text file (see :mod:`ftkit.evaluate.text`).

        A causal LM: each document's summed negative log-likelihood (every token given the ones before it) and
        the number of tokens scored. A masked LM: the same for 15% of its tokens, masked with a seed fixed per
        document, plus how many of them it predicts exactly (``correct``).

        Raises:
            ConfigError: a sequence classifier, which has no language-model head to score text with.
        """
        from ftkit_hf.text_scoring import causal_scores, masked_scores

        context = getattr(self.model.config, "max_position_embeddings", None) or 2048
        with self._inference():
            if self.kind == "masked_lm":
                return masked_scores(self.model, self.tokenizer, texts, max_length=self.max_length or min(context, 512),
                                     device=self.device)
            if self.kind != "causal":
                raise ConfigError("a sequence classifier has no language-model head: it cannot score text")
            return causal_scores(self.model, self.tokenizer, texts, max_length=self.max_length or min(context, 2048),
                                 device=self.device)

    # ---------------------------------------------------------------- helpers
    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.device == "cpu" and self.precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    yield
            else:
                yield

    def _prompter(self, labels: Sequence[str]) -> LabelPrompter:
        key = tuple(labels)
        if key not in self._prompters:
            self._prompters[key] = LabelPrompter(self.tokenizer, labels, self.preamble)
        return self._prompters[key]

    def _resolve_labels(self, labels: Sequence[str] | None) -> list[str]:
        labs = list(labels) if labels is not None else self.labels
        if not labs or len(labs) < 2:
            raise ConfigError("classify needs at least two labels: pass labels=[...] or load a classifier")
        if self.kind == "encoder" and self.labels is not None and list(labs) != self.labels:
            raise ConfigError(f"this classification head was trained on labels {self.labels}, not {list(labs)}")
        return labs

    # ---------------------------------------------------------------- answer scoring
    def answer_logprobs(self, conversations: Sequence[Messages]) -> list[float]:
        """Summed log-probability of each conversation's final assistant message, given the messages before it.

        Used by ``ftkit.evaluate`` on preference files. The answer's tokens are those chat training takes the loss
        on (the chat template's rendering of that turn, end-of-turn token included), so scores are comparable
        with what DPO optimised. Conversations are packed into rows with per-conversation attention.

        Raises:
            ConfigError: an encoder model, or a conversation that does not end with an assistant message.
        """
        from ftkit_hf.engine.batching import collate_packed, collate_padded, plan_epoch
        from ftkit_hf.engine.dpo import SequenceLogProbs
        from ftkit_hf.engine.loss import Levers, LossComputer
        from ftkit_hf.tokenize import encode_chat

        if self.kind != "causal":
            raise ConfigError("answer log-probabilities need a causal (generative) model, not an encoder")
        examples = []
        for i, conv in enumerate(conversations):
            if not conv or conv[-1].get("role") != "assistant":
                raise ConfigError(f"conversation {i} does not end with an assistant message to score")
            context = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in conv[:-1]]
            examples.append(encode_chat(self.tokenizer, [*context, {**conv[-1], "weight": 1}]))
        computer = LossComputer(self.model, Levers())
        seq = SequenceLogProbs(computer)
        out = [0.0] * len(examples)
        lengths = [len(ex.input_ids) for ex in examples]
        with self._inference(), computer.context():
            for idx in plan_epoch(lengths, self.batch_tokens, 1 << 30, 0, 0, sort_by_length=not computer.packed):
                chunk = [examples[i] for i in idx]
                batch = collate_packed(chunk) if computer.packed else collate_padded(chunk, self.tokenizer.pad_token_id)
                sums, _ = seq(batch.to(self.device))
                for i, value in zip(idx, sums.tolist(), strict=True):
                    out[i] = float(value)
        return out

    # ---------------------------------------------------------------- generate
    def generate(
        self,
        inputs: Sequence[str | Messages],
        *,
        max_new_tokens: int = 256,
        batch_size: int = 16,
        temperature: float = 0.0,
        **kwargs: Any,
    ) -> list[str]:
        """Answer each prompt, batched with left padding. Greedy unless ``temperature > 0``.

        A string is a raw prompt (completion style); a list of messages is rendered with the chat
        template and the assistant header.
        """
        if self.kind == "encoder":
            raise ConfigError("an encoder classification model cannot generate text; use classify()")
        texts = [
            x if isinstance(x, str)
            else self.tokenizer.apply_chat_template(list(x), tokenize=False, add_generation_prompt=True)
            for x in inputs
        ]
        self.tokenizer.padding_side = "left"
        out: list[str] = [""] * len(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.pad_token_id}
        gen_kwargs |= {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        gen_kwargs |= kwargs
        with self._inference():
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                                     add_special_tokens=not self._has_template(texts[idx[0]])).to(self.device)
                gen = self.model.generate(**enc, **gen_kwargs)
                new = gen[:, enc["input_ids"].shape[1] :]
                for i, row in zip(idx, new, strict=True):
                    out[i] = self.tokenizer.decode(row, skip_special_tokens=True).strip()
        return out

    def _has_template(self, text: str) -> bool:
        # A rendered chat prompt already carries its special tokens (BOS included where the template has it).
        bos = self.tokenizer.bos_token
        return bool(bos) and text.startswith(bos)

    # ---------------------------------------------------------------- classify
    def classify(
        self,
        texts: Sequence[str],
        *,
        labels: Sequence[str] | None = None,
        method: str = "score",
        max_new_tokens: int = 8,
    ) -> list[Classification]:
        """A label and a probability for every label, for each text.

        Args:
            texts: the texts to classify.
            labels: the label vocabulary (default: the one the model was trained with).
            method: ``score`` (exact label scoring, the default) or ``generate`` (greedy generation,
                then the answer is matched to a label; probability 1 on the match, for comparison only).
            max_new_tokens: generation length for ``method="generate"``.
        """
        labs = self._resolve_labels(labels)
        if self.kind == "encoder":
            return self._classify_head(texts, labs)
        if method == "generate":
            return self._classify_generate(texts, labs, max_new_tokens)
        if method != "score":
            raise ConfigError(f"method must be 'score' or 'generate', not {method!r}")
        prompter = self._prompter(labs)
        prompts = [prompter.prompt_ids(t) for t in texts]
        answers = [prompter.label_ids[lab] for lab in labs]
        with self._inference():
            scorer = LabelScorer(self.model, self.tokenizer.pad_token_id, self.device, batch_tokens=self.batch_tokens)
            probs = torch.softmax(scorer.score(prompts, answers, reuse_prefix=self.reuse_prefix), dim=-1)
        out = []
        for row in probs:
            p = {lab: float(row[j]) for j, lab in enumerate(labs)}
            out.append(Classification(label=max(p, key=p.__getitem__), probabilities=p))
        return out

    def _classify_generate(self, texts: Sequence[str], labs: list[str], max_new_tokens: int) -> list[Classification]:
        msgs = [_messages(t, labs, self.preamble) for t in texts]
        answers = self.generate(msgs, max_new_tokens=max_new_tokens, batch_size=32)
        out = []
        for raw in answers:
            label = parse_label(raw, labs)
            probs = {lab: float(lab == label) for lab in labs}
            out.append(Classification(label=label, probabilities=probs, unparseable_mass=float(label == UNPARSEABLE),
                                      raw=raw))
        return out

    def _classify_head(self, texts: Sequence[str], labs: list[str]) -> list[Classification]:
        self.tokenizer.padding_side = "right"
        out: list[Classification] = []
        with self._inference():
            for start in range(0, len(texts), 64):
                enc = self.tokenizer(list(texts[start : start + 64]), return_tensors="pt", padding=True,
                                     truncation=True, max_length=self.max_length or 512).to(self.device)
                probs = torch.softmax(self.model(**enc).logits.float(), dim=-1).cpu()
                for row in probs:
                    p = {lab: float(row[j]) for j, lab in enumerate(labs)}
                    out.append(Classification(label=max(p, key=p.__getitem__), probabilities=p))
        return out


def _messages(text: str, labels: Sequence[str], preamble: str | None) -> Messages:
    from ftkit.data.convert import classification_messages

    return classification_messages(text, labels, preamble)


def parse_label(raw: str, labels: Sequence[str]) -> str:
    """Match a generated answer to a label: exact (case-insensitive), then the first label word in it."""
    ans = raw.strip().strip(".\"'").lower()
    by_lower = {lab.lower(): lab for lab in labels}
    if ans in by_lower:
        return by_lower[ans]
    hits = [(m.start(), lab) for lab in labels if (m := re.search(rf"\b{re.escape(lab.lower())}\b", ans))]
    return min(hits)[1] if hits else UNPARSEABLE
