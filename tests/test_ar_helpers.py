"""The comfy-free helpers behind the AR nodes: checkpoint families (one loader for nodes, benchmarks and tests),
inpainting masks on the token grid, and the cheap RGB previews fitted per tokenizer."""
import argparse
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from demo.glyphs import make_batch
from models.checkpoint import CheckpointError
from models.families import detect_family, load_tokenizer, load_transformer
from samplers.masks import raster_keep, var_keep
from tokenizers.llamagen_vq import load_llamagen_vq
from tokenizers.preview import GREY, fit_rgb_projection, llamagen_rgb_projection, raster_preview, var_rgb_projection

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
GOLDEN = Path(__file__).resolve().parent / "golden"


@pytest.fixture(scope="module")
def bundled():
    """The bundled demo tokenizers and transformers, through the loader the nodes use."""
    return {name: load_tokenizer(WEIGHTS / f"tn_glyph_{name}.safetensors") for name in ("vq", "msvq")} | \
        {name: load_transformer(WEIGHTS / f"tn_glyph_{name}.safetensors") for name in ("gpt", "var")}


def test_families_of_the_bundled_files(bundled):
    assert [bundled[k].family for k in ("vq", "msvq", "gpt", "var")] == ["llamagen", "var", "llamagen", "var"]
    grid = int(bundled["gpt"].net.config.block_size ** 0.5)
    assert grid * bundled["vq"].net.downsample == 32  # the bundled GPT makes 32-px glyphs


def test_a_file_of_the_other_kind_is_refused_with_what_it_is():
    with pytest.raises(CheckpointError, match="looks like a transformer: load it with TN AR Model Loader"):
        load_tokenizer(WEIGHTS / "tn_glyph_var.safetensors")
    with pytest.raises(CheckpointError, match="looks like a tokenizer: load it with TN VQ Loader"):
        load_transformer(WEIGHTS / "tn_glyph_vq.safetensors")
    with pytest.raises(CheckpointError, match="DiT/SiT denoiser"):
        load_transformer(WEIGHTS / "tn_glyph_dit.safetensors")
    assert detect_family({"unrelated": torch.zeros(1)}, "vq") is None


def test_llamagen_training_checkpoints_read_model_not_ema(tmp_path):
    """LlamaGen's sample_c2i.py loads "model" even when "ema" is present: every loader here does the same."""
    from test_llamagen import _random_state_dict
    gold = json.loads((GOLDEN / "llamagen_vq.json").read_text())
    model, ema = (_random_state_dict(gold["official_keys"], seed) for seed in (1, 2))
    path = tmp_path / "vq_ds8_c2i.pt"
    torch.save({"model": model, "ema": ema, "args": argparse.Namespace(vq_model="VQ-8")}, path)
    key = "quantize.embedding.weight"
    assert torch.equal(load_tokenizer(path).net.state_dict()[key], model[key])
    assert torch.equal(load_llamagen_vq(path).state_dict()[key], model[key])


def test_masks_on_the_token_grid():
    mask = torch.zeros(1, 64, 64)
    mask[:, 46:] = 1  # the bottom 18 pixel rows: token rows 6 and 7 of 8, and a quarter of row 5 (kept)
    keep = raster_keep(mask, 8, 3, 64)
    assert keep.shape == (3, 64) and keep.dtype == torch.bool
    assert keep.view(3, 8, 8)[:, :6].all() and not keep.view(3, 8, 8)[:, 6:].any()
    assert torch.equal(var_keep(mask, 2, 64), (1 - mask).expand(2, -1, -1))
    with pytest.raises(ValueError, match="expected a 64x64 mask"):
        raster_keep(torch.zeros(1, 32, 64), 8, 1, 64)
    with pytest.raises(ValueError, match="3 masks for a batch of 2"):
        var_keep(torch.zeros(3, 64, 64), 2, 64)


def test_rgb_projection_recovers_a_linear_decoder():
    """Where the decoder is exactly linear per position, the fit finds it."""
    w, b = torch.randn(5, 3) * 0.2, torch.tensor([0.1, -0.2, 0.3])
    lat = torch.randn(4, 5, 6, 6)
    img = (lat.movedim(1, -1) @ w + b).movedim(-1, 1)
    img = F.interpolate(img, scale_factor=4, mode="nearest")  # each token a 4x4 patch
    proj = fit_rgb_projection(lat, img, ridge=1e-9)
    assert torch.allclose(proj.weight, w / 2, atol=1e-4) and torch.allclose(proj.bias, (b + 1) / 2, atol=1e-4)


def _pooled(images, size):
    return ((F.adaptive_avg_pool2d(images.float(), size) + 1) / 2).clamp(0, 1).movedim(1, -1)


@torch.no_grad()
def test_previews_of_real_glyphs_look_like_their_decodes(bundled):
    """The fitted previews of encoded real glyphs are closer to the decoded images pooled to the token grid than the
    best flat colour is (the mean absolute error of the dataset's mean colour)."""
    images = make_batch(32, seed=0)[0] * 2 - 1
    vq, msvq = bundled["vq"].net, bundled["msvq"].net
    idx = vq.encode(images)
    grid = idx.shape[-1]
    target = _pooled(vq.decode_indices(idx), (grid, grid))
    preview = raster_preview(vq, llamagen_rgb_projection(vq, grid), idx.flatten(1), grid)
    err, base = (preview - target).abs().mean(), (target - target.mean((0, 1, 2))).abs().mean()
    assert err < 0.5 * base, (err, base)  # measured 0.12 vs 0.28 (a flat colour); a fit on the glyphs themselves: 0.08
    pns = json.loads(bundled["msvq"].meta["patch_nums"]) if "patch_nums" in bundled["msvq"].meta else \
        bundled["var"].net.cfg.patch_nums
    maps = msvq.encode(images, pns)
    f_hat = msvq.indices_to_fhat(maps)
    target = _pooled(msvq.decode_fhat(f_hat), f_hat.shape[-2:])
    err, base = (var_rgb_projection(msvq, pns)(f_hat) - target).abs().mean(), (target - target.mean((0, 1, 2))).abs().mean()
    assert err < 0.75 * base, (err, base)  # measured 0.19 vs 0.28; a fit on the glyphs themselves: 0.14
    half = raster_preview(vq, llamagen_rgb_projection(vq, grid), idx.flatten(1)[:, : grid * grid // 2], grid)
    assert (half[:, grid // 2:] == GREY).all() and torch.equal(half[:, : grid // 2], preview[:, : grid // 2])


def _tiny_gpt(grid: int):
    from models.llamagen_gpt import LlamaGenGPT, LlamaGenGPTConfig
    torch.manual_seed(0)
    return LlamaGenGPT(LlamaGenGPTConfig(dim=128, n_layer=2, n_head=2, n_kv_head=2, ffn_hidden=384, vocab_size=64,
                                         num_classes=10, block_size=grid * grid))


def test_llamagen_grid_from_args_name_or_override(tmp_path, caplog):
    """A GPT file without args (a re-saved or converted c2i_B_256.pt) takes its size from the name, which every
    published file states; the loader's image_size overrides everything; the rule that decided is logged."""
    from samplers.ar import generate_raster
    sd = {k: v for k, v in _tiny_gpt(16).state_dict().items() if k != "freqs_cis"}
    args = argparse.Namespace(gpt_model="GPT-tiny", image_size=256, downsample_size=16, cls_token_num=1)
    torch.save({"model": sd, "args": args}, tmp_path / "with_args.pt")
    torch.save(sd, tmp_path / "c2i_tiny_256.pt")
    torch.save({"model": sd}, tmp_path / "resaved.pt")
    caplog.set_level("INFO", logger="models.llamagen_gpt")
    with_args, named = load_transformer(tmp_path / "with_args.pt").net, load_transformer(tmp_path / "c2i_tiny_256.pt").net
    assert with_args.config.block_size == named.config.block_size == 256
    assert "16x16 image tokens, from the file name (256 px" in caplog.text
    assert load_transformer(tmp_path / "resaved.pt").net.config.block_size == 576  # bare, no size in the name: 384 px
    assert "from the default of the bare releases" in caplog.text
    assert load_transformer(tmp_path / "c2i_tiny_256.pt", image_size=384).net.config.block_size == 576
    assert load_transformer(tmp_path / "with_args.pt", image_size=512).net.config.block_size == 1024
    cls = torch.tensor([3, 7])
    a, b = (generate_raster(m, cls, 256, cfg_scale=2.0, top_k=1) for m in (with_args, named))
    assert torch.equal(a, b)  # same grid, same RoPE positions: the same greedy tokens
