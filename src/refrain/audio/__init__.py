"""refrain.audio."""
