"""Shared ComfyUI glue: model folders, bundled weights, errors that name node and input, progress with previews."""
from __future__ import annotations

import logging
import math
import os
import re
import time

import torch

import comfy.model_management
import comfy.utils
import folder_paths

log = logging.getLogger("tokens_and_noise")

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLED_DIR = os.path.join(PACK_DIR, "weights")
CATEGORY = "Tokens & Noise"

# Model folders (ComfyUI/models/<name>); users can remap them in extra_model_paths.yaml.
CHECKPOINT_EXTENSIONS = {".pt", ".pth", ".ckpt", ".bin", ".safetensors"}
DENOISER_FOLDER = "diffusion_models" if "diffusion_models" in folder_paths.folder_names_and_paths else "unet"
for _name in ("vq", "ar", "classifiers"):
    if _name not in folder_paths.folder_names_and_paths:
        folder_paths.folder_names_and_paths[_name] = ([os.path.join(folder_paths.models_dir, _name)], CHECKPOINT_EXTENSIONS)


class NodeInputError(ValueError):
    """An error a user can fix, phrased as 'NODE: input NAME: what is wrong; what was expected'."""

    def __init__(self, node: str, input_name: str, message: str):
        super().__init__(f"{node}: input '{input_name}': {message}")


def bundled(kind: str) -> list[str]:
    """Bundled weight files whose name starts with tn_<something> and whose metadata kind is `kind`."""
    from safetensors import safe_open
    names = []
    if os.path.isdir(BUNDLED_DIR):
        for name in sorted(os.listdir(BUNDLED_DIR)):
            if not name.endswith(".safetensors"):
                continue
            try:
                with safe_open(os.path.join(BUNDLED_DIR, name), "pt") as f:
                    if (f.metadata() or {}).get("tn_kind") == kind:
                        names.append(name)
            except Exception:  # a damaged bundled file must not break the node list
                log.warning("bundled weight file %s is unreadable", name)
    return names


def choices(kind: str, folder: str) -> list[str]:
    """Bundled files of `kind` first, then the user's files in ComfyUI's `folder` model folder."""
    return bundled(kind) + [n for n in folder_paths.get_filename_list(folder) if n not in bundled(kind)]


def resolve(node: str, input_name: str, name: str, kind: str, folder: str) -> str:
    """Path of a bundled file or of a file in a model folder, or a NodeInputError naming where it looked."""
    if name in bundled(kind):
        return os.path.join(BUNDLED_DIR, name)
    path = folder_paths.get_full_path(folder, name)
    if path is None or not os.path.isfile(path):
        dirs = folder_paths.get_folder_paths(folder)
        raise NodeInputError(node, input_name, f"model file '{name}' not found in the bundled weights or in {dirs}")
    return path


MAX_LIST_ITEMS = 4096  # the most entries a comma-separated list input may hold (batch sizes go to 4096)
_INT_LIST = re.compile(r"\s*-?[0-9]+\s*(?:,\s*-?[0-9]+\s*)*")


def echo(text: str, limit: int = 60) -> str:
    """A user's text quoted back in an error, cut to `limit` characters."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def parse_int_list(node: str, input_name: str, text: str, lo: int, hi: int, what: str = "class indices") -> list[int]:
    """'0, 1,2' -> [0, 1, 2]: integers in lo..hi separated by commas (spaces around them allowed), nothing else.

    One parser for every list input, strict on purpose: '1 2' or '1_0' are errors, not class 12 or 10."""
    if len(text) > 16 * MAX_LIST_ITEMS or not _INT_LIST.fullmatch(text):
        raise NodeInputError(node, input_name, f"expected {what} separated by commas, e.g. 0,1,2; got {echo(text)}")
    values = [int(v) for v in text.split(",")]
    if len(values) > MAX_LIST_ITEMS:
        raise NodeInputError(node, input_name, f"holds {len(values)} entries; at most {MAX_LIST_ITEMS} are accepted")
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise NodeInputError(node, input_name, f"{bad[0]} is out of range: expected {what} in {lo}..{hi}")
    return values


DTYPES = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def pick_dtype(choice: str, device: torch.device) -> torch.dtype:
    """'auto' is fp32 on the CPU and the device's preferred half type elsewhere."""
    if DTYPES.get(choice) is not None:
        return DTYPES[choice]
    if device.type == "cpu":
        return torch.float32
    return torch.bfloat16 if comfy.model_management.should_use_bf16(device) else torch.float16


HIDDEN_GRAPH = {"prompt": "PROMPT", "unique_id": "UNIQUE_ID"}  # hidden inputs: the prompt graph and this node's id


def output_used(prompt: dict | None, unique_id, index: int) -> bool:
    """Whether any node of the prompt graph takes output `index` of node `unique_id` (True when unknown)."""
    if not isinstance(prompt, dict) or unique_id is None:
        return True
    me = str(unique_id)
    for node in prompt.values():
        for value in ((node or {}).get("inputs") or {}).values():
            if isinstance(value, (list, tuple)) and len(value) == 2 and str(value[0]) == me and value[1] == index:
                return True
    return False


def previews_enabled() -> bool:
    """ComfyUI's preview setting (--preview-method; its default is none): previews are made only when it asks."""
    from comfy.cli_args import LatentPreviewMethod, args
    return args.preview_method != LatentPreviewMethod.NoPreviews


class Progress:
    """ComfyUI progress bar with previews as the user's preview setting asks; every update honours the Cancel button."""

    def __init__(self, total: int, min_interval: float = 0.0):
        """min_interval: seconds between progress messages that carry no preview (the last step is always sent).
        Token loops make hundreds of steps a second on a GPU and each message costs the server thread CPU time."""
        self.total = max(int(total), 1)
        self.bar = comfy.utils.ProgressBar(self.total)
        self.previews = previews_enabled()
        self.min_interval, self.last = min_interval, -math.inf

    def update(self, step: int, preview=None):
        """step: steps done; preview: a function returning an image [H,W,3] or [B,H,W,3] in 0..1 (the first of the
        batch is shown), called only when previews are on, or None. Every call honours the Cancel button."""
        comfy.model_management.throw_exception_if_processing_interrupted()
        now = time.monotonic()
        if (preview is None or not self.previews) and step < self.total and now - self.last < self.min_interval:
            return
        self.last = now
        payload = None
        img = preview() if self.previews and preview is not None else None
        if img is not None:
            from PIL import Image

            from comfy.cli_args import args
            img = img[0] if img.ndim == 4 else img
            arr = (img.detach().float().clamp(0, 1).cpu().numpy() * 255).round().astype("uint8")
            pil = Image.fromarray(arr)
            if max(pil.size) < 256:  # token grids and tiny demo images: enlarge so the preview is visible
                s = -(-256 // max(pil.size))
                pil = pil.resize((pil.width * s, pil.height * s), Image.NEAREST)
            # ComfyUI fits the preview into max_size, enlarging smaller ones: never past its own size (a 512-px JPEG
            # of an enlarged 16x16 token grid costs the server 4x the encoding of a 256-px one and shows nothing more)
            payload = ("JPEG", pil, min(getattr(args, "preview_size", 512), max(pil.size)))
        self.bar.update_absolute(min(step, self.total), self.total, payload)


def latent_to_rgb(latent: torch.Tensor, factors, bias=None) -> torch.Tensor | None:
    """Cheap preview: [B,C,H,W] latent -> [B,H,W,3] in 0..1 with a linear map (ComfyUI's Latent2RGB idea)."""
    if factors is None:
        return None
    f = torch.tensor(factors, dtype=torch.float32)
    rgb = torch.einsum("bchw,cr->bhwr", latent.float().cpu(), f)
    if bias is not None:
        rgb = rgb + torch.tensor(bias, dtype=torch.float32)
    else:
        rgb = (rgb + 1.0) / 2.0
    return rgb.clamp(0, 1)


def tooltips(node_cls) -> None:
    """Fail fast at import if a node lacks a description or a tooltip (the pack's own contract)."""
    assert node_cls.DESCRIPTION, node_cls.__name__
    for section in node_cls.INPUT_TYPES().values():
        for name, spec in section.items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_cls.__name__}.{name} has no tooltip"
    assert len(node_cls.OUTPUT_TOOLTIPS) == len(node_cls.RETURN_TYPES), node_cls.__name__
