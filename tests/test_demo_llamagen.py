"""The bundled LlamaGen demo models (weights/tn_glyph_vq.safetensors, weights/tn_glyph_gpt.safetensors) and their
training scripts: official-layout loading with the metadata overrides the node loaders use, tokenizer fidelity
judged by the glyph judge, seeded generation, and 2-step smoke runs of both training scripts."""
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from demo.glyphs import CLASS_NAMES, make_batch
from models.judge import GlyphJudge, judge_accuracy
from models.llamagen_gpt import LlamaGenGPT, load_llamagen_gpt
from samplers.ar import generate_raster
from tokenizers.llamagen_vq import LlamaGenVQ, load_llamagen_vq
from training.common import chroma_ratio

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
VQ_PATH, GPT_PATH = WEIGHTS / "tn_glyph_vq.safetensors", WEIGHTS / "tn_glyph_gpt.safetensors"


@pytest.fixture(autouse=True, scope="module")
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: a second thread only adds synchronisation on a busy machine
    yield
    torch.set_num_threads(n)


def _meta(path: Path) -> dict[str, str]:
    with safe_open(str(path), "pt") as f:
        return f.metadata()


@pytest.fixture(scope="module")
def bundled() -> tuple[LlamaGenGPT, LlamaGenVQ]:
    meta = _meta(GPT_PATH)
    gpt = load_llamagen_gpt(GPT_PATH, n_head=int(meta["n_head"]), block_size=int(meta["block_size"])).eval()
    return gpt, load_llamagen_vq(VQ_PATH).eval()


def test_bundled_files_metadata_and_size():
    vq_meta, gpt_meta = _meta(VQ_PATH), _meta(GPT_PATH)
    assert vq_meta["tn_kind"] == "vq" and gpt_meta["tn_kind"] == "ar"
    for m in (vq_meta, gpt_meta):
        assert m["family"] == "llamagen" and m["num_classes"] == "10" and m["image_size"] == "32"
        assert json.loads(m["class_names"]) == CLASS_NAMES
        assert int(m["train_steps"]) > 0 and float(m["train_seconds"]) > 0
    assert vq_meta["downsample"] == "4" and gpt_meta["block_size"] == "64"
    assert gpt_meta["tokenizer"] == VQ_PATH.name
    for k in ("default_cfg_scale", "default_temperature", "default_top_k", "default_top_p"):
        float(gpt_meta[k])
    tensors = [v for p in (VQ_PATH, GPT_PATH) for v in load_file(p).values()]
    assert all(v.dtype == torch.float16 for v in tensors if v.is_floating_point())
    assert os.path.getsize(VQ_PATH) + os.path.getsize(GPT_PATH) <= 6 * 2**20


def test_bundled_models_load_in_official_layout(bundled):
    gpt, vq = bundled
    meta = _meta(GPT_PATH)
    assert vq.downsample == 4 and vq.config.codebook_embed_dim == 8
    assert gpt.config.vocab_size == vq.codebook_size
    assert (gpt.config.block_size, gpt.num_classes, gpt.config.n_head) == (64, 10, int(meta["n_head"]))
    # the same files through the plain state-dict constructors (strict key match)
    sd = load_file(GPT_PATH)
    again = LlamaGenGPT.from_state_dict(sd, n_head=int(meta["n_head"]), block_size=int(meta["block_size"]))
    assert torch.equal(again.output.weight, gpt.output.weight)
    assert LlamaGenVQ.from_state_dict(load_file(VQ_PATH)).codebook_size == vq.codebook_size


@torch.no_grad()
def test_vq_reconstructions_keep_their_class(bundled):
    _, vq = bundled
    judge = GlyphJudge.from_state_dict(load_file(WEIGHTS / "tn_glyph_judge.safetensors"))
    x, y = make_batch(50, 123_456_789)
    idx = vq.encode(x * 2 - 1)
    assert idx.shape == (50, 8, 8)
    rec = ((vq.decode_indices(idx) + 1) / 2).clamp(0, 1)
    psnr = (10 * torch.log10(1 / ((rec - x) ** 2).mean((1, 2, 3)))).mean().item()
    assert psnr > 18.0
    assert judge_accuracy(judge, rec, y) >= 0.9
    # hue survives the round trip (the earlier width-32, 256-code tokenizer gave 0.09: near-greyscale decodes)
    assert chroma_ratio(rec, x) >= 0.5


@torch.no_grad()
def test_seeded_generation_is_deterministic(bundled):
    gpt, vq = bundled
    meta = _meta(GPT_PATH)
    kw = {"cfg_scale": float(meta["default_cfg_scale"]), "temperature": float(meta["default_temperature"]),
          "top_k": int(meta["default_top_k"]), "top_p": float(meta["default_top_p"])}
    labels = torch.tensor([3, 7])
    a = generate_raster(gpt, labels, 64, generator=torch.Generator().manual_seed(5), **kw)
    b = generate_raster(gpt, labels, 64, generator=torch.Generator().manual_seed(5), **kw)
    c = generate_raster(gpt, labels, 64, generator=torch.Generator().manual_seed(6), **kw)
    assert a.shape == (2, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert 0 <= int(a.min()) and int(a.max()) < vq.codebook_size
    img = vq.decode_indices(a.view(2, 8, 8))
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


def test_training_scripts_smoke(tmp_path):
    from training import train_llamagen_gpt, train_llamagen_vq

    vq_out, gpt_out = tmp_path / "vq.safetensors", tmp_path / "gpt.safetensors"
    r = train_llamagen_vq.main(["--smoke", "--threads", "1", "--out", str(vq_out)])
    assert vq_out.exists() and r["psnr"] > 0
    vq_meta = _meta(vq_out)
    assert (vq_meta["tn_kind"], vq_meta["train_steps"]) == ("vq", "2")
    assert LlamaGenVQ.from_state_dict(load_file(vq_out)).downsample == 4
    r = train_llamagen_gpt.main(["--smoke", "--threads", "1", "--vq", str(vq_out), "--out", str(gpt_out)])
    meta = _meta(gpt_out)
    assert (meta["tn_kind"], meta["train_steps"], meta["tokenizer"]) == ("ar", "2", "vq.safetensors")
    gpt = LlamaGenGPT.from_state_dict(load_file(gpt_out), n_head=int(meta["n_head"]),
                                      block_size=int(meta["block_size"]))
    assert gpt.config.vocab_size == int(vq_meta["codebook_size"]) and gpt.num_classes == 10
    assert r["heldout_loss"] > 0
    # --init continues from that file: the weights it starts from are the saved ones, and the steps accumulate
    more = tmp_path / "gpt2.safetensors"
    train_llamagen_gpt.main(["--smoke", "--threads", "1", "--vq", str(vq_out), "--init", str(gpt_out), "--out", str(more)])
    assert (_meta(more)["train_steps"], _meta(more)["continued_from_steps"]) == ("4", "2")
    # --max-minutes bounds the whole run, tokenising included: a cap already spent by tokenising trains no step
    # (it used to bound the loop alone, and a negative remainder would have disabled it)
    capped = tmp_path / "gpt3.safetensors"
    train_llamagen_gpt.main(["--smoke", "--threads", "1", "--vq", str(vq_out), "--max-minutes", "1e-6",
                             "--out", str(capped)])
    assert _meta(capped)["train_steps"] == "0"
