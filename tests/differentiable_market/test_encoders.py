import math

import numpy as np
import pytest
import torch

from differentiable_market.policy.encoders import (
    MAX_LOG_DECAY,
    SCAN_CHUNK,
    MinGRUEncoder,
    MinGRULayer,
    gated_recurrence,
    linear_scan,
)


def _sequential(log_a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    h = torch.zeros_like(b[:, 0])
    out = []
    for t in range(b.shape[1]):
        h = log_a[:, t].exp() * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("t_len", [1, 7, SCAN_CHUNK, SCAN_CHUNK + 1, 3 * SCAN_CHUNK + 5])
def test_scan_matches_the_sequential_recurrence_in_float64(t_len):
    gen = torch.Generator().manual_seed(t_len)
    log_a = -MAX_LOG_DECAY * torch.rand(3, t_len, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(3, t_len, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(linear_scan(log_a, b), _sequential(log_a, b), rtol=1e-12, atol=1e-12)


def test_scan_closed_form_constant_decay():
    # h_t = a h_{t-1} + 1 from 0 gives h_t = (1 - a^(t+1)) / (1 - a)
    a, t_len = 0.9, 50
    log_a = torch.full((1, t_len, 1), math.log(a), dtype=torch.float64)
    h = linear_scan(log_a, torch.ones(1, t_len, 1, dtype=torch.float64))
    t = torch.arange(t_len, dtype=torch.float64)
    torch.testing.assert_close(h[0, :, 0], (1 - a ** (t + 1)) / (1 - a), rtol=1e-13, atol=0)


def test_scan_at_the_steepest_decay_stays_finite_and_accurate_in_float32():
    gen = torch.Generator().manual_seed(0)
    log_a = torch.full((2, 200, 4), -MAX_LOG_DECAY, dtype=torch.float64)
    b = torch.randn(2, 200, 4, generator=gen, dtype=torch.float64) * 100
    h32 = linear_scan(log_a.float(), b.float())
    assert bool(torch.isfinite(h32).all())
    torch.testing.assert_close(h32.double(), _sequential(log_a, b), rtol=1e-4, atol=1e-3)


def test_scan_gradients_match_finite_differences():
    gen = torch.Generator().manual_seed(1)
    log_a = (-MAX_LOG_DECAY * torch.rand(2, 2 * SCAN_CHUNK + 3, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.randn(2, 2 * SCAN_CHUNK + 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda la, b_: linear_scan(la, b_), (log_a, b))


def test_mingru_layer_is_the_gated_recurrence():
    torch.manual_seed(0)
    layer = MinGRULayer(6, 4).double()
    x = torch.randn(2, 30, 6, dtype=torch.float64)
    a = torch.exp(-MAX_LOG_DECAY * torch.sigmoid(layer.gate(x)))
    c = layer.candidate(x)
    h, expected = torch.zeros(2, 4, dtype=torch.float64), []
    for t in range(30):
        h = a[:, t] * h + (1 - a[:, t]) * c[:, t]
        expected.append(h)
    torch.testing.assert_close(layer(x), torch.stack(expected, 1))


def test_mingru_under_bf16_autocast_keeps_the_scan_in_float32():
    torch.manual_seed(0)
    enc = MinGRUEncoder(8, 2)
    x = torch.randn(2, 40, 8)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        h = enc(x)
    assert h.dtype == torch.float32
    torch.testing.assert_close(h, enc(x), rtol=0.05, atol=0.05)


def test_scan_from_a_state_matches_the_sequential_recurrence_and_its_gradients_finite_differences():
    gen = torch.Generator().manual_seed(2)
    log_a = (-MAX_LOG_DECAY * torch.rand(2, SCAN_CHUNK + 5, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.randn(2, SCAN_CHUNK + 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 1, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    # h0 is the state of one bar before: a zero-decay bar with input h0 in front gives the same states
    prefixed = _sequential(torch.cat([torch.zeros_like(h0), log_a], 1), torch.cat([h0, b], 1))[:, 1:]
    torch.testing.assert_close(linear_scan(log_a, b, h0), prefixed, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda la, b_, h: linear_scan(la, b_, h), (log_a, b, h0))


@pytest.mark.parametrize("cut", [SCAN_CHUNK, 3 * SCAN_CHUNK])
def test_scan_in_pieces_continued_from_each_last_state_gives_the_same_bits(cut):
    """Cut at whole scan chunks, a sequence scanned piece by piece equals one scan over all of it, bit for bit (the
    cross policy's history pass runs in blocks of bars and relies on this)."""
    gen = torch.Generator().manual_seed(cut)
    log_a = -MAX_LOG_DECAY * torch.rand(3, 5 * SCAN_CHUNK + 7, 4, generator=gen)
    b = torch.randn(3, 5 * SCAN_CHUNK + 7, 4, generator=gen)
    first = linear_scan(log_a[:, :cut], b[:, :cut])
    second = linear_scan(log_a[:, cut:], b[:, cut:], first[:, -1:])
    assert torch.equal(torch.cat([first, second], 1), linear_scan(log_a, b))


def _gates(shape: tuple[int, ...], seed: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """kc [B, T, ..., 2H] and h0 [B, 1, ..., H] for ``gated_recurrence``, both requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    kc = (2 * torch.randn(*shape[:-1], 2 * shape[-1], generator=gen, dtype=dtype)).requires_grad_()
    h0 = torch.randn(shape[0], 1, *shape[2:], generator=gen, dtype=dtype, requires_grad=True)
    return kc, h0


@pytest.mark.parametrize("shape", [(2, SCAN_CHUNK + 5, 3), (2, 2 * SCAN_CHUNK + 3, 4, 3)], ids=["sequences", "tokens"])
def test_fused_gates_match_the_sequential_recurrence_and_finite_differences(shape):
    """The compiled CPU pass (gates and recurrence in one loop, its own backward) against the definition, bar by bar,
    and its gradients (kc and h0, through the states and the last state) against finite differences, in float64;
    [B, T, H] and [B, T, A, H] inputs."""
    kc, h0 = _gates(shape, 4)
    hidden = shape[-1]
    a = torch.exp(-MAX_LOG_DECAY * torch.sigmoid(kc[..., :hidden]))
    h, expected = h0[:, 0], []
    for t in range(shape[1]):
        h = a[:, t] * h + (1 - a[:, t]) * kc[:, t, ..., hidden:]
        expected.append(h)
    states, last = gated_recurrence(kc, h0, hidden, fused=True)
    torch.testing.assert_close(states, torch.stack(expected, 1), rtol=1e-12, atol=1e-12)
    assert torch.equal(last, states[:, -1:])
    # both outputs: the states and the copy of the last one (whose gradient enters the reverse pass's first bar)
    assert torch.autograd.gradcheck(lambda k, h_: gated_recurrence(k, h_, hidden, fused=True), (kc, h0))
    assert torch.autograd.gradcheck(lambda k: gated_recurrence(k, None, hidden, fused=True), (kc,))


def test_fused_gates_and_the_closed_form_scan_agree_in_float32_with_their_gradients():
    """The CPU route and the GPU route (gates in torch, chunked closed-form scan) compute the same function."""
    kc, h0 = _gates((3, 3 * SCAN_CHUNK + 9, 5, 8), 5, torch.float32)
    weights = torch.randn(3, 3 * SCAN_CHUNK + 10, 5, 8, generator=torch.Generator().manual_seed(6))
    results = []
    for fused in (True, False):
        h, last = gated_recurrence(kc, h0, 8, fused=fused)
        loss = (h * weights[:, :-1]).sum() + (last * weights[:, -1:]).sum()
        results.append((h.detach(), *torch.autograd.grad(loss, (kc, h0))))
    for x, y in zip(*results, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cut", [1, SCAN_CHUNK, 3 * SCAN_CHUNK])
def test_fused_gates_in_pieces_continued_from_each_last_state_give_the_same_bits(cut):
    """The cross policy's token pipeline runs in blocks of bars and continues each from the last state."""
    kc, _ = _gates((2, 5 * SCAN_CHUNK + 7, 3, 4), cut, torch.float32)
    kc = kc.detach()
    first, state = gated_recurrence(kc[:, :cut], None, 4, fused=True)
    second, _ = gated_recurrence(kc[:, cut:], state, 4, fused=True)
    assert torch.equal(torch.cat([first, second], 1), gated_recurrence(kc, None, 4, fused=True)[0])


def test_the_recurrence_loops_refuse_arrays_that_are_not_c_contiguous():
    """The loops read each bar's states as one flat row (``reshape``): a strided array must fail loudly, not be read
    or written through a copy."""
    from numba.core.errors import TypingError

    from differentiable_market.policy import kernels

    # a = 1 + m = 1/2 and candidates 1 from h0 = 0: h_t = 1 - 2^-(t + 1), every asset and unit
    m, h0 = np.full((1, 4, 3, 2), -0.5, np.float32), np.zeros((1, 1, 3, 2), np.float32)
    kc, one = np.ones((1, 4, 3, 4), np.float32), np.ones(1, np.float32)
    strided_out = np.zeros((1, 4, 3, 4), np.float32)[..., :2]
    with pytest.raises(TypingError, match="contiguous"):
        kernels.gated_forward(m, kc, h0, one, strided_out)
    strided_grad = np.zeros((1, 4, 3, 4), np.float32)[..., :2]
    with pytest.raises(TypingError, match="contiguous"):
        kernels.gated_backward(-m, m, kc, m, h0, strided_grad, h0, np.array([1.0, 2.0], np.float32),
                               np.zeros_like(kc), np.zeros_like(h0))
    out = np.zeros_like(m)
    kernels.gated_forward(m, kc, h0, one, out)  # the same call, C-contiguous
    expected = 1 - 0.5 ** np.arange(1, 5, dtype=np.float32)
    assert np.array_equal(out, np.broadcast_to(expected[None, :, None, None], m.shape))


def test_mingru_on_tokens_runs_every_asset_as_its_own_sequence():
    """[B, T, A, H] through the encoder equals each asset's [T, H] sequence through it alone (the cross policy reads
    its tokens in place, without transposing them)."""
    torch.manual_seed(7)
    enc = MinGRUEncoder(6, 2).double()
    x = torch.randn(2, 2 * SCAN_CHUNK + 5, 4, 6, dtype=torch.float64)
    tokens, last = enc.forward_from(x)
    assert tokens.shape == x.shape and last[0].shape == (2, 1, 4, 6)
    sequences = enc(x.permute(0, 2, 1, 3).reshape(8, -1, 6)).reshape(2, 4, -1, 6).transpose(1, 2)
    torch.testing.assert_close(tokens, sequences, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("encoder", ["mingru", "gru"])
def test_encoder_continued_from_its_state_equals_the_whole_sequence(encoder):
    from differentiable_market.policy.encoders import ENCODERS

    torch.manual_seed(0)
    enc = ENCODERS[encoder](6, 2).double()
    x = torch.randn(3, 4 * SCAN_CHUNK + 3, 6, dtype=torch.float64)
    whole, last = enc.forward_from(x)
    first, state = enc.forward_from(x[:, :2 * SCAN_CHUNK])
    second, after = enc.forward_from(x[:, 2 * SCAN_CHUNK:], state)
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(enc(x), whole, rtol=0, atol=0)
    for a, b in zip(after, last, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
