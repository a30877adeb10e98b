"""Small IMAGE helpers for looking at batches of tiny demo images."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import CATEGORY, NodeInputError


class TN_ImageGrid:
    TITLE = "TN Image Grid"
    DESCRIPTION = "Tiles an IMAGE batch into one image (row-major), optionally enlarged with nearest-neighbour pixels."
    CATEGORY = f"{CATEGORY}/image"
    FUNCTION = "grid"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("One image holding the whole batch.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "images": ("IMAGE", {"tooltip": "A batch of images of one size."}),
            "columns": ("INT", {"default": 8, "min": 1, "max": 256, "tooltip": "Images per row."}),
            "scale": ("INT", {"default": 4, "min": 1, "max": 32, "tooltip": "Integer enlargement (nearest neighbour), e.g. 4 turns 32 px into 128 px."}),
            "padding": ("INT", {"default": 2, "min": 0, "max": 64, "tooltip": "White pixels between tiles (after enlargement)."}),
        }}

    def grid(self, images, columns, scale, padding):
        if images.ndim != 4:
            raise NodeInputError("TN_ImageGrid", "images", f"expected an IMAGE batch [B,H,W,C], got {list(images.shape)}")
        x = images.movedim(-1, 1)
        if scale > 1:
            x = F.interpolate(x, scale_factor=scale, mode="nearest")
        b, c, h, w = x.shape
        cols = min(columns, b)
        rows = -(-b // cols)
        x = torch.cat([x, torch.ones(rows * cols - b, c, h, w, dtype=x.dtype)]) if rows * cols > b else x
        x = F.pad(x, (0, padding, 0, padding), value=1.0)  # (B, C, h+p, w+p)
        x = x.reshape(rows, cols, c, h + padding, w + padding).permute(2, 0, 3, 1, 4)  # (C, rows, h+p, cols, w+p)
        x = x.reshape(c, rows * (h + padding), cols * (w + padding))
        return (x.movedim(0, -1).unsqueeze(0),)


NODES = [TN_ImageGrid]
