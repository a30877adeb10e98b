"""DiT / SiT: a class-conditional transformer denoiser on latent patches, in the official parameter layout.

Peebles & Xie, "Scalable Diffusion Models with Transformers" (2023), https://arxiv.org/abs/2212.09748;
SiT (Ma et al. 2024, https://arxiv.org/abs/2401.08740) is the same network trained to predict a velocity.
Parameter and buffer names match facebookresearch/DiT `models.py` and willisma/SiT, so their published
files load with `strict=True`. The network is agnostic to what `t` means: DiT files were trained on DDPM
timesteps in [0, 999], SiT files on t in [0, 1] with t = 1 the data end.
"""
import logging
import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .checkpoint import CheckpointError

log = logging.getLogger(__name__)


@dataclass
class DiTConfig:
    input_size: int  # latent height = width
    patch_size: int
    in_channels: int
    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    num_classes: int = 1000
    class_dropout_prob: float = 0.1  # > 0 means the embedding table has a null (unconditional) row
    learn_sigma: bool = True  # DiT predicts [eps, variance interpolation]; SiT's second half is unused

    def __post_init__(self):
        if self.input_size % self.patch_size:
            raise ValueError(f"input_size {self.input_size} must be a multiple of patch_size {self.patch_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size {self.hidden_size} must be a multiple of 4 (2-D sin-cos embedding)")

    @property
    def out_channels(self) -> int:
        return 2 * self.in_channels if self.learn_sigma else self.in_channels

    @property
    def has_null_class(self) -> bool:
        """True when class id `num_classes` is the null label used for classifier-free guidance."""
        return self.class_dropout_prob > 0

    @property
    def num_patches(self) -> int:
        return (self.input_size // self.patch_size) ** 2


# The official model zoo (facebookresearch/DiT models.py, DiT paper Table 1); use as DiTConfig(**preset, ...).
_SIZES = {"S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16)}
DIT_PRESETS: dict[str, dict[str, int]] = {
    f"DiT-{name}/{p}": dict(depth=d, hidden_size=h, num_heads=nh, patch_size=p)
    for name, (d, h, nh) in _SIZES.items() for p in (2, 4, 8)
}
# num_heads is not stored in a state dict; the official configs use these.
_HEADS_BY_HIDDEN = {h: nh for d, h, nh in _SIZES.values()}


def timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) times t: [B] -> [B, dim], [cos | sin] halves (GLIDE order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    return F.pad(emb, (0, dim % 2))


def sincos_pos_embed_2d(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding (MAE) for a grid_size^2 raster of tokens: -> [grid_size^2, dim].

    First dim/2 channels encode the column index, the last dim/2 the row index, each as [sin | cos].
    Computed in float64 and rounded to float32, as the official code does with numpy.
    """
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)
    pos = torch.arange(grid_size, dtype=torch.float64)
    row, col = torch.meshgrid(pos, pos, indexing="ij")  # (g, g) each, token index = row * g + col

    def emb_1d(p: torch.Tensor) -> torch.Tensor:
        out = p.reshape(-1, 1) * omega[None]  # (g*g, dim/4)
        return torch.cat([out.sin(), out.cos()], dim=1)  # (g*g, dim/2)

    return torch.cat([emb_1d(col), emb_1d(row)], dim=1).float()  # (g*g, dim)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x [B, T, C] * (1 + scale [B, C]) + shift [B, C]."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class PatchEmbed(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.proj = nn.Conv2d(cfg.in_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, h*w, C)


class TimestepEmbedder(nn.Module):
    def __init__(self, hidden_size: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.embedding_table = nn.Embedding(cfg.num_classes + int(cfg.has_null_class), cfg.hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.embedding_table(y)


class Attention(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.n_head = cfg.num_heads
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.proj = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)  # (3, B, nh, T, hs)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Mlp(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        hidden = int(cfg.hidden_size * cfg.mlp_ratio)
        self.fc1 = nn.Linear(cfg.hidden_size, hidden)
        self.fc2 = nn.Linear(hidden, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning (DiT paper §3.2)."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        C = cfg.hidden_size
        self.norm1 = nn.LayerNorm(C, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(cfg)
        self.norm2 = nn.LayerNorm(C, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(cfg)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(C, 6 * C))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        C = cfg.hidden_size
        self.norm_final = nn.LayerNorm(C, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(C, cfg.patch_size**2 * cfg.out_channels)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(C, 2 * C))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
        return self.linear(modulate(self.norm_final(x), shift, scale))


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.config = cfg
        self.x_embedder = PatchEmbed(cfg)
        self.t_embedder = TimestepEmbedder(cfg.hidden_size)
        self.y_embedder = LabelEmbedder(cfg)
        # Fixed, but kept in the state dict as the official files carry it.
        grid = cfg.input_size // cfg.patch_size
        self.register_buffer("pos_embed", sincos_pos_embed_2d(cfg.hidden_size, grid).unsqueeze(0))  # (1, T, C)
        self.blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.depth)])
        self.final_layer = FinalLayer(cfg)
        if self.pos_embed.device.type != "meta":
            self.initialize_weights()

    def initialize_weights(self):
        """Training init of the DiT paper: Xavier linears, N(0, 0.02) embeddings, adaLN-Zero and output zeroed."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        w = self.x_embedder.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear over flattened patches
        nn.init.zeros_(self.x_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        for m in [b.adaLN_modulation[-1] for b in self.blocks] + [self.final_layer.adaLN_modulation[-1],
                                                                  self.final_layer.linear]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, p*p*C_out] tokens -> [B, C_out, H, W] latents."""
        B, p, c = x.shape[0], self.config.patch_size, self.config.out_channels
        g = self.config.input_size // p
        x = x.view(B, g, g, p, p, c)  # (B, h, w, p, q, C)
        return x.permute(0, 5, 1, 3, 2, 4).reshape(B, c, g * p, g * p)  # (B, C, h, p, w, q) -> (B, C, H, W)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x: [B, C, H, W] latents, t: [B] float times, y: [B] long class ids (num_classes = null if present).

        Returns [B, out_channels, H, W]: DiT's eps (first in_channels) then, if learn_sigma, its variance
        interpolation; SiT's velocity is likewise the first in_channels. Computed in the weights' dtype.
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (cfg.in_channels, cfg.input_size, cfg.input_size):
            raise ValueError(
                f"this DiT expects latents of shape [B, {cfg.in_channels}, {cfg.input_size}, {cfg.input_size}] "
                f"(latent size {cfg.input_size}), got {list(x.shape)}"
            )
        dtype = self.x_embedder.proj.weight.dtype
        x = self.x_embedder(x.to(dtype)) + self.pos_embed.to(dtype)  # (B, T, C)
        c = self.t_embedder(t.reshape(-1).expand(x.shape[0])) + self.y_embedder(y)  # (B, C)
        for block in self.blocks:
            x = block(x, c)
        return self.unpatchify(self.final_layer(x, c))  # (B, T, p*p*C_out) -> (B, C_out, H, W)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor], num_classes: int | None = None,
                        num_heads: int | None = None) -> "DiT":
        """Build a DiT whose architecture is inferred from `sd` and load it strictly (tensors are used in place)."""
        cfg = dit_config_from_state_dict(sd, num_classes=num_classes, num_heads=num_heads)
        log.info("DiT/SiT architecture inferred from the state dict: %s", cfg)
        with torch.device("meta"):
            model = cls(cfg)
        expected = model.state_dict()
        missing = [k for k in expected if k not in sd]
        unexpected = [k for k in sd if k not in expected]
        mismatched = [f"{k} {list(sd[k].shape)} != {list(v.shape)}" for k, v in expected.items()
                      if k in sd and sd[k].shape != v.shape]
        if missing or unexpected or mismatched:
            raise CheckpointError(
                f"expected a DiT/SiT checkpoint matching {cfg}; missing keys {missing[:5]}, "
                f"unexpected keys {unexpected[:5]}, shape mismatches {mismatched[:5]}"
            )
        model.load_state_dict(sd, strict=True, assign=True)
        return model.eval()


def dit_config_from_state_dict(sd: dict[str, torch.Tensor], num_classes: int | None = None,
                               num_heads: int | None = None) -> DiTConfig:
    """Infer a DiTConfig from tensor shapes of an official-layout DiT/SiT state dict.

    Class table: an official table has num_classes + 1 rows, the last the null class (ImageNet: 1001 rows).
    Without `num_classes` we assume that null row exists (every official and train.py checkpoint has one);
    pass `num_classes` (e.g. from a file's metadata) to decide: rows == num_classes means no null class.
    num_heads is not stored: the official rule (hidden 384 -> 6, 768 -> 12, 1024/1152 -> 16), else
    hidden // 64, unless given.
    """
    required = ["x_embedder.proj.weight", "pos_embed", "y_embedder.embedding_table.weight",
                "final_layer.linear.weight", "blocks.0.mlp.fc1.weight", "t_embedder.mlp.0.weight"]
    missing = [k for k in required if k not in sd]
    if missing:
        raise CheckpointError(
            f"expected a DiT/SiT checkpoint (keys like {required[:2]}); missing {missing}, "
            f"found keys such as {list(sd)[:5]}"
        )
    hidden, in_ch, p, p2 = sd["x_embedder.proj.weight"].shape
    n_tok = sd["pos_embed"].shape[-2]
    grid = math.isqrt(n_tok)
    if p != p2 or grid * grid != n_tok:
        raise CheckpointError(f"expected a DiT/SiT checkpoint: square patches and a square token grid, got "
                              f"patch {p}x{p2} and {n_tok} position embeddings")
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    rows = sd["y_embedder.embedding_table.weight"].shape[0]
    if num_classes is None:
        num_classes, has_null = rows - 1, True
    elif rows in (num_classes, num_classes + 1):
        has_null = rows == num_classes + 1
    else:
        raise CheckpointError(f"class table has {rows} rows, expected {num_classes} or {num_classes + 1} "
                              f"for num_classes={num_classes}")
    out_ch, rem = divmod(sd["final_layer.linear.weight"].shape[0], p * p)
    if rem or out_ch not in (in_ch, 2 * in_ch):
        raise CheckpointError(f"final layer has {sd['final_layer.linear.weight'].shape[0]} outputs, expected "
                              f"{p * p} x ({in_ch} or {2 * in_ch}) channels for a DiT/SiT checkpoint")
    if num_heads is None:
        num_heads = _HEADS_BY_HIDDEN.get(hidden, hidden // 64)
        if num_heads == 0 or hidden % num_heads:
            raise CheckpointError(f"cannot infer num_heads for hidden size {hidden}; pass num_heads")
    try:
        return DiTConfig(
            input_size=grid * p, patch_size=p, in_channels=in_ch, hidden_size=hidden, depth=depth,
            num_heads=num_heads, mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden,
            num_classes=num_classes, class_dropout_prob=0.1 if has_null else 0.0, learn_sigma=out_ch == 2 * in_ch,
        )
    except ValueError as e:
        raise CheckpointError(f"inconsistent DiT/SiT checkpoint: {e}") from e
