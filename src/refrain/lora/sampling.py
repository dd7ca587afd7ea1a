"""LoRA at inference: adapters on a loaded pipeline, the ``stem`` and ``accompany`` modes, merged bundles.

    pipe = Pipeline.from_bundle("base")
    apply_adapters(pipe, [AdapterRef.parse("exps/stems/adapter:1.0"), AdapterRef.parse("exps/rap/adapter:0.5")])
    song = stem_song(pipe, "song_without_drums.flac", "drums", prompt="funk, tight drums")
    export_merged_bundle("base", [AdapterRef.parse("exps/stems/adapter")], "stems_merged")

The pipeline's own modes (text2music, repaint, ...) run unchanged on the adapted model. Loading
adapters changes the pipeline's model identity (``bundle_hash``) to a hash over the base and every
adapter file and scale, so a sidecar names the exact model that made its song and regeneration refuses a
different one.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from refrain.errors import RefrainInputError
from refrain.lora.adapters import ADAPTER_WEIGHTS, AdapterRef, LoadedAdapters, load_adapters, merge_adapters
from refrain.lora.control import ControlConditioning
from refrain.lora.model import AdaptedDiT
from refrain.lora.variants import ControlSpec

MODES = {"stem": "stem", "accompany": "rest"}  # sampler mode -> the role family it generates


def adapters_hash(base_hash: str, refs: Sequence[AdapterRef]) -> str:
    """Identity of base + adapters + scales (what sidecars record as the model)."""
    digest = hashlib.sha256(base_hash.encode())
    for ref in refs:
        digest.update((Path(ref.path) / ADAPTER_WEIGHTS).read_bytes())
        digest.update(f"{float(ref.scale):.9g}".encode())
    return digest.hexdigest()


def apply_adapters(pipe: Any, refs: Sequence[AdapterRef]) -> LoadedAdapters:
    """Load adapters onto a pipeline's base DiT (in place); its modes then sample with them."""
    if isinstance(pipe.model, AdaptedDiT) or getattr(pipe, "lora", None) is not None:
        raise RefrainInputError(
            "--lora", "this pipeline already carries adapters or is a merged LoRA bundle",
            "load adapters onto a plain base bundle",
        )  # fmt: skip
    loaded = load_adapters(pipe.model, refs)
    control = loaded.control_spec.control if loaded.control_spec is not None else None
    pipe.model = AdaptedDiT(loaded.model, loaded.null_lyrics, control).eval()
    pipe.lora = loaded
    pipe.bundle_hash = adapters_hash(pipe.bundle_hash, refs)
    return loaded


def _control(pipe: Any, mode: str) -> ControlSpec:
    model = pipe.model
    control = model.control if isinstance(model, AdaptedDiT) else None
    wanted = MODES[mode]
    if control is None or control.target != wanted:
        have = "none" if control is None else f"one generating {control.target!r} from {control.reference!r}"
        variant = "stemgen" if mode == "stem" else "singing2accompaniment"
        raise RefrainInputError(
            f"mode {mode}", f"needs an adapter with a reference path that generates {wanted!r} (loaded: {have})",
            f"load a {variant} adapter with --lora (or its merged bundle)",
        )  # fmt: skip
    return control


def reference_song(
    pipe: Any,
    mode: str,
    source: Any,
    instrument: str,
    prompt: str = "",
    lyrics: str = "",
    *,
    layout: Any = None,
    options: Any = None,
) -> Any:
    """Generate ``instrument``'s part for ``mode`` from a reference song, as long as the reference."""
    from refrain.sampling.options import SamplerOptions
    from refrain.sampling.solvers import sample
    from refrain.sampling.song import LyricsLayout

    control = _control(pipe, mode)
    if instrument not in control.instruments:
        raise RefrainInputError(
            "instrument", f"{instrument!r} is not one the adapter was trained on",
            f"use one of {', '.join(control.instruments)}",
        )  # fmt: skip
    options, layout = (options or SamplerOptions()).resolved(), LyricsLayout.from_any(layout)
    audio, identity = pipe.load_source(source)
    reference = pipe.encode(audio)
    frames = reference.shape[-1]
    timed = pipe.timed_lyrics(lyrics, audio.shape[-1] / pipe.sample_rate, layout)
    label = torch.tensor([control.label(instrument)], device=pipe.device)
    cond = ControlConditioning.from_plain(
        pipe.conditioning(prompt, timed, frames), reference=reference, instrument=label
    )
    noise, generator = pipe.noise(int(options.seed), frames)
    latent = sample(
        options.guided(pipe.model, cond), noise.to(pipe.device), options.sigmas(), options.solver,
        generator=generator, callback=pipe.callback(mode, options.steps),
    )  # fmt: skip
    song = pipe.decode(latent, audio.shape[-1])
    params = {"source": identity, "instrument": instrument, "prompt": prompt, "lyrics": lyrics,
              "layout": asdict(layout)}  # fmt: skip
    return pipe.result(mode, params, options, latent, song, timed)


def stem_song(pipe: Any, source: Any, instrument: str, prompt: str = "", lyrics: str = "", **kw: Any) -> Any:
    """StemGen: ``instrument``'s stem that fits ``source`` (the song without that stem)."""
    return reference_song(pipe, "stem", source, instrument, prompt, lyrics, **kw)


def accompany_song(
    pipe: Any, source: Any, prompt: str = "", lyrics: str = "", instrument: str = "vocals", **kw: Any
) -> Any:
    """singing2accompaniment: the accompaniment that fits the vocal stem ``source``."""
    return reference_song(pipe, "accompany", source, instrument, prompt, lyrics, **kw)


def export_merged_bundle(
    bundle: str | Path, refs: Sequence[AdapterRef], out_dir: str | Path, overwrite: bool = False
) -> Path:
    """Fold adapters (at their scales) into the base and write a DiT bundle the sampler loads like any other.

    The bundle's constructor is ``refrain.lora.model.build_adapted_dit``: the base DiT, the reference path
    when a StemGen/singing2accompaniment adapter was merged, and the variant's conditioning rules (null
    lyrics for text2sample), so the merged bundle samples exactly like base + adapters.
    """
    from refrain.bundles.dit import open_dit_bundle, save_dit_bundle

    base = open_dit_bundle(bundle)
    loaded = load_adapters(base.build_model(), refs)
    control = loaded.control_spec.control if loaded.control_spec is not None else None
    merged = AdaptedDiT(merge_adapters(loaded), loaded.null_lyrics, control)
    spec: dict[str, Any] = {
        "_target_": "refrain.lora.model.build_adapted_dit",
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
        out_dir, merged.state_dict(), spec, base.vae_path, base.vocab_path, base.text_encoder,
        base.config(), extra, overwrite,
    )  # fmt: skip


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
