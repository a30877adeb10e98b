"""DiT/SiT: official key layout, architecture inference from shapes, and one forward pass against a
functional reference written here from the paper's formulas (independent of models/dit.py)."""
import argparse
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.checkpoint import CheckpointError, load_state_dict
from models.dit import DIT_PRESETS, DiT, DiTConfig, dit_config_from_state_dict, sincos_pos_embed_2d


def official_keys(depth):
    """The parameter names of facebookresearch/DiT models.py (timm PatchEmbed/Attention/Mlp inside)."""
    keys = ["x_embedder.proj.weight", "x_embedder.proj.bias", "pos_embed", "y_embedder.embedding_table.weight",
            "t_embedder.mlp.0.weight", "t_embedder.mlp.0.bias", "t_embedder.mlp.2.weight", "t_embedder.mlp.2.bias",
            "final_layer.linear.weight", "final_layer.linear.bias",
            "final_layer.adaLN_modulation.1.weight", "final_layer.adaLN_modulation.1.bias"]
    for i in range(depth):
        keys += [f"blocks.{i}.{m}.{p}" for m in ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2", "adaLN_modulation.1"]
                 for p in ["weight", "bias"]]
    return set(keys)


def mae_pos_embed(dim, g):
    """MAE/DiT 2-D sin-cos table in numpy: [col half | row half], each [sin | cos], float64 then float32."""
    omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
    cols, rows = np.meshgrid(np.arange(g, dtype=np.float32), np.arange(g, dtype=np.float32))
    parts = []
    for pos in (cols.reshape(-1), rows.reshape(-1)):
        out = np.outer(pos, omega)
        parts += [np.sin(out), np.cos(out)]
    return torch.from_numpy(np.concatenate(parts, axis=1)).float()


def random_official_sd(cfg, seed=0):
    """Every tensor random and non-zero (official init zeroes adaLN/final layers, which would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in DiT(cfg).state_dict().items()}
    assert set(shapes) == official_keys(cfg.depth)
    sd = {k: torch.randn(s, generator=g) * (0.6 / math.sqrt(s[-1] if len(s) == 2 else s[1:].numel()) if len(s) > 1
                                            else 0.2) for k, s in shapes.items()}
    sd["pos_embed"] = mae_pos_embed(cfg.hidden_size, cfg.input_size // cfg.patch_size)[None]
    return sd


def reference_forward(sd, cfg, x, t, y):
    """DiT forward straight from the formulas of Peebles & Xie (2023) on raw state-dict tensors."""
    B, C, H, W = x.shape
    p, D, nh = cfg.patch_size, cfg.hidden_size, cfg.num_heads
    g = H // p
    lin = lambda v, name: v @ sd[name + ".weight"].T + sd[name + ".bias"]
    ln = lambda v: (v - v.mean(-1, keepdim=True)) / torch.sqrt(v.var(-1, unbiased=False, keepdim=True) + 1e-6)
    gelu = lambda v: 0.5 * v * (1 + torch.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
    silu = lambda v: v * torch.sigmoid(v)
    # patchify: token (i, j) = the p x p patch at row i, column j, flattened channel-major like a conv kernel
    patches = x.reshape(B, C, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(B, g * g, C * p * p)
    h = patches @ sd["x_embedder.proj.weight"].reshape(D, -1).T + sd["x_embedder.proj.bias"] + sd["pos_embed"]
    half = 128  # 256 frequencies, GLIDE order [cos | sin]
    freqs = 10000.0 ** (-torch.arange(half, dtype=torch.float32) / half)
    tf = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    c = lin(silu(lin(tf, "t_embedder.mlp.0")), "t_embedder.mlp.2") + sd["y_embedder.embedding_table.weight"][y]
    for i in range(cfg.depth):
        pre = f"blocks.{i}."
        m = lin(silu(c), pre + "adaLN_modulation.1")[:, None, :]  # (B, 1, 6D)
        sh1, sc1, g1, sh2, sc2, g2 = (m[..., k * D:(k + 1) * D] for k in range(6))
        a = ln(h) * (1 + sc1) + sh1
        q, k, v = lin(a, pre + "attn.qkv").split(D, dim=-1)
        heads = lambda z: z.reshape(B, -1, nh, D // nh).transpose(1, 2)
        att = torch.softmax(heads(q) @ heads(k).transpose(-1, -2) / math.sqrt(D // nh), dim=-1) @ heads(v)
        h = h + g1 * lin(att.transpose(1, 2).reshape(B, -1, D), pre + "attn.proj")
        h = h + g2 * lin(gelu(lin(ln(h) * (1 + sc2) + sh2, pre + "mlp.fc1")), pre + "mlp.fc2")
    m = lin(silu(c), "final_layer.adaLN_modulation.1")[:, None, :]
    out = lin(ln(h) * (1 + m[..., D:]) + m[..., :D], "final_layer.linear")  # (B, T, p*p*Cout)
    co = out.shape[-1] // (p * p)
    return torch.einsum("bijpqc->bcipjq", out.reshape(B, g, g, p, p, co)).reshape(B, co, H, W)


TINY = DiTConfig(input_size=8, patch_size=2, in_channels=4, hidden_size=64, depth=2, num_heads=4, num_classes=10)


@pytest.mark.parametrize("cfg", [
    TINY,
    DiTConfig(input_size=12, patch_size=4, in_channels=3, hidden_size=48, depth=3, num_heads=3, mlp_ratio=2.0,
              num_classes=5, learn_sigma=False),
])
def test_official_file_infers_config_and_matches_reference(tmp_path, cfg):
    sd = random_official_sd(cfg)
    path = tmp_path / f"DiT-T-{cfg.patch_size}-{cfg.input_size * 8}x{cfg.input_size * 8}.pt"
    torch.save(sd, path)  # official pretrained files are bare state dicts
    loaded, _ = load_state_dict(path)
    model = DiT.from_state_dict(loaded, num_heads=cfg.num_heads)
    assert model.config == cfg
    x = torch.randn(3, cfg.in_channels, cfg.input_size, cfg.input_size, generator=torch.Generator().manual_seed(1))
    t, y = torch.tensor([0.0, 37.5, 999.0]), torch.tensor([0, cfg.num_classes - 1, cfg.num_classes])  # last: null
    with torch.no_grad():
        out, ref = model(x, t, y), reference_forward(sd, cfg, x, t, y)
    assert out.shape == (3, cfg.out_channels, cfg.input_size, cfg.input_size)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # SiT times in [0, 1] go through the same network
    ts = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(model(x, ts, y).detach(), reference_forward(sd, cfg, x, ts, y), atol=1e-5, rtol=1e-5)


def test_training_checkpoint_uses_ema(tmp_path):
    sd_ema, sd_model = random_official_sd(TINY, seed=0), random_official_sd(TINY, seed=1)
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([w])
    w.sum().backward()
    opt.step()
    path = tmp_path / "0050000.pt"
    torch.save({"model": sd_model, "ema": sd_ema, "opt": opt.state_dict(),
                "args": argparse.Namespace(model="DiT-T/2", image_size=64, num_classes=10)}, path)
    with pytest.raises(CheckpointError, match="argparse.Namespace"):
        load_state_dict(path)
    loaded, _ = load_state_dict(path, allow_globals=[argparse.Namespace])
    model = DiT.from_state_dict(loaded, num_classes=10, num_heads=4)
    assert torch.equal(model.blocks[1].mlp.fc2.weight, sd_ema["blocks.1.mlp.fc2.weight"])
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 700.0]), torch.tensor([4, 10])
    torch.testing.assert_close(model(x, t, y).detach(), reference_forward(sd_ema, TINY, x, t, y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", list(DIT_PRESETS))
def test_presets_round_trip_through_inference(name):
    cfg = DiTConfig(input_size=32, in_channels=4, **DIT_PRESETS[name])
    with torch.device("meta"):  # shapes only: no memory for XL
        sd = DiT(cfg).state_dict()
    assert set(sd) == official_keys(cfg.depth)
    assert dit_config_from_state_dict(sd) == cfg


def test_class_table_rule_and_head_override():
    sd = random_official_sd(TINY)  # 11 rows
    assert (dit_config_from_state_dict(sd).num_classes, dit_config_from_state_dict(sd).has_null_class) == (10, True)
    no_null = dit_config_from_state_dict(sd, num_classes=11)
    assert (no_null.num_classes, no_null.has_null_class) == (11, False)
    with pytest.raises(CheckpointError, match="11 rows"):
        dit_config_from_state_dict(sd, num_classes=20)
    assert dit_config_from_state_dict(sd).num_heads == 1  # hidden 64 -> hidden // 64
    assert dit_config_from_state_dict(sd, num_heads=8).num_heads == 8
    assert DiT.from_state_dict(sd, num_classes=11).config.class_dropout_prob == 0.0


def test_fresh_model_pos_embed_and_adaln_zero_init():
    model = DiT(TINY)
    torch.testing.assert_close(model.pos_embed[0], mae_pos_embed(64, 4), atol=0, rtol=0)
    assert torch.equal(sincos_pos_embed_2d(64, 4), mae_pos_embed(64, 4))
    out = model(torch.randn(2, 4, 8, 8), torch.tensor([1.0, 2.0]), torch.tensor([0, 10]))
    assert torch.count_nonzero(out) == 0  # adaLN-Zero: the untrained network outputs exactly zero
    assert model.y_embedder.embedding_table.weight.std() > 0
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * TINY.depth + 1  # eps too small to show in the forward check above
    assert all(m.eps == 1e-6 and not m.elementwise_affine for m in norms)


def test_wrong_family_and_corrupted_layout():
    g = torch.Generator().manual_seed(0)
    unet = {"conv_in.weight": torch.randn(8, 4, 3, 3, generator=g), "down.0.conv.weight": torch.randn(8, 8, 3, 3)}
    with pytest.raises(CheckpointError, match="DiT/SiT"):
        DiT.from_state_dict(unet)
    sd = random_official_sd(TINY)
    extra = dict(sd, **{"blocks.0.attn.q_norm.weight": torch.ones(16)})
    with pytest.raises(CheckpointError, match="q_norm"):
        DiT.from_state_dict(extra)
    missing = {k: v for k, v in sd.items() if k != "blocks.1.attn.proj.bias"}
    with pytest.raises(CheckpointError, match="blocks.1.attn.proj.bias"):
        DiT.from_state_dict(missing)
    bad = dict(sd, **{"blocks.0.mlp.fc2.weight": torch.randn(64, 100)})
    with pytest.raises(CheckpointError, match="mlp.fc2.weight"):
        DiT.from_state_dict(bad)


def test_wrong_latent_size_and_low_precision():
    model = DiT.from_state_dict(random_official_sd(TINY))
    with pytest.raises(ValueError, match=r"\[B, 4, 8, 8\]"):
        model(torch.randn(1, 4, 16, 16), torch.tensor([1.0]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[B, 4, 8, 8\]"):
        model(torch.randn(1, 3, 8, 8), torch.tensor([1.0]), torch.tensor([0]))
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([5.0, 500.0]), torch.tensor([1, 2])
    ref = model(x, t, y).detach()
    out = model.to(torch.bfloat16)(x, t, y).detach()
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()
