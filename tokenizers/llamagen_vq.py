"""LlamaGen's image tokenizer (VQGAN-style, L2-normalised codebook), checkpoint-compatible with the official files.

Sun et al. 2024, "Autoregressive Model Beats Diffusion: Llama for Scalable Image Generation" (arXiv:2406.06525),
§2.2; the codebook lookup follows Yu et al. 2022 (ViT-VQGAN, arXiv:2110.04627) §3.2: latents and codes are
L2-normalised before the nearest-neighbour search AND the normalised code is what the decoder sees.
Parameter names match FoundationVision/LlamaGen `tokenizer/tokenizer_image/vq_model.py`, so
`vq_ds16_c2i.pt`, `vq_ds8_c2i.pt` and `vq_ds16_t2i.pt` load with strict=True.
"""
import argparse
import logging
import os
import pickle
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fast_conv import use_winograd

log = logging.getLogger(__name__)


@dataclass
class LlamaGenVQConfig:
    ch: int = 128
    encoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    decoder_ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_show_usage: bool = True  # official files carry a `quantize.codebook_used` buffer (65536 slots)
    codebook_used_len: int = 65536

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.encoder_ch_mult) - 1)


def _group_norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(32, c, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.norm1, self.conv1 = _group_norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.norm2, self.conv2 = _group_norm(c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = not torch.is_grad_enabled()  # inference: reuse the fresh norm / conv outputs (same arithmetic)
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return h.add_(skip) if inplace else skip + h


class AttnBlock(nn.Module):
    """Single-head spatial self-attention over all h*w positions (1x1-conv projections)."""

    def __init__(self, c: int):
        super().__init__()
        self.norm = _group_norm(c)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        q, k, v = (m(h).reshape(B, 1, C, H * W).transpose(-1, -2) for m in (self.q, self.k, self.v))  # (B, 1, HW, C)
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v, as the official bmm version
        return x + self.proj_out(h.transpose(-1, -2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad, as taming-transformers


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int):
        super().__init__()
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.conv_blocks = nn.ModuleList()
        c = ch
        for i, m in enumerate(ch_mult):
            level = nn.Module()
            level.res, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks):
                level.res.append(ResnetBlock(c, ch * m))
                c = ch * m
                if i == len(ch_mult) - 1:
                    level.attn.append(AttnBlock(c))
            if i != len(ch_mult) - 1:
                level.downsample = Downsample(c)
            self.conv_blocks.append(level)
        self.mid = nn.ModuleList([ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)])
        self.norm_out = _group_norm(c)
        self.conv_out = nn.Conv2d(c, z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.conv_blocks:
            for j, res in enumerate(level.res):
                h = res(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        for m in self.mid:
            h = m(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int, z_channels: int):
        super().__init__()
        c = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, c, 3, padding=1)
        self.mid = nn.ModuleList([ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)])
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(len(ch_mult))):  # conv_blocks[0] is the coarsest level
            level = nn.Module()
            level.res, level.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.res.append(ResnetBlock(c, ch * ch_mult[i]))
                c = ch * ch_mult[i]
                if i == len(ch_mult) - 1:
                    level.attn.append(AttnBlock(c))
            if i != 0:
                level.upsample = Upsample(c)
            self.conv_blocks.append(level)
        self.norm_out = _group_norm(c)
        self.conv_out = nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        for m in self.mid:
            h = m(h)
        for level in self.conv_blocks:
            for j, res in enumerate(level.res):
                h = res(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))


class VectorQuantizer(nn.Module):
    """Holds `embedding` (codebook_size, codebook_embed_dim); lookup in L2-normalised space."""

    def __init__(self, cfg: LlamaGenVQConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.codebook_size, cfg.codebook_embed_dim)
        if cfg.codebook_show_usage:  # training-time usage statistics; kept only so official files load strictly
            self.register_buffer("codebook_used", torch.zeros(cfg.codebook_used_len))

    def codebook(self) -> torch.Tensor:
        """(codebook_size, codebook_embed_dim), each row of unit L2 norm."""
        return F.normalize(self.embedding.weight, p=2, dim=-1)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, C, h, w) -> indices (B, h, w) of the nearest normalised code to each normalised latent."""
        B, C, h, w = z.shape
        zf = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, C), p=2, dim=-1)  # (B*h*w, C)
        e = self.codebook()
        # same expansion as the official code, |z|^2 + |e|^2 - 2 z.e, so near-ties resolve identically
        d = zf.pow(2).sum(1, keepdim=True) + e.pow(2).sum(1) - 2 * zf @ e.t()  # (B*h*w, codebook_size)
        return d.argmin(dim=1).view(B, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) -> normalised codes (B, C, h, w)."""
        return self.codebook()[indices].permute(0, 3, 1, 2).contiguous()


class LlamaGenVQ(nn.Module):
    """Image <-> token-grid tokenizer. Images are (B, 3, H, W) in [-1, 1]; H, W multiples of `downsample`."""

    def __init__(self, cfg: LlamaGenVQConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg.ch, cfg.encoder_ch_mult, cfg.num_res_blocks, cfg.z_channels)
        self.decoder = Decoder(cfg.ch, cfg.decoder_ch_mult, cfg.num_res_blocks, cfg.z_channels)
        self.quantize = VectorQuantizer(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.codebook_embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.codebook_embed_dim, cfg.z_channels, 1)
        use_winograd(self.decoder)  # CPU decode via Winograd 3x3 convs (tokenizers/fast_conv.py); tokens untouched

    @property
    def downsample(self) -> int:
        return self.config.downsample

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> indices (B, H/ds, W/ds) long."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        H, W = images.shape[-2:]
        ds = self.downsample
        if H % ds or W % ds:
            raise ValueError(
                f"image size {H}x{W} is not supported by this tokenizer: height and width must be multiples "
                f"of its downsample factor {ds} (e.g. {16 * ds}x{16 * ds} or {24 * ds}x{24 * ds})"
            )
        z = self.quant_conv(self.encoder(images.to(self.quant_conv.weight.dtype)))  # (B, C, h, w)
        return self.quantize.nearest(z)

    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """indices (B, h, w) long -> images (B, 3, h*ds, w*ds), roughly in [-1, 1] (not clamped, as official)."""
        if indices.ndim != 3:
            raise ValueError(f"expected indices of shape (B, h, w), got {tuple(indices.shape)}")
        lo, hi = int(indices.min()), int(indices.max())
        if lo < 0 or hi >= self.codebook_size:
            raise ValueError(f"token ids must lie in [0, {self.codebook_size - 1}], got range [{lo}, {hi}]")
        return self.decoder(self.post_quant_conv(self.quantize.lookup(indices.long())))

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "LlamaGenVQ":
        """Build with the architecture inferred from `sd` and load it strictly."""
        model = cls(llamagen_vq_config_from_state_dict(sd))
        model.load_state_dict(sd, strict=True)
        return model.eval()


def _level_channels(sd: dict, prefix: str) -> list[int]:
    """Output channels of each `{prefix}.conv_blocks.{i}` (in module order)."""
    out, i = [], 0
    while f"{prefix}.conv_blocks.{i}.res.0.conv1.weight" in sd:
        out.append(sd[f"{prefix}.conv_blocks.{i}.res.0.conv1.weight"].shape[0])
        i += 1
    return out


def llamagen_vq_config_from_state_dict(sd: dict[str, torch.Tensor]) -> LlamaGenVQConfig:
    """Infer ch, ch_mult, num_res_blocks, z_channels and the codebook shape from an official state dict."""
    need = ("encoder.conv_in.weight", "encoder.conv_out.weight", "quantize.embedding.weight", "decoder.conv_in.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"not a LlamaGen VQ state dict: missing {missing}")
    ch = sd["encoder.conv_in.weight"].shape[0]
    enc, dec = _level_channels(sd, "encoder"), _level_channels(sd, "decoder")[::-1]  # decoder stored coarse-first
    if not enc or not dec or any(c % ch for c in enc + dec):
        raise ValueError(f"cannot infer channel multipliers: encoder levels {enc}, decoder levels {dec}, ch {ch}")
    n_res = 0
    while f"encoder.conv_blocks.0.res.{n_res}.conv1.weight" in sd:
        n_res += 1
    n_embed, embed_dim = sd["quantize.embedding.weight"].shape
    used = sd.get("quantize.codebook_used")
    return LlamaGenVQConfig(
        ch=ch,
        encoder_ch_mult=tuple(c // ch for c in enc),
        decoder_ch_mult=tuple(c // ch for c in dec),
        num_res_blocks=n_res,
        z_channels=sd["encoder.conv_out.weight"].shape[0],
        codebook_size=n_embed,
        codebook_embed_dim=embed_dim,
        codebook_show_usage=used is not None,
        codebook_used_len=used.numel() if used is not None else 65536,
    )


def _read_checkpoint(path: str) -> object:
    """torch.load with weights_only=True (argparse.Namespace allow-listed) or safetensors; never runs code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"checkpoint file not found: {path!r}")
    if path.lower().endswith((".safetensors", ".sft")):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        m = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise ValueError(
            f"refused to load {path!r}: it references the Python global {m.group(1) if m else '(unknown)'}, "
            "which is not allow-listed (only tensors and argparse.Namespace are)"
        ) from e


def load_llamagen_vq(path: str | os.PathLike, device: str | torch.device = "cpu",
                     dtype: torch.dtype = torch.float32) -> LlamaGenVQ:
    """Load an official LlamaGen tokenizer file (`{"model": sd}`, `{"ema": sd}`, or bare / safetensors).

    A file with both reads "model", as the authors' sample_c2i.py does (and models.families, which the nodes use).
    """
    obj = _read_checkpoint(path)
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} holds a {type(obj).__name__}, expected a dict")  # noqa: TRY004
    for key in ("model", "ema", "state_dict"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    sd = {k.removeprefix("module."): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    return LlamaGenVQ.from_state_dict(sd).to(device=device, dtype=dtype)
