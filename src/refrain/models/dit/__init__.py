"""refrain.models.dit."""
