"""The training loss, computed only where there is something to learn.

A causal LM head multiplies every hidden state by the whole vocabulary (49k-152k columns), and the usual
recipe does so for every position, then throws most of it away because prompt tokens carry label -100.
For a known decoder architecture (Llama, Qwen2/3, Mistral) the engine instead runs the decoder stack to get
hidden states, picks the positions that have a target, and applies the LM head there only, chunk by chunk with
the gradient taken in the forward pass (:mod:`.head_loss`), so no logits outlive their chunk. Unknown architectures
fall back to ``model(...).logits`` on padded batches: slower, but correct for anything that is a causal LM.

The loss of a step is the mean cross-entropy over all target positions of the step, in fp32 whatever the
autocast precision, so a packed step and the same examples unpacked give the same number.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .attention import packed_lengths, varlen_attention
from .batching import Batch
from .head_loss import Scratch, head_cross_entropy
from .settings import IGNORE_INDEX

# Architectures whose `.model` returns the final (normed) hidden states that `lm_head` maps to logits
# with nothing in between (no logit soft-capping or scaling).
KNOWN_DECODERS = frozenset({"llama", "qwen2", "qwen3", "mistral"})


@dataclass
class Levers:
    """The engine's speed levers, all on by default; the benchmark turns them off one at a time.

    Attributes:
        packing: pack a step's examples into one row with per-example attention (else padded batches).
        label_only_logits: apply the LM head only where a target exists (else on every position).
        bf16_frozen_weights: under bf16, store the frozen base weights (linear, embedding, norm) in bf16
            during training: autocast no longer recasts them on every pass and the hidden states flow in
            bf16 between layers, as with a bf16-loaded model on a GPU. Restored afterwards.
        fused_lora: LoRA layers scale on the rank side and add inside the B matmul (:mod:`.lora_forward`)
            instead of PEFT's full-size multiply and add.
        compile: ``torch.compile`` each decoder layer (dynamic shapes, attention left eager). It fuses the
            norms, rotary embeddings, activations and LoRA additions; it pays only once the warm-up (about a
            minute on 2 cores, seconds with a warm inductor cache) is amortised. Off: measured on an idle
            2-core CPU it makes steps only ~1.06x faster after warm-up (docs/performance.md), too little
            for the warm-up and for the risk of a machine without a working C++ toolchain.
    """

    packing: bool = True
    label_only_logits: bool = True
    bf16_frozen_weights: bool = True
    fused_lora: bool = True
    compile: bool = False


def _base_model(model: torch.nn.Module) -> torch.nn.Module:
    get = getattr(model, "get_base_model", None)  # peft.PeftModel
    return get() if callable(get) else model


class LossComputer:
    """Computes the mean target cross-entropy of a batch for one model, by the fastest correct route."""

    def __init__(self, model: torch.nn.Module, levers: Levers) -> None:
        self.model = model
        base = _base_model(model)
        self.config = getattr(base, "config", None)
        model_type = getattr(self.config, "model_type", None)
        decoder = getattr(base, "model", None)
        get_head = getattr(base, "get_output_embeddings", None)
        head = get_head() if callable(get_head) else None
        self.known = (model_type in KNOWN_DECODERS and isinstance(decoder, torch.nn.Module)
                      and isinstance(head, torch.nn.Linear)
                      and getattr(self.config, "final_logit_softcapping", None) is None)
        self.decoder = decoder if self.known else None
        self.head = head if self.known else None
        self.packed = self.known and levers.packing
        self.label_only = self.known and levers.label_only_logits
        layers = getattr(decoder, "layers", None)
        self.layers = list(layers) if self.known and isinstance(layers, torch.nn.ModuleList) else []
        self.compile = bool(levers.compile and self.layers)
        self.scratch = Scratch()  # the head's logits buffers, reused by every step

    def _compile_layers(self) -> None:
        # Each decoder layer is compiled on its own, with dynamic shapes: the layers share one graph (the
        # parameters are inputs), the packed row length varies freely, and the attention stays out of the
        # graph (see attention.packed_lengths). Compiling the whole stack instead unrolls 30 layers.
        for layer in self.layers:
            layer.compile(dynamic=True)

    def release(self) -> None:
        """Drop the compiled layers, so the model the caller gets back runs eagerly (generation, export)."""
        for layer in self.layers:
            layer._compiled_call_impl = None

    @property
    def route(self) -> str:
        """A short description of the route taken, for the job log."""
        if not self.known:
            return "generic (padded batches, full logits)"
        layout = "packed with per-example attention" if self.packed else "padded batches"
        logits = "label-only logits" if self.label_only else "full logits"
        return f"{layout}, {logits}" + (", compiled decoder layers" if self.compile else "")

    def context(self) -> contextlib.ExitStack[bool | None]:
        """Context in which forward passes must run: the attention implementation for packing, and the
        compiled decoder layers when compiling (dropped again on exit)."""
        stack = contextlib.ExitStack()
        if self.packed and self.config is not None:
            stack.enter_context(varlen_attention(self.config))
        if self.compile:
            self._compile_layers()
            stack.callback(self.release)
        return stack

    def __call__(self, batch: Batch) -> torch.Tensor:
        """Mean cross-entropy over the batch's target positions (fp32 scalar, differentiable)."""
        if not self.known:
            return self._generic(batch)
        assert self.decoder is not None and self.head is not None  # set together with `known`
        if self.packed:
            with packed_lengths(batch.seq_lengths):
                out = self.decoder(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                                   cu_seq_lens_q=batch.cu_seqlens, cu_seq_lens_k=batch.cu_seqlens)
        else:
            out = self.decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        hidden = out.last_hidden_state
        targets = batch.targets.reshape(-1)
        hidden = hidden.reshape(-1, hidden.shape[-1])
        if self.label_only:
            keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)
            hidden, targets = hidden.index_select(0, keep), targets.index_select(0, keep)
        total = head_cross_entropy(hidden, self.head.weight, self.head.bias, targets, scratch=self.scratch)
        return total / max(1, batch.label_tokens)

    def _generic(self, batch: Batch) -> torch.Tensor:
        logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), batch.targets.reshape(-1),
                                ignore_index=IGNORE_INDEX, reduction="sum")
        return total / max(1, batch.label_tokens)
