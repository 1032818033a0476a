"""The encoder's context (``--context``): with "history" each bar is encoded once, over every bar before it, and every
training window, validation split, backtest window, study fold and prediction reads the same state at bar t; with
"window" every window starts cold. Checked against explicit per-window encodings, in float64 where exactness is the
claim."""

import dataclasses

import numpy as np
import pytest
import torch

from differentiable_market.config import DataConfig, ExperimentConfig, PolicyConfig, TrainConfig
from differentiable_market.policy import make_policy
from differentiable_market.rollout import deterministic_weights
from differentiable_market.synthetic import random_walk_market
from differentiable_market.trainer import Trainer, evaluate_split, prepare_market, window_states

CPU = torch.device("cpu")


def _policy(architecture: str, context: str, n_assets: int = 4, include_cash: bool = True, n_features: int = 6,
            **kw):
    torch.manual_seed(0)  # the context adds no weights: both contexts build the same policy
    cfg = PolicyConfig(architecture=architecture, context=context, hidden_size=16, head_hidden=8, asset_hidden=16,
                       asset_head_hidden=8, **kw)
    policy = make_policy(cfg, n_assets, n_features, include_cash)
    with torch.no_grad():  # the init zeroes the output layer; give it a real map
        policy.head_out.weight.normal_(0.0, 0.5)
    return policy


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_history_gives_a_bar_one_state_in_every_window_and_window_starts_each_window_cold(architecture):
    features = torch.randn(60, 4, 6, dtype=torch.float64)
    bars = torch.stack([torch.arange(10, 30), torch.arange(20, 40)])  # overlapping on bars 20..29
    hist = _policy(architecture, "history", num_layers=2).double()
    sp = hist.window_projection(features, bars)
    # the same bar reads the same state in both windows, and it is the full pass's state at that bar
    torch.testing.assert_close(sp[0, 10:], sp[1, :10], rtol=0, atol=0)
    for row, b in enumerate(bars):
        prefix = hist.state_projection(hist.encode(features[None, : int(b[-1]) + 1]))[0, b]
        torch.testing.assert_close(sp[row], prefix, rtol=1e-12, atol=1e-12)
    cold = _policy(architecture, "window", num_layers=2).double()
    sp_cold = cold.window_projection(features, bars)
    for row, b in enumerate(bars):
        alone = cold.projection(features[None, b])[0]
        torch.testing.assert_close(sp_cold[row], alone, rtol=0, atol=0)
    assert not torch.allclose(sp_cold[0, 10:], sp_cold[1, :10])  # a cold window has not read bars 10..19
    # A window that starts at bar 0 has no history before it: both contexts agree.
    first = torch.arange(0, 20)[None]
    torch.testing.assert_close(hist.window_projection(features, first), cold.window_projection(features, first),
                               rtol=0, atol=0)


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_history_is_causal_and_reads_the_bars_before_the_window(architecture):
    policy = _policy(architecture, "history")
    features = torch.randn(80, 4, 6)
    bars = torch.arange(30, 60)[None]
    observed = 1 + 0.01 * torch.randn(1, 30, policy.n_out)
    w = deterministic_weights(policy, features, observed, True, bars=bars)
    later = features.clone()
    later[45:] += torch.randn_like(later[45:])  # bars after decision 45 - 30 = 15 of the window
    w_later = deterministic_weights(policy, later, observed, True, bars=bars)
    torch.testing.assert_close(w_later[:, :15], w[:, :15], rtol=0, atol=0)
    assert not torch.allclose(w_later[:, 15:], w[:, 15:])
    earlier = features.clone()
    earlier[:30] += torch.randn_like(earlier[:30])  # before the window: the history context reads it...
    assert not torch.allclose(deterministic_weights(policy, earlier, observed, True, bars=bars), w)
    policy.cfg = dataclasses.replace(policy.cfg, context="window")  # ...a cold window does not
    torch.testing.assert_close(deterministic_weights(policy, earlier, observed, True, bars=bars),
                               deterministic_weights(policy, features, observed, True, bars=bars), rtol=0, atol=0)


@pytest.mark.parametrize("include_cash", [True, False])
def test_history_cross_policy_permutes_with_the_assets(include_cash):
    policy = _policy("cross", "history", n_assets=5, include_cash=include_cash)
    features = torch.randn(50, 5, 6)
    bars = torch.stack([torch.arange(5, 25), torch.arange(25, 45)])
    observed = 1 + 0.01 * torch.randn(2, 20, policy.n_out)
    perm = torch.tensor([3, 0, 4, 1, 2])
    perm_out = torch.cat([perm, torch.tensor([5])]) if include_cash else perm
    w = deterministic_weights(policy, features, observed, include_cash, bars=bars)
    w_perm = deterministic_weights(policy, features[:, perm], observed[..., perm_out], include_cash, bars=bars)
    assert w.std() > 1e-3
    torch.testing.assert_close(w_perm, w[..., perm_out], rtol=1e-5, atol=1e-6)


def _cfg(architecture: str, context: str, action: str = "target", **train) -> ExperimentConfig:
    base = dict(lookback=24, batch_windows=8, rollout_groups=3, epochs=4, eval_interval=2, dtype="float32",
                compile="off")
    base.update(train)
    policy = PolicyConfig(architecture=architecture, context=context, hidden_size=16, head_hidden=8, asset_hidden=8,
                          asset_head_hidden=4, action=action)
    return ExperimentConfig(policy=policy, train=TrainConfig(**base))


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_training_windows_read_the_full_pass_and_its_gradient_is_the_per_window_prefixes_gradient(architecture):
    """The shared pass (one encode, windows gathered from it) against each window encoded on its own prefix of the
    history: equal states and equal parameter gradients, in float64."""
    market = random_walk_market(300, 3, seed=4)
    cfg = _cfg(architecture, "history")
    tensors, _ = prepare_market(cfg, market, CPU)
    tr = Trainer(cfg, tensors, CPU)
    policy = tr.policy.double()
    features = tensors.features.double()
    windows = tr.sample_windows()
    assert len(set(windows.bars[:, 0].tolist())) > 1
    weight = torch.randn(*windows.bars.shape, dtype=torch.float64)
    shared = window_states(policy, features, windows, None)
    (shared.flatten(2).sum(-1) * weight).sum().backward()
    g_shared = [p.grad.clone() for p in policy.parameters() if p.grad is not None]
    policy.zero_grad()
    own = torch.stack([policy.state_projection(policy.encode(features[None, : int(b[-1]) + 1]))[0, b]
                       for b in windows.bars])
    (own.flatten(2).sum(-1) * weight).sum().backward()
    g_own = [p.grad.clone() for p in policy.parameters() if p.grad is not None]
    torch.testing.assert_close(shared, own, rtol=1e-10, atol=1e-12)
    assert len(g_shared) == len(g_own) > 0
    for a, b in zip(g_shared, g_own):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_history_training_is_seeded_and_validation_reads_the_training_bars(architecture):
    market = random_walk_market(300, 3, seed=5)
    cfg = _cfg(architecture, "history")
    runs = []
    for _ in range(2):
        tensors, _ = prepare_market(cfg, market, CPU)
        tr = Trainer(cfg, tensors, CPU)
        stats = [tr.step() for _ in range(2)]
        assert all(s is not None and bool(torch.isfinite(s).all()) for s in stats)
        runs.append((torch.stack(stats), tr.evaluate("validation")))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    assert runs[0][1] == runs[1][1]
    # The validation path's states come from the pass over every bar before it: changing a training bar moves it.
    start, _ = tr.tensors.decision_range("validation")
    with torch.no_grad():  # two steps barely move the zero-initialised output layer: give it a real map
        tr.policy.head_out.weight.normal_(0.0, 0.5)
    before = evaluate_split(tr.policy, tr.tensors, cfg, "validation")["policy"]["log_growth"]
    tr.tensors.features[start - 5] += 3.0
    after = evaluate_split(tr.policy, tr.tensors, cfg, "validation")["policy"]["log_growth"]
    assert after != before


@pytest.mark.parametrize("include_cash", [False, True])
def test_a_universe_sample_in_the_history_context_takes_each_windows_columns_of_the_full_pass(include_cash):
    market = random_walk_market(300, 6, seed=7)
    cfg = _cfg("cross", "history", universe_sample=3)
    cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, include_cash=include_cash))
    tensors, _ = prepare_market(cfg, market, CPU)
    tr = Trainer(cfg, tensors, CPU)
    windows = tr.sample_windows()
    sp = window_states(tr.policy, tensors.features, windows, None)
    full = tr.policy.window_projection(tensors.features, windows.bars)  # every asset, mixed together
    assert sp.shape[2] == 3 + include_cash
    for b in range(windows.bars.shape[0]):
        cols = windows.assets[b].tolist() + ([6] if include_cash else [])
        torch.testing.assert_close(sp[b], full[b][:, cols], rtol=0, atol=0)
    stats = tr.step()
    assert stats is not None and bool(torch.isfinite(stats).all())


def test_checkpoints_without_a_context_or_head_load_as_window_and_mlp():
    from differentiable_market.checkpoint import _with_legacy_defaults
    from differentiable_market.config import config_from_dict, config_to_dict

    stored = config_to_dict(ExperimentConfig(policy=PolicyConfig(context="history", asset_head="affine")))
    del stored["policy"]["context"], stored["policy"]["asset_head"]
    cfg = config_from_dict(ExperimentConfig, _with_legacy_defaults(stored), "checkpoint.config")
    assert (cfg.policy.context, cfg.policy.asset_head) == ("window", "mlp")
    kept = config_to_dict(ExperimentConfig(policy=PolicyConfig(context="history", asset_head="affine")))
    cfg = config_from_dict(ExperimentConfig, _with_legacy_defaults(kept), "checkpoint.config")
    assert (cfg.policy.context, cfg.policy.asset_head) == ("history", "affine")


def test_a_history_study_stitches_paths_that_read_every_bar_before_each_fold(tmp_path):
    from differentiable_market.checkpoint import build_policy, load_checkpoint, save_checkpoint
    from differentiable_market.env import observed_growth
    from differentiable_market.features import compute_features, fit_feature_spec
    from differentiable_market.study.plan import plan_folds
    from differentiable_market.study.oos import stitched_paths

    market = random_walk_market(500, 3, seed=6)
    folds = plan_folds(market.n_bars, 2, 3, 0.3, 60, 16, 16)
    members = {}
    for f in folds:
        base = _cfg("cross", "history", lookback=16)
        cfg = ExperimentConfig(data=DataConfig(split_bars=f.split_bars), policy=base.policy, train=base.train)
        spec = fit_feature_spec(market, cfg.features, f.train[1])
        torch.manual_seed(f.index)
        policy = make_policy(cfg.policy, 3, len(spec.names), False)
        with torch.no_grad():
            policy.head_out.weight.normal_(0.0, 0.5)
        path = tmp_path / f"f{f.index}.pt"
        save_checkpoint(path, config=cfg, symbols=market.symbols, feature_spec=spec,
                        policy=policy, step=1,
                        data_fingerprint=market.fingerprint(), splits={}, best_score=0.0, trained_through="x")
        members[f.index] = [(0, load_checkpoint(path))]
    paths, bars = stitched_paths(market, folds, members, 1e-3, False, "open")
    seen = observed_growth(torch.tensor(market.open), torch.tensor(market.close), "open", False).float()
    d0, d1 = folds[-1].decisions
    ckpt = members[folds[-1].index][0][1]
    feats = torch.as_tensor(compute_features(market, ckpt.feature_spec), dtype=torch.float32)
    w = torch.as_tensor(paths["seed0"].weights)[d0 - bars[0]:d1 - bars[0]]
    shown = torch.as_tensor(paths["seed0"].weights)[d0 - bars[0] - 1].float()
    from differentiable_market.env import drift

    expect = deterministic_weights(build_policy(ckpt, False), feats, seen[None, d0:d1], False, None,
                                   initial=drift(shown, seen[d0 - 1]), bars=torch.arange(d0, d1)[None])[0].double()
    np.testing.assert_allclose(w.numpy(), (expect / expect.sum(-1, keepdim=True)).numpy(), rtol=0, atol=1e-6)
    cold = deterministic_weights(build_policy(ckpt, False), feats[None, d0:d1], seen[None, d0:d1], False, None,
                                 initial=drift(shown, seen[d0 - 1]))[0].double()
    assert not torch.allclose(cold, expect, atol=1e-4)  # the fold's path did read the bars before it


@pytest.mark.parametrize("include_cash", [True, False])
@pytest.mark.parametrize("chunk", [None, 1])
def test_cross_gradient_checkpointing_recomputes_every_token_activation_with_the_same_gradients(include_cash, chunk,
                                                                                                 monkeypatch):
    if chunk is not None:  # recompute blocks of 16 bars (four blocks and their carried encoder states)
        monkeypatch.setattr("differentiable_market.policy.cross.TOKEN_BLOCK_ELEMENTS", chunk)
    features = torch.randn(60, 5, 6, dtype=torch.float64)
    bars = torch.stack([torch.arange(10, 30), torch.arange(35, 55)])
    mask = torch.rand(60, 5) > 0.2
    grads = []
    for ckpt in (False, True):
        policy = _policy("cross", "history", n_assets=5, include_cash=include_cash, gradient_checkpointing=ckpt,
                         asset_head="affine").double()
        policy.window_projection(features, bars, None, mask).square().sum().backward()
        grads.append({n: p.grad for n, p in policy.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 5
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("include_cash", [True, False])
def test_cross_history_pass_in_blocks_of_bars_equals_one_pass_over_the_whole_history(include_cash, num_layers,
                                                                                    monkeypatch):
    """The token pipeline runs in blocks of 16 bars here (the encoder's state carried from block to block), and is
    compared with the modules applied to the whole history at once: values and gradients."""
    monkeypatch.setattr("differentiable_market.policy.cross.TOKEN_BLOCK_ELEMENTS", 1)
    features = torch.randn(1, 70, 5, 6, dtype=torch.float64)
    mask = torch.rand(1, 70, 5) > 0.2
    policy = _policy("cross", "history", n_assets=5, include_cash=include_cash, asset_head="affine",
                     num_layers=num_layers).double()
    assert policy.block_bars(1, 5) == 16
    assert policy.block_bars(1, 5, torch.device("cuda")) > 70  # a GPU takes a whole history this size in one block

    def whole_history():
        x = features.permute(0, 2, 1, 3).reshape(5, 70, 6)
        tokens = policy._with_cash(policy.encoder(policy.input_norm(policy.input_proj(x)))[None].transpose(1, 2))
        full_mask = torch.cat([mask, torch.ones_like(mask[..., :1])], -1) if include_cash else mask
        return policy.state_projection(policy.mixing(tokens, full_mask))

    results = []
    for fn in (lambda: policy.projection(features, None, mask), whole_history):
        policy.zero_grad()
        out = fn()
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)).sum().backward()
        results.append((out.detach(), {n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None}))
    (blocked, g_blocked), (whole, g_whole) = results
    torch.testing.assert_close(blocked, whole, rtol=1e-12, atol=1e-13)
    assert g_blocked.keys() == g_whole.keys() and len(g_whole) > 10
    for name in g_whole:
        torch.testing.assert_close(g_blocked[name], g_whole[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("include_cash", [True, False])
def test_cross_tokens_without_gradient_run_in_blocks_with_the_same_values(include_cash, monkeypatch):
    """The reference policy and evaluation run the token pipeline in blocks of bars too: same numbers."""
    features = torch.randn(40, 5, 6, dtype=torch.float64)
    bars = torch.stack([torch.arange(5, 25), torch.arange(15, 35)])
    mask = torch.rand(40, 5) > 0.2
    policy = _policy("cross", "history", n_assets=5, include_cash=include_cash, asset_head="affine").double()
    whole = policy.window_projection(features, bars, None, mask)  # with gradient: one pass
    monkeypatch.setattr("differentiable_market.policy.cross.TOKEN_BLOCK_ELEMENTS", 1)
    with torch.no_grad():
        chunked = policy.window_projection(features, bars, None, mask)
        tokens = policy.encode(features[None], None, mask[None])  # chunked tokens, projected afterwards
    torch.testing.assert_close(chunked, whole.detach(), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(policy.state_projection(tokens)[0][bars], whole.detach(), rtol=1e-12, atol=1e-14)
