import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from differentiable_market import training_run
from differentiable_market.checkpoint import load_checkpoint
from differentiable_market.config import ExperimentConfig, TrainConfig, config_from_dict, config_to_dict
from differentiable_market.train import main
from differentiable_market.training_curves import (
    CURVES,
    TENSORBOARD_DIR,
    extract_curves,
    read_metrics,
    training_png,
)

TINY = ["--lookback", "32", "--batch-windows", "4", "--rollout-groups", "2", "--hidden-size", "8", "--no-progress",
        "--dtype", "float32", "--device", "cpu"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _train(tmp_path: Path, *extra: str) -> Path:
    save = tmp_path / "runs"
    assert main(TINY + ["--epochs", "4", "--eval-interval", "2", "--log-interval", "1", "--save-dir", str(save),
                        *extra]) == 0
    (run_dir,) = [p for p in save.iterdir() if p.is_dir()]
    return run_dir


def _expected(rows: list[dict], kind: str, *keys: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for r in rows:
        if r["type"] == kind:
            v = r
            for k in keys:
                v = v[k]
            steps.append(r["step"])
            values.append(v)
    return steps, values


def test_training_png_is_redrawn_at_each_evaluation_from_metrics_jsonl(tmp_path, monkeypatch):
    seen_validation_rows = []
    real = training_run.write_training_png

    def spy(run_dir):
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
        seen_validation_rows.append([r["step"] for r in rows if r["type"] == "validation"])
        return real(run_dir)

    monkeypatch.setattr(training_run, "write_training_png", spy)
    run_dir = _train(tmp_path)
    # Redrawn once per evaluation, each time after that evaluation's row is in the log.
    assert seen_validation_rows == [[0], [0, 2], [0, 2, 4]]  # step 0: the untrained policy
    png = (run_dir / "training.png").read_bytes()
    assert png[:8] == PNG_MAGIC
    import matplotlib.image

    image = matplotlib.image.imread(run_dir / "training.png")
    assert image.shape[0] > 500 and image.shape[1] > 500
    assert not list(run_dir.glob(".training.png.*"))  # no temp file left by the atomic write

    # The plotted series are exactly the values metrics.jsonl holds.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curves = extract_curves(read_metrics(run_dir / "metrics.jsonl"))
    assert set(curves) == set(CURVES)
    expected = {
        "train/reward_mean": _expected(rows, "train", "reward_mean"),
        "train/kl": _expected(rows, "train", "kl"),
        "validation/policy_log_growth": _expected(rows, "validation", "policy", "log_growth"),
        "validation/equal_weight_log_growth": _expected(rows, "validation", "equal_weight", "log_growth"),
        "validation/excess_t_stat": _expected(rows, "validation", "excess_vs_equal_weight", "t_stat"),
        "validation/policy_turnover": _expected(rows, "validation", "policy", "turnover"),
        "validation/equal_weight_turnover": _expected(rows, "validation", "equal_weight", "turnover"),
    }
    for tag, (steps, values) in expected.items():
        assert curves[tag].steps.tolist() == steps, tag
        assert curves[tag].values.tolist() == values, tag
    assert curves["train/reward_mean"].steps.tolist() == [1, 2, 3, 4]
    assert curves["validation/policy_log_growth"].steps.tolist() == [0, 2, 4]


def test_extract_curves_keeps_nulls_as_nan_skips_torn_lines_and_other_rows(tmp_path):
    rows = [
        {"type": "header", "config": {}},
        {"type": "train", "step": 1, "reward_mean": 0.5, "kl": 0.0},
        {"type": "train", "step": 2, "reward_mean": None, "kl": 0.25},
        {"type": "validation", "step": 2, "best": True, "policy": {"log_growth": 0.1, "turnover": 0.2},
         "equal_weight": {"log_growth": 0.05, "turnover": 0.01}, "excess_vs_equal_weight": {"t_stat": None}},
        {"type": "train", "step": 1, "reward_mean": 0.75, "kl": 0.5},  # the same step again: the last row wins
    ]
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"type": "train", "st')  # torn last line
    assert len(read_metrics(path)) == len(rows)
    curves = extract_curves(read_metrics(path))
    assert curves["train/reward_mean"].steps.tolist() == [1, 2]
    assert curves["train/reward_mean"].values[0] == 0.75 and math.isnan(curves["train/reward_mean"].values[1])
    assert curves["train/kl"].values.tolist() == [0.5, 0.25]
    assert curves["validation/policy_turnover"].values.tolist() == [0.2]
    assert np.isnan(curves["validation/excess_t_stat"].values).all()
    assert training_png(curves, [2])[:8] == PNG_MAGIC  # NaN points are drawn as gaps, not an error
    empty = extract_curves([])
    assert all(c.steps.size == 0 for c in empty.values())
    assert training_png(empty)[:8] == PNG_MAGIC  # an evaluation at step 0 has no training rows yet


def test_configs_written_before_the_tensorboard_flag_still_load():
    old = config_to_dict(ExperimentConfig())
    del old["train"]["tensorboard"]
    cfg = config_from_dict(ExperimentConfig, old)
    assert cfg.train.tensorboard is False and cfg == ExperimentConfig()
    assert config_from_dict(TrainConfig, {"tensorboard": True}).tensorboard is True


def test_tensorboard_flag_without_the_package_names_the_install_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as when it is not installed
    save = tmp_path / "runs"
    assert main(TINY + ["--epochs", "1", "--save-dir", str(save), "--tensorboard"]) == 2
    err = capsys.readouterr().err
    assert "uv sync --extra tensorboard" in err and "Traceback" not in err
    assert not save.exists() or not any(save.iterdir())  # refused before a run folder was made


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard not installed (uv sync --extra tensorboard)")
def test_tensorboard_event_files_hold_the_curves_and_the_hyperparameters(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir = _train(tmp_path, "--tensorboard")
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt").config.train.tensorboard is True
    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    curves = extract_curves(read_metrics(run_dir / "metrics.jsonl"))
    assert set(events.Tags()["scalars"]) == set(CURVES)
    for tag, curve in curves.items():
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == curve.steps.tolist(), tag
        np.testing.assert_allclose([s.value for s in scalars], curve.values, rtol=1e-6, err_msg=tag)  # float32
    plugin = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugin
    start = plugin["_hparams_/session_start_info"]
    assert b"train.lr" in start and b"env.cost_bps" in start and b"policy.hidden_size" in start


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                    reason="tensorboard not installed (uv sync --extra tensorboard)")
def test_resuming_with_tensorboard_replays_the_earlier_steps_once(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    save = tmp_path / "runs"
    assert main(TINY + ["--epochs", "2", "--eval-interval", "2", "--log-interval", "1", "--save-dir", str(save)]) == 0
    (run_dir,) = [p for p in save.iterdir() if p.is_dir()]
    assert not (run_dir / TENSORBOARD_DIR).exists()
    assert main(["--resume", str(run_dir), "--epochs", "4", "--tensorboard", "--no-progress"]) == 0
    events = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    events.Reload()
    curves = extract_curves(read_metrics(run_dir / "metrics.jsonl"))
    assert [s.step for s in events.Scalars("train/reward_mean")] == [1, 2, 3, 4]
    assert [s.step for s in events.Scalars("validation/excess_t_stat")] == [2, 4]
    np.testing.assert_allclose([s.value for s in events.Scalars("train/kl")], curves["train/kl"].values, rtol=1e-6)
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
