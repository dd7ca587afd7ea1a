"""refrain.losses."""
