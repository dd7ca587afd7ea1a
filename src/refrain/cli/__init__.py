"""refrain.cli."""
