"""Multi-scale residual VQ-VAE of VAR (Tian et al. 2024, "Visual Autoregressive Modeling", arXiv:2404.02905).

Parameter names follow the published `vae_ch160v4096z32.pth` so it loads with `strict=True`. An image is
encoded into K token maps of growing size `patch_nums` (Algorithm 1 of the paper): at each scale the residual
is area-downsampled to pn x pn, quantized (plain L2 nearest code), embedded, bicubic-upsampled back to the
full latent size, passed through a partially shared residual conv phi (Eq. 9) and subtracted. Decoding sums
the phi-processed maps into f_hat and runs the convolutional decoder (Algorithm 2).
"""
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .fast_conv import use_winograd

log = logging.getLogger(__name__)

# default scale schedules of the released checkpoints, keyed by image side in pixels
PATCH_NUMS = {256: (1, 2, 3, 4, 5, 6, 8, 10, 13, 16), 512: (1, 2, 3, 4, 6, 9, 13, 18, 24, 32)}


def default_patch_nums(image_size: int) -> tuple[int, ...]:
    """The official scale schedule for a square image of side `image_size` (256 or 512)."""
    if image_size not in PATCH_NUMS:
        raise ValueError(f"VAR has no default patch_nums for image size {image_size}; sizes that work: "
                         f"{sorted(PATCH_NUMS)} (or pass patch_nums ending in image_size / downsample)")
    return PATCH_NUMS[image_size]


def phi_index(si: int, num_scales: int, num_phi: int) -> int:
    """Which of `num_phi` shared residual convs scale `si` of `num_scales` uses.

    The official code picks the tick of linspace(1/3/K, 1-1/3/K, K) (K = 4; 1/2/K otherwise) nearest to
    si/(num_scales-1), first index on ties, in float64. For 10 scales and K = 4 this gives
    [0,0,1,1,1,2,2,3,3,3]; scales 2 and 5 are exact ties broken by float rounding, so the arithmetic below
    mirrors numpy.linspace (start + i*step, last tick = stop) to reproduce them.
    """
    if num_phi == 1:
        return 0
    lo = 1 / 3 / num_phi if num_phi == 4 else 1 / 2 / num_phi
    hi = 1 - lo
    step = (hi - lo) / (num_phi - 1)
    ticks = [lo + i * step for i in range(num_phi - 1)] + [hi]
    at = si / (num_scales - 1)
    dists = [abs(t - at) for t in ticks]
    return dists.index(min(dists))


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(32, cout, eps=1e-6)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inplace = not torch.is_grad_enabled()  # inference: reuse the fresh norm / conv outputs (same arithmetic)
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h = self.conv2(F.silu(self.norm2(h), inplace=inplace))
        return h.add_(self.nin_shortcut(x)) if inplace else self.nin_shortcut(x) + h


class AttnBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm = nn.GroupNorm(32, c, eps=1e-6)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(2, 3).unbind(1)  # 3 x (B, HW, C)
        h = F.scaled_dot_product_attention(q, k, v)  # single head, scale C^-0.5
        return x + self.proj_out(h.transpose(1, 2).reshape(B, C, H, W))


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # asymmetric pad as in taming / LDM


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def _level(blocks: list, attns: list, resample_name: str = "", resample: nn.Module | None = None) -> nn.Module:
    """One resolution level with the official attribute names: block, attn and (up|down)sample."""
    m = nn.Module()
    m.block, m.attn = nn.ModuleList(blocks), nn.ModuleList(attns)
    if resample is not None:
        setattr(m, resample_name, resample)
    return m


def _mid(c: int, using_mid_sa: bool) -> nn.Module:
    m = nn.Module()
    m.block_1, m.block_2 = ResnetBlock(c, c), ResnetBlock(c, c)
    m.attn_1 = AttnBlock(c) if using_mid_sa else nn.Identity()
    return m


@dataclass
class VQVAEConfig:
    vocab_size: int = 4096
    z_channels: int = 32  # Cvae
    ch: int = 160
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    using_sa: bool = True
    using_mid_sa: bool = True
    quant_conv_ks: int = 3
    quant_resi: float = 0.5  # phi(h) = (1 - r) h + r conv(h)
    phi_layout: str = "partial"  # "partial" (qresi_ls.k), "shared" (qresi), "none" (quant_resi.k)
    num_phi: int = 4
    ema_scales: int = 10  # rows of the (unused) quantize.ema_vocab_hit_SV buffer


class Encoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult, n = cfg.ch, cfg.ch_mult, cfg.num_res_blocks
        self.conv_in = nn.Conv2d(3, ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        for i, m in enumerate(mult):
            last = i == len(mult) - 1
            blocks = [ResnetBlock(cin if j == 0 else ch * m, ch * m) for j in range(n)]
            attns = [AttnBlock(ch * m) for _ in range(n)] if last and cfg.using_sa else []
            self.down.append(_level(blocks, attns, "downsample", None if last else Downsample(ch * m)))
            cin = ch * m
        self.mid = _mid(cin, cfg.using_mid_sa)
        self.norm_out = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for lvl in self.down:
            for j, blk in enumerate(lvl.block):
                h = blk(h)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        ch, mult, n = cfg.ch, cfg.ch_mult, cfg.num_res_blocks
        cin = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = _mid(cin, cfg.using_mid_sa)
        up = []
        for i in reversed(range(len(mult))):  # built from the lowest resolution, stored by level index
            blocks = [ResnetBlock(cin if j == 0 else ch * mult[i], ch * mult[i]) for j in range(n + 1)]
            attns = [AttnBlock(ch * mult[i]) for _ in range(n + 1)] if i == len(mult) - 1 and cfg.using_sa else []
            up.insert(0, _level(blocks, attns, "upsample", Upsample(ch * mult[i]) if i != 0 else None))
            cin = ch * mult[i]
        self.up = nn.ModuleList(up)
        self.norm_out = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for lvl in reversed(self.up):
            for j, blk in enumerate(lvl.block):
                h = blk(h)
                if len(lvl.attn):
                    h = lvl.attn[j](h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled()))


class Phi(nn.Conv2d):
    """Residual conv phi(h) = (1 - r) h + r conv3x3(h) (VAR Eq. 9, r = 0.5)."""

    def __init__(self, c: int, ratio: float):
        super().__init__(c, c, 3, padding=1)
        self.ratio = ratio

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # the quantizer path stays in float32 as in the official code, whatever dtype the VAE runs in
        conv = F.conv2d(h.float(), self.weight.float(), self.bias.float(), padding=1)
        return h * (1 - self.ratio) + conv * self.ratio


class Quantizer(nn.Module):
    """Holds the codebook, the phi convs and the (unused at inference) usage buffer, under official names."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.z_channels)
        self.register_buffer("ema_vocab_hit_SV", torch.zeros(cfg.ema_scales, cfg.vocab_size))
        phis = [Phi(cfg.z_channels, cfg.quant_resi) for _ in range(cfg.num_phi)]
        self.quant_resi = nn.Module()
        if cfg.phi_layout == "shared":
            self.quant_resi.qresi = phis[0]
        elif cfg.phi_layout == "partial":
            self.quant_resi.qresi_ls = nn.ModuleList(phis)
        else:  # one phi per scale, stored as quant_resi.{k}
            self.quant_resi = nn.ModuleList(phis)
        self.phi_layout, self.num_phi = cfg.phi_layout, cfg.num_phi

    def phi(self, si: int, num_scales: int) -> Phi:
        """The residual conv used at scale `si` of `num_scales`."""
        if self.phi_layout == "shared":
            return self.quant_resi.qresi
        convs = self.quant_resi.qresi_ls if self.phi_layout == "partial" else self.quant_resi
        return convs[phi_index(si, num_scales, self.num_phi)]


class VARVQVAE(nn.Module):
    """VAR's multi-scale VQ-VAE. Images are [B,3,H,W] in [-1,1]; token maps are [B,pn,pn] long per scale."""

    def __init__(self, cfg: VQVAEConfig):
        super().__init__()
        self.cfg = cfg
        self.Cvae, self.vocab_size = cfg.z_channels, cfg.vocab_size
        self.downsample = 2 ** (len(cfg.ch_mult) - 1)
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quantize = Quantizer(cfg)
        k = cfg.quant_conv_ks
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, k, padding=k // 2)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, k, padding=k // 2)
        use_winograd(self.decoder)  # CPU decode via Winograd 3x3 convs (tokenizers/fast_conv.py); tokens untouched

    @staticmethod
    def config_from_state_dict(sd: dict[str, torch.Tensor]) -> VQVAEConfig:
        """Infer the architecture from tensor shapes of an official state dict."""
        try:
            ch = sd["encoder.conv_in.weight"].shape[0]
            V, Cvae = sd["quantize.embedding.weight"].shape
            levels = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.down."))
            ch_mult = tuple(sd[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in range(levels))
            nrb = 1 + max(int(k.split(".")[4]) for k in sd if k.startswith("encoder.down.0.block."))
            ks = sd["quant_conv.weight"].shape[-1]
            ema_scales = sd["quantize.ema_vocab_hit_SV"].shape[0] if "quantize.ema_vocab_hit_SV" in sd else 10
        except KeyError as e:
            raise ValueError(f"not a VAR VQVAE state dict (vae_ch160v4096z32.pth layout): missing {e}") from None
        if "quantize.quant_resi.qresi.weight" in sd:
            layout, n = "shared", 1
        elif any(k.startswith("quantize.quant_resi.qresi_ls.") for k in sd):
            layout = "partial"
            n = 1 + max(int(k.split(".")[3]) for k in sd if k.startswith("quantize.quant_resi.qresi_ls."))
        else:
            layout = "none"
            n = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("quantize.quant_resi."))
        return VQVAEConfig(vocab_size=V, z_channels=Cvae, ch=ch, ch_mult=ch_mult, num_res_blocks=nrb,
                           using_sa=f"encoder.down.{levels - 1}.attn.0.qkv.weight" in sd,
                           using_mid_sa="encoder.mid.attn_1.qkv.weight" in sd, quant_conv_ks=ks,
                           phi_layout=layout, num_phi=n, ema_scales=ema_scales)

    @classmethod
    def from_state_dict(cls, sd: dict[str, torch.Tensor]) -> "VARVQVAE":
        """Build and strictly load from an official (bare) state dict."""
        model = cls(cls.config_from_state_dict(sd))
        if "quantize.ema_vocab_hit_SV" not in sd:  # only a usage statistic; tolerate files stripped of it
            sd = {**sd, "quantize.ema_vocab_hit_SV": model.quantize.ema_vocab_hit_SV}
        model.load_state_dict(sd, strict=True)
        return model.eval().requires_grad_(False)

    def resolve_patch_nums(self, image_size: int, patch_nums: Sequence[int] | None = None) -> tuple[int, ...]:
        """`patch_nums` checked against the latent side, or the official schedule for a 256/512 image."""
        pns = tuple(patch_nums) if patch_nums is not None else default_patch_nums(image_size)
        if image_size % self.downsample or pns[-1] != image_size // self.downsample:
            raise ValueError(f"patch_nums {pns} must end at the latent side {image_size / self.downsample:g} "
                             f"(image {image_size} / downsample {self.downsample}); "
                             f"default sizes: {sorted(PATCH_NUMS)}")
        return pns

    # -- scale-wise residual quantization (official `f_to_idxBl_or_fhat`) --------------------------------
    def upsample_phi(self, h_BChw: torch.Tensor, si: int, patch_nums: Sequence[int]) -> torch.Tensor:
        """phi(bicubic_up(h)) for scale si: upsample to the full latent size FIRST, then the residual conv."""
        K, HW = len(patch_nums), patch_nums[-1]
        if si != K - 1:
            h_BChw = F.interpolate(h_BChw, size=(HW, HW), mode="bicubic")
        return self.quantize.phi(si, K)(h_BChw)

    def nearest_code(self, z_NC: torch.Tensor) -> torch.Tensor:
        """argmin_v ||z - e_v||^2 over the codebook, computed as the official |z|^2 + |e|^2 - 2 z.e."""
        e = self.quantize.embedding.weight.float()
        d = torch.sum(z_NC.square(), dim=1, keepdim=True) + torch.sum(e.square(), dim=1)
        return torch.argmin(torch.addmm(d, z_NC, e.T, alpha=-2, beta=1), dim=1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, patch_nums: Sequence[int] | None = None) -> list[torch.Tensor]:
        """images [B,3,H,H] in [-1,1] -> list of K token maps [B,pn,pn] (official `img_to_idxBl`)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ValueError(f"expected square images [B,3,H,H], got {tuple(images.shape)}")
        pns = self.resolve_patch_nums(images.shape[-1], patch_nums)
        f = self.quant_conv(self.encoder(images.to(self.quant_conv.weight.dtype))).float()
        B, C = f.shape[:2]
        f_rest, out = f.clone(), []
        for si, pn in enumerate(pns):
            z = f_rest if si == len(pns) - 1 else F.interpolate(f_rest, size=(pn, pn), mode="area")
            idx = self.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, C)).view(B, pn, pn)
            f_rest.sub_(self.upsample_phi(self.embed(idx), si, pns))
            out.append(idx)
        return out

    def embed(self, idx_Bhw: torch.Tensor) -> torch.Tensor:
        """Token map [B,h,w] -> code embeddings [B,Cvae,h,w]."""
        return self.quantize.embedding(idx_Bhw).permute(0, 3, 1, 2).float()

    # -- decoding (official `idxBl_to_img` with same_shape=True, last_one=True) --------------------------
    def indices_to_fhat(self, idx_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of K token maps [B,pn,pn] (or [B,pn*pn]) -> f_hat [B,Cvae,pn_K,pn_K] = sum_k phi_k(up(e(r_k)))."""
        maps = [m if m.ndim == 3 else m.view(m.shape[0], math.isqrt(m.shape[1]), -1) for m in idx_maps]
        pns = [m.shape[-1] for m in maps]
        f_hat = torch.zeros(maps[0].shape[0], self.Cvae, pns[-1], pns[-1], device=maps[0].device)
        for si, m in enumerate(maps):
            f_hat.add_(self.upsample_phi(self.embed(m), si, pns))
        return f_hat

    @torch.no_grad()
    def decode_fhat(self, f_hat: torch.Tensor) -> torch.Tensor:
        """f_hat [B,Cvae,h,w] -> images [B,3,16h,16w] clamped to [-1,1] (official `fhat_to_img`)."""
        dt = self.post_quant_conv.weight.dtype
        return self.decoder(self.post_quant_conv(f_hat.to(dt))).float().clamp_(-1, 1)

    @torch.no_grad()
    def decode_indices(self, idx_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """List of K token maps [B,pn,pn] -> images [B,3,H,W] in [-1,1]."""
        return self.decode_fhat(self.indices_to_fhat(idx_maps))

    # -- what the transformer loop needs --------------------------------------------------------------
    def next_autoregressive_input(self, si: int, patch_nums: Sequence[int], f_hat: torch.Tensor,
                                  h_BChw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Add scale si's embedding h [B,Cvae,pn,pn] into f_hat (in place) and return (f_hat, next input).

        The next scale's input is the area-downsample of the running f_hat to patch_nums[si+1] (official
        `get_next_autoregressive_input`); None after the last scale.
        """
        f_hat.add_(self.upsample_phi(h_BChw.float(), si, patch_nums))
        if si == len(patch_nums) - 1:
            return f_hat, None
        pn = patch_nums[si + 1]
        return f_hat, F.interpolate(f_hat, size=(pn, pn), mode="area")

    def teacher_forcing_input(self, idx_maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """K token maps -> the K-1 next-scale inputs [B, L - pn_1^2, Cvae] (official `idxBl_to_var_input`)."""
        pns = [m.shape[-1] if m.ndim == 3 else math.isqrt(m.shape[1]) for m in idx_maps]
        maps = [m.view(m.shape[0], pn, pn) for m, pn in zip(idx_maps, pns)]
        f_hat = torch.zeros(maps[0].shape[0], self.Cvae, pns[-1], pns[-1], device=maps[0].device)
        nxt = []
        for si in range(len(pns) - 1):
            _, x = self.next_autoregressive_input(si, pns, f_hat, self.embed(maps[si]))
            nxt.append(x.flatten(2).transpose(1, 2))
        return torch.cat(nxt, dim=1)


def load_var_vqvae(path: str) -> VARVQVAE:
    """Load `vae_ch160v4096z32.pth` (bare state dict; .safetensors also accepted)."""
    if str(path).endswith(".safetensors"):
        from safetensors.torch import load_file
        sd = load_file(str(path))
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    model = VARVQVAE.from_state_dict(sd)
    log.info("loaded VAR VQVAE %s: %s", path, model.cfg)
    return model
