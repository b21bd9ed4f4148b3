"""Provisioning steps of a run: create (never blindly retried), wait until usable, ship, start detached."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from ftkit.errors import APIError, AuthenticationError, QuotaExceededError
from ftkit_remote.jobfolder import deadman_script, run_script
from ftkit_remote.providers import (
    CapacityError,
    InstanceState,
    Offer,
    ProvisioningFailed,
    SshEndpoint,
)
from ftkit_remote.runbase import DEAD_STATES, DEFAULT_WORKER, RunBase
from ftkit_remote.ssh import HostKeyChanged, SshError, connect
from ftkit_remote.trainer import JobFiles


class Unusable(ProvisioningFailed):
    """The machine answers but cannot run the job (no GPU, disk full): waiting will not help."""


class Provisioning(RunBase):
    """Create → wait until usable (running, SSH, GPU, disk) → ship the job folder → start the worker."""

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
                    await self._destroy_verified(e.instance_id)
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
                        await self._destroy_verified(extra.instance_id)
                    return found[0].instance_id, offer
                raise
        raise CapacityError(f"[remote] no offer could be rented: {'; '.join(tried)}")

    def _launch_spec(self) -> Any:
        from ftkit_remote.providers import LaunchSpec
        from ftkit_remote.ssh import public_key_line

        return LaunchSpec(label=self.label, ssh_public_key=public_key_line(self._key), disk_gb=self.config.disk_gb,
                          env={"FTKIT_JOB_ID": self.ctx.id})  # fmt: skip

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
                    self.st["endpoint"] = {"host": inst.ssh.host, "port": inst.ssh.port, "user": inst.ssh.user}
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
        async with connect(endpoint, self._key, timeout=15) as s:
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

    async def _ship_and_start(self, endpoint: SshEndpoint, gpus: int, stage: Path, model_dir: Path | None) -> None:
        job = f"{self.config.remote_dir}/{self.ctx.id}"
        worker = list(self.config.worker_command or DEFAULT_WORKER)
        setup = (stage / "ftkit_setup.py").is_file()  # staged by stage_wheels before renting
        (stage / "ftkit_run.sh").write_text(run_script(worker, max(gpus, 1), self.config.launcher, setup))
        destroy = self.provider.self_destroy_command() if self.config.deadman else None
        (stage / "ftkit_deadman.sh").write_text(
            deadman_script(destroy, self.st["deadline"], self.config.finished_grace_s, self.config.deadman_check_s)
        )
        if model_dir is not None and not self.config.ship_model:  # the same path must exist on the machine
            files = JobFiles(stage)
            files.write_job(files.read_job().model_copy(update={"model_path": str(model_dir)}))
        async with connect(endpoint, self._key) as s:
            await s.run(f"rm -rf {job}", check=True)
            await s.put(stage, job)
            if model_dir is not None and self.config.ship_model:
                await s.put(model_dir, f"{job}/base_model")
            if self.config.deadman:
                await s.run(_detached(f"{job}/ftkit_deadman.sh", f"{job}/deadman.log"), check=True)
            await s.run(_detached(f"{job}/ftkit_run.sh", f"{job}/worker.log"), check=True)
        self.st["remote_job"] = job
        self.note(f"worker started on the machine in ~/{job}" + (" with a dead-man switch" if destroy else ""))

    # ------------------------------------------------------------------ poll


def _detached(script: str, log: str) -> str:
    """A command line that starts ``script`` in its own session, holding none of the SSH channel's pipes.

    (``cd X && cmd &`` would background a subshell that keeps stdout open, and the exec would never end.)
    """
    return f"setsid nohup bash {script} > {log} 2>&1 < /dev/null &"
