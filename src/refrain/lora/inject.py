"""Put a PEFT LoRA (and a variant's reference path) on a base DiT; everything else stays frozen.

PEFT does the work (``get_peft_model``); this module adds the checks PEFT makes late or not at all, as
one-line errors that list what would match: a ``target_modules`` entry that names no module (PEFT only
complains when *no* entry matches), or one that names only modules LoRA cannot adapt.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.tuners_utils import check_target_module_exists
from torch import nn

from refrain.errors import RefrainInputError
from refrain.lora.config import LoraSpec
from refrain.lora.control import CONTROL_MODULE, attach_control

ADAPTABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
_BLOCK_INDEX = re.compile(r"^(.*?\.)?\d+\.")


def adaptable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Name -> module for every module a LoRA may wrap (the reference path is trained in full instead)."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, ADAPTABLE) and CONTROL_MODULE not in name.split(".")
    }


def short_names(names: Iterable[str]) -> list[str]:
    """``blocks.3.attn.to_q`` -> ``attn.to_q``: the suffixes a target list would use, deduplicated."""
    out = []
    for name in names:
        match = _BLOCK_INDEX.match(name)
        short = name[match.end() :] if match and name[: match.end()].count(".") >= 2 else name
        if short not in out:
            out.append(short)
    return out


def _matches(pattern: str, name: str) -> bool:
    return name == pattern or name.endswith(f".{pattern}")


# ACE-Step v1's LoRA target names that have no module of the same name in refrain's DiT, and where the
# same role lives here (see lora_configs/README.md, "ACE-Step's target names").
ACESTEP_NAMES = {
    "linear_q": "ACE-Step's lyric-encoder attention; refrain's lyric path has none, its entry is conditioner.lyric_proj",
    "linear_k": "ACE-Step's lyric-encoder attention; refrain's lyric path has none, its entry is conditioner.lyric_proj",
    "linear_v": "ACE-Step's lyric-encoder attention; refrain's lyric path has none, its entry is conditioner.lyric_proj",
    "speaker_embedder": "ACE-Step's speaker projection; here conditioner.speaker_proj, only on a base with speaker_dim",
}


def _unmatched_hint(pattern: str, names: list[str]) -> str:
    if pattern in ACESTEP_NAMES:
        return ACESTEP_NAMES[pattern]
    close = difflib.get_close_matches(pattern, names, n=3, cutoff=0.4)
    return f"closest: {', '.join(close)}" if close else "nothing close"


def check_targets(model: nn.Module, config: LoraConfig, source: str = "target_modules") -> list[str]:
    """The adaptable module names ``config`` selects. Every pattern that selects nothing (or only modules
    LoRA cannot adapt) is named in ONE one-line error, each with the closest existing names."""
    adaptable = adaptable_modules(model)
    every = [name for name, _ in model.named_modules() if name]
    names = short_names(adaptable)
    targets = config.target_modules
    patterns = [targets] if isinstance(targets, str) else sorted(targets or [])
    problems = []
    for pattern in patterns:
        if isinstance(targets, str):
            hit_all = [n for n in every if re.fullmatch(pattern, n)]
        else:
            hit_all = [n for n in every if _matches(pattern, n)]
        if not hit_all:
            problems.append(f"{pattern!r} matches nothing ({_unmatched_hint(pattern, names)})")
        elif not any(n in adaptable for n in hit_all):
            kinds = sorted({type(model.get_submodule(n)).__name__ for n in hit_all})
            problems.append(f"{pattern!r} matches only {'/'.join(kinds)} modules, which LoRA cannot adapt")
    if problems:
        raise RefrainInputError(
            f"{source}: target_modules",
            f"{len(problems)} of {len(patterns)} entries select no module LoRA can "
            f"adapt in the base DiT: {'; '.join(problems)}",
            f"rename or remove them; adaptable names: {', '.join(names)}",
        )
    selected = [name for name in adaptable if check_target_module_exists(config, name)]
    if not selected:
        raise RefrainInputError(
            f"{source}: target_modules",
            "the patterns select no adaptable module (all excluded)",
            f"check exclude_modules/layers_to_transform; adaptable: {', '.join(names)}",
        )
    return selected


def inject_lora(model: nn.Module, spec: LoraSpec, adapter_name: str = "default") -> PeftModel:
    """Wrap ``model`` in a ``PeftModel``: LoRA on the selected layers, the reference path (if the variant
    has one) attached and trained in full, every base parameter frozen."""
    extra: tuple[str, ...] = ()
    backbone_spec = getattr(model, "backbone_spec", None)
    if spec.control is not None and not getattr(backbone_spec, "native_reference", False):
        attach_control(model, spec.control)  # a backbone that reads a reference track itself needs none
        extra = (CONTROL_MODULE,)
    config = spec.lora_config(extra)
    root = getattr(backbone_spec, "lora_root", None)
    if root and config.exclude_modules is None:  # e.g. ACE-Step 1.5: adapt the transformer, not its encoders
        config.exclude_modules = rf"^(?!{re.escape(root)}\.).*"
    check_targets(model, config, spec.source)
    return get_peft_model(model, config, adapter_name=adapter_name)


def trainable_names(model: nn.Module) -> list[str]:
    return [name for name, p in model.named_parameters() if p.requires_grad]
