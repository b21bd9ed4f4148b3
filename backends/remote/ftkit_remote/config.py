"""RemoteConfig: every option of the remote backend (the ``[remote]`` section of ``ftkit.toml``)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ftkit.backend import BackendConfig
from ftkit_remote.providers.base import OfferQuery, Tier


class RemoteConfig(BackendConfig):
    """Options of the remote backend: which provider, which machine, and the limits that cap the bill.

    Every limit is finite and above zero (the base model refuses ``inf`` and ``nan``), and the ones the
    dead-man switch's shell script uses have a ceiling (a year of ``max_duration_hours`` is the most):
    a run always has a deadline, and the switch always fires.
    """

    zero_allowed: ClassVar[dict[str, str]] = {
        "min_reliability": "0 accepts hosts of any reliability (a filter, not a limit)",
        "min_free_disk_gb": "0 skips the free-disk check (a filter, not a limit)",
    }

    provider: Literal["vast", "runpod", "lambda", "ssh"] = Field(description="Where to rent the GPU.")
    provider_options: dict[str, Any] = Field(
        default_factory=dict,
        description="The provider's own options (base_url, image, cloud...); API keys come from the environment "
        "(VAST_API_KEY, RUNPOD_API_KEY, LAMBDA_API_KEY) or `api_key` here (never stored).",
    )
    gpu_names: list[str] = Field(default_factory=list, description="Acceptable GPU models; empty accepts any.")
    num_gpus: int = Field(default=1, ge=1, le=16, description="GPUs on the one machine (torchrun when > 1).")
    min_gpu_ram_gb: float | None = Field(default=None, gt=0, description="Minimum memory per GPU.")
    max_price_per_hour: float | None = Field(default=None, gt=0, description="Price ceiling in USD per hour.")
    min_reliability: float | None = Field(default=None, ge=0, le=1, description="Minimum host reliability (vast).")
    disk_gb: int = Field(default=50, ge=8, description="Disk to rent, in GB.")
    tier: Tier = Field(default=Tier.ON_DEMAND, description="on_demand, or interruptible (spot/bid).")
    max_offers_tried: int = Field(default=3, ge=1, description="Offers to try when create fails for capacity.")
    estimated_train_hours: float = Field(default=1.0, gt=0, description="Training time assumed by the estimate.")
    setup_hours: float = Field(default=0.25, gt=0, description="Boot, upload and download time assumed.")
    max_duration_hours: float = Field(
        default=6.0, gt=0, le=8760, description="The machine is destroyed after this long, finished or not (≤ 1 year)."
    )
    ready_timeout_s: float | None = Field(
        default=None, gt=0, description="Give up on a machine not usable after this long (provider default)."
    )
    min_free_disk_gb: float = Field(default=5.0, ge=0, description="Free disk the machine must have.")
    require_gpu: bool = Field(default=True, description="Refuse a machine where nvidia-smi shows no GPU.")
    hf: dict[str, Any] = Field(default_factory=dict, description="Options of the hf trainer run on the machine.")
    ship_model: bool = Field(default=True, description="Upload the base model folder with the job.")
    ship_wheels: bool = Field(
        default=True,
        description="Ship the client's own ftkit and ftkit-hf as wheels (built from what is installed here, "
        "editable installs included) and install them on the machine in a private folder before the worker "
        "starts, so it runs the same code as the client. False: trust the image to have them.",
    )
    ship_distributions: list[str] = Field(
        default_factory=list,
        description="More installed distributions to ship as wheels (your own plugin, a custom worker's "
        "package). With a custom worker_command, only these are shipped.",
    )
    remote_pip: list[str] | None = Field(
        default=None,
        description="pip requirements (or options) installed on the machine before the worker. Unset: the "
        "shipped code's requirements the machine lacks are installed at the client's versions (never torch). "
        "A list: exactly these, and a missing requirement is an error; [] installs nothing.",
    )
    launcher: Literal["auto", "python", "torchrun", "accelerate"] = Field(
        default="auto", description="auto: torchrun on several GPUs, plain python on one."
    )
    worker_command: list[str] | None = Field(
        default=None, description="Replace `python -m ftkit_hf.worker run .` (it runs in the job folder)."
    )
    remote_dir: str = Field(default="ftkit-jobs", description="Folder under the remote home for job folders.")
    deadman: bool = Field(default=True, description="Install the on-machine dead-man switch where possible.")
    deadman_check_s: float = Field(
        default=30.0, gt=0, le=600, description="How often the dead-man switch looks (≤ 600: it may act this late)."
    )
    finished_grace_s: float = Field(
        default=1800.0, gt=0, le=604_800,
        description="The switch destroys the machine this long after the job ended unfetched (≤ 7 days).",
    )
    ssh_key_path: str | None = Field(default=None, description="Private key to use; default $FTKIT_HOME/remote.")
    poll_interval: float = Field(default=5.0, gt=0, description="Seconds between looks at a running job.")

    def offer_query(self, max_cost: float | None = None) -> OfferQuery:
        """The offer search this config asks for."""
        return OfferQuery(
            gpu_names=tuple(self.gpu_names),
            num_gpus=self.num_gpus,
            min_gpu_ram_gb=self.min_gpu_ram_gb,
            max_price_per_hour=self.max_price_per_hour,
            min_reliability=self.min_reliability,
            disk_gb=self.disk_gb,
            tier=self.tier,
        )
