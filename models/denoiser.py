"""A DiT/SiT network behind one calling convention: ComfyUI's, with sigma-derived timesteps.

Two parameterisations share the DiT architecture (Peebles & Xie 2023; SiT: Ma et al. 2024):
- "eps": DDPM epsilon prediction on the linear beta schedule (1e-4..0.02, T=1000). The caller feeds
  x / sqrt(1 + sigma^2) and the discrete timestep t in [0, 999]; the output is epsilon.
- "sit_velocity": SiT's Linear interpolant x_t = t * x_data + (1 - t) * noise, t=1 is data, and the
  network predicts u = x_data - noise. ComfyUI's flow convention (CONST) is x = (1 - sigma) x0 + sigma eps
  with timestep = 1000 * sigma and a model output of eps - x0, so t = 1 - sigma and output = -u.
Learned-sigma checkpoints (official DiT/SiT files) carry 2C output channels; the second half (variance)
is not used by these samplers and is dropped.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from .checkpoint import CheckpointError, load_state_dict
from .dit import DiT

log = logging.getLogger(__name__)

PREDICTIONS = ("eps", "sit_velocity")
FLOW_TIMESTEP_MULTIPLIER = 1000.0  # ComfyUI's ModelSamplingDiscreteFlow: timestep = sigma * 1000


@dataclass
class DenoiserInfo:
    """What a sampler front-end needs to know about a loaded denoiser file."""
    family: str                      # "dit" or "sit"
    prediction: str                  # one of PREDICTIONS
    num_classes: int
    null_class: int | None           # class index meaning "unconditional", None if the model has none
    latent_channels: int
    latent_size: int                 # latents are latent_size x latent_size
    class_names: list[str] = field(default_factory=list)
    latent_scale_factor: float = 0.18215
    autoencoder: str = ""            # bundled autoencoder file the model was trained with ("" = SD VAE)
    beta_schedule: str = "ddpm_linear"
    metadata: dict = field(default_factory=dict)


class DenoiserNet(nn.Module):
    """Wraps a DiT so that forward(x, timestep, y) returns ComfyUI's model output for its prediction type."""

    def __init__(self, net: DiT, info: DenoiserInfo):
        super().__init__()
        if info.prediction not in PREDICTIONS:
            raise ValueError(f"prediction must be one of {PREDICTIONS}, got {info.prediction!r}")
        self.net = net
        self.info = info

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype

    def labels(self, y: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """Class labels [B] long; None means unconditional (the null class)."""
        if y is None:
            if self.info.null_class is None:
                raise ValueError("this denoiser has no unconditional (null) class: connect a class label")
            return torch.full((batch,), self.info.null_class, dtype=torch.long, device=device)
        y = y.reshape(-1).to(device=device, dtype=torch.long)
        if y.numel() == 1:
            y = y.expand(batch)
        if y.numel() != batch:
            raise ValueError(f"got {y.numel()} class labels for a batch of {batch}")
        hi = self.info.num_classes if self.info.null_class is None else self.info.null_class
        if bool(((y < 0) | (y > hi)).any()):
            raise ValueError(f"class index out of range: valid classes are 0..{self.info.num_classes - 1}"
                             + ("" if self.info.null_class is None else " and -1 (unconditional)"))
        return y

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """x: [B,C,H,W] network input; timestep: [B] (DDPM step for eps, 1000*sigma for flow) -> [B,C,H,W]."""
        if not torch.isfinite(x).all():
            raise ValueError("the latent contains NaN or Inf values: check the sampler's latent input")
        b, c = x.shape[:2]
        s = self.info.latent_size
        if x.ndim != 4 or x.shape[1:] != (self.info.latent_channels, s, s):
            raise ValueError(f"this denoiser works on latents of {self.info.latent_channels}x{s}x{s} (channels x height x width), "
                             f"got {'x'.join(map(str, x.shape[1:]))}: start from TN Empty Latent, or an image of the size it was trained on")
        y = self.labels(y, b, x.device)
        t = timestep.reshape(-1).to(x.device).float().expand(b) if timestep.numel() == 1 else timestep.reshape(-1).float()
        if self.info.prediction == "sit_velocity":
            t = 1.0 - t / FLOW_TIMESTEP_MULTIPLIER
        out = self.net(x.to(self.dtype), t.to(self.dtype), y)[:, :c].float()
        return -out if self.info.prediction == "sit_velocity" else out


def _guess_prediction(path: str, metadata: dict) -> str:
    if metadata.get("prediction") in PREDICTIONS:
        return metadata["prediction"]
    # Official DiT and SiT files have identical keys and shapes; the file name is the only hint.
    return "sit_velocity" if "sit" in os.path.basename(path).lower() else "eps"


def load_denoiser(path: str, prediction: str = "auto", dtype: torch.dtype = torch.float32) -> DenoiserNet:
    """Load an official DiT/SiT checkpoint or a bundled demo denoiser; the architecture comes from tensor shapes."""
    sd, metadata = load_state_dict(path)
    if not any(k.startswith("x_embedder.") for k in sd) or not any(k.startswith("blocks.") for k in sd):
        family = "a VQ tokenizer" if any(k.startswith(("quantize.", "quantizer.", "quant_conv")) for k in sd) else "not a DiT/SiT denoiser"
        raise CheckpointError(f"{os.path.basename(path)} is {family}: expected a DiT/SiT state dict "
                              "(keys x_embedder.*, t_embedder.*, y_embedder.*, blocks.*, final_layer.*)")
    num_classes = int(metadata["num_classes"]) if "num_classes" in metadata else None
    num_heads = int(metadata["num_heads"]) if "num_heads" in metadata else None  # not stored in a state dict
    net = DiT.from_state_dict(sd, num_classes=num_classes, num_heads=num_heads)
    cfg = net.config
    if prediction == "auto":
        prediction = _guess_prediction(path, metadata)
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be 'auto' or one of {PREDICTIONS}, got {prediction!r}")
    class_names = json.loads(metadata["class_names"]) if "class_names" in metadata else []
    info = DenoiserInfo(
        family=metadata.get("family", "sit" if prediction == "sit_velocity" else "dit"),
        prediction=prediction,
        num_classes=cfg.num_classes,
        null_class=cfg.num_classes if cfg.has_null_class else None,
        latent_channels=cfg.in_channels,
        latent_size=cfg.input_size,
        class_names=class_names,
        latent_scale_factor=float(metadata.get("latent_scale_factor", 0.18215)),
        autoencoder=metadata.get("autoencoder", ""),
        beta_schedule=metadata.get("beta_schedule", "ddpm_linear"),
        metadata=metadata,
    )
    net = net.to(dtype).eval().requires_grad_(False)
    log.info("loaded %s denoiser %s: %s", info.family, os.path.basename(path), cfg)
    return DenoiserNet(net, info)
