"""refrain.lora: PEFT LoRA variants of the DiT (config, injection, reference path, adapter folders).

Training goes through ``refrain.tasks.lora_task.LoraTask``; inference through ``load_adapters`` /
``merge_adapters`` here and the sampler's ``--lora PATH[:SCALE]``. Importing the package registers the
LoRA sampler modes (stem, accompany: ``refrain.lora.sampling``).
"""

from __future__ import annotations

from refrain.lora.adapters import (
    AdapterRef,
    LoadedAdapters,
    adapters_off,
    check_adapter_fits,
    load_adapters,
    merge_adapters,
    read_adapter_spec,
    save_adapter,
    set_adapter_scales,
)
from refrain.lora.config import LoraSpec, load_lora_spec, parse_lora_spec
from refrain.lora.control import ControlConditioning, ReferenceControl, attach_control
from refrain.lora.inject import check_targets, inject_lora
from refrain.lora.sampling import apply_adapters, export_merged_bundle
from refrain.lora.variants import VARIANTS, ControlSpec, DataSelection, Variant

__all__ = [
    "VARIANTS",
    "AdapterRef",
    "ControlConditioning",
    "ControlSpec",
    "DataSelection",
    "LoadedAdapters",
    "LoraSpec",
    "ReferenceControl",
    "Variant",
    "adapters_off",
    "apply_adapters",
    "attach_control",
    "check_adapter_fits",
    "check_targets",
    "export_merged_bundle",
    "inject_lora",
    "load_adapters",
    "load_lora_spec",
    "merge_adapters",
    "parse_lora_spec",
    "read_adapter_spec",
    "save_adapter",
    "set_adapter_scales",
]
