"""Autoregressive checkpoints: which published family a file belongs to, and loading it unchanged.

One place for the nodes, benchmarks and tests. Families are told apart by their key names:

| kind | family   | published files                                   | keys that identify it                          |
|------|----------|---------------------------------------------------|------------------------------------------------|
| vq   | llamagen | vq_ds16_c2i.pt, vq_ds8_c2i.pt, vq_ds16_t2i.pt      | quantize.embedding + encoder.conv_in, no quant_resi |
| vq   | var      | vae_ch160v4096z32.pth                             | the same plus quantize.quant_resi.*            |
| ar   | llamagen | c2i_B_256.pt ... c2i_3B_384.pt                     | tok_embeddings + layers.0.attention.wqkv       |
| ar   | var      | var_d16.pth ... var_d30.pth, var_d36.pth          | class_emb + blocks.0.attn.mat_qkv              |

LlamaGen training checkpoints may hold both "model" and "ema"; the authors' `sample_c2i.py` loads the tokenizer and
the GPT from "model", and so does everything here (`LLAMAGEN_ENTRY`).
"""
from __future__ import annotations

import argparse
import json
import os
from typing import NamedTuple

import torch

from .checkpoint import CheckpointError, load_state_dict
from .llamagen_gpt import LlamaGenGPT
from .var import VAR

try:  # inside ComfyUI the pack is a package
    from ..tokenizers.llamagen_vq import LlamaGenVQ
    from ..tokenizers.var_vqvae import VARVQVAE
except ImportError:  # the repo root on sys.path (tests, benchmarks, training)
    from tokenizers.llamagen_vq import LlamaGenVQ
    from tokenizers.var_vqvae import VARVQVAE

FAMILIES = {"llamagen": "LlamaGen (raster)", "var": "VAR (scale-wise)"}
LLAMAGEN_ENTRY = ("model",)  # read before "ema", as LlamaGen's sample_c2i.py
EXPECTED = {"vq": "a LlamaGen VQ (vq_ds16_c2i.pt) or VAR VQ-VAE (vae_ch160v4096z32.pth)",
            "ar": "a LlamaGen c2i GPT (c2i_*.pt) or VAR transformer (var_d*.pth)"}


class Loaded(NamedTuple):
    net: torch.nn.Module  # eval mode, float32, on the CPU
    family: str  # "llamagen" | "var"
    meta: dict[str, str]  # safetensors metadata, or {"training_args": json} of a training checkpoint


def detect_family(sd: dict, kind: str) -> str | None:
    """"llamagen", "var" or None: the family of a state dict of `kind` "vq" (tokenizer) or "ar" (transformer)."""
    if kind == "vq":
        if "quantize.embedding.weight" in sd and "encoder.conv_in.weight" in sd:
            return "var" if any(k.startswith("quantize.quant_resi") for k in sd) else "llamagen"
        return None
    if "tok_embeddings.weight" in sd and "layers.0.attention.wqkv.weight" in sd:
        return "llamagen"
    if "class_emb.weight" in sd and "blocks.0.attn.mat_qkv.weight" in sd:
        return "var"
    return None


def _what_it_is(sd: dict, kind: str) -> str:
    other = "ar" if kind == "vq" else "vq"
    if detect_family(sd, other):
        return (f"it looks like a {'transformer' if other == 'ar' else 'tokenizer'}: load it with "
                f"{'TN AR Model Loader' if other == 'ar' else 'TN VQ Loader'}")
    if "x_embedder.proj.weight" in sd:
        return "it looks like a DiT/SiT denoiser: load it with TN Denoiser Loader"
    return "unknown layout"


def read(path: str | os.PathLike, kind: str) -> tuple[dict, dict, str]:
    """(state dict, metadata, family) of a file of `kind`; CheckpointError naming what the file is instead."""
    sd, meta = load_state_dict(path, allow_globals=[argparse.Namespace], prefer=LLAMAGEN_ENTRY)
    family = detect_family(sd, kind)
    if family is None:
        raise CheckpointError(f"{os.path.basename(path)} is not {EXPECTED[kind]}: {_what_it_is(sd, kind)}")
    return sd, meta, family


def load_tokenizer(path: str | os.PathLike) -> Loaded:
    """A LlamaGen VQ or VAR multi-scale VQ-VAE file -> Loaded (architecture inferred from the shapes)."""
    sd, meta, family = read(path, "vq")
    try:
        net = (LlamaGenVQ if family == "llamagen" else VARVQVAE).from_state_dict(sd)
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{os.path.basename(path)}: {e}") from None
    return Loaded(net.eval().requires_grad_(False), family, meta)


def load_transformer(path: str | os.PathLike, image_size: int | None = None) -> Loaded:
    """A LlamaGen c2i GPT or VAR transformer file -> Loaded.

    LlamaGen: n_head / block_size from the file's metadata when it records them (bundled files), the preset and
    image size from a training checkpoint's args, else from the file name (c2i_B_256.pt); see
    llamagen_gpt_config_from_state_dict. `image_size` (pixels) overrides them all: a grid of image_size / the
    args' downsample_size (16 when not stored) tokens a side. VAR files fix their scales; image_size is ignored.
    """
    sd, meta, family = read(path, "ar")
    try:
        if family == "llamagen":
            overrides = {k: int(meta[k]) for k in ("n_head", "block_size") if k in meta}
            args = json.loads(meta["training_args"]) if "training_args" in meta else None
            if image_size:
                overrides["block_size"] = (int(image_size) // int((args or {}).get("downsample_size", 16))) ** 2
            net = LlamaGenGPT.from_state_dict(sd, args=args, name=os.fspath(path), **overrides)
        else:
            net = VAR.from_state_dict(sd)
    except (ValueError, RuntimeError) as e:
        raise CheckpointError(f"{os.path.basename(path)}: {e}") from None
    return Loaded(net.eval().requires_grad_(False), family, meta)
