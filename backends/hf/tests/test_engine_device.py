"""Device, precision and thread choice; token-budget batching and packing layout."""

from __future__ import annotations

import platform
import re
from pathlib import Path

import pytest
import torch
from ftkit_hf.engine import describe_device
from ftkit_hf.engine import device as dev
from ftkit_hf.engine.batching import collate_packed, collate_padded, plan_epoch
from ftkit_hf.engine.settings import TokenizedExample


@pytest.mark.parametrize(("flags", "kind"), [
    ({"avx2", "amx_bf16", "avx512_bf16"}, "AMX"),
    ({"avx512f", "avx512_bf16"}, "AVX512-BF16"),
    ({"avx2", "fma"}, None),
    (set(), None),
])
def test_bf16_unit_detected_from_cpu_flags(flags, kind):
    assert dev.cpu_bf16_kind(frozenset(flags)) == kind


@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="reads Linux's /proc/cpuinfo")
def test_cpu_flags_and_model_name_are_the_first_processors():
    first = Path("/proc/cpuinfo").read_text().split("\n\n")[0].splitlines()
    fields = {line.partition(":")[0].strip(): line.partition(":")[2].strip() for line in reversed(first)}
    assert dev.cpu_flags() == frozenset(fields.get("flags", "").split())
    assert dev.cpu_model_name() == (fields.get("model name") or platform.processor() or platform.machine())
    assert dev.cpu_model_name()


@pytest.mark.parametrize(("flags", "precision", "reason"), [
    ({"amx_bf16"}, "bf16", "AMX"),
    ({"avx512_bf16"}, "bf16", "AVX512-BF16"),
    ({"avx2"}, "fp32", "no native bf16"),
])
def test_auto_precision_follows_the_cpu(monkeypatch, flags, precision, reason):
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset(flags))
    plan = dev.plan_device("cpu", "auto")
    assert (plan.precision, plan.reason) == (precision, reason)
    assert plan.describe() == f"CPU, {precision} ({reason}), {plan.threads} thread{'s' if plan.threads > 1 else ''}"


def test_explicit_precision_and_threads_override(monkeypatch):
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset({"amx_bf16"}))
    assert dev.plan_device("cpu", "fp32").precision == "fp32"
    monkeypatch.setattr(dev, "cpu_flags", lambda: frozenset())
    assert dev.plan_device("cpu", "bf16").precision == "bf16"
    assert dev.plan_device("cpu", "auto", threads=3).threads == 3
    with pytest.raises(ValueError, match="precision"):
        dev.plan_device("cpu", "fp8")


def test_threads_default_to_physical_cores():
    import psutil

    physical = psutil.cpu_count(logical=False) or 1
    assert 1 <= dev.physical_cores() <= max(physical, 1)
    assert dev.plan_device("cpu").threads == dev.physical_cores()


def test_describe_device_here():
    text = describe_device("cpu")
    match = re.fullmatch(r"CPU, (bf16|fp32) \(([^)]+)\), \d+ threads?", text)
    assert match
    # The chosen precision, not any mention of bf16: "fp32 (no native bf16)" on a CPU without it.
    kind = dev.cpu_bf16_kind()
    assert match.group(1) == ("bf16" if kind else "fp32")
    assert match.group(2) == (kind or "no native bf16")


def test_cuda_requested_without_gpu_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        dev.plan_device("cuda")


def test_plan_respects_the_token_budget_and_covers_every_example_once():
    lengths = [5, 300, 40, 700, 120, 64, 64, 3, 900, 10] * 5
    for sort in (False, True):
        plan = plan_epoch(lengths, batch_tokens=1000, max_examples=4, seed=1, epoch=0, sort_by_length=sort)
        assert sorted(i for step in plan for i in step) == list(range(len(lengths)))
        for step in plan:
            assert len(step) <= 4
            cost = len(step) * max(lengths[i] for i in step) if sort else sum(lengths[i] for i in step)
            assert cost <= 1000 or len(step) == 1  # an over-long example gets a step of its own
        assert plan == plan_epoch(lengths, 1000, 4, seed=1, epoch=0, sort_by_length=sort)  # deterministic
        assert plan != plan_epoch(lengths, 1000, 4, seed=1, epoch=1, sort_by_length=sort)  # reshuffled per epoch


def test_packed_layout_never_predicts_across_examples():
    a = TokenizedExample([10, 11, 12], [-100, 11, 12])
    b = TokenizedExample([20, 21], [20, 21])
    batch = collate_packed([a, b])
    assert batch.input_ids.tolist() == [[10, 11, 12, 20, 21]]
    assert batch.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert batch.cu_seqlens.tolist() == [0, 3, 5] and batch.seq_lengths == [3, 2]
    # The last token of `a` (12) must not be trained to predict `b`'s first token (20).
    assert batch.targets.tolist() == [[11, 12, -100, 21, -100]]
    assert (batch.real_tokens, batch.label_tokens) == (5, 3)
    padded = collate_padded([a, b], pad_id=0)
    assert padded.targets.tolist() == [[11, 12, -100], [21, -100, -100]]
    assert padded.attention_mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert (padded.real_tokens, padded.label_tokens) == (5, 3)
