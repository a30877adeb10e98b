"""Bundled judge and autoencoder: they load from weights/, classify and reconstruct fresh glyphs; KID behaves."""
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from demo.glyphs import CLASS_NAMES, make_batch
from models.autoencoder import AutoencoderConfig, GlyphAutoencoder, autoencoder_config_from_state_dict
from models.judge import GlyphJudge, judge_accuracy, kid

WEIGHTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "weights")
JUDGE, AE = os.path.join(WEIGHTS, "tn_glyph_judge.safetensors"), os.path.join(WEIGHTS, "tn_glyph_ae.safetensors")
FRESH_SEED = 987_654_321  # not a training seed


def _meta(path: str) -> dict[str, str]:
    with safe_open(path, "pt") as f:
        return f.metadata()


@pytest.fixture(scope="module")
def fresh():
    return make_batch(200, FRESH_SEED)


@pytest.fixture(scope="module")
def judge():
    return GlyphJudge.from_state_dict(load_file(JUDGE))


@torch.no_grad()
def test_bundled_judge_classifies_fresh_glyphs(judge, fresh):
    meta = _meta(JUDGE)
    assert meta["tn_kind"] == "judge" and json.loads(meta["class_names"]) == CLASS_NAMES
    assert float(meta["heldout_accuracy"]) >= 0.98
    x, y = fresh
    assert judge(x).shape == (200, 10) and judge.features(x).shape[0] == 200
    assert judge_accuracy(judge, x, y) >= 0.95
    assert judge_accuracy(judge, x, (y + 1) % 10) < 0.1  # it really looks at the labels


@torch.no_grad()
def test_bundled_autoencoder_reconstructs(judge, fresh):
    meta = _meta(AE)
    assert meta["tn_kind"] == "autoencoder" and meta["latent_channels"] == "4" and meta["downsample"] == "4"
    assert len(json.loads(meta["latent_rgb_factors"])) == 4 and len(json.loads(meta["latent_rgb_bias"])) == 3
    ae = GlyphAutoencoder.from_state_dict(load_file(AE))
    x, y = fresh
    z = ae.encode(x)
    assert z.shape == (200, 4, 8, 8)
    assert 0.5 < (z * float(meta["scale_factor"])).std() < 2.0  # scale_factor makes latents ~unit variance
    rec = ae.decode(z)
    assert rec.shape == x.shape and rec.min() >= 0 and rec.max() <= 1
    psnr = 10 * torch.log10(1 / ((rec - x) ** 2).mean())
    assert psnr > 22
    assert judge_accuracy(judge, rec, y) >= 0.95


def test_autoencoder_config_from_state_dict_and_errors():
    cfg = AutoencoderConfig(channels=(8, 16), latent_channels=3)
    sd = GlyphAutoencoder(cfg).state_dict()
    assert autoencoder_config_from_state_dict(sd) == cfg
    ae = GlyphAutoencoder.from_state_dict(sd)
    assert ae.encode(torch.rand(2, 3, 16, 16)).shape == (2, 3, 4, 4)
    with pytest.raises(ValueError, match="missing"):
        autoencoder_config_from_state_dict({"foo": torch.zeros(1)})
    with pytest.raises(ValueError, match="divisible by 4"):
        ae.encode(torch.rand(1, 3, 10, 10))
    with pytest.raises(ValueError, match=r"expected a GlyphJudge"):
        GlyphJudge.from_state_dict(sd)


def test_kid_zero_for_same_distribution_positive_for_different():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 16, generator=g), torch.randn(400, 16, generator=g)
    shifted = torch.randn(400, 16, generator=g) * 1.5 + 0.5
    same, different = kid(a, b), kid(a, shifted)
    assert different > 0.1
    assert abs(same) < 0.05 * different
    # Unbiased estimator: drawn from one distribution, its mean over many splits is ~0 (not always >= 0).
    c = torch.randn(4000, 4, generator=g)
    assert abs(sum(kid(c[i:i + 200], c[i + 200:i + 400]) for i in range(0, 4000, 400)) / 10) < 0.02
    with pytest.raises(ValueError, match="equal d"):
        kid(a, a[:, :3])


def test_judge_accuracy_checks_lengths(judge):
    with pytest.raises(ValueError, match="as many labels"):
        judge_accuracy(judge, torch.rand(3, 3, 32, 32), torch.zeros(2, dtype=torch.long))
