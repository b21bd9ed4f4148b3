"""Cost formulas and ``ftkit estimate`` against hand-computed values on a fixed data set."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import ClassVar

import orjson
import pytest
from typer.testing import CliRunner

import ftkit.backend as backend_module
from ftkit.backend import (
    Backend,
    BackendConfig,
    CostEstimate,
    JobContext,
    PollResult,
)
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
from ftkit.predictor import Predictor
from ftkit.spec import JobSpec

# 40 examples, each exactly 41 o200k tokens once converted to chat with the default preamble
# (3 messages × 3 + 3 priming + the preamble, the text and the label): 1,640 billed tokens per epoch.
TOKENS_PER_EXAMPLE = 41


def fixed_data(path: Path, n: int = 40) -> Path:
    rows = [{"text": f"win a free prize now call {i} claim cash", "label": "spam" if i % 2 else "ham"}
            for i in range(10, 10 + n)]
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def _register(monkeypatch: pytest.MonkeyPatch, cls: type[Backend]) -> None:
    """Register a backend for this test only."""
    monkeypatch.setitem(backend_module._extra_backends, cls.name, cls)
    backend_module.load_backend_class.cache_clear()
    monkeypatch.setattr(backend_module, "load_backend_class", backend_module.load_backend_class)


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


@pytest.fixture
def openai_and_remote(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the openai and remote backends answer (neither needs a model or the network to estimate)."""
    monkeypatch.setenv("FTKIT_BACKENDS", "openai,remote")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_estimate_all_on_fixed_data(tmp_path: Path, openai_and_remote: None) -> None:
    data = fixed_data(tmp_path / "train.jsonl")
    report = estimate_all(data, backends=["openai", "remote", "hf"], test=data,
                          settings=CostSettings(gpus=["H100 SXM"], providers=["lambda"], usd_per_kwh=0.25))
    assert report.examples == 40
    assert report.billed_tokens_per_epoch == 40 * TOKENS_PER_EXAMPLE
    assert report.epochs == 3 and "OpenAI's auto rule" in report.epochs_source
    by = {r.backend: r for r in report.rows}
    assert set(by) == {"openai", "hf", "remote"}

    openai = by["openai"]  # 1,640 tokens × 3 epochs × $5/1M; eval in the Batch API at $0.40 / $1.60 per 1M
    assert openai.source == "backend" and openai.epochs == 3
    assert openai.train_usd == pytest.approx(1_640 * 3 * 5.0 / 1e6)
    assert openai.eval_usd == pytest.approx((1_640 - 40) * 0.40 / 1e6 + 40 * 1.60 / 1e6)
    assert any(a.startswith("evaluation: ") for a in openai.assumptions)

    tokens = 1_640 * 3
    remote = by["remote"]  # H100 SXM at Lambda: $3.78/h, 10 min start-up, 10% of 989 TFLOP/s
    tps = 0.10 * 989e12 / (4 * 135e6)
    hours = tokens / tps / 3600 + 10 / 60
    assert remote.target == "smollm2-135m on H100 SXM at lambda" and remote.source == "catalogue"
    assert remote.epochs == 3
    assert remote.train_hours == pytest.approx(hours)
    assert remote.train_usd == pytest.approx(3.78 * hours)
    assert remote.total_usd == pytest.approx(remote.train_usd + remote.eval_usd)
    assert any("1,640 evaluation tokens" in a for a in remote.assumptions)
    assert any("no offer priced" in a for a in remote.assumptions)  # no [remote] provider configured

    # A backend asked for but not installed: a row that says so, with the install line, and no price.
    assert by["hf"].train_usd is None and "pip install ftkit-hf" in (by["hf"].error or "")
    assert report.cheapest() is openai


class _PlannedBackend(Backend):
    """A third-party backend that plans its own epochs and prices the work at $0.001 per 1,000 tokens."""

    name: ClassVar[str] = "planner"

    def default_model(self, task: str) -> str:
        return "planner-model"

    def planned_epochs(self, spec: JobSpec, config: BackendConfig) -> int | None:
        return 2

    def estimate(self, ctx: JobContext) -> CostEstimate | None:
        epochs = ctx.spec.hyperparameters.epochs or 1
        return CostEstimate(usd=0.001 * 1_640 * epochs / 1_000, hours=0.5, epochs=epochs,
                            assumptions=[f"{epochs} epochs"])

    def submit(self, ctx: JobContext) -> str:
        raise NotImplementedError

    def poll(self, ctx: JobContext) -> PollResult:
        raise NotImplementedError

    def cancel(self, ctx: JobContext) -> None:
        raise NotImplementedError

    def load_model(self, ctx: JobContext) -> Predictor:
        raise NotImplementedError


def test_every_row_prices_the_same_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first backend's plan (2 epochs) is what every row prices: openai's 'auto' would be 3 for 40 examples."""
    _register(monkeypatch, _PlannedBackend)
    monkeypatch.setenv("FTKIT_BACKENDS", "planner,openai,remote")
    data = fixed_data(tmp_path / "train.jsonl")
    report = estimate_all(data, backends=["planner", "openai", "remote"],
                          settings=CostSettings(gpus=["H100 SXM"], providers=["lambda"]))
    assert report.epochs == 2 and report.epochs_source.startswith("planner's plan")
    assert {r.epochs for r in report.rows} == {2}
    by = {r.backend: r for r in report.rows}
    assert by["planner"].target == "planner-model" and by["planner"].source == "backend"
    assert by["openai"].train_usd == pytest.approx(1_640 * 2 * 5.0 / 1e6)
    remote = by["remote"]
    assert remote.train_hours == pytest.approx(1_640 * 2 / (0.10 * 989e12 / (4 * 135e6)) / 3600 + 10 / 60)
    assert any("× 2 epochs (planner's plan" in a for a in remote.assumptions)


def test_a_row_of_other_work_is_flagged_and_left_out_of_cheapest(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    _register(monkeypatch, _PlannedBackend)
    monkeypatch.setenv("FTKIT_BACKENDS", "planner,openai")
    monkeypatch.setattr(_PlannedBackend, "estimate",
                        lambda self, ctx: CostEstimate(usd=0.0, hours=0.1, epochs=7))
    data = fixed_data(tmp_path / "train.jsonl")
    report = estimate_all(data, backends=["openai", "planner"])
    planner = next(r for r in report.rows if r.backend == "planner")
    assert "prices 7 epochs, not the 2" in (planner.error or "")  # the planner planned 2; its estimate says 7
    assert report.cheapest() is not None and report.cheapest().backend == "openai"


def test_the_example_custom_backend_gets_its_own_row(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/custom_backend (tfidf), a third-party backend the core knows nothing of, in `ftkit estimate`."""
    monkeypatch.syspath_prepend(str(Path(__file__).parents[1] / "examples" / "custom_backend"))
    from ftkit_tfidf import TfidfBackend

    _register(monkeypatch, TfidfBackend)
    monkeypatch.setenv("FTKIT_BACKENDS", "tfidf,openai")
    data = fixed_data(tmp_path / "train.jsonl")
    res = CliRunner().invoke(app, ["estimate", "--data", str(data), "--test", str(data), "--json"])
    assert res.exit_code == 0, res.output
    rows = {r["backend"]: r for r in json.loads(res.stdout)["rows"]}
    assert set(rows) == {"tfidf", "openai"}
    tfidf = rows["tfidf"]
    assert tfidf["source"] == "backend" and tfidf["error"] is None
    assert tfidf["total_usd"] is not None and tfidf["eval_hours"] is not None


def test_estimate_rejects_a_misspelled_backend_option_like_create(tmp_path: Path, openai_and_remote: None) -> None:
    data = fixed_data(tmp_path / "train.jsonl")
    config = tmp_path / "ftkit.toml"
    config.write_text(f'task = "classification"\ntrain = "{data.name}"\n[openai]\nmodle = "gpt-4.1-nano"\n')
    res = CliRunner().invoke(app, ["estimate", "--config", str(config)])
    assert res.exit_code == 2, res.output
    assert "[openai] modle" in res.output and "Traceback" not in res.output
    from ftkit.job import FineTuneJob

    with pytest.raises(ConfigError, match=r"\[openai\] modle"):  # what `create` (and `ftkit train`) say
        FineTuneJob.create(JobSpec.from_file(config, backend="openai"))


def test_config_costs_section_overrides_catalogue(tmp_path: Path, openai_and_remote: None) -> None:
    data = fixed_data(tmp_path / "train.jsonl")
    config = tmp_path / "ftkit.toml"
    config.write_text(
        f'task = "classification"\ntrain = "{data.name}"\n[hyperparameters]\nepochs = 2\n'
        '[costs]\nremote_tokens_per_second = 10.0\ngpus = ["H100 SXM"]\nproviders = ["lambda"]\n'
        '[openai]\nmodel = "gpt-4.1-nano-2025-04-14"\n'
    )
    report = estimate_all(config=config, backends=["openai", "remote"])
    assert report.epochs == 2 and report.epochs_source == "set in the config"
    by = {r.backend: r for r in report.rows}
    assert by["openai"].train_usd == pytest.approx(1_640 * 2 * 1.5 / 1e6)
    hours = 1_640 * 2 / 10.0 / 3600 + 10 / 60
    assert by["remote"].train_hours == pytest.approx(hours)
    config.write_text(config.read_text().replace("[costs]\n", "[costs]\nbogus = 1\n"))
    with pytest.raises(ConfigError, match=r"\[costs\] bogus"):
        estimate_all(config=config, backends=["openai"])


def test_cli_estimate_json_and_table(tmp_path: Path, openai_and_remote: None) -> None:
    data = fixed_data(tmp_path / "train.jsonl")
    runner = CliRunner()
    res = runner.invoke(app, ["estimate", "--data", str(data), "--backend", "openai", "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["rows"][0]["train_usd"] == pytest.approx(0.0246)
    res = runner.invoke(app, ["estimate", "--data", str(data), "--backend", "openai", "--backend", "remote"])
    assert res.exit_code == 0, res.output
    assert "every row prices 3 epochs" in res.stdout
    assert "$5 per 1M training tokens" in res.stdout
    res = runner.invoke(app, ["estimate", "--data", str(tmp_path / "missing.jsonl")])
    assert res.exit_code == 2 and "no such file" in res.output


def test_the_core_imports_no_backend_library_and_names_no_backend_in_the_cost_planner() -> None:
    """Issue 21: validation targets come from the backend (``Backend.make_target``); the planner asks backends."""
    import ast

    core = Path(__file__).parents[1] / "ftkit"
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.split(".")[0] in {"transformers", "torch", "peft"} for n in names), path
    planner = (core / "costs" / "plan.py").read_text(encoding="utf-8")
    for name in ('"hf"', '"openai"', '"remote"'):
        assert name not in planner
