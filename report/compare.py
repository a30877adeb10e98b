"""Side-by-side comparison: a labelled image grid (one row per branch) and a table of measured run statistics.

Pure torch + Pillow (no ComfyUI), so the layout and the numbers are unit-tested; nodes/compare.py is the adapter.
Images are [B,H,W,3] float in 0..1, as ComfyUI's IMAGE.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .stats import RunStats

COLUMNS = ("branch", "images", "network evals / image", "sequential passes", "steps or tokens", "wall s", "ms / image",
           "judge accuracy")


@dataclass
class Row:
    label: str
    images: torch.Tensor
    stats: RunStats | None = None
    judge_accuracy: float | None = None


def _font(size: int = 12):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: a scalable font
    except TypeError:
        return ImageFont.load_default()


def _text_size(font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text or " ")
    return right - left, bottom - top


def _pil(img: torch.Tensor):
    from PIL import Image
    arr = (img.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype("uint8")
    return Image.fromarray(arr)


def _tensor(pil) -> torch.Tensor:
    import numpy as np
    return torch.from_numpy(np.asarray(pil.convert("RGB"), dtype="float32") / 255.0).unsqueeze(0)


def fit(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize [B,H,W,3] to size (h, w): nearest when enlarging by an integer factor, area otherwise."""
    h, w = images.shape[1:3]
    if (h, w) == tuple(size):
        return images
    x = images.movedim(-1, 1).float()
    mode = "nearest" if size[0] % h == 0 and size[1] % w == 0 and size[0] >= h else "area"
    return F.interpolate(x, size=size, mode=mode).movedim(1, -1)


def labelled_grid(rows: list[Row], columns: int = 10, scale: int = 4, padding: int = 2, label_width: int = 0) -> torch.Tensor:
    """One IMAGE [1,H,W,3]: each row's images (up to `columns`; more wrap) after a label strip on the left.

    All rows are fitted to the first row's image size before the integer enlargement `scale`.
    """
    from PIL import Image, ImageDraw
    if not rows:
        raise ValueError("nothing to compare: no image rows")
    h, w = rows[0].images.shape[1:3]
    th, tw = h * scale, w * scale
    font = _font(max(10, min(16, th // 4)))
    lw = label_width or max(_text_size(font, r.label)[0] for r in rows) + 2 * padding + 8
    strips = []
    for r in rows:
        imgs = fit(r.images, (h, w))
        n = imgs.shape[0]
        lines = max(1, -(-n // columns))
        canvas = Image.new("RGB", (lw + columns * (tw + padding) + padding, lines * (th + padding) + padding), "white")
        draw = ImageDraw.Draw(canvas)
        _, text_h = _text_size(font, r.label)
        draw.text((padding + 4, padding + max(0, (th - text_h) // 2)), r.label, fill="black", font=font)
        for i in range(n):
            tile = _pil(imgs[i]).resize((tw, th), Image.NEAREST)
            canvas.paste(tile, (lw + padding + (i % columns) * (tw + padding), padding + (i // columns) * (th + padding)))
        strips.append(canvas)
    width = max(s.width for s in strips)
    out = Image.new("RGB", (width, sum(s.height for s in strips)), "white")
    y = 0
    for s in strips:
        out.paste(s, (0, y))
        y += s.height
    return _tensor(out)


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}".rstrip("0").rstrip(".") if digits and v != int(v) else f"{v:.0f}"
    return str(v)


def table_rows(rows: list[Row]) -> list[list[str]]:
    out = []
    for r in rows:
        s = r.stats
        if s is None or s.paradigm == "data":  # no stats, or real data: nothing was generated
            out.append([r.label, str(r.images.shape[0])] + ["n/a" if s is None else "-"] * 5 +
                       ["n/a" if r.judge_accuracy is None else f"{100 * r.judge_accuracy:.0f}%"])
            continue
        steps = f"{s.units} {s.unit}" + (f" ({s.tokens} tokens)" if s.tokens is not None and s.unit != "tokens" else "")
        out.append([r.label, str(s.batch), _fmt(round(s.network_evals, 2)), str(s.sequential_passes), steps,
                    f"{s.wall_seconds:.2f}", f"{1000 * s.wall_seconds / max(s.batch, 1):.1f}",
                    "n/a" if r.judge_accuracy is None else f"{100 * r.judge_accuracy:.0f}%"])
    return out


def markdown_table(rows: list[Row]) -> str:
    body = table_rows(rows)
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
    return "\n".join(lines)


def table_image(rows: list[Row], font_size: int = 14, padding: int = 6) -> torch.Tensor:
    """The table drawn as an IMAGE [1,H,W,3] (black on white, header shaded)."""
    from PIL import Image, ImageDraw
    font = _font(font_size)
    cells = [list(COLUMNS)] + table_rows(rows)
    widths = [max(_text_size(font, row[c])[0] for row in cells) + 2 * padding for c in range(len(COLUMNS))]
    line_h = max(_text_size(font, "Ag|")[1], font_size) + 2 * padding
    img = Image.new("RGB", (sum(widths) + 1, line_h * len(cells) + 1), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, img.width - 1, line_h], fill=(225, 225, 225))
    for ri, row in enumerate(cells):
        x = 0
        for ci, text in enumerate(row):
            draw.text((x + padding, ri * line_h + padding), text, fill="black", font=font)
            x += widths[ci]
        draw.line([0, (ri + 1) * line_h, img.width, (ri + 1) * line_h], fill=(160, 160, 160))
    x = 0
    for w in widths:
        draw.line([x, 0, x, img.height], fill=(160, 160, 160))
        x += w
    draw.line([img.width - 1, 0, img.width - 1, img.height], fill=(160, 160, 160))
    return _tensor(img)


@torch.no_grad()
def judge_accuracy(judge: torch.nn.Module, images: torch.Tensor, class_ids: list[int], image_size: int) -> float | None:
    """Fraction of images [B,H,W,3] the judge assigns to their requested class (unconditional ids < 0 are skipped)."""
    keep = [i for i, c in enumerate(class_ids) if c is not None and c >= 0]
    if not keep:
        return None
    x = fit(images[keep], (image_size, image_size)).movedim(-1, 1).float()
    param = next(judge.parameters())
    pred = judge(x.to(param.device, param.dtype)).argmax(dim=-1).cpu()
    return float((pred == torch.tensor([class_ids[i] for i in keep])).float().mean())
