"""VAR (FoundationVision/VAR) exactness against golden outputs of the official code.

tests/golden/var_{tiny4,shared10}.json were produced by running the official repository (commit 78b9539)
on CPU with tiny random checkpoints: the official modules' state_dict() layout (recorded in the JSON as
key -> shape), filled by `_official_checkpoint` below (seeded torch.randn per tensor in sorted key order;
buffers hold their constructed values). `tiny4`: 64 px, patch_nums (1,2,3,4), official VQVAE ch_mult,
VAR depth 2 / width 64 / 4 heads. `shared10`: 32 px, the 10-scale 256 px schedule on a ch_mult (1,2) VQVAE,
shared-AdaLN VAR depth 3 / width 48 / 3 heads. Recorded: `img_to_idxBl`, `idxBl_to_img`,
`idxBl_to_var_input`, teacher-forcing logits, `autoregressive_infer_cfg` (greedy, seeded top-k/top-p,
more_smooth) and the zero-shot in-painting of demo_zero_shot_edit.ipynb.
"""
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.var import VAR, load_var
from samplers.var import edit_masks, generate_var, top_k_top_p_filter_
from tokenizers.var_vqvae import VARVQVAE, default_patch_nums, load_var_vqvae, phi_index

GOLDEN = Path(__file__).parent / "golden"
TOL = 1e-4


def _official_checkpoint(shapes: dict, seed: int, patch_nums) -> dict:
    """Rebuild the golden random checkpoint: randn per tensor in sorted key order, buffers as constructed."""
    g = torch.Generator().manual_seed(seed)
    lvl = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(patch_nums)]).view(1, -1)
    sd = {}
    for k in sorted(shapes):
        shape = shapes[k]
        if k.endswith(("ema_vocab_hit_SV", "zero_k_bias")):
            sd[k] = torch.zeros(shape)
        elif k == "lvl_1L":
            sd[k] = lvl
        elif k == "attn_bias_for_masking":
            sd[k] = torch.where(lvl.view(1, -1, 1) >= lvl.view(1, 1, -1), 0.0, -torch.inf).view(shape)
        else:
            t = torch.randn(shape, generator=g)
            if len(shape) >= 2:
                sd[k] = t / math.sqrt(math.prod(shape[1:]))
            else:  # norm gains around 1, biases small
                sd[k] = 1 + 0.1 * t if k.endswith("weight") else 0.1 * t
    return sd


def _t(packed) -> torch.Tensor:
    values, shape = packed
    return torch.tensor(values, dtype=torch.float32).view(shape)


def _sub(img: torch.Tensor, step: int) -> torch.Tensor:
    return img[..., ::step, ::step]


@pytest.fixture(scope="module", params=["tiny4", "shared10"])
def case(request, tmp_path_factory):
    torch.set_num_threads(1)  # the golden values were recorded single-threaded
    g = json.loads((GOLDEN / f"var_{request.param}.json").read_text())
    c = g["config"]
    d = tmp_path_factory.mktemp(request.param)
    torch.save(_official_checkpoint(g["vae_shapes"], c["vae_seed"], c["patch_nums"]), d / "vae.pth")
    torch.save(_official_checkpoint(g["var_shapes"], c["var_seed"], c["patch_nums"]), d / "var.pth")
    vae, var = load_var_vqvae(d / "vae.pth"), load_var(d / "var.pth")
    B, s = len(c["labels"]), c["img"]
    images = torch.rand(B, 3, s, s, generator=torch.Generator().manual_seed(c["image_seed"])) * 2 - 1
    return g, vae, var, images


def test_config_inferred_from_shapes(case):
    g, vae, var, _ = case
    c = g["config"]
    assert var.cfg.depth == c["depth"] and var.cfg.embed_dim == c["embed"] and var.cfg.num_heads == c["heads"]
    assert var.patch_nums == tuple(c["patch_nums"]) and var.cfg.shared_aln == c["shared_aln"]
    assert var.num_classes == c["num_classes"] and var.cfg.vocab_size == c["V"] and var.cfg.Cvae == c["Cvae"]
    assert vae.cfg.ch == c["ch"] and vae.cfg.ch_mult == tuple(c["ch_mult"]) and vae.cfg.num_phi == 4
    assert set(var.state_dict()) == set(g["var_shapes"]) and set(vae.state_dict()) == set(g["vae_shapes"])


def test_encode_matches_official_img_to_idxBl(case):
    g, vae, _, images = case
    pns = g["config"]["patch_nums"]
    f = vae.quant_conv(vae.encoder(images))
    assert (f[..., ::2, ::2] - _t(g["encode_f_sub"])).abs().max() < TOL
    tokens = vae.encode(images, pns)
    for ours, ref, pn in zip(tokens, g["encode_tokens"], pns):
        assert ours.shape == (len(ref), pn, pn)
        assert ours.flatten(1).tolist() == ref


def test_decode_matches_official_idxBl_to_img(case):
    g, vae, _, _ = case
    tokens = [torch.tensor(t) for t in g["encode_tokens"]]  # [B, l] form is accepted too
    f_hat = vae.indices_to_fhat(tokens)
    assert (f_hat[..., ::2, ::2] - _t(g["decode_fhat_sub"])).abs().max() < TOL
    img = vae.decode_indices(tokens)
    assert (_sub(img, 4) - _t(g["decode_image_sub"])).abs().max() < TOL
    assert abs(img.mean().item() - g["decode_image_mean"]) < TOL and img.abs().max() <= 1.0


def test_teacher_forcing_matches_official(case):
    g, vae, var, _ = case
    tokens = [torch.tensor(t) for t in g["encode_tokens"]]
    x = vae.teacher_forcing_input(tokens)
    assert (x[:, ::5] - _t(g["var_input_sub"])).abs().max() < TOL
    logits = var(torch.tensor(g["config"]["labels"]), x)
    assert (logits[:, ::11, ::5] - _t(g["tf_logits_sub"])).abs().max() < TOL


@pytest.mark.parametrize("key", ["greedy", "greedy_cfg4", "sampled", "smooth"])
def test_generate_matches_official_autoregressive_infer_cfg(case, key):
    g, vae, var, _ = case
    ref = g[key]
    kw = dict(ref["kwargs"])
    gen = torch.Generator().manual_seed(kw.pop("g_seed"))
    out = generate_var(var, vae, torch.tensor(g["config"]["labels"]), cfg_scale=kw["cfg"], top_k=kw["top_k"],
                       top_p=kw["top_p"], more_smooth=kw.get("more_smooth", False), generator=gen,
                       draw="multinomial")  # the official torch.multinomial stream
    if not kw.get("more_smooth"):  # under more_smooth the official draws are not the image's tokens
        assert [t.flatten(1).tolist() for t in out.tokens] == ref["tokens"]
        assert (vae.decode_indices(out.tokens) - vae.decode_fhat(out.f_hat)).abs().max() < 1e-5
    img = vae.decode_fhat(out.f_hat)
    assert (_sub(img, 4) - _t(ref["image_sub"])).abs().max() < TOL


@torch.no_grad()
def test_packed_cpu_linears_give_the_same_greedy_tokens(case):
    g, vae, var, _ = case
    labels = torch.tensor(g["config"]["labels"])
    ref = generate_var(var, vae, labels, cfg_scale=4.0, top_k=1, top_p=0.0, packed_cpu=False)
    out = generate_var(var, vae, labels, cfg_scale=4.0, top_k=1, top_p=0.0, packed_cpu=True)
    assert [t.tolist() for t in out.tokens] == [t.tolist() for t in ref.tokens]
    assert torch.equal(out.f_hat, ref.f_hat)


@pytest.mark.parametrize("key", ["inpaint_greedy", "inpaint_smooth"])
def test_zero_shot_inpainting_matches_official_demo(case, key):
    g, vae, var, _ = case
    ref = g[key]
    kw = ref["kwargs"]
    prefix = [torch.tensor(t) for t in g["encode_tokens"]]
    out = generate_var(var, vae, torch.tensor(g["config"]["labels"]), cfg_scale=kw["cfg"], top_k=kw["top_k"],
                       top_p=kw["top_p"], more_smooth=kw["more_smooth"],
                       generator=torch.Generator().manual_seed(kw["g_seed"]), draw="multinomial",
                       prefix_tokens=prefix, token_mask=torch.tensor(ref["edit_mask"]))
    if not kw["more_smooth"]:
        assert [t.flatten(1).tolist() for t in out.tokens] == ref["tokens"]
    else:  # kept positions carry the given tokens even in smooth mode
        keep = edit_masks(torch.tensor(ref["edit_mask"]), var.patch_nums, len(prefix[0]), "cpu")
        for t, p, m in zip(out.tokens, prefix, keep):
            assert torch.equal(t[m], p.view_as(t)[m])
    assert (_sub(vae.decode_fhat(out.f_hat), 4) - _t(ref["image_sub"])).abs().max() < TOL


# ---- the known traps, checked directly -----------------------------------------------------------------

def test_phi_index_by_scale_position():
    assert [phi_index(si, 10, 4) for si in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert [phi_index(si, 4, 4) for si in range(4)] == [0, 1, 2, 3]
    np = pytest.importorskip("numpy")
    for K in range(1, 7):  # official PhiPartiallyShared.__getitem__
        ticks = np.linspace(1 / 3 / K, 1 - 1 / 3 / K, K) if K == 4 else np.linspace(1 / 2 / K, 1 - 1 / 2 / K, K)
        for SN in range(2, 17):
            assert [phi_index(si, SN, K) for si in range(SN)] == \
                   [int(np.argmin(np.abs(ticks - si / (SN - 1)))) for si in range(SN)]


def test_upsample_before_phi_and_next_input_from_running_fhat(case):
    _, vae, _, _ = case
    pns = (1, 2, 3, 4)
    torch.manual_seed(0)
    hs = [torch.randn(2, vae.Cvae, pn, pn) for pn in pns[:2]]
    f_hat = torch.zeros(2, vae.Cvae, 4, 4)
    vae.next_autoregressive_input(0, pns, f_hat, hs[0])
    f_hat, nxt1 = vae.next_autoregressive_input(1, pns, f_hat, hs[1])
    phi = [vae.quantize.phi(si, 4) for si in range(2)]
    assert phi[0] is not phi[1]
    up = lambda h: F.interpolate(h, size=(4, 4), mode="bicubic")
    right = phi[0](up(hs[0])) + phi[1](up(hs[1]))
    wrong = up(phi[0](hs[0])) + up(phi[1](hs[1]))  # conv before upsampling
    assert (f_hat - right).abs().max() < 1e-6 and (f_hat - wrong).abs().max() > 1e-3
    assert torch.allclose(nxt1, F.interpolate(right, size=(3, 3), mode="area"), atol=1e-6)
    assert not torch.allclose(nxt1, F.interpolate(phi[1](up(hs[1])), size=(3, 3), mode="area"), atol=1e-3)


def test_adaln_computed_once_per_generation(case):
    _, vae, var, _ = case
    calls = []
    mods = [b.ada_lin for b in var.blocks if hasattr(b, "ada_lin")] + [var.head_nm.ada_lin]
    if var.cfg.shared_aln:
        mods.append(var.shared_ada_lin)
    handles = [m.register_forward_hook(lambda m, i, o: calls.append(m)) for m in mods]
    try:
        generate_var(var, vae, torch.tensor([0]), top_k=1, generator=torch.Generator().manual_seed(0))
    finally:
        for h in handles:
            h.remove()
    assert len(calls) == len(mods) and len(set(map(id, calls))) == len(mods)


def test_preallocated_kv_cache_equals_full_masked_forward(case):
    g, vae, var, _ = case
    tokens = [torch.tensor(t) for t in g["encode_tokens"]]
    labels = torch.tensor(g["config"]["labels"])
    x_in = vae.teacher_forcing_input(tokens)
    full = var(labels, x_in)  # one pass with the block-causal mask (what cat-grown caching reproduces)
    cond, ada, head_ada = var.conditioning(labels)
    lvl_pos = var.level_pos()
    cache = var.new_kv_cache(len(labels))
    ptrs = [k.data_ptr() for k, _ in cache]
    start = 0
    x = cond.unsqueeze(1) + var.pos_start + lvl_pos[:, :1]
    for si, pn in enumerate(var.patch_nums):
        step = var.step(x, ada, head_ada, cache, start)
        assert (step - full[:, start:start + pn * pn]).abs().max() < 1e-4
        start += pn * pn
        if si + 1 < len(var.patch_nums):
            nl = var.patch_nums[si + 1] ** 2
            x = var.word_embed(x_in[:, start - var.first_l:start - var.first_l + nl]) + lvl_pos[:, start:start + nl]
    assert [k.data_ptr() for k, _ in cache] == ptrs and cache[0][0].shape[2] == var.L


def test_default_draw_is_a_true_sample_of_the_filtered_distribution(case):
    """draw="inverse_cdf" (the default) follows the distribution of the official multinomial draw: over 200
    images the first scale's token frequencies agree, and no token outside the top-k ever appears."""
    _, vae, var, _ = case
    labels = torch.zeros(200, dtype=torch.long)
    kw = dict(cfg_scale=1.0, top_k=3, top_p=0.0)
    ours = generate_var(var, vae, labels, generator=torch.Generator().manual_seed(0), **kw).tokens[0].flatten()
    ref = generate_var(var, vae, labels, generator=torch.Generator().manual_seed(1), draw="multinomial",
                       **kw).tokens[0].flatten()
    assert set(ours.tolist()) <= set(ref.tolist()) and len(set(ref.tolist())) <= 3
    f = lambda t: torch.bincount(t, minlength=var.cfg.vocab_size).float() / t.numel()  # noqa: E731
    assert (f(ours) - f(ref)).abs().max().item() < 0.15  # 200 draws each: 3 sigma of the difference < 0.15
    assert not torch.equal(ours, ref)


def test_callback_and_seed_reproducibility(case):
    _, vae, var, _ = case
    seen = []
    run = lambda seed, cb=None: generate_var(var, vae, torch.tensor([1, 2]), cfg_scale=2.0, top_k=10, top_p=0.9,
                                             generator=torch.Generator().manual_seed(seed), callback=cb)
    a = run(5, lambda si, f: seen.append((si, f.abs().sum().item())))
    assert [s for s, _ in seen] == list(range(len(var.patch_nums)))
    assert all(t.shape == (2, pn, pn) for t, pn in zip(a.tokens, var.patch_nums))
    assert [t.tolist() for t in run(5).tokens] == [t.tolist() for t in a.tokens]
    assert [t.tolist() for t in run(6).tokens] != [t.tolist() for t in a.tokens]


def test_prefix_scales_are_teacher_forced(case):
    g, vae, var, _ = case
    prefix = [torch.tensor(t) for t in g["encode_tokens"]][:2]
    out = generate_var(var, vae, torch.tensor(g["config"]["labels"]), top_k=5, prefix_tokens=prefix,
                       generator=torch.Generator().manual_seed(0))
    for t, p in zip(out.tokens[:2], prefix):
        assert torch.equal(t.flatten(1), p)


def test_top_k_top_p_filter_official_semantics():
    logits = torch.tensor([[[0.0, 3.0, 1.0, 3.0, 2.0]]])
    removed = lambda **kw: torch.isinf(top_k_top_p_filter_(logits.clone(), **kw))[0, 0].tolist()
    assert removed(top_k=2) == [True, False, True, False, True]  # ties at the k-th value kept
    assert not torch.isinf(top_k_top_p_filter_(logits.clone(), top_k=0, top_p=0.0)).any()  # both disabled
    p = logits.softmax(-1)[0, 0]  # ascending: 0.0, 1.0, 2.0, 3.0, 3.0
    top_p = 1 - (p[0] + p[2]).item() - 1e-6  # cumsum <= 1 - top_p: exactly the two least likely
    assert removed(top_p=top_p) == [True, False, True, False, False]


def test_errors_name_what_works(case):
    _, vae, var, _ = case
    with pytest.raises(ValueError, match=r"\[0, "):
        generate_var(var, vae, torch.tensor([var.num_classes + 1]))
    with pytest.raises(ValueError, match=r"prefix_tokens\[1\]"):
        generate_var(var, vae, torch.tensor([0]), prefix_tokens=[torch.zeros(1, 1, 1).long(), torch.zeros(1, 3, 3).long()])
    with pytest.raises(ValueError, match="256, 512"):
        default_patch_nums(320)
    with pytest.raises(ValueError, match="latent side"):
        vae.encode(torch.zeros(1, 3, 2 * vae.downsample, 2 * vae.downsample), (1, 3))
    with pytest.raises(ValueError, match="VQVAE state dict"):
        VARVQVAE.from_state_dict({"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="VAR state dict"):
        VAR.from_state_dict({"x": torch.zeros(1)})


def test_derived_buffers_come_from_the_config_not_the_file(case, tmp_path):
    """A file whose block-causal mask was damaged (NaN, as an EMA over all buffers once made it) or left out still
    loads with the correct mask, and teacher forcing gives the same logits as from the intact file."""
    g, vae, var, _ = case
    sd = {k: v.clone() for k, v in var.state_dict().items()}
    intact = sd["attn_bias_for_masking"].clone()
    assert torch.isinf(intact).any()
    sd["attn_bias_for_masking"] = torch.full_like(intact, float("nan"))
    damaged = VAR.from_state_dict(sd)
    assert torch.equal(damaged.attn_bias_for_masking, intact)
    stripped = VAR.from_state_dict({k: v for k, v in sd.items() if not k.endswith(("attn_bias_for_masking",
                                                                                    "zero_k_bias"))})
    assert torch.equal(stripped.attn_bias_for_masking, intact)
    tokens = [torch.tensor(t) for t in g["encode_tokens"]]
    labels = torch.tensor(g["config"]["labels"])
    x_in = vae.teacher_forcing_input(tokens)
    with torch.no_grad():
        ref = var(labels, x_in)
        assert torch.isfinite(ref).all()
        assert torch.equal(damaged(labels, x_in), ref) and torch.equal(stripped(labels, x_in), ref)
    # the same through load_state_dict on an existing model (what training's --init does)
    again = VAR(var.cfg)
    again.load_state_dict(sd)
    assert torch.equal(again.attn_bias_for_masking, intact)


def test_cpu_gelu_matches_torchs_tanh_gelu():
    """models.var.gelu_tanh: the x * sigmoid(2u) form on float32 CPU inference equals torch's tanh-GELU to float
    rounding, in place only when asked; small inputs and autograd go through F.gelu."""
    from models.var import gelu_tanh
    x = torch.randn(200, 4096) * 4  # 819k elements: the chunked route (7 chunks, the last one partial)
    ref = F.gelu(x, approximate="tanh")
    with torch.no_grad():
        kept = x.clone()
        out = gelu_tanh(x)
        assert torch.equal(x, kept) and out.data_ptr() != x.data_ptr()
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
        assert (out - ref).abs().max() > 0  # it really took its own route (a different rounding)
        torch.testing.assert_close(gelu_tanh(x.t()), ref.t(), rtol=0, atol=1e-6)  # non-contiguous input
        same = gelu_tanh(x, inplace=True)
        assert same.data_ptr() == x.data_ptr()
        torch.testing.assert_close(x, ref, rtol=0, atol=1e-6)
    y = torch.randn(300, 300, requires_grad=True)  # autograd: torch's own op, so gradients flow
    gelu_tanh(y).sum().backward()
    assert y.grad is not None
