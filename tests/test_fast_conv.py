"""The Winograd route for the tokenizers' decoder convolutions (tokenizers/fast_conv.py): same convolution up to
float32 rounding, taken only where eligible, never in encoders, training or when switched off."""
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tokenizers import fast_conv
from tokenizers.llamagen_vq import LlamaGenVQ, LlamaGenVQConfig
from tokenizers.var_vqvae import VARVQVAE, VQVAEConfig

pytestmark = pytest.mark.skipif(not fast_conv.available(), reason="this torch/CPU has no NNPACK")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def calls(monkeypatch):
    """Counts calls of the NNPACK route."""
    seen = []
    real = fast_conv.winograd_conv3x3

    def spy(x, weight, bias, padding=1):
        seen.append(tuple(x.shape))
        return real(x, weight, bias, padding)
    monkeypatch.setattr(fast_conv, "winograd_conv3x3", spy)
    return seen


@pytest.mark.parametrize("batch,cin,cout,size", [(1, 32, 48, 16), (3, 16, 16, 40), (2, 64, 3, 33)])
def test_winograd_matches_float64_reference(batch, cin, cout, size):
    g = torch.Generator().manual_seed(batch + size)
    x = torch.randn(batch, cin, size, size, generator=g)
    w = torch.randn(cout, cin, 3, 3, generator=g) / (9 * cin) ** 0.5
    b = torch.randn(cout, generator=g)
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    ours = fast_conv.winograd_conv3x3(x, w, b)
    default = F.conv2d(x, w, b, padding=1)
    assert ours.shape == ref.shape and ours.dtype == torch.float32
    err, err_default = (ours.double() - ref).abs(), (default.double() - ref).abs()
    # Winograd F(6x6,3x3) rounds more than direct convolution: measured max ~1e-5 of the output's range (oneDNN
    # ~2e-6) and an RMS error 2-12x oneDNN's; far below an 8-bit pixel step (4e-3 of the range)
    assert err.max().item() < 3e-5 * ref.abs().max().item(), err.max().item()
    assert err.pow(2).mean().sqrt() < 20 * err_default.pow(2).mean().sqrt() + 1e-7


def test_route_taken_only_when_eligible(calls):
    conv = fast_conv.use_winograd(nn.Conv2d(8, 8, 3, padding=1))
    assert type(conv) is fast_conv.Conv2d
    big, small = torch.randn(2, 8, 24, 30), torch.randn(1, 8, 15, 64)
    with torch.no_grad():
        assert torch.allclose(conv(big), F.conv2d(big, conv.weight, conv.bias, padding=1), atol=1e-4)
        assert calls == [(2, 8, 24, 30)]
        conv(small)  # below MIN_SIZE
        conv(big.double().float().to(torch.bfloat16).float())  # still float32: taken
        assert len(calls) == 2
        conv.double()(big.double())  # float64: default kernels
        conv.float()
        with fast_conv.exact():
            conv(big)
        assert len(calls) == 2
        strided = fast_conv.use_winograd(nn.Conv2d(8, 8, 3, stride=2, padding=1))
        pointwise = fast_conv.use_winograd(nn.Conv2d(8, 8, 1))
        strided(big), pointwise(big)
        assert len(calls) == 2
    y = conv(big)  # autograd on: training never takes the route, and gradients flow
    y.sum().backward()
    assert len(calls) == 2 and conv.weight.grad is not None
    assert fast_conv.enabled()  # exact() restored the switch


def test_16x16_maps_take_the_route_on_one_thread_only(calls):
    conv = fast_conv.use_winograd(nn.Conv2d(8, 8, 3, padding=1))
    x = torch.randn(1, 8, 16, 16)
    threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            torch.set_num_threads(2)  # NNPACK splits a 16x16 map poorly: oneDNN is faster there on 2 threads
            conv(x)
            assert calls == []
            torch.set_num_threads(1)
            conv(x)
            assert calls == [(1, 8, 16, 16)]
    finally:
        torch.set_num_threads(threads)


def test_switch_and_environment_variable():
    fast_conv.set_enabled(False)
    try:
        assert not fast_conv.enabled()
    finally:
        fast_conv.set_enabled(True)
    assert fast_conv.enabled()
    code = "from tokenizers import fast_conv; print(fast_conv.enabled())"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": ROOT, "TN_WINOGRAD": "0"})
    assert out.stdout.strip() == "False"


def _randomize(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (p[0].numel() ** -0.5 if p.ndim > 1 else 0.1))


def test_var_decoder_uses_winograd_encoder_does_not(calls):
    vae = VARVQVAE(VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1))
    _randomize(vae, 0)
    vae.eval()
    assert all(type(m) is nn.Conv2d for m in vae.encoder.modules() if isinstance(m, nn.Conv2d))
    assert any(type(m) is fast_conv.Conv2d for m in vae.decoder.modules())
    keys = set(VARVQVAE(VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 2), num_res_blocks=1))
               .state_dict())
    assert set(vae.state_dict()) == keys  # the official layout is unchanged
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        idx = vae.encode(x, (1, 2, 4, 8, 16, 32))
        assert calls == []  # encoding never takes it: token ids stay the official ones
        fast = vae.decode_indices(idx)
        assert calls
        with fast_conv.exact():
            ref = vae.decode_indices(idx)
    assert (fast - ref).abs().max().item() < 1e-5


def test_llamagen_decoder_uses_winograd(calls):
    cfg = LlamaGenVQConfig(ch=32, encoder_ch_mult=(1, 2), decoder_ch_mult=(1, 2), num_res_blocks=1, z_channels=16,
                           codebook_size=64, codebook_embed_dim=8, codebook_show_usage=False)
    vq = LlamaGenVQ(cfg)
    _randomize(vq, 1)
    vq.eval()
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        idx = vq.encode(x)
        assert calls == []
        fast = vq.decode_indices(idx)
        assert calls
        with fast_conv.exact():
            ref = vq.decode_indices(idx)
    assert (fast - ref).abs().max().item() < 1e-5
