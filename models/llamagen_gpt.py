"""LlamaGen class-conditional GPT: a Llama decoder over raster-ordered VQ tokens with 2-D RoPE.

Sun et al. 2024, "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation" (arXiv:2406.06525),
§2.3: RMSNorm (Zhang & Sennrich 2019), SwiGLU (Shazeer 2020), 2-D rotary embeddings (Su et al. 2021), the class
embedding as a single prefix token, a learned null class for classifier-free guidance.
Parameter names match FoundationVision/LlamaGen `autoregressive/models/gpt.py` (c2i), so the official files
(`c2i_B_256.pt` ... `c2i_3B_384.pt`) load strictly. The head count is not stored in the weights; it is read from
the training checkpoint's `args.gpt_model`, else the official preset table, else dim // 64.
"""
import argparse
import logging
import math
import os
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import (
    SAFETENSORS_SUFFIXES,
    CheckpointError,
    _load_pickle,
    _load_safetensors,
    _strip_prefixes,
)

log = logging.getLogger(__name__)

# name: (n_layer, n_head, dim) from the official GPT_models table (c2i and t2i presets).
GPT_PRESETS = {
    "GPT-B": (12, 12, 768), "GPT-L": (24, 16, 1024), "GPT-XL": (36, 20, 1280), "GPT-XXL": (48, 24, 1536),
    "GPT-XXXL": (48, 40, 2560), "GPT-1B": (22, 32, 2048), "GPT-3B": (24, 32, 3200), "GPT-7B": (32, 32, 4096),
}


@dataclass
class LlamaGenGPTConfig:
    dim: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_kv_head: int = 12
    ffn_hidden: int = 2048
    vocab_size: int = 16384
    num_classes: int = 1000  # the embedding table has num_classes + 1 rows; the last is the null class
    cls_token_num: int = 1
    block_size: int = 256  # image tokens; a square grid of side sqrt(block_size) sets the 2-D RoPE positions
    norm_eps: float = 1e-5
    rope_base: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_head


def precompute_freqs_cis_2d(grid_size: int, head_dim: int, base: float, cls_token_num: int) -> torch.Tensor:
    """2-D RoPE table (cls_token_num + grid_size**2, head_dim // 2, 2) of (cos, sin), float32.

    The first half of the rotated pairs turns with the row index, the second half with the column index; the
    class-token rows are all ZERO (not identity), as in the official code: the class token's q and k vanish.
    """
    half = head_dim // 2
    freqs = 1.0 / (base ** (torch.arange(0, half, 2)[: half // 2].float() / half))  # (head_dim // 4,)
    t = torch.arange(grid_size, dtype=torch.float32)
    freqs = torch.outer(t, freqs)  # (grid, head_dim // 4)
    grid = torch.cat([freqs[:, None, :].expand(-1, grid_size, -1),  # row
                      freqs[None, :, :].expand(grid_size, -1, -1)], dim=-1)  # column -> (grid, grid, head_dim // 2)
    cache = torch.stack([torch.cos(grid), torch.sin(grid)], dim=-1).flatten(0, 1)  # (grid**2, head_dim // 2, 2)
    return torch.cat([torch.zeros(cls_token_num, half, 2), cache])


def apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    """x (B, T, H, hd), freqs_cis (T, hd // 2, 2) -> x with adjacent pairs (x0, x1) rotated, in fp32.

    (x0 + i x1)(cos + i sin) = (x0 cos - x1 sin) + i (x1 cos + x0 sin): the official real-pair formula, done as one
    complex product (a few ops instead of a dozen per call; equal up to float32 rounding).
    """
    xs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))  # (B, T, H, hd // 2) complex
    f = torch.view_as_complex(freqs_cis.float().contiguous()).view(1, xs.size(1), 1, xs.size(3))
    return torch.view_as_real(xs * f).flatten(3).type_as(x)


_fused_rms_norm = getattr(F, "rms_norm", None)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x * rsqrt(mean(x^2) + eps), in fp32, then the gain
        if _fused_rms_norm is not None:  # one kernel instead of six small ones (torch >= 2.4)
            return _fused_rms_norm(x.float(), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight
        xf = x.float()
        return (xf * torch.rsqrt(torch.mean(xf * xf, dim=-1, keepdim=True) + self.eps)).type_as(x) * self.weight


class KVCache:
    """Preallocated keys/values for every layer: k, v (n_layer, B, n_kv_head, max_len, head_dim).

    Allocated once per generation. A forward with a smaller batch b uses rows [:b] (the conditional half when
    guidance stops), so dropping the unconditional rows needs no copy.
    """

    def __init__(self, n_layer: int, batch: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device):
        shape = (n_layer, batch, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len


class Attention(nn.Module):
    def __init__(self, cfg: LlamaGenGPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim, self.dim = cfg.n_head, cfg.n_kv_head, cfg.head_dim, cfg.dim
        self.wqkv = nn.Linear(cfg.dim, (cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim, bias=False)
        self.wo = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor, freqs_cis: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor] | None,
                start_pos: int) -> torch.Tensor:
        B, T, _ = x.shape
        kv_size = self.n_kv_head * self.head_dim
        qk, v = self.wqkv(x).split([self.dim + kv_size, kv_size], dim=-1)
        qk = apply_rotary_emb(qk.view(B, T, self.n_head + self.n_kv_head, self.head_dim), freqs_cis)  # q, k at once
        q, k = qk.transpose(1, 2).split([self.n_head, self.n_kv_head], dim=1)  # (B, nh, T, hd), (B, nkv, T, hd)
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, nkv, T, hd)
        end = start_pos + T
        if kv is not None:
            k_cache, v_cache = kv  # (B_cache, nkv, max_len, hd)
            k_cache[:B, :, start_pos:end] = k
            v_cache[:B, :, start_pos:end] = v
            k, v = k_cache[:B, :, :end], v_cache[:B, :, :end]  # (B, nkv, end, hd)
        if self.n_kv_head != self.n_head:
            k = k.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
            v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)
        if T == 1:  # one new query sees every cached key
            y = F.scaled_dot_product_attention(q, k, v)
        elif start_pos == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # a block of T queries at positions start_pos.. over end keys
            mask = torch.arange(end, device=x.device)[None, :] <= torch.arange(start_pos, end, device=x.device)[:, None]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.dim))


class FeedForward(nn.Module):
    tn_fused_linears = ("w1", "w3")  # read the same input: one packed product on the CPU (samplers.cpu_linear)

    def __init__(self, cfg: LlamaGenGPTConfig):
        super().__init__()
        self.w1 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w3 = nn.Linear(cfg.dim, cfg.ffn_hidden, bias=False)
        self.w2 = nn.Linear(cfg.ffn_hidden, cfg.dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.__dict__.get("_tn_fused")
        h1, h3 = (self.w1(x), self.w3(x)) if fused is None else fused(x).chunk(2, dim=-1)
        return self.w2(F.silu(h1) * h3)  # SwiGLU


class TransformerBlock(nn.Module):
    def __init__(self, cfg: LlamaGenGPTConfig):
        super().__init__()
        self.attention, self.feed_forward = Attention(cfg), FeedForward(cfg)
        self.attention_norm, self.ffn_norm = RMSNorm(cfg.dim, cfg.norm_eps), RMSNorm(cfg.dim, cfg.norm_eps)

    def forward(self, x, freqs_cis, kv, start_pos):
        h = x + self.attention(self.attention_norm(x), freqs_cis, kv, start_pos)
        return h + self.feed_forward(self.ffn_norm(h))


class LabelEmbedder(nn.Module):
    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, dim)


class LlamaGenGPT(nn.Module):
    """Sequence = [class token] + image tokens in raster order; logits at position t predict image token t."""

    def __init__(self, cfg: LlamaGenGPTConfig):
        super().__init__()
        if cfg.dim % cfg.n_head or cfg.head_dim % 4 or cfg.n_head % cfg.n_kv_head:
            raise ValueError(f"dim {cfg.dim} must split into {cfg.n_head} heads with head_dim a multiple of 4 "
                             f"and n_head divisible by n_kv_head {cfg.n_kv_head}")
        self.config = cfg
        self.cls_embedding = LabelEmbedder(cfg.num_classes, cfg.dim)
        self.tok_embeddings = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.layers = nn.ModuleList(TransformerBlock(cfg) for _ in range(cfg.n_layer))
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps)
        self.output = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        # Not a checkpoint entry (the official model keeps it as a plain attribute); kept fp32 under .to(dtype).
        self.register_buffer("freqs_cis", self._rope_table(), persistent=False)

    def _rope_table(self) -> torch.Tensor:
        c = self.config
        return precompute_freqs_cis_2d(math.isqrt(c.block_size), c.head_dim, c.rope_base, c.cls_token_num)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        if self.freqs_cis.dtype != torch.float32:  # a dtype cast must not round the RoPE table
            self.freqs_cis = self._rope_table().to(self.freqs_cis.device)
        return self

    def set_block_size(self, block_size: int) -> None:
        """Change the square token grid the 2-D RoPE positions refer to (e.g. 256 for 16x16, 576 for 24x24)."""
        if math.isqrt(block_size) ** 2 != block_size:
            raise ValueError(f"block_size must be a square number of tokens, got {block_size}")
        self.config.block_size = block_size
        self.freqs_cis = self._rope_table().to(self.freqs_cis.device)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def new_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None,
                  device: torch.device | None = None) -> KVCache:
        """Allocate a KV cache for `batch` sequences of up to `max_len` positions (class token included)."""
        w = self.tok_embeddings.weight
        c = self.config
        return KVCache(c.n_layer, batch, c.n_kv_head, max_len, c.head_dim, dtype or w.dtype, device or w.device)

    def forward(self, tokens: torch.Tensor | None, class_ids: torch.Tensor | None = None,
                cache: KVCache | None = None, start_pos: int = 0, last_only: bool = False) -> torch.Tensor:
        """Logits (B, T_in, vocab) float32 (or (B, 1, vocab) if `last_only`).

        tokens (B, T) long image tokens, class_ids (B,) long (num_classes = null class). The input sequence is
        [class token if class_ids is given] + tokens, placed at positions start_pos.. (class token at 0).
        Without a cache this is the full causal forward of training: logits[:, t] predicts image token t.
        With a cache, keys/values are written at those positions and attention sees everything before them.
        """
        if tokens is None and class_ids is None:
            raise ValueError("forward needs image tokens (B, T), class_ids (B,), or both")
        parts = []
        if class_ids is not None:
            if start_pos != 0:
                raise ValueError("the class token sits at position 0; got class_ids with start_pos != 0")
            parts.append(self.cls_embedding.embedding_table(class_ids)[:, None])  # (B, 1, dim)
        if tokens is not None:
            parts.append(self.tok_embeddings(tokens))  # (B, T, dim)
        h = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        end = start_pos + h.shape[1]
        if end > self.freqs_cis.shape[0]:
            raise ValueError(f"position {end - 1} is past the model's {self.config.block_size} image tokens "
                             f"(+{self.config.cls_token_num} class token); call set_block_size for a larger grid")
        if cache is not None and (end > cache.max_len or h.shape[0] > cache.k.shape[1]):
            raise ValueError(f"KV cache of {cache.k.shape[1]}x{cache.max_len} too small for batch {h.shape[0]}, "
                             f"position {end}")
        freqs = self.freqs_cis[start_pos:end]
        for i, layer in enumerate(self.layers):
            h = layer(h, freqs, None if cache is None else (cache.k[i], cache.v[i]), start_pos)
        if last_only:
            h = h[:, -1:]
        return self.output(self.norm(h)).float()

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], **overrides) -> "LlamaGenGPT":
        """Build with the architecture inferred from `sd` (see llamagen_gpt_config_from_state_dict) and load it."""
        model = cls(llamagen_gpt_config_from_state_dict(sd, **overrides))  # may read a stored freqs_cis
        model.load_state_dict(_clean_state_dict(sd), strict=True)
        return model.eval()


def _clean_state_dict(sd: dict) -> dict:
    """Drop derived tensors some checkpoints carry (RoPE table, KV caches, masks); keep learned weights."""
    drop = [k for k in sd if k == "freqs_cis" or k == "causal_mask" or ".kv_cache." in k]
    if drop:
        log.info("ignoring non-weight checkpoint entries %s", drop[:4])
    return {k: v for k, v in sd.items() if k not in drop}


def _infer_n_head(dim: int, n_layer: int, gpt_model: str | None) -> int:
    if gpt_model in GPT_PRESETS and GPT_PRESETS[gpt_model][2] == dim:
        return GPT_PRESETS[gpt_model][1]
    for layers, heads, d in GPT_PRESETS.values():
        if (layers, d) == (n_layer, dim):
            return heads
    for layers, heads, d in GPT_PRESETS.values():  # a preset width at an unusual depth
        if d == dim:
            return heads
    log.warning("LlamaGen GPT dim %d x %d layers matches no official preset; assuming head_dim 64", dim, n_layer)
    return max(1, dim // 64)


def image_size_from_name(name: str | None) -> int | None:
    """256, 384 or 512 when a file name states it as every published c2i file does (c2i_B_256.pt), else None."""
    m = re.search(r"(?<![0-9])(256|384|512)(?![0-9])", os.path.basename(name or ""))
    return int(m.group(1)) if m else None


def llamagen_gpt_config_from_state_dict(sd: dict[str, torch.Tensor], args: object = None,
                                        n_head: int | None = None, block_size: int | None = None,
                                        cls_token_num: int | None = None, name: str | None = None) -> LlamaGenGPTConfig:
    """Infer the GPT config from tensor shapes; `args` is a training checkpoint's argparse.Namespace (optional).

    dim, vocab_size from `tok_embeddings.weight`; n_layer from `layers.*`; num_classes = class-table rows - 1;
    ffn_hidden from `w1`; n_head from the override, `args.gpt_model`, a stored `freqs_cis`, the preset table by
    (dim, n_layer), else dim // 64; block_size from the override, `args` (image_size // downsample_size)**2, a stored
    `freqs_cis`, the image size in the file `name` (c2i_B_256.pt: 256 px with the VQ-16 tokenizer, 16x16), else 576
    (24x24, the grid of the official bare-state-dict releases, c2i_XXL_384.pt and c2i_3B_384.pt). The rule that
    decided is logged.
    """
    if "cls_embedding.cap_proj.fc1.weight" in sd:
        raise ValueError("this is a text-conditional (t2i) LlamaGen checkpoint; only class-conditional (c2i) is supported")
    need = ("tok_embeddings.weight", "cls_embedding.embedding_table.weight", "layers.0.attention.wqkv.weight",
            "layers.0.feed_forward.w1.weight", "output.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"not a LlamaGen c2i GPT state dict: missing {missing}")
    vocab, dim = sd["tok_embeddings.weight"].shape
    n_layer = 0
    while f"layers.{n_layer}.attention.wqkv.weight" in sd:
        n_layer += 1
    a = vars(args) if isinstance(args, argparse.Namespace) else (args or {})
    stored = sd.get("freqs_cis")  # (cls + grid**2, head_dim // 2, 2) in some exports
    if cls_token_num is None:
        cls_token_num = int(a.get("cls_token_num", 1))
    if n_head is None:
        if a.get("gpt_model") in GPT_PRESETS:
            n_head = _infer_n_head(dim, n_layer, a["gpt_model"])
        elif stored is not None and stored.ndim == 3:
            n_head = dim // (2 * stored.shape[1])
        else:
            n_head = _infer_n_head(dim, n_layer, None)
    if dim % n_head:
        raise ValueError(f"n_head {n_head} does not divide dim {dim}")
    head_dim = dim // n_head
    qkv_rows = sd["layers.0.attention.wqkv.weight"].shape[0]
    n_kv_head = (qkv_rows - dim) // (2 * head_dim)
    if n_kv_head <= 0 or dim + 2 * n_kv_head * head_dim != qkv_rows:
        raise ValueError(f"wqkv has {qkv_rows} rows, inconsistent with dim {dim} and {n_head} heads")
    named = image_size_from_name(name)
    if block_size is not None:
        rule = "the loader's override"
    elif "image_size" in a and "downsample_size" in a:
        block_size, rule = (int(a["image_size"]) // int(a["downsample_size"])) ** 2, "the checkpoint's args"
    elif stored is not None and stored.ndim == 3:
        block_size, rule = stored.shape[0] - cls_token_num, "its stored RoPE table"
    elif named:
        block_size, rule = (named // 16) ** 2, f"the file name ({named} px with the VQ-16 tokenizer)"
    else:
        block_size, rule = 576, "the default of the bare releases (384 px with the VQ-16 tokenizer)"
    grid = math.isqrt(block_size)
    log.info("LlamaGen GPT %s: %dx%d image tokens, from %s", os.path.basename(name or ""), grid, grid, rule)
    return LlamaGenGPTConfig(
        dim=dim, n_layer=n_layer, n_head=n_head, n_kv_head=n_kv_head,
        ffn_hidden=sd["layers.0.feed_forward.w1.weight"].shape[0], vocab_size=vocab,
        num_classes=sd["cls_embedding.embedding_table.weight"].shape[0] - 1,
        cls_token_num=cls_token_num, block_size=block_size,
    )


def load_llamagen_gpt(path: str | os.PathLike, device: str | torch.device = "cpu",
                      dtype: torch.dtype = torch.float32, n_head: int | None = None,
                      block_size: int | None = None) -> LlamaGenGPT:
    """Load an official c2i GPT file: training checkpoint {"model", "optimizer", "steps", "args"} or bare dict.

    As the official sampler, the "model" entry is used (then "module", "state_dict"); `args` supplies the preset
    name and image/downsample size when present.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path!r}")
    if path.lower().endswith(SAFETENSORS_SUFFIXES):
        obj = _load_safetensors(path)[0]
    else:
        obj = _load_pickle(path, [argparse.Namespace])
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, expected a dict")
    args = obj.get("args")
    for key in ("model", "module", "state_dict"):  # not "ema": the official sampler reads "model"
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    sd = _strip_prefixes({k: v for k, v in obj.items() if isinstance(v, torch.Tensor)})
    model = LlamaGenGPT.from_state_dict(sd, args=args, n_head=n_head, block_size=block_size, name=path)
    return model.to(device=device, dtype=dtype)
