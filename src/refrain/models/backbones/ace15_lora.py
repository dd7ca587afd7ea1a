"""A refrain LoRA on ACE-Step 1.5 as the file diffusers' ``AceStepPipeline.load_lora_weights`` reads.

refrain trains PEFT adapters on the backbone with LoRA scoped to its ``transformer`` (the backbone's
``lora_root``), so the adapter's tensors are exactly PEFT's ``transformer.<module>.lora_A/B.weight``.
Export strips PEFT's wrapper prefix and writes them with diffusers' own ``save_lora_weights``, together
with the adapter's rank/alpha metadata, so the pipeline rebuilds the same scaling (alpha / r, or
alpha / sqrt(r) with rsLoRA).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffusers import AceStepPipeline
from peft import PeftModel
from peft.utils import get_peft_model_state_dict

from refrain.errors import RefrainInputError

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_PEFT_PREFIX = "base_model.model."
_METADATA = ("r", "lora_alpha", "lora_dropout", "use_rslora", "bias", "rank_pattern", "alpha_pattern")


def export_diffusers_lora(model: PeftModel, folder: str | Path, adapter_name: str = "default") -> Path:
    """Write ``folder/pytorch_lora_weights.safetensors`` for ``AceStepPipeline.load_lora_weights(folder)``."""
    state = get_peft_model_state_dict(model, adapter_name=adapter_name)
    prefix = _PEFT_PREFIX + "transformer."
    outside = sorted(k for k in state if not k.startswith(prefix))
    if outside:
        raise RefrainInputError(
            "LoRA export",
            f"the adapter has tensors outside the transformer ({outside[0]} ...)",
            "train ACE-Step 1.5 LoRAs on transformer modules only (the backbone scopes target_modules to it)",
        )
    layers = {key[len(prefix) :]: value.detach().contiguous() for key, value in state.items()}
    config = model.peft_config[adapter_name]
    modules = sorted({_target_name(key.rsplit(".lora_", 1)[0]) for key in layers})
    metadata: dict[str, Any] = {name: getattr(config, name) for name in _METADATA}
    metadata["target_modules"] = modules
    folder = Path(folder)
    AceStepPipeline.save_lora_weights(
        folder,
        transformer_lora_layers=layers,
        weight_name=WEIGHT_NAME,
        transformer_lora_adapter_metadata=metadata,
    )
    return folder / WEIGHT_NAME


def _target_name(module: str) -> str:
    """The suffix PEFT matches: the last name, or the last two when the last is an index (``to_out.0``)."""
    parts = module.split(".")
    return ".".join(parts[-2:]) if parts[-1].isdigit() else parts[-1]
