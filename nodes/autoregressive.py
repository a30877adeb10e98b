"""Autoregressive nodes: VQ tokenizers, the raster token decoder (LlamaGen) and the VAR scale-wise decoder.

Types: TN_VQ (a tokenizer), TN_AR_MODEL (a transformer), TN_TOKENS (token ids; a dict, see `tokens_dict`).
"""
from __future__ import annotations

import json

import torch

import comfy.model_management
import comfy.model_patcher

from ..models.checkpoint import CheckpointError
from ..models.families import FAMILIES, load_tokenizer, load_transformer
from ..report.stats import RunStats, Stopwatch, count_forward
from ..samplers.ar import generate_raster
from ..samplers.masks import raster_keep, var_keep
from ..samplers.var import generate_var
from ..tokenizers.preview import GREY, llamagen_rgb_projection, pad_raster, raster_preview, var_rgb_projection
from .common import (CATEGORY, DTYPES, HIDDEN_GRAPH, NodeInputError, Progress, choices, output_used, parse_int_list,
                     pick_dtype, resolve)

CAT = f"{CATEGORY}/autoregressive"
PROGRESS_INTERVAL = 0.1  # seconds between plain progress messages (the Cancel button is checked every token)


def _load(node, input_name, name, kind, image_size=None):
    """models.families' Loaded for a listed file, or a NodeInputError that says what the file is instead."""
    path = resolve(node, input_name, name, kind, kind)
    try:
        return load_tokenizer(path) if kind == "vq" else load_transformer(path, image_size)
    except CheckpointError as e:
        raise NodeInputError(node, input_name, str(e)) from None


class _Loaded:
    """A network managed by ComfyUI (loaded to the compute device on use, offloaded when idle)."""

    def __init__(self, net, family, name, meta):
        self.net, self.family, self.name, self.meta = net, family, name, meta
        self.patcher = comfy.model_patcher.ModelPatcher(net, load_device=comfy.model_management.get_torch_device(),
                                                        offload_device=comfy.model_management.unet_offload_device())

    def ready(self) -> torch.device:
        comfy.model_management.load_models_gpu([self.patcher])
        return self.patcher.load_device

    @property
    def dtype(self):
        return next(self.net.parameters()).dtype


class TNVQ(_Loaded):
    def __init__(self, *args):
        super().__init__(*args)
        self._rgb = {}  # preview projections, fitted on first use (tokenizers.preview)

    @property
    def codebook_size(self) -> int:
        return self.net.codebook_size if self.family == "llamagen" else self.net.vocab_size

    def patch_nums(self, image_size: int, given=None):
        if given is None and "patch_nums" in self.meta:
            given = json.loads(self.meta["patch_nums"])
        return self.net.resolve_patch_nums(image_size, given)

    def rgb_projection(self, grid):
        """The cheap preview map for a token grid (LlamaGen: its side; VAR: its patch_nums), fitted once."""
        key = tuple(grid) if isinstance(grid, (list, tuple)) else grid
        if key not in self._rgb:
            self.ready()
            fit = llamagen_rgb_projection if self.family == "llamagen" else var_rgb_projection
            self._rgb[key] = fit(self.net, grid)
        return self._rgb[key]

    def encode(self, images: torch.Tensor, patch_nums=None) -> dict:
        """IMAGE [B,H,W,3] in 0..1 -> TN_TOKENS (VAR: patch_nums from the argument, the file, or 256/512 defaults)."""
        device = self.ready()
        x = images.movedim(-1, 1).to(device, self.dtype) * 2 - 1
        with torch.no_grad():
            if self.family == "llamagen":
                return tokens_dict("llamagen", self.net.encode(x).cpu(), self)
            pns = self.patch_nums(x.shape[-1], patch_nums)
            return tokens_dict("var", [m.cpu() for m in self.net.encode(x, pns)], self)

    def decode(self, tokens: dict) -> torch.Tensor:
        """TN_TOKENS -> IMAGE [B,H,W,3] in 0..1; tokens a decoder already decoded with this tokenizer are not
        decoded again."""
        if tokens.get("image") is not None and tokens.get("decoded_by") is self.net:
            return tokens["image"]
        device = self.ready()
        with torch.no_grad():
            if tokens.get("f_hat") is not None:  # VAR with more_smooth: the image is the soft mix, not the ids
                img = self.net.decode_fhat(tokens["f_hat"].to(device, self.dtype))
            elif self.family == "llamagen":
                img = self.net.decode_indices(tokens["tokens"].to(device))
            else:
                img = self.net.decode_indices([m.to(device) for m in tokens["tokens"]])
        return ((img.float() + 1) / 2).clamp(0, 1).movedim(1, -1).cpu()


class TNARModel(_Loaded):
    @property
    def num_classes(self) -> int:
        return self.net.num_classes

    @property
    def vocab_size(self) -> int:
        return self.net.config.vocab_size if self.family == "llamagen" else self.net.cfg.vocab_size

    def class_names(self) -> list[str]:
        if "class_names" in self.meta:
            return json.loads(self.meta["class_names"])
        from .diffusion import imagenet_names
        return imagenet_names(self.num_classes)


def tokens_dict(family: str, tokens, vq: TNVQ, f_hat=None) -> dict:
    """TN_TOKENS: {"family", "tokens": [B,h,w] (llamagen) or K maps [B,pn,pn] (var), "f_hat", "codebook_size", "vq"}."""
    return {"family": family, "tokens": tokens, "f_hat": f_hat, "codebook_size": vq.codebook_size, "vq": vq.name}


def _final_image(result: dict, vq: TNVQ, decoded=None) -> dict:
    """Attach the decoded image to a decoder's tokens, so TN VQ Decode with the same tokenizer does not decode again."""
    image = vq.decode(result) if decoded is None else decoded
    return {**result, "image": image, "decoded_by": vq.net}


STATS_TOOLTIP = ("Measured run statistics (network evaluations, sequential passes, tokens, wall time, classes) for "
                 "TN Compare; decoding to pixels is not included in the wall time.")


def _ar_stats(label, paradigm, model, class_ids, calls, seconds, units, unit, tokens, extra) -> dict:
    batch = class_ids.shape[0]
    ids = [-1 if int(c) == model.num_classes else int(c) for c in class_ids]
    return RunStats(label=label, paradigm=paradigm, batch=batch, network_evals=calls.evals_per_image(batch),
                    sequential_passes=calls.calls, units=units, unit=unit, tokens=tokens, wall_seconds=seconds,
                    class_ids=ids, class_names=model.class_names(), extra=extra).as_dict()


def _dtype_input():
    return (list(DTYPES), {"default": "auto", "tooltip": "auto: fp32 on CPU, bf16/fp16 on GPUs. The tokenizer math stays exact in fp32."})


class TN_VQLoader:
    TITLE = "TN VQ Loader"
    DESCRIPTION = ("Loads a VQ tokenizer unchanged from the published file: LlamaGen vq_ds16_c2i.pt / vq_ds8_c2i.pt / "
                   "vq_ds16_t2i.pt, VAR vae_ch160v4096z32.pth, or a bundled demo tokenizer. Put files in models/vq.")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = ("TN_VQ",)
    OUTPUT_TOOLTIPS = ("The tokenizer (image <-> token ids).",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vq_name": (choices("vq", "vq"), {"tooltip": "Bundled tn_* tokenizers first, then files in models/vq."}),
                             "weight_dtype": _dtype_input()}}

    def load(self, vq_name, weight_dtype):
        net, family, meta = _load("TN_VQLoader", "vq_name", vq_name, "vq")
        dtype = torch.float32 if weight_dtype == "auto" else DTYPES[weight_dtype]  # exact codes unless asked otherwise
        return (TNVQ(net.to(dtype), family, vq_name, meta),)


class TN_ARModelLoader:
    TITLE = "TN AR Model Loader"
    DESCRIPTION = ("Loads an autoregressive transformer unchanged from the published file: LlamaGen class-conditional GPT "
                   "(c2i_B_256.pt ... c2i_3B_384.pt, training checkpoints or bare state dicts), VAR var_d16.pth ... var_d30.pth, "
                   "var_d36.pth, or a bundled demo model. The architecture is inferred from the tensor shapes. Put files in models/ar.")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = ("TN_AR_MODEL",)
    OUTPUT_TOOLTIPS = ("The transformer.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_name": (choices("ar", "ar"), {"tooltip": "Bundled tn_* models first, then files in models/ar."}),
                             "weight_dtype": _dtype_input()},
                "optional": {"image_size": (["auto", "256", "384", "512"], {"default": "auto", "tooltip": (
                    "LlamaGen only: the image size the GPT generates (its token grid and RoPE positions). auto = what "
                    "the file records (training args or metadata), else the size in its name (c2i_B_256.pt), else "
                    "384 as for the bare XXL / 3B releases.")})}}

    def load(self, model_name, weight_dtype, image_size="auto"):
        if image_size not in ("auto", "256", "384", "512"):
            raise NodeInputError("TN_ARModelLoader", "image_size", f"expected auto, 256, 384 or 512, got {image_size!r}")
        size = None if image_size == "auto" else int(image_size)
        net, family, meta = _load("TN_ARModelLoader", "model_name", model_name, "ar", size)
        dtype = pick_dtype(weight_dtype, comfy.model_management.get_torch_device())
        return (TNARModel(net.to(dtype), family, model_name, meta),)


class TN_VQEncode:
    TITLE = "TN VQ Encode"
    DESCRIPTION = "Encodes an IMAGE into token ids (LlamaGen: one token grid; VAR: the residual token maps of every scale)."
    CATEGORY = CAT
    FUNCTION = "encode"
    RETURN_TYPES = ("TN_TOKENS",)
    OUTPUT_TOOLTIPS = ("Token ids, for TN VQ Decode or as the tokens to keep in the AR decoders.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vq": ("TN_VQ", {"tooltip": "From TN VQ Loader."}),
                             "image": ("IMAGE", {"tooltip": "RGB images of a size the tokenizer supports."})},
                "optional": {"patch_nums": ("STRING", {"default": "auto", "tooltip": (
                    "VAR tokenizers only: the scales, e.g. 1,2,3,4,5,6,8,10,13,16. auto = from the tokenizer file, else "
                    "VAR's schedule for 256 or 512 px images (must end at image size / 16).")})}}

    def encode(self, vq, image, patch_nums="auto"):
        if image.ndim != 4 or image.shape[-1] != 3:
            raise NodeInputError("TN_VQEncode", "image", f"expected RGB images [B,H,W,3], got {list(image.shape)} "
                                 "(remove an alpha channel first)")
        h, w = image.shape[1:3]
        if vq.family == "var" and h != w:
            raise NodeInputError("TN_VQEncode", "image", f"VAR tokenizers take square images, got {w}x{h}")
        pns = None
        if vq.family == "var" and patch_nums.strip() not in ("", "auto"):
            pns = parse_int_list("TN_VQEncode", "patch_nums", patch_nums, 1, 1024, "scales (or auto)")
        try:
            return (vq.encode(image, pns),)
        except ValueError as e:
            raise NodeInputError("TN_VQEncode", "image", f"{vq.name}: {e}") from None


class TN_VQDecode:
    TITLE = "TN VQ Decode"
    DESCRIPTION = "Decodes token ids back into an IMAGE with the tokenizer that made them."
    CATEGORY = CAT
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("Decoded images in 0..1.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vq": ("TN_VQ", {"tooltip": "From TN VQ Loader: the tokenizer the tokens belong to."}),
                             "tokens": ("TN_TOKENS", {"tooltip": "From TN VQ Encode or an AR decoder."})}}

    def decode(self, vq, tokens):
        _check_tokens("TN_VQDecode", "tokens", tokens, vq)
        return (vq.decode(tokens),)


def _check_tokens(node, input_name, tokens, vq):
    if tokens["family"] != vq.family or tokens["codebook_size"] != vq.codebook_size:
        raise NodeInputError(node, input_name, f"these tokens come from {tokens['vq']} ({FAMILIES[tokens['family']]}, "
                             f"{tokens['codebook_size']} codes); expected tokens of {vq.name} ({FAMILIES[vq.family]}, {vq.codebook_size} codes)")


def _check_pair(node, model, vq, family):
    if model.family != family:
        other = "TN VAR Scale Decoder" if model.family == "var" else "TN AR Token Decoder"
        raise NodeInputError(node, "model", f"{model.name} is a {FAMILIES[model.family]} model; use it with {other}")
    if vq.family != model.family:
        raise NodeInputError(node, "vq", f"{vq.name} is a {FAMILIES[vq.family]} tokenizer but {model.name} is a "
                             f"{FAMILIES[model.family]} model; expected a {model.family} tokenizer")
    if vq.codebook_size != model.vocab_size:
        raise NodeInputError(node, "vq", f"codebook of {vq.name} has {vq.codebook_size} codes but {model.name} predicts "
                             f"{model.vocab_size}: expected the tokenizer the model was trained with")
    if family == "var" and vq.net.Cvae != model.net.cfg.Cvae:
        raise NodeInputError(node, "vq", f"{vq.name} has {vq.net.Cvae}-dim codes, {model.name} expects {model.net.cfg.Cvae}")


def _class_ids(node, model, class_index, batch_size, class_indices="", class_label=None):
    """[B] class ids (the null class for -1) from a TN Class Label conditioning, a comma-separated list or one index,
    repeated to the batch."""
    if batch_size < 1:
        raise NodeInputError(node, "batch_size", f"must be at least 1, got {batch_size}")
    n = model.num_classes
    name = "class_label" if class_label is not None else "class_indices" if class_indices.strip() else "class_index"
    if class_label is not None:
        from .diffusion import _cond_classes
        ids = _cond_classes(class_label)
        if not ids:
            raise NodeInputError(node, "class_label", "expected the conditioning output of TN Class Label (it carries class ids)")
    else:
        ids = parse_int_list(node, "class_indices", class_indices, -1, n - 1) if class_indices.strip() else [class_index]
    bad = [i for i in ids if not -1 <= i < n]
    if bad:
        raise NodeInputError(node, name, f"{bad[0]} is out of range for {model.name}: expected 0..{n - 1} or -1 (unconditional)")
    return torch.tensor([n if i == -1 else i for i in (ids * batch_size)[:batch_size]], dtype=torch.long)


def _expand(t: torch.Tensor, batch: int, node: str, input_name: str) -> torch.Tensor:
    if t.shape[0] == batch:
        return t
    if t.shape[0] == 1:
        return t.expand(batch, *t.shape[1:]).contiguous()
    raise NodeInputError(node, input_name, f"holds {t.shape[0]} images for a batch of {batch}; expected 1 or {batch}")


def _mask(node, fn, mask, *args):
    try:
        return fn(mask, *args)
    except ValueError as e:
        raise NodeInputError(node, "mask", str(e)) from None


# What an unconnected `intermediates` output holds: nothing reads it, so the image is not decoded for it.
UNUSED = torch.zeros(1, 1, 1, 3)


class TN_ARTokenDecoder:
    TITLE = "TN AR Token Decoder (raster)"
    DESCRIPTION = ("Raster-order next-token prediction as LlamaGen: one token at a time with a KV cache, classifier-free "
                   "guidance on the logits (uncond + (cond - uncond) * cfg, unconditional = the null class), temperature, "
                   "top-k, top-p. With tokens + mask it completes or inpaints an encoded image (masked area regenerated).")
    CATEGORY = CAT
    FUNCTION = "decode"
    RETURN_TYPES = ("TN_TOKENS", "IMAGE", "TN_STATS")
    RETURN_NAMES = ("tokens", "intermediates", "stats")
    OUTPUT_TOOLTIPS = ("Generated token ids (decode with TN VQ Decode).",
                       "With return_intermediates: the partial image as tokens arrive (unfilled area grey), else the final image.",
                       STATS_TOOLTIP)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("TN_AR_MODEL", {"tooltip": "A LlamaGen GPT from TN AR Model Loader."}),
            "vq": ("TN_VQ", {"tooltip": "The LlamaGen tokenizer the model was trained with."}),
            "class_index": ("INT", {"default": 0, "min": -1, "max": 100000, "tooltip": "Class to generate; -1 = unconditional (the null class)."}),
            "cfg": ("FLOAT", {"default": 4.0, "min": 0.0, "max": 100.0, "step": 0.05, "tooltip": "Guidance scale on the logits; 1 = none (no unconditional pass)."}),
            "temperature": ("FLOAT", {"default": 1.0, "min": 0.01, "max": 10.0, "step": 0.01, "tooltip": "Softmax temperature (applied before top-k/top-p)."}),
            "top_k": ("INT", {"default": 0, "min": 0, "max": 1 << 20, "tooltip": "Keep the k most likely tokens; 0 = off; 1 = greedy."}),
            "top_p": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Nucleus sampling mass; 1 = off."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "tooltip": "Sampling seed (CPU generator: the same tokens on CPU and GPU)."}),
            "batch_size": ("INT", {"default": 4, "min": 1, "max": 1024, "tooltip": "Number of images."}),
        }, "optional": {
            "class_indices": ("STRING", {"default": "", "tooltip": "If set, overrides class_index: comma-separated classes, one per image (repeated to batch_size), e.g. 0,1,2,3."}),
            "class_label": ("CONDITIONING", {"tooltip": "If connected, overrides class_index and class_indices: the classes of a TN Class Label (so one label node can drive diffusion and AR branches alike)."}),
            "cfg_interval": ("INT", {"default": -1, "min": -1, "max": 1 << 20, "tooltip": "Guide only the first N+1 tokens (LlamaGen's cfg_interval); -1 = all."}),
            "tokens": ("TN_TOKENS", {"tooltip": "Tokens of an encoded image to keep (TN VQ Encode)."}),
            "mask": ("MASK", {"tooltip": "With tokens: 1 = regenerate, 0 = keep (image resolution). Without a mask all given tokens are a prefix."}),
            "return_intermediates": ("BOOLEAN", {"default": False, "tooltip": "Return ~16 partial images as the intermediates batch."}),
        }, "hidden": HIDDEN_GRAPH}

    def decode(self, model, vq, class_index, cfg, temperature, top_k, top_p, seed, batch_size, class_indices="",
               cfg_interval=-1, tokens=None, mask=None, return_intermediates=False, class_label=None, prompt=None,
               unique_id=None):
        node = "TN_ARTokenDecoder"
        _check_pair(node, model, vq, "llamagen")
        class_ids = _class_ids(node, model, class_index, batch_size, class_indices, class_label)
        grid = int(model.net.config.block_size ** 0.5)
        seq_len = grid * grid
        prefix = keep = None
        if tokens is not None:
            _check_tokens(node, "tokens", tokens, vq)
            t = tokens["tokens"]
            if tuple(t.shape[1:]) != (grid, grid):
                raise NodeInputError(node, "tokens", f"token grid {tuple(t.shape[1:])} does not match the model's {grid}x{grid}")
            prefix = _expand(t, batch_size, node, "tokens").reshape(batch_size, seq_len)
            if mask is not None:
                keep = _mask(node, raster_keep, mask, grid, batch_size, grid * vq.net.downsample)
        elif mask is not None:
            raise NodeInputError(node, "mask", "a mask needs tokens to keep: connect TN VQ Encode to 'tokens'")
        device = model.ready()
        vq.ready()
        progress = Progress(seq_len, PROGRESS_INTERVAL)
        proj = vq.rgb_projection(grid) if progress.previews and not return_intermediates else None
        every = max(1, seq_len // 16)
        shots = []

        def callback(step, done):
            n = step + 1
            if n % every and n != seq_len:
                progress.update(n)
            elif return_intermediates:  # full decodes of the partial images, unfilled rows grey; shown as previews too
                img = vq.decode(tokens_dict("llamagen", pad_raster(done, grid), vq))
                img[:, -(-n // grid) * (img.shape[1] // grid):] = GREY
                shots.append(img)
                progress.update(n, lambda: img[:1])
            else:
                progress.update(n, lambda: raster_preview(vq.net, proj, done[:1], grid))

        gen = torch.Generator().manual_seed(seed)
        try:
            with count_forward(model.net.output) as calls, Stopwatch(device) as clock:
                out = generate_raster(model.net, class_ids.to(device), seq_len, cfg_scale=cfg, cfg_interval=cfg_interval,
                                      temperature=temperature, top_k=top_k, top_p=top_p, generator=gen,
                                      prefix_tokens=None if prefix is None else prefix.to(device),
                                      token_mask=None if keep is None else keep.to(device), callback=callback)
        except ValueError as e:
            raise NodeInputError(node, "class_index" if "class" in str(e) else "tokens", str(e)) from None
        result = tokens_dict("llamagen", out.reshape(batch_size, grid, grid).cpu(), vq)
        if return_intermediates:  # the last snapshot is the finished image
            result = _final_image(result, vq, shots[-1])
        elif output_used(prompt, unique_id, 1):
            result = _final_image(result, vq)
        images = torch.cat(shots) if shots else result.get("image", UNUSED)
        kept = int(keep[0].sum()) if keep is not None else prefix.shape[1] if prefix is not None else 0
        label = f"raster AR ({model.name.removesuffix('.safetensors')}), cfg {cfg:g}" + (", completion" if tokens is not None else "")
        stats = _ar_stats(label, "autoregressive (raster)", model, class_ids, calls, clock.seconds, seq_len - kept, "tokens",
                          None, {"cfg": cfg, "top_k": top_k, "top_p": top_p, "temperature": temperature})
        return (result, images, stats)


class TN_VARScaleDecoder:
    TITLE = "TN VAR Scale Decoder"
    DESCRIPTION = ("Next-scale prediction as VAR: each scale's whole token map at once, coarse to fine, with a KV cache; "
                   "VAR's guidance ramp (weight cfg*k/(K-1) at scale k, logits (1+t)*cond - t*uncond), top-k / top-p, and "
                   "Gumbel smoothing (more_smooth). With tokens + mask: zero-shot inpainting, outpainting and class-conditional editing.")
    CATEGORY = CAT
    FUNCTION = "decode"
    RETURN_TYPES = ("TN_TOKENS", "IMAGE", "TN_STATS")
    RETURN_NAMES = ("tokens", "intermediates", "stats")
    OUTPUT_TOOLTIPS = ("Generated token maps of every scale (decode with TN VQ Decode).",
                       "With return_intermediates: the image after each scale, else the final image.",
                       STATS_TOOLTIP)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("TN_AR_MODEL", {"tooltip": "A VAR transformer from TN AR Model Loader."}),
            "vq": ("TN_VQ", {"tooltip": "The VAR multi-scale VQ-VAE the model was trained with."}),
            "class_index": ("INT", {"default": 0, "min": -1, "max": 100000, "tooltip": "Class to generate; -1 = unconditional (the null class, as VAR's inpainting demo)."}),
            "cfg": ("FLOAT", {"default": 1.5, "min": 0.0, "max": 100.0, "step": 0.05, "tooltip": "Guidance scale; the weight ramps from 0 at the first scale to cfg at the last (so 1.0 still guides)."}),
            "top_k": ("INT", {"default": 900, "min": 0, "max": 1 << 20, "tooltip": "Keep the k most likely tokens per position; 0 = off; 1 = greedy."}),
            "top_p": ("FLOAT", {"default": 0.96, "min": 0.0, "max": 1.0, "step": 0.01, "tooltip": "Nucleus mass; 0 or 1 = off (VAR's convention: <= 0 disables)."}),
            "more_smooth": ("BOOLEAN", {"default": False, "tooltip": "Gumbel-softmax mix of codebook entries (VAR's more_smooth): smoother images; the image is then no longer a function of the token ids alone."}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "tooltip": "Sampling seed (CPU generator: the same tokens on CPU and GPU)."}),
            "batch_size": ("INT", {"default": 4, "min": 1, "max": 1024, "tooltip": "Number of images."}),
        }, "optional": {
            "class_indices": ("STRING", {"default": "", "tooltip": "If set, overrides class_index: comma-separated classes, one per image (repeated to batch_size), e.g. 0,1,2,3."}),
            "class_label": ("CONDITIONING", {"tooltip": "If connected, overrides class_index and class_indices: the classes of a TN Class Label (so one label node can drive diffusion and AR branches alike)."}),
            "tokens": ("TN_TOKENS", {"tooltip": "Multi-scale tokens of an encoded image to keep (TN VQ Encode with the same VQ-VAE)."}),
            "mask": ("MASK", {"tooltip": "With tokens: 1 = regenerate, 0 = keep (image resolution). Without a mask every scale given is kept."}),
            "return_intermediates": ("BOOLEAN", {"default": False, "tooltip": "Return the image after each scale as the intermediates batch."}),
        }, "hidden": HIDDEN_GRAPH}

    def decode(self, model, vq, class_index, cfg, top_k, top_p, more_smooth, seed, batch_size, class_indices="",
               tokens=None, mask=None, return_intermediates=False, class_label=None, prompt=None, unique_id=None):
        node = "TN_VARScaleDecoder"
        _check_pair(node, model, vq, "var")
        class_ids = _class_ids(node, model, class_index, batch_size, class_indices, class_label)
        pns = model.net.cfg.patch_nums
        prefix = keep = None
        if tokens is not None:
            _check_tokens(node, "tokens", tokens, vq)
            maps = tokens["tokens"]
            if len(maps) != len(pns) or any(m.shape[-1] != pn for m, pn in zip(maps, pns)):
                raise NodeInputError(node, "tokens", f"scales {[m.shape[-1] for m in maps]} do not match the model's patch_nums {list(pns)}")
            prefix = [_expand(m, batch_size, node, "tokens") for m in maps]
            if mask is not None:
                keep = _mask(node, var_keep, mask, batch_size, pns[-1] * vq.net.downsample)
        elif mask is not None:
            raise NodeInputError(node, "mask", "a mask needs tokens to keep: connect TN VQ Encode to 'tokens'")
        device = model.ready()
        vq.ready()
        progress = Progress(len(pns), PROGRESS_INTERVAL)
        proj = vq.rgb_projection(pns) if progress.previews and not return_intermediates else None
        shots = []

        def callback(si, f_hat):
            if return_intermediates:  # the image after each scale, decoded in full; shown as previews too
                with torch.no_grad():
                    img = ((vq.net.decode_fhat(f_hat.to(vq.dtype)).float() + 1) / 2).clamp(0, 1).movedim(1, -1).cpu()
                shots.append(img)
                progress.update(si + 1, lambda: img[:1])
            else:
                progress.update(si + 1, lambda: proj(f_hat[:1]))

        gen = torch.Generator().manual_seed(seed)
        try:
            with count_forward(model.net.head) as calls, Stopwatch(device) as clock:
                res = generate_var(model.net, vq.net, class_ids.to(device), cfg_scale=cfg, top_k=top_k, top_p=top_p,
                                   more_smooth=more_smooth, generator=gen,
                                   prefix_tokens=None if prefix is None else [p.to(device) for p in prefix],
                                   token_mask=None if keep is None else keep.to(device), callback=callback)
        except ValueError as e:
            raise NodeInputError(node, "class_index" if "class" in str(e) else "tokens", str(e)) from None
        result = tokens_dict("var", [t.cpu() for t in res.tokens], vq, f_hat=res.f_hat.cpu() if more_smooth else None)
        if return_intermediates and more_smooth:  # the last snapshot decodes the same f_hat TN VQ Decode would
            result = _final_image(result, vq, shots[-1])
        elif not return_intermediates and output_used(prompt, unique_id, 1):
            result = _final_image(result, vq)
        images = torch.cat(shots) if shots else result.get("image", UNUSED)
        label = f"VAR ({model.name.removesuffix('.safetensors')}), cfg {cfg:g}" + (", inpainting" if tokens is not None else "")
        stats = _ar_stats(label, "autoregressive (scale-wise)", model, class_ids, calls, clock.seconds, len(pns), "scales",
                          sum(p * p for p in pns), {"cfg": cfg, "top_k": top_k, "top_p": top_p, "more_smooth": more_smooth})
        return (result, images, stats)


NODES = [TN_VQLoader, TN_ARModelLoader, TN_VQEncode, TN_VQDecode, TN_ARTokenDecoder, TN_VARScaleDecoder]
