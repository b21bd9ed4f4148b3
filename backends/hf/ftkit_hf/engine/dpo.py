"""Direct preference optimisation (DPO) on the engine's packed batches.

A preference pair is a prompt with a preferred ("chosen") and a non-preferred ("rejected") answer. DPO needs,
for each answer, the sum of the log-probabilities of its completion tokens under the model being trained
(the policy) and under a frozen reference. Here:

* chosen and rejected answers are separate segments of one packed row (:func:`collate_pairs`): each has its own
  positions and the per-example attention of :mod:`.attention`, so neither sees the other, and the loss is
  taken on completion tokens only (the prompt carries label -100 as in SFT);
* the LM head is applied to the completion positions only, chunk by chunk, with the gradient with respect to the
  hidden states computed in the forward pass (:func:`head_token_logps`), as :mod:`.head_loss` does for SFT;
* the reference is the same model with the LoRA adapter disabled (peft's ``disable_adapter()``): no second copy
  of the weights. Its log-probabilities are computed once per pair before training
  (:func:`reference_logps`) and cached; the training steps only run the policy.

Losses (``beta`` is the DPO temperature, Δ = (policy - reference) log-ratio of chosen minus that of rejected):

* ``sigmoid``: ``-(1-ε) log σ(βΔ) - ε log σ(-βΔ)``; ε = ``label_smoothing`` (0: the DPO paper, ε > 0: cDPO);
* ``robust``: ``(-(1-ε) log σ(βΔ) + ε log σ(-βΔ)) / (1 - 2ε)`` (rDPO, unbiased under label noise ε);
* ``ipo``: ``(Δ̄ - 1/(2β))²`` with Δ̄ the log-ratios averaged per completion token (as TRL and the IPO authors).

With ``sft_weight`` α > 0, α × the mean negative log-likelihood of the preferred answers' tokens is added: SFT on
the preferred answers in the same job (RPO; TRL's ``loss_type=["sigmoid", "sft"]`` with weights ``[1, α]``).

These are TRL's ``DPOTrainer`` formulas (trl 1.16), which ``tests/test_dpo.py`` checks loss and gradients against.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ftkit.errors import ConfigError

from .attention import packed_lengths
from .batching import Batch, collate_packed, collate_padded, plan_epoch
from .head_loss import CHUNK_LOGITS, _compute_dtype
from .loss import LossComputer
from .settings import IGNORE_INDEX, TokenizedExample

DPOLossType = Literal["sigmoid", "ipo", "robust"]
DPO_LOSSES: tuple[str, ...] = ("sigmoid", "ipo", "robust")


@dataclass
class PreferencePair:
    """One tokenized preference example: the same prompt followed by each answer.

    Attributes:
        chosen: prompt + preferred answer (labels on the answer only).
        rejected: prompt + non-preferred answer (labels on the answer only).
    """

    chosen: TokenizedExample
    rejected: TokenizedExample

    @property
    def tokens(self) -> int:
        """Real tokens of both sequences (what a step's token budget counts)."""
        return len(self.chosen.input_ids) + len(self.rejected.input_ids)


@dataclass
class DPOSettings:
    """The preference objective.

    Attributes:
        beta: DPO temperature: how far the policy may move from the reference (higher: less far).
        loss: ``sigmoid``, ``ipo`` or ``robust`` (see the module docstring).
        label_smoothing: ε, the assumed fraction of flipped preference labels (sigmoid and robust).
        sft_weight: weight of the SFT term (mean NLL of the preferred answers' tokens); 0 for none.
    """

    beta: float = 0.1
    loss: str = "sigmoid"
    label_smoothing: float = 0.0
    sft_weight: float = 0.0

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ConfigError(f"DPO beta must be > 0, not {self.beta!r}")
        if self.loss not in DPO_LOSSES:
            raise ConfigError(f"DPO loss must be one of {', '.join(DPO_LOSSES)}, not {self.loss!r}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ConfigError(f"DPO label_smoothing must be in [0, 0.5), not {self.label_smoothing!r}")
        if not self.sft_weight >= 0:
            raise ConfigError(f"DPO sft_weight must be >= 0, not {self.sft_weight!r}")
        if self.loss == "ipo" and self.label_smoothing:
            raise ConfigError("DPO label_smoothing does not apply to the ipo loss")


def collate_pairs(pairs: Sequence[PreferencePair], packed: bool, pad_id: int = 0) -> Batch:
    """The sequences of ``pairs`` as one batch, in the order chosen₀, rejected₀, chosen₁, rejected₁, ...

    Packed, each sequence is its own segment (positions restart, attention stays inside it); padded, its own row.
    """
    seqs = [ex for pair in pairs for ex in (pair.chosen, pair.rejected)]
    return collate_packed(seqs) if packed else collate_padded(seqs, pad_id)


# ------------------------------------------------------------------ completion log-probabilities
def _logps_and_grad_(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per-row log-probability of fp32 ``logits`` at ``t``; ``logits`` become d logp / d logits (in place)."""
    picked = logits.gather(1, t[:, None]).squeeze(1)
    top = logits.amax(dim=-1, keepdim=True)
    grad = logits.sub_(top).exp_()
    total = grad.sum(dim=-1, keepdim=True)
    grad.div_(total).neg_()
    grad[torch.arange(t.numel(), device=t.device), t] += 1.0  # one-hot minus softmax
    return picked - (top + total.log()).squeeze(1)


class _FrozenHeadLogProbs(torch.autograd.Function):
    """Per-token log-probabilities through a frozen LM head, gradient w.r.t. the hidden states taken in forward.

    With the head frozen (LoRA), d logpᵢ / d hᵢ = (onehot - softmax)ᵢ W depends on row i alone, so it is an
    ``[N, H]`` tensor computed chunk by chunk in the forward pass; the backward pass scales each row by its
    incoming gradient. No ``[N, V]`` logits outlive their chunk, and the head runs once.
    """

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        dtype = _compute_dtype(hidden, weight)
        w = weight.detach().to(dtype)
        b = bias.detach().to(dtype) if bias is not None else None
        h_all = hidden.detach().to(dtype)
        grad_h = torch.empty_like(hidden)
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk_rows):
                h = h_all[start:start + chunk_rows]
                logits = F.linear(h, w, b).float()
                out[start:start + h.shape[0]] = _logps_and_grad_(logits, targets[start:start + chunk_rows])
                grad_h[start:start + h.shape[0]] = logits.to(dtype) @ w
        ctx.save_for_backward(grad_h)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (grad_h,) = ctx.saved_tensors
        return grad_h * grad_out[:, None].to(grad_h.dtype), None, None, None, None


def _chunk_logps(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, t: torch.Tensor) -> torch.Tensor:
    logits = F.linear(h, w, b).float()
    return -F.cross_entropy(logits, t, reduction="none")


def head_token_logps(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, targets: torch.Tensor,
                     chunk_logits: int = CHUNK_LOGITS) -> torch.Tensor:
    """Log-probability of each target under ``hidden @ weight.T (+ bias)``, fp32, ``[N]``; every target valid.

    At most ``chunk_logits`` logits exist at once. A frozen head (LoRA) takes the single-pass route of
    :class:`_FrozenHeadLogProbs`; a trained head recomputes each chunk's logits in the backward pass.
    """
    rows = hidden.shape[0]
    if rows == 0:
        return hidden.sum(dim=-1) * 0.0
    chunk_rows = max(1, chunk_logits // weight.shape[0])
    head_trained = weight.requires_grad or (bias is not None and bias.requires_grad)
    if torch.is_grad_enabled() and hidden.requires_grad and not head_trained:
        out: torch.Tensor = _FrozenHeadLogProbs.apply(hidden, weight, bias, targets, chunk_rows)
        return out
    dtype = _compute_dtype(hidden, weight)
    parts = []
    for start in range(0, rows, chunk_rows):
        h, t = hidden[start:start + chunk_rows], targets[start:start + chunk_rows]
        if torch.is_grad_enabled() and (h.requires_grad or head_trained):
            parts.append(checkpoint(_chunk_logps, h.to(dtype), weight.to(dtype),
                                    bias.to(dtype) if bias is not None else None, t, use_reentrant=False))
        else:
            parts.append(_chunk_logps(h.to(dtype), weight.to(dtype), bias.to(dtype) if bias is not None else None, t))
    return torch.cat(parts)


class SequenceLogProbs:
    """Sum of the completion-token log-probabilities of every sequence of a batch, by the engine's route.

    Uses the route of a :class:`LossComputer` (packed per-example attention and label-only logits for known
    decoders, ``model(...).logits`` on padded rows otherwise); run it inside that computer's ``context()``.
    """

    def __init__(self, loss_fn: LossComputer) -> None:
        self.loss_fn = loss_fn

    def __call__(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(sums, counts)``: per sequence, the fp32 sum of its targets' log-probabilities and their number."""
        lf = self.loss_fn
        if batch.seq_lengths is not None:
            n_seq = len(batch.seq_lengths)
            owner = torch.repeat_interleave(torch.arange(n_seq, device=batch.targets.device),
                                            torch.tensor(batch.seq_lengths, device=batch.targets.device))
        else:
            n_seq, length = batch.targets.shape
            owner = torch.arange(n_seq, device=batch.targets.device).repeat_interleave(length)
        targets = batch.targets.reshape(-1)
        keep = (targets != IGNORE_INDEX).nonzero().squeeze(1)
        owner, picked_targets = owner.index_select(0, keep), targets.index_select(0, keep)
        if not lf.known:
            logits = lf.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
            logits = logits.reshape(-1, logits.shape[-1]).index_select(0, keep).float()
            token_logps = logits.log_softmax(-1).gather(1, picked_targets[:, None]).squeeze(1)
        else:
            assert lf.decoder is not None and lf.head is not None  # set together with `known`
            if lf.packed:
                with packed_lengths(batch.seq_lengths):
                    out = lf.decoder(input_ids=batch.input_ids, position_ids=batch.position_ids, use_cache=False,
                                     cu_seq_lens_q=batch.cu_seqlens, cu_seq_lens_k=batch.cu_seqlens)
            else:
                out = lf.decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
            hidden = out.last_hidden_state
            hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, keep)
            token_logps = head_token_logps(hidden, lf.head.weight, lf.head.bias, picked_targets)
        sums = torch.zeros(n_seq, dtype=torch.float32, device=token_logps.device).index_add(0, owner, token_logps)
        counts = torch.zeros(n_seq, dtype=torch.float32, device=token_logps.device).index_add(
            0, owner, torch.ones_like(token_logps))
        return sums, counts


# ------------------------------------------------------------------ the loss
@dataclass
class DPOOutput:
    """The DPO loss of a batch of pairs and what is logged about it.

    Attributes:
        loss: mean loss over the pairs (differentiable, fp32 scalar).
        margins: per pair, β × (policy - reference) log-ratio of chosen minus that of rejected (detached).
        chosen_rewards: per pair, β × (policy - reference) log-ratio of the chosen answer (detached).
        rejected_rewards: the same for the rejected answer.
    """

    loss: torch.Tensor
    margins: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor


def dpo_loss(policy: torch.Tensor, reference: torch.Tensor, counts: torch.Tensor, settings: DPOSettings) -> DPOOutput:
    """The DPO loss from per-sequence log-probabilities in chosen₀, rejected₀, chosen₁, ... order.

    Args:
        policy: ``[2P]`` summed completion log-probabilities under the trained model.
        reference: ``[2P]`` the same under the reference.
        counts: ``[2P]`` completion tokens per sequence (for ``ipo``'s per-token average).
        settings: beta, loss, label smoothing.
    """
    ratios = policy - reference.to(policy.dtype)
    chosen, rejected = ratios[0::2], ratios[1::2]
    beta, eps = settings.beta, settings.label_smoothing
    delta = chosen - rejected
    if settings.loss == "ipo":
        avg = ratios / counts.clamp(min=1.0)
        per_pair = (avg[0::2] - avg[1::2] - 1 / (2 * beta)) ** 2
    elif settings.loss == "robust":
        per_pair = (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)
    else:
        per_pair = -(1 - eps) * F.logsigmoid(beta * delta) - eps * F.logsigmoid(-beta * delta)
    loss = per_pair.mean()
    if settings.sft_weight:
        # Token-weighted over the batch's preferred answers, as TRL's "sft" term.
        loss = loss - settings.sft_weight * policy[0::2].sum() / counts[0::2].sum().clamp(min=1.0)
    chosen_rewards, rejected_rewards = beta * chosen.detach(), beta * rejected.detach()
    return DPOOutput(loss, chosen_rewards - rejected_rewards, chosen_rewards, rejected_rewards)


@torch.no_grad()
def pair_logps(model: torch.nn.Module, seq_logps: SequenceLogProbs, pairs: Sequence[PreferencePair],
               batch_tokens: int, device: str | torch.device, pad_id: int = 0, step: Any = None,
               reference: bool = False) -> torch.Tensor:
    """Summed completion log-probabilities of every sequence, ``[2 × len(pairs)]`` (chosen₀, rejected₀, ...).

    Args:
        model: the model (a ``peft.PeftModel`` when ``reference``).
        seq_logps: the route (run inside its loss computer's context).
        pairs: the pairs, in the order of the result.
        batch_tokens: token budget per forward pass.
        device: where the batches go.
        pad_id: padding id for the padded layout.
        step: optional context factory (e.g. autocast) entered around each forward pass.
        reference: score with the LoRA adapter disabled (the base weights: DPO's reference, no second copy).

    Raises:
        ConfigError: ``reference`` and the model has no adapter to disable.
    """
    disable = getattr(model, "disable_adapter", None)
    if reference and not callable(disable):
        raise ConfigError("preference training needs a LoRA adapter: the reference is the base model with the "
                          "adapter disabled (method='full' is not supported)")
    out = torch.empty(2 * len(pairs), dtype=torch.float32)
    was_training = model.training
    model.eval()
    try:
        lengths = [p.tokens for p in pairs]
        for idx in plan_epoch(lengths, batch_tokens, 1 << 30, 0, 0, sort_by_length=not seq_logps.loss_fn.packed):
            batch = collate_pairs([pairs[i] for i in idx], seq_logps.loss_fn.packed, pad_id).to(device)
            with contextlib.ExitStack() as stack:
                if reference:
                    stack.enter_context(disable())  # type: ignore[misc]
                if step is not None:
                    stack.enter_context(step())
                sums, _ = seq_logps(batch)
            rows = torch.tensor([2 * i + k for i in idx for k in (0, 1)])
            out[rows] = sums.float().cpu()
    finally:
        model.train(was_training)
    return out


def reference_logps(model: torch.nn.Module, seq_logps: SequenceLogProbs, pairs: Sequence[PreferencePair],
                    batch_tokens: int, device: str | torch.device, pad_id: int = 0,
                    step: Any = None) -> torch.Tensor:
    """:func:`pair_logps` under the reference (the adapter disabled): computed once per pair before training."""
    return pair_logps(model, seq_logps, pairs, batch_tokens, device, pad_id, step, reference=True)
