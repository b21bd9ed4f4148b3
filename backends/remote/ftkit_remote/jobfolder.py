"""The job folder shipped to the machine, and the two scripts that run there.

The folder follows the worker protocol of ftkit-hf (``spec.json``, ``data/``, then ``events.jsonl``,
``status.json``, ``checkpoints/``, ``model/`` written by the worker), with paths relative to the
folder so it can live anywhere on the machine. ``ftkit_run.sh`` starts the worker (under torchrun
when the machine has several GPUs) and records its exit code; ``ftkit_deadman.sh`` destroys the
machine with its own instance-scoped key at the deadline or a grace period after the job ended —
whether or not the laptop that started it is still around.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
from pathlib import Path
from typing import Any

from ftkit.atomic import atomic_write_text
from ftkit.backend import JobContext
from ftkit.errors import BackendUnavailableError


def stage_job_folder(ctx: JobContext, hf_options: dict[str, Any], custom_worker: bool) -> tuple[Path, Path | None]:
    """Write the folder to ship under ``ctx.workdir/stage``; returns it and the base model folder to ship.

    With the default worker the spec is ftkit-hf's (model resolved, labels and lengths computed by
    the hf backend's own preparation, so a bad example fails here, before anything is rented).
    A custom worker gets the JobSpec itself, with data paths relative to the folder.
    """
    stage = ctx.workdir / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "data").mkdir(parents=True)
    data: dict[str, str | None] = {"train": None, "validation": None}
    for field in ("train", "validation"):
        src = getattr(ctx.spec, field)
        if src is not None:
            shutil.copyfile(src, stage / "data" / f"{field}.jsonl")
            data[field] = f"data/{field}.jsonl"
    model_dir: Path | None = None
    if custom_worker:
        spec: dict[str, Any] = ctx.spec.model_dump(mode="json") | data | {"job_id": ctx.id}
    else:
        try:
            from ftkit_hf.backend import HFBackend
            from ftkit_hf.config import HFConfig
        except ImportError:
            raise BackendUnavailableError("the remote backend runs ftkit-hf's worker: pip install ftkit-hf") from None
        config = HFConfig.model_validate(hf_options)
        prep = HFBackend()._prepare(ctx.spec, config)
        model_dir = Path(prep["model"].path)
        plan = prep["plan"]  # the settings chosen from the data, as ftkit-hf's submit() uses them
        if plan.validation is not None:
            from ftkit_hf.backend import split_lines

            split_lines(ctx.spec.train, set(plan.validation.lines), stage / "data" / "train.jsonl",
                        stage / "data" / "validation.jsonl")
            data["validation"] = "data/validation.jsonl"
        # The same fields ftkit-hf's submit() writes, with paths relative to the job folder.
        spec = {
            "job_id": ctx.id,
            "task": ctx.spec.task,
            "model": prep["model"].name,
            "model_path": "base_model",
            "model_kind": prep["model"].kind,
            "head": prep["head"],
            "labels": prep["labels"],
            "preamble": ctx.spec.preamble,
            "max_length": prep["max_length"],
            "train": data["train"],
            "validation": data["validation"],
            "hyperparameters": ctx.spec.hyperparameters.model_dump(),
            "training": plan.model_dump(mode="json"),
            "config": config.model_dump(),
        }
    atomic_write_text(stage / "spec.json", json.dumps(spec, indent=1))
    return stage, model_dir


def run_script(worker_argv: list[str], num_gpus: int, launcher: str, setup: bool = False) -> str:
    """``ftkit_run.sh``: start the worker in the job folder, record pid and exit code.

    With ``setup``, ``ftkit_setup.py`` first installs the shipped wheels (see
    :mod:`ftkit_remote.machine_setup`); if it fails the worker never starts, and the setup's own
    ``status.json`` tells the client why.
    """
    argv = list(worker_argv)
    module_args = argv[argv.index("-m") + 1 :] if argv[:2] == ["python", "-m"] else None
    if module_args and (launcher == "torchrun" or (launcher == "auto" and num_gpus > 1)):
        argv = ["torchrun", "--standalone", f"--nproc-per-node={num_gpus}", "-m", *module_args]
    elif module_args and launcher == "accelerate":
        argv = ["accelerate", "launch", f"--num_processes={num_gpus}", "-m", *module_args]
    return (
        "#!/bin/bash\n"
        "# Written by ftkit-remote: runs the worker detached from any SSH session.\n"
        'cd "$(dirname "$0")"\n'
        "echo $$ > worker.pid\n"
        "export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1\n"
        + (_SETUP if setup else "")
        + f"{shlex.join(argv)}\n"
        "echo $? > exit_code.tmp && mv exit_code.tmp exit_code\n"
    )


# The machine's own python installs the wheels; the worker then sees them first on PYTHONPATH.
_SETUP = (
    "if ! python ftkit_setup.py; then echo 1 > exit_code.tmp && mv exit_code.tmp exit_code; exit 1; fi\n"
    'export PYTHONPATH="$(cat .ftkit-pythonpath)${PYTHONPATH:+:$PYTHONPATH}"\n'
)


def deadman_script(destroy_argv: list[str] | None, deadline: float, grace_s: float, check_s: float) -> str:
    """``ftkit_deadman.sh``: destroy this machine at ``deadline`` (unix s) or ``grace_s`` after the worker ended.

    Without ``destroy_argv`` (the provider has no instance-scoped key) it only kills the worker at the
    deadline; the client and ``ftkit remote gc`` still destroy the machine.
    """
    action = shlex.join(destroy_argv) if destroy_argv else 'kill -TERM -- -"$(cat worker.pid)" 2>/dev/null'
    return (
        "#!/bin/bash\n"
        "# Written by ftkit-remote: the dead-man switch. Destroys this machine with its own scoped key.\n"
        'cd "$(dirname "$0")"\n'
        "echo $$ > deadman.pid\n"
        "while true; do\n"
        "  now=$(date +%s)\n"
        # ceil: never before the client's own deadline, so the client reports max_duration, not a cancel
        f"  if [ \"$now\" -ge {math.ceil(deadline)} ]; then echo \"deadline reached\"; break; fi\n"
        f"  if [ -f exit_code ] && [ $((now - $(stat -c %Y exit_code))) -ge {int(grace_s)} ]; then\n"
        "    echo \"job ended and nobody fetched it\"; break; fi\n"
        f"  sleep {check_s}\n"
        "done\n"
        "date -u +'%Y-%m-%dT%H:%M:%SZ destroying this instance'\n"
        f"for i in 1 2 3 4 5; do {action} && break; sleep 10; done\n"
    )
