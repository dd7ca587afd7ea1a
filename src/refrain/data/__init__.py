"""refrain.data."""
