"""samplers.cpu_linear: pre-packed oneDNN linears give F.linear's results and leave the model as it was."""
import pytest
import torch
from torch import nn

from models.llamagen_gpt import LlamaGenGPT, LlamaGenGPTConfig
from samplers import cpu_linear
from samplers.ar import generate_raster
from samplers.cpu_linear import available, packed_linears, release_packed

pytestmark = pytest.mark.skipif(not available(), reason="this torch has no oneDNN packed-linear ops")


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 96), nn.GELU(), nn.Linear(96, 40, bias=False))


@torch.no_grad()
@pytest.mark.parametrize("shape", [(1, 48), (2, 48), (3, 5, 48), (33, 48)])
def test_packed_matches_default_linear(shape):
    net = _net()
    x = torch.randn(*shape)
    ref = net(x)
    with packed_linears(net) as n:
        assert n == 2
        first = net(x)  # each layer packs its weight at its second call
        assert net[0]._tn_packed.weight is None
        out = net(x)
        assert net[0]._tn_packed.weight is not None and net[0]._tn_packed.weight.is_mkldnn
    torch.testing.assert_close(first, ref, rtol=0, atol=0)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert all(k not in m.__dict__ for m in net for k in ("forward", "_tn_packed"))  # restored on exit
    torch.testing.assert_close(net(x), ref, rtol=0, atol=0)


def test_packing_is_skipped_where_it_does_not_apply():
    net = _net()
    with packed_linears(net) as n:  # grad mode on: training must never see the packed op (it has no backward)
        assert n == 0
    with torch.no_grad():
        with packed_linears(net, enabled=False) as n:
            assert n == 0
        with packed_linears(net.to(torch.bfloat16)) as n:
            assert n == 0


@torch.no_grad()
def test_restored_after_an_error_inside():
    net = _net()
    with pytest.raises(KeyError), packed_linears(net):
        net(torch.randn(2, 48))
        net(torch.randn(2, 48))
        raise KeyError("interrupt")
    assert all("forward" not in m.__dict__ for m in net.modules())


@torch.no_grad()
def test_raster_tokens_same_with_and_without_packing():
    cfg = LlamaGenGPTConfig(dim=64, n_layer=2, n_head=4, n_kv_head=4, ffn_hidden=192, vocab_size=512,
                            num_classes=10, block_size=64)
    torch.manual_seed(1)
    gpt = LlamaGenGPT(cfg).eval()
    for p in gpt.parameters():
        p.normal_(0, 0.2)
    cls = torch.tensor([0, 3, 7])
    kw = {"cfg_scale": 3.0, "top_k": 1}
    ref = generate_raster(gpt, cls, 64, packed_cpu=False, **kw)
    assert torch.equal(generate_raster(gpt, cls, 64, packed_cpu=True, **kw), ref)
    sampled = {"cfg_scale": 2.0, "top_k": 50, "top_p": 0.9}
    a = generate_raster(gpt, cls, 64, packed_cpu=False, generator=torch.Generator().manual_seed(5), **sampled)
    b = generate_raster(gpt, cls, 64, packed_cpu=True, generator=torch.Generator().manual_seed(5), **sampled)
    assert (a == b).float().mean() > 0.95  # a draw may land within float rounding of a CDF boundary


def _swiglu() -> tuple[nn.Module, torch.Tensor]:
    """A small LlamaGen SwiGLU feed-forward (w1 and w3 read the same input) and an input for it."""
    from models.llamagen_gpt import FeedForward
    cfg = LlamaGenGPTConfig(dim=64, n_layer=1, n_head=4, n_kv_head=4, ffn_hidden=192, vocab_size=16,
                            num_classes=2, block_size=4)
    torch.manual_seed(3)
    return FeedForward(cfg), torch.randn(2, 1, 64)


@torch.no_grad()
def test_swiglu_siblings_run_as_one_packed_product():
    ffn, x = _swiglu()
    ref = ffn(x)
    with packed_linears(ffn):
        out = ffn(x)
        assert ffn._tn_fused.weight is not None and tuple(ffn._tn_fused.weight.shape) == (384, 64)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert "_tn_fused" not in ffn.__dict__


def _kept(net: nn.Module) -> list:
    return [m.__dict__.get("_tn_kept_pack") for m in net]


@torch.no_grad()
def test_kept_packs_are_reused_while_the_weight_is_unchanged():
    net, x = _net(), torch.randn(3, 48)
    ref = net(x)
    with packed_linears(net, keep=True):
        net(x), net(x)
    kept = _kept(net)
    assert kept[0] is not None and kept[2] is not None and kept[1] is None  # the GELU has no weight
    with packed_linears(net, keep=True):
        assert net[0]._tn_packed.weight is kept[0][1]  # packed from the first call on
        torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)
    assert _kept(net)[0][1] is kept[0][1]
    assert "_tn_kept_pack" not in net.state_dict() and len(net.state_dict()) == 3
    with packed_linears(net, rows_hint=16, keep=True):  # another blocking hint: repacked, not reused
        assert net[0]._tn_packed.weight is None


@torch.no_grad()
def test_a_changed_weight_is_repacked_never_served_stale():
    net, x = _net(), torch.randn(3, 48)
    with packed_linears(net, keep=True):
        net(x), net(x)
    old = _kept(net)[0][1]
    net[0].weight.mul_(2)  # in place: same storage, new version
    ref = net(x)
    with packed_linears(net, keep=True):
        assert net[0]._tn_packed.weight is None and "_tn_kept_pack" not in net[0].__dict__  # the stale copy is freed
        net(x)
        torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)
    assert _kept(net)[0][1] is not old
    net[0].weight = nn.Parameter(torch.randn(96, 48))  # a new tensor
    ref = net(x)
    with packed_linears(net, keep=True):
        net(x)
        torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)


def test_models_made_under_inference_mode_pack_keep_and_notice_changes():
    """ComfyUI runs every node, loaders included, under torch.inference_mode: such weights track no version."""
    with torch.inference_mode():
        net, x = _net(), torch.randn(3, 48)
        ref = net(x)
        with packed_linears(net, keep=True):
            net(x), net(x)
            assert net[0]._tn_packed.weight is not None  # packed, not silently left on the default route
        kept = _kept(net)[0][1]
        with packed_linears(net, keep=True):
            assert net[0]._tn_packed.weight is kept
            torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)
        net[0].weight.mul_(2)  # untracked in-place change: the sampled values notice it
        ref = net(x)
        with packed_linears(net, keep=True):
            assert net[0]._tn_packed.weight is None
            net(x)
            torch.testing.assert_close(net(x), ref, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_kept_packs_are_dropped_or_not_kept_where_they_cannot_serve():
    net, x = _net(), torch.randn(3, 48)
    with packed_linears(net, keep=False):
        net(x), net(x)
    assert _kept(net) == [None, None, None]
    with packed_linears(net, keep=True):
        net(x), net(x)
    assert release_packed(net) == 2 and _kept(net) == [None, None, None]
    with packed_linears(net, keep=True):
        net(x), net(x)
    net.to(torch.bfloat16)
    with packed_linears(net, keep=True):  # no longer a float32 CPU layer: the kept copies are freed
        pass
    assert _kept(net) == [None, None, None]


@torch.no_grad()
def test_packs_are_not_kept_beyond_the_memory_share(monkeypatch):
    net, x = _net(), torch.randn(3, 48)
    monkeypatch.setattr(cpu_linear, "available_memory", lambda: 4 * (96 * 48 + 40 * 96) * 4 - 1)  # 1 B short
    with packed_linears(net, keep=True):
        net(x), net(x)
    assert _kept(net) == [None, None, None]
    monkeypatch.setattr(cpu_linear, "available_memory", lambda: 4 * (96 * 48 + 40 * 96) * 4)
    with packed_linears(net, keep=True):
        net(x), net(x)
    assert _kept(net)[0] is not None and _kept(net)[2] is not None


def test_available_memory_reads_the_system():
    avail = cpu_linear.available_memory()
    assert avail is None or avail > 0


@torch.no_grad()
def test_fused_siblings_keep_their_pack():
    ffn, x = _swiglu()
    ref = ffn(x)
    with packed_linears(ffn, keep=True):
        ffn(x)
    kept = ffn.__dict__["_tn_kept_pack"][1]
    with packed_linears(ffn, keep=True):
        assert ffn._tn_fused.weight is kept
        torch.testing.assert_close(ffn(x), ref, rtol=1e-5, atol=1e-5)
    ffn.w3.weight.add_(1)
    with packed_linears(ffn, keep=True):  # one part changed: the fused copy is stale
        assert ffn._tn_fused.weight is None
        expected = ffn.w2(torch.nn.functional.silu(ffn.w1(x)) * ffn.w3(x))  # the plain layers' result
        torch.testing.assert_close(ffn(x), expected, rtol=1e-5, atol=1e-5)
