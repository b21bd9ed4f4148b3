"""The reaper: find instances that carry ftkit's label and that no running job owns, and destroy them.

An instance is *owned* (left alone) only when all of these hold:

- an open lease in the ledger carries its label;
- that lease's job is in the registry and still active (not succeeded/failed/cancelled);
- the lease's deadline (``max_duration``) has not passed;
- the worker was started, or the process setting the machine up is still alive.

Everything else with the label — a client killed between create and recording the id, a job whose
teardown could not be verified, a run past its deadline, a lease whose job was deleted — is destroyed,
verified gone, and its lease closed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from ftkit.errors import FtkitError, JobNotFoundError
from ftkit.store import JobStore
from ftkit_remote.leases import Lease, LeaseLedger
from ftkit_remote.providers import LABEL_PREFIX, Instance, InstanceState, Provider, make_provider
from ftkit_remote.teardown import destroy_until_gone


@dataclass
class GcFinding:
    """One labelled instance or lease that gc looked at."""

    provider: str
    instance_id: str | None
    label: str | None
    action: str  # "kept" | "destroyed" | "would destroy" | "lease closed" | "failed"
    reason: str


def owner_reason(lease: Lease | None, store: JobStore, now: float | None = None) -> str | None:
    """None when a live job owns the lease's instance, else why it is an orphan."""
    now = now or time.time()
    if lease is None or lease.status == "released":
        return "no open lease carries this label"
    if now > lease.deadline:
        return "past its max_duration deadline"
    try:
        record = store.get(lease.job_id)
    except JobNotFoundError:
        return f"job {lease.job_id} is not in the registry"
    if record.status.is_terminal:
        return f"job {lease.job_id} is {record.status.value}"
    if not lease.started and not lease.driver_alive():
        return f"the process that set it up (pid {lease.driver_pid}) died before the worker started"
    return None


async def collect(
    providers: dict[str, Provider], ledger: LeaseLedger | None = None, store: JobStore | None = None,
    dry_run: bool = False,
) -> list[GcFinding]:  # fmt: skip
    """Scan ``providers`` for labelled instances and destroy the orphans (unless ``dry_run``)."""
    ledger = ledger or LeaseLedger()
    store = store or JobStore()
    leases = {x.label: x for x in ledger.all()}
    findings: list[GcFinding] = []
    seen_labels: set[str] = set()
    for name, provider in providers.items():
        if not provider.caps.rents:
            continue
        for inst in await provider.list(LABEL_PREFIX):
            lease = leases.get(inst.label or "")
            seen_labels.add(inst.label or "")
            why = owner_reason(lease, store)
            if why is None:
                findings.append(GcFinding(name, inst.instance_id, inst.label, "kept", "owned by an active job"))
                continue
            if dry_run:
                findings.append(GcFinding(name, inst.instance_id, inst.label, "would destroy", why))
                continue
            ok = await _destroy(provider, inst)
            findings.append(GcFinding(name, inst.instance_id, inst.label, "destroyed" if ok else "failed", why))
            if ok and lease is not None and lease.status != "released":
                ledger.release(lease.label, None, f"destroyed by gc: {why}")
    # Open leases whose machine is gone (or never came to be) are closed, so the ledger stays truthful.
    for lease in ledger.open_leases():
        if lease.label in seen_labels or lease.provider not in providers or dry_run:
            continue
        if owner_reason(lease, store) is None and lease.instance_id is None:
            continue  # still being created by a live process
        provider = providers[lease.provider]
        if not provider.caps.rents:
            if owner_reason(lease, store) is not None:
                ledger.release(lease.label, None, "closed by gc: own host, job not active")
                findings.append(GcFinding(lease.provider, lease.instance_id, lease.label, "lease closed", "own host"))
            continue
        found = await provider.get(lease.instance_id) if lease.instance_id else None
        if found is None or found.state is InstanceState.TERMINATED:
            ledger.release(lease.label, None, "closed by gc: the instance no longer exists")
            findings.append(GcFinding(lease.provider, lease.instance_id, lease.label, "lease closed", "instance gone"))
    return findings


async def _destroy(provider: Provider, inst: Instance, timeout: float = 120.0) -> bool:
    return await destroy_until_gone(provider, inst.instance_id, timeout=timeout, first_wait=1.0, max_wait=1.0,
                                    retry_on=(FtkitError,))  # fmt: skip


def providers_for_gc(extra: dict[str, dict[str, Any]] | None = None, ledger: LeaseLedger | None = None) -> tuple[
    dict[str, Provider], list[str]
]:  # fmt: skip
    """Providers named by open leases (with their stored, key-less options) plus ``extra``; and the skipped ones."""
    ledger = ledger or LeaseLedger()
    wanted: dict[str, dict[str, Any]] = {}
    for lease in ledger.open_leases():
        wanted.setdefault(lease.provider, dict(lease.provider_options))
    for name, opts in (extra or {}).items():
        wanted[name] = wanted.get(name, {}) | opts
    built: dict[str, Provider] = {}
    skipped: list[str] = []
    for name, opts in wanted.items():
        try:
            built[name] = make_provider(name, opts)
        except FtkitError as e:
            skipped.append(f"{name}: {e}")
    return built, skipped
