"""The cross-sectional policy: permutation equivariance, any universe, causality, its head's gradients, and the
universe transfer of a trained checkpoint through the backtester and --init-checkpoint."""

import json

import numpy as np
import pytest
import torch
from conftest import make_synthetic_ohlc, tiny_study_config, write_market_csvs

from differentiable_market.checkpoint import build_policy, load_checkpoint
from differentiable_market.config import ExperimentConfig, PolicyConfig
from differentiable_market.errors import CheckpointError
from differentiable_market.policy import CrossSectionalPolicy, make_policy
from differentiable_market.rollout import deterministic_weights, ensemble_weights, generate_paths


def _policy(n_assets: int = 5, include_cash: bool = True, **kw) -> CrossSectionalPolicy:
    torch.manual_seed(0)
    kw = {"asset_head": "mlp", **kw}  # the tests below name the mlp head's layers; the affine head is parametrized
    cfg = PolicyConfig(architecture="cross", asset_hidden=16, asset_head_hidden=8, **kw)
    policy = make_policy(cfg, n_assets, 6, include_cash)
    with torch.no_grad():  # the init zeroes the output layer (every concentration equal); give it a real map
        policy.head_out.weight.normal_(0.0, 0.5)
    return policy


def _alpha(policy, features, held):
    return policy.concentrations(policy.state_projection(policy.encode(features))[:, None], held)


class _AlphaModule(torch.nn.Module):
    """``_alpha`` as a module's forward, so torch.func.functional_call can swap the policy's weights."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, features, held):
        return _alpha(self.policy, features, held)


@pytest.mark.parametrize("head", ["mlp", "affine"])
@pytest.mark.parametrize("mixing", ["pool", "mean", "attention"])
@pytest.mark.parametrize("include_cash", [True, False])
def test_permuting_the_assets_permutes_the_concentrations(mixing, include_cash, head):
    policy = _policy(include_cash=include_cash, mixing=mixing, num_layers=2, asset_head=head)
    n_out = policy.n_out
    features = torch.randn(3, 24, 5, 6)
    held = torch.softmax(torch.randn(3, 4, 24, n_out), -1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    perm_out = torch.cat([perm, torch.tensor([5])]) if include_cash else perm  # cash stays last
    alpha = _alpha(policy, features, held)
    alpha_perm = _alpha(policy, features[:, :, perm], held[..., perm_out])
    assert alpha.std() > 0.1  # the check below would hold trivially for a constant map
    torch.testing.assert_close(alpha_perm, alpha[..., perm_out], rtol=1e-5, atol=1e-5)
    # The rollout loop (its own per-bar head) permutes the same way: the mean-action path of permuted assets.
    observed = 1 + 0.01 * torch.randn(3, 24, n_out)
    w = deterministic_weights(policy, features, observed, include_cash)
    w_perm = deterministic_weights(policy, features[:, :, perm], observed[..., perm_out], include_cash)
    torch.testing.assert_close(w_perm, w[..., perm_out], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("head", ["mlp", "affine"])
@pytest.mark.parametrize("mixing", ["pool", "mean", "attention"])
def test_assets_interact_only_through_mixing_and_the_mixing_matters(mixing, head):
    policy = _policy(mixing=mixing, asset_head=head)
    features = torch.randn(2, 16, 5, 6)
    held = torch.full((2, 1, 16, 6), 1 / 6)
    other = features.clone()
    other[:, :, 4] += 3.0  # change asset 4's features only
    for alpha in (_alpha, _projected_alpha):  # the mixed tokens, and the projection ("mean": the folded route)
        a, b = alpha(policy, features, held), alpha(policy, other, held)
        assert (a[..., :4] - b[..., :4]).abs().max() > 1e-4  # the other assets see it, through the mixing layer
    with torch.no_grad():  # without the mixing layer's contribution, they would not
        if mixing == "mean":
            policy.mixing.context.weight.zero_()
        else:
            policy.mixing.out.weight.zero_()
            policy.mixing.out.bias.zero_()
    for alpha in (_alpha, _projected_alpha):
        a, b = alpha(policy, features, held), alpha(policy, other, held)
        torch.testing.assert_close(a[..., :4], b[..., :4], rtol=0, atol=0)


def _projected_alpha(policy, features, held):
    return policy.concentrations(policy.projection(features)[:, None], held)


@pytest.mark.parametrize("head", ["mlp", "affine"])
@pytest.mark.parametrize("include_cash", [True, False])
def test_the_mean_mixing_folded_into_the_head_is_the_mixed_tokens_projected(head, include_cash):
    """``projection`` with mean mixing never forms the mixed tokens: the mean's map is folded into the head's first
    layer. In float64 it equals ``state_projection(encode(...))`` (the mixed tokens h + W_c mean(h), then the head)
    to rounding, with and without a tradeable mask, and so do the gradients of every weight."""
    policy = _policy(include_cash=include_cash, mixing="mean", asset_head=head, num_layers=2).double()
    features = torch.randn(2, 40, 5, 6, dtype=torch.float64)  # 40 bars: several scan chunks
    mask = torch.rand(2, 40, 5, generator=torch.Generator().manual_seed(3)) > 0.3
    mask[:, 7] = False  # a bar with no tradeable asset: its mean reads zeros (cash, if any, still counts)
    for m in (None, mask):
        folded = policy.projection(features, None, m)
        weights = torch.randn_like(folded)
        unfolded = policy.state_projection(policy.encode(features, None, m))
        torch.testing.assert_close(folded, unfolded, rtol=1e-12, atol=1e-12)
        grads = []
        for out in (folded, unfolded):
            policy.zero_grad()
            (out * weights).sum().backward(retain_graph=True)
            grads.append({n: p.grad.clone() for n, p in policy.named_parameters() if p.grad is not None})
        assert grads[0].keys() == grads[1].keys() and "mixing.context.weight" in grads[0]
        for n in grads[0]:
            torch.testing.assert_close(grads[0][n], grads[1][n], rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("mixing", ["pool", "mean", "attention"])
def test_bar_t_uses_bars_up_to_t_only(mixing):
    policy = _policy(mixing=mixing, num_layers=2)
    features = torch.randn(2, 20, 5, 6)
    later = features.clone()
    later[:, 11:] += 10 * torch.randn_like(later[:, 11:])
    h1, h2 = policy.encode(features), policy.encode(later)
    torch.testing.assert_close(h1[:, :11], h2[:, :11], rtol=0, atol=0)
    assert not torch.allclose(h1[:, 11:], h2[:, 11:])


def test_the_same_weights_run_any_number_of_assets():
    policy = _policy(n_assets=4)
    for n in (1, 7, 40):
        other = make_policy(policy.cfg, n, 6, True)
        other.load_state_dict(policy.state_dict())  # no weight is sized by the asset count
        alpha = _alpha(other, torch.randn(2, 12, n, 6), torch.full((2, 3, 12, n + 1), 1 / (n + 1)))
        assert alpha.shape == (2, 3, 12, n + 1)
        assert bool(torch.isfinite(alpha).all())


def test_the_head_sees_the_held_weight_relative_to_equal_weight():
    """Equal weight reads 1 in every universe: an asset held at equal weight gets the same concentration whether
    the universe has 3 or 9 assets, when its state is the same."""
    policy = _policy(n_assets=3, include_cash=False, mixing="pool")
    sp = torch.randn(1, 1, 4, 1, 8).expand(1, 1, 4, 9, 8)
    big = make_policy(policy.cfg, 9, 6, False)
    big.load_state_dict(policy.state_dict())
    a3 = policy.concentrations(sp[..., :3, :], torch.full((1, 2, 4, 3), 1 / 3))
    a9 = big.concentrations(sp, torch.full((1, 2, 4, 9), 1 / 9))
    torch.testing.assert_close(a3[..., 0], a9[..., 0], rtol=1e-6, atol=1e-6)  # 1/3 x 3 vs 1/9 x 9 in fp32
    a_more = policy.concentrations(sp[..., :3, :], torch.tensor([0.5, 0.25, 0.25]).expand(1, 2, 4, 3))
    assert not torch.allclose(a_more[..., 0], a3[..., 0])  # and the held weight does move it


def test_cash_reads_its_raw_weight_so_an_all_cash_start_looks_the_same_in_any_universe():
    small = _policy(n_assets=3, include_cash=True)
    big = make_policy(small.cfg, 9, 6, True)
    big.load_state_dict(small.state_dict())
    sp = torch.randn(1, 1, 4, 1, 8)
    all_cash = [torch.zeros(1, 2, 4, n + 1).index_fill_(-1, torch.tensor([n]), 1.0) for n in (3, 9)]
    a3 = small.concentrations(sp.expand(1, 1, 4, 4, 8), all_cash[0])
    a9 = big.concentrations(sp.expand(1, 1, 4, 10, 8), all_cash[1])
    # the same numbers in, through the head's matmuls at two batch shapes (4 and 10 columns), whose kernels may
    # round differently: equal to float32 rounding
    torch.testing.assert_close(a3[..., -1], a9[..., -1], rtol=1e-6, atol=1e-6)  # cash
    torch.testing.assert_close(a3[..., 0], a9[..., 0], rtol=1e-6, atol=1e-6)  # an asset held at 0


@pytest.mark.parametrize("mixing", ["pool", "mean"])
def test_gradients_match_finite_differences_in_float64(mixing):
    """gradcheck of the concentrations with respect to the head, mixing and cash weights, through the chunked head
    (teacher forcing: leading dims equal); and the chunked head equals the plain one (the rollout's layout)."""
    policy = _policy(n_assets=3, mixing=mixing).double()
    features = torch.randn(2, 10, 3, 6, dtype=torch.float64)
    held = torch.softmax(torch.randn(2, 3, 10, 4, dtype=torch.float64), -1)
    mixing_weight = "mixing.own.weight" if mixing == "pool" else "mixing.context.weight"
    names = ["head_state.weight", "head_held.weight", "head_out.weight", mixing_weight, "cash_token"]
    params = dict(policy.named_parameters())
    wrapper = _AlphaModule(policy)

    def alpha_of(*weights):
        replaced = {f"policy.{n}": w for n, w in zip(names, weights)}
        return torch.func.functional_call(wrapper, replaced, (features, held), strict=False)

    assert torch.autograd.gradcheck(alpha_of, [params[n].detach().clone().requires_grad_() for n in names])
    sp = policy.state_projection(policy.encode(features))
    torch.testing.assert_close(policy.concentrations(sp[:, None], held),
                               torch.stack([policy.concentrations(sp[i][None], held[i]) for i in range(2)]))


@pytest.mark.parametrize("include_cash", [True, False])
def test_the_affine_head_is_softplus_of_a_plus_b_times_the_relative_held_weight(include_cash, monkeypatch):
    policy = _policy(n_assets=5, include_cash=include_cash, asset_head="affine")
    features = torch.randn(2, 12, 5, 6, dtype=torch.float64)
    policy = policy.double()
    tokens = policy.encode(features)  # [B, T, A_out, H]
    a_b = policy.head_out(torch.nn.functional.silu(policy.head_state(tokens)))  # the head's two numbers per token
    sp = policy.state_projection(tokens)
    torch.testing.assert_close(sp, a_b, rtol=0, atol=0)
    held = torch.softmax(torch.randn(2, 3, 12, policy.n_out, dtype=torch.float64), -1)
    rel = held * policy.n_out
    if include_cash:
        rel[..., -1] = held[..., -1]  # cash reads its raw weight
    expect = torch.nn.functional.softplus(sp[:, None, ..., 0] + sp[:, None, ..., 1] * rel) + policy.cfg.alpha_floor
    torch.testing.assert_close(policy.concentrations(sp[:, None], held),
                               expect.clamp(max=policy.cfg.alpha_max), rtol=1e-12, atol=1e-12)
    # the rollout loop's per-bar head computes the same numbers
    alpha_at = policy.bar_head(sp, 3)
    for t in (0, 7):
        torch.testing.assert_close(alpha_at(t, held[:, :, t].transpose(0, 1).float()),
                                   expect[:, :, t].transpose(0, 1).float(), rtol=1e-6, atol=1e-6)
    # gradients of the head's parameters through autograd match finite differences
    names = ["head_state.weight", "head_out.weight", "head_out.bias"]
    params = dict(policy.named_parameters())
    wrapper = _AlphaModule(policy)

    def alpha_of(*weights):
        return torch.func.functional_call(wrapper, {f"policy.{n}": w for n, w in zip(names, weights)},
                                          (features, held), strict=False)

    assert torch.autograd.gradcheck(alpha_of, [params[n].detach().clone().requires_grad_() for n in names])

    # teacher forcing takes the fused route (nothing saved but its inputs); its gradient is autograd's of the formula
    from differentiable_market.policy.cross import _affine_alpha

    g = torch.randn(2, 3, 12, policy.n_out, dtype=torch.float64)
    for chunk in (1 << 22, 1):  # whole, and one window per chunk
        monkeypatch.setattr("differentiable_market.policy.cross.HEAD_ROW_ELEMENTS", chunk)
        sp1, sp2 = sp.detach().clone().requires_grad_(), sp.detach().clone().requires_grad_()
        fused = policy.concentrations(sp1[:, None], held)
        assert "AffineHead" in type(fused.grad_fn).__name__
        (fused * g).sum().backward()
        plain = _affine_alpha(sp2[:, None], rel, policy.cfg.alpha_floor, policy.cfg.alpha_max)
        (plain * g).sum().backward()
        torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(sp1.grad, sp2.grad, rtol=1e-12, atol=1e-12)


def test_an_untrained_affine_policy_starts_at_the_mlp_heads_flat_dirichlet():
    features = torch.randn(2, 10, 4, 6)
    held = torch.softmax(torch.randn(2, 3, 10, 5), -1)
    alphas = []
    for head in ("mlp", "affine"):
        torch.manual_seed(1)
        policy = make_policy(PolicyConfig(architecture="cross", asset_head=head), 4, 6, True)
        alphas.append(_alpha(policy, features, held))
    for alpha in alphas:
        torch.testing.assert_close(alpha, torch.full_like(alpha, float(torch.nn.functional.softplus(torch.tensor(1.0)))
                                                          + PolicyConfig().alpha_floor))


@pytest.mark.parametrize("head", ["mlp", "affine"])
def test_sampled_rollouts_stay_on_the_simplex_and_are_reproducible(head):
    policy = _policy(n_assets=6, mixing="attention", asset_head=head)
    features = torch.randn(4, 30, 6, 6)
    sp = policy.state_projection(policy.encode(features))
    observed = 1 + 0.02 * torch.randn(4, 30, 7)
    a = generate_paths(policy, sp, observed, 3, True, torch.Generator().manual_seed(5))
    b = generate_paths(policy, sp, observed, 3, True, torch.Generator().manual_seed(5))
    assert a.weights.shape == (4, 4, 30, 7)
    torch.testing.assert_close(a.weights.sum(-1), torch.ones(4, 4, 30))
    torch.testing.assert_close(a.weights, b.weights, rtol=0, atol=0)


@pytest.mark.parametrize("head", ["mlp", "affine"])
@pytest.mark.parametrize("windows", [1, 3])
def test_an_ensemble_of_one_cross_policy_is_that_policy(windows, head):
    policy = _policy(n_assets=4, mixing="attention", asset_head=head)
    features = torch.randn(windows, 15, 4, 6)
    observed = 1 + 0.02 * torch.randn(windows, 15, 5)
    torch.testing.assert_close(ensemble_weights([policy], [features], observed),
                               deterministic_weights(policy, features, observed, True), rtol=1e-5, atol=1e-6)


# --- universe transfer of a trained checkpoint -------------------------------------------------------------------


@pytest.fixture(scope="module")
def cross_run(tmp_path_factory):
    """A cross-sectional policy trained on 4 symbols (seconds), and a folder of 6 other symbols."""
    import dataclasses

    from differentiable_market.train import run_training

    tmp = tmp_path_factory.mktemp("cross")
    train_root = write_market_csvs(make_synthetic_ohlc(400, 4, seed=1), tmp / "four")
    other = make_synthetic_ohlc(420, 6, seed=2)
    other = type(other).from_arrays(tuple(f"X{i}" for i in range(6)), other.timestamps, other.open, other.high,
                                    other.low, other.close, other.volume, source="six others")
    other_root = write_market_csvs(other, tmp / "six")
    cfg = tiny_study_config(train_root, tmp / "runs", epochs=4)
    cfg = dataclasses.replace(cfg, policy=dataclasses.replace(cfg.policy, architecture="cross", asset_hidden=8,
                                                              asset_head_hidden=4),
                              train=dataclasses.replace(cfg.train, select_min_t=None))  # a trained best.pt
    run = run_training(cfg, progress=False)
    return run, other_root, tmp


def test_a_cross_checkpoint_backtests_on_six_other_symbols_with_the_flag_only(cross_run):
    from differentiable_market.marketsimulator.run import main

    run, other_root, tmp = cross_run
    with pytest.raises(CheckpointError, match="--transfer-universe"):
        from differentiable_market.marketsimulator.backtester import BacktestOptions, run_backtest

        run_backtest(BacktestOptions(checkpoint=str(run), data_root=str(other_root)), log=lambda *_: None)
    assert main(["--checkpoint", str(run), "--data-root", str(other_root), "--transfer-universe",
                 "--report-dir", str(tmp / "evals"), "--no-trades"]) == 0
    report = json.loads(next((tmp / "evals").glob("*/report.json")).read_text())
    universe = report["overrides"]["universe"]
    assert universe["checkpoint"] == ["S00", "S01", "S02", "S03"]
    assert universe["used"] == [f"X{i}" for i in range(6)] == universe["new"]
    assert any("Universe transfer" in n for n in report["notes"])
    # The backtested policy is the checkpoint's weights, rebuilt for 6 assets.
    ckpt = load_checkpoint(run)
    policy = build_policy(ckpt, n_assets=6)
    assert policy.n_out == 6
    for k, v in ckpt.policy_state.items():
        torch.testing.assert_close(policy.state_dict()[k], v, rtol=0, atol=0)


def test_a_transferred_backtest_depends_on_the_data_not_the_names(cross_run):
    """The same six price series under names that sort in reverse order: the backtested weights come out reversed."""
    from differentiable_market.marketsimulator.backtester import BacktestOptions, run_backtest

    run, other_root, tmp = cross_run
    renamed = tmp / "renamed"
    renamed.mkdir()
    for i in range(6):
        (renamed / f"Y{5 - i}.csv").write_bytes((other_root / f"X{i}.csv").read_bytes())
    a, b = (run_backtest(BacktestOptions(checkpoint=str(run), data_root=str(root), transfer_universe=True,
                                         trades=False), log=lambda *_: None) for root in (other_root, renamed))
    assert b.symbols == tuple(f"Y{i}" for i in range(6))
    w_a, w_b = a.policy.weights, b.policy.weights
    assert float(abs(w_a - 1 / 6).max()) > 1e-4  # the policy does not just hold equal weight
    np.testing.assert_allclose(w_b, w_a[..., ::-1], rtol=1e-5, atol=1e-6)


def test_a_transferred_universe_is_decided_on_the_training_split_of_the_new_data(cross_run):
    """The checkpoint's last training date belongs to other data: an asset with a long gap in the NEW data's
    training split is dropped, as a run trained on these data would drop it."""
    from differentiable_market.marketsimulator.backtester import BacktestOptions, run_backtest

    run, _, tmp = cross_run
    later = make_synthetic_ohlc(420, 4, seed=9, start="2030-01-01")
    later = type(later).from_arrays(("L0", "L1", "L2", "L3"), later.timestamps, later.open, later.high, later.low,
                                    later.close, later.volume, source="later")
    root = write_market_csvs(later, tmp / "later")
    lines = (root / "L2.csv").read_text().splitlines()
    (root / "L2.csv").write_text("\n".join(lines[:60] + lines[80:]) + "\n")  # 20 bars missing early on
    result = run_backtest(BacktestOptions(checkpoint=str(run), data_root=str(root), transfer_universe=True,
                                          trades=False), log=lambda *_: None)
    assert result.symbols == ("L0", "L1", "L3")


def test_a_flat_checkpoint_refuses_another_universe(tmp_path):
    from differentiable_market.marketsimulator.backtester import BacktestOptions, run_backtest
    from differentiable_market.train import run_training

    root = write_market_csvs(make_synthetic_ohlc(400, 4, seed=1), tmp_path / "four")
    other = write_market_csvs(make_synthetic_ohlc(400, 3, seed=3), tmp_path / "three")
    run = run_training(tiny_study_config(root, tmp_path / "runs", epochs=2), progress=False)
    with pytest.raises(CheckpointError, match="needs a cross-sectional policy"):
        run_backtest(BacktestOptions(checkpoint=str(run), data_root=str(other), transfer_universe=True),
                     log=lambda *_: None)
    with pytest.raises(CheckpointError, match="flat policy"):
        build_policy(load_checkpoint(run), n_assets=3)


def test_a_cross_checkpoint_starts_a_training_run_on_other_symbols(cross_run, capsys):
    from differentiable_market.train import main

    run, other_root, tmp = cross_run
    code = main(["--architecture", "cross", "--asset-hidden", "8", "--asset-head-hidden", "4", "--hidden-size", "8",
                 "--lookback", "16", "--batch-windows", "4", "--rollout-groups", "2", "--epochs", "0",
                 "--device", "cpu", "--dtype", "float32", "--data-root", str(other_root), "--save-dir",
                 str(tmp / "runs2"), "--init-checkpoint", str(run / "checkpoints" / "best.pt"), "--no-progress",
                 "--action", "target"])
    assert code == 0
    assert "trained on 4 symbols, on 6 (0 shared, 6 new)" in capsys.readouterr().out
    started = load_checkpoint(next((tmp / "runs2").iterdir()) / "checkpoints" / "latest.pt")
    assert started.symbols == tuple(f"X{i}" for i in range(6))
    for k, v in load_checkpoint(run).policy_state.items():
        torch.testing.assert_close(started.policy_state[k], v, rtol=0, atol=0)


def test_checkpoints_without_an_architecture_load_as_flat():
    from differentiable_market.checkpoint import _with_legacy_defaults
    from differentiable_market.config import config_from_dict, config_to_dict

    stored = config_to_dict(ExperimentConfig())
    del stored["policy"]["architecture"]
    cfg = config_from_dict(ExperimentConfig, _with_legacy_defaults(stored), "checkpoint.config")
    assert cfg.policy.architecture == "flat"


@pytest.mark.parametrize("mixing", ["pool", "mean", "attention"])
def test_untradeable_tokens_are_left_out_of_the_mixing(mixing):
    """What an untradeable asset's token holds changes no other asset's concentration (it is out of the pooled mean
    and of the attention keys), and the masked result equals the policy run on the tradeable assets alone."""
    policy = _policy(n_assets=5, mixing=mixing)
    features = torch.randn(2, 12, 5, 6)
    mask = torch.ones(2, 12, 5, dtype=torch.bool)
    mask[:, :, 3] = False
    held = torch.softmax(torch.randn(2, 1, 12, 6), -1)
    keep = torch.tensor([0, 1, 2, 4, 5])

    def alpha(f, m):
        return policy.concentrations(policy.state_projection(policy.encode(f, None, m))[:, None], held)

    base = alpha(features, mask)
    other = features.clone()
    other[:, :, 3] = 50 * torch.randn(2, 12, 6)
    torch.testing.assert_close(alpha(other, mask)[..., keep], base[..., keep], rtol=0, atol=0)
    # The head reads held x (column count), 6 vs 5 here, so compare the token states, which do not see it.
    states_masked = policy.encode(features, None, mask)[..., keep, :]
    torch.testing.assert_close(states_masked, policy.encode(features[:, :, keep[:-1]]), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(alpha(other, None)[..., keep], alpha(features, None)[..., keep])  # unmasked: it mixes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_compiled_affine_head_is_the_formula_where_the_cap_binds_and_where_it_does_not(dtype):
    """Teacher-forced scoring on the CPU takes compiled loops (``kernels.affine_logits`` / ``affine_backward``): the
    same concentrations bit for bit as the torch formula, and the same gradient, zero where the cap binds."""
    from differentiable_market.policy.cross import _affine_alpha, _AffineHead, _fused_head

    gen = torch.Generator().manual_seed(11)
    sp = torch.randn(3, 1, 7, 5, 2, generator=gen, dtype=torch.float64)
    sp[..., 0] *= 150  # logits from about -450 to 450: the floor's region, softplus's curve and the cap's
    held = torch.softmax(torch.randn(3, 4, 7, 5, generator=gen, dtype=torch.float64), -1).to(dtype)
    sp = sp.to(dtype)
    scale = torch.tensor([5.0, 5.0, 5.0, 5.0, 1.0], dtype=dtype)
    floor, cap = 0.5, 200.0
    assert _fused_head(sp, held, scale, floor, cap) and not _fused_head(sp, held, scale, floor, 20.0)
    g = torch.randn(3, 4, 7, 5, generator=gen, dtype=torch.float64).to(dtype)
    sp1, sp2 = sp.clone().requires_grad_(), sp.clone().requires_grad_()
    fused = _AffineHead.apply(sp1, held, scale, floor, cap)
    plain = _affine_alpha(sp2, held * scale, floor, cap)
    assert torch.equal(fused, plain)
    assert bool((plain == cap).any()) and bool((plain < 1).any())
    (fused * g).sum().backward()
    (plain * g).sum().backward()
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(sp1.grad, sp2.grad, rtol=tol, atol=tol)
    capped = (plain == cap).all(1)  # [3, 7, 5]: capped for every rollout, so no gradient reaches a or b
    assert bool(capped.any()) and bool((sp1.grad[:, 0][capped] == 0).all())


def test_the_affine_head_leaves_its_compiled_loops_to_eager_runs_when_torch_compile_traces(monkeypatch):
    """``--compile on`` traces the scoring with dynamo, which cannot trace the head's numba loops (it raised on the
    CPU before): while tracing, the head takes the torch formula, the same function (the slow test
    ``test_compiled_scoring_builds_one_graph_and_matches_eager`` compiles it for both architectures)."""
    from differentiable_market.policy import cross

    gen = torch.Generator().manual_seed(14)
    sp, held = torch.randn(2, 1, 3, 4, 2, generator=gen), torch.rand(2, 3, 3, 4, generator=gen)
    scale = torch.full((4,), 4.0)
    assert cross._fused_head(sp, held, scale, 0.01, 100.0)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert not cross._fused_head(sp, held, scale, 0.01, 100.0)
    calls = []
    monkeypatch.setattr(cross, "_affine_logits", lambda *args: calls.append(1))
    sp = sp.requires_grad_()
    alpha = cross._AffineHead.apply(sp, held, scale, 0.01, 100.0)
    alpha.sum().backward()
    assert not calls and torch.equal(alpha, cross._affine_alpha(sp.detach(), held * scale, 0.01, 100.0))


def test_the_reference_scores_rollouts_with_the_same_bits_through_the_compiled_logit(monkeypatch):
    """Without gradient (the EMA reference's scoring of the rollouts) ``concentrations`` also writes the logit with
    ``kernels.affine_logits`` into its output: the torch formula's bits, and the compiled path is the one taken."""
    from differentiable_market.policy import cross

    policy = _policy(n_assets=5, asset_head="affine")
    gen = torch.Generator().manual_seed(13)
    sp = 40 * torch.randn(3, 1, 7, 6, 2, generator=gen)  # logits reach the floor's region and the cap
    held = torch.softmax(torch.randn(3, 5, 7, 6, generator=gen), -1)[:, :4]  # the sampled rows: a strided slice
    floor, cap = policy.cfg.alpha_floor, policy.cfg.alpha_max
    plain = cross._affine_alpha(sp, held * policy._held_scale(held), floor, cap)
    assert bool((plain == cap).any()) and bool((plain == floor).any())  # both ends of the clamp are exercised
    compiled, calls = cross._affine_logits, []
    monkeypatch.setattr(cross, "_affine_logits", lambda *args: calls.append(1) or compiled(*args))
    with torch.no_grad():
        alpha = policy.concentrations(sp, held)
    assert calls and torch.equal(alpha, plain)

def test_the_rollouts_affine_head_gives_the_concentrations_bit_for_bit():
    """The rollout loop's per-bar head reads a and b as planes; the concentrations are ``concentrations``' own bits,
    so the paths are sampled from exactly the Dirichlet that scoring evaluates."""
    policy = _policy(n_assets=5, asset_head="affine")
    gen = torch.Generator().manual_seed(12)
    sp = 3 * torch.randn(2, 9, 6, 2, generator=gen)
    held = torch.softmax(torch.randn(4, 2, 6, generator=gen), -1)
    alpha_at = policy.bar_head(sp, 4)
    for t in (0, 4, 8):
        assert torch.equal(alpha_at(t, held), policy.concentrations(sp[None, :, t], held))
