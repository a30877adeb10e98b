"""Procedural digit glyphs: a font-free, seed-deterministic 10-class image dataset.

Each digit is drawn from one of four hand-made stroke skeletons (sans, classic, angular,
seven-segment) defined as polylines in a unit box, jittered per vertex, slanted, rotated,
scaled and placed at random, then rasterised analytically in torch: the coverage of a pixel
is its distance to the nearest stroke segment turned into a 1-pixel antialiasing ramp. The
background is a solid colour, a two-colour gradient, light noise or faint stripes, always on
the opposite side of a luminance gap from the glyph colour, so every glyph stays legible.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

CLASS_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
IMAGE_SIZE = 32
NUM_STYLES = 4

Polyline = list[tuple[float, float]]


def _arc(cx: float, cy: float, rx: float, ry: float, deg0: float, deg1: float, n: int = 12) -> Polyline:
    """Points on an elliptical arc; angles in degrees with y pointing down (90 = bottom)."""
    return [(cx + rx * math.cos(math.radians(deg0 + (deg1 - deg0) * i / n)),
             cy + ry * math.sin(math.radians(deg0 + (deg1 - deg0) * i / n))) for i in range(n + 1)]


def _seven_segment(segments: str) -> list[Polyline]:
    """Seven-segment display digit from its lit segment letters a..g."""
    tl, tr, ml, mr, bl, br = (0.25, 0.08), (0.75, 0.08), (0.25, 0.5), (0.75, 0.5), (0.25, 0.92), (0.75, 0.92)
    seg = {"a": [tl, tr], "b": [tr, mr], "c": [mr, br], "d": [bl, br], "e": [ml, bl], "f": [tl, ml], "g": [ml, mr]}
    return [seg[s] for s in segments]


def _skeletons() -> list[list[list[Polyline]]]:
    """skeletons[digit][style] = list of polylines in the unit box (x right, y down)."""
    sans = [
        [_arc(0.5, 0.5, 0.28, 0.42, 0, 360, 20)],
        [[(0.33, 0.25), (0.52, 0.08), (0.52, 0.92)]],
        [_arc(0.5, 0.3, 0.26, 0.22, 200, 390) + [(0.22, 0.92), (0.8, 0.92)]],
        [_arc(0.5, 0.29, 0.24, 0.21, 200, 450) + _arc(0.5, 0.71, 0.28, 0.21, 270, 520)[1:]],
        [[(0.65, 0.92), (0.65, 0.08), (0.18, 0.68), (0.85, 0.68)]],
        [[(0.75, 0.08), (0.3, 0.08), (0.27, 0.47)] + _arc(0.5, 0.66, 0.27, 0.26, 220, 520)],
        [_arc(0.72, 0.62, 0.47, 0.54, 270, 180, 8), _arc(0.5, 0.68, 0.25, 0.24, 0, 360, 16)],
        [[(0.2, 0.08), (0.8, 0.08), (0.42, 0.92)]],
        [_arc(0.5, 0.29, 0.22, 0.2, 0, 360, 16), _arc(0.5, 0.71, 0.26, 0.22, 0, 360, 16)],
        [_arc(0.5, 0.32, 0.25, 0.24, 0, 360, 16), [(0.75, 0.3), (0.72, 0.92)]],
    ]
    classic = [
        [_arc(0.5, 0.5, 0.24, 0.43, 0, 360, 20)],
        [[(0.33, 0.22), (0.52, 0.08), (0.52, 0.92)], [(0.32, 0.92), (0.72, 0.92)]],
        [_arc(0.5, 0.3, 0.27, 0.22, 190, 360, 10) + _arc(0.2, 0.3, 0.57, 0.62, 0, 90, 8)[1:] + [(0.82, 0.92)]],
        [[(0.22, 0.08), (0.75, 0.08), (0.45, 0.42)] + _arc(0.5, 0.67, 0.28, 0.25, 250, 520)[1:]],
        [[(0.45, 0.08), (0.2, 0.62), (0.82, 0.62)], [(0.66, 0.35), (0.66, 0.92)]],
        [[(0.78, 0.08), (0.32, 0.08), (0.28, 0.45)] + _arc(0.48, 0.65, 0.3, 0.27, 225, 510)],
        [[(0.68, 0.08), (0.3, 0.55)], _arc(0.5, 0.7, 0.24, 0.22, 0, 360, 16)],
        [[(0.2, 0.16), (0.2, 0.08), (0.8, 0.08), (0.45, 0.92)], [(0.35, 0.5), (0.72, 0.5)]],
        [_arc(0.5, 0.27, 0.2, 0.19, 0, 360, 16), _arc(0.5, 0.7, 0.27, 0.23, 0, 360, 16)],
        [_arc(0.5, 0.3, 0.24, 0.22, 0, 360, 16), _arc(0.28, 0.3, 0.46, 0.62, 0, 90, 8)],
    ]
    angular = [
        [_arc(0.5, 0.3, 0.25, 0.22, 180, 360, 6) + _arc(0.5, 0.7, 0.25, 0.22, 0, 180, 6) + [(0.25, 0.3)]],
        [[(0.38, 0.18), (0.5, 0.08), (0.5, 0.92)]],
        [[(0.22, 0.17), (0.4, 0.08), (0.65, 0.08), (0.78, 0.2), (0.75, 0.38), (0.22, 0.92), (0.8, 0.92)]],
        [[(0.22, 0.1), (0.72, 0.1), (0.78, 0.24), (0.7, 0.42), (0.45, 0.5), (0.72, 0.57), (0.8, 0.75),
          (0.7, 0.9), (0.22, 0.9)]],
        [[(0.7, 0.92), (0.7, 0.08), (0.2, 0.65), (0.85, 0.65)]],
        [[(0.78, 0.08), (0.28, 0.08), (0.25, 0.45), (0.6, 0.42), (0.78, 0.55), (0.78, 0.78), (0.62, 0.92),
          (0.22, 0.9)]],
        [[(0.65, 0.08), (0.35, 0.35), (0.25, 0.68)], _arc(0.5, 0.7, 0.25, 0.22, 180, 540, 8)],
        [[(0.22, 0.1), (0.8, 0.1), (0.55, 0.5), (0.45, 0.92)]],
        [_arc(0.5, 0.28, 0.22, 0.2, 90, 450, 6), _arc(0.5, 0.7, 0.27, 0.22, -90, 270, 6)],
        [_arc(0.5, 0.3, 0.25, 0.22, 0, 360, 6), [(0.75, 0.3), (0.75, 0.8), (0.6, 0.92), (0.35, 0.9)]],
    ]
    segments = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"]
    seven = [_seven_segment(s) for s in segments]
    return [[sans[d], classic[d], angular[d], seven[d]] for d in range(10)]


def _build_tables() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pack all skeletons into padded tables.

    Returns points [10*S, K, 2], segment endpoint indices [10*S, M, 2] and a point-valid mask
    [10*S, K]; padded segments join the far-away padding point to itself.
    """
    glyphs = [style for digit in _skeletons() for style in digit]
    all_pts, all_segs = [], []
    for polylines in glyphs:
        pts: list[tuple[float, float]] = []
        segs: list[tuple[int, int]] = []
        for line in polylines:
            base = len(pts)
            pts.extend(line)
            segs.extend((base + i, base + i + 1) for i in range(len(line) - 1))
        all_pts.append(pts)
        all_segs.append(segs)
    k = max(len(p) for p in all_pts) + 1  # +1: the shared padding point
    m = max(len(s) for s in all_segs)
    points = torch.full((len(glyphs), k, 2), 1e3)
    seg_idx = torch.full((len(glyphs), m, 2), k - 1, dtype=torch.long)
    valid = torch.zeros(len(glyphs), k, dtype=torch.bool)
    for g, (pts, segs) in enumerate(zip(all_pts, all_segs)):
        points[g, :len(pts)] = torch.tensor(pts)
        seg_idx[g, :len(segs)] = torch.tensor(segs)
        valid[g, :len(pts)] = True
    return points, seg_idx, valid


_POINTS, _SEGMENTS, _VALID = _build_tables()
_NUM_SEGMENTS = (_SEGMENTS[..., 0] != _POINTS.shape[1] - 1).sum(1).tolist()


def _uniform(g: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=g)


def _coverage(points: torch.Tensor, seg_idx: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased stroke coverage.

    points [N,K,2] in pixel units, seg_idx [N,M,2], width [N] in pixels -> alpha [N,size*size].
    """
    n, m = seg_idx.shape[:2]
    ends = torch.gather(points, 1, seg_idx.reshape(n, 2 * m, 1).expand(-1, -1, 2)).reshape(n, 1, m, 2, 2)
    ax, ay = ends[..., 0, 0], ends[..., 0, 1]  # (N, 1, M)
    abx, aby = ends[..., 1, 0] - ax, ends[..., 1, 1] - ay
    inv_len2 = 1.0 / (abx * abx + aby * aby).clamp_min(1e-8)
    coords = torch.arange(size, dtype=torch.float32) + 0.5
    py, px = (c.reshape(1, -1, 1) for c in torch.meshgrid(coords, coords, indexing="ij"))  # (1, P, 1)
    apx, apy = px - ax, py - ay  # (N, P, M)
    t = ((apx * abx + apy * aby) * inv_len2).clamp_(0, 1)  # projection onto the segment
    dx, dy = apx.sub_(t * abx), apy.sub_(t * aby)
    dist = (dx.mul_(dx) + dy.mul_(dy)).amin(-1).sqrt_()  # (N, P)
    return (width[:, None] / 2 + 0.5 - dist).clamp(0, 1)


def _backgrounds(g: torch.Generator, n: int, size: int, light: torch.Tensor) -> torch.Tensor:
    """Random backgrounds [N,3,size,size]; light [N] bool picks the bright colour range."""
    def colours() -> torch.Tensor:
        u = torch.rand(n, 3, generator=g)
        return torch.where(light[:, None], 0.62 + 0.38 * u, 0.33 * u)  # (N, 3)

    c1, c2 = colours(), colours()
    kind = torch.randint(0, 4, (n,), generator=g)
    theta = _uniform(g, n, 0, 2 * math.pi)
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size - 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    proj = xx[None] * theta.cos()[:, None, None] + yy[None] * theta.sin()[:, None, None]  # (N, H, W)
    ramp = (proj + 0.5).clamp(0, 1)[:, None]
    gradient = c1[:, :, None, None] * (1 - ramp) + c2[:, :, None, None] * ramp
    noise = c1[:, :, None, None] + 0.05 * torch.randn(n, 1, size, size, generator=g)
    freq, phase = _uniform(g, n, 6, 14), _uniform(g, n, 0, 2 * math.pi)
    stripes = c1[:, :, None, None] + 0.06 * torch.sin(freq[:, None, None] * proj * math.pi + phase[:, None, None])[:, None]
    solid = c1[:, :, None, None].expand(-1, -1, size, size)
    bg = torch.stack([solid, gradient, noise, stripes], 1)[torch.arange(n), kind]
    return bg.clamp(0, 1)


def render(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Render one glyph per label.

    labels [N] long in 0..9, seed int -> images [N,3,32,32] float in [0,1]; deterministic in (labels, seed).
    """
    labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        raise ValueError(f"labels must lie in 0..{len(CLASS_NAMES) - 1}, got {labels.tolist()}")
    n, size = labels.numel(), IMAGE_SIZE
    g = torch.Generator().manual_seed(int(seed))
    glyph = labels * NUM_STYLES + torch.randint(0, NUM_STYLES, (n,), generator=g)
    pts = _POINTS[glyph].clone()  # (N, K, 2) unit box
    pts = pts + torch.where(_VALID[glyph][..., None], 0.015 * torch.randn(pts.shape, generator=g), 0.0)
    height = _uniform(g, n, 17.0, 26.0)
    aspect, shear = _uniform(g, n, 0.8, 1.15), _uniform(g, n, -0.12, 0.35)
    angle = torch.deg2rad(_uniform(g, n, -12.0, 12.0))
    x, y = (pts[..., 0] - 0.5) * (height * aspect)[:, None], (pts[..., 1] - 0.5) * height[:, None]
    x = x - shear[:, None] * y  # italic slant: the top leans right (y points down)
    cos, sin = angle.cos()[:, None], angle.sin()[:, None]
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (size / 2 - 0.55 * height[:, None]).clamp_min(0.0)
    px = cos * x - sin * y + size / 2 + shift[:, :1]
    py = sin * x + cos * y + size / 2 + shift[:, 1:]
    pts = torch.where(_VALID[glyph][..., None], torch.stack([px, py], -1), 1e4)
    width = height * _uniform(g, n, 0.07, 0.15)
    light_bg = torch.rand(n, generator=g) < 0.5
    bg = _backgrounds(g, n, size, light_bg)
    u = torch.rand(n, 3, generator=g)
    fg = torch.where(light_bg[:, None], 0.33 * u, 0.62 + 0.38 * u)[:, :, None, None]  # opposite range to bg
    alpha = torch.zeros(n, size * size)
    for gid in glyph.unique().tolist():  # one skeleton at a time: no work on padded segments
        idx = (glyph == gid).nonzero().squeeze(1)
        for chunk in idx.split(512):
            segs = _SEGMENTS[gid, :_NUM_SEGMENTS[gid]].expand(len(chunk), -1, -1)
            alpha[chunk] = _coverage(pts[chunk], segs, width[chunk], size)
    alpha = alpha.reshape(n, 1, size, size)
    return bg * (1 - alpha) + fg * alpha


def make_batch(n: int, seed: int, classes: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced batch of glyphs.

    n images, labels cycling through `classes` (default all 10) in a seeded random order, so each
    class appears n // len(classes) or one more times. Returns (images [n,3,32,32] in [0,1], labels [n] long).
    """
    pool = torch.arange(len(CLASS_NAMES)) if classes is None else torch.as_tensor(list(classes), dtype=torch.long)
    if pool.numel() == 0:
        raise ValueError("classes must name at least one class index in 0..9")
    g = torch.Generator().manual_seed(int(seed) ^ 0x5EED)
    labels = pool[torch.arange(n) % pool.numel()][torch.randperm(n, generator=g)]
    return render(labels, seed), labels
