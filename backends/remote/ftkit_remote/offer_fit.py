"""Offers whose GPU the job cannot fit are never rented: the memory plan checked against each offer.

Before anything is rented, each offer's GPU memory is checked against ftkit-hf's memory plan for the job
(:func:`ftkit_hf.memory_plan.job_memory_decision`: the model's config, the ``hf`` options, the longest training
example, the precision the GPU trains in: fp16 on T4/V100, bf16 from Ampere on). The plan may shorten passes or
turn gradient checkpointing on, as the worker will on the machine; an offer that does not fit even so is skipped,
with the reason in the job's events (and QLoRA named where it would fit). When no offer fits, the run stops with
a :class:`~ftkit.errors.ConfigError` listing why, before a machine exists.

Only the default worker is planned: a custom ``worker_command`` may do anything, so its offers are left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ftkit.errors import ConfigError
from ftkit_remote.providers import Offer

if TYPE_CHECKING:
    from ftkit_remote.core import RunCore

GB = 10**9  # providers quote GPU memory in (marketing) GB; 1e9 bytes each is below what the cards report


def _need(run: RunCore) -> dict[str, Any] | None:
    """The model's config and the longest example, computed once per job (kept in the run's state)."""
    if run.config.worker_command is not None:
        return None
    cached = run.state.memory_need
    if cached is not None:
        return cached or None  # {}: computed before, nothing to plan (a classification head)
    from ftkit_remote.trainer import HFConfig, job_memory_need

    need = job_memory_need(run.ctx.spec, HFConfig.model_validate(run.config.hf)) or {}
    run.state.memory_need = need
    return need or None


def fit_offers(offers: list[Offer], run: RunCore) -> list[Offer]:
    """The offers whose GPU the job fits, in their order; each one skipped is said in the run's events.

    Args:
        offers: the provider's offers, cheapest first.
        run: the remote run (its job, ``hf`` options, state and events).

    Returns:
        The offers that fit (all of them for a custom worker, a classification head, or unknown GPU memory).

    Raises:
        ConfigError: there were offers and the job fits none of them.
    """
    need = _need(run) if offers else None
    if need is None:
        return offers
    from ftkit_remote.trainer import HFConfig, gpu_precision, job_memory_decision

    hf = HFConfig.model_validate(run.config.hf)
    kept: list[Offer] = []
    skipped: list[str] = []
    for offer in offers:
        gb = offer.gpu_ram_gb or _catalogue_gb(offer.gpu_name)
        if not gb:
            run.note(f"offer {offer.offer_id}: {offer.gpu_name} memory unknown; the memory plan cannot check it",
                     level="warning")  # fmt: skip
            kept.append(offer)
            continue
        precision = gpu_precision(offer.gpu_name) if hf.precision == "auto" else hf.precision
        decision = job_memory_decision(need["model_config"], hf, device="cuda", precision=precision,
                                       longest_example=need["longest"], capacity_bytes=int(gb * GB))
        if decision is None or decision.fits:
            if decision is not None and not kept:  # what the worker will do on the cheapest that fits
                run.ctx.state.setdefault("manifest", {})["remote_memory"] = {"offer_id": offer.offer_id,
                                                                             **decision.manifest()}
            kept.append(offer)
            continue
        why = f"{offer.gpu_name} {gb:g} GB: {decision.message.removeprefix('memory plan: ')}"
        skipped.append(f"offer {offer.offer_id} ({why})")
        run.note(f"offer {offer.offer_id} skipped: the job does not fit its {why}", level="warning",
                 memory=decision.manifest())  # fmt: skip
    if not kept:
        shown = "; ".join(skipped[:5]) + (f"; and {len(skipped) - 5} more" if len(skipped) > 5 else "")
        raise ConfigError(f"[remote] the job fits no {run.config.provider} offer's GPU: {shown}")
    return kept


def _catalogue_gb(gpu_name: str) -> float | None:
    from ftkit.costs.catalogue import gpu_spec

    try:
        return float(gpu_spec(gpu_name).memory_gb)
    except ConfigError:
        return None
