"""The speed memory behind the hf estimate: recent measurements per machine and model, their fit and spread."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ftkit_hf.backend import HFBackend
from ftkit_hf.speeds import KEEP, Measurement, SpeedKey, fit, machine_name, recall, record, speeds_file

import ftkit
from ftkit.backend import JobContext
from ftkit.paths import cache_dir

KEY = SpeedKey(machine="Test CPU, fp32, 1 thread", model="m", method="lora", kind="generative")


def _m(tokens: int, steps: int, spt: float, sps: float, setup: float = 5.0, noise: float = 1.0) -> Measurement:
    return Measurement(tokens=tokens, steps=steps, train_s=(tokens * spt + steps * sps) * noise, setup_s=setup)


def test_fit_separates_per_token_and_per_step_time() -> None:
    ms = [_m(10_000, 100, 2e-3, 0.15), _m(40_000, 50, 2e-3, 0.15), _m(20_000, 200, 2e-3, 0.15)]
    tm = fit(ms)
    assert tm is not None
    assert tm.seconds_per_token == pytest.approx(2e-3, rel=1e-6)
    assert tm.seconds_per_step == pytest.approx(0.15, rel=1e-6)
    assert not tm.noisy
    assert tm.seconds(30_000, 120) == pytest.approx(5 + 60 + 18)


def test_memory_keeps_recent_measurements_not_the_fastest(tmp_path: Path) -> None:
    path = tmp_path / "speeds.json"
    record(KEY, _m(10_000, 100, 1e-3, 0.0), path)  # one fast run long ago (an idle machine)
    for _ in range(KEEP):
        record(KEY, _m(10_000, 100, 4e-3, 0.0), path)  # the machine is busy now
    kept = recall(KEY, path)
    assert len(kept) == KEEP
    tm = fit(kept)
    assert tm is not None and tm.seconds_per_token == pytest.approx(4e-3)
    # Other keys (another model, another machine) are not mixed in.
    assert recall(KEY.model_copy(update={"model": "other"}), path) == []


def test_noisy_measurements_give_a_range(tmp_path: Path) -> None:
    ms = [_m(10_000, 100, 2e-3, 0.0, noise=n) for n in (0.7, 1.0, 1.6)]
    tm = fit(ms)
    assert tm is not None and tm.noisy
    low, high = tm.seconds_range(10_000, 100)
    assert low == pytest.approx(5 + 14, rel=0.05) and high == pytest.approx(5 + 32, rel=0.05)


def _estimate(model_dir: Path, train: Path, options: dict) -> ftkit.CostEstimate:
    be = HFBackend()
    hp = ftkit.Hyperparameters(epochs=2)
    spec = ftkit.JobSpec(task="chat", model=str(model_dir), train=train, hyperparameters=hp)
    config = be.parse_config(options)
    est = be.estimate(JobContext(id="e", spec=spec, config=config, workdir=model_dir))
    assert est is not None
    return est


def _chat(write_rows, tmp_path: Path, n: int = 40) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"q {i} " * 5}, {"role": "assistant", "content": "a " * 8}]}
            for i in range(n)]
    return write_rows(tmp_path / "train.jsonl", rows)


def test_estimate_uses_the_measurements_of_this_machine_and_model(
    tiny_llama_dir: Path, tmp_path: Path, write_rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FTKIT_MEASUREMENTS", str(tmp_path / "meas"))
    train = _chat(write_rows, tmp_path)
    options = {"device": "cpu", "precision": "fp32", "threads": 1, "carve_validation": False}
    unmeasured = _estimate(tiny_llama_dir, train, options)
    assert unmeasured.hours_low is not None and any("not measured here" in a for a in unmeasured.assumptions)

    from ftkit_hf.models import resolve_model

    key = SpeedKey(machine=machine_name("cpu", "fp32", 1), model=resolve_model(str(tiny_llama_dir)).name,
                   method="lora", kind="generative")
    record(key, _m(10_000, 100, 1e-2, 0.0, setup=30.0))
    measured = _estimate(tiny_llama_dir, train, options)
    assert measured.billed_tokens is not None and measured.epochs == 2
    assert measured.hours_low is None  # one measurement: one number
    assert measured.hours == pytest.approx((30 + measured.billed_tokens * 1e-2) / 3600)

    record(key, _m(10_000, 100, 1e-2, 0.0, setup=30.0, noise=2.0))  # the machine got busy
    noisy = _estimate(tiny_llama_dir, train, options)
    assert noisy.hours_low is not None and noisy.hours_high is not None
    assert noisy.hours_low < noisy.hours < noisy.hours_high
    assert noisy.usd_low is not None and noisy.usd_high is not None
    assert any("disagree" in a for a in noisy.assumptions)


def test_test_jobs_never_touch_the_users_speed_memory(trained_classifier, tiny_llama_dir: Path) -> None:
    """The conftest points $FTKIT_MEASUREMENTS at a folder of the session's own; a test's job records there only."""
    from ftkit_hf.models import resolve_model

    assert speeds_file().parent != cache_dir() / "measurements"
    name = resolve_model(str(tiny_llama_dir)).name
    data = json.loads(speeds_file().read_text(encoding="utf-8"))
    assert any(k.startswith(f"{name}|lora|") for k in data["speeds"]), data
    started = trained_classifier.job.record.created_at
    for users in (cache_dir() / "hf-throughput.json", cache_dir() / "measurements" / "hf-speeds.json"):
        assert not users.is_file() or users.stat().st_mtime < started, f"a test job wrote {users}"


def test_the_hf_row_prices_its_plan_for_every_row_and_scores_at_scoring_speed(
    tiny_llama_dir: Path, tmp_path: Path, write_rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ftkit.costs import estimate_all

    monkeypatch.setenv("FTKIT_BACKENDS", "hf,openai")
    train = _chat(write_rows, tmp_path)
    config = tmp_path / "ftkit.toml"
    config.write_text(f'task = "chat"\ntrain = "{train.name}"\nmodel = "{tiny_llama_dir}"\n'
                      '[hf]\ndevice = "cpu"\nprecision = "fp32"\nthreads = 1\ntokens_per_second = 100.0\n'
                      '[openai]\nmodel = "gpt-4.1-mini-2025-04-14"\n', encoding="utf-8")
    report = estimate_all(config=config, test=train)
    by = {r.backend: r for r in report.rows}
    assert report.epochs_source.startswith("hf's plan")
    assert by["hf"].epochs == by["openai"].epochs == report.epochs
    assert by["openai"].train_usd == pytest.approx(report.billed_tokens_per_epoch * report.epochs * 5.0 / 1e6)
    (line,) = [a for a in by["hf"].assumptions if "evaluation tokens" in a]
    assert "200 tokens/s scoring speed" in line  # LoRA trains at 4·N FLOPs/token, scoring is 2·N: twice as fast
    assert not any("training tokens" in a for a in by["hf"].assumptions if a.startswith("evaluation"))
    assert by["hf"].eval_hours is not None and by["hf"].eval_hours > (report.test_tokens or 0) / 200 / 3600


def test_a_finished_hf_job_records_its_actual_cost_beside_the_estimate(trained_classifier) -> None:
    from ftkit_hf.config import HFConfig
    from typer.testing import CliRunner

    from ftkit.cli import _cost_cells, app

    rec = trained_classifier.job.record
    act, est = rec.actual_cost, rec.estimated_cost
    assert act is not None and est is not None
    assert 0 < act["hours"] < 1
    assert act["usd"] == pytest.approx(0.065 * act["hours"] * HFConfig().usd_per_kwh)  # 65 W CPU default
    assert "wall time" in act["source"] and "CPU" in act["source"]
    cells = _cost_cells(est, act)
    assert cells[-1].startswith(f"{act['hours'] / est['hours']:.2f}x")
    res = CliRunner().invoke(app, ["jobs", "--costs", "--json"])
    assert res.exit_code == 0, res.output
    (row,) = [r for r in json.loads(res.stdout) if r["id"] == rec.id]
    assert row["actual_cost"]["hours"] == pytest.approx(act["hours"])


def test_the_hf_validation_target_is_built_by_the_backend(tiny_llama_dir: Path) -> None:
    from ftkit_hf.target import HFTarget

    from ftkit.data.targets import make_target

    target = make_target(f"hf:{tiny_llama_dir}", None, None)
    assert isinstance(target, HFTarget) and target.max_tokens and target.load_issue is None
    assert make_target(target) is target  # an object a backend returned is used as it is
