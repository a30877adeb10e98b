"""Pure-torch sampling math: noise schedules, diffusion steps, guidance. No ComfyUI imports."""
