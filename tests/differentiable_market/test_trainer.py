import dataclasses

import numpy as np
import pytest
import torch

from differentiable_market.config import ExperimentConfig, PolicyConfig, TrainConfig
from differentiable_market.data import MarketData
from differentiable_market.synthetic import planted_signal_market, random_walk_market
from differentiable_market.trainer import Trainer, prepare_market

CPU = torch.device("cpu")


def _cfg(hidden: int = 32, architecture: str = "flat", **train) -> ExperimentConfig:
    base = dict(lookback=32, batch_windows=16, rollout_groups=4, epochs=10, eval_interval=5)
    base.update(train)
    policy = PolicyConfig(hidden_size=hidden, head_hidden=hidden, architecture=architecture)
    return ExperimentConfig(policy=policy, train=TrainConfig(**base))


def _trainer(market: MarketData, cfg: ExperimentConfig) -> Trainer:
    tensors, _ = prepare_market(cfg, market, CPU)
    return Trainer(cfg, tensors, CPU)


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_same_seed_same_metrics_and_weights(architecture):
    market = random_walk_market(400, 3, seed=1)
    runs = []
    for _ in range(2):
        tr = _trainer(market, _cfg(architecture=architecture))
        stats = torch.stack([tr.step() for _ in range(3)])
        runs.append((stats, [p.detach().clone() for p in tr.policy.parameters()]))
    assert torch.equal(runs[0][0], runs[1][0])
    assert all(torch.equal(a, b) for a, b in zip(runs[0][1], runs[1][1]))
    other = _trainer(market, _cfg(seed=3, architecture=architecture))
    assert not torch.equal(torch.stack([other.step() for _ in range(3)]), runs[0][0])


def test_microbatches_accumulate_to_the_full_batch_gradient():
    # With only the pathwise term the loss does not depend on the sampled rollouts, so the gradients must agree.
    market = random_walk_market(400, 3, seed=2)
    grads = []
    for mb in (None, 4):
        cfg = _cfg(microbatch_windows=mb, pg_weight=0.0, kl_weight=0.0, entropy_weight=0.0, dtype="float32")
        tr = _trainer(market, cfg)
        windows = tr.sample_windows()
        for lo in range(0, 16, cfg.train.microbatch):
            part = slice(lo, lo + cfg.train.microbatch)
            ro, proj = tr.loss_fn.collect(tr.reference, windows.part(part), tr.actions, tr.autocast)
            loss, _ = tr.loss_fn.loss(ro, proj, tr.autocast)
            (loss * cfg.train.microbatch / 16).backward()
        grads.append([p.grad.clone() for p in tr.policy.parameters()])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)



@pytest.mark.parametrize("reference", ["weights", "outputs"])
@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_history_context_microbatches_share_one_pass_and_give_the_full_batch_step(architecture, reference,
                                                                                  monkeypatch):
    """In the history context a step with microbatches runs the history pass once for the policy and, with the
    weights' EMA, once for the reference (not once per microbatch; the output reference needs no pass), and its
    update equals the unbatched step's (pathwise term only, so the loss does not depend on the sampled rollouts)."""
    from differentiable_market.policy.base import DirichletPolicy

    market = random_walk_market(400, 3, seed=2)
    calls = []
    original = DirichletPolicy.history_projection
    monkeypatch.setattr(DirichletPolicy, "history_projection",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    params = []
    for mb in (None, 4):
        cfg = _cfg(architecture=architecture, microbatch_windows=mb, pg_weight=0.0, kl_weight=0.0,
                   entropy_weight=0.0, dtype="float32", reference=reference)
        assert cfg.policy.context == "history"
        tr = _trainer(market, cfg)
        calls.clear()
        assert tr.step() is not None
        assert len(calls) == (2 if reference == "weights" else 1)
        params.append([p.detach().clone() for p in tr.policy.parameters()])
    for a, b in zip(*params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def _update(ref, history: torch.Tensor) -> torch.Tensor:
    """One step of the output reference as the Trainer takes it: average, then store."""
    averaged = ref.averaged(history)
    ref.store(averaged)
    return averaged


def test_output_reference_is_the_ema_of_the_projections_each_bar_has_seen():
    """Closed form: a bar first covered at step k holds the projection of step k, then
    decay * held + (1 - decay) * projection at every later step that covers it; bars a step does not cover keep
    their value."""
    from differentiable_market.trainer import OutputReference

    d = 0.75
    ref = OutputReference(d, capacity=6)
    p0, p1, p2 = (torch.randn(6, 3, 2, dtype=torch.float64) for _ in range(3))
    out = _update(ref, p0[:4])
    assert torch.equal(out, p0[:4]) and ref.filled == 4 and ref.values.shape == (6, 3, 2)
    _update(ref, p1[:6])  # bars 4, 5 are new
    _update(ref, p2[:3])  # bars 3 .. 5 are not covered
    expected = torch.cat([d * (d * p0[:3] + (1 - d) * p1[:3]) + (1 - d) * p2[:3],
                          d * p0[3:4] + (1 - d) * p1[3:4], p1[4:6]])
    torch.testing.assert_close(ref.values, expected, rtol=0, atol=1e-15)
    state = ref.state_dict()
    again = OutputReference(d, capacity=6)
    again.load_state_dict(state, device=CPU)
    assert again.filled == 6 and torch.equal(again.values, ref.values)
    with pytest.raises(ValueError, match="7 bars"):
        _update(ref, torch.zeros(7, 3, 2, dtype=torch.float64))


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_output_reference_agrees_with_the_weights_ema_to_first_order(architecture):
    """The two references differ at second order in the weights' movement: after a few steps the output
    reference's projections lie much closer to those of the EMA weights (which the Trainer keeps too) than the
    policy's own do. The first step, where reference and policy coincide, is identical under both."""
    market = random_walk_market(400, 3, seed=5)
    cfgs = {ref: _cfg(architecture=architecture, dtype="float32", ema_decay=0.7, reference=ref)
            for ref in ("weights", "outputs")}
    trainers = {ref: _trainer(market, cfg) for ref, cfg in cfgs.items()}
    first = {ref: tr.step() for ref, tr in trainers.items()}
    assert torch.equal(first["weights"], first["outputs"])
    tr = trainers["outputs"]
    for _ in range(5):
        tr.step()
    features, stop = tr.tensors.features, tr.output_reference.filled
    with torch.no_grad():
        policy = tr.policy.history_projection(features, stop)
        averaged = tr.output_reference.averaged(policy)  # now averaged over the same steps
        ema_weights = tr.reference.history_projection(features, stop)
    gap = (policy - ema_weights).norm()
    assert gap > 1e-3  # the policy has moved away from its reference
    # 0.085 (flat) and 0.063 (cross) when written; a buffer left at the first step's projections lay at 1.8 and 1.7
    assert (averaged - ema_weights).norm() < 0.15 * gap


def test_a_checkpoint_without_an_output_reference_restarts_it_from_the_policy(capsys):
    """Training state written before the output reference (or by a run that averaged weights) has none: loading it
    says so, and the next step starts the average from the policy's projections, as step 0 does."""
    market = random_walk_market(400, 3, seed=6)
    tr = _trainer(market, _cfg(dtype="float32"))
    tr.step()
    state = tr.training_state()
    assert state["reference_outputs"]["filled"] == tr.output_reference.filled > 0
    state.pop("reference_outputs")
    fresh = _trainer(market, _cfg(dtype="float32"))
    fresh.load_training_state(tr.policy.state_dict(), state, step=1, best=None)
    assert "holds no output reference" in capsys.readouterr().out
    assert fresh.output_reference.filled == 0
    assert fresh.step() is not None and fresh.output_reference.filled > 0


def test_output_reference_needs_the_history_context():
    from differentiable_market.errors import ConfigError

    assert _cfg().reference_mode == "outputs"
    window = PolicyConfig(context="window")
    assert ExperimentConfig(policy=window).reference_mode == "weights"
    with pytest.raises(ConfigError, match="--reference weights"):
        ExperimentConfig(policy=window, train=TrainConfig(reference="outputs"))


def test_non_finite_step_is_skipped_counted_and_leaves_weights_unchanged():
    market = random_walk_market(400, 3, seed=3)
    tr = _trainer(market, _cfg())
    assert tr.step() is not None  # the output reference holds a step's projections
    filled, averaged = tr.output_reference.filled, tr.output_reference.values.clone()
    before = [p.detach().clone() for p in tr.policy.parameters()]
    ref_before = [p.detach().clone() for p in tr.reference.parameters()]
    good = tr.tensors.features.clone()
    tr.tensors.features.fill_(float("nan"))
    assert tr.step() is None
    assert tr.nonfinite_total == 1 and tr.nonfinite_run == 1
    assert all(torch.equal(a, b) for a, b in zip(before, tr.policy.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(ref_before, tr.reference.parameters()))
    assert tr.output_reference.filled == filled
    assert torch.equal(tr.output_reference.values[:filled], averaged[:filled])
    tr.tensors.features.copy_(good)
    assert tr.step() is not None and tr.nonfinite_run == 0 and tr.nonfinite_total == 1


def test_extreme_but_valid_prices_train_without_nan():
    market = random_walk_market(400, 3, seed=4)
    close = market.close.copy()
    close[200:, 0] *= 0.5  # a 50% one-day crash
    close[:, 1] *= 1e-6  # prices around 1e-4
    close[:, 2] *= 1e4  # prices around 1e6
    open_ = np.vstack([close[:1], close[:-1]])
    extreme = MarketData.from_arrays(market.symbols, market.timestamps, open_, np.maximum(open_, close) * 1.001,
                                     np.minimum(open_, close) * 0.999, close, market.volume)
    tr = _trainer(extreme, _cfg())
    for _ in range(5):
        stats = tr.step()
        assert stats is not None and bool(torch.isfinite(stats).all())
    assert all(bool(torch.isfinite(p).all()) for p in tr.policy.parameters())
    val = tr.evaluate("validation")
    assert np.isfinite(val["policy"]["log_growth"])


def _test_excess(market: MarketData, steps: int, **train) -> dict:
    """Excess of the trained policy over equal weight on the test split: total log growth and its t-statistic."""
    cfg = _cfg(epochs=steps, **train)
    tr = _trainer(market, cfg)
    for _ in range(steps):
        tr.step()
    return tr.evaluate("test")["excess_vs_equal_weight"]


def test_learns_a_planted_signal_fast():
    # Asset 0 is AR(1) with phi=0.5 and 1% daily vol, so its next bar is predictable from its last one; the test
    # split has ~440 bars. Measured: +0.29 log growth over equal weight, t = 6.1.
    excess = _test_excess(planted_signal_market(3000, 4, seed=0), steps=80, batch_windows=32, hidden=64)
    assert excess["log_growth"] > 0.1 and excess["t_stat"] > 3.0


@pytest.mark.slow
def test_learns_a_planted_signal_and_claims_no_edge_on_a_random_walk():
    # Measured t-statistics of the test-split excess over equal weight: planted 6.2, 3.4, 6.1; random walks -0.7,
    # -1.9, -0.9 (trading noise only costs fees).
    planted = [_test_excess(planted_signal_market(3000, 4, seed=s), steps=200, batch_windows=32, hidden=64)
               for s in (0, 1, 2)]
    walk = [_test_excess(random_walk_market(3000, 4, seed=s), steps=200, batch_windows=32, hidden=64)
            for s in (0, 1, 2)]
    assert min(p["t_stat"] for p in planted) > 2.5 and min(p["log_growth"] for p in planted) > 0.15
    # No edge exists: whatever the policy learned is not a significant excess over equal weight.
    assert max(w["t_stat"] for w in walk) < 2.0


def test_policy_decisions_do_not_see_the_next_open():
    # Decision t is made after bar t closes; the open of bar t+1 (the overnight gap) must not reach it, not even
    # through the drifted holdings the policy is shown.
    market = random_walk_market(400, 3, seed=6)
    cfg = _cfg()
    tr = _trainer(market, cfg)
    with torch.no_grad():
        for p in tr.policy.parameters():
            p.normal_(0, 0.5)
    k = 300
    gap_open = market.open.copy()
    gap_open[k, 0] *= 1.3  # only asset 0's open of bar k moves; its close and every other bar stay
    moved = MarketData.from_arrays(market.symbols, market.timestamps, gap_open, np.maximum(market.high, gap_open),
                                   market.low, market.close, market.volume)
    spec = _spec(cfg, market)
    weights = []
    for m in (market, moved):
        tensors, _ = prepare_market(cfg, m, CPU, feature_spec=spec)
        from differentiable_market.rollout import deterministic_weights

        weights.append(deterministic_weights(tr.policy, tensors.features[None, 200:340], tensors.observed[None, 200:340],
                                             False))
    a, b = weights
    torch.testing.assert_close(a[:, : k - 200], b[:, : k - 200], rtol=0, atol=0)  # decisions at bars < k
    assert not torch.allclose(a[:, k - 200:], b[:, k - 200:])  # decision k, after bar k closes, may use it


def _spec(cfg, market):
    _, spec = prepare_market(cfg, market, CPU)
    return spec


def test_ratio_clip_stops_the_gradient_of_rollouts_outside_the_trust_region():
    # With old log-probs one nat below the current ones the ratio is e > 1 + clip for every bar; for positive
    # advantages the clipped objective is then flat, so the policy-gradient loss has no gradient at all.
    market = random_walk_market(400, 3, seed=7)
    tr = _trainer(market, _cfg(kl_weight=0.0, entropy_weight=0.0, pathwise_weight=0.0))
    ro, proj = tr.loss_fn.collect(tr.reference, tr.sample_windows(), tr.actions, None)
    tr.loss_fn.loss(ro, proj.detach(), None)  # records old log-probs
    ro.old_logp = ro.old_logp - 1.0
    ro.advantages = ro.advantages.abs() + 0.1
    loss, stats = tr.loss_fn.loss(ro, None, None)
    loss.backward()
    assert all(p.grad is None or float(p.grad.abs().max()) == 0.0 for p in tr.policy.parameters())
    assert stats[6] == pytest.approx(-(1 + tr.cfg.train.clip_eps) * float(ro.advantages.mean()), rel=1e-5)
    # inside the trust region (ratio 1) the same advantages do move the policy
    ro.old_logp = ro.old_logp + 1.0
    tr.policy.zero_grad()
    loss, _ = tr.loss_fn.loss(ro, None, None)
    loss.backward()
    assert any(p.grad is not None and float(p.grad.abs().max()) > 0 for p in tr.policy.parameters())


def test_several_updates_per_batch_reuse_the_rollouts():
    market = random_walk_market(400, 3, seed=8)
    one = _trainer(market, _cfg(updates_per_batch=1))
    two = _trainer(market, _cfg(updates_per_batch=2))
    s1, s2 = one.step(), two.step()
    assert s1 is not None and s2 is not None
    # same windows and rollouts (same seeds): identical rewards; a second update moves the weights further
    assert float(s1[1]) == float(s2[1])
    start = _trainer(market, _cfg())
    moved1 = sum(float((a - b).abs().sum()) for a, b in zip(one.policy.state_dict().values(), start.policy.state_dict().values()))
    moved2 = sum(float((a - b).abs().sum()) for a, b in zip(two.policy.state_dict().values(), start.policy.state_dict().values()))
    assert moved2 > moved1 > 0
    assert two.step_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_compiled_scoring_builds_one_graph_and_matches_eager(architecture):
    # fullgraph=True: a graph break would raise instead of silently splitting the compiled region.
    market = random_walk_market(400, 3, seed=9)
    eager = _trainer(market, _cfg(compile="off", dtype="float32", architecture=architecture))
    compiled = _trainer(market, _cfg(compile="on", dtype="float32", architecture=architecture))
    assert compiled.compiled and not eager.compiled
    windows = eager.sample_windows()
    results = []
    for tr in (eager, compiled):
        gen = torch.Generator().manual_seed(0)
        ro, proj = tr.loss_fn.collect(tr.reference, windows, gen, None)
        loss, stats = tr.loss_fn.loss(ro, proj, None)
        loss.backward()
        results.append((stats, [p.grad.clone() for p in tr.policy.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("architecture,context,head", [("flat", "window", "mlp"), ("cross", "window", "mlp"),
                                                        ("cross", "history", "affine")])
def test_cuda_steps_with_compile_bf16_and_microbatches_are_finite_and_resumable_state_is_plain(architecture, context,
                                                                                               head):
    market = random_walk_market(600, 5, seed=10)
    cfg = _cfg(device="cuda", compile="on", dtype="auto", microbatch_windows=8, architecture=architecture)
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, context=context, asset_head=head))
    tensors, _ = prepare_market(cfg, market, torch.device("cuda"))
    tr = Trainer(cfg, tensors, torch.device("cuda"))
    assert tr.compiled and tr.autocast == torch.bfloat16
    for _ in range(3):
        stats = tr.step()
        assert stats is not None and bool(torch.isfinite(stats).all())
    state = tr.training_state()
    assert all(t.device.type == "cpu" for t in state["rng"].values())
    assert np.isfinite(tr.evaluate("validation")["policy"]["log_growth"])


def test_training_state_round_trip_includes_the_non_finite_streak():
    market = random_walk_market(400, 3, seed=11)
    tr = _trainer(market, _cfg())
    tr.tensors.features.fill_(float("nan"))
    tr.step()
    tr.step()
    other = _trainer(market, _cfg())
    other.load_training_state(tr.policy.state_dict(), tr.training_state(), tr.step_count, None)
    assert (other.nonfinite_run, other.nonfinite_total, other.step_count) == (2, 2, 2)


@pytest.mark.parametrize("include_cash", [False, True])
def test_universe_sample_gives_each_window_its_own_assets_with_matching_features_and_growth(include_cash):
    market = random_walk_market(400, 6, seed=2)
    cfg = _cfg(architecture="cross", universe_sample=3)
    cfg = dataclasses.replace(cfg, env=dataclasses.replace(cfg.env, include_cash=include_cash))
    tr = _trainer(market, cfg)
    windows = tr.sample_windows()
    growth, observed = windows.growth, windows.observed
    features = tr.tensors.features[windows.bars[:, :, None], windows.assets[:, None, :]]
    assert features.shape[2] == 3 and growth.shape[-1] == observed.shape[-1] == 3 + include_cash
    full_f, full_g = tr.tensors.features, tr.tensors.growth
    picked = set()
    for b in range(features.shape[0]):
        # locate the window in time and its assets by their (distinct) feature columns
        start = next(s for s in range(full_f.shape[0] - features.shape[1] + 1)
                     if any(torch.equal(full_f[s:s + features.shape[1], j], features[b, :, 0]) for j in range(6)))
        cols = [next(j for j in range(6) if torch.equal(full_f[start:start + features.shape[1], j], features[b, :, i]))
                for i in range(3)]
        assert cols == sorted(cols)
        picked.add(tuple(cols))
        window_g = full_g[start:start + features.shape[1]]
        window_o = tr.tensors.observed[start:start + features.shape[1]]
        torch.testing.assert_close(growth[b, :, :3], window_g[:, cols], rtol=0, atol=0)
        torch.testing.assert_close(observed[b, :, :3], window_o[:, cols], rtol=0, atol=0)
        if include_cash:
            torch.testing.assert_close(growth[b, :, 3], window_g[:, -1], rtol=0, atol=0)
            torch.testing.assert_close(observed[b, :, 3], window_o[:, -1], rtol=0, atol=0)
    assert len(picked) > 1  # windows draw different subsets
    stats = tr.step()
    assert stats is not None and bool(torch.isfinite(stats).all())


def test_universe_sample_needs_the_cross_sectional_policy_and_fewer_assets_than_the_data():
    from differentiable_market.errors import ConfigError

    with pytest.raises(ConfigError, match="--architecture cross"):
        _cfg(universe_sample=3)
    with pytest.raises(ConfigError, match="--universe-sample 6 is not below the 6 assets"):
        _trainer(random_walk_market(400, 6, seed=2), _cfg(architecture="cross", universe_sample=6))


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_a_union_calendar_is_causal_in_mask_features_weights_and_accounting(tmp_path, architecture):
    """Change every bar after t (prices moved, prints removed so assets halt or delist earlier, a new listing) and
    reload: the mask, the features, the policy's weights and the accounting up to t are bit for bit the same."""
    import pandas as pd

    from differentiable_market.config import DataConfig, EnvConfig
    from differentiable_market.data import load_market
    from differentiable_market.env import account, initial_holdings, tradeable_columns
    from differentiable_market.policy import make_policy
    from differentiable_market.rollout import deterministic_weights
    from differentiable_market.synthetic import churn_universe

    churn_universe(tmp_path / "a", n_assets=10, years=2, seed=5, listing_share=0.5)
    (tmp_path / "b").mkdir()
    t = 300
    rng = np.random.default_rng(0)
    first_files = sorted((tmp_path / "a").iterdir())
    cut = None
    for k, f in enumerate(first_files):
        df = pd.read_csv(f)
        cut = cut or sorted(pd.concat([pd.read_csv(g)["timestamp"] for g in first_files]).unique())[t]
        later = df["timestamp"] > cut
        df.loc[later, ["open", "high", "low", "close"]] *= rng.uniform(0.5, 1.5, size=(int(later.sum()), 1))
        if k % 3 == 0:  # fewer prints after t: a halt or an earlier delisting
            df = df[~later | (rng.random(len(df)) < 0.3)]
        df.to_csv(tmp_path / "b" / f.name, index=False)
    cfg = ExperimentConfig(
        data=DataConfig(calendar="union"),
        env=EnvConfig(include_cash=True),
        policy=PolicyConfig(architecture=architecture, action="target", hidden_size=8, head_hidden=8,
                            asset_hidden=8, asset_head_hidden=8),
        train=TrainConfig(lookback=16, batch_windows=2, rollout_groups=2, device="cpu", dtype="float32"),
    )
    markets = [load_market(dataclasses.replace(cfg.data, root=str(tmp_path / d)), min_bars=1) for d in "ab"]
    assert (markets[0].timestamps[: t + 1] == markets[1].timestamps[: t + 1]).all()
    assert not np.array_equal(markets[0].tradeable[t + 1 :], markets[1].tradeable[t + 1 : len(markets[0].tradeable)])
    tensors, spec = prepare_market(cfg, markets[0], torch.device("cpu"))
    other, _ = prepare_market(cfg, markets[1], torch.device("cpu"), spec)  # the same normaliser (fitted on train)
    assert torch.equal(tensors.tradeable[: t + 1], other.tradeable[: t + 1])
    assert not tensors.tradeable[: t + 1].all()
    assert torch.equal(tensors.features[: t + 1], other.features[: t + 1])
    torch.manual_seed(0)
    policy = make_policy(cfg.policy, markets[0].n_assets, spec.n_features, True)
    with torch.no_grad():
        policy.head_out.weight.normal_(0.0, 0.5)
    h = 2  # open execution: decision s earns O[s+2] / O[s+1]
    bars = torch.arange(0, t + 1 - h)[None]
    runs = []
    for x in (tensors, other):
        w = deterministic_weights(policy, x.features, x.observed[bars], True, growth=x.growth[bars], bars=bars,
                                  tradeable=x.tradeable)
        mask = x.decision_columns(bars, True)
        acc = account(w.double(), x.growth[bars].double(), initial_holdings(w.shape[-1], True, dtype=torch.float64),
                      1e-3, True, tradeable=mask)
        assert bool((w[~mask] == 0).all())
        runs.append((w, acc.log_growth))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_training_on_a_union_calendar_samples_only_tradeable_assets(tmp_path, architecture):
    """A never-tradeable asset and assets outside their lives get exactly 0 in every sampled and mean path, and a
    training step on the masked Dirichlet is finite and moves the weights."""
    from differentiable_market.config import EnvConfig

    m = random_walk_market(400, 4, seed=2)
    tradeable = np.ones((400, 4), dtype=bool)
    tradeable[:, 3] = False  # never tradeable
    tradeable[:150, 1] = False  # lists at bar 150
    tradeable[250:, 2] = False  # gone from bar 250
    m = dataclasses.replace(m, calendar="union", listed=tradeable.copy(), tradeable=tradeable)
    cfg = ExperimentConfig(
        env=EnvConfig(include_cash=True),
        policy=PolicyConfig(architecture=architecture, action="target", hidden_size=8, head_hidden=8, asset_hidden=8,
                            asset_head_hidden=8),
        train=TrainConfig(lookback=32, batch_windows=8, rollout_groups=3, device="cpu", dtype="float32", seed=1),
    )
    tensors, _ = prepare_market(cfg, m, torch.device("cpu"))
    trainer = Trainer(cfg, tensors, torch.device("cpu"))
    windows = trainer.sample_windows()
    ro, _ = trainer.loss_fn.collect(trainer.reference, windows, trainer.actions, None)
    assert bool((ro.sampled[..., 3] == 0).all()) and bool((ro.held[..., 3] == 0).all())
    off = ~windows.tradeable[:, None].expand_as(ro.sampled)
    assert bool((ro.sampled[off] == 0).all()) and bool((ro.sampled[~off] > 0).all())
    before = [p.detach().clone() for p in trainer.policy.parameters()]
    stats = trainer.step()
    assert stats is not None and bool(torch.isfinite(stats).all())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.policy.parameters()))


def test_a_bar_with_nothing_tradeable_and_no_cash_names_the_bar_and_the_flags_that_fix_it():
    from differentiable_market.errors import DataError
    from differentiable_market.trainer import market_mask

    market = random_walk_market(50, 3, seed=4)
    tradeable = np.ones((50, 3), dtype=bool)
    tradeable[:7, :] = False  # nothing listed yet
    tradeable[7:, 0] = False
    market = dataclasses.replace(market, tradeable=tradeable)
    with pytest.raises(DataError, match=r"bar 0 .*7 such bars.*--include-cash.*--min-listed"):
        market_mask(market, include_cash=False)
    assert market_mask(market, include_cash=True).sum() == 2 * 43


def test_the_default_cpu_heap_keeps_mapping_only_where_the_run_trades_time_for_memory(monkeypatch):
    """``--cpu-heap auto``: "heap" (nothing mapped) for a plain run, "keep" under microbatches or gradient
    checkpointing, whose users have said memory is what binds; an explicit mode is taken as given."""
    import differentiable_market.trainer as trainer_module
    from differentiable_market.heap import resolve_cpu_heap

    applied = []
    monkeypatch.setattr(trainer_module, "set_cpu_heap",
                        lambda mode, saves: applied.append(resolve_cpu_heap(mode, saves)))
    market = random_walk_market(200, 3, seed=0)
    checkpointed = _cfg()
    checkpointed = dataclasses.replace(checkpointed,
                                       policy=dataclasses.replace(checkpointed.policy, gradient_checkpointing=True))
    for cfg in (_cfg(), _cfg(microbatch_windows=4), checkpointed, _cfg(cpu_heap="keep"), _cfg(cpu_heap="system")):
        _trainer(market, cfg)
    assert applied == ["heap", "keep", "keep", "keep", "system"]


@pytest.mark.parametrize("field", ["reference", "device", "dtype", "compile", "cpu_heap"])
def test_a_train_setting_outside_its_choices_is_refused_by_name(field):
    """A mode built in Python (not through the CLI's choices or a config file) is checked too: a misspelt cpu_heap
    would otherwise act as "keep" without a word."""
    from differentiable_market.errors import ConfigError

    with pytest.raises(ConfigError, match=f"train.{field} must be one of .* got 'nope'"):
        TrainConfig(**{field: "nope"})


@pytest.mark.parametrize("architecture", ["flat", "cross"])
def test_the_trainer_keeps_the_score_unless_it_trades_time_for_memory(architecture):
    """Training keeps the Dirichlet terms' score (``dirichlet.log_prob_entropy_kl(..., keep_score=True)``) by default
    (``saves_memory`` false) and takes the same steps, bit for bit, as with it recomputed; under gradient
    checkpointing or microbatches it keeps nothing it could recompute."""
    from differentiable_market.trainer import saves_memory

    market = random_walk_market(300, 5, seed=4)
    cfg = ExperimentConfig(policy=PolicyConfig(architecture=architecture),
                           train=TrainConfig(lookback=24, batch_windows=8, rollout_groups=3, dtype="float32"))
    kept, recomputed = _trainer(market, cfg), _trainer(market, cfg)
    assert kept.loss_fn.keep_score and not saves_memory(cfg)
    recomputed.loss_fn.keep_score = False
    for _ in range(3):
        assert torch.equal(kept.step(), recomputed.step())
    for a, b in zip(kept.policy.parameters(), recomputed.policy.parameters()):
        assert torch.equal(a, b)
    for saving in (dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, gradient_checkpointing=True)),
                   dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, microbatch_windows=4))):
        assert saves_memory(saving) and not _trainer(market, saving).loss_fn.keep_score
