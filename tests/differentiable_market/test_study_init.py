"""Studies that start from a checkpoint: zero-shot (the pretrained policy scored per fold on pooled evidence),
fine-tuned (every member trained from it) beside the zero-shot policy and members trained from scratch."""

import json

import pytest

from differentiable_market.checkpoint import load_checkpoint
from differentiable_market.config import DataConfig, ExperimentConfig, TrainConfig
from differentiable_market.datasets import write_market_folder
from differentiable_market.errors import CheckpointError
from differentiable_market.pretrain.corpus import MarketSpec
from differentiable_market.pretrain.run import PretrainSettings, run_pretraining
from differentiable_market.study.plan import plan_folds
from differentiable_market.study.report import StudySettings
from differentiable_market.study.run import run_study
from differentiable_market.study.zeroshot import evidence_range
from differentiable_market.synthetic import reversal_market

CORPUS = [MarketSpec("rev", "reversal", "train", seed=2, params={"n_bars": 300, "n_assets": 6}),
          MarketSpec("val", "reversal", "validation", seed=3, params={"n_bars": 300, "n_assets": 5})]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    folder = run_pretraining(PretrainSettings(steps=2, eval_interval=2, markets_per_step=1, windows_per_market=4,
                                              lookback=16, nyse=False, device="cpu", dtype="float32",
                                              save_dir=str(tmp_path_factory.mktemp("pre"))),
                             log=lambda *_: None, specs=CORPUS)
    return str(folder / "checkpoints" / "best.pt")


@pytest.fixture(scope="module")
def market_root(tmp_path_factory):
    return str(write_market_folder(reversal_market(700, 5, seed=11), tmp_path_factory.mktemp("data") / "m"))


def _cfg(root, save_dir, epochs):
    return ExperimentConfig(data=DataConfig(root=root), train=TrainConfig(
        lookback=16, batch_windows=4, rollout_groups=2, epochs=epochs, eval_interval=1, device="cpu",
        dtype="float32", save_dir=str(save_dir)))


def test_zero_shot_evidence_runs_from_the_first_validation_split_to_each_folds_own():
    folds = plan_folds(2000, 2, 3, 0.3, 300, 32, 32)
    assert evidence_range(folds, 0, 2) == (folds[0].validation[0], folds[0].validation[1] - 2)
    start, stop = evidence_range(folds, 2, 2)
    assert start == folds[0].validation[0] and stop == folds[2].validation[1] - 2
    assert stop + 2 <= folds[2].test[0]  # nothing of the fold's own test block
    assert start < folds[0].test[0] and folds[0].test[1] <= stop  # an earlier fold's test block is evidence


def test_a_zero_shot_study_scores_the_pretrained_policy_per_fold_without_training(tmp_path, pretrained, market_root):
    folder = run_study(_cfg(market_root, tmp_path, 0), StudySettings(folds=2, seeds=1, bootstrap_reps=100,
                                                                     init=pretrained), log=lambda *_: None)
    state = json.loads((folder / "study.json").read_text())
    assert state["jobs"] == []
    records = state["zero_shot"]
    assert [r["fold"] for r in records] == [0, 1] and records[1]["bars"] > records[0]["bars"]
    assert records[0]["first_bar"] == records[1]["first_bar"]  # pooled from the first validation split on
    specs = []
    for r in records:
        best = load_checkpoint(folder / f"fold{r['fold']}-zeroshot" / "checkpoints" / "best.pt")
        assert best.is_untrained == (not r["passed"]) and best.pretraining is None
        assert best.config.data.split_bars == tuple(state["plan"][r["fold"]]["train"] +
                                                    state["plan"][r["fold"]]["validation"] +
                                                    state["plan"][r["fold"]]["test"])
        specs.append(best.feature_spec.mean)
    assert specs[0] != specs[1]  # each fold's own normaliser, fitted on its own training split
    assert "ensemble" in state["results"]["strategies"]


def test_a_fine_tuned_study_shows_the_zero_shot_policy_and_scratch_members_beside_it(tmp_path, pretrained,
                                                                                     market_root):
    folder = run_study(_cfg(market_root, tmp_path, 2), StudySettings(folds=2, seeds=1, bootstrap_reps=100,
                                                                     init=pretrained), log=lambda *_: None)
    state = json.loads((folder / "study.json").read_text())
    assert [j["run_dir"] for j in state["jobs"]] == ["fold0-seed0", "fold1-seed0", "fold0-seed0-scratch",
                                                     "fold1-seed0-scratch"]
    header = json.loads((folder / "fold0-seed0" / "config.json").read_text())
    assert header["init_checkpoint"] == pretrained
    assert json.loads((folder / "fold0-seed0-scratch" / "config.json").read_text())["init_checkpoint"] is None
    results = state["results"]
    assert {"zero_shot", "scratch"} <= set(results["strategies"])
    for name in ("zero_shot", "scratch"):
        v = results["statistics"]["variants"][name]
        iv = v["excess_vs_equal_weight"]
        assert iv["low"] <= iv["estimate"] <= iv["high"]
    # the variants are trials the study could have reported: the SPA counts them
    assert results["statistics"]["vs_equal_weight"]["spa"]["models"] == 1 + 1 + 2


def test_a_pretrained_policy_is_refused_on_data_it_may_have_learned_from(tmp_path, pretrained, market_root):
    ckpt = load_checkpoint(pretrained)
    late = {**ckpt.pretraining, "last_real_date": "2099-01-01T00:00:00"}
    import torch

    payload = torch.load(pretrained, weights_only=True)
    payload["pretraining"] = late
    torch.save(payload, tmp_path / "late.pt")
    with pytest.raises(CheckpointError, match="learned from real prices up to 2099-01-01"):
        run_study(_cfg(market_root, tmp_path, 0), StudySettings(folds=2, seeds=1, bootstrap_reps=100,
                                                                init=str(tmp_path / "late.pt")), log=lambda *_: None)
