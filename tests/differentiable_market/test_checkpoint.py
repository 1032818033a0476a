import io
import pickle
from pathlib import Path

import pytest
import torch

from differentiable_market.checkpoint import build_policy, check_market_matches, load_checkpoint, save_checkpoint
from differentiable_market.config import ExperimentConfig, PolicyConfig
from differentiable_market.errors import CheckpointError
from differentiable_market.features import fit_feature_spec
from differentiable_market.policy import DirichletGRUPolicy
from differentiable_market.synthetic import random_walk_market

MARKER = Path("/tmp/differentiable_market_pwned_marker")


def _save(path: Path, include_cash: bool = False) -> tuple[DirichletGRUPolicy, tuple[str, ...]]:
    market = random_walk_market(120, 3, seed=0)
    cfg = ExperimentConfig(policy=PolicyConfig(architecture="flat", action="target", hidden_size=8, head_hidden=8))
    spec = fit_feature_spec(market, cfg.features, 60)
    torch.manual_seed(0)
    policy = DirichletGRUPolicy(cfg.policy, 3, len(spec.names), include_cash)
    save_checkpoint(path, config=cfg, symbols=market.symbols, feature_spec=spec, policy=policy, step=7,
                    data_fingerprint=market.fingerprint(), splits={"train": [0, 60]}, best_score=0.5,
                    trained_through="2000-03-01T00:00:00")
    return policy, market.symbols


def test_roundtrip_rebuilds_the_same_policy(tmp_path):
    policy, symbols = _save(tmp_path / "a.pt")
    ckpt = load_checkpoint(tmp_path / "a.pt")
    assert ckpt.step == 7 and ckpt.symbols == symbols and ckpt.best_score == 0.5
    assert len(ckpt.sha256) == 64
    rebuilt = build_policy(ckpt)
    feats = torch.randn(2, 5, 3, ckpt.n_features)
    torch.testing.assert_close(rebuilt.encode(feats), policy.encode(feats), rtol=0, atol=0)


class _Exploit:
    def __reduce__(self):
        return (Path.touch, (MARKER,))


def test_a_checkpoint_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path):
    MARKER.unlink(missing_ok=True)
    evil = tmp_path / "evil.pt"
    torch.save({"format": "differentiable_market.checkpoint", "payload": _Exploit()}, evil)
    # sanity: unrestricted unpickling would indeed run it
    with pytest.raises(CheckpointError, match="evil.pt is not a differentiable_market checkpoint.*could run code") as err:
        load_checkpoint(evil)
    assert "weights_only" not in str(err.value)  # torch's advice to load it unsafely is not repeated
    assert not MARKER.exists()
    torch.load(evil, weights_only=False)
    assert MARKER.exists()
    MARKER.unlink()


def test_truncated_and_foreign_files_get_clear_errors(tmp_path):
    _save(tmp_path / "a.pt")
    data = (tmp_path / "a.pt").read_bytes()
    (tmp_path / "torn.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="torn.pt"):
        load_checkpoint(tmp_path / "torn.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a differentiable_market checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


@pytest.mark.parametrize("content", [b"hello, not a checkpoint\n", b"", b"\x00\x01binary", b"PK\x03\x04junk"])
def test_a_file_that_is_not_a_checkpoint_is_named_so_without_torchs_advice(tmp_path, content):
    path = tmp_path / "notes.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    text = str(err.value)
    assert "notes.pt" in text and "weights_only" not in text and "Traceback" not in text
    assert "not a differentiable_market checkpoint" in text or "truncated or damaged" in text


def test_a_plain_pickle_of_python_objects_is_refused_with_the_object_it_names(tmp_path):
    import pickle

    path = tmp_path / "obj.pt"
    path.write_bytes(pickle.dumps({"f": print}, protocol=2))
    with pytest.raises(CheckpointError, match=r"obj.pt is not a differentiable_market checkpoint.*GLOBAL print") as e:
        load_checkpoint(path)
    assert "weights_only" not in str(e.value) and "add_safe_globals" not in str(e.value)


def test_mismatched_symbols_and_cash_layout_are_named(tmp_path):
    _save(tmp_path / "a.pt")
    ckpt = load_checkpoint(tmp_path / "a.pt")
    with pytest.raises(CheckpointError, match=r"missing from the data: \['S002'\].*not in the checkpoint: \['XYZ'\]"):
        check_market_matches(ckpt, ("S000", "S001", "XYZ"))
    with pytest.raises(CheckpointError, match="different order"):
        check_market_matches(ckpt, ("S001", "S000", "S002"))
    check_market_matches(ckpt, ckpt.symbols)
    with pytest.raises(CheckpointError, match="include_cash=False"):
        build_policy(ckpt, include_cash=True)


def test_checkpoint_is_plain_data(tmp_path):
    _save(tmp_path / "a.pt")
    payload = torch.load(io.BytesIO((tmp_path / "a.pt").read_bytes()), weights_only=True)
    assert set(payload) >= {"config", "symbols", "feature_spec", "policy", "step", "data_fingerprint"}
    assert payload["config"]["env"]["cost_bps"] == 10.0
    pickle.dumps(payload["config"])  # JSON-able dicts


FIXTURES = Path(__file__).parent / "fixtures"


def test_a_checkpoint_written_before_encoders_were_selectable_loads_and_backtests_identically():
    """``fixtures/legacy_gru_best.pt`` was written by version 0.1.0 (nn.GRU at ``gru.*``, no ``policy.encoder`` key);
    ``legacy_gru_backtest.pt`` holds that version's backtest of it on the bundled sample's test split."""
    from differentiable_market.data import bundled_sample_dir
    from differentiable_market.marketsimulator.backtester import BacktestOptions, run_backtest

    ckpt = load_checkpoint(FIXTURES / "legacy_gru_best.pt")
    assert ckpt.config.policy.encoder == "gru"
    # written before the selection gate and the excess cash target: it keeps what it was trained with
    assert ckpt.config.train.select_min_t is None and ckpt.config.policy.cash_target == "share"
    assert ckpt.feature_spec.missing_prices == ()  # its spec predates the record: every asset had all four prices
    assert ckpt.config.features.autocorr_windows == ckpt.feature_spec.config.autocorr_windows == ()
    assert any(k.startswith("gru.") for k in ckpt.policy_state)
    result = run_backtest(  # that version's default windows: 256 bars, stride 64
        BacktestOptions(checkpoint=str(FIXTURES / "legacy_gru_best.pt"), data_root=str(bundled_sample_dir()),
                        window_length=256, stride=64),
        log=lambda *_: None,
    )
    expected = torch.load(FIXTURES / "legacy_gru_backtest.pt", weights_only=True)
    policy = result.strategies["policy"]
    # float32 GRU kernels differ between CPUs (an AMX Xeon differs from the AMD EPYC that wrote the fixture by up to
    # 1.1e-8 in 4 of 2048 weights), so the match is to float32 precision, far below any behaviour change.
    torch.testing.assert_close(torch.as_tensor(policy.weights), expected["weights"], rtol=0, atol=1e-6)
    torch.testing.assert_close(torch.as_tensor(policy.log_growth), expected["log_growth"], rtol=0, atol=1e-7)


def test_validation_end_is_stored_and_recovered_for_older_checkpoints(tmp_path, sample_market):
    _save(tmp_path / "old.pt")  # written without validated_through, as before it was recorded
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.validated_through is None
    assert old.validation_end(sample_market.timestamps, same_data=False) is None  # unknown
    legacy = load_checkpoint(FIXTURES / "legacy_gru_best.pt")
    assert legacy.validated_through is None
    va_end = legacy.splits["validation"][1]
    assert legacy.validation_end(sample_market.timestamps, same_data=True) == str(
        sample_market.timestamps[va_end - 1])[:19]

    market = random_walk_market(120, 3, seed=0)
    cfg = ExperimentConfig(policy=PolicyConfig(architecture="flat", action="target", hidden_size=8, head_hidden=8))
    spec = fit_feature_spec(market, cfg.features, 60)
    save_checkpoint(tmp_path / "new.pt", config=cfg, symbols=market.symbols, feature_spec=spec,
                    policy=DirichletGRUPolicy(cfg.policy, 3, len(spec.names), False), step=1,
                    data_fingerprint=market.fingerprint(), splits={"validation": [70, 90]}, best_score=None,
                    trained_through="2000-03-01T00:00:00", validated_through="2000-03-31T00:00:00")
    new = load_checkpoint(tmp_path / "new.pt")
    assert new.validated_through == "2000-03-31T00:00:00"
    assert new.validation_end(sample_market.timestamps, same_data=False) == "2000-03-31T00:00:00"
