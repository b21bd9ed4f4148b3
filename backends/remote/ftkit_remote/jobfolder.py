"""The job folder shipped to the machine, and the two scripts that run there.

The folder follows the worker protocol of ftkit-hf (:mod:`ftkit_hf.protocol`: ``spec.json``, ``data/``,
then ``events.jsonl``, ``status.json``, ``checkpoints/``, ``model/`` written by the worker), with paths
relative to the folder so it can live anywhere on the machine. ``ftkit_run.sh`` starts the worker (under torchrun
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
from ftkit_remote.trainer import SPEC, HFConfig, stage_job


def stage_job_folder(ctx: JobContext, hf_options: dict[str, Any], custom_worker: bool) -> tuple[Path, Path | None]:
    """Write the folder to ship under ``ctx.workdir/stage``; returns it and the base model folder to ship.

    With the default worker the folder is ftkit-hf's (:func:`ftkit_hf.backend.stage_job`, paths relative
    to the folder): the model is resolved and the data tokenized here, so a bad example fails before
    anything is rented. A custom worker gets the JobSpec itself, with data paths relative to the folder.
    """
    stage = ctx.workdir / "stage"
    shutil.rmtree(stage, ignore_errors=True)
    if not custom_worker:
        staged = stage_job(ctx.id, ctx.spec, HFConfig.model_validate(hf_options), stage, portable=True)
        return stage, staged.model_dir
    (stage / "data").mkdir(parents=True)
    data: dict[str, str | None] = {"train": None, "validation": None}
    for field in ("train", "validation"):
        src = getattr(ctx.spec, field)
        if src is not None:
            shutil.copyfile(src, stage / "data" / f"{field}.jsonl")
            data[field] = f"data/{field}.jsonl"
    spec: dict[str, Any] = ctx.spec.model_dump(mode="json") | data | {"job_id": ctx.id}
    atomic_write_text(stage / SPEC, json.dumps(spec, indent=1))
    return stage, None


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
        f'  if [ "$now" -ge {math.ceil(deadline)} ]; then echo "deadline reached"; break; fi\n'
        f"  if [ -f exit_code ] && [ $((now - $(stat -c %Y exit_code))) -ge {int(grace_s)} ]; then\n"
        '    echo "job ended and nobody fetched it"; break; fi\n'
        f"  sleep {check_s}\n"
        "done\n"
        "date -u +'%Y-%m-%dT%H:%M:%SZ destroying this instance'\n"
        f"for i in 1 2 3 4 5; do {action} && break; sleep 10; done\n"
    )
