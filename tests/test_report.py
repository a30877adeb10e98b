"""The comparison report (pure torch + Pillow): forward counting, the labelled grid, the table and judge accuracy."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from demo.glyphs import make_batch
from models.judge import GlyphJudge
from report.compare import Row, fit, judge_accuracy, labelled_grid, markdown_table, table_image
from report.stats import RunStats, count_forward

JUDGE = Path(__file__).resolve().parents[1] / "weights" / "tn_glyph_judge.safetensors"


def test_count_forward_counts_calls_and_rows_and_unhooks():
    lin = torch.nn.Linear(3, 2)
    with count_forward(lin) as c:
        lin(torch.zeros(8, 3))  # a cond+uncond pass for a batch of 4
        lin(torch.zeros(4, 1, 3))
    lin(torch.zeros(4, 3))  # after the block: not counted
    assert (c.calls, c.rows) == (2, 12)
    assert c.evals_per_image(4) == 3.0


def _solid(n, rgb, size=8):
    return torch.tensor(rgb, dtype=torch.float32).view(1, 1, 1, 3).expand(n, size, size, 3).clone()


def test_labelled_grid_places_every_tile_and_fits_sizes():
    rows = [Row("red", _solid(3, (1.0, 0.0, 0.0))), Row("blue, half size", _solid(3, (0.0, 0.0, 1.0), size=4))]
    g = labelled_grid(rows, columns=2, scale=2, padding=2)
    assert g.shape[0] == 1 and g.shape[-1] == 3
    tile = 8 * 2
    strip_h = 2 * (tile + 2) + 2  # 3 images in 2 columns wrap onto 2 lines
    assert g.shape[1] == 2 * strip_h
    img = g[0]
    # the last tile of each row sits on the second line in the first column, right of the label strip
    right = img.shape[1] - 1
    red_px = img[2 + tile + 2 + tile // 2, right - 2 - 2 * (tile + 2) + 2 + tile // 2]
    blue_px = img[strip_h + 2 + tile // 2, right - 2 - 2 * (tile + 2) + 2 + tile // 2]
    assert torch.allclose(red_px, torch.tensor([1.0, 0.0, 0.0]), atol=1 / 255)
    assert torch.allclose(blue_px, torch.tensor([0.0, 0.0, 1.0]), atol=1 / 255)
    assert fit(_solid(2, (0.5, 0.5, 0.5), size=6), (4, 4)).shape == (2, 4, 4, 3)  # area, non-integer factor


def test_table_reports_the_measured_numbers_and_na_without_stats():
    s = RunStats(label="DiT ddim", paradigm="diffusion", batch=4, network_evals=50.0, sequential_passes=25, units=25,
                 unit="denoising steps", wall_seconds=2.0)
    v = RunStats(label="VAR", paradigm="ar", batch=4, network_evals=12.0, sequential_passes=6, units=6, unit="scales",
                 tokens=130, wall_seconds=0.4)
    rows = [Row("DiT ddim", torch.zeros(4, 8, 8, 3), s, 0.75), Row("VAR", torch.zeros(4, 8, 8, 3), v), Row("real", torch.zeros(4, 8, 8, 3))]
    text = markdown_table(rows).splitlines()
    assert len(text) == 2 + 3
    assert text[2].split(" | ")[1:8] == ["4", "50", "25", "25 denoising steps", "2.00", "500.0", "75% |"]
    assert "6 scales (130 tokens)" in text[3] and text[3].endswith("n/a |")
    assert text[4].count("n/a") == 6
    data = RunStats(label="real", paradigm="data", batch=4, class_ids=[1, 2, 3, 4])
    cells = markdown_table([Row("real glyphs", torch.zeros(4, 8, 8, 3), data, 1.0)]).splitlines()[2].split(" | ")
    assert cells[1:] == ["4", "-", "-", "-", "-", "-", "100% |"], "real data: nothing generated, but the judge scores it"
    img = table_image(rows)
    assert img.shape[1] > 4 * 14 and img.min() < 0.2 and img.max() > 0.9  # text drawn on white


def test_judge_accuracy_on_real_glyphs_and_on_wrong_labels():
    judge = GlyphJudge.from_state_dict(load_file(str(JUDGE)))
    x, y = make_batch(60, seed=123)
    images = x.movedim(1, -1)
    assert judge_accuracy(judge, images, y.tolist(), 32) >= 0.95
    assert judge_accuracy(judge, images, ((y + 1) % 10).tolist(), 32) <= 0.1
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest").movedim(1, -1)
    assert judge_accuracy(judge, big, y.tolist(), 32) >= 0.95  # enlarged images are fitted back to 32 px
    assert judge_accuracy(judge, images, [-1] * 60, 32) is None  # unconditional rows are not scored
