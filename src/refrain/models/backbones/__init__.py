"""Released models as refrain backbones: thin wrappers over the classes diffusers ships."""
