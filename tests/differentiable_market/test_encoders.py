import math

import pytest
import torch

from differentiable_market.policy.encoders import MAX_LOG_DECAY, SCAN_CHUNK, MinGRUEncoder, MinGRULayer, linear_scan


def _sequential(log_a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    h = torch.zeros_like(b[:, 0])
    out = []
    for t in range(b.shape[1]):
        h = log_a[:, t].exp() * h + b[:, t]
        out.append(h)
    return torch.stack(out, dim=1)


SCANS = pytest.mark.parametrize("compiled", [True, False], ids=["compiled-loops", "chunked-closed-form"])


@SCANS
@pytest.mark.parametrize("t_len", [1, 7, SCAN_CHUNK, SCAN_CHUNK + 1, 3 * SCAN_CHUNK + 5])
def test_scan_matches_the_sequential_recurrence_in_float64(t_len, compiled):
    gen = torch.Generator().manual_seed(t_len)
    log_a = -MAX_LOG_DECAY * torch.rand(3, t_len, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(3, t_len, 5, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(linear_scan(log_a, b, compiled=compiled), _sequential(log_a, b), rtol=1e-12, atol=1e-12)


@SCANS
def test_scan_closed_form_constant_decay(compiled):
    # h_t = a h_{t-1} + 1 from 0 gives h_t = (1 - a^(t+1)) / (1 - a)
    a, t_len = 0.9, 50
    log_a = torch.full((1, t_len, 1), math.log(a), dtype=torch.float64)
    h = linear_scan(log_a, torch.ones(1, t_len, 1, dtype=torch.float64), compiled=compiled)
    t = torch.arange(t_len, dtype=torch.float64)
    torch.testing.assert_close(h[0, :, 0], (1 - a ** (t + 1)) / (1 - a), rtol=1e-13, atol=0)


@SCANS
def test_scan_at_the_steepest_decay_stays_finite_and_accurate_in_float32(compiled):
    gen = torch.Generator().manual_seed(0)
    log_a = torch.full((2, 200, 4), -MAX_LOG_DECAY, dtype=torch.float64)
    b = torch.randn(2, 200, 4, generator=gen, dtype=torch.float64) * 100
    h32 = linear_scan(log_a.float(), b.float(), compiled=compiled)
    assert bool(torch.isfinite(h32).all())
    torch.testing.assert_close(h32.double(), _sequential(log_a, b), rtol=1e-4, atol=1e-3)


@SCANS
def test_scan_gradients_match_finite_differences(compiled):
    gen = torch.Generator().manual_seed(1)
    log_a = (-MAX_LOG_DECAY * torch.rand(2, 2 * SCAN_CHUNK + 3, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.randn(2, 2 * SCAN_CHUNK + 3, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda la, b_: linear_scan(la, b_, compiled=compiled), (log_a, b))


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


@SCANS
def test_scan_from_a_state_matches_the_sequential_recurrence_and_its_gradients_finite_differences(compiled):
    gen = torch.Generator().manual_seed(2)
    log_a = (-MAX_LOG_DECAY * torch.rand(2, SCAN_CHUNK + 5, 3, generator=gen, dtype=torch.float64)).requires_grad_()
    b = torch.randn(2, SCAN_CHUNK + 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(2, 1, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    # h0 is the state of one bar before: a zero-decay bar with input h0 in front gives the same states
    prefixed = _sequential(torch.cat([torch.zeros_like(h0), log_a], 1), torch.cat([h0, b], 1))[:, 1:]
    torch.testing.assert_close(linear_scan(log_a, b, h0, compiled=compiled), prefixed, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda la, b_, h: linear_scan(la, b_, h, compiled=compiled), (log_a, b, h0))


@SCANS
@pytest.mark.parametrize("cut", [SCAN_CHUNK, 3 * SCAN_CHUNK])
def test_scan_in_pieces_continued_from_each_last_state_gives_the_same_bits(cut, compiled):
    """Cut at whole scan chunks, a sequence scanned piece by piece equals one scan over all of it, bit for bit (the
    cross policy's history pass runs in blocks of bars and relies on this)."""
    gen = torch.Generator().manual_seed(cut)
    log_a = -MAX_LOG_DECAY * torch.rand(3, 5 * SCAN_CHUNK + 7, 4, generator=gen)
    b = torch.randn(3, 5 * SCAN_CHUNK + 7, 4, generator=gen)
    first = linear_scan(log_a[:, :cut], b[:, :cut], compiled=compiled)
    second = linear_scan(log_a[:, cut:], b[:, cut:], first[:, -1:], compiled=compiled)
    assert torch.equal(torch.cat([first, second], 1), linear_scan(log_a, b, compiled=compiled))


def test_compiled_and_chunked_scans_agree_in_float32_with_their_gradients():
    gen = torch.Generator().manual_seed(3)
    log_a = (-MAX_LOG_DECAY * torch.rand(4, 3 * SCAN_CHUNK + 9, 8, generator=gen)).requires_grad_()
    b = torch.randn(4, 3 * SCAN_CHUNK + 9, 8, generator=gen, requires_grad=True)
    h0 = torch.randn(4, 1, 8, generator=gen, requires_grad=True)
    weights = torch.randn(4, 3 * SCAN_CHUNK + 9, 8, generator=gen)
    results = []
    for compiled in (True, False):
        h = linear_scan(log_a, b, h0, compiled=compiled)
        results.append((h.detach(), *torch.autograd.grad((h * weights).sum(), (log_a, b, h0))))
    for x, y in zip(*results, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-5)


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
