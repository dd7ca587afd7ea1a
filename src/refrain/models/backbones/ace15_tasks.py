"""ACE-Step 1.5's task side: the instruction of each task and the ``context_latents`` it is trained with.

The release reads two kinds of context, both as ``context_latents`` = cat(source latent, chunk mask with
1 where a frame is *generated*):

- repaint/extend: the source latent on the frames kept, the release's silence latent on the frames to
  generate, the mask 1 only there (refrain's ``context`` + ``context_mask``);
- a whole reference track (the release's ``lego`` and ``complete`` tasks): the reference latent on every
  frame and the mask 1 on every frame: nothing of the target is given, all of it is generated to fit the
  reference (``AceStepConditioning.reference``). StemGen is ``lego`` ("generate the DRUMS track based on
  the audio context"), singing2accompaniment is ``complete`` ("complete the input track with DRUMS | BASS
  | OTHER"), with the instrument named in the SFT prompt's instruction.

Instruction texts are diffusers' own (``AceStepPipeline._get_task_instruction``), so the prompt refrain
encodes for a task is the one the reference pipeline encodes for it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from diffusers import AceStepPipeline
from torch import Tensor

from refrain.errors import RefrainInputError
from refrain.models.backbones.ace15_text import SongMeta

TRACKS = ("vocals", "drums", "bass", "other")
"""The stems of refrain's multitrack layout (``refrain.data.multitrack.DEFAULT_STEMS``, equal by test; models do
not import data): ``complete`` names the ones besides the given instrument."""
TRACKS_KEY, TARGET_KEY = "instrument_names", "reference_target"
"""Batch keys of a reference-path LoRA batch: each item's instrument name and the generated role family."""


def reference_instruction(target: str, instrument: str, tracks: Sequence[str] = TRACKS) -> str:
    """The SFT-prompt instruction for generating role family ``target`` of ``instrument`` from a reference.

    ``stem`` (StemGen: the instrument's stem from the song without it) is the release's ``lego`` task;
    ``rest``/``mix`` (singing2accompaniment: the band around a vocal stem) is ``complete`` with the other
    tracks of ``tracks`` as the classes to add.
    """
    if target == "stem":
        return AceStepPipeline._get_task_instruction("lego", track_name=instrument)
    if target in ("rest", "mix"):
        others = [t for t in tracks if t != instrument]
        return AceStepPipeline._get_task_instruction("complete", complete_track_classes=others)
    raise RefrainInputError(
        "conditioning.target",
        f"{target!r} has no ACE-Step 1.5 task",
        "generate role family stem (lego) or rest (complete)",
    )


def crop_seconds(frame_mask: Tensor, frame_rate: float) -> list[float]:
    """Each item's valid seconds, computed one way for the online path and the cache pre-fill."""
    return (frame_mask.sum(dim=1).float() / float(frame_rate)).tolist()


def batch_metas(batch: Mapping[str, Any], frame_mask: Tensor, frame_rate: float) -> list[SongMeta]:
    """The SFT-prompt metas of a DiT batch: each crop's duration, its bpm when known, and the reference
    task's instruction when the batch names its instruments (``TRACKS_KEY``/``TARGET_KEY``)."""
    names, target = batch.get(TRACKS_KEY), batch.get(TARGET_KEY)
    bpms = batch.get("bpm")
    metas = []
    for index, seconds in enumerate(crop_seconds(frame_mask, frame_rate)):
        bpm = None
        if bpms is not None and bpms[index] is not None and float(bpms[index]) > 0:
            bpm = int(bpms[index])
        task = "text2music" if names is None else reference_instruction(str(target), str(names[index]))
        metas.append(SongMeta(duration=seconds, bpm=bpm, task=task))
    return metas


def silence(silence_latent: Tensor, frames: int, batch: int, like: Tensor) -> Tensor:
    """(B, frames, C) of the release's silence latent, tiled when the song is longer than it."""
    reps = math.ceil(frames / silence_latent.shape[1])
    tiled = silence_latent.repeat(1, reps, 1) if reps > 1 else silence_latent
    return tiled[:, :frames].to(device=like.device, dtype=like.dtype).expand(batch, -1, -1)


def context_latents(cond: Any, silence_latent: Tensor, like: Tensor) -> Tensor:
    """(B, T, 2C) ``context_latents`` of an ``AceStepConditioning`` for the channels-last input ``like``.

    No context: silence, all generated (text2music). Repaint context: the kept frames' source, silence and
    1 elsewhere. Reference track: the reference on every valid frame, all generated. ``drop_context``
    removes either kind.
    """
    b, t, c = like.shape
    quiet = silence(silence_latent, t, b, like)
    kept = ~cond.drop_context.to(like.device)
    if cond.reference is not None:
        given = (kept[:, None] & cond.frame_mask.to(like.device))[:, :, None]
        source = torch.where(given, cond.reference.transpose(1, 2).to(like.dtype), quiet)
        return torch.cat([source, torch.ones_like(quiet)], dim=-1)
    if cond.context is None or cond.context_mask is None:
        return torch.cat([quiet, torch.ones_like(quiet)], dim=-1)
    given = ((cond.context_mask[:, 0] > 0).to(like.device) & kept[:, None])[:, :, None]
    source = torch.where(given, cond.context.transpose(1, 2).to(like.dtype), quiet)
    chunk = (~given).to(like.dtype).expand(b, t, c)
    return torch.cat([source, chunk], dim=-1)
