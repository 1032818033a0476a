import json

import numpy as np
import pytest
import torch

from differentiable_market.checkpoint import check_after_pretraining, feature_spec_for, load_checkpoint
from differentiable_market.errors import CheckpointError, ConfigError
from differentiable_market.pretrain.card import model_card
from differentiable_market.pretrain.corpus import (MarketSpec, build_market, cut, default_corpus, last_real_date,
                                                   market_record)
from differentiable_market.pretrain.run import PretrainSettings, run_pretraining
from differentiable_market.pretrain.trainer import corpus_split_bars
from differentiable_market.synthetic import momentum_market, random_walk_market, regime_market

TINY = [MarketSpec("rw", "random", "train", seed=1, params={"n_bars": 260, "n_assets": 4}),
        MarketSpec("rev", "reversal", "train", cost_bps=5.0, seed=2, params={"n_bars": 260, "n_assets": 6}),
        MarketSpec("val", "planted", "validation", seed=3, params={"n_bars": 260, "n_assets": 4})]
SETTINGS = dict(steps=4, eval_interval=2, markets_per_step=2, windows_per_market=4, lookback=16, nyse=False,
                device="cpu", dtype="float32")


def test_the_default_corpus_is_reproducible_and_covers_the_families():
    a, b = default_corpus(seed=0, nyse=False), default_corpus(seed=0, nyse=False)
    assert a == b and a != default_corpus(seed=1, nyse=False)
    families = {s.family for s in a if s.role == "train"}
    assert families == {"reversal", "momentum", "planted", "random", "regime", "churn"}
    assert sum(s.role == "validation" for s in a) == 12 and len({s.name for s in a}) == len(a)
    nyse = default_corpus(seed=0)[-1]
    assert (nyse.family, nyse.role, nyse.through, nyse.execution) == ("nyse", "train", "1973-12-31", "close")


def test_a_market_is_cut_at_a_date_and_the_last_real_date_ignores_synthetic_and_validation_markets():
    market = random_walk_market(100, 3, seed=0)  # daily calendar from 2000-01-01
    short = cut(market, "2000-01-10")
    assert short.n_bars == 10 and str(short.timestamps[-1])[:10] == "2000-01-10"
    assert np.array_equal(short.close, market.close[:10])
    spec = MarketSpec("f", "folder", "train", folder="x")
    records = [market_record(spec, short), market_record(MarketSpec("s", "random", "train"), market),
               market_record(MarketSpec("v", "folder", "validation", folder="y"), market)]
    assert last_real_date(records) == "2000-01-10T00:00:00"
    with pytest.raises(ConfigError, match="unknown family"):
        MarketSpec("z", "nope", "train")


def test_corpus_splits_train_on_almost_everything_or_validate_on_the_second_half():
    tr = corpus_split_bars(1000, "train", 64)
    assert tr[0] == 0 and tr[1] == 1000 - 2 * 67 and tr[-1] == 1000
    va = corpus_split_bars(1000, "validation", 64)
    assert va[:4] == (0, 500, 564, 1000 - 67) and va[-1] == 1000


def test_the_momentum_drift_is_a_stationary_ar1_with_the_given_persistence():
    m = momentum_market(6000, 40, seed=0, idio_vol=0.0, market_vol=0.0, market_drift=0.0, trend_std=1e-3,
                        trend_rho=0.95)
    mu = np.diff(np.log(m.close), axis=0)  # with no noise and no market the returns are the drift itself
    assert mu.std() == pytest.approx(1e-3, rel=0.1)
    lag1 = np.mean([np.corrcoef(mu[:-1, i], mu[1:, i])[0, 1] for i in range(40)])
    assert lag1 == pytest.approx(0.95, abs=0.02)


def test_a_regime_market_switches_between_reversal_momentum_and_walk():
    m = regime_market(3000, 30, seed=1, regime_bars=(400, 600))
    r = np.diff(np.log(m.close), axis=0)
    idio = r - r.mean(1, keepdims=True)
    lag1 = [np.mean([np.corrcoef(idio[a:a + 300, i][:-1], idio[a:a + 300, i][1:])[0, 1] for i in range(30)])
            for a in range(0, 2700, 300)]
    # reversal regimes read clearly negative (about -(1 - rho) / 2), momentum and walks near or above zero
    assert min(lag1) < -0.05 and max(lag1) > -0.02


def test_pretraining_writes_a_checkpoint_with_its_corpus_and_resumes_exactly(tmp_path):
    full = run_pretraining(PretrainSettings(**SETTINGS, save_dir=str(tmp_path / "a")), log=lambda *_: None,
                           specs=TINY)
    cut_short = run_pretraining(PretrainSettings(**{**SETTINGS, "steps": 2}, save_dir=str(tmp_path / "b")),
                                log=lambda *_: None, specs=TINY)
    run_pretraining(PretrainSettings(**SETTINGS, save_dir=str(tmp_path / "b")), resume=cut_short,
                    log=lambda *_: None, specs=TINY)
    a = load_checkpoint(full / "checkpoints" / "latest.pt")
    b = load_checkpoint(cut_short / "checkpoints" / "latest.pt")
    assert a.step == b.step == 4
    assert all(torch.equal(a.policy_state[k], b.policy_state[k]) for k in a.policy_state)
    best = load_checkpoint(full / "checkpoints" / "best.pt")
    pre = best.pretraining
    assert best.symbols == () and best.refits_normaliser and best.trained_through is None
    assert [r["name"] for r in pre["corpus"]] == ["rw", "rev", "val"]
    assert all(len(r["ohlc_sha256"]) == 64 for r in pre["corpus"]) and len(pre["corpus_sha256"]) == 64
    assert pre["validation"]["markets"][0]["market"] == "val"
    rows = [json.loads(x) for x in (full / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["type"] == "validation"] == [2, 4]
    card = (full / "MODEL_CARD.md").read_text()
    assert "none (synthetic markets only)" in card and "| train | reversal | 1 | 6 | 260 | 5 |" in card


def test_a_pretrained_policy_refits_its_normaliser_and_refuses_data_before_its_last_real_date(tmp_path):
    folder = run_pretraining(PretrainSettings(**{**SETTINGS, "steps": 2}, save_dir=str(tmp_path)), log=lambda *_: None,
                             specs=TINY)
    ckpt = load_checkpoint(folder / "checkpoints" / "best.pt")
    market = random_walk_market(400, 5, seed=9, vol=0.03)
    spec = feature_spec_for(ckpt, market, 200)
    assert spec.names == ckpt.feature_spec.names and not np.allclose(spec.std, ckpt.feature_spec.std)
    dated = type(ckpt)(**{**ckpt.__dict__, "pretraining": {**ckpt.pretraining, "last_real_date": "1973-12-31T00:00:00"}})
    check_after_pretraining(dated, "1974-01-02T00:00:00", "the validation split")
    with pytest.raises(CheckpointError, match="learned from real prices up to 1973-12-31"):
        check_after_pretraining(dated, "1973-06-01T00:00:00", "the validation split")
    assert "1973-12-31" in model_card(dated)
