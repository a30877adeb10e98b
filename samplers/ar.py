"""Raster-order autoregressive decoding (LlamaGen-style) and the token-sampling utilities it shares with VAR.

The loop mirrors FoundationVision/LlamaGen `autoregressive/models/generate.py`: the batch is doubled with the
null class when cfg_scale > 1, logits = uncond + (cond - uncond) * cfg_scale (Ho & Salimans 2022, "Classifier-Free
Diffusion Guidance", applied to logits as in Sun et al. 2024 §3.2), guidance optionally stops after `cfg_interval`
tokens, and each token is drawn after temperature -> top-k -> top-p (Holtzman et al. 2020, arXiv:1904.09751).
Randomness is drawn on the CPU from the caller's generator (one uniform per token, inverse-CDF sampling), so a seed
gives the same tokens on any device.
"""
import logging
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .cpu_linear import packed_linears

log = logging.getLogger(__name__)


def top_k_top_p_filter(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0,
                       filter_value: float = float("-inf"), min_tokens_to_keep: int = 1) -> torch.Tensor:
    """Mask logits (..., V) outside the top-k and/or the nucleus of mass top_p; returns a new tensor.

    top_k=0 and top_p=1.0 mean off. Top-k keeps every logit >= the k-th largest (ties kept). Top-p keeps the
    sorted tokens up to and including the first whose cumulative probability exceeds top_p (so at least one),
    as HuggingFace's `top_k_top_p_filtering`, which the official LlamaGen sampler uses.
    """
    if top_k < 0 or not 0.0 <= top_p <= 1.0:
        raise ValueError(f"expected top_k >= 0 (0 = off) and top_p in [0, 1] (1 = off), got {top_k}, {top_p}")
    if top_k > 0:
        k = min(max(top_k, min_tokens_to_keep), logits.size(-1))
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, filter_value)
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True, dim=-1)
        remove = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1) > top_p
        if min_tokens_to_keep > 1:
            remove[..., :min_tokens_to_keep] = False
        remove = torch.cat([torch.zeros_like(remove[..., :1]), remove[..., :-1]], dim=-1)  # keep the crossing token
        logits = logits.masked_fill(remove.scatter(-1, sorted_idx, remove), filter_value)
    return logits


def sample_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: torch.Generator | None = None, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """Draw one token per row of logits (B, V) -> (B,) long, on the logits' device.

    logits / max(temperature, 1e-5), then top-k, then top-p, then softmax (the official order). The draw is by
    inverse CDF from one uniform per row: `uniform` (B,) if given, else drawn on the CPU from `generator`
    (None = torch's default CPU generator). With top_k=1 this is greedy decoding.
    """
    if top_k == 1:  # greedy: the filter leaves the argmax alone (up to exact ties), so the draw is skipped
        return logits.argmax(dim=-1)
    logits = logits.float() / max(temperature, 1e-5)
    if top_k > 0 or top_p < 1.0:
        logits = top_k_top_p_filter(logits, top_k, top_p)
    probs = F.softmax(logits, dim=-1)  # (B, V)
    if uniform is None:
        uniform = torch.rand(probs.shape[0], generator=generator)
    return sample_probs(probs, uniform)


def sample_probs(probs: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draw of one token per row of probs (N, V) from uniform (N,) in [0, 1) -> (N,) long.

    Rows need not be normalised; tokens with zero probability are never picked.
    """
    uniform = uniform.to(probs.device, torch.float32)
    cdf = probs.cumsum(dim=-1)
    total = cdf[:, -1:].contiguous()
    idx = torch.searchsorted(cdf, uniform[:, None] * total, right=True)  # first index with cdf > u * total
    # u * total can round up to total: fall back to the last token that carries mass, never a filtered one
    idx = torch.minimum(idx, torch.searchsorted(cdf, total)).squeeze(-1)
    zero = probs.gather(-1, idx[:, None]).squeeze(-1) <= 0  # only through cumsum rounding; keeps the draw valid
    return torch.where(zero, probs.argmax(dim=-1), idx)


def _validate_class_ids(class_ids: torch.Tensor, num_classes: int) -> None:
    if class_ids.ndim != 1 or class_ids.dtype.is_floating_point or class_ids.dtype == torch.bool:
        raise ValueError(f"class_ids must be a 1-D integer tensor (B,), got {class_ids.dtype} {tuple(class_ids.shape)}")
    if class_ids.numel() == 0:
        raise ValueError("class_ids is empty; expected at least one class index")
    lo, hi = int(class_ids.min()), int(class_ids.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(f"class index out of range: valid classes are 0..{num_classes - 1}, got {lo}..{hi}")


def _forced_tokens(prefix_tokens, token_mask, B: int, seq_len: int, vocab: int, device):
    """-> (given (B, seq_len) long, keep (B, seq_len) bool) on device."""
    given = torch.zeros(B, seq_len, dtype=torch.long, device=device)
    keep = torch.zeros(B, seq_len, dtype=torch.bool, device=device)
    if prefix_tokens is None:
        if token_mask is not None:
            raise ValueError("token_mask needs prefix_tokens: the tokens to keep where the mask is True")
        return given, keep
    prefix_tokens = torch.as_tensor(prefix_tokens, device=device).long()
    if prefix_tokens.ndim == 1:
        prefix_tokens = prefix_tokens.expand(B, -1)
    if prefix_tokens.ndim != 2 or prefix_tokens.shape[0] != B or prefix_tokens.shape[1] > seq_len:
        raise ValueError(f"prefix_tokens must be (B={B}, <= {seq_len}) or (<= {seq_len},), got {tuple(prefix_tokens.shape)}")
    n = prefix_tokens.shape[1]
    if token_mask is None:  # completion: keep the first n tokens
        keep[:, :n] = True
    else:
        token_mask = torch.as_tensor(token_mask, device=device).bool()
        if token_mask.ndim == 1:
            token_mask = token_mask.expand(B, -1)
        if tuple(token_mask.shape) != (B, seq_len) or n != seq_len:
            raise ValueError(f"with token_mask, prefix_tokens and token_mask must both be (B={B}, {seq_len}); got "
                             f"{tuple(prefix_tokens.shape)} and {tuple(token_mask.shape)}")
        keep = token_mask.clone()
    given[:, :n] = prefix_tokens
    kept = given[keep]
    if kept.numel() and (int(kept.min()) < 0 or int(kept.max()) >= vocab):
        raise ValueError(f"kept tokens must lie in [0, {vocab - 1}], got range [{int(kept.min())}, {int(kept.max())}]")
    return given, keep


@torch.no_grad()
def generate_raster(gpt, class_ids: torch.Tensor, seq_len: int, cfg_scale: float = 1.0, cfg_interval: float = -1,
                    temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                    generator: torch.Generator | None = None, prefix_tokens: torch.Tensor | None = None,
                    token_mask: torch.Tensor | None = None,
                    callback: Callable[[int, torch.Tensor], None] | None = None,
                    packed_cpu: bool = True, keep_packed: bool = True) -> torch.Tensor:
    """Class-conditional raster-order generation -> tokens (B, seq_len) long on the model's device.

    gpt: a LlamaGenGPT-like model (`num_classes`, `config.vocab_size`, `new_cache(batch, max_len)`,
    `gpt(tokens, class_ids, cache=, start_pos=, last_only=True)`). class_ids (B,) in [0, num_classes).
    cfg_scale > 1 doubles the batch with the null class (index num_classes); at or below 1 there is no null batch
    (as official). cfg_interval > -1: tokens with index > cfg_interval + 1 are unguided (official `i > cfg_interval`
    over the post-prefill steps) and the unconditional rows are no longer computed.
    prefix_tokens (B, n) alone keeps the first n tokens (completion); with token_mask (B, seq_len) bool, True
    positions keep prefix_tokens and the rest are sampled. Kept tokens are fed to the model (teacher forcing);
    a leading run kept in every row is prefilled in one forward pass.
    callback(step, tokens[:, :step + 1]) runs after every token (raise from it to interrupt).
    packed_cpu: on a float32 CPU model, run its linear layers through pre-packed oneDNN weights
    (samplers.cpu_linear; same arithmetic up to float32 summation order, faster for few rows).
    keep_packed: leave the packed copies on the model for the next call (memory: as much again as its linear
    weights, kept only while that is at most a quarter of the available memory; `release_packed` frees them).
    """
    rows = class_ids.shape[0] * (2 if cfg_scale > 1.0 else 1) if class_ids.ndim == 1 else 1
    with packed_linears(gpt, rows_hint=rows, enabled=packed_cpu, keep=keep_packed):
        return _generate_raster(gpt, class_ids, seq_len, cfg_scale, cfg_interval, temperature, top_k, top_p,
                                generator, prefix_tokens, token_mask, callback)


def _generate_raster(gpt, class_ids, seq_len, cfg_scale, cfg_interval, temperature, top_k, top_p, generator,
                     prefix_tokens, token_mask, callback) -> torch.Tensor:
    num_classes, vocab = gpt.num_classes, gpt.config.vocab_size
    _validate_class_ids(class_ids, num_classes)
    block_size = gpt.config.block_size
    if not 1 <= seq_len <= block_size:
        raise ValueError(f"seq_len must be in 1..{block_size} (the model's token grid), got {seq_len}")
    device = next(gpt.parameters()).device
    class_ids = class_ids.to(device).long()
    B = class_ids.shape[0]
    given, keep = _forced_tokens(prefix_tokens, token_mask, B, seq_len, vocab, device)
    uniforms = torch.rand(B, seq_len, generator=generator).to(device)  # all randomness up front, on the CPU

    use_cfg = cfg_scale > 1.0

    def guided(t: int) -> bool:  # official: prefill always guided; decode step i = t - 1 unguided if i > interval
        return use_cfg and (t == 0 or not (cfg_interval > -1 and t - 1 > cfg_interval))

    tokens = torch.zeros(B, seq_len, dtype=torch.long, device=device)
    k = int(keep.all(dim=0).long().cumprod(dim=0).sum())  # leading steps kept in every row
    tokens[:, :k] = given[:, :k]
    for t in range(k):
        if callback is not None:
            callback(t, tokens[:, : t + 1])
    if k == seq_len:
        return tokens

    double = guided(k)
    cache = gpt.new_cache(2 * B if double else B, seq_len)  # positions: class token 0, token j at j + 1
    cls = torch.cat([class_ids, torch.full_like(class_ids, num_classes)]) if double else class_ids
    prefix = tokens[:, :k].repeat(2 if double else 1, 1) if k else None
    logits = gpt(prefix, cls, cache=cache, start_pos=0, last_only=True)[:, -1]  # (B or 2B, V)
    t = k
    while True:
        if guided(t):
            cond, uncond = logits[:B], logits[B:]
            logits = uncond + (cond - uncond) * cfg_scale
        else:
            logits = logits[:B]
        nxt = sample_logits(logits, temperature, top_k, top_p, uniform=uniforms[:, t])
        tokens[:, t] = torch.where(keep[:, t], given[:, t], nxt)
        if callback is not None:
            callback(t, tokens[:, : t + 1])
        t += 1
        if t == seq_len:
            return tokens
        x = tokens[:, t - 1 : t]  # (B, 1): token t-1 enters at position t
        if guided(t):
            x = torch.cat([x, x])
        logits = gpt(x, None, cache=cache, start_pos=t, last_only=True)[:, -1]
