"""VQ and multi-scale VQ autoencoders. No ComfyUI imports."""
