"""LoRA at inference: adapters on a loaded pipeline, the ``stem`` and ``accompany`` modes, merged bundles.

    pipe = Pipeline.from_bundle("base")
    apply_adapters(pipe, [AdapterRef.parse("exps/stems/adapter:1.0"), AdapterRef.parse("exps/rap/adapter:0.5")])
    song = pipe.stem("song_without_drums.flac", "drums", prompt="funk, tight drums")
    export_merged_bundle("base", [AdapterRef.parse("exps/stems/adapter")], "stems_merged")

The pipeline's own modes (text2music, repaint, ...) run unchanged on the adapted model; ``stem`` and
``accompany`` are registered here like any sampler mode (``refrain.sampling.modes``), so ``refrain.lora``
builds on ``refrain.sampling`` and never the other way round. Loading adapters changes the pipeline's
model identity (``bundle_hash``) to a hash over the base and every adapter file and scale, so a sidecar
names the exact model that made its song and regeneration refuses a different one.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from refrain.errors import RefrainInputError
from refrain.lora.adapters import ADAPTER_WEIGHTS, AdapterRef, LoadedAdapters, load_adapters, merge_adapters
from refrain.lora.control import ControlConditioning
from refrain.lora.model import AdaptedDiT
from refrain.lora.variants import VARIANTS, ControlSpec
from refrain.models.backbone import backbone_of, spec_of
from refrain.sampling.engine import SamplingEngine, Source
from refrain.sampling.modes import ModeCall, lyrics_flags, prompt_and_lyrics, register_mode
from refrain.sampling.modes.base import Layout
from refrain.sampling.options import SamplerOptions
from refrain.sampling.solvers import sample
from refrain.sampling.song import SongResult


def adapters_hash(base_hash: str, refs: Sequence[AdapterRef]) -> str:
    """Identity of base + adapters + scales (what sidecars record as the model)."""
    digest = hashlib.sha256(base_hash.encode())
    for ref in refs:
        digest.update((Path(ref.path) / ADAPTER_WEIGHTS).read_bytes())
        digest.update(f"{float(ref.scale):.9g}".encode())
    return digest.hexdigest()


def apply_adapters(
    pipe: SamplingEngine, refs: Sequence[AdapterRef], allow_other_base: bool = False
) -> LoadedAdapters:
    """Load adapters onto a pipeline's base DiT; its modes then sample with them (``use_adapters``)."""
    if isinstance(pipe.model, AdaptedDiT) or pipe.adapters is not None:
        raise RefrainInputError(
            "--lora",
            "this pipeline already carries adapters or is a merged LoRA bundle",
            "load adapters onto a plain base bundle",
        )
    loaded = load_adapters(pipe.model, refs, pipe.bundle_hash, allow_other_base)
    control = loaded.control_spec.control if loaded.control_spec is not None else None
    pipe.use_adapters(
        AdaptedDiT(loaded.model, loaded.null_lyrics, control).eval(),
        adapters_hash(pipe.bundle_hash, refs),
        loaded,
    )
    return loaded


def _control(pipe: SamplingEngine, mode: str, wanted: str) -> ControlSpec:
    """The loaded reference path, checked to generate the role family ``wanted`` (stem or rest)."""
    model = pipe.model
    control = model.control if isinstance(model, AdaptedDiT) else None
    if control is None or control.target != wanted:
        have = "none" if control is None else f"one generating {control.target!r} from {control.reference!r}"
        variant = next(
            v.name for v in VARIANTS.values() if v.control is not None and v.control.target == wanted
        )
        raise RefrainInputError(
            f"mode {mode}",
            f"needs an adapter with a reference path that generates {wanted!r} (loaded: {have})",
            f"load a {variant} adapter with --lora (or its merged bundle)",
        )
    return control


def reference_song(
    pipe: SamplingEngine,
    mode: str,
    target: str,
    source: Source,
    instrument: str,
    prompt: str = "",
    lyrics: str = "",
    *,
    layout: Layout = None,
    options: SamplerOptions | None = None,
) -> SongResult:
    """Generate ``instrument``'s part (role family ``target``) from a reference song, as long as it.

    A backbone that reads a reference track itself was trained on the task (ACE-Step 1.5's lego/complete),
    so it runs without an adapter too; an adapter's reference path, when loaded, must fit the mode.
    """
    model = pipe.model
    native = spec_of(model).native_reference
    if native and not (isinstance(model, AdaptedDiT) and model.control is not None):
        control = None
    else:
        control = _control(pipe, mode, target)
    if control is not None and instrument not in control.instruments:
        raise RefrainInputError(
            "instrument",
            f"{instrument!r} is not one the adapter was trained on",
            f"use one of {', '.join(control.instruments)}",
        )
    call = ModeCall(pipe, mode, options, layout, source)
    song = call.song
    timed = call.lyrics(lyrics, call.song_seconds)
    if native:  # the instrument in its prompt, the reference as its context
        cond = backbone_of(model).reference_conditioning(prompt, timed.text, song.latent, target, instrument)
        cond = cond.to(pipe.device)
    else:
        assert control is not None
        label = torch.tensor([control.label(instrument)], device=pipe.device)
        cond = ControlConditioning.from_plain(
            pipe.conditioning(prompt, timed, song.frames), reference=song.latent, instrument=label
        )
    noise, generator = call.noise(song.frames)
    latent = sample(
        call.guided(cond),
        noise,
        call.options.sigmas(),
        call.options.solver,
        generator=generator,
        callback=call.callback,
    )
    audio = pipe.decode(latent, song.audio.shape[-1])
    return call.result(latent, audio, timed, instrument=instrument, prompt=prompt, lyrics=lyrics)


def _stem_flags(parser: argparse.ArgumentParser) -> None:
    lyrics_flags(parser)
    parser.add_argument("--instrument", required=True, help="the stem to generate, e.g. drums")


@register_mode(
    "stem",
    "a stem (--instrument) that fits a song without it (needs a stemgen --lora)",
    add_flags=_stem_flags,
    flag_params=lambda args: {"instrument": args.instrument, **prompt_and_lyrics(args)},
)
def stem_song(
    pipe: SamplingEngine, source: Source, instrument: str, prompt: str = "", lyrics: str = "", **kw: Any
) -> SongResult:
    """StemGen: ``instrument``'s stem that fits ``source`` (the song without that stem)."""
    return reference_song(pipe, "stem", "stem", source, instrument, prompt, lyrics, **kw)


@register_mode(
    "accompany",
    "the accompaniment that fits a vocal stem (needs a singing2accompaniment --lora)",
    add_flags=lyrics_flags,
    flag_params=prompt_and_lyrics,
)
def accompany_song(
    pipe: SamplingEngine,
    source: Source,
    prompt: str = "",
    lyrics: str = "",
    instrument: str = "vocals",
    **kw: Any,
) -> SongResult:
    """singing2accompaniment: the accompaniment (role family ``rest``) that fits the vocal stem ``source``."""
    return reference_song(pipe, "accompany", "rest", source, instrument, prompt, lyrics, **kw)


def export_merged_bundle(
    bundle: str | Path,
    refs: Sequence[AdapterRef],
    out_dir: str | Path,
    overwrite: bool = False,
    allow_other_base: bool = False,
) -> Path:
    """Fold adapters (at their scales) into the base and write a DiT bundle the sampler loads like any other.

    The bundle's constructor is ``lora_adapted_dit`` (``refrain.lora.model.build_adapted_dit``): the base
    DiT, the reference path when a StemGen/singing2accompaniment adapter was merged, and the variant's
    conditioning rules (null lyrics for text2sample), so the merged bundle samples exactly like base + adapters.
    """
    from refrain.bundles.dit import open_dit_bundle, save_dit_bundle

    base = open_dit_bundle(bundle)
    loaded = load_adapters(base.build_model(), refs, base.bundle_hash, allow_other_base)
    control = loaded.control_spec.control if loaded.control_spec is not None else None
    merged = AdaptedDiT(merge_adapters(loaded), loaded.null_lyrics, control)
    spec: dict[str, Any] = {
        "class": "lora_adapted_dit",  # refrain.lora.model.build_adapted_dit (refrain.bundles.registry)
        "base": dict(base.manifest["model"]),
        "null_lyrics": loaded.null_lyrics,
        "control": _plain(dataclasses.asdict(control)) if control is not None else None,
    }
    extra = {
        "lora": {
            "base_bundle_hash": base.bundle_hash,
            "adapters": [
                {"path": str(Path(ref.path).resolve()), "scale": float(ref.scale), "variant": s.variant}
                for ref, s in zip(refs, loaded.specs, strict=True)
            ],
        }
    }
    return save_dit_bundle(
        out_dir,
        merged.state_dict(),
        spec,
        base.vae_path,
        base.vocab_path,
        base.text_encoder,
        base.config(),
        extra,
        overwrite,
    )


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
