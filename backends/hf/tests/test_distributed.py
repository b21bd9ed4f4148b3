"""Data-parallel training under torchrun: 2 CPU processes over gloo, checked against one process.

The engine splits every step's examples between the ranks and weights each rank's loss by its share
of the step's targets, so 2 ranks must give the same losses and weights as 1 process on the same
steps (up to float summation order). The worker runs under ``python -m torch.distributed.run``
started by the backend itself (``num_processes=2``); cancel must stop both ranks.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

import ftkit
from ftkit import JobStatus

HERE = Path(__file__).parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]


def test_split_step_is_disjoint_balanced_and_deterministic():
    from ftkit_hf.engine.distributed import split_step

    lengths = [50, 10, 40, 30, 20, 5]
    shards = split_step(range(6), lengths, 2)
    assert sorted(i for s in shards for i in s) == list(range(6))
    loads = [sum(lengths[i] for i in s) for s in shards]
    assert abs(loads[0] - loads[1]) <= 5
    assert split_step(range(6), lengths, 2) == shards
    assert split_step([3], lengths, 2) == [[3], []]  # fewer examples than ranks: one rank gets none


def test_num_processes_is_checked_before_anything_starts(tmp_path, tiny_llama_dir, ftkit_home, write_rows):
    import torch
    from ftkit_hf.backend import HFBackend, HFConfig

    from ftkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[hf\] num_processes"):
        HFBackend().parse_config({"num_processes": 0})
    assert HFBackend().parse_config({"num_processes": "auto"}).num_processes == "auto"
    train = write_rows(tmp_path / "t.jsonl", [{"text": "a", "label": "ham"}, {"text": "b", "label": "spam"}])
    spec = ftkit.JobSpec(task="classification", model=str(tiny_llama_dir), train=train, labels=["ham", "spam"])
    HFBackend().check(spec, HFConfig(device="cpu", num_processes=2))  # CPU processes over gloo are fine
    with pytest.raises(ConfigError, match="classification-head trainer runs in one process"):
        HFBackend().check(spec, HFConfig(device="cpu", num_processes=2, head="sequence_classification"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            HFBackend().check(spec, HFConfig(device="cuda", num_processes=2))
    else:
        with pytest.raises(ConfigError, match=r"torch sees \d+ CUDA GPUs"):
            HFBackend().check(spec, HFConfig(device="cuda", num_processes=torch.cuda.device_count() + 1))


def _torchrun(args: list[str], cwd: Path) -> None:
    proc = subprocess.run([*TORCHRUN, str(HERE / "ddp_train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _metrics(events: list[dict]) -> dict[int, tuple[float, float | None]]:
    return {e["step"]: (e["train_loss"], e.get("valid_loss")) for e in events if e["kind"] == "metrics"}


@pytest.mark.slow
def test_engine_two_ranks_match_one_process_through_a_stop_and_resume(tmp_path):
    import torch
    from safetensors.torch import load_file

    sys.path.insert(0, str(HERE))
    import ddp_train
    from ftkit_hf.engine import train
    from ftkit_hf.engine.checkpoint import trainable_state
    from ftkit_hf.engine.testing import tiny_lora_model

    # One process: the reference.
    train_set, valid_set = ddp_train.data()
    model = tiny_lora_model("llama")
    start = trainable_state(model)
    events: list[dict] = []
    ref = train(model, train_set, valid_set, ddp_train.settings(), checkpoint_dir=tmp_path / "ref",
                on_event=events.append)
    ref_weights, ref_metrics = trainable_state(model), _metrics(events)
    assert ref.steps == 40 and not ref.stopped

    # Two ranks, stopped after step 10 by rank 0 alone, then resumed by two fresh ranks.
    ckpt = tmp_path / "ckpt"
    _torchrun([str(tmp_path / "a"), str(ckpt), "--stop-after", "10"], tmp_path)
    first = json.loads((tmp_path / "a" / "result.json").read_text())
    assert first["world"] == 2 and first["stopped"] and first["steps"] == 10
    state = torch.load(ckpt / "step-10" / "state.pt", weights_only=True)
    assert len(state["rng_by_rank"]) == 2
    _torchrun([str(tmp_path / "b"), str(ckpt)], tmp_path)
    second = json.loads((tmp_path / "b" / "result.json").read_text())
    assert second["steps"] == ref.steps and not second["stopped"]

    metrics = _metrics(json.loads((tmp_path / "a" / "events.json").read_text()))
    metrics.update(_metrics(json.loads((tmp_path / "b" / "events.json").read_text())))
    assert sorted(metrics) == sorted(ref_metrics) == list(range(1, 41))
    for step, (loss, valid) in ref_metrics.items():
        assert metrics[step][0] == pytest.approx(loss, rel=1e-5), step
        assert (metrics[step][1] is None) == (valid is None), step
        if valid is not None:
            assert metrics[step][1] == pytest.approx(valid, rel=1e-5), step
    weights = load_file(str(tmp_path / "b" / "weights.safetensors"))
    moved = max(float((ref_weights[k] - start[k]).abs().max()) for k in ref_weights)
    diff = max(float((ref_weights[k] - weights[k]).abs().max()) for k in ref_weights)
    assert moved > 1e-2  # training changed the weights...
    assert diff < 1e-5  # ...and the two ranks changed them exactly as one process did


def _job(spam_files, model: Path, **options) -> ftkit.FineTuneJob:
    # fp32: under bf16 autocast a different grouping of the examples rounds differently.
    spec = ftkit.JobSpec(task="classification", model=str(model), train=spam_files["train"],
                         validation=spam_files["valid"], labels=["ham", "spam"],
                         hyperparameters=ftkit.Hyperparameters(epochs=1, learning_rate=1e-3))
    options = {"device": "cpu", "precision": "fp32", "threads": 1, **options}
    return ftkit.FineTuneJob.create(spec, backend="hf", options=options)


def _events(job: ftkit.FineTuneJob) -> list[dict]:
    path = job.workdir / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


@pytest.mark.slow
def test_worker_under_torchrun_matches_one_process(spam_files, tiny_llama_dir, ftkit_home):
    from safetensors.torch import load_file

    jobs = {n: _job(spam_files, tiny_llama_dir, num_processes=n, batch_tokens=1024, eval_every=2) for n in (1, 2)}
    for job in jobs.values():
        job.start()
    for n, job in jobs.items():
        assert job.wait(timeout=300) is JobStatus.SUCCEEDED, (n, (job.workdir / "worker.log").read_text()[-3000:])

    one, two = jobs[1], jobs[2]
    messages = [e["message"] for e in _events(two) if e["kind"] == "message"]
    assert sum(m.startswith("worker started") for m in messages) == 1, messages  # rank 0 alone writes
    assert sum(m.startswith("training done") for m in messages) == 1
    assert any("x 2 processes" in m for m in messages)
    assert "Traceback" not in (two.workdir / "worker.log").read_text()

    # The same steps as one process (batch_tokens is the budget of the whole step), all of the epoch.
    m1, m2 = one.metrics(), two.metrics()
    assert [m["step"] for m in m2] == [m["step"] for m in m1] == list(range(1, len(m1) + 1))
    assert len(m1) >= 4 and m2[-1]["total_steps"] == len(m1)
    status = json.loads((two.workdir / "status.json").read_text())
    assert status["status"] == "succeeded" and status["result"]["epochs_done"] == 1.0
    for a, b in zip(m1, m2, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-5), (str(one.workdir), str(two.workdir))
        assert (b.get("valid_loss") is None) == (a.get("valid_loss") is None)
        if a.get("valid_loss") is not None:
            assert b["valid_loss"] == pytest.approx(a["valid_loss"], rel=1e-5)

    w1 = load_file(str(one.workdir / "model" / "adapter_model.safetensors"))
    w2 = load_file(str(two.workdir / "model" / "adapter_model.safetensors"))
    assert w1.keys() == w2.keys()
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1) < 1e-5
    assert not list(two.workdir.glob(".model.tmp-*"))


def _ranks(pid: int) -> list[int]:
    import psutil

    return [p.pid for p in psutil.Process(pid).children(recursive=True) if "ftkit_hf.worker" in " ".join(p.cmdline())]


@pytest.mark.slow
def test_cancel_stops_both_ranks_with_a_checkpoint(spam_files, tiny_llama_dir, ftkit_home):
    import psutil

    job = _job(spam_files, tiny_llama_dir, num_processes=2, max_steps=10_000, batch_tokens=128,
               checkpoint_every=1000)
    job.start()
    deadline = time.time() + 240
    while not any(e["kind"] == "metrics" for e in _events(job)):
        assert time.time() < deadline, (job.workdir / "worker.log").read_text()[-3000:]
        time.sleep(0.1)
    launcher = job.record.state["pid"]
    ranks = _ranks(launcher)
    assert len(ranks) == 2
    t = time.time()
    assert job.cancel() is JobStatus.CANCELLED
    assert time.time() - t < 60  # stopped by the cancel file, not by the SIGTERM that follows after 60 s
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
                   for p in [launcher, *ranks])
    status = json.loads((job.workdir / "status.json").read_text())
    assert status["status"] == "cancelled" and not status.get("error")
    steps = [int(p.name.split("-")[1]) for p in (job.workdir / "checkpoints").glob("step-*")]
    assert len(steps) == 1 and steps[0] == status["result"]["steps"] > 0
    assert not (job.workdir / "model").exists()
