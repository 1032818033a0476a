"""What a run concluded, said first (outcome.py): the training console's last line, the untrained policy named for
what it is, and annualised log growth as the headline unit; with --quiet / --verbose and bars only on a terminal."""

import json
import math

import numpy as np
import pytest

from differentiable_market import cli
from differentiable_market.config import EnvConfig, ExperimentConfig, PolicyConfig, config_to_dict
from differentiable_market.metrics import bars_per_year, path_metrics
from differentiable_market.outcome import annualised_pct, bars_per_year_of, training_outcome, untrained_label

TINY = ["--lookback", "16", "--batch-windows", "4", "--rollout-groups", "2", "--epochs", "2", "--eval-interval",
        "2", "--architecture", "flat", "--action", "target", "--hidden-size", "8", "--dtype", "float32"]


def test_annualised_log_growth_is_mean_log_growth_per_bar_times_bars_per_year():
    lg = np.array([0.01, -0.02, 0.005, 0.0])
    assert annualised_pct(lg.sum(), lg.size, 252) == pytest.approx(100 * lg.mean() * 252)
    m = path_metrics(lg, np.zeros(4), np.zeros(4), 252)
    assert m["annualised_log_growth"] == pytest.approx(lg.mean() * 252)
    assert m["annualised_return"] == pytest.approx(math.expm1(lg.mean() * 252))  # CAGR: exp of it, minus 1


def test_bars_per_year_from_a_runs_fingerprint_matches_the_calendars():
    ts = np.datetime64("2020-01-01", "ns") + np.arange(500) * np.timedelta64(1, "D")
    fp = {"first_timestamp": str(ts[0])[:10], "last_timestamp": str(ts[-1])[:10], "n_bars": 500}
    assert bars_per_year_of(fp) == pytest.approx(bars_per_year(ts), rel=1e-12)
    assert bars_per_year_of({}) is None


@pytest.mark.parametrize("action, cash, cash_target, every, text", [
    ("band", False, "excess", 1, "equal weight through the band (untrained policy)"),
    ("partial", False, "excess", 1, "equal weight through partial rebalancing (untrained policy)"),
    ("target", False, "excess", 1, "equal weight (untrained policy)"),
    ("target", True, "excess", 1, "equal weight (untrained policy)"),
    ("target", True, "share", 1, "equal weight over the assets and cash (untrained policy)"),
    ("band", False, "excess", 5, "equal weight through the band, rebalanced every 5 bars (untrained policy)"),
])
def test_the_untrained_policy_is_named_for_what_it_holds(action, cash, cash_target, every, text):
    cfg = ExperimentConfig(env=EnvConfig(include_cash=cash, rebalance_every=every),
                           policy=PolicyConfig(action=action, cash_target=cash_target))
    assert untrained_label(cfg) == text


def _row(step, lg, ew, t_ew, t_u, chosen, untrained, bars=250, critical=2.5, looks=1):
    return {"type": "validation", "step": step, "bars": bars, "best": False,
            "policy": {"log_growth": lg}, "equal_weight": {"log_growth": ew},
            "excess_vs_equal_weight": {"t_stat": t_ew}, "excess_vs_untrained": None if t_u is None else {"t_stat": t_u},
            "gate": {"chosen_step": chosen, "chosen_is_untrained": untrained, "critical_t": critical,
                     "looks": looks}}


def _run(tmp_path, rows, init=None, min_t=2.0):
    cfg = config_to_dict(ExperimentConfig())
    cfg["train"]["select_min_t"] = min_t
    header = {"type": "header", "config": cfg, "init_checkpoint": init,
              "data": {"first_timestamp": "2000-01-01", "last_timestamp": "2010-01-01", "n_bars": 2521}}
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in [header, *rows]) + "\n")
    return tmp_path


def test_outcome_when_best_pt_is_the_untrained_policy(tmp_path):
    ppy = bars_per_year_of({"first_timestamp": "2000-01-01", "last_timestamp": "2010-01-01", "n_bars": 2521})
    rows = [_row(0, 0.10, 0.10, 0.0, None, 0, True),
            _row(50, 0.12, 0.10, 1.1, 0.4, 0, True, looks=1),
            _row(100, 0.20, 0.10, 1.6, 0.9, 0, True, critical=2.61, looks=2)]
    line = training_outcome(_run(tmp_path, rows))
    assert line.startswith("Outcome: best.pt is the untrained policy (equal weight through the band).")
    assert "a t of at least 2.61 against both, corrected for 2 evaluations; --select-min-t 2" in line
    assert f"the strongest, step 100, had validation {100 * 0.20 / 250 * ppy:+.1f}%/yr vs equal weight " \
           f"{100 * 0.10 / 250 * ppy:+.1f}%/yr over 250 bars, t vs equal weight +1.60, vs the untrained policy +0.90" \
        in line
    assert "Next: differentiable-market study --data-root trainingdata" in line


def test_outcome_when_a_trained_checkpoint_passed_the_gate(tmp_path):
    rows = [_row(0, 0.10, 0.10, 0.0, None, 0, True),
            _row(50, 0.30, 0.10, 3.1, 2.9, 50, False),
            _row(100, 0.25, 0.10, 2.0, 1.0, 50, False, looks=2)]
    line = training_outcome(_run(tmp_path, rows))
    assert line.startswith("Outcome: best.pt is step 50 (it passed the selection gate): validation ")
    assert "t vs equal weight +3.10, vs the untrained policy +2.90" in line
    assert f"Next: differentiable-market backtest --checkpoint {tmp_path} scores it on the test split" in line


def test_outcome_of_a_run_started_from_a_checkpoint_and_of_no_training(tmp_path):
    rows = [_row(0, 0.2, 0.1, 2.5, 2.5, 0, False)]
    line = training_outcome(_run(tmp_path, rows, init="other/best.pt"))
    assert line.startswith("Outcome: best.pt is the starting checkpoint's policy (step 0, from other/best.pt)")
    line = training_outcome(_run(tmp_path, [_row(0, 0.1, 0.1, 0.0, None, 0, True)]))
    assert "no training step ran" in line


def _lines(text):
    return [line for line in text.splitlines() if line.strip()]


def test_the_training_consoles_last_line_is_the_outcome_and_bars_stay_off_a_pipe(tmp_path, capsys, write_ohlc_csvs):
    from differentiable_market.synthetic import random_walk_market

    root = write_ohlc_csvs(random_walk_market(400, 3, seed=0))
    assert cli.main(["train", "--data-root", str(root), "--out-dir", str(tmp_path / "runs"), *TINY]) == 0
    out, err = capsys.readouterr()
    lines = _lines(out)
    assert lines[-1].startswith("Outcome: best.pt is ") and "Next: differentiable-market " in lines[-1]
    assert any(line.startswith("step      0  val ") and "%/yr (equal weight " in line for line in lines)
    assert "\r" not in err and "\r" not in out  # no progress bar when the output is not a terminal
    # --quiet: the outcome alone; --verbose: the training rows too
    assert cli.main(["train", "-q", "--data-root", str(root), "--out-dir", str(tmp_path / "q"), *TINY]) == 0
    quiet = _lines(capsys.readouterr().out)
    assert len(quiet) == 1 and quiet[0].startswith("Outcome: ")
    assert cli.main(["train", "-v", "--data-root", str(root), "--out-dir", str(tmp_path / "v"), *TINY,
                     "--log-interval", "1"]) == 0
    verbose = capsys.readouterr().out
    assert "step      1  loss " in verbose and "env steps/s" in verbose


def test_a_config_field_in_an_error_is_named_with_its_flag(tmp_path, capsys, write_ohlc_csvs):
    assert cli.main(["train", "--lookback", "0", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "train.lookback (--lookback) must be >= 8 bars, got 0" in err
