"""refrain: train full-song music generators (VAE, flow-matching DiT, LoRA variants, sampler)."""

__version__ = "0.1.0"
