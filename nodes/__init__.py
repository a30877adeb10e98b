"""ComfyUI adapters. The only package that imports comfy.*; each node is a thin wrapper over samplers/, models/, tokenizers/."""
from . import autoencoder, autoregressive, compare, diffusion, image

NODE_LIST = [*diffusion.NODES, *autoencoder.NODES, *autoregressive.NODES, *image.NODES, *compare.NODES]
NODE_CLASS_MAPPINGS = {cls.__name__: cls for cls in NODE_LIST}
NODE_DISPLAY_NAME_MAPPINGS = {cls.__name__: cls.TITLE for cls in NODE_LIST}
