"""The provisioning step of a run: create (never blindly retried), wait until usable, hand over to shipping.

It ends with the worker running on a machine that answered SSH, showed its GPUs and had room; any
failure in here is the caller's to tear down (:class:`~ftkit_remote.teardown.Teardown`).
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

from ftkit.errors import APIError, AuthenticationError, ConfigError, QuotaExceededError
from ftkit_remote.core import RunCore
from ftkit_remote.offer_fit import fit_offers
from ftkit_remote.providers import (
    CapacityError,
    InstanceState,
    LaunchSpec,
    Offer,
    ProvisioningFailed,
    SshEndpoint,
)
from ftkit_remote.shipping import Shipping, StagedFolder
from ftkit_remote.ssh import HostKeyChanged, SshError, connect, public_key_line
from ftkit_remote.state import Endpoint
from ftkit_remote.teardown import DEAD_STATES, Teardown


class Unusable(ProvisioningFailed):
    """The machine answers but cannot run the job (no GPU, disk full): waiting will not help."""


class Provisioning:
    """Offers → create → wait until usable (running, SSH, GPU, disk) → ship the job folder and start the worker."""

    def __init__(self, core: RunCore, shipping: Shipping, teardown: Teardown) -> None:
        self.core = core
        self.config = core.config
        self.provider = core.provider
        self.label = core.label
        self.shipping = shipping
        self.teardown = teardown

    def note(self, message: str, level: str = "info", kind: str = "message", **data: Any) -> None:
        """An event of the run."""
        self.core.note(message, level, kind, **data)

    async def offers(self) -> list[Offer]:
        """The matching offers, cheapest first, without any whose price the guards cannot compare."""
        offers = []
        for offer in fit_offers(await self.provider.search_offers(self.config.offer_query()), self.core):
            # A price the guards cannot compare (nan, inf) or one below zero (or zero where the machine is rented)
            # would slip past max_cost: such an offer is never taken.
            if math.isfinite(offer.price_per_hour) and (offer.price_per_hour > 0 or not self.provider.caps.rents):
                offers.append(offer)
            else:
                self.note(f"offer {offer.offer_id} skipped: price {offer.price_per_hour!r}/h", level="warning")
        if not offers:
            raise ConfigError(
                f"[remote] no {self.config.provider} offer matches gpu_names={self.config.gpu_names or 'any'}, "
                f"num_gpus={self.config.num_gpus}, max_price_per_hour={self.config.max_price_per_hour}, "
                f"disk_gb={self.config.disk_gb}"
            )
        return offers

    async def _create(self, offers: list[Offer]) -> tuple[str, Offer]:
        tried: list[str] = []
        for offer in offers[: self.config.max_offers_tried]:
            spec = self._launch_spec()
            try:
                return await self.provider.create(offer, spec), offer
            except ProvisioningFailed as e:  # something exists: destroy it before trying the next offer
                tried.append(f"{offer.offer_id}: {e}")
                self.note(f"offer {offer.offer_id} failed after create: {e}; destroying it", level="warning")
                if e.instance_id:
                    await self.teardown.destroy(e.instance_id)
            except CapacityError as e:
                tried.append(f"{offer.offer_id}: {e}")
                self.note(f"offer {offer.offer_id} unavailable: {e}", level="warning")
            except (AuthenticationError, QuotaExceededError):
                raise
            except APIError as e:
                # Create is not idempotent: an error may still have created something. Reconcile by label.
                found = [i for i in await self.provider.list(self.label) if i.label == self.label]
                if found:
                    self.note(f"create answered {e} but instance {found[0].instance_id} exists; using it",
                              level="warning")  # fmt: skip
                    for extra in found[1:]:
                        await self.teardown.destroy(extra.instance_id)
                    return found[0].instance_id, offer
                raise
        raise CapacityError(f"[remote] no offer could be rented: {'; '.join(tried)}")

    def _launch_spec(self) -> LaunchSpec:
        return LaunchSpec(label=self.label, ssh_public_key=public_key_line(self.core.key),
                          disk_gb=self.config.disk_gb, env={"FTKIT_JOB_ID": self.core.ctx.id})  # fmt: skip

    async def _wait_ready(self, instance_id: str) -> tuple[SshEndpoint, int]:
        """Provider says running, SSH answers, GPU visible, disk free — or ProvisioningFailed at the deadline."""
        limit = self.config.ready_timeout_s or self.provider.caps.ready_deadline_s
        deadline = time.monotonic() + limit
        last = "no answer yet"
        delay = min(1.0, self.config.poll_interval)
        while True:
            inst = await self.provider.get(instance_id)
            if inst is None:
                raise ProvisioningFailed(f"instance {instance_id} disappeared while booting", instance_id)
            if inst.state in DEAD_STATES:
                raise ProvisioningFailed(
                    f"instance {instance_id} is {inst.state.value} while booting ({inst.raw_status}: {inst.message})",
                    instance_id,
                )
            if inst.state is InstanceState.UNKNOWN:
                self.note(f"unknown {self.provider.name} status {inst.raw_status!r}; still waiting", level="warning")
            if inst.state is InstanceState.RUNNING and inst.ssh is not None:
                try:
                    gpus = await self._probe(inst.ssh, instance_id)
                    self.core.state.endpoint = Endpoint(host=inst.ssh.host, port=inst.ssh.port, user=inst.ssh.user)
                    return inst.ssh, gpus
                except HostKeyChanged:
                    raise
                except Unusable:
                    raise
                except SshError as e:
                    last = f"ssh: {e}"
            else:
                last = f"{inst.state.value} ({inst.raw_status})"
            if time.monotonic() > deadline:
                raise ProvisioningFailed(
                    f"instance {instance_id} not usable after {limit:.0f} s (last: {last})", instance_id
                )
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, max(self.config.poll_interval, 1.0))

    async def _probe(self, endpoint: SshEndpoint, instance_id: str) -> int:
        """SSH works, the GPUs show, the disk has room. Returns the GPU count."""
        async with connect(endpoint, self.core.key, timeout=15) as s:
            r = await s.run(
                "nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null; echo '--ftkit--'; "
                "mkdir -p " + self.config.remote_dir + " && df -Pk " + self.config.remote_dir + " | tail -1",
                timeout=60,
            )
        gpu_part, _, df_part = r.stdout.partition("--ftkit--")
        gpus = [ln for ln in gpu_part.splitlines() if ln.strip()]
        if self.config.require_gpu and not gpus:
            raise Unusable(f"instance {instance_id}: nvidia-smi shows no GPU", instance_id)
        try:
            free_gb = int(df_part.split()[3]) / 1024 / 1024
        except (IndexError, ValueError):
            free_gb = float("inf")  # no df: do not refuse the machine for that
        if free_gb < self.config.min_free_disk_gb:
            raise Unusable(
                f"instance {instance_id}: only {free_gb:.2f} GB free, {self.config.min_free_disk_gb} GB needed",
                instance_id,
            )
        if gpus:
            self.note(f"machine ready: {len(gpus)} GPU(s): {gpus[0].strip()}", gpus=[g.strip() for g in gpus])
        return len(gpus)

    async def _ship_and_start(self, endpoint: SshEndpoint, gpus: int, staged: StagedFolder) -> None:
        """Hand the usable machine to the shipping step: upload the folder, start the worker (and dead-man switch)."""
        await self.shipping.ship_and_start(endpoint, gpus, staged)


