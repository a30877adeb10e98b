"""The procedural glyph dataset: determinism, value range, class balance, legibility."""
import pytest
import torch

from demo.glyphs import CLASS_NAMES, IMAGE_SIZE, make_batch, render


def test_same_seed_same_images_and_distinct_seeds_differ():
    x1, y1 = make_batch(30, seed=7)
    x2, y2 = make_batch(30, seed=7)
    x3, y3 = make_batch(30, seed=8)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert (x1 - x3).abs().mean() > 0.05
    assert not torch.equal(y1, y3)  # the label order is seeded too


def test_shape_dtype_range():
    x, y = make_batch(25, seed=0)
    assert x.shape == (25, 3, IMAGE_SIZE, IMAGE_SIZE) and x.dtype == torch.float32
    assert y.shape == (25,) and y.dtype == torch.long
    assert x.min() >= 0 and x.max() <= 1
    assert len(CLASS_NAMES) == 10


def test_class_balance_and_class_subset():
    _, y = make_batch(50, seed=3)
    assert torch.bincount(y, minlength=10).tolist() == [5] * 10
    _, y = make_batch(9, seed=3, classes=[2, 5, 7])
    assert torch.bincount(y, minlength=10)[[2, 5, 7]].tolist() == [3, 3, 3] and torch.isin(y, torch.tensor([2, 5, 7])).all()


def test_render_follows_labels_and_rejects_bad_ones():
    labels = torch.tensor([3, 3, 8])
    assert torch.equal(render(labels, 11), render(labels, 11))
    with pytest.raises(ValueError, match="0..9"):
        render(torch.tensor([10]), 0)
    with pytest.raises(ValueError, match="at least one class"):
        make_batch(4, 0, classes=[])


def test_every_glyph_stands_out_from_its_background():
    x, _ = make_batch(200, seed=5)
    lum = x.mean(1).flatten(1)  # (N, H*W)
    # A legible glyph: the brightest and darkest few percent of pixels differ clearly in luminance.
    spread = lum.quantile(0.97, dim=1) - lum.quantile(0.03, dim=1)
    assert spread.min() > 0.2
