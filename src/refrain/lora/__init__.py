"""refrain.lora."""
