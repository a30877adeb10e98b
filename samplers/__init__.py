"""Pure-torch sampling math: noise schedules, diffusion steps, guidance. No ComfyUI imports."""
from .diffusion import SAMPLERS
from .guidance import cfg_combine, guided_denoise, in_guidance_interval, rescale_guidance
from .schedules import SCHEDULES, get_sigmas
