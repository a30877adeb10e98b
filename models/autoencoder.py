"""GlyphAutoencoder: a small deterministic conv autoencoder, 32x32 RGB <-> 4x8x8 latents.

It plays the role the SD VAE plays for DiT/SiT (Peebles & Xie 2023; Ma et al. 2024): the demo
denoisers work on `encode(x) * scale_factor`. Deterministic (no KL sampling); training uses a
small L2 penalty on the latents instead, so their scale stays bounded.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class AutoencoderConfig:
    channels: tuple[int, int] = (32, 64)  # widths at 16x16 and 8x8
    latent_channels: int = 4


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(x))))


class Encoder(nn.Module):
    """Patchifying stride-2 stem (cheap on CPU), then one residual block per resolution."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c1, c2 = cfg.channels
        self.conv_in, self.res1 = nn.Conv2d(3, c1, 4, 2, 1), ResBlock(c1)
        self.down, self.res2 = nn.Conv2d(c1, c2, 4, 2, 1), ResBlock(c2)
        self.conv_out = nn.Conv2d(c2, cfg.latent_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.res1(self.conv_in(x))  # (B, c1, 16, 16)
        h = self.res2(self.down(F.silu(h)))  # (B, c2, 8, 8)
        return self.conv_out(F.silu(h))  # (B, latent, 8, 8)


class Decoder(nn.Module):
    """Mirror of the encoder; the last 2x upsampling is a pixel shuffle of 12 = 3 * 2 * 2 channels."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        c1, c2 = cfg.channels
        self.conv_in, self.res2 = nn.Conv2d(cfg.latent_channels, c2, 3, 1, 1), ResBlock(c2)
        self.up, self.res1 = nn.Conv2d(c2, c1, 3, 1, 1), ResBlock(c1)
        self.conv_out = nn.Conv2d(c1, 12, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.res2(self.conv_in(z))  # (B, c2, 8, 8)
        h = self.res1(self.up(F.interpolate(F.silu(h), scale_factor=2.0, mode="nearest")))  # (B, c1, 16, 16)
        return F.pixel_shuffle(self.conv_out(F.silu(h)), 2)  # (B, 3, 32, 32) in [-1, 1] (unclamped)


class GlyphAutoencoder(nn.Module):
    """encode: images [B,3,32,32] in [0,1] -> latents [B,4,8,8]; decode: latents -> images in [0,1]."""

    downsample = 4

    def __init__(self, cfg: AutoencoderConfig | None = None):
        super().__init__()
        self.config = cfg or AutoencoderConfig()
        self.encoder, self.decoder = Encoder(self.config), Decoder(self.config)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] in [0,1] (H, W divisible by 4) -> unscaled latents [B,4,H/4,W/4]."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-1] % 4 or images.shape[-2] % 4:
            raise ValueError(f"expected images [B,3,H,W] with H, W divisible by 4, got {tuple(images.shape)}")
        return self.encoder(images * 2 - 1)

    def decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B,4,h,w] -> unclamped images [B,3,4h,4w] in roughly [-1,1] (training target space)."""
        if latents.ndim != 4 or latents.shape[1] != self.config.latent_channels:
            raise ValueError(f"expected latents [B,{self.config.latent_channels},h,w], got {tuple(latents.shape)}")
        return self.decoder(latents)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents [B,4,h,w] -> images [B,3,4h,4w] clamped to [0,1]."""
        return (self.decode_raw(latents) * 0.5 + 0.5).clamp(0, 1)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "GlyphAutoencoder":
        """Build an autoencoder sized from the state dict's shapes and load it (eval mode, fp32)."""
        ae = cls(autoencoder_config_from_state_dict(sd))
        ae.load_state_dict({k: v.float() for k, v in sd.items()})
        return ae.eval()


def autoencoder_config_from_state_dict(sd: dict[str, torch.Tensor]) -> AutoencoderConfig:
    """Infer channel widths and latent channels from tensor shapes."""
    keys = ("encoder.conv_in.weight", "encoder.down.weight", "encoder.conv_out.weight")
    missing = [k for k in keys if k not in sd]
    if missing:
        raise ValueError(f"not a GlyphAutoencoder state dict: missing {missing}")
    channels = (sd[keys[0]].shape[0], sd[keys[1]].shape[0])
    return AutoencoderConfig(channels=channels, latent_channels=sd[keys[2]].shape[0])
