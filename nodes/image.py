"""Small IMAGE helpers for looking at batches of tiny demo images."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .common import CATEGORY, NodeInputError, parse_int_list


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


class TN_GlyphImages:
    TITLE = "TN Glyph Images (demo data)"
    DESCRIPTION = ("Real samples of the procedural glyph dataset the bundled demo models were trained on (digits 0-9 in "
                   "varied styles, colours and backgrounds), deterministic from the seed: inputs for encode, inpainting and "
                   "completion, and the reference row of comparisons.")
    CATEGORY = f"{CATEGORY}/image"
    FUNCTION = "make"
    RETURN_TYPES = ("IMAGE", "TN_STATS")
    RETURN_NAMES = ("images", "stats")
    OUTPUT_TOOLTIPS = ("32x32 RGB images.", "Their classes, for TN Compare (a reference row the judge can score; no generation costs).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "class_indices": ("STRING", {"default": "0,1,2,3,4,5,6,7,8,9", "tooltip": "Comma-separated digits, one image each (repeated to batch_size)."}),
            "batch_size": ("INT", {"default": 10, "min": 1, "max": 4096, "tooltip": "Number of images."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2 ** 31 - 1, "tooltip": "Dataset seed (same seed, same images)."}),
        }}

    def make(self, class_indices, batch_size, seed):
        from ..demo.glyphs import CLASS_NAMES, render
        classes = parse_int_list("TN_GlyphImages", "class_indices", class_indices, 0, len(CLASS_NAMES) - 1, "digits")
        labels = [classes[i % len(classes)] for i in range(batch_size)]
        images = render(torch.tensor(labels, dtype=torch.long), seed)  # in the order given (make_batch shuffles)
        from ..report.stats import RunStats
        stats = RunStats(label="real glyphs (dataset)", paradigm="data", batch=batch_size, class_ids=labels,
                         class_names=list(CLASS_NAMES)).as_dict()
        return (images.movedim(1, -1).contiguous(), stats)


class TN_RectMask:
    TITLE = "TN Rectangle Mask"
    DESCRIPTION = "A MASK that is 1 (regenerate) inside a rectangle given in fractions of the image, 0 elsewhere."
    CATEGORY = f"{CATEGORY}/image"
    FUNCTION = "mask"
    RETURN_TYPES = ("MASK",)
    OUTPUT_TOOLTIPS = ("[1,H,W] mask; 1 = the area to regenerate.",)

    @classmethod
    def INPUT_TYPES(cls):
        f = lambda d, tip: ("FLOAT", {"default": d, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": tip})  # noqa: E731
        return {"required": {
            "width": ("INT", {"default": 32, "min": 1, "max": 16384, "tooltip": "Mask width in pixels (the image's)."}),
            "height": ("INT", {"default": 32, "min": 1, "max": 16384, "tooltip": "Mask height in pixels (the image's)."}),
            "left": f(0.0, "Left edge as a fraction of the width."),
            "top": f(0.5, "Top edge as a fraction of the height (0.5 = the bottom half)."),
            "right": f(1.0, "Right edge as a fraction of the width."),
            "bottom": f(1.0, "Bottom edge as a fraction of the height."),
        }}

    def mask(self, width, height, left, top, right, bottom):
        if right <= left or bottom <= top:
            raise NodeInputError("TN_RectMask", "right", f"the rectangle is empty: expected left < right and top < bottom, got "
                                 f"left {left}, right {right}, top {top}, bottom {bottom}")
        m = torch.zeros(1, height, width)
        m[:, round(top * height):round(bottom * height), round(left * width):round(right * width)] = 1.0
        return (m,)


NODES += [TN_GlyphImages, TN_RectMask]
