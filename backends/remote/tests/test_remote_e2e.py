"""End to end: the real ftkit-hf worker trains a tiny model "remotely" on an emulated rented machine.

The machine is an SSH sandbox on loopback (see ftkit_remote.emulators.sandbox): the GPU it reports is a
fake ``nvidia-smi`` shim and training runs on this CPU. The model is a tiny random Llama (2 layers,
hidden 32) built from config with SmolLM2's tokenizer, so the run takes seconds, not minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ftkit_remote.emulators.common import EmulatorServer
from ftkit_remote.leases import LeaseLedger
from remote_testkit import remote_options

from ftkit import FineTuneJob, JobSpec
from ftkit.errors import JobFailedError
from ftkit.events import JobStatus

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
pytest.importorskip("ftkit_hf.worker")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from ftkit_hf.models import resolve_model
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m").path))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=True)  # fmt: skip
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_e2e_remote_training_fetches_a_working_adapter(vast: EmulatorServer, data_file: Path, tiny_llama: Path) -> None:
    spec = JobSpec(task="classification", model=str(tiny_llama), train=data_file, labels=["ham", "spam"],
                   hyperparameters={"epochs": 1, "batch_size": 8})  # fmt: skip
    opts = remote_options(vast, worker_command=None, hf={"threads": 1, "max_steps": 3, "precision": "fp32"},
                          poll_interval=0.5)  # fmt: skip
    job = FineTuneJob.create(spec, backend="remote", options=opts)
    job.start()
    instance = next(iter(vast.state.instances.values()))
    shipped = instance.sandbox.root / "ftkit-jobs" / job.id
    assert (shipped / "base_model" / "config.json").is_file(), "the base model was shipped with the job"
    assert job.wait(poll_interval=0.5, timeout=300) is JobStatus.SUCCEEDED, job.record.error
    assert not vast.state.live(), "the machine is destroyed once the adapter is fetched"
    assert LeaseLedger().get("ftkit-" + job.id).status == "released"  # type: ignore[union-attr]
    adapter = job.workdir / "model"
    assert any(adapter.glob("adapter_model.*")), list(adapter.iterdir())
    losses = [m["train_loss"] for m in job.metrics() if m.get("train_loss") is not None]
    assert losses, "training metrics streamed back over SSH"
    assert job.record.actual_cost is not None and job.record.actual_cost["usd"] > 0
    # The machine has no ftkit of its own (test_remote_shipping): the worker ran the wheels shipped with the job.
    assert (shipped / ".ftkit-site" / "ftkit_hf" / "worker.py").is_file()
    assert (shipped / ".ftkit-site" / "ftkit" / "spec.py").is_file()
    timings = next(e.data for e in job.events() if "ready_s" in e.data)
    wheels_s = next(e.data["wheels_s"] for e in job.events() if "wheels_s" in e.data)
    setup_s = next(e.data["setup_s"] for e in job.events() if "setup_s" in e.data)
    print(f"\nremote e2e: wheels {wheels_s} s, usable after {timings['ready_s']} s, shipped+started in "
          f"{timings['ship_and_start_s']} s, wheels installed+checked on the machine in {setup_s} s, "
          f"cost ${job.record.actual_cost['usd']:.6f}")
    predictor = job.model()
    (result,) = predictor.classify(["win cash now"])
    assert set(result.probabilities) == {"ham", "spam"}


def test_e2e_without_the_wheels_the_machine_cannot_run_the_worker(
    vast: EmulatorServer, data_file: Path, tiny_llama: Path
) -> None:
    spec = JobSpec(task="classification", model=str(tiny_llama), train=data_file, labels=["ham", "spam"])
    opts = remote_options(vast, worker_command=None, ship_wheels=False, hf={"threads": 1, "max_steps": 1})
    job = FineTuneJob.create(spec, backend="remote", options=opts)
    job.start()
    with pytest.raises(JobFailedError, match="No module named 'ftkit_hf'"):
        job.wait(poll_interval=0.3, timeout=120)
    assert not vast.state.live()
