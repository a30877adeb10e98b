"""LlamaGen (FoundationVision/LlamaGen) exactness against golden outputs of the official code, plus the traps.

tests/golden/llamagen_{vq,gpt}.json were produced by running the official repository (commit ce98ec4) on CPU,
single-threaded, fp32, with tiny random checkpoints: the official modules' state_dict() layout (recorded as
key -> shape), filled by `_random_state_dict` below (seeded torch.randn per tensor in sorted key order). VQ: the
official VQModel with ch=32, ch_mult (1,2,2,4), z_channels 64, codebook 128x8 (`VQModel.encode` indices and
`decode_code` pixels). GPT: the official Transformer with dim 128, 3 layers, 4 heads, vocab 512, 10 classes,
an 8x8 grid; `generate(..., top_k=1)` (greedy) at cfg 1, 4, 4 with cfg_interval 10, and 1.5 with cfg_interval 0,
and the full causal forward's logits.
"""
import argparse
import json
import math
import os
from pathlib import Path

import pytest
import torch

from models.llamagen_gpt import (
    LlamaGenGPT,
    LlamaGenGPTConfig,
    llamagen_gpt_config_from_state_dict,
    load_llamagen_gpt,
)
from samplers.ar import generate_raster, sample_logits, sample_probs, top_k_top_p_filter
from tokenizers.llamagen_vq import (
    LlamaGenVQ,
    LlamaGenVQConfig,
    llamagen_vq_config_from_state_dict,
    load_llamagen_vq,
)

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # golden values were recorded single-threaded; tiny matmuls are faster this way
    yield
    torch.set_num_threads(n)


def _random_state_dict(shapes: dict, seed: int) -> dict[str, torch.Tensor]:
    """Seeded randn per tensor in sorted key order: norms ~1, biases ~0.1, weights / sqrt(fan_in)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name in sorted(shapes):
        shape = tuple(shapes[name])
        t = torch.randn(shape, generator=g, dtype=torch.float32)
        if name.endswith("codebook_used"):
            t = torch.zeros(shape)
        elif len(shape) == 1:
            t = 1.0 + 0.1 * t if name.endswith("weight") else 0.1 * t
        else:
            t = t / math.sqrt(math.prod(shape[1:]))
        sd[name] = t
    return sd


def _checksum(sd: dict) -> float:
    return float(sum(v.double().sum() for v in sd.values()))


def _vq_images(g: torch.Generator, H: int, W: int) -> torch.Tensor:
    x = torch.rand(2, 3, H, W, generator=g) * 2 - 1
    return torch.nn.functional.avg_pool2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)


@pytest.fixture(scope="module")
def vq_case(tmp_path_factory):
    gold = json.loads((GOLDEN / "llamagen_vq.json").read_text())
    sd = _random_state_dict(gold["official_keys"], gold["weights_seed"])
    assert _checksum(sd) == pytest.approx(gold["weights_checksum"], rel=1e-9), "random weights not reproduced"
    path = tmp_path_factory.mktemp("vq") / "vq_ds8_tiny.pt"
    torch.save({"model": sd}, path)  # the official tokenizer layout
    return gold, load_llamagen_vq(path), sd


@pytest.fixture(scope="module")
def gpt_case(tmp_path_factory):
    gold = json.loads((GOLDEN / "llamagen_gpt.json").read_text())
    sd = _random_state_dict(gold["official_keys"], gold["weights_seed"])
    assert _checksum(sd) == pytest.approx(gold["weights_checksum"], rel=1e-9), "random weights not reproduced"
    params = [torch.nn.Parameter(v) for v in sd.values()]
    args = argparse.Namespace(gpt_model="GPT-tiny", gpt_type="c2i", vocab_size=512, cls_token_num=1, image_size=64,
                              downsample_size=8, num_classes=10)
    path = tmp_path_factory.mktemp("gpt") / "c2i_tiny_64.pt"  # the official training-checkpoint layout
    torch.save({"model": sd, "optimizer": torch.optim.AdamW(params).state_dict(), "steps": 100, "args": args}, path)
    return gold, load_llamagen_gpt(path, n_head=4)


# ---------------------------------------------------------------- exactness vs the official code


def test_vq_official_layout_and_config(vq_case):
    gold, vq, _ = vq_case
    assert {k: list(v.shape) for k, v in vq.state_dict().items()} == gold["official_keys"]
    c = vq.config
    assert (c.ch, c.encoder_ch_mult, c.decoder_ch_mult, c.z_channels) == (32, (1, 2, 2, 4), (1, 2, 2, 4), 64)
    assert (c.codebook_size, c.codebook_embed_dim, vq.downsample) == (128, 8, 8)


def test_vq_encode_and_decode_match_official(vq_case):
    gold, vq, _ = vq_case
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, (H, W) in {"square": (32, 32), "wide": (32, 48)}.items():
            idx = vq.encode(_vq_images(g, H, W))
            assert idx.shape == (2, H // 8, W // 8)
            assert idx.tolist() == gold[name]["indices"]
            dec = vq.decode_indices(torch.tensor(gold[name]["indices"]))
            assert dec.shape == (2, 3, H, W)
            torch.testing.assert_close(dec[:, :, ::7, ::5].flatten(), torch.tensor(gold[name]["decoded_sub"]),
                                       atol=1e-4, rtol=0)
            assert float(dec.double().mean()) == pytest.approx(gold[name]["decoded_mean"], abs=1e-5)
            assert float(dec.double().abs().mean()) == pytest.approx(gold[name]["decoded_absmean"], abs=1e-5)


def test_gpt_official_layout_and_full_forward(gpt_case):
    gold, gpt = gpt_case
    assert {k: list(v.shape) for k, v in gpt.state_dict().items()} == gold["official_keys"]  # no freqs_cis entry
    c = gpt.config
    assert (c.dim, c.n_layer, c.n_head, c.vocab_size, c.num_classes, c.block_size, c.ffn_hidden) == \
        (128, 3, 4, 512, 10, 64, 512)
    ff = gold["full_forward"]
    with torch.no_grad():
        logits = gpt(torch.tensor(ff["tokens"]), torch.tensor(ff["classes"]))
    assert logits.shape == (2, 65, 512)
    torch.testing.assert_close(logits[:, ff["positions"]][:, :, ff["vocab"]], torch.tensor(ff["logits"]),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("i", range(4))
def test_greedy_generation_matches_official_generate(gpt_case, i):
    gold, gpt = gpt_case
    case = gold["generate"][i]
    tokens = generate_raster(gpt, torch.tensor(case["classes"]), 64, cfg_scale=case["cfg_scale"],
                             cfg_interval=case["cfg_interval"], top_k=1)
    assert tokens.tolist() == case["tokens"]


# ---------------------------------------------------------------- traps


def test_class_token_rope_is_zero_not_identity(gpt_case):
    _, gpt = gpt_case
    f = gpt.freqs_cis  # (1 + 64, head_dim // 2, 2)
    assert f.shape == (65, 16, 2) and f.dtype == torch.float32
    assert torch.all(f[0] == 0)  # class token: cos = sin = 0, its q and k vanish
    assert torch.all(f[1, :, 0] == 1) and torch.all(f[1, :, 1] == 0)  # grid (0, 0): identity rotation
    # first half of the pairs follows the row, second half the column: token 1 is (row 0, col 1)
    assert torch.all(f[2, :8, 0] == 1) and not torch.all(f[2, 8:, 0] == 1)
    assert torch.all(f[1 + 8, 8:, 0] == 1) and not torch.all(f[1 + 8, :8, 0] == 1)
    x = torch.randint(0, 512, (1, 8), generator=torch.Generator().manual_seed(0))
    cls = torch.tensor([2])
    with torch.no_grad():
        ref = gpt(x, cls)
        saved = gpt.freqs_cis.clone()
        try:
            gpt.freqs_cis[0, :, 0] = 1.0  # the tempting "identity" rotation for the class token
            wrong = gpt(x, cls)
        finally:
            gpt.freqs_cis.copy_(saved)
    assert (ref[:, 1:] - wrong[:, 1:]).abs().max() > 1e-3  # so the golden match depends on the zero rows


def test_dtype_cast_keeps_rope_table_fp32():
    m = LlamaGenGPT(LlamaGenGPTConfig(dim=64, n_layer=1, n_head=2, n_kv_head=2, ffn_hidden=256, vocab_size=16,
                                      num_classes=3, block_size=16))
    ref = m.freqs_cis.clone()
    m.to(torch.bfloat16)
    assert m.freqs_cis.dtype == torch.float32 and torch.equal(m.freqs_cis, ref)
    assert "freqs_cis" not in m.state_dict()


def test_vq_l2_normalised_lookup_and_decode(vq_case):
    _, vq, sd = vq_case
    x = _vq_images(torch.Generator().manual_seed(3), 32, 32)
    with torch.no_grad():
        idx = vq.encode(x)
        dec = vq.decode_indices(idx)
        scale = torch.rand(128, 1, generator=torch.Generator().manual_seed(4)) * 5 + 0.2
        w = vq.quantize.embedding.weight
        w.mul_(scale)  # rescaling codes changes nothing when latents and codes are normalised
        try:
            assert torch.equal(vq.encode(x), idx)
            torch.testing.assert_close(vq.decode_indices(idx), dec, atol=1e-4, rtol=0)  # Winograd convs round a little more
            raw = vq.decoder(vq.post_quant_conv(w[idx].permute(0, 3, 1, 2)))  # decoding the raw code is wrong
            assert (raw - dec).abs().max() > 1e-2
            d_raw = torch.cdist(vq.quant_conv(vq.encoder(x)).permute(0, 2, 3, 1).reshape(-1, 8), w)
            assert not torch.equal(d_raw.argmin(1).view_as(idx), idx)  # unnormalised search finds other codes
        finally:
            w.copy_(sd["quantize.embedding.weight"])


def test_top_k_top_p_semantics():
    logits = torch.tensor([[1.0, 3.0, 2.0, 3.0, -1.0], [0.0, 0.0, 0.0, 0.0, 5.0]])
    before = logits.clone()
    inf = float("-inf")
    assert torch.equal(top_k_top_p_filter(logits), logits)  # 0 / 1.0 = off
    assert torch.equal(top_k_top_p_filter(logits, top_k=2), torch.tensor([[inf, 3, inf, 3, inf], [0, 0, 0, 0, 5]]))
    assert torch.equal(top_k_top_p_filter(logits, top_k=1)[0], torch.tensor([inf, 3, inf, 3, inf]))  # ties kept
    assert torch.equal(top_k_top_p_filter(logits, top_k=99), logits)
    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    # nucleus (HF/official): sorted tokens up to and including the first whose cumulative mass exceeds top_p
    assert torch.isfinite(top_k_top_p_filter(p, top_p=0.45)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(top_k_top_p_filter(p, top_p=0.6)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(top_k_top_p_filter(p, top_p=0.9)).tolist() == [[True, True, True, False]]
    assert torch.isfinite(top_k_top_p_filter(p, top_p=0.0)).tolist() == [[True, False, False, False]]
    # top-k first, then top-p renormalised over the survivors: [0.5, 0.3] -> [0.625, 0.375]
    assert torch.isfinite(top_k_top_p_filter(p, top_k=2, top_p=0.6)).tolist() == [[True, False, False, False]]
    assert torch.equal(logits, before)  # not in place
    with pytest.raises(ValueError, match="top_p"):
        top_k_top_p_filter(logits, top_p=1.5)


def test_sample_logits_distribution_and_seed():
    probs = torch.tensor([0.1, 0.0, 0.6, 0.3])
    logits = probs.log().expand(20000, 4)
    draws = sample_logits(logits, generator=torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert freq[1] == 0
    torch.testing.assert_close(freq, probs, atol=0.015, rtol=0)
    again = sample_logits(logits, generator=torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)
    top1 = sample_logits(logits, top_k=2, generator=torch.Generator().manual_seed(1))
    assert set(top1.tolist()) == {2, 3}  # filtered tokens are never drawn
    assert sample_logits(logits[:3], temperature=1.0, top_k=1).tolist() == [2, 2, 2]  # greedy
    # the edge u -> 1 must not fall on a filtered tail token
    edge = sample_logits(torch.tensor([[0.0, 0.0, -1e9, -1e9]]), uniform=torch.tensor([1.0 - 2**-24]))
    assert edge.item() == 1


def test_cfg_one_skips_null_batch_and_interval_drops_it(gpt_case):
    _, gpt = gpt_case
    seen = []
    hook = gpt.register_forward_hook(lambda m, a, kw, out: seen.append(
        (out.shape[0], kw.get("start_pos"), None if a[1] is None else a[1].tolist())), with_kwargs=True)
    try:
        cls = torch.tensor([4, 5])
        generate_raster(gpt, cls, 12, cfg_scale=1.0, top_k=1)
        assert [s[0] for s in seen] == [2] * 12 and seen[0][2] == [4, 5]  # no null class anywhere
        seen.clear()
        generate_raster(gpt, cls, 12, cfg_scale=3.0, top_k=1)
        assert [s[0] for s in seen] == [4] * 12 and seen[0][2] == [4, 5, 10, 10]  # null class = num_classes
        seen.clear()
        generate_raster(gpt, cls, 12, cfg_scale=3.0, cfg_interval=3, top_k=1)
        # tokens 0..4 guided (official: decode step i = t - 1 guided while i <= 3), then cond rows only
        assert [s[0] for s in seen] == [4] * 5 + [2] * 7
        assert [s[1] for s in seen] == list(range(12))
    finally:
        hook.remove()


def test_completion_and_inpainting_keep_given_tokens(gpt_case):
    _, gpt = gpt_case
    cls = torch.tensor([1, 7, 3])
    full = generate_raster(gpt, cls, 64, cfg_scale=4.0, top_k=1)
    # completing the greedy run's own first 20 tokens (one prefill pass) reproduces the greedy run
    done = generate_raster(gpt, cls, 64, cfg_scale=4.0, top_k=1, prefix_tokens=full[:, :20])
    assert torch.equal(done, full)
    # arbitrary kept positions: forced exactly, and they steer what follows
    g = torch.Generator().manual_seed(5)
    given = torch.randint(0, 512, (3, 64), generator=g)
    mask = torch.rand(3, 64, generator=g) < 0.3
    mask[:, 0] = False
    out = generate_raster(gpt, cls, 64, cfg_scale=4.0, top_k=1, prefix_tokens=given, token_mask=mask)
    assert torch.equal(out[mask], given[mask])
    assert not torch.equal(out[~mask], full[~mask])
    steps = []
    generate_raster(gpt, cls, 6, top_k=1, prefix_tokens=full[:, :3], callback=lambda s, t: steps.append((s, t.shape)))
    assert steps == [(s, (3, s + 1)) for s in range(6)]


def test_kv_cache_incremental_equals_full_forward(gpt_case):
    _, gpt = gpt_case
    g = torch.Generator().manual_seed(9)
    x = torch.randint(0, 512, (2, 30), generator=g)
    cls = torch.tensor([0, 9])
    with torch.no_grad():
        full = gpt(x, cls)  # (2, 31, V)
        cache = gpt.new_cache(2, 31)
        k0, v0 = cache.k.data_ptr(), cache.v.data_ptr()
        steps = [gpt(None, cls, cache=cache, start_pos=0)]
        steps += [gpt(x[:, 0:11], None, cache=cache, start_pos=1)]  # a block of queries over cached keys
        steps += [gpt(x[:, t - 1 : t], None, cache=cache, start_pos=t) for t in range(12, 31)]
        assert (cache.k.data_ptr(), cache.v.data_ptr()) == (k0, v0)  # written in place, never reallocated
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


def test_seeded_sampling_is_reproducible_and_varies(gpt_case):
    _, gpt = gpt_case
    cls = torch.tensor([2, 2])
    a = generate_raster(gpt, cls, 16, cfg_scale=2.0, top_k=50, top_p=0.9, generator=torch.Generator().manual_seed(1))
    b = generate_raster(gpt, cls, 16, cfg_scale=2.0, top_k=50, top_p=0.9, generator=torch.Generator().manual_seed(1))
    c = generate_raster(gpt, cls, 16, cfg_scale=2.0, top_k=50, top_p=0.9, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a[0], a[1])


def test_errors_name_what_is_valid(gpt_case, vq_case, tmp_path):
    _, gpt = gpt_case
    with pytest.raises(ValueError, match=r"0\.\.9"):
        generate_raster(gpt, torch.tensor([3, 10]), 4)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        generate_raster(gpt, torch.tensor([-1]), 4)
    with pytest.raises(ValueError, match=r"1\.\.64"):
        generate_raster(gpt, torch.tensor([1]), 65)
    _, vq, _ = vq_case
    with pytest.raises(ValueError, match="multiples of its downsample factor 8"):
        vq.encode(torch.zeros(1, 3, 30, 32))


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_loaders_refuse_non_allow_listed_pickles(tmp_path):
    marker = tmp_path / "pwned"
    for name, loader in [("gpt.pt", load_llamagen_gpt), ("vq.pt", load_llamagen_vq)]:
        torch.save({"model": {"w": torch.ones(1)}, "args": _Payload(marker)}, tmp_path / name)
        with pytest.raises(ValueError, match="refused"):
            loader(tmp_path / name)
    assert not marker.exists()


def test_config_inference_for_official_presets():
    meta = torch.device("meta")
    for (dim, n_layer, heads, ffn) in [(768, 12, 12, 2048), (1024, 24, 16, 2816), (1280, 36, 20, 3584),
                                        (1536, 48, 24, 4096), (3200, 24, 32, 8704)]:
        sd = {"tok_embeddings.weight": torch.empty(16384, dim, device=meta),
              "cls_embedding.embedding_table.weight": torch.empty(1001, dim, device=meta),
              "output.weight": torch.empty(16384, dim, device=meta)}
        for i in range(n_layer):
            sd[f"layers.{i}.attention.wqkv.weight"] = torch.empty(3 * dim, dim, device=meta)
            sd[f"layers.{i}.feed_forward.w1.weight"] = torch.empty(ffn, dim, device=meta)
        c = llamagen_gpt_config_from_state_dict(sd)  # a bare state dict: heads from the preset table
        assert (c.n_head, c.n_kv_head, c.num_classes, c.ffn_hidden, c.block_size) == (heads, heads, 1000, ffn, 576)
        assert c.head_dim == (100 if dim == 3200 else 64)
        args = argparse.Namespace(gpt_model="GPT-B", image_size=256, downsample_size=16, cls_token_num=1)
        if dim == 768:
            assert llamagen_gpt_config_from_state_dict(sd, args=args).block_size == 256
    with torch.device("meta"):
        ds16 = LlamaGenVQ(LlamaGenVQConfig())
    c = llamagen_vq_config_from_state_dict(ds16.state_dict())
    assert (c.ch, c.encoder_ch_mult, c.z_channels, c.codebook_size, c.codebook_embed_dim, c.downsample) == \
        (128, (1, 1, 2, 2, 4), 256, 16384, 8, 16)


def test_sample_probs_draws_follow_the_distribution_and_skip_zero_mass():
    """The inverse-CDF draw that raster and VAR sampling share: 20000 draws match the probabilities (unnormalised
    rows allowed) and never pick a zero-probability token."""
    probs = torch.tensor([0.5, 0.0, 0.2, 0.3, 0.0]) * 3
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0))
    idx = sample_probs(probs.expand(20000, -1), u)
    freq = torch.bincount(idx, minlength=5).float() / idx.numel()
    assert freq[1] == 0 and freq[4] == 0
    assert (freq - probs / probs.sum()).abs().max().item() < 0.011  # 3 sigma at p=0.5, n=20000: 0.0106
