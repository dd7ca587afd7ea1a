"""refrain.models.vae."""
