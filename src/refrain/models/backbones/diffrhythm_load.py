"""Read DiffRhythm's released ``cfm_model.pt`` (or a training checkpoint) into refrain's DiffRhythm backbone.

Accepted shapes of the file, all read without running code (``torch.load(weights_only=True)`` or
safetensors): a flat tensor dict; ``{"model_state_dict": ...}``; ``{"ema_model_state_dict": ...}``
(``use_ema`` picks which one when a file has both; a file with one of them gives that one). Keys may carry the CFM wrapper's
``transformer.`` prefix and the EMA wrapper's ``ema_model.``; the EMA bookkeeping entries ``initted`` and
``step`` are dropped. What remains must match the backbone exactly: a missing, unexpected or mis-shaped
tensor is one ``RefrainInputError`` naming the file, the first offending keys and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.models.backbones.diffrhythm import FULL_FRAMES, DiffRhythm

RELEASE_FILE = "cfm_model.pt"
PREFIXES = ("ema_model.", "transformer.")
EMA_BOOKKEEPING = ("initted", "step")
_SHOWN = 3


def read_checkpoint(path: str | Path, use_ema: bool = True) -> dict[str, Tensor]:
    """The DiT tensors of a DiffRhythm checkpoint, prefixes removed (see the module docstring)."""
    path = Path(path)
    if path.is_dir():  # a downloaded release folder (ASLP-lab/DiffRhythm-1_2, DiffRhythm-full)
        path = path / RELEASE_FILE
    if not path.is_file():
        raise RefrainInputError(path, "not found", "pass the released cfm_model.pt (DiffRhythm-1_2 or -full)")
    if path.suffix == ".safetensors":
        raw: Any = load_file(path)
    else:
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as error:  # an unpickler refusal or a corrupt zip: one line either way
            first = str(error).strip().splitlines()[0][:160] if str(error).strip() else type(error).__name__
            raise RefrainInputError(
                path,
                f"cannot be read as plain tensors ({first})",
                "use the released cfm_model.pt; files that need code to unpickle are refused",
            ) from None
    if not isinstance(raw, Mapping):
        raise RefrainInputError(path, f"holds a {type(raw).__name__}, not a state dict", "pass cfm_model.pt")
    order = ("ema_model_state_dict", "model_state_dict")
    for key in order if use_ema else order[::-1]:  # the preferred copy, else the one the file has
        if isinstance(raw.get(key), Mapping):
            raw = raw[key]
            break
    state: dict[str, Tensor] = {}
    for key, value in raw.items():
        if key in EMA_BOOKKEEPING:
            continue
        if not isinstance(value, Tensor):
            raise RefrainInputError(
                path, f"entry {key!r} is a {type(value).__name__}, not a tensor", "pass cfm_model.pt"
            )
        name = key
        for prefix in PREFIXES:
            name = name.removeprefix(prefix)
        state[name] = value
    return state


def check_state(model: DiffRhythm, state: Mapping[str, Tensor], source: str | Path) -> None:
    """One-line error unless ``state`` has exactly the model's tensor names and shapes."""
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(n for n in set(expected) & set(state) if tuple(state[n].shape) != expected[n])
    if not (missing or unexpected or wrong):
        return
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected)):
        if names:
            more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
            parts.append(f"{len(names)} {label} keys ({', '.join(names[:_SHOWN])}{more})")
    if wrong:
        n = wrong[0]
        parts.append(
            f"{len(wrong)} shape mismatches ({n}: file {tuple(state[n].shape)}, model {expected[n]})"
        )
    if any(k.startswith("duration_time_embed.") for k in unexpected):
        fix = f"this is a {FULL_FRAMES}-frame (DiffRhythm-full) checkpoint: use model/dit=diffrhythm_1b_full"
    elif any(k.startswith("duration_time_embed.") for k in missing):
        fix = "this is a 2048-frame (DiffRhythm-base) checkpoint: use model/dit=diffrhythm_1b"
    else:
        fix = (
            "pass DiffRhythm-1B's cfm_model.pt with the matching preset (diffrhythm_1b or diffrhythm_1b_full)"
        )
    raise RefrainInputError(source, "does not match the DiffRhythm DiT: " + "; ".join(parts), fix)


def load_diffrhythm(
    checkpoint: str | Path | None,
    max_frames: int = 2048,
    use_ema: bool = True,
    repa_layer: int | None = None,
    gradient_checkpointing: bool = False,
    dtype: str | None = None,
    **sizes: Any,
) -> DiffRhythm:
    """The backbone with the release's weights (``conf/model/dit/diffrhythm_1b*.yaml``).

    Built on the meta device and filled by ``assign``, so a 1.1 B model costs one copy of its weights.
    """
    if not checkpoint:
        raise RefrainInputError(
            "model.dit.checkpoint",
            "not set",
            "pass model.dit.checkpoint=/path/to/cfm_model.pt (DiffRhythm-1_2 or DiffRhythm-full, or its folder)",
        )
    state = read_checkpoint(checkpoint, use_ema)
    with torch.device("meta"):
        model = DiffRhythm(max_frames=max_frames, repa_layer=repa_layer, **sizes)
    check_state(model, state, checkpoint)
    model.load_state_dict(state, strict=True, assign=True)
    model.rebuild_buffers()
    if dtype:
        model = model.to(getattr(torch, dtype))
    model.enable_gradient_checkpointing(gradient_checkpointing)
    return model
