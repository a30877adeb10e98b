"""Next-scale prediction sampling for VAR (Tian et al. 2024, arXiv:2404.02905, Sec. 3 and Algorithm 2).

Follows the official `VAR.autoregressive_infer_cfg` step for step (same ops in the same order, so greedy
tokens match it exactly), with two changes that do not alter the numbers: the per-block AdaLN projections of
the class embedding are computed once instead of once per scale, and the KV cache is preallocated instead of
grown with `torch.cat`. Sampled tokens are drawn from the same filtered distribution with CPU random numbers,
one uniform per token by default; draw="multinomial" reproduces the official `torch.multinomial` stream (a
seeded official CPU run's tokens) at the cost of one random number per vocabulary entry. Greedy decoding
(top_k=1) takes the argmax without a draw.

Zero-shot editing (paper Sec. 7.2, official `demo_zero_shot_edit.ipynb`): at each scale the model samples
as usual, then the embeddings at the kept positions are overwritten by those of the given tokens before the
running f_hat is updated, so every later scale is teacher-forced on the known content. The kept region of a
scale is the full-resolution mask resized bilinearly to pn x pn and thresholded at 0.5; scales with at most
3 tokens are kept entirely.
"""
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .ar import sample_probs
from .cpu_linear import packed_linears


class VARResult(NamedTuple):
    tokens: list[torch.Tensor]  # K token maps [B,pn,pn] long
    # [B,Cvae,pn_K,pn_K] float32; decode with vqvae.decode_fhat (under more_smooth it is not the tokens' f_hat)
    f_hat: torch.Tensor


def top_k_top_p_filter_(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """VAR's official `sample_with_top_k_top_p_` filter, in place on logits [B,l,V].

    top-k keeps every logit >= the k-th largest (ties kept); top_k <= 0 disables it. top-p then removes, in
    ascending order, the tokens whose cumulative probability is <= 1 - top_p (never the most likely);
    top_p <= 0 disables it, which differs from the usual convention where small top_p is greedy.
    """
    V = logits.shape[-1]
    if top_k > 0:
        kth = logits.topk(min(top_k, V), dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits.masked_fill_(logits < kth, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits.sort(dim=-1, descending=False)
        remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)
        remove[..., -1:] = False
        logits.masked_fill_(remove.scatter(-1, sorted_idx, remove), -torch.inf)
    return logits


def _multinomial(probs_BlV: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One sample per row -> [B,l] long: exactly `torch.multinomial(probs, 1, replacement=True, generator)` on the
    CPU (the official call), computed where the probabilities are.

    For one sample torch.multinomial draws q ~ Exp(1) with the shape of `probs` and returns argmax(probs / q)
    (aten Distributions.cpp, the Gumbel fast path). The draws are made here the same way on the CPU, so a seed
    gives the official CPU tokens, and the same tokens on any device; only q travels, not the probabilities.
    """
    B, l, V = probs_BlV.shape
    q = torch.empty(B * l, V, dtype=torch.float32).exponential_(generator=generator)
    if probs_BlV.device.type == "cuda":
        q = q.pin_memory().to(probs_BlV.device, non_blocking=True)
    elif probs_BlV.device.type != "cpu":
        q = q.to(probs_BlV.device)
    return (probs_BlV.float().view(-1, V) / q).argmax(dim=-1).view(B, l)


def _gumbel(shape: torch.Size, generator: torch.Generator | None, device) -> torch.Tensor:
    """Gumbel(0,1) noise -log(Exp(1)) drawn on CPU (official `gumbel_softmax_with_rng`)."""
    return -torch.empty(shape).exponential_(generator=generator).log().to(device)


def edit_masks(token_mask: torch.Tensor | Sequence[torch.Tensor], patch_nums: Sequence[int],
               batch: int, device) -> list[torch.Tensor]:
    """Per-scale keep masks [B,pn,pn] bool from a full-resolution mask [h,w] / [B,h,w] (1 = keep the given
    token), resized as the official zero-shot edit demo does; a list of K per-scale masks is used as given."""
    if isinstance(token_mask, (list, tuple)):
        if len(token_mask) != len(patch_nums):
            raise ValueError(f"token_mask list needs {len(patch_nums)} maps (one per scale), got {len(token_mask)}")
        out = []
        for m, pn in zip(token_mask, patch_nums):
            m = torch.as_tensor(m, device=device).bool()
            out.append((m.unsqueeze(0) if m.ndim == 2 else m).expand(batch, pn, pn))
        return out
    m = torch.as_tensor(token_mask, device=device).float()
    if m.ndim == 2:
        m = m.unsqueeze(0)
    if m.ndim != 3 or m.shape[0] not in (1, batch):
        raise ValueError(f"token_mask must be [h,w] or [B,h,w] with B={batch}, got {tuple(m.shape)}")
    m = m.expand(batch, -1, -1).unsqueeze(1)
    out = []
    for pn in patch_nums:
        keep = F.interpolate(m, size=(pn, pn), mode="bilinear", align_corners=False).gt(0.5)[:, 0]
        out.append(torch.ones_like(keep) if pn * pn <= 3 else keep)
    return out


@torch.no_grad()
def generate_var(var, vqvae, class_ids: torch.Tensor, cfg_scale: float = 1.5, top_k: int = 900, top_p: float = 0.96,
                 more_smooth: bool = False, generator: torch.Generator | None = None, draw: str = "inverse_cdf",
                 prefix_tokens: Sequence[torch.Tensor] | None = None,
                 token_mask: torch.Tensor | Sequence[torch.Tensor] | None = None,
                 callback: Callable[[int, torch.Tensor], None] | None = None,
                 packed_cpu: bool = True, keep_packed: bool = True) -> VARResult:
    """Class-conditional next-scale sampling with classifier-free guidance.

    var: models.var.VAR; vqvae: tokenizers.var_vqvae.VARVQVAE (same codebook).
    class_ids: [B] long in [0, num_classes]; num_classes is the null class (unconditional, e.g. pure inpainting).
    cfg_scale: guidance grows linearly over scales, t_k = cfg_scale * k / (K-1), logits = (1+t) cond - t uncond.
    top_k / top_p: official filter semantics (see `top_k_top_p_filter_`); no temperature, as in the official code.
    more_smooth: replace each sampled embedding by a Gumbel-softmax mix of the codebook (tau =
        max(0.27 (1 - 0.95 k/(K-1)), 0.005) on logits * (1 + k/(K-1))); the returned tokens are then the
        argmax of the mix, and only the returned f_hat reproduces the image.
    generator: CPU torch.Generator; all randomness is drawn on the CPU, so a seed means the same draws on any device.
    draw: how a token is drawn from its filtered distribution. "inverse_cdf" (default): one uniform per token,
        B*l numbers per scale, cheap on any device. "multinomial": the official `torch.multinomial` stream
        (one Exp(1) per vocabulary entry, B*l*V numbers per scale): the official code's tokens for the same seed
        on the CPU, but the CPU generator then costs seconds per batch on a GPU (VAR-d16, batch 16: ~1.6 s).
    prefix_tokens: up to K token maps [B,pn,pn] (or [B,pn*pn]) of an image to edit (from vqvae.encode); the
        scales they cover are teacher-forced where `token_mask` keeps them (everywhere when it is None).
    token_mask: full-resolution keep mask [h,w] or [B,h,w] (1 = keep the given token) or K maps [B,pn,pn].
    callback(scale_index, f_hat): called after each scale with the running f_hat [B,Cvae,h,w] (do not modify).
    packed_cpu: on a float32 CPU model, run the transformer's linear layers through pre-packed oneDNN weights
        (samplers.cpu_linear; same arithmetic up to float32 summation order, faster for few rows).
    keep_packed: leave the packed copies on the model for the next call (memory: as much again as its linear
        weights, kept only while that is at most a quarter of the available memory; `release_packed` frees them).
    Returns VARResult(tokens: K maps [B,pn,pn], f_hat [B,Cvae,pn_K,pn_K]); images = vqvae.decode_fhat(f_hat).
    """
    with packed_linears(var, rows_hint=2 * max(1, torch.as_tensor(class_ids).numel()), enabled=packed_cpu,
                        keep=keep_packed):
        return _generate_var(var, vqvae, class_ids, cfg_scale, top_k, top_p, more_smooth, generator, draw,
                             prefix_tokens, token_mask, callback)


def _generate_var(var, vqvae, class_ids, cfg_scale, top_k, top_p, more_smooth, generator, draw, prefix_tokens,
                  token_mask, callback) -> VARResult:
    if draw not in ("inverse_cdf", "multinomial"):
        raise ValueError(f"draw must be 'inverse_cdf' or 'multinomial', got {draw!r}")
    pns, K, B = var.patch_nums, len(var.patch_nums), class_ids.shape[0]
    if K < 2:
        raise ValueError(f"VAR sampling needs at least 2 scales, got patch_nums {pns}")
    if var.cfg.vocab_size != vqvae.vocab_size or var.cfg.Cvae != vqvae.Cvae:
        raise ValueError(f"VAR expects a VQVAE with vocab {var.cfg.vocab_size} x Cvae {var.cfg.Cvae}, "
                         f"got {vqvae.vocab_size} x {vqvae.Cvae}")
    device, dtype = var.pos_1LC.device, var.pos_1LC.dtype
    class_ids = torch.as_tensor(class_ids, device=device).long().view(-1)
    if class_ids.numel() and (class_ids.min() < 0 or class_ids.max() > var.num_classes):
        raise ValueError(f"class ids must be in [0, {var.num_classes}] ({var.num_classes} = unconditional), "
                         f"got {class_ids.tolist()}")
    keep = None
    if prefix_tokens is not None:
        if len(prefix_tokens) > K:
            raise ValueError(f"prefix_tokens has {len(prefix_tokens)} scales, the model has {K}")
        for si, (t, pn) in enumerate(zip(prefix_tokens, pns)):
            if t.numel() != B * pn * pn:
                raise ValueError(f"prefix_tokens[{si}] must hold [B={B}, {pn}, {pn}] tokens, got {tuple(t.shape)}")
        prefix_tokens = [t.to(device).view(B, pn, pn) for t, pn in zip(prefix_tokens, pns)]
        keep = edit_masks(token_mask, pns, B, device) if token_mask is not None else \
            [torch.ones(B, pn, pn, dtype=torch.bool, device=device) for pn in pns]
    elif token_mask is not None:
        raise ValueError("token_mask needs prefix_tokens (the tokens to keep)")

    # batch = [conditional; unconditional]; everything that depends only on the class is computed once
    labels = torch.cat((class_ids, torch.full_like(class_ids, var.num_classes)))
    cond, ada, head_ada = var.conditioning(labels)
    lvl_pos = var.level_pos()
    first_l = var.first_l
    x = cond.unsqueeze(1).expand(2 * B, first_l, -1) + var.pos_start.expand(2 * B, first_l, -1) + lvl_pos[:, :first_l]
    kv_cache = var.new_kv_cache(2 * B)
    codebook = vqvae.quantize.embedding.weight.float()
    f_hat = torch.zeros(B, vqvae.Cvae, pns[-1], pns[-1], device=device)
    tokens, start = [], 0
    for si, pn in enumerate(pns):
        ratio = si / (K - 1)
        logits = var.step(x, ada, head_ada, kv_cache, start)  # (2B, l, V) float32
        t = cfg_scale * ratio
        logits = (1 + t) * logits[:B] - t * logits[B:]
        top_k_top_p_filter_(logits, top_k, top_p)
        if top_k == 1 and not more_smooth:  # greedy: the draw could only pick the argmax; it is skipped, as
            idx = logits.argmax(dim=-1)      # no later randomness depends on the generator's state
        else:
            probs = logits.softmax(dim=-1)  # (B, l, V)
            if draw == "multinomial":
                idx = _multinomial(probs, generator)  # (B, l)
            else:
                u = torch.rand(B * probs.shape[1], generator=generator)
                idx = sample_probs(probs.view(B * probs.shape[1], -1), u).view(B, -1)
        if more_smooth:  # Gumbel-softmax over the filtered logits, as the official visualisation mode
            tau = max(0.27 * (1 - ratio * 0.95), 0.005)
            soft = ((logits.mul(1 + ratio) + _gumbel(logits.shape, generator, device)) / tau).softmax(dim=-1)
            h = soft @ codebook.unsqueeze(0)  # (B, l, Cvae)
            idx = soft.argmax(dim=-1)
        else:
            h = codebook[idx]  # (B, l, Cvae)
        h = h.transpose(1, 2).reshape(B, vqvae.Cvae, pn, pn)
        idx = idx.view(B, pn, pn)
        if prefix_tokens is not None and si < len(prefix_tokens):
            m = keep[si]
            h = torch.where(m.unsqueeze(1), vqvae.embed(prefix_tokens[si]), h)
            idx = torch.where(m, prefix_tokens[si], idx)
        f_hat, nxt = vqvae.next_autoregressive_input(si, pns, f_hat, h)
        tokens.append(idx)
        if callback is not None:
            callback(si, f_hat)
        start += pn * pn
        if nxt is not None:  # next scale's input: word embedding of the area-downsampled running f_hat
            nl = pns[si + 1] ** 2
            x = var.word_embed(nxt.view(B, vqvae.Cvae, nl).transpose(1, 2).to(dtype)) + lvl_pos[:, start:start + nl]
            x = x.repeat(2, 1, 1)
    return VARResult(tokens, f_hat)
