"""Network definitions (DiT/SiT, demo autoencoder, judge) and safe checkpoint loading. No ComfyUI imports."""
