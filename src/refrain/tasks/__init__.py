"""refrain.tasks."""
