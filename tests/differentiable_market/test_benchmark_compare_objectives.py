"""benchmarks/compare_objectives.py chooses a loss mix, so it must look at validation only, never at test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from differentiable_market.config import TrainConfig
from differentiable_market.synthetic import planted_signal_market
from differentiable_market.trainer import Trainer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "compare_objectives.py"


@pytest.fixture
def script():
    spec = importlib.util.spec_from_file_location("compare_objectives", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_evaluates_the_validation_split_only(script, monkeypatch):
    seen = []
    evaluate = Trainer.evaluate

    def recording(self, split="validation"):
        seen.append(split)
        return evaluate(self, split)

    monkeypatch.setattr(Trainer, "evaluate", recording)
    market = planted_signal_market(300, 3, seed=0)
    tc = TrainConfig(lookback=16, batch_windows=2, rollout_groups=2, device="cpu", dtype="float32", compile="off")
    excess = script.run(market, tc, steps=1)
    assert seen == ["validation"]
    assert isinstance(excess, float)


def test_the_printed_report_holds_no_test_split_figures(script, monkeypatch, capsys):
    monkeypatch.setattr(script, "load_data", lambda cfg: None)
    monkeypatch.setattr(script, "planted_signal_market", lambda *a, **k: None)
    values = iter(range(100))
    monkeypatch.setattr(script, "run", lambda market, tc, steps: 0.001 * next(values))
    monkeypatch.setattr("sys.argv", ["compare_objectives.py", "--steps", "1", "--seeds", "0", "1"])
    script.main()
    out = capsys.readouterr().out
    assert "test" not in out.lower()
    summary = json.loads(out.strip().splitlines()[-1])["summary"]
    assert summary["pg only|planted"] == {"val_excess": pytest.approx(0.0005), "val_excess_min": 0.0,
                                          "val_excess_max": 0.001}
