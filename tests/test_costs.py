"""Cost formulas and ``ftkit estimate`` against hand-computed values on a fixed data set."""

from __future__ import annotations

import json
import re
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from ftkit.cli import app
from ftkit.costs import (
    GPU_RATES,
    GPUS,
    OPENAI_PRICES,
    PROVIDERS,
    CostSettings,
    estimate_all,
    estimate_local,
    estimate_openai,
    estimate_remote,
    model_parameters,
    openai_epochs,
    openai_price,
)
from ftkit.errors import ConfigError

# 40 examples, each exactly 41 o200k tokens once converted to chat with the default preamble
# (3 messages × 3 + 3 priming + the preamble, the text and the label): 1,640 billed tokens per epoch.
TOKENS_PER_EXAMPLE = 41


def fixed_data(path: Path, n: int = 40) -> Path:
    rows = [{"text": f"win a free prize now call {i} claim cash", "label": "spam" if i % 2 else "ham"}
            for i in range(10, 10 + n)]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


@pytest.fixture
def no_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    """Price from the catalogue only: no installed backend answers."""
    monkeypatch.setenv("FTKIT_BACKENDS", "none-installed")


@pytest.mark.parametrize(
    ("n", "epochs"), [(5, 20), (20, 5), (25, 4), (33, 3), (40, 3), (8000, 3), (10_000, 2), (30_000, 1)]
)
def test_openai_epoch_heuristic(n: int, epochs: int) -> None:
    assert openai_epochs(n) == epochs
    assert openai_epochs(n, 7) == 7


def test_openai_training_cost_by_hand() -> None:
    # The guide's own example: 100,000 tokens × 3 epochs on gpt-4o-mini at $3/1M ≈ $0.90.
    est = estimate_openai(100_000, 1_000, "gpt-4o-mini")
    assert est.billed_tokens == 300_000
    assert est.usd == pytest.approx(0.90)
    est = estimate_openai(1_640, 40, "ft:gpt-4.1-mini-2025-04-14:org::abc", epochs=None)
    assert est.usd == pytest.approx(1_640 * 3 * 5.0 / 1e6)
    assert any("3 epochs" in a for a in est.assumptions)
    with pytest.raises(ConfigError, match="billed per training hour"):
        estimate_openai(1_000, 100, "o4-mini")
    with pytest.raises(ConfigError, match="no OpenAI price"):
        openai_price("gpt-17")


def test_local_and_remote_by_hand() -> None:
    est = estimate_local(1_000_000, 500.0, watts=65.0, usd_per_kwh=0.20)
    assert est.hours == pytest.approx(1_000_000 / 500 / 3600)
    assert est.usd == pytest.approx(0.065 * (1_000_000 / 500 / 3600) * 0.20)
    # 3.6M tokens at 1,000 tokens/s = 1 h, + 6 min start-up = 1.1 h at $2/h, + 50 GB at $0.10/GB-month.
    est = estimate_remote(3_600_000, 1_000.0, "H100 SXM", "runpod", startup_minutes=6, usd_per_hour=2.0)
    assert est.hours == pytest.approx(1.1)
    assert est.usd == pytest.approx(2.0 * 1.1 + 50 * 0.10 / 720 * 1.1)
    # Catalogue price: the middle of RunPod's RTX 4090 range.
    rate = next(r for r in GPU_RATES if r.provider == "runpod" and r.gpu == "RTX 4090")
    est = estimate_remote(0, 1.0, "rtx4090", "runpod", startup_minutes=60, disk_gb=0)
    assert est.usd == pytest.approx((rate.low + rate.high) / 2)
    with pytest.raises(ConfigError, match="unknown provider"):
        estimate_remote(1, 1.0, "H100 SXM", "aws")


def test_every_price_has_a_date_and_a_source() -> None:
    for p in OPENAI_PRICES.values():
        assert re.fullmatch(r"\d{4}(-\d{2}){0,2}", p.as_of) and p.source
    for r in GPU_RATES:
        assert re.fullmatch(r"\d{4}(-\d{2}){0,2}", r.as_of) and r.source
        assert 0 < r.low <= r.high
        assert r.gpu in GPUS and r.provider in PROVIDERS
    for g in GPUS.values():
        assert g.source and g.bf16_tflops > 0 and g.watts > 0


def test_model_sizes() -> None:
    assert model_parameters("smollm2-135m") == 135e6
    assert model_parameters("/models/Qwen2.5-0.5B-Instruct") == 494e6
    assert model_parameters("mistral-7b-v0.3") == 7e9
    with pytest.raises(ConfigError, match="model_parameters"):
        model_parameters("mystery-model")


def test_estimate_all_on_fixed_data(tmp_path: Path, no_backends: None) -> None:
    data = fixed_data(tmp_path / "train.jsonl")
    report = estimate_all(data, backends=["openai", "hf", "remote"], test=data,
                          settings=CostSettings(gpus=["H100 SXM"], providers=["lambda"], usd_per_kwh=0.25))
    assert report.examples == 40
    assert report.billed_tokens_per_epoch == 40 * TOKENS_PER_EXAMPLE
    by = {r.backend: r for r in report.rows}
    assert set(by) == {"openai", "hf", "remote"}
    assert all(not r.installed and r.source == "catalogue" for r in report.rows)

    openai = by["openai"]  # 1,640 tokens × 3 epochs × $5/1M; eval in the Batch API at $0.40 / $1.60 per 1M
    assert openai.train_usd == pytest.approx(1_640 * 3 * 5.0 / 1e6)
    assert openai.eval_usd == pytest.approx((1_640 - 40) * 0.40 / 1e6 + 40 * 1.60 / 1e6)

    tokens = 1_640 * 3
    hf = by["hf"]  # CPU at 0.3 TFLOP/s, LoRA 4 × 135M FLOPs/token, 65 W, $0.25/kWh
    tps = 0.3e12 / (4 * 135e6)
    assert hf.train_hours == pytest.approx(tokens / tps / 3600)
    assert hf.train_usd == pytest.approx(0.065 * tokens / tps / 3600 * 0.25)
    assert hf.eval_hours == pytest.approx(1_640 / (2 * tps) / 3600)

    remote = by["remote"]  # H100 SXM at Lambda: $3.78/h, 10 min start-up, 10% of 989 TFLOP/s
    tps = 0.10 * 989e12 / (4 * 135e6)
    hours = tokens / tps / 3600 + 10 / 60
    assert remote.target == "smollm2-135m on H100 SXM at lambda"
    assert remote.train_hours == pytest.approx(hours)
    assert remote.train_usd == pytest.approx(3.78 * hours)
    assert remote.total_usd == pytest.approx(remote.train_usd + remote.eval_usd)
    assert report.cheapest() is hf


def test_config_costs_section_overrides_catalogue(tmp_path: Path, no_backends: None) -> None:
    data = fixed_data(tmp_path / "train.jsonl")
    config = tmp_path / "ftkit.toml"
    config.write_text(
        f'task = "classification"\ntrain = "{data.name}"\n[hyperparameters]\nepochs = 2\n'
        '[costs]\nusd_per_kwh = 0.5\ndevice_watts = 100\nlocal_tokens_per_second = 10.0\n'
        '[openai]\nmodel = "gpt-4.1-nano-2025-04-14"\n'
    )
    report = estimate_all(config=config, backends=["openai", "hf"])
    by = {r.backend: r for r in report.rows}
    assert by["openai"].train_usd == pytest.approx(1_640 * 2 * 1.5 / 1e6)
    hours = 1_640 * 2 / 10.0 / 3600
    assert by["hf"].train_hours == pytest.approx(hours)
    assert by["hf"].train_usd == pytest.approx(0.1 * hours * 0.5)
    config.write_text(config.read_text().replace("[costs]\n", "[costs]\nbogus = 1\n"))
    with pytest.raises(ConfigError, match=r"\[costs\] bogus"):
        estimate_all(config=config, backends=["hf"])


def test_cli_estimate_json_and_table(tmp_path: Path, no_backends: None) -> None:
    data = fixed_data(tmp_path / "train.jsonl")
    runner = CliRunner()
    res = runner.invoke(app, ["estimate", "--data", str(data), "--backend", "openai", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["rows"][0]["train_usd"] == pytest.approx(0.0246)
    res = runner.invoke(app, ["estimate", "--data", str(data), "--backend", "openai", "--backend", "hf"])
    assert res.exit_code == 0, res.output
    assert "billed tokens/epoch × 3 epochs" in res.stdout.replace("\n", " ") or "3 epochs" in res.stdout
    assert "$5.0/1M training tokens" in res.stdout
    res = runner.invoke(app, ["estimate", "--data", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "no such file" in res.output
