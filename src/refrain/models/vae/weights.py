"""Model weights from a folder by explicit file names: config.json + one safetensors file, nothing picked up.

diffusers' ``from_pretrained`` chooses files by looking around (a ``*.safetensors.index.json`` turns on
shard loading, a ``.bin`` is a pickle fallback). Bundles and released VAE folders are opened here instead:
the config is read as JSON, the model built from it, and the one named safetensors file loaded strictly.
"""

from __future__ import annotations

from pathlib import Path

from diffusers import AutoencoderOobleck
from safetensors import SafetensorError
from safetensors.torch import load_file

from refrain.errors import RefrainInputError
from refrain.fileio import read_json

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "diffusion_pytorch_model.safetensors"
PICKLED_NAMES = ("diffusion_pytorch_model.bin", "pytorch_model.bin", "model.bin", "model.ckpt", "model.pt")
SAFETENSORS_FIX = (
    "convert it to safetensors (safetensors.torch.save_file of its state_dict, in a trusted environment) "
    "and save it as diffusion_pytorch_model.safetensors"
)


def load_autoencoder(folder: str | Path) -> AutoencoderOobleck:
    """An Oobleck VAE from ``folder/config.json`` and ``folder/diffusion_pytorch_model.safetensors`` only."""
    folder = Path(folder)
    config_path = folder / CONFIG_NAME
    config = read_json(
        config_path,
        "point at a diffusers VAE folder (save_pretrained), or re-export the VAE",
        missing="missing",
    )
    declared = config.get("_class_name", AutoencoderOobleck.__name__)
    if declared != AutoencoderOobleck.__name__:
        raise RefrainInputError(
            config_path,
            f"describes a {declared}, not an {AutoencoderOobleck.__name__}",
            "pass an Oobleck VAE",
        )
    weights = folder / SAFETENSORS_NAME
    if not weights.is_file():
        pickled = next((folder / n for n in PICKLED_NAMES if (folder / n).is_file()), None)
        if pickled is not None:
            raise RefrainInputError(
                pickled,
                "pickled weights are refused (loading a pickle can run code); only safetensors load",
                SAFETENSORS_FIX,
            )
        raise RefrainInputError(weights, "missing", "re-export the VAE (weights are saved as safetensors)")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError) as error:
        raise RefrainInputError(
            weights, f"not a readable safetensors file ({error})", "re-export the VAE"
        ) from None
    try:
        autoencoder = AutoencoderOobleck.from_config(config)
    except (TypeError, ValueError) as error:
        raise RefrainInputError(
            config_path, f"not a valid VAE config ({error})", "re-export the VAE"
        ) from None
    missing, unexpected = autoencoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RefrainInputError(
            weights,
            f"weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})",
            "re-export the VAE",
        )
    return autoencoder.eval()
