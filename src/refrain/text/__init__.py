"""refrain.text."""
