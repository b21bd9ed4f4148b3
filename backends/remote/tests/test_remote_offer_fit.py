"""The memory plan before renting: an offer whose GPU the job cannot fit is skipped, with the reason shown."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ftkit_remote.emulators.common import EmulatorServer
from remote_testkit import remote_options

from ftkit import FineTuneJob, JobSpec
from ftkit.errors import ConfigError

pytest.importorskip("ftkit_hf.memory_plan")

# A 13B-class decoder (Llama-2-13B's dimensions): ~26 GB of bf16 weights, more than a 24 GB RTX 4090 holds
# whatever the passes or checkpointing, while an 80 GB A100 fits it. Only its config and a tokenizer exist:
# the plan is made from the config before anything is loaded or rented.
BIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 5120, "intermediate_size": 13824,
       "num_hidden_layers": 40, "num_attention_heads": 40, "num_key_value_heads": 40, "vocab_size": 49152,
       "max_position_embeddings": 4096, "tie_word_embeddings": False}


@pytest.fixture(scope="module")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ftkit_hf.models import resolve_model
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("big-config")
    AutoTokenizer.from_pretrained(str(resolve_model("smollm2-135m").path)).save_pretrained(out)
    (out / "config.json").write_text(json.dumps(BIG))
    return out


def _spec(data_file: Path, model: Path) -> JobSpec:
    return JobSpec(task="classification", model=str(model), train=data_file, labels=["ham", "spam"])


def test_an_offer_too_small_for_the_job_is_skipped_and_the_next_fitting_one_priced(
    vast: EmulatorServer, data_file: Path, big_model: Path
) -> None:
    job = FineTuneJob.create(_spec(data_file, big_model), backend="remote",
                             options=remote_options(vast, worker_command=None))  # fmt: skip
    estimate = job.record.estimated_cost
    assert estimate is not None
    # The cheapest offer (7001, one RTX 4090 at $0.35/h) cannot hold the model: the A100 (7003) is priced.
    assert "offer 7003" in estimate["assumptions"][0] and "A100" in estimate["assumptions"][0]
    assert not vast.state.instances


def test_no_offer_the_job_fits_is_a_config_error_naming_why(
    vast: EmulatorServer, data_file: Path, big_model: Path
) -> None:
    opts = remote_options(vast, worker_command=None, gpu_names=["RTX 4090"])
    with pytest.raises(ConfigError, match=r"^\[remote\] the job fits no vast offer's GPU: offer 7001 \(RTX 4090 "
                                          r"24\.564 GB: even .* does not fit .*method='qlora' would"):
        FineTuneJob.create(_spec(data_file, big_model), backend="remote", options=opts)
    assert not vast.state.instances


def test_a_custom_worker_is_not_planned(vast: EmulatorServer, data_file: Path, big_model: Path) -> None:
    # A custom worker may do anything (a smaller model, its own sharding): its offers are left alone.
    job = FineTuneJob.create(_spec(data_file, big_model), backend="remote",
                             options=remote_options(vast, gpu_names=["RTX 4090"]))  # fmt: skip
    assert job.record.estimated_cost is not None and "offer 7001" in job.record.estimated_cost["assumptions"][0]
