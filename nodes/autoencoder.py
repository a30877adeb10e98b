"""The pack's own pixel <-> latent autoencoders (SD-family VAEs keep working through core VAELoader / VAEDecode)."""
from __future__ import annotations

import os

import torch

import comfy.model_management
import comfy.model_patcher

from ..models.autoencoder import GlyphAutoencoder
from ..models.checkpoint import CheckpointError, load_state_dict
from .common import CATEGORY, NodeInputError, choices, resolve

CAT = f"{CATEGORY}/diffusion"


class TNAutoencoder:
    """A loaded autoencoder plus its ModelPatcher (so ComfyUI moves it to the compute device and back)."""

    def __init__(self, net: GlyphAutoencoder, metadata: dict, name: str):
        self.net, self.metadata, self.name = net, metadata, name
        self.downsample = int(metadata.get("downsample", 4))
        self.latent_channels = int(metadata.get("latent_channels", 4))
        self.patcher = comfy.model_patcher.ModelPatcher(
            net, load_device=comfy.model_management.get_torch_device(),
            offload_device=comfy.model_management.unet_offload_device())

    def _ready(self) -> torch.device:
        comfy.model_management.load_models_gpu([self.patcher])
        return self.patcher.load_device

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """[B,H,W,3] in 0..1 -> unscaled latents [B,C,H/d,W/d]."""
        device = self._ready()
        with torch.no_grad():
            return self.net.encode(images.movedim(-1, 1).to(device)).float().cpu()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Unscaled latents [B,C,h,w] -> [B,h*d,w*d,3] in 0..1."""
        device = self._ready()
        with torch.no_grad():
            return self.net.decode(latents.to(device)).float().clamp(0, 1).movedim(1, -1).cpu()


class TN_VAELoader:
    TITLE = "TN Autoencoder Loader"
    DESCRIPTION = ("Loads one of the pack's autoencoders (the bundled glyph autoencoder, the latent space of the bundled "
                   "demo denoisers). For Stable Diffusion VAEs (official DiT/SiT) use core Load VAE + VAE Decode.")
    CATEGORY = CAT
    FUNCTION = "load"
    RETURN_TYPES = ("TN_VAE",)
    OUTPUT_TOOLTIPS = ("The autoencoder.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"vae_name": (choices("autoencoder", "vae"), {"tooltip": "Bundled tn_* autoencoders first, then files in models/vae."})}}

    def load(self, vae_name):
        path = resolve("TN_VAELoader", "vae_name", vae_name, "autoencoder", "vae")
        try:
            sd, meta = load_state_dict(path)
            if meta.get("tn_kind", "autoencoder") != "autoencoder" or not any(k.startswith("encoder.") for k in sd):
                raise CheckpointError(f"{os.path.basename(path)} is not a Tokens & Noise autoencoder "
                                      f"(metadata kind {meta.get('tn_kind', 'none')!r}); SD VAEs load with core Load VAE")
            net = GlyphAutoencoder.from_state_dict(sd).eval().requires_grad_(False)
        except CheckpointError as e:
            raise NodeInputError("TN_VAELoader", "vae_name", str(e)) from None
        return (TNAutoencoder(net, meta, vae_name),)


class TN_VAEDecode:
    TITLE = "TN Autoencoder Decode"
    DESCRIPTION = "Decodes a LATENT (a batch, e.g. a sampler's trajectory) to IMAGE with a Tokens & Noise autoencoder."
    CATEGORY = CAT
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE",)
    OUTPUT_TOOLTIPS = ("Decoded images [B,H,W,3] in 0..1.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("TN_VAE", {"tooltip": "From TN Autoencoder Loader."}),
            "samples": ("LATENT", {"tooltip": "Latents in this autoencoder's space (unscaled, as every LATENT)."}),
        }}

    def decode(self, vae, samples):
        z = samples["samples"]
        if z.ndim != 4 or z.shape[1] != vae.latent_channels:
            raise NodeInputError("TN_VAEDecode", "samples", f"expected latents [B,{vae.latent_channels},h,w] for {vae.name}, got {list(z.shape)}")
        if not torch.isfinite(z).all():
            raise NodeInputError("TN_VAEDecode", "samples", "contains NaN or Inf values")
        return (vae.decode(z),)


class TN_VAEEncode:
    TITLE = "TN Autoencoder Encode"
    DESCRIPTION = "Encodes an IMAGE into a Tokens & Noise autoencoder's latent space (for img2img / refinement with denoise < 1)."
    CATEGORY = CAT
    FUNCTION = "encode"
    RETURN_TYPES = ("LATENT",)
    OUTPUT_TOOLTIPS = ("Unscaled latents.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "vae": ("TN_VAE", {"tooltip": "From TN Autoencoder Loader."}),
            "image": ("IMAGE", {"tooltip": "RGB images; height and width must be multiples of the autoencoder's downsample factor."}),
        }}

    def encode(self, vae, image):
        if image.ndim != 4 or image.shape[-1] != 3:
            raise NodeInputError("TN_VAEEncode", "image", f"expected RGB images [B,H,W,3], got shape {list(image.shape)} "
                                 "(drop the alpha channel first, e.g. with core nodes)")
        h, w = image.shape[1:3]
        d = vae.downsample
        if h % d or w % d:
            raise NodeInputError("TN_VAEEncode", "image", f"size {w}x{h} is not a multiple of {d}; expected e.g. "
                                 f"{int(vae.metadata.get('image_size', 32))}x{int(vae.metadata.get('image_size', 32))}")
        return ({"samples": vae.encode(image)},)


NODES = [TN_VAELoader, TN_VAEDecode, TN_VAEEncode]
