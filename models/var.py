"""VAR transformer (Tian et al. 2024, "Visual Autoregressive Modeling: Scalable Image Generation via
Next-Scale Prediction", arXiv:2404.02905), parameter-compatible with the published `var_d{16,20,24,30,36}.pth`.

A GPT-2 style decoder over the concatenation of all K token maps (L = sum pn^2 tokens) with a block-causal
mask (a token sees every token of its own and coarser scales). Each block is conditioned on the class via
AdaLN (Peebles & Xie 2023): SiLU -> Linear(C, 6C) gives (gamma1, gamma2, scale1, scale2, shift1, shift2);
the 512 px model shares one Linear across blocks plus a per-block learned offset `ada_gss`. Attention
L2-normalises q and k with a learned per-head temperature exp(min(s, log 100)) (Sec. 4 of the paper).
"""
import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

# official scale schedules, keyed by the total token count L
_PATCH_NUMS_BY_L = {680: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 2240: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)}


@dataclass
class VARConfig:
    vocab_size: int = 4096
    Cvae: int = 32
    num_classes: int = 1000  # class_emb has num_classes + 1 rows; the last is the null (unconditional) class
    depth: int = 16
    embed_dim: int = 1024  # 64 * depth in every released model
    num_heads: int = 16  # = depth in every released model
    mlp_hidden: int = 4096  # 4 * embed_dim
    patch_nums: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)
    shared_aln: bool = False  # True for the 512 px d36 model
    attn_l2_norm: bool = True
    norm_eps: float = 1e-6


class SelfAttention(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        C, H = cfg.embed_dim, cfg.num_heads
        self.num_heads, self.head_dim, self.l2_norm = H, C // H, cfg.attn_l2_norm
        if self.l2_norm:
            self.scale = 1.0
            self.scale_mul_1H11 = nn.Parameter(torch.full((1, H, 1, 1), 4.0).log())
            self.max_scale_mul = math.log(100.0)  # clamp_max casts it to the float32 of the official torch.log(100)
        else:
            self.scale = 0.25 / math.sqrt(self.head_dim)
        self.mat_qkv = nn.Linear(C, 3 * C, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(C)), nn.Parameter(torch.zeros(C))
        self.register_buffer("zero_k_bias", torch.zeros(C))
        self.proj = nn.Linear(C, C)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None,
                kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0) -> torch.Tensor:
        """x [B,l,C] -> [B,l,C]. With `kv_cache` (two preallocated [B,H,L,hd] buffers) the new keys/values are
        written at positions start:start+l and the queries attend to positions 0:start+l."""
        B, l, C = x.shape
        bias = torch.cat((self.q_bias, self.zero_k_bias, self.v_bias))
        packed = self.mat_qkv.__dict__.get("_tn_packed")  # set inside samplers.cpu_linear.packed_linears
        qkv = F.linear(x, self.mat_qkv.weight, bias) if packed is None else packed(x, bias)
        qkv = qkv.view(B, l, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x (B, H, l, hd)
        if self.l2_norm:
            q = F.normalize(q, dim=-1).mul(self.scale_mul_1H11.clamp_max(self.max_scale_mul).exp())
            k = F.normalize(k, dim=-1)
        if kv_cache is not None:
            k_buf, v_buf = kv_cache
            k_buf[:, :, start:start + l] = k
            v_buf[:, :, start:start + l] = v
            k, v = k_buf[:, :, :start + l], v_buf[:, :, :start + l]  # (B, H, start+l, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=self.scale)  # (B, H, l, hd)
        return self.proj(y.transpose(1, 2).reshape(B, l, C))


class FFN(nn.Module):
    def __init__(self, C: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(C, hidden), nn.Linear(hidden, C)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(gelu_tanh(self.fc1(x), inplace=True))


_GELU_C = 2 * math.sqrt(2 / math.pi)
_GELU_CHUNK = 1 << 17  # elements per pass on the CPU route: 512 KB of float32, so each chunk stays in cache


def gelu_tanh(x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """GELU, tanh approximation (the official nn.GELU(approximate="tanh")); `inplace` may overwrite x.

    For float32 CPU inference it is computed as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), which equals
    0.5 x (1 + tanh(u)) exactly in real arithmetic, in cache-sized chunks; from 16 rows of VAR-d16's 4096-wide
    hidden layer up that is about 1.2-1.7x faster than torch's CPU kernel (whose tanh is the slow part). In float32
    the two differ by at most ~5e-7 and are equally close to a float64 reference. Anything else (autograd, CUDA,
    half precision, fewer than 64k elements) uses F.gelu.
    """
    if (torch.is_grad_enabled() or x.device.type != "cpu" or x.dtype != torch.float32
            or x.numel() < _GELU_CHUNK // 2):  # a few rows: torch's one kernel call costs less than five
        return F.gelu(x, approximate="tanh")
    out = x if inplace and x.is_contiguous() else x.clone(memory_format=torch.contiguous_format)
    flat = out.view(-1)
    buf = torch.empty(min(_GELU_CHUNK, flat.numel()))
    for s in range(0, flat.numel(), _GELU_CHUNK):
        c = flat[s:s + _GELU_CHUNK]
        t = buf[:c.numel()]
        torch.mul(c, c, out=t)
        t.mul_(0.044715 * _GELU_C).add_(_GELU_C).mul_(c)
        c.mul_(t.sigmoid_())
    return out


class AdaLNSelfAttn(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        C = self.C = cfg.embed_dim
        self.shared_aln = cfg.shared_aln
        self.attn, self.ffn = SelfAttention(cfg), FFN(C, cfg.mlp_hidden)
        self.ln_wo_grad = nn.LayerNorm(C, eps=cfg.norm_eps, elementwise_affine=False)
        if self.shared_aln:
            self.ada_gss = nn.Parameter(torch.zeros(1, 1, 6, C))
        else:
            self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def adaln(self, cond: torch.Tensor) -> torch.Tensor:
        """Class embedding [B,C] (or the shared projection [B,1,6,C]) -> AdaLN params [B,1,6,C] ordered
        (gamma1, gamma2, scale1, scale2, shift1, shift2)."""
        return self.ada_gss + cond if self.shared_aln else self.ada_lin(cond).view(-1, 1, 6, self.C)

    def forward(self, x: torch.Tensor, ada: torch.Tensor, attn_bias: torch.Tensor | None = None,
                kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0) -> torch.Tensor:
        gamma1, gamma2, scale1, scale2, shift1, shift2 = ada.unbind(2)  # 6 x (B, 1, C)
        x = x + self.attn(self.ln_wo_grad(x).mul(scale1 + 1).add_(shift1), attn_bias, kv_cache, start).mul_(gamma1)
        return x + self.ffn(self.ln_wo_grad(x).mul(scale2 + 1).add_(shift2)).mul(gamma2)


class AdaLNBeforeHead(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.C = cfg.embed_dim
        self.ln_wo_grad = nn.LayerNorm(self.C, eps=cfg.norm_eps, elementwise_affine=False)
        self.ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(self.C, 2 * self.C))

    def adaln(self, cond: torch.Tensor) -> torch.Tensor:
        return self.ada_lin(cond).view(-1, 1, 2, self.C)  # (B, 1, 2, C): scale, shift

    def forward(self, x: torch.Tensor, ada: torch.Tensor) -> torch.Tensor:
        scale, shift = ada.unbind(2)
        return self.ln_wo_grad(x).mul(scale + 1).add_(shift)


DERIVED_BUFFERS = ("lvl_1L", "attn_bias_for_masking", "zero_k_bias")  # functions of the config, not weights


def _keep_derived_buffers(module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook of VAR: the derived buffers always keep the values the config gives them.

    Official files store them (same values), stripped files may lack them, and a damaged copy must not leak into
    the computation (e.g. a mask averaged into NaN by an EMA of all buffers).
    """
    for name, buf in module.named_buffers():
        if name.endswith(DERIVED_BUFFERS):
            state_dict[prefix + name] = buf.detach().clone()


class VAR(nn.Module):
    def __init__(self, cfg: VARConfig):
        super().__init__()
        self.cfg = cfg
        C, pns = cfg.embed_dim, cfg.patch_nums
        self.patch_nums, self.num_classes = tuple(pns), cfg.num_classes
        self.L, self.first_l = sum(pn * pn for pn in pns), pns[0] ** 2
        self.word_embed = nn.Linear(cfg.Cvae, C)
        self.class_emb = nn.Embedding(cfg.num_classes + 1, C)
        self.pos_start = nn.Parameter(torch.zeros(1, self.first_l, C))
        self.pos_1LC = nn.Parameter(torch.zeros(1, self.L, C))
        self.lvl_embed = nn.Embedding(len(pns), C)
        self.shared_ada_lin = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C)) if cfg.shared_aln else nn.Identity()
        self.blocks = nn.ModuleList([AdaLNSelfAttn(cfg) for _ in range(cfg.depth)])
        self.head_nm = AdaLNBeforeHead(cfg)
        self.head = nn.Linear(C, cfg.vocab_size)
        lvl = torch.cat([torch.full((pn * pn,), i) for i, pn in enumerate(pns)]).view(1, self.L)
        self.register_buffer("lvl_1L", lvl)  # scale index of every token
        # block-causal mask, only used by the teacher-forcing forward (the KV cache makes it implicit)
        mask = torch.where(lvl.view(1, self.L, 1) >= lvl.view(1, 1, self.L), 0.0, -torch.inf)
        self.register_buffer("attn_bias_for_masking", mask.view(1, 1, self.L, self.L))
        self.register_load_state_dict_pre_hook(_keep_derived_buffers)

    @staticmethod
    def config_from_state_dict(sd: dict[str, torch.Tensor]) -> VARConfig:
        """Infer the architecture from tensor shapes of an official state dict."""
        try:
            depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
            C, Cvae = sd["word_embed.weight"].shape
            L, K = sd["pos_1LC"].shape[1], sd["lvl_embed.weight"].shape[0]
            hidden = sd["blocks.0.ffn.fc1.weight"].shape[0]
            V, ncls = sd["head.weight"].shape[0], sd["class_emb.weight"].shape[0] - 1
        except (KeyError, ValueError) as e:
            raise ValueError(f"not a VAR state dict (var_d*.pth layout): {e!r}") from None
        if "lvl_1L" in sd:  # exact: the number of tokens per scale is pn^2
            counts = torch.bincount(sd["lvl_1L"].flatten(), minlength=K).tolist()
            pns = tuple(math.isqrt(c) for c in counts)
        elif L in _PATCH_NUMS_BY_L:
            pns = _PATCH_NUMS_BY_L[L]
        else:
            raise ValueError(f"cannot infer patch_nums for L={L} tokens without the lvl_1L buffer; "
                             f"known L: {sorted(_PATCH_NUMS_BY_L)}")
        if len(pns) != K or sum(p * p for p in pns) != L:
            raise ValueError(f"patch_nums {pns} inconsistent with pos_1LC (L={L}) and lvl_embed ({K} scales)")
        l2 = "blocks.0.attn.scale_mul_1H11" in sd
        heads = sd["blocks.0.attn.scale_mul_1H11"].shape[1] if l2 else depth  # released models: heads = depth
        return VARConfig(vocab_size=V, Cvae=Cvae, num_classes=ncls, depth=depth, embed_dim=C, num_heads=heads,
                         mlp_hidden=hidden, patch_nums=pns, shared_aln="shared_ada_lin.1.weight" in sd,
                         attn_l2_norm=l2)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "VAR":
        """Build and strictly load from an official (bare) state dict."""
        model = cls(cls.config_from_state_dict(sd))
        model.load_state_dict(sd, strict=True)  # the derived buffers come from the model (_keep_derived_buffers)
        return model.eval().requires_grad_(False)

    # -- conditioning, computed once per generation --------------------------------------------------
    def conditioning(self, class_ids: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """class_ids [B] -> (class embedding [B,C], per-block AdaLN params depth x [B,1,6,C], head AdaLN [B,1,2,C])."""
        cond = self.class_emb(class_ids)
        shared = self.shared_ada_lin(cond).view(-1, 1, 6, self.cfg.embed_dim) if self.cfg.shared_aln else cond
        return cond, [b.adaln(shared) for b in self.blocks], self.head_nm.adaln(cond)

    def level_pos(self) -> torch.Tensor:
        """Level + absolute position embedding of all L tokens, [1,L,C]."""
        return self.lvl_embed(self.lvl_1L) + self.pos_1LC

    def new_kv_cache(self, batch: int, device=None, dtype=None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Preallocated per-block key/value buffers, depth x 2 x [batch, H, L, hd]."""
        p = self.pos_1LC
        shape = (batch, self.cfg.num_heads, self.L, self.cfg.embed_dim // self.cfg.num_heads)
        return [(torch.empty(shape, device=device or p.device, dtype=dtype or p.dtype),
                 torch.empty(shape, device=device or p.device, dtype=dtype or p.dtype)) for _ in self.blocks]

    def logits(self, h: torch.Tensor, head_ada: torch.Tensor) -> torch.Tensor:
        """Hidden states [B,l,C] -> float32 logits [B,l,V]."""
        return self.head(self.head_nm(h, head_ada)).float()

    def step(self, x: torch.Tensor, ada: list[torch.Tensor], head_ada: torch.Tensor,
             kv_cache: list[tuple[torch.Tensor, torch.Tensor]], start: int) -> torch.Tensor:
        """One scale: token inputs [B,l,C] occupying positions start:start+l -> logits [B,l,V]."""
        for blk, a, cache in zip(self.blocks, ada, kv_cache):
            x = blk(x, a, kv_cache=cache, start=start)
        return self.logits(x, head_ada)

    def forward(self, class_ids: torch.Tensor, x_BLCv_wo_first_l: torch.Tensor) -> torch.Tensor:
        """Teacher forcing without condition dropout.

        class_ids [B], next-scale inputs [B,L-first_l,Cvae] (VARVQVAE.teacher_forcing_input) -> logits [B,L,V].
        """
        B = class_ids.shape[0]
        cond, ada, head_ada = self.conditioning(class_ids)
        sos = cond.unsqueeze(1).expand(B, self.first_l, -1) + self.pos_start.expand(B, self.first_l, -1)
        x = torch.cat((sos, self.word_embed(x_BLCv_wo_first_l.to(sos.dtype))), dim=1)
        L = x.shape[1]
        x = x + self.level_pos()[:, :L]
        bias = self.attn_bias_for_masking[:, :, :L, :L].to(x.dtype)
        for blk, a in zip(self.blocks, ada):
            x = blk(x, a, attn_bias=bias)
        return self.logits(x, head_ada)


def load_var(path: str) -> VAR:
    """Load `var_d{depth}.pth` (bare state dict; .safetensors also accepted); config inferred from shapes."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    model = VAR.from_state_dict(sd)
    log.info("loaded VAR %s: %s", path, model.cfg)
    return model
