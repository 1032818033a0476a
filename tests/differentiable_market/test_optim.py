import dataclasses

import pytest
import torch

from differentiable_market.config import PolicyConfig, TrainConfig
from differentiable_market.optim import build_optimizers
from differentiable_market.policy import DirichletGRUPolicy


def _policy(encoder: str = "mingru") -> DirichletGRUPolicy:
    return DirichletGRUPolicy(PolicyConfig(architecture="flat", action="target", hidden_size=8, head_hidden=8, encoder=encoder), n_assets=2, n_features=3,
                              include_cash=True)


@pytest.mark.parametrize(("encoder", "bias"),
                         [("gru", "encoder.gru.bias_hh_l0"), ("mingru", "encoder.layers.0.gate.bias")])
def test_muon_takes_hidden_matrices_and_adamw_the_rest(encoder, bias):
    policy = _policy(encoder)
    adamw, muon = build_optimizers(policy, TrainConfig())
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, torch.optim.Muon)
    muon_ids = {id(p) for g in muon.param_groups for p in g["params"]}
    adam_ids = {id(p) for g in adamw.param_groups for p in g["params"]}
    named = dict(policy.named_parameters())
    assert muon_ids == {id(named[n]) for n in policy.hidden_matrix_names()}
    assert muon_ids.isdisjoint(adam_ids)
    assert muon_ids | adam_ids == {id(p) for p in policy.parameters()}
    # biases, norms, the input projection and the output head stay with AdamW
    for name in ("input_proj.weight", "input_norm.weight", "head_out.weight", "head_out.bias", bias):
        assert id(named[name]) in adam_ids


def test_no_muon_uses_adamw_for_everything():
    policy = _policy()
    (adamw,) = build_optimizers(policy, dataclasses.replace(TrainConfig(), use_muon=False))
    assert sum(len(g["params"]) for g in adamw.param_groups) == len(list(policy.parameters()))


@pytest.mark.parametrize(("encoder", "matrix"),
                         [("gru", "encoder.gru.weight_hh_l0"), ("mingru", "encoder.layers.0.gate.weight")])
def test_a_muon_step_changes_hidden_matrices(encoder, matrix):
    policy = _policy(encoder)
    opts = build_optimizers(policy, TrainConfig())
    before = policy.get_parameter(matrix).detach().clone()
    out = policy.encode(torch.randn(2, 5, 2, 3))
    out.square().sum().backward()
    for opt in opts:
        opt.step()
    assert not torch.equal(before, policy.get_parameter(matrix))
