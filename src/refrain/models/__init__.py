"""refrain.models."""
