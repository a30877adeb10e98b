"""Cheap previews of token generators: a linear map from a tokenizer's latent channels to RGB.

The idea is ComfyUI's Latent2RGB preview (a fixed per-model matrix from latent channels to colour), fitted here once
per tokenizer by least squares: random token maps are decoded once, the decoded images are area-pooled to the token
grid, and colour ~ latent @ weight + bias is solved with a small ridge term. A preview then
costs one (h*w, C) x (C, 3) product per image instead of a decoder pass.

- VAR: the latent is the running f_hat [B,Cvae,h,w] of next-scale prediction (Tian et al. 2024, Algorithm 2).
- LlamaGen: the latent is the looked-up code of every generated token [B,C,h,w]; tokens not generated yet are grey.
  Its map is fitted on single codes tiled 3x3 (the colour a code paints), which previews real images better.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

GREY = 0.5  # preview colour of positions not generated yet


class RGBProjection(NamedTuple):
    weight: torch.Tensor  # (C, 3) float32, CPU
    bias: torch.Tensor  # (3,) float32, CPU

    def __call__(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, C, h, w) -> preview images (B, h, w, 3) in 0..1, float32 on the CPU."""
        x = latent.detach().float().cpu().movedim(1, -1)  # (B, h, w, C)
        return (x @ self.weight + self.bias).clamp_(0, 1)


def fit_rgb_projection(latents: torch.Tensor, images: torch.Tensor, ridge: float = 1e-3) -> RGBProjection:
    """Least-squares map from latents (N, C, h, w) to images (N, 3, H, W) in [-1, 1], area-pooled to (h, w)."""
    N, C, h, w = latents.shape
    target = (F.adaptive_avg_pool2d(images.detach().float().cpu(), (h, w)) + 1) / 2  # (N, 3, h, w) in 0..1
    x = latents.detach().float().cpu().movedim(1, -1).reshape(-1, C)  # (N*h*w, C)
    x = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()  # last column: the bias
    y = target.movedim(1, -1).reshape(-1, 3).double()
    gram = x.T @ x
    gram += ridge * gram.diagonal().mean() * torch.eye(C + 1, dtype=gram.dtype)
    sol = torch.linalg.solve(gram, x.T @ y).float()  # (C + 1, 3)
    return RGBProjection(sol[:C].contiguous(), sol[C].contiguous())


def _fit_batch(channels: int, grid: int, max_batch: int = 64) -> int:
    """Enough random images for ~8 samples per fitted parameter (at least 2)."""
    return max(2, min(max_batch, math.ceil(8 * (channels + 1) / (grid * grid))))


@torch.no_grad()
def var_rgb_projection(vqvae, patch_nums, seed: int = 0) -> RGBProjection:
    """Fit the f_hat -> RGB preview map of a VAR multi-scale VQ-VAE (tokenizers.var_vqvae.VARVQVAE).

    Random token maps at every scale of `patch_nums` give f_hat values spread like a generation's (a sum of
    residuals over the scales); one batched decode at full resolution gives their colours.
    """
    g = torch.Generator().manual_seed(seed)
    device = vqvae.quantize.embedding.weight.device
    B = _fit_batch(vqvae.Cvae, patch_nums[-1])
    maps = [torch.randint(vqvae.vocab_size, (B, pn, pn), generator=g).to(device) for pn in patch_nums]
    f_hat = vqvae.indices_to_fhat(maps)
    return fit_rgb_projection(f_hat, vqvae.decode_fhat(f_hat))


@torch.no_grad()
def llamagen_rgb_projection(vq, grid: int | None = None, seed: int = 0) -> RGBProjection:
    """Fit the code -> RGB preview map of a LlamaGen VQ tokenizer (tokenizers.llamagen_vq.LlamaGenVQ).

    Each of a random set of codes is tiled 3x3 and decoded; the centre patch gives the code's own colour. (A fit on
    random token grids mostly learns the seams between unrelated codes and previews real images poorly.)
    """
    g = torch.Generator().manual_seed(seed)
    device = vq.quantize.embedding.weight.device
    n = min(vq.codebook_size, max(64, 8 * (vq.config.codebook_embed_dim + 1)))
    codes = torch.randperm(vq.codebook_size, generator=g)[:n].to(device)
    tiles = codes.view(-1, 1, 1).expand(-1, 3, 3)
    ds = vq.downsample
    centre = vq.decode_indices(tiles)[:, :, ds:2 * ds, ds:2 * ds]
    return fit_rgb_projection(vq.quantize.lookup(tiles[:, 1:2, 1:2]), centre)


def pad_raster(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """The first n raster tokens (B, n) -> a full (B, grid, grid) token map, token 0 where none is generated yet."""
    B, n = tokens.shape
    full = torch.zeros(B, grid * grid, dtype=torch.long, device=tokens.device)
    full[:, :n] = tokens
    return full.view(B, grid, grid)


@torch.no_grad()
def raster_preview(vq, proj: RGBProjection, tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """The first `n` raster tokens (B, n) of a grid x grid image -> previews (B, grid, grid, 3), the rest grey."""
    B, n = tokens.shape
    img = proj(vq.quantize.lookup(pad_raster(tokens, grid)))
    img.view(B, grid * grid, 3)[:, n:] = GREY
    return img
