"""Safe checkpoint loading: safetensors, or torch pickles restricted to tensors (weights_only=True).

Published checkpoints come in two shapes: bare state dicts (official DiT/SiT/VAR files) and training
checkpoints such as DiT's `{"model", "ema", "opt", "args"}` or LlamaGen's `{"model", "optimizer", "steps",
"args": argparse.Namespace}`. Both are unwrapped here; nothing in a file is ever allowed to run code.
"""
import json
import logging
import os
import pickle
import re
from collections.abc import Iterable, Mapping

import torch

log = logging.getLogger(__name__)

TORCH_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
# Order matters: an EMA copy is what a training run means to be sampled from (DiT train.py, LlamaGen).
WRAPPER_KEYS = ("ema", "model", "state_dict", "module")
# Added by DistributedDataParallel and torch.compile respectively.
KEY_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt, unsafe, or not the network it was expected to be."""


def _load_safetensors(path: str) -> tuple[dict, dict[str, str]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(path, device="cpu"), metadata
    except Exception as e:  # SafetensorError, OSError: anything here means the file cannot be read
        raise CheckpointError(
            f"{path!r} is truncated or not a safetensors file ({type(e).__name__}: {e})"
        ) from e


def _load_pickle(path: str, allow_globals: Iterable) -> object:
    allow = list(allow_globals)
    try:
        with torch.serialization.safe_globals(allow):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        msg = str(e)
        if isinstance(e, pickle.UnpicklingError) and "GLOBAL" in msg:  # the weights-only unpickler's refusal
            m = re.search(r"GLOBAL ([\w.]+)", msg)
            name = f" {m.group(1)}" if m else ""
            raise CheckpointError(
                f"refused to load {path!r}: it references the Python global{name}, and loading it would "
                "execute code. Only tensors and allow-listed types are loaded; convert the file to "
                ".safetensors or obtain a plain state dict."
            ) from e
        first_line = msg.strip().splitlines()[0] if msg.strip() else ""
        raise CheckpointError(
            f"{path!r} is truncated or not a checkpoint ({type(e).__name__}: {first_line[:200]})"
        ) from e


def _unwrap(obj: object, path: str, prefer: tuple[str, ...] = ()) -> dict:
    """Descend through training-checkpoint wrappers to the dict of tensors."""
    for _ in range(4):  # wrappers nest at most a couple of levels deep in practice
        if not isinstance(obj, Mapping):
            raise CheckpointError(f"{path!r} holds a {type(obj).__name__}, expected a dict of tensors")
        if not obj:
            raise CheckpointError(f"{path!r} holds an empty dict, expected a dict of tensors")
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
        key = next((k for k in (*prefer, *WRAPPER_KEYS) if isinstance(obj.get(k), Mapping)), None)
        if key is None:
            bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)][:5]
            raise CheckpointError(
                f"{path!r} is not a dict of tensors (non-tensor entries: {bad}) and has none of the "
                f"training-checkpoint keys {list(WRAPPER_KEYS)}"
            )
        log.info("%s: using the %r entry of a training checkpoint", path, key)
        obj = obj[key]
    raise CheckpointError(f"{path!r}: checkpoint wrappers nested too deeply")


def _strip_prefixes(sd: dict) -> dict:
    changed = True
    while changed and sd:
        changed = False
        for p in KEY_PREFIXES:
            if all(k.startswith(p) for k in sd):
                sd = {k[len(p):]: v for k, v in sd.items()}
                changed = True
    return sd


def load_state_dict(
    path: str | os.PathLike, allow_globals: Iterable = (), prefer: tuple[str, ...] = ()
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Load a state dict on CPU without executing code from the file.

    `.safetensors` is read with safetensors (metadata = the header's `__metadata__`); `.pt/.pth/.ckpt/.bin`
    with `torch.load(weights_only=True)`, where `allow_globals` (e.g. `argparse.Namespace`) are the only
    extra types permitted. Training checkpoints are unwrapped (prefers "ema", then "model", "state_dict",
    "module"; `prefer` puts other keys first, e.g. ("model",) where the authors' sampler reads "model") and
    `module.` / `_orig_mod.` key prefixes are stripped.
    Returns (state_dict {name: tensor}, metadata {str: str}); a training checkpoint's argparse.Namespace (if
    allowed) comes back as JSON in metadata["training_args"] (its plain values only). Raises CheckpointError.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file not found: {path!r}")
    suffix = os.path.splitext(path)[1].lower()
    if suffix in SAFETENSORS_SUFFIXES:
        obj, metadata = _load_safetensors(path)
    elif suffix in TORCH_SUFFIXES:
        obj, metadata = _load_pickle(path, allow_globals), {}
        args = obj.get("args") if isinstance(obj, Mapping) else None
        if args is not None and hasattr(args, "__dict__"):  # training checkpoints store their argparse.Namespace
            metadata["training_args"] = json.dumps({k: v for k, v in vars(args).items()
                                                    if isinstance(v, (str, int, float, bool, type(None)))})
    else:
        raise CheckpointError(
            f"unsupported checkpoint extension {suffix!r} for {path!r}; expected one of "
            f"{list(SAFETENSORS_SUFFIXES + TORCH_SUFFIXES)}"
        )
    sd = _strip_prefixes(_unwrap(obj, path, tuple(prefer)))
    bad = [k for k in sd if not isinstance(k, str)][:5]
    if bad:
        raise CheckpointError(f"{path!r} has non-string keys {bad}; expected a dict of named tensors")
    return sd, metadata
