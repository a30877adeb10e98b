"""Inpainting masks: a ComfyUI-style image mask (1 = regenerate, at image resolution) -> what the token loops keep.

Raster (LlamaGen): a token is kept when less than half of its patch is to be regenerated (area average < 0.5).
VAR: the full-resolution keep mask (1 - mask) goes to `samplers.var.generate_var`, which resizes it per scale as the
official zero-shot edit demo does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def image_mask(mask: torch.Tensor, image_size: int, batch: int) -> torch.Tensor:
    """mask [H,W] or [B|1,H,W] of image_size x image_size -> float [B|1,H,W]; ValueError saying what was expected."""
    m = mask if mask.ndim == 3 else mask.unsqueeze(0)
    if m.ndim != 3 or tuple(m.shape[1:]) != (image_size, image_size):
        size = "x".join(str(v) for v in m.shape[1:][::-1])
        raise ValueError(f"has size {size} but the tokens are of {image_size}x{image_size} images; expected a "
                         f"{image_size}x{image_size} mask (1 = regenerate)")
    if m.shape[0] not in (1, batch):
        raise ValueError(f"has {m.shape[0]} masks for a batch of {batch}; expected 1 or {batch}")
    return m.float()


def raster_keep(mask: torch.Tensor, grid: int, batch: int, image_size: int) -> torch.Tensor:
    """Image mask (1 = regenerate) -> keep [B, grid * grid] bool in raster order (see the module docstring)."""
    m = image_mask(mask, image_size, batch)
    keep = F.adaptive_avg_pool2d(m.unsqueeze(1), (grid, grid))[:, 0].lt(0.5)  # (B|1, grid, grid)
    return keep.expand(batch, grid, grid).reshape(batch, grid * grid)


def var_keep(mask: torch.Tensor, batch: int, image_size: int) -> torch.Tensor:
    """Image mask (1 = regenerate) -> full-resolution keep mask [B,H,W] float for generate_var's token_mask."""
    return (1.0 - image_mask(mask, image_size, batch)).expand(batch, -1, -1)
