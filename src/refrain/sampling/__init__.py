"""refrain.sampling."""
